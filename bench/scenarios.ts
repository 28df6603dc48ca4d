/**
 * The bench's measurements, each against any {@linkcode Target}: bulk
 * throughput, set-up latency, a control storm, echo round trips, many
 * sessions at once (with the relay's memory), and the control password check.
 *
 * @module
 */

import { UserDb } from "../src/auth/user_db.ts";
import { cpuSeconds, rssMb } from "./procfs.ts";
import { echoer, type Session, streamFromServer, type Target } from "./sessions.ts";
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

/** The relaying process's memory around a concurrency run. */
export interface MemoryResult {
  /** RSS (MB) before the sessions opened. */
  readonly beforeMb: number;
  /** RSS with every session open and idle (never streamed). */
  readonly idleMb: number;
  /** RSS right after every session streamed once. */
  readonly afterStreamMb: number;
  /** RSS once the sessions closed and the daemon's descriptors were back. */
  readonly afterCloseMb: number;
  /**
   * RSS `settleSeconds` later: V8 collects an idle heap only when its
   * memory reducer runs, some tens of seconds after the traffic stopped.
   */
  readonly settledMb: number;
  /** How long after close `settledMb` was read. */
  readonly settleSeconds: number;
  /** Open descriptors before, idle, and after close. */
  readonly fds: { readonly before: number; readonly idle: number; readonly afterClose: number };
}

/** Many sessions open at once, then all streaming at once. */
export interface ConcurrencyResult {
  /** Sessions asked for. */
  readonly sessions: number;
  /** Sessions that opened. */
  readonly opened: number;
  /** Sessions that then streamed all their bytes. */
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

function fdCount(pid: number): number {
  let count = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) count++;
  return count;
}

/** Waits until `pid` holds at most `fds` descriptors (sessions torn down). */
async function waitForFds(pid: number, fds: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline && fdCount(pid) > fds) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Opens `sessions` sessions (`openInflight` at a time), then asks every one
 * for `bytesEach` bytes at once. With `measureMemory`, reads the relay's RSS
 * before, idle, after streaming, and after all closed.
 */
export async function concurrency(
  target: Target,
  sessions: number,
  options: { bytesEach: number; openInflight: number; measureMemory: boolean; settleMs: number },
): Promise<ConcurrencyResult> {
  const pid = options.measureMemory ? target.pid : undefined;
  const before = pid === undefined ? undefined : { rss: rssMb(pid), fds: fdCount(pid) };
  let firstError: string | undefined;
  const openStarted = performance.now();
  const outcomes = await mapLimit(sessions, options.openInflight, () => target.open());
  const openSeconds = (performance.now() - openStarted) / 1000;
  const open: Session[] = [];
  for (const outcome of outcomes) {
    if (outcome.status === "fulfilled") open.push(outcome.value);
    else firstError ??= `open: ${describe(outcome.reason)}`;
  }
  try {
    const idle = pid === undefined ? undefined : { rss: rssMb(pid), fds: fdCount(pid) };
    const streamStarted = performance.now();
    const streams = await Promise.allSettled(
      open.map((session) => streamFromServer(session.stream, options.bytesEach)),
    );
    const streamSeconds = (performance.now() - streamStarted) / 1000;
    const streamed = streams.filter((s) => s.status === "fulfilled").length;
    for (const s of streams) {
      if (s.status === "rejected") firstError ??= `stream: ${describe(s.reason)}`;
    }
    const afterStream = pid === undefined ? undefined : rssMb(pid);
    for (const session of open) session.stream.close();
    open.length = 0;
    let memory: MemoryResult | undefined;
    if (pid !== undefined && before && idle && afterStream !== undefined) {
      await waitForFds(pid, before.fds, 30_000);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const afterCloseMb = round(rssMb(pid));
      await new Promise((resolve) => setTimeout(resolve, options.settleMs));
      memory = {
        beforeMb: round(before.rss),
        idleMb: round(idle.rss),
        afterStreamMb: round(afterStream),
        afterCloseMb,
        settledMb: round(rssMb(pid)),
        settleSeconds: options.settleMs / 1000,
        fds: { before: before.fds, idle: idle.fds, afterClose: fdCount(pid) },
      };
    }
    return {
      sessions,
      opened: outcomes.length - outcomes.filter((o) => o.status === "rejected").length,
      streamed,
      openSeconds: round(openSeconds),
      streamSeconds: round(streamSeconds),
      aggregateMbPerS: round(streamed * options.bytesEach / MB / streamSeconds),
      ...(memory ? { memory } : {}),
      ...(firstError === undefined ? {} : { firstError }),
    };
  } finally {
    for (const session of open) session.stream.close();
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
