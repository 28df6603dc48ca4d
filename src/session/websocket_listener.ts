/**
 * The one-shot listener of `vnc-ws` and `vnc-wss` forwardings over
 * `Deno.listen` / `Deno.listenTls`: it upgrades one WebSocket on any path
 * (the opening handshake is `../http/websocket_upgrade.ts`) and hands it out
 * as a {@linkcode WebSocketDuplex}, as snf-vncauthproxy's `vnc-ws` did.
 *
 * Every connection is handled on its own, each with a deadline for its
 * request head, so neither an idle TCP connection nor a slow one delays the
 * viewer (snf-vncauthproxy served them one at a time), and neither lives
 * longer than `handshakeTimeoutMs`. At most `maxPendingHandshakes` are in
 * their handshake at once; at the cap the one idle longest is dropped for
 * the newcomer, so a flood of idle connections from the viewer's own
 * address cannot lock the viewer out. The upgraded socket is ours, not an
 * HTTP server's, so the port closes the moment the first viewer wins (a
 * one-time console admits one viewer) without cutting the winner.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import { ConnDuplex, type Duplex, formatHostPort, setNoDelay } from "../io/duplex.ts";
import { startDeadline, withDeadline } from "../io/deadline.ts";
import { acceptWithBackoff } from "../io/accept_with_backoff.ts";
import { type ConnectionSlot, ConnectionSlots } from "../io/connection_slots.ts";
import { bindAll } from "../io/listen_addresses.ts";
import { CLOSE_CODE } from "../io/websocket_frames.ts";
import type { WebSocketDuplex } from "../io/websocket_duplex.ts";
import { encodeErrorResponse, linger, type ResponseHeader } from "../http/http_response.ts";
import {
  DEFAULT_MAX_HEAD_BYTES,
  parseRequestHead,
  pathForLog,
  readRequestHead,
  type RequestHead,
} from "../http/request_head.ts";
import { acceptUpgrade, judgeUpgrade, type UpgradeAccepted } from "../http/websocket_upgrade.ts";
import type { ListenerScheme, OriginPolicy } from "../http/origin_policy.ts";
import type { Logger } from "../log.ts";
import type { ClientListener } from "./tcp_listener.ts";
import type { ViewerGate } from "./viewer_gate.ts";

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
   * Which pages may open the WebSocket (`--allowed-origins`); a refused
   * Origin gets 403 before the upgrade and costs the forwarding nothing.
   * @default {any}
   */
  origins?: OriginPolicy;
  /**
   * Connections in their handshake at once; at the cap the one idle longest
   * is closed to make room. @default {64}
   */
  maxPendingHandshakes?: number;
  /**
   * Decides on each connection as it arrives, before any byte: a refused
   * one is closed and the port goes on listening. @default {any}
   */
  gate?: ViewerGate;
  /** Also speak the `base64` sub-protocol (noVNC < 1.0) when offered. @default {false} */
  base64?: boolean;
}

/** Body of the answer to anything but a WebSocket upgrade. */
const NOT_WEBSOCKET = "This port serves one VNC WebSocket console\n";
const SECOND_CLIENT_REASON = "Only a single connection allowed";
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_PENDING_HANDSHAKES = 64;

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

/** The answer to a request head that does not upgrade, and why (for the log line). */
interface Refusal {
  readonly upgrade: false;
  readonly status: number;
  readonly why: string;
  readonly body?: string;
  readonly headers?: readonly ResponseHeader[];
}

class WebSocketListener implements ClientListener {
  readonly #listeners: Deno.Listener[];
  readonly #logger: Logger;
  readonly #pingIntervalMs: number;
  readonly #origins: OriginPolicy | undefined;
  readonly #base64: boolean;
  readonly #scheme: ListenerScheme;
  readonly #handshakeTimeoutMs: number;
  readonly #maxHeaderBytes: number;
  readonly #gate: ViewerGate | undefined;
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
    this.#origins = options.origins;
    this.#base64 = options.base64 ?? false;
    this.#scheme = options.tls ? "https" : "http";
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEAD_BYTES;
    this.#gate = options.gate;
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
      const verdict = this.#gate?.enter(duplex.remoteAddress);
      if (verdict !== undefined && !verdict.ok) {
        this.#logger.warn(`Refused a client from ${duplex.remoteAddress}: ${verdict.why}`, {
          event: "viewer_refused",
          refusal: verdict.refusal,
        });
        duplex.close();
        continue;
      }
      const slot = this.#handshakes.admit(duplex.remoteAddress, () => duplex.close());
      // Only upgraded sockets hold a slot past their handshake, and the
      // first upgrade closes the port, so a refusal here is a rare race.
      if (slot === undefined) {
        verdict?.pending[Symbol.dispose]();
        duplex.close();
      } else {
        const serving = this.#serveConnection(conn, duplex, slot);
        serving.finally(() => verdict?.pending[Symbol.dispose]());
        this.#track(serving);
      }
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
    const bytes = await readRequestHead(duplex, { maxBytes: this.#maxHeaderBytes, slot });
    const { head, verdict } = judge(bytes, this.#maxHeaderBytes, this.#base64);
    if (!verdict.upgrade) {
      this.#logger.debug(
        `Refused an HTTP request from ${remote}: ${verdict.status} (${verdict.why})`,
      );
      await duplex.write(encodeErrorResponse(verdict.status, {
        headers: verdict.headers,
        body: verdict.body,
        method: head?.method,
      }));
      await linger(conn, duplex, { signal });
      return undefined;
    }
    const origin = this.#origins?.check(head!.headers.get("origin"), this.#scheme);
    if (origin !== undefined && !origin.ok) {
      this.#logger.warn(`Refused a WebSocket from ${remote}: 403 (origin refused: ${origin.why})`);
      await duplex.write(encodeErrorResponse(403, { method: head?.method }));
      await linger(conn, duplex, { signal });
      return undefined;
    }
    this.#logger.debug(`WebSocket upgrade from ${remote} on path ${pathForLog(head!.target)}`);
    // The request is in: this one is no longer a candidate for eviction.
    slot.complete();
    return await acceptUpgrade(duplex, verdict, { pingIntervalMs: this.#pingIntervalMs });
  }
}

/**
 * Decides what to answer what {@linkcode readRequestHead} returned: the
 * upgrade, or a refusal whose body tells a plain HTTP client what this port
 * is for.
 */
function judge(
  bytes: Uint8Array | 400 | 431,
  maxBytes: number,
  base64: boolean,
): { head?: RequestHead; verdict: UpgradeAccepted | Refusal } {
  if (bytes === 431) {
    return { verdict: { upgrade: false, status: 431, why: "request head too long" } };
  }
  if (bytes === 400) {
    return { verdict: { upgrade: false, status: 400, why: "data after the request head" } };
  }
  let head: RequestHead;
  try {
    head = parseRequestHead(bytes, { maxBytes });
  } catch (error) {
    return { verdict: { upgrade: false, status: 400, why: describeError(error) } };
  }
  const verdict = judgeUpgrade(head, { base64 });
  if (verdict.upgrade) return { head, verdict };
  const notWebSocket = verdict.refusal === "method" || verdict.refusal === "not-websocket";
  return { head, verdict: notWebSocket ? { ...verdict, body: NOT_WEBSOCKET } : verdict };
}
