/**
 * Property-based tests of the WebSocket frame decoder as a stream:
 * `WebSocketDuplex.read()` over a scripted in-memory connection carrying
 * generated frame sequences (fragmented messages, interleaved pings and
 * pongs, a close frame or a clean end) and mutated or random bytes, in any
 * segmentation and with any read sizes.
 */

import assert from "node:assert/strict";
import { UnexpectedEofError } from "../../src/io/byte_reader.ts";
import { OPCODE, WebSocketProtocolError } from "../../src/io/websocket_frames.ts";
import { WebSocketDuplex } from "../../src/io/websocket_duplex.ts";
import {
  assertProperty,
  concat,
  fc,
  mutated,
  ScriptedDuplex,
  type Segmentation,
  segmentation,
} from "../_util/property.ts";

const encoder = new TextEncoder();

/** One client frame to send. */
interface ClientFrame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly payload: Uint8Array;
  readonly maskKey: Uint8Array;
  /** Length field width; the decoder accepts non-minimal ones for data frames. */
  readonly lengthBits: 7 | 16 | 64;
}

/** Encodes a masked client frame with a chosen (deterministic) mask key. */
function encodeClientFrame(frame: ClientFrame): Uint8Array {
  const length = frame.payload.length;
  const bits = frame.lengthBits === 7 && length >= 126 ? 16 : frame.lengthBits;
  const extra = bits === 7 ? 0 : bits === 16 ? 2 : 8;
  const bytes = new Uint8Array(2 + extra + 4 + length);
  const view = new DataView(bytes.buffer);
  bytes[0] = (frame.fin ? 0x80 : 0) | frame.opcode;
  bytes[1] = 0x80 | (bits === 7 ? length : bits === 16 ? 126 : 127);
  if (extra === 2) view.setUint16(2, length);
  if (extra === 8) view.setBigUint64(2, BigInt(length));
  bytes.set(frame.maskKey, 2 + extra);
  for (let i = 0; i < length; i++) {
    bytes[6 + extra + i] = frame.payload[i]! ^ frame.maskKey[i & 3]!;
  }
  return bytes;
}

/** A server frame as the decoder wrote it (unmasked). */
interface ServerFrame {
  readonly opcode: number;
  readonly payload: Uint8Array;
}

function parseServerFrames(bytes: Uint8Array): ServerFrame[] {
  const frames: ServerFrame[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  let at = 0;
  while (at < bytes.length) {
    assert.equal(bytes[at]! & 0xf0, 0x80, "server frames have FIN and no RSV bits");
    assert.equal(bytes[at + 1]! & 0x80, 0, "server frames are not masked");
    let length = bytes[at + 1]! & 0x7f;
    let header = 2;
    if (length === 126) [length, header] = [view.getUint16(at + 2), 4];
    else if (length === 127) [length, header] = [Number(view.getBigUint64(at + 2)), 10];
    frames.push({
      opcode: bytes[at]! & 0x0f,
      payload: bytes.slice(at + header, at + header + length),
    });
    at += header + length;
  }
  assert.equal(at, bytes.length, "a truncated server frame");
  return frames;
}

/**
 * Where each client frame in `bytes` ends, by its length field alone (as
 * if every header were valid): a read must never cross one of these.
 */
function frameEnds(bytes: Uint8Array): number[] {
  const ends: number[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  let at = 0;
  while (at + 2 <= bytes.length) {
    const length7 = bytes[at + 1]! & 0x7f;
    const extra = length7 === 126 ? 2 : length7 === 127 ? 8 : 0;
    if (at + 2 + extra > bytes.length) break;
    const length = extra === 0
      ? length7
      : extra === 2
      ? view.getUint16(at + 2)
      : Number(view.getBigUint64(at + 2));
    at += 2 + extra + 4 + length;
    ends.push(at);
  }
  return ends;
}

const maskKey = fc.uint8Array({ minLength: 4, maxLength: 4 });
const lengthBits = fc.constantFrom<7 | 16 | 64>(7, 7, 16, 64);
const dataPayload = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }) },
  // Long enough for the 16-bit length field.
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 120, maxLength: 200 }) },
);

