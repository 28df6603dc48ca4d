/**
 * Scraping a test daemon's `/metrics` and reading it back through a real
 * Prometheus text-format parser (npm, tests only).
 *
 * @module
 */

import parsePrometheusTextFormat from "npm:parse-prometheus-text-format@1.1.1";
import type { DaemonProcess } from "./daemon_process.ts";

/** One parsed metric family. */
export interface MetricFamily {
  readonly name: string;
  readonly help: string;
  readonly type: string;
  readonly metrics: readonly {
    readonly value?: string;
    readonly labels?: Record<string, string>;
    readonly buckets?: Record<string, string>;
    readonly count?: string;
    readonly sum?: string;
  }[];
}

/** The port of `--metrics-listen=127.0.0.1:0`, from the daemon's log. */
export async function metricsPort(daemon: DaemonProcess): Promise<number> {
  const line = await daemon.waitForLine(/Metrics, health and readiness on /);
  return Number(/readiness on \S*?:(\d+)/.exec(line)![1]);
}

/** GETs `path` of the admin listener; returns status and body. */
export async function getAdmin(
  port: number,
  path: string,
): Promise<{ status: number; body: string; type: string | null }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return {
    status: response.status,
    body: await response.text(),
    type: response.headers.get("content-type"),
  };
}

/**
 * Polls the admin listener's `/readyz` until it answers `status` (a daemon
 * notices a lost token store by its own health check); returns the body.
 *
 * @throws {Error} naming the last answer after `timeoutMs`.
 */
export async function waitForReadyz(
  port: number,
  status: number,
  timeoutMs = 15_000,
): Promise<string> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const ready = await getAdmin(port, "/readyz");
    if (ready.status === status) return ready.body;
    if (performance.now() > deadline) {
      throw new Error(`/readyz on ${port} still ${ready.status} ${ready.body}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A scrape, parsed: the raw text and a sample reader. */
export interface Scrape {
  readonly text: string;
  readonly families: readonly MetricFamily[];
  /** The value of a counter/gauge sample whose labels include `labels`; 0 when absent. */
  value(name: string, labels?: Record<string, string>): number;
  /** The `_count` of a histogram. */
  count(name: string): number;
}

/** Scrapes `/metrics` and parses it with the npm parser (which throws on bad syntax). */
export async function scrape(port: number): Promise<Scrape> {
  const { status, body, type } = await getAdmin(port, "/metrics");
  if (status !== 200) throw new Error(`/metrics answered ${status}: ${body}`);
  if (!type?.startsWith("text/plain; version=0.0.4")) throw new Error(`Content-Type ${type}`);
  const families = parsePrometheusTextFormat(body) as MetricFamily[];
  const family = (name: string) => families.find((f) => f.name === name);
  return {
    text: body,
    families,
    value(name, labels = {}) {
      const found = family(name)?.metrics.find((m) =>
        Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
      );
      return Number(found?.value ?? 0);
    },
    count(name) {
      return Number(family(name)?.metrics[0]?.count ?? 0);
    },
  };
}
