/**
 * The gate (`deno task ok`): format check, lint, type check and every test,
 * ending with one plain summary line (`N passed, N failed, N skipped`) that
 * CI reads. `--tests-only` runs just the tests (`deno task test`).
 *
 * Extra arguments after `--` go to `deno test` (e.g. a file filter).
 *
 * @module
 */

const testsOnly = Deno.args.includes("--tests-only");
const dashDash = Deno.args.indexOf("--");
const extra = dashDash === -1 ? [] : Deno.args.slice(dashDash + 1);
const deno = Deno.execPath();

async function step(name: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  // deno-lint-ignore no-console
  console.log(`==> deno ${args.join(" ")}`);
  const child = new Deno.Command(deno, {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const decoder = new TextDecoder();
  let output = "";
  async function copy(stream: ReadableStream<Uint8Array>, target: typeof Deno.stdout) {
    for await (const chunk of stream) {
      output += decoder.decode(chunk, { stream: true });
      await target.write(chunk);
    }
  }
  const [status] = await Promise.all([
    child.status,
    copy(child.stdout, Deno.stdout),
    copy(child.stderr, Deno.stderr),
  ]);
  if (!status.success) {
    // deno-lint-ignore no-console
    console.log(`==> ${name} failed`);
  }
  return { ok: status.success, output };
}

/**
 * The tests' npm packages are pinned and checked by `tests/deno.lock`.
 * deno.json says `"lock": false`: with a lockfile there, `deno task start`
 * (and `deno task demo`) would download every npm package it names, test-only
 * ones included, before running a program that uses none.
 */
const TEST_LOCK = ["--lock=tests/deno.lock", "--frozen"];

let gatesFailed = 0;
if (!testsOnly) {
  for (
    const [name, args] of [
      ["format check", ["fmt", "--check"]],
      ["lint", ["lint"]],
      ["type check", ["check", ...TEST_LOCK, "main.ts", "src/", "tests/", "bench/"]],
    ] as const
  ) {
    if (!(await step(name, [...args])).ok) gatesFailed++;
  }
}

const test = await step("tests", [
  "test",
  ...TEST_LOCK,
  "--allow-all",
  "--trace-leaks",
  "--parallel",
  ...(extra.length > 0 ? extra : ["tests/"]),
]);
const summary = /(?:ok|FAILED) \| (\d+) passed[^|]*\| (\d+) failed(?: \| (\d+) ignored)?/.exec(
  test.output,
);
const passed = Number(summary?.[1] ?? 0);
let failed = Number(summary?.[2] ?? 0) + gatesFailed;
const skipped = Number(summary?.[3] ?? 0);
if (!test.ok && failed === 0) failed = 1;
// deno-lint-ignore no-console
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
Deno.exit(failed === 0 && test.ok ? 0 : 1);
