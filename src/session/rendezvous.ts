/**
 * Where a session's viewer comes from: a one-shot pool port today, a claim
 * on the gateway port next. The session only waits for its viewer and
 * closes the rendezvous; how the viewer found it is the rendezvous' business.
 *
 * @module
 */

import type { Duplex } from "../io/duplex.ts";

/** A viewer that reached its session. */
export interface ArrivedViewer {
  /** Its byte stream (TCP, TLS or WebSocket). */
  readonly duplex: Duplex;
  /**
   * True when the rendezvous already ran the viewer's RFB security
   * handshake (the gateway's password mode matches a viewer to its
   * forwarding by its VNC Authentication answer): the session goes on at
   * ClientInit.
   */
  readonly authenticated: boolean;
}

/** One session's way in for exactly one viewer. */
export interface Rendezvous {
  /** Where the viewer comes in, for log lines (`127.0.0.1:25123`). */
  readonly description: string;
  /**
   * Waits for the one viewer; later ones are turned away.
   * Rejects with `signal`'s reason when it aborts first.
   */
  waitForViewer(signal: AbortSignal): Promise<ArrivedViewer>;
  /** Frees what the rendezvous holds (listener, port, claim); idempotent. */
  close(): Promise<void>;
}
