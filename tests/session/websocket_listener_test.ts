import assert from "node:assert/strict";
import type { ClientListener } from "../../src/session/tcp_listener.ts";
import {
  openWebSocketListener,
  type WebSocketListenerOptions,
} from "../../src/session/websocket_listener.ts";
import { readExact } from "../../src/io/byte_reader.ts";
import { WebSocketDuplex } from "../../src/io/websocket_duplex.ts";
import type { Logger } from "../../src/log.ts";
import {
  connectRawWebSocket,
  OPCODE,
  rawHttpRequest,
  type RawWebSocket,
} from "../_util/raw_websocket.ts";
import { openIdleConnections } from "../_util/daemon_process.ts";
import { makeTestCertificate } from "../_util/tls.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const NOT_WEBSOCKET = "This port serves one VNC WebSocket console\n";
const SECOND_CLIENT = { code: 1001, reason: "Only a single connection allowed" };

/** A logger that keeps its lines, for assertions. */
function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const make = (prefix: string): Logger => ({
    debug: (message) => lines.push(`DEBUG ${prefix}${message}`),
    info: (message) => lines.push(`INFO ${prefix}${message}`),
    warn: (message) => lines.push(`WARNING ${prefix}${message}`),
    error: (message) => lines.push(`ERROR ${prefix}${message}`),
    child: (more) => make(`${prefix}${more} `),
  });
  return { logger: make(""), lines };
}

function open(
  options: Partial<WebSocketListenerOptions> = {},
  address = "127.0.0.1",
): Promise<ClientListener> {
  return openWebSocketListener(address, 0, {
    logger: recordingLogger().logger,
    ...options,
  });
}

function portOf(listener: ClientListener): number {
  const address = listener.addresses[0]!;
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

/** True when `port` can be bound on 127.0.0.1 again. */
function portIsFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) return false;
    throw error;
  }
}

async function upgrade(
  port: number,
  options: { path?: string; protocols?: string } = {},
): Promise<RawWebSocket> {
  const { socket, response } = await connectRawWebSocket({ port, ...options });
  assert.equal(response.status, 101, response.body);
  return socket!;
}

