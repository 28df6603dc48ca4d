/**
 * The bench's results and their one markdown table: each figure of
 * vncauthproxy next to the direct connection (the physical limit) and the
 * matching reference relay (socat for `vnc`, websockify for `vnc-ws`), with
 * ratios, and in full mode the targets as PASS/MISS.
 *
 * @module
 */

import {
  type ConcurrencyResult,
  type CrowdEchoResult,
  type EchoResult,
  type FloodEchoResult,
  type PasswordCheckResult,
  SETTLE_FACTOR,
  type SetupResult,
  type ThroughputResult,
} from "./scenarios.ts";
import type { ProxyType } from "./sessions.ts";
import { round } from "./stats.ts";

/** Everything a session can go through. */
export type TargetName = "direct" | "socat" | "websockify" | ProxyType;

/** How one scenario went. */
export interface Outcome<T> {
  /**
   * `ok`; `incomplete` (ran, but not every operation succeeded); `failed`
   * (threw or timed out); `unavailable` (the daemon cannot serve the type
   * yet); `not installed` (reference missing).
   */
  readonly status: "ok" | "incomplete" | "failed" | "unavailable" | "not installed";
  /** Wall seconds the scenario took. */
  readonly seconds: number;
  /** Its figures, when it ran. */
  readonly result?: T;
  /** Why it failed or is unavailable. */
  readonly error?: string;
}

/** The two sides of the gateway rows. */
export type GatewayTargetName = "gateway" | "websockify-token";

/** Figures of one side, per scenario. */
type PerTarget<T> = Partial<Record<GatewayTargetName, Outcome<T>>>;

/** Everything the gateway rows show. */
export interface GatewayResults {
  /** One token session, server to client. */
  throughput: PerTarget<ThroughputResult>;
  /** Token issued, redeemed and handshaken, one after another. */
  setup: PerTarget<SetupResult>;
  /** Sessions open at once through the one port, and how many. */
  concurrency: PerTarget<ConcurrencyResult>;
  /** The gateway's session count (the largest of the run's). */
  sessions: number;
  /** websockify's session count (see `WEBSOCKIFY_MAX_SESSIONS` in gateway.ts). */
  websockifySessions: number;
  /** The gateway's crowds at every session count of the run, by count. */
  byCount?: Record<string, Outcome<ConcurrencyResult>>;
}

/** All figures of one run. */
export interface BenchResults {
  /** Cost of `UserDb.verify`. */
  password?: Outcome<PasswordCheckResult>;
  /** Bulk server→client transfer, per target. */
  throughput: Partial<Record<TargetName, Outcome<ThroughputResult>>>;
  /** 64-byte round trips, per target. */
  echo: Partial<Record<TargetName, Outcome<EchoResult>>>;
  /** 64-byte round trips of many sessions echoing at once, per target. */
  crowdEcho?: Partial<Record<TargetName, Outcome<CrowdEchoResult>>>;
  /** Sequential set-ups, per proxy type. */
  setup: Partial<Record<ProxyType, Outcome<SetupResult>>>;
  /** Set-ups with many in flight, per proxy type. */
  storm: Partial<Record<ProxyType, Outcome<SetupResult>>>;
  /** Sessions open at once, by count, per target. */
  concurrency: Record<string, Partial<Record<TargetName, Outcome<ConcurrencyResult>>>>;
  /** The most idle `vnc` sessions the open-files limit allows, memory only. */
  idle?: Outcome<ConcurrencyResult>;
  /** How many idle sessions were wanted, and why fewer ran. */
  idleLimit?: { readonly wanted: number; readonly sessions: number; readonly openFiles: number };
  /** A live session's echo during a control flood. */
  flood?: Outcome<FloodEchoResult>;
  /** Daemon flags of the flood run (the rate limit off, where it exists). */
  floodDaemonFlags?: readonly string[];
  /** The one-port gateway next to websockify's token plugin. */
  gateway?: GatewayResults;
}

