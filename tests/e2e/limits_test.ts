/**
 * End to end, limits: every one hit with its own reason in the control
 * reply and counted in `/metrics`: `--max-sessions`,
 * `--max-sessions-per-user`, `--max-sessions-per-backend`, `--rate-limit`,
 * `--max-pending-per-viewer-ip`, and per-request `idle_timeout` /
 * `max_session_time` above the daemon's.
 */

import assert from "node:assert/strict";
import { requestForwardingRaw, startDaemon } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { startGatewayDaemon, viewerHandshake } from "../_util/gateway.ts";
import { metricsPort, scrape } from "../_util/metrics.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";

const PASSWORDS = { admin: "l1mits-Admin!", other: "l1mits-Other!" };
const VNC_PASSWORD = "once-lim";

function forward(
  controlPort: number,
  destinationPort: number,
  more: { user?: keyof typeof PASSWORDS; type?: string } & Record<string, unknown> = {},
) {
  const { user = "admin", ...fields } = more;
  return requestForwardingRaw(controlPort, {
    auth_user: user,
    auth_password: PASSWORDS[user],
    destination_port: destinationPort,
    password: VNC_PASSWORD,
    ...fields,
  });
}

const MW = "--metrics-listen=127.0.0.1:0";

Deno.test("--max-sessions, --max-sessions-per-user and --max-sessions-per-backend refuse with their reasons, counted", async (t) => {
  await using first = startFakeVncServer({});
  await using second = startFakeVncServer({});
  await t.step("--max-sessions counts pending sessions", async () => {
    await using daemon = await startDaemon({ users: PASSWORDS, args: [MW, "--max-sessions=2"] });
    const port = await metricsPort(daemon);
    assert.equal((await forward(daemon.controlPort, first.port)).status, "OK");
    assert.equal((await forward(daemon.controlPort, second.port, { user: "other" })).status, "OK");
    const third = await forward(daemon.controlPort, second.port);
    assert.deepEqual([third.status, third.reason], ["FAILED", "too many sessions"]);
    const metrics = await scrape(port);
    assert.equal(
      metrics.value("vncauthproxy_forwardings_failed_total", { reason: "limit_sessions" }),
      1,
    );
  });
  await t.step("--max-sessions-per-user", async () => {
    await using daemon = await startDaemon({
      users: PASSWORDS,
      args: [MW, "--max-sessions-per-user=1"],
    });
    const port = await metricsPort(daemon);
    assert.equal((await forward(daemon.controlPort, first.port)).status, "OK");
    const again = await forward(daemon.controlPort, second.port);
    assert.deepEqual([again.status, again.reason], ["FAILED", "too many sessions for this user"]);
    assert.equal((await forward(daemon.controlPort, second.port, { user: "other" })).status, "OK");
    const metrics = await scrape(port);
    assert.equal(
      metrics.value("vncauthproxy_forwardings_failed_total", { reason: "limit_sessions_per_user" }),
      1,
    );
  });
  await t.step(
    "--max-sessions-per-backend, and the place comes back when a session ends",
    async () => {
      await using daemon = await startDaemon({
        users: PASSWORDS,
        args: [MW, "--max-sessions-per-backend=1", "--connect-timeout=1"],
      });
      const port = await metricsPort(daemon);
      assert.equal((await forward(daemon.controlPort, first.port)).status, "OK");
      const same = await forward(daemon.controlPort, first.port, { user: "other" });
      assert.deepEqual([same.status, same.reason], [
        "FAILED",
        "too many sessions for this VNC server",
      ]);
      assert.equal((await forward(daemon.controlPort, second.port)).status, "OK");
      const metrics = await scrape(port);
      assert.equal(
        metrics.value("vncauthproxy_forwardings_failed_total", {
          reason: "limit_sessions_per_backend",
        }),
        1,
      );
      // No viewer comes: after --connect-timeout the session ends and frees its place.
      await daemon.waitForLine(/cause=no_viewer/, 10_000);
      await daemon.waitForLine(/Session ended/);
      let again = await forward(daemon.controlPort, first.port, { user: "other" });
      for (let i = 0; again.status !== "OK" && i < 50; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        again = await forward(daemon.controlPort, first.port, { user: "other" });
      }
      assert.equal(again.status, "OK", JSON.stringify(again));
    },
  );
});

Deno.test("--rate-limit refuses control requests over N/s per source address, counted", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({ users: PASSWORDS, args: [MW, "--rate-limit=1/s"] });
  const port = await metricsPort(daemon);
  // A burst of 2, then refused: malformed requests count as much as good ones.
  const replies = [];
  for (let i = 0; i < 4; i++) replies.push(await forward(daemon.controlPort, fake.port));
  const reasons = replies.map((r) => r.status === "OK" ? "OK" : r.reason);
  assert.deepEqual(reasons.slice(0, 2), ["OK", "OK"]);
  assert.ok(reasons.slice(2).includes("too many requests"), JSON.stringify(reasons));
  const metrics = await scrape(port);
  assert.ok(
    metrics.value("vncauthproxy_forwardings_failed_total", { reason: "rate_limited" }) >= 1,
  );
});

