import assert from "node:assert/strict";
import {
  clientFrameHeaderLength,
  computeAcceptKey,
  encodeServerFrame,
  encodeServerFrameHeader,
  findHeadEnd,
  headerTokens,
  OPCODE,
  parseClientFrameHeader,
  parseRequestHead,
  unmask,
  WebSocketProtocolError,
} from "../../src/io/websocket_frames.ts";
import { encodeFrame } from "../_util/raw_websocket.ts";

const encoder = new TextEncoder();

Deno.test("encodeServerFrameHeader() uses the shortest length form (RFC 6455 §5.2)", () => {
  const table: [number, number[]][] = [
    [0, [0x82, 0]],
    [125, [0x82, 125]],
    [126, [0x82, 126, 0x00, 0x7e]],
    [65535, [0x82, 126, 0xff, 0xff]],
    [65536, [0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]],
    [2 ** 32 + 5, [0x82, 127, 0, 0, 0, 0x01, 0, 0, 0, 0x05]],
    [2 ** 53 - 1, [0x82, 127, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
  ];
  for (const [length, expected] of table) {
    assert.deepStrictEqual(
      encodeServerFrameHeader(OPCODE.binary, length),
      Uint8Array.from(expected),
      `length ${length}`,
    );
  }
  assert.throws(() => encodeServerFrameHeader(OPCODE.binary, -1), RangeError);
  assert.throws(() => encodeServerFrameHeader(OPCODE.binary, 2 ** 53), RangeError);
});

Deno.test("encodeServerFrame() puts header and payload in one array", () => {
  assert.deepStrictEqual(
    encodeServerFrame(OPCODE.pong, Uint8Array.of(1, 2)),
    Uint8Array.of(0x8a, 2, 1, 2),
  );
});

Deno.test("parseClientFrameHeader() reads what a client encodes, for every length form", () => {
  for (const length of [0, 1, 125, 126, 65535, 65536, 100_000]) {
    for (const [opcode, fin] of [[OPCODE.binary, true], [OPCODE.text, false]] as const) {
      const frame = encodeFrame(opcode, new Uint8Array(length), fin);
      const headerLength = clientFrameHeaderLength(frame);
      assert.equal(headerLength, frame.length - length, `length ${length}`);
      const header = parseClientFrameHeader(frame.subarray(0, headerLength));
      assert.deepStrictEqual(header, {
        fin,
        opcode,
        masked: true,
        maskKey: frame.slice(headerLength - 4, headerLength),
        payloadLength: length,
        headerLength,
      });
      // The payload was all zeros, so it unmasks back to zeros.
      const payload = frame.slice(headerLength);
      unmask(payload, header.maskKey);
      assert.ok(payload.every((byte) => byte === 0));
    }
  }
});

Deno.test("parseClientFrameHeader() takes a 64-bit length below 2^53 and refuses larger with 1009", () => {
  const header = (high: number, low: number) =>
    Uint8Array.of(0x82, 0x80 | 127, ...u32(high), ...u32(low), 1, 2, 3, 4);
  assert.equal(parseClientFrameHeader(header(0x1f_ffff, 0xffff_ffff)).payloadLength, 2 ** 53 - 1);
  for (const high of [0x20_0000, 0x8000_0000]) {
    assert.throws(
      () => parseClientFrameHeader(header(high, 0)),
      (error) => error instanceof WebSocketProtocolError && error.code === 1009,
    );
  }
});

Deno.test("clientFrameHeaderLength() refuses frames RFC 6455 forbids with 1002", () => {
  const table: [string, number[]][] = [
    ["an unmasked frame (§5.1)", [0x82, 0x05]],
    ["RSV1 set", [0xc2, 0x85]],
    ["RSV2 set", [0xa2, 0x85]],
    ["RSV3 set", [0x92, 0x85]],
    ["reserved opcode 3", [0x83, 0x80]],
    ["reserved opcode 7", [0x87, 0x80]],
    ["reserved opcode 0xb", [0x8b, 0x80]],
    ["reserved opcode 0xf", [0x8f, 0x80]],
    ["a 126-byte ping", [0x89, 0x80 | 126]],
    ["a ping with a 64-bit length", [0x89, 0x80 | 127]],
    ["a fragmented close", [0x08, 0x80]],
    ["a fragmented ping", [0x09, 0x80]],
  ];
  for (const [name, bytes] of table) {
    assert.throws(
      () => clientFrameHeaderLength(Uint8Array.from(bytes)),
      (error) => error instanceof WebSocketProtocolError && error.code === 1002,
      name,
    );
  }
  assert.equal(clientFrameHeaderLength(Uint8Array.of(0x89, 0x80 | 125)), 6);
  assert.throws(() => clientFrameHeaderLength(Uint8Array.of(0x82)), RangeError);
  assert.throws(() => parseClientFrameHeader(Uint8Array.of(0x82, 0x80 | 126, 0, 0)), RangeError);
});

Deno.test("unmask() gives the same bytes whatever the pieces and their alignment", () => {
  const payload = crypto.getRandomValues(new Uint8Array(1000));
  const frame = encodeFrame(OPCODE.binary, payload);
  const header = parseClientFrameHeader(frame);
  const masked = frame.slice(header.headerLength);
  for (const cuts of [[0], [1, 2, 3], [5, 7, 13, 64, 999], [4, 500, 501]]) {
    // An odd offset in a larger buffer also checks unaligned memory.
    const memory = new Uint8Array(masked.length + 3);
    const data = memory.subarray(3);
    data.set(masked);
    let start = 0;
    for (const end of [...cuts, masked.length]) {
      unmask(data.subarray(start, end), header.maskKey, start);
      start = end;
    }
    assert.deepStrictEqual(data, payload, `cuts ${cuts}`);
  }
});

Deno.test("computeAcceptKey() matches RFC 6455 §1.3", () => {
  // The RFC's own example (§1.3, §4.2.2); `openssl sha1 -binary | base64` agrees.
  assert.equal(computeAcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("findHeadEnd() finds the blank line, also when searching from a later offset", () => {
  const bytes = encoder.encode("GET / HTTP/1.1\r\nA: b\r\n\r\nrest");
  assert.equal(findHeadEnd(bytes), 24);
  assert.equal(findHeadEnd(bytes, 22), 24);
  assert.equal(findHeadEnd(bytes.subarray(0, 23)), -1);
});

Deno.test("parseRequestHead() parses a request line and headers", () => {
  const head = parseRequestHead(latin1(
    "GET /websockify?token=x HTTP/1.1\r\n" +
      "Host: example.org:443\r\n" +
      "Upgrade:websocket\r\n" +
      "Connection: keep-alive, Upgrade  \r\n" +
      "Sec-WebSocket-Protocol: binary\r\n" +
      "sec-websocket-protocol: base64\r\n" +
      "X-Empty:\r\n" +
      "X-Latin1: caf\xe9\r\n" +
      "\r\n",
  ));
  assert.equal(head.method, "GET");
  assert.equal(head.target, "/websockify?token=x");
  assert.equal(head.version, "HTTP/1.1");
  assert.equal(head.headers.get("host"), "example.org:443");
  assert.equal(head.headers.get("upgrade"), "websocket");
  assert.equal(head.headers.get("connection"), "keep-alive, Upgrade");
  assert.equal(head.headers.get("sec-websocket-protocol"), "binary, base64");
  assert.equal(head.headers.get("x-empty"), "");
  assert.equal(head.headers.get("x-latin1"), "caf\xe9");
  assert.deepStrictEqual(headerTokens(head.headers.get("connection")), ["keep-alive", "Upgrade"]);
  assert.deepStrictEqual(headerTokens(" a, ,b ,"), ["a", "b"]);
  assert.deepStrictEqual(headerTokens(undefined), []);
});

Deno.test("parseRequestHead() throws SyntaxError on anything malformed", () => {
  const ok = "Host: x\r\n\r\n";
  const table: [string, string][] = [
    ["an empty head", "\r\n\r\n"],
    ["no blank line", "GET / HTTP/1.1\r\nHost: x\r\n"],
    ["a two-part request line", `GET /\r\n${ok}`],
    ["double spaces in the request line", `GET  / HTTP/1.1\r\n${ok}`],
    ["a trailing space in the request line", `GET / HTTP/1.1 \r\n${ok}`],
    ["a non-token method", `G(T / HTTP/1.1\r\n${ok}`],
    ["a bad version", `GET / HTTP/1\r\n${ok}`],
    ["a lower-case version", `GET / http/1.1\r\n${ok}`],
    ["a control character in the target", `GET /\x01 HTTP/1.1\r\n${ok}`],
    ["a bare LF", `GET / HTTP/1.1\nHost: x\r\n\r\n`],
    ["a bare CR", `GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n`],
    ["obs-fold", `GET / HTTP/1.1\r\nHost: x\r\n  y\r\n\r\n`],
    ["a header without a colon", `GET / HTTP/1.1\r\nHost x\r\n\r\n`],
    ["whitespace before the colon", `GET / HTTP/1.1\r\nHost : x\r\n\r\n`],
    ["an empty header name", `GET / HTTP/1.1\r\n: x\r\n\r\n`],
    ["a non-token header name", `GET / HTTP/1.1\r\nHo(st: x\r\n\r\n`],
    ["a NUL in a value", `GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n`],
    ["too many headers", `GET / HTTP/1.1\r\n${"A: b\r\n".repeat(101)}\r\n`],
  ];
  for (const [name, text] of table) {
    assert.throws(() => parseRequestHead(latin1(text)), SyntaxError, name);
  }
  const long = encoder.encode(`GET / HTTP/1.1\r\nX: ${"a".repeat(100)}\r\n\r\n`);
  assert.throws(() => parseRequestHead(long, { maxBytes: 100 }), SyntaxError);
  assert.equal(parseRequestHead(long, { maxBytes: long.length }).headers.get("x")?.length, 100);
});

function u32(value: number): number[] {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}

/** One byte per character, as a client sending Latin-1 would. */
function latin1(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => char.charCodeAt(0));
}
