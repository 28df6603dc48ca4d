/**
 * A `Duplex` over a server-side WebSocket, bounded both ways: what the viewer
 * sends waits in a capped queue until the RFB code reads it, and writes to a
 * slow browser wait on `bufferedAmount` (DESIGN §5, STYLE "Bounded buffers").
 *
 * @module
 */

import type { Duplex } from "./duplex.ts";

/** Default cap on bytes received from the viewer and not yet read. */
export const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** Default cap on bytes sent to the viewer and not yet on the wire. */
export const DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/**
 * How long a local close waits for the viewer's closing handshake
 * (RFC 6455 §7.1.1) before `onClose` runs anyway.
 */
export const CLOSE_GRACE_MS = 2_000;

/**
 * A blocked write looks at `bufferedAmount` again after this many
 * milliseconds, doubling from the first to the last value while the browser
 * stays slow: a fast browser costs no fixed sleep per megabyte, a stalled
 * one costs almost no CPU.
 */
const DRAIN_POLL_MS = [0, 1, 2, 4, 8, 16] as const;
/** RFC 6455 §7.4.1: the message is too big to process. */
const CLOSE_TOO_BIG = 1009;
const CLOSE_NORMAL = 1000;

/** Options of {@linkcode WebSocketDuplex}. */
export interface WebSocketDuplexOptions {
  /** The viewer's address for log lines. @default {"unknown"} */
  remoteAddress?: string;
  /**
   * Received bytes held until read; more closes the socket with 1009.
   * @default {DEFAULT_MAX_QUEUED_BYTES}
   */
  maxQueuedBytes?: number;
  /**
   * `bufferedAmount` above which a write waits for the browser to catch up.
   * @default {DEFAULT_MAX_BUFFERED_BYTES}
   */
  maxBufferedBytes?: number;
  /**
   * Runs once when the socket is closed, by either side (after the closing
   * handshake, or {@linkcode CLOSE_GRACE_MS} after a local close at most).
   * The listener uses it to stop the HTTP server that carried the socket.
   * {@linkcode WebSocketDuplex.closed} waits for it.
   */
  onClose?: () => void | Promise<void>;
}

/** The code and reason of the viewer's close frame. */
export interface WebSocketCloseInfo {
  /** Close code (1005 when the frame had none). */
  readonly code: number;
  /** Close reason, possibly empty. */
  readonly reason: string;
}

const encoder = new TextEncoder();

function closedError(): Deno.errors.BadResource {
  return new Deno.errors.BadResource("WebSocket is closed");
}

/**
 * A `Duplex` over a server-side `WebSocket`.
 *
 * Binary and text messages from the viewer are both taken as raw bytes (text
 * as its UTF-8 encoding; snf-vncauthproxy did the same, peers.md §1.10);
 * every write goes out as one binary message.
 *
 * Keepalive is not done here: `Deno.upgradeWebSocket`'s `idleTimeout` pings
 * and drops a silent viewer, and the listener sets it from
 * `--ws-ping-interval` (see `websocket_listener.ts`).
 */
export class WebSocketDuplex implements Duplex {
  readonly #socket: WebSocket;
  readonly #maxQueuedBytes: number;
  readonly #maxBufferedBytes: number;
  readonly #onClose: (() => void | Promise<void>) | undefined;
  readonly #queue: Uint8Array[] = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #readWaiters: (() => void)[] = [];
  readonly #timers = new Set<() => void>();
  /** Set on a local close, the peer's close, or an overflow. */
  #closed = false;
  #error: Error | undefined;
  #peerClose: WebSocketCloseInfo | undefined;
  readonly #socketClosed = Promise.withResolvers<void>();
  #finishing: Promise<void> | undefined;
  /** The peer's address as `host:port`. */
  readonly remoteAddress: string;

