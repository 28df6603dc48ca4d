/**
 * Issue 15, proven on loopback: two daemons (`main.ts` as subprocesses) sharing their gateway
 * tokens through a throw-away Redis, behind a throw-away HAProxy in TCP mode whose health checks
 * read each daemon's `/readyz`. A raw WebSocket viewer reaches a real Xvnc through HAProxy with
 * a token minted on the other instance; a token works once whichever instance it reaches; 200
 * tokens redeemed concurrently (each twice, through HAProxy) open exactly 200 sessions; a killed
 * instance's tokens still work through the other; Redis stopped and restarted means clear
 * failures (FAILED `token store unavailable`, 503, `/readyz` 503) and then full service, with no
 * crash; and Redis holds no token, password or address in clear.
 *
 * @module
 */

import assert from "node:assert/strict";
import { pollUntil, waitUntil } from "../_util/child_process.ts";
import { type DaemonProcess, requestForwardingRaw, startDaemon } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { assertRawDesktop, readPayload, viewerHandshake } from "../_util/gateway.ts";
import { type Haproxy, hasHaproxy, startHaproxy } from "../_util/haproxy.ts";
import { metricsPort, waitForReadyz } from "../_util/metrics.ts";
import { connectRawWebSocket, type RawWebSocket } from "../_util/raw_websocket.ts";
import { hasCommand, startXvnc } from "../_util/real_peers.ts";
import { hasRedisServer, type RedisServer, startRedisServer } from "../_util/redis_server.ts";
import { hasOpenssl, makeTestCertificate, type TestCertificate } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const USERS = { admin: CONTROL_PASSWORD };
const BACKEND_PASSWORD = "xvnc-Pw1";
const VIEWER_PASSWORD = "view-Pw2";
const WIDTH = 64;
const HEIGHT = 48;
const COLOR_HEX = "#336699";
const COLOR = [0x33, 0x66, 0x99] as const;

const MISSING = [
  ...(hasRedisServer() ? [] : ["redis-server"]),
  ...(hasHaproxy() ? [] : ["haproxy"]),
  ...(hasOpenssl() ? [] : ["openssl"]),
];
const MISSING_XVNC = [
  ...MISSING,
  ...(hasCommand("Xvnc") ? [] : ["Xvnc (tigervnc-standalone-server)"]),
  ...(hasCommand("xsetroot") ? [] : ["xsetroot (x11-xserver-utils)"]),
];

function test(name: string, missing: readonly string[], fn: () => Promise<void>): void {
  Deno.test({
    name: missing.length === 0 ? name : `IGNORED (needs ${missing.join(", ")}): ${name}`,
    ignore: missing.length > 0,
    fn,
  });
}

// ---------------------------------------------------------------------------------------
// The set-up: Redis, a shared key and certificate, two daemons, HAProxy
// ---------------------------------------------------------------------------------------

/** One daemon of the pair and its ports. */
interface Instance {
  readonly name: string;
  readonly daemon: DaemonProcess;
  readonly gatewayPort: number;
  readonly metricsPort: number;
}

/** What every test gets. */
interface Cluster extends AsyncDisposable {
  readonly redis: RedisServer;
  readonly certificate: TestCertificate;
  readonly a: Instance;
  readonly b: Instance;
  readonly haproxy: Haproxy;
}

