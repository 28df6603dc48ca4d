/**
 * End to end, the gateway's protocol edges: every phase (TLS handshake,
 * request head, upgrade, RFB) fed one byte at a time (peers.md S12); no
 * secret in any log line at `-d` (S6, S22); `X-Forwarded-For` and
 * `X-Forwarded-Proto` believed only from `--trusted-proxy` (S4, S17).
 */

import assert from "node:assert/strict";
import { hashToken } from "../../src/tokens/token_store.ts";
import { requestForwardingRaw } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import {
  type GatewayDaemon,
  readPayload,
  startGatewayDaemon,
  viewerHandshake,
} from "../_util/gateway.ts";
import { connectRawWebSocket, type RawWebSocketOptions } from "../_util/raw_websocket.ts";
import { hasOpenssl } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const USERS = { admin: CONTROL_PASSWORD };
const ignore = !hasOpenssl();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function mint(gw: GatewayDaemon, backendPort: number, fields: Record<string, unknown> = {}) {
  return requestForwardingRaw(gw.daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: backendPort,
    gateway: true,
    type: gw.certificate ? "vnc-wss" : "vnc-ws",
    ...fields,
  });
}

function tlsOf(gw: GatewayDaemon): Pick<RawWebSocketOptions, "tls"> {
  return gw.certificate ? { tls: { caCerts: [gw.certificate.cert], hostname: "localhost" } } : {};
}

/**
 * A TCP relay to `targetPort` on 127.0.0.1 that passes what its clients
 * send on one byte per write (Nagle off), and the answers as they come: a
 * TLS client through it has every handshake byte and every record split.
 */
