import assert from "node:assert/strict";
import {
  addressKey,
  AuthFailLimiter,
  parseAuthFailLimit,
} from "../../src/auth/auth_fail_limiter.ts";

Deno.test("parseAuthFailLimit() reads N/s, 0 and off, and refuses the rest", () => {
  const good: readonly (readonly [string, number])[] = [
    ["5/s", 5],
    ["0.5/s", 0.5],
    ["100/s", 100],
    [" 7/S ", 7],
    ["0/s", 0],
    ["0", 0],
    ["off", 0],
    ["OFF", 0],
  ];
  for (const [text, perSecond] of good) assert.equal(parseAuthFailLimit(text), perSecond, text);
  for (const text of ["", "5", "5/m", "-1/s", "five/s", "5/s/s", "1e3/s", ".5/s"]) {
    assert.throws(() => parseAuthFailLimit(text), RangeError, text);
  }
});

Deno.test("addressKey() keeps an IPv4 address and takes the /64 of an IPv6 one", () => {
  const cases: readonly (readonly [string, string])[] = [
    ["192.0.2.7", "192.0.2.7"],
    ["[2001:db8:1:2:3:4:5:6]", "2001:db8:1:2::/64"],
    ["2001:db8:1:2::9", "2001:db8:1:2::/64"],
    ["[2001:0db8:0001:0002:ffff::1]", "2001:db8:1:2::/64"],
    ["[2001:db8::1]", "2001:db8:0:0::/64"],
    ["[::1]", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
  ];
  for (const [address, key] of cases) assert.equal(addressKey(address), key, address);
});

/** A limiter on a clock the test moves. */
function limiter(perSecond: number, options: { maxEntries?: number } = {}) {
  let now = 1_000;
  const limits = new AuthFailLimiter({ perSecond, ...options }, { now: () => now });
  return {
    limits,
    advance(ms: number) {
      now += ms;
    },
  };
}

Deno.test("AuthFailLimiter.take() allows a burst of 2N, then N a second", () => {
  const { limits, advance } = limiter(5);
  for (let i = 0; i < 10; i++) assert.equal(limits.take("192.0.2.1", "admin"), undefined, `#${i}`);
  assert.equal(limits.take("192.0.2.1", "admin"), "address");
  advance(200); // one token back at 5/s
  assert.equal(limits.take("192.0.2.1", "admin"), undefined);
  assert.equal(limits.take("192.0.2.1", "admin"), "address");
  advance(60_000); // refilled to the burst, not beyond
  for (let i = 0; i < 10; i++) assert.equal(limits.take("192.0.2.1", "admin"), undefined);
  assert.equal(limits.take("192.0.2.1", "admin"), "address");
});

Deno.test("AuthFailLimiter limits per address and per user name independently", () => {
  const { limits } = limiter(5);
  // One address guessing many user names runs out of its own tokens.
  for (let i = 0; i < 10; i++) assert.equal(limits.take("192.0.2.1", `user${i}`), undefined);
  assert.equal(limits.take("192.0.2.1", "fresh"), "address");
  assert.equal(limits.take("192.0.2.2", "fresh"), undefined, "another address is not limited");
  // An IPv6 host is limited across its /64, not per address.
  for (let i = 0; i < 10; i++) assert.equal(limits.take(`[2001:db8::${i}]`, `v6-${i}`), undefined);
  assert.equal(limits.take("[2001:db8::ffff:1]", "v6-fresh"), "address");
  assert.equal(limits.take("[2001:db8:0:1::1]", "v6-fresh"), undefined, "another /64");
  // Many addresses guessing one user's password run out of the user's tokens.
  for (let i = 10; i < 19; i++) assert.equal(limits.take(`192.0.2.${i}`, "admin"), undefined);
  assert.equal(limits.take("192.0.2.30", "admin"), undefined);
  assert.equal(limits.take("192.0.2.31", "admin"), "user");
  assert.equal(limits.take("192.0.2.31", "operator"), undefined, "another user is not limited");
});

Deno.test("AuthFailLimiter.giveBack() returns the tokens of a success: only failures count", () => {
  const { limits } = limiter(5);
  for (let i = 0; i < 100; i++) {
    assert.equal(limits.take("192.0.2.1", "admin"), undefined, `success #${i}`);
    limits.giveBack("192.0.2.1", "admin");
  }
  assert.deepEqual(limits.size, { addresses: 0, users: 0 }, "a full bucket is not kept");
  for (let i = 0; i < 10; i++) assert.equal(limits.take("192.0.2.1", "admin"), undefined);
  assert.equal(limits.take("192.0.2.1", "admin"), "address");
  limits.giveBack("192.0.2.9", "nobody"); // never taken: nothing to give back
  assert.deepEqual(limits.size, { addresses: 1, users: 1 });
});

Deno.test("AuthFailLimiter.exhausted() tells the limit without taking, for charging after a failure", () => {
  const { limits, advance } = limiter(5);
  for (let i = 0; i < 100; i++) assert.equal(limits.exhausted("192.0.2.1", "admin"), undefined);
  assert.deepEqual(limits.size, { addresses: 0, users: 0 }, "asking keeps nothing");
  for (let i = 0; i < 10; i++) limits.take("192.0.2.1");
  assert.equal(limits.exhausted("192.0.2.1"), "address");
  assert.equal(limits.exhausted("192.0.2.2"), undefined, "another address is not limited");
  for (let i = 0; i < 10; i++) limits.take(`192.0.2.${10 + i}`, "admin");
  assert.equal(limits.exhausted("192.0.2.99", "admin"), "user");
  advance(200); // one token back at 5/s
  assert.equal(limits.exhausted("192.0.2.1"), undefined);
  assert.equal(limits.exhausted("192.0.2.1"), undefined, "still: asking took nothing");
  assert.equal(limits.take("192.0.2.1"), undefined);
  assert.equal(limits.exhausted("192.0.2.1"), "address");
});

Deno.test("AuthFailLimiter keeps at most maxEntries buckets per map, dropping the oldest", () => {
  const { limits } = limiter(1_000_000, { maxEntries: 100 });
  for (let i = 0; i < 10_000; i++) limits.take(`198.51.100.${i % 256}`, `random${i}`);
  assert.deepEqual(limits.size, { addresses: 100, users: 100 });
});

Deno.test("AuthFailLimiter keys a user name by its first 64 characters, so huge names stay small", () => {
  const { limits } = limiter(5);
  const long = "u".repeat(64);
  for (let i = 0; i < 10; i++) {
    assert.equal(limits.take(`192.0.2.${i}`, `${long}${"x".repeat(10_000)}${i}`), undefined);
  }
  assert.equal(limits.take("192.0.2.99", `${long}-another-suffix`), "user");
  assert.equal(
    limits.take("192.0.2.99", long.slice(1)),
    undefined,
    "a shorter prefix is another name",
  );
  assert.equal(limits.size.users, 2);
});

Deno.test("AuthFailLimiter with a rate of 0 never limits and keeps nothing", () => {
  const { limits } = limiter(0);
  assert.equal(limits.enabled, false);
  for (let i = 0; i < 1000; i++) assert.equal(limits.take("192.0.2.1", "admin"), undefined);
  assert.deepEqual(limits.size, { addresses: 0, users: 0 });
});

Deno.test("new AuthFailLimiter() rejects a negative or infinite rate", () => {
  assert.throws(() => new AuthFailLimiter({ perSecond: -1 }), RangeError);
  assert.throws(() => new AuthFailLimiter({ perSecond: Infinity }), RangeError);
  assert.throws(() => new AuthFailLimiter({ perSecond: 5, maxEntries: 0 }), RangeError);
});
