/**
 * install/examples/scale-out/ cannot rot: HAProxy accepts both of its configs (`haproxy -c`,
 * placeholder paths swapped for temp files), a Redis runs with its redis.conf settings and ACL
 * user and lets that user do a token store's work but not administer the server, and the two
 * instances' settings parse as daemon flags, agree with each other and with HAProxy's servers
 * and health-check ports.
 */

import assert from "node:assert/strict";
import { parseServeArgs } from "../../src/cli/serve_command.ts";
import { hasHaproxy } from "../_util/haproxy.ts";
import { hasRedisServer, RespError, startRedisServer } from "../_util/redis_server.ts";
import { hasOpenssl, makeTestCertificate } from "../_util/tls.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const EXAMPLE = `${ROOT}install/examples/scale-out`;
const INSTANCES = ["vncauthproxy-a", "vncauthproxy-b"];

function read(name: string): Promise<string> {
  return Deno.readTextFile(`${EXAMPLE}/${name}`);
}

function test(name: string, fn: () => Promise<void>, missing?: string): void {
  Deno.test({
    name: missing === undefined ? name : `IGNORED (${missing}): ${name}`,
    ignore: missing !== undefined,
    fn,
  });
}

// ---------------------------------------------------------------------------------------
// Reading the example's files
// ---------------------------------------------------------------------------------------

/** The words of the last DAEMON_OPTS line, as systemd splits `$DAEMON_OPTS`. */
function daemonArgs(defaults: string): string[] {
  const lines = [...defaults.matchAll(/^DAEMON_OPTS="([^"]*)"$/gm)];
  assert.ok(lines.length > 0, "no DAEMON_OPTS line");
  return lines.at(-1)![1].split(/\s+/).filter((word) => word !== "");
}

/** `--name=value` words as a map (each flag once). */
function flagMap(args: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (const arg of args) {
    const match = /^--([a-z][a-z-]*)(?:=(.*))?$/.exec(arg);
    assert.ok(match !== null, `"${arg}" is not --name=value`);
    assert.ok(!flags.has(match[1]), `--${match[1]} is given twice`);
    flags.set(match[1], match[2] ?? "");
  }
  return flags;
}

function get(flags: Map<string, string>, name: string): string {
  const value = flags.get(name);
  assert.ok(value !== undefined, `--${name} is missing`);
  return value;
}

/** HAProxy's sections: `backend gateways` → its lines, trimmed, comments dropped. */
function haproxySections(config: string): Map<string, string[]> {
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const raw of config.split("\n")) {
    const line = raw.replace(/#.*$/, "").trimEnd();
    if (line === "") continue;
    if (!/^\s/.test(line)) sections.set(line, current = []);
    else current?.push(line.trim());
  }
  return sections;
}

function section(sections: Map<string, string[]>, name: string): string[] {
  const lines = sections.get(name);
  assert.ok(lines !== undefined, `no "${name}" section`);
  return lines;
}

/** The `server NAME ADDRESS` lines of a backend: name → address. */
function servers(lines: readonly string[]): Map<string, string> {
  return new Map(
    lines.filter((l) => l.startsWith("server ")).map((l) => l.split(/\s+/).slice(1, 3)) as [
      string,
      string,
    ][],
  );
}

/** The `check port N` of a backend's `default-server` line. */
function checkPort(lines: readonly string[]): string {
  const port = lines.find((l) => l.startsWith("default-server "))?.match(/\bcheck port (\d+)/)
    ?.[1];
  assert.ok(port !== undefined, `no "default-server ... check port N" in ${lines.join("; ")}`);
  return port;
}

function hasLine(lines: readonly string[], line: string): boolean {
  return lines.includes(line);
}

// ---------------------------------------------------------------------------------------
// HAProxy
// ---------------------------------------------------------------------------------------

