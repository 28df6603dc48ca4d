import assert from "node:assert/strict";
import { requestForwarding } from "../../../src/control/snf/control_client.ts";
import { isTimeout } from "../../../src/io/deadline.ts";

const REQUEST = {
  destinationAddress: "127.0.0.1",
  destinationPort: 5900,
  password: "one-time",
  authUser: "admin",
  authPassword: "secret",
};

/** A control "daemon" that accepts and never says a word (nor TLS). */
function silentServer(): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const loop = (async () => {
    for await (const conn of listener) conns.push(conn);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await loop.catch(() => {});
      for (const conn of conns) conn.close();
    },
  };
}

/**
 * A listener whose accept queue is full (Deno's backlog is 511 and nothing
 * accepts), so a further TCP connect gets no answer at all.
 */
async function stalledListener(): Promise<{ port: number; close(): void }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const queued: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 2_000; i++) {
      queued.push(
        await Deno.connect({ hostname: "127.0.0.1", port, signal: AbortSignal.timeout(200) }),
      );
    }
    throw new Error("The accept queue never filled");
  } catch (error) {
    if (!isTimeout(error)) throw error;
  }
  return {
    port,
    close() {
      for (const conn of queued) conn.close();
      listener.close();
    },
  };
}

Deno.test("requestForwarding() over TLS gives up at its deadline when the TCP connect gets no answer", async () => {
  const server = await stalledListener();
  try {
    const started = performance.now();
    await assert.rejects(
      requestForwarding(REQUEST, { port: server.port, tls: true, timeoutMs: 300 }),
      (error) => isTimeout(error),
    );
    assert.ok(performance.now() - started < 5_000);
  } finally {
    server.close();
  }
});

for (const tls of [false, true]) {
  Deno.test(`requestForwarding() gives up on a silent daemon at its deadline (${tls ? "TLS handshake" : "plain"})`, async () => {
    const server = silentServer();
    try {
      const started = performance.now();
      await assert.rejects(
        requestForwarding(REQUEST, { port: server.port, tls, timeoutMs: 300 }),
        (error) => isTimeout(error),
      );
      // Loose: only a wait without a deadline misses it.
      assert.ok(performance.now() - started < 5_000);
    } finally {
      await server.close();
    }
  });
}