function startOneByteRelay(targetPort: number): AsyncDisposable & {
  readonly port: number;
  readonly bytesRelayed: number;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relays = new Set<Promise<void>>();
  let bytesRelayed = 0;
  async function relay(client: Deno.Conn): Promise<void> {
    let server: Deno.TcpConn | undefined;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      (client as Deno.TcpConn).setNoDelay(true);
      server.setNoDelay(true);
      const to = server;
      const up = (async () => {
        const buffer = new Uint8Array(16 * 1024);
        for (let n; (n = await client.read(buffer)) !== null;) {
          for (let i = 0; i < n; i++) {
            while ((await to.write(buffer.subarray(i, i + 1))) !== 1);
            bytesRelayed++;
          }
        }
      })();
      const down = (async () => {
        const buffer = new Uint8Array(16 * 1024);
        for (let n; (n = await to.read(buffer)) !== null;) {
          for (let at = 0; at < n;) at += await client.write(buffer.subarray(at, n));
        }
      })();
      await Promise.race([up, down]).catch(() => {});
      close(client, to);
      await Promise.allSettled([up, down]);
    } finally {
      close(client, server);
    }
  }
  const loop = (async () => {
    for await (const client of listener) {
      const running = relay(client).catch(() => {});
      relays.add(running);
      running.finally(() => relays.delete(running));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get bytesRelayed() {
      return bytesRelayed;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      await Promise.allSettled([...relays]);
    },
  };
}

function close(...conns: (Deno.Conn | undefined)[]): void {
  for (const conn of conns) {
    try {
      conn?.close();
    } catch { /* closed already */ }
  }
}

/** After a viewer's handshake: ServerInit with `name`, then one echo through the relay. */
async function assertDesktop(
  socket: NonNullable<Awaited<ReturnType<typeof connectRawWebSocket>>["socket"]>,
  name: string,
  options: { oneBytePerFrame?: boolean } = {},
): Promise<void> {
  const init = await readPayload(socket, 24 + name.length);
  assert.equal(decoder.decode(init.subarray(24)), name);
  const probe = encoder.encode("ping-through");
  if (options.oneBytePerFrame) {
    for (let i = 0; i < probe.length; i++) await socket.sendBinary(probe.subarray(i, i + 1));
  } else {
    await socket.sendBinary(probe);
  }
  assert.equal(decoder.decode(await readPayload(socket, probe.length)), "ping-through");
}

Deno.test({
  name: "gateway over TLS: TLS handshake, head, upgrade and RFB one byte at a time (token None)",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({ desktopName: "byte-desk" });
  await using gw = await startGatewayDaemon({ users: USERS });
  await using relay = startOneByteRelay(gw.gatewayPort);
  for (const offer of ["query", "sub-protocol"] as const) {
    const reply = await mint(gw, fake.port);
    assert.equal(reply.status, "OK", JSON.stringify(reply));
    const before = relay.bytesRelayed;
    const { socket, response } = await connectRawWebSocket({
      port: relay.port,
      ...tlsOf(gw),
      oneByteWrites: true,
      ...(offer === "query"
        ? { path: `/${reply.path!}`, protocols: "binary" }
        : { path: "/websockify", protocols: `binary, token.${reply.token!}` }),
    });
    assert.ok(socket, `${offer}: upgrade refused: ${response.status}`);
    try {
      assert.equal(await viewerHandshake(socket, undefined, { oneBytePerFrame: true }), 0);
      await assertDesktop(socket, "byte-desk", { oneBytePerFrame: true });
    } finally {
      socket.close();
    }
    // The ClientHello alone is a few hundred bytes; each 1-byte record is 20+.
    assert.ok(relay.bytesRelayed - before > 2_000, `${offer}: ${relay.bytesRelayed} relayed`);
  }
  await gw.daemon.waitForLine(/Session ended \(client closed\)/);
});

Deno.test({
  name: "gateway over TLS --gateway-snf: every phase one byte at a time, VNC password chosen",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({ desktopName: "snf-bytes" });
  await using gw = await startGatewayDaemon({ users: USERS, args: ["--gateway-snf"] });
  await using relay = startOneByteRelay(gw.gatewayPort);
  const reply = await requestForwardingRaw(gw.daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fake.port,
    type: "vnc-wss",
    password: "by7e-pw!",
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const { socket, response } = await connectRawWebSocket({
    port: relay.port,
    ...tlsOf(gw),
    oneByteWrites: true,
  });
  assert.ok(socket, `upgrade refused: ${response.status}`);
  try {
    assert.equal(await viewerHandshake(socket, "by7e-pw!", { oneBytePerFrame: true }), 0);
    await assertDesktop(socket, "snf-bytes", { oneBytePerFrame: true });
  } finally {
    socket.close();
  }
  await gw.daemon.waitForLine(/matched a pending forwarding by its password/);
});

Deno.test({
  name:
    "gateway --gateway-plain: head, upgrade and RFB (token and VNC password) one byte at a time",
}, async () => {
  await using fake = startFakeVncServer({ desktopName: "plain-bytes" });
  await using gw = await startGatewayDaemon({ users: USERS, plain: true });
  const reply = await mint(gw, fake.port, { password: "tw0-fact" });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const { socket, response } = await connectRawWebSocket({
    port: gw.gatewayPort,
    path: `/${reply.path!}`,
    protocols: "binary",
    oneByteWrites: true,
  });
  assert.ok(socket, `upgrade refused: ${response.status}`);
  try {
    assert.equal(await viewerHandshake(socket, "tw0-fact", { oneBytePerFrame: true }), 0);
    await assertDesktop(socket, "plain-bytes", { oneBytePerFrame: true });
  } finally {
    socket.close();
  }
});

/**
 * Fails on any log line holding a secret, or more of a token's hash than
 * its short prefix; and requires each prefix to appear (the one trace).
 */
function assertOnlyHashPrefixes(
  lines: readonly string[],
  tokens: readonly string[],
  secrets: readonly string[],
): void {
  const log = lines.join("\n");
  for (const token of tokens) {
    const hash = hashToken(token);
    assert.ok(!log.includes(token), "a token is in the log");
    assert.ok(!log.includes(token.slice(0, 16)), "a token's first 16 characters are in the log");
    assert.ok(!log.includes(hash), "a whole token hash is in the log");
    assert.ok(!log.includes(hash.slice(0, 9)), "more than 8 hex digits of a hash are in the log");
    assert.ok(log.includes(hash.slice(0, 8)), `hash prefix ${hash.slice(0, 8)} is not logged`);
  }
  for (const secret of secrets) {
    const line = lines.find((line) => line.includes(secret));
    assert.equal(line, undefined, `secret ${JSON.stringify(secret)} in: ${line}`);
  }
}

Deno.test({
  name: "gateway -d: no token, whole hash, one-time or control password in any log line",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({});
  await using gw = await startGatewayDaemon({
    users: USERS,
    listen: "*:0",
    args: ["--gateway-snf"],
  });
  const tls = tlsOf(gw);
  const tokens: string[] = [];
  const secrets = [CONTROL_PASSWORD];
  const open = (path: string, extra: Partial<RawWebSocketOptions> = {}) =>
    connectRawWebSocket({ port: gw.gatewayPort, path, protocols: "binary", ...tls, ...extra });

  // Minted and redeemed by query, with a VNC password as the second factor.
  const first = await mint(gw, fake.port, { password: "0ne-T1me" });
  tokens.push(first.token!);
  secrets.push("0ne-T1me");
  const redeemed = await open(`/${first.path!}`);
  assert.ok(redeemed.socket);
  assert.equal(await viewerHandshake(redeemed.socket, "0ne-T1me"), 0);
  redeemed.socket.close();
  // Reused: refused.
  assert.equal((await open(`/${first.path!}`)).response.status, 403);

  // Minted, redeemed by sub-protocol, security None.
  const second = await mint(gw, fake.port);
  tokens.push(second.token!);
  const bySubprotocol = await open("/websockify", { protocols: `binary, token.${second.token}` });
  assert.ok(bySubprotocol.socket);
  assert.equal(await viewerHandshake(bySubprotocol.socket), 0);
  bySubprotocol.socket.close();
  // Reused in the sub-protocol: refused.
  const reused = await open("/websockify", { protocols: `binary, token.${second.token}` });
  assert.equal(reused.response.status, 403);

  // Expired (once swept, a token is as unknown as one never issued).
  const short = await mint(gw, fake.port, { ttl: 0.2 });
  tokens.push(short.token!);
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal((await open(`/${short.path!}`)).response.status, 403);

  // Bound to ::1, tried from 127.0.0.1: refused; then never redeemed at all.
  const bound = await mint(gw, fake.port, { client_address: "::1", ttl: 1 });
  tokens.push(bound.token!);
  assert.equal((await open(`/${bound.path!}`)).response.status, 403);

  // A token never issued (a near miss of a real one), and a wrong control password.
  const forged = `${first.token!.slice(0, 40)}AAA`;
  secrets.push(forged);
  assert.equal((await open(`/websockify?token=${forged}`)).response.status, 403);
  const wrongLogin = await requestForwardingRaw(gw.daemon.controlPort, {
    auth_password: "Wr0ng-Contr0l!",
    destination_port: fake.port,
    gateway: true,
    type: "vnc-wss",
  });
  assert.equal(wrongLogin.status, "FAILED");
  secrets.push("Wr0ng-Contr0l!");
  // A malformed request holding a password: its reason names no value.
  const malformed = await requestForwardingRaw(gw.daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: "not-a-port",
    password: "Malf0rm3",
    type: "vnc-wss",
  });
  assert.equal(malformed.status, "FAILED");
  assert.ok(!JSON.stringify(malformed).includes("Malf0rm3"));
  secrets.push("Malf0rm3");

  // Password mode: a success and a failure.
  const snf = await requestForwardingRaw(gw.daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fake.port,
    type: "vnc-wss",
    password: "snf-Pa55",
  });
  assert.equal(snf.status, "OK", JSON.stringify(snf));
  secrets.push("snf-Pa55", "guess-pw");
  const wrong = await open("/websockify");
  assert.ok(wrong.socket);
  assert.notEqual(await viewerHandshake(wrong.socket, "guess-pw"), 0);
  wrong.socket.close();
  const right = await open("/websockify");
  assert.ok(right.socket);
  assert.equal(await viewerHandshake(right.socket, "snf-Pa55"), 0);
  right.socket.close();

  await gw.daemon.waitForLine(/token [0-9a-f]{8}: wrong-address/);
  await gw.daemon.waitForLine(/Authentication failed for client/);
  // The bound token expires unredeemed; the daemon logs that at debug too.
  await gw.daemon.waitForLine(/Session ended \(no client\)/);
  // Shutdown logs too (sessions drained): read everything up to the last line.
  gw.daemon.kill("SIGTERM");
  await gw.daemon.waitForLine(/ Stopped$/);
  assert.ok(gw.daemon.lines.some((line) => / DEBUG: /.test(line)), "the daemon logs at debug");
  assertOnlyHashPrefixes(gw.daemon.lines, tokens, secrets);
});

