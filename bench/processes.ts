/**
 * The processes a bench run starts: the fake VNC server, the daemon (with
 * a users file made by `vncauthproxy passwd add`), and the socat
 * and websockify references. Each runs under `prlimit` with a high open-files limit, and
 * its output is drained continuously (the daemon logs synchronously, so an
 * unread pipe would stall it).
 *
 * @module
 */

import { readLines, runMain } from "../tests/_util/daemon_process.ts";
import { openFilesLimit, processTree } from "./procfs.ts";
import type { ProxyEndpoint } from "./sessions.ts";

/** Open-files limit wanted for every process of the bench. */
export const WANTED_OPEN_FILES = 65_536;

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;
const FAKE_SERVER = new URL("./fake_vnc_server.ts", import.meta.url).pathname;
const KEPT_LINES = 40;

/** A started process whose output is drained. */
export interface Started extends AsyncDisposable {
  /** Its PID (prlimit execs the command, so this is the command's). */
  readonly pid: number;
  /** The last output lines, for error messages. */
  readonly lines: string[];
  /** Whether it has exited. */
  readonly exited: boolean;
}

/** Whether `command` is on PATH. */
export function installed(command: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${command}`] }).outputSync().success;
  } catch {
    return false;
  }
}

const HAS_PRLIMIT = installed("prlimit");

/**
 * Where a process runs, as issue 16 measures: every relay (the daemon,
 * socat, websockify) on one core, the load (this process and the fake VNC
 * server) on the other. So a reference that forks a process per
 * connection (socat, websockify) gets one core, as our one-threaded relay
 * does, and the load tools never compete with the relay under test.
 */
export type Role = "relay" | "load";

/** The CPU of each role. */
const CPU_OF: Readonly<Record<Role, number>> = { relay: 0, load: 1 };

/** Pinning needs `taskset` and two CPUs; otherwise nothing is pinned. */
let pinned = installed("taskset") && navigator.hardwareConcurrency >= 2;

/**
 * Pins this process (every thread, and so the threads it starts later) to
 * the load's CPU, and the processes started from now on by their role;
 * with `wanted` false (`--no-pin`), nothing is pinned. Returns a line for
 * the report, empty when nothing is pinned.
 */
export function pinOwnProcess(wanted: boolean): string {
  pinned &&= wanted;
  if (!pinned) return "";
  const ok = new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", String(CPU_OF.load), String(Deno.pid)],
    stdout: "null",
    stderr: "null",
  }).outputSync().success;
  return ok
    ? `relays (vncauthproxy, socat, websockify) pinned to CPU ${CPU_OF.relay}, ` +
      `load (bench, fake VNC server) to CPU ${CPU_OF.load}`
    : "";
}

/**
 * The open-files limit children get: {@linkcode WANTED_OPEN_FILES} when
 * raising the hard limit is permitted (CAP_SYS_RESOURCE), else the hard
 * limit. Set by {@linkcode raiseOwnOpenFiles}.
 */
let openFiles = openFilesLimit().hard;

/**
 * Raises this process's open-files limit with `prlimit --pid` (soft and
 * hard to {@linkcode WANTED_OPEN_FILES} when permitted, else soft to the
 * hard limit) and returns the limit now in force for it and its children.
 */
export function raiseOwnOpenFiles(): number {
  if (HAS_PRLIMIT) {
    for (const limit of [WANTED_OPEN_FILES, openFilesLimit().hard]) {
      const ok = new Deno.Command("prlimit", {
        args: ["--pid", String(Deno.pid), `--nofile=${limit}:${limit}`],
        stdout: "null",
        stderr: "null",
      }).outputSync().success;
      if (ok) break;
    }
  }
  openFiles = openFilesLimit().soft;
  return openFiles;
}

/**
 * Spawns `command` under prlimit, drains stdout and stderr line by line,
 * and resolves once a line matches `ready` (with the match), or rejects
 * when it exits first or `timeoutMs` passes.
 */
export async function spawn(
  command: string,
  args: string[],
  ready: RegExp | undefined,
  options: { timeoutMs?: number; env?: Readonly<Record<string, string>>; role: Role },
): Promise<{ started: Started; match: RegExpExecArray | undefined }> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  // taskset and prlimit exec the command: the PID is the command's.
  const command_ = pinned
    ? ["taskset", ["-c", String(CPU_OF[options.role]), command, ...args]] as const
    : [command, args] as const;
  const [cmd, cmdArgs] = HAS_PRLIMIT
    ? ["prlimit", [`--nofile=${openFiles}:${openFiles}`, "--", command_[0], ...command_[1]]]
    : [command_[0], [...command_[1]]];
  const child = new Deno.Command(cmd, {
    args: cmdArgs,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { ...options.env, NO_COLOR: "1" },
  }).spawn();
  const lines: string[] = [];
  let exited = false;
  const found = Promise.withResolvers<RegExpExecArray | undefined>();
  if (ready === undefined) found.resolve(undefined);
  async function drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const line of readLines(stream)) {
      lines.push(line);
      if (lines.length > KEPT_LINES) lines.shift();
      const match = ready?.exec(line);
      if (match) found.resolve(match);
    }
  }
  const draining = Promise.all([drain(child.stdout), drain(child.stderr)]).catch(() => {});
  const status = child.status.then((s) => {
    exited = true;
    found.reject(new Error(`${command} exited (${s.code}): ${lines.join("\n")}`));
    return s;
  });
  const started: Started = {
    pid: child.pid,
    lines,
    get exited() {
      return exited;
    },
    async [Symbol.asyncDispose]() {
      if (!exited) {
        // The tree includes forked per-connection children of the references.
        for (const pid of processTree(child.pid).reverse()) signal(pid, "SIGTERM");
      }
      const timer = setTimeout(() => signal(child.pid, "SIGKILL"), 10_000);
      await status;
      clearTimeout(timer);
      await draining;
    },
  };
  const timer = setTimeout(
    () => found.reject(new Error(`${command} not ready within ${timeoutMs} ms: ${lines}`)),
    timeoutMs,
  );
  try {
    return { started, match: await found.promise };
  } catch (error) {
    await started[Symbol.asyncDispose]();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

function signal(pid: number, name: Deno.Signal): void {
  try {
    Deno.kill(pid, name);
  } catch {
    // Already gone.
  }
}

/** A started fake VNC server and its port. */
export interface FakeServer extends Started {
  /** Its port on 127.0.0.1. */
  readonly port: number;
}

/** Starts `bench/fake_vnc_server.ts` in its own process. */
export async function startFakeServer(): Promise<FakeServer> {
  const { started, match } = await spawn(
    Deno.execPath(),
    ["run", "--allow-net", FAKE_SERVER],
    /^PORT (\d+)$/,
    { role: "load" },
  );
  return Object.assign(started, { port: Number(match![1]) });
}

/** The control user the bench creates. */
const CONTROL_USER = "bench";
const CONTROL_PASSWORD = "bench-control-secret";

/** A users file made by the CLI, in a temporary directory. */
export interface UsersFile extends AsyncDisposable {
  /** Its path. */
  readonly path: string;
  /** The user in it. */
  readonly user: string;
  /** That user's password. */
  readonly password: string;
}

/**
 * Makes a users file with {@linkcode CONTROL_USER} in a temporary directory,
 * with `vncauthproxy passwd add`, as an operator would.
 */
export async function createUsersFile(): Promise<UsersFile> {
  const dir = await Deno.makeTempDir({ prefix: "vap-bench-users-" });
  const path = `${dir}/users`;
  const added = await runMain(["passwd", "add", path, CONTROL_USER, "-p", CONTROL_PASSWORD]);
  if (added.code !== 0) {
    await Deno.remove(dir, { recursive: true });
    throw new Error(`vncauthproxy passwd add failed: ${added.stderr}`);
  }
  return {
    path,
    user: CONTROL_USER,
    password: CONTROL_PASSWORD,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A running daemon. */
export interface Daemon extends Started {
  /** How sessions reach it. */
  readonly endpoint: ProxyEndpoint;
}

/** Options of {@linkcode startDaemon}. */
export interface DaemonOptions {
  /** First port of the pool. */
  readonly minPort: number;
  /** Last port of the pool. */
  readonly maxPort: number;
  /** Extra flags for `deno run`, e.g. `--cpu-prof`. @default {[]} */
  readonly denoFlags?: readonly string[];
  /** Extra flags for the daemon, e.g. `--gateway-listen=...`. @default {[]} */
  readonly args?: readonly string[];
}

/** How the daemon is started as it ships: environment and `deno run` flags. */
export interface ShippedCommand {
  /** Environment settings before the command (allocator tuning). */
  readonly env: Readonly<Record<string, string>>;
  /** Flags between `deno run` and `main.ts` (permissions, V8 flags). */
  readonly denoFlags: readonly string[];
}

/**
 * The daemon's command as deno.json's `start` task defines it
 * (`NAME=value ... deno run FLAGS... main.ts`): the one definition the
 * bench shares with `deno task start`, so the bench measures the daemon
 * as it ships (the systemd unit sets the same environment).
 */
export function shippedCommand(): ShippedCommand {
  const { tasks } = JSON.parse(Deno.readTextFileSync(DENO_JSON)) as {
    tasks: Record<string, string>;
  };
  const words = tasks.start!.trim().split(/\s+/);
  const env: Record<string, string> = {};
  while (/^[A-Z_][A-Z0-9_]*=/.test(words[0] ?? "")) {
    const word = words.shift()!;
    env[word.slice(0, word.indexOf("="))] = word.slice(word.indexOf("=") + 1);
  }
  const main = words.indexOf("main.ts");
  if (words[0] !== "deno" || words[1] !== "run" || main < 0) {
    throw new Error(`Cannot read the daemon's command from deno.json: ${tasks.start}`);
  }
  return { env, denoFlags: words.slice(2, main) };
}

