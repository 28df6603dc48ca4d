import assert from "node:assert/strict";
import { RefusalError } from "../../src/errors.ts";
import { PortPool } from "../../src/session/port_pool.ts";

Deno.test("PortPool.acquire() hands out every port once, then throws when exhausted", () => {
  const pool = new PortPool(100, 102);
  const ports = [pool.acquire(), pool.acquire(), pool.acquire()].map((l) => l.port).sort();
  assert.deepEqual(ports, [100, 101, 102]);
  assert.throws(
    () => pool.acquire(),
    (e: unknown) => e instanceof RefusalError && e.message === "no free ports",
  );
});

Deno.test("PortLease.release() returns the port exactly once", () => {
  const pool = new PortPool(100, 101);
  const lease = pool.acquire();
  assert.equal(pool.available, 1);
  lease.release();
  lease.release();
  assert.equal(pool.available, 2);
  {
    using held = pool.acquire();
    assert.equal(pool.available, 1);
    assert.ok(pool.contains(held.port));
  }
  assert.equal(pool.available, 2);
});

Deno.test("PortPool.acquire() honours a requested port and refuses it while in use", () => {
  const pool = new PortPool(100, 105);
  const inside = pool.acquire(103);
  assert.equal(inside.port, 103);
  assert.equal(pool.available, 5);
  assert.throws(() => pool.acquire(103), /source port in use/);
  for (let i = 0; i < 5; i++) assert.notEqual(pool.acquire().port, 103);
  const outside = pool.acquire(40000);
  assert.throws(() => pool.acquire(40000), /source port in use/);
  outside.release();
  pool.acquire(40000).release();
  inside.release();
  assert.equal(pool.available, 1);
});

Deno.test("PortPool prefers rested ports and reuses the oldest when only resting ones are left", () => {
  let now = 0;
  const pool = new PortPool(1, 2, { cooldownMs: 1000, now: () => now, randomInt: () => 0 });
  const a = pool.acquire();
  a.release();
  const b = pool.acquire();
  assert.notEqual(b.port, a.port, "a just-freed port rests");
  const c = pool.acquire();
  assert.equal(c.port, a.port, "the resting port is used rather than failing");
  c.release();
  b.release();
  now = 2000;
  assert.equal(pool.available, 2);
  pool.acquire();
  pool.acquire();
  assert.throws(() => pool.acquire(), /no free ports/);
});

Deno.test("new PortPool() rejects an invalid range", () => {
  assert.throws(() => new PortPool(10, 5), RangeError);
  assert.throws(() => new PortPool(0, 5), RangeError);
  assert.throws(() => new PortPool(1, 70000), RangeError);
});
