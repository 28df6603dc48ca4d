/**
 * End to end: `vncauthproxy client --gateway` (main.ts as a subprocess)
 * against a daemon with `--gateway-listen --gateway-plain`, then a raw
 * WebSocket viewer redeeming what the client printed.
 */

import assert from "node:assert/strict";
import { runMain } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { readPayload, startGatewayDaemon, viewerHandshake } from "../_util/gateway.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "gw-cli-1";
const USERS = { admin: CONTROL_PASSWORD };

/** Runs `main.ts client` against `controlPort` with `args` after the common flags. */
function client(controlPort: number, backendPort: number, args: readonly string[]) {
  return runMain(
    [
      "client",
      "--server=127.0.0.1",
      `--server-port=${controlPort}`,
      "-d",
      "127.0.0.1",
      "-p",
      String(backendPort),
      "--auth-user=admin",
      `--auth-password=${CONTROL_PASSWORD}`,
      ...args,
    ],
    { permissions: ["--allow-net", "--allow-read"] },
  );
}

Deno.test("vncauthproxy client --gateway prints the token's path, which opens the console once", async () => {
  await using fake = startFakeVncServer({ desktopName: "cli-desk" });
  await using gw = await startGatewayDaemon({ users: USERS, plain: true });
  const run = await client(gw.daemon.controlPort, fake.port, [
    "--gateway",
    "--type=vnc-ws",
    "--ttl=20",
  ]);
  assert.equal(run.code, 0, run.stdout + run.stderr);
  const match = new RegExp(
    `^Forwarding 127\\.0\\.0\\.1:${gw.gatewayPort} -> 127\\.0\\.0\\.1:${fake.port}: OK\\n` +
      `Path (websockify\\?token=[A-Za-z0-9_-]{43})\\n$`,
  ).exec(run.stdout);
  assert.ok(match, run.stdout);
  const path = match[1]!;
  await gw.daemon.waitForLine(/Token [0-9a-f]{8} minted, valid for 20 s/);

  const { socket, response } = await connectRawWebSocket({
    port: gw.gatewayPort,
    path: `/${path}`,
  });
  assert.ok(socket, `upgrade refused: ${response.status}`);
  try {
    assert.equal(await viewerHandshake(socket), 0, "no -P: security None, the token is the key");
    const init = await readPayload(socket, 24 + "cli-desk".length);
    assert.equal(new TextDecoder().decode(init.subarray(24)), "cli-desk");
    const again = await connectRawWebSocket({ port: gw.gatewayPort, path: `/${path}` });
    again.socket?.close();
    assert.equal(again.response.status, 403, "single use");
  } finally {
    socket.close();
  }
});

Deno.test("vncauthproxy client --gateway with -P, --client-address and --json; --web gives a URL", async () => {
  const web = await Deno.makeTempDir({ prefix: "vap-web-" });
  try {
    await Deno.writeTextFile(`${web}/vnc.html`, "<!doctype html><title>noVNC</title>\n");
    await using fake = startFakeVncServer({ desktopName: "bound-desk" });
    await using gw = await startGatewayDaemon({
      users: USERS,
      plain: true,
      args: [`--web=${web}`, "--allowed-origins=http://console.example"],
    });
    const origin = { origin: "http://console.example" };

    // Bound to another address: refused from here, printed as a URL.
    const foreign = await client(gw.daemon.controlPort, fake.port, [
      "--gateway",
      "--type=vnc-ws",
      "--client-address=192.0.2.1",
    ]);
    assert.equal(foreign.code, 0, foreign.stdout + foreign.stderr);
    const url = /^URL (\S+)$/m.exec(foreign.stdout)?.[1];
    assert.ok(url, foreign.stdout);
    const page = new URL(url);
    assert.equal(page.origin, `http://127.0.0.1:${gw.gatewayPort}`);
    assert.equal(page.pathname, "/vnc.html");
    const foreignPath = page.searchParams.get("path")!;
    assert.match(foreignPath, /^websockify\?token=/);
    const refused = await connectRawWebSocket({
      port: gw.gatewayPort,
      path: `/${foreignPath}`,
      headers: origin,
    });
    refused.socket?.close();
    assert.equal(refused.response.status, 403, "another address may not redeem it");

    // --json: the raw reply, token fields included; -P adds VNC Authentication.
    const bound = await client(gw.daemon.controlPort, fake.port, [
      "--gateway",
      "--type=vnc-ws",
      "--client-address=127.0.0.1",
      "-P",
      VNC_PASSWORD,
      "--json",
    ]);
    assert.equal(bound.code, 0, bound.stdout + bound.stderr);
    const reply = JSON.parse(bound.stdout);
    assert.equal(reply.status, "OK");
    assert.equal(reply.source_port, gw.gatewayPort);
    assert.equal(reply.path, `websockify?token=${reply.token}`);
    assert.equal(new URL(reply.url).searchParams.get("path"), reply.path);
    const { socket, response } = await connectRawWebSocket({
      port: gw.gatewayPort,
      path: `/${reply.path}`,
      headers: origin,
    });
    assert.ok(socket, `upgrade refused: ${response.status}`);
    try {
      assert.equal(await viewerHandshake(socket, VNC_PASSWORD), 0, "the password's factor");
      const init = await readPayload(socket, 24 + "bound-desk".length);
      assert.equal(new TextDecoder().decode(init.subarray(24)), "bound-desk");
    } finally {
      socket.close();
    }
    for (const line of gw.daemon.lines) {
      for (const secret of [reply.token, VNC_PASSWORD, CONTROL_PASSWORD]) {
        assert.ok(!line.includes(secret), `secret in log: ${line}`);
      }
    }
  } finally {
    await Deno.remove(web, { recursive: true });
  }
});

Deno.test("vncauthproxy client refuses --ttl without --gateway, and -P is required without it", async () => {
  for (
    const [args, message] of [
      [["--ttl=5", "-P", VNC_PASSWORD], /--ttl needs --gateway/],
      [[], /The --password option is required/],
      [["--gateway", "--type=vnc"], /--gateway needs --type vnc-ws or vnc-wss/],
      [["--gateway", "--ttl=0"], /--ttl must be a positive number/],
    ] as const
  ) {
    const run = await client(1, 5900, args);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, message);
  }
});
