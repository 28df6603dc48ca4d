/**
 * A throw-away `redis-server` for tests, on a free 127.0.0.1 port (optionally also a Unix
 * socket, a password or an ACL user, TLS), with no persistence (`save ""`,
 * `appendonly no`), in its own temp dir. `stop()` and `restart()` (same port, same config)
 * let a test take the store away and bring it back; `keys()` reads every key and value
 * through a tiny RESP2 exchange of this file's own, independent of the product's client, so
 * a test can check what the product leaves in Redis.
 *
 * Debian packages: `redis-server` (and `redis-tools` for a human's redis-cli). Tests that
 * need it check {@linkcode hasRedisServer} and are skipped loudly without it.
 *
 * @module
 */

import { findFreePort, hasCommand } from "./real_peers.ts";
import { makeTestCertificateAuthority } from "./tls.ts";
import { ChildSlot, OwnedChild, pollUntil, stopThenRemove } from "./child_process.ts";
import { concatBytes } from "../../src/io/bytes.ts";

const LOOPBACK = "127.0.0.1";
/** Largest reply {@linkcode RedisServer.command} reads, so a broken server cannot fill memory. */
const MAX_REPLY_BYTES = 16 * 1024 * 1024;

/** Whether `redis-server` is on `PATH`. */
export function hasRedisServer(): boolean {
  return hasCommand("redis-server");
}

/**
 * Whether `redis-server` is on `PATH`; without it, logs once that `what` (e.g. "the
 * shared-token tests") do not run, so a skip is never silent.
 */
export function redisSkipNotice(what: string): boolean {
  const present = hasRedisServer();
  if (!present) {
    // deno-lint-ignore no-console
    console.warn(`SKIPPED: redis-server is not installed; ${what} do not run`);
  }
  return present;
}

/** Options of {@linkcode startRedisServer}. */
export interface StartRedisServerOptions {
  /** `requirepass`: the default user needs this password. */
  readonly password?: string;
  /**
   * An ACL user, with `rules` (default `~* &* +@all`, every right); the default user is
   * then switched off.
   */
  readonly user?: { readonly name: string; readonly password: string; readonly rules?: string };
  /** More redis.conf lines, written after the harness's own (for settings under test). */
  readonly configLines?: readonly string[];
  /** Also listen on a Unix socket in the temp dir (`socketPath`). */
  readonly unixSocket?: boolean;
  /**
   * TLS only on the port (`rediss://`), with a server certificate from a fresh test CA (see
   * `caFile`); `names` are the certificate's SAN entries (default `DNS:localhost`,
   * `IP:127.0.0.1`), so a test can serve a certificate for another name.
   */
  readonly tls?: boolean | { readonly names?: readonly string[] };
  /** Bound on start-up (and on each restart). @default 10000 */
  readonly timeoutMs?: number;
}

/** One key as {@linkcode RedisServer.keys} reads it. */
export interface RedisEntry {
  /** The key, one character per byte (latin1), so binary keys survive and ASCII reads as is. */
  readonly key: string;
  /** `string`, `hash`, `list`, `set` or `zset`. */
  readonly type: string;
  /** Milliseconds left to live; -1 when the key has no TTL. */
  readonly ttlMs: number;
  /**
   * The value, latin1 as `key`: one string for a string; field, value, field, value... for
   * a hash; the members for a list or set; member, score... for a zset.
   */
  readonly values: readonly string[];
}

/** A running redis-server, stopped and its files removed on dispose. */
export interface RedisServer extends AsyncDisposable {
  /** `redis://[user:pass@]127.0.0.1:PORT/0` (`rediss://` with `tls`). */
  readonly url: string;
  readonly port: number;
  /** The Unix socket (with `unixSocket`). */
  readonly socketPath?: string;
  /** `unix:PATH` (with `unixSocket`). */
  readonly unixUrl?: string;
  /** The CA file a client must trust (with `tls`), for `--redis-ca`. */
  readonly caFile?: string;
  /** The current process's id (a new one after `restart()`). */
  readonly pid: number;
  /** Whether the server is running (between start or `restart()` and `stop()`). */
  readonly running: boolean;
  /** Stops the server (SIGTERM; nothing is saved); the port is free afterwards. */
  stop(): Promise<void>;
  /** Stops the server if it runs, starts it again on the same port with the same config. */
  restart(): Promise<void>;
  /** Every key of database 0 with its type, TTL and value. */
  keys(): Promise<RedisEntry[]>;
  /**
   * Runs one command (authenticated when the server wants it; arguments and replies latin1
   * as in {@linkcode RedisEntry}); throws {@linkcode RespError} on an error reply.
   */
  command(...args: string[]): Promise<RespValue>;
  /**
   * Sends `commands` pipelined on one connection (so a `SELECT` holds for those after it)
   * and returns every reply; throws the first {@linkcode RespError}.
   */
  pipeline(...commands: string[][]): Promise<RespValue[]>;
  /** The tail of the server's log. */
  log(): string;
}

