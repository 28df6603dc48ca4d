/**
 * `--rate-limit N/s`: control requests a second per source address (per
 * /64 for IPv6) and per control user, each a token bucket refilled at N a
 * second up to a burst of 2N. The address is charged as the request
 * arrives; the user only once authenticated, so nobody can spend a real
 * user's budget by naming it. Over either, the reply is `too many requests`.
 *
 * @module
 */

import { AuthFailLimiter } from "../auth/auth_fail_limiter.ts";
import { RefusalError } from "../errors.ts";

/** The refusal reason. */
export const RATE_LIMIT_REASON = "too many requests";

/** Per-address and per-user request rates; see the module doc. */
export class RequestRateLimit {
  readonly #byAddress: AuthFailLimiter;
  readonly #byUser: AuthFailLimiter;

  /** Limits to `perSecond` requests a second (0 = none). */
  constructor(perSecond: number, deps: { now?: () => number } = {}) {
    this.#byAddress = new AuthFailLimiter({ perSecond }, deps);
    this.#byUser = new AuthFailLimiter({ perSecond }, deps);
  }

  /**
   * Charges a request from `address` (host, with or without port).
   *
   * @throws {RefusalError} `too many requests` over the address's rate.
   */
  chargeAddress(address: string): void {
    if (this.#byAddress.take(address) !== undefined) throw new RefusalError(RATE_LIMIT_REASON);
  }

  /**
   * Charges an authenticated request of `user`.
   *
   * @throws {RefusalError} `too many requests` over the user's rate.
   */
  chargeUser(user: string): void {
    // The limiter keys by address; a user name (never an IP) keys itself.
    if (this.#byUser.take(`user:${user}`) !== undefined) throw new RefusalError(RATE_LIMIT_REASON);
  }
}
