/**
 * End to end, two daemons sharing gateway tokens through a real
 * redis-server (`--token-store`): a token minted on one is redeemed once on
 * either; Redis going away is a clear refusal everywhere and service comes
 * back by itself; start-up refuses a store it cannot use. (Through HAProxy,
 * with a real Xvnc and in crowds: `tests/scale/`.)
 */

import assert from "node:assert/strict";
import { requestForwardingRaw, runMain } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import {
  type GatewayDaemon,
  readPayload,
  startGatewayDaemon,
  viewerHandshake,
} from "../_util/gateway.ts";
import { getAdmin, metricsPort, scrape, waitForReadyz } from "../_util/metrics.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";
import { type RedisServer, redisSkipNotice, startRedisServer } from "../_util/redis_server.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "sh4red-Control!";
const VNC_PASSWORD = "once-sh1";
const BACKEND_PASSWORD = "srv-Pass9";
const USERS = { admin: CONTROL_PASSWORD };

const ignore = !redisSkipNotice("the shared-token tests");

/** A key file of 32 random bytes, mode 0600. */
async function keyFile(dir: string): Promise<string> {
  const path = `${dir}/token.key`;
  await Deno.writeFile(path, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o600 });
  return path;
}

/** Two plain gateways sharing `redis` (at `url`, and more flags) with one key; metrics on each. */
async function twoInstances(
  redis: RedisServer,
  key: string,
  store: { readonly url?: string; readonly args?: readonly string[] } = {},
): Promise<[GatewayDaemon, GatewayDaemon]> {
  const args = [
    `--token-store=${store.url ?? redis.url}`,
    `--token-store-key-file=${key}`,
    "--metrics-listen=127.0.0.1:0",
    ...(store.args ?? []),
  ];
  const a = await startGatewayDaemon({ users: USERS, args, plain: true });
  try {
    return [a, await startGatewayDaemon({ users: USERS, args, plain: true })];
  } catch (error) {
    await a[Symbol.asyncDispose]();
    throw error;
  }
}

function mint(gw: GatewayDaemon, backendPort: number, fields: Record<string, unknown> = {}) {
  return requestForwardingRaw(gw.daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: backendPort,
    gateway: true,
    type: "vnc-ws",
    ...fields,
  });
}

function redeem(gw: GatewayDaemon, path: string) {
  return connectRawWebSocket({ port: gw.gatewayPort, path: `/${path}`, protocols: "binary" });
}

