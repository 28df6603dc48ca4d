/**
 * The bench's measurements, each against any {@linkcode Target}: bulk
 * throughput, set-up latency, a control storm, echo round trips, many
 * sessions at once (with the relay's memory), and the control password check.
 *
 * @module
 */

import { UserDb } from "../src/auth/user_db.ts";
import { cpuSeconds, rssMb } from "./procfs.ts";
import {
  controlRequest,
  echoer,
  type ProxyEndpoint,
  type Session,
  streamFromServer,
  type Target,
} from "./sessions.ts";
import { mapLimit, round, roundedSummary, type Summary } from "./stats.ts";

const MB = 1e6;

/** One bulk transfer, server to client. */
export interface ThroughputResult {
  /** Bytes timed. */
  readonly bytes: number;
  /** Seconds from the command to the last byte. */
  readonly seconds: number;
  /** MB/s (10^6 bytes). */
  readonly mbPerS: number;
  /** CPU of the relaying process over the transfer, % of one core. */
  readonly relayCpuPercent?: number;
  /** CPU of the bench itself (the reading client), % of one core. */
  readonly clientCpuPercent: number;
}

/**
 * Streams `warmupBytes` (untimed, so buffers have grown and code is
 * compiled), then `bytes` timed, through one session.
 */
export async function throughput(
  target: Target,
  bytes: number,
  warmupBytes: number,
): Promise<ThroughputResult> {
  const { stream } = await target.open();
  try {
    await streamFromServer(stream, warmupBytes);
    const cpuBefore = target.pid === undefined ? 0 : cpuSeconds(target.pid);
    const clientBefore = cpuSeconds(Deno.pid, false);
    const started = performance.now();
    await streamFromServer(stream, bytes);
    const seconds = (performance.now() - started) / 1000;
    const client = cpuSeconds(Deno.pid, false) - clientBefore;
    const cpu = target.pid === undefined ? undefined : cpuSeconds(target.pid) - cpuBefore;
    return {
      bytes,
      seconds: round(seconds),
      mbPerS: round(bytes / MB / seconds),
      ...(cpu === undefined ? {} : { relayCpuPercent: round(100 * cpu / seconds) }),
      clientCpuPercent: round(100 * client / seconds),
    };
  } finally {
    stream.close();
  }
}

/** Latencies of forwardings set up, sequentially or at once. */
export interface SetupResult {
  /** Forwardings attempted (warm-ups excluded). */
  readonly attempted: number;
  /** Forwardings that reached SecurityResult OK. */
  readonly succeeded: number;
  /** Milliseconds from control connect to SecurityResult OK, of the successes. */
  readonly ms: Summary;
  /** The first failure, if any. */
  readonly firstError?: string;
  /** Every sample, in order. */
  readonly samples: number[];
}

async function setUpOnce(target: Target): Promise<number> {
  const session: Session = await target.open();
  session.stream.close();
  if (session.setupMs === undefined) throw new Error(`${target.name} does not time set-ups`);
  return session.setupMs;
}

function setupResult(outcomes: PromiseSettledResult<number>[]): SetupResult {
  const samples: number[] = [];
  let firstError: string | undefined;
  for (const outcome of outcomes) {
    if (outcome.status === "fulfilled") samples.push(outcome.value);
    else firstError ??= describe(outcome.reason);
  }
  return {
    attempted: outcomes.length,
    succeeded: samples.length,
    ms: roundedSummary(samples),
    ...(firstError === undefined ? {} : { firstError }),
    samples: samples.map(round),
  };
}

/** `count` forwardings one after another, after `warmup` untimed ones. */
export async function setupLatency(
  target: Target,
  count: number,
  warmup: number,
): Promise<SetupResult> {
  for (let i = 0; i < warmup; i++) await setUpOnce(target);
  return setupResult(await mapLimit(count, 1, () => setUpOnce(target)));
}

/** `count` forwardings with `inflight` of them in progress at any time. */
export async function storm(target: Target, count: number, inflight: number): Promise<SetupResult> {
  return setupResult(await mapLimit(count, inflight, () => setUpOnce(target)));
}

/** 64-byte round trips through one session. */
export interface EchoResult {
  /** Microseconds per round trip. */
  readonly us: Summary;
}

