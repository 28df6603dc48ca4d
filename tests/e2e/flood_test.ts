/**
 * End to end: floods of idle and slow connections from the panel's own
 * address (127.0.0.1) against `main.ts` as a subprocess, with the default
 * caps. The real client must still get through: at a cap the connection
 * idle longest without a complete request is dropped, not the newcomer.
 */

import assert from "node:assert/strict";
import { vncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import {
  type DaemonProcess,
  openIdleConnections,
  requestForwardingRaw,
  startDaemon,
} from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectRawWebSocket, type RawWebSocket } from "../_util/raw_websocket.ts";
import { connectViewer } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "fl00ded!";
const POOL_SIZE = 40;

function forward(daemon: DaemonProcess, port: number, type = "vnc") {
  return requestForwardingRaw(daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: port,
    password: VNC_PASSWORD,
    type,
  });
}

/** Asserts that a viewer gets through `port`, then that the port goes back to the pool. */
async function useForwarding(daemon: DaemonProcess, port: number): Promise<void> {
  const viewer = await connectViewer({ port, password: VNC_PASSWORD });
  assert.ok(viewer.ok, viewer.reason);
  viewer.duplex.close();
  await daemon.waitForLine(
    new RegExp(`Returned port ${port} to port pool, contains ${POOL_SIZE} ports`),
  );
}

Deno.test("2,000 idle control connections from the panel's address do not deny its real request", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    poolSize: POOL_SIZE,
  });
  using flood = await openIdleConnections(daemon.controlPort, 2_000);
  // Every flood connection has been accepted (and, beyond the default cap
  // of 256, has pushed out an idler one) before the real request comes.
  await daemon.waitForLine(/\[C2000\] /, 30_000);

  const reply = await forward(daemon, fake.port);
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  await useForwarding(daemon, reply.source_port);
  assert.equal(flood.conns.length, 2_000);
  assert.ok(
    daemon.lines.some((line) => /Control connection cap of 256 reached/.test(line)),
    "the evictions are logged",
  );
});

Deno.test("slow control clients sending a byte a second do not deny a real request", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    poolSize: POOL_SIZE,
  });
  // More than the default cap of 256, each dribbling an endless request.
  using slow = await openIdleConnections(daemon.controlPort, 300);
  const dribbling = new AbortController();
  const dribble = (async () => {
    const prefix = new TextEncoder().encode('{"auth_user": "');
    for (let second = 0; !dribbling.signal.aborted; second++) {
      await Promise.allSettled(
        slow.conns.map((conn) => conn.write(prefix.subarray(second, second + 1))),
      );
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  })();
  try {
    await daemon.waitForLine(/\[C300\] /, 30_000);
    // Let every slow client send a few bytes.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const reply = await forward(daemon, fake.port);
    assert.equal(reply.status, "OK", JSON.stringify(reply));
    await useForwarding(daemon, reply.source_port);
  } finally {
    dribbling.abort();
    await dribble;
  }
  const evictions = daemon.lines.filter((line) => /Control connection cap of 256/.test(line));
  assert.equal(
    evictions.length,
    300 - 256 + 1,
    "one slow client dropped per newcomer beyond the cap",
  );
});

/** Reads WebSocket frames until `count` payload bytes have arrived. */
async function readBytes(socket: RawWebSocket, count: number): Promise<Uint8Array> {
  const bytes: number[] = [];
  while (bytes.length < count) {
    const frame = await socket.readFrame();
    if (frame === null) throw new Error("WebSocket closed early");
    bytes.push(...frame.payload);
  }
  return Uint8Array.from(bytes);
}

Deno.test("idle TCP connections to a vnc-ws port do not keep the real viewer's upgrade from winning", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    poolSize: POOL_SIZE,
  });
  const reply = await forward(daemon, fake.port, "vnc-ws");
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  using _flood = await openIdleConnections(reply.source_port, 500);
  // The per-port cap (64 by default) drops the idlest for each newcomer.
  await daemon.waitForLine(/WebSocket handshake cap of 64 reached/);

  const { socket, response } = await connectRawWebSocket({
    port: reply.source_port,
    protocols: "binary",
  });
  assert.ok(socket, `upgrade failed: ${response.status} ${response.body}`);
  try {
    const version = new TextEncoder().encode("RFB 003.008\n");
    assert.deepEqual(await readBytes(socket, 12), version);
    await socket.sendBinary(version);
    assert.deepEqual([...await readBytes(socket, 2)], [1, 2]);
    await socket.sendBinary(Uint8Array.of(2));
    const challenge = await readBytes(socket, 16);
    await socket.sendBinary(vncAuthResponse(VNC_PASSWORD, challenge));
    assert.deepEqual([...await readBytes(socket, 4)], [0, 0, 0, 0], "SecurityResult OK");
  } finally {
    socket.close();
  }
  await daemon.waitForLine(
    new RegExp(`Returned port ${reply.source_port} to port pool, contains ${POOL_SIZE} ports`),
  );
});
