/**
 * A {@linkcode TokenStore} shared by several instances through Redis, so
 * a token minted on one is redeemed, once, on whichever the viewer
 * reaches.
 *
 * Each token is a Redis string under `<prefix><SHA-256 hex of the token>`,
 * set with `PX <ttl> NX` so Redis expires it with the token. Its value:
 *
 * | byte(s)  | content                                                    |
 * | -------- | ---------------------------------------------------------- |
 * | 0        | format version, 1                                          |
 * | 1        | 1 when bound to a client address, else 0                   |
 * | 2..33    | the address tag (only when bound; see `token_seal.ts`)     |
 * | rest     | the sealed handover (see `token_seal.ts`)                  |
 *
 * A claim is one Lua script, atomic in Redis: a missing key is `unknown`;
 * a tag that is not the viewer's is `wrong-address` and the key stays;
 * otherwise the key is deleted and its value returned. Of concurrent
 * claims of one token on any number of instances, exactly one gets it.
 *
 * The instance that minted a token keeps its entry (the pinned backend
 * connection) in a {@linkcode MemoryTokenStore}: a claim there gets the
 * entry itself; a claim elsewhere gets the handover, for that instance to
 * open the session on its own. When Redis says a token this instance
 * still holds is gone (redeemed elsewhere, or expired), it is dropped here
 * and expired, so its owner releases what it pinned. Closing the store
 * expires the local entries but leaves their keys in Redis: another
 * instance still redeems them.
 *
 * The store does not own its Redis client: whoever made it closes it.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { concatBytes } from "../io/bytes.ts";
import { canonicalIp } from "../io/ip_address.ts";
import { RedisError, RedisUnavailableError } from "./redis/redis_client.ts";
import type { RespValue } from "./redis/resp.ts";
import { ADDRESS_TAG_BYTES, type TokenStoreKey } from "./token_seal.ts";
import {
  HASH_PREFIX_LENGTH,
  hashToken,
  type IssuedToken,
  MemoryTokenStore,
  type MemoryTokenStoreDeps,
  type TokenClaim,
  type TokenIssueOptions,
  type TokenStore,
  TokenStoreUnavailableError,
} from "./token_store.ts";

/** Default prefix of the store's Redis keys. */
export const DEFAULT_TOKEN_KEY_PREFIX = "vncauthproxy:token:";

/** Format version of a stored value (its first byte). */
const VALUE_VERSION = 1;

/**
 * The claim, atomic in Redis. Returns 0 when the key is missing (or of
 * another format version, left alone), 1 when it is bound to another
 * address tag (left alone), else deletes it and returns its value.
 */
const CLAIM_SCRIPT = `local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if string.byte(v, 1) ~= ${VALUE_VERSION} then return 0 end
if string.byte(v, 2) == 1 and string.sub(v, 3, ${
  2 + ADDRESS_TAG_BYTES
}) ~= ARGV[1] then return 1 end
redis.call('DEL', KEYS[1])
return v`;

const CLAIM_SHA = createHash("sha1").update(CLAIM_SCRIPT).digest("hex");

/** What the store needs of a Redis client ({@linkcode RedisClient} has it). */
export interface RedisCommands {
  /** Sends a command; rejects with `RedisError` or `RedisUnavailableError`. */
  command(args: readonly (string | Uint8Array)[]): Promise<RespValue>;
  /** Whether the server is reachable, as last known. */
  readonly available: boolean;
}

/** Options of {@linkcode RedisTokenStore}. */
export interface RedisTokenStoreOptions<T> {
  /** The Redis client (not closed by the store). */
  readonly client: RedisCommands;
  /** The key shared by every instance (`loadTokenStoreKey`). */
  readonly key: TokenStoreKey;
  /**
   * Called exactly once for each entry of this instance whose token
   * expires unclaimed, is found gone from Redis, or is pending at
   * {@linkcode RedisTokenStore.close}. It must not throw.
   */
  readonly onExpire: (entry: T) => void;
  /** Longest lifetime a token may get; longer requests are capped. */
  readonly maxTtlMs: number;
  /** See `MemoryTokenStoreOptions.sweepIntervalMs`. @default {100} */
  readonly sweepIntervalMs?: number;
  /** Prefix of the Redis keys. @default {"vncauthproxy:token:"} */
  readonly keyPrefix?: string;
}

/** The Redis-backed {@linkcode TokenStore} (see the module's documentation). */
export class RedisTokenStore<T> implements TokenStore<T>, AsyncDisposable {
  readonly #client: RedisCommands;
  readonly #key: TokenStoreKey;
  readonly #onExpire: (entry: T) => void;
  readonly #prefix: string;
  /** This instance's pending entries, with the backend connections they pin. */
  readonly #memory: MemoryTokenStore<T>;
  #closed = false;

