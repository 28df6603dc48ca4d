/**
 * Runs `main.ts demo` as a subprocess, with the compiled program's
 * permissions, and reads its standard output the way a script would: one
 * `key: value` or `key N: value` line per fact (see `vncauthproxy demo --help`).
 *
 * @module
 */

import { stopChild } from "./child_process.ts";
import { DAEMON_PERMISSIONS, randomPool, readLines } from "./daemon_process.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** One parsed line of the demo's standard output. */
export interface DemoLine {
  /** `backend`, `control`, `files`, `request`, `browser`, `vnc`, `used`, ... */
  readonly key: string;
  /** The request number, for the keys that have one. */
  readonly n: number | undefined;
  /** The rest of the line. */
  readonly value: string;
}

/** A running demo. */
export interface DemoProcess extends AsyncDisposable {
  /** Every stdout line so far, parsed. */
  readonly lines: DemoLine[];
  /** Every stderr line so far (the daemon's log). */
  readonly log: string[];
  /** The child process. */
  readonly child: Deno.ChildProcess;
  /** Waits for a line with `key` (and a number above `after`, when given). */
  waitFor(key: string, options?: { after?: number; timeoutMs?: number }): Promise<DemoLine>;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
}

/** Parses `key: value` and `key N: value`. */
export function parseDemoLine(line: string): DemoLine | undefined {
  const match = /^([a-z]+)(?: (\d+))?: (.*)$/.exec(line);
  if (match === null) return undefined;
  return {
    key: match[1]!,
    n: match[2] === undefined ? undefined : Number(match[2]),
    value: match[3]!,
  };
}

/** Parses a `vnc N:` value: `HOST:PORT password PASSWORD`. */
export function parseVncOffer(value: string): { host: string; port: number; password: string } {
  const match = /^(\S+):(\d+) password (\S+)$/.exec(value);
  if (match === null) throw new Error(`Not a vnc offer: "${value}"`);
  return { host: match[1]!, port: Number(match[2]), password: match[3]! };
}

/**
 * Starts `main.ts demo ARGS` on a random pool window. Disposing sends
 * SIGINT (as Ctrl-C does) and waits for the exit.
 */
export function startDemo(args: readonly string[] = []): DemoProcess {
  const pool = randomPool(20);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...DAEMON_PERMISSIONS,
      MAIN,
      "demo",
      `--min-port=${pool.min}`,
      `--max-port=${pool.max}`,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const lines: DemoLine[] = [];
  const log: string[] = [];
  const changed = new Set<() => void>();
  let ended = false;
  const echo = Deno.env.get("VAP_TEST_LOG") !== undefined;
  const readOut = (async () => {
    for await (const line of readLines(child.stdout)) {
      if (echo) await Deno.stderr.write(new TextEncoder().encode(`demo| ${line}\n`));
      const parsed = parseDemoLine(line);
      if (parsed !== undefined) lines.push(parsed);
      for (const wake of [...changed]) wake();
    }
  })();
  const readErr = (async () => {
    for await (const line of readLines(child.stderr)) {
      if (echo) await Deno.stderr.write(new TextEncoder().encode(`log| ${line}\n`));
      log.push(line);
    }
  })();
  const status = (async () => {
    const result = await child.status;
    await Promise.all([readOut, readErr]);
    ended = true;
    for (const wake of [...changed]) wake();
    return result;
  })();

  function waitFor(
    key: string,
    options: { after?: number; timeoutMs?: number } = {},
  ): Promise<DemoLine> {
    const after = options.after ?? 0;
    const find = () => lines.find((l) => l.key === key && (l.n === undefined || l.n > after));
    return new Promise((resolve, reject) => {
      const done = () => {
        changed.delete(check);
        clearTimeout(timer);
      };
      const check = () => {
        const hit = find();
        if (hit !== undefined) {
          done();
          resolve(hit);
        } else if (ended) {
          done();
          reject(new Error(`The demo ended without a "${key}" line; log:\n${log.join("\n")}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `No "${key}" line after ${options.timeoutMs ?? 20_000} ms; log:\n${log.join("\n")}`,
          ),
        );
      }, options.timeoutMs ?? 20_000);
      changed.add(check);
      check();
    });
  }

  return {
    lines,
    log,
    child,
    waitFor,
    status,
    async [Symbol.asyncDispose]() {
      // Nothing to signal once it ended (signalChild ignores a gone process).
      await stopChild(child, { signal: "SIGINT", graceMs: 15_000 });
      await status;
    },
  };
}