/** Whether `main.ts --help` lists `flag` (another branch may add it). */
export async function daemonHasFlag(flag: string): Promise<boolean> {
  const help = await runMain(["--help"]);
  return help.stdout.includes(`--${flag}`) || help.stderr.includes(`--${flag}`);
}

/**
 * Starts `main.ts` as deno.json's `start` task does, with a pool of
 * `minPort`..`maxPort` and no port rest.
 */
export async function startDaemon(
  users: UsersFile,
  serverPort: number,
  options: DaemonOptions,
): Promise<Daemon> {
  const shipped = shippedCommand();
  const { started, match } = await spawn(
    Deno.execPath(),
    [
      "run",
      ...shipped.denoFlags,
      ...(options.denoFlags ?? []),
      MAIN,
      "--listen-port=0",
      `--auth-file=${users.path}`,
      "--proxy-listen-address=127.0.0.1",
      `--min-port=${options.minPort}`,
      `--max-port=${options.maxPort}`,
      "--port-cooldown=0",
      ...(options.args ?? []),
    ],
    /Listening for control connections on \S*?:(\d+)/,
    { env: shipped.env, role: "relay" },
  );
  const endpoint: ProxyEndpoint = {
    controlPort: Number(match![1]),
    user: users.user,
    password: users.password,
    serverPort,
  };
  return Object.assign(started, { endpoint });
}

