/**
 * The gateway's rows of the bench table: vncauthproxy's one port next to
 * websockify's token plugin, with the direct connection where it applies,
 * and in full mode the targets.
 *
 * @module
 */

import type { ConcurrencyResult } from "./scenarios.ts";
import {
  type BenchResults,
  cell,
  type GatewayResults,
  type GatewayTargetName,
  num,
  type Outcome,
  ratio,
  type Row,
  verdict,
} from "./report.ts";

/** The set-up target for the gateway, in milliseconds. */
const SETUP_P50_MS = 3;

function row<T>(
  metric: string,
  family: Partial<Record<GatewayTargetName, Outcome<T>>>,
  pick: (r: T) => number | undefined,
  options: {
    direct?: Outcome<T> | undefined;
    /** The reference's label; `null` leaves the reference cells empty. */
    reference?: string | null;
    /** Whether the ratio to the reference means anything. @default {true} */
    compare?: boolean;
    target?: string;
    judge?: (value: number, reference?: number) => boolean;
  } = {},
): Row {
  const value = num(family.gateway, pick);
  const direct = num(options.direct, pick);
  const reference = num(family["websockify-token"], pick);
  const { judge } = options;
  return {
    metric: `gateway ${metric}`,
    value: cell(family.gateway, pick),
    direct: options.direct === undefined ? "" : cell(options.direct, pick),
    xDirect: ratio(value, direct),
    reference: options.reference === null
      ? ""
      : `${options.reference ?? "websockify token"} ${cell(family["websockify-token"], pick)}`,
    xReference: options.reference === null || options.compare === false
      ? ""
      : ratio(value, reference),
    target: options.target ?? "",
    verdict: judge ? verdict(value === undefined ? undefined : judge(value, reference)) : "",
  };
}

/** The gateway's rows; none when the run has no gateway results. */
export function gatewayRows(results: BenchResults): Row[] {
  const g: GatewayResults | undefined = results.gateway;
  if (g === undefined) return [];
  const n = g.sessions;
  const m = g.websockifySessions;
  const reference = m === n ? undefined : `websockify token (${m} sessions)`;
  const direct = results.concurrency[String(n)]?.direct;
  return [
    row("(plain, token) throughput MB/s", g.throughput, (r) => r.mbPerS, {
      direct: results.throughput.direct,
      target: "≥1.5× websockify",
      judge: (v, ref) => ref !== undefined && v >= 1.5 * ref,
    }),
    row("(plain, token) relay CPU % (1 core = 100)", g.throughput, (r) => r.relayCpuPercent),
    row("(plain, token) set-up p50 ms", g.setup, (r) => r.ms.p50, {
      target: `≤${SETUP_P50_MS}`,
      judge: (v) => v <= SETUP_P50_MS,
    }),
    row("(plain, token) set-up p99 ms", g.setup, (r) => r.ms.p99),
    row(`${n} sessions through one port streamed`, g.concurrency, (r) => r.streamed, {
      ...(direct === undefined ? {} : { direct }),
      ...(reference === undefined ? {} : { reference, compare: false }),
      target: `${n}/${n}`,
      judge: (v) => v === n,
    }),
    row(`${n} sessions aggregate MB/s`, g.concurrency, (r) => r.aggregateMbPerS, {
      ...(direct === undefined ? {} : { direct }),
      ...(reference === undefined ? {} : { reference }),
    }),
    row(`RSS MB, ${n} idle sessions`, g.concurrency, (r) => r.memory?.idleMb, {
      reference: null,
    }),
    ...Object.entries(g.byCount ?? {}).map(([count, outcome]) =>
      besideSocat(`${count} sessions aggregate MB/s, beside socat`, outcome, results, count)
    ),
  ];
}

/** A gateway crowd's aggregate next to direct and socat at the same count. */
function besideSocat(
  metric: string,
  outcome: Outcome<ConcurrencyResult>,
  results: BenchResults,
  count: string,
): Row {
  const family = results.concurrency[count] ?? {};
  const pick = (r: ConcurrencyResult) => r.aggregateMbPerS;
  const value = num(outcome, pick);
  return {
    metric: `gateway ${metric}`,
    value: cell(outcome, pick),
    direct: cell(family.direct, pick),
    xDirect: ratio(value, num(family.direct, pick)),
    reference: `socat ${cell(family.socat, pick)}`,
    xReference: ratio(value, num(family.socat, pick)),
    target: "",
    verdict: "",
  };
}
