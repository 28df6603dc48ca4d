/**
 * End to end: the daemon's lifecycle as an operator and systemd see it —
 * SIGHUP reloads (users, log file, control TLS certificate), SIGTERM with a
 * drain, the PID file, and start-up failures with their exit codes.
 * `main.ts` runs as a subprocess with the permissions of the compiled binary.
 */

import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import type { ForwardingReply } from "../../src/control/snf/control_client.ts";
import { SERVE_OPTIONS } from "../../src/cli/serve_command.ts";
import {
  type DaemonProcess,
  forwardingRequestJson,
  rawControl,
  runMain,
  type RunResult,
  startDaemon,
  writeUsersFile,
} from "../_util/daemon_process.ts";
import { type FakeVncServer, startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";
import { hasOpenssl, makeTestCertificate } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "0neTime8";

/** A temp dir removed on disposal. */
async function tempDir(prefix: string): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

/** A users file in its own temp dir, removed on disposal. */
async function usersFile(
  users: Record<string, string>,
): Promise<{ path: string } & AsyncDisposable> {
  const path = await writeUsersFile(users);
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path.replace(/\/users$/, ""), { recursive: true });
    },
  };
}

/** A daemon start-up that must fail: flags the test harness adds, then `args`. */
function runFailingDaemon(authFile: string, args: readonly string[]): Promise<RunResult> {
  return runMain([
    "--listen-port=0",
    `--auth-file=${authFile}`,
    "--proxy-listen-address=127.0.0.1",
    ...args,
  ]);
}

function request(fakePort: number, fields: Record<string, unknown> = {}): string {
  return forwardingRequestJson({
    auth_password: CONTROL_PASSWORD,
    source_port: 0,
    destination_port: fakePort,
    password: VNC_PASSWORD,
    type: "vnc",
    ...fields,
  });
}

async function forward(
  daemon: DaemonProcess,
  fake: FakeVncServer,
  fields: Record<string, unknown> = {},
): Promise<ForwardingReply> {
  return JSON.parse(await rawControl(daemon.controlPort, request(fake.port, fields)));
}

/** Bytes go through the proxy to the echoing fake server and back. */
async function assertRelays(viewer: Duplex, text: string): Promise<void> {
  await viewer.write(new TextEncoder().encode(text));
  const echoed = await readExact(viewer, new TextEncoder().encode(text).length);
  assert.equal(new TextDecoder().decode(echoed), text);
}

/** Sets up a forwarding and a viewer relaying through it; the caller closes it. */
async function openSession(daemon: DaemonProcess, fake: FakeVncServer): Promise<Duplex> {
  const reply = await forward(daemon, fake);
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const viewer = await connectViewer({ port: reply.source_port!, password: VNC_PASSWORD });
  try {
    assert.equal(viewer.ok, true);
    await readServerInit(viewer.duplex);
    await assertRelays(viewer.duplex, "before");
  } catch (error) {
    viewer.duplex.close();
    throw error;
  }
  return viewer.duplex;
}

/** Resolves when the peer closes `duplex` (EOF or reset). */
async function closedByPeer(duplex: Duplex): Promise<void> {
  const sink = new Uint8Array(1024);
  try {
    while ((await duplex.read(sink)) !== null) { /* drain */ }
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
  }
}

