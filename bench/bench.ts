/**
 * `deno task bench [--quick] [--no-pin]`: measures vncauthproxy (`vnc` and `vnc-ws`)
 * against a direct connection to a fake VNC server and against socat and
 * websockify, prints the machine and one markdown table, and writes the raw
 * figures to `bench/results/<timestamp>.json`.
 *
 * `--quick` runs small sizes in a few seconds and only checks that every
 * scenario completed (exit status 1 otherwise); full mode prints the
 * issue's targets as PASS/MISS and never fails on them. `--only
 * GROUP[,GROUP]` runs just those rows (to repeat a few on a quiet
 * machine; see {@linkcode GROUPS}), `--sessions N[,N]` sets the
 * concurrency runs' session counts. Relays run on one CPU and the load on
 * the other (see `pinOwnProcess` in processes.ts); `--no-pin` runs them
 * unpinned.
 *
 * @module
 */

import { gatewayOutcomes, runGateway } from "./gateway.ts";
import { gatewayRows } from "./gateway_report.ts";
import { machineInfo } from "./procfs.ts";
import {
  createUsersFile,
  type Daemon,
  daemonHasFlag,
  type FakeServer,
  installed,
  pinOwnProcess,
  raiseOwnOpenFiles,
  type Reference,
  startDaemon,
  startFakeServer,
  startSocat,
  startWebsockify,
  type UsersFile,
  WANTED_OPEN_FILES,
} from "./processes.ts";
import {
  type BenchResults,
  type BenchSizes,
  formatTable,
  type Outcome,
  type TargetName,
} from "./report.ts";
import {
  concurrency,
  crowdEcho,
  describe,
  echo,
  floodEcho,
  passwordCheck,
  setupLatency,
  storm,
  throughput,
} from "./scenarios.ts";
import {
  proxyTarget,
  type ProxyType,
  type Target,
  tcpTarget,
  websockifyTarget,
} from "./sessions.ts";

const MIB = 1024 * 1024;
/** Below Linux's ephemeral ports (32768 and up), room for 10,000 sessions. */
const POOL = { minPort: 20_000, maxPort: 31_999 };
/** Descriptors the daemon needs besides two per idle session (set-ups in flight, its own). */
const FD_MARGIN = 256;
/** The flag that turns the control auth-failure rate limit off, where it exists. */
const AUTH_FAIL_LIMIT_FLAG = "auth-fail-limit";

// A single stream moves a GiB (WebSocket too: a quarter of one took 0.13 s,
// shorter than the noise of a shared VM), and the echo's p99 is the 100th
// largest of 10,000 round trips, not the 20th of 2,000.
const FULL: BenchSizes = {
  tcpBytes: 1024 * MIB,
  wsBytes: 1024 * MIB,
  setups: 500,
  storm: 200,
  stormInflight: 64,
  echoes: 10_000,
  crowdSessions: 1_000,
  crowdEchoes: 10,
  crowdIntervalMs: 500,
  sessions: [1_000, 5_000],
  bytesEach: MIB,
  idleSessions: 10_000,
  idleMs: 40_000,
  settleMs: 60_000,
  floodClients: 32,
  floodMs: 5_000,
  floodBaselineEchoes: 2_000,
};

const QUICK: BenchSizes = {
  tcpBytes: 32 * MIB,
  wsBytes: 32 * MIB,
  setups: 20,
  storm: 20,
  stormInflight: 64,
  echoes: 20,
  crowdSessions: 20,
  crowdEchoes: 5,
  crowdIntervalMs: 20,
  sessions: [50],
  bytesEach: MIB,
  idleSessions: 100,
  idleMs: 0,
  settleMs: 0,
  floodClients: 32,
  floodMs: 1_000,
  floodBaselineEchoes: 20,
};

/** The row groups `--only` takes, each with what it runs. */
export const GROUPS = {
  password: "the control password check",
  throughput: "one stream each: direct, socat, vnc, websockify, vnc-ws",
  echo: "echo round trips through one session",
  "crowd-echo": "echo round trips of many sessions at once",
  setup: "sequential set-ups",
  storm: "set-ups with many in flight",
  flood: "echo during a control flood",
  sessions: "many sessions streaming at once, per count: direct, socat, vnc, vnc-ws",
  idle: "idle-session memory",
  gateway: "the gateway's one session: throughput and set-up, beside websockify's token plugin",
  "gateway-sessions": "the gateway's crowds at every count (and websockify's)",
} as const;

/** A row group of `--only`. */
export type Group = keyof typeof GROUPS;

