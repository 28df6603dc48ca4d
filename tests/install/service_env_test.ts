/**
 * The daemon's environment (allocator tuning) is defined by deno.json's
 * `start` task, which the bench also runs; the systemd unit must set the
 * same, or the package ships a daemon other than the one measured.
 */

import assert from "node:assert/strict";
import { shippedCommand } from "../../bench/processes.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("the systemd unit sets exactly the environment of deno task start", async () => {
  const unit = await Deno.readTextFile(`${ROOT}install/vncauthproxy.service`);
  const fromUnit = Object.fromEntries(
    [...unit.matchAll(/^Environment=([A-Z_][A-Z0-9_]*)=(\S*)$/gm)].map((m) => [m[1], m[2]]),
  );
  assert.deepEqual(fromUnit, shippedCommand().env);
});
