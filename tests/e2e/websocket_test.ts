/**
 * End to end over WebSockets: `main.ts` as a subprocess, `vnc-ws` and
 * `vnc-wss` forwardings, a raw WebSocket viewer in front and a scripted
 * fake VNC server behind.
 */

import assert from "node:assert/strict";
import { ConnDuplex } from "../../src/io/duplex.ts";
import { vncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import { requestForwardingRaw, startDaemon } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectRawWebSocket, OPCODE, type RawWebSocket } from "../_util/raw_websocket.ts";
import { makeTestCertificate } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "ws-once1";

function forward(controlPort: number, fakePort: number, type: string) {
  return requestForwardingRaw(controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: fakePort,
    password: VNC_PASSWORD,
    type,
  });
}

/** Reads whole frames until at least `count` payload bytes have arrived. */
async function readAtLeast(socket: RawWebSocket, count: number): Promise<Uint8Array> {
  let bytes = new Uint8Array();
  while (bytes.length < count) {
    const frame = await socket.readFrame();
    if (frame === null) throw new Error("WebSocket closed early");
    const next = new Uint8Array(bytes.length + frame.payload.length);
    next.set(bytes);
    next.set(frame.payload, bytes.length);
    bytes = next;
  }
  return bytes;
}

/**
 * Runs the viewer's handshake over WebSocket frames of `frameSize` bytes.
 * With `pipelined`, the version and the security choice go in one frame,
 * before the offer arrives, as do the response and ClientInit.
 */
async function wsHandshake(
  socket: RawWebSocket,
  frameSize: number,
  options: { password?: string; pipelined?: boolean } = {},
) {
  const send = async (bytes: Uint8Array) => {
    for (let i = 0; i < bytes.length; i += frameSize) {
      await socket.sendBinary(bytes.subarray(i, i + frameSize));
    }
  };
  const version = new TextEncoder().encode("RFB 003.008\n");
  assert.equal(new TextDecoder().decode(await readAtLeast(socket, 12)), "RFB 003.008\n");
  if (options.pipelined) {
    await send(Uint8Array.from([...version, 2]));
    assert.deepEqual([...await readAtLeast(socket, 2)], [1, 2]);
  } else {
    await send(version);
    assert.deepEqual([...await readAtLeast(socket, 2)], [1, 2]);
    await send(Uint8Array.of(2));
  }
  const challenge = await readAtLeast(socket, 16);
  const response = vncAuthResponse(options.password ?? VNC_PASSWORD, challenge);
  await send(options.pipelined ? Uint8Array.from([...response, 0]) : response);
  return [...await readAtLeast(socket, 4)];
}

Deno.test("vnc-ws: a WebSocket viewer authenticates with 1-byte frames, text frames pass as bytes", async () => {
  await using fake = startFakeVncServer({ desktopName: "ws" });
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  const reply = await forward(daemon.controlPort, fake.port, "vnc-ws");
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const plain = await fetch(`http://127.0.0.1:${reply.source_port}/`);
  assert.equal(plain.status, 400, "a plain GET gets 400 and does not use up the forwarding");
  await plain.body?.cancel();
  const { socket, response } = await connectRawWebSocket({
    port: reply.source_port,
    path: "/websockify?token=abc",
    protocols: "binary",
  });
  assert.ok(socket, `upgrade failed: ${response.status}`);
  try {
    assert.equal(response.headers.get("sec-websocket-protocol"), "binary");
    assert.deepEqual(await wsHandshake(socket, 1), [0, 0, 0, 0]);
    await socket.sendBinary(Uint8Array.of(0)); // ClientInit
    const init = await readAtLeast(socket, 24 + 2);
    assert.equal(new TextDecoder().decode(init.subarray(24)), "ws");
    await socket.sendText("hello");
    assert.equal(new TextDecoder().decode(await readAtLeast(socket, 5)), "hello");
    assert.deepEqual(fake.clientInits, [1]);

    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: reply.source_port }),
      Deno.errors.ConnectionRefused,
      "the port closes as soon as the first WebSocket wins",
    );
  } finally {
    socket.close();
  }
  await daemon.waitForLine(/Session ended \(client closed\)/);
  for (const line of daemon.lines) {
    assert.ok(!line.includes("token=abc"), `query string logged: ${line}`);
    assert.ok(!line.includes(VNC_PASSWORD) && !line.includes(CONTROL_PASSWORD));
  }
});

