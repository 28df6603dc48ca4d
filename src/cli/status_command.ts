/**
 * `vncauthproxy status [--metrics URL]`: reads `/metrics` of a running
 * daemon and prints a short summary: sessions by console kind and
 * rendezvous, the pool, control connections, forwardings since start, and
 * failures by reason in the last few minutes (the daemon keeps a window of
 * whole minutes, `vncauthproxy_forwardings_failed_recent`, so one scrape
 * is enough).
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { readExposition, type Sample } from "../observe/exposition_reader.ts";
import { formatOptionsHelp, type OptionSpec, parseOptions } from "./option_parser.ts";
import type { CliIo } from "./cli_io.ts";

/** Where `status` looks when not told: the README's `--metrics-listen`. */
export const DEFAULT_METRICS_URL = "http://127.0.0.1:24998/metrics";

/** The options of `status`. */
export const STATUS_OPTIONS: readonly OptionSpec[] = [
  { long: "help", short: "h", kind: "flag", help: "show this help and exit" },
  {
    long: "metrics",
    kind: "string",
    metavar: "URL",
    help: `the daemon's /metrics (its --metrics-listen) [${DEFAULT_METRICS_URL}]`,
  },
  {
    long: "timeout",
    kind: "float",
    metavar: "N",
    help: "seconds to wait for the answer [5]",
  },
];

/** Help text of `status`. */
export function statusHelp(): string {
  return [
    "Usage: vncauthproxy status [--metrics URL]",
    "",
    "Reads a running daemon's /metrics and prints a short summary.",
    "",
    "Options:",
    formatOptionsHelp(STATUS_OPTIONS),
    "",
  ].join("\n");
}

/** Fetches the exposition text; replaceable in tests. */
export type FetchText = (url: string, signal: AbortSignal) => Promise<string>;

async function fetchText(url: string, signal: AbortSignal): Promise<string> {
  const response = await fetch(url, { signal });
  const text = await response.text();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return text;
}

/** Runs `status`; returns the exit code (1 when the daemon cannot be read). */
export async function runStatusCommand(
  args: readonly string[],
  io: CliIo,
  fetcher: FetchText = fetchText,
): Promise<number> {
  const { values, positionals } = parseOptions(STATUS_OPTIONS, args);
  if (values.help) {
    io.stdout(statusHelp());
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const url = (values.metrics as string | undefined) ?? DEFAULT_METRICS_URL;
  if (!/^https?:\/\//.test(url)) throw new UsageError(`--metrics must be an http(s) URL`);
  const timeoutMs = ((values.timeout as number | undefined) ?? 5) * 1000;
  let text: string;
  try {
    text = await fetcher(url, AbortSignal.timeout(timeoutMs));
  } catch (error) {
    io.stderr(`vncauthproxy: Cannot read ${url}: ${(error as Error).message}\n`);
    return 1;
  }
  io.stdout(summarize(readExposition(text), url));
  return 0;
}

/** The human summary of a scrape. */
export function summarize(samples: readonly Sample[], url: string): string {
  const of = (name: string) => samples.filter((s) => s.name === name);
  const one = (name: string) => of(name)[0]?.value;
  const sum = (list: readonly Sample[]) => list.reduce((total, s) => total + s.value, 0);
  const byLabel = (list: readonly Sample[], label: string) =>
    list.filter((s) => s.value > 0)
      .sort((a, b) => b.value - a.value)
      .map((s) => `${s.labels[label]} ${s.value}`)
      .join(", ");

  const active = of("vncauthproxy_sessions_active").filter((s) => s.value > 0);
  const groups = new Map<string, number>();
  for (const s of active) {
    const key = `${s.labels.kind} via ${s.labels.rendezvous} ${s.labels.state}`;
    groups.set(key, (groups.get(key) ?? 0) + s.value);
  }
  const sessions = [...groups].map(([key, n]) => `${key} ${n}`).join(", ");
  const recent = of("vncauthproxy_forwardings_failed_recent");
  const failedTotal = of("vncauthproxy_forwardings_failed_total");
  const ended = of("vncauthproxy_sessions_ended_total");
  const draining = one("vncauthproxy_draining") === 1;
  const lines = [
    `vncauthproxy at ${url}${draining ? " (draining)" : ""}`,
    `Sessions: ${sum(active)} live${sessions ? ` (${sessions})` : ""}`,
    `Pool: ${one("vncauthproxy_pool_ports_free") ?? "?"} of ${
      one("vncauthproxy_pool_ports") ?? "?"
    } ports free`,
    `Control: ${one("vncauthproxy_control_connections_open") ?? "?"} connections open, ${
      one("vncauthproxy_control_users") ?? "?"
    } users, crypt queue ${one("vncauthproxy_crypt_queue_length") ?? "?"}`,
    `Forwardings since start: ${one("vncauthproxy_forwardings_requested_total") ?? 0} requested, ${
      sum(of("vncauthproxy_forwardings_set_up_total"))
    } set up, ${sum(failedTotal)} failed`,
    `Failed in the last 5 minutes: ${sum(recent)}${
      sum(recent) > 0 ? ` (${byLabel(recent, "reason")})` : ""
    }`,
    `Sessions ended since start: ${sum(ended)}${
      sum(ended) > 0 ? ` (${byLabel(ended, "cause")})` : ""
    }`,
  ];
  return `${lines.join("\n")}\n`;
}
