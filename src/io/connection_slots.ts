/**
 * A capped set of connections that have not yet completed their request (a
 * control request, a WebSocket upgrade), built so that a flood of idle or
 * slow connections cannot lock out a real client from the same address:
 * when the cap is reached, the pending connection that has been idle
 * longest is closed to make room, not the newcomer.
 *
 * Idle means the time since the connection's last received byte, or since
 * it was admitted if none came yet. A flood of silent connections therefore
 * evicts itself, oldest first, and a client that sends its request at once
 * is never the one idle longest for more than a round trip. A slow client
 * dribbling one byte a second stays as long as it is not the idlest.
 *
 * Recording activity is one timestamp store per read; the idlest connection
 * is found by a scan only when the set is full, so there is no timer and no
 * reordering per read.
 *
 * @module
 */

import type { Logger } from "../log.ts";

/** Options of {@linkcode ConnectionSlots}. */
export interface ConnectionSlotsOptions {
  /**
   * Connections held at once, pending or completed. At the cap, the idlest
   * pending connection is evicted; when every slot is held by a completed
   * connection, the newcomer is refused.
   */
  readonly capacity: number;
  /** Where evictions are logged. */
  readonly logger: Logger;
  /** What the connections are, for log lines. @default {"Connection"} */
  readonly what?: string;
  /** Monotonic clock in milliseconds. @default {() => performance.now()} */
  readonly now?: () => number;
}

/** One admitted connection's place in a {@linkcode ConnectionSlots}. */
export interface ConnectionSlot extends Disposable {
  /** The peer's address, for the eviction log line. */
  readonly address: string;
  /** True once the connection was evicted (its socket is closed). */
  readonly evicted: boolean;
  /** Records that bytes arrived: the connection is not idle. Call after every read. */
  touch(): void;
  /**
   * Marks the request as complete: the connection can no longer be evicted,
   * and it holds its slot until released.
   */
  complete(): void;
  /** Gives the slot back; idempotent, and a no-op after an eviction. */
  [Symbol.dispose](): void;
}

/** At most one warning per this many milliseconds; the other evictions log at debug. */
const WARN_INTERVAL_MS = 10_000;

/**
 * A capped set of connections in their pre-request phase, where reaching
 * the cap drops the connection idle longest, not the new one.
 */
export class ConnectionSlots {
  readonly #capacity: number;
  readonly #logger: Logger;
  readonly #what: string;
  readonly #now: () => number;
  /** Pending slots, in admission order (which breaks ties between equal idle times). */
  readonly #pending = new Set<Slot>();
  #completed = 0;
  #lastWarning = -Infinity;

  /** Keeps the counts in step with a slot's state; passed to every slot. */
  readonly #onMove = (slot: Slot, from: SlotState, to: SlotState): void => {
    if (from === "pending") this.#pending.delete(slot);
    else this.#completed--;
    if (to === "completed") this.#completed++;
  };

  /** @throws {RangeError} when `capacity` is not a positive integer. */
  constructor(options: ConnectionSlotsOptions) {
    if (!Number.isInteger(options.capacity) || options.capacity < 1) {
      throw new RangeError(
        `Connection capacity must be a positive integer, got ${options.capacity}`,
      );
    }
    this.#capacity = options.capacity;
    this.#logger = options.logger;
    this.#what = options.what ?? "Connection";
    this.#now = options.now ?? (() => performance.now());
  }

  /** Connections holding a slot, pending or completed. */
  get size(): number {
    return this.#pending.size + this.#completed;
  }

  /** Connections still in their pre-request phase (evictable). */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * Admits a new connection from `address`, whose `close` ends it (and so its
   * pending read). When the set is full, first evicts the pending connection
   * idle longest by calling its `close`; that frees its slot at once, so the
   * newcomer never waits for the victim's handler to end.
   *
   * @returns the new slot, or `undefined` when every slot is held by a
   * completed connection (refuse the newcomer).
   */
  admit(address: string, close: () => void): ConnectionSlot | undefined {
    if (this.size >= this.#capacity && !this.#evictIdlest(address)) return undefined;
    const slot = new Slot(address, close, this.#now, this.#onMove);
    this.#pending.add(slot);
    return slot;
  }

  #evictIdlest(newcomer: string): boolean {
    let victim: Slot | undefined;
    for (const slot of this.#pending) {
      if (victim === undefined || slot.lastActive < victim.lastActive) victim = slot;
    }
    if (victim === undefined) return false;
    const now = this.#now();
    const idleMs = Math.round(now - victim.lastActive);
    const message = `${this.#what} cap of ${this.#capacity} reached: dropped the one idle ` +
      `longest (${idleMs} ms), from ${victim.address}, for ${newcomer}`;
    if (now - this.#lastWarning >= WARN_INTERVAL_MS) {
      this.#lastWarning = now;
      this.#logger.warn(
        `${message} (more such drops log at debug for ${WARN_INTERVAL_MS / 1000} s)`,
      );
    } else {
      this.#logger.debug(message);
    }
    victim.evict();
    return true;
  }
}

type SlotState = "pending" | "completed" | "released" | "evicted";

class Slot implements ConnectionSlot {
  readonly #close: () => void;
  readonly #now: () => number;
  readonly #onMove: (slot: Slot, from: SlotState, to: SlotState) => void;
  #state: SlotState = "pending";
  readonly address: string;
  /** When the last byte arrived (or the slot was taken); read by the owner's scan. */
  lastActive: number;

  constructor(
    address: string,
    close: () => void,
    now: () => number,
    onMove: (slot: Slot, from: SlotState, to: SlotState) => void,
  ) {
    this.address = address;
    this.#close = close;
    this.#now = now;
    this.#onMove = onMove;
    this.lastActive = now();
  }

  get evicted(): boolean {
    return this.#state === "evicted";
  }

  touch(): void {
    this.lastActive = this.#now();
  }

  complete(): void {
    if (this.#state === "pending") this.#move("completed");
  }

  /** Frees the slot at once, then closes the connection (its handler ends later). */
  evict(): void {
    this.#move("evicted");
    this.#close();
  }

  [Symbol.dispose](): void {
    this.#move("released");
  }

  #move(to: SlotState): void {
    const from = this.#state;
    if (from === "released" || from === "evicted") return;
    this.#state = to;
    this.#onMove(this, from, to);
  }
}