/** Sizes of a run. */
export interface BenchSizes {
  /** Bytes of the TCP throughput runs. */
  readonly tcpBytes: number;
  /** Bytes of the WebSocket throughput runs. */
  readonly wsBytes: number;
  /** Sequential set-ups. */
  readonly setups: number;
  /** Storm set-ups, and how many in flight. */
  readonly storm: number;
  /** Storm concurrency. */
  readonly stormInflight: number;
  /** Timed echoes. */
  readonly echoes: number;
  /** Sessions echoing at once in the crowd echo. */
  readonly crowdSessions: number;
  /** Timed echoes of each of them. */
  readonly crowdEchoes: number;
  /** Milliseconds between two echoes of one of them (its typing). */
  readonly crowdIntervalMs: number;
  /** Session counts of the concurrency runs (the largest also measures memory). */
  readonly sessions: readonly number[];
  /** Bytes each concurrent session streams. */
  readonly bytesEach: number;
  /** Idle sessions wanted in the memory-only run (fewer if descriptors run short). */
  readonly idleSessions: number;
  /** How long open sessions idle before their RSS is read. */
  readonly idleMs: number;
  /** Longest wait after close for RSS to come back to 1.5 × start. */
  readonly settleMs: number;
  /** Clients of the control flood. */
  readonly floodClients: number;
  /** How long the flood lasts. */
  readonly floodMs: number;
  /** Echoes timed before the flood. */
  readonly floodBaselineEchoes: number;
}

/** Idle-session memory targets (MB), by session count. */
const IDLE_TARGET_MB: Record<number, number> = { 5_000: 150, 10_000: 250 };

/** The throughput floor: 2.5× snf-vncauthproxy's 684 MB/s. */
const VNC_FLOOR_MBPS = 2.5 * 684;

export type Verdict = "PASS" | "MISS" | "";

/** One line of the table. */
export interface Row {
  metric: string;
  value: string;
  direct: string;
  xDirect: string;
  reference: string;
  xReference: string;
  target: string;
  verdict: Verdict;
}

/** A figure for a cell, with its status when not ok. */
export function cell<T>(
  outcome: Outcome<T> | undefined,
  pick: (r: T) => number | undefined,
): string {
  if (outcome === undefined) return "–";
  if (outcome.result === undefined) return outcome.status;
  const value = pick(outcome.result);
  if (value === undefined || !Number.isFinite(value)) return "–";
  const text = String(round(value));
  return outcome.status === "ok" ? text : `${text} (${outcome.status})`;
}

/** A figure, when the outcome has one. */
export function num<T>(
  outcome: Outcome<T> | undefined,
  pick: (r: T) => number | undefined,
): number | undefined {
  if (outcome?.result === undefined) return undefined;
  const value = pick(outcome.result);
  return value !== undefined && Number.isFinite(value) ? value : undefined;
}

/** `a / b` as `1.23×`, or nothing. */
export function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || b === 0) return "";
  return `${round(a / b)}×`;
}

/** PASS, or MISS (also when there is no figure). */
export function verdict(ok: boolean | undefined): Verdict {
  return ok === undefined ? "MISS" : ok ? "PASS" : "MISS";
}

/** A row comparing one figure of a proxy type with direct and its reference. */
function compared<T>(
  metric: string,
  family: Partial<Record<TargetName, Outcome<T>>>,
  type: ProxyType,
  pick: (r: T) => number | undefined,
  target = "",
  judge?: (value: number, direct?: number, reference?: number) => boolean,
  referenceName: TargetName = type === "vnc" ? "socat" : "websockify",
): Row {
  const value = num(family[type], pick);
  const direct = num(family.direct, pick);
  const reference = num(family[referenceName], pick);
  const judged = judge && value !== undefined ? judge(value, direct, reference) : undefined;
  return {
    metric: `${type} ${metric}`,
    value: cell(family[type], pick),
    direct: cell(family.direct, pick),
    xDirect: ratio(value, direct),
    reference: `${referenceName} ${cell(family[referenceName], pick)}`,
    xReference: ratio(value, reference),
    target,
    verdict: judge ? verdict(judged) : "",
  };
}

/** A row of a figure with no reference. */
function alone<T>(
  metric: string,
  outcome: Outcome<T> | undefined,
  pick: (r: T) => number | undefined,
  target = "",
  judge?: (value: number) => boolean,
): Row {
  const value = num(outcome, pick);
  return {
    metric,
    value: cell(outcome, pick),
    direct: "",
    xDirect: "",
    reference: "",
    xReference: "",
    target,
    verdict: judge ? verdict(value === undefined ? undefined : judge(value)) : "",
  };
}

/** A row of a figure beside its own baseline (in the reference columns). */
function beside<T>(
  metric: string,
  outcome: Outcome<T> | undefined,
  pick: (r: T) => number | undefined,
  baselineName: string,
  baseline: (r: T) => number | undefined,
): Row {
  const value = num(outcome, pick);
  const base = num(outcome, baseline);
  return {
    metric,
    value: cell(outcome, pick),
    direct: "",
    xDirect: "",
    reference: `${baselineName} ${cell(outcome, baseline)}`,
    xReference: ratio(value, base),
    target: "",
    verdict: "",
  };
}