/** Polls `path` until it matches `pattern` (each sink is written in turn). */
async function waitForFileText(path: string, pattern: RegExp, timeoutMs = 5_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const text = await Deno.readTextFile(path).catch(() => "");
    if (pattern.test(text)) return text;
    if (Date.now() > deadline) assert.fail(`${path} does not match ${pattern}:\n${text}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("SIGHUP loads a user added with `passwd add`, and a live session keeps relaying", async () => {
  await using fake = startFakeVncServer({});
  await using users = await usersFile({ admin: CONTROL_PASSWORD });
  await using daemon = await startDaemon({ authFile: users.path });
  const viewer = await openSession(daemon, fake);
  try {
    const added = await runMain(
      ["passwd", "add", users.path, "operator", "-p", "Operat0r-pw"],
      { permissions: ["--allow-read", "--allow-write"] },
    );
    assert.equal(added.code, 0, added.stderr);
    assert.equal(
      (await forward(daemon, fake, { auth_user: "operator", auth_password: "Operat0r-pw" }))
        .reason,
      "authentication failed",
      "not loaded before SIGHUP",
    );

    daemon.kill("SIGHUP");
    await daemon.waitForLine(/Reloaded: 2 control users, 1 live sessions untouched/);
    const reply = await forward(daemon, fake, {
      auth_user: "operator",
      auth_password: "Operat0r-pw",
    });
    assert.equal(reply.status, "OK", JSON.stringify(reply));
    const second = await connectViewer({ port: reply.source_port!, password: VNC_PASSWORD });
    assert.ok(second.ok);
    second.duplex.close();

    await assertRelays(viewer, "after the reload");
  } finally {
    viewer.close();
  }
  await daemon.waitForLine(/Session ended \(client closed\)/);
});

Deno.test("SIGHUP with a broken users file keeps the old users and logs why", async () => {
  await using fake = startFakeVncServer({});
  await using users = await usersFile({ admin: CONTROL_PASSWORD });
  await using daemon = await startDaemon({ authFile: users.path });
  await Deno.writeTextFile(users.path, "admin:$6$salt$hash\nthis line is broken\n");
  daemon.kill("SIGHUP");
  const logged = await daemon.waitForLine(/Keeping the old users/);
  assert.match(logged, /ERROR/);
  assert.match(logged, new RegExp(users.path.replaceAll("/", "\\/")));
  const reply = await forward(daemon, fake);
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const viewer = await connectViewer({ port: reply.source_port!, password: VNC_PASSWORD });
  assert.ok(viewer.ok);
  viewer.duplex.close();
  await daemon.waitForLine(/Session ended/);
});

Deno.test("SIGTERM stops accepting, lets a live session relay for --drain-timeout, then exits 0", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    args: ["--drain-timeout=1"],
  });
  const viewer = await openSession(daemon, fake);
  try {
    const sent = performance.now();
    daemon.kill("SIGTERM");
    await daemon.waitForLine(/Waiting up to 1 s for 1 live sessions/);
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: daemon.controlPort }),
      Deno.errors.ConnectionRefused,
      "the control socket is closed during the drain",
    );
    await assertRelays(viewer, "during the drain");
    await closedByPeer(viewer);
    const closedAfter = performance.now() - sent;
    assert.ok(closedAfter >= 900, `closed after ${closedAfter} ms, before the drain time`);
    const status = await daemon.status;
    const elapsed = performance.now() - sent;
    assert.equal(status.code, 0);
    assert.ok(elapsed < 4_000, `exited after ${elapsed} ms`);
    await daemon.waitForLine(/Closing 1 sessions still live/);
    await daemon.waitForLine(/Stopped/);
  } finally {
    viewer.close();
  }
});

Deno.test("--pid-file held by a live process: the daemon refuses to start with exit 1", async (t) => {
  await using users = await usersFile({ admin: CONTROL_PASSWORD });
  await using dir = await tempDir("vap-pid-");
  const pidFile = `${dir.path}/vncauthproxy.pid`;

  await t.step("held by a running daemon", async () => {
    await using daemon = await startDaemon({
      authFile: users.path,
      args: [`--pid-file=${pidFile}`],
    });
    const result = await runFailingDaemon(users.path, [`--pid-file=${pidFile}`]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(`Cannot use PID file: .* is held by running process ${daemon.child.pid}`),
    );
    assert.equal(await Deno.readTextFile(pidFile), `${daemon.child.pid}\n`, "left alone");
  });
  await t.step("held by this test process", async () => {
    // The daemon cannot look into /proc or signal other processes with its
    // permissions, so a live holder is one that holds the file's lock.
    using file = await Deno.open(pidFile, { write: true, create: true, truncate: true });
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
    await file.lock(true);
    const result = await runFailingDaemon(users.path, [`--pid-file=${pidFile}`]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, new RegExp(`held by running process ${Deno.pid}`));
    assert.equal(await Deno.readTextFile(pidFile), `${Deno.pid}\n`, "the file is left alone");
  });
});

Deno.test("--pid-file naming a dead process is replaced, and removed at exit", async () => {
  await using dir = await tempDir("vap-pid-");
  const gone = new Deno.Command("true").spawn();
  await gone.status;
  await assert.rejects(Deno.stat(`/proc/${gone.pid}`), Deno.errors.NotFound);
  const pidFile = `${dir.path}/vncauthproxy.pid`;
  await Deno.writeTextFile(pidFile, `${gone.pid}\n`);
  {
    await using daemon = await startDaemon({ args: [`--pid-file=${pidFile}`] });
    assert.equal((await Deno.readTextFile(pidFile)).trim(), String(daemon.child.pid));
  }
  await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound);
});

Deno.test("--log FILE is written, and reopened on SIGHUP after logrotate moved it", async () => {
  await using dir = await tempDir("vap-log-");
  const log = `${dir.path}/vncauthproxy.log`;
  await using daemon = await startDaemon({ args: [`--log=${log}`] });
  await waitForFileText(log, /Listening for control connections on /);
  await Deno.rename(log, `${log}.1`);
  daemon.kill("SIGHUP");
  await daemon.waitForLine(/Reloaded: /);
  assert.equal(
    (await rawControl(daemon.controlPort, request(1, { auth_password: "wrong" })))
      .includes("authentication failed"),
    true,
  );
  await daemon.waitForLine(/FAILED forwarding: authentication failed/);
  const fresh = await waitForFileText(log, /FAILED forwarding: authentication failed/);
  assert.match(fresh, /Reloaded: /);
  assert.doesNotMatch(fresh, /Listening for control connections/);
  assert.doesNotMatch(await Deno.readTextFile(`${log}.1`), /FAILED forwarding/);
});

Deno.test("start-up failures exit with clear messages and the right codes", async (t) => {
  await using users = await usersFile({ admin: CONTROL_PASSWORD });

  await t.step("control port taken: exit 1", async () => {
    using holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (holder.addr as Deno.NetAddr).port;
    const result = await runFailingDaemon(users.path, [`--listen-port=${port}`]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${port}: .*in use`));
  });
  await t.step("unknown flag: exit 2, one error line and the usage hint", async () => {
    const result = await runFailingDaemon(users.path, ["--no-such-flag"]);
    assert.equal(result.code, 2);
    assert.equal(
      result.stderr,
      'vncauthproxy: no such option: --no-such-flag\nTry "vncauthproxy --help" for more information.\n',
    );
    assert.equal(result.stdout, "");
  });
  await t.step("bad value: exit 2", async () => {
    const result = await runFailingDaemon(users.path, ["--min-port=many"]);
    assert.equal(result.code, 2);
    assert.equal(result.stderr.trimEnd().split("\n").length, 2, result.stderr);
  });
  await t.step("positional argument: non-zero", async () => {
    const result = await runFailingDaemon(users.path, ["start"]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /Unexpected argument "start"/);
  });
  await t.step("--help: exit 0, every flag listed", async () => {
    const result = await runMain(["--help"]);
    assert.equal(result.code, 0, result.stderr);
    for (const option of SERVE_OPTIONS) {
      assert.ok(result.stdout.includes(`--${option.long}`), `--${option.long} missing`);
      if (option.short) assert.ok(result.stdout.includes(`-${option.short}`), option.short);
    }
  });
  await t.step("malformed users file: exit 1", async () => {
    await using bad = await tempDir("vap-users-bad-");
    await Deno.writeTextFile(`${bad.path}/users`, "admin-without-a-hash\n");
    const result = await runFailingDaemon(`${bad.path}/users`, []);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /Cannot load authentication file ".*\/users": Malformed line 1/);
  });
  await t.step("--enable-ssl with a missing certificate: exit 1", async () => {
    await using empty = await tempDir("vap-tls-");
    const result = await runFailingDaemon(users.path, [
      "--enable-ssl",
      `--cert-file=${empty.path}/cert.pem`,
      `--key-file=${empty.path}/key.pem`,
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /Cannot load TLS certificate and key: .*cert\.pem/);
  });
  await t.step("--enable-ssl with an invalid certificate: exit 1", async () => {
    await using bad = await tempDir("vap-tls-");
    await Deno.writeTextFile(`${bad.path}/cert.pem`, "-----BEGIN CERTIFICATE-----\nAAAA\n");
    await Deno.writeTextFile(`${bad.path}/key.pem`, "not a key\n");
    const result = await runFailingDaemon(users.path, [
      "--enable-ssl",
      `--cert-file=${bad.path}/cert.pem`,
      `--key-file=${bad.path}/key.pem`,
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /Invalid certificate ".*cert\.pem" or key ".*key\.pem"/);
  });
});

