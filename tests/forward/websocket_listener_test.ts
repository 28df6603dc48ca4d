import assert from "node:assert/strict";
import type { ClientListener } from "../../src/forward/client_listener.ts";
import { openWebSocketListener } from "../../src/forward/websocket_listener.ts";
import { readExact } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import { WebSocketDuplex } from "../../src/io/websocket_duplex.ts";
import type { Logger } from "../../src/log.ts";
import {
  connectRawWebSocket,
  OPCODE,
  rawHttpRequest,
  type RawWebSocket,
} from "../_util/raw_websocket.ts";
import { makeTestCertificate } from "../_util/tls.ts";

const SECOND_CLIENT = {
  code: 1001,
  reason: "Only a single connection allowed",
};

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

function portOf(listener: ClientListener): number {
  const address = listener.addresses[0]!;
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

function expectWebSocketDuplex(duplex: Duplex): WebSocketDuplex {
  assert.ok(duplex instanceof WebSocketDuplex);
  return duplex;
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

function timeout(): AbortSignal {
  return AbortSignal.timeout(10_000);
}

Deno.test("openWebSocketListener() upgrades on any path and relays bytes both ways", async () => {
  const { logger, lines } = recordingLogger();
  const listener = await openWebSocketListener("127.0.0.1", 0, { logger });
  let client: RawWebSocket | undefined;
  try {
    const port = portOf(listener);
    assert.deepStrictEqual(listener.addresses, [`127.0.0.1:${port}`]);
    client = await upgrade(port, { path: "/a/b?token=SECRET-TOKEN" });
    const viewer = await listener.acceptOne(timeout());
    assert.match(viewer.remoteAddress, /^127\.0\.0\.1:\d+$/);

    await viewer.write(Uint8Array.of(1, 2, 3));
    assert.deepStrictEqual(await client.readBytes(3), Uint8Array.of(1, 2, 3));
    await client.sendBinary(Uint8Array.of(4, 5));
    assert.deepStrictEqual(await readExact(viewer, 2), Uint8Array.of(4, 5));

    assert.ok(lines.some((line) => line.includes("/a/b")));
    assert.ok(lines.every((line) => !line.includes("SECRET-TOKEN")));
  } finally {
    const closing = listener.close();
    client?.close();
    await closing;
  }
});

Deno.test("openWebSocketListener() works with Deno's WebSocket client offering binary", async () => {
  const listener = await openWebSocketListener("127.0.0.1", 0, {
    logger: recordingLogger().logger,
  });
  const client = new WebSocket(
    `ws://127.0.0.1:${portOf(listener)}/websockify`,
    ["binary"],
  );
  client.binaryType = "arraybuffer";
  const clientClosed = Promise.withResolvers<void>();
  client.onclose = () => clientClosed.resolve();
  const clientOpened = Promise.withResolvers<void>();
  client.onopen = () => clientOpened.resolve();
  const message = Promise.withResolvers<Uint8Array>();
  client.onmessage = (event) => message.resolve(new Uint8Array(event.data));
  try {
    const viewer = await listener.acceptOne(timeout());
    await clientOpened.promise;
    assert.equal(client.protocol, "binary");
    client.send(new TextEncoder().encode("RFB"));
    assert.deepStrictEqual(
      new TextDecoder().decode(await readExact(viewer, 3)),
      "RFB",
    );
    await viewer.write(Uint8Array.of(9));
    assert.deepStrictEqual(await message.promise, Uint8Array.of(9));
  } finally {
    client.close();
    await clientClosed.promise;
    await listener.close();
  }
});

Deno.test("openWebSocketListener() picks sub-protocol binary when offered and accepts any offer", async (t) => {
  const table: [string | undefined, string | null][] = [
    [undefined, null],
    ["binary", "binary"],
    ["binary, base64", "binary"],
    ["base64", null],
  ];
  for (const [offer, answer] of table) {
    await t.step(`offer ${JSON.stringify(offer)}`, async () => {
      const listener = await openWebSocketListener("127.0.0.1", 0, {
        logger: recordingLogger().logger,
      });
      let client: RawWebSocket | undefined;
      try {
        client = await upgrade(portOf(listener), {
          ...(offer !== undefined ? { protocols: offer } : {}),
        });
        assert.equal(
          client.response.headers.get("sec-websocket-protocol"),
          answer,
        );
        const viewer = await listener.acceptOne(timeout());
        await viewer.write(Uint8Array.of(42));
        assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(42));
      } finally {
        const closing = listener.close();
        client?.close();
        await closing;
      }
    });
  }
});

Deno.test("openWebSocketListener() closes a second WebSocket with 1001 and keeps the first", async () => {
  const { logger, lines } = recordingLogger();
  const listener = await openWebSocketListener("127.0.0.1", 0, { logger });
  let first: RawWebSocket | undefined;
  let second: RawWebSocket | undefined;
  try {
    const port = portOf(listener);
    first = await upgrade(port);
    const viewer = await listener.acceptOne(timeout());
    second = await upgrade(port);
    assert.deepStrictEqual(await second.readClose(), SECOND_CLIENT);
    assert.ok(lines.some((line) => line.includes("Refused a second")));

    await first.sendBinary(Uint8Array.of(7));
    assert.deepStrictEqual(await readExact(viewer, 1), Uint8Array.of(7));
  } finally {
    const closing = listener.close();
    first?.close();
    second?.close();
    await closing;
  }
});

Deno.test("openWebSocketListener() answers other HTTP requests with a short 4xx and stays available", async (t) => {
  const listener = await openWebSocketListener("127.0.0.1", 0, {
    logger: recordingLogger().logger,
  });
  let client: RawWebSocket | undefined;
  try {
    const port = portOf(listener);
    const plain = (method: string) =>
      `${method} /websockify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
    await t.step("plain GET gets 400", async () => {
      const response = await rawHttpRequest(port, plain("GET"));
      assert.equal(response.status, 400);
      assert.equal(
        response.body,
        "This port serves one VNC WebSocket console\n",
      );
    });
    await t.step("HEAD gets 400", async () => {
      assert.equal((await rawHttpRequest(port, plain("HEAD"))).status, 400);
    });
    await t.step("POST gets 405 with Allow: GET", async () => {
      const response = await rawHttpRequest(port, plain("POST"));
      assert.equal(response.status, 405);
      assert.equal(response.headers.get("allow"), "GET");
    });
    const badUpgrades: [string, Record<string, string | null>][] = [
      ["no Sec-WebSocket-Key", { "sec-websocket-key": null }],
      ["no Connection: upgrade", { connection: "keep-alive" }],
      ["a short Sec-WebSocket-Key", { "sec-websocket-key": "c2hvcnQ=" }],
    ];
    for (const [name, headers] of badUpgrades) {
      await t.step(`upgrade with ${name} gets 400`, async () => {
        const { socket, response } = await connectRawWebSocket({
          port,
          headers,
        });
        socket?.close();
        assert.equal(response.status, 400);
      });
    }
    await t.step("upgrade with Sec-WebSocket-Version 8 gets 426", async () => {
      // RFC 6455 §4.4: name the version we speak.
      const { socket, response } = await connectRawWebSocket({
        port,
        headers: { "sec-websocket-version": "8" },
      });
      socket?.close();
      assert.equal(response.status, 426);
      assert.equal(response.headers.get("sec-websocket-version"), "13");
    });
    await t.step("a viewer still gets in afterwards", async () => {
      client = await upgrade(port);
      await listener.acceptOne(timeout());
    });
  } finally {
    const closing = listener.close();
    client?.close();
    await closing;
  }
});

Deno.test("openWebSocketListener() does not let idle connections opened first delay the viewer", async () => {
  const listener = await openWebSocketListener("127.0.0.1", 0, {
    logger: recordingLogger().logger,
  });
  const port = portOf(listener);
  const idle = await Deno.connect({ hostname: "127.0.0.1", port });
  const partial = await Deno.connect({ hostname: "127.0.0.1", port });
  let client: RawWebSocket | undefined;
  try {
    await partial.write(new TextEncoder().encode("GET /websockify HT"));
    // snf-vncauthproxy served one request at a time, so these two held the
    // viewer back until --connect-timeout (peers.md §1.10, W16).
    client = await upgrade(port);
    const viewer = await listener.acceptOne(timeout());
    await viewer.write(Uint8Array.of(1));
    assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(1));
  } finally {
    const closing = listener.close();
    client?.close();
    await closing;
    idle.close();
    partial.close();
  }
});

Deno.test("WebSocketListener.acceptOne() rejects with the signal's reason and frees the port", async () => {
  const listener = await openWebSocketListener("127.0.0.1", 0, {
    logger: recordingLogger().logger,
  });
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

Deno.test("WebSocketListener.close() is idempotent, frees the port and fails a waiting acceptOne()", async () => {
  const listener = await openWebSocketListener("127.0.0.1", 0, {
    logger: recordingLogger().logger,
  });
  const port = portOf(listener);
  const accepting = assert.rejects(
    listener.acceptOne(timeout()),
    Deno.errors.BadResource,
  );
  await Promise.all([listener.close(), listener.close()]);
  await listener.close();
  await accepting;
  assert.ok(portIsFree(port));
});

Deno.test("openWebSocketListener() rejects with AddrInUse when the port is taken", async () => {
  using holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (holder.addr as Deno.NetAddr).port;
  await assert.rejects(
    openWebSocketListener("127.0.0.1", port, {
      logger: recordingLogger().logger,
    }),
    Deno.errors.AddrInUse,
  );
});

Deno.test("openWebSocketListener() on * serves IPv4 on one dual-stack socket", async () => {
  const listener = await openWebSocketListener("*", 0, {
    logger: recordingLogger().logger,
  });
  let client: RawWebSocket | undefined;
  try {
    assert.equal(listener.addresses.length, 1);
    client = await upgrade(portOf(listener));
    await listener.acceptOne(timeout());
  } finally {
    const closing = listener.close();
    client?.close();
    await closing;
  }
});

Deno.test("the viewer's close frees the port; close() after acceptOne() closes the viewer", async (t) => {
  await t.step("viewer closes first", async () => {
    const listener = await openWebSocketListener("127.0.0.1", 0, {
      logger: recordingLogger().logger,
    });
    const port = portOf(listener);
    let client: RawWebSocket | undefined;
    try {
      client = await upgrade(port);
      const viewer = expectWebSocketDuplex(
        await listener.acceptOne(timeout()),
      );
      await client.sendClose(1000, "bye");
      assert.deepStrictEqual(await client.readClose(), {
        code: 1000,
        reason: "bye",
      });
      await viewer.closed;
      assert.deepStrictEqual(viewer.peerClose, { code: 1000, reason: "bye" });
      assert.ok(portIsFree(port));
    } finally {
      client?.close();
      await listener.close();
    }
  });
  await t.step("listener closes first", async () => {
    const listener = await openWebSocketListener("127.0.0.1", 0, {
      logger: recordingLogger().logger,
    });
    const port = portOf(listener);
    let client: RawWebSocket | undefined;
    try {
      client = await upgrade(port);
      const viewer = await listener.acceptOne(timeout());
      const closing = listener.close();
      assert.deepStrictEqual(await client.readClose(), {
        code: 1001,
        reason: "Server going away",
      });
      client.close();
      await closing;
      assert.equal(await viewer.read(new Uint8Array(1)), null);
      assert.ok(portIsFree(port));
    } finally {
      client?.close();
      await listener.close();
    }
  });
});

Deno.test("openWebSocketListener() pings with pingIntervalMs and drops a viewer that never answers", async () => {
  const listener = await openWebSocketListener("127.0.0.1", 0, {
    logger: recordingLogger().logger,
    pingIntervalMs: 100,
  });
  let client: RawWebSocket | undefined;
  try {
    client = await upgrade(portOf(listener));
    const viewer = expectWebSocketDuplex(await listener.acceptOne(timeout()));
    assert.equal((await client.readFrame())?.opcode, OPCODE.ping);
    assert.equal((await client.readClose())?.code, 1001);
    client.close();
    await viewer.closed;
    assert.equal(await viewer.read(new Uint8Array(1)), null);
  } finally {
    client?.close();
    await listener.close();
  }
});

Deno.test("openWebSocketListener() serves wss with a self-signed certificate", async () => {
  await using certificate = await makeTestCertificate();
  const { cert, key } = certificate;
  const listener = await openWebSocketListener("127.0.0.1", 0, {
    logger: recordingLogger().logger,
    tls: { cert, key },
  });
  let client: RawWebSocket | undefined;
  try {
    const { socket, response } = await connectRawWebSocket({
      port: portOf(listener),
      protocols: "binary",
      tls: { caCerts: [cert], hostname: "localhost" },
    });
    assert.equal(response.status, 101);
    client = socket!;
    const viewer = await listener.acceptOne(timeout());
    await client.sendBinary(Uint8Array.of(1, 2));
    assert.deepStrictEqual(await readExact(viewer, 2), Uint8Array.of(1, 2));
    await viewer.write(Uint8Array.of(3));
    assert.deepStrictEqual(await client.readBytes(1), Uint8Array.of(3));
  } finally {
    const closing = listener.close();
    client?.close();
    await closing;
  }
});
