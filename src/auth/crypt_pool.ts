/**
 * Password checks off the event loop: a small fixed pool of Workers that
 * compute SHA-crypt strings (`crypt_worker.ts`), with a bounded queue of
 * checks waiting for a free worker. One SHA-512-crypt at 5000 rounds is
 * ~15 ms of CPU; on the daemon's one event loop, a flood of control requests
 * for unknown users would stall every live console session.
 *
 * Workers start when checks arrive and stop after a while without one (each
 * holds a V8 isolate and its own Node compatibility layer, ~50 MB of RSS, and the control panel's repeated
 * credentials are answered from `UserDb`'s cache without a crypt), and all
 * stop at {@linkcode CryptPool.close}. A worker that throws, fails to load
 * or overruns its time is terminated, its check rejects with
 * {@linkcode CryptFailedError}, and the next check starts a new one.
 *
 * @module
 */

import type { Logger } from "../log.ts";

/** A message to a crypt worker. */
export interface CryptRequest {
  /** Matches the reply to its check. */
  readonly id: number;
  readonly password: string;
  /** A `$5$`/`$6$` setting or stored crypt string (see `shaCrypt`). */
  readonly setting: string;
}

/** A crypt worker's answer: the crypt string, or the name of the error. */
export type CryptReply =
  | { readonly id: number; readonly hash: string }
  | { readonly id: number; readonly error: string };

/**
 * Thrown by {@linkcode CryptPool.crypt} when every worker is busy and the
 * queue is full: the caller answers `server busy` without a check.
 */
export class CryptBusyError extends Error {
  /** Creates a busy error. */
  constructor(message = "Too many password checks waiting", options?: ErrorOptions) {
    super(message, options);
    this.name = "CryptBusyError";
  }
}

/**
 * Thrown by {@linkcode CryptPool.crypt} when the check could not be done:
 * its worker crashed or overran its time, or the pool was closed. The
 * message never holds the password or the setting.
 */
export class CryptFailedError extends Error {
  /** Creates a failed-check error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CryptFailedError";
  }
}

/** Sizes of a {@linkcode CryptPool}. */
export interface CryptPoolOptions {
  /** Workers, at most this many running at once. */
  readonly size: number;
  /** Checks waiting for a free worker; more are refused with {@linkcode CryptBusyError}. */
  readonly queueLimit: number;
  /**
   * Longest one crypt may take before its worker is replaced. Generous: a
   * capped `rounds=` costs ~100 ms; this catches a worker that died
   * without an error event (Deno sends none when a worker closes itself).
   * @default {10_000}
   */
  readonly timeoutMs?: number;
  /**
   * How long a worker without a check stays before it is stopped. Short: a
   * live worker holds ~50 MB of RSS, stopping gives it back, and the
   * panel's repeated credentials need no worker (`UserDb`'s cache), so a
   * restart (~50 ms) is rare. @default {5_000}
   */
  readonly idleMs?: number;
}

/** Collaborators of a {@linkcode CryptPool}. */
export interface CryptPoolDeps {
  /** Where worker failures are logged. */
  readonly logger: Logger;
  /**
   * Starts one worker speaking {@linkcode CryptRequest}/{@linkcode CryptReply};
   * tests substitute one that crashes.
   * @default {a module Worker of `crypt_worker.ts`}
   */
  readonly createWorker?: () => Worker;
}

interface Check {
  readonly id: number;
  readonly password: string;
  readonly setting: string;
  readonly resolve: (hash: string) => void;
  readonly reject: (error: Error) => void;
}

interface Slot {
  readonly worker: Worker;
  readonly number: number;
  check: Check | undefined;
  /** The check's deadline while busy, the idle stop while idle. */
  timer: ReturnType<typeof setTimeout> | undefined;
}

function createCryptWorker(): Worker {
  // A static URL next to this module, so `deno compile --include` embeds it.
  return new Worker(new URL("./crypt_worker.ts", import.meta.url), { type: "module" });
}

/** A fixed pool of crypt Workers with a bounded queue; see the module doc. */
export class CryptPool implements Disposable {
  readonly #size: number;
  readonly #queueLimit: number;
  readonly #timeoutMs: number;
  readonly #idleMs: number;
  readonly #logger: Logger;
  readonly #createWorker: () => Worker;
  readonly #slots = new Set<Slot>();
  readonly #queue: Check[] = [];
  #nextId = 1;
  #nextWorker = 1;
  #closed = false;