/**
 * Starts redis-server on a free port and waits until it answers PING; throws when
 * redis-server is missing, with its Debian package name.
 */
export async function startRedisServer(
  options: StartRedisServerOptions = {},
): Promise<RedisServer> {
  if (!hasRedisServer()) {
    throw new Error('Command "redis-server" is not installed (Debian package "redis-server")');
  }
  if (options.password !== undefined && options.user !== undefined) {
    throw new TypeError("Give password or user, not both");
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  const dir = await Deno.makeTempDir({ prefix: "vap-redis-" });
  await using cleanup = new AsyncDisposableStack();
  cleanup.defer(() => Deno.remove(dir, { recursive: true }));
  let caFile: string | undefined;
  let serverName: string | undefined;
  const tlsLines: string[] = [];
  if (options.tls) {
    await using ca = await makeTestCertificateAuthority("vncauthproxy test Redis CA");
    const names = typeof options.tls === "object" ? options.tls.names : undefined;
    // The harness's own exchanges check the certificate against a name it holds.
    serverName = names === undefined || names.includes(`IP:${LOOPBACK}`)
      ? LOOPBACK
      : names.find((name) => name.startsWith("DNS:"))?.slice(4);
    const server = await ca.issue({ purpose: "server", names });
    caFile = `${dir}/ca.pem`;
    // Copied: the CA's directory goes when `ca` is disposed here.
    await Deno.copyFile(ca.certFile, caFile);
    await Deno.copyFile(server.certFile, `${dir}/server-cert.pem`);
    await Deno.copyFile(server.keyFile, `${dir}/server-key.pem`);
    tlsLines.push(
      `tls-cert-file ${dir}/server-cert.pem`,
      `tls-key-file ${dir}/server-key.pem`,
      `tls-ca-cert-file ${caFile}`,
      "tls-auth-clients no",
    );
  }
  const socketPath = options.unixSocket ? `${dir}/redis.sock` : undefined;
  const auth = options.user !== undefined
    ? { name: options.user.name, password: options.user.password }
    : (options.password === undefined ? undefined : {
      name: "default",
      password: options.password,
    });
  const configFile = `${dir}/redis.conf`;
  const writeConfig = (port: number) =>
    Deno.writeTextFile(
      configFile,
      [
        `bind ${LOOPBACK}`,
        options.tls ? "port 0" : `port ${port}`,
        ...(options.tls ? [`tls-port ${port}`, ...tlsLines] : []),
        ...(socketPath === undefined ? [] : [`unixsocket ${socketPath}`, "unixsocketperm 700"]),
        `dir ${dir}`,
        'save ""',
        "appendonly no",
        "daemonize no",
        'logfile ""',
        "databases 16",
        ...(options.password === undefined ? [] : [`requirepass ${quote(options.password)}`]),
        ...(options.user === undefined ? [] : [
          `user ${quote(options.user.name)} on ${quote(`>${options.user.password}`)} ${
            options.user.rules ?? "~* &* +@all"
          }`,
          "user default off",
        ]),
        ...(options.configLines ?? []),
        "",
      ].join("\n"),
    );
  const connection: RespConnectOptions = { port: 0, caFile, serverName, auth };
  const scheme = options.tls ? "rediss" : "redis";
  const userInfo = options.user !== undefined
    ? `${encodeURIComponent(options.user.name)}:${encodeURIComponent(options.user.password)}@`
    : options.password !== undefined
    ? `:${encodeURIComponent(options.password)}@`
    : "";

  const child = new ChildSlot();
  const launch = async (port: number): Promise<OwnedChild | string> => {
    await writeConfig(port);
    const started = new OwnedChild("redis-server", [configFile]);
    try {
      await pollUntil(`redis-server answers PING on port ${port}`, started, async () => {
        const reply = await respExchange({ ...connection, port }, [["PING"]], 1_000);
        return reply[0] === "PONG" ? true : undefined;
      }, { timeoutMs });
      return started;
    } catch (error) {
      await started.stop();
      const message = error instanceof Error ? error.message : String(error);
      const output = started.output();
      if (/Address already in use/.test(output)) return output;
      throw new Error(message.includes(output) ? message : `${message}\n${output}`);
    }
  };

  let port = 0;
  for (let attempt = 1;; attempt++) {
    port = findFreePort();
    const started = await launch(port);
    if (started instanceof OwnedChild) {
      child.set(started);
      break;
    }
    // Another process may take the port between choosing it and redis-server's bind.
    if (attempt >= 5) throw new Error(`Cannot start redis-server: ${started}`);
  }
  connection.port = port;
  cleanup.move();

  const stop = async () => {
    await child.stop();
    // The socket file stays behind when redis-server is killed; a restart recreates it.
    if (socketPath !== undefined) await Deno.remove(socketPath).catch(() => {});
  };
  return {
    url: `${scheme}://${userInfo}${LOOPBACK}:${port}/0`,
    port,
    socketPath,
    unixUrl: socketPath === undefined ? undefined : `unix:${socketPath}`,
    caFile,
    get pid() {
      if (child.current === undefined) throw new Error("redis-server is stopped");
      return child.current.pid;
    },
    get running() {
      return child.current !== undefined;
    },
    stop,
    async restart() {
      await stop();
      // The same port: a client holding the URL must find the server again there.
      const started = await launch(port);
      if (!(started instanceof OwnedChild)) {
        throw new Error(`Cannot restart redis-server on port ${port}: ${started}`);
      }
      child.set(started);
    },
    async keys() {
      return await readAllKeys(connection);
    },
    async command(...args: string[]) {
      const [reply] = await respExchange(connection, [args], 5_000);
      if (reply instanceof RespError) throw reply;
      return reply;
    },
    async pipeline(...commands: string[][]) {
      const replies = await respExchange(connection, commands, 5_000);
      const error = replies.find((reply) => reply instanceof RespError);
      if (error !== undefined) throw error;
      return replies;
    },
    log() {
      return child.output();
    },
    [Symbol.asyncDispose]: stopThenRemove(stop, dir),
  };
}

/** A redis.conf argument in double quotes, backslash and quote escaped. */
function quote(value: string): string {
  if ([...value].some((c) => c < " " || c === "\x7f")) {
    throw new RangeError("No control characters in redis.conf");
  }
  return `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

// ---------------------------------------------------------------------------------------
// A tiny RESP2 exchange (the test's own, not the product's client)
// ---------------------------------------------------------------------------------------

/** A RESP2 reply: simple and bulk strings (latin1), integers, null, arrays, errors. */
export type RespValue = string | number | null | RespError | RespValue[];

/** An error reply (`-ERR ...`). */
export class RespError extends Error {
  override name = "RespError";
}

interface RespConnectOptions {
  port: number;
  caFile?: string;
  /** The name the server's certificate is checked against (with `caFile`). */
  serverName?: string;
  auth?: { name: string; password: string };
}

/**
 * Connects, authenticates (when `auth` is set), sends `commands` pipelined, reads one reply
 * each and hangs up, all within `timeoutMs`.
 */
async function respExchange(
  options: RespConnectOptions,
  commands: readonly (readonly string[])[],
  timeoutMs: number,
): Promise<RespValue[]> {
  const tcp = await Deno.connect({ hostname: LOOPBACK, port: options.port });
  let conn: Deno.Conn = tcp;
  if (options.caFile !== undefined) {
    try {
      conn = await Deno.startTls(tcp, {
        hostname: options.serverName ?? LOOPBACK,
        caCerts: [await Deno.readTextFile(options.caFile)],
      });
    } catch (error) {
      try {
        tcp.close();
      } catch {
        // Taken over and closed by the failed handshake.
      }
      throw error;
    }
  }
  // Closing the connection makes a pending read or write settle, so the deadline leaks nothing.
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    const all = options.auth === undefined
      ? commands
      : [["AUTH", options.auth.name, options.auth.password], ...commands];
    await writeAll(conn, encodeCommands(all));
    const reader = new RespReader(conn);
    const replies: RespValue[] = [];
    for (let i = 0; i < all.length; i++) replies.push(await reader.read());
    if (options.auth !== undefined) {
      const authReply = replies.shift();
      if (authReply instanceof RespError) throw authReply;
    }
    return replies;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the deadline.
    }
  }
}

/** Arguments are latin1 like replies (one byte per character), so a key read comes back. */
function encodeCommands(commands: readonly (readonly string[])[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const args of commands) {
    parts.push(fromLatin1(`*${args.length}\r\n`));
    for (const arg of args) {
      const bytes = fromLatin1(arg);
      parts.push(fromLatin1(`$${bytes.length}\r\n`), bytes, fromLatin1("\r\n"));
    }
  }
  return concatBytes(parts);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length;) offset += await conn.write(bytes.subarray(offset));
}

/** Reads RESP2 replies from a connection, buffering what it read ahead. */
class RespReader {
  readonly #conn: Deno.Conn;
  #buffer = new Uint8Array(0);
  #total = 0;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async read(): Promise<RespValue> {
    const line = await this.#line();
    const rest = line.slice(1);
    switch (line[0]) {
      case "+":
        return rest;
      case "-":
        return new RespError(rest);
      case ":":
        return Number(rest);
      case "$": {
        const length = Number(rest);
        if (length === -1) return null;
        if (!Number.isInteger(length) || length < 0) throw new SyntaxError(`Bad bulk "${line}"`);
        const bytes = await this.#take(length + 2);
        return latin1(bytes.subarray(0, length));
      }
      case "*": {
        const count = Number(rest);
        if (count === -1) return null;
        if (!Number.isInteger(count) || count < 0) throw new SyntaxError(`Bad array "${line}"`);
        const items: RespValue[] = [];
        for (let i = 0; i < count; i++) items.push(await this.read());
        return items;
      }
      default:
        throw new SyntaxError(`Unexpected RESP line "${line}"`);
    }
  }

  async #line(): Promise<string> {
    for (;;) {
      const end = this.#buffer.findIndex((b, i) => b === 0x0d && this.#buffer[i + 1] === 0x0a);
      if (end !== -1) return latin1(await this.#take(end + 2)).slice(0, -2);
      await this.#fill();
    }
  }

  async #take(n: number): Promise<Uint8Array> {
    while (this.#buffer.length < n) await this.#fill();
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return out;
  }

  async #fill(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("Redis closed the connection");
    this.#total += n;
    if (this.#total > MAX_REPLY_BYTES) throw new RangeError("Redis reply too large");
    const grown = new Uint8Array(this.#buffer.length + n);
    grown.set(this.#buffer);
    grown.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = grown;
  }
}

function fromLatin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff) throw new RangeError("A RESP argument must be latin1 (one byte a character)");
    bytes[i] = code;
  }
  return bytes;
}

function latin1(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += String.fromCharCode(b);
  return out;
}

/** SCAN for every key, then TYPE, PTTL and the value of each. */
async function readAllKeys(connection: RespConnectOptions): Promise<RedisEntry[]> {
  const names: string[] = [];
  let cursor = "0";
  do {
    const [reply] = await respExchange(connection, [["SCAN", cursor, "COUNT", "1000"]], 5_000);
    if (!Array.isArray(reply) || typeof reply[0] !== "string" || !Array.isArray(reply[1])) {
      throw new SyntaxError(`Unexpected SCAN reply ${JSON.stringify(reply)}`);
    }
    cursor = reply[0];
    for (const name of reply[1]) names.push(String(name));
  } while (cursor !== "0");
  const entries: RedisEntry[] = [];
  for (const key of [...new Set(names)].sort()) {
    const [type, ttl] = await respExchange(connection, [["TYPE", key], ["PTTL", key]], 5_000);
    const read = {
      string: ["GET", key],
      hash: ["HGETALL", key],
      list: ["LRANGE", key, "0", "-1"],
      set: ["SMEMBERS", key],
      zset: ["ZRANGE", key, "0", "-1", "WITHSCORES"],
    }[String(type)];
    // Gone (expired) between SCAN and TYPE: "none".
    if (read === undefined) continue;
    const [value] = await respExchange(connection, [read], 5_000);
    if (value instanceof RespError) throw value;
    entries.push({
      key,
      type: String(type),
      ttlMs: Number(ttl),
      values: (Array.isArray(value) ? value : [value]).map((v) => String(v)),
    });
  }
  return entries;
}
