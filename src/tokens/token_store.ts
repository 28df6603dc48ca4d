/**
 * One-time tokens that stand for a pending entry (for the gateway: a
 * forwarding whose backend is connected and whose viewer has not come yet).
 * A token is issued once, claimed at most once, and expires unclaimed after
 * its lifetime, when its owner is told so it can release what the entry
 * holds.
 *
 * A token is 32 bytes from the CSPRNG, base64url: far beyond guessing, so
 * the store keeps only its SHA-256 hash and looks it up by hash (no secret
 * comparison to time). The first 8 hex digits of the hash are the only
 * trace callers may log.
 *
 * The store is generic over the entry: it knows nothing of RFB or of the
 * control protocol.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { canonicalIp } from "../io/ip_address.ts";

/** Random bytes in a token (256 bits; at least 128 are required). */
export const TOKEN_BYTES = 32;

/** Hex digits of a token's hash that may appear in logs. */
export const HASH_PREFIX_LENGTH = 8;

/** Options of {@linkcode TokenStore.issue}. */
export interface TokenIssueOptions {
  /** Lifetime in milliseconds, capped by the store's maximum. */
  readonly ttlMs: number;
  /**
   * The only IP address that may claim the token (any spelling: brackets,
   * IPv4-mapped IPv6). @default {undefined} (any address)
   */
  readonly clientAddress?: string;
  /**
   * Makes what another instance needs to open the entry's session itself
   * (secret: a shared store keeps it sealed, and only a claim of the token
   * opens it). A store shared between instances requires it, calls it once
   * and wipes the bytes after sealing them; the in-process one never calls
   * it, so no copy of the secrets is made for nothing. @default {undefined}
   */
  readonly handover?: () => Uint8Array;
}

/** A token just issued: the secret for the viewer and the trace for logs. */
export interface IssuedToken {
  /** The token itself: give it to the viewer, never log it. */
  readonly token: string;
  /** The first {@linkcode HASH_PREFIX_LENGTH} hex digits of its SHA-256 hash. */
  readonly hashPrefix: string;
  /** The lifetime granted: the requested one capped by the store's maximum. */
  readonly ttlMs: number;
}

/**
 * Why a claim failed. `unknown` covers never issued, already claimed,
 * removed and long expired alike; a caller answers every refusal the same
 * way to its peer and only logs the difference. `unavailable`: a shared
 * store could not be asked (the token, if any, is untouched).
 */
export type TokenRefusal = "unknown" | "expired" | "wrong-address" | "unavailable";

/**
 * The outcome of {@linkcode TokenStore.claim}; `hashPrefix` is for the log
 * line either way. A token of a shared store may have been issued by
 * another instance (or its entry here be gone): the claim then carries the
 * issuer's `handover` instead of an entry, for this instance to open the
 * session itself.
 */
export type TokenClaim<T> =
  | { readonly ok: true; readonly entry: T; readonly hashPrefix: string }
  | {
    readonly ok: true;
    readonly entry: undefined;
    readonly handover: Uint8Array;
    readonly hashPrefix: string;
  }
  | { readonly ok: false; readonly why: TokenRefusal; readonly hashPrefix: string };

/** A shared store's server cannot be reached (or did not answer in time). */
export class TokenStoreUnavailableError extends Error {
  constructor(message = "token store unavailable", options?: ErrorOptions) {
    super(message, options);
    this.name = "TokenStoreUnavailableError";
  }
}

/**
 * A store of one-time tokens, each guarding one entry. Asynchronous so that
 * a shared store (Redis, with an atomic `GETDEL` as the take) can implement
 * it; {@linkcode MemoryTokenStore} is the one in this process.
 */
export interface TokenStore<T> {
  /**
   * Issues a token for `entry`, valid once until its lifetime ends.
   *
   * @throws {RangeError} on a lifetime that is not a positive number.
   * @throws {TypeError} on a client address that is not an IP address, or an
   * entry that already has a pending token.
   * @throws {TokenStoreUnavailableError} when a shared store cannot be reached.
   */
  issue(entry: T, options: TokenIssueOptions): Promise<IssuedToken>;
  /**
   * Takes the entry of `token` if it is pending, unexpired, and bound to
   * `viewerAddress` or to no address. The take is atomic: of concurrent
   * claims of one token exactly one succeeds. A claim from another address
   * is refused and leaves the token pending.
   *
   * @param viewerAddress the IP address the viewer connected from (not
   * `host:port`).
   */
  claim(token: string, viewerAddress: string): Promise<TokenClaim<T>>;
  /**
   * Drops the pending token of `entry` without expiring it; false if it had
   * none. With `keepShared`, a shared store lets go of the entry here only:
   * the token stays redeemable by other instances (this one is draining).
   */
  remove(entry: T, options?: { readonly keepShared?: boolean }): Promise<boolean>;
  /** Expires every pending token (its owner is told) and refuses new ones. Idempotent. */
  close(): Promise<void>;
  /**
   * False while the store cannot issue or claim (a shared store whose server
   * does not answer); readiness probes report it.
   */
  readonly available: boolean;
}

