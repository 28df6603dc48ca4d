/**
 * Runs `main.ts` as a subprocess, as a user would run the daemon, with the
 * same permissions the compiled binary gets, and collects its log lines.
 *
 * @module
 */

import { hashPassword } from "../../src/auth/sha_crypt.ts";
import type { ForwardingReply } from "../../src/control/snf/control_client.ts";
import { signalChild, stopChild } from "./child_process.ts";

/** The permission flags of `deno task compile`, so tests prove they suffice. */
export const DAEMON_PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-sys=hostname",
];

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A running daemon. */
export interface DaemonProcess extends AsyncDisposable {
  /** Control port on 127.0.0.1. */
  readonly controlPort: number;
  /** Every stderr line so far. */
  readonly lines: string[];
  /** Every stdout line so far (the daemon logs to stderr; this should stay empty). */
  readonly stdoutLines: string[];
  /** The child process. */
  readonly child: Deno.ChildProcess;
  /** Waits for a log line matching `pattern`. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal. */
  kill(signal?: Deno.Signal): void;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
}

/** Polls until the daemon has logged `count` lines matching `pattern` in all. */
export async function waitForLines(
  daemon: DaemonProcess,
  pattern: RegExp,
  count: number,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let seen = 0;
  while ((seen = daemon.lines.filter((line) => pattern.test(line)).length) < count) {
    if (performance.now() > deadline) {
      throw new Error(
        `Only ${seen} of ${count} log lines match ${pattern} within ${timeoutMs} ms:\n` +
          daemon.lines.join("\n"),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Options of {@linkcode startDaemon}. */
export interface StartDaemonOptions {
  /** Extra flags. */
  readonly args?: readonly string[];
  /** Users to write into a fresh users file: name → password. */
  readonly users?: Readonly<Record<string, string>>;
  /** Use this users file instead. */
  readonly authFile?: string;
  /** Pool size (a random window below the ephemeral range). @default {40} */
  readonly poolSize?: number;
  /** The daemon's working directory. @default {the test's} */
  readonly cwd?: string;
}

/** Picks a random pool window below Linux's ephemeral port range. */
export function randomPool(size: number): { min: number; max: number } {
  // Below the default pool (25000-30000) and the ephemeral range, so a
  // daemon or benchmark running on this machine does not collide with tests.
  const min = 10_000 + Math.floor(Math.random() * (24_000 - 10_000 - size));
  return { min, max: min + size - 1 };
}

/** How a {@linkcode runMain} child ended, with its output. */
export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `main.ts ARGS` to completion (killed after `timeoutMs`). */
export async function runMain(
  args: readonly string[],
  options: { permissions?: readonly string[]; timeoutMs?: number } = {},
): Promise<RunResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...(options.permissions ?? DAEMON_PERMISSIONS), MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Writes a users file with `$6$` lines for `users` into a temp dir. */
export async function writeUsersFile(users: Readonly<Record<string, string>>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "vap-users-" });
  const path = `${dir}/users`;
  const text = Object.entries(users).map(([u, p]) => `${u}:${hashPassword(p)}\n`).join("");
  await Deno.writeTextFile(path, text, { mode: 0o600 });
  return path;
}

/** The complete lines of a text stream, without their `\n`; a last unterminated line is dropped. */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    const parts = rest.split("\n");
    rest = parts.pop()!;
    yield* parts;
  }
}

/**
 * Starts the daemon on an ephemeral control port and waits until it listens.
 * Disposing sends SIGTERM and waits for the exit.
 */
