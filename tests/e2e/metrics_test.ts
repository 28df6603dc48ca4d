/**
 * End to end, operations: `--metrics-listen` scraped after real sessions
 * and failures (counters and histogram counts move; the exposition parses
 * with a real Prometheus text parser and, when installed, `promtool check
 * metrics`; no address, user name or server text in a label), and
 * `vncauthproxy status` summarising it.
 */

import assert from "node:assert/strict";
import {
  requestForwardingRaw,
  runMain,
  startDaemon,
  writeUsersFile,
} from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { metricsPort, scrape } from "../_util/metrics.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "m3trics-Control!";
const VNC_PASSWORD = "once-m3t";
const SERVER_SECRET_TEXT = "host hv-secret-17 says no";

/** Lines of the text format 0.0.4: a comment, or `name{labels} value`. */
const SAMPLE_LINE =
  /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$/;

function which(tool: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      Deno.statSync(`${dir}/${tool}`);
      return `${dir}/${tool}`;
    } catch { /* next */ }
  }
  return undefined;
}

/** Checks the exposition strictly, line by line, and with promtool when it is installed. */
async function checkExposition(text: string): Promise<void> {
  assert.ok(text.endsWith("\n"));
  const types = new Set<string>();
  for (const line of text.trimEnd().split("\n")) {
    if (line.startsWith("# HELP ")) continue;
    const type = /^# TYPE (\S+) (counter|gauge|histogram)$/.exec(line);
    if (type) {
      assert.ok(!types.has(type[1]!), `family ${type[1]} declared twice`);
      types.add(type[1]!);
      continue;
    }
    assert.match(line, SAMPLE_LINE);
    const name = line.split(/[{ ]/)[0]!;
    const family = name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(types.has(name) || types.has(family), `sample ${name} before its # TYPE`);
    assert.ok(name.startsWith("vncauthproxy_"), `${name} is not prefixed vncauthproxy_`);
  }
  const promtool = which("promtool");
  if (promtool === undefined) {
    // deno-lint-ignore no-console
    console.warn("!!! SKIPPED promtool check metrics: promtool not installed (Debian: prometheus)");
    return;
  }
  const child = new Deno.Command(promtool, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `promtool check metrics:\n${said}`);
  assert.equal(said.trim(), "", `promtool check metrics:\n${said}`);
}

Deno.test("/metrics moves with real sessions and failures, parses, and names no address, user or server text", async () => {
  await using fake = startFakeVncServer({});
  await using refusing = startFakeVncServer({ refuseReason: SERVER_SECRET_TEXT });
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    args: ["--metrics-listen=127.0.0.1:0"],
  });
  const port = await metricsPort(daemon);
  const before = await scrape(port);
  await checkExposition(before.text);
  assert.equal(before.value("vncauthproxy_forwardings_requested_total"), 0);
  assert.equal(before.value("vncauthproxy_pool_ports"), 40);
  assert.equal(before.value("vncauthproxy_pool_ports_free"), 40);
  assert.equal(before.value("vncauthproxy_control_users"), 1);

  // One session that relays and ends by the viewer.
  const ok = await requestForwardingRaw(daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fake.port,
    password: VNC_PASSWORD,
  });
  assert.equal(ok.status, "OK", JSON.stringify(ok));
  const waiting = await scrape(port);
  assert.equal(
    waiting.value("vncauthproxy_sessions_active", {
      kind: "vnc",
      rendezvous: "port",
      state: "waiting",
    }),
    1,
  );
  assert.equal(waiting.value("vncauthproxy_pool_ports_free"), 39);
  const viewer = await connectViewer({ port: ok.source_port, password: VNC_PASSWORD });
  assert.ok(viewer.ok);
  await readServerInit(viewer.duplex);
  await viewer.duplex.write(new TextEncoder().encode("ping"));
  const echo = new Uint8Array(4);
  await viewer.duplex.read(echo);
  const relaying = await scrape(port);
  assert.equal(
    relaying.value("vncauthproxy_sessions_active", {
      kind: "vnc",
      rendezvous: "port",
      state: "relaying",
    }),
    1,
  );
  assert.ok(
    relaying.value("vncauthproxy_relayed_bytes_total", { direction: "viewer_to_server" }) >= 4,
    "live bytes count before the session ends",
  );
  viewer.duplex.close();
  await daemon.waitForLine(/AUDIT session_end/);

  // A wrong control password, and a VNC server that refuses with its own text.
  const denied = await requestForwardingRaw(daemon.controlPort, {
    auth_password: "wrong",
    destination_port: fake.port,
    password: VNC_PASSWORD,
  });
  assert.equal(denied.status, "FAILED");
  const refused = await requestForwardingRaw(daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: refusing.port,
    password: VNC_PASSWORD,
  });
  assert.equal(refused.status, "FAILED");
  assert.match(String(refused.reason), /^VNC server refused: /);

  const after = await scrape(port);
  await checkExposition(after.text);
  assert.equal(after.value("vncauthproxy_forwardings_requested_total"), 3);
  assert.equal(
    after.value("vncauthproxy_forwardings_set_up_total", { kind: "vnc", rendezvous: "port" }),
    1,
  );
  assert.equal(
    after.value("vncauthproxy_forwardings_failed_total", { reason: "authentication_failed" }),
    1,
  );
  assert.equal(
    after.value("vncauthproxy_forwardings_failed_total", { reason: "vnc_server_refused" }),
    1,
  );
  assert.equal(
    after.value("vncauthproxy_forwardings_failed_recent", { reason: "vnc_server_refused" }),
    1,
  );
  assert.equal(after.value("vncauthproxy_control_auth_failures_total"), 1);
  assert.equal(after.value("vncauthproxy_sessions_ended_total", { cause: "viewer_closed" }), 1);
  assert.equal(after.value("vncauthproxy_sessions_ended_total", { cause: "idle_timeout" }), 0);
  assert.equal(
    after.value("vncauthproxy_sessions_active", {
      kind: "vnc",
      rendezvous: "port",
      state: "relaying",
    }),
    0,
  );
  assert.ok(
    after.value("vncauthproxy_relayed_bytes_total", { direction: "viewer_to_server" }) >= 4,
  );
  // ServerInit (24 + 4 bytes of name) and the echo.
  assert.ok(
    after.value("vncauthproxy_relayed_bytes_total", { direction: "server_to_viewer" }) >= 32,
  );
  assert.equal(after.count("vncauthproxy_setup_seconds"), 1);
  assert.equal(after.count("vncauthproxy_backend_handshake_seconds"), 1);
  assert.equal(after.count("vncauthproxy_viewer_auth_seconds"), 1);
  assert.equal(after.count("vncauthproxy_session_duration_seconds"), 1);
  assert.ok(after.value("vncauthproxy_process_resident_memory_bytes") > 1_000_000);
  // Deno shows /proc/self only to --allow-all, which the daemon does not get.
  const fds = after.families.find((f) => f.name === "vncauthproxy_process_open_fds");
  assert.ok(fds !== undefined && (fds.metrics.length === 0 || Number(fds.metrics[0]!.value) > 3));
  assert.ok(after.families.some((f) => f.name === "vncauthproxy_event_loop_lag_seconds"));

  // No label holds an address, a port, a user name or the server's words.
  for (const family of after.families) {
    for (const metric of family.metrics) {
      for (const value of Object.values(metric.labels ?? {})) {
        assert.match(value, /^[a-z_-]+$|^vnc(-wss?)?$/, `${family.name} label "${value}"`);
      }
    }
  }
  for (const secret of ["127.0.0.1", "admin", "hv-secret", CONTROL_PASSWORD, VNC_PASSWORD]) {
    assert.ok(!after.text.includes(secret), `"${secret}" in /metrics`);
  }

  // The status subcommand reads the same numbers.
  const status = await runMain(["status", `--metrics=http://127.0.0.1:${port}/metrics`]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^Sessions: 0 live$/m);
  assert.match(status.stdout, /^Pool: 40 of 40 ports free$/m);
  assert.match(status.stdout, /^Forwardings since start: 3 requested, 1 set up, 2 failed$/m);
  assert.match(
    status.stdout,
    /^Failed in the last 5 minutes: 2 \((authentication_failed 1, vnc_server_refused 1|vnc_server_refused 1, authentication_failed 1)\)$/m,
  );
  assert.match(status.stdout, /^Sessions ended since start: 1 \(viewer_closed 1\)$/m);
});