  /**
   * Creates a pool; no worker starts before the first check.
   *
   * @throws {RangeError} when `size` is not a positive integer or
   * `queueLimit` not a non-negative one.
   */
  constructor(options: CryptPoolOptions, deps: CryptPoolDeps) {
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new RangeError(`Invalid crypt pool size "${options.size}"`);
    }
    if (!Number.isInteger(options.queueLimit) || options.queueLimit < 0) {
      throw new RangeError(`Invalid crypt queue limit "${options.queueLimit}"`);
    }
    this.#size = options.size;
    this.#queueLimit = options.queueLimit;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#idleMs = options.idleMs ?? 5_000;
    this.#logger = deps.logger;
    this.#createWorker = deps.createWorker ?? createCryptWorker;
  }

  /** Workers running now. */
  get workers(): number {
    return this.#slots.size;
  }

  /** Checks waiting for a free worker. */
  get waiting(): number {
    return this.#queue.length;
  }

  /**
   * Computes `shaCrypt(password, setting)` in a worker.
   *
   * @throws {CryptBusyError} at once when every worker is busy and the
   * queue is full.
   * @throws {CryptFailedError} when the worker failed or the pool closed.
   */
  crypt(password: string, setting: string): Promise<string> {
    if (this.#closed) return Promise.reject(new CryptFailedError("The crypt pool is closed"));
    const idle = this.#idleSlot();
    if (idle === undefined && this.#queue.length >= this.#queueLimit) {
      return Promise.reject(new CryptBusyError());
    }
    const { promise, resolve, reject } = Promise.withResolvers<string>();
    const check = { id: this.#nextId++, password, setting, resolve, reject };
    if (idle === undefined) this.#queue.push(check);
    else this.#start(idle, check);
    return promise;
  }

  /**
   * Terminates every worker; running and waiting checks reject with
   * {@linkcode CryptFailedError}. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const closed = () => new CryptFailedError("The crypt pool is closed");
    for (const check of this.#queue.splice(0)) check.reject(closed());
    for (const slot of [...this.#slots]) this.#retire(slot, closed());
  }

  /** Same as {@linkcode CryptPool.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** A running worker without a check, or a new one while the pool has room. */
  #idleSlot(): Slot | undefined {
    for (const slot of this.#slots) if (slot.check === undefined) return slot;
    if (this.#slots.size >= this.#size) return undefined;
    const worker = this.#createWorker();
    const slot: Slot = { worker, number: this.#nextWorker++, check: undefined, timer: undefined };
    worker.onmessage = (event: MessageEvent<CryptReply>) => this.#onReply(slot, event.data);
    worker.onerror = (event) => {
      // Handled here: unhandled, a worker's error is rethrown in this thread.
      event.preventDefault();
      this.#fail(slot, `threw ${event.message.split("\n")[0]}`);
    };
    worker.onmessageerror = () => this.#fail(slot, "sent a message that cannot be read");
    this.#slots.add(slot);
    this.#logger.debug(`Crypt worker ${slot.number} started`);
    return slot;
  }

  #start(slot: Slot, check: Check): void {
    clearTimeout(slot.timer);
    slot.check = check;
    slot.timer = setTimeout(
      () => this.#fail(slot, `took more than ${this.#timeoutMs} ms`),
      this.#timeoutMs,
    );
    const request: CryptRequest = {
      id: check.id,
      password: check.password,
      setting: check.setting,
    };
    slot.worker.postMessage(request);
  }

  #onReply(slot: Slot, reply: CryptReply): void {
    const check = slot.check;
    if (check === undefined || reply.id !== check.id) return;
    clearTimeout(slot.timer);
    slot.check = undefined;
    slot.timer = undefined;
    if ("hash" in reply) check.resolve(reply.hash);
    else check.reject(new CryptFailedError(`The crypt failed: ${reply.error}`));
    this.#next(slot);
  }

  /** Replaces a broken worker; its check fails, the queue goes on. */
  #fail(slot: Slot, what: string): void {
    if (!this.#slots.has(slot)) return;
    this.#logger.error(`Crypt worker ${slot.number} ${what}: replacing it`);
    this.#retire(slot, new CryptFailedError(`The crypt worker ${what}`));
    const next = this.#queue.length > 0 ? this.#idleSlot() : undefined;
    if (next !== undefined) this.#next(next);
  }

  #retire(slot: Slot, error: Error): void {
    this.#slots.delete(slot);
    clearTimeout(slot.timer);
    slot.worker.terminate();
    const check = slot.check;
    slot.check = undefined;
    check?.reject(error);
  }

  #next(slot: Slot): void {
    const check = this.#queue.shift();
    if (check !== undefined) return this.#start(slot, check);
    slot.timer = setTimeout(() => {
      this.#slots.delete(slot);
      slot.worker.terminate();
      this.#logger.debug(`Crypt worker ${slot.number} stopped after ${this.#idleMs} ms idle`);
    }, this.#idleMs);
  }
}
