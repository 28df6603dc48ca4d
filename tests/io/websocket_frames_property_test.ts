/**
 * Property-based tests of the pure WebSocket and HTTP codecs: the client
 * frame header functions (RFC 6455 §5.2) and the request-head parser
 * (RFC 9112), fed generated, mutated and random bytes.
 */

import assert from "node:assert/strict";
import {
  clientFrameHeaderLength,
  findHeadEnd,
  OPCODE,
  parseClientFrameHeader,
  parseRequestHead,
  unmask,
  WebSocketProtocolError,
} from "../../src/io/websocket_frames.ts";
import { assertProperty, concat, fc, mutated, segmentation } from "../_util/property.ts";

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

// --- HTTP request heads --------------------------------------------------

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Bytes of a Latin-1 string. */
function latin1(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

const token = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}$/);
/** A field value as parsed: visible characters, obs-text, inner SP and HTAB. */
const fieldValue = fc.oneof(
  fc.constant(""),
  fc.tuple(
    fc.stringMatching(/^[\x21-\x7e\x80-\xff]{1,8}$/),
    fc.stringMatching(/^[\x21-\x7e\x80-\xff \t]{0,12}$/),
    fc.stringMatching(/^[\x21-\x7e\x80-\xff]$/),
  ).map(([a, b, c]) => a + b + c),
);
const ows = fc.stringMatching(/^[ \t]{0,3}$/);

/** A valid request head and what the parser must return for it. */
const validHead = fc.record({
  method: token,
  target: fc.stringMatching(/^[\x21-\x7e]{1,24}$/),
  version: fc.stringMatching(/^HTTP\/[0-9]\.[0-9]$/),
  headers: fc.array(fc.tuple(token, ows, fieldValue, ows), { maxLength: 12 }),
}).map(({ method, target, version, headers }) => {
  const text = `${method} ${target} ${version}\r\n` +
    headers.map(([name, before, value, after]) => `${name}:${before}${value}${after}\r\n`).join(
      "",
    ) +
    "\r\n";
  const expected = new Map<string, string>();
  for (const [name, , value] of headers) {
    const key = name.toLowerCase();
    const previous = expected.get(key);
    expected.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }
  return { bytes: latin1(text), head: { method, target, version, headers: expected } };
});

/** `findHeadEnd()` as the WebSocket listener calls it: once per read, from where it stopped. */
function findHeadEndIncrementally(bytes: Uint8Array, segments: readonly number[]): number {
  let filled = 0;
  for (let i = 0; filled < bytes.length; i++) {
    const n = Math.min(segments[i % segments.length]!, bytes.length - filled);
    const end = findHeadEnd(bytes.subarray(0, filled + n), filled);
    filled += n;
    if (end >= 0) return end;
  }
  return -1;
}

Deno.test("parseRequestHead() parses every valid head, and findHeadEnd() finds its end however it is split", async () => {
  await assertProperty(
    fc.property(
      validHead,
      fc.uint8Array({ maxLength: 16 }),
      segmentation(),
      ({ bytes, head }, body, segments) => {
        assert.deepEqual(parseRequestHead(bytes), head);
        const withBody = concat([bytes, body]);
        assert.equal(findHeadEnd(withBody), bytes.length);
        assert.equal(findHeadEndIncrementally(withBody, segments), bytes.length);
      },
    ),
  );
});

Deno.test("parseRequestHead() accepts only heads findHeadEnd() delimits exactly and refuses the rest with a SyntaxError", async () => {
  const input = fc.oneof(
    { weight: 4, arbitrary: mutated(validHead.map((h) => h.bytes)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) },
    {
      weight: 1,
      arbitrary: fc.array(fc.constantFrom(..."\r\n: \tGET/aH1\x00\x7f\xff"), { maxLength: 40 })
        .map((chars) => latin1(chars.join(""))),
    },
  );
  await assertProperty(
    fc.property(
      input,
      fc.integer({ min: 0, max: 400 }),
      segmentation(),
      (bytes, maxBytes, segments) => {
        // The incremental search finds what a one-shot search finds.
        assert.equal(findHeadEndIncrementally(bytes, segments), findHeadEnd(bytes));
        let head: ReturnType<typeof parseRequestHead>;
        try {
          head = parseRequestHead(bytes, { maxBytes });
        } catch (error) {
          assert.ok(error instanceof SyntaxError, `not a SyntaxError: ${String(error)}`);
          assert.notEqual(error.message, "");
          return;
        }
        assert.ok(bytes.length <= maxBytes, "a head over maxBytes was accepted");
        assert.equal(
          findHeadEnd(bytes),
          bytes.length,
          "accepted bytes that are not exactly one head",
        );
        assert.match(head.method, TOKEN);
        assert.match(head.target, /^[\x21-\x7e]+$/);
        assert.match(head.version, /^HTTP\/[0-9]\.[0-9]$/);
        for (const [name, value] of head.headers) {
          assert.match(name, TOKEN);
          assert.equal(name, name.toLowerCase());
          assert.match(value, /^[\t\x20-\x7e\x80-\xff]*$/);
        }
      },
    ),
  );
});
