/**
 * The one-shot listener of `vnc-ws` and `vnc-wss` forwardings, with our own
 * RFC 6455 opening handshake over `Deno.listen` / `Deno.listenTls`: it
 * upgrades one WebSocket on any path and hands it out as a
 * {@linkcode WebSocketDuplex} (DESIGN §5, peers.md §1.10).
 *
 * Every connection is handled on its own, each with a deadline for its
 * request head, so neither an idle TCP connection nor a slow one delays the
 * viewer (snf-vncauthproxy serialized them, peers.md W16), and neither
 * lives longer than `handshakeTimeoutMs`. At most `maxPendingHandshakes`
 * are in their handshake at once; at the cap the one idle longest is
 * dropped for the newcomer, so a flood of idle connections from the
 * viewer's own address cannot lock the viewer out. The upgraded socket is
 * ours, not an HTTP server's, so the port closes the moment the first
 * viewer wins (DESIGN §4.5) without cutting the winner.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import { ConnDuplex, type Duplex, formatHostPort, setNoDelay } from "../io/duplex.ts";
import { startDeadline, withDeadline } from "../io/deadline.ts";
import { acceptWithBackoff } from "../io/accept_with_backoff.ts";
import { type ConnectionSlot, ConnectionSlots } from "../io/connection_slots.ts";
import { bindAll } from "../io/listen_addresses.ts";
import {
  CLOSE_CODE,
  computeAcceptKey,
  DEFAULT_MAX_HEAD_BYTES,
  findHeadEnd,
  headerTokens,
  parseRequestHead,
  type RequestHead,
} from "../io/websocket_frames.ts";
import { WebSocketDuplex } from "../io/websocket_duplex.ts";
import type { Logger } from "../log.ts";
import type { ClientListener } from "./client_listener.ts";

/** Options of {@linkcode openWebSocketListener}. */
export interface WebSocketListenerOptions {
  /** Certificate and key (PEM) for `vnc-wss`; plain `ws` without. */
  tls?: { cert: string; key: string };
  /** The forwarding's logger. */
  logger: Logger;
  /** See `WebSocketDuplexOptions.pingIntervalMs`. @default {0} */
  pingIntervalMs?: number;
  /**
   * Time a connection has to send its request head (and, for `wss`, finish
   * the TLS handshake) and take the response. @default {10000}
   */
  handshakeTimeoutMs?: number;
  /** Longest request head accepted; longer gets 431. @default {8192} */
  maxHeaderBytes?: number;
  /** Ends the resolution of a host name in `address`. */
  signal?: AbortSignal;
  /**
   * Connections in their handshake at once; at the cap the one idle longest
   * is closed to make room. @default {64}
   */
  maxPendingHandshakes?: number;
}

/** Body of the answer to anything but a WebSocket upgrade. */
const NOT_WEBSOCKET = "This port serves one VNC WebSocket console\n";
const SECOND_CLIENT_REASON = "Only a single connection allowed";
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** RFC 6455 §4.2.1: the key is 16 random bytes in base64. */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;
/** Longest request path put in a log line. */
const MAX_LOGGED_PATH = 100;
/** After an error response, how long to read what the client still sends. */
const LINGER_MS = 1_000;
/** ...and how much of it. */
const MAX_LINGER_BYTES = 64 * 1024;
const DEFAULT_MAX_PENDING_HANDSHAKES = 64;

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  405: "Method Not Allowed",
  426: "Upgrade Required",
  431: "Request Header Fields Too Large",
  505: "HTTP Version Not Supported",
};

const encoder = new TextEncoder();

/**
 * Opens a WebSocket listener (TLS with `options.tls`) on every address of
 * `address` at `port` (0 picks a free port, shown in `addresses`). The first
 * WebSocket upgrade wins and every listening socket closes at once; a
 * connection that completes an upgrade after that gets a 101 and then
 * close code 1001 "Only a single connection allowed", as with
 * snf-vncauthproxy. Other requests get a short 4xx.
 *
 * @throws {Deno.errors.AddrInUse} when the port is taken (nothing stays open).
 */
