/**
 * The pool of ports forwardings listen on. A port is never handed out twice
 * and goes back exactly once, through its lease.
 *
 * Freed ports rest for a cooldown before they are preferred again, so a
 * viewer that lingers on an old port number meets a closed port rather than
 * a stranger's console (the port reuse of nova CVE-2013-0335); when only resting ports are left, the
 * one that has rested longest is used rather than failing.
 *
 * @module
 */

import { RefusalError } from "../errors.ts";

/** A port taken from the pool; releasing it is idempotent. */
export interface PortLease extends Disposable {
  /** The port number. */
  readonly port: number;
  /** Gives the port back (once; later calls do nothing). */
  release(): void;
}

/** Options of {@linkcode PortPool}. */
export interface PortPoolOptions {
  /** Time a freed port rests, in milliseconds. @default {0} */
  readonly cooldownMs?: number;
  /** Clock in milliseconds, for tests. @default {performance.now} */
  readonly now?: () => number;
  /** Random integer in [0, n), for tests. @default {crypto-based} */
  readonly randomInt?: (n: number) => number;
}

function cryptoRandomInt(n: number): number {
  // Rejection sampling avoids modulo bias.
  const limit = Math.floor(0x1_0000_0000 / n) * n;
  const word = new Uint32Array(1);
  do crypto.getRandomValues(word); while (word[0]! >= limit);
  return word[0]! % n;
}

/** The port pool of one daemon. */
export class PortPool {
  readonly #min: number;
  readonly #max: number;
  readonly #free: number[] = [];
  /** Freed ports in release order, each with the time it may be reused. */
  readonly #resting: { port: number; until: number }[] = [];
  /** Every port currently leased, inside or outside the range. */
  readonly #leased = new Set<number>();
  readonly #cooldownMs: number;
  readonly #now: () => number;
  readonly #randomInt: (n: number) => number;

  /** Creates a pool of the ports `min`..`max` inclusive. */
  constructor(min: number, max: number, options: PortPoolOptions = {}) {
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max > 65535 || min > max) {
      throw new RangeError(`Invalid port range "${min}-${max}"`);
    }
    this.#min = min;
    this.#max = max;
    for (let port = min; port <= max; port++) this.#free.push(port);
    this.#cooldownMs = options.cooldownMs ?? 0;
    this.#now = options.now ?? (() => performance.now());
    this.#randomInt = options.randomInt ?? cryptoRandomInt;
  }

  /** Number of ports in the range. */
  get size(): number {
    return this.#max - this.#min + 1;
  }

  /** Ports of the range not leased now (resting ones included). */
  get available(): number {
    return this.#free.length + this.#resting.length;
  }

  /** True when `port` lies in the pool's range. */
  contains(port: number): boolean {
    return port >= this.#min && port <= this.#max;
  }

  /** True when `port` is in the range and not leased now (resting counts as free). */
  isAvailable(port: number): boolean {
    return this.contains(port) && !this.#leased.has(port);
  }

  /**
   * Leases `requested`, or a random free port when it is 0.
   *
   * A requested port inside the range is taken out of the pool while used;
   * one outside it is only tracked, so it cannot be handed out twice.
   *
   * @throws {RefusalError} `no free ports` or `source port in use`.
   */
  acquire(requested = 0): PortLease {
    if (requested !== 0) return this.#acquireRequested(requested);
    this.#wakeRested();
    let port: number;
    if (this.#free.length > 0) {
      const index = this.#randomInt(this.#free.length);
      port = this.#free[index]!;
      this.#free[index] = this.#free[this.#free.length - 1]!;
      this.#free.pop();
    } else if (this.#resting.length > 0) {
      port = this.#resting.shift()!.port;
    } else {
      throw new RefusalError("no free ports");
    }
    return this.#lease(port);
  }

  #acquireRequested(port: number): PortLease {
    if (this.#leased.has(port)) throw new RefusalError("source port in use");
    if (this.contains(port)) {
      const free = this.#free.indexOf(port);
      if (free !== -1) {
        this.#free[free] = this.#free[this.#free.length - 1]!;
        this.#free.pop();
      } else {
        const resting = this.#resting.findIndex((entry) => entry.port === port);
        this.#resting.splice(resting, 1);
      }
    }
    return this.#lease(port);
  }

  #lease(port: number): PortLease {
    this.#leased.add(port);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#leased.delete(port);
      if (!this.contains(port)) return;
      if (this.#cooldownMs > 0) {
        this.#resting.push({ port, until: this.#now() + this.#cooldownMs });
      } else {
        this.#free.push(port);
      }
    };
    return { port, release, [Symbol.dispose]: release };
  }

  #wakeRested(): void {
    const now = this.#now();
    while (this.#resting.length > 0 && this.#resting[0]!.until <= now) {
      this.#free.push(this.#resting.shift()!.port);
    }
  }
}
