import assert from "node:assert/strict";
import {
  encodeCommand,
  encodeReply,
  RespErrorReply,
  type RespLimits,
  RespParser,
  RespProtocolError,
  type RespValue,
} from "../../../src/tokens/redis/resp.ts";
import { assertProperty, fc } from "../../_util/property.ts";

const enc = new TextEncoder();
const bytes = (text: string) => enc.encode(text);

/** Every reply in `input`, fed in one push. */
function parseAll(input: Uint8Array, limits?: RespLimits): RespValue[] {
  const parser = new RespParser(limits);
  parser.push(input);
  const out: RespValue[] = [];
  for (let v = parser.next(); v !== undefined; v = parser.next()) out.push(v);
  assert.equal(parser.buffered, 0, "bytes left over");
  return out;
}

/** Every reply in `input`, fed one byte at a time, asking for replies after each byte. */
function parseByteByByte(input: Uint8Array, limits?: RespLimits): RespValue[] {
  const parser = new RespParser(limits);
  const out: RespValue[] = [];
  for (let i = 0; i < input.length; i++) {
    parser.push(input.subarray(i, i + 1));
    for (let v = parser.next(); v !== undefined; v = parser.next()) out.push(v);
  }
  assert.equal(parser.buffered, 0, "bytes left over");
  return out;
}

const VALID: readonly (readonly [string, string, RespValue])[] = [
  ["simple string", "+OK\r\n", "OK"],
  ["empty simple string", "+\r\n", ""],
  ["error", "-ERR unknown command\r\n", new RespErrorReply("ERR unknown command")],
  ["integer", ":1000\r\n", 1000],
  ["negative integer", ":-42\r\n", -42],
  ["zero", ":0\r\n", 0],
  ["bulk string", "$5\r\nhello\r\n", bytes("hello")],
  ["empty bulk", "$0\r\n\r\n", bytes("")],
  ["bulk with CRLF inside", "$4\r\na\r\nb\r\n", bytes("a\r\nb")],
  ["null bulk", "$-1\r\n", null],
  ["null array", "*-1\r\n", null],
  ["empty array", "*0\r\n", []],
  ["array", "*3\r\n:1\r\n+two\r\n$5\r\nthree\r\n", [1, "two", bytes("three")]],
  ["nested arrays", "*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*0\r\n", [[1, 2], [[]]]],
  ["array with nulls", "*3\r\n$-1\r\n*-1\r\n-E x\r\n", [null, null, new RespErrorReply("E x")]],
];

Deno.test("RespParser parses each kind of RESP2 reply, whole and one byte at a time", () => {
  for (const [name, wire, expected] of VALID) {
    assert.deepEqual(parseAll(bytes(wire)), [expected], name);
    assert.deepEqual(parseByteByByte(bytes(wire)), [expected], `${name}, byte by byte`);
  }
});

Deno.test("RespParser returns pipelined replies in order, from one push or split anywhere", () => {
  const wire = bytes(VALID.map(([, w]) => w).join(""));
  const expected = VALID.map(([, , v]) => v);
  assert.deepEqual(parseAll(wire), expected);
  assert.deepEqual(parseByteByByte(wire), expected);
  for (let cut = 1; cut < wire.length; cut++) {
    const parser = new RespParser();
    const out: RespValue[] = [];
    for (const part of [wire.subarray(0, cut), wire.subarray(cut)]) {
      parser.push(part);
      for (let v = parser.next(); v !== undefined; v = parser.next()) out.push(v);
    }
    assert.deepEqual(out, expected, `cut at ${cut}`);
  }
});

Deno.test("RespParser waits for the rest of an incomplete reply", () => {
  const parser = new RespParser();
  parser.push(bytes("*2\r\n$3\r\nfo"));
  assert.equal(parser.next(), undefined);
  parser.push(bytes("o\r\n"));
  assert.equal(parser.next(), undefined);
  parser.push(bytes(":7\r\n+next"));
  assert.deepEqual(parser.next(), [bytes("foo"), 7]);
  assert.equal(parser.next(), undefined);
  parser.push(bytes("\r\n"));
  assert.equal(parser.next(), "next");
});

const GARBAGE: readonly (readonly [string, string | Uint8Array, RespLimits?])[] = [
  ["unknown type byte", "?x\r\n"],
  ["empty line", "\r\n"],
  ["CR without LF", "+OK\rX\n"],
  ["integer not a number", ":12a\r\n"],
  ["integer too large for a double", ":99999999999999999\r\n"],
  ["integer with sign only", ":-\r\n"],
  ["bulk length not a number", "$x\r\n"],
  ["bulk length below -1", "$-2\r\n"],
  ["bulk not followed by CRLF", "$3\r\nfooXY"],
  ["array length below -1", "*-5\r\n"],
  ["oversized bulk", "$1048577\r\n", undefined],
  ["bulk over a small bound", "$11\r\nhello world\r\n", { maxBulkBytes: 10 }],
  ["oversized array", "*65537\r\n"],
  ["array over a small bound", "*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", { maxArrayLength: 3 }],
  ["nesting too deep", "*1\r\n".repeat(9) + ":1\r\n"],
  ["nesting over a small bound", "*1\r\n*1\r\n*1\r\n:1\r\n", { maxDepth: 2 }],
  ["line too long, no CRLF yet", "+" + "a".repeat(70_000)],
  ["line too long", "+" + "a".repeat(100) + "\r\n", { maxLineBytes: 50 }],
  ["reply too large", "*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n", {
    maxReplyBytes: 40,
  }],
];