const controlFrame: fc.Arbitrary<ClientFrame> = fc.record({
  fin: fc.constant(true),
  opcode: fc.constantFrom(OPCODE.ping, OPCODE.pong),
  payload: fc.uint8Array({ maxLength: 125 }),
  maskKey,
  lengthBits: fc.constant<7>(7),
});

/** A data message: text or binary, in fragments, maybe with control frames between them. */
const message: fc.Arbitrary<ClientFrame[]> = fc.tuple(
  fc.constantFrom(OPCODE.text, OPCODE.binary),
  fc.array(
    fc.tuple(
      dataPayload,
      maskKey,
      lengthBits,
      fc.option(controlFrame, { freq: 3, nil: undefined }),
    ),
    { minLength: 1, maxLength: 4 },
  ),
).map(([opcode, fragments]) =>
  fragments.flatMap(([payload, key, bits, control], i): ClientFrame[] => [
    {
      fin: i === fragments.length - 1,
      opcode: i === 0 ? opcode : OPCODE.continuation,
      payload,
      maskKey: key,
      lengthBits: bits,
    },
    // RFC 6455 §5.4: control frames may come between fragments.
    ...(control === undefined ? [] : [control]),
  ])
);

/** RFC 6455 §7.4: close codes a viewer may send. */
const closeCode = fc.oneof(
  fc.constantFrom(1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014),
  fc.integer({ min: 3000, max: 4999 }),
);

/** How the viewer ends: a close frame (with or without a code), or closing the connection. */
const ending = fc.oneof(
  fc.record({
    code: closeCode,
    reason: fc.string({ unit: "grapheme", maxLength: 20 }).filter((r) =>
      encoder.encode(r).length <= 123
    ),
    maskKey,
  }),
  fc.record({ code: fc.constant(undefined), reason: fc.constant(""), maskKey }),
  fc.constant(undefined),
);

/** A whole, valid viewer stream and what the decoder must make of it. */
const stream = fc.tuple(
  fc.array(fc.oneof({ weight: 3, arbitrary: message }, controlFrame.map((f) => [f])), {
    maxLength: 5,
  }),
  ending,
  fc.uint8Array({ minLength: 1, maxLength: 8 }),
).map(([groups, end, afterClose]) => {
  const frames = groups.flat();
  const parts = frames.map(encodeClientFrame);
  let close: { code: number; reason: string } | undefined;
  if (end !== undefined) {
    const reason = encoder.encode(end.reason);
    const payload = end.code === undefined
      ? new Uint8Array(0)
      : concat([Uint8Array.of(end.code >>> 8, end.code & 0xff), reason]);
    parts.push(encodeClientFrame({
      fin: true,
      opcode: OPCODE.close,
      payload,
      maskKey: end.maskKey,
      lengthBits: 7,
    }));
    close = { code: end.code ?? 1005, reason: end.code === undefined ? "" : end.reason };
  }
  const frameBytes = concat(parts);
  const data = concat(
    frames.filter((f) => f.opcode <= OPCODE.binary).map((f) => f.payload),
  );
  const pongs = frames.filter((f) => f.opcode === OPCODE.ping).map((f) => f.payload);
  // Bytes after the close frame must stay unread: the stream is over.
  const bytes = close === undefined ? frameBytes : concat([frameBytes, afterClose]);
  const closeEcho = end === undefined
    ? undefined
    : end.code === undefined
    ? new Uint8Array(0)
    : Uint8Array.of(end.code >>> 8, end.code & 0xff);
  return { bytes, framesLength: frameBytes.length, data, pongs, close, closeEcho };
});

/**
 * Read buffers, used cyclically: sizes, and offsets into a larger buffer
 * so that unmasking meets every alignment (as with `readExact`'s
 * `subarray`s).
 */
const readSizes = fc.tuple(
  fc.oneof(
    fc.constant([1]),
    fc.constant([4096]),
    fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 6 }),
  ),
  fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 4 }),
);

/** Reads `duplex` to its end; the bytes, and the error that ended it if any. */
async function readToEnd(
  duplex: WebSocketDuplex,
  [sizes, offsets]: readonly [readonly number[], readonly number[]],
): Promise<{ data: Uint8Array; error?: unknown }> {
  const chunks: Uint8Array[] = [];
  for (let i = 0;; i++) {
    const offset = offsets[i % offsets.length]!;
    const size = sizes[i % sizes.length]!;
    const buffer = new Uint8Array(offset + size).subarray(offset);
    let n: number | null;
    try {
      n = await duplex.read(buffer);
    } catch (error) {
      return { data: concat(chunks), error };
    }
    if (n === null) return { data: concat(chunks) };
    assert.ok(
      n > 0 && n <= buffer.length,
      `read() returned ${n} for a ${buffer.length}-byte buffer`,
    );
    chunks.push(buffer.slice(0, n));
  }
}

