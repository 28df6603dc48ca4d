/**
 * A small Redis client: RESP2 over `Deno.connect` (TCP), `Deno.startTls`
 * (for `rediss://`) or a Unix socket, with only what the token store
 * needs. The product has no npm runtime dependency and JSR is not
 * reachable from where it is built, hence our own.
 *
 * - A pool of a few connections; commands go to the one with the fewest in
 *   flight, and many are in flight per connection (pipelining: replies
 *   come back in order, RESP2 has no ids, so they are matched FIFO).
 * - Each new connection logs in (`AUTH`) and selects its database
 *   (`SELECT`) before it takes commands.
 * - Every command has a deadline. A command that misses it, a reply that
 *   breaks the protocol, or a connection the server closes closes that
 *   connection: the commands in flight on it fail with
 *   {@linkcode RedisUnavailableError}, and it is opened again after a
 *   back-off that doubles from `reconnectMinMs` to `reconnectMaxMs`.
 * - While no connection is up, commands fail at once (nothing is queued).
 * - A `PING` on every connection each `healthCheckIntervalMs` notices a
 *   server that went silent without traffic.
 * - A server's error reply is a {@linkcode RedisError} with the server's
 *   message; no error text holds a command's arguments (they may be
 *   secrets).
 *
 * @module
 */

import { concatBytes } from "../../io/bytes.ts";
import { startDeadline } from "../../io/deadline.ts";
import { sanitizeLogText } from "../../log.ts";
import {
  encodeCommand,
  RespErrorReply,
  type RespLimits,
  RespParser,
  RespProtocolError,
  type RespValue,
} from "./resp.ts";
import { describeRedisUrl, parseRedisUrl, type RedisUrl } from "./redis_url.ts";

/**
 * The server answered a command with an error reply (`-ERR …`). The
 * message is the server's, less the arguments Redis quotes back for an
 * unknown command (`, with args beginning with: …`).
 */
export class RedisError extends Error {
  /** The first word of the server's message (`ERR`, `NOSCRIPT`, `WRONGPASS`, `READONLY`). */
  readonly code: string;
  constructor(reply: RespErrorReply) {
    super(`Redis error: ${serverText(reply.message)}`);
    this.name = "RedisError";
    this.code = reply.code;
  }
}

/** The server could not be reached, did not answer in time, or the client is closed. */
export class RedisUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RedisUnavailableError";
  }
}

/** Options of {@linkcode RedisClient}. */
export interface RedisClientOptions {
  /** The server: a URL (see `redis_url.ts`) or one already parsed. */
  readonly url: string | RedisUrl;
  /**
   * PEM CA certificates to trust for `rediss://`, in addition to the
   * system roots (the daemon reads them from `--redis-ca`). The server's
   * certificate must also be for the URL's host. @default {undefined}
   */
  readonly caCerts?: readonly string[];
  /** Connections in the pool. @default {2} */
  readonly poolSize?: number;
  /** Deadline of each command, and of opening a connection. @default {2000} */
  readonly commandTimeoutMs?: number;
  /** Time between two `PING`s on each connection. @default {1000} */
  readonly healthCheckIntervalMs?: number;
  /** First wait before opening a connection again. @default {100} */
  readonly reconnectMinMs?: number;
  /** Longest wait between two attempts. @default {5000} */
  readonly reconnectMaxMs?: number;
  /** Most commands in flight on one connection; beyond, commands fail. @default {10000} */
  readonly maxInFlight?: number;
  /** Bounds on replies. @default {see RespLimits} */
  readonly limits?: RespLimits;
  /**
   * Called when {@linkcode RedisClient.available} changes, with a reason
   * fit for a log line (no secret) when it became false.
   */
  readonly onStateChange?: (available: boolean, reason: string | undefined) => void;
}

/** One argument of a command. */
export type RedisArg = string | Uint8Array;

