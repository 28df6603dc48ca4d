/**
 * End to end, logs: `--idle-timeout`, `--max-session-time` and a request's
 * own `idle_timeout` end real sessions with the right audit cause, in the
 * `--audit-log` file (reopened on SIGHUP) and the log; `--log-format json`
 * lines all parse, carry the forwarding id and the audit fields, and hold
 * no secret even at `-d`.
 */

import assert from "node:assert/strict";
import { requestForwardingRaw, startDaemon } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { startGatewayDaemon, viewerHandshake } from "../_util/gateway.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "aud1t-Control!";
const VNC_PASSWORD = "once-aud";

/** Opens a session, lets the viewer sit silent, and returns once the daemon ended it. */
async function silentSession(
  controlPort: number,
  fakePort: number,
  fields: Record<string, unknown> = {},
): Promise<void> {
  const reply = await requestForwardingRaw(controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fakePort,
    password: VNC_PASSWORD,
    ...fields,
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
  assert.ok(viewer.ok);
  await readServerInit(viewer.duplex);
  assert.equal(await viewer.duplex.read(new Uint8Array(1)), null, "the daemon closed the viewer");
  viewer.duplex.close();
}

/** Waits until `path` has `lines` lines; returns them. */
async function fileLines(path: string, lines: number): Promise<string[]> {
  for (let i = 0; i < 100; i++) {
    const text = await Deno.readTextFile(path).catch(() => "");
    const found = text.split("\n").filter((line) => line !== "");
    if (found.length >= lines) return found;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${path} did not reach ${lines} lines`);
}

Deno.test("--idle-timeout, --max-session-time and a request's idle_timeout end sessions with their audit cause", async () => {
  await using fake = startFakeVncServer({});
  const dir = await Deno.makeTempDir({ prefix: "vap-audit-" });
  try {
    const audit = `${dir}/audit.log`;
    {
      await using daemon = await startDaemon({
        users: { admin: CONTROL_PASSWORD },
        args: [`--audit-log=${audit}`, "--idle-timeout=0.5"],
      });
      await silentSession(daemon.controlPort, fake.port);
      const [line] = await fileLines(audit, 1);
      assert.match(
        line!,
        /INFO: \[C1\] AUDIT session_end user=admin kind=vnc rendezvous=port backend=127\.0\.0\.1:\d+ viewer=127\.0\.0\.1:\d+ start=\d{4}-\d\d-\d\dT[\d:.]+Z duration_s=[\d.]+ viewer_to_server=0 server_to_viewer=\d+ cause=idle_timeout$/,
      );
      await daemon.waitForLine(/AUDIT session_end .*cause=idle_timeout/);
      // SIGHUP reopens the file: after a rotation, new lines go to a new file.
      await Deno.rename(audit, `${audit}.1`);
      daemon.kill("SIGHUP");
      await daemon.waitForLine(/Reloaded/);
      // A request asks for less than the daemon's limit.
      const reply = await requestForwardingRaw(daemon.controlPort, {
        auth_password: CONTROL_PASSWORD,
        destination_port: fake.port,
        password: VNC_PASSWORD,
        idle_timeout: 0.2,
      });
      assert.equal(reply.status, "OK");
      const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
      await readServerInit(viewer.duplex);
      assert.equal(await viewer.duplex.read(new Uint8Array(1)), null);
      viewer.duplex.close();
      const [rotated] = await fileLines(audit, 1);
      assert.match(rotated!, /\[C2\] AUDIT session_end .*cause=idle_timeout$/);
      assert.equal((await fileLines(`${audit}.1`, 1)).length, 1, "the old file keeps its line");
    }
    {
      await using daemon = await startDaemon({
        users: { admin: CONTROL_PASSWORD },
        args: [`--audit-log=${audit}`, "--max-session-time=0.5"],
      });
      await silentSession(daemon.controlPort, fake.port);
      await daemon.waitForLine(/AUDIT session_end .*cause=max_time/);
      const lines = await fileLines(audit, 2);
      assert.match(lines[1]!, /AUDIT session_end user=admin .*cause=max_time$/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--log-format json: every line parses, with id, event and audit fields, and no secret at -d", async () => {
  await using fake = startFakeVncServer({});
  await using gw = await startGatewayDaemon({
    users: { admin: CONTROL_PASSWORD },
    plain: true,
    args: ["--log-format=json", "--max-session-time=0.5"],
  });
  const { daemon } = gw;
  // A pool-port session, ended by its maximum time.
  await silentSession(daemon.controlPort, fake.port);
  await daemon.waitForLine(/"event":"session_end"/);
  // A wrong control password, and a gateway token (a secret the reply alone carries).
  const wrong = await requestForwardingRaw(daemon.controlPort, {
    auth_password: "not-the-Password",
    destination_port: fake.port,
    password: VNC_PASSWORD,
  });
  assert.equal(wrong.status, "FAILED");
  const minted = await requestForwardingRaw(daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fake.port,
    type: "vnc-ws",
    gateway: true,
  });
  assert.equal(minted.status, "OK", JSON.stringify(minted));
  const token = (minted as unknown as { token: string }).token;
  const { socket } = await connectRawWebSocket({
    port: gw.gatewayPort,
    path: `/websockify?token=${token}`,
  });
  assert.ok(socket);
  assert.equal(await viewerHandshake(socket), 0);
  socket.close();
  await daemon.waitForLine(/"event":"session_end".*"rendezvous":"token"/);

  const records = daemon.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.ok(records.length > 10);
  for (const record of records) {
    assert.match(String(record.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(["debug", "info", "warn", "error"].includes(String(record.level)));
    assert.equal(typeof record.event, "string");
    assert.equal(typeof record.msg, "string");
  }
  assert.ok(records.some((r) => r.level === "debug"), "-d logs debug lines");
  const ends = records.filter((r) => r.event === "session_end");
  assert.equal(ends.length, 2);
  const [port, gateway] = ends as [Record<string, unknown>, Record<string, unknown>];
  assert.equal(port.id, "C1");
  assert.equal(port.user, "admin");
  assert.equal(port.kind, "vnc");
  assert.equal(port.rendezvous, "port");
  assert.match(String(port.backend), /^127\.0\.0\.1:\d+$/);
  assert.match(String(port.viewer), /^127\.0\.0\.1:\d+$/);
  assert.equal(port.cause, "max_time");
  assert.equal(typeof port.duration_s, "number");
  assert.equal(typeof port.server_to_viewer, "number");
  assert.equal(gateway.rendezvous, "token");
  assert.equal(gateway.kind, "vnc-ws");
  assert.equal(gateway.cause, "viewer_closed");
  assert.ok(
    records.some((r) => r.event === "forwarding_failed" && r.reason === "authentication failed"),
  );
  assert.ok(records.some((r) => r.event === "forwarding_set_up" && r.id === "C1"));
  const all = daemon.lines.join("\n");
  for (const secret of [CONTROL_PASSWORD, "not-the-Password", VNC_PASSWORD, token]) {
    assert.ok(!all.includes(secret), `a log line holds the secret "${secret.slice(0, 3)}..."`);
  }
});