Deno.test({
  name: "shared tokens: minted on A, redeemed once on B (password factor too), secrets nowhere",
  ignore,
}, async () => {
  await using redis = await startRedisServer();
  const dir = await Deno.makeTempDir({ prefix: "vap-shared-" });
  try {
    const key = await keyFile(dir);
    await using fake = startFakeVncServer({ desktopName: "shared-desk" });
    const [a, b] = await twoInstances(redis, key);
    await using _a = a;
    await using _b = b;
    const reply = await mint(a, fake.port, {
      password: VNC_PASSWORD,
      destination_password: BACKEND_PASSWORD,
      ttl: 3,
    });
    assert.equal(reply.status, "OK", JSON.stringify(reply));
    assert.equal(reply.source_port, a.gatewayPort);
    const token = reply.token!;

    // What Redis holds: one key, its TTL, and nothing readable in it.
    const entries = await redis.keys();
    assert.equal(entries.length, 1);
    assert.ok(entries[0]!.ttlMs > 0 && entries[0]!.ttlMs <= 3_000, `ttl ${entries[0]!.ttlMs}`);
    const stored = entries.map((e) => `${e.key} ${e.values.join(" ")}`).join("\n");
    for (
      const clear of [token, VNC_PASSWORD, BACKEND_PASSWORD, CONTROL_PASSWORD, "127.0.0.1", "admin"]
    ) {
      assert.ok(!stored.includes(clear), `"${clear}" readable in Redis`);
    }
    assert.ok(!stored.includes(String(fake.port)), "the backend port readable in Redis");

    // B opens the session itself: a second connection to the VNC server.
    const { socket, response } = await redeem(b, reply.path!);
    assert.ok(socket, `B refused the token: ${response.status}`);
    try {
      assert.equal(await viewerHandshake(socket, VNC_PASSWORD), 0, "token and password");
      const init = await readPayload(socket, 24 + "shared-desk".length);
      assert.equal(new TextDecoder().decode(init.subarray(24)), "shared-desk");
      await socket.sendBinary(new TextEncoder().encode("ping"));
      assert.equal(new TextDecoder().decode(await readPayload(socket, 4)), "ping");
      assert.equal(fake.accepted, 2, "A's pinned connection and B's own");
      assert.equal((await redis.keys()).length, 0, "spent in Redis");
      // Once, whichever instance is asked next.
      for (const gw of [a, b]) {
        const again = await redeem(gw, reply.path!);
        assert.equal(again.socket, undefined);
        assert.equal(again.response.status, 403);
      }
    } finally {
      socket.close();
    }
    await b.daemon.waitForLine(/minted by another instance/);
    await b.daemon.waitForLine(/Session ended \(client closed\)/);
    // A asked about a token Redis no longer has: it lets its pinned connection go.
    await a.daemon.waitForLine(/token [0-9a-f]{8}: unknown/);
    await a.daemon.waitForLine(/AUDIT session_end .*cause=/);
    for (const line of [...a.daemon.lines, ...b.daemon.lines]) {
      for (const secret of [token, VNC_PASSWORD, BACKEND_PASSWORD, CONTROL_PASSWORD]) {
        assert.ok(!line.includes(secret), `secret in log: ${line}`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "shared tokens: Redis down is a clear refusal everywhere, pool ports go on, service returns",
  ignore,
}, async () => {
  await using redis = await startRedisServer();
  const dir = await Deno.makeTempDir({ prefix: "vap-shared-" });
  try {
    const key = await keyFile(dir);
    await using fake = startFakeVncServer({});
    const [a, b] = await twoInstances(redis, key);
    await using _a = a;
    await using _b = b;
    const metricsA = await metricsPort(a.daemon);
    const metricsB = await metricsPort(b.daemon);
    assert.equal((await getAdmin(metricsB, "/readyz")).status, 200);
    const before = await mint(a, fake.port);
    assert.equal(before.status, "OK", JSON.stringify(before));

    await redis.stop();
    // Minting: a FAILED reply with the reason; redemption: 503, nothing spent.
    const refused = await mint(a, fake.port);
    assert.deepEqual(
      { status: refused.status, reason: refused.reason },
      { status: "FAILED", reason: "token store unavailable" },
    );
    const unavailable = await redeem(b, before.path!);
    assert.equal(unavailable.socket, undefined);
    assert.equal(unavailable.response.status, 503);
    // The balancer learns it (the health check notices within its interval).
    for (const port of [metricsA, metricsB]) {
      assert.match(await waitForReadyz(port, 503), /^token store unreachable$/m);
      assert.equal(
        (await getAdmin(port, "/healthz")).status,
        200,
        "healthz: restart would not help",
      );
      assert.equal((await scrape(port)).value("vncauthproxy_token_store_up"), 0);
    }
    // Pool ports do not need Redis.
    const plain = await requestForwardingRaw(a.daemon.controlPort, {
      auth_password: CONTROL_PASSWORD,
      destination_port: fake.port,
      password: VNC_PASSWORD,
    });
    assert.equal(plain.status, "OK", JSON.stringify(plain));
    const viewer = await connectViewer({ port: plain.source_port!, password: VNC_PASSWORD });
    try {
      assert.equal(viewer.ok, true);
      await readServerInit(viewer.duplex);
    } finally {
      viewer.duplex.close();
    }

    await redis.restart();
    for (const port of [metricsA, metricsB]) {
      await waitForReadyz(port, 200);
    }
    await a.daemon.waitForLine(/Token store .* answers again/);
    // The token minted before the outage died with that Redis (no persistence here);
    // new ones work at once, across instances.
    const after = await mint(b, fake.port);
    assert.equal(after.status, "OK", JSON.stringify(after));
    const { socket, response } = await redeem(a, after.path!);
    assert.ok(socket, `A refused the token: ${response.status}`);
    try {
      assert.equal(await viewerHandshake(socket), 0);
      await readPayload(socket, 24);
    } finally {
      socket.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "shared tokens: over rediss:// with --redis-ca, and over a Redis Unix socket",
  ignore,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "vap-shared-" });
  try {
    const key = await keyFile(dir);
    await using fake = startFakeVncServer({ desktopName: "tls-store" });
    await using tlsRedis = await startRedisServer({ tls: true });
    await using unixRedis = await startRedisServer({ unixSocket: true, password: "un1x-Pass" });
    const stores = [
      { redis: tlsRedis, url: tlsRedis.url, args: [`--redis-ca=${tlsRedis.caFile}`] },
      { redis: unixRedis, url: `${unixRedis.unixUrl}?password=un1x-Pass` },
    ];
    for (const { redis, ...store } of stores) {
      assert.match(store.url, /^(rediss:|unix:)/);
      const [a, b] = await twoInstances(redis, key, store);
      await using _a = a;
      await using _b = b;
      const reply = await mint(a, fake.port);
      assert.equal(reply.status, "OK", `${store.url}: ${JSON.stringify(reply)}`);
      assert.equal((await redis.keys()).length, 1, "the token went through this Redis");
      const { socket, response } = await redeem(b, reply.path!);
      assert.ok(socket, `${store.url}: B refused the token: ${response.status}`);
      try {
        assert.equal(await viewerHandshake(socket), 0);
        const init = await readPayload(socket, 24 + "tls-store".length);
        assert.equal(new TextDecoder().decode(init.subarray(24)), "tls-store");
      } finally {
        socket.close();
      }
      for (const line of [...a.daemon.lines, ...b.daemon.lines]) {
        assert.ok(!line.includes("un1x-Pass"), `the Redis password in a log line: ${line}`);
      }
    }
    // Without the CA the certificate is not trusted: the daemon starts, but is not ready.
    await using untrusting = await startGatewayDaemon({
      users: USERS,
      plain: true,
      args: [
        `--token-store=${tlsRedis.url}`,
        `--token-store-key-file=${key}`,
        "--metrics-listen=127.0.0.1:0",
      ],
    });
    const ready = await getAdmin(await metricsPort(untrusting.daemon), "/readyz");
    assert.equal(ready.status, 503);
    assert.match(ready.body, /^token store unreachable$/m);
    const refused = await mint(untrusting, fake.port);
    assert.equal(refused.reason, "token store unavailable");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "shared tokens: start-up refuses a store it cannot use, with a clear message",
  ignore,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "vap-shared-" });
  try {
    const key = await keyFile(dir);
    const open = `${dir}/open.key`;
    await Deno.writeFile(open, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o644 });
    await Deno.chmod(open, 0o644);
    const short = `${dir}/short.key`;
    await Deno.writeFile(short, crypto.getRandomValues(new Uint8Array(16)), { mode: 0o600 });
    const base = ["--gateway-listen=127.0.0.1:0", "--gateway-plain", "--listen-port=0"];
    const cases: [string[], RegExp][] = [
      [
        [...base, "--token-store=redis://127.0.0.1:6379/0"],
        /--token-store needs --token-store-key-file/,
      ],
      [
        [...base, `--token-store=http://127.0.0.1/`, `--token-store-key-file=${key}`],
        /Invalid --token-store/,
      ],
      [
        [
          ...base,
          `--token-store=redis://u:hunter2x@127.0.0.1:1/x`,
          `--token-store-key-file=${key}`,
        ],
        /Invalid --token-store/,
      ],
      [
        [...base, "--token-store=redis://127.0.0.1:1/0", `--token-store-key-file=${open}`],
        /--token-store-key-file/,
      ],
      [
        [...base, "--token-store=redis://127.0.0.1:1/0", `--token-store-key-file=${short}`],
        /--token-store-key-file/,
      ],
      [
        [...base, "--token-store=redis://127.0.0.1:1/0", `--token-store-key-file=${dir}/none`],
        /--token-store-key-file/,
      ],
      [[
        ...base,
        "--token-store=redis://127.0.0.1:1/0",
        `--token-store-key-file=${key}`,
        `--redis-ca=${key}`,
      ], /--redis-ca needs a rediss:\/\/ --token-store/],
      [
        ["--listen-port=0", "--token-store=redis://127.0.0.1:1/0", `--token-store-key-file=${key}`],
        /--token-store needs --gateway-listen/,
      ],
    ];
    for (const [args, message] of cases) {
      const result = await runMain(args);
      assert.notEqual(result.code, 0, args.join(" "));
      assert.match(result.stderr, message, args.join(" "));
      assert.ok(!result.stderr.includes("hunter2x"), "a password in the URL is never shown");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
