/**
 * End to end: `main.ts` as a subprocess, driven like a user drives it, with
 * a scripted fake VNC server behind it and a scripted viewer in front.
 */

import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import { requestForwarding } from "../../src/control/snf/control_client.ts";
import {
  forwardingRequestJson,
  rawControl,
  runMain,
  startDaemon,
} from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "0neTime8";

function request(port: number, fields: Record<string, unknown> = {}): string {
  return forwardingRequestJson({
    auth_password: CONTROL_PASSWORD,
    source_port: 0,
    destination_port: port,
    password: VNC_PASSWORD,
    type: "vnc",
    ...fields,
  });
}

async function forward(controlPort: number, fields: Record<string, unknown>) {
  return JSON.parse(await rawControl(controlPort, request(0, fields) + "\n"));
}

function assertNoSecrets(lines: readonly string[]): void {
  for (const line of lines) {
    for (const secret of [CONTROL_PASSWORD, VNC_PASSWORD, "wrong-pass", "$6$"]) {
      assert.ok(!line.includes(secret), `secret in log line: ${line}`);
    }
  }
}

Deno.test("vncauthproxy client sets up a forwarding that a viewer reaches with the one-time password", async () => {
  await using fake = startFakeVncServer({
    desktopName: "fake-desktop",
    afterServerInit: new TextEncoder().encode("LIVE"),
  });
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  const client = await runMain(
    [
      "client",
      "--server=127.0.0.1",
      `--server-port=${daemon.controlPort}`,
      "-d",
      "127.0.0.1",
      "-p",
      String(fake.port),
      "-P",
      VNC_PASSWORD,
      "--auth-user=admin",
      `--auth-password=${CONTROL_PASSWORD}`,
      "--type=vnc",
    ],
    { permissions: ["--allow-net", "--allow-read"] },
  );
  const out = client.stdout;
  assert.equal(client.code, 0, out + client.stderr);
  const match = /^Forwarding 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:\d+: OK\n$/.exec(out);
  assert.ok(match, out);
  const port = Number(match[1]);

  const viewer = await connectViewer({ port, password: VNC_PASSWORD, shared: 0 });
  assert.equal(viewer.ok, true);
  const init = await readServerInit(viewer.duplex);
  assert.deepEqual(init, { width: 64, height: 48, name: "fake-desktop" });
  assert.equal(new TextDecoder().decode(await readExact(viewer.duplex, 4)), "LIVE");
  await viewer.duplex.write(new TextEncoder().encode("echo me"));
  assert.equal(new TextDecoder().decode(await readExact(viewer.duplex, 7)), "echo me");
  assert.deepEqual(fake.clientInits, [1], "the shared flag is forced to 1");

  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port }),
    Deno.errors.ConnectionRefused,
    "a second viewer finds the port closed",
  );
  viewer.duplex.close();
  const end = await daemon.waitForLine(/Session ended \(client closed\)/);
  assert.match(end, /7 bytes client->server, \d+ bytes server->client, client 127\.0\.0\.1:\d+/);
  await daemon.waitForLine(new RegExp(`Returned port ${port} to port pool, contains 40 ports`));
  assertNoSecrets(daemon.lines);
});