/**
 * The memory rows of one run: start, just opened, idle (with its target),
 * after streaming, right after close, and once settled (with its target).
 */
function memoryRows(
  label: string,
  outcome: Outcome<ConcurrencyResult> | undefined,
  idleTarget: number | undefined,
  settleTarget: boolean,
): Row[] {
  const memory = outcome?.result?.memory;
  const before = memory?.beforeMb;
  const rows = [
    alone(`${label}: RSS MB at start`, outcome, (r) => r.memory?.beforeMb),
    alone(`${label}: RSS MB, all just opened`, outcome, (r) => r.memory?.openedMb),
    alone(
      `${label}: RSS MB, idle for ${memory?.idleSeconds ?? 0} s`,
      outcome,
      (r) => r.memory?.idleMb,
      idleTarget === undefined ? "" : `<${idleTarget}`,
      idleTarget === undefined ? undefined : (v) => v < idleTarget,
    ),
  ];
  if (memory === undefined || memory.afterStreamMb !== undefined) {
    rows.push(
      alone(`${label}: RSS MB, right after all streamed`, outcome, (r) => r.memory?.afterStreamMb),
    );
  }
  rows.push(
    alone(`${label}: RSS MB, right after all closed`, outcome, (r) => r.memory?.afterCloseMb),
    alone(
      `${label}: RSS MB, ${memory?.settleSeconds ?? 0} s after all closed`,
      outcome,
      (r) => r.memory?.settledMb,
      settleTarget ? `≤${SETTLE_FACTOR}× start` : "",
      settleTarget ? (v) => before !== undefined && v <= SETTLE_FACTOR * before : undefined,
    ),
  );
  return rows;
}

/**
 * The aggregate target for `n` concurrent `vnc` sessions, as a
 * multiple of socat's: 0.9 up to 1,000 sessions, 1.0 from 5,000 on.
 */
export function aggregateTarget(n: number): number {
  return n >= 5_000 ? 1.0 : 0.9;
}

