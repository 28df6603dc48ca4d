import assert from "node:assert/strict";
import { readExact, UnexpectedEofError } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import { OPCODE, WebSocketProtocolError } from "../../src/io/websocket_frames.ts";
import { WebSocketDuplex, type WebSocketDuplexOptions } from "../../src/io/websocket_duplex.ts";
import { encodeFrame } from "../_util/raw_websocket.ts";
import { tcpPair } from "../_util/loopback.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One frame from the server. */
interface Frame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly payload: Uint8Array;
}

/** The viewer's side: raw masked frames out, unmasked server frames in. */
class TestClient {
  readonly conn: Duplex;

  constructor(conn: Duplex) {
    this.conn = conn;
  }

  send(bytes: Uint8Array): Promise<void> {
    return this.conn.write(bytes);
  }

  sendFrame(opcode: number, payload: Uint8Array, fin = true): Promise<void> {
    return this.conn.write(encodeFrame(opcode, payload, fin));
  }

  sendClose(code: number, reason = ""): Promise<void> {
    return this.sendFrame(OPCODE.close, closePayload(code, reason));
  }

  /** The next server frame, or `null` at a clean end of the connection. */
  async readFrame(): Promise<Frame | null> {
    const first = new Uint8Array(1);
    if (await this.conn.read(first) === null) return null;
    const second = (await readExact(this.conn, 1))[0]!;
    assert.equal(second & 0x80, 0, "server frames are not masked");
    let length = second & 0x7f;
    if (length === 126) {
      length = new DataView((await readExact(this.conn, 2)).buffer).getUint16(0);
    } else if (length === 127) {
      length = Number(new DataView((await readExact(this.conn, 8)).buffer).getBigUint64(0));
    }
    return {
      fin: (first[0]! & 0x80) !== 0,
      opcode: first[0]! & 0x0f,
      payload: await readExact(this.conn, length),
    };
  }

  /** Reads frames up to a close frame; its code and reason. */
  async readClose(): Promise<{ code: number; reason: string } | null> {
    while (true) {
      const frame = await this.readFrame();
      if (frame === null) return null;
      if (frame.opcode === OPCODE.close) return parseClose(frame.payload);
    }
  }
}

function closePayload(code: number, reason: string): Uint8Array {
  const text = encoder.encode(reason);
  const payload = new Uint8Array(2 + text.length);
  new DataView(payload.buffer).setUint16(0, code);
  payload.set(text, 2);
  return payload;
}

function parseClose(payload: Uint8Array): { code: number; reason: string } {
  if (payload.length === 0) return { code: 1005, reason: "" };
  return {
    code: new DataView(payload.buffer, payload.byteOffset).getUint16(0),
    reason: decoder.decode(payload.subarray(2)),
  };
}

/**
 * Runs `body` with a `WebSocketDuplex` on the server end of a real
 * loopback TCP pair and a raw client on the other; closes both afterwards.
 */
async function withDuplex(
  options: WebSocketDuplexOptions,
  body: (duplex: WebSocketDuplex, client: TestClient) => Promise<void>,
): Promise<void> {
  using pair = await tcpPair();
  const duplex = new WebSocketDuplex(pair.server, options);
  try {
    await body(duplex, new TestClient(pair.client));
  } finally {
    duplex.close();
    pair.client.close();
    await duplex.closed;
  }
}

Deno.test("WebSocketDuplex.read() reassembles 1-byte frames sent one at a time", async () => {
  await withDuplex({}, async (duplex, client) => {
    const message = encoder.encode("RFB 003.008\n");
    const reading = readExact(duplex, message.length);
    for (const byte of message) await client.sendFrame(OPCODE.binary, Uint8Array.of(byte));
    assert.deepStrictEqual(await reading, message);
  });
});