Deno.test({
  name:
    "gateway --trusted-proxy: X-Forwarded-For decides a bound token's viewer; -Proto the scheme",
}, async () => {
  await using fake = startFakeVncServer({});
  await using gw = await startGatewayDaemon({
    users: USERS,
    plain: true,
    args: [
      "--trusted-proxy=127.0.0.1",
      "--allowed-origins=https://console.example,http://console.example",
    ],
  });
  const open = (path: string, headers: Record<string, string | null>) =>
    connectRawWebSocket({
      port: gw.gatewayPort,
      path,
      headers: { origin: "https://console.example", ...headers },
    });

  const bound = await mint(gw, fake.port, { client_address: "192.0.2.7" });
  const path = `/${bound.path!}`;
  // Without the header, the viewer is 127.0.0.1 itself: refused, not burnt.
  assert.equal((await open(path, {})).response.status, 403);
  // A client's own X-Forwarded-For entry left of an untrusted hop counts for nothing.
  const spoofed = await open(path, { "x-forwarded-for": "192.0.2.7, 198.51.100.1" });
  assert.equal(spoofed.response.status, 403);
  const { socket } = await open(path, { "x-forwarded-for": "198.51.100.1, 192.0.2.7" });
  assert.ok(socket, "the proxy's word for the viewer's address gets in");
  assert.equal(await viewerHandshake(socket), 0);
  socket.close();
  await gw.daemon.waitForLine(/redeemed by 192\.0\.2\.7/);

  // X-Forwarded-Proto: https from the trusted proxy means the page was
  // https, so an http origin is refused; without it, this plain port's
  // own scheme (http) lets it pass; an https origin passes either way.
  for (
    const [origin, proto, expected] of [
      ["http://console.example", "https", 403],
      ["http://console.example", null, 101],
      ["https://console.example", "https", 101],
      ["https://console.example", null, 101],
      ["https://evil.example", "https", 403],
    ] as const
  ) {
    const reply = await mint(gw, fake.port);
    const result = await open(`/${reply.path!}`, { origin, "x-forwarded-proto": proto });
    result.socket?.close();
    assert.equal(result.response.status, expected, `${origin} with X-Forwarded-Proto ${proto}`);
  }
  await gw.daemon.waitForLine(/plain http on an https listener/);
});