interface Pending {
  readonly resolve: (value: RespValue) => void;
  readonly reject: (error: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

const READ_BUFFER_BYTES = 64 * 1024;

/** One open connection: FIFO of commands in flight, a read loop, coalesced writes. */
class Connection {
  readonly #conn: Deno.Conn;
  readonly #parser: RespParser;
  readonly #timeoutMs: number;
  readonly #onClose: (reason: string) => void;
  readonly #pending: Pending[] = [];
  #head = 0;
  #outbox: Uint8Array[] = [];
  #writing = false;
  #closed = false;
  /** Settles when the read loop has ended. */
  readonly done: Promise<void>;

  constructor(
    conn: Deno.Conn,
    options: { timeoutMs: number; limits?: RespLimits; onClose: (reason: string) => void },
  ) {
    this.#conn = conn;
    this.#parser = new RespParser(options.limits);
    this.#timeoutMs = options.timeoutMs;
    this.#onClose = options.onClose;
    this.done = this.#readLoop();
  }

  get inFlight(): number {
    return this.#pending.length - this.#head;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sends one command; its reply (an error reply too), or a rejection when the connection fails. */
  send(args: readonly RedisArg[]): Promise<RespValue> {
    if (this.#closed) return Promise.reject(new RedisUnavailableError("Redis connection closed"));
    const bytes = encodeCommand(args);
    return new Promise<RespValue>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close(`Redis command timed out after ${this.#timeoutMs} ms`);
      }, this.#timeoutMs);
      this.#pending.push({ resolve, reject, timer });
      this.#outbox.push(bytes);
      if (!this.#writing) void this.#flush();
    });
  }

  /** Closes the connection once; every command in flight fails with `reason`. */
  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer's side.
    }
    const pending = this.#pending.splice(this.#head);
    this.#pending.length = 0;
    this.#head = 0;
    this.#outbox = [];
    for (const { reject, timer } of pending) {
      clearTimeout(timer);
      reject(new RedisUnavailableError(reason));
    }
    this.#onClose(reason);
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#outbox.length > 0 && !this.#closed) {
        const batch = this.#outbox;
        this.#outbox = [];
        const bytes = batch.length === 1 ? batch[0]! : concatBytes(batch);
        let written = 0;
        while (written < bytes.length) {
          written += await this.#conn.write(bytes.subarray(written));
        }
      }
    } catch (error) {
      this.close(`Redis connection lost: ${errorText(error)}`);
    } finally {
      this.#writing = false;
    }
  }

  async #readLoop(): Promise<void> {
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    try {
      for (;;) {
        const n = await this.#conn.read(buffer);
        if (n === null) {
          this.close("Redis closed the connection");
          return;
        }
        this.#parser.push(buffer.subarray(0, n));
        for (let reply = this.#parser.next(); reply !== undefined; reply = this.#parser.next()) {
          const pending = this.#pending[this.#head];
          if (pending === undefined) {
            this.close("Redis sent a reply to no command");
            return;
          }
          this.#pending[this.#head++] = undefined as unknown as Pending;
          if (this.#head > 1024 && this.#head * 2 > this.#pending.length) {
            this.#pending.splice(0, this.#head);
            this.#head = 0;
          }
          clearTimeout(pending.timer);
          pending.resolve(reply);
        }
      }
    } catch (error) {
      if (this.#closed) return;
      const reason = error instanceof RespProtocolError
        ? `Redis protocol error: ${error.message}`
        : `Redis connection lost: ${errorText(error)}`;
      this.close(reason);
    }
  }
}

interface Slot {
  connection: Connection | undefined;
  /** Failed attempts since the last success. */
  failures: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The attempt under way, if any. */
  opening: Promise<void> | undefined;
  /** The connection of that attempt while it logs in. */
  candidate: Connection | undefined;
}

/**
 * A pooled, pipelining Redis client (see the module's documentation).
 * Connecting starts at construction; {@linkcode ready} waits for the first
 * attempts. {@linkcode close} leaves no socket, timer or pending promise.
 */
export class RedisClient implements AsyncDisposable {
  readonly #url: RedisUrl;
  readonly #caCerts: string[] | undefined;
  readonly #timeoutMs: number;
  readonly #healthMs: number;
  readonly #minMs: number;
  readonly #maxMs: number;
  readonly #maxInFlight: number;
  readonly #limits: RespLimits | undefined;
  readonly #onStateChange: ((available: boolean, reason: string | undefined) => void) | undefined;
  readonly #slots: Slot[];
  readonly #firstAttempts: Promise<void>;
  #available = false;
  #lastReason = "not connected yet";
  #healthTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #next = 0;

