import assert from "node:assert/strict";
import { DaemonMetrics } from "../../src/observe/daemon_metrics.ts";
import { FAILURE_REASONS, failureReason } from "../../src/observe/failure_reasons.ts";
import { readExposition } from "../../src/observe/exposition_reader.ts";
import { summarize } from "../../src/cli/status_command.ts";

const SOURCES = {
  poolFree: () => 9,
  poolSize: 10,
  controlConnections: () => 1,
  cryptQueue: () => 0,
  users: () => 2,
  draining: () => false,
};

Deno.test("failureReason() maps every reply reason to a fixed label, never the server's text", () => {
  const table: [string, string][] = [
    ["authentication failed", "authentication_failed"],
    ["malformed request: password", "malformed_request"],
    ["VNC server refused: host hv-17.internal is locked", "vnc_server_refused"],
    ["VNC server refused", "vnc_server_refused"],
    ["VNC server timed out", "vnc_server_timed_out"],
    ["VNC server refused authentication", "vnc_server_refused"],
    ["backend not allowed", "backend_not_allowed"],
    ["VNC server requires TLS", "vnc_server_requires_tls"],
    ["VNC server requires authentication", "vnc_server_requires_authentication"],
    ["VNC server certificate not trusted", "vnc_server_certificate_not_trusted"],
    ["VNC server certificate does not match the name", "vnc_server_certificate_name"],
    ["VNC server TLS handshake failed", "vnc_server_tls_failed"],
    ["VNC server offers only anonymous TLS", "vnc_server_anonymous_tls"],
    ["too many sessions", "limit_sessions"],
    ["too many sessions for this user", "limit_sessions_per_user"],
    ["too many sessions for this VNC server", "limit_sessions_per_backend"],
    ["too many requests", "rate_limited"],
    ["idle_timeout above the daemon's limit", "limit_idle_timeout"],
    ["token store unavailable", "token_store_unavailable"],
    ["something new from a later version", "other"],
  ];
  for (const [reason, label] of table) assert.equal(failureReason(reason), label, reason);
  for (const label of FAILURE_REASONS) assert.match(label, /^[a-z_]+$/);
});

Deno.test("DaemonMetrics counts recent failures in a window of whole minutes", () => {
  let now = 10 * 60_000;
  using metrics = new DaemonMetrics(SOURCES, { now: () => now });
  metrics.failed("authentication failed");
  now += 2 * 60_000;
  metrics.failed("VNC server refused: x");
  const recent = (reason: string) =>
    readExposition(metrics.registry.render()).find((s) =>
      s.name === "vncauthproxy_forwardings_failed_recent" && s.labels.reason === reason
    )!.value;
  assert.equal(recent("authentication_failed"), 1);
  assert.equal(recent("vnc_server_refused"), 1);
  now += 3 * 60_000; // the first is 5 minutes old: out of the window
  assert.equal(recent("authentication_failed"), 0);
  assert.equal(recent("vnc_server_refused"), 1);
  const total =
    readExposition(metrics.registry.render()).find((s) =>
      s.name === "vncauthproxy_forwardings_failed_total" &&
      s.labels.reason === "authentication_failed"
    )!.value;
  assert.equal(total, 1, "the total never forgets");
});

Deno.test("a session's life moves the active gauge, the end causes and the bytes", () => {
  using metrics = new DaemonMetrics(SOURCES);
  const live = metrics.sessionWaiting("vnc-ws", "token");
  const value = (name: string, labels: Record<string, string>) =>
    readExposition(metrics.registry.render()).find((s) =>
      s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
    )?.value;
  const active = { kind: "vnc-ws", rendezvous: "token", state: "waiting" };
  assert.equal(value("vncauthproxy_sessions_active", active), 1);
  live.state = "relaying";
  live.counters = { aToB: 5, bToA: 7 };
  assert.equal(value("vncauthproxy_sessions_active", active), 0);
  assert.equal(value("vncauthproxy_relayed_bytes_total", { direction: "server_to_viewer" }), 7);
  metrics.sessionEnded(live, {
    cause: "idle_timeout",
    startedAt: new Date(),
    durationMs: 2000,
    relayMs: 1500,
    viewerToServer: 5,
    serverToViewer: 7,
  });
  assert.equal(value("vncauthproxy_sessions_active", { ...active, state: "relaying" }), 0);
  assert.equal(value("vncauthproxy_sessions_ended_total", { cause: "idle_timeout" }), 1);
  assert.equal(value("vncauthproxy_relayed_bytes_total", { direction: "server_to_viewer" }), 7);
  assert.equal(value("vncauthproxy_session_duration_seconds_count", {}), 1);
  // No gateway sample for plain vnc: a pool port serves it.
  assert.equal(
    value("vncauthproxy_sessions_active", { kind: "vnc", rendezvous: "token" }),
    undefined,
  );
});

Deno.test("summarize() prints sessions by kind, the pool and recent failures", () => {
  using metrics = new DaemonMetrics(SOURCES);
  metrics.requested();
  metrics.requested();
  metrics.setUp("vnc", "port", 3);
  metrics.failed("too many sessions");
  const live = metrics.sessionWaiting("vnc", "port");
  live.state = "relaying";
  const text = summarize(readExposition(metrics.registry.render()), "http://x/metrics");
  assert.equal(
    text,
    [
      "vncauthproxy at http://x/metrics",
      "Sessions: 1 live (vnc via port relaying 1)",
      "Pool: 9 of 10 ports free",
      "Control: 1 connections open, 2 users, crypt queue 0",
      "Forwardings since start: 2 requested, 1 set up, 1 failed",
      "Failed in the last 5 minutes: 1 (limit_sessions 1)",
      "Sessions ended since start: 0",
      "",
    ].join("\n"),
  );
});

Deno.test("the token store gauge follows the store, and is absent without a gateway", () => {
  let up = true;
  using metrics = new DaemonMetrics({ ...SOURCES, tokenStore: () => up });
  const gauge = () =>
    readExposition(metrics.registry.render()).find((s) => s.name === "vncauthproxy_token_store_up")
      ?.value;
  assert.equal(gauge(), 1);
  up = false;
  assert.equal(gauge(), 0);
  using without = new DaemonMetrics(SOURCES);
  assert.equal(
    readExposition(without.registry.render()).some((s) => s.name === "vncauthproxy_token_store_up"),
    false,
  );
});
