/**
 * {@linkcode UserDb}: the control users, loaded from a users file, checking
 * control passwords in constant time with a cache of correct ones.
 *
 * @module
 */

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import { shaCrypt } from "./sha_crypt.ts";
import { hashProblem, parseUsersFile } from "./users_file.ts";

/**
 * Computes a crypt string (see `shaCrypt`), synchronously or not: the
 * daemon passes `CryptPool.crypt`, which runs it in a Worker.
 */
export type CryptFunction = (password: string, setting: string) => string | Promise<string>;

/** Options of the {@linkcode UserDb} constructor. */
export interface UserDbOptions {
  /** The crypt implementation: a Worker pool in the daemon, a fake in tests. @default {shaCrypt} */
  readonly crypt?: CryptFunction;
  /** Most successful verifications remembered. @default {1024} */
  readonly cacheSize?: number;
  /** Largest `rounds=` a hash may have. @default {999_999_999} */
  readonly maxRounds?: number;
}

/**
 * A well-formed `$6$` hash with the default rounds that no password is
 * checked against for real: unknown users are crypt-ed against it so they
 * cost as much as a wrong password.
 */
const DUMMY_HASH = "$6$unknownuserdummy$" + ".".repeat(86);

/**
 * The control users, loaded once, checking passwords in constant time.
 *
 * Successful verifications are cached: SHA-512-crypt at 5000 rounds costs
 * about 15 ms of CPU, and the control panel sends the same credentials with
 * every request. The cache holds HMAC-SHA256 digests, under a random key
 * made per `UserDb`, of the user, the password and the stored hash; a wrong
 * password never enters it, a changed hash misses it, and a reload (a new
 * `UserDb`) starts empty. The trade-off: anyone who can read this process's
 * memory gets the key and digests of recently used passwords, which are
 * much faster to brute-force than SHA-512-crypt (though such a reader can
 * also see the passwords in request buffers), and a correct password
 * answers measurably faster on its second use, which only tells an observer
 * what the reply already does.
 */
export class UserDb {
  readonly #users: ReadonlyMap<string, string>;
  readonly #crypt: CryptFunction;
  readonly #cacheSize: number;
  readonly #cacheKey = randomBytes(32);
  readonly #cache = new Set<string>();

  /**
   * Creates a database from user name to stored crypt string.
   *
   * @throws {SyntaxError} when a hash is not a `$5$`/`$6$` crypt string or
   * has more rounds than `options.maxRounds`.
   */
  constructor(
    entries: ReadonlyMap<string, string>,
    options: UserDbOptions = {},
  ) {
    for (const [user, hash] of entries) {
      const problem = hashProblem(user, hash, options);
      if (problem !== undefined) {
        throw new SyntaxError(problem.charAt(0).toUpperCase() + problem.slice(1));
      }
    }
    this.#users = new Map(entries);
    this.#crypt = options.crypt ?? shaCrypt;
    this.#cacheSize = options.cacheSize ?? 1024;
  }

  /** Returns a database without users: every verification fails. */
  static empty(options?: UserDbOptions): UserDb {
    return new UserDb(new Map(), options);
  }

  /**
   * Parses the text of a users file; see `parseUsersFile`.
   *
   * @throws {SyntaxError} on a malformed line or one above `options.maxRounds`.
   */
  static fromText(text: string, options?: UserDbOptions): UserDb {
    return new UserDb(parseUsersFile(text, options), options);
  }

  /**
   * Reads and parses the users file at `path`.
   *
   * @throws {Deno.errors.NotFound} when the file does not exist; the caller
   * decides whether that is fatal.
   * @throws {SyntaxError} on a malformed line, naming `path`.
   */
  static async load(path: string, options?: UserDbOptions): Promise<UserDb> {
    const text = await Deno.readTextFile(path);
    try {
      return UserDb.fromText(text, options);
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      throw new SyntaxError(
        `Cannot load auth file "${path}": ${error.message}`,
        { cause: error },
      );
    }
  }

  /** Number of users. */
  get size(): number {
    return this.#users.size;
  }

  /** Whether `user` exists. */
  has(user: string): boolean {
    return this.#users.has(user);
  }

  /** User names, in file order. */
  users(): string[] {
    return [...this.#users.keys()];
  }

  /**
   * Whether `password` for `user` was verified recently: answered from the
   * cache on this thread, without a crypt. False says nothing about the
   * password; {@linkcode UserDb.verify} decides.
   */
  verifyCached(user: string, password: string): boolean {
    const stored = this.#users.get(user);
    return stored !== undefined && this.#cache.has(this.#digest(user, password, stored));
  }

  /**
   * Checks `password` for `user`. Runs a full crypt (against a dummy hash
   * for an unknown user) and compares in constant time, so an unknown user
   * costs as much as a wrong password; a repeat of a recently verified
   * password is answered from the cache.
   *
   * @throws whatever the crypt function throws (`CryptBusyError`,
   * `CryptFailedError` from the daemon's pool).
   */
  async verify(user: string, password: string): Promise<boolean> {
    const stored = this.#users.get(user);
    const expected = stored ?? DUMMY_HASH;
    const digest = this.#digest(user, password, expected);
    if (stored !== undefined && this.#cache.has(digest)) return true;

    const actual = Buffer.from(await this.#crypt(password, expected), "utf8");
    const wanted = Buffer.from(expected, "utf8");
    const sameLength = actual.length === wanted.length;
    const equal = timingSafeEqual(sameLength ? actual : wanted, wanted) &&
      sameLength;
    if (!equal || stored === undefined) return false;
    if (this.#cache.size >= this.#cacheSize) this.#cache.clear();
    this.#cache.add(digest);
    return true;
  }

  #digest(user: string, password: string, hash: string): string {
    // JSON of an array is an unambiguous encoding of the three strings.
    return createHmac("sha256", this.#cacheKey)
      .update(JSON.stringify([user, password, hash]))
      .digest("hex");
  }
}