Deno.test("RespParser refuses garbage and oversized replies with a protocol error, whole or byte by byte", () => {
  for (const [name, wire, limits] of GARBAGE) {
    const input = typeof wire === "string" ? bytes(wire) : wire;
    assert.throws(() => parseAll(input, limits), RespProtocolError, name);
    assert.throws(() => parseByteByByte(input, limits), RespProtocolError, `${name}, byte by byte`);
  }
});

Deno.test("RespParser keeps failing after a protocol error and holds no bytes", () => {
  const parser = new RespParser();
  parser.push(bytes("?bad\r\n+OK\r\n"));
  assert.throws(() => parser.next(), RespProtocolError);
  assert.equal(parser.buffered, 0);
  assert.throws(() => parser.next(), RespProtocolError);
  assert.throws(() => parser.push(bytes("+OK\r\n")), RespProtocolError);
});

Deno.test("RespParser refuses an oversized bulk from its header, before its body arrives", () => {
  const parser = new RespParser({ maxBulkBytes: 1024 });
  parser.push(bytes("$1000000000\r\n"));
  assert.throws(() => parser.next(), /exceeds 1024/);
});

Deno.test("RespParser holds at most a line's bound of a line that never ends", () => {
  const parser = new RespParser({ maxLineBytes: 100 });
  let failedAt: number | undefined;
  for (let i = 1; i <= 1000 && failedAt === undefined; i++) {
    try {
      parser.push(bytes("a"));
      assert.equal(parser.next(), undefined, "no reply from a line without its end");
    } catch (error) {
      if (!(error instanceof RespProtocolError)) throw error;
      failedAt = i;
    }
  }
  // Refused as soon as the line and its CRLF could no longer fit the bound: at byte 103.
  assert.ok(
    failedAt !== undefined && failedAt > 90 && failedAt <= 103,
    `failed at byte ${failedAt}`,
  );
});

Deno.test("encodeCommand writes an array of bulk strings, binary-safe", () => {
  assert.equal(
    new TextDecoder().decode(encodeCommand(["SET", "k", "v a\r\n", "PX", "10"])),
    "*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv a\r\n\r\n$2\r\nPX\r\n$2\r\n10\r\n",
  );
  const binary = new Uint8Array([0, 255, 13, 10]);
  assert.deepEqual(parseAll(encodeCommand(["GET", binary, ""])), [[
    bytes("GET"),
    binary,
    bytes(""),
  ]]);
  assert.equal(new TextDecoder().decode(encodeCommand(["é"])), "*1\r\n$2\r\né\r\n");
});

/** RESP values the parser yields (no simple string with CR or LF; integers safe). */
function respValue(): fc.Arbitrary<RespValue> {
  const { value } = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.stringMatching(/^[^\r\n]*$/),
      fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
      fc.uint8Array({ maxLength: 40 }),
      fc.constant(null),
      fc.stringMatching(/^[^\r\n]*$/).map((m) => new RespErrorReply(m)),
      fc.array(tie("value"), { maxLength: 5 }),
    ),
  }));
  return value as fc.Arbitrary<RespValue>;
}

Deno.test("RespParser reads back what encodeReply wrote, in any segmentation (property)", async () => {
  await assertProperty(
    fc.property(
      fc.array(respValue(), { minLength: 1, maxLength: 5 }),
      fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 8 }),
      (values, sizes) => {
        const parts = values.map(encodeReply);
        const wire = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let at = 0;
        for (const part of parts) {
          wire.set(part, at);
          at += part.length;
        }
        const parser = new RespParser({ maxDepth: 64 });
        const out: RespValue[] = [];
        let from = 0;
        for (let i = 0; from < wire.length; i++) {
          const to = Math.min(wire.length, from + sizes[i % sizes.length]!);
          parser.push(wire.subarray(from, to));
          from = to;
          for (let v = parser.next(); v !== undefined; v = parser.next()) out.push(v);
        }
        // encodeReply writes `null` as a null bulk: both nulls read back as null.
        assert.deepEqual(out, values);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("RespParser never crashes on random bytes: a value, a wait or a protocol error", async () => {
  await assertProperty(
    fc.property(fc.uint8Array({ maxLength: 200 }), (input) => {
      const parser = new RespParser({ maxLineBytes: 64, maxBulkBytes: 64 });
      try {
        parser.push(input);
        while (parser.next() !== undefined);
      } catch (error) {
        assert.ok(error instanceof RespProtocolError, String(error));
      }
      assert.ok(parser.buffered <= input.length);
    }),
    { numRuns: 1000 },
  );
});
