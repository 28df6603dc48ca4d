/**
 * Accepting the next connection of a listener that must outlive a failed
 * accept: shared by the control listener and the per-port WebSocket
 * listeners.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { pause } from "./deadline.ts";

/** Options of {@linkcode acceptWithBackoff}. */
export interface AcceptWithBackoffOptions {
  /** Aborted when the owner stops: no more pauses, no more connections handed out. */
  readonly signal: AbortSignal;
  /** Where a failed accept is logged. */
  readonly logger: Logger;
  /** What is listening, for the log line (`Control`, `WebSocket`). */
  readonly what: string;
  /** Pause after a failed accept, in milliseconds. @default {100} */
  readonly retryMs?: number;
}

const DEFAULT_RETRY_MS = 100;

/**
 * Resolves to the next connection of `listener`, or `undefined` once the
 * listener is closed or `options.signal` has aborted (a connection accepted
 * after that is closed here, not handed out).
 *
 * A failed accept (EMFILE when the process is out of file descriptors,
 * ENFILE, ENOBUFS) does not end the listener: it is logged and retried after
 * a pause, so the listener serves again once resources are back, without
 * spinning on the error meanwhile.
 */
export async function acceptWithBackoff(
  listener: Deno.Listener,
  options: AcceptWithBackoffOptions,
): Promise<Deno.Conn | undefined> {
  const { signal } = options;
  const retryMs = options.retryMs ?? DEFAULT_RETRY_MS;
  while (!signal.aborted) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (error) {
      // Closing the listener ends a pending accept with BadResource.
      if (
        signal.aborted || error instanceof Deno.errors.BadResource ||
        error instanceof Deno.errors.Interrupted
      ) return undefined;
      options.logger.error(
        `${options.what} accept failed: ${describeError(error)}; retrying in ${retryMs} ms`,
      );
      await pause(retryMs, signal);
      continue;
    }
    if (!signal.aborted) return conn;
    conn.close();
  }
  return undefined;
}
