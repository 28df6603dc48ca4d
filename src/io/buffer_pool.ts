/**
 * Relay buffers shared by all sessions. An idle session holds only its own
 * tiny buffers; a session moving bulk data borrows larger ones here and
 * gives them back when its traffic calms down, so memory follows the
 * traffic, not the number of sessions. The daemon makes one pool from its
 * `Config` and hands it to every relay; tests make their own.
 *
 * Two bounds: the pool keeps at most `maxIdleBytes` of free buffers for
 * reuse (the rest become garbage, so after a burst the process gives the
 * memory back), and while more than `maxLentBytes` are lent out, further
 * requests get a smaller size, so a burst of thousands of sessions
 * streaming at once cannot claim a megabyte each.
 *
 * @module
 */

/** Options of {@linkcode BufferPool}. */
export interface BufferPoolOptions {
  /** Free bytes kept for reuse. @default {4 MiB} */
  readonly maxIdleBytes?: number;
  /** Bytes lent out before requests are scaled down. @default {64 MiB} */
  readonly maxLentBytes?: number;
  /** Size handed out once `maxLentBytes` is reached. @default {16 KiB} */
  readonly fallbackSize?: number;
}

/** A pool of byte buffers in power-of-two sizes. */
export class BufferPool {
  readonly #free = new Map<number, Uint8Array[]>();
  readonly #maxIdleBytes: number;
  readonly #maxLentBytes: number;
  readonly #fallbackSize: number;
  #idleBytes = 0;
  #lentBytes = 0;

  /** Creates an empty pool. */
  constructor(options: BufferPoolOptions = {}) {
    this.#maxIdleBytes = options.maxIdleBytes ?? 4 * 1024 * 1024;
    this.#maxLentBytes = options.maxLentBytes ?? 64 * 1024 * 1024;
    this.#fallbackSize = options.fallbackSize ?? 16 * 1024;
  }

  /** Bytes currently lent out. */
  get lentBytes(): number {
    return this.#lentBytes;
  }

  /** Free bytes kept for reuse. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /**
   * Lends a buffer of `size` bytes (a power of two), or of the fallback
   * size while the pool has lent out too much. Give it back with
   * {@linkcode give}.
   */
  take(size: number): Uint8Array {
    const granted = this.#lentBytes + size > this.#maxLentBytes
      ? Math.min(size, this.#fallbackSize)
      : size;
    const reused = this.#free.get(granted)?.pop();
    if (reused !== undefined) this.#idleBytes -= granted;
    this.#lentBytes += granted;
    return reused ?? new Uint8Array(granted);
  }

  /** Takes a buffer back; the caller must not use it any more. */
  give(buffer: Uint8Array): void {
    this.#lentBytes -= buffer.length;
    if (this.#idleBytes + buffer.length > this.#maxIdleBytes) return;
    let list = this.#free.get(buffer.length);
    if (list === undefined) this.#free.set(buffer.length, list = []);
    list.push(buffer);
    this.#idleBytes += buffer.length;
  }
}
