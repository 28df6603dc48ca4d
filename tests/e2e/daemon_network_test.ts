/**
 * End to end: RFB version pairings through the daemon, listening on every
 * address, IPv6 backends, and the control socket's connection cap and
 * backlog. (Trying every address of a backend name is proved in
 * tests/rfb/backend_handshake_test.ts with a resolver of its own.)
 */

import assert from "node:assert/strict";
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

Deno.test("an IPv6 backend, bracketed or not, is reached and logged as [::1]:port", async () => {
  await using fake = startFakeVncServer({ hostname: "::1" });
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  for (const address of ["[::1]", "::1"]) {
    const reply = await forward(daemon, fake.port, { destination_address: address });
    assert.equal(reply.status, "OK", JSON.stringify(reply));
    const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
    assert.ok(viewer.ok);
    viewer.duplex.close();
  }
  await daemon.waitForLine(new RegExp(`New forwarding: .* -> \\[::1\\]:${fake.port}$`));
  const mentions = daemon.lines.filter((line) => line.includes(`:${fake.port}`));
  assert.ok(mentions.length >= 4, mentions.join("\n"));
  assert.ok(mentions.every((line) => !line.includes("[[")), mentions.join("\n"));
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