function upgradeRequest(path = "/websockify"): string {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  return `GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
}

/** Reads until the server ends the connection (a reset counts as an end). */
async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buffer = new Uint8Array(4096);
  try {
    for (let n; (n = await conn.read(buffer)) !== null;) chunks.push(...buffer.subarray(0, n));
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
  }
  return Uint8Array.from(chunks);
}

/** {@linkcode readAll} as text. */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  return decoder.decode(await readAll(conn));
}

function timeout(): AbortSignal {
  return AbortSignal.timeout(10_000);
}

Deno.test("openWebSocketListener() upgrades on any path and relays bytes both ways", async () => {
  const { logger, lines } = recordingLogger();
  const listener = await open({ logger });
  let client: RawWebSocket | undefined;
  try {
    const port = portOf(listener);
    assert.deepStrictEqual(listener.addresses, [`127.0.0.1:${port}`]);
    client = await upgrade(port, { path: "/a/b?token=SECRET-TOKEN" });
    assert.equal(client.response.headers.get("upgrade"), "websocket");
    assert.equal(client.response.headers.get("connection"), "Upgrade");
    const viewer = await listener.acceptOne(timeout());
    assert.ok(viewer instanceof WebSocketDuplex);
    assert.match(viewer.remoteAddress, /^127\.0\.0\.1:\d+$/);

    await viewer.write(Uint8Array.of(1, 2, 3));
    assert.deepStrictEqual(await client.readBytes(3), Uint8Array.of(1, 2, 3));
    await client.sendBinary(Uint8Array.of(4, 5));
    assert.deepStrictEqual(await readExact(viewer, 2), Uint8Array.of(4, 5));

    assert.ok(lines.some((line) => line.includes("WebSocket upgrade from 127.0.0.1:")));
    assert.ok(lines.some((line) => line.includes("on path /a/b")));
    assert.ok(lines.every((line) => !line.includes("SECRET-TOKEN")));
    viewer.close();
  } finally {
    client?.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() works with Deno's WebSocket client offering binary", async () => {
  const listener = await open();
  const client = new WebSocket(`ws://127.0.0.1:${portOf(listener)}/websockify`, ["binary"]);
  client.binaryType = "arraybuffer";
  const clientClosed = Promise.withResolvers<CloseEvent>();
  client.onclose = (event) => clientClosed.resolve(event);
  const clientOpened = Promise.withResolvers<void>();
  client.onopen = () => clientOpened.resolve();
  const message = Promise.withResolvers<Uint8Array>();
  client.onmessage = (event) => message.resolve(new Uint8Array(event.data));
  try {
    const viewer = await listener.acceptOne(timeout());
    await clientOpened.promise;
    assert.equal(client.protocol, "binary");
    client.send(encoder.encode("RFB"));
    client.send("text");
    assert.equal(decoder.decode(await readExact(viewer, 7)), "RFBtext");
    await viewer.write(new Uint8Array(100_000).fill(9));
    assert.deepStrictEqual(await message.promise, new Uint8Array(100_000).fill(9));
    client.close(1000, "done");
    assert.equal(await viewer.read(new Uint8Array(1)), null);
    const event = await clientClosed.promise;
    assert.equal(event.code, 1000);
  } finally {
    client.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() picks sub-protocol binary when offered and accepts any offer", async (t) => {
  const table: [string | undefined, string | null][] = [
    [undefined, null],
    ["binary", "binary"],
    ["binary, base64", "binary"],
    ["base64, binary", "binary"],
    ["base64", null],
    ["binaryx, bin", null],
    // A token offer (for the gateway) is never echoed back.
    ["binary, token.abc", "binary"],
    ["token.abc", null],
  ];
  for (const [offer, answer] of table) {
    await t.step(`offer ${JSON.stringify(offer)}`, async () => {
      const listener = await open();
      let client: RawWebSocket | undefined;
      try {
        client = await upgrade(portOf(listener), {
          ...(offer !== undefined ? { protocols: offer } : {}),
        });
        assert.equal(client.response.headers.get("sec-websocket-protocol"), answer);
        const viewer = await listener.acceptOne(timeout());
        await viewer.write(Uint8Array.of(42));
        assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(42));
        viewer.close();
      } finally {
        client?.close();
        await listener.close();
      }
    });
  }
});

