/**
 * The live sessions of the daemon: started here, counted for log lines,
 * drained at SIGTERM.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { Session } from "./session.ts";

/** The sessions running now. */
export class SessionRegistry {
  readonly #running = new Map<Session, Promise<void>>();
  readonly #onStart: ((session: Session) => void) | undefined;

  /** `options.onStart` sees every session as it starts (an embedding program watches them). */
  constructor(options: { readonly onStart?: (session: Session) => void } = {}) {
    this.#onStart = options.onStart;
  }

  /** Sessions running now. */
  get size(): number {
    return this.#running.size;
  }

  /** Runs `session` (its viewer may still be on its way) until it ends. */
  start(session: Session): void {
    this.#onStart?.(session);
    const running = session.run();
    this.#running.set(session, running);
    running.finally(() => this.#running.delete(session));
  }

  /**
   * Waits up to `ms` for the sessions to end by themselves (at SIGTERM,
   * after the daemon stopped accepting); the caller then closes the rest.
   */
  async drain(ms: number, logger: Logger): Promise<void> {
    if (this.#running.size === 0) return;
    logger.info(`Waiting up to ${ms / 1000} s for ${this.#running.size} live sessions`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
    await Promise.race([this.settled(), timeout]);
    clearTimeout(timer);
    if (this.#running.size > 0) logger.info(`Closing ${this.#running.size} sessions still live`);
  }

  /** Resolves once every session running now has ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#running.values()]);
  }
}
