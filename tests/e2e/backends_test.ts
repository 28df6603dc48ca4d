/**
 * End to end: the daemon (`main.ts -d`) in front of scripted VNC servers
 * that need a password, sit on a Unix socket or speak VeNCrypt X509Vnc with
 * a client certificate, requested with `vncauthproxy client` and raw
 * control JSON. A one-port pool proves that no failure keeps the port, and
 * no log line ever carries the backend password.
 */

import assert from "node:assert/strict";
import { encodeU32 } from "../../src/rfb/rfb_messages.ts";
import { rawControl, runMain, startDaemon } from "../_util/daemon_process.ts";
import {
  type ScriptPeer,
  serveServerInit,
  serveVersion,
  serveVncAuth,
  startScriptedVncServer,
  TEST_CHALLENGE,
} from "../_util/scripted_vnc_server.ts";
import { verifyVncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";
import { readPayload, startGatewayDaemon, viewerHandshake } from "../_util/gateway.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";
import { hasOpenssl, makeTestPki } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VIEWER_PASSWORD = "0neTime8";
const BACKEND_PASSWORD = "Vm-Pa55w";

/** A 3.8 server offering VncAuth only, with BACKEND_PASSWORD. */
async function passwordServer(peer: ScriptPeer): Promise<void> {
  const minor = await serveVersion(peer);
  await peer.send([1, 2]);
  // A proxy without a password closes instead of choosing.
  if (await peer.readU8().catch(() => undefined) !== 2) return;
  const response = await serveVncAuth(peer, {
    password: BACKEND_PASSWORD,
    minor,
    failReason: "Wrong password",
  });
  if (verifyVncAuthResponse(BACKEND_PASSWORD, TEST_CHALLENGE, response)) {
    await serveServerInit(peer);
  }
}

async function forward(controlPort: number, fields: Record<string, unknown>) {
  const text = JSON.stringify({
    auth_user: "admin",
    auth_password: CONTROL_PASSWORD,
    destination_address: "127.0.0.1",
    password: VIEWER_PASSWORD,
    ...fields,
  });
  return JSON.parse(await rawControl(controlPort, text + "\n"));
}

/** Runs `vncauthproxy client` against the daemon; returns its exit code and stdout. */
async function client(controlPort: number, args: string[]) {
  const { code, stdout, stderr } = await runMain([
    "client",
    `--server-port=${controlPort}`,
    "--auth-user=admin",
    `--auth-password=${CONTROL_PASSWORD}`,
    `--password=${VIEWER_PASSWORD}`,
    ...args,
  ]);
  assert.equal(stderr, "");
  return { code, stdout };
}

/** A viewer through the forwarded port sees the backend's ServerInit. */
async function viewThrough(port: number): Promise<void> {
  const viewer = await connectViewer({ port, password: VIEWER_PASSWORD });
  try {
    assert.ok(viewer.ok);
    assert.equal((await readServerInit(viewer.duplex)).name, "scripted");
  } finally {
    viewer.duplex.close();
  }
}

function assertNoBackendPassword(lines: readonly string[]): void {
  assert.ok(lines.length > 10);
  for (const line of lines) {
    assert.ok(!line.includes(BACKEND_PASSWORD), `backend password in log line: ${line}`);
  }
}

Deno.test("Daemon: backend passwords, Unix sockets and --backend-allow, one pool port reused after every failure", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "vap-e2e-unix-" }));
  try {
    await Deno.mkdir(`${root}/vms`);
    await Deno.mkdir(`${root}/other`);
    await using tcp = startScriptedVncServer(passwordServer);
    await using unix = startScriptedVncServer(passwordServer, { path: `${root}/vms/vm.sock` });
    await using outside = startScriptedVncServer(passwordServer, { path: `${root}/other/vm.sock` });
    await Deno.symlink(`${root}/other/vm.sock`, `${root}/vms/escape.sock`);
    await using daemon = await startDaemon({
      users: { admin: CONTROL_PASSWORD },
      poolSize: 1,
      args: [
        `--unix-backend-dir=${root}/vms`,
        "--backend-allow=127.0.0.0/8",
        "--backend-deny",
        "127.0.0.2 ::1",
        "--port-cooldown=0",
      ],
    });
    const port = daemon.controlPort;

    const withPassword = { "destination_password": BACKEND_PASSWORD };
    const failures: [Record<string, unknown>, string][] = [
      [
        { destination_port: tcp.port, destination_password: "wrong-pw" },
        "VNC server refused: Wrong password",
      ],
      [{ destination_port: tcp.port }, "VNC server requires authentication"],
      [
        { destination_address: "127.0.0.2", destination_port: tcp.port, ...withPassword },
        "backend not allowed",
      ],
      [
        { destination_address: "::1", destination_port: tcp.port, ...withPassword },
        "backend not allowed",
      ],
      [
        { destination_address: `unix:${root}/other/vm.sock`, destination_port: 0, ...withPassword },
        "backend not allowed",
      ],
      [
        {
          destination_address: `unix:${root}/vms/../other/vm.sock`,
          destination_port: 0,
          ...withPassword,
        },
        "backend not allowed",
      ],
      [
        {
          destination_address: `unix:${root}/vms/escape.sock`,
          destination_port: 0,
          ...withPassword,
        },
        "backend not allowed",
      ],
    ];
    let poolPort: number | undefined;
    for (const [fields, reason] of failures) {
      const reply = await forward(port, fields);
      assert.equal(reply.status, "FAILED", JSON.stringify(fields));
      assert.equal(reply.reason, reason, JSON.stringify(fields));
      // The one pool port is free again: the next request gets it.
      const ok = await forward(port, {
        destination_port: tcp.port,
        destination_password: BACKEND_PASSWORD,
      });
      assert.equal(ok.status, "OK", `after ${JSON.stringify(fields)}: ${ok.reason}`);
      poolPort ??= ok.source_port;
      assert.equal(ok.source_port, poolPort);
      await viewThrough(ok.source_port);
    }
    assert.equal(outside.accepted, 0, "a socket outside the directory was connected to");

    // The client command: -d unix:/path -p 0 and --dest-password.
    const viaClient = await client(port, [
      `-d`,
      `unix:${root}/vms/vm.sock`,
      "-p",
      "0",
      `--dest-password=${BACKEND_PASSWORD}`,
    ]);
    assert.equal(viaClient.code, 0, viaClient.stdout);
    assert.match(viaClient.stdout, new RegExp(`:${poolPort} -> unix:${root}/vms/vm.sock: OK`));
    await viewThrough(poolPort!);
    assert.equal(unix.accepted, 1);

    const refused = await client(port, [
      `-d`,
      "127.0.0.1",
      "-p",
      String(tcp.port),
      "--dest-password=nope",
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.stdout, /Reason: VNC server refused: Wrong password/);

    await tcp.idle();
    for (const error of [...tcp.errors, ...unix.errors]) throw error;
    assertNoBackendPassword(daemon.lines);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** VeNCrypt X509Vnc with a client certificate required. */
function vencryptServer(pki: Awaited<ReturnType<typeof makeTestPki>>) {
  return async (peer: ScriptPeer) => {
    const minor = await serveVersion(peer);
    await peer.send([1, 19]);
    await peer.readU8();
    await peer.send([0, 2]);
    await peer.read(2);
    await peer.send([0, 2, ...encodeU32(260), ...encodeU32(261)]);
    const subtype = await peer.readU32();
    await peer.send([1]);
    const tls = await peer.startTls({ ...pki.server, requireClientCert: true, ca: pki.caCert })
      .catch(() => undefined);
    if (tls === undefined) return;
    if (subtype === 261) {
      const response = await serveVncAuth(tls, {
        password: BACKEND_PASSWORD,
        minor,
        failReason: "Wrong password",
      });
      if (!verifyVncAuthResponse(BACKEND_PASSWORD, TEST_CHALLENGE, response)) return;
    } else {
      await tls.sendU32(0);
    }
    // A proxy that refused the certificate after the handshake sends no ClientInit.
    await serveServerInit(tls).catch(() => {});
  };
}

Deno.test({
  name:
    "Daemon: VeNCrypt X509Vnc with --backend-ca and a client certificate, via the client command",
  ignore: !hasOpenssl(),
  async fn() {
    await using pki = await makeTestPki();
    await using server = startScriptedVncServer(vencryptServer(pki));
    await using daemon = await startDaemon({
      users: { admin: CONTROL_PASSWORD },
      poolSize: 1,
      args: [
        `--backend-ca=${pki.caFile}`,
        `--backend-cert=${pki.client.certFile}`,
        `--backend-key=${pki.client.keyFile}`,
        "--port-cooldown=0",
      ],
    });
    const base = ["-d", "127.0.0.1", "-p", String(server.port), "--dest-tls"];
    const ok = await client(daemon.controlPort, [
      ...base,
      `--dest-password=${BACKEND_PASSWORD}`,
      "--dest-tls-name=localhost",
    ]);
    assert.equal(ok.code, 0, ok.stdout);
    const poolPort = Number(/:(\d+) -> /.exec(ok.stdout)![1]);
    await viewThrough(poolPort);

    const wrongName = await client(daemon.controlPort, [...base, "--dest-tls-name=vnc.example"]);
    assert.match(wrongName.stdout, /Reason: VNC server certificate does not match the name/);
    const wrongPassword = await client(daemon.controlPort, [...base, "--dest-password=Wr0ng-pw"]);
    assert.match(wrongPassword.stdout, /Reason: VNC server refused: Wrong password/);
    // X509None with no password; the port is still the one port.
    const none = await client(daemon.controlPort, base);
    assert.equal(none.code, 0, none.stdout);
    assert.match(none.stdout, new RegExp(`:${poolPort} -> `));
    await viewThrough(poolPort);

    await server.idle();
    assertNoBackendPassword(daemon.lines);
  },
});

Deno.test({
  name: "Daemon: no client certificate for a server that requires one is a failed TLS handshake",
  ignore: !hasOpenssl(),
  async fn() {
    await using pki = await makeTestPki();
    await using server = startScriptedVncServer(vencryptServer(pki));
    await using daemon = await startDaemon({
      users: { admin: CONTROL_PASSWORD },
      args: [`--backend-ca=${pki.caFile}`],
    });
    const reply = await forward(daemon.controlPort, {
      destination_port: server.port,
      destination_tls: true,
      destination_password: BACKEND_PASSWORD,
    });
    assert.equal(reply.reason, "VNC server TLS handshake failed");
    assertNoBackendPassword(daemon.lines);
  },
});

Deno.test({
  name:
    "Daemon: the gateway, by token and by password, in front of password and Unix-socket backends",
  ignore: !hasOpenssl(),
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "vap-e2e-gw-" }));
    try {
      await using unix = startScriptedVncServer(passwordServer, { path: `${root}/vm.sock` });
      await using tcp = startScriptedVncServer(passwordServer);
      await using gw = await startGatewayDaemon({
        users: { admin: CONTROL_PASSWORD },
        args: ["--gateway-snf", `--unix-backend-dir=${root}`],
      });
      const tls = { caCerts: [gw.certificate!.cert], hostname: "localhost" };
      const token = await forward(gw.daemon.controlPort, {
        destination_address: `unix:${root}/vm.sock`,
        destination_port: 0,
        destination_password: BACKEND_PASSWORD,
        gateway: true,
        type: "vnc-wss",
        password: undefined,
      });
      assert.equal(token.status, "OK", token.reason);
      const byToken = await connectRawWebSocket({
        port: gw.gatewayPort,
        path: `/${token.path}`,
        tls,
      });
      assert.ok(byToken.socket);
      assert.equal(await viewerHandshake(byToken.socket), 0);
      const init = await readPayload(byToken.socket, 24 + "scripted".length);
      assert.equal(new TextDecoder().decode(init.subarray(24)), "scripted");
      byToken.socket.close();

      const snf = await forward(gw.daemon.controlPort, {
        destination_port: tcp.port,
        destination_password: BACKEND_PASSWORD,
        type: "vnc-wss",
      });
      assert.equal(snf.status, "OK", snf.reason);
      assert.equal(snf.source_port, gw.gatewayPort);
      const byPassword = await connectRawWebSocket({ port: gw.gatewayPort, tls });
      assert.ok(byPassword.socket);
      assert.equal(await viewerHandshake(byPassword.socket, VIEWER_PASSWORD), 0);
      const init2 = await readPayload(byPassword.socket, 24 + "scripted".length);
      assert.equal(new TextDecoder().decode(init2.subarray(24)), "scripted");
      byPassword.socket.close();

      const refused = await forward(gw.daemon.controlPort, {
        destination_port: tcp.port,
        destination_password: "wrong-pw",
        gateway: true,
        type: "vnc-wss",
      });
      assert.equal(refused.reason, "VNC server refused: Wrong password");
      assert.equal(refused.token, undefined);
      assert.equal(unix.accepted, 1);
      assertNoBackendPassword(gw.daemon.lines);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "Daemon: SIGHUP rereads --backend-ca, and keeps the old one when the new file is bad",
  ignore: !hasOpenssl(),
  async fn() {
    await using pki = await makeTestPki();
    await using server = startScriptedVncServer(async (peer) => {
      await serveVersion(peer);
      await peer.send([1, 19]);
      await peer.readU8();
      await peer.send([0, 2]);
      await peer.read(2);
      await peer.send([0, 1, ...encodeU32(260)]);
      await peer.readU32();
      await peer.send([1]);
      const tls = await peer.startTls(pki.server).catch(() => undefined);
      if (tls === undefined) return;
      await tls.sendU32(0);
      await serveServerInit(tls).catch(() => {});
    });
    const caFile = `${pki.dir}/backend-ca.pem`;
    // At first the CA of another PKI: the server's certificate is not trusted.
    await Deno.writeTextFile(caFile, await Deno.readTextFile(`${pki.dir}/otherca.pem`));
    await using daemon = await startDaemon({
      users: { admin: CONTROL_PASSWORD },
      args: [`--backend-ca=${caFile}`],
    });
    const tlsRequest = { "destination_port": server.port, "destination_tls": true };
    assert.equal(
      (await forward(daemon.controlPort, tlsRequest)).reason,
      "VNC server certificate not trusted",
    );
    await Deno.writeTextFile(caFile, pki.caCert);
    daemon.kill("SIGHUP");
    await daemon.waitForLine(/Reloaded: /);
    const ok = await forward(daemon.controlPort, tlsRequest);
    assert.equal(ok.status, "OK", ok.reason);
    await viewThrough(ok.source_port);
    await Deno.writeTextFile(caFile, "not a certificate");
    daemon.kill("SIGHUP");
    await daemon.waitForLine(/Keeping the old backend TLS files/);
    assert.equal((await forward(daemon.controlPort, tlsRequest)).status, "OK");
  },
});
