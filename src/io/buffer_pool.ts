/**
 * Relay buffers shared by all sessions. An idle session holds only its own
 * tiny buffers; a session moving bulk data borrows larger ones here and
 * gives them back when its traffic calms down, so memory follows the
 * traffic, not the number of sessions. The daemon makes one pool from its
 * `Config` and hands it to every relay; tests make their own.
 *
 * Two bounds: the pool keeps at most `maxIdleBytes` of free buffers for
 * reuse (the rest become garbage, so after a burst the process gives the
 * memory back), and while more than `maxLentBytes` would be lent out, a
 * request gets a fair share instead: `maxLentBytes` divided among the
 * buffers lent, rounded down to a power of two, never below `fallbackSize`.
 * So a burst of thousands of sessions streaming at once cannot claim a
 * megabyte each, yet 1,000 of them still read 64 KiB at a time under the
 * default 64 MiB, and a session that took a large buffer while the pool was
 * quiet shrinks to its share at its next growth step
 * ({@linkcode BufferPool.resize}).
 *
 * And a crowd's size: while `crowdCount` or more other buffers are lent, no
 * buffer is larger than `crowdSize`. One stream alone reads a megabyte at a
 * time, but a crowd reads best in smaller pieces that stay in the CPU's
 * cache between the copy in and the copy out: 1,000 sessions streaming at
 * once moved a third more through 256 KiB buffers than through the 1 MiB
 * ones the first few hundred took before the fair share set in, with a
 * third of the allocations and page faults (bench machine, 2 cores).
 *
 * @module
 */

/** Options of {@linkcode BufferPool}. */
export interface BufferPoolOptions {
  /** Free bytes kept for reuse. @default {4 MiB} */
  readonly maxIdleBytes?: number;
  /** Bytes lent out before requests get a fair share. @default {64 MiB} */
  readonly maxLentBytes?: number;
  /** The smallest share, whatever is lent out. @default {16 KiB} */
  readonly fallbackSize?: number;
  /** Other buffers lent out from which requests are capped at `crowdSize`. @default {8} */
  readonly crowdCount?: number;
  /** The largest buffer a crowd gets. @default {256 KiB} */
  readonly crowdSize?: number;
}

/** A pool of byte buffers in power-of-two sizes. */
export class BufferPool {
  readonly #free = new Map<number, Uint8Array[]>();
  readonly #maxIdleBytes: number;
  readonly #maxLentBytes: number;
  readonly #fallbackSize: number;
  readonly #crowdCount: number;
  readonly #crowdSize: number;
  #idleBytes = 0;
  #lentBytes = 0;
  #lentCount = 0;

  /** Creates an empty pool. */
  constructor(options: BufferPoolOptions = {}) {
    this.#maxIdleBytes = options.maxIdleBytes ?? 4 * 1024 * 1024;
    this.#maxLentBytes = options.maxLentBytes ?? 64 * 1024 * 1024;
    this.#fallbackSize = options.fallbackSize ?? 16 * 1024;
    this.#crowdCount = options.crowdCount ?? 8;
    this.#crowdSize = options.crowdSize ?? 256 * 1024;
  }

  /** Bytes currently lent out. */
  get lentBytes(): number {
    return this.#lentBytes;
  }

  /** Buffers currently lent out. */
  get lentCount(): number {
    return this.#lentCount;
  }

  /** Free bytes kept for reuse. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /**
   * The size a request for `wanted` bytes gets when `lent` bytes in `count`
   * other buffers are out: `wanted`, or at most the crowd's size in a crowd;
   * then, if that does not fit the bound, the fair share.
   */
  #granted(wanted: number, lent: number, count: number): number {
    const size = count >= this.#crowdCount ? Math.min(wanted, this.#crowdSize) : wanted;
    if (lent + size <= this.#maxLentBytes) return size;
    const share = floorPowerOfTwo(this.#maxLentBytes / (count + 1));
    return Math.min(size, Math.max(share, this.#fallbackSize));
  }

  /**
   * Lends a buffer of `size` bytes (a power of two), or of the crowd's size
   * in a crowd, or of the fair share while the pool would lend out too
   * much. Give it back with {@linkcode give}.
   */
  take(size: number): Uint8Array {
    return this.#lend(this.#granted(size, this.#lentBytes, this.#lentCount));
  }

  /**
   * Trades `buffer` (lent by this pool) for one of `size` bytes, or of what
   * {@linkcode take} would grant instead, counting `buffer` as given back; returns `buffer` itself
   * when the size it would get is its own, so a session streaming at its
   * share keeps its buffer and nothing is allocated.
   */
  resize(buffer: Uint8Array, size: number): Uint8Array {
    const granted = this.#granted(
      size,
      this.#lentBytes - buffer.length,
      this.#lentCount - 1,
    );
    if (granted === buffer.length) return buffer;
    this.give(buffer);
    return this.#lend(granted);
  }

  /** Takes a buffer back; the caller must not use it any more. */
  give(buffer: Uint8Array): void {
    this.#lentBytes -= buffer.length;
    this.#lentCount--;
    if (this.#idleBytes + buffer.length > this.#maxIdleBytes) return;
    let list = this.#free.get(buffer.length);
    if (list === undefined) this.#free.set(buffer.length, list = []);
    list.push(buffer);
    this.#idleBytes += buffer.length;
  }

  #lend(size: number): Uint8Array {
    const reused = this.#free.get(size)?.pop();
    if (reused !== undefined) this.#idleBytes -= size;
    this.#lentBytes += size;
    this.#lentCount++;
    return reused ?? new Uint8Array(size);
  }
}

/** The largest power of two at or below `n` (1 for anything below 2). */
function floorPowerOfTwo(n: number): number {
  return n < 2 ? 1 : 2 ** Math.floor(Math.log2(n));
}
