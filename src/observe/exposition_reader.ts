/**
 * Reads the samples of a Prometheus text exposition (format 0.0.4), the
 * part `vncauthproxy status` needs: metric name, labels, value. Comments
 * and malformed lines are skipped; label values are unescaped.
 *
 * @module
 */

import type { Labels } from "./metrics_registry.ts";

/** One sample line. */
export interface Sample {
  /** Metric name (with `_bucket`, `_sum`, `_count` for histograms). */
  readonly name: string;
  /** Its labels. */
  readonly labels: Labels;
  /** Its value. */
  readonly value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/y;

/** The samples of `text`. */
export function readExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line.trim());
    if (match === null) continue;
    const labels: Record<string, string> = {};
    const body = match[2] ?? "";
    LABEL.lastIndex = 0;
    let ok = true;
    while (LABEL.lastIndex < body.length) {
      const pair = LABEL.exec(body);
      if (pair === null) {
        ok = false;
        break;
      }
      labels[pair[1]!] = pair[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    const value = parseValue(match[3]!);
    if (ok && value !== undefined) samples.push({ name: match[1]!, labels, value });
  }
  return samples;
}

function parseValue(text: string): number | undefined {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  const value = Number(text);
  return Number.isNaN(value) ? undefined : value;
}
