import assert from "node:assert/strict";
import { haproxyConfig, hasHaproxy, parseShowStat, startHaproxy } from "./haproxy.ts";
import { serveConnections } from "./loopback.ts";

const missing = hasHaproxy() ? undefined : "needs haproxy";

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: missing === undefined ? name : `IGNORED (${missing}): ${name}`,
    ignore: missing !== undefined,
    fn,
  });
}

/** A TCP server that answers every connection with its tag, then echoes; closed on dispose. */
function startEchoServer(tag: string): { port: number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const loop = serveConnections(listener, async (duplex) => {
    await duplex.write(new TextEncoder().encode(`${tag}\n`));
    const buffer = new Uint8Array(4096);
    for (let n; (n = await duplex.read(buffer)) !== null;) {
      await duplex.write(buffer.subarray(0, n));
    }
  });
  return { port: listener.addr.port, [Symbol.asyncDispose]: () => loop[Symbol.asyncDispose]() };
}

/** A `/readyz` whose answer the test switches; counts the checks it got. */
function startReadyz(): { port: number; ready: boolean; checks: number } & AsyncDisposable {
  const state = { ready: true, checks: 0 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (path !== "/readyz") return new Response("not found\n", { status: 404 });
    state.checks++;
    return state.ready
      ? new Response("ok\n")
      : new Response("draining\n", { status: 503, headers: { connection: "close" } });
  });
  return Object.assign(state, {
    port: server.addr.port,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  });
}

/** Connects through the frontend and returns the first line the server behind sends, then echoes `probe`. */
async function greeting(port: number, probe = "ping"): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), 5_000);
  try {
    await conn.write(new TextEncoder().encode(probe));
    const buffer = new Uint8Array(1024);
    let text = "";
    while (!text.endsWith(probe)) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const [tag, echoed] = text.split("\n");
    assert.equal(echoed, probe, `echo through HAProxy: ${JSON.stringify(text)}`);
    return tag;
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("haproxyConfig() writes a TCP frontend, /readyz checks, backup and first", () => {
  const config = haproxyConfig({
    port: 1234,
    statsSocket: "/tmp/x/stats.sock",
    balance: "first",
    servers: [
      { name: "a", address: "127.0.0.1:8443", checkPort: 9443 },
      { address: "127.0.0.1:8444", backup: true },
    ],
  });
  assert.match(config, /^\s+mode tcp$/m);
  assert.match(config, /^\s+bind 127\.0\.0\.1:1234$/m);
  assert.match(config, /^\s+balance first$/m);
  assert.match(config, /^\s+option httpchk GET \/readyz$/m);
  assert.match(config, /^\s+http-check expect status 200$/m);
  assert.match(config, /^\s+server a 127\.0\.0\.1:8443 check port 9443$/m);
  assert.match(config, /^\s+server s2 127\.0\.0\.1:8444 backup$/m);
  assert.throws(
    () => haproxyConfig({ port: 1, statsSocket: "/s", servers: [{ address: "nope" }] }),
    SyntaxError,
  );
  assert.throws(
    () => haproxyConfig({ port: 1, statsSocket: "/s", servers: [{ name: "a b", address: "h:1" }] }),
    SyntaxError,
  );
});

Deno.test("parseShowStat() keys every row by the header's columns", () => {
  const rows = parseShowStat(
    "# pxname,svname,qcur,status,\nbe,a,0,UP,\nbe,b,0,DOWN,\nbe,BACKEND,0,UP,\n\n",
  );
  assert.deepEqual(rows.map((r) => [r.pxname, r.svname, r.status]), [
    ["be", "a", "UP"],
    ["be", "b", "DOWN"],
    ["be", "BACKEND", "UP"],
  ]);
});

test("haproxy forwards TCP round robin and follows each server's /readyz down and up", async () => {
  await using echoA = startEchoServer("A");
  await using echoB = startEchoServer("B");
  await using readyA = startReadyz();
  await using readyB = startReadyz();
  await using haproxy = await startHaproxy({
    servers: [
      { name: "a", address: `127.0.0.1:${echoA.port}`, checkPort: readyA.port },
      { name: "b", address: `127.0.0.1:${echoB.port}`, checkPort: readyB.port },
    ],
  });
  await haproxy.waitForServer("a", "UP");
  await haproxy.waitForServer("b", "UP");
  assert.ok(readyA.checks > 0 && readyB.checks > 0);
  const seen = new Set<string>();
  for (let i = 0; i < 4; i++) seen.add(await greeting(haproxy.port));
  assert.deepEqual([...seen].sort(), ["A", "B"]);

  // A draining: 503 on /readyz takes it out of the rotation.
  readyA.ready = false;
  await haproxy.waitForServer("a", "DOWN");
  assert.equal((await haproxy.serverStatuses()).get("b"), "UP");
  for (let i = 0; i < 4; i++) assert.equal(await greeting(haproxy.port), "B");

  // Ready again: back in.
  readyA.ready = true;
  await haproxy.waitForServer("a", "UP");
  seen.clear();
  for (let i = 0; i < 4; i++) seen.add(await greeting(haproxy.port));
  assert.deepEqual([...seen].sort(), ["A", "B"]);
});

test("balance first sends everything to the first server up; a backup only when all are down", async () => {
  await using echoA = startEchoServer("A");
  await using echoB = startEchoServer("B");
  await using echoC = startEchoServer("C");
  await using readyA = startReadyz();
  await using readyB = startReadyz();
  await using readyC = startReadyz();
  await using haproxy = await startHaproxy({
    balance: "first",
    servers: [
      { name: "a", address: `127.0.0.1:${echoA.port}`, checkPort: readyA.port },
      { name: "b", address: `127.0.0.1:${echoB.port}`, checkPort: readyB.port },
      { name: "c", address: `127.0.0.1:${echoC.port}`, checkPort: readyC.port, backup: true },
    ],
  });
  for (const name of ["a", "b", "c"]) await haproxy.waitForServer(name, "UP");
  for (let i = 0; i < 3; i++) assert.equal(await greeting(haproxy.port), "A");
  readyA.ready = false;
  await haproxy.waitForServer("a", "DOWN");
  for (let i = 0; i < 3; i++) assert.equal(await greeting(haproxy.port), "B");
  readyB.ready = false;
  await haproxy.waitForServer("b", "DOWN");
  for (let i = 0; i < 3; i++) assert.equal(await greeting(haproxy.port), "C");
});

test("a server whose /readyz port is closed is down; stop() frees the frontend port", async () => {
  await using echoA = startEchoServer("A");
  const readyA = startReadyz();
  const checkPort = readyA.port;
  await readyA[Symbol.asyncDispose]();
  await using haproxy = await startHaproxy({
    servers: [{ name: "a", address: `127.0.0.1:${echoA.port}`, checkPort }],
  });
  await haproxy.waitForServer("a", "DOWN");
  // No server up: HAProxy closes the viewer's connection.
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: haproxy.port });
    const timer = setTimeout(() => conn.close(), 5_000);
    try {
      const n = await conn.read(new Uint8Array(16)).catch(() => null);
      assert.equal(n, null);
    } finally {
      clearTimeout(timer);
    }
  }
  await assert.rejects(haproxy.waitForServer("a", "UP", 300), /within 300 ms: it is "DOWN"/);
  const { port, configFile } = haproxy;
  await haproxy.stop();
  Deno.listen({ hostname: "127.0.0.1", port }).close();
  await haproxy[Symbol.asyncDispose]();
  await assert.rejects(Deno.stat(configFile), Deno.errors.NotFound);
});
