import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  hashToken,
  MemoryTokenStore,
  type MemoryTokenStoreOptions,
  TOKEN_BYTES,
} from "../../src/tokens/token_store.ts";

interface Entry {
  readonly name: string;
}

/** A store on a clock the test moves, recording what expires. */
function store(options: Partial<MemoryTokenStoreOptions<Entry>> = {}) {
  let now = 1_000;
  const expired: Entry[] = [];
  const tokens = new MemoryTokenStore<Entry>({
    onExpire: (entry) => expired.push(entry),
    maxTtlMs: 60_000,
    ...options,
  }, { now: () => now });
  return {
    tokens,
    expired,
    advance(ms: number) {
      now += ms;
    },
  };
}

/** A store on the real clock, and a promise of its next expiry. */
function realTimeStore(sweepIntervalMs = 5) {
  const expired: Entry[] = [];
  let notify = () => {};
  const tokens = new MemoryTokenStore<Entry>({
    onExpire: (entry) => {
      expired.push(entry);
      notify();
    },
    maxTtlMs: 60_000,
    sweepIntervalMs,
  });
  const nextExpiry = () => new Promise<void>((resolve) => notify = resolve);
  return { tokens, expired, nextExpiry };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const A: Entry = { name: "a" };
const B: Entry = { name: "b" };

Deno.test("MemoryTokenStore.issue() returns 256 random bits in base64url and the hash prefix", async () => {
  const { tokens } = store();
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) {
    const { token, hashPrefix, ttlMs } = await tokens.issue({ name: `${i}` }, { ttlMs: 5_000 });
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(token, "base64url").length, TOKEN_BYTES);
    assert.ok(TOKEN_BYTES * 8 >= 128);
    assert.match(hashPrefix, /^[0-9a-f]{8}$/);
    assert.equal(hashPrefix, hashToken(token).slice(0, 8));
    assert.equal(ttlMs, 5_000);
    seen.add(token);
  }
  assert.equal(seen.size, 100);
  await tokens.close();
});

Deno.test("MemoryTokenStore.claim() hands the entry over once, then says unknown", async () => {
  const { tokens, expired } = store();
  const { token, hashPrefix } = await tokens.issue(A, { ttlMs: 5_000 });
  assert.deepEqual(await tokens.claim(token, "192.0.2.7"), { ok: true, entry: A, hashPrefix });
  assert.deepEqual(await tokens.claim(token, "192.0.2.7"), {
    ok: false,
    why: "unknown",
    hashPrefix,
  });
  assert.equal(tokens.size, 0);
  assert.deepEqual(expired, []);
});

Deno.test("MemoryTokenStore.claim() lets exactly one of concurrent claims of a token win", async () => {
  const { tokens } = store();
  const { token } = await tokens.issue(A, { ttlMs: 5_000 });
  const claims = await Promise.all(
    Array.from({ length: 10 }, () => tokens.claim(token, "192.0.2.7")),
  );
  assert.equal(claims.filter((claim) => claim.ok).length, 1);
  assert.deepEqual(claims.filter((claim) => !claim.ok).map((claim) => !claim.ok && claim.why), [
    ...Array(9).fill("unknown"),
  ]);
});

Deno.test("MemoryTokenStore.claim() refuses tokens never issued, and keeps the others", async () => {
  const { tokens } = store();
  const { token } = await tokens.issue(A, { ttlMs: 5_000 });
  for (const forged of ["", "x", token.slice(0, -1), `${token}A`, token.toUpperCase()]) {
    const claim = await tokens.claim(forged, "192.0.2.7");
    assert.equal(claim.ok, false);
    assert.equal(!claim.ok && claim.why, "unknown");
    assert.equal(claim.hashPrefix, hashToken(forged).slice(0, 8));
  }
  assert.equal((await tokens.claim(token, "192.0.2.7")).ok, true);
});

Deno.test("MemoryTokenStore expires an unclaimed token once, and leaves no timer", async () => {
  const { tokens, expired, nextExpiry } = realTimeStore();
  const expiry = nextExpiry();
  const { token } = await tokens.issue(A, { ttlMs: 20 });
  await expiry;
  assert.deepEqual(expired, [A]);
  await delay(40);
  assert.deepEqual(expired, [A]);
  const claim = await tokens.claim(token, "192.0.2.7");
  assert.equal(!claim.ok && claim.why, "unknown");
  await tokens.close();
  assert.deepEqual(expired, [A]);
  // The sanitizers fail this test if any timer were left.
});

