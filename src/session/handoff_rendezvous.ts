/**
 * A rendezvous whose viewer is handed over by someone else: the gateway
 * port routes each arriving viewer (by its single-use token, or by its VNC
 * Authentication answer) to the session waiting for it. The session only
 * waits; whoever holds the claim delivers.
 *
 * @module
 */

import type { ArrivedViewer, Rendezvous } from "./rendezvous.ts";

/** A session's place in a gateway's routing table; see the module doc. */
export class HandoffRendezvous implements Rendezvous {
  readonly #arrived = Promise.withResolvers<ArrivedViewer>();
  readonly #onClose: () => void;
  #state: "waiting" | "delivered" | "closed" = "waiting";
  /** Where the viewer comes in, for log lines. */
  readonly description: string;

  /**
   * Creates a rendezvous described as `description` in log lines;
   * `onClose` runs once when it closes (the gateway drops its claim).
   */
  constructor(description: string, onClose: () => void = () => {}) {
    this.description = description;
    this.#onClose = onClose;
    // The session may stop waiting (timeout) before anyone delivers.
    this.#arrived.promise.catch(() => {});
  }

  /** True until a viewer was delivered or the rendezvous closed. */
  get waiting(): boolean {
    return this.#state === "waiting";
  }

  /**
   * Hands `viewer` to the waiting session; false (and nothing taken) when
   * a viewer came already or the rendezvous is closed: the caller then
   * closes the viewer.
   */
  deliver(viewer: ArrivedViewer): boolean {
    if (this.#state !== "waiting") return false;
    this.#state = "delivered";
    this.#arrived.resolve(viewer);
    return true;
  }

  /** Ends the wait as a timeout would (the claim expired). */
  expire(): void {
    if (this.#state !== "waiting") return;
    this.#arrived.reject(new DOMException("The claim expired", "TimeoutError"));
  }

  /** Waits for the delivered viewer, or until `signal` aborts. */
  waitForViewer(signal: AbortSignal): Promise<ArrivedViewer> {
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      this.#arrived.promise.then(resolve, reject).finally(() =>
        signal.removeEventListener("abort", onAbort)
      );
    });
  }

  /** Stops waiting and lets the gateway drop its claim; idempotent. */
  close(): Promise<void> {
    if (this.#state === "closed") return Promise.resolve();
    const wasWaiting = this.#state === "waiting";
    this.#state = "closed";
    if (wasWaiting) this.#arrived.reject(new Deno.errors.BadResource("The rendezvous is closed"));
    this.#onClose();
    return Promise.resolve();
  }
}
