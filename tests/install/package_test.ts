/**
 * `deno task package` (install/package.sh) refuses what would make a wrong
 * package, before packing anything: a `DENORT_BIN` that does not compile
 * (the compiled kind is then the only choice, not a fallback to the runtime
 * kind), a runtime of another Deno version than `.ci/run` pins, and a bundle
 * without the crypt Worker's module. The packages it does build are
 * installed by deb_runtime_test.ts (runtime kind) and deb_test.ts.
 */

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

interface Result {
  readonly code: number;
  readonly output: string;
}

/** Runs one of install/'s scripts with `env` over a clean environment. */
async function script(
  name: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<Result> {
  const out = await new Deno.Command(`${ROOT}install/${name}`, {
    args: [...args],
    cwd: "/",
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vap-package-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function debsIn(dir: string): Promise<string[]> {
  const names = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.endsWith(".deb")) names.push(entry.name);
  }
  return names;
}

Deno.test("deno task package: an unknown option is a usage error", async () => {
  const result = await script("package.sh", ["--kind=static"]);
  assert.equal(result.code, 2, result.output);
  assert.match(result.output, /^usage: .*package\.sh \[--kind=auto\|compiled\|runtime\]/m);
});

Deno.test("deno task package: with DENORT_BIN set, a failed compile is an error, not the runtime kind", async () => {
  await withTempDir(async (dir) => {
    const result = await script("package.sh", [`--outdir=${dir}`, "0.0.0+test"], {
      DENORT_BIN: `${dir}/no-denort`,
    });
    assert.equal(result.code, 1, result.output);
    assert.match(result.output, /deno compile failed: .+; unset DENORT_BIN/);
    assert.match(result.output, /unset DENORT_BIN to build the runtime kind/);
    assert.doesNotMatch(result.output, /Built the/);
    assert.deepEqual(await debsIn(dir), []);
  });
});

Deno.test("deno task package: a runtime of another Deno version than .ci/run pins is refused", async () => {
  await withTempDir(async (dir) => {
    const pinned = /^DENO_VERSION=(\S+)$/m.exec(await Deno.readTextFile(`${ROOT}.ci/run`))![1]!;
    const other = `${dir}/deno`;
    await Deno.writeTextFile(
      other,
      "#!/bin/sh\necho 'deno 1.46.3 (stable, release, x86_64-unknown-linux-gnu)'\n",
      { mode: 0o755 },
    );
    const result = await script("package.sh", ["--kind=runtime", `--outdir=${dir}`], {
      DENO_RUNTIME: other,
    });
    assert.equal(result.code, 1, result.output);
    assert.ok(result.output.includes(`is deno "1.46.3", not ${pinned}`), result.output);
    assert.deepEqual(await debsIn(dir), []);
  });
});

Deno.test("build-deb.sh --runtime needs both modules of the bundle", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/bundle`);
    await Deno.writeTextFile(`${dir}/bundle/vncauthproxy.js`, "");
    const result = await script("build-deb.sh", [
      `--runtime=${Deno.execPath()}`,
      "0.0.0+test",
      `${dir}/bundle`,
      dir,
    ]);
    assert.equal(result.code, 2, result.output);
    assert.match(result.output, /BUNDLE has no crypt_worker\.js/);
    assert.deepEqual(await debsIn(dir), []);
  });
});
