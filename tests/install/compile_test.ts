/**
 * `deno task compile` builds the single executable. The runtime `deno
 * compile` normally downloads (denort) is not reachable here, so the test
 * points `DENORT_BIN` at the running `deno`: the module graph is still
 * built, type-checked and embedded, which is what can break. The output is
 * not a working program and is never run.
 *
 * The crypt Worker's module is not in the static module graph (`deno
 * compile` does not follow `new Worker(new URL(...))`), so the task names it
 * with `--include`, and the test reads the embedded file list to see it.
 */

import assert from "node:assert/strict";
import { DAEMON_PERMISSIONS } from "../_util/daemon_process.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const WORKER = "src/auth/crypt_worker.ts";
/** The modules only a Worker loads, which `deno compile` must be told about. */
const INCLUDES = ["--include", WORKER];

Deno.test("deno task compile uses exactly the daemon's permissions and embeds the crypt worker", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  assert.equal(
    config.tasks.compile,
    `deno compile ${DAEMON_PERMISSIONS.join(" ")} ${
      INCLUDES.join(" ")
    } --output dist/vncauthproxy main.ts`,
  );
});

/** Runs `deno compile` into `output`; returns its log. */
async function compile(output: string, extra: readonly string[]): Promise<string> {
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["compile", ...DAEMON_PERMISSIONS, ...extra, "--output", output, "main.ts"],
    cwd: ROOT,
    env: { DENORT_BIN: Deno.execPath(), NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const log = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assert.equal(result.code, 0, log);
  return log;
}

/**
 * The paths of the "Embedded Files" tree `deno compile` prints, e.g.
 * `src/auth/sha_crypt.ts`; a folder whose files are all embedded is
 * printed as `folder/*`.
 */
function embeddedPaths(log: string): string[] {
  const paths: string[] = [];
  const stack: string[] = [];
  for (const line of log.split("\n")) {
    const match = /^((?:[│ ] )*)[├└]─[─┬] (\S+)/.exec(line);
    if (match === null) continue;
    const depth = match[1]!.length / 2;
    stack.length = depth;
    stack.push(match[2]!);
    paths.push(stack.join("/"));
  }
  return paths;
}

/** Whether `paths` (from {@linkcode embeddedPaths}) hold `file`, itself or as part of a `folder/*`. */
function embeds(paths: readonly string[], file: string): boolean {
  return paths.some((path) =>
    path === file || (path.endsWith("/*") && file.startsWith(path.slice(0, -1)))
  );
}

Deno.test("deno compile builds, type-checks and embeds main.ts and the crypt worker into one executable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vap-compile-" });
  try {
    const output = `${dir}/vncauthproxy`;
    const log = await compile(output, INCLUDES);
    const info = await Deno.stat(output);
    assert.ok(info.isFile, log);
    assert.ok(info.size > 1_000_000, `suspiciously small executable: ${info.size} bytes`);
    assert.ok((info.mode ?? 0) & 0o100, "the executable bit is set");
    const paths = embeddedPaths(log);
    assert.ok(embeds(paths, "main.ts"), log);
    assert.ok(embeds(paths, WORKER), `the crypt worker is not embedded:\n${log}`);

    // Without --include the worker is missing: the list above proves something.
    const without = await compile(`${dir}/without-include`, []);
    assert.ok(embeds(embeddedPaths(without), "src/auth/sha_crypt.ts"), without);
    assert.ok(!embeds(embeddedPaths(without), WORKER), without);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
