/**
 * Rate limits on failed control logins (`--auth-fail-limit N/s`): a token
 * bucket per source address (per /64 for IPv6, the block one host
 * usually gets) and one per user name, each refilled at N
 * tokens a second up to a burst of 2N. Every password check takes a token
 * from both; a check that succeeds gives them back, so only failures count
 * and successful logins are never limited. With either bucket empty the
 * request is refused before its crypt, which caps the CPU one address can
 * burn and the guesses anyone can make at one user's password.
 *
 * Both maps are bounded: a full bucket is the same as none and is dropped,
 * past `maxEntries` the bucket touched longest ago goes, and a user name is
 * keyed by its first 64 characters (valid names have at most 31), so random
 * or huge user names cannot grow memory without bound.
 *
 * @module
 */

import { ipBytes } from "../io/cidr.ts";
import { unbracketHost } from "../io/duplex.ts";

/** Options of {@linkcode AuthFailLimiter}. */
export interface AuthFailLimiterOptions {
  /** Failures per second allowed per address and per user; 0 = no limit. */
  readonly perSecond: number;
  /** Failures allowed at once after a quiet time. @default {max(1, ceil(2 × perSecond))} */
  readonly burst?: number;
  /** Most buckets kept per map. @default {10_000} */
  readonly maxEntries?: number;
}

/** Collaborators of {@linkcode AuthFailLimiter}. */
export interface AuthFailLimiterDeps {
  /** Monotonic clock in milliseconds. @default {performance.now} */
  readonly now?: () => number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
}

/** Characters of a user name that key its bucket. */
const USER_KEY_LENGTH = 64;

/**
 * The bucket key of an address: an IPv4 address as it is, an IPv6 one
 * (with or without brackets) as its /64 prefix, since a host that holds
 * one address of a /64 can usually use them all.
 */
export function addressKey(address: string): string {
  const bare = unbracketHost(address).replace(/%.*$/, "");
  const bytes = ipBytes(bare);
  if (bytes === undefined) return bare;
  if (bytes.length === 4) return bytes.join(".");
  const groups = [0, 1, 2, 3].map((i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
  return `${groups.join(":")}::/64`;
}

/** Which limit refused a check. */
export type AuthFailLimit = "address" | "user";

/**
 * Parses `--auth-fail-limit`: `N/s` (N ≥ 0, decimals allowed), `0` or
 * `off`. Returns failures per second, 0 for no limit.
 *
 * @throws {RangeError} on anything else.
 */
export function parseAuthFailLimit(text: string): number {
  const value = text.trim().toLowerCase();
  if (value === "off" || value === "0") return 0;
  const match = /^(\d+(?:\.\d+)?)\/s$/.exec(value);
  if (match === null) {
    throw new RangeError(`--auth-fail-limit must be "N/s", "0" or "off", got "${text}"`);
  }
  return Number(match[1]);
}

/** Per-address and per-user token buckets of failed logins; see the module doc. */
export class AuthFailLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #addresses = new Map<string, Bucket>();
  readonly #users = new Map<string, Bucket>();

  /**
   * Creates a limiter.
   *
   * @throws {RangeError} on a negative or non-finite rate, or a burst or
   * `maxEntries` below 1.
   */
  constructor(options: AuthFailLimiterOptions, deps: AuthFailLimiterDeps = {}) {
    const { perSecond } = options;
    if (!(perSecond >= 0) || !Number.isFinite(perSecond)) {
      throw new RangeError(`Invalid failed-login rate "${perSecond}"`);
    }
    this.#perMs = perSecond / 1000;
    this.#burst = options.burst ?? Math.max(1, Math.ceil(2 * perSecond));
    this.#maxEntries = options.maxEntries ?? 10_000;
    if (!(this.#burst >= 1) || !(this.#maxEntries >= 1)) {
      throw new RangeError("The burst and the number of buckets must be at least 1");
    }
    this.#now = deps.now ?? (() => performance.now());
  }

  /** Whether any limit applies (a rate above 0). */
  get enabled(): boolean {
    return this.#perMs > 0;
  }

  /** Buckets held now, per map (for tests of the bound). */
  get size(): { readonly addresses: number; readonly users: number } {
    return { addresses: this.#addresses.size, users: this.#users.size };
  }

  /**
   * Takes one token for `address` and one for `user` (when given; the
   * gateway's claims have no user): for a check that failed (control
   * logins, token claims), or before one whose attempts in flight must be
   * bounded too (password mode). Returns the limit that is exhausted,
   * taking nothing, or `undefined`.
   */
  take(address: string, user?: string): AuthFailLimit | undefined {
    if (!this.enabled) return undefined;
    const now = this.#now();
    const key = addressKey(address);
    const byAddress = this.#bucket(this.#addresses, key, now);
    if (byAddress.tokens < 1) return "address";
    const userKey = user?.slice(0, USER_KEY_LENGTH);
    const byUser = userKey === undefined ? undefined : this.#bucket(this.#users, userKey, now);
    if (byUser !== undefined && byUser.tokens < 1) return "user";
    byAddress.tokens -= 1;
    this.#keep(this.#addresses, key, byAddress);
    if (byUser !== undefined) {
      byUser.tokens -= 1;
      this.#keep(this.#users, userKey!, byUser);
    }
    return undefined;
  }

  /**
   * The limit that is exhausted for `address` (and `user`, when given), or
   * `undefined`; takes nothing. For checks charged only once they fail
   * ({@linkcode take} after the fact), so that checks in flight at once do
   * not count against each other.
   */
  exhausted(address: string, user?: string): AuthFailLimit | undefined {
    if (!this.enabled) return undefined;
    const now = this.#now();
    if (this.#bucket(this.#addresses, addressKey(address), now).tokens < 1) return "address";
    const userKey = user?.slice(0, USER_KEY_LENGTH);
    if (userKey !== undefined && this.#bucket(this.#users, userKey, now).tokens < 1) return "user";
    return undefined;
  }

  /** Gives back the tokens {@linkcode take} took for a check that succeeded. */
  giveBack(address: string, user?: string): void {
    if (!this.enabled) return;
    const now = this.#now();
    const keys: [Map<string, Bucket>, string][] = [[this.#addresses, addressKey(address)]];
    if (user !== undefined) keys.push([this.#users, user.slice(0, USER_KEY_LENGTH)]);
    for (const [map, key] of keys) {
      const bucket = map.get(key);
      if (bucket === undefined) continue;
      this.#refill(bucket, now);
      bucket.tokens = Math.min(this.#burst, bucket.tokens + 1);
      if (bucket.tokens >= this.#burst) map.delete(key);
    }
  }

  /** The bucket of `key` brought up to date (a fresh full one if absent). */
  #bucket(map: Map<string, Bucket>, key: string, now: number): Bucket {
    const bucket = map.get(key);
    if (bucket === undefined) return { tokens: this.#burst, at: now };
    this.#refill(bucket, now);
    return bucket;
  }

  #refill(bucket: Bucket, now: number): void {
    bucket.tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.at) * this.#perMs);
    bucket.at = now;
  }

  /** Stores `bucket` as the most recently touched, dropping the oldest past the bound. */
  #keep(map: Map<string, Bucket>, key: string, bucket: Bucket): void {
    map.delete(key);
    map.set(key, bucket);
    while (map.size > this.#maxEntries) map.delete(map.keys().next().value!);
  }
}