export async function startDaemon(options: StartDaemonOptions = {}): Promise<DaemonProcess> {
  const authFile = options.authFile ??
    await writeUsersFile(options.users ?? { admin: "control-secret" });
  const pool = randomPool(options.poolSize ?? 40);
  const args = [
    "run",
    ...DAEMON_PERMISSIONS,
    MAIN,
    "--listen-port=0",
    `--auth-file=${authFile}`,
    "--proxy-listen-address=127.0.0.1",
    `--min-port=${pool.min}`,
    `--max-port=${pool.max}`,
    "--debug",
    ...(options.args ?? []),
  ];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  }).spawn();
  const lines: string[] = [];
  const waiters = new Set<{ pattern: RegExp; resolve: (line: string) => void }>();
  const reading = (async () => {
    for await (const line of readLines(child.stderr)) {
      lines.push(line);
      if (Deno.env.get("VAP_TEST_LOG")) {
        await Deno.stderr.write(new TextEncoder().encode(`daemon| ${line}\n`));
      }
      for (const waiter of waiters) {
        if (waiter.pattern.test(line)) {
          waiters.delete(waiter);
          waiter.resolve(line);
        }
      }
    }
  })();
  const stdoutLines: string[] = [];
  const stdoutDone = (async () => {
    for await (const line of readLines(child.stdout)) stdoutLines.push(line);
  })();
  const status = child.status;

  function waitForLine(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const found = lines.find((line) => pattern.test(line));
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = {
        pattern,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new Error(`No log line matching ${pattern} within ${timeoutMs} ms:\n${lines.join("\n")}`),
        );
      }, timeoutMs);
      waiters.add(waiter);
      // Only once the whole log is read: the last lines may still be in the
      // pipe when the exit status arrives.
      Promise.all([status, reading]).then(() => {
        if (!waiters.has(waiter)) return;
        waiters.delete(waiter);
        clearTimeout(timer);
        reject(new Error(`Daemon exited before logging ${pattern}:\n${lines.join("\n")}`));
      });
    });
  }

  let controlPort: number;
  try {
    const ready = await waitForLine(/Listening for control connections on /, 20_000);
    controlPort = Number(/control connections on \S*?:(\d+)/.exec(ready)![1]);
  } catch (error) {
    signalChild(child, "SIGKILL");
    await status;
    await reading;
    await stdoutDone;
    throw error;
  }

  return {
    controlPort,
    lines,
    stdoutLines,
    child,
    waitForLine,
    status,
    kill(signal: Deno.Signal = "SIGTERM") {
      signalChild(child, signal);
    },
    async [Symbol.asyncDispose]() {
      await stopChild(child, { graceMs: 15_000 });
      await reading;
      await stdoutDone;
      if (options.authFile === undefined) {
        await Deno.remove(authFile.replace(/\/users$/, ""), { recursive: true });
      }
    },
  };
}

/** Sends raw bytes to the control port and returns the raw reply text. */
export async function rawControl(port: number, request: string | Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(typeof request === "string" ? new TextEncoder().encode(request) : request);
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
    return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  } finally {
    conn.close();
  }
}

/**
 * A forwarding request's fields, in the wire protocol's names. Values are
 * `unknown` so a test can send a wrong type on purpose.
 */
export interface ForwardingRequestFields {
  /** @default {"admin"} */
  readonly "auth_user"?: unknown;
  readonly "auth_password": unknown;
  /** @default {"127.0.0.1"} */
  readonly "destination_address"?: unknown;
  readonly "destination_port": unknown;
  /** Absent only in token mode. */
  readonly password?: unknown;
  readonly "source_port"?: unknown;
  readonly type?: unknown;
  readonly gateway?: unknown;
  readonly ttl?: unknown;
  readonly "client_address"?: unknown;
  readonly "idle_timeout"?: unknown;
  readonly "max_session_time"?: unknown;
}

/** A forwarding request as JSON text, with the defaults of {@linkcode ForwardingRequestFields}. */
export function forwardingRequestJson(fields: ForwardingRequestFields): string {
  return JSON.stringify({ auth_user: "admin", destination_address: "127.0.0.1", ...fields });
}

/** Sends {@linkcode forwardingRequestJson} to the control port; returns the parsed reply. */
export async function requestForwardingRaw(
  controlPort: number,
  fields: ForwardingRequestFields,
): Promise<ForwardingReply> {
  return JSON.parse(await rawControl(controlPort, forwardingRequestJson(fields)));
}

/** Connections opened by {@linkcode openIdleConnections}; disposing closes them all. */
export interface IdleConnections extends Disposable {
  /** The client sides, in the order they connected. */
  readonly conns: readonly Deno.Conn[];
}

/**
 * Opens `count` TCP connections from 127.0.0.1 to `port` that never send
 * nor read (a flood of idle clients), `batch` connects at a time so the
 * listener's backlog is not overrun.
 */
export async function openIdleConnections(
  port: number,
  count: number,
  options: { batch?: number } = {},
): Promise<IdleConnections> {
  const batch = options.batch ?? 100;
  const conns: Deno.Conn[] = [];
  const closeAll = () => {
    for (const conn of conns) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };
  try {
    while (conns.length < count) {
      const size = Math.min(batch, count - conns.length);
      const opened = await Promise.allSettled(
        Array.from({ length: size }, () => Deno.connect({ hostname: "127.0.0.1", port })),
      );
      for (const result of opened) if (result.status === "fulfilled") conns.push(result.value);
      const failed = opened.find((result) => result.status === "rejected");
      if (failed) throw failed.reason;
    }
  } catch (error) {
    closeAll();
    throw error;
  }
  return { conns, [Symbol.dispose]: closeAll };
}