Deno.test("WebSocketDuplex.read() takes a frame split across TCP writes", async () => {
  await withDuplex({}, async (duplex, client) => {
    const payload = crypto.getRandomValues(new Uint8Array(300));
    const frame = encodeFrame(OPCODE.binary, payload);
    const headerLength = frame.length - payload.length;
    // The header one byte at a time, then a few payload bytes: the read
    // returns what has arrived, unmasked.
    for (let i = 0; i < headerLength; i++) await client.send(frame.subarray(i, i + 1));
    await client.send(frame.subarray(headerLength, headerLength + 5));
    const buffer = new Uint8Array(1000);
    const n = await duplex.read(buffer);
    assert.ok(n !== null && n >= 1 && n <= 5, `read ${n}`);
    await client.send(frame.subarray(headerLength + 5));
    const rest = await readExact(duplex, payload.length - n);
    assert.deepStrictEqual(buffer.subarray(0, n), payload.subarray(0, n));
    assert.deepStrictEqual(rest, payload.subarray(n));
  });
});

Deno.test("WebSocketDuplex.read() returns one frame's bytes at most and never reads ahead", async () => {
  await withDuplex({}, async (duplex, client) => {
    const frames = [
      encodeFrame(OPCODE.binary, Uint8Array.of(1, 2, 3)),
      encodeFrame(OPCODE.binary, Uint8Array.of(4, 5, 6)),
    ];
    await client.send(Uint8Array.from([...frames[0]!, ...frames[1]!]));
    const buffer = new Uint8Array(100);
    assert.equal(await duplex.read(buffer), 3);
    assert.deepStrictEqual(buffer.subarray(0, 3), Uint8Array.of(1, 2, 3));
    // Exact reads across frame boundaries, e.g. a handshake's fixed lengths.
    assert.deepStrictEqual(await readExact(duplex, 2), Uint8Array.of(4, 5));
    assert.deepStrictEqual(await readExact(duplex, 1), Uint8Array.of(6));
  });
});

Deno.test("WebSocketDuplex.read() takes text, fragmented and empty frames as plain bytes", async () => {
  await withDuplex({}, async (duplex, client) => {
    await client.sendFrame(OPCODE.text, encoder.encode("ab"), false);
    await client.sendFrame(OPCODE.continuation, new Uint8Array(0), false);
    await client.sendFrame(OPCODE.continuation, encoder.encode("c"), true);
    await client.sendFrame(OPCODE.binary, new Uint8Array(0));
    await client.sendFrame(OPCODE.text, encoder.encode("é"));
    assert.equal(decoder.decode(await readExact(duplex, 5)), "abcé");
    assert.equal(await duplex.read(new Uint8Array(0)), 0);
  });
});

Deno.test("WebSocketDuplex answers a ping with a pong carrying the same payload", async () => {
  await withDuplex({}, async (duplex, client) => {
    await client.sendFrame(OPCODE.ping, encoder.encode("are you there"));
    await client.sendFrame(OPCODE.pong, encoder.encode("unsolicited"));
    await client.sendFrame(OPCODE.binary, Uint8Array.of(7));
    assert.deepStrictEqual(await readExact(duplex, 1), Uint8Array.of(7));
    const pong = await client.readFrame();
    assert.equal(pong?.opcode, OPCODE.pong);
    assert.equal(decoder.decode(pong?.payload), "are you there");
  });
});

Deno.test("WebSocketDuplex answers the viewer's close frame and ends the stream", async () => {
  await withDuplex({}, async (duplex, client) => {
    await client.sendClose(1000, "bye");
    assert.equal(await duplex.read(new Uint8Array(10)), null);
    assert.deepStrictEqual(duplex.peerClose, { code: 1000, reason: "bye" });
    // RFC 6455 §5.5.1: the code is echoed, then the server closes TCP.
    assert.deepStrictEqual(await client.readClose(), { code: 1000, reason: "" });
    assert.equal(await client.readFrame(), null);
    await duplex.closed;
    assert.equal(await duplex.read(new Uint8Array(10)), null);
    await assert.rejects(duplex.write(Uint8Array.of(1)), Deno.errors.BadResource);
  });
});

Deno.test("WebSocketDuplex answers an empty close frame with an empty one", async () => {
  await withDuplex({}, async (duplex, client) => {
    await client.sendFrame(OPCODE.close, new Uint8Array(0));
    assert.equal(await duplex.read(new Uint8Array(10)), null);
    assert.deepStrictEqual(duplex.peerClose, { code: 1005, reason: "" });
    const frame = await client.readFrame();
    assert.equal(frame?.opcode, OPCODE.close);
    assert.equal(frame?.payload.length, 0);
  });
});