/** Runs `haproxy -c -f` on `config` written to `dir`; returns the exit code and output. */
async function haproxyCheck(dir: string, config: string): Promise<{ code: number; text: string }> {
  const file = `${dir}/haproxy-${crypto.randomUUID()}.cfg`;
  await Deno.writeTextFile(file, config);
  const output = await new Deno.Command("haproxy", {
    args: ["-c", "-f", file],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  return { code: output.code, text };
}

/** The example's config with its system paths swapped for files under `dir`. */
function localized(config: string, dir: string, pemFile: string): string {
  return config
    .replaceAll("/run/haproxy/admin.sock", `${dir}/admin.sock`)
    .replaceAll("chroot /var/lib/haproxy", `chroot ${dir}`)
    .replaceAll("/etc/haproxy/console.pem", pemFile);
}

test(
  "haproxy -c accepts haproxy.cfg and haproxy-http.cfg, without a warning",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "vap-scale-example-" });
    try {
      await using certificate = await makeTestCertificate();
      const pemFile = `${dir}/console.pem`;
      await Deno.writeTextFile(pemFile, certificate.cert + certificate.key);
      for (const name of ["haproxy.cfg", "haproxy-http.cfg"]) {
        const config = localized(await read(name), dir, pemFile);
        assert.doesNotMatch(config, /\/run\/haproxy|\/etc\/haproxy\/console/);
        const { code, text } = await haproxyCheck(dir, config);
        assert.equal(code, 0, `${name}: ${text}`);
        assert.match(text, /Configuration file is valid/, name);
        assert.doesNotMatch(text, /WARNING|ALERT/, `${name}: ${text}`);
        // The check can fail: a typo in the same file is refused.
        const broken = await haproxyCheck(dir, config + "backend gateways2\n    balanse first\n");
        assert.notEqual(broken.code, 0, `${name} with a typo passed: ${broken.text}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
  !hasHaproxy() ? "needs haproxy" : !hasOpenssl() ? "needs openssl" : undefined,
);

// ---------------------------------------------------------------------------------------
// The instances against HAProxy and each other
// ---------------------------------------------------------------------------------------

test("the instances' settings match haproxy.cfg, redis.conf, the README and each other", async () => {
  const haproxy = haproxySections(await read("haproxy.cfg"));
  const gateways = section(haproxy, "backend gateways");
  const controls = section(haproxy, "backend controls");
  const consoleBind = section(haproxy, "frontend console").find((l) => l.startsWith("bind "));
  const balancer = consoleBind?.match(/^bind ([\d.]+):(\d+)$/);
  assert.ok(balancer, `frontend console: ${consoleBind}`);
  for (const lines of [gateways, controls]) {
    assert.ok(hasLine(lines, "option httpchk GET /readyz"), lines.join("; "));
    assert.ok(hasLine(lines, "http-check expect status 200"), lines.join("; "));
  }
  assert.ok(hasLine(section(haproxy, "defaults"), "mode tcp"));
  assert.ok(section(haproxy, "defaults").some((l) => /^timeout tunnel \d+h$/.test(l)));

  const redisConf = await read("redis.conf");
  const redisUser = /^user (\S+) on >(\S+) /m.exec(redisConf);
  assert.ok(redisUser, "redis.conf has no ACL user with a password");
  const redisBind = /^bind (\S+)/m.exec(redisConf)?.[1];
  const redisPort = /^port (\d+)$/m.exec(redisConf)?.[1];
  const readme = await read("README.md");
  const unit = await Deno.readTextFile(`${ROOT}install/vncauthproxy.service`);
  const stopSeconds = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);

  const shapes = new Set<string>();
  const gatewayServers = new Set<string>();
  const controlServers = new Set<string>();
  for (const name of INSTANCES) {
    const text = await read(name);
    assert.match(text, /chmod 0640 \/etc\/default\/vncauthproxy/, `${name} holds a password`);
    const flags = flagMap(daemonArgs(text));
    const own = get(flags, "listen-address");
    gatewayServers.add(get(flags, "gateway-listen"));
    controlServers.add(`${own}:${get(flags, "listen-port")}`);
    assert.equal(get(flags, "gateway-listen").split(":")[0], own, name);
    assert.equal(get(flags, "metrics-listen"), `${own}:${checkPort(gateways)}`, name);
    assert.equal(checkPort(controls), checkPort(gateways));
    assert.ok(
      get(flags, "metrics-allow").split(",").includes(`${balancer[1]}/32`),
      `${name}: HAProxy's health checks must be allowed on /readyz`,
    );
    const publicUrl = new URL(get(flags, "gateway-public-url"));
    assert.equal(publicUrl.protocol, "https:");
    assert.equal(publicUrl.port === "" ? "443" : publicUrl.port, balancer[2]);
    const store = new URL(get(flags, "token-store"));
    assert.equal(store.protocol, "redis:");
    assert.equal(store.username, redisUser[1]);
    assert.equal(store.password, redisUser[2]);
    assert.equal(`${store.hostname}:${store.port}`, `${redisBind}:${redisPort}`);
    const keyFile = get(flags, "token-store-key-file");
    assert.ok(readme.includes(`head -c 32 /dev/urandom > ${keyFile}`), keyFile);
    assert.ok(readme.includes(`chmod 0640 ${keyFile}`), keyFile);
    assert.ok(Number(get(flags, "drain-timeout")) < stopSeconds, "drain within TimeoutStopSec");
    shapes.add(daemonArgs(text).join(" ").replaceAll(own, "OWN"));
  }
  // Only the own address differs: one key file, one Redis, one public URL, one certificate.
  assert.equal(shapes.size, 1, [...shapes].join("\n"));
  assert.deepEqual(gatewayServers, new Set(servers(gateways).values()));
  assert.deepEqual(controlServers, new Set(servers(controls).values()));
  assert.deepEqual(
    new Set(servers(section(haproxySections(await read("haproxy-http.cfg")), "backend gateways"))),
    new Set(servers(gateways)),
  );
});