/** Options of {@linkcode MemoryTokenStore}. */
export interface MemoryTokenStoreOptions<T> {
  /**
   * Called exactly once for each token that expires unclaimed, or that is
   * pending at {@linkcode MemoryTokenStore.close}, with its entry. It must
   * not throw (an error is rethrown after the other entries are expired).
   */
  readonly onExpire: (entry: T) => void;
  /** Longest lifetime a token may get; longer requests are capped. */
  readonly maxTtlMs: number;
  /**
   * Least time between two sweeps for expired tokens: a token's owner may
   * learn of its expiry this much late (a claim checks the deadline itself,
   * so a token is never claimable late). @default {100}
   */
  readonly sweepIntervalMs?: number;
}

/** Collaborators of {@linkcode MemoryTokenStore}. */
export interface MemoryTokenStoreDeps {
  /** Monotonic clock in milliseconds. @default {performance.now} */
  readonly now?: () => number;
}

interface PendingToken<T> {
  readonly entry: T;
  readonly deadline: number;
  /** Canonical IP (see {@linkcode canonicalIp}), or undefined for any. */
  readonly clientAddress: string | undefined;
}

/** The SHA-256 hash of a token, in hex: the only form a store keeps. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** A fresh token: {@linkcode TOKEN_BYTES} bytes from the CSPRNG, base64url without padding. */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(TOKEN_BYTES));
  const token = Buffer.from(bytes.buffer).toString("base64url");
  bytes.fill(0);
  return token;
}

/**
 * The in-process {@linkcode TokenStore}: a map from token hash to entry.
 *
 * Expiry uses one timer for the whole store, not one per token: the timer
 * is armed for the earliest deadline (no sooner than `sweepIntervalMs`
 * after the last sweep) and each sweep scans every pending token. With
 * 5,000 pending tokens a scan costs about 0.1 ms, and sweeps come at most
 * 10 times a second; a timer per token would cost about 6 µs and 0.8 KB
 * of heap each (30 ms and 4 MB for 5,000) and a clear on every claim. No
 * timer is left when nothing is pending.
 */
export class MemoryTokenStore<T> implements TokenStore<T>, AsyncDisposable {
  readonly #onExpire: (entry: T) => void;
  readonly #maxTtlMs: number;
  readonly #sweepIntervalMs: number;
  readonly #now: () => number;
  /** Pending tokens by hash. */
  readonly #byHash = new Map<string, PendingToken<T>>();
  /** The hash of each pending entry, for {@linkcode remove}. */
  readonly #hashByEntry = new Map<T, string>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (on the store's clock). */
  #timerAt = Infinity;
  /** No deadline is before this (it may be earlier than the true earliest). */
  #earliest = Infinity;
  #lastSweep = -Infinity;
  #closed = false;

  /**
   * Creates an empty store.
   *
   * @throws {RangeError} on a maximum lifetime or sweep interval that is
   * not a positive number.
   */
  constructor(options: MemoryTokenStoreOptions<T>, deps: MemoryTokenStoreDeps = {}) {
    const { maxTtlMs, sweepIntervalMs = 100 } = options;
    if (!(maxTtlMs > 0)) throw new RangeError(`Invalid maximum token lifetime "${maxTtlMs}"`);
    if (!(sweepIntervalMs > 0) || !Number.isFinite(sweepIntervalMs)) {
      throw new RangeError(`Invalid token sweep interval "${sweepIntervalMs}"`);
    }
    this.#onExpire = options.onExpire;
    this.#maxTtlMs = maxTtlMs;
    this.#sweepIntervalMs = sweepIntervalMs;
    this.#now = deps.now ?? (() => performance.now());
  }

  /** Tokens pending now. */
  get size(): number {
    return this.#byHash.size;
  }

  /** The entry pending under the token hash `hash`, if any (for a store built on this one). */
  entryOf(hash: string): T | undefined {
    return this.#byHash.get(hash)?.entry;
  }

  /** The token hash `entry` is pending under, if any. */
  hashOf(entry: T): string | undefined {
    return this.#hashByEntry.get(entry);
  }

  /** {@inheritDoc TokenStore.available} */
  get available(): boolean {
    return !this.#closed;
  }