/** `count` timed echoes after `warmup` untimed ones. */
export async function echo(target: Target, count: number, warmup: number): Promise<EchoResult> {
  const { stream } = await target.open();
  try {
    const once = echoer(stream);
    for (let i = 0; i < warmup; i++) await once();
    const samples: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await once();
      samples.push((performance.now() - started) * 1000);
    }
    return { us: roundedSummary(samples) };
  } finally {
    stream.close();
  }
}

/**
 * Opens `sessions` sessions, `inflight` at a time: those that opened, and
 * the first failure of the others as a line for the result.
 */
async function openSessions(
  target: Target,
  sessions: number,
  inflight: number,
): Promise<{ open: Session[]; failed: string | undefined }> {
  const open: Session[] = [];
  let failed: string | undefined;
  for (const outcome of await mapLimit(sessions, inflight, () => target.open())) {
    if (outcome.status === "fulfilled") open.push(outcome.value);
    else failed ??= `open: ${describe(outcome.reason)}`;
  }
  return { open, failed };
}

/** Round trips of many sessions echoing at once. */
export interface CrowdEchoResult extends EchoResult {
  /** Sessions asked for. */
  readonly sessions: number;
  /** Sessions that opened and echoed every time. */
  readonly echoed: number;
  /** The first failure, if any. */
  readonly firstError?: string;
}

/**
 * Opens `sessions` sessions (`openInflight` at a time), then every one
 * types: after `warmup` untimed echoes, `count` timed ones, one every
 * `intervalMs` from a random phase, all sessions at once: many consoles
 * typing on one host. Paced, so the figure is the relay's round trip
 * under that load, not the queue of a load generator at its limit.
 */
export async function crowdEcho(
  target: Target,
  sessions: number,
  count: number,
  warmup: number,
  openInflight: number,
  intervalMs: number,
): Promise<CrowdEchoResult> {
  const { open, failed } = await openSessions(target, sessions, openInflight);
  let firstError = failed;
  try {
    const samples: number[] = [];
    const echoAll = async (session: Session): Promise<void> => {
      const once = echoer(session.stream);
      for (let i = 0; i < warmup; i++) await once();
      let next = performance.now() + Math.random() * intervalMs;
      for (let i = 0; i < count; i++) {
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        next += intervalMs;
        const started = performance.now();
        await once();
        samples.push((performance.now() - started) * 1000);
      }
    };
    const runs = await Promise.allSettled(open.map(echoAll));
    for (const run of runs) {
      if (run.status === "rejected") firstError ??= `echo: ${describe(run.reason)}`;
    }
    return {
      sessions,
      echoed: runs.filter((run) => run.status === "fulfilled").length,
      us: roundedSummary(samples),
      ...(firstError === undefined ? {} : { firstError }),
    };
  } finally {
    for (const session of open) session.stream.close();
  }
}

/** The relaying process's memory around a concurrency run. */
export interface MemoryResult {
  /** RSS (MB) before the sessions opened. */
  readonly beforeMb: number;
  /** RSS right after every session opened (the set-up's garbage included). */
  readonly openedMb: number;
  /**
   * RSS with every session open and idle (never streamed), `idleSeconds`
   * after they opened: V8 collects and shrinks an idle heap only when its
   * memory reducer runs, some seconds after the allocations stopped.
   */
  readonly idleMb: number;
  /** How long the sessions idled before `idleMb` was read. */
  readonly idleSeconds: number;
  /** RSS right after every session streamed once, when they streamed. */
  readonly afterStreamMb?: number;
  /** RSS once the sessions closed and the daemon's descriptors were back. */
  readonly afterCloseMb: number;
  /**
   * RSS `settleSeconds` after close: the first reading at or below
   * `settleTargetMb`, or the last one of the settle time.
   */
  readonly settledMb: number;
  /** How long after close `settledMb` was read. */
  readonly settleSeconds: number;
  /** What the settle waited for (1.5 × `beforeMb`). */
  readonly settleTargetMb: number;
  /** Open descriptors before, idle, and after close. */
  readonly fds: { readonly before: number; readonly idle: number; readonly afterClose: number };
}

/** Many sessions open at once, then (optionally) all streaming at once. */
export interface ConcurrencyResult {
  /** Sessions asked for. */
  readonly sessions: number;
  /** Sessions that opened. */
  readonly opened: number;
  /** Sessions that then streamed all their bytes (0 when not asked to). */
  readonly streamed: number;
  /** Seconds to open them (`openInflight` at a time). */
  readonly openSeconds: number;
  /** Seconds for all streams, from the first command to the last byte. */
  readonly streamSeconds: number;
  /** Bytes streamed by all sessions together per second, MB/s. */
  readonly aggregateMbPerS: number;
  /** Memory of the relay, when it has a PID. */
  readonly memory?: MemoryResult;
  /** The first failure, if any. */
  readonly firstError?: string;
}

