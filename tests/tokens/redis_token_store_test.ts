/**
 * RedisTokenStore against a real `redis-server`: two stores on two clients
 * stand for two daemons sharing one Redis.
 */

import assert from "node:assert/strict";
import { RedisClient } from "../../src/tokens/redis/redis_client.ts";
import { DEFAULT_TOKEN_KEY_PREFIX, RedisTokenStore } from "../../src/tokens/redis_token_store.ts";
import { TokenStoreKey } from "../../src/tokens/token_seal.ts";
import { hashToken, TokenStoreUnavailableError } from "../../src/tokens/token_store.ts";
import { containsBytes } from "../_util/property.ts";
import { type RedisServer, redisSkipNotice, startRedisServer } from "../_util/redis_server.ts";
import { waitUntil } from "../_util/child_process.ts";

const hasRedis = redisSkipNotice("the Redis token store tests");
const enc = new TextEncoder();

interface Entry {
  readonly name: string;
}

/** What an instance hands over for `entry`: holds a backend secret the test looks for in Redis. */
function handoverOf(entry: Entry): Uint8Array {
  return enc.encode(`{"entry":"${entry.name}","backendPassword":"backend-secret-${entry.name}"}`);
}

/** One daemon's view: its client, its store, and what it expired. */
interface Instance extends AsyncDisposable {
  readonly client: RedisClient;
  readonly store: RedisTokenStore<Entry>;
  readonly expired: Entry[];
}

async function instance(
  server: RedisServer,
  key: TokenStoreKey,
  options: { maxTtlMs?: number } = {},
): Promise<Instance> {
  const client = new RedisClient({
    url: `redis://127.0.0.1:${server.port}/1`,
    commandTimeoutMs: 1_000,
    reconnectMinMs: 20,
    reconnectMaxMs: 200,
    healthCheckIntervalMs: 100,
  });
  await client.ready();
  const expired: Entry[] = [];
  const store = new RedisTokenStore<Entry>({
    client,
    key,
    maxTtlMs: options.maxTtlMs ?? 60_000,
    sweepIntervalMs: 10,
    onExpire: (entry) => expired.push(entry),
  });
  return {
    client,
    store,
    expired,
    async [Symbol.asyncDispose]() {
      await store.close();
      await client.close();
    },
  };
}

function sharedKey(): TokenStoreKey {
  return new TokenStoreKey(crypto.getRandomValues(new Uint8Array(32)));
}

/** Every key of the test database and its value. */
async function dump(client: RedisClient): Promise<Map<string, Uint8Array>> {
  const keys = await client.command(["KEYS", "*"]) as Uint8Array[];
  const out = new Map<string, Uint8Array>();
  for (const key of keys) {
    const name = new TextDecoder().decode(key);
    const value = await client.command(["GET", key]);
    if (value instanceof Uint8Array) out.set(name, value);
  }
  return out;
}

Deno.test({
  name:
    "RedisTokenStore: a token issued on A is claimed once on B with A's handover, then unknown everywhere",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    const entry = { name: "one" };
    const made: Uint8Array[] = [];
    const issued = await a.store.issue(entry, {
      ttlMs: 30_000,
      handover: () => made[made.push(handoverOf(entry)) - 1]!,
    });
    assert.equal(a.store.size, 1);
    assert.equal(made.length, 1, "the handover is made once");
    assert.ok(made[0]!.every((byte) => byte === 0), "and wiped once sealed");

    const claim = await b.store.claim(issued.token, "192.0.2.7");
    assert.ok(claim.ok);
    assert.equal(claim.entry, undefined);
    assert.ok(claim.entry === undefined && "handover" in claim);
    assert.deepEqual(claim.handover, handoverOf(entry));
    assert.equal(claim.hashPrefix, issued.hashPrefix);

    assert.deepEqual(await b.store.claim(issued.token, "192.0.2.7"), {
      ok: false,
      why: "unknown",
      hashPrefix: issued.hashPrefix,
    });
    // A still held the entry: Redis says the token is gone, so A lets it go.
    assert.equal((await a.store.claim(issued.token, "192.0.2.7")).ok, false);
    assert.deepEqual(a.expired, [entry]);
    assert.equal(a.store.size, 0);
    assert.equal((await a.store.claim(issued.token, "192.0.2.7")).ok, false);
    assert.deepEqual(a.expired, [entry], "expired once");
    assert.equal((await dump(a.client)).size, 0);
  },
});

