/**
 * The relay: bytes both ways between viewer and VNC server until either
 * side ends, then both are closed (Deno streams cannot half-close, and VNC
 * has no use for it). This is the hot path.
 *
 * Each direction reads into its own buffer with plain `read`/`write` calls
 * (faster than `pipeTo` here). The buffer adapts to the traffic: it starts
 * small, so thousands of idle sessions hold little memory, doubles when a
 * read fills it (bulk framebuffer updates), up to 1 MiB, and shrinks back
 * when reads stay small. Backpressure is natural: nothing is read until the
 * previous chunk has been written.
 *
 * @module
 */

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
      pump(a, b, (n) => (counters.aToB += n)).then((e) => end("a", e)),
      pump(b, a, (n) => (counters.bToA += n)).then((e) => end("b", e)),
    ]);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
  const result: RelayResult = { aToB: counters.aToB, bToA: counters.bToA, endedBy: endedBy ?? "a" };
  return firstError === undefined ? result : { ...result, error: firstError };
}

/** Copies `from` → `to` until EOF or error; resolves with the error, if any. */
async function pump(from: Duplex, to: Duplex, count: (n: number) => void): Promise<unknown> {
  let buffer = new Uint8Array(MIN_RELAY_BUFFER);
  try {
    while (true) {
      const n = await from.read(buffer);
      if (n === null) return undefined;
      await to.write(buffer.subarray(0, n));
      count(n);
      if (n === buffer.length && buffer.length < MAX_RELAY_BUFFER) {
        buffer = new Uint8Array(buffer.length * 2);
      } else if (n < buffer.length / 8 && buffer.length > MIN_RELAY_BUFFER) {
        buffer = new Uint8Array(buffer.length / 2);
      }
    }
  } catch (error) {
    return error;
  }
}
