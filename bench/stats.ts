/**
 * Small statistics for latency samples.
 *
 * @module
 */

/** Percentiles of a sample set, in the samples' unit. */
export interface Summary {
  /** Number of samples. */
  readonly n: number;
  /** Median. */
  readonly p50: number;
  /** 99th percentile (nearest rank). */
  readonly p99: number;
  /** Largest sample. */
  readonly max: number;
  /** Arithmetic mean. */
  readonly mean: number;
}

/** Nearest-rank percentile `p` (0–100) of `sorted` ascending samples. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Summarizes `samples`. */
export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? NaN,
    mean: sorted.reduce((sum, x) => sum + x, 0) / (sorted.length || 1),
  };
}

/**
 * Runs `task(i)` for i in 0..count-1 with at most `limit` running at once;
 * resolves with every outcome, in order.
 */
export async function mapLimit<T>(
  count: number,
  limit: number,
  task: (index: number) => Promise<T>,
): Promise<PromiseSettledResult<T>[]> {
  const results: PromiseSettledResult<T>[] = new Array(count);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < count) {
      const index = next++;
      try {
        results[index] = { status: "fulfilled", value: await task(index) };
      } catch (reason) {
        results[index] = { status: "rejected", reason };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return results;
}

/** Rounds for tables and JSON: 3 significant digits, at least 0 decimals. */
export function round(value: number): number {
  if (!Number.isFinite(value)) return value;
  if (value === 0) return 0;
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(value))));
  return Number(value.toFixed(Math.min(digits, 6)));
}

/** Summarizes `samples` rounded by {@linkcode round}. */
export function roundedSummary(samples: readonly number[]): Summary {
  const s = summarize(samples);
  return { n: s.n, p50: round(s.p50), p99: round(s.p99), max: round(s.max), mean: round(s.mean) };
}