  /**
   * Creates a store over `options.client`.
   *
   * @throws {RangeError} as {@linkcode MemoryTokenStore} does.
   */
  constructor(options: RedisTokenStoreOptions<T>, deps: MemoryTokenStoreDeps = {}) {
    this.#client = options.client;
    this.#key = options.key;
    this.#onExpire = options.onExpire;
    this.#prefix = options.keyPrefix ?? DEFAULT_TOKEN_KEY_PREFIX;
    this.#memory = new MemoryTokenStore<T>({
      maxTtlMs: options.maxTtlMs,
      ...(options.sweepIntervalMs === undefined
        ? {}
        : { sweepIntervalMs: options.sweepIntervalMs }),
      onExpire: (entry) => this.#onExpire(entry),
    }, deps);
  }

  /** Tokens of this instance pending now. */
  get size(): number {
    return this.#memory.size;
  }

  /** {@inheritDoc TokenStore.available} */
  get available(): boolean {
    return !this.#closed && this.#client.available;
  }

  /**
   * {@inheritDoc TokenStore.issue}
   *
   * @throws {TypeError} without `options.handover`.
   */
  async issue(entry: T, options: TokenIssueOptions): Promise<IssuedToken> {
    const handover = options.handover;
    if (handover === undefined) throw new TypeError("A shared token store needs a handover");
    const issued = await this.#memory.issue(entry, {
      ttlMs: options.ttlMs,
      ...(options.clientAddress === undefined ? {} : { clientAddress: options.clientAddress }),
    });
    const redisKey = this.#prefix + hashToken(issued.token);
    const address = options.clientAddress === undefined
      ? undefined
      : canonicalIp(options.clientAddress);
    const plain = handover();
    let sealed: Uint8Array;
    try {
      sealed = this.#key.seal(plain, issued.token, redisKey);
    } finally {
      plain.fill(0);
    }
    const tag = address === undefined ? undefined : this.#key.addressTag(address, redisKey);
    const value = concatBytes([
      Uint8Array.of(VALUE_VERSION, tag === undefined ? 0 : 1),
      ...(tag === undefined ? [] : [tag]),
      sealed,
    ]);
    const ttl = String(Math.max(1, Math.ceil(issued.ttlMs)));
    try {
      const reply = await this.#client.command(["SET", redisKey, value, "PX", ttl, "NX"]);
      // NX refuses only a key in use: a 256-bit token drawn twice.
      if (reply !== "OK") throw new RedisUnavailableError("Redis did not store the token");
    } catch (error) {
      await this.#memory.remove(entry);
      // The SET may have reached Redis before its deadline passed: no one
      // has the token, but do not leave its key for its whole lifetime.
      this.#client.command(["DEL", redisKey]).catch(() => {});
      throw new TokenStoreUnavailableError(undefined, { cause: error });
    }
    return issued;
  }

  /** {@inheritDoc TokenStore.claim} */
  async claim(token: string, viewerAddress: string): Promise<TokenClaim<T>> {
    const hash = hashToken(token);
    const hashPrefix = hash.slice(0, HASH_PREFIX_LENGTH);
    if (this.#closed) return { ok: false, why: "unavailable", hashPrefix };
    const redisKey = this.#prefix + hash;
    const viewer = canonicalIp(viewerAddress) ?? viewerAddress;
    let reply: RespValue;
    try {
      reply = await this.#runClaim(redisKey, this.#key.addressTag(viewer, redisKey));
    } catch (error) {
      if (error instanceof RedisError || error instanceof RedisUnavailableError) {
        return { ok: false, why: "unavailable", hashPrefix };
      }
      throw error;
    }
    if (reply === 1) return { ok: false, why: "wrong-address", hashPrefix };
    const local = this.#memory.entryOf(hash);
    if (!(reply instanceof Uint8Array)) {
      // Gone from Redis: redeemed on another instance, or expired there.
      if (local !== undefined) await this.#expireHere(local);
      return { ok: false, why: "unknown", hashPrefix };
    }
    if (local !== undefined) {
      const claimed = await this.#memory.claim(token, viewerAddress);
      if (claimed.ok) return claimed;
      // Expired here a moment before Redis expired it: the handover serves.
      if (this.#memory.hashOf(local) !== undefined) await this.#expireHere(local);
    }
    const handover = this.#openValue(reply, token, redisKey);
    if (handover === undefined) return { ok: false, why: "unknown", hashPrefix };
    return { ok: true, entry: undefined, handover, hashPrefix };
  }

  /** {@inheritDoc TokenStore.remove} */
  async remove(entry: T, options: { readonly keepShared?: boolean } = {}): Promise<boolean> {
    const hash = this.#memory.hashOf(entry);
    const removed = await this.#memory.remove(entry);
    if (hash !== undefined && options.keepShared !== true) {
      try {
        await this.#client.command(["DEL", this.#prefix + hash]);
      } catch {
        // Best effort: Redis expires the key with the token anyway.
      }
    }
    return removed;
  }

  /**
   * {@inheritDoc TokenStore.close}
   *
   * The tokens stay in Redis, redeemable on other instances; the client
   * stays open.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#memory.close();
  }

  /** Closes the store ({@linkcode close}). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** What `Deno.inspect` shows: counts and state, no token, hash or key. */
  [Symbol.for("Deno.customInspect")](): string {
    const state = this.#closed ? "closed" : this.available ? "available" : "unavailable";
    return `RedisTokenStore { pending: ${this.#memory.size}, ${state} }`;
  }

  /** The claim script by its hash, loading it on `NOSCRIPT` (a restarted or new server). */
  async #runClaim(redisKey: string, tag: Uint8Array): Promise<RespValue> {
    try {
      return await this.#client.command(["EVALSHA", CLAIM_SHA, "1", redisKey, tag]);
    } catch (error) {
      if (!(error instanceof RedisError) || error.code !== "NOSCRIPT") throw error;
      return await this.#client.command(["EVAL", CLAIM_SCRIPT, "1", redisKey, tag]);
    }
  }

  /** The handover in a stored value, or undefined when it does not open. */
  #openValue(value: Uint8Array, token: string, redisKey: string): Uint8Array | undefined {
    if (value.length < 2 || value[0] !== VALUE_VERSION) return undefined;
    const offset = 2 + (value[1] === 1 ? ADDRESS_TAG_BYTES : 0);
    if (value.length < offset) return undefined;
    return this.#key.open(value.subarray(offset), token, redisKey);
  }

  /** Drops a local entry whose token Redis no longer has, and tells its owner. */
  async #expireHere(entry: T): Promise<void> {
    const removed = await this.#memory.remove(entry);
    if (removed) this.#onExpire(entry);
  }
}
