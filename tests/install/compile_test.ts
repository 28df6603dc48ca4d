/**
 * `deno task compile` builds the single executable. The runtime `deno
 * compile` normally downloads (denort) is not reachable here, so the test
 * points `DENORT_BIN` at the running `deno`: the module graph is still
 * built, type-checked and embedded, which is what can break. The output is
 * not a working program and is never run.
 */

import assert from "node:assert/strict";
import { DAEMON_PERMISSIONS } from "../_util/daemon_process.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("deno task compile uses exactly the daemon's permissions", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  assert.equal(
    config.tasks.compile,
    `deno compile ${DAEMON_PERMISSIONS.join(" ")} --output dist/vncauthproxy main.ts`,
  );
});

Deno.test("deno compile builds, type-checks and embeds main.ts into one executable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vap-compile-" });
  try {
    const output = `${dir}/vncauthproxy`;
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["compile", ...DAEMON_PERMISSIONS, "--output", output, "main.ts"],
      cwd: ROOT,
      env: { DENORT_BIN: Deno.execPath(), NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const log = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
    assert.equal(result.code, 0, log);
    const info = await Deno.stat(output);
    assert.ok(info.isFile, log);
    assert.ok(info.size > 1_000_000, `suspiciously small executable: ${info.size} bytes`);
    assert.ok((info.mode ?? 0) & 0o100, "the executable bit is set");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