export async function openWebSocketListener(
  address: string,
  port: number,
  options: WebSocketListenerOptions,
): Promise<ClientListener> {
  const { tls } = options;
  let chosenPort = port;
  const listeners = await bindAll(address, port, (hostname): Deno.Listener => {
    const listener = tls
      ? Deno.listenTls({ hostname, port: chosenPort, cert: tls.cert, key: tls.key })
      : Deno.listen({ hostname, port: chosenPort, transport: "tcp" });
    // Port 0: bind the other addresses of a host name at the same port.
    chosenPort = (listener.addr as Deno.NetAddr).port;
    return listener;
  }, options.signal ? { signal: options.signal } : {});
  return new WebSocketListener(listeners, options);
}

/** What the validation of a request head decided. */
type Verdict =
  | { readonly upgrade: true; readonly key: string; readonly protocol?: string }
  | {
    readonly upgrade: false;
    readonly status: number;
    readonly why: string;
    readonly body?: string;
    readonly headers?: readonly [string, string][];
  };

class WebSocketListener implements ClientListener {
  readonly #listeners: Deno.Listener[];
  readonly #logger: Logger;
  readonly #pingIntervalMs: number;
  readonly #handshakeTimeoutMs: number;
  readonly #maxHeaderBytes: number;
  /** Connections in their opening handshake; each slot is released when it ends. */
  readonly #handshakes: ConnectionSlots;
  #state: "listening" | "won" | "closed" = "listening";
  #listening = true;
  /** Aborted by `close()`: ends handshakes in flight and accept pauses. */
  readonly #closing = new AbortController();
  /** Accept loops and handshakes in flight; none ever rejects. */
  readonly #tasks = new Set<Promise<void>>();
  readonly #won = Promise.withResolvers<WebSocketDuplex>();
  readonly #closedSignal = Promise.withResolvers<never>();
  #winner: WebSocketDuplex | undefined;
  #handedOut = false;
  #closed: Promise<void> | undefined;
  readonly addresses: readonly string[];