Deno.test({
  name:
    "RedisTokenStore: a token claimed on the instance that issued it gives the pinned entry itself",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    const entry = { name: "pinned" };
    const issued = await a.store.issue(entry, { ttlMs: 30_000, handover: () => handoverOf(entry) });
    const claim = await a.store.claim(issued.token, "192.0.2.7");
    assert.ok(claim.ok);
    assert.equal(claim.entry, entry);
    assert.equal(a.store.size, 0);
    assert.deepEqual(a.expired, []);
    assert.equal((await b.store.claim(issued.token, "192.0.2.7")).ok, false);
    assert.equal((await dump(a.client)).size, 0);
  },
});

Deno.test({
  name: "RedisTokenStore: 200 tokens each claimed at once on both instances succeed exactly once",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    const entries = Array.from({ length: 200 }, (_, i) => ({ name: `e${i}` }));
    const issued = await Promise.all(
      entries.map((entry, i) =>
        (i % 2 === 0 ? a : b).store.issue(entry, {
          ttlMs: 30_000,
          handover: () => handoverOf(entry),
        })
      ),
    );
    const claims = await Promise.all(
      issued.map(({ token }) =>
        Promise.all([
          a.store.claim(token, "192.0.2.7"),
          b.store.claim(token, "192.0.2.7"),
          a.store.claim(token, "192.0.2.7"),
          b.store.claim(token, "192.0.2.7"),
        ])
      ),
    );
    let local = 0;
    claims.forEach((four, i) => {
      const won = four.filter((c) => c.ok);
      assert.equal(won.length, 1, `token ${i} claimed ${won.length} times`);
      for (const lost of four.filter((c) => !c.ok)) {
        assert.ok(!lost.ok && lost.why === "unknown", `token ${i}: ${JSON.stringify(lost)}`);
      }
      const winner = won[0]!;
      assert.ok(winner.ok);
      if (winner.entry !== undefined) {
        assert.equal(winner.entry, entries[i]);
        local++;
      } else {
        assert.ok("handover" in winner);
        assert.deepEqual(winner.handover, handoverOf(entries[i]!));
      }
    });
    assert.ok(local > 0 && local < 200, `${local} claimed where issued`);
    // Every entry ended once: claimed locally, or expired at its owner for a claim elsewhere.
    assert.equal(a.store.size + b.store.size, 0);
    assert.equal(a.expired.length + b.expired.length + local, 200);
    assert.equal((await dump(a.client)).size, 0);
  },
});

Deno.test({
  name: "RedisTokenStore: a claim from another address is refused and the token stays claimable",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    for (
      const [bound, viewer, other] of [
        ["192.0.2.7", "::ffff:192.0.2.7", "192.0.2.8"],
        ["[2001:db8::1]", "2001:DB8:0:0:0:0:0:1", "2001:db8::2"],
      ]
    ) {
      const entry = { name: bound! };
      const issued = await a.store.issue(entry, {
        ttlMs: 30_000,
        clientAddress: bound!,
        handover: () => handoverOf(entry),
      });
      for (const store of [a.store, b.store]) {
        const refused = await store.claim(issued.token, other!);
        assert.ok(!refused.ok && refused.why === "wrong-address", JSON.stringify(refused));
      }
      assert.equal(a.store.size, 1);
      const claim = await b.store.claim(issued.token, viewer!);
      assert.ok(claim.ok && claim.entry === undefined);
      assert.equal((await a.store.claim(issued.token, viewer!)).ok, false);
    }
    await assert.rejects(
      a.store.issue({ name: "x" }, {
        ttlMs: 1_000,
        clientAddress: "nope",
        handover: () => enc.encode("h"),
      }),
      TypeError,
    );
  },
});

