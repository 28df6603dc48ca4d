/**
 * The session limits admission applies before it takes anything:
 * `--max-sessions` (sessions live and pending together: from admission to
 * their end), `--max-sessions-per-user` (per control user) and
 * `--max-sessions-per-backend` (per VNC server `host:port`). 0 means no
 * limit. A place is reserved before the VNC server is dialled and held by
 * the session until it ends, so requests racing in cannot overshoot.
 *
 * @module
 */

import { RefusalError } from "../errors.ts";

/** Limits of {@linkcode SessionQuota}; 0 = none. */
export interface SessionQuotaOptions {
  /** Sessions in all. */
  readonly maxSessions: number;
  /** Sessions per control user. */
  readonly maxPerUser: number;
  /** Sessions per VNC server. */
  readonly maxPerBackend: number;
}

/** The refusal reasons, one per limit (the control reply's `reason`). */
export const QUOTA_REASONS = {
  sessions: "too many sessions",
  user: "too many sessions for this user",
  backend: "too many sessions for this VNC server",
} as const;

/** Counts of sessions held now, by limit; see the module doc. */
export class SessionQuota {
  readonly #options: SessionQuotaOptions;
  #total = 0;
  readonly #byUser = new Map<string, number>();
  readonly #byBackend = new Map<string, number>();

  /** Creates the counts for `options`. */
  constructor(options: SessionQuotaOptions) {
    this.#options = options;
  }

  /** Sessions held now. */
  get size(): number {
    return this.#total;
  }

  /**
   * Reserves a place for a session of `user` to `backend`; dispose it once
   * the session ended (or was never opened). Idempotent dispose.
   *
   * @throws {RefusalError} with the reason of the first limit reached.
   */
  reserve(user: string | undefined, backend: string): Disposable {
    const { maxSessions, maxPerUser, maxPerBackend } = this.#options;
    if (maxSessions > 0 && this.#total >= maxSessions) {
      throw new RefusalError(QUOTA_REASONS.sessions);
    }
    if (user !== undefined && maxPerUser > 0 && (this.#byUser.get(user) ?? 0) >= maxPerUser) {
      throw new RefusalError(QUOTA_REASONS.user);
    }
    if (maxPerBackend > 0 && (this.#byBackend.get(backend) ?? 0) >= maxPerBackend) {
      throw new RefusalError(QUOTA_REASONS.backend);
    }
    this.#total++;
    if (user !== undefined) add(this.#byUser, user, 1);
    add(this.#byBackend, backend, 1);
    let held = true;
    return {
      [Symbol.dispose]: () => {
        if (!held) return;
        held = false;
        this.#total--;
        if (user !== undefined) add(this.#byUser, user, -1);
        add(this.#byBackend, backend, -1);
      },
    };
  }
}

/** Adds `by` to the count of `key`, dropping it at 0 (the maps stay small). */
function add(map: Map<string, number>, key: string, by: number): void {
  const next = (map.get(key) ?? 0) + by;
  if (next <= 0) map.delete(key);
  else map.set(key, next);
}
