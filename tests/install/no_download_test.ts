/**
 * The product fetches nothing at run time: with an empty `DENO_DIR` and
 * the npm registry pointed at a closed port, `deno task start`, `deno task
 * demo` and `deno run --cached-only main.ts` (the daemon, for a second)
 * all work, and the cache holds no npm package afterwards. Test-only npm
 * packages are pinned by `tests/deno.lock`, which only the test runner
 * reads: with a lockfile in deno.json's reach, `deno task` installs every
 * npm package it names before it runs anything.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DAEMON_PERMISSIONS, randomPool, readLines } from "../_util/daemon_process.ts";
import { parseDemoLine } from "../_util/demo_process.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** An empty Deno cache and an npm registry nobody answers on. */
async function offlineEnv(): Promise<{ env: Record<string, string> } & AsyncDisposable> {
  const denoDir = await Deno.makeTempDir({ prefix: "vap-empty-deno-dir-" });
  return {
    env: {
      DENO_DIR: denoDir,
      // Port 1 on loopback: any download attempt fails at once.
      NPM_CONFIG_REGISTRY: "http://127.0.0.1:1/",
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(denoDir, { recursive: true });
    },
  };
}

/** The npm packages in a Deno cache (none, we hope). */
function cachedNpmPackages(denoDir: string): string[] {
  try {
    return [...Deno.readDirSync(`${denoDir}/npm/registry.npmjs.org`)].map((e) => e.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

async function run(args: readonly string[], env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...args],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

for (const task of ["start", "demo"]) {
  Deno.test(`deno task ${task} --help downloads nothing (empty DENO_DIR, registry unreachable)`, async () => {
    await using offline = await offlineEnv();
    const result = await run(["task", task, "--help"], offline.env);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^Usage: vncauthproxy /m);
    assert.doesNotMatch(result.stderr, /Download/);
    assert.deepEqual(cachedNpmPackages(offline.env.DENO_DIR!), []);
  });
}

Deno.test("deno run --cached-only main.ts --help works with an empty DENO_DIR", async () => {
  await using offline = await offlineEnv();
  const result = await run(
    ["run", "--cached-only", ...DAEMON_PERMISSIONS, "main.ts", "--help"],
    offline.env,
  );
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^Usage: vncauthproxy \[serve\]/);
});

/** Spawns `args` in the repository and returns the child with its stderr/stdout lines. */
function spawn(args: readonly string[], env: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...args],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return child;
}

/** Resolves with the first line of `stream` matching `pattern`; reads the rest after it. */
function firstMatch(
  stream: ReadableStream<Uint8Array>,
  pattern: RegExp,
  seen: string[],
): { line: Promise<string | undefined>; done: Promise<void> } {
  const line = Promise.withResolvers<string | undefined>();
  const done = (async () => {
    for await (const text of readLines(stream)) {
      seen.push(text);
      if (pattern.test(text)) line.resolve(text);
    }
    line.resolve(undefined);
  })();
  return { line: line.promise, done };
}

Deno.test("the daemon runs for a second with --cached-only and an empty DENO_DIR", async () => {
  await using offline = await offlineEnv();
  const pool = randomPool(5);
  const child = spawn([
    "run",
    "--cached-only",
    ...DAEMON_PERMISSIONS,
    "main.ts",
    "--listen-port=0",
    `--auth-file=${offline.env.DENO_DIR}/no-users`,
    "--proxy-listen-address=127.0.0.1",
    `--min-port=${pool.min}`,
    `--max-port=${pool.max}`,
  ], offline.env);
  const log: string[] = [];
  const stdout = child.stdout.cancel();
  const listening = firstMatch(child.stderr, /Listening for control connections/, log);
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    assert.ok(await listening.line, log.join("\n"));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0, log.join("\n"));
  } finally {
    clearTimeout(timer);
    await listening.done;
    await stdout;
  }
  assert.deepEqual(cachedNpmPackages(offline.env.DENO_DIR!), []);
});

Deno.test("deno task demo runs (daemon, test card, forwardings) with an empty DENO_DIR", async () => {
  await using offline = await offlineEnv();
  const pool = randomPool(5);
  const child = spawn(
    ["task", "demo", `--min-port=${pool.min}`, `--max-port=${pool.max}`],
    offline.env,
  );
  const out: string[] = [];
  const log: string[] = [];
  const offer = firstMatch(child.stdout, /^vnc \d+: /, out);
  const stderr = (async () => {
    for await (const line of readLines(child.stderr)) log.push(line);
  })();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const line = await offer.line;
    assert.ok(line, `no vnc offer; log:\n${log.join("\n")}`);
    assert.equal(parseDemoLine(line)?.key, "vnc");
    // deno task runs the demo as its child: Ctrl-C reaches the whole group,
    // here the task's child by its own signal.
    child.kill("SIGINT");
    const status = await child.status;
    assert.equal(status.code, 0, log.join("\n"));
  } finally {
    clearTimeout(timer);
    await offer.done;
    await stderr;
  }
  assert.ok(out.some((line) => line.startsWith("stopped: ")), out.join("\n"));
  assert.doesNotMatch(log.join("\n"), /Download/);
  assert.deepEqual(cachedNpmPackages(offline.env.DENO_DIR!), []);
});
