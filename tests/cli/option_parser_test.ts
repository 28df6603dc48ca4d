import assert from "node:assert/strict";
import { type OptionSpec, parseOptions } from "../../src/cli/option_parser.ts";
import { UsageError } from "../../src/errors.ts";
import { parseServeArgs, SERVE_OPTIONS } from "../../src/cli/serve_command.ts";

const SPECS: OptionSpec[] = [
  { long: "debug", short: "d", kind: "flag", help: "" },
  { long: "pid-file", kind: "string", help: "" },
  { long: "listen-address", kind: "string", help: "" },
  { long: "listen-port", kind: "int", help: "" },
  { long: "min-port", short: "p", kind: "int", help: "" },
  { long: "retry-wait", kind: "float", help: "" },
  { long: "connect-timeout", kind: "int", help: "" },
  { long: "connect-retries", kind: "int", help: "" },
];

Deno.test("parseOptions() takes --opt value, --opt=value, short options and clusters", () => {
  const { values, positionals } = parseOptions(SPECS, [
    "--pid-file",
    "/run/x.pid",
    "--listen-port=25000",
    "-dp",
    "26000",
    "--retry-wait=0.5",
    "pos",
  ]);
  assert.deepEqual(values, {
    "pid-file": "/run/x.pid",
    "listen-port": 25000,
    debug: true,
    "min-port": 26000,
    "retry-wait": 0.5,
  });
  assert.deepEqual(positionals, ["pos"]);
  assert.deepEqual(parseOptions(SPECS, ["-p26001"]).values, { "min-port": 26001 });
});

Deno.test("parseOptions() accepts unambiguous long-option prefixes, as optparse does", () => {
  assert.deepEqual(
    parseOptions(SPECS, ["--pid=/p", "--min", "1", "--listen-a", "::1", "--connect-t=5"]).values,
    {
      "pid-file": "/p",
      "min-port": 1,
      "listen-address": "::1",
      "connect-timeout": 5,
    },
  );
});

Deno.test("parseOptions() throws UsageError on unknown, ambiguous, missing and mistyped values", () => {
  for (
    const args of [
      ["--nope"],
      ["--listen", "x"],
      ["--conn=3"],
      ["--listen-port"],
      ["--listen-port=abc"],
      ["--retry-wait=fast"],
      ["-x"],
      ["--debug=yes"],
    ]
  ) {
    assert.throws(() => parseOptions(SPECS, args), UsageError, args.join(" "));
  }
});

Deno.test("the daemon keeps every long-option prefix snf's optparse accepted, whatever options came since", () => {
  // The prefixes optparse accepted with snf's option set (checked against
  // optparse itself): each still names the same option.
  const table: [string, string][] = [
    ["--pid", "pid-file"],
    ["--proxy", "proxy-listen-address"],
    ["--min", "min-port"],
    ["--max", "max-port"],
    ["--cert", "cert-file"],
    ["--key", "key-file"],
    ["--auth", "auth-file"],
    ["--auth-f", "auth-file"],
    ["--server", "server-timeout"],
    ["--retry", "retry-wait"],
    ["--lo", "log"],
    ["--listen-a", "listen-address"],
    ["--connect-t", "connect-timeout"],
  ];
  for (const [prefix, long] of table) {
    const { values } = parseOptions(SERVE_OPTIONS, [`${prefix}=1`]);
    assert.deepEqual(Object.keys(values), [long], prefix);
  }
  for (const flag of ["--deb", "--enable"]) {
    assert.equal(Object.keys(parseOptions(SERVE_OPTIONS, [flag]).values).length, 1, flag);
  }
  // Ambiguous in snf too, and newer options answer to their own prefixes.
  for (const args of [["--listen=x"], ["--conn=3"]]) {
    assert.throws(() => parseOptions(SERVE_OPTIONS, args), UsageError, args.join(" "));
  }
  assert.deepEqual(parseOptions(SERVE_OPTIONS, ["--auth-fail=3/s"]).values, {
    "auth-fail-limit": "3/s",
  });
  assert.deepEqual(parseOptions(SERVE_OPTIONS, ["--max-session-t=5"]).values, {
    "max-session-time": 5,
  });
});

Deno.test("the daemon's backend flags: repeatable, lists comma- or space-separated, checked", () => {
  const config = parseServeArgs([
    "--unix-backend-dir=/run/qemu",
    "--unix-backend-dir",
    "/var/lib/vms a",
    "--backend-allow=10.0.0.0/8,192.0.2.0/24",
    "--backend-allow",
    "2001:db8::/32 127.0.0.1",
    "--backend-deny=10.9.0.0/16",
    "--backend-ca=/etc/vap/ca.pem",
    "--backend-cert=/etc/vap/c.pem",
    "--backend-key=/etc/vap/k.pem",
    "--backend-allow-anonymous-tls",
  ]);
  assert.ok(config !== "help");
  assert.deepEqual(config.unixBackendDirs, ["/run/qemu", "/var/lib/vms a"]);
  assert.deepEqual(config.backendAllow, [
    "10.0.0.0/8",
    "192.0.2.0/24",
    "2001:db8::/32",
    "127.0.0.1",
  ]);
  assert.deepEqual(config.backendDeny, ["10.9.0.0/16"]);
  assert.equal(config.backendCaFile, "/etc/vap/ca.pem");
  assert.equal(config.backendCertFile, "/etc/vap/c.pem");
  assert.equal(config.backendKeyFile, "/etc/vap/k.pem");
  assert.equal(config.backendAllowAnonymousTls, true);
  const defaults = parseServeArgs([]);
  assert.ok(defaults !== "help");
  assert.deepEqual(defaults.unixBackendDirs, []);
  assert.deepEqual(defaults.backendAllow, []);
  for (
    const args of [
      ["--unix-backend-dir=run/qemu"],
      ["--backend-cert=/c.pem"],
      ["--backend-key=/k.pem"],
      ["--backend-allow=10.0.0.0/33"],
      ["--backend-deny=vnc.example"],
    ]
  ) {
    assert.throws(() => parseServeArgs(args), UsageError, args.join(" "));
  }
});

Deno.test("--relay-memory sets the relay buffers lent at once, in MiB; the token-store flags parse", () => {
  const config = parseServeArgs(["--relay-memory=64"]);
  assert.ok(config !== "help");
  assert.equal(config.relayBufferLentBytes, 64 * 1024 * 1024);
  const defaults = parseServeArgs([]);
  assert.ok(defaults !== "help");
  assert.equal(defaults.relayBufferLentBytes, 320 * 1024 * 1024);
  assert.equal(defaults.tokenStore, undefined);
  assert.throws(() => parseServeArgs(["--relay-memory=-1"]), UsageError);
  const shared = parseServeArgs([
    "--gateway-listen=127.0.0.1:8443",
    "--gateway-plain",
    "--token-store=rediss://vap:pw@redis.example:6380/2",
    "--token-store-key-file=/etc/vap/token.key",
    "--redis-ca=/etc/vap/redis-ca.pem",
  ]);
  assert.ok(shared !== "help");
  assert.equal(shared.tokenStore, "rediss://vap:pw@redis.example:6380/2");
  assert.equal(shared.tokenStoreKeyFile, "/etc/vap/token.key");
  assert.equal(shared.redisCaFile, "/etc/vap/redis-ca.pem");
  const memory = parseServeArgs(["--gateway-listen=127.0.0.1:8443", "--token-store=memory"]);
  assert.ok(memory !== "help");
  assert.equal(memory.tokenStore, undefined, "memory is the default, in this process");
});
