/**
 * WebSocket framing with header room: the relay reads a payload past
 * `writeRoom` bytes, the duplex writes the frame header in front of it and
 * sends both in one write; and word-wise unmasking at every alignment.
 */
import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import { relay } from "../../src/io/relay.ts";
import { WebSocketDuplex } from "../../src/io/websocket_duplex.ts";
import { OPCODE, unmask } from "../../src/io/websocket_frames.ts";
import { tcpPair } from "../_util/loopback.ts";
import { encodeFrame } from "../_util/raw_websocket.ts";

/** The sizes where the length form changes (RFC 6455 §5.2), and around them. */
const BOUNDARY_SIZES = [1, 124, 125, 126, 127, 65534, 65535, 65536, 65537, 300_000];

/** An inner `Duplex` that keeps a copy of every write and never sends. */
function recorder() {
  const writes: Uint8Array[] = [];
  const ended = Promise.withResolvers<null>();
  const duplex: Duplex = {
    remoteAddress: "192.0.2.7:1",
    read: () => ended.promise,
    write(data: Uint8Array): Promise<void> {
      writes.push(data.slice());
      return Promise.resolve();
    },
    close: () => ended.resolve(null),
  };
  return { duplex, writes };
}

/** Parses one unmasked server frame: FIN, opcode, payload, and the header's length. */
function parseServerFrame(bytes: Uint8Array) {
  assert.equal(bytes[1]! & 0x80, 0, "server frames are not masked");
  let length = bytes[1]! & 0x7f;
  let header = 2;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (length === 126) {
    length = view.getUint16(2);
    header = 4;
  } else if (length === 127) {
    length = Number(view.getBigUint64(2));
    header = 10;
  }
  return {
    fin: (bytes[0]! & 0x80) !== 0,
    opcode: bytes[0]! & 0x0f,
    header,
    payload: bytes.subarray(header, header + length),
    rest: bytes.length - header - length,
  };
}

function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

Deno.test("WebSocketDuplex.writeAfterRoom() sends header and payload in one write, shortest form, at every boundary", async () => {
  const { duplex: inner, writes } = recorder();
  const ws = new WebSocketDuplex(inner);
  assert.equal(ws.writeRoom, 10, "room for the longest server header");
  for (const size of BOUNDARY_SIZES) {
    const room = ws.writeRoom;
    const buffer = new Uint8Array(room + size);
    buffer.fill(0xee, 0, room);
    const payload = pattern(size, size);
    buffer.set(payload, room);
    writes.length = 0;
    await ws.writeAfterRoom(buffer, room, size);
    assert.equal(writes.length, 1, `size ${size}: one write`);
    const frame = parseServerFrame(writes[0]!);
    assert.equal(frame.header, size < 126 ? 2 : size < 65536 ? 4 : 10, `size ${size}`);
    assert.equal(frame.fin, true);
    assert.equal(frame.opcode, OPCODE.binary);
    assert.equal(frame.rest, 0);
    assert.deepEqual(frame.payload, payload, `size ${size}`);
    // Only the header's own bytes of the room were touched.
    assert.ok(buffer.subarray(0, room - frame.header).every((b) => b === 0xee));
  }
  ws.close();
  await ws.closed;
});

Deno.test("WebSocketDuplex.writeAfterRoom() with too little room still sends the right frame", async () => {
  const { duplex: inner, writes } = recorder();
  const ws = new WebSocketDuplex(inner);
  for (const [room, size] of [[0, 5], [2, 126], [3, 65536], [9, 70_000]] as const) {
    const buffer = new Uint8Array(room + size);
    const payload = pattern(size, room);
    buffer.set(payload, room);
    writes.length = 0;
    await ws.writeAfterRoom(buffer, room, size);
    const wire = new Uint8Array(writes.reduce((sum, w) => sum + w.length, 0));
    let at = 0;
    for (const write of writes) wire.set(write, (at += write.length) - write.length);
    const frame = parseServerFrame(wire);
    assert.equal(frame.rest, 0);
    assert.deepEqual(frame.payload, payload, `room ${room}, size ${size}`);
  }
  ws.close();
  await ws.closed;
});