/** Every read of the connection stays within the frame it is in. */
function assertNoReadAhead(inner: ScriptedDuplex, bytes: Uint8Array): void {
  const ends = frameEnds(bytes);
  let frame = 0;
  // Requests come in stream order, so one pass over the frame ends will do.
  for (const { at, length } of inner.requests) {
    if (at >= bytes.length) continue;
    while (frame < ends.length && ends[frame]! <= at) frame++;
    const end = ends[frame] ?? Infinity;
    assert.ok(at + length <= end, `a read of ${length} at ${at} crosses the frame end at ${end}`);
  }
}

async function decode(
  bytes: Uint8Array,
  segments: Segmentation,
  sizes: readonly [readonly number[], readonly number[]],
) {
  const inner = new ScriptedDuplex(bytes, segments);
  const duplex = new WebSocketDuplex(inner);
  const result = await readToEnd(duplex, sizes);
  await duplex.closed;
  assert.ok(inner.closed, "the connection was left open at the end of the stream");
  return { ...result, inner, duplex, written: parseServerFrames(inner.written) };
}

Deno.test("WebSocketDuplex.read() returns every data payload, answers pings and the close, never reading past a frame, however it is split", async () => {
  await assertProperty(
    fc.asyncProperty(stream, segmentation(), readSizes, async (s, segments, sizes) => {
      const { data, error, inner, duplex, written } = await decode(s.bytes, segments, sizes);
      assert.equal(error, undefined);
      assert.deepEqual(data, s.data);
      assert.deepEqual(duplex.peerClose, s.close);
      assert.equal(inner.position, s.framesLength, "read past the close frame");
      assertNoReadAhead(inner, s.bytes);
      const expected = [
        ...s.pongs.map((payload) => ({ opcode: OPCODE.pong, payload })),
        ...(s.closeEcho === undefined ? [] : [{ opcode: OPCODE.close, payload: s.closeEcho }]),
      ];
      assert.deepEqual(written, expected);
    }),
  );
  // Let the last close's write-timeout clearing run before the sanitizers look.
  await new Promise((resolve) => setTimeout(resolve, 0));
});

Deno.test("WebSocketDuplex.read() ends mutated or random streams with null, UnexpectedEofError or a WebSocketProtocolError answered by its close code", async () => {
  const input = fc.oneof(
    { weight: 4, arbitrary: mutated(stream.map((s) => s.bytes)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 48 }) },
  );
  await assertProperty(
    fc.asyncProperty(input, segmentation(), readSizes, async (bytes, segments, sizes) => {
      const { error, inner, written } = await decode(bytes, segments, sizes);
      assertNoReadAhead(inner, bytes);
      // Server frames are only pongs and at most one close, the last.
      const closes = written.filter((f) => f.opcode === OPCODE.close);
      assert.ok(written.every((f) => f.opcode === OPCODE.pong || f.opcode === OPCODE.close));
      assert.ok(
        closes.length <= 1 && (closes.length === 0 || written.at(-1)!.opcode === OPCODE.close),
      );
      if (error === undefined) return;
      if (error instanceof UnexpectedEofError) {
        assert.equal(inner.position, bytes.length, "EOF reported before the end of the input");
        assert.equal(closes.length, 0, "a close frame sent on a broken connection");
        return;
      }
      assert.ok(error instanceof WebSocketProtocolError, `unexpected error: ${String(error)}`);
      assert.notEqual(error.message, "");
      assert.ok([1002, 1007, 1009].includes(error.code), `close code ${error.code}`);
      // RFC 6455 §7.1.7: the viewer is told why, with the error's code.
      assert.equal(closes.length, 1, "no close frame for a protocol error");
      const payload = closes[0]!.payload;
      assert.equal((payload[0]! << 8) | payload[1]!, error.code);
      assert.equal(new TextDecoder().decode(payload.subarray(2)), error.message);
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, 0));
});