/** Options of {@linkcode concurrency}. */
export interface ConcurrencyOptions {
  /** Bytes each session streams; 0 opens, idles and closes only. */
  readonly bytesEach: number;
  /** Sessions being opened at any time. */
  readonly openInflight: number;
  /** Read the relay's memory (it must have a PID). */
  readonly measureMemory: boolean;
  /** How long the open sessions idle before their RSS is read. */
  readonly idleMs: number;
  /** Longest wait after close for RSS to come down to 1.5 × start. */
  readonly settleMs: number;
}

/** RSS must come back to this multiple of its start value after close. */
export const SETTLE_FACTOR = 1.5;

function fdCount(pid: number): number {
  let count = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) count++;
  return count;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Descriptors a daemon may hold beyond its start once its sessions are gone. */
const FD_SLACK = 8;

/** Waits until `pid` holds at most `fds` descriptors (sessions torn down). */
async function waitForFds(pid: number, fds: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline && fdCount(pid) > fds) await sleep(100);
}

/**
 * Reads RSS every second for up to `ms` and returns the first reading at
 * or below `targetMb` (or the last one), with the seconds it took.
 */
async function settle(pid: number, targetMb: number, ms: number): Promise<[number, number]> {
  const started = performance.now();
  let rss = rssMb(pid);
  while (rss > targetMb && performance.now() - started < ms) {
    await sleep(Math.min(1_000, ms));
    rss = rssMb(pid);
  }
  return [rss, (performance.now() - started) / 1000];
}

/**
 * Opens `sessions` sessions (`openInflight` at a time), lets them idle,
 * then asks every one for `bytesEach` bytes at once (unless 0) and closes
 * them. With `measureMemory`, reads the relay's RSS before, just opened,
 * idle, after streaming, right after close and once settled.
 */
export async function concurrency(
  target: Target,
  sessions: number,
  options: ConcurrencyOptions,
): Promise<ConcurrencyResult> {
  const pid = options.measureMemory ? target.pid : undefined;
  const before = pid === undefined ? undefined : { rss: rssMb(pid), fds: fdCount(pid) };
  const openStarted = performance.now();
  const { open, failed } = await openSessions(target, sessions, options.openInflight);
  const openSeconds = (performance.now() - openStarted) / 1000;
  const opened = open.length;
  let firstError = failed;
  try {
    const openedMb = pid === undefined ? undefined : rssMb(pid);
    if (pid !== undefined) await sleep(options.idleMs);
    const idle = pid === undefined ? undefined : { rss: rssMb(pid), fds: fdCount(pid) };
    const streamStarted = performance.now();
    const streams = options.bytesEach === 0 ? [] : await Promise.allSettled(
      open.map((session) => streamFromServer(session.stream, options.bytesEach)),
    );
    const streamSeconds = (performance.now() - streamStarted) / 1000;
    const streamed = streams.filter((s) => s.status === "fulfilled").length;
    for (const s of streams) {
      if (s.status === "rejected") firstError ??= `stream: ${describe(s.reason)}`;
    }
    const afterStream = pid === undefined || options.bytesEach === 0 ? undefined : rssMb(pid);
    for (const session of open) session.stream.close();
    open.length = 0;
    let memory: MemoryResult | undefined;
    if (pid !== undefined && before && idle && openedMb !== undefined) {
      // A few descriptors of slack: the first session's password check may
      // have started a crypt Worker since `before` was read.
      await waitForFds(pid, before.fds + FD_SLACK, 30_000);
      await sleep(1_000);
      const afterCloseMb = round(rssMb(pid));
      const targetMb = SETTLE_FACTOR * before.rss;
      const [settledMb, settleSeconds] = await settle(pid, targetMb, options.settleMs);
      memory = {
        beforeMb: round(before.rss),
        openedMb: round(openedMb),
        idleMb: round(idle.rss),
        idleSeconds: options.idleMs / 1000,
        ...(afterStream === undefined ? {} : { afterStreamMb: round(afterStream) }),
        afterCloseMb,
        settledMb: round(settledMb),
        settleSeconds: Math.round(settleSeconds),
        settleTargetMb: round(targetMb),
        fds: { before: before.fds, idle: idle.fds, afterClose: fdCount(pid) },
      };
    }
    return {
      sessions,
      opened,
      streamed,
      openSeconds: round(openSeconds),
      streamSeconds: round(streamSeconds),
      aggregateMbPerS: streamed === 0
        ? 0
        : round(streamed * options.bytesEach / MB / streamSeconds),
      ...(memory ? { memory } : {}),
      ...(firstError === undefined ? {} : { firstError }),
    };
  } finally {
    for (const session of open) session.stream.close();
  }
}