Deno.test({
  name: "gateway without --trusted-proxy ignores X-Forwarded-For and X-Forwarded-Proto",
}, async () => {
  await using fake = startFakeVncServer({});
  await using gw = await startGatewayDaemon({
    users: USERS,
    plain: true,
    args: ["--allowed-origins=http://console.example"],
  });
  const open = (path: string, headers: Record<string, string>) =>
    connectRawWebSocket({
      port: gw.gatewayPort,
      path,
      headers: { origin: "http://console.example", ...headers },
    });
  const elsewhere = await mint(gw, fake.port, { client_address: "192.0.2.7" });
  const claimed = await open(`/${elsewhere.path!}`, { "x-forwarded-for": "192.0.2.7" });
  assert.equal(claimed.response.status, 403, "a header does not make 127.0.0.1 into 192.0.2.7");

  const here = await mint(gw, fake.port, { client_address: "127.0.0.1" });
  const { socket } = await open(`/${here.path!}`, {
    "x-forwarded-for": "192.0.2.7",
    "x-forwarded-proto": "https",
  });
  assert.ok(socket, "the connection's own address and scheme count");
  assert.equal(await viewerHandshake(socket), 0);
  socket.close();
  await gw.daemon.waitForLine(/redeemed by 127\.0\.0\.1/);
});
