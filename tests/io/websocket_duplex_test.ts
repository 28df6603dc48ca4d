import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import { WebSocketDuplex, type WebSocketDuplexOptions } from "../../src/io/websocket_duplex.ts";
import { connectRawWebSocket, OPCODE, type RawWebSocket } from "../_util/raw_websocket.ts";

const encoder = new TextEncoder();

/**
 * Runs `body` with a `WebSocketDuplex` on a real loopback server socket and
 * a raw client connected to it; closes everything afterwards.
 */
async function withDuplex(
  options: WebSocketDuplexOptions,
  body: (duplex: WebSocketDuplex, client: RawWebSocket) => Promise<void>,
): Promise<void> {
  const opened = Promise.withResolvers<WebSocketDuplex>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => {
      const { socket, response } = Deno.upgradeWebSocket(request, {
        idleTimeout: 0,
      });
      socket.addEventListener(
        "open",
        () => opened.resolve(new WebSocketDuplex(socket, options)),
        { once: true },
      );
      return response;
    },
  );
  let client: RawWebSocket | undefined;
  let duplex: WebSocketDuplex | undefined;
  try {
    const { socket, response } = await connectRawWebSocket({
      port: server.addr.port,
    });
    assert.deepStrictEqual(response.status, 101);
    client = socket!;
    duplex = await opened.promise;
    await body(duplex, client);
  } finally {
    duplex?.close();
    client?.close();
    await duplex?.closed;
    await server.shutdown();
  }
}

Deno.test("WebSocketDuplex.write() sends each write as one binary message", async () => {
  await withDuplex({}, async (duplex, client) => {
    const buffer = Uint8Array.of(1, 2, 3);
    await duplex.write(buffer);
    buffer.fill(9); // callers reuse their buffers
    await duplex.write(buffer);
    const big = new Uint8Array(100_000).map((_, i) => i % 251);
    await duplex.write(big);

    const first = await client.readFrame();
    assert.deepStrictEqual(first?.opcode, OPCODE.binary);
    assert.deepStrictEqual(first?.payload, Uint8Array.of(1, 2, 3));
    assert.deepStrictEqual((await client.readFrame())?.payload, Uint8Array.of(9, 9, 9));
    const third = await client.readFrame();
    assert.deepStrictEqual(third?.opcode, OPCODE.binary);
    assert.deepStrictEqual(third?.payload, big);
  });
});

Deno.test("WebSocketDuplex.read() reassembles 1-byte binary frames", async () => {
  await withDuplex({}, async (duplex, client) => {
    const version = encoder.encode("RFB 003.008\n");
    for (const byte of version) await client.sendBinary(Uint8Array.of(byte));
    assert.deepStrictEqual(await readExact(duplex, version.length), version);
  });
});

Deno.test("WebSocketDuplex.read() takes text frames as their UTF-8 bytes", async () => {
  await withDuplex({}, async (duplex, client) => {
    await client.sendText("h\u00e9llo");
    assert.deepStrictEqual(await readExact(duplex, 6), encoder.encode("h\u00e9llo"));
  });
});

