/**
 * The audit line: one per session end, in the log's format (text or JSON),
 * to the daemon's log and, with `--audit-log FILE`, to a file of its own
 * (reopened on SIGHUP). It says who asked (control user), for what (console
 * kind, rendezvous, VNC server), who came (viewer address), when and for
 * how long, the bytes each way and how it ended. Never a password or token.
 *
 * Text form, after the usual time/level/`[C<n>]` head:
 *
 *     AUDIT session_end user=admin kind=vnc rendezvous=port backend=10.0.0.5:5901
 *     viewer=192.0.2.7:51234 start=2026-12-01T23:50:00.000Z duration_s=12.3
 *     viewer_to_server=1234 server_to_viewer=567890 cause=viewer_closed
 *
 * (one line; `protocol=vncap` follows `user=-` for vncap requests;
 * `reason="..."` is added for `error` and
 * `viewer_handshake_failed`; a value with spaces or quotes is quoted).
 *
 * @module
 */

import type { ConsoleType } from "../config.ts";
import type { LogFields, Logger } from "../log.ts";
import type { SessionEnd } from "../session/session_events.ts";
import type { RendezvousKind } from "./daemon_metrics.ts";

/** What admission knew of a session when it opened it. */
export interface SessionFacts {
  /** The control user who asked (not secret); undefined for sessions of no user. */
  readonly controlUser: string | undefined;
  /** Console kind. */
  readonly kind: ConsoleType;
  /** How the viewer comes in. */
  readonly rendezvous: RendezvousKind;
  /** The VNC server, `host:port`. */
  readonly backend: string;
  /** The control protocol that asked, when not snf's (`protocol=vncap` on the line). */
  readonly protocol?: "vncap";
}

/** The audit fields of a session's end, in their line order. */
export function auditFields(facts: SessionFacts, end: SessionEnd): LogFields {
  return {
    event: "session_end",
    user: facts.controlUser ?? "-",
    ...(facts.protocol !== undefined ? { protocol: facts.protocol } : {}),
    kind: facts.kind,
    rendezvous: facts.rendezvous,
    backend: facts.backend,
    viewer: end.viewerAddress ?? "-",
    start: end.startedAt.toISOString(),
    duration_s: Math.round(end.durationMs) / 1000,
    viewer_to_server: end.viewerToServer,
    server_to_viewer: end.serverToViewer,
    cause: end.cause,
    ...(end.reason !== undefined ? { reason: end.reason } : {}),
  };
}

/** The text form of audit fields: `AUDIT session_end key=value ...`. */
export function formatAuditText(fields: LogFields): string {
  const pairs = Object.entries(fields)
    .filter(([key, value]) => key !== "event" && value !== undefined)
    .map(([key, value]) => `${key}=${quoteValue(String(value))}`);
  return `AUDIT ${fields.event} ${pairs.join(" ")}`;
}

function quoteValue(value: string): string {
  return /^[^\s"=\\]+$/.test(value) ? value : JSON.stringify(value);
}

/** Writes audit lines to the daemon's log and to the audit log, if any. */
export class AuditLog {
  readonly #loggers: readonly Logger[];

  /** `loggers`: the session's own logger is added per line; these get every line too. */
  constructor(loggers: readonly Logger[] = []) {
    this.#loggers = loggers;
  }

  /** Writes the audit line of a session's end through `logger` and the audit loggers. */
  sessionEnded(logger: Logger, prefix: string, facts: SessionFacts, end: SessionEnd): void {
    const fields = auditFields(facts, end);
    const text = formatAuditText(fields);
    logger.info(text, fields);
    for (const audit of this.#loggers) audit.child(prefix).info(text, fields);
  }
}
