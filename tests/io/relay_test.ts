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

/**
 * A source that answers each read by the script: `"full"` fills the
 * buffer, a number returns that many bytes, and after the script, end of
 * stream. Records each read's buffer size.
 */
function scriptedSource(script: readonly ("full" | number)[]) {
  const sizes: number[] = [];
  let at = 0;
  const source = {
    remoteAddress: "192.0.2.7:1",
    sizes,
    read(buffer: Uint8Array): Promise<number | null> {
      sizes.push(buffer.length);
      const step = script[at++];
      if (step === undefined) return Promise.resolve(null);
      return Promise.resolve(step === "full" ? buffer.length : step);
    },
    write: () => Promise.resolve(),
    close() {},
  };
  return source;
}

/** A destination that takes every write at once and never sends; its read ends at close. */
function sink() {
  const ended = Promise.withResolvers<null>();
  return {
    remoteAddress: "192.0.2.8:1",
    read: () => ended.promise,
    write: (_data: Uint8Array) => Promise.resolve(),
    close: () => ended.resolve(null),
  };
}

Deno.test("relay() reads grow 16× per full read, fall back to 256 bytes after a short one, and jump back", async () => {
  const source = scriptedSource([
    ...Array<"full">(5).fill("full"),
    1,
    "full",
    "full",
  ]);
  const result = await relay(source, sink(), { pool: new BufferPool() });
  const KIB = 1024;
  assert.deepEqual(source.sizes, [
    256,
    16 * KIB,
    256 * KIB,
    1024 * KIB,
    1024 * KIB,
    1024 * KIB, // the short read: back to the idle buffer
    256,
    1024 * KIB, // the size reached before, at once
    1024 * KIB,
  ]);
  assert.equal(result.endedBy, "a");
});

Deno.test("relay() under a crowded pool reads its fair share, not the 16 KiB fallback", async () => {
  const KIB = 1024;
  const pool = new BufferPool({ maxLentBytes: 1024 * KIB, fallbackSize: 16 * KIB });
  // Fifteen other sessions streaming with 64 KiB each.
  const others = Array.from({ length: 15 }, () => pool.take(64 * KIB));
  const source = scriptedSource(Array<"full">(5).fill("full"));
  await relay(source, sink(), { pool });
  // 1 MiB over 16 buffers: 64 KiB each.
  assert.deepEqual(source.sizes, [256, 16 * KIB, 64 * KIB, 64 * KIB, 64 * KIB, 64 * KIB]);
  for (const buffer of others) pool.give(buffer);
  assert.equal(pool.lentBytes, 0);
});

Deno.test("relay() in a crowd stops growing at the crowd's size, with memory to spare", async () => {
  const KIB = 1024;
  const pool = new BufferPool({ maxLentBytes: 1024 * 1024 * KIB });
  // Eight other sessions streaming: a crowd.
  const others = Array.from({ length: 8 }, () => pool.take(256 * KIB));
  const source = scriptedSource(Array<"full">(4).fill("full"));
  await relay(source, sink(), { pool });
  assert.deepEqual(source.sizes, [256, 16 * KIB, 256 * KIB, 256 * KIB, 256 * KIB]);
  for (const buffer of others) pool.give(buffer);
  assert.equal(pool.lentBytes, 0);
});

Deno.test("relay() writes a small chunk at once, waiting for no more bytes and no timer", async () => {
  const written = Promise.withResolvers<Uint8Array>();
  const ended = Promise.withResolvers<null>();
  let reads = 0;
  const keyboard = {
    remoteAddress: "192.0.2.7:1",
    read(buffer: Uint8Array): Promise<number | null> {
      if (reads++ > 0) return ended.promise; // nothing more is coming
      buffer.set([4, 1, 0, 0, 0, 0, 0, 0x61]); // an RFB KeyEvent
      return Promise.resolve(8);
    },
    write: () => Promise.resolve(),
    close: () => ended.resolve(null),
  };
  const server = {
    ...sink(),
    write(data: Uint8Array): Promise<void> {
      written.resolve(data.slice());
      return Promise.resolve();
    },
  };
  const controller = new AbortController();
  const running = relay(keyboard, server, { signal: controller.signal });
  // Loose bound: only a relay that waits for more bytes (or a timer that
  // never comes) misses it.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the chunk was not written")), 5_000);
  });
  try {
    assert.deepEqual(
      await Promise.race([written.promise, stalled]),
      Uint8Array.of(4, 1, 0, 0, 0, 0, 0, 0x61),
    );
  } finally {
    clearTimeout(timer);
  }
  assert.equal(reads, 2, "the next read is already pending");
  controller.abort();
  await running;
});