test(
  "the instances' DAEMON_OPTS are valid daemon flags (and with the HTTP-mode change too)",
  () => {
    return Promise.all(INSTANCES.map(async (name) => {
      const args = daemonArgs(await read(name));
      assert.notEqual(parseServeArgs(args), "help", name);
      // haproxy-http.cfg: HAProxy ends TLS, the instance believes its headers.
      const plain = args.filter((a) => !/^--(cert|key)-file=/.test(a));
      assert.notEqual(
        parseServeArgs([...plain, "--gateway-plain", "--trusted-proxy=192.0.2.10/32"]),
        "help",
        name,
      );
    })).then(() => {});
  },
);

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

test(
  "redis.conf's settings start a Redis whose ACL user can keep tokens but not administer it",
  async () => {
    const lines = (await read("redis.conf")).split("\n").map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    assert.ok(lines.includes("user default off"), "the default user must be off");
    assert.ok(lines.includes('save ""') && lines.includes("appendonly no"));
    const userLine = lines.find((l) => /^user (?!default )/.test(l));
    const user = userLine?.match(/^user (\S+) on >\S+ (.+)$/);
    assert.ok(user, `no ACL user line: ${userLine}`);
    // Where and how it listens is the harness's (loopback, a free port); the rest as written.
    const configLines = lines.filter((l) =>
      !/^(bind|port|protected-mode) /.test(l) && !l.startsWith("user ")
    );
    await using redis = await startRedisServer({
      user: { name: user[1], password: crypto.randomUUID(), rules: user[2] },
      configLines,
    });
    assert.equal(await redis.command("ACL", "WHOAMI"), user[1]);
    // What a token store does: put with a TTL, read, take atomically (GETDEL or a script).
    assert.equal(await redis.command("SET", "t:1", "sealed", "PX", "30000", "NX"), "OK");
    assert.ok(Number(await redis.command("PTTL", "t:1")) > 0);
    assert.equal(await redis.command("GETDEL", "t:1"), "sealed");
    assert.equal(await redis.command("GETDEL", "t:1"), null);
    await redis.command("SET", "t:2", "sealed", "PX", "30000");
    const take = "local v = redis.call('GET', KEYS[1]); redis.call('DEL', KEYS[1]); return v";
    assert.equal(await redis.command("EVAL", take, "1", "t:2"), "sealed");
    const sha = String(await redis.command("SCRIPT", "LOAD", take));
    assert.equal(await redis.command("EVALSHA", sha, "1", "t:2"), null);
    assert.equal(await redis.command("SELECT", "0"), "OK");
    assert.equal(await redis.command("PING"), "PONG");
    // Not administration.
    for (
      const args of [["FLUSHALL"], ["CONFIG", "GET", "*"], ["SHUTDOWN"], ["KEYS", "*"], [
        "ACL",
        "SETUSER",
        "x",
        "on",
      ]]
    ) {
      await assert.rejects(redis.command(...args), (error: unknown) => {
        assert.ok(error instanceof RespError);
        assert.match(error.message, /^NOPERM/, args.join(" "));
        return true;
      });
    }
    assert.equal(redis.running, true);
  },
  hasRedisServer() ? undefined : "needs redis-server",
);
