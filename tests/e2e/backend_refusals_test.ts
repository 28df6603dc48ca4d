/**
 * End to end: which backends a forwarding may reach (issue 11). Unix sockets only below
 * `--unix-backend-dir` (the path resolved: `..` and symlinks cannot leave it), TCP
 * destinations only inside `--backend-allow` and outside `--backend-deny`. Each refusal
 * is `FAILED` with `backend not allowed`, asked for with `main.ts client`; the listener
 * behind the refused destination counts that nothing connected, and the daemon's pool
 * of one port still serves the next forwarding.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  assertFailed,
  assertOk,
  clientRequest,
  listenUnixCounting,
  USERS,
} from "../_util/backend_e2e.ts";
import { startDaemon } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";

const VIEWER_PASSWORD = "v1ewer-OTP";
const NOT_ALLOWED = "backend not allowed";

function unix(path: string): string[] {
  return ["-d", `unix:${path}`, "-p", "0", "-P", VIEWER_PASSWORD];
}

function tcp(host: string, port: number): string[] {
  return ["-d", host, "-p", String(port), "-P", VIEWER_PASSWORD];
}

Deno.test("a Unix socket outside --unix-backend-dir is refused directly, through .., through a symlink, through a look-alike prefix", async () => {
  const root = await Deno.makeTempDir({ prefix: "vap-unix-refusals-" });
  try {
    const allowed = `${root}/allowed`;
    const outside = `${root}/outside`;
    const lookAlike = `${root}/allowed-not`;
    for (const dir of [allowed, outside, lookAlike]) await Deno.mkdir(dir);
    await using target = listenUnixCounting(`${outside}/vm.sock`);
    await using twin = listenUnixCounting(`${lookAlike}/vm.sock`);
    await Deno.symlink(target.path, `${allowed}/link.sock`);
    await Deno.symlink(outside, `${allowed}/sub`);
    await using fake = startFakeVncServer();
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: [`--unix-backend-dir=${allowed}`],
    });

    for (
      const path of [
        target.path,
        `${allowed}/../outside/vm.sock`,
        `${allowed}/link.sock`,
        `${allowed}/sub/vm.sock`,
        twin.path,
      ]
    ) {
      const result = await clientRequest(daemon.controlPort, unix(path));
      assertFailed(result, NOT_ALLOWED);
    }
    assert.equal(target.accepted, 0, "nothing connected to the socket outside");
    assert.equal(twin.accepted, 0, "nothing connected to the look-alike directory");
    // The one pool port was never kept.
    assertOk(await clientRequest(daemon.controlPort, tcp("127.0.0.1", fake.port)));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("without --unix-backend-dir every Unix socket is refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "vap-unix-none-" });
  try {
    await using target = listenUnixCounting(`${root}/vm.sock`);
    await using daemon = await startDaemon({ users: USERS, poolSize: 1 });
    assertFailed(await clientRequest(daemon.controlPort, unix(target.path)), NOT_ALLOWED);
    assert.equal(target.accepted, 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("--backend-allow and --backend-deny: a destination outside is refused before connecting", async () => {
  await using fake = startFakeVncServer();
  {
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: ["--backend-allow=10.0.0.0/8,192.0.2.0/24"],
    });
    assertFailed(await clientRequest(daemon.controlPort, tcp("127.0.0.1", fake.port)), NOT_ALLOWED);
    // A name is checked on what it resolves to.
    assertFailed(await clientRequest(daemon.controlPort, tcp("localhost", fake.port)), NOT_ALLOWED);
  }
  {
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: ["--backend-deny", "127.0.0.0/8 ::1/128"],
    });
    assertFailed(await clientRequest(daemon.controlPort, tcp("127.0.0.1", fake.port)), NOT_ALLOWED);
  }
  assert.equal(fake.accepted, 0, "nothing connected to the refused destination");
  {
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: ["--backend-allow=10.0.0.0/8", "--backend-allow=127.0.0.0/8"],
    });
    assertOk(await clientRequest(daemon.controlPort, tcp("127.0.0.1", fake.port)));
    assert.equal(fake.accepted, 1, "an allowed destination is reached");
  }
});