/** A live session's echoes with and without a flood of failing control requests. */
export interface FloodEchoResult {
  /** Round trips before the flood, µs. */
  readonly baselineUs: Summary;
  /** Round trips during the flood, µs. */
  readonly floodUs: Summary;
  /** Seconds the flood lasted. */
  readonly floodSeconds: number;
  /** Flooding clients, each sending its next request once answered. */
  readonly clients: number;
  /** Flood requests answered (any reply) per second. */
  readonly answeredPerS: number;
  /** Flood requests not answered (refused, reset, or no reply). */
  readonly unanswered: number;
}

/** Options of {@linkcode floodEcho}. */
export interface FloodEchoOptions {
  /** Parallel flooding clients. */
  readonly clients: number;
  /** Timed echoes before the flood (after 20 untimed). */
  readonly baselineEchoes: number;
  /** How long the flood lasts; echoes go on through all of it. */
  readonly floodMs: number;
}

/**
 * Echo round trips of one live session, first alone, then while `clients`
 * clients send control requests for an unknown user, each the moment its
 * previous one was answered (an attacker on the control port).
 */
export async function floodEcho(
  target: Target,
  endpoint: ProxyEndpoint,
  options: FloodEchoOptions,
): Promise<FloodEchoResult> {
  const { stream } = await target.open();
  try {
    const once = echoer(stream);
    for (let i = 0; i < 20; i++) await once();
    const baseline: number[] = [];
    for (let i = 0; i < options.baselineEchoes; i++) {
      const started = performance.now();
      await once();
      baseline.push((performance.now() - started) * 1000);
    }

    let flooding = true;
    let answered = 0;
    let unanswered = 0;
    const flood = async (): Promise<void> => {
      while (flooding) {
        try {
          await controlRequest(endpoint.controlPort, {
            auth_user: "bench-flood-nobody",
            auth_password: "not-a-password",
            source_port: 0,
            destination_address: "127.0.0.1",
            destination_port: endpoint.serverPort,
            password: "benchpw1",
            type: "vnc",
          });
          answered++;
        } catch {
          unanswered++;
        }
      }
    };
    const floodStarted = performance.now();
    const clients = Array.from({ length: options.clients }, flood);
    const samples: number[] = [];
    while (performance.now() - floodStarted < options.floodMs) {
      const started = performance.now();
      await once();
      samples.push((performance.now() - started) * 1000);
    }
    const floodSeconds = (performance.now() - floodStarted) / 1000;
    flooding = false;
    await Promise.all(clients);
    return {
      baselineUs: roundedSummary(baseline),
      floodUs: roundedSummary(samples),
      floodSeconds: round(floodSeconds),
      clients: options.clients,
      answeredPerS: round(answered / floodSeconds),
      unanswered,
    };
  } finally {
    stream.close();
  }
}

/** Cost of the control user's password check. */
export interface PasswordCheckResult {
  /** Milliseconds of the first, uncached `UserDb.verify`. */
  readonly firstMs: number;
  /** Milliseconds of a wrong password (never cached). */
  readonly wrongMs: number;
  /** Milliseconds of repeated, cached calls. */
  readonly cachedMs: Summary;
}

/** Times `UserDb.verify` on the users file the CLI wrote ($6$, 5000 rounds). */
export async function passwordCheck(
  path: string,
  user: string,
  password: string,
  repeats: number,
): Promise<PasswordCheckResult> {
  const users = await UserDb.load(path);
  let started = performance.now();
  if (!(await users.verify(user, password))) throw new Error("The control password did not verify");
  const firstMs = performance.now() - started;
  started = performance.now();
  await users.verify(user, `${password}-wrong`);
  const wrongMs = performance.now() - started;
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) {
    started = performance.now();
    await users.verify(user, password);
    samples.push(performance.now() - started);
  }
  return { firstMs: round(firstMs), wrongMs: round(wrongMs), cachedMs: roundedSummary(samples) };
}

/** A one-line description of an error. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message || error.name : String(error);
}
