/**
 * Where a viewer meets its forwarding by the one-time password alone (the
 * gateway's snf password mode, for panels that change nothing): the viewer
 * is sent a challenge and its VNC Authentication response (RFC 6143
 * §7.2.2) picks the pending forwarding whose password answers it.
 *
 * That only works if no two pending passwords are the same DES key, so a
 * registration that would collide is refused; DES sees only the first 8
 * bytes, NUL-padded, and ignores bit 7 of each (see `vnc_auth.ts`), so
 * `password1` and `password2` collide, as do `é` and `i`.
 *
 * A match costs one DES block per pending forwarding (two for the one that
 * matches), with the key schedules computed at registration: 0.2 to 0.5 ms
 * for 1,000 pending on these machines, so it runs in one synchronous step,
 * which also makes the take atomic.
 *
 * @module
 */

import { RefusalError } from "../errors.ts";
import { CHALLENGE_LENGTH } from "../rfb/rfb_messages.ts";
import { VncAuthKey } from "../rfb/vnc_auth.ts";

/**
 * A password refused because it is the same DES key as a pending
 * forwarding's. The message holds no password, so it can go back to the
 * control client as the reason.
 */
export class PasswordCollisionError extends RefusalError {
  /** Creates the refusal. */
  constructor(options?: ErrorOptions) {
    super(
      "The password is the same VNC key as a pending forwarding's (first 8 characters, bit 7 ignored)",
      options,
    );
    this.name = "PasswordCollisionError";
  }
}

/** Pending forwardings keyed by their one-time VNC password; see the module doc. */
export class PasswordRendezvous<T> {
  /** Insertion-ordered, so a match tries the oldest first. */
  readonly #pending = new Map<T, VncAuthKey>();

  /** Forwardings pending now. */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * Adds `entry`, to be matched by a response made with `password`
   * (Latin-1, as the control request parser ensures).
   *
   * @throws {PasswordCollisionError} when `password` is the same DES key as
   * a pending entry's.
   * @throws {TypeError} when `entry` is pending already.
   */
  register(password: string, entry: T): void {
    if (this.#pending.has(entry)) throw new TypeError("The entry is pending already");
    const key = new VncAuthKey(password);
    for (const other of this.#pending.values()) {
      if (key.sameKey(other)) {
        key.clear();
        throw new PasswordCollisionError();
      }
    }
    this.#pending.set(entry, key);
  }

  /**
   * Takes the entry whose password answers `challenge` with `response`,
   * or returns `undefined` (a wrong response takes nothing). Of two
   * matches of one entry only the first gets it.
   *
   * @throws {RangeError} when `challenge` is not 16 bytes.
   */
  match(challenge: Uint8Array, response: Uint8Array): T | undefined {
    if (challenge.length !== CHALLENGE_LENGTH) {
      throw new RangeError(`Challenge must be ${CHALLENGE_LENGTH} bytes, got ${challenge.length}`);
    }
    for (const [entry, key] of this.#pending) {
      if (key.verify(challenge, response)) {
        this.#pending.delete(entry);
        key.clear();
        return entry;
      }
    }
    return undefined;
  }

  /** Drops `entry` (its viewer will not come); false if it was not pending. */
  remove(entry: T): boolean {
    const key = this.#pending.get(entry);
    if (key === undefined) return false;
    this.#pending.delete(entry);
    key.clear();
    return true;
  }

  /** What `Deno.inspect` and `console.log` show: a count, no key. */
  [Symbol.for("Deno.customInspect")](): string {
    return `PasswordRendezvous { pending: ${this.#pending.size} }`;
  }
}
