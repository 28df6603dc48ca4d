/**
 * End to end: RFB version pairings through the daemon, listening on every
 * address, resolving backend names to several addresses, and the control
 * socket's connection cap and backlog.
 */

import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import { readExact } from "../../src/io/byte_reader.ts";
import {
  type DaemonProcess,
  rawControl,
  requestForwardingRaw,
  startDaemon,
} from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "pa1ring!";

function forward(daemon: DaemonProcess, port: number, fields: Record<string, unknown> = {}) {
  return requestForwardingRaw(daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: port,
    password: VNC_PASSWORD,
    ...fields,
  });
}

const VERSIONS = ["RFB 003.003\n", "RFB 003.007\n", "RFB 003.008\n"];

Deno.test("every viewer version reaches every server version through the daemon", async () => {
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  for (const serverVersion of VERSIONS) {
    await using fake = startFakeVncServer({
      version: serverVersion,
      desktopName: serverVersion.trim(),
    });
    for (const viewerVersion of VERSIONS) {
      const reply = await forward(daemon, fake.port);
      assert.equal(reply.status, "OK", JSON.stringify(reply));
      const viewer = await connectViewer({
        port: reply.source_port,
        password: VNC_PASSWORD,
        version: viewerVersion,
        oneByteWrites: viewerVersion === "RFB 003.007\n",
      });
      const pair = `server ${serverVersion.trim()}, viewer ${viewerVersion.trim()}`;
      assert.equal(viewer.ok, true, pair);
      assert.equal((await readServerInit(viewer.duplex)).name, serverVersion.trim(), pair);
      await viewer.duplex.write(new TextEncoder().encode("ping"));
      assert.equal(new TextDecoder().decode(await readExact(viewer.duplex, 4)), "ping", pair);
      viewer.duplex.close();
    }
  }
});

Deno.test("with --proxy-listen-address '*' viewers reach the port over IPv4 and IPv6 and the reply names this host", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    args: ["--proxy-listen-address=*"],
  });
  for (const host of ["127.0.0.1", "::1"]) {
    const reply = await forward(daemon, fake.port);
    assert.equal(reply.status, "OK");
    assert.ok(reply.proxy_address?.startsWith(Deno.hostname()), String(reply.proxy_address));
    const viewer = await connectViewer({ host, port: reply.source_port, password: VNC_PASSWORD });
    assert.equal(viewer.ok, true, host);
    viewer.duplex.close();
    await daemon.waitForLine(
      new RegExp(`Connection from ${host === "::1" ? "\\[::1\\]" : "127\\.0\\.0\\.1"}:`),
    );
  }
});

Deno.test("a backend name is tried at every address it resolves to", async () => {
  const addresses = (await lookup("localhost", { all: true })).map((a) => a.address);
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  // The fake server listens on 127.0.0.1 only: when "localhost" also
  // resolves to ::1 first, that attempt is refused and the next one wins.
  const reply = await forward(daemon, fake.port, { destination_address: "localhost" });
  assert.equal(reply.status, "OK", `${JSON.stringify(reply)} (localhost = ${addresses})`);
  const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
  assert.ok(viewer.ok);
  viewer.duplex.close();
});

Deno.test("the control socket refuses a newcomer only while every slot answers a request, and has a backlog of at least 256", async () => {
  await using silentServer = startFakeVncServer({ silent: true });
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    args: ["--max-control-connections=2", "--control-timeout=5", "--server-timeout=2"],
  });
  // Two requests in progress (their VNC server never speaks) hold both slots.
  const answering = [0, 1].map(() => forward(daemon, silentServer.port));
  await daemon.waitForLine(/\[C1\] Request by/);
  await daemon.waitForLine(/\[C2\] Request by/);
  const busy = JSON.parse(await rawControl(daemon.controlPort, "{}"));
  assert.equal(busy.reason, "server busy");
  for (const reply of await Promise.all(answering)) {
    assert.equal(reply.reason, "VNC server timed out");
  }
  // Idle connections hold the slots too, but make room for a newcomer.
  const silent = await Promise.all(
    [0, 1].map(() => Deno.connect({ hostname: "127.0.0.1", port: daemon.controlPort })),
  );
  try {
    await daemon.waitForLine(/\[C5\] New control connection/);
    const reply = JSON.parse(await rawControl(daemon.controlPort, "{}"));
    assert.match(reply.reason, /^malformed request: /);
  } finally {
    for (const conn of silent) conn.close();
  }
  const ss = await new Deno.Command("ss", { args: ["-ltnH", `sport = :${daemon.controlPort}`] })
    .output();
  const columns = new TextDecoder().decode(ss.stdout).trim().split(/\s+/);
  assert.ok(Number(columns[2]) >= 256, `backlog ${columns[2]}`);
});