Deno.test("a missing users file: the daemon starts, warns loudly, and refuses every request", async () => {
  await using fake = startFakeVncServer({});
  await using dir = await tempDir("vap-nousers-");
  await using daemon = await startDaemon({ authFile: `${dir.path}/users` });
  assert.match(
    await daemon.waitForLine(/not found: every request will be refused/),
    /WARNING: Authentication file ".*\/users" not found/,
  );
  for (const user of ["admin", "root", ""]) {
    assert.equal(
      (await forward(daemon, fake, { auth_user: user })).reason,
      "authentication failed",
    );
  }
});

Deno.test({
  name:
    "control TLS: `client --enable-ssl --ca-cert` gets OK, and SIGHUP switches to a new certificate",
  ignore: !hasOpenssl(),
  async fn() {
    await using fake = startFakeVncServer({});
    await using dir = await tempDir("vap-tls-");
    await using first = await makeTestCertificate();
    await using second = await makeTestCertificate();
    const cert = `${dir.path}/cert.pem`;
    const key = `${dir.path}/key.pem`;
    await Deno.copyFile(first.certFile, cert);
    await Deno.copyFile(first.keyFile, key);
    await using daemon = await startDaemon({
      users: { admin: CONTROL_PASSWORD },
      args: ["--enable-ssl", `--cert-file=${cert}`, `--key-file=${key}`, "--drain-timeout=0"],
    });
    const client = (caCert: string) =>
      runMain([
        "client",
        "--enable-ssl",
        `--ca-cert=${caCert}`,
        "--server=localhost",
        `--server-port=${daemon.controlPort}`,
        "-d",
        "127.0.0.1",
        "-p",
        String(fake.port),
        "-P",
        VNC_PASSWORD,
        "--auth-user=admin",
        `--auth-password=${CONTROL_PASSWORD}`,
      ], { permissions: ["--allow-net", "--allow-read"] });
    /** Uses the forwarding, so it does not wait for --connect-timeout. */
    const assertOk = async (result: RunResult) => {
      assert.equal(result.code, 0, result.stdout + result.stderr);
      const match = /^Forwarding \S+:(\d+) -> 127\.0\.0\.1:\d+: OK\n$/.exec(result.stdout);
      assert.ok(match, result.stdout);
      const viewer = await connectViewer({ port: Number(match[1]), password: VNC_PASSWORD });
      assert.ok(viewer.ok);
      viewer.duplex.close();
    };

    await assertOk(await client(first.certFile));
    assert.equal((await client(second.certFile)).code, 1, "the second CA is not trusted yet");

    await Deno.copyFile(second.certFile, cert);
    await Deno.copyFile(second.keyFile, key);
    daemon.kill("SIGHUP");
    await daemon.waitForLine(/Control socket now uses the reloaded certificate/);
    await assertOk(await client(second.certFile));
    const old = await client(first.certFile);
    assert.equal(old.code, 1, "the old CA no longer matches");
    assert.match(old.stderr, /certificate/i);
  },
});
