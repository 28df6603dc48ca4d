/**
 * Helpers of the Debian package tests (tests/install/deb*_test.ts): running
 * commands in a clean environment, one package test at a time on the
 * machine, the daemon's log, and the removal and purge checks every kind of
 * package must pass.
 *
 * @module
 */

import assert from "node:assert/strict";
import { readLines } from "./daemon_process.ts";

export const PACKAGE = "vncauthproxy";
export const USER = "vncauthproxy";
export const STATE = "/var/lib/vncauthproxy";
export const LOGS = "/var/log/vncauthproxy";
export const UNIT = "/lib/systemd/system/vncauthproxy.service";
export const DEFAULTS = "/etc/default/vncauthproxy";

/** A finished command. */
export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** How long {@linkcode run} waits for another dpkg or apt to release dpkg's lock. */
const DPKG_LOCK_WAIT_MS = 120_000;

/**
 * Runs a command to completion from `/`, with a small clean environment.
 * `dpkg` is run again while another dpkg or apt of the machine holds its
 * lock (for up to two minutes), as apt itself waits for it.
 */
export async function run(
  command: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<Run> {
  const deadline = Date.now() + DPKG_LOCK_WAIT_MS;
  while (true) {
    const result = await runOnce(command, args, env);
    const locked = command === "dpkg" && result.code === 2 &&
      /locked by another process/.test(result.stderr);
    if (!locked || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
}

async function runOnce(
  command: string,
  args: readonly string[],
  env: Record<string, string>,
): Promise<Run> {
  const out = await new Deno.Command(command, {
    args: [...args],
    cwd: "/",
    clearEnv: true,
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C", NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** {@linkcode run}, asserting exit code 0; returns stdout. */
export async function runOk(
  command: string,
  args: readonly string[],
  env?: Record<string, string>,
): Promise<string> {
  const result = await run(command, args, env);
  assert.equal(
    result.code,
    0,
    `${command} ${args.join(" ")} exited ${result.code}:\n${result.stdout}${result.stderr}`,
  );
  return result.stdout;
}

/** Whether `command` is on PATH. */
export function which(command: string): boolean {
  return new Deno.Command("sh", { args: ["-c", `command -v ${command}`], stdout: "null" })
    .outputSync().success;
}

/** The first of `tools` not on PATH, as "needs TOOL", or undefined. */
export function missingTool(tools: readonly string[]): string | undefined {
  const tool = tools.find((name) => !which(name));
  return tool === undefined ? undefined : `needs ${tool}`;
}

/**
 * Waits for, then holds, the machine-wide turn of the package tests until
 * disposed (`using _turn = await lockPackageTests()`): each installs and
 * purges the one package `vncauthproxy`, so two of them (in other files,
 * which `deno test --parallel` runs side by side) must not overlap.
 */
export async function lockPackageTests(): Promise<Disposable> {
  const file = await Deno.open("/tmp/vncauthproxy-deb-test.lock", {
    create: true,
    write: true,
    mode: 0o600,
  });
  try {
    await file.lock(true);
  } catch (error) {
    file.close();
    throw error;
  }
  // Closing the file releases the lock.
  return { [Symbol.dispose]: () => file.close() };
}

/** Asserts what `dpkg -r` must do: the program goes, the data, conffile and user stay. */
export async function assertRemoveKeepsData(usersPattern: RegExp): Promise<void> {
  await runOk("dpkg", ["--remove", PACKAGE]);
  await assert.rejects(Deno.stat("/usr/bin/vncauthproxy"), Deno.errors.NotFound);
  assert.match(await Deno.readTextFile(`${STATE}/users`), usersPattern);
  assert.ok((await Deno.stat(LOGS)).isDirectory);
  assert.ok((await Deno.stat(DEFAULTS)).isFile, "conffile kept");
  assert.equal((await run("getent", ["passwd", USER])).code, 0);
}

/** Asserts what `dpkg -P` must do: data, conffile, user and group gone. */
export async function assertPurgeRemovesAll(): Promise<void> {
  await runOk("dpkg", ["--purge", PACKAGE]);
  for (const path of [STATE, LOGS, DEFAULTS]) {
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound, path);
  }
  assert.notEqual((await run("getent", ["passwd", USER])).code, 0, "user removed");
  assert.notEqual((await run("getent", ["group", USER])).code, 0, "group removed");
  assert.equal((await run("dpkg-query", ["--status", PACKAGE])).code, 1);
}

/** A process's stderr lines, collected, with a wait for a pattern in them. */
export interface LineLog {
  /** Resolves when the stream has ended. */
  readonly done: Promise<void>;
  /** Every line so far. */
  text(): string;
  /** The first line matching `pattern`; fails after `timeoutMs` or at the end. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

/** Collects a process's stderr lines and waits for patterns in them. */
export function collectLines(stream: ReadableStream<Uint8Array>): LineLog {
  const lines: string[] = [];
  let wake = () => {};
  let ended = false;
  const done = (async () => {
    for await (const line of readLines(stream)) {
      lines.push(line);
      wake();
    }
    ended = true;
    wake();
  })();
  return {
    done,
    text: () => lines.join("\n"),
    async waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        const found = lines.find((line) => pattern.test(line));
        if (found !== undefined) return found;
        if (ended || Date.now() > deadline) {
          assert.fail(`No line matching ${pattern}:\n${lines.join("\n")}`);
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, 100);
        });
        clearTimeout(timer);
      }
    },
  };
}

/**
 * Ends a package test whatever happened: kills the installed daemon if it
 * still runs, purges the package and removes the test's work directory.
 */
export async function cleanUpInstall(
  daemon: Deno.ChildProcess | undefined,
  work: string,
): Promise<void> {
  if (daemon !== undefined) {
    try {
      daemon.kill("SIGKILL");
    } catch { /* gone */ }
    await daemon.status;
    await daemon.stderr.cancel().catch(() => {});
  }
  await run("dpkg", ["--purge", PACKAGE]);
  await Deno.remove(work, { recursive: true });
}