Deno.test("openWebSocketListener() closes the port at once when the first viewer wins", async () => {
  const { logger, lines } = recordingLogger();
  const listener = await open({ logger });
  const port = portOf(listener);
  // A second client already in its handshake when the first one wins.
  const late = await Deno.connect({ hostname: "127.0.0.1", port });
  let first: RawWebSocket | undefined;
  try {
    await late.write(encoder.encode("GET /websockify HTTP/1.1\r\n"));
    first = await upgrade(port);
    const viewer = await listener.acceptOne(timeout());

    // The port is free now: new connections are refused, the port binds.
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
    assert.ok(portIsFree(port));

    // The one in its handshake gets 101, then 1001 (snf-vncauthproxy's answer).
    await late.write(encoder.encode(upgradeRequest().split("\r\n").slice(1).join("\r\n")));
    const answer = await readAll(late);
    const text = decoder.decode(answer);
    assert.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    const frame = answer.subarray(text.indexOf("\r\n\r\n") + 4);
    assert.equal(frame[0], 0x80 | OPCODE.close);
    assert.equal(new DataView(frame.buffer, frame.byteOffset + 2).getUint16(0), SECOND_CLIENT.code);
    assert.equal(decoder.decode(frame.subarray(4)), SECOND_CLIENT.reason);
    assert.ok(lines.some((line) => line.startsWith("INFO Refused a second WebSocket client")));

    // The winner is untouched.
    await first.sendBinary(Uint8Array.of(7));
    assert.deepStrictEqual(await readExact(viewer, 1), Uint8Array.of(7));
    viewer.close();
  } finally {
    late.close();
    first?.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() answers other HTTP requests with a short 4xx and stays available", async (t) => {
  const listener = await open();
  const port = portOf(listener);
  let client: RawWebSocket | undefined;
  try {
    const plain = (method: string, version = "HTTP/1.1") =>
      `${method} /websockify ${version}\r\nHost: x\r\n\r\n`;
    await t.step("plain GET gets 400", async () => {
      const response = await rawHttpRequest(port, plain("GET"));
      assert.equal(response.status, 400);
      assert.equal(response.body, NOT_WEBSOCKET);
      assert.equal(response.headers.get("connection"), "close");
      assert.equal(response.headers.get("content-length"), String(NOT_WEBSOCKET.length));
    });
    await t.step("HEAD gets 405 with Allow: GET and no body", async () => {
      const response = await rawHttpRequest(port, plain("HEAD"));
      assert.equal(response.status, 405);
      assert.equal(response.headers.get("allow"), "GET");
    });
    await t.step("POST gets 405 with Allow: GET", async () => {
      const response = await rawHttpRequest(port, plain("POST"));
      assert.equal(response.status, 405);
      assert.equal(response.headers.get("allow"), "GET");
    });
    await t.step("HTTP/1.0 gets 400, HTTP/2.0 gets 505", async () => {
      assert.equal((await rawHttpRequest(port, plain("GET", "HTTP/1.0"))).status, 400);
      assert.equal((await rawHttpRequest(port, plain("GET", "HTTP/2.0"))).status, 505);
    });
    await t.step("a malformed request gets 400", async () => {
      const response = await rawHttpRequest(port, "GET /websockify HTTP/1.1\r\nHost x\r\n\r\n");
      assert.equal(response.status, 400);
    });
    await t.step("bytes after the request head get 400", async () => {
      const response = await rawHttpRequest(port, `${upgradeRequest()}\x82\x80`);
      assert.equal(response.status, 400);
    });
    const badUpgrades: [string, Record<string, string | null>][] = [
      ["no Sec-WebSocket-Key", { "sec-websocket-key": null }],
      ["a short Sec-WebSocket-Key", { "sec-websocket-key": "c2hvcnQ=" }],
      ["a key of 17 bytes", { "sec-websocket-key": btoa("x".repeat(17)) }],
      ["no Connection: upgrade", { connection: "keep-alive" }],
    ];
    for (const [name, headers] of badUpgrades) {
      await t.step(`upgrade with ${name} gets 400`, async () => {
        const { socket, response } = await connectRawWebSocket({ port, headers });
        socket?.close();
        assert.equal(response.status, 400);
      });
    }
    for (const version of ["12", "8", "14"]) {
      await t.step(`upgrade with Sec-WebSocket-Version ${version} gets 426`, async () => {
        // RFC 6455 §4.4: name the version we speak.
        const { socket, response } = await connectRawWebSocket({
          port,
          headers: { "sec-websocket-version": version },
        });
        socket?.close();
        assert.equal(response.status, 426);
        assert.equal(response.headers.get("sec-websocket-version"), "13");
      });
    }
    await t.step("Connection with several tokens and any-case Upgrade are fine", async () => {
      client = (await connectRawWebSocket({
        port,
        headers: { connection: "keep-alive, Upgrade", upgrade: "WebSocket" },
      })).socket;
      assert.ok(client !== undefined);
      const viewer = await listener.acceptOne(timeout());
      viewer.close();
    });
  } finally {
    client?.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() answers an oversize request head with 431 and closes", async () => {
  const listener = await open({ maxHeaderBytes: 1024 });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(listener) });
    try {
      await conn.write(encoder.encode(`GET / HTTP/1.1\r\nX: ${"a".repeat(2000)}\r\n\r\n`));
      const answer = await readToEnd(conn);
      assert.match(answer, /^HTTP\/1\.1 431 /);
    } finally {
      conn.close();
    }
    // The default bound is 8 KiB.
  } finally {
    await listener.close();
  }
  const defaults = await open();
  try {
    const response = await rawHttpRequest(
      portOf(defaults),
      `GET / HTTP/1.1\r\nX: ${"a".repeat(9000)}\r\n\r\n`,
    );
    assert.equal(response.status, 431);
  } finally {
    await defaults.close();
  }
});