Deno.test("MemoryTokenStore never expires a claimed or removed token", async () => {
  const { tokens, expired } = realTimeStore();
  const { token } = await tokens.issue(A, { ttlMs: 20 });
  await tokens.issue(B, { ttlMs: 20 });
  assert.equal((await tokens.claim(token, "192.0.2.7")).ok, true);
  assert.equal(await tokens.remove(B), true);
  assert.equal(await tokens.remove(B), false);
  await delay(60);
  assert.deepEqual(expired, []);
  assert.equal(tokens.size, 0);
  // Not closed: with nothing pending there must be no timer for the sanitizers to find.
});

Deno.test("MemoryTokenStore expires tokens of different lifetimes in order", async () => {
  const { tokens, expired, nextExpiry } = realTimeStore(1);
  const C: Entry = { name: "c" };
  let expiry = nextExpiry();
  await tokens.issue(C, { ttlMs: 300 });
  await tokens.issue(B, { ttlMs: 40 });
  await tokens.issue(A, { ttlMs: 10 });
  await expiry;
  assert.deepEqual(expired, [A]);
  expiry = nextExpiry();
  await expiry;
  assert.deepEqual(expired, [A, B]);
  assert.equal(tokens.size, 1);
  await tokens.close();
  assert.deepEqual(expired, [A, B, C]);
});

Deno.test("MemoryTokenStore.claim() refuses a token past its deadline before any sweep", async () => {
  const { tokens, expired, advance } = store({ sweepIntervalMs: 60_000 });
  const { token } = await tokens.issue(A, { ttlMs: 5_000 });
  advance(4_999);
  await tokens.issue(B, { ttlMs: 5_000 });
  advance(1);
  const claim = await tokens.claim(token, "192.0.2.7");
  assert.equal(!claim.ok && claim.why, "expired");
  assert.deepEqual(expired, [A]);
  const again = await tokens.claim(token, "192.0.2.7");
  assert.equal(!again.ok && again.why, "unknown");
  await tokens.close();
  assert.deepEqual(expired, [A, B]);
});

Deno.test("MemoryTokenStore.issue() caps the lifetime at maxTtlMs", async () => {
  const { tokens, advance } = store({ maxTtlMs: 30_000, sweepIntervalMs: 60_000 });
  const capped = await tokens.issue(A, { ttlMs: 3_600_000 });
  assert.equal(capped.ttlMs, 30_000);
  const short = await tokens.issue(B, { ttlMs: 10_000 });
  assert.equal(short.ttlMs, 10_000);
  advance(29_999);
  const late = await tokens.claim(short.token, "192.0.2.7");
  assert.equal(!late.ok && late.why, "expired");
  assert.equal((await tokens.claim(capped.token, "192.0.2.7")).ok, true);
  await tokens.close();
});

Deno.test("MemoryTokenStore.issue() refuses bad lifetimes, addresses and a second token per entry", async () => {
  const { tokens } = store();
  for (const ttlMs of [0, -1, Number.NaN]) {
    await assert.rejects(tokens.issue(A, { ttlMs }), RangeError, `${ttlMs}`);
  }
  for (const clientAddress of ["", "localhost", "192.0.2.7:5900", "[::1]:80"]) {
    await assert.rejects(tokens.issue(A, { ttlMs: 1_000, clientAddress }), TypeError);
  }
  await tokens.issue(A, { ttlMs: 1_000 });
  await assert.rejects(tokens.issue(A, { ttlMs: 1_000 }), TypeError);
  await tokens.close();
  await assert.rejects(tokens.issue(B, { ttlMs: 1_000 }), Error);
  assert.throws(() => new MemoryTokenStore({ onExpire() {}, maxTtlMs: 0 }), RangeError);
  assert.throws(
    () => new MemoryTokenStore({ onExpire() {}, maxTtlMs: 1, sweepIntervalMs: 0 }),
    RangeError,
  );
});

Deno.test("MemoryTokenStore.claim() admits only the bound address, in any spelling", async () => {
  const table: readonly (readonly [string, readonly string[], readonly string[]])[] = [
    ["192.0.2.7", ["192.0.2.7", "::ffff:192.0.2.7", "[::ffff:192.0.2.7]"], [
      "192.0.2.8",
      "::1",
      "192.0.2.7:5900",
      "",
    ]],
    ["::ffff:192.0.2.7", ["192.0.2.7"], ["::ffff:192.0.2.8"]],
    ["[::1]", ["::1", "[::1]", "0:0:0:0:0:0:0:1"], ["127.0.0.1", "::2"]],
    ["2001:DB8::1", ["2001:db8::1", "[2001:0db8:0:0::1]"], ["2001:db8::2"]],
  ];
  for (const [bound, admitted, refused] of table) {
    const { tokens, expired } = store();
    for (const viewer of admitted) {
      const { token } = await tokens.issue(A, { ttlMs: 5_000, clientAddress: bound });
      for (const stranger of refused) {
        const claim = await tokens.claim(token, stranger);
        assert.equal(!claim.ok && claim.why, "wrong-address", `${bound} from ${stranger}`);
      }
      // A refusal for the address does not burn the token.
      assert.equal((await tokens.claim(token, viewer)).ok, true, `${bound} from ${viewer}`);
    }
    assert.deepEqual(expired, []);
  }
});

