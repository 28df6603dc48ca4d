/**
 * End to end, `/healthz` and `/readyz`: 503 naming the failing part when
 * the users file is missing, when the pool is empty, and (`/readyz`)
 * while draining after SIGTERM; 200 again once the part is back.
 */

import assert from "node:assert/strict";
import { requestForwardingRaw, startDaemon, writeUsersFile } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { getAdmin, metricsPort, scrape } from "../_util/metrics.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "h3alth-Control!";
const VNC_PASSWORD = "once-hlt";

Deno.test("/healthz is 503 without a users file and 200 once SIGHUP loaded one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vap-health-" });
  try {
    const authFile = `${dir}/users`;
    await using daemon = await startDaemon({
      authFile,
      args: ["--metrics-listen=127.0.0.1:0"],
    });
    const port = await metricsPort(daemon);
    const missing = await getAdmin(port, "/healthz");
    assert.equal(missing.status, 503);
    assert.match(missing.body, /^users: none loaded$/m);
    assert.equal((await getAdmin(port, "/readyz")).status, 503);

    const written = await writeUsersFile({ admin: CONTROL_PASSWORD });
    await Deno.rename(written, authFile);
    await Deno.remove(written.replace(/\/users$/, ""), { recursive: true });
    daemon.kill("SIGHUP");
    await daemon.waitForLine(/Reloaded: 1 control users/);
    const healthy = await getAdmin(port, "/healthz");
    assert.deepEqual([healthy.status, healthy.body], [200, "ok\n"]);
    assert.equal((await getAdmin(port, "/readyz")).status, 200);
    assert.equal((await getAdmin(port, "/nothing")).status, 404);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/healthz is 503 while the pool is empty, 200 when the port is back", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    poolSize: 1,
    args: ["--metrics-listen=127.0.0.1:0", "--connect-timeout=1", "--port-cooldown=0"],
  });
  const port = await metricsPort(daemon);
  assert.equal((await getAdmin(port, "/healthz")).status, 200);
  const reply = await requestForwardingRaw(daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fake.port,
    password: VNC_PASSWORD,
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const empty = await getAdmin(port, "/healthz");
  assert.equal(empty.status, 503);
  assert.match(empty.body, /^pool: no free port of 1$/m);
  // No viewer: the forwarding ends after --connect-timeout and frees the port.
  await daemon.waitForLine(/Session ended/, 10_000);
  let back = await getAdmin(port, "/healthz");
  for (let i = 0; back.status !== 200 && i < 50; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    back = await getAdmin(port, "/healthz");
  }
  assert.equal(back.status, 200, back.body);
});

Deno.test("/readyz is 503 while draining after SIGTERM, metrics answer until the end", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    args: ["--metrics-listen=127.0.0.1:0", "--drain-timeout=30"],
  });
  const port = await metricsPort(daemon);
  const reply = await requestForwardingRaw(daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fake.port,
    password: VNC_PASSWORD,
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
  assert.ok(viewer.ok);
  await readServerInit(viewer.duplex);
  assert.equal((await getAdmin(port, "/readyz")).status, 200);

  daemon.kill("SIGTERM");
  await daemon.waitForLine(/Waiting up to 30 s for 1 live sessions/);
  const ready = await getAdmin(port, "/readyz");
  assert.equal(ready.status, 503);
  assert.match(ready.body, /^draining$/m);
  const health = await getAdmin(port, "/healthz");
  assert.equal(health.status, 503);
  assert.match(health.body, /^control: not listening$/m);
  const metrics = await scrape(port);
  assert.equal(metrics.value("vncauthproxy_draining"), 1);
  assert.equal(
    metrics.value("vncauthproxy_sessions_active", {
      kind: "vnc",
      rendezvous: "port",
      state: "relaying",
    }),
    1,
    "the live session goes on while draining",
  );
  viewer.duplex.close();
  await daemon.waitForLine(/AUDIT session_end .*cause=viewer_closed/);
  assert.equal((await daemon.status).code, 0);
});
