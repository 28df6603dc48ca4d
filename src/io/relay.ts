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
  /** Which side ended first: `a`, `b`, or `aborted`. */
  readonly endedBy: "a" | "b" | "aborted";
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
}

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
  try {
    await Promise.all([
      pump(a, b, pool, (n) => (counters.aToB += n)).then((e) => end("a", e)),
      pump(b, a, pool, (n) => (counters.bToA += n)).then((e) => end("b", e)),
    ]);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
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
