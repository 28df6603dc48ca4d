/**
 * The observer admission gives each session: it moves the session's place
 * in the metrics (live gauges, histograms, end causes, bytes) and writes its
 * audit line at the end. It only listens; it never calls into the session.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { SessionObserver } from "../session/session_events.ts";
import type { AuditLog, SessionFacts } from "./audit_log.ts";
import type { DaemonMetrics, LiveSession } from "./daemon_metrics.ts";

/** Where a session's events go. */
export interface SessionRecorderDeps {
  /** The daemon's metrics. @default {none} */
  readonly metrics?: DaemonMetrics;
  /** The audit log. @default {none} */
  readonly audit?: AuditLog;
}

/**
 * An observer for one session described by `facts`, logging through
 * `logger` (whose prefix, `id`, names the forwarding).
 */
export function recordSession(
  facts: SessionFacts,
  log: { readonly logger: Logger; readonly id: string },
  deps: SessionRecorderDeps,
): SessionObserver {
  const { metrics, audit } = deps;
  let live: LiveSession | undefined;
  return {
    waiting() {
      live = metrics?.sessionWaiting(facts.kind, facts.rendezvous);
    },
    viewerArrived() {
      if (live) live.state = "authenticating";
    },
    viewerAuthenticated(ms) {
      metrics?.viewerAuthenticated(ms);
    },
    relayStarted(counters) {
      if (live) {
        live.state = "relaying";
        live.counters = counters;
      }
    },
    ended(end) {
      if (live) metrics?.sessionEnded(live, end);
      live = undefined;
      audit?.sessionEnded(log.logger, log.id, facts, end);
    },
  };
}