Deno.test("WebSocketDuplex.writeAfterRoom() under the base64 sub-protocol sends base64 text", async () => {
  const { duplex: inner, writes } = recorder();
  const ws = new WebSocketDuplex(inner, { base64: true });
  const buffer = new Uint8Array(10 + 3);
  buffer.set([1, 2, 3], 10);
  await ws.writeAfterRoom(buffer, 10, 3);
  const frame = parseServerFrame(writes[0]!);
  assert.equal(frame.opcode, OPCODE.text);
  assert.equal(new TextDecoder().decode(frame.payload), "AQID");
  ws.close();
  await ws.closed;
});

/** Reads one server frame off a connection. */
async function readServerFrame(conn: Duplex) {
  const start = await readExact(conn, 2);
  let length = start[1]! & 0x7f;
  if (length === 126) {
    length = new DataView((await readExact(conn, 2)).buffer).getUint16(0);
  } else if (length === 127) {
    length = Number(new DataView((await readExact(conn, 8)).buffer).getBigUint64(0));
  }
  return { opcode: start[0]! & 0x0f, payload: await readExact(conn, length) };
}

Deno.test("relay() into a WebSocket: one write per frame, every size class, and masked fragmented frames back", async () => {
  using server = await tcpPair();
  using viewer = await tcpPair();
  // Counts the writes that reach the viewer's connection.
  let writes = 0;
  const counted: Duplex = {
    remoteAddress: viewer.server.remoteAddress,
    read: (buffer) => viewer.server.read(buffer),
    write: (data) => {
      writes++;
      return viewer.server.write(data);
    },
    close: () => viewer.server.close(),
  };
  const ws = new WebSocketDuplex(counted);
  const running = relay(ws, server.server);

  // Server to viewer: each chunk arrives as frames carrying exactly its bytes.
  for (const size of BOUNDARY_SIZES) {
    const data = pattern(size, 7);
    writes = 0;
    let frames = 0;
    const received = new Uint8Array(size);
    let got = 0;
    await Promise.all([
      server.client.write(data),
      (async () => {
        while (got < size) {
          const frame = await readServerFrame(viewer.client);
          assert.equal(frame.opcode, OPCODE.binary);
          received.set(frame.payload, got);
          got += frame.payload.length;
          frames++;
        }
      })(),
    ]);
    assert.deepEqual(received, data, `size ${size}`);
    assert.equal(writes, frames, `size ${size}: one write per frame (${frames} frames)`);
  }

  // Viewer to server: one message in masked fragments of every size class.
  const sizes = [125, 126, 65535, 65536, 3];
  const message = pattern(sizes.reduce((a, b) => a + b, 0), 3);
  let at = 0;
  const frames = sizes.map((size, i) => {
    const opcode = i === 0 ? OPCODE.binary : OPCODE.continuation;
    const frame = encodeFrame(opcode, message.subarray(at, at + size), i === sizes.length - 1);
    at += size;
    return frame;
  });
  const [received] = await Promise.all([
    readExact(server.client, message.length),
    (async () => {
      for (const frame of frames) await viewer.client.write(frame);
    })(),
  ]);
  assert.deepEqual(received, message);
  server.client.close();
  const result = await running;
  assert.equal(result.bToA, BOUNDARY_SIZES.reduce((a, b) => a + b, 0));
  assert.equal(result.aToB, message.length);
});

Deno.test("unmask() at every alignment, length and key phase equals the byte-wise XOR", () => {
  const key = Uint8Array.of(0x12, 0x9a, 0xf0, 0x3c);
  const lengths = [...Array.from({ length: 72 }, (_, i) => i), 1023, 1024, 1025, 65539];
  for (const length of lengths) {
    const payload = pattern(length, length);
    for (let alignment = 0; alignment < 8; alignment++) {
      for (let phase = 0; phase < 4; phase++) {
        const memory = new Uint8Array(alignment + length + 8).fill(0x55);
        const data = memory.subarray(alignment, alignment + length);
        data.set(payload);
        unmask(data, key, phase);
        for (let i = 0; i < length; i++) {
          if (data[i] !== (payload[i]! ^ key[(phase + i) & 3]!)) {
            assert.fail(`length ${length}, alignment ${alignment}, phase ${phase}: byte ${i}`);
          }
        }
        // Nothing around the data changed.
        assert.ok(memory.subarray(0, alignment).every((b) => b === 0x55));
        assert.ok(memory.subarray(alignment + length).every((b) => b === 0x55));
        // Unmasking twice gives the payload back.
        unmask(data, key, phase);
        assert.deepEqual(data, payload);
      }
    }
  }
});