/** A running reference relay and its port. */
export interface Reference extends Started {
  /** Its listening port on 127.0.0.1. */
  readonly port: number;
}

/** `socat -b 1048576 TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:FAKE`. */
export async function startSocat(serverPort: number): Promise<Reference> {
  const port = freePort();
  const { started } = await spawn(
    "socat",
    [
      "-b",
      "1048576",
      `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr,backlog=1024`,
      `TCP:127.0.0.1:${serverPort}`,
    ],
    undefined,
    { role: "relay" },
  );
  await waitForPort(port, started);
  return Object.assign(started, { port });
}

/** Debian's `websockify 127.0.0.1:P 127.0.0.1:FAKE`. */
export async function startWebsockify(serverPort: number): Promise<Reference> {
  const port = freePort();
  const { started } = await spawn(
    "websockify",
    [
      `127.0.0.1:${port}`,
      `127.0.0.1:${serverPort}`,
    ],
    undefined,
    { role: "relay" },
  );
  await waitForPort(port, started);
  return Object.assign(started, { port });
}

/** A port that was free on 127.0.0.1 a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Waits until something listens on `port`, without opening a session. */
export async function waitForPort(
  port: number,
  started: Started,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (started.exited) throw new Error(`Exited before listening: ${started.lines.join("\n")}`);
    if (listening(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await started[Symbol.asyncDispose]();
  throw new Error(`Nothing listens on port ${port} after ${timeoutMs} ms`);
}

/** Looks for a listening socket on 127.0.0.1:`port` in /proc/net/tcp. */
function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const table = Deno.readTextFileSync("/proc/net/tcp");
  // Local address 0100007F:PORT, state 0A (LISTEN).
  return table.split("\n").some((line) => {
    const fields = line.trim().split(/\s+/);
    return fields[1] === `0100007F:${hex}` && fields[3] === "0A";
  });
}
