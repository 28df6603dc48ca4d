import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import { BufferPool } from "../../src/io/buffer_pool.ts";
import { relay } from "../../src/io/relay.ts";
import { tcpPair } from "../_util/loopback.ts";

Deno.test("relay() copies both ways and closes both sides when one ends", async () => {
  using left = await tcpPair();
  using right = await tcpPair();
  const running = relay(left.server, right.server);
  const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
  const [received] = await Promise.all([
    readExact(right.client, big.length),
    left.client.write(big),
  ]);
  assert.deepEqual(received, big);
  await right.client.write(new TextEncoder().encode("back"));
  assert.equal(new TextDecoder().decode(await readExact(left.client, 4)), "back");
  left.client.close();
  const result = await running;
  assert.equal(result.endedBy, "a");
  assert.equal(result.aToB, big.length);
  assert.equal(result.bToA, 4);
  assert.equal(await right.client.read(new Uint8Array(1)), null, "the other side is closed too");
});

Deno.test("relay() ends with both sides closed when its signal aborts", async () => {
  using left = await tcpPair();
  using right = await tcpPair();
  const controller = new AbortController();
  const running = relay(left.server, right.server, { signal: controller.signal });
  controller.abort();
  const result = await running;
  assert.equal(result.endedBy, "aborted");
  assert.equal(await left.client.read(new Uint8Array(1)), null);
  assert.equal(await right.client.read(new Uint8Array(1)), null);
});

Deno.test("relay() borrows bulk buffers from its pool and gives them all back", async () => {
  const pool = new BufferPool();
  using left = await tcpPair();
  using right = await tcpPair();
  const running = relay(left.server, right.server, { pool });
  const big = new Uint8Array(8 * 1024 * 1024);
  await Promise.all([readExact(right.client, big.length), left.client.write(big)]);
  await right.client.write(Uint8Array.of(1));
  await readExact(left.client, 1);
  left.client.close();
  await running;
  assert.equal(pool.lentBytes, 0);
  assert.ok(pool.idleBytes > 0, "bulk buffers were borrowed");
});

Deno.test("relay() ends idle after idleTimeoutMs without a byte, and traffic keeps it alive", async () => {
  using left = await tcpPair();
  using right = await tcpPair();
  const started = performance.now();
  const running = relay(left.server, right.server, { idleTimeoutMs: 1_000 });
  // Traffic every 100 ms for 1.5 s: longer than the idle period, and it lives on.
  for (let i = 0; i < 15; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    await left.client.write(Uint8Array.of(i));
    await readExact(right.client, 1);
  }
  const quietFrom = performance.now();
  const result = await running;
  const ended = performance.now();
  assert.equal(result.endedBy, "idle");
  assert.ok(quietFrom - started >= 1_500, "it lived through the traffic");
  // The end comes 1 to 1.25 periods after the last byte (loose upper bound).
  assert.ok(ended - quietFrom >= 990, `ended ${ended - quietFrom} ms after the last byte`);
  assert.ok(ended - quietFrom < 5_000);
  assert.equal(await left.client.read(new Uint8Array(1)), null, "both sides are closed");
  assert.equal(await right.client.read(new Uint8Array(1)), null);
});

Deno.test("relay() ends at maxDurationMs however busy it is", async () => {
  using left = await tcpPair();
  using right = await tcpPair();
  const running = relay(left.server, right.server, { maxDurationMs: 300, idleTimeoutMs: 10_000 });
  let busy = true;
  const traffic = (async () => {
    try {
      while (busy) {
        await left.client.write(Uint8Array.of(1));
        await readExact(right.client, 1);
      }
    } catch {
      // The relay closed both sides.
    }
  })();
  const result = await running;
  busy = false;
  await traffic;
  assert.equal(result.endedBy, "max-time");
  assert.ok(result.aToB > 0);
});

Deno.test("relay() gives its bulk buffers back while the session idles after a burst", async () => {
  const pool = new BufferPool();
  using left = await tcpPair();
  using right = await tcpPair();
  const running = relay(left.server, right.server, { pool });
  const big = new Uint8Array(4 * 1024 * 1024);
  await Promise.all([readExact(right.client, big.length), left.client.write(big)]);
  // A short message after the burst: both directions now wait on their tiny buffers.
  await left.client.write(Uint8Array.of(1));
  await readExact(right.client, 1);
  // The pump gives its buffer back right after its write, which may finish
  // just after the client's read: wait a little, never long.
  for (let i = 0; i < 100 && pool.lentBytes > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(pool.lentBytes, 0, "an idle session holds no pooled buffer");
  left.client.close();
  await running;
});

Deno.test("relay() ends as the side whose write failed, not the side that sent the bytes", async () => {
  using right = await tcpPair();
  // Side a: never sends, and its writes fail (a viewer gone mid-update).
  const gone = Promise.withResolvers<number | null>();
  const viewer = {
    remoteAddress: "192.0.2.7:1",
    read: () => gone.promise,
    write: () => Promise.reject(new Deno.errors.BrokenPipe("The viewer went away")),
    close: () => gone.resolve(null),
  };
  const running = relay(viewer, right.server);
  await right.client.write(new TextEncoder().encode("update"));
  const result = await running;
  assert.equal(result.endedBy, "a");
  assert.ok(result.error instanceof Deno.errors.BrokenPipe);
});