/** Builds the table's rows from a run's results. */
function rows(results: BenchResults, sizes: BenchSizes): Row[] {
  const out: Row[] = [];
  const t = results.throughput;
  out.push(
    compared(
      "throughput MB/s",
      t,
      "vnc",
      (r) => r.mbPerS,
      `≥1.0× socat, ≥${VNC_FLOOR_MBPS}`,
      (v, _d, ref) => ref !== undefined && v >= ref && v >= VNC_FLOOR_MBPS,
    ),
    compared("relay CPU % (1 core = 100)", t, "vnc", (r) => r.relayCpuPercent),
    compared(
      "throughput MB/s",
      t,
      "vnc-ws",
      (r) => r.mbPerS,
      "≥2.0× websockify",
      (v, _d, ref) => ref !== undefined && v >= 2 * ref,
    ),
    compared("relay CPU % (1 core = 100)", t, "vnc-ws", (r) => r.relayCpuPercent),
  );
  for (const type of ["vnc", "vnc-ws"] as const) {
    const setup = results.setup[type];
    out.push(
      alone(`${type} set-up p50 ms`, setup, (r) => r.ms.p50, "≤5", (v) => v <= 5),
      alone(`${type} set-up p99 ms`, setup, (r) => r.ms.p99, "≤10", (v) => v <= 10),
    );
  }
  out.push(
    alone("password check, uncached ms", results.password, (r) => r.firstMs),
    alone("password check, cached p50 ms", results.password, (r) => r.cachedMs.p50),
  );
  for (const type of ["vnc", "vnc-ws"] as const) {
    const storm = results.storm[type];
    out.push(
      alone(
        `${type} storm succeeded (of ${sizes.storm}, ${sizes.stormInflight} in flight)`,
        storm,
        (r) => r.succeeded,
        `${sizes.storm}/${sizes.storm}`,
        (v) => v === sizes.storm,
      ),
      alone(`${type} storm p99 ms`, storm, (r) => r.ms.p99),
    );
  }
  const e = results.echo;
  out.push(
    compared(
      "echo p50 µs",
      e,
      "vnc",
      (r) => r.us.p50,
      "≤1.2× socat",
      (v, _d, ref) => ref !== undefined && v <= 1.2 * ref,
    ),
    compared(
      "echo p99 µs",
      e,
      "vnc",
      (r) => r.us.p99,
      "≤1.5× socat",
      (v, _d, ref) => ref !== undefined && v <= 1.5 * ref,
    ),
    compared("echo p50 µs", e, "vnc-ws", (r) => r.us.p50),
    compared("echo p99 µs", e, "vnc-ws", (r) => r.us.p99),
  );
  const crowd = results.crowdEcho ?? {};
  const crowdLabel =
    `echo, ${sizes.crowdSessions} sessions typing at once (one echo each per ${sizes.crowdIntervalMs} ms),`;
  out.push(
    compared(
      `${crowdLabel} p50 µs`,
      crowd,
      "vnc",
      (r) => r.us.p50,
      "≤1.2× socat",
      (v, _d, ref) => ref !== undefined && v <= 1.2 * ref,
    ),
    compared(
      `${crowdLabel} p99 µs`,
      crowd,
      "vnc",
      (r) => r.us.p99,
      "≤1.5× socat",
      (v, _d, ref) => ref !== undefined && v <= 1.5 * ref,
    ),
    compared(`${crowdLabel} p50 µs`, crowd, "vnc-ws", (r) => r.us.p50, "", undefined, "socat"),
    compared(`${crowdLabel} p99 µs`, crowd, "vnc-ws", (r) => r.us.p99, "", undefined, "socat"),
  );
  const flood = results.flood;
  const flags = results.floodDaemonFlags?.length ? `, ${results.floodDaemonFlags.join(" ")}` : "";
  const during = `during a control flood (${sizes.floodClients} unknown-user clients${flags})`;
  out.push(
    beside(
      `vnc echo p50 µs ${during}`,
      flood,
      (r) => r.floodUs.p50,
      "no flood",
      (r) => r.baselineUs.p50,
    ),
    beside(
      `vnc echo p99 µs ${during}`,
      flood,
      (r) => r.floodUs.p99,
      "no flood",
      (r) => r.baselineUs.p99,
    ),
    alone(
      `vnc echoes completed in the ${sizes.floodMs / 1000} s flood`,
      flood,
      (r) => r.floodUs.n,
    ),
    alone("control flood requests answered per s", flood, (r) => r.answeredPerS),
  );
  const largest = Math.max(...sizes.sessions);
  for (const type of ["vnc", "vnc-ws"] as const) {
    for (const n of sizes.sessions) {
      const family = results.concurrency[String(n)] ?? {};
      out.push(
        compared(
          `${n} sessions streamed`,
          family,
          type,
          (r) => r.streamed,
          n === largest && type === "vnc" ? `${n}/${n}` : "",
          n === largest && type === "vnc" ? (v) => v === n : undefined,
          "socat",
        ),
        compared(
          `${n} sessions aggregate MB/s`,
          family,
          type,
          (r) => r.aggregateMbPerS,
          type === "vnc" ? `≥${aggregateTarget(n)}× socat` : "",
          type === "vnc"
            ? (v, _d, ref) => ref !== undefined && v >= aggregateTarget(n) * ref
            : undefined,
          "socat",
        ),
      );
    }
    const family = results.concurrency[String(largest)] ?? {};
    out.push(
      ...memoryRows(
        `${type} ${largest} sessions`,
        family[type],
        type === "vnc" ? IDLE_TARGET_MB[largest] : undefined,
        type === "vnc",
      ),
    );
  }
  const limit = results.idleLimit;
  if (limit !== undefined) {
    const short = limit.sessions < limit.wanted
      ? ` (of ${limit.wanted} wanted: open-files hard limit ${limit.openFiles})`
      : "";
    out.push(
      ...memoryRows(
        `vnc ${limit.sessions} idle sessions${short}`,
        results.idle,
        IDLE_TARGET_MB[limit.wanted],
        false,
      ),
    );
  }
  return out;
}

/**
 * The markdown table; the target columns only in full mode. `extra` rows
 * (the gateway's) follow the others. Unless `everything`, rows with no
 * figure are left out.
 */
export function formatTable(
  results: BenchResults,
  sizes: BenchSizes,
  full: boolean,
  extra: readonly Row[] = [],
  everything = true,
): string {
  const header = ["metric", "vncauthproxy", "direct", "×direct", "reference", "×reference"];
  if (full) header.push("target", "");
  const lines = [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
  ];
  for (const row of [...rows(results, sizes), ...extra]) {
    // A row of a group the run left out (`--only`) has no figure at all.
    if (!everything && row.value === "–") continue;
    const cells = [row.metric, row.value, row.direct, row.xDirect, row.reference, row.xReference];
    if (full) cells.push(row.target, row.verdict);
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}