async function startInstance(
  name: string,
  redis: RedisServer,
  keyFile: string,
  certificate: TestCertificate,
): Promise<Instance> {
  const daemon = await startDaemon({
    users: USERS,
    args: [
      "--gateway-listen=127.0.0.1:0",
      `--cert-file=${certificate.certFile}`,
      `--key-file=${certificate.keyFile}`,
      "--gateway-public-url=https://localhost:8443",
      "--metrics-listen=127.0.0.1:0",
      `--token-store=${redis.url}`,
      `--token-store-key-file=${keyFile}`,
      "--drain-timeout=1",
      // 200 viewers from one address (HAProxy's) in a burst.
      "--auth-fail-limit=0",
    ],
  });
  try {
    const line = await daemon.waitForLine(/Gateway on /);
    const gatewayPort = Number(/Gateway on \S*?:(\d+)/.exec(line)![1]);
    return { name, daemon, gatewayPort, metricsPort: await metricsPort(daemon) };
  } catch (error) {
    await daemon[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * The rights install/examples/scale-out/redis.conf gives the daemons' ACL user, so the
 * example is proved to be enough (and no more than the daemons need is asked for there).
 */
async function exampleAclRules(): Promise<string> {
  const conf = await Deno.readTextFile(
    new URL("../../install/examples/scale-out/redis.conf", import.meta.url),
  );
  const rules = /^user (?!default )\S+ on >\S+ (.+)$/m.exec(conf)?.[1];
  assert.ok(rules, "no ACL user line in the example's redis.conf");
  return rules;
}

/**
 * Redis (with an ACL user that has the example's rights), the shared key file, one certificate for both, daemons A and B,
 * and HAProxy in front with `balance` (`first` lists B first, so viewers land on B while it
 * is up).
 */
async function startCluster(balance: "roundrobin" | "first"): Promise<Cluster> {
  await using stack = new AsyncDisposableStack();
  const redis = stack.use(
    await startRedisServer({
      user: { name: "vap", password: "r3dis-Pass:word", rules: await exampleAclRules() },
    }),
  );
  const certificate = stack.use(await makeTestCertificate());
  const dir = await Deno.makeTempDir({ prefix: "vap-scale-" });
  stack.defer(() => Deno.remove(dir, { recursive: true }));
  const keyFile = `${dir}/token-store.key`;
  await Deno.writeFile(keyFile, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o600 });
  const a = await startInstance("a", redis, keyFile, certificate);
  stack.use(a.daemon);
  const b = await startInstance("b", redis, keyFile, certificate);
  stack.use(b.daemon);
  const servers = [a, b].map((instance) => ({
    name: instance.name,
    address: `127.0.0.1:${instance.gatewayPort}`,
    checkPort: instance.metricsPort,
  }));
  const haproxy = stack.use(
    await startHaproxy({ balance, servers: balance === "first" ? servers.reverse() : servers }),
  );
  await haproxy.waitForServer("a", "UP");
  await haproxy.waitForServer("b", "UP");
  const owned = stack.move();
  return {
    redis,
    certificate,
    a,
    b,
    haproxy,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

// ---------------------------------------------------------------------------------------
// Minting and redeeming
// ---------------------------------------------------------------------------------------

async function mint(
  instance: Instance,
  backendPort: number,
  fields: Record<string, unknown> = {},
): Promise<string> {
  const reply = await requestForwardingRaw(instance.daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: backendPort,
    gateway: true,
    type: "vnc-wss",
    ttl: 120,
    ...fields,
  });
  assert.equal(reply.status, "OK", `${instance.name}: ${JSON.stringify(reply)}`);
  assert.match(reply.token!, /^[A-Za-z0-9_-]{43}$/);
  return reply.token!;
}

/** Opens the token's WebSocket at `port` (HAProxy's or an instance's gateway). */
function redeem(
  port: number,
  token: string,
  certificate: TestCertificate,
): ReturnType<typeof connectRawWebSocket> {
  return connectRawWebSocket({
    port,
    path: `/websockify?token=${token}`,
    protocols: "binary",
    tls: { caCerts: [certificate.cert], hostname: "localhost" },
  });
}

/** The count of log lines matching `pattern`. */
function count(daemon: DaemonProcess, pattern: RegExp): number {
  return daemon.lines.filter((line) => pattern.test(line)).length;
}

/**
 * Each daemon's count of lines matching `pattern`, once they have logged
 * `total` of them between them: log lines reach the test on their own
 * schedule, a little after what they tell of.
 */
function countsOnceLogged(
  daemons: readonly DaemonProcess[],
  pattern: RegExp,
  total: number,
): Promise<number[]> {
  return pollUntil(`${total} log lines matching ${pattern}`, undefined, () => {
    const counts = daemons.map((daemon) => count(daemon, pattern));
    return Promise.resolve(counts.reduce((sum, n) => sum + n, 0) >= total ? counts : undefined);
  }, { timeoutMs: 10_000, intervalMs: 20 });
}

const REDEEMED = /Token [0-9a-f]{8} redeemed by /;

/** The sockets a daemon process holds open (Linux: /proc/PID/fd), or 0 where unreadable. */
function openSockets(daemon: DaemonProcess): number {
  let sockets = 0;
  for (const entry of Deno.readDirSync(`/proc/${daemon.child.pid}/fd`)) {
    try {
      if (Deno.readLinkSync(`/proc/${daemon.child.pid}/fd/${entry.name}`).startsWith("socket:")) {
        sockets++;
      }
    } catch {
      // Closed while we looked.
    }
  }
  return sockets;
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

test(
  "scale-out: a token minted on A opens a real Xvnc through HAProxy on B, once on either instance",
  MISSING_XVNC,
  async () => {
    await using xvnc = await startXvnc({
      geometry: `${WIDTH}x${HEIGHT}`,
      color: COLOR_HEX,
      password: BACKEND_PASSWORD,
    });
    await using cluster = await startCluster("first");
    const { a, b, haproxy, certificate } = cluster;
    // The VNC server's password and the viewer's one-time password travel in the sealed entry.
    const token = await mint(a, xvnc.port, {
      destination_password: BACKEND_PASSWORD,
      password: VIEWER_PASSWORD,
    });
    const { socket, response } = await redeem(haproxy.port, token, certificate);
    assert.ok(socket, `upgrade refused through HAProxy: ${response.status} ${response.body}`);
    try {
      assert.equal(await viewerHandshake(socket, VIEWER_PASSWORD), 0);
      await assertRawDesktop(socket, {
        width: WIDTH,
        height: HEIGHT,
        name: "real-peers",
        color: COLOR,
      });
      const [byA, byB] = await countsOnceLogged([a.daemon, b.daemon], REDEEMED, 1);
      assert.equal(byB, 1, "B redeemed it (HAProxy's first server)");
      assert.equal(byA, 0, "A minted it and did not redeem it");
      // A second use fails on either instance, directly and through HAProxy.
      for (const port of [haproxy.port, a.gatewayPort, b.gatewayPort]) {
        const again = await redeem(port, token, certificate);
        assert.equal(again.socket, undefined);
        assert.equal(again.response.status, 403, `second use at port ${port}`);
      }
    } finally {
      socket.close();
    }
  },
);

test(
  "scale-out: 200 tokens, each redeemed twice at once through HAProxy, open exactly 200 sessions",
  MISSING,
  async () => {
    await using fake = startFakeVncServer({ desktopName: "many" });
    await using cluster = await startCluster("roundrobin");
    const { a, b, haproxy, certificate } = cluster;
    const tokens: string[] = [];
    for (let i = 0; i < 200; i += 20) {
      // Minted on both instances, 20 at a time.
      tokens.push(
        ...await Promise.all(
          Array.from({ length: 20 }, (_, j) => mint((i + j) % 2 === 0 ? a : b, fake.port)),
        ),
      );
    }
    assert.equal(new Set(tokens).size, 200);
    const sockets: RawWebSocket[] = [];
    try {
      const attempts = await Promise.all(
        [...tokens, ...tokens].map(async (token) => {
          const { socket, response } = await redeem(haproxy.port, token, certificate);
          if (socket === undefined) return { token, status: response.status };
          sockets.push(socket);
          // Each winner gets a whole session: RFB handshake and ServerInit.
          assert.equal(await viewerHandshake(socket), 0);
          await readPayload(socket, 24 + "many".length);
          return { token, status: 101 };
        }),
      );
      const wins = attempts.filter((attempt) => attempt.status === 101);
      assert.equal(wins.length, 200, "one win per token");
      assert.deepEqual(new Set(wins.map((w) => w.token)), new Set(tokens), "every token once");
      const losses = attempts.filter((attempt) => attempt.status !== 101);
      assert.deepEqual([...new Set(losses.map((l) => l.status))], [403]);
      // Both instances took part.
      const [byA, byB] = await countsOnceLogged([a.daemon, b.daemon], REDEEMED, 200);
      assert.ok(byA! > 0 && byB! > 0, `A ${byA}, B ${byB}`);
      assert.equal(byA! + byB!, 200);
    } finally {
      for (const socket of sockets) socket.close();
    }
  },
);

test(
  "scale-out: instance A killed after minting: its tokens still work through HAProxy on B",
  MISSING,
  async () => {
    await using fake = startFakeVncServer({ desktopName: "after-a" });
    await using cluster = await startCluster("roundrobin");
    const { a, b, haproxy, certificate } = cluster;
    const tokens = await Promise.all(Array.from({ length: 5 }, () => mint(a, fake.port)));
    a.daemon.kill("SIGKILL");
    await a.daemon.status;
    await haproxy.waitForServer("a", "DOWN");
    for (const token of tokens) {
      const { socket, response } = await redeem(haproxy.port, token, certificate);
      assert.ok(socket, `refused after A died: ${response.status} ${response.body}`);
      try {
        assert.equal(await viewerHandshake(socket), 0);
        const init = await readPayload(socket, 24 + "after-a".length);
        assert.equal(new TextDecoder().decode(init.subarray(24)), "after-a");
      } finally {
        socket.close();
      }
    }
    assert.deepEqual(await countsOnceLogged([b.daemon], REDEEMED, 5), [5]);
  },
);

test(
  "scale-out: Redis stopped: FAILED token store unavailable, 503, /readyz 503; restarted: full service",
  MISSING,
  async () => {
    await using fake = startFakeVncServer({ desktopName: "redis-back" });
    await using cluster = await startCluster("roundrobin");
    const { a, b, haproxy, certificate, redis } = cluster;
    const before = await mint(a, fake.port);
    const socketsBefore = [a, b].map((instance) => openSockets(instance.daemon));
    await redis.stop();

    for (const instance of [a, b]) {
      const reply = await requestForwardingRaw(instance.daemon.controlPort, {
        auth_password: CONTROL_PASSWORD,
        destination_port: fake.port,
        gateway: true,
        type: "vnc-wss",
      });
      assert.equal(reply.status, "FAILED", JSON.stringify(reply));
      assert.equal(reply.reason, "token store unavailable");
      const redemption = await redeem(instance.gatewayPort, before, certificate);
      assert.equal(redemption.socket, undefined);
      assert.equal(
        redemption.response.status,
        503,
        `${instance.name}: ${redemption.response.body}`,
      );
      assert.match(await waitForReadyz(instance.metricsPort, 503), /token store/);
    }
    await haproxy.waitForServer("a", "DOWN");
    await haproxy.waitForServer("b", "DOWN");
    // Long enough down for the clients to try again, and again.
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    await redis.restart();
    await haproxy.waitForServer("a", "UP", 30_000);
    await haproxy.waitForServer("b", "UP", 30_000);
    // No crash: both daemons still run, and serve as before.
    for (const instance of [a, b]) {
      const alive = await Promise.race([
        instance.daemon.status.then(() => "exited"),
        new Promise((resolve) => setTimeout(() => resolve("running"), 100)),
      ]);
      assert.equal(alive, "running", `${instance.name} exited`);
      await waitForReadyz(instance.metricsPort, 200);
      const token = await mint(instance, fake.port);
      const { socket, response } = await redeem(haproxy.port, token, certificate);
      assert.ok(socket, `after the restart: ${response.status} ${response.body}`);
      try {
        assert.equal(await viewerHandshake(socket), 0);
        await readPayload(socket, 24 + "redis-back".length);
      } finally {
        socket.close();
      }
    }
    // The outage leaked no socket: reconnecting replaced the Redis connections, and the
    // sessions just closed let go of theirs. A few more are fair (a minted token's pinned VNC
    // connection stays until it expires, the Redis pool may have grown); one a reconnection
    // attempt is not.
    await waitUntil(
      "the daemons' sockets are back to their number before the outage",
      () => [a, b].every((instance, i) => openSockets(instance.daemon) <= socketsBefore[i] + 4),
    );
    const ports = [haproxy.port, redis.port, a.gatewayPort, b.gatewayPort, a.metricsPort];
    await cluster[Symbol.asyncDispose]();
    for (const port of ports) Deno.listen({ hostname: "127.0.0.1", port }).close();
  },
);

test(
  "scale-out: Redis holds no token, VNC password, viewer password or client address in clear",
  MISSING_XVNC,
  async () => {
    await using xvnc = await startXvnc({ password: BACKEND_PASSWORD });
    await using cluster = await startCluster("roundrobin");
    const { a, redis } = cluster;
    const token = await mint(a, xvnc.port, {
      destination_password: BACKEND_PASSWORD,
      password: VIEWER_PASSWORD,
      client_address: "127.0.0.1",
    });
    const entries = await redis.keys();
    assert.ok(entries.length > 0, "the token is in Redis");
    for (const entry of entries) {
      assert.ok(entry.ttlMs > 0 && entry.ttlMs <= 120_000, `TTL ${entry.ttlMs}`);
    }
    const dump = entries.map((e) => [e.key, ...e.values].join("\n")).join("\n");
    const base64 = (text: string) => btoa(text);
    for (
      const secret of [
        token,
        BACKEND_PASSWORD,
        VIEWER_PASSWORD,
        "127.0.0.1",
        base64(BACKEND_PASSWORD),
        base64(VIEWER_PASSWORD),
        Array.from(
          new TextEncoder().encode(BACKEND_PASSWORD),
          (c) => c.toString(16).padStart(2, "0"),
        ).join(""),
        String(xvnc.port),
      ]
    ) {
      assert.ok(!dump.includes(secret), `"${secret}" is readable in Redis`);
    }
  },
);