Deno.test("vncauthproxy status exits 1 when no daemon answers", async () => {
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (free.addr as Deno.NetAddr).port;
  free.close();
  const status = await runMain(["status", `--metrics=http://127.0.0.1:${port}/metrics`]);
  assert.equal(status.code, 1);
  assert.match(status.stderr, /Cannot read http:\/\/127\.0\.0\.1:\d+\/metrics/);
});

Deno.test("--metrics-listen on a non-loopback address needs --metrics-allow; outside it gets 403", async () => {
  const users = await writeUsersFile({ admin: CONTROL_PASSWORD });
  try {
    const refused = await runMain([`--auth-file=${users}`, "--metrics-listen=0.0.0.0:0"]);
    assert.equal(refused.code, 2);
    assert.match(
      refused.stderr,
      /--metrics-listen on a non-loopback address needs --metrics-allow/,
    );
  } finally {
    await Deno.remove(users.replace(/\/users$/, ""), { recursive: true });
  }
  // Listening on every address, scrapes from loopback and the allowed range only.
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    args: ["--metrics-listen=0.0.0.0:0", "--metrics-allow=198.51.100.0/24"],
  });
  const port = await metricsPort(daemon);
  const local = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(local.status, 200);
  await local.body?.cancel();
  const nonLoopback = Deno.networkInterfaces().find((i) =>
    i.family === "IPv4" && !i.address.startsWith("127.") && !i.address.startsWith("198.51.100.")
  );
  if (nonLoopback === undefined) {
    // deno-lint-ignore no-console
    console.warn("!!! SKIPPED the 403 half: no non-loopback IPv4 address on this machine");
    return;
  }
  const outside = await fetch(`http://${nonLoopback.address}:${port}/metrics`);
  assert.equal(outside.status, 403);
  await outside.body?.cancel();
  await daemon.waitForLine(/Refused a metrics request from .*not in --metrics-allow/);
});