Deno.test("MemoryTokenStore keeps no token and shows no whole hash", async () => {
  const { tokens } = store();
  const { token } = await tokens.issue(A, { ttlMs: 5_000, clientAddress: "192.0.2.7" });
  const hash = hashToken(token);
  const descriptions = [
    Deno.inspect(tokens),
    Deno.inspect(tokens, { showHidden: true, depth: Infinity, getters: true }),
    String(tokens),
    JSON.stringify(tokens),
    JSON.stringify(Object.getOwnPropertyNames(tokens)),
  ];
  for (const text of descriptions) {
    assert.ok(!text.includes(token), text);
    assert.ok(!text.includes(hash), text);
  }
  assert.equal(Deno.inspect(tokens), "MemoryTokenStore { pending: 1 }");
  await tokens.close();
  assert.equal(Deno.inspect(tokens), "MemoryTokenStore { pending: 0, closed }");
});

Deno.test("MemoryTokenStore.close() expires everything once, refuses claims, and is idempotent", async () => {
  const { tokens, expired } = realTimeStore(60_000);
  const a = await tokens.issue(A, { ttlMs: 50_000 });
  await tokens.issue(B, { ttlMs: 50_000 });
  await tokens.close();
  await tokens.close();
  assert.deepEqual(expired, [A, B]);
  const claim = await tokens.claim(a.token, "192.0.2.7");
  assert.equal(!claim.ok && claim.why, "unknown");
  assert.equal(await tokens.remove(A), false);
  // Sanitizers: the sweep timer armed for 50 s is gone.
});

Deno.test("MemoryTokenStore tells every owner even when one onExpire throws", async () => {
  const told: string[] = [];
  const tokens = new MemoryTokenStore<Entry>({
    onExpire(entry) {
      told.push(entry.name);
      if (entry === A) throw new Error("owner bug");
    },
    maxTtlMs: 60_000,
  });
  await tokens.issue(A, { ttlMs: 50_000 });
  await tokens.issue(B, { ttlMs: 50_000 });
  await assert.rejects(tokens.close(), /owner bug/);
  assert.deepEqual(told, ["a", "b"]);
});

Deno.test("MemoryTokenStore with 5,000 pending tokens: issue, claim and close costs", async () => {
  const { tokens, expired } = realTimeStore(100);
  const entries = Array.from({ length: 5_000 }, (_, i) => ({ name: `${i}` }));
  const heapBefore = Deno.memoryUsage().heapUsed;
  let start = performance.now();
  const issued = [];
  for (const entry of entries) issued.push(await tokens.issue(entry, { ttlMs: 30_000 }));
  const issueMs = performance.now() - start;
  const heapDelta = Deno.memoryUsage().heapUsed - heapBefore;
  start = performance.now();
  for (const { token } of issued.slice(0, 2_500)) {
    assert.equal((await tokens.claim(token, "::1")).ok, true);
  }
  const claimMs = performance.now() - start;
  start = performance.now();
  await tokens.close();
  const closeMs = performance.now() - start;
  assert.equal(expired.length, 2_500);
  // deno-lint-ignore no-console
  console.log(
    `5,000 issues ${(issueMs * 1000 / 5_000).toFixed(1)} µs each, ` +
      `~${Math.round(heapDelta / 5_000)} B heap each (tokens held by the test included); ` +
      `2,500 claims ${(claimMs * 1000 / 2_500).toFixed(1)} µs each; close of 2,500 ${
        closeMs.toFixed(1)
      } ms`,
  );
  // Loose bound only: a stall could not meet it, a slow machine will.
  assert.ok(issueMs < 10_000);
});

Deno.test("MemoryTokenStore never makes a handover: nothing leaves this instance", async () => {
  const { tokens } = store();
  let made = 0;
  const issued = await tokens.issue({ name: "local" }, {
    ttlMs: 1_000,
    handover: () => {
      made++;
      return new Uint8Array(8);
    },
  });
  assert.equal(made, 0);
  const claim = await tokens.claim(issued.token, "192.0.2.7");
  assert.ok(claim.ok && claim.entry?.name === "local");
  await tokens.close();
});
