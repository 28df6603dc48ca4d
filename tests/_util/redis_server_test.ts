import assert from "node:assert/strict";
import { hasRedisServer, RespError, startRedisServer } from "./redis_server.ts";
import { hasOpenssl } from "./tls.ts";

const missing = hasRedisServer() ? undefined : "needs redis-server";

function test(name: string, fn: () => Promise<void>, needs = missing): void {
  Deno.test({
    name: needs === undefined ? name : `IGNORED (${needs}): ${name}`,
    ignore: needs !== undefined,
    fn,
  });
}

/** Sends raw bytes to `conn` and reads what comes back until the first CRLF. */
async function rawLine(conn: Deno.Conn, request: string): Promise<string> {
  await conn.write(new TextEncoder().encode(request));
  const buffer = new Uint8Array(1024);
  let text = "";
  while (!text.includes("\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return text.split("\r\n")[0];
}

function isPortFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) return false;
    throw error;
  }
}

test("startRedisServer() answers PING, keeps values with their TTL, keys() reads them all", async () => {
  await using redis = await startRedisServer();
  assert.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+\/0$/);
  assert.equal(redis.url, `redis://127.0.0.1:${redis.port}/0`);
  assert.equal(await redis.command("PING"), "PONG");
  // Nothing persisted: no save points, no AOF.
  assert.deepEqual(await redis.command("CONFIG", "GET", "save"), ["save", ""]);
  assert.deepEqual(await redis.command("CONFIG", "GET", "appendonly"), ["appendonly", "no"]);
  assert.equal(await redis.command("SET", "plain", "value", "PX", "60000"), "OK");
  assert.equal(await redis.command("HSET", "h", "f1", "v1", "f2", "\u00ff\u0000x"), 2);
  assert.equal(await redis.command("RPUSH", "l", "a", "b"), 2);
  const entries = await redis.keys();
  assert.deepEqual(entries.map((e) => [e.key, e.type, e.values]), [
    ["h", "hash", ["f1", "v1", "f2", "\u00ff\u0000x"]],
    ["l", "list", ["a", "b"]],
    ["plain", "string", ["value"]],
  ]);
  const plain = entries.find((e) => e.key === "plain")!;
  assert.ok(plain.ttlMs > 0 && plain.ttlMs <= 60_000, String(plain.ttlMs));
  assert.equal(entries.find((e) => e.key === "h")!.ttlMs, -1);
  await assert.rejects(redis.command("NOSUCHCOMMAND"), RespError);
  assert.ok(Number.isInteger(redis.pid) && redis.pid > 0);
});

test("restart() keeps the port and the config; stop() frees the port", async () => {
  await using redis = await startRedisServer({ password: 's3cret "pass\\' });
  assert.equal(redis.url, `redis://:s3cret%20%22pass%5C@127.0.0.1:${redis.port}/0`);
  const { port, pid } = redis;
  await redis.command("SET", "k", "v");
  await redis.restart();
  assert.equal(redis.port, port);
  assert.notEqual(redis.pid, pid);
  assert.equal(redis.running, true);
  assert.equal(await redis.command("PING"), "PONG");
  // No persistence: a restart forgets everything, as a crashed store would.
  assert.deepEqual(await redis.keys(), []);
  // Still wants the password.
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    assert.match(await rawLine(conn, "PING\r\n"), /^-NOAUTH/);
  }
  await redis.stop();
  assert.equal(redis.running, false);
  assert.throws(() => redis.pid, /stopped/);
  assert.ok(isPortFree(port), `port ${port} is still taken after stop()`);
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port }),
    Deno.errors.ConnectionRefused,
  );
  // stop() twice and a restart after a stop are fine.
  await redis.stop();
  await redis.restart();
  assert.equal(await redis.command("PING"), "PONG");
});