  /**
   * Wraps `socket` (open, or still connecting); the duplex owns it from now
   * on and sets its `binaryType` to `"arraybuffer"`.
   */
  constructor(socket: WebSocket, options: WebSocketDuplexOptions = {}) {
    this.#socket = socket;
    this.#maxQueuedBytes = options.maxQueuedBytes ??
      DEFAULT_MAX_QUEUED_BYTES;
    this.#maxBufferedBytes = options.maxBufferedBytes ??
      DEFAULT_MAX_BUFFERED_BYTES;
    this.#onClose = options.onClose;
    this.remoteAddress = options.remoteAddress ?? "unknown";
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => this.#onMessage(event));
    socket.addEventListener("close", (event) => this.#onSocketClose(event));
    if (socket.readyState === WebSocket.CLOSED) {
      this.#onSocketClose(new CloseEvent("close", { code: 1006 }));
    }
  }

  /**
   * Bytes held for this connection: received and unread, plus sent and not
   * yet on the wire. Stays near the two bounds whatever the peers do.
   */
  get bufferedBytes(): number {
    return this.#queuedBytes + this.#socket.bufferedAmount;
  }

  /** The viewer's close frame, once it has closed the connection. */
  get peerClose(): WebSocketCloseInfo | undefined {
    return this.#peerClose;
  }

  /**
   * Resolves once the socket is closed and `onClose` has run; never rejects.
   * Only settles after a close (by either side), so await it after `close()`.
   */
  get closed(): Promise<void> {
    return this.#socketClosed.promise.then(() => this.#finishing);
  }

  /**
   * Reads at most `buffer.length` queued bytes, waiting when none are
   * queued. Bytes that do not fit stay queued for the next read. Resolves to
   * `null` at end of stream: after the viewer's close once the queue is
   * empty, or at once after a local `close()`. Rejects after an overflow.
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#error) throw this.#error;
      if (this.#queuedBytes > 0) return this.#take(buffer);
      if (this.#closed) return null;
      if (buffer.length === 0) return 0;
      await new Promise<void>((resolve) => this.#readWaiters.push(resolve));
    }
  }

  /**
   * Sends `data` as one binary message, then waits while the socket holds
   * more than `maxBufferedBytes` unsent, so a slow browser slows the relay
   * instead of growing memory. `send()` copies the bytes (WHATWG WebSockets
   * §"send()"), so the caller may reuse `data` once this resolves (or even
   * before). Rejects with `Deno.errors.BadResource` once closed.
   */
  async write(data: Uint8Array): Promise<void> {
    if (this.#socket.readyState === WebSocket.CONNECTING) await this.#opened();
    if (this.#closed || this.#socket.readyState !== WebSocket.OPEN) {
      throw closedError();
    }
    if (data.length === 0) return;
    this.#socket.send(data);
    // Deno has no "drain" event: look again every few milliseconds.
    let polls = 0;
    while (this.#socket.bufferedAmount > this.#maxBufferedBytes) {
      await this.#sleep(DRAIN_POLL_MS[Math.min(polls++, DRAIN_POLL_MS.length - 1)]!);
      if (this.#closed) throw closedError();
    }
  }

  /**
   * Closes the WebSocket with `code` and `reason` (RFC 6455 §7.4) once;
   * later calls do nothing. Unread bytes are dropped, pending reads resolve
   * to `null` and pending writes reject.
   */
  close(code: number = CLOSE_NORMAL, reason = ""): void {
    if (this.#closed) return;
    this.#shutDown(code, reason);
    this.#dropQueue();
  }

  #onMessage(event: MessageEvent): void {
    if (this.#closed) return;
    const data: unknown = event.data;
    const bytes = typeof data === "string"
      ? encoder.encode(data)
      : data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : undefined;
    if (bytes === undefined || bytes.length === 0) return;
    if (this.#queuedBytes + bytes.length > this.#maxQueuedBytes) {
      this.#error = new RangeError(
        `WebSocket receive queue is full (more than ${this.#maxQueuedBytes} bytes unread)`,
      );
      this.#dropQueue();
      this.#shutDown(CLOSE_TOO_BIG, "Receive queue full");
      return;
    }
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.length;
    this.#wakeReaders();
  }

  #onSocketClose(event: CloseEvent): void {
    // Deno can fire "close" twice (e.g. after an idle timeout); once is enough.
    if (this.#peerClose === undefined && !this.#closed) {
      this.#peerClose = { code: event.code, reason: event.reason };
    }
    this.#closed = true;
    this.#socketClosed.resolve();
    this.#wakeReaders();
    this.#wakeTimers();
    this.#finish();
  }

  /** Marks the duplex closed, starts the closing handshake, wakes waiters. */
  #shutDown(code: number, reason: string): void {
    this.#closed = true;
    try {
      this.#socket.close(code, reason);
    } catch {
      // Already closing, or closed by the runtime: nothing more to send.
    }
    this.#wakeReaders();
    this.#wakeTimers();
    this.#finish();
  }

  /** Runs `onClose` once, after the socket closed or the grace time. */
  #finish(): void {
    this.#finishing ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_GRACE_MS);
      });
      try {
        await Promise.race([this.#socketClosed.promise, grace]);
      } finally {
        clearTimeout(timer);
      }
      this.#socketClosed.resolve();
      try {
        await this.#onClose?.();
      } catch {
        // A failing cleanup hook must not make `closed` reject.
      }
    })();
  }

  #take(buffer: Uint8Array): number {
    let copied = 0;
    while (copied < buffer.length && this.#queue.length > 0) {
      const chunk = this.#queue[0]!;
      const available = chunk.length - this.#queueHead;
      const n = Math.min(available, buffer.length - copied);
      buffer.set(
        chunk.subarray(this.#queueHead, this.#queueHead + n),
        copied,
      );
      copied += n;
      if (n === available) {
        this.#queue.shift();
        this.#queueHead = 0;
      } else {
        this.#queueHead += n;
      }
    }
    this.#queuedBytes -= copied;
    return copied;
  }

  #dropQueue(): void {
    this.#queue.length = 0;
    this.#queueHead = 0;
    this.#queuedBytes = 0;
  }

  #wakeReaders(): void {
    const waiters = this.#readWaiters;
    this.#readWaiters = [];
    for (const wake of waiters) wake();
  }

  /** A pause that `close()` and the socket's close end early. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#timers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#timers.add(done);
    });
  }

  #wakeTimers(): void {
    for (const done of [...this.#timers]) done();
  }

  #opened(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.#socket.removeEventListener("open", done);
        this.#socket.removeEventListener("close", done);
        resolve();
      };
      this.#socket.addEventListener("open", done);
      this.#socket.addEventListener("close", done);
    });
  }
}