  constructor(listeners: Deno.Listener[], options: WebSocketListenerOptions) {
    this.#listeners = listeners;
    this.#logger = options.logger;
    this.#pingIntervalMs = options.pingIntervalMs ?? 0;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEAD_BYTES;
    this.#handshakes = new ConnectionSlots({
      capacity: options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES,
      logger: options.logger,
      what: "WebSocket handshake",
    });
    this.addresses = listeners.map((listener) => {
      const addr = listener.addr as Deno.NetAddr;
      return formatHostPort(addr.hostname, addr.port);
    });
    // acceptOne may never be called; its rejection is only for it.
    this.#closedSignal.promise.catch(() => {});
    for (const listener of listeners) this.#track(this.#acceptLoop(listener));
  }

  async acceptOne(signal: AbortSignal): Promise<WebSocketDuplex> {
    signal.throwIfAborted();
    const aborted = Promise.withResolvers<never>();
    const onAbort = () => aborted.reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const winner = await Promise.race([
        this.#won.promise,
        this.#closedSignal.promise,
        aborted.promise,
      ]);
      this.#handedOut = true;
      return winner;
    } catch (error) {
      if (signal.aborted) {
        await this.close();
        throw signal.reason;
      }
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Stops listening, frees the port and ends handshakes in flight;
   * idempotent. A winner already handed out by `acceptOne()` is the
   * caller's to close; one not yet handed out is closed with 1001.
   */
  close(): Promise<void> {
    this.#closed ??= this.#closeAll();
    return this.#closed;
  }

  async #closeAll(): Promise<void> {
    this.#state = "closed";
    this.#stopListening();
    const reason = new Deno.errors.BadResource("WebSocket listener is closed");
    this.#closing.abort(reason);
    this.#closedSignal.reject(reason);
    const unclaimed = this.#handedOut ? undefined : this.#winner;
    unclaimed?.close(CLOSE_CODE.goingAway, "Server going away");
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
    await unclaimed?.closed;
  }

  /** Closes every listening socket once: the port is free from here on. */
  #stopListening(): void {
    if (!this.#listening) return;
    this.#listening = false;
    for (const listener of this.#listeners) {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    }
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    const done = () => void this.#tasks.delete(task);
    task.then(done, done);
  }

  /** Accepts until the listener closes, each connection handled on its own. */
  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    const options = { signal: this.#closing.signal, logger: this.#logger, what: "WebSocket" };
    for (let conn; (conn = await acceptWithBackoff(listener, options)) !== undefined;) {
      const duplex = new ConnDuplex(conn);
      const slot = this.#handshakes.admit(duplex.remoteAddress, () => duplex.close());
      // Only upgraded sockets hold a slot past their handshake, and the
      // first upgrade closes the port, so a refusal here is a rare race.
      if (slot === undefined) duplex.close();
      else this.#track(this.#serveConnection(conn, duplex, slot));
    }
  }

  /** Runs the opening handshake on `conn`; the first upgrade wins. */
  async #serveConnection(conn: Deno.Conn, duplex: Duplex, slot: ConnectionSlot): Promise<void> {
    setNoDelay(conn);
    const remote = duplex.remoteAddress;
    let socket: WebSocketDuplex | undefined;
    try {
      using _held = slot;
      using phase = startDeadline(this.#handshakeTimeoutMs, this.#closing.signal);
      socket = await withDeadline(
        duplex,
        phase.signal,
        () => this.#handshake(conn, duplex, { signal: phase.signal, slot }),
      );
    } catch (error) {
      // An evicted connection was logged by the slots.
      if (!slot.evicted) {
        this.#logger.debug(`WebSocket handshake with ${remote} failed: ${describeError(error)}`);
      }
    } finally {
      if (socket === undefined) duplex.close();
    }
    if (socket === undefined) return;
    if (this.#state === "closed") {
      socket.close(CLOSE_CODE.goingAway, "Server going away");
      await socket.closed;
      return;
    }
    if (this.#state === "won") {
      // snf-vncauthproxy's answer to every WebSocket after the first.
      this.#logger.info(
        `Refused a second WebSocket client from ${remote}: only a single connection allowed`,
      );
      socket.close(CLOSE_CODE.goingAway, SECOND_CLIENT_REASON);
      await socket.closed;
      return;
    }
    // The first client wins: free the port before anything else.
    this.#state = "won";
    this.#stopListening();
    this.#winner = socket;
    this.#won.resolve(socket);
  }

  /**
   * Reads the request head, answers it, and returns the WebSocket after a
   * 101, or `undefined` after an error response.
   */
  async #handshake(
    conn: Deno.Conn,
    duplex: Duplex,
    phase: { signal: AbortSignal; slot: ConnectionSlot },
  ): Promise<WebSocketDuplex | undefined> {
    const { signal, slot } = phase;
    const remote = duplex.remoteAddress;
    const bytes = await this.#readHead(duplex, slot);
    let verdict: Verdict;
    let head: RequestHead | undefined;
    if (typeof bytes === "number") {
      verdict = bytes === 431
        ? { upgrade: false, status: 431, why: "request head too long" }
        : { upgrade: false, status: 400, why: "data after the request head" };
    } else {
      try {
        head = parseRequestHead(bytes, { maxBytes: this.#maxHeaderBytes });
        verdict = judge(head);
      } catch (error) {
        verdict = { upgrade: false, status: 400, why: describeError(error) };
      }
    }
    if (!verdict.upgrade) {
      this.#logger.debug(
        `Refused an HTTP request from ${remote}: ${verdict.status} (${verdict.why})`,
      );
      await duplex.write(errorResponse(verdict, head?.method === "HEAD"));
      await linger(conn, duplex, signal);
      return undefined;
    }
    this.#logger.debug(`WebSocket upgrade from ${remote} on path ${logPath(head!.target)}`);
    // The request is in: this one is no longer a candidate for eviction.
    slot.complete();
    const lines = [
      "HTTP/1.1 101 Switching Protocols",
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Accept: ${computeAcceptKey(verdict.key)}`,
      ...(verdict.protocol ? [`Sec-WebSocket-Protocol: ${verdict.protocol}`] : []),
    ];
    await duplex.write(encoder.encode(`${lines.join("\r\n")}\r\n\r\n`));
    return new WebSocketDuplex(duplex, { pingIntervalMs: this.#pingIntervalMs });
  }

  /**
   * Reads up to the blank line ending the request head, within
   * `maxHeaderBytes`; 431 when it does not fit, 400 when bytes follow it
   * (RFC 6455 §4.1: a client sends nothing more before the 101). Every
   * read touches `slot`: a client still sending is not the idle one.
   */
  async #readHead(duplex: Duplex, slot: ConnectionSlot): Promise<Uint8Array | 400 | 431> {
    const buffer = new Uint8Array(this.#maxHeaderBytes);
    let filled = 0;
    while (filled < buffer.length) {
      const n = await duplex.read(buffer.subarray(filled));
      slot.touch();
      if (n === null) throw new Error("Connection closed before a complete request head");
      const end = findHeadEnd(buffer.subarray(0, filled + n), filled);
      filled += n;
      if (end >= 0) return end === filled ? buffer.subarray(0, end) : 400;
    }
    return 431;
  }
}

/** Decides what to answer a well-formed request head (RFC 6455 §4.2.1). */
function judge(head: RequestHead): Verdict {
  const { headers } = head;
  if (head.method !== "GET") {
    return {
      upgrade: false,
      status: 405,
      why: `method ${head.method}`,
      body: NOT_WEBSOCKET,
      headers: [["Allow", "GET"]],
    };
  }
  if (head.version !== "HTTP/1.1") {
    return head.version.startsWith("HTTP/1.")
      ? { upgrade: false, status: 400, why: `${head.version} request` }
      : { upgrade: false, status: 505, why: `${head.version} request` };
  }
  const upgrade = headerTokens(headers.get("upgrade")).map((token) => token.toLowerCase());
  if (!upgrade.includes("websocket")) {
    return { upgrade: false, status: 400, why: "not a WebSocket upgrade", body: NOT_WEBSOCKET };
  }
  const connection = headerTokens(headers.get("connection")).map((token) => token.toLowerCase());
  if (!connection.includes("upgrade")) {
    return { upgrade: false, status: 400, why: "no Connection: upgrade" };
  }
  if (headers.get("sec-websocket-version") !== "13") {
    // RFC 6455 §4.4: name the version this server speaks.
    return {
      upgrade: false,
      status: 426,
      why: "unsupported WebSocket version",
      headers: [["Upgrade", "websocket"], ["Sec-WebSocket-Version", "13"]],
    };
  }
  const key = headers.get("sec-websocket-key") ?? "";
  if (!WEBSOCKET_KEY.test(key)) return { upgrade: false, status: 400, why: "bad WebSocket key" };
  // Only "binary" is spoken; any other offer (or none) still connects, with
  // no Sec-WebSocket-Protocol in the answer (snf-vncauthproxy did so).
  const offersBinary = headerTokens(headers.get("sec-websocket-protocol")).includes("binary");
  return offersBinary ? { upgrade: true, key, protocol: "binary" } : { upgrade: true, key };
}

/** An HTTP/1.1 error response that closes the connection. */
function errorResponse(
  verdict: Extract<Verdict, { upgrade: false }>,
  isHead: boolean,
): Uint8Array {
  const body = encoder.encode(verdict.body ?? `${STATUS_TEXT[verdict.status]}\n`);
  const lines = [
    `HTTP/1.1 ${verdict.status} ${STATUS_TEXT[verdict.status]}`,
    "Content-Type: text/plain; charset=utf-8",
    `Content-Length: ${body.length}`,
    "Connection: close",
    ...(verdict.headers ?? []).map(([name, value]) => `${name}: ${value}`),
  ];
  const head = encoder.encode(`${lines.join("\r\n")}\r\n\r\n`);
  if (isHead) return head;
  const response = new Uint8Array(head.length + body.length);
  response.set(head);
  response.set(body, head.length);
  return response;
}

/**
 * After an error response: stop writing, then read (and drop) what the
 * client still sends for a short while, so closing with unread input does
 * not reset the connection before the client has read the response.
 */
async function linger(conn: Deno.Conn, duplex: Duplex, signal: AbortSignal): Promise<void> {
  try {
    await conn.closeWrite();
    using phase = startDeadline(LINGER_MS, signal);
    await withDeadline(duplex, phase.signal, async () => {
      const sink = new Uint8Array(4096);
      let total = 0;
      while (total < MAX_LINGER_BYTES) {
        const n = await duplex.read(sink);
        if (n === null) return;
        total += n;
      }
    });
  } catch {
    // The response is out; whatever happens now, the connection closes.
  }
}

/** The request path for a log line: never the query, which may hold a token. */
function logPath(target: string): string {
  let path = target;
  if (!path.startsWith("/")) {
    try {
      path = new URL(path).pathname;
    } catch {
      path = "(unparsed target)";
    }
  }
  path = path.split(/[?#]/, 1)[0]!;
  return path.length > MAX_LOGGED_PATH ? `${path.slice(0, MAX_LOGGED_PATH)}...` : path;
}
