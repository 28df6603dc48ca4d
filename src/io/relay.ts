/**
 * The relay: bytes both ways between viewer and VNC server until either
 * side ends, then both are closed (Deno streams cannot half-close, and VNC
 * has no use for it). This is the hot path.
 *
 * Each direction reads with plain `read`/`write` calls (faster than
 * `pipeTo` here). An idle direction waits on its own small buffer, so
 * thousands of idle sessions hold little memory. When a read fills the
 * buffer (a framebuffer update in bulk), the direction borrows a buffer
 * four times larger from the shared pool, up to 1 MiB; after a short read it
 * gives it back and waits on its small buffer again, and the next bulk
 * jumps straight back to the size it reached before. Backpressure is
 * natural: nothing is read until the previous chunk has been written.
 *
 * @module
 */

import { type BufferPool, RELAY_BUFFER_POOL } from "./buffer_pool.ts";
import type { Duplex } from "./duplex.ts";

/** Smallest relay buffer, in bytes. */
export const MIN_RELAY_BUFFER = 4 * 1024;
/** Largest relay buffer, in bytes. */
export const MAX_RELAY_BUFFER = 1024 * 1024;

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
  /** Where bulk buffers come from. @default {RELAY_BUFFER_POOL} */
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

/** Idle checks per idle period (so an idle end is at most 1/4 period late). */
const IDLE_CHECKS_PER_PERIOD = 4;

/**
 * Copies both ways between `a` and `b` until one side ends or fails, or
 * `signal` aborts; then closes both and waits for both directions to stop.
 * Never throws: the outcome is in the result.
 */
export async function relay(
  a: Duplex,
  b: Duplex,
  options: RelayOptions = {},
): Promise<RelayResult> {
  const counters = options.counters ?? { aToB: 0, bToA: 0 };
  const pool = options.pool ?? RELAY_BUFFER_POOL;
  let endedBy: RelayResult["endedBy"] | undefined;
  let firstError: unknown = undefined;

  function end(side: RelayResult["endedBy"], error?: unknown): void {
    if (endedBy !== undefined) return;
    endedBy = side;
    firstError = error;
    a.close();
    b.close();
  }

  const onAbort = () => end("aborted");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) end("aborted");
  // Timers, not per-read bookkeeping: the hot path stays as it is.
  const maxMs = options.maxDurationMs ?? 0;
  const maxTimer = maxMs > 0 ? setTimeout(() => end("max-time"), maxMs) : undefined;
  const idleMs = options.idleTimeoutMs ?? 0;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  if (idleMs > 0) {
    const step = idleMs / IDLE_CHECKS_PER_PERIOD;
    let seen = 0;
    let lastChange = performance.now();
    const check = () => {
      const now = performance.now();
      const total = counters.aToB + counters.bToA;
      if (total !== seen) {
        seen = total;
        lastChange = now;
      } else if (now - lastChange >= idleMs) {
        return end("idle");
      }
      idleTimer = setTimeout(check, Math.min(step, lastChange + idleMs - now));
    };
    seen = counters.aToB + counters.bToA;
    idleTimer = setTimeout(check, step);
  }
  try {
    await Promise.all([
      pump(a, b, pool, (n) => (counters.aToB += n)).then((e) => end("a", e)),
      pump(b, a, pool, (n) => (counters.bToA += n)).then((e) => end("b", e)),
    ]);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    clearTimeout(maxTimer);
    clearTimeout(idleTimer);
  }
  const result: RelayResult = { aToB: counters.aToB, bToA: counters.bToA, endedBy: endedBy ?? "a" };
  return firstError === undefined ? result : { ...result, error: firstError };
}

/** Copies `from` → `to` until EOF or error; resolves with the error, if any. */
async function pump(
  from: Duplex,
  to: Duplex,
  pool: BufferPool,
  count: (n: number) => void,
): Promise<unknown> {
  const small = new Uint8Array(MIN_RELAY_BUFFER);
  let buffer: Uint8Array = small;
  let peak = MIN_RELAY_BUFFER * 4;
  try {
    while (true) {
      const n = await from.read(buffer);
      if (n === null) return undefined;
      await to.write(buffer.subarray(0, n));
      count(n);
      if (n === buffer.length && buffer.length < MAX_RELAY_BUFFER) {
        const size = buffer === small ? peak : Math.min(buffer.length * 4, MAX_RELAY_BUFFER);
        if (buffer !== small) pool.give(buffer);
        buffer = pool.take(size);
        peak = Math.max(peak, buffer.length);
      } else if (buffer !== small && n < buffer.length / 8) {
        pool.give(buffer);
        buffer = small;
      }
    }
  } catch (error) {
    return error;
  } finally {
    if (buffer !== small) pool.give(buffer);
  }
}