test("an ACL user and a Unix socket: the default user is off, the socket answers", async () => {
  await using redis = await startRedisServer({
    user: { name: "vap", password: "pw:@/x y" },
    unixSocket: true,
  });
  assert.equal(redis.url, `redis://vap:pw%3A%40%2Fx%20y@127.0.0.1:${redis.port}/0`);
  assert.ok(redis.socketPath !== undefined);
  assert.equal(redis.unixUrl, `unix:${redis.socketPath}`);
  assert.equal(await redis.command("ACL", "WHOAMI"), "vap");
  const info = await Deno.stat(redis.socketPath);
  assert.equal(info.isSocket, true);
  assert.equal((info.mode ?? 0) & 0o777, 0o700);
  {
    using conn = await Deno.connect({ transport: "unix", path: redis.socketPath });
    assert.match(await rawLine(conn, "PING\r\n"), /^-NOAUTH/);
  }
  {
    using conn = await Deno.connect({ transport: "unix", path: redis.socketPath });
    // The default user is switched off: no password opens it.
    assert.match(await rawLine(conn, "AUTH default anything\r\n"), /^-WRONGPASS/);
  }
  {
    using conn = await Deno.connect({ transport: "unix", path: redis.socketPath });
    assert.equal(await rawLine(conn, 'AUTH vap "pw:@/x y"\r\n'), "+OK");
    assert.equal(await rawLine(conn, "PING\r\n"), "+PONG");
  }
  const socketPath = redis.socketPath;
  await redis.restart();
  assert.equal((await Deno.stat(socketPath)).isSocket, true);
  await redis.stop();
  await assert.rejects(Deno.stat(socketPath), Deno.errors.NotFound);
});

test(
  "tls: rediss:// with a CA file; plain connections get nothing",
  async () => {
    await using redis = await startRedisServer({ tls: true });
    assert.equal(redis.url, `rediss://127.0.0.1:${redis.port}/0`);
    assert.ok(redis.caFile !== undefined);
    assert.equal(await redis.command("PING"), "PONG");
    {
      using conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: redis.port,
        caCerts: [await Deno.readTextFile(redis.caFile)],
      });
      assert.equal(await rawLine(conn, "PING\r\n"), "+PONG");
    }
    {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: redis.port });
      // redis-server takes the bytes as a bad TLS record and hangs up.
      const answer = await rawLine(conn, "PING\r\n").catch((error) => {
        if (error instanceof Deno.errors.ConnectionReset) return "";
        throw error;
      });
      assert.equal(answer, "");
    }
    await redis.restart();
    assert.equal(await redis.command("PING"), "PONG");
  },
  missing ?? (hasOpenssl() ? undefined : "needs openssl"),
);

test("dispose stops the server and removes its files", async () => {
  let dir: string;
  let port: number;
  {
    await using redis = await startRedisServer({ unixSocket: true });
    dir = redis.socketPath!.replace(/\/redis\.sock$/, "");
    port = redis.port;
    assert.equal((await Deno.stat(dir)).isDirectory, true);
  }
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
  assert.ok(isPortFree(port));
});

test("pipeline() runs its commands on one connection and throws an error reply", async () => {
  await using redis = await startRedisServer({ password: "pw" });
  assert.deepEqual(await redis.pipeline(["SELECT", "3"], ["SET", "k", "v"], ["GET", "k"]), [
    "OK",
    "OK",
    "v",
  ]);
  // Each command() is a connection of its own, on database 0.
  assert.equal(await redis.command("GET", "k"), null);
  assert.deepEqual(await redis.pipeline(["SELECT", "3"], ["GET", "k"]), ["OK", "v"]);
  await assert.rejects(redis.pipeline(["PING"], ["NO-SUCH-COMMAND"]), RespError);
});

test(
  "tls with names: the certificate is for those names only",
  async () => {
    await using redis = await startRedisServer({ tls: { names: ["DNS:elsewhere.example"] } });
    assert.equal(await redis.command("PING"), "PONG");
    const caCerts = [await Deno.readTextFile(redis.caFile!)];
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: redis.port });
    {
      using conn = await Deno.startTls(tcp, { hostname: "elsewhere.example", caCerts });
      assert.equal(await rawLine(conn, "PING\r\n"), "+PONG");
    }
    await assert.rejects(async () => {
      using conn = await Deno.connectTls({ hostname: "127.0.0.1", port: redis.port, caCerts });
      await rawLine(conn, "PING\r\n");
    });
  },
  missing ?? (hasOpenssl() ? undefined : "needs openssl"),
);