Deno.test("the daemon answers bad control input with a reason, logs no secret and keeps serving", async (t) => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    poolSize: 3,
    args: [
      "--control-timeout=1",
      "--connect-timeout=1",
      "--client-timeout=1",
      "--server-timeout=1",
      "--port-cooldown=0",
    ],
  });
  const port = daemon.controlPort;
  const reason = async (text: string) => JSON.parse(await rawControl(port, text)).reason;

  await t.step("malformed and non-object JSON", async () => {
    assert.equal(await reason("{not json}"), "malformed request: invalid JSON");
    assert.equal(await reason("[1, 2]"), "malformed request: not a JSON object");
    assert.equal(await reason('"text"'), "malformed request: not a JSON object");
    // The client keeps its side open, so the daemon waits out --control-timeout.
    assert.equal(await reason('{"a": 1'), "request timed out");
  });
  await t.step("missing and mistyped fields", async () => {
    const full = JSON.parse(request(fake.port));
    delete full.destination_port;
    assert.equal(await reason(JSON.stringify(full)), "malformed request: destination_port");
    assert.equal(
      await reason(request(fake.port, { password: 12345678 })),
      "malformed request: password",
    );
    assert.equal(
      await reason(request(fake.port, { source_port: "x" })),
      "malformed request: source_port",
    );
  });
  await t.step("a 1 MiB request", async () => {
    const huge = `{"auth_user": "${"x".repeat(1024 * 1024)}"}`;
    let text = "";
    try {
      text = await rawControl(port, huge);
    } catch (error) {
      assert.ok(
        error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe,
        String(error),
      );
    }
    if (text !== "") assert.equal(JSON.parse(text).reason, "malformed request: too large");
    await daemon.waitForLine(/FAILED forwarding: malformed request: too large/);
  });
  await t.step("a silent control client", async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const reply = new Uint8Array(200);
    const n = await conn.read(reply);
    conn.close();
    assert.equal(
      JSON.parse(new TextDecoder().decode(reply.subarray(0, n!))).reason,
      "request timed out",
    );
  });
  await t.step("a request sent one byte at a time, connection left open", async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    for (const byte of new TextEncoder().encode(request(fake.port))) {
      await conn.write(Uint8Array.of(byte));
    }
    const buffer = new Uint8Array(300);
    let text = "";
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    conn.close();
    const reply = JSON.parse(text);
    assert.equal(reply.status, "OK");
    // Use it so it does not wait for its timeout.
    const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
    assert.ok(viewer.ok);
    viewer.duplex.close();
  });
  await t.step("unknown user and wrong password get the same reason", async () => {
    assert.equal(
      await reason(request(fake.port, { auth_user: "nobody" })),
      "authentication failed",
    );
    assert.equal(
      await reason(request(fake.port, { auth_password: "wrong-pass" })),
      "authentication failed",
    );
  });
  await t.step("unsupported type", async () => {
    assert.equal(await reason(request(fake.port, { type: "spice" })), "unsupported console type");
  });
  await t.step("requested port held by another process", async () => {
    using holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held = (holder.addr as Deno.NetAddr).port;
    assert.equal(await reason(request(fake.port, { source_port: held })), "source port in use");
  });
  await t.step(
    "backend refusing, silent, demanding auth, refusing with a reason, sending garbage",
    async () => {
      const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const closedPort = (closed.addr as Deno.NetAddr).port;
      closed.close();
      assert.equal(await reason(request(closedPort)), "cannot connect to VNC server");
      await using silent = startFakeVncServer({ silent: true });
      assert.equal(await reason(request(silent.port)), "VNC server timed out");
      await using auth = startFakeVncServer({ securityTypes: [2] });
      assert.equal(await reason(request(auth.port)), "VNC server requires authentication");
      await using refusing = startFakeVncServer({ refuseReason: "Max clients reached\0" });
      assert.equal(await reason(request(refusing.port)), "VNC server refused: Max clients reached");
      await using garbage = startFakeVncServer({
        garbage: new TextEncoder().encode("SSH-2.0-OpenSSH\r\n"),
      });
      assert.equal(await reason(request(garbage.port)), "VNC server sent an invalid handshake");
    },
  );
  await t.step(
    "viewers with a wrong password, choosing None, a bad version, or silent",
    async () => {
      const wrong = await forward(port, { destination_port: fake.port });
      const failed = await connectViewer({ port: wrong.source_port, password: "wrong-pass" });
      assert.equal(failed.ok, false);
      assert.equal(failed.reason, "Authentication failed");
      failed.duplex.close();
      await daemon.waitForLine(/Authentication failed for client 127\.0\.0\.1:\d+/);

      const none = await forward(port, { destination_port: fake.port });
      const chose = await connectViewer({
        port: none.source_port,
        password: VNC_PASSWORD,
        chooseType: 1,
      });
      assert.equal(chose.ok, false);
      assert.equal(chose.reason, "Security type 1 is not offered");
      chose.duplex.close();

      const bad = await forward(port, { destination_port: fake.port });
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: bad.source_port });
      await conn.write(new TextEncoder().encode("RFB 002.000\n"));
      const sink = new Uint8Array(64);
      while ((await conn.read(sink)) !== null) { /* until the proxy closes */ }
      conn.close();

      const quiet = await forward(port, { destination_port: fake.port });
      const idle = await Deno.connect({ hostname: "127.0.0.1", port: quiet.source_port });
      while ((await idle.read(sink)) !== null) { /* closed by --client-timeout */ }
      idle.close();
    },
  );
  await t.step("no viewer before --connect-timeout", async () => {
    const unused = await forward(port, { destination_port: fake.port });
    await daemon.waitForLine(/Timed out, no connection after 1 sec/, 5000);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: unused.source_port }));
  });
  await t.step("pool exhausted, then back to full", async () => {
    const taken = [];
    for (let i = 0; i < 3; i++) {
      const reply = await forward(port, { destination_port: fake.port });
      assert.equal(reply.status, "OK", JSON.stringify(reply));
      taken.push(reply.source_port);
    }
    assert.equal(new Set(taken).size, 3);
    assert.equal(await reason(request(fake.port)), "no free ports");
    const viewers = await Promise.all(
      taken.map((p) => connectViewer({ port: p, password: VNC_PASSWORD })),
    );
    for (const viewer of viewers) {
      assert.ok(viewer.ok);
      viewer.duplex.close();
    }
    await daemon.waitForLine(/contains 3 ports/);
  });
  assertNoSecrets(daemon.lines);
});

Deno.test("requestForwarding() is exported for programs that embed the client", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  const reply = await requestForwarding({
    destinationAddress: "127.0.0.1",
    destinationPort: fake.port,
    password: VNC_PASSWORD,
    authUser: "admin",
    authPassword: CONTROL_PASSWORD,
  }, { port: daemon.controlPort });
  assert.equal(reply.status, "OK");
  assert.equal(reply.proxy_address, "127.0.0.1");
  const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
  assert.ok(viewer.ok);
  viewer.duplex.close();
  await daemon.waitForLine(/Session ended/);
});

Deno.test("--idle-timeout and --max-session-time end real sessions with their cause", async (t) => {
  await using fake = startFakeVncServer({});
  for (
    const [flag, cause] of [
      ["--idle-timeout=0.5", "idle timeout"],
      ["--max-session-time=0.5", "max session time"],
    ]
  ) {
    await t.step(flag, async () => {
      await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD }, args: [flag] });
      const reply = await forward(daemon.controlPort, { destination_port: fake.port });
      assert.equal(reply.status, "OK", JSON.stringify(reply));
      const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
      assert.ok(viewer.ok);
      await readServerInit(viewer.duplex);
      // The viewer stays connected and silent: only the daemon can end it.
      const end = await daemon.waitForLine(/Session ended/, 10_000);
      assert.match(end, new RegExp(`Session ended \\(${cause}\\)`));
      assert.equal(await viewer.duplex.read(new Uint8Array(1)), null, "the viewer was closed");
      viewer.duplex.close();
    });
  }
});