const USAGE =
  "Usage: deno task bench [--quick] [--no-pin] [--only GROUP[,GROUP]] [--sessions N[,N]]\n" +
  `Groups: ${Object.keys(GROUPS).join(", ")}`;

/** What the command line asks for. */
interface Arguments {
  readonly quick: boolean;
  /** Relays on one CPU, the load on the other (issue 16's layout); `--no-pin` turns it off. */
  readonly pin: boolean;
  /** The groups to run; all when `--only` is absent. */
  readonly groups: ReadonlySet<Group>;
  /** Session counts instead of the mode's. */
  readonly sessions?: readonly number[];
}

/** Parses the arguments; a message for the user when they make no sense. */
export function parseArguments(args: readonly string[]): Arguments | string {
  let quick = false;
  let pin = true;
  let groups: Set<Group> = new Set(Object.keys(GROUPS) as Group[]);
  let sessions: number[] | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const [name, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    if (name === "--quick" && inline === undefined) {
      quick = true;
      continue;
    }
    if (name === "--no-pin" && inline === undefined) {
      pin = false;
      continue;
    }
    if (name !== "--only" && name !== "--sessions") return `unknown argument: ${arg}`;
    const value = inline ?? args[++i];
    if (value === undefined || value === "") return `${name} needs a value`;
    const items = value.split(",").map((item) => item.trim());
    if (name === "--only") {
      const unknown = items.filter((item) => !(item in GROUPS));
      if (unknown.length > 0) return `unknown group: ${unknown.join(", ")}`;
      groups = new Set(items as Group[]);
    } else {
      sessions = items.map(Number);
      if (sessions.some((n) => !Number.isInteger(n) || n < 1 || n > 20_000)) {
        return `--sessions takes counts from 1 to 20000: ${value}`;
      }
    }
  }
  return { quick, pin, groups, ...(sessions ? { sessions } : {}) };
}

const encoder = new TextEncoder();

/** Writes a line to stdout (the table and the machine). */
function print(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text + "\n"));
}

/** Writes a progress line to stderr. */
function progress(text: string): void {
  Deno.stderr.writeSync(encoder.encode(`bench: ${text}\n`));
}

