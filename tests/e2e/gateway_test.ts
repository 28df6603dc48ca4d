/**
 * End to end through the gateway port: `main.ts` as a subprocess with
 * `--gateway-listen`, control requests for tokens (and snf-style requests
 * in password mode), raw WebSocket viewers over TLS, a scripted VNC server.
 */

import assert from "node:assert/strict";
import { requestForwardingRaw, startDaemon } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { readPayload, startGatewayDaemon, viewerHandshake } from "../_util/gateway.ts";
import { connectRawWebSocket, rawHttpRequest } from "../_util/raw_websocket.ts";
import { hasOpenssl, makeTestCertificate } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "gw-once1";
const USERS = { admin: CONTROL_PASSWORD };
const ignore = !hasOpenssl();

function request(controlPort: number, backendPort: number, fields: Record<string, unknown>) {
  return requestForwardingRaw(controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: backendPort,
    ...fields,
  });
}

function tlsTo(cert: string) {
  return { caCerts: [cert], hostname: "localhost" };
}

/** Every log line, checked for secrets: no token, no password, no whole hash. */
function assertNoSecrets(lines: readonly string[], secrets: readonly string[]): void {
  for (const line of lines) {
    for (const secret of secrets) assert.ok(!line.includes(secret), `secret in log: ${line}`);
  }
}