Deno.test("per-request idle_timeout / max_session_time above the daemon's are refused with a reason", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: PASSWORDS,
    args: [MW, "--idle-timeout=60", "--max-session-time=3600"],
  });
  const port = await metricsPort(daemon);
  for (
    const [fields, reason] of [
      [{ idle_timeout: 61 }, "idle_timeout above the daemon's limit"],
      [{ idle_timeout: 0 }, "idle_timeout above the daemon's limit"],
      [{ max_session_time: 3601 }, "max_session_time above the daemon's limit"],
      [{ idle_timeout: "5" }, "malformed request: idle_timeout"],
      [{ max_session_time: -1 }, "malformed request: max_session_time"],
    ] as const
  ) {
    const reply = await forward(daemon.controlPort, fake.port, fields);
    assert.deepEqual([reply.status, reply.reason], ["FAILED", reason], JSON.stringify(fields));
  }
  const ok = await forward(daemon.controlPort, fake.port, {
    idle_timeout: 30,
    max_session_time: 60,
  });
  assert.equal(ok.status, "OK");
  const metrics = await scrape(port);
  assert.equal(
    metrics.value("vncauthproxy_forwardings_failed_total", { reason: "limit_idle_timeout" }),
    2,
  );
  assert.equal(
    metrics.value("vncauthproxy_forwardings_failed_total", { reason: "limit_max_session_time" }),
    1,
  );
});

Deno.test("--max-pending-per-viewer-ip closes the extra handshakes of one address, the viewer still gets in", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: PASSWORDS,
    args: [MW, "--max-pending-per-viewer-ip=2"],
  });
  const port = await metricsPort(daemon);
  const reply = await forward(daemon.controlPort, fake.port, { type: "vnc-ws" });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  // Two connections sit in their WebSocket handshake: the third is closed unread.
  const idle = await Promise.all(
    [0, 1].map(() => Deno.connect({ hostname: "127.0.0.1", port: reply.source_port })),
  );
  try {
    const extra = await Deno.connect({ hostname: "127.0.0.1", port: reply.source_port });
    try {
      const got = await extra.read(new Uint8Array(16)).catch(() => null);
      assert.equal(got, null, "closed before any byte");
    } finally {
      extra.close();
    }
    await daemon.waitForLine(/Refused a client from .*too many pending connections/);
    const metrics = await scrape(port);
    assert.equal(
      metrics.value("vncauthproxy_viewer_connections_refused_total", { reason: "pending_per_ip" }),
      1,
    );
  } finally {
    for (const conn of idle) conn.close();
  }
  // The idle ones gone, the viewer comes in: the forwarding was not burnt.
  // Until the daemon has seen them close, a try may still be refused (closed unanswered).
  let socket;
  for (let i = 0; socket === undefined && i < 50; i++) {
    socket = (await connectRawWebSocket({ port: reply.source_port }).catch(() => undefined))
      ?.socket;
    if (socket === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(socket, "the viewer got its upgrade");
  try {
    assert.equal(await viewerHandshake(socket, VNC_PASSWORD), 0);
  } finally {
    socket.close();
  }
  await daemon.waitForLine(/AUDIT session_end .*cause=viewer_closed/);
});

Deno.test("--max-pending-per-viewer-ip on the gateway closes one address's extra connections, counted", async () => {
  await using gw = await startGatewayDaemon({
    users: PASSWORDS,
    plain: true,
    args: [MW, "--max-pending-per-viewer-ip=1"],
  });
  const port = await metricsPort(gw.daemon);
  const idle = await Deno.connect({ hostname: "127.0.0.1", port: gw.gatewayPort });
  try {
    const extra = await Deno.connect({ hostname: "127.0.0.1", port: gw.gatewayPort });
    try {
      assert.equal(await extra.read(new Uint8Array(16)).catch(() => null), null);
    } finally {
      extra.close();
    }
    await gw.daemon.waitForLine(/\[G2\] Refused 127\.0\.0\.1:\d+: too many pending connections/);
    const metrics = await scrape(port);
    assert.equal(
      metrics.value("vncauthproxy_viewer_connections_refused_total", { reason: "pending_per_ip" }),
      1,
    );
  } finally {
    idle.close();
  }
  // Its place is free again once the idle one is gone: a static request is answered.
  let status = 0;
  for (let i = 0; status !== 404 && i < 20; i++) {
    status = await fetch(`http://127.0.0.1:${gw.gatewayPort}/`).then(async (r) => {
      await r.body?.cancel();
      return r.status;
    }, () => 0);
    if (status !== 404) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(status, 404, "no --web: the gateway answers 404 once the address may come in");
});