Deno.test("WebSocketDuplex.read() returns at most the buffer's size and keeps the rest", async () => {
  await withDuplex({}, async (duplex, client) => {
    await client.sendBinary(Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
    const small = new Uint8Array(3);
    assert.deepStrictEqual(await duplex.read(small), 3);
    assert.deepStrictEqual(small, Uint8Array.of(0, 1, 2));
    assert.deepStrictEqual(await duplex.read(new Uint8Array(0)), 0);
    const rest = new Uint8Array(100);
    assert.deepStrictEqual(await duplex.read(rest), 7);
    assert.deepStrictEqual(rest.subarray(0, 7), Uint8Array.of(3, 4, 5, 6, 7, 8, 9));
  });
});

Deno.test("WebSocketDuplex delivers queued bytes after the viewer closes, then ends", async () => {
  await withDuplex({}, async (duplex, client) => {
    await client.sendBinary(Uint8Array.of(1, 2, 3));
    await client.sendClose(1000, "bye");
    assert.deepStrictEqual(await client.readClose(), { code: 1000, reason: "bye" });
    await duplex.closed;
    assert.deepStrictEqual(duplex.peerClose, { code: 1000, reason: "bye" });
    assert.deepStrictEqual(await readExact(duplex, 3), Uint8Array.of(1, 2, 3));
    assert.deepStrictEqual(await duplex.read(new Uint8Array(8)), null);
    await assert.rejects(
      () => duplex.write(Uint8Array.of(1)),
      Deno.errors.BadResource,
    );
  });
});

Deno.test("WebSocketDuplex.close() ends pending reads, rejects writes and sends its code once", async () => {
  await withDuplex({}, async (duplex, client) => {
    const pending = duplex.read(new Uint8Array(8));
    duplex.close(4000, "done");
    duplex.close(4001, "again");
    assert.deepStrictEqual(await pending, null);
    assert.deepStrictEqual(await duplex.read(new Uint8Array(8)), null);
    await assert.rejects(
      () => duplex.write(Uint8Array.of(1)),
      Deno.errors.BadResource,
    );
    assert.deepStrictEqual(await client.readClose(), { code: 4000, reason: "done" });
    assert.deepStrictEqual(duplex.peerClose, undefined);
  });
});

Deno.test("WebSocketDuplex closes with 1009 when the receive queue overflows", async () => {
  await withDuplex({ maxQueuedBytes: 1000 }, async (duplex, client) => {
    await client.sendBinary(new Uint8Array(600));
    await client.sendBinary(new Uint8Array(600));
    assert.deepStrictEqual(await client.readClose(), {
      code: 1009,
      reason: "Receive queue full",
    });
    await assert.rejects(() => duplex.read(new Uint8Array(8)), RangeError);
    assert.deepStrictEqual(duplex.bufferedBytes, 0);
  });
});

Deno.test("WebSocketDuplex.write() waits while a viewer that stops reading has too much buffered", async () => {
  const bound = 256 * 1024;
  const chunk = new Uint8Array(64 * 1024).fill(7);
  await withDuplex({ maxBufferedBytes: bound }, async (duplex, client) => {
    // The viewer reads nothing: once the kernel's socket buffers are full,
    // bufferedAmount climbs past the bound and a write stays pending.
    let written = 0;
    let stuck: Promise<void> | undefined;
    for (let i = 0; i < 4096 && stuck === undefined; i++) {
      const write = duplex.write(chunk);
      written += chunk.length;
      assert.ok(duplex.bufferedBytes <= bound + chunk.length);
      // A write only waits while more than the bound is buffered.
      if (duplex.bufferedBytes <= bound) {
        await write;
        continue;
      }
      let settled = false;
      write.then(() => settled = true, () => {});
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (!settled && duplex.bufferedBytes > bound) stuck = write;
      else await write;
    }
    assert.ok(stuck !== undefined, "no write ever waited");
    // It keeps waiting, because of the buffer, and the buffer stays bounded.
    const held = duplex.bufferedBytes;
    assert.ok(held > bound && held <= bound + chunk.length);
    let settled = false;
    stuck.then(() => settled = true);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(settled, false);
    assert.equal(duplex.bufferedBytes, held);

    // Once the viewer reads, the pending write completes and every byte
    // written arrives.
    const received = await client.readBytes(written);
    await stuck;
    assert.deepStrictEqual(received.length, written);
    assert.ok(received.every((byte) => byte === 7));
  });
});

Deno.test("WebSocketDuplex.close() ends a write waiting for the buffer to drain", async () => {
  const chunk = new Uint8Array(64 * 1024);
  await withDuplex({ maxBufferedBytes: 0 }, async (duplex) => {
    // With a zero bound every write waits until its bytes left the process.
    let stuck: Promise<void> | undefined;
    for (let i = 0; i < 4096 && stuck === undefined; i++) {
      const write = duplex.write(chunk);
      let settled = false;
      write.then(() => settled = true, () => {});
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (!settled && duplex.bufferedBytes > 0) stuck = write;
      else await write;
    }
    assert.ok(stuck !== undefined, "no write ever waited");
    duplex.close();
    await assert.rejects(() => stuck!, Deno.errors.BadResource);
  });
});
