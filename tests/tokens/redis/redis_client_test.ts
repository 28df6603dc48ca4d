/**
 * The Redis client against a scripted fake server (Deno.listen on
 * loopback): pipelining, splits, errors, deadlines, broken connections,
 * reconnection with back-off, fail-fast while down, no leak after close.
 */

import assert from "node:assert/strict";
import {
  RedisClient,
  type RedisClientOptions,
  RedisError,
  RedisUnavailableError,
} from "../../../src/tokens/redis/redis_client.ts";
import { encodeReply, RespErrorReply, RespParser } from "../../../src/tokens/redis/resp.ts";
import { waitUntil } from "../../_util/child_process.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

/** What the fake does with one command: reply bytes, no reply, or drop the connection. */
type Action = Uint8Array | "silent" | "close";

interface FakeConnection {
  readonly conn: Deno.Conn;
  readonly commands: string[][];
  /** Set by a handler: nothing more is answered on this connection. */
  stalled: boolean;
}

/** A scripted Redis: a handler per command, replies written in `segment`-byte writes. */
class FakeRedis {
  #listener: Deno.Listener | undefined;
  readonly port: number;
  readonly connections: FakeConnection[] = [];
  readonly #loops = new Set<Promise<void>>();
  #accepting: Promise<void> | undefined;
  handler: (command: string[], connection: FakeConnection) => Action;
  segment = Infinity;
  /** Accepted connections are closed at once (a server that keeps failing). */
  refuse = false;

  constructor(handler: (command: string[], connection: FakeConnection) => Action, port = 0) {
    this.handler = handler;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept(this.#listener);
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      const connection: FakeConnection = { conn, commands: [], stalled: false };
      this.connections.push(connection);
      if (this.refuse) {
        conn.close();
        continue;
      }
      const loop = this.#serve(connection).finally(() => this.#loops.delete(loop));
      this.#loops.add(loop);
    }
  }

  async #serve(connection: FakeConnection): Promise<void> {
    const { conn, commands } = connection;
    const parser = new RespParser();
    const buffer = new Uint8Array(4096);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        parser.push(buffer.subarray(0, n));
        for (let value = parser.next(); value !== undefined; value = parser.next()) {
          const command = (value as Uint8Array[]).map((arg) => dec.decode(arg));
          commands.push(command);
          const action = this.handler(command, connection);
          if (action === "silent") continue;
          if (action === "close") {
            conn.close();
            return;
          }
          for (let at = 0; at < action.length; at += this.segment) {
            await conn.write(action.subarray(at, Math.min(action.length, at + this.segment)));
          }
        }
      }
    } catch {
      // The client went away.
    }
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }

  /** Stops listening and drops every connection (the server is gone). */
  async stop(): Promise<void> {
    this.#listener?.close();
    this.#listener = undefined;
    await this.#accepting;
    for (const { conn } of this.connections) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
    await Promise.all(this.#loops);
  }

  /** Listens again on the same port. */
  restart(): void {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#accepting = this.#accept(this.#listener);
  }
}

/** The usual behaviour: OK to AUTH/SELECT, PONG, ECHO echoes. */
function redisLike(command: string[]): Action {
  switch (command[0]) {
    case "AUTH":
    case "SELECT":
      return encodeReply("OK");
    case "PING":
      return encodeReply("PONG");
    case "ECHO":
      return encodeReply(enc.encode(command[1]));
    default:
      return encodeReply(new RespErrorReply(`ERR unknown command '${command[0]}'`));
  }
}

function client(fake: FakeRedis, options: Partial<RedisClientOptions> = {}): RedisClient {
  return new RedisClient({
    url: `redis://127.0.0.1:${fake.port}`,
    commandTimeoutMs: 1_000,
    reconnectMinMs: 20,
    reconnectMaxMs: 200,
    healthCheckIntervalMs: 10_000,
    ...options,
  });
}

const text = (value: unknown) => dec.decode(value as Uint8Array);