  /**
   * Starts connecting the pool.
   *
   * @throws {SyntaxError} on an invalid URL; {@linkcode RangeError} on an
   * invalid number option.
   */
  constructor(options: RedisClientOptions) {
    this.#url = typeof options.url === "string" ? parseRedisUrl(options.url) : options.url;
    this.#caCerts = options.caCerts === undefined ? undefined : [...options.caCerts];
    const poolSize = options.poolSize ?? 2;
    this.#timeoutMs = positive("command timeout", options.commandTimeoutMs ?? 2_000);
    this.#healthMs = positive("health check interval", options.healthCheckIntervalMs ?? 1_000);
    this.#minMs = positive("reconnect delay", options.reconnectMinMs ?? 100);
    this.#maxMs = Math.max(
      this.#minMs,
      positive("reconnect delay", options.reconnectMaxMs ?? 5_000),
    );
    this.#maxInFlight = positive("in-flight limit", options.maxInFlight ?? 10_000);
    if (!Number.isInteger(poolSize) || poolSize < 1 || poolSize > 64) {
      throw new RangeError(`Invalid Redis pool size "${poolSize}"`);
    }
    this.#limits = options.limits;
    this.#onStateChange = options.onStateChange;
    this.#slots = Array.from({ length: poolSize }, () => ({
      connection: undefined,
      failures: 0,
      timer: undefined,
      opening: undefined,
      candidate: undefined,
    }));
    this.#firstAttempts = Promise.all(this.#slots.map((slot) => this.#open(slot))).then(() => {});
    this.#armHealthCheck();
  }

  /** Whether at least one connection is up (the last known state). */
  get available(): boolean {
    return this.#available && !this.#closed;
  }

  /** The server, for log lines (no password). */
  get description(): string {
    return describeRedisUrl(this.#url);
  }

  /** Resolves when every connection of the pool has made its first attempt, successful or not. */
  ready(): Promise<void> {
    return this.#firstAttempts;
  }

  /**
   * Sends a command and returns its reply.
   *
   * @throws {RedisError} on an error reply of the server.
   * @throws {RedisUnavailableError} when no connection is up, the deadline
   * passed, the connection failed, or the client is closed.
   */
  async command(args: readonly RedisArg[]): Promise<RespValue> {
    if (args.length === 0) throw new TypeError("A Redis command needs a name");
    const connection = this.#pick();
    const reply = await connection.send(args);
    if (reply instanceof RespErrorReply) throw new RedisError(reply);
    return reply;
  }

  /** Closes every connection and stops reconnecting and health checks. Idempotent. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearTimeout(this.#healthTimer);
      this.#healthTimer = undefined;
      for (const slot of this.#slots) {
        clearTimeout(slot.timer);
        slot.timer = undefined;
        slot.connection?.close("Redis client closed");
        slot.candidate?.close("Redis client closed");
      }
      this.#available = false;
    }
    await Promise.all(this.#slots.map((slot) => slot.opening));
    await Promise.all(this.#slots.map((slot) => slot.connection?.done));
  }

  /** Closes the client ({@linkcode close}). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** What `Deno.inspect` shows: the server without password, and the state. */
  [Symbol.for("Deno.customInspect")](): string {
    const state = this.#closed ? "closed" : this.#available ? "available" : "unavailable";
    return `RedisClient { ${describeRedisUrl(this.#url)}, ${state} }`;
  }

  #pick(): Connection {
    if (this.#closed) throw new RedisUnavailableError("Redis client closed");
    let best: Connection | undefined;
    for (let i = 0; i < this.#slots.length; i++) {
      const connection = this.#slots[(this.#next + i) % this.#slots.length]!.connection;
      if (connection === undefined || connection.closed) continue;
      if (best === undefined || connection.inFlight < best.inFlight) best = connection;
    }
    this.#next = (this.#next + 1) % this.#slots.length;
    if (best === undefined) {
      throw new RedisUnavailableError(`Redis unavailable: ${this.#lastReason}`);
    }
    if (best.inFlight >= this.#maxInFlight) {
      throw new RedisUnavailableError("Redis unavailable: too many commands in flight");
    }
    return best;
  }

  /** One attempt to open `slot`'s connection; schedules the next on failure. Never rejects. */
  #open(slot: Slot): Promise<void> {
    const attempt = this.#attempt(slot);
    slot.opening = attempt;
    void attempt.finally(() => {
      if (slot.opening === attempt) slot.opening = undefined;
    });
    return attempt;
  }

  async #attempt(slot: Slot): Promise<void> {
    let conn: Deno.Conn | undefined;
    let connection: Connection | undefined;
    try {
      conn = await this.#dial();
      if (this.#closed) throw new RedisUnavailableError("Redis client closed");
      const opened: Connection = new Connection(conn, {
        timeoutMs: this.#timeoutMs,
        ...(this.#limits === undefined ? {} : { limits: this.#limits }),
        onClose: (reason) => this.#lost(slot, opened, reason),
      });
      connection = opened;
      slot.candidate = opened;
      await this.#logIn(opened);
      if (this.#closed) throw new RedisUnavailableError("Redis client closed");
      slot.connection = opened;
      slot.failures = 0;
      this.#setAvailable(true, undefined);
    } catch (error) {
      this.#lastReason = errorText(error);
      if (connection !== undefined) {
        connection.close(this.#lastReason);
        await connection.done;
      } else {
        try {
          conn?.close();
        } catch {
          // Closed already.
        }
      }
      this.#schedule(slot);
    } finally {
      slot.candidate = undefined;
    }
  }

  /** Opens the socket (and TLS), within the deadline. */
  async #dial(): Promise<Deno.Conn> {
    const url = this.#url;
    if (url.transport === "unix") return await Deno.connect({ transport: "unix", path: url.path });
    using phase = startDeadline(this.#timeoutMs);
    const { signal } = phase;
    // What the deadline closes: the TCP socket, then the TLS connection over it.
    let conn: Deno.Conn | undefined;
    let tls = false;
    const onAbort = () => closeQuietly(conn);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const tcp = await Deno.connect({ hostname: url.hostname, port: url.port, signal });
      conn = tcp;
      if (url.transport === "tcp") return tcp;
      tls = true;
      const tlsConn = await Deno.startTls(tcp, {
        hostname: url.hostname,
        ...(this.#caCerts === undefined ? {} : { caCerts: this.#caCerts }),
      });
      conn = tlsConn;
      // The deadline may have passed while TLS was set up: it closed the TCP socket only.
      signal.throwIfAborted();
      await tlsConn.handshake();
      return tlsConn;
    } catch (error) {
      closeQuietly(conn);
      const what = tls ? "TLS handshake with Redis" : "Connecting to Redis";
      throw new RedisUnavailableError(
        signal.aborted
          ? `${what} timed out after ${this.#timeoutMs} ms`
          : tls
          ? `TLS handshake with Redis failed: ${errorText(error)}`
          : `Cannot connect to Redis: ${errorText(error)}`,
      );
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** AUTH and SELECT, pipelined; a PING when there is neither, so the server is known to speak RESP. */
  async #logIn(connection: Connection): Promise<void> {
    const url = this.#url;
    const steps: Promise<RespValue>[] = [];
    if (url.password !== undefined) {
      steps.push(
        connection.send(
          url.username === undefined
            ? ["AUTH", url.password]
            : ["AUTH", url.username, url.password],
        ),
      );
    }
    if (url.db !== 0) steps.push(connection.send(["SELECT", String(url.db)]));
    if (steps.length === 0) steps.push(connection.send(["PING"]));
    const replies = await Promise.all(steps);
    for (const reply of replies) {
      if (reply instanceof RespErrorReply) {
        throw new RedisUnavailableError(`Redis refused the login: ${serverText(reply.message)}`);
      }
    }
  }

  #lost(slot: Slot, connection: Connection, reason: string): void {
    if (slot.connection !== connection) return;
    slot.connection = undefined;
    this.#lastReason = reason;
    if (this.#slots.every((s) => s.connection === undefined)) this.#setAvailable(false, reason);
    this.#schedule(slot);
  }

  #schedule(slot: Slot): void {
    if (this.#closed || slot.timer !== undefined) return;
    if (this.#slots.every((s) => s.connection === undefined)) {
      this.#setAvailable(false, this.#lastReason);
    }
    const delay = Math.min(this.#maxMs, this.#minMs * 2 ** Math.min(slot.failures, 30));
    slot.failures++;
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (!this.#closed) void this.#open(slot);
    }, delay);
  }

  #setAvailable(available: boolean, reason: string | undefined): void {
    if (available === this.#available) return;
    this.#available = available;
    if (this.#closed) return;
    try {
      this.#onStateChange?.(available, reason);
    } catch {
      // A logging hook must not break the client.
    }
  }

  #armHealthCheck(): void {
    if (this.#closed) return;
    this.#healthTimer = setTimeout(() => {
      this.#healthTimer = undefined;
      for (const slot of this.#slots) {
        const connection = slot.connection;
        if (connection === undefined || connection.closed) continue;
        connection.send(["PING"]).then(
          (reply) => {
            if (reply !== "PONG") connection.close("Redis answered PING wrongly");
          },
          // A failed PING has closed its connection already.
          () => {},
        );
      }
      this.#armHealthCheck();
    }, this.#healthMs);
  }
}

function positive(what: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`Invalid Redis ${what} "${value}"`);
  }
  return value;
}

/** A server's or the system's message, one line, bounded. */
function boundedText(text: string): string {
  const line = sanitizeLogText(text);
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** A server's error message without the arguments it may quote back. */
function serverText(message: string): string {
  return boundedText(message.replace(/,? with args beginning with:.*$/s, ""));
}

function errorText(error: unknown): string {
  return boundedText(error instanceof Error ? error.message : String(error));
}

/** Closes `conn` if there is one and it is still open. */
function closeQuietly(conn: Deno.Conn | undefined): void {
  try {
    conn?.close();
  } catch {
    // Closed already.
  }
}
