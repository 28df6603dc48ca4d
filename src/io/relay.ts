/**
 * The relay: bytes both ways between viewer and VNC server until either
 * side ends, then both are closed (Deno streams cannot half-close, and VNC
 * has no use for it). This is the hot path.
 *
 * Each direction reads with plain `read`/`write` calls (faster than
 * `pipeTo` here). An idle direction waits on its own tiny buffer
 * ({@linkcode IDLE_RELAY_BUFFER} bytes, enough for any input event), so
 * thousands of idle sessions hold little more than Deno's own cost of a
 * pending read. When a read fills the buffer (a framebuffer update in
 * bulk), the direction borrows a larger buffer from the pool, sixteen
 * times larger at each full read ({@linkcode FIRST_BULK_BUFFER}, 256 KiB,
 * then {@linkcode MAX_RELAY_BUFFER}), or what the pool grants while many
 * sessions stream at once (a crowd's size, or a fair share); after a short
 * read it gives it back and waits on its tiny buffer again, and the next
 * bulk jumps straight back to the size it reached before. Backpressure is
 * natural: nothing is read until the previous chunk has been written.
 *
 * An idle session costs few objects: one suspended pump per direction and
 * one state object, with no closure, timer or listener of its own.
 *
 * @module
 */

import { BufferPool } from "./buffer_pool.ts";
import type { Duplex } from "./duplex.ts";

/** Buffer an idle direction waits on, in bytes. */
export const IDLE_RELAY_BUFFER = 256;
/** First bulk buffer borrowed when an idle direction fills its buffer. */
export const FIRST_BULK_BUFFER = 16 * 1024;
/** Largest relay buffer, in bytes. */
export const MAX_RELAY_BUFFER = 1024 * 1024;
/**
 * How much larger the next buffer is after a full read. Few steps mean few
 * allocations: a crowd's first burst allocated 784 MB for 1,000 MiB relayed
 * through the 16 KiB, 64 KiB, 256 KiB, 1 MiB steps of growing by four, and
 * about 250 MB through 16 KiB, 256 KiB (bench, 1,000 sessions).
 */
const GROWTH = 16;

/** What a finished relay reports. */
export interface RelayResult {
  /** Bytes from `a` to `b`. */
  readonly aToB: number;
  /** Bytes from `b` to `a`. */
  readonly bToA: number;
  /**
   * What ended it: side `a` or `b`, the signal (`aborted`), no bytes for
   * `idleTimeoutMs` (`idle`), or `maxDurationMs` reached (`max-time`).
   */
  readonly endedBy: "a" | "b" | "aborted" | "idle" | "max-time";
  /** The error that ended it, if a side failed rather than closed. */
  readonly error?: unknown;
}

/** Live byte counters of a running relay, for metrics and logs. */
export interface RelayCounters {
  /** Bytes from `a` to `b` so far. */
  aToB: number;
  /** Bytes from `b` to `a` so far. */
  bToA: number;
}

/** Options of {@linkcode relay}. */
export interface RelayOptions {
  /** Ends the relay (closing both sides) when aborted. */
  readonly signal?: AbortSignal;
  /** Counters updated as bytes flow. @default {a fresh object} */
  readonly counters?: RelayCounters;
  /**
   * Where bulk buffers come from; the daemon shares one among all
   * sessions. @default {a pool of this relay's own}
   */
  readonly pool?: BufferPool;
  /**
   * End after this long without a byte either way; 0 never does. Checked a
   * few times per period, so the end comes between 1 and 1.25 periods
   * after the last byte. @default {0}
   */
  readonly idleTimeoutMs?: number;
  /** End this long after the start, whatever flows; 0 never does. @default {0} */
  readonly maxDurationMs?: number;
}

/** Bytes of a cache line: reads land at a multiple of it. */
const CACHE_LINE = 64;

/** `n` rounded up to a multiple of `step`. */
function alignUp(n: number, step: number): number {
  return Math.ceil(n / step) * step;
}

/** Idle checks per idle period (so an idle end is at most 1/4 period late). */
const IDLE_CHECKS_PER_PERIOD = 4;

/**
 * Copies both ways between `a` and `b` until one side ends or fails, or
 * `signal` aborts; then closes both and waits for both directions to stop.
 * Never rejects: the outcome is in the result.
 */
export function relay(a: Duplex, b: Duplex, options: RelayOptions = {}): Promise<RelayResult> {
  const state = new RelayState(a, b, options);
  const pool = options.pool ?? new BufferPool();
  pump(a, b, pool, state, "a");
  pump(b, a, pool, state, "b");
  return state.finished;
}

/**
 * One relay's state: who ended it, its counters, and the promise of its
 * result once both directions have stopped. Ends the relay exactly once.
 * It is also the signal's abort listener (`handleEvent`), so a session
 * holds no closure, `Promise.all` or suspended `relay()` call of its own.
 */
class RelayState implements EventListenerObject {
  readonly #a: Duplex;
  readonly #b: Duplex;
  readonly #signal: AbortSignal | undefined;
  readonly #done = Promise.withResolvers<RelayResult>();
  readonly counters: RelayCounters;
  #running = 2;
  #endedBy: RelayResult["endedBy"] | undefined;
  #error: unknown = undefined;
  // The limits' timers exist only when a limit is set: nothing per read.
  #maxTimer: ReturnType<typeof setTimeout> | undefined;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #idleMs = 0;
  #seen = 0;
  #lastChange = 0;

