/**
 * A small Prometheus metrics registry: counters, gauges and histograms with
 * a fixed set of label names each, rendered in the text exposition format
 * 0.0.4 (`# HELP`, `# TYPE`, one sample a line, label values escaped).
 * Values computed at scrape time (pool ports free, RSS) are gauges with a
 * collect function. No module state: the daemon builds one registry and
 * hands it to whoever records.
 *
 * @module
 */

/** Label values of one sample, by label name. */
export type Labels = Readonly<Record<string, string>>;

/** The content type of the text exposition format. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Metric and label names (Prometheus data model). */
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** One metric family: name, help, type, and how to render its samples. */
interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  samples(): Iterable<string>;
}

/** A counter or gauge with labels: one number per label-value combination. */
class Series {
  readonly #labelNames: readonly string[];
  readonly values = new Map<string, { labels: Labels; value: number }>();

  constructor(labelNames: readonly string[]) {
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__")) {
        throw new TypeError(`Invalid label name "${label}"`);
      }
    }
    this.#labelNames = labelNames;
  }

  /** The entry of `labels`, created at 0; every label name must be given, no other. */
  entry(labels: Labels): { labels: Labels; value: number } {
    const keys = Object.keys(labels);
    if (
      keys.length !== this.#labelNames.length || !this.#labelNames.every((n) => n in labels)
    ) {
      throw new TypeError(`Expected labels ${this.#labelNames.join(", ") || "(none)"}`);
    }
    const key = this.#labelNames.map((name) => labels[name]).join("\u0000");
    let entry = this.values.get(key);
    if (entry === undefined) {
      entry = { labels: { ...labels }, value: 0 };
      this.values.set(key, entry);
    }
    return entry;
  }
}

/** A monotonically increasing count. */
export class Counter {
  readonly #series: Series;

  /** Use {@linkcode MetricsRegistry.counter}. */
  constructor(labelNames: readonly string[]) {
    this.#series = new Series(labelNames);
  }

  /**
   * Adds `by` (default 1) to the count of `labels`.
   *
   * @throws {RangeError} for a negative or non-finite amount.
   */
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0) || !Number.isFinite(by)) throw new RangeError(`Cannot add ${by} to a counter`);
    this.#series.entry(labels).value += by;
  }

  /** Makes the series of `labels` exist (at 0), so a scrape shows it before it moves. */
  declare(labels: Labels = {}): void {
    this.#series.entry(labels);
  }

  /** The count of `labels` (0 when never touched). */
  get(labels: Labels = {}): number {
    return this.#series.entry(labels).value;
  }

  /** @internal */
  entries(): Iterable<{ labels: Labels; value: number }> {
    return this.#series.values.values();
  }
}

/** A value that goes up and down, set by hand or computed at each scrape. */
export class Gauge {
  readonly #series: Series;
  readonly #collect: (() => Iterable<[Labels, number]>) | undefined;

  /** Use {@linkcode MetricsRegistry.gauge}. */
  constructor(labelNames: readonly string[], collect?: () => Iterable<[Labels, number]>) {
    this.#series = new Series(labelNames);
    this.#collect = collect;
  }

  /** Sets the value of `labels`. */
  set(labels: Labels, value: number): void {
    this.#series.entry(labels).value = value;
  }

  /** @internal */
  entries(): Iterable<{ labels: Labels; value: number }> {
    if (this.#collect === undefined) return this.#series.values.values();
    const out: { labels: Labels; value: number }[] = [];
    for (const [labels, value] of this.#collect()) {
      out.push({ labels: this.#series.entry(labels).labels, value });
    }
    return out;
  }
}

/** Counts of observations in cumulative buckets, with their sum. */
export class Histogram {
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  /** Use {@linkcode MetricsRegistry.histogram}. */
  constructor(bounds: readonly number[]) {
    if (bounds.length === 0 || bounds.some((b, i) => !Number.isFinite(b) || b <= bounds[i - 1]!)) {
      throw new RangeError("Histogram buckets must be finite and increasing");
    }
    this.#bounds = bounds;
    this.#counts = new Array(bounds.length).fill(0);
  }

  /** Records one observation. */
  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    for (let i = 0; i < this.#bounds.length; i++) if (value <= this.#bounds[i]!) this.#counts[i]!++;
    this.#sum += value;
    this.#count++;
  }

  /** Observations so far. */
  get count(): number {
    return this.#count;
  }

  /** @internal */
  render(name: string): string[] {
    const lines = this.#bounds.map((bound, i) =>
      `${name}_bucket{le="${formatValue(bound)}"} ${this.#counts[i]}`
    );
    lines.push(`${name}_bucket{le="+Inf"} ${this.#count}`);
    lines.push(`${name}_sum ${formatValue(this.#sum)}`);
    lines.push(`${name}_count ${this.#count}`);
    return lines;
  }
}

/** The metric families of one process, rendered together for a scrape. */
export class MetricsRegistry {
  readonly #families = new Map<string, Family>();

  /** Registers a counter; by convention its name ends in `_total`. */
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    const counter = new Counter(labelNames);
    this.#add({
      name,
      help,
      type: "counter",
      samples: () => renderEntries(name, counter.entries()),
    });
    return counter;
  }

  /** Registers a gauge; with `collect`, its samples are computed at each scrape. */
  gauge(
    name: string,
    help: string,
    labelNames: readonly string[] = [],
    collect?: () => Iterable<[Labels, number]>,
  ): Gauge {
    const gauge = new Gauge(labelNames, collect);
    this.#add({ name, help, type: "gauge", samples: () => renderEntries(name, gauge.entries()) });
    return gauge;
  }

  /**
   * Registers a counter whose samples are computed at each scrape (e.g.
   * bytes of ended sessions plus those of live ones); `collect` must
   * never go down.
   */
  collectedCounter(
    name: string,
    help: string,
    labelNames: readonly string[],
    collect: () => Iterable<[Labels, number]>,
  ): void {
    const values = new Gauge(labelNames, collect);
    this.#add({
      name,
      help,
      type: "counter",
      samples: () => renderEntries(name, values.entries()),
    });
  }

  /** Registers a histogram with the given upper bucket bounds (`+Inf` is added). */
  histogram(name: string, help: string, bounds: readonly number[]): Histogram {
    const histogram = new Histogram(bounds);
    this.#add({ name, help, type: "histogram", samples: () => histogram.render(name) });
    return histogram;
  }

  /** The whole registry in the text exposition format 0.0.4. */
  render(): string {
    const lines: string[] = [];
    for (const family of this.#families.values()) {
      lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      lines.push(`# TYPE ${family.name} ${family.type}`);
      for (const sample of family.samples()) lines.push(sample);
    }
    return lines.join("\n") + "\n";
  }

  #add(family: Family): void {
    if (!METRIC_NAME.test(family.name)) throw new TypeError(`Invalid metric name "${family.name}"`);
    if (this.#families.has(family.name)) {
      throw new TypeError(`Metric "${family.name}" is already registered`);
    }
    this.#families.set(family.name, family);
  }
}

function* renderEntries(
  name: string,
  entries: Iterable<{ labels: Labels; value: number }>,
): Iterable<string> {
  for (const { labels, value } of entries) {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
    yield `${name}${pairs.length > 0 ? `{${pairs.join(",")}}` : ""} ${formatValue(value)}`;
  }
}

/** Exposition format 0.0.4: in label values, `\`, `"` and newline are escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Exposition format 0.0.4: in help text, `\` and newline are escaped. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Sample values as Go's ParseFloat reads them: `+Inf`, `-Inf`, `NaN`, or a number. */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