  /** {@inheritDoc TokenStore.issue} */
  issue(entry: T, options: TokenIssueOptions): Promise<IssuedToken> {
    return Promise.try(() => this.#issue(entry, options));
  }

  /** {@inheritDoc TokenStore.claim} */
  claim(token: string, viewerAddress: string): Promise<TokenClaim<T>> {
    return Promise.try(() => this.#claim(token, viewerAddress));
  }

  /** {@inheritDoc TokenStore.remove} */
  remove(entry: T): Promise<boolean> {
    return Promise.try(() => this.#remove(entry));
  }

  /** {@inheritDoc TokenStore.close} */
  close(): Promise<void> {
    return Promise.try(() => this.#close());
  }

  /** Closes the store ({@linkcode close}). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** What `Deno.inspect` and `console.log` show: a count, no token and no hash. */
  [Symbol.for("Deno.customInspect")](): string {
    return `MemoryTokenStore { pending: ${this.#byHash.size}${this.#closed ? ", closed" : ""} }`;
  }

  #issue(entry: T, options: TokenIssueOptions): IssuedToken {
    if (this.#closed) throw new Error("The token store is closed");
    const ttlMs = Math.min(options.ttlMs, this.#maxTtlMs);
    if (!(ttlMs > 0)) throw new RangeError(`Invalid token lifetime "${options.ttlMs}"`);
    let clientAddress: string | undefined;
    if (options.clientAddress !== undefined) {
      clientAddress = canonicalIp(options.clientAddress);
      if (clientAddress === undefined) {
        throw new TypeError(`Invalid client address "${options.clientAddress}"`);
      }
    }
    if (this.#hashByEntry.has(entry)) throw new TypeError("The entry already has a pending token");
    const token = newToken();
    const hash = hashToken(token);
    const deadline = this.#now() + ttlMs;
    this.#byHash.set(hash, { entry, deadline, clientAddress });
    this.#hashByEntry.set(entry, hash);
    this.#earliest = Math.min(this.#earliest, deadline);
    this.#arm();
    return { token, hashPrefix: hash.slice(0, HASH_PREFIX_LENGTH), ttlMs };
  }

  #claim(token: string, viewerAddress: string): TokenClaim<T> {
    const hash = hashToken(token);
    const hashPrefix = hash.slice(0, HASH_PREFIX_LENGTH);
    // Look-up and delete run in one synchronous step: no other claim can
    // run in between, so of two claims of one token only one finds it.
    const pending = this.#byHash.get(hash);
    if (pending === undefined) return { ok: false, why: "unknown", hashPrefix };
    if (this.#now() >= pending.deadline) {
      // Due but not swept yet: expire it now, and only now.
      this.#forget(hash, pending);
      this.#arm();
      this.#expire([pending]);
      return { ok: false, why: "expired", hashPrefix };
    }
    if (
      pending.clientAddress !== undefined && canonicalIp(viewerAddress) !== pending.clientAddress
    ) {
      return { ok: false, why: "wrong-address", hashPrefix };
    }
    this.#forget(hash, pending);
    this.#arm();
    return { ok: true, entry: pending.entry, hashPrefix };
  }

  #remove(entry: T): boolean {
    const hash = this.#hashByEntry.get(entry);
    const pending = hash === undefined ? undefined : this.#byHash.get(hash);
    if (hash === undefined || pending === undefined) return false;
    this.#forget(hash, pending);
    this.#arm();
    return true;
  }

  #close(): void {
    this.#closed = true;
    const all = [...this.#byHash.values()];
    this.#byHash.clear();
    this.#hashByEntry.clear();
    this.#arm();
    this.#expire(all);
  }

  #forget(hash: string, pending: PendingToken<T>): void {
    this.#byHash.delete(hash);
    this.#hashByEntry.delete(pending.entry);
  }

  /** Arms, moves or clears the sweep timer for what is pending now. */
  #arm(): void {
    if (this.#byHash.size === 0) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#earliest = Infinity;
      return;
    }
    const at = Math.max(this.#earliest, this.#lastSweep + this.#sweepIntervalMs);
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#sweep(), Math.max(0, at - this.#now()));
  }

  #sweep(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#now();
    this.#lastSweep = now;
    const due: PendingToken<T>[] = [];
    let earliest = Infinity;
    for (const [hash, pending] of this.#byHash) {
      if (now >= pending.deadline) {
        due.push(pending);
        this.#forget(hash, pending);
      } else {
        earliest = Math.min(earliest, pending.deadline);
      }
    }
    this.#earliest = earliest;
    this.#arm();
    this.#expire(due);
  }

  /** Tells the owner of each entry; one failing call does not skip the others. */
  #expire(entries: readonly PendingToken<T>[]): void {
    const errors: unknown[] = [];
    for (const { entry } of entries) {
      try {
        this.#onExpire(entry);
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "Token expiry callbacks failed");
  }
}