Deno.test("openWebSocketListener() lets no idle or slow connection delay the viewer, and drops them on time", async () => {
  const listener = await open({ handshakeTimeoutMs: 200 });
  const port = portOf(listener);
  const idle = await Deno.connect({ hostname: "127.0.0.1", port });
  const slow = await Deno.connect({ hostname: "127.0.0.1", port });
  let client: RawWebSocket | undefined;
  try {
    const started = performance.now();
    await slow.write(encoder.encode("GET /websockify HT"));
    // snf-vncauthproxy served one request at a time, so these two held the
    // viewer back until --connect-timeout (peers.md §1.10, W16).
    client = await upgrade(port);
    const viewer = await listener.acceptOne(timeout());
    assert.ok(performance.now() - started < 150, "the viewer got in at once");
    await viewer.write(Uint8Array.of(1));
    assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(1));

    // The handshake deadline ends both, with no answer.
    assert.equal(await readToEnd(idle), "");
    assert.equal(await readToEnd(slow), "");
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 150 && elapsed < 2000, `closed after ${elapsed} ms`);
    // The viewer is not bound by that deadline.
    await viewer.write(Uint8Array.of(2));
    assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(2));
    viewer.close();
  } finally {
    client?.close();
    idle.close();
    slow.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() drops a connection that sends its request line too slowly", async () => {
  const listener = await open({ handshakeTimeoutMs: 200 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(listener) });
  try {
    const started = performance.now();
    const request = encoder.encode(upgradeRequest());
    let dropped = false;
    for (let i = 0; i < request.length && !dropped; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      await conn.write(request.subarray(i, i + 1)).catch(() => (dropped = true));
    }
    assert.equal(await readToEnd(conn).catch(() => ""), "");
    assert.ok(performance.now() - started < 2000);
  } finally {
    conn.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() takes a request head sent one byte at a time", async () => {
  const listener = await open();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(listener) });
  try {
    for (const byte of encoder.encode(upgradeRequest("/x"))) await conn.write(Uint8Array.of(byte));
    const viewer = await listener.acceptOne(timeout());
    const head = new Uint8Array(4096);
    const n = await conn.read(head);
    assert.match(decoder.decode(head.subarray(0, n!)), /^HTTP\/1\.1 101 /);
    viewer.close();
  } finally {
    conn.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() serves wss with a self-signed certificate", async () => {
  await using certificate = await makeTestCertificate();
  const { cert, key } = certificate;
  const listener = await open({ tls: { cert, key }, handshakeTimeoutMs: 1000 });
  const port = portOf(listener);
  // A client that never starts TLS does not hold the viewer back.
  const idle = await Deno.connect({ hostname: "127.0.0.1", port });
  let client: RawWebSocket | undefined;
  try {
    const { socket, response } = await connectRawWebSocket({
      port,
      protocols: "binary",
      tls: { caCerts: [cert], hostname: "localhost" },
    });
    assert.equal(response.status, 101);
    assert.equal(response.headers.get("sec-websocket-protocol"), "binary");
    client = socket!;
    const viewer = await listener.acceptOne(timeout());
    await client.sendBinary(Uint8Array.of(1, 2));
    assert.deepStrictEqual(await readExact(viewer, 2), Uint8Array.of(1, 2));
    await viewer.write(Uint8Array.of(3));
    assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(3));
    await client.sendClose(1000, "bye");
    assert.equal(await viewer.read(new Uint8Array(1)), null);
    assert.deepStrictEqual(await client.readClose(), { code: 1000, reason: "" });
    // No check that `idle` is closed at the deadline: Deno closes a TLS
    // connection only once its handshake is over (denoland/deno#14547), so
    // the socket stays open until the peer sends something or goes away,
    // though the listener has dropped it.
  } finally {
    idle.close();
    client?.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() pings with pingIntervalMs and drops a viewer that never answers", async () => {
  const listener = await open({ pingIntervalMs: 100 });
  let client: RawWebSocket | undefined;
  try {
    client = await upgrade(portOf(listener));
    const viewer = await listener.acceptOne(timeout());
    const reading = viewer.read(new Uint8Array(1));
    assert.equal((await client.readFrame())?.opcode, OPCODE.ping);
    assert.equal((await client.readClose())?.code, 1001);
    assert.equal(await reading, null);
  } finally {
    client?.close();
    await listener.close();
  }
});

