/**
 * openBackend() and the destination policy: Unix sockets inside and outside
 * the allowed directories, and address ranges on IPv4 and IPv6 loopback,
 * with real listeners that count what reached them.
 */

import assert from "node:assert/strict";
import { RefusalError } from "../../src/errors.ts";
import { DestinationPolicy } from "../../src/io/destination_policy.ts";
import { silentLogger } from "../../src/log.ts";
import {
  type BackendOptions,
  type BackendTarget,
  openBackend,
} from "../../src/rfb/backend_handshake.ts";
import {
  serveServerInit,
  serveVersion,
  serveVncAuth,
  startScriptedVncServer,
} from "../_util/scripted_vnc_server.ts";

function options(policy: DestinationPolicy, extra: Partial<BackendOptions> = {}) {
  return {
    retries: 1,
    retryWaitMs: 0,
    signal: AbortSignal.timeout(5000),
    logger: silentLogger,
    policy,
    ...extra,
  };
}

async function result(
  target: BackendTarget,
  policy: DestinationPolicy,
  extra: Partial<BackendOptions> = {},
) {
  try {
    const backend = await openBackend(target, options(policy, extra));
    backend.duplex.close();
    return "OK";
  } catch (error) {
    assert.ok(error instanceof RefusalError, String(error));
    return error.message;
  }
}

/** A VNC server that asks for password "secret" (3.8). */
const passwordServer = async (
  peer: Parameters<Parameters<typeof startScriptedVncServer>[0]>[0],
) => {
  const minor = await serveVersion(peer);
  await peer.send([1, 2]);
  await peer.readU8();
  await serveVncAuth(peer, { password: "secret", minor });
  await serveServerInit(peer);
};

Deno.test("openBackend() reaches a Unix socket below --unix-backend-dir, with a password", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "vap-unix-" }));
  try {
    await Deno.mkdir(`${root}/vms`);
    await using server = startScriptedVncServer(passwordServer, { path: `${root}/vms/vm1.sock` });
    const policy = new DestinationPolicy({ unixDirs: [`${root}/vms`] });
    assert.equal(
      await result({ transport: "unix", path: `${root}/vms/vm1.sock`, password: "secret" }, policy),
      "OK",
    );
    assert.equal(
      await result({ transport: "unix", path: `${root}/vms/vm1.sock`, password: "wrong" }, policy),
      "VNC server refused authentication",
    );
    assert.equal(
      await result({ transport: "unix", path: `${root}/vms/missing.sock` }, policy),
      "cannot connect to VNC server",
    );
    assert.equal(server.accepted, 2);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("openBackend() connects nothing for a Unix socket outside, through .. or a symlink", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "vap-unix-" }));
  try {
    await Deno.mkdir(`${root}/vms`);
    await Deno.mkdir(`${root}/other`);
    await using server = startScriptedVncServer(passwordServer, { path: `${root}/other/vm.sock` });
    await Deno.symlink(`${root}/other/vm.sock`, `${root}/vms/link.sock`);
    const policy = new DestinationPolicy({ unixDirs: [`${root}/vms`] });
    for (
      const path of [
        `${root}/other/vm.sock`,
        `${root}/vms/../other/vm.sock`,
        `${root}/vms/link.sock`,
      ]
    ) {
      assert.equal(
        await result({ transport: "unix", path, password: "secret" }, policy),
        "backend not allowed",
        path,
      );
    }
    assert.equal(
      await result({ transport: "unix", path: `${root}/other/vm.sock` }, new DestinationPolicy()),
      "backend not allowed",
    );
    assert.equal(server.accepted, 0, "a refused socket was connected to");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("openBackend() checks --backend-allow / --backend-deny on IPv4 and IPv6 loopback", async () => {
  await using v4 = startScriptedVncServer(passwordServer);
  await using v6 = startScriptedVncServer(passwordServer, { hostname: "::1" });
  const target = (host: string, port: number): BackendTarget => ({
    host,
    port,
    password: "secret",
  });
  const table: [{ allow?: string[]; deny?: string[] }, string, string][] = [
    [{ allow: ["127.0.0.0/8"] }, "127.0.0.1", "OK"],
    [{ allow: ["127.0.0.0/8"] }, "::1", "backend not allowed"],
    [{ allow: ["::1/128"] }, "::1", "OK"],
    [{ deny: ["::1"] }, "::1", "backend not allowed"],
    [{ deny: ["::1"] }, "127.0.0.1", "OK"],
    [{ allow: ["0.0.0.0/0", "::/0"], deny: ["127.0.0.1/32"] }, "127.0.0.1", "backend not allowed"],
    [{ allow: ["10.0.0.0/8"] }, "127.0.0.1", "backend not allowed"],
  ];
  for (const [ranges, host, expected] of table) {
    const port = host === "::1" ? v6.port : v4.port;
    assert.equal(
      await result(target(host, port), new DestinationPolicy(ranges)),
      expected,
      `${JSON.stringify(ranges)} ${host}`,
    );
  }
  assert.equal(v4.accepted, 2);
  assert.equal(v6.accepted, 1);
});

Deno.test("openBackend() tries only the allowed addresses of a name that resolves to several", async () => {
  await using v4 = startScriptedVncServer(passwordServer);
  const tried: string[] = [];
  const extra = {
    resolve: () => Promise.resolve(["::1", "10.9.9.9", "127.0.0.1"]),
    connect: (hostname: string, _port: number, signal: AbortSignal) => {
      tried.push(hostname);
      return Deno.connect({ hostname, port: v4.port, signal });
    },
  };
  const target = { host: "vnc.test", port: 5900, password: "secret" };
  assert.equal(
    await result(target, new DestinationPolicy({ deny: ["::1", "10.0.0.0/8"] }), extra),
    "OK",
  );
  assert.deepEqual(tried, ["127.0.0.1"], "a denied address was tried");
  assert.equal(
    await result(target, new DestinationPolicy({ allow: ["192.0.2.0/24"] }), extra),
    "backend not allowed",
  );
  assert.deepEqual(tried, ["127.0.0.1"]);
  assert.equal(v4.accepted, 1);
});
