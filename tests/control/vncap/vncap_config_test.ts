/** The vncap flags: defaults as vncap's, its own pool, who may reach it. */

import assert from "node:assert/strict";
import { parseServeArgs } from "../../../src/cli/serve_command.ts";
import type { Config } from "../../../src/config.ts";

const parse = (...args: string[]) => parseServeArgs(args) as Config;

Deno.test("vncap is off by default; its pool is 5800-5899, apart from snf's", () => {
  const config = parse();
  assert.equal(config.vncapListen, undefined);
  assert.equal(config.vncapMinPort, 5800);
  assert.equal(config.vncapMaxPort, 5899);
  assert.equal(config.vncapWindow, false);
  const on = parse("--vncap-listen=127.0.0.1:8888");
  assert.deepEqual(on.vncapListen, { transport: "tcp", host: "127.0.0.1", port: 8888 });
  const moved = parse(
    "--vncap-listen=localhost:8888",
    "--vncap-min-port=6000",
    "--vncap-max-port=6001",
  );
  assert.equal(moved.vncapMinPort, 6000);
  assert.throws(
    () =>
      parse("--vncap-listen=127.0.0.1:8888", "--vncap-min-port=25000", "--vncap-max-port=25010"),
    /overlaps --min-port/,
  );
  assert.throws(() => parse("--vncap-min-port=5900", "--vncap-max-port=5800"), /greater than/);
});

Deno.test("a vncap socket off loopback needs --vncap-allow; a Unix socket needs no address", () => {
  assert.throws(() => parse("--vncap-listen=0.0.0.0:8888"), /needs --vncap-allow/);
  const allowed = parse("--vncap-listen=0.0.0.0:8888", "--vncap-allow=10.0.0.0/8,192.0.2.1");
  assert.deepEqual(allowed.vncapAllow, ["10.0.0.0/8", "192.0.2.1"]);
  assert.throws(() => parse("--vncap-listen=0.0.0.0:8888", "--vncap-allow=nope"), /--vncap-allow/);
  assert.deepEqual(parse("--vncap-listen=unix:/run/vncap.sock").vncapListen, {
    transport: "unix",
    path: "/run/vncap.sock",
  });
  assert.throws(() => parse("--vncap-listen=unix:relative.sock"), /absolute path/);
  for (const flag of ["--vncap-allow=10.0.0.0/8", "--vncap-window", "--vncap-cert=a"]) {
    assert.throws(
      () => parse(flag, ...(flag.startsWith("--vncap-cert") ? ["--vncap-key=b"] : [])),
      /needs --vncap-listen/,
    );
  }
  assert.throws(() => parse("--vncap-listen=127.0.0.1:1", "--vncap-cert=a"), /go together/);
});
