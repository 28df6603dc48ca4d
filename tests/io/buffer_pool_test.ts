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

Deno.test("BufferPool.take() scales requests down once too much is lent out", () => {
  const pool = new BufferPool({ maxLentBytes: 3000, fallbackSize: 256 });
  pool.take(2048);
  assert.equal(pool.take(2048).length, 256);
  assert.equal(pool.take(128).length, 128);
});

Deno.test("BufferPool.give() keeps at most maxIdleBytes for reuse", () => {
  const pool = new BufferPool({ maxIdleBytes: 3000 });
  const buffers = [pool.take(1024), pool.take(1024), pool.take(1024)];
  for (const buffer of buffers) pool.give(buffer);
  assert.equal(pool.idleBytes, 2048);
  assert.equal(pool.lentBytes, 0);
});
