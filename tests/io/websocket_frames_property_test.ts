/**
 * Property-based tests of the pure WebSocket frame codec: the client frame
 * header functions (RFC 6455 §5.2) and unmasking (§5.3), fed generated,
 * mutated and random bytes.
 */

import assert from "node:assert/strict";
import {
  clientFrameHeaderLength,
  OPCODE,
  parseClientFrameHeader,
  unmask,
  WebSocketProtocolError,
} from "../../src/io/websocket_frames.ts";
import { assertProperty, concat, fc, mutated } from "../_util/property.ts";

/** The fields of a client frame header, and how its length is encoded. */
interface HeaderFields {
  readonly fin: boolean;
  readonly opcode: number;
  readonly maskKey: Uint8Array;
  readonly payloadLength: number;
  /** 7-bit, 16-bit or 64-bit length field; the parser accepts non-minimal ones. */
  readonly lengthBits: 7 | 16 | 64;
}

/** Encodes a masked client frame header. */
function encodeHeader(h: HeaderFields): Uint8Array {
  const extra = h.lengthBits === 7 ? 0 : h.lengthBits === 16 ? 2 : 8;
  const bytes = new Uint8Array(2 + extra + 4);
  const view = new DataView(bytes.buffer);
  bytes[0] = (h.fin ? 0x80 : 0) | h.opcode;
  bytes[1] = 0x80 | (h.lengthBits === 7 ? h.payloadLength : h.lengthBits === 16 ? 126 : 127);
  if (extra === 2) view.setUint16(2, h.payloadLength);
  if (extra === 8) view.setBigUint64(2, BigInt(h.payloadLength));
  bytes.set(h.maskKey, 2 + extra);
  return bytes;
}

const maskKey = fc.uint8Array({ minLength: 4, maxLength: 4 });

/** Headers the parser must accept: data frames of any length, control frames up to 125. */
const validHeader: fc.Arbitrary<HeaderFields> = fc.oneof(
  fc.record({
    fin: fc.boolean(),
    opcode: fc.constantFrom(OPCODE.continuation, OPCODE.text, OPCODE.binary),
    maskKey,
    lengthBits: fc.constantFrom<7 | 16 | 64>(7, 16, 64),
    payloadLength: fc.oneof(
      fc.nat(125),
      fc.nat(0xffff),
      fc.maxSafeNat(),
      fc.constantFrom(126, 0xffff, 0x10000, 2 ** 32, 2 ** 53 - 1),
    ),
  }).map((h) => {
    const fits = h.lengthBits === 7
      ? h.payloadLength < 126
      : h.lengthBits === 16
      ? h.payloadLength <= 0xffff
      : true;
    return fits ? h : { ...h, lengthBits: 64 as const };
  }),
  fc.record({
    fin: fc.constant(true),
    opcode: fc.constantFrom(OPCODE.close, OPCODE.ping, OPCODE.pong),
    maskKey,
    // RFC 6455 §5.5: at most 125 bytes, so always the 7-bit length field.
    lengthBits: fc.constant<7>(7),
    payloadLength: fc.nat(125),
  }),
);

/** The header rules of RFC 6455 §5.2 and §5.5, as this server applies them. */
function expectedHeaderLength(bytes: Uint8Array): number | "protocol" | "range" {
  if (bytes.length < 2) return "range";
  const [first, second] = [bytes[0]!, bytes[1]!];
  const opcode = first & 0x0f;
  const control = opcode >= 8;
  if ((first & 0x70) !== 0) return "protocol";
  if (![0, 1, 2, 8, 9, 10].includes(opcode)) return "protocol";
  if ((second & 0x80) === 0) return "protocol";
  if (control && ((first & 0x80) === 0 || (second & 0x7f) > 125)) return "protocol";
  const length7 = second & 0x7f;
  return 6 + (length7 === 126 ? 2 : length7 === 127 ? 8 : 0);
}

function errorKind(run: () => unknown): unknown {
  try {
    return run();
  } catch (error) {
    if (error instanceof WebSocketProtocolError) {
      assert.notEqual(error.message, "");
      return { protocol: error.code };
    }
    if (error instanceof RangeError) return "range";
    throw error;
  }
}

Deno.test("parseClientFrameHeader() returns the fields of every valid header and copies the mask key", async () => {
  await assertProperty(
    fc.property(validHeader, fc.uint8Array({ maxLength: 8 }), (h, after) => {
      const header = encodeHeader(h);
      const bytes = concat([header, after]);
      assert.equal(clientFrameHeaderLength(bytes.subarray(0, 2)), header.length);
      const parsed = parseClientFrameHeader(bytes);
      assert.deepEqual(parsed, {
        fin: h.fin,
        opcode: h.opcode,
        masked: true,
        maskKey: h.maskKey,
        payloadLength: h.payloadLength,
        headerLength: header.length,
      });
      bytes.fill(0);
      assert.deepEqual(parsed.maskKey, h.maskKey, "the mask key still refers to the input");
    }),
  );
});

Deno.test("clientFrameHeaderLength() and parseClientFrameHeader() accept or refuse any bytes as RFC 6455 says, with no other error", async () => {
  const input = fc.oneof(
    mutated(validHeader.map(encodeHeader)),
    fc.uint8Array({ maxLength: 16 }),
  );
  await assertProperty(
    fc.property(input, (bytes) => {
      const expected = expectedHeaderLength(bytes);
      const length = errorKind(() => clientFrameHeaderLength(bytes));
      assert.deepEqual(length, expected === "protocol" ? { protocol: 1002 } : expected);
      const parsed = errorKind(() => parseClientFrameHeader(bytes));
      if (typeof expected !== "number") {
        assert.deepEqual(parsed, length);
      } else if (bytes.length < expected) {
        assert.equal(parsed, "range");
      } else if (
        expected === 14 && new DataView(bytes.buffer, bytes.byteOffset).getUint32(2) >= 0x20_0000
      ) {
        // A 64-bit length of 2^53 or more: too big for this server (1009).
        assert.deepEqual(parsed, { protocol: 1009 });
      } else {
        const header = parsed as ReturnType<typeof parseClientFrameHeader>;
        assert.equal(header.headerLength, expected);
        assert.ok(Number.isSafeInteger(header.payloadLength) && header.payloadLength >= 0);
        assert.deepEqual(header.maskKey, bytes.slice(expected - 4, expected));
      }
    }),
  );
});

Deno.test("unmask() piece by piece at any alignment equals the byte-wise XOR of RFC 6455 §5.3", async () => {
  await assertProperty(
    fc.property(
      fc.uint8Array({ maxLength: 80 }),
      maskKey,
      fc.array(fc.integer({ min: 1, max: 13 }), { minLength: 1, maxLength: 5 }),
      fc.integer({ min: 0, max: 7 }),
      (payload, key, pieces, alignment) => {
        const expected = payload.map((byte, i) => byte ^ key[i & 3]!);
        const data = new Uint8Array(alignment + payload.length).subarray(alignment);
        data.set(payload);
        let at = 0;
        for (let i = 0; at < data.length; i++) {
          const size = pieces[i % pieces.length]!;
          unmask(data.subarray(at, at + size), key, at);
          at += size;
        }
        assert.deepEqual(data, expected);
      },
    ),
  );
});
