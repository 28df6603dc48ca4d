import assert from "node:assert/strict";
import {
  clientFrameHeaderLength,
  encodeServerFrame,
  encodeServerFrameHeader,
  OPCODE,
  parseClientFrameHeader,
  unmask,
  WebSocketProtocolError,
} from "../../src/io/websocket_frames.ts";
import { encodeFrame } from "../_util/raw_websocket.ts";

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

function u32(value: number): number[] {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}
