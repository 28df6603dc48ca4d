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

/** A control "daemon" that reads one request line, answers `reply` and closes. */
function recordingServer(reply: string): { port: number; request: Promise<string> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const request = (async () => {
    using conn = await listener.accept();
    listener.close();
    const buffer = new Uint8Array(64 * 1024);
    let filled = 0;
    while (!new TextDecoder().decode(buffer.subarray(0, filled)).includes("\n")) {
      const n = await conn.read(buffer.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    await conn.write(new TextEncoder().encode(reply));
    return new TextDecoder().decode(buffer.subarray(0, filled));
  })();
  return { port: (listener.addr as Deno.NetAddr).port, request };
}

Deno.test("requestForwarding() sends the gateway fields and omits an absent password", async () => {
  const reply = '{"source_port": 8443, "status": "OK", "proxy_address": "gw.example", ' +
    '"token": "t0k", "path": "websockify?token=t0k"}';
  const cases = [
    {
      request: { ...REQUEST, password: undefined, type: "vnc-wss", gateway: true, ttl: 20 },
      sent: { gateway: true, ttl: 20 },
      absent: ["password", "client_address"],
    },
    {
      request: { ...REQUEST, type: "vnc-ws", gateway: true, clientAddress: "::1" },
      sent: { gateway: true, password: "one-time", client_address: "::1" },
      absent: ["ttl"],
    },
    { request: REQUEST, sent: { password: "one-time", type: "vnc" }, absent: ["gateway", "ttl"] },
  ] as const;
  for (const { request, sent, absent } of cases) {
    const server = recordingServer(reply);
    const answer = await requestForwarding(request, { port: server.port });
    const body = JSON.parse(await server.request);
    for (const [field, value] of Object.entries(sent)) assert.equal(body[field], value, field);
    for (const field of absent) assert.ok(!(field in body), `${field} sent`);
    assert.equal(answer.path, "websockify?token=t0k");
  }
});
