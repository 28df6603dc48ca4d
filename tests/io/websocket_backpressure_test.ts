/**
 * A browser that stops reading must not grow the daemon's memory: the relay
 * holds at most one chunk for it and stops reading from the VNC server.
 */

import assert from "node:assert/strict";
import { openWebSocketListener } from "../../src/session/websocket_listener.ts";
import { BufferPool } from "../../src/io/buffer_pool.ts";
import { MAX_RELAY_BUFFER, relay, type RelayCounters } from "../../src/io/relay.ts";
import { silentLogger } from "../../src/log.ts";
import { tcpPair } from "../_util/loopback.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";

async function settled(counters: RelayCounters): Promise<number> {
  // Wait until the bytes relayed to the viewer stop growing for 300 ms.
  let last = -1;
  while (counters.bToA !== last) {
    last = counters.bToA;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  return last;
}

Deno.test("relay() to a WebSocket viewer that stops reading holds at most one chunk and stops the server", async () => {
  const listener = await openWebSocketListener("127.0.0.1", 0, { logger: silentLogger });
  const port = Number(listener.addresses[0]!.split(":").pop());
  const { socket } = await connectRawWebSocket({ port });
  assert.ok(socket, "upgrade");
  const viewer = await listener.acceptOne(AbortSignal.timeout(5000));
  using backend = await tcpPair();
  const pool = new BufferPool();
  const counters: RelayCounters = { aToB: 0, bToA: 0 };
  const running = relay(viewer, backend.server, { pool, counters });

  // The VNC server offers 256 MiB; the viewer reads nothing.
  const total = 256 * 1024 * 1024;
  const chunk = new Uint8Array(1024 * 1024);
  let offered = 0;
  const producing = (async () => {
    while (offered < total) {
      await backend.client.write(chunk);
      offered += chunk.length;
    }
  })().catch(() => {});

  const relayed = await settled(counters);
  assert.ok(relayed < 64 * 1024 * 1024, `relayed ${relayed} bytes to a viewer that reads nothing`);
  assert.ok(offered < total, "the VNC server is held back too");
  assert.ok(
    pool.lentBytes <= MAX_RELAY_BUFFER,
    `the daemon holds ${pool.lentBytes} bytes for this session`,
  );

  socket.close();
  backend.client.close();
  await running;
  await producing;
  await listener.close();
  assert.equal(pool.lentBytes, 0);
});