Deno.test("WebSocketDuplex.close() sends one close frame, ends a pending read, is idempotent", async () => {
  await withDuplex({}, async (duplex, client) => {
    const reading = duplex.read(new Uint8Array(10));
    duplex.close(1001, "Server going away");
    duplex.close(1000, "again");
    assert.equal(await reading, null);
    assert.deepStrictEqual(await client.readFrame(), {
      fin: true,
      opcode: OPCODE.close,
      payload: closePayload(1001, "Server going away"),
    });
    assert.equal(await client.readFrame(), null);
    await duplex.closed;
    await assert.rejects(duplex.write(Uint8Array.of(1)), Deno.errors.BadResource);
  });
});

Deno.test("WebSocketDuplex.close() cuts a long reason to 123 bytes of valid UTF-8", async () => {
  await withDuplex({}, async (duplex, client) => {
    duplex.close(1000, "é".repeat(100));
    const close = await client.readClose();
    assert.equal(close?.reason, "é".repeat(61));
  });
});

Deno.test("WebSocketDuplex fails the connection on protocol errors with the right code", async (t) => {
  const unmasked = Uint8Array.of(0x82, 1, 42);
  const table: [string, Uint8Array[], number][] = [
    ["an unmasked frame", [unmasked], 1002],
    ["RSV bits", [Uint8Array.of(0xc2, 0x80, 0, 0, 0, 0)], 1002],
    ["an unknown opcode", [Uint8Array.of(0x83, 0x80, 0, 0, 0, 0)], 1002],
    [
      "a continuation without a message",
      [encodeFrame(OPCODE.continuation, Uint8Array.of(1))],
      1002,
    ],
    [
      "a new message inside a fragmented one",
      [
        encodeFrame(OPCODE.binary, Uint8Array.of(1), false),
        encodeFrame(OPCODE.binary, Uint8Array.of(2)),
      ],
      1002,
    ],
    ["a 126-byte ping", [encodeFrame(OPCODE.ping, new Uint8Array(126))], 1002],
    ["a 1-byte close payload", [encodeFrame(OPCODE.close, Uint8Array.of(3))], 1002],
    ["close code 1005", [encodeFrame(OPCODE.close, closePayload(1005, ""))], 1002],
    ["close code 999", [encodeFrame(OPCODE.close, closePayload(999, ""))], 1002],
    [
      "a close reason that is not UTF-8",
      [encodeFrame(OPCODE.close, Uint8Array.of(3, 232, 0xff))],
      1007,
    ],
    [
      "a length of 2^63",
      [Uint8Array.of(0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4)],
      1009,
    ],
  ];
  for (const [name, frames, code] of table) {
    await t.step(name, async () => {
      await withDuplex({}, async (duplex, client) => {
        // Whatever came before the bad frame is still delivered.
        await client.sendFrame(OPCODE.binary, Uint8Array.of(9));
        for (const frame of frames) await client.send(frame);
        const received: number[] = [];
        const result = await (async () => {
          const buffer = new Uint8Array(10);
          try {
            for (let n; (n = await duplex.read(buffer)) !== null;) {
              received.push(...buffer.subarray(0, n));
            }
            return null;
          } catch (error) {
            return error;
          }
        })();
        assert.equal(received[0], 9);
        assert.ok(result instanceof WebSocketProtocolError, `got ${result}`);
        assert.equal(result.code, code);
        assert.equal((await client.readClose())?.code, code);
        assert.equal(await client.readFrame(), null);
      });
    });
  }
});

Deno.test("WebSocketDuplex.read() ends with null between frames and throws inside one", async (t) => {
  await t.step("between frames", async () => {
    await withDuplex({}, async (duplex, client) => {
      await client.sendFrame(OPCODE.binary, Uint8Array.of(1));
      client.conn.close();
      assert.deepStrictEqual(await readExact(duplex, 1), Uint8Array.of(1));
      assert.equal(await duplex.read(new Uint8Array(1)), null);
    });
  });
  await t.step("inside a frame", async () => {
    await withDuplex({}, async (duplex, client) => {
      await client.send(encodeFrame(OPCODE.binary, new Uint8Array(10)).subarray(0, 8));
      client.conn.close();
      await assert.rejects(readExact(duplex, 10), UnexpectedEofError);
    });
  });
});