/** Rejects after `ms`, so one stuck scenario cannot hang the run. */
function timeout(ms: number, what: string): { promise: Promise<never>; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * Runs one scenario with a time limit, recording its outcome; `incomplete`
 * returns a reason when the run finished but not every operation succeeded.
 */
async function scenario<T>(
  name: string,
  limitMs: number,
  run: () => Promise<T>,
  incomplete?: (result: T) => string | undefined,
): Promise<Outcome<T>> {
  progress(`${name} ...`);
  const started = performance.now();
  const limit = timeout(limitMs, name);
  let outcome: Outcome<T>;
  try {
    const result = await Promise.race([run(), limit.promise]);
    const seconds = Math.round(performance.now() - started) / 1000;
    const reason = incomplete?.(result);
    outcome = reason === undefined
      ? { status: "ok", seconds, result }
      : { status: "incomplete", seconds, result, error: reason };
  } catch (error) {
    const seconds = Math.round(performance.now() - started) / 1000;
    outcome = { status: "failed", seconds, error: describe(error) };
  } finally {
    limit.cancel();
  }
  const detail = outcome.error ? `: ${outcome.error}` : "";
  progress(`${name} ${outcome.status} in ${outcome.seconds} s${detail}`);
  return outcome;
}

function skipped<T>(status: "unavailable" | "not installed", error: string): Outcome<T> {
  return { status, seconds: 0, error };
}

/** Tries one `vnc-ws` session; the reason when the daemon cannot serve it. */
async function probeWebSocket(target: Target): Promise<string | undefined> {
  const limit = timeout(10_000, "vnc-ws probe");
  try {
    const session = await Promise.race([target.open(), limit.promise]);
    session.stream.close();
    return undefined;
  } catch (error) {
    return describe(error);
  } finally {
    limit.cancel();
  }
}

interface Context {
  readonly sizes: BenchSizes;
  readonly quick: boolean;
  readonly groups: ReadonlySet<Group>;
  readonly users: UsersFile;
  readonly fake: FakeServer;
  readonly socat?: Reference;
  readonly websockify?: Reference;
  readonly results: BenchResults;
}

function referenceTargets(ctx: Context, ws: boolean): Partial<Record<TargetName, Target>> {
  const targets: Partial<Record<TargetName, Target>> = {
    direct: tcpTarget("direct", ctx.fake.port),
  };
  if (!ws && ctx.socat) targets.socat = tcpTarget("socat", ctx.socat.port, ctx.socat.pid);
  if (ws && ctx.websockify) {
    targets.websockify = websockifyTarget(ctx.websockify.port, ctx.websockify.pid);
  }
  return targets;
}

/** Throughput, echo, set-up, storm: one daemon for all of them. */
async function runSessionScenarios(ctx: Context): Promise<string | undefined> {
  const { sizes, results } = ctx;
  const limitMs = ctx.quick ? 60_000 : 180_000;
  const oneDaemon: Group[] = ["throughput", "echo", "crowd-echo", "setup", "storm"];
  if (!oneDaemon.some((group) => ctx.groups.has(group))) return undefined;
  await using daemon: Daemon = await startDaemon(ctx.users, ctx.fake.port, POOL);
  const vnc = proxyTarget("vnc", daemon.endpoint, daemon.pid);
  const vncWs = proxyTarget("vnc-ws", daemon.endpoint, daemon.pid);
  const wsUnavailable = await probeWebSocket(vncWs);
  if (wsUnavailable) progress(`vnc-ws unavailable: ${wsUnavailable}`);

  const plan: [TargetName, Target | undefined, number][] = [
    ["direct", referenceTargets(ctx, false).direct, sizes.tcpBytes],
    ["socat", referenceTargets(ctx, false).socat, sizes.tcpBytes],
    ["vnc", vnc, sizes.tcpBytes],
    ["websockify", referenceTargets(ctx, true).websockify, sizes.wsBytes],
    ["vnc-ws", vncWs, sizes.wsBytes],
  ];
  const wants = (group: Group) => ctx.groups.has(group);
  for (const [name, target, bytes] of wants("throughput") ? plan : []) {
    results.throughput[name] = skipIf(name, target, wsUnavailable) ??
      await scenario(
        `throughput ${name}`,
        limitMs,
        () => throughput(target!, bytes, Math.min(bytes, 16 * MIB)),
      );
  }
  for (const [name, target] of wants("echo") ? plan : []) {
    results.echo[name] = skipIf(name, target, wsUnavailable) ??
      await scenario(`echo ${name}`, limitMs, () => echo(target!, sizes.echoes, 20));
  }
  // websockify forks a process per session: no crowd of it.
  const crowd = plan.filter(([name]) => name !== "websockify");
  for (const [name, target] of wants("crowd-echo") ? crowd : []) {
    (results.crowdEcho ??= {})[name] = skipIf(name, target, wsUnavailable) ??
      await scenario(
        `echo ${name}, ${sizes.crowdSessions} sessions at once`,
        limitMs,
        () =>
          crowdEcho(target!, sizes.crowdSessions, sizes.crowdEchoes, 5, 64, sizes.crowdIntervalMs),
        (r) =>
          r.echoed === r.sessions
            ? undefined
            : `${r.echoed}/${r.sessions} echoed; first error: ${r.firstError}`,
      );
  }
  for (const [type, target] of wants("setup") ? [["vnc", vnc], ["vnc-ws", vncWs]] as const : []) {
    results.setup[type] = skipIf(type, target, wsUnavailable) ??
      await scenario(
        `set-up ${type} x${sizes.setups}`,
        limitMs,
        () => setupLatency(target, sizes.setups, 5),
        allSucceeded,
      );
  }
  for (const [type, target] of wants("storm") ? [["vnc", vnc], ["vnc-ws", vncWs]] as const : []) {
    results.storm[type] = skipIf(type, target, wsUnavailable) ??
      await scenario(
        `storm ${type} x${sizes.storm}`,
        limitMs,
        () => storm(target, sizes.storm, sizes.stormInflight),
        allSucceeded,
      );
  }
  return wsUnavailable;
}

function allSucceeded(r: { attempted: number; succeeded: number; firstError?: string }) {
  return r.succeeded === r.attempted
    ? undefined
    : `${r.succeeded}/${r.attempted} succeeded; first error: ${r.firstError}`;
}

function allStreamed(r: { sessions: number; streamed: number; firstError?: string }) {
  return r.streamed === r.sessions
    ? undefined
    : `${r.streamed}/${r.sessions} streamed; first error: ${r.firstError}`;
}

function skipIf<T>(
  name: TargetName,
  target: Target | undefined,
  wsUnavailable: string | undefined,
): Outcome<T> | undefined {
  if (name === "vnc-ws" && wsUnavailable !== undefined) {
    return skipped("unavailable", wsUnavailable);
  }
  if (target === undefined) return skipped("not installed", `${name} is not installed`);
  return undefined;
}

/**
 * Sessions at once, largest count first. Each proxied run gets a fresh
 * daemon, so its memory at start is a real baseline and no run inherits
 * the previous one's buffers; the largest count's memory is read.
 */
async function runConcurrency(ctx: Context, wsUnavailable: string | undefined): Promise<void> {
  const { sizes, results } = ctx;
  const limitMs = ctx.quick ? 60_000 : 240_000;
  const counts = [...sizes.sessions].sort((a, b) => b - a);
  const options = (measureMemory: boolean) => ({
    bytesEach: sizes.bytesEach,
    openInflight: 64,
    measureMemory,
    idleMs: sizes.idleMs,
    settleMs: sizes.settleMs,
  });
  for (const n of counts) results.concurrency[String(n)] = {};
  for (const [name, target] of Object.entries(referenceTargets(ctx, false))) {
    for (const n of counts) {
      results.concurrency[String(n)]![name as TargetName] = await scenario(
        `${n} sessions ${name}`,
        limitMs,
        () => concurrency(target, n, options(false)),
        allStreamed,
      );
    }
  }
  for (const n of counts) {
    const family = results.concurrency[String(n)]!;
    if (!ctx.socat) family.socat = skipped("not installed", "socat is not installed");
    for (const type of ["vnc", "vnc-ws"] as ProxyType[]) {
      if (type === "vnc-ws" && wsUnavailable !== undefined) {
        family[type] = skipped("unavailable", wsUnavailable);
        continue;
      }
      family[type] = await scenario(`${n} sessions ${type}`, limitMs, async () => {
        await using daemon = await startDaemon(ctx.users, ctx.fake.port, POOL);
        // Let the fresh daemon settle before its baseline RSS is read.
        await new Promise((resolve) => setTimeout(resolve, 500));
        // Only the largest count's memory is reported: the others skip the idle and settle waits.
        const target = proxyTarget(type, daemon.endpoint, daemon.pid);
        return await concurrency(target, n, options(n === counts[0]));
      }, allStreamed);
    }
  }
}

/**
 * As many idle `vnc` sessions as asked for, or as the open-files limit
 * leaves room for (two descriptors each), in a fresh daemon: memory only.
 */
async function runIdleMemory(ctx: Context, openFiles: number): Promise<void> {
  const { sizes, results } = ctx;
  const fitting = Math.floor((openFiles - FD_MARGIN) / 2 / 100) * 100;
  const sessions = Math.min(sizes.idleSessions, fitting);
  results.idleLimit = { wanted: sizes.idleSessions, sessions, openFiles };
  results.idle = await scenario(
    `${sessions} idle sessions vnc`,
    ctx.quick ? 60_000 : 300_000,
    async () => {
      await using daemon = await startDaemon(ctx.users, ctx.fake.port, POOL);
      await new Promise((resolve) => setTimeout(resolve, 500));
      return await concurrency(proxyTarget("vnc", daemon.endpoint, daemon.pid), sessions, {
        bytesEach: 0,
        openInflight: 64,
        measureMemory: true,
        idleMs: sizes.idleMs,
        settleMs: sizes.settleMs,
      });
    },
    (r) =>
      r.opened === r.sessions
        ? undefined
        : `${r.opened}/${r.sessions} opened; first error: ${r.firstError}`,
  );
}

/**
 * A live session's echo during a flood of unknown-user control requests,
 * in a daemon with the auth-failure rate limit off where the flag exists
 * (the flood is then answered by crypts, the worst case).
 */
async function runFlood(ctx: Context): Promise<void> {
  const { sizes, results } = ctx;
  const flag = await daemonHasFlag(AUTH_FAIL_LIMIT_FLAG);
  results.floodDaemonFlags = flag ? [`--${AUTH_FAIL_LIMIT_FLAG}=0`] : [];
  results.flood = await scenario(
    `echo vnc during a control flood x${sizes.floodClients}`,
    60_000,
    async () => {
      await using daemon = await startDaemon(ctx.users, ctx.fake.port, {
        ...POOL,
        args: results.floodDaemonFlags!,
      });
      return await floodEcho(proxyTarget("vnc", daemon.endpoint, daemon.pid), daemon.endpoint, {
        clients: sizes.floodClients,
        baselineEchoes: sizes.floodBaselineEchoes,
        floodMs: sizes.floodMs,
      });
    },
  );
}

function timestamp(): string {
  return new Date().toISOString().replace(/[:.]/g, "-");
}

/** Every outcome of the run, flattened, for the exit status. */
function outcomes(results: BenchResults): [string, Outcome<unknown>][] {
  const list: [string, Outcome<unknown>][] = [];
  if (results.password) list.push(["password", results.password]);
  if (results.flood) list.push(["flood", results.flood]);
  if (results.idle) list.push(["idle sessions", results.idle]);
  for (const family of ["throughput", "echo", "crowdEcho", "setup", "storm"] as const) {
    for (const [name, outcome] of Object.entries(results[family] ?? {})) {
      list.push([`${family} ${name}`, outcome as Outcome<unknown>]);
    }
  }
  for (const [n, family] of Object.entries(results.concurrency)) {
    for (const [name, outcome] of Object.entries(family)) {
      list.push([`${n} sessions ${name}`, outcome as Outcome<unknown>]);
    }
  }
  list.push(...gatewayOutcomes(results.gateway));
  return list;
}

async function main(args: string[]): Promise<number> {
  const parsed = parseArguments(args);
  if (typeof parsed === "string") {
    progress(`${parsed}\n${USAGE}`);
    return 2;
  }
  const { quick, groups } = parsed;
  const sizes: BenchSizes = {
    ...(quick ? QUICK : FULL),
    ...(parsed.sessions ? { sessions: parsed.sessions } : {}),
  };
  const wants = (group: Group) => groups.has(group);
  const started = performance.now();

  const ownLimit = raiseOwnOpenFiles();
  const pinning = pinOwnProcess(parsed.pin);
  const machine = machineInfo();
  const only = groups.size < Object.keys(GROUPS).length ? `, only ${[...groups].join(", ")}` : "";
  print(`## vncauthproxy bench (${quick ? "quick" : "full"}${only})\n`);
  print(
    `Machine: ${machine.nproc} CPUs, ${machine.cpuModel}, ${machine.memoryGb.toFixed(1)} GB, ` +
      `Linux ${machine.kernel}, Deno ${machine.deno.deno} (V8 ${machine.deno.v8}); ` +
      `open files ${ownLimit}${
        ownLimit < WANTED_OPEN_FILES ? " (hard limit, not raisable)" : ""
      }; ${pinning || "nothing pinned to a CPU (no taskset, or one CPU)"}\n`,
  );
  if (ownLimit < 3 * Math.max(...sizes.sessions)) {
    progress(`warning: open-files limit ${ownLimit} may be too low for the largest session count`);
  }

  const results: BenchResults = { throughput: {}, echo: {}, setup: {}, storm: {}, concurrency: {} };
  await using users = await createUsersFile();
  await using fake = await startFakeServer();
  await using socat = installed("socat") ? await startSocat(fake.port) : undefined;
  await using websockify = installed("websockify") ? await startWebsockify(fake.port) : undefined;
  const ctx: Context = {
    sizes,
    quick,
    groups,
    users,
    fake,
    ...(socat ? { socat } : {}),
    ...(websockify ? { websockify } : {}),
    results,
  };

  if (wants("password")) {
    results.password = await scenario(
      "password check",
      30_000,
      () => passwordCheck(users.path, users.user, users.password, quick ? 20 : 1_000),
    );
  }
  const wsUnavailable = await runSessionScenarios(ctx);
  if (wants("flood")) await runFlood(ctx);
  if (wants("sessions")) await runConcurrency(ctx, wsUnavailable);
  if (wants("idle")) await runIdleMemory(ctx, ownLimit);
  if (wants("gateway") || wants("gateway-sessions")) {
    results.gateway = await runGateway({
      sizes,
      quick,
      users,
      fake,
      pool: POOL,
      websockify: websockify !== undefined,
      scenario,
      parts: { single: wants("gateway"), crowds: wants("gateway-sessions") },
    });
  }

  const full = !quick;
  print(formatTable(results, sizes, full, gatewayRows(results), only === ""));
  const totalSeconds = Math.round(performance.now() - started) / 1000;
  const failures = outcomes(results).filter(([, o]) =>
    o.status === "failed" || (quick && o.status === "incomplete")
  );
  const unavailable = outcomes(results).filter(([, o]) => o.status === "unavailable");
  print("");
  if (unavailable.length > 0) {
    print(`Unavailable: ${unavailable.map(([n]) => n).join(", ")} (${unavailable[0]![1].error})`);
  }
  for (const [name, outcome] of failures) print(`FAILED ${name}: ${outcome.error}`);
  print(`Ran in ${totalSeconds} s.`);

  const dir = new URL("./results/", import.meta.url).pathname;
  await Deno.mkdir(dir, { recursive: true });
  const file = `${dir}${timestamp()}${quick ? "-quick" : ""}${only ? "-only" : ""}.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify(
      {
        mode: quick ? "quick" : "full",
        groups: [...groups],
        machine,
        openFiles: ownLimit,
        sizes,
        totalSeconds,
        results,
      },
      null,
      2,
    ) + "\n",
  );
  print(`Raw figures: ${file}`);
  return failures.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