Deno.test("vnc-ws: pipelined handshake messages in one frame work, and a wrong password fails", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  const ok = await forward(daemon.controlPort, fake.port, "vnc-ws");
  const first = await connectRawWebSocket({ port: ok.source_port });
  assert.ok(first.socket);
  assert.deepEqual(await wsHandshake(first.socket, 1 << 20, { pipelined: true }), [0, 0, 0, 0]);
  assert.equal((await readAtLeast(first.socket, 24)).length >= 24, true, "ServerInit follows");
  first.socket.close();

  const bad = await forward(daemon.controlPort, fake.port, "vnc-ws");
  const viewer = await connectRawWebSocket({ port: bad.source_port });
  assert.ok(viewer.socket);
  const failure = await wsHandshake(viewer.socket, 1 << 20, { password: "wrong!!!" });
  assert.deepEqual(failure.slice(0, 8), [0, 0, 0, 1, 0, 0, 0, 21]);
  assert.equal(String.fromCharCode(...failure.slice(8)), "Authentication failed");
  viewer.socket.close();
  await daemon.waitForLine(/Authentication failed for client/);
});

Deno.test("vnc-ws: when the VNC server ends the session the viewer gets close 1001", async () => {
  await using fake = startFakeVncServer({ closeAfterServerInit: true });
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  const reply = await forward(daemon.controlPort, fake.port, "vnc-ws");
  const { socket } = await connectRawWebSocket({ port: reply.source_port });
  assert.ok(socket);
  try {
    assert.deepEqual(await wsHandshake(socket, 1 << 20), [0, 0, 0, 0]);
    await socket.sendBinary(Uint8Array.of(1)); // ClientInit
    await readAtLeast(socket, 24);
    let frame = await socket.readFrame();
    while (frame !== null && frame.opcode !== OPCODE.close) frame = await socket.readFrame();
    assert.ok(frame, "a close frame, not just the end of the connection");
    const code = (frame.payload[0]! << 8) | frame.payload[1]!;
    // RFC 6455 §7.4.1: 1001, the server end going away (snf sent the same).
    assert.equal(code, 1001);
    assert.equal(
      new TextDecoder().decode(frame.payload.subarray(2)),
      "Server connection went away",
    );
  } finally {
    socket.close();
  }
  await daemon.waitForLine(/Session ended \(server closed\)/);
});

Deno.test("vnc-wss: refused with 'TLS is not configured' without a certificate, served with one", async () => {
  await using fake = startFakeVncServer({});
  {
    await using daemon = await startDaemon({
      users: { admin: CONTROL_PASSWORD },
      args: ["--cert-file=/nonexistent/cert.pem", "--key-file=/nonexistent/key.pem"],
    });
    const reply = await forward(daemon.controlPort, fake.port, "vnc-wss");
    assert.deepEqual(reply, {
      source_port: 0,
      status: "FAILED",
      reason: "TLS is not configured",
      proxy_address: null,
    });
  }
  await using certificate = await makeTestCertificate();
  await using daemon = await startDaemon({
    users: { admin: CONTROL_PASSWORD },
    args: [`--cert-file=${certificate.certFile}`, `--key-file=${certificate.keyFile}`],
  });
  const reply = await forward(daemon.controlPort, fake.port, "vnc-wss");
  assert.equal(reply.status, "OK");
  const { socket } = await connectRawWebSocket({
    port: reply.source_port,
    tls: { caCerts: [certificate.cert], hostname: "localhost" },
  });
  assert.ok(socket);
  assert.deepEqual(await wsHandshake(socket, 3), [0, 0, 0, 0]);
  socket.close();
  await daemon.waitForLine(/Session ended/);
});

Deno.test("vnc-ws: an idle TCP connection opened first does not delay the real viewer", async () => {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
  const reply = await forward(daemon.controlPort, fake.port, "vnc-ws");
  const idle = new ConnDuplex(
    await Deno.connect({ hostname: "127.0.0.1", port: reply.source_port }),
  );
  await idle.write(new TextEncoder().encode("GET /websockify HT"));
  try {
    const { socket } = await connectRawWebSocket({ port: reply.source_port });
    assert.ok(socket);
    assert.deepEqual(await wsHandshake(socket, 64), [0, 0, 0, 0]);
    socket.close();
  } finally {
    idle.close();
  }
  await daemon.waitForLine(/Session ended/);
});
