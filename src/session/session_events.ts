/**
 * What a session tells whoever watches it (metrics, the audit log): the
 * viewer's arrival, its authentication, the relay's start and how the
 * session ended. The session only calls these; it never waits on them.
 *
 * @module
 */

import type { RelayCounters } from "../io/relay.ts";

/**
 * How a session ended, a fixed set (metric label values): the relay ended
 * by the viewer, by the VNC server, after `idle_timeout` or `max_time`, or
 * by the daemon's drain (`drained`, which also ends sessions still waiting
 * at SIGTERM); before any relay, no viewer came in time (`no_viewer`) or
 * its handshake or password failed (`viewer_handshake_failed`); `error` is
 * anything else, with a reason.
 */
export type SessionEndCause =
  | "viewer_closed"
  | "server_closed"
  | "idle_timeout"
  | "max_time"
  | "drained"
  | "no_viewer"
  | "viewer_handshake_failed"
  | "error";

/** Every {@linkcode SessionEndCause}, in the order documented. */
export const SESSION_END_CAUSES: readonly SessionEndCause[] = [
  "viewer_closed",
  "server_closed",
  "idle_timeout",
  "max_time",
  "drained",
  "no_viewer",
  "viewer_handshake_failed",
  "error",
];

/** The facts of a session's end. */
export interface SessionEnd {
  /** How it ended. */
  readonly cause: SessionEndCause;
  /** For `error` and `viewer_handshake_failed`: a short, safe reason. */
  readonly reason?: string;
  /** The viewer's address (`192.0.2.7:51234`), when one came. */
  readonly viewerAddress?: string;
  /** When the session started waiting for its viewer. */
  readonly startedAt: Date;
  /** From then to the end, in milliseconds. */
  readonly durationMs: number;
  /** Of that, the relay's part (0 without a relay). */
  readonly relayMs: number;
  /** Bytes viewer to VNC server. */
  readonly viewerToServer: number;
  /** Bytes VNC server to viewer. */
  readonly serverToViewer: number;
}

/** Receives a session's events; see the module doc. */
export interface SessionObserver {
  /** The session runs: it waits for its viewer. */
  waiting(): void;
  /** A viewer reached the session (before its RFB handshake). */
  viewerArrived(address: string): void;
  /** The viewer passed its handshake in `ms` milliseconds. */
  viewerAuthenticated(ms: number): void;
  /** Bytes start to flow; `counters` move live until the end. */
  relayStarted(counters: RelayCounters): void;
  /** The session ended; called exactly once. */
  ended(end: SessionEnd): void;
}