  constructor(a: Duplex, b: Duplex, options: RelayOptions) {
    this.#a = a;
    this.#b = b;
    this.counters = options.counters ?? { aToB: 0, bToA: 0 };
    this.#signal = options.signal;
    this.#signal?.addEventListener("abort", this, { once: true });
    if (this.#signal?.aborted) this.end("aborted");
    const maxMs = options.maxDurationMs ?? 0;
    if (maxMs > 0) this.#maxTimer = setTimeout(() => this.end("max-time"), maxMs);
    this.#idleMs = options.idleTimeoutMs ?? 0;
    if (this.#idleMs > 0) {
      this.#seen = this.counters.aToB + this.counters.bToA;
      this.#lastChange = performance.now();
      this.#armIdle(this.#idleMs / IDLE_CHECKS_PER_PERIOD);
    }
  }

  #armIdle(ms: number): void {
    this.#idleTimer = setTimeout(() => this.#checkIdle(), ms);
  }

  /** Ends the relay once no byte moved for a whole idle period. */
  #checkIdle(): void {
    const now = performance.now();
    const total = this.counters.aToB + this.counters.bToA;
    if (total !== this.#seen) {
      this.#seen = total;
      this.#lastChange = now;
    } else if (now - this.#lastChange >= this.#idleMs) {
      return this.end("idle");
    }
    const step = this.#idleMs / IDLE_CHECKS_PER_PERIOD;
    this.#armIdle(Math.min(step, this.#lastChange + this.#idleMs - now));
  }

  /** Resolves once both directions have stopped. */
  get finished(): Promise<RelayResult> {
    return this.#done.promise;
  }

  /** The first call wins: records who ended it, then closes both sides. */
  end(side: RelayResult["endedBy"], error?: unknown): void {
    if (this.#endedBy !== undefined) return;
    this.#endedBy = side;
    this.#error = error;
    this.#a.close();
    this.#b.close();
  }

  /** The abort of the relay's signal. */
  handleEvent(): void {
    this.end("aborted");
  }

  /** One direction has stopped; after the second, the result is out. */
  stopped(): void {
    if (--this.#running > 0) return;
    this.#signal?.removeEventListener("abort", this);
    clearTimeout(this.#maxTimer);
    clearTimeout(this.#idleTimer);
    const { aToB, bToA } = this.counters;
    const result: RelayResult = { aToB, bToA, endedBy: this.#endedBy ?? "a" };
    this.#done.resolve(this.#error === undefined ? result : { ...result, error: this.#error });
  }
}

/**
 * Copies `from` → `to` until EOF or error, then ends the relay as `side`,
 * or as the other side when writing to it failed (with the error, if
 * any). Never rejects.
 *
 * Per chunk: one read, one write, the counter and the size check; no
 * timer, no promise of its own and no allocation (a buffer changes only
 * when the traffic's size does). When `to` frames its writes (a WebSocket),
 * each read lands `to.writeRoom` bytes (rounded up to a cache line) into
 * the buffer, so the frame's header is written in front of it and both go
 * out in one write.
 */
async function pump(
  from: Duplex,
  to: Duplex,
  pool: BufferPool,
  state: RelayState,
  side: "a" | "b",
): Promise<void> {
  // Rounded up to a cache line: the kernel copies into aligned memory faster.
  const room = to.writeAfterRoom === undefined ? 0 : alignUp(to.writeRoom ?? 0, CACHE_LINE);
  const idle = new Uint8Array(IDLE_RELAY_BUFFER + room);
  let buffer: Uint8Array = idle;
  /** Where reads land: `buffer` past the room. */
  let space = room === 0 ? buffer : buffer.subarray(room);
  let peak = FIRST_BULK_BUFFER;
  let error: unknown = undefined;
  let writing = false;
  try {
    while (true) {
      const n = await from.read(space);
      if (n === null) break;
      writing = true;
      if (room === 0) await to.write(n === space.length ? space : space.subarray(0, n));
      else await to.writeAfterRoom!(buffer, room, n);
      writing = false;
      if (side === "a") state.counters.aToB += n;
      else state.counters.bToA += n;
      let next = buffer;
      if (n === space.length) {
        // Full: grow (sixteen times, up to the bound), or come back to the
        // size reached before; the pool may answer with less.
        next = buffer === idle
          ? pool.take(peak)
          : pool.resize(buffer, Math.min(buffer.length * GROWTH, MAX_RELAY_BUFFER));
        if (next.length > idle.length) {
          peak = Math.max(peak, next.length);
        } else if (next !== buffer) {
          // A pool with shares below the idle buffer (tests): stay small.
          pool.give(next);
          next = idle;
        }
      } else if (buffer !== idle && n < space.length / 8) {
        pool.give(buffer);
        next = idle;
      }
      if (next !== buffer) {
        buffer = next;
        space = room === 0 ? buffer : buffer.subarray(room);
      }
    }
  } catch (caught) {
    error = caught;
  } finally {
    if (buffer !== idle) pool.give(buffer);
  }
  // A failed write is the destination's end (a viewer gone mid-update), not the source's.
  state.end(writing ? (side === "a" ? "b" : "a") : side, error);
  state.stopped();
}