Deno.test("WebSocketListener frees the port for a new bind right after close()", async (t) => {
  await t.step("after a session", async () => {
    const listener = await open();
    const port = portOf(listener);
    const client = await upgrade(port);
    const viewer = await listener.acceptOne(timeout());
    await viewer.write(Uint8Array.of(1));
    await client.readBytes(1);
    viewer.close();
    assert.deepStrictEqual(await client.readClose(), {
      code: 1001,
      reason: "Server connection went away",
    });
    client.close();
    await listener.close();
    const again = await openWebSocketListener("127.0.0.1", port, {
      logger: recordingLogger().logger,
    });
    assert.equal(portOf(again), port);
    await again.close();
  });
  await t.step("with no viewer, ending connections in their handshake", async () => {
    const listener = await open();
    const port = portOf(listener);
    const idle = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      // Let the listener accept it before closing.
      await new Promise((resolve) => setTimeout(resolve, 20));
      const accepting = assert.rejects(listener.acceptOne(timeout()), Deno.errors.BadResource);
      await Promise.all([listener.close(), listener.close()]);
      await listener.close();
      await accepting;
      assert.ok(portIsFree(port));
      assert.equal(await readToEnd(idle), "");
    } finally {
      idle.close();
    }
  });
});

Deno.test("WebSocketListener.close() closes a winner not yet handed out, not one handed out", async () => {
  const listener = await open();
  const port = portOf(listener);
  const first = await upgrade(port);
  try {
    // Wait until the listener has the winner (the port closes then).
    while (!portIsFree(port)) await new Promise((resolve) => setTimeout(resolve, 5));
    await listener.close();
    assert.deepStrictEqual(await first.readClose(), { code: 1001, reason: "Server going away" });
  } finally {
    first.close();
  }

  const second = await open();
  const client = await upgrade(portOf(second));
  try {
    const viewer = await second.acceptOne(timeout());
    await second.close();
    await viewer.write(Uint8Array.of(5));
    assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(5));
    viewer.close();
  } finally {
    client.close();
  }
});

Deno.test("WebSocketListener.acceptOne() rejects with the signal's reason and frees the port", async () => {
  const listener = await open();
  const port = portOf(listener);
  try {
    const controller = new AbortController();
    const accepting = listener.acceptOne(controller.signal);
    const reason = new Error("stop waiting");
    controller.abort(reason);
    await assert.rejects(accepting, (error) => error === reason);
    assert.ok(portIsFree(port));
    await assert.rejects(
      listener.acceptOne(AbortSignal.abort(reason)),
      (error) => error === reason,
    );
  } finally {
    await listener.close();
  }
});

Deno.test("openWebSocketListener() rejects with AddrInUse when the port is taken", async () => {
  using holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (holder.addr as Deno.NetAddr).port;
  await assert.rejects(
    openWebSocketListener("127.0.0.1", port, { logger: recordingLogger().logger }),
    Deno.errors.AddrInUse,
  );
});

Deno.test("openWebSocketListener() on * serves IPv4 on one dual-stack socket", async () => {
  const listener = await open({}, "*");
  let client: RawWebSocket | undefined;
  try {
    assert.equal(listener.addresses.length, 1);
    client = await upgrade(portOf(listener));
    const viewer = await listener.acceptOne(timeout());
    viewer.close();
  } finally {
    client?.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() drops the idlest connections beyond maxPendingHandshakes, and the real upgrade still wins", async () => {
  const { logger, lines } = recordingLogger();
  // A long handshake deadline, so every close seen here is an eviction.
  const listener = await open({ logger, maxPendingHandshakes: 8, handshakeTimeoutMs: 60_000 });
  const port = portOf(listener);
  // One at a time, so the listener admits them in this order.
  using flood = await openIdleConnections(port, 50, { batch: 1 });
  let client: RawWebSocket | undefined;
  try {
    // The 42 idlest (the first connected) are closed for the newcomers.
    for (const conn of flood.conns.slice(0, 42)) {
      assert.deepStrictEqual(await readAll(conn), new Uint8Array(0));
    }
    client = await upgrade(port);
    const viewer = await listener.acceptOne(timeout());
    await viewer.write(Uint8Array.of(1));
    assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(1));
    viewer.close();
    const drops = lines.filter((line) => line.includes("WebSocket handshake cap of 8 reached"));
    assert.equal(drops.length, 42 + 1, "one drop per newcomer beyond the cap");
    assert.match(drops[0]!, /^WARNING .* from 127\.0\.0\.1:\d+, for 127\.0\.0\.1:\d+ \(/);
  } finally {
    client?.close();
    await listener.close();
  }
});