Deno.test("RedisClient logs in and selects on every connection, then pipelines replies FIFO, one byte per write", async () => {
  const fake = new FakeRedis(redisLike);
  fake.segment = 1;
  const redis = client(fake, { url: `redis://vap:pw@127.0.0.1:${fake.port}/3`, poolSize: 3 });
  try {
    await redis.ready();
    assert.equal(redis.available, true);
    const replies = await Promise.all(
      Array.from({ length: 300 }, (_, i) => redis.command(["ECHO", `reply ${i}`])),
    );
    replies.forEach((reply, i) => assert.equal(text(reply), `reply ${i}`));
    assert.equal(fake.connections.length, 3);
    for (const { commands } of fake.connections) {
      assert.deepEqual(commands.slice(0, 2), [["AUTH", "vap", "pw"], ["SELECT", "3"]]);
      // Commands are spread over the pool.
      assert.ok(commands.length > 2 + 30, `only ${commands.length - 2} commands on a connection`);
    }
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient sends AUTH with the password alone, and PING when there is nothing to log in", async () => {
  const fake = new FakeRedis(redisLike);
  const withPassword = client(fake, { url: `redis://:pw@127.0.0.1:${fake.port}`, poolSize: 1 });
  await withPassword.ready();
  await withPassword.close();
  const plain = client(fake, { poolSize: 1 });
  await plain.ready();
  await plain.close();
  await fake.stop();
  assert.deepEqual(fake.connections.map((c) => c.commands[0]), [["AUTH", "pw"], ["PING"]]);
});

Deno.test("RedisClient surfaces an error reply as RedisError with the server's message and none of the arguments", async () => {
  const fake = new FakeRedis((command) =>
    command[0] === "FAIL"
      ? encodeReply(
        new RespErrorReply(
          `ERR unknown command 'FAIL', with args beginning with: '${command[1]}' `,
        ),
      )
      : redisLike(command)
  );
  const redis = client(fake, { poolSize: 1 });
  try {
    await redis.ready();
    const error = await redis.command(["FAIL", "hunter2"]).catch((e) => e);
    assert.ok(error instanceof RedisError);
    assert.equal(error.code, "ERR");
    assert.match(error.message, /unknown command 'FAIL'/);
    assert.ok(!error.message.includes("hunter2"), error.message);
    // The connection is still good.
    assert.equal(text(await redis.command(["ECHO", "after"])), "after");
    assert.equal(fake.connections.length, 1);
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient fails a command the server never answers at its deadline, with those in flight, and reconnects", async () => {
  // A server that stalls at HANG: nothing after it on that connection is answered.
  const fake = new FakeRedis((command, connection) => {
    if (command[0] === "HANG") connection.stalled = true;
    return connection.stalled ? "silent" : redisLike(command);
  });
  const redis = client(fake, { poolSize: 1, commandTimeoutMs: 200 });
  try {
    await redis.ready();
    const started = Date.now();
    const [hung, behind] = await Promise.allSettled([
      redis.command(["HANG"]),
      redis.command(["ECHO", "behind"]),
    ]);
    assert.ok(Date.now() - started < 5_000);
    assert.equal(hung.status, "rejected");
    assert.ok(hung.reason instanceof RedisUnavailableError);
    assert.match(hung.reason.message, /timed out after 200 ms/);
    assert.equal(behind.status, "rejected");
    assert.ok(behind.reason instanceof RedisUnavailableError);
    await waitUntil("a new connection", () => redis.available && fake.connections.length === 2);
    assert.equal(text(await redis.command(["ECHO", "again"])), "again");
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient fails the commands of a connection closed in the middle of a reply, then recovers", async () => {
  const fake = new FakeRedis(redisLike);
  fake.handler = (command) => {
    if (command[0] !== "HALF") return redisLike(command);
    return enc.encode("$10\r\nabc");
  };
  const redis = client(fake, { poolSize: 1 });
  try {
    await redis.ready();
    // The fake writes half a reply, then the next command makes it close.
    const half = redis.command(["HALF"]);
    const original = fake.handler;
    fake.handler = (command, c) => command[0] === "ECHO" ? "close" : original(command, c);
    const next = redis.command(["ECHO", "x"]);
    const results = await Promise.allSettled([half, next]);
    for (const result of results) {
      assert.equal(result.status, "rejected");
      assert.ok(result.reason instanceof RedisUnavailableError);
      assert.match(result.reason.message, /closed the connection/);
    }
    fake.handler = original;
    await waitUntil("a new connection", () => redis.available && fake.connections.length === 2);
    assert.equal(text(await redis.command(["ECHO", "back"])), "back");
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient closes a connection whose server breaks the protocol or answers nothing asked", async () => {
  for (const garbage of ["?garbage\r\n", `$${2 ** 21}\r\n`, "*1\r\n".repeat(20)]) {
    const fake = new FakeRedis((command) =>
      command[0] === "BAD" ? enc.encode(garbage) : redisLike(command)
    );
    const redis = client(fake, { poolSize: 1 });
    try {
      await redis.ready();
      const error = await redis.command(["BAD"]).catch((e) => e);
      assert.ok(error instanceof RedisUnavailableError, String(error));
      assert.match(error.message, /protocol error/);
      await waitUntil("a new connection", () => redis.available && fake.connections.length === 2);
    } finally {
      await redis.close();
      await fake.stop();
    }
  }
  // Two replies to one command: the second answers nothing.
  const fake = new FakeRedis((command) =>
    command[0] === "TWICE" ? enc.encode("+one\r\n+two\r\n") : redisLike(command)
  );
  const redis = client(fake, { poolSize: 1 });
  try {
    await redis.ready();
    assert.equal(await redis.command(["TWICE"]), "one");
    await waitUntil("a new connection", () => fake.connections.length === 2 && redis.available);
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient fails fast while the server is down, backs off, and comes back on its own", async () => {
  const fake = new FakeRedis(redisLike);
  const states: boolean[] = [];
  // Asserted after the fact: the client swallows what its hook throws.
  const reasons: (string | undefined)[] = [];
  const redis = client(fake, {
    poolSize: 2,
    commandTimeoutMs: 10_000,
    reconnectMinMs: 50,
    reconnectMaxMs: 400,
    onStateChange: (available, reason) => {
      states.push(available);
      if (!available) reasons.push(reason);
    },
  });
  try {
    await redis.ready();
    assert.deepEqual(states, [true]);
    // The server accepts and drops every connection: each attempt is counted.
    fake.refuse = true;
    for (const { conn } of fake.connections) conn.close();
    await waitUntil("unavailable", () => !redis.available);
    assert.deepEqual(states, [true, false]);
    assert.equal(reasons.length, 1);
    assert.ok(reasons[0] !== undefined && reasons[0].length > 0, "going down says why");
    const started = Date.now();
    const error = await redis.command(["ECHO", "x"]).catch((e) => e);
    assert.ok(error instanceof RedisUnavailableError);
    assert.match(error.message, /^Redis unavailable: /);
    assert.ok(Date.now() - started < 1_000, "not failed fast");
    const before = fake.connections.length;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const attempts = fake.connections.length - before;
    // Two connections, 50 ms doubling to 400 ms: about 5 each in 1.5 s;
    // retrying every 50 ms would be 60.
    assert.ok(attempts >= 2 && attempts <= 20, `${attempts} attempts in 1.5 s`);
    // Now the server is gone entirely, then back on the same port.
    await fake.stop();
    fake.refuse = false;
    fake.restart();
    await waitUntil("available again", () => redis.available);
    assert.deepEqual(states, [true, false, true]);
    assert.equal(text(await redis.command(["ECHO", "back"])), "back");
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient notices a server gone silent by its PING, without traffic, and recovers", async () => {
  let silent = false;
  const fake = new FakeRedis((command) => silent ? "silent" : redisLike(command));
  const states: boolean[] = [];
  const redis = client(fake, {
    poolSize: 1,
    commandTimeoutMs: 150,
    healthCheckIntervalMs: 50,
    onStateChange: (available) => states.push(available),
  });
  try {
    await redis.ready();
    silent = true;
    await waitUntil("unavailable", () => !redis.available);
    assert.ok(fake.connections[0]!.commands.some(([name]) => name === "PING"));
    silent = false;
    await waitUntil("available again", () => redis.available);
    assert.deepEqual(states, [true, false, true]);
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient reports a refused login without the password, and keeps retrying", async () => {
  const fake = new FakeRedis((command) =>
    command[0] === "AUTH"
      ? encodeReply(new RespErrorReply("WRONGPASS invalid username-password pair"))
      : redisLike(command)
  );
  const reasons: (string | undefined)[] = [];
  const redis = client(fake, {
    url: `redis://vap:hunter2@127.0.0.1:${fake.port}`,
    poolSize: 1,
    onStateChange: (_, reason) => reasons.push(reason),
  });
  try {
    await redis.ready();
    assert.equal(redis.available, false);
    const error = await redis.command(["PING"]).catch((e) => e);
    assert.ok(error instanceof RedisUnavailableError);
    assert.match(error.message, /Redis refused the login: WRONGPASS/);
    assert.ok(!error.message.includes("hunter2"));
    await waitUntil("a retry", () => fake.connections.length >= 2);
    assert.ok(!Deno.inspect(redis).includes("hunter2"));
    assert.match(Deno.inspect(redis), /redis:\/\/vap@127\.0\.0\.1:\d+\/0, unavailable/);
  } finally {
    await redis.close();
    await fake.stop();
  }
});

Deno.test("RedisClient.close() fails what is in flight and leaves no socket, timer or promise, up or down", async () => {
  const fake = new FakeRedis((command) => command[0] === "HANG" ? "silent" : redisLike(command));
  const redis = client(fake, { poolSize: 2, healthCheckIntervalMs: 20 });
  await redis.ready();
  const hung = redis.command(["HANG"]).catch((e) => e);
  await redis.close();
  const error = await hung;
  assert.ok(error instanceof RedisUnavailableError);
  assert.match(error.message, /closed/);
  assert.equal(redis.available, false);
  await assert.rejects(redis.command(["PING"]), /Redis client closed/);
  await redis.close();
  // Down, with reconnect timers armed.
  await fake.stop();
  const down = client(fake, { poolSize: 2 });
  await down.ready();
  assert.equal(down.available, false);
  await down.close();
  // Closed while its first attempts are still under way.
  fake.restart();
  const early = client(fake, { poolSize: 2 });
  await early.close();
  await fake.stop();
});