Deno.test({
  name: "RedisTokenStore: an unclaimed token expires in Redis and at its owner, once",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key, { maxTtlMs: 300 });
    await using b = await instance(server, key);
    const entry = { name: "late" };
    const issued = await a.store.issue(entry, { ttlMs: 60_000, handover: () => handoverOf(entry) });
    assert.equal(issued.ttlMs, 300, "capped");
    const pttl = await a.client.command([
      "PTTL",
      `${DEFAULT_TOKEN_KEY_PREFIX}${hashToken(issued.token)}`,
    ]);
    assert.ok(typeof pttl === "number" && pttl > 0 && pttl <= 300, String(pttl));
    await waitUntil("the local expiry", () => a.expired.length > 0);
    assert.deepEqual(a.expired, [entry]);
    let keys = await dump(a.client);
    for (let i = 0; keys.size > 0 && i < 100; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      keys = await dump(a.client);
    }
    assert.equal(keys.size, 0);
    const claim = await b.store.claim(issued.token, "192.0.2.7");
    assert.ok(!claim.ok && claim.why === "unknown");
    assert.equal((await a.store.claim(issued.token, "192.0.2.7")).ok, false);
    assert.deepEqual(a.expired, [entry]);
  },
});

Deno.test({
  name:
    "RedisTokenStore: with Redis down issue throws and leaves nothing, claim is unavailable; back up it works",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    const before = { name: "before" };
    const pending = await a.store.issue(before, {
      ttlMs: 30_000,
      handover: () => handoverOf(before),
    });
    await server.stop();
    await waitUntil("unavailable", () => !a.store.available && !b.store.available);

    const entry = { name: "down" };
    await assert.rejects(
      a.store.issue(entry, { ttlMs: 30_000, handover: () => handoverOf(entry) }),
      TokenStoreUnavailableError,
    );
    assert.equal(a.store.size, 1, "only the token issued before");
    // The entry can be issued again: nothing of it was left.
    const claim = await b.store.claim(pending.token, "192.0.2.7");
    assert.ok(!claim.ok && claim.why === "unavailable");
    const own = await a.store.claim(pending.token, "192.0.2.7");
    assert.ok(!own.ok && own.why === "unavailable");
    assert.equal(a.store.size, 1, "nothing burnt");
    assert.deepEqual(a.expired, []);

    await server.restart();
    await waitUntil("available", () => a.store.available && b.store.available);
    const issued = await a.store.issue(entry, { ttlMs: 30_000, handover: () => handoverOf(entry) });
    const after = await b.store.claim(issued.token, "192.0.2.7");
    assert.ok(after.ok && after.entry === undefined);
    assert.deepEqual(a.expired, []);
  },
});

Deno.test({
  name: "RedisTokenStore keeps no token, no handover secret and no address in clear in Redis",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    await using a = await instance(server, sharedKey());
    const tokens: string[] = [];
    const entries = Array.from({ length: 20 }, (_, i) => ({ name: `secret${i}` }));
    const addresses = ["192.0.2.77", "2001:db8::77", undefined];
    for (const [i, entry] of entries.entries()) {
      const address = addresses[i % addresses.length];
      const issued = await a.store.issue(entry, {
        ttlMs: 30_000,
        handover: () => handoverOf(entry),
        ...(address === undefined ? {} : { clientAddress: address }),
      });
      tokens.push(issued.token);
    }
    const keys = await dump(a.client);
    assert.equal(keys.size, entries.length);
    const expectedKeys = new Set(tokens.map((t) => `${DEFAULT_TOKEN_KEY_PREFIX}${hashToken(t)}`));
    assert.deepEqual(new Set(keys.keys()), expectedKeys);
    const forbidden = [
      ...tokens,
      ...entries.map((e) => `backend-secret-${e.name}`),
      "backendPassword",
      "192.0.2.77",
      "2001:db8::77",
      "c000:24d",
    ];
    for (const [name, value] of keys) {
      for (const secret of forbidden) {
        assert.ok(!name.includes(secret), `key holds "${secret}"`);
        assert.ok(!containsBytes(value, enc.encode(secret)), `value holds "${secret}"`);
      }
      // The raw IPv4 bytes are not there either.
      assert.ok(!containsBytes(value, new Uint8Array([192, 0, 2, 77])));
    }
  },
});

