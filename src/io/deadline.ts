/**
 * Bounding waits on a `Duplex` in time: the duplex has no per-read timeout,
 * so an abort closes it, which makes the pending read or write reject.
 *
 * @module
 */

import type { Duplex } from "./duplex.ts";

/**
 * Runs `step` on `duplex`, closing the duplex if `signal` aborts first, and
 * then throws the signal's reason (a `TimeoutError` `DOMException` for
 * `AbortSignal.timeout()`) instead of the transport's error.
 */
export async function withDeadline<T>(
  duplex: Duplex,
  signal: AbortSignal,
  step: () => Promise<T>,
): Promise<T> {
  signal.throwIfAborted();
  const onAbort = () => duplex.close();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await step();
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** True when `error` is the reason of an expired `AbortSignal.timeout()`. */
export function isTimeout(error: unknown): boolean {
  return error instanceof DOMException && error.name === "TimeoutError";
}

/**
 * Races `pending` against `signal` without closing anything, for callers
 * that still want to answer the peer after a deadline (the control reply
 * "request timed out"). The loser's later rejection is ignored; the caller
 * closes the transport, which ends the pending operation.
 */
export function raceDeadline<T>(signal: AbortSignal, pending: Promise<T>): Promise<T> {
  pending.catch(() => {});
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    pending.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** A deadline for one phase; disposing it clears its timer at once. */
export interface Deadline extends Disposable {
  /** Aborts with a `TimeoutError` when time is up, or when a parent aborts. */
  readonly signal: AbortSignal;
}

/**
 * Starts a deadline of `ms` milliseconds that also follows `parents` (the
 * daemon's shutdown). Unlike `AbortSignal.timeout()`, whose timer lives on
 * after the phase is over, it is cleared on dispose, so thousands of idle
 * sessions hold no leftover timers (`using phase = startDeadline(...)`).
 */
export function startDeadline(ms: number, ...parents: AbortSignal[]): Deadline {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException("The deadline expired", "TimeoutError")),
    ms,
  );
  const onParent = (event: Event) => controller.abort((event.target as AbortSignal).reason);
  for (const parent of parents) {
    if (parent.aborted) controller.abort(parent.reason);
    else parent.addEventListener("abort", onParent, { once: true });
  }
  return {
    signal: controller.signal,
    [Symbol.dispose]() {
      clearTimeout(timer);
      for (const parent of parents) parent.removeEventListener("abort", onParent);
    },
  };
}

/**
 * Waits `ms` milliseconds, or less when `signal` aborts; never rejects, so a
 * retry loop checks `signal.aborted` after it (a back-off that shutdown
 * must not outlast).
 */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
