import assert from "node:assert/strict";
import { BufferPool } from "../../src/io/buffer_pool.ts";

Deno.test("BufferPool.take() reuses given-back buffers and counts lent bytes", () => {
  const pool = new BufferPool();
  const a = pool.take(1024);
  assert.equal(a.length, 1024);
  assert.equal(pool.lentBytes, 1024);
  pool.give(a);
  assert.equal(pool.lentBytes, 0);
  assert.equal(pool.idleBytes, 1024);
  assert.equal(pool.take(1024), a);
  assert.equal(pool.idleBytes, 0);
});

Deno.test("BufferPool.take() gives a fair share once too much is lent out", () => {
  const pool = new BufferPool({ maxLentBytes: 3000, fallbackSize: 256 });
  pool.take(2048);
  // 3000 bytes over two buffers: 1500, rounded down to a power of two.
  assert.equal(pool.take(2048).length, 1024);
  assert.equal(pool.take(128).length, 128, "a small request is never scaled up");
  // 3000 / 4 = 750 -> 512; then 3000 / 5 = 600 -> 512; later the fallback floor.
  assert.equal(pool.take(2048).length, 512);
  for (let i = 0; i < 20; i++) pool.take(2048);
  assert.equal(pool.take(2048).length, 256, "never below the fallback size");
  assert.equal(pool.lentCount, 25);
});

Deno.test("BufferPool leaves 1,000 streaming sessions 64 KiB or more under 64 MiB, not 16 KiB", () => {
  const pool = new BufferPool();
  const buffers: Uint8Array[] = [];
  for (let i = 0; i < 1_000; i++) buffers.push(pool.take(1024 * 1024));
  // Every session's next growth step brings it to its share.
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < buffers.length; i++) buffers[i] = pool.resize(buffers[i]!, 1024 * 1024);
  }
  const smallest = Math.min(...buffers.map((buffer) => buffer.length));
  assert.equal(smallest, 64 * 1024, "64 MiB / 1,000, rounded down to a power of two");
  assert.ok(pool.lentBytes <= 64 * 1024 * 1024, `lent ${pool.lentBytes}`);
  for (const buffer of buffers) pool.give(buffer);
  assert.equal(pool.lentBytes, 0);
  assert.equal(pool.lentCount, 0);
});

Deno.test("BufferPool.resize() keeps a buffer already at its size and trades it otherwise", () => {
  const pool = new BufferPool({ maxLentBytes: 4096, fallbackSize: 256 });
  const a = pool.take(1024);
  const b = pool.take(2048);
  // b asks for 4096: 1024 + 4096 > 4096, share 4096 / 2 = 2048, its own size.
  assert.equal(pool.resize(b, 4096), b);
  assert.equal(pool.lentBytes, 3072);
  // a asks for 2048: 2048 + 2048 fits, a is given back and a new one lent.
  const grown = pool.resize(a, 2048);
  assert.equal(grown.length, 2048);
  assert.notEqual(grown, a);
  assert.equal(pool.lentBytes, 4096);
  assert.equal(pool.lentCount, 2);
  // A shrink reuses a free buffer of the size when there is one.
  assert.equal(pool.resize(grown, 1024), a);
});

Deno.test("BufferPool.give() keeps at most maxIdleBytes for reuse", () => {
  const pool = new BufferPool({ maxIdleBytes: 3000 });
  const buffers = [pool.take(1024), pool.take(1024), pool.take(1024)];
  for (const buffer of buffers) pool.give(buffer);
  assert.equal(pool.idleBytes, 2048);
  assert.equal(pool.lentBytes, 0);
});

Deno.test("BufferPool caps a crowd's buffers at the crowd's size, however much memory is left", () => {
  const KIB = 1024;
  const pool = new BufferPool({
    maxLentBytes: 1024 * 1024 * KIB,
    crowdCount: 3,
    crowdSize: 256 * KIB,
  });
  // Alone or with a few others, a stream gets the megabyte it asks for.
  const early = [pool.take(1024 * KIB), pool.take(1024 * KIB), pool.take(1024 * KIB)];
  assert.deepEqual(early.map((buffer) => buffer.length), [1024 * KIB, 1024 * KIB, 1024 * KIB]);
  // The fourth finds three lent: a crowd.
  assert.equal(pool.take(1024 * KIB).length, 256 * KIB);
  assert.equal(pool.take(64 * KIB).length, 64 * KIB, "a small request is never scaled up");
  // An early megabyte comes down to the crowd's size at its next growth step.
  const resized = pool.resize(early[0]!, 1024 * KIB);
  assert.equal(resized.length, 256 * KIB);
  // Once the crowd has gone, the megabyte is back.
  for (const buffer of [resized, early[1]!, early[2]!]) pool.give(buffer);
  assert.equal(pool.lentCount, 2);
  assert.equal(pool.take(1024 * KIB).length, 1024 * KIB);
});