Deno.test({
  name: "RedisTokenStore.issue() requires a handover and leaves nothing without one",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    await using a = await instance(server, sharedKey());
    await assert.rejects(a.store.issue({ name: "x" }, { ttlMs: 1_000 }), TypeError);
    assert.equal(a.store.size, 0);
    assert.equal((await dump(a.client)).size, 0);
  },
});

Deno.test({
  name: "RedisTokenStore.remove() drops the token here and in Redis without expiring it",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    const entry = { name: "cancelled" };
    const issued = await a.store.issue(entry, { ttlMs: 30_000, handover: () => handoverOf(entry) });
    assert.equal(await a.store.remove(entry), true);
    assert.equal(await a.store.remove(entry), false);
    assert.equal((await dump(a.client)).size, 0);
    assert.equal((await b.store.claim(issued.token, "192.0.2.7")).ok, false);
    assert.deepEqual(a.expired, []);
  },
});

Deno.test({
  name: "RedisTokenStore.remove() with keepShared lets go here only: another instance redeems it",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    const entry = { name: "draining" };
    const issued = await a.store.issue(entry, { ttlMs: 30_000, handover: () => handoverOf(entry) });
    assert.equal(await a.store.remove(entry, { keepShared: true }), true);
    assert.equal(a.store.size, 0);
    assert.equal((await dump(a.client)).size, 1);
    const claim = await b.store.claim(issued.token, "192.0.2.7");
    assert.equal(claim.ok && claim.entry === undefined, true);
    assert.deepEqual(a.expired, []);
  },
});

Deno.test({
  name:
    "RedisTokenStore.close() expires the local entries but leaves their tokens to the other instances",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    const entry = { name: "survivor" };
    const issued = await a.store.issue(entry, { ttlMs: 30_000, handover: () => handoverOf(entry) });
    await a.store.close();
    assert.deepEqual(a.expired, [entry]);
    assert.equal(a.store.available, false);
    const refused = await a.store.claim(issued.token, "192.0.2.7");
    assert.ok(!refused.ok && refused.why === "unavailable");
    await assert.rejects(
      a.store.issue({ name: "y" }, { ttlMs: 1, handover: () => enc.encode("h") }),
    );
    const claim = await b.store.claim(issued.token, "192.0.2.7");
    assert.ok(claim.ok && claim.entry === undefined);
    assert.deepEqual(claim.handover, handoverOf(entry));
  },
});

Deno.test({
  name: "RedisTokenStore loads its claim script again after Redis forgot it (NOSCRIPT)",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const key = sharedKey();
    await using a = await instance(server, key);
    await using b = await instance(server, key);
    for (let i = 0; i < 3; i++) {
      const entry = { name: `s${i}` };
      const issued = await a.store.issue(entry, {
        ttlMs: 30_000,
        handover: () => handoverOf(entry),
      });
      assert.equal(await a.client.command(["SCRIPT", "FLUSH"]), "OK");
      assert.ok((await b.store.claim(issued.token, "192.0.2.7")).ok);
    }
  },
});

Deno.test({
  name:
    "RedisTokenStore: a token sealed under another shared key does not open (unknown, and burnt)",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    await using a = await instance(server, sharedKey());
    await using b = await instance(server, sharedKey());
    const entry = { name: "foreign" };
    const issued = await a.store.issue(entry, { ttlMs: 30_000, handover: () => handoverOf(entry) });
    const claim = await b.store.claim(issued.token, "192.0.2.7");
    assert.ok(!claim.ok && claim.why === "unknown");
    assert.equal((await dump(a.client)).size, 0);
  },
});

Deno.test({
  name: "RedisTokenStore shows no token, hash or key in inspect output",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    await using a = await instance(server, sharedKey());
    const issued = await a.store.issue({ name: "i" }, {
      ttlMs: 30_000,
      handover: () => enc.encode("h"),
    });
    const shown = Deno.inspect(a.store);
    assert.equal(shown, "RedisTokenStore { pending: 1, available }");
    assert.ok(!shown.includes(issued.hashPrefix));
  },
});