Deno.test("WebSocketDuplex reads a huge frame in pieces no larger than the buffer, holding no queue", async () => {
  await withDuplex({}, async (duplex, client) => {
    const size = 10 * 1024 * 1024;
    const payload = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) payload[i] = (i / 4096) & 0xff;
    let sent = false;
    const sending = client.sendFrame(OPCODE.binary, payload).then(() => (sent = true));
    // Nobody reads: TCP holds the rest back at the viewer (the kernel's
    // buffers are far below 10 MiB while the receiver does not read).
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(sent, false);
    const buffer = new Uint8Array(64 * 1024);
    let total = 0;
    while (total < size) {
      const n = await duplex.read(buffer);
      assert.ok(n !== null && n > 0 && n <= buffer.length, `read ${n}`);
      assert.deepStrictEqual(buffer.subarray(0, n), payload.subarray(total, total + n));
      total += n;
    }
    await sending;
  });
});

Deno.test("WebSocketDuplex.write() sends one binary frame per call, small or large", async () => {
  await withDuplex({}, async (duplex, client) => {
    for (const size of [1, 125, 126, 65535, 65536, 64 * 1024 + 1, 1024 * 1024]) {
      const data = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
      const payload = new Uint8Array(size);
      for (let i = 0; i < size; i += data.length) payload.set(data.subarray(0, size - i), i);
      const [, frame] = await Promise.all([duplex.write(payload), client.readFrame()]);
      assert.deepStrictEqual(frame, { fin: true, opcode: OPCODE.binary, payload }, `size ${size}`);
    }
    await duplex.write(new Uint8Array(0));
    await duplex.write(Uint8Array.of(5));
    assert.deepStrictEqual((await client.readFrame())?.payload, Uint8Array.of(5));
  });
});

Deno.test("WebSocketDuplex never interleaves a pong with a data frame being written", async () => {
  await withDuplex({}, async (duplex, client) => {
    const big = new Uint8Array(8 * 1024 * 1024).fill(0xab);
    const writing = duplex.write(big);
    const reading = duplex.read(new Uint8Array(1));
    await client.sendFrame(OPCODE.ping, encoder.encode("p"));
    await client.sendFrame(OPCODE.binary, Uint8Array.of(1));
    const first = await client.readFrame();
    const second = await client.readFrame();
    assert.deepStrictEqual(first, { fin: true, opcode: OPCODE.binary, payload: big });
    assert.deepStrictEqual(second, {
      fin: true,
      opcode: OPCODE.pong,
      payload: encoder.encode("p"),
    });
    await writing;
    assert.equal(await reading, 1);
  });
});

Deno.test("WebSocketDuplex pings a silent viewer and keeps one that answers", async () => {
  await withDuplex({ pingIntervalMs: 100 }, async (duplex, client) => {
    const reading = duplex.read(new Uint8Array(1));
    for (let i = 0; i < 3; i++) {
      const ping = await client.readFrame();
      assert.equal(ping?.opcode, OPCODE.ping);
      await client.sendFrame(OPCODE.pong, ping!.payload);
    }
    await client.sendFrame(OPCODE.binary, Uint8Array.of(1));
    assert.equal(await reading, 1);
  });
});

Deno.test("WebSocketDuplex closes with 1001 when a ping goes unanswered", async () => {
  await withDuplex({ pingIntervalMs: 100 }, async (duplex, client) => {
    const reading = duplex.read(new Uint8Array(1));
    const started = performance.now();
    assert.equal((await client.readFrame())?.opcode, OPCODE.ping);
    assert.deepStrictEqual(await client.readClose(), { code: 1001, reason: "Ping timeout" });
    assert.ok(performance.now() - started >= 150);
    assert.equal(await reading, null);
    await duplex.closed;
  });
});
