/**
 * The Redis client against Debian's real `redis-server`: ACL login,
 * `requirepass`, SELECT, a Unix socket, TLS (right CA, wrong CA, wrong
 * name), and a server stopped and started again on the same port.
 */

import assert from "node:assert/strict";
import { RedisClient, RedisUnavailableError } from "../../../src/tokens/redis/redis_client.ts";
import { hasOpenssl, makeTestCertificateAuthority } from "../../_util/tls.ts";
import { redisSkipNotice, startRedisServer } from "../../_util/redis_server.ts";
import { waitUntil } from "../../_util/child_process.ts";

const hasRedis = redisSkipNotice("the Redis client tests against redis-server");
const dec = new TextDecoder();

const FAST = { reconnectMinMs: 20, reconnectMaxMs: 200, healthCheckIntervalMs: 100 } as const;

Deno.test({
  name: "RedisClient logs in as an ACL user and works in the selected database",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer({
      user: { name: "vap", password: "s3cr@t", rules: "~* &* +@all" },
    });
    const url = `redis://vap:s3cr%40t@127.0.0.1:${server.port}`;
    await using db5 = new RedisClient({ url: `${url}/5`, ...FAST });
    await using db0 = new RedisClient({ url: `${url}/0`, ...FAST });
    await Promise.all([db5.ready(), db0.ready()]);
    assert.ok(db5.available && db0.available);
    assert.equal(await db5.command(["SET", "where", "five"]), "OK");
    assert.equal(dec.decode(await db5.command(["GET", "where"]) as Uint8Array), "five");
    assert.equal(await db0.command(["GET", "where"]), null);
    assert.deepEqual(await db5.command(["ACL", "WHOAMI"]), new TextEncoder().encode("vap"));

    await using wrong = new RedisClient({
      url: `redis://vap:nope@127.0.0.1:${server.port}`,
      poolSize: 1,
      ...FAST,
    });
    await wrong.ready();
    assert.equal(wrong.available, false);
    const error = await wrong.command(["PING"]).catch((e) => e);
    assert.ok(error instanceof RedisUnavailableError);
    assert.match(error.message, /WRONGPASS/);
    assert.ok(!error.message.includes("nope"));
  },
});

Deno.test({
  name: "RedisClient logs in with requirepass over a Unix socket",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer({ unixSocket: true, password: "pw" });
    await using redis = new RedisClient({
      url: `unix:${server.socketPath}?password=pw&db=2`,
      ...FAST,
    });
    await redis.ready();
    assert.ok(redis.available);
    assert.equal(await redis.command(["SET", "k", "v"]), "OK");
    assert.deepEqual(await server.pipeline(["SELECT", "2"], ["GET", "k"]), ["OK", "v"]);
  },
});

Deno.test({
  name: "RedisClient speaks TLS to rediss:// with the given CA, and refuses another CA or name",
  ignore: !hasRedis || !hasOpenssl(),
  async fn() {
    await using other = await makeTestCertificateAuthority("other CA");
    await using server = await startRedisServer({ tls: true });
    const ca = await Deno.readTextFile(server.caFile!);
    const url = `rediss://127.0.0.1:${server.port}/1`;
    await using redis = new RedisClient({ url, caCerts: [ca], ...FAST });
    await redis.ready();
    assert.ok(redis.available);
    assert.equal(
      await redis.command(["ECHO", "over tls"]).then((v) => dec.decode(v as Uint8Array)),
      "over tls",
    );

    await using untrusted = new RedisClient({ url, caCerts: [other.cert], poolSize: 1, ...FAST });
    await untrusted.ready();
    assert.equal(untrusted.available, false);
    const error = await untrusted.command(["PING"]).catch((e) => e);
    assert.ok(error instanceof RedisUnavailableError);
    assert.match(error.message, /TLS handshake with Redis failed/);

    // A certificate from a CA the client trusts, for another name than 127.0.0.1.
    await using wrongName = await startRedisServer({ tls: { names: ["DNS:elsewhere.example"] } });
    await using misnamedClient = new RedisClient({
      url: `rediss://127.0.0.1:${wrongName.port}`,
      caCerts: [await Deno.readTextFile(wrongName.caFile!)],
      poolSize: 1,
      ...FAST,
    });
    await misnamedClient.ready();
    assert.equal(misnamedClient.available, false);
    await assert.rejects(misnamedClient.command(["PING"]), /TLS handshake with Redis failed/);
  },
});

Deno.test({
  name:
    "RedisClient is unavailable while redis-server is stopped and back on its own when it restarts",
  ignore: !hasRedis,
  async fn() {
    await using server = await startRedisServer();
    const states: boolean[] = [];
    await using redis = new RedisClient({
      url: `redis://127.0.0.1:${server.port}`,
      commandTimeoutMs: 500,
      onStateChange: (available) => states.push(available),
      ...FAST,
    });
    await redis.ready();
    assert.equal(await redis.command(["PING"]), "PONG");
    await server.stop();
    await waitUntil("unavailable", () => !redis.available);
    await assert.rejects(redis.command(["PING"]), RedisUnavailableError);
    await server.restart();
    await waitUntil("available again", () => redis.available);
    assert.equal(await redis.command(["PING"]), "PONG");
    assert.deepEqual(states, [true, false, true]);
  },
});