Deno.test({
  name: "gateway: a token reaches its VNC server once, over TLS, and is never logged",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({ desktopName: "token-desk" });
  await using gw = await startGatewayDaemon({ users: USERS });
  const reply = await request(gw.daemon.controlPort, fake.port, {
    gateway: true,
    type: "vnc-wss",
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  assert.equal(reply.source_port, gw.gatewayPort);
  assert.equal(reply.proxy_address, "127.0.0.1");
  const token = reply.token!;
  const path = reply.path!;
  assert.match(token, /^[A-Za-z0-9_-]{43}$/, "256 bits, base64url");
  assert.equal(path, `websockify?token=${token}`);
  assert.equal(reply.url, undefined, "no --web, no url");

  const { socket, response } = await connectRawWebSocket({
    port: gw.gatewayPort,
    path: `/${path}`,
    protocols: "binary",
    tls: tlsTo(gw.certificate!.cert),
  });
  assert.ok(socket, `upgrade refused: ${response.status}`);
  try {
    assert.equal(await viewerHandshake(socket), 0, "security None: the token is the credential");
    const init = await readPayload(socket, 24 + "token-desk".length);
    assert.equal(new TextDecoder().decode(init.subarray(24)), "token-desk");
    await socket.sendBinary(new TextEncoder().encode("echo"));
    assert.equal(new TextDecoder().decode(await readPayload(socket, 4)), "echo");
    assert.deepEqual(fake.clientInits, [1], "ClientInit forced shared");

    // Single use: the same URL again is refused, with the uniform 403.
    const again = await connectRawWebSocket({
      port: gw.gatewayPort,
      path: `/${path}`,
      tls: tlsTo(gw.certificate!.cert),
    });
    assert.equal(again.socket, undefined);
    assert.equal(again.response.status, 403);
  } finally {
    socket.close();
  }
  await gw.daemon.waitForLine(/Session ended \(client closed\)/);
  await gw.daemon.waitForLine(/token [0-9a-f]{8}: unknown/);
  assertNoSecrets(gw.daemon.lines, [token, CONTROL_PASSWORD]);
});

Deno.test({
  name:
    "gateway: a token in the sub-protocol offer works and is not echoed; a password adds VNC auth",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({});
  await using gw = await startGatewayDaemon({ users: USERS });
  const reply = await request(gw.daemon.controlPort, fake.port, {
    gateway: true,
    type: "vnc-ws",
    password: VNC_PASSWORD,
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const token = reply.token!;
  const { socket, response } = await connectRawWebSocket({
    port: gw.gatewayPort,
    path: "/websockify",
    protocols: `binary, token.${token}`,
    tls: tlsTo(gw.certificate!.cert),
  });
  assert.ok(socket, `upgrade refused: ${response.status}`);
  try {
    assert.equal(response.headers.get("sec-websocket-protocol"), "binary");
    assert.equal(await viewerHandshake(socket, VNC_PASSWORD), 0, "two factors: token and password");
    await readPayload(socket, 24);
  } finally {
    socket.close();
  }

  // A wrong password with a good token burns that token's forwarding.
  const second = await request(gw.daemon.controlPort, fake.port, {
    gateway: true,
    type: "vnc-wss",
    password: VNC_PASSWORD,
  });
  const wrong = await connectRawWebSocket({
    port: gw.gatewayPort,
    path: `/${second.path!}`,
    tls: tlsTo(gw.certificate!.cert),
  });
  assert.ok(wrong.socket);
  assert.notEqual(await viewerHandshake(wrong.socket, "wrong!!!"), 0);
  wrong.socket.close();
  await gw.daemon.waitForLine(/Authentication failed for client/);
});

Deno.test({
  name:
    "gateway: wrong, expired and reused tokens get the same 403; a bound token waits for its address",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({});
  await using gw = await startGatewayDaemon({ users: USERS, listen: "*:0" });
  const cert = gw.certificate!.cert;
  const refused = async (path: string, hostname = "127.0.0.1") => {
    const { socket, response } = await connectRawWebSocket({
      hostname,
      port: gw.gatewayPort,
      path,
      tls: tlsTo(cert),
    });
    socket?.close();
    return response;
  };
  const forbidden = await refused("/websockify?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
  assert.equal(forbidden.status, 403);

  const short = await request(gw.daemon.controlPort, fake.port, {
    gateway: true,
    type: "vnc-wss",
    ttl: 0.3,
  });
  await new Promise((resolve) => setTimeout(resolve, 700));
  const expired = await refused(`/${short.path!}`);
  assert.deepEqual([expired.status, expired.body], [forbidden.status, forbidden.body]);
  await gw.daemon.waitForLine(/Session ended \(no client\)/);

  // Bound to ::1: 127.0.0.1 is refused without burning it, ::1 then gets in.
  const bound = await request(gw.daemon.controlPort, fake.port, {
    gateway: true,
    type: "vnc-wss",
    client_address: "::1",
  });
  const path = `/${bound.path!}`;
  const foreign = await refused(path, "127.0.0.1");
  assert.deepEqual([foreign.status, foreign.body], [forbidden.status, forbidden.body]);
  const { socket } = await connectRawWebSocket({
    hostname: "::1",
    port: gw.gatewayPort,
    path,
    tls: tlsTo(cert),
  });
  assert.ok(socket, "the bound address still gets in");
  assert.equal(await viewerHandshake(socket), 0);
  socket.close();
});

Deno.test({
  name: "gateway --gateway-snf: unchanged snf requests reach their own VNC servers by password",
  ignore,
}, async () => {
  await using first = startFakeVncServer({ desktopName: "first" });
  await using second = startFakeVncServer({ desktopName: "second" });
  await using gw = await startGatewayDaemon({ users: USERS, args: ["--gateway-snf"] });
  const cert = gw.certificate!.cert;
  const replies = [];
  for (const [fake, password] of [[first, "pw-first"], [second, "pw-secnd"]] as const) {
    const reply = await request(gw.daemon.controlPort, fake.port, { type: "vnc-wss", password });
    assert.deepEqual(Object.keys(reply).sort(), ["proxy_address", "source_port", "status"]);
    assert.equal(reply.source_port, gw.gatewayPort, "snf's shape, the gateway's port");
    replies.push(reply);
  }
  // A colliding one-time password is refused with a reason.
  const clash = await request(gw.daemon.controlPort, first.port, {
    type: "vnc-wss",
    password: "pw-first",
  });
  assert.equal(clash.status, "FAILED");
  assert.ok(clash.reason && clash.reason.length > 0);

  // A wrong password burns only its own connection's attempt.
  const bad = await connectRawWebSocket({ port: gw.gatewayPort, tls: tlsTo(cert) });
  assert.ok(bad.socket);
  assert.notEqual(await viewerHandshake(bad.socket, "nobody!!"), 0);
  bad.socket.close();

  for (const [name, password] of [["second", "pw-secnd"], ["first", "pw-first"]]) {
    const { socket } = await connectRawWebSocket({ port: gw.gatewayPort, tls: tlsTo(cert) });
    assert.ok(socket);
    assert.equal(await viewerHandshake(socket, password), 0, name);
    const init = await readPayload(socket, 24 + name.length);
    assert.equal(new TextDecoder().decode(init.subarray(24)), name);
    socket.close();
  }
  assertNoSecrets(gw.daemon.lines, ["pw-first", "pw-secnd", CONTROL_PASSWORD]);
});

Deno.test({
  name: "gateway: --allowed-origins refuses another page's origin before the upgrade",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({});
  await using gw = await startGatewayDaemon({
    users: USERS,
    args: ["--allowed-origins=https://console.example"],
  });
  const cert = gw.certificate!.cert;
  for (
    const [origin, expected] of [
      ["https://evil.example", 403],
      ["http://console.example", 403],
      [null, 403],
      ["https://console.example", 101],
    ] as const
  ) {
    const reply = await request(gw.daemon.controlPort, fake.port, {
      gateway: true,
      type: "vnc-wss",
    });
    const { socket, response } = await connectRawWebSocket({
      port: gw.gatewayPort,
      path: `/${reply.path!}`,
      tls: tlsTo(cert),
      headers: { origin, host: "evil.example" },
    });
    socket?.close();
    assert.equal(response.status, expected, String(origin));
  }
});

Deno.test({
  name:
    "gateway: an idle connection is dropped at the request-head deadline; a GET without --web is 404",
  ignore,
}, async () => {
  await using gw = await startGatewayDaemon({
    users: USERS,
    args: ["--client-timeout=0.5"],
    plain: true,
  });
  const idle = await Deno.connect({ hostname: "127.0.0.1", port: gw.gatewayPort });
  try {
    // Nothing sent: the gateway drops it at the head deadline.
    const n = await idle.read(new Uint8Array(1)).catch(() => null);
    assert.equal(n, null);
  } finally {
    idle.close();
  }
  const response = await rawHttpRequest(
    gw.gatewayPort,
    "GET /vnc.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
  );
  assert.equal(response.status, 404);
});

Deno.test({
  name: "gateway: SIGHUP switches it to a new certificate and a live session goes on",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({});
  await using first = await makeTestCertificate();
  await using second = await makeTestCertificate();
  const dir = await Deno.makeTempDir({ prefix: "vap-gw-tls-" });
  try {
    const cert = `${dir}/cert.pem`;
    const key = `${dir}/key.pem`;
    await Deno.copyFile(first.certFile, cert);
    await Deno.copyFile(first.keyFile, key);
    await using daemon = await startDaemon({
      users: USERS,
      args: [
        "--gateway-listen=127.0.0.1:0",
        `--cert-file=${cert}`,
        `--key-file=${key}`,
        "--drain-timeout=0",
      ],
    });
    const port = Number(/Gateway on \S*?:(\d+)/.exec(await daemon.waitForLine(/Gateway on /))![1]);
    const redeem = async (caCert: string) => {
      const reply = await request(daemon.controlPort, fake.port, {
        gateway: true,
        type: "vnc-wss",
      });
      return await connectRawWebSocket({ port, path: `/${reply.path!}`, tls: tlsTo(caCert) });
    };
    const live = await redeem(first.cert);
    assert.ok(live.socket);
    assert.equal(await viewerHandshake(live.socket), 0);
    await readPayload(live.socket, 24);

    await Deno.copyFile(second.certFile, cert);
    await Deno.copyFile(second.keyFile, key);
    daemon.kill("SIGHUP");
    await daemon.waitForLine(/Gateway now uses the reloaded certificate/);
    const fresh = await redeem(second.cert);
    assert.ok(fresh.socket, "the new certificate is served");
    fresh.socket.close();
    await assert.rejects(redeem(first.cert), "the old certificate is gone");

    // The session that began before the reload still relays.
    await live.socket.sendBinary(new TextEncoder().encode("still"));
    assert.equal(new TextDecoder().decode(await readPayload(live.socket, 5)), "still");
    live.socket.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--allowed-origins guards a vnc-ws port too, and a refused page burns nothing", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({
    users: USERS,
    args: ["--allowed-origins=https://console.example"],
  });
  const reply = await request(daemon.controlPort, fake.port, {
    type: "vnc-ws",
    password: VNC_PASSWORD,
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  for (const origin of ["https://evil.example", null]) {
    const refused = await connectRawWebSocket({ port: reply.source_port, headers: { origin } });
    refused.socket?.close();
    assert.equal(refused.response.status, 403, String(origin));
  }
  const { socket } = await connectRawWebSocket({
    port: reply.source_port,
    headers: { origin: "https://console.example" },
  });
  assert.ok(socket, "the right page still gets the console");
  assert.equal(await viewerHandshake(socket, VNC_PASSWORD), 0);
  socket.close();
  await daemon.waitForLine(/origin refused/);
});
