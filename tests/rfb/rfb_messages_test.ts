import assert from "node:assert/strict";
import { RfbError } from "../../src/errors.ts";
import {
  cleanReason,
  encodeSecurityOffer,
  encodeSecurityResult,
  encodeVersion,
  lowerVersion,
  parseVersion,
} from "../../src/rfb/rfb_messages.ts";

const enc = (text: string) => new TextEncoder().encode(text);

Deno.test("parseVersion() maps every version to 3.3, 3.7 or 3.8 (RFC 6143 §7.1.1)", () => {
  const table: [string, string][] = [
    ["RFB 003.003\n", "3.3"],
    ["RFB 003.005\n", "3.3"],
    ["RFB 003.006\n", "3.3"],
    ["RFB 003.007\n", "3.7"],
    ["RFB 003.008\n", "3.8"],
    ["RFB 003.889\n", "3.8"],
    ["RFB 004.001\n", "3.8"],
    ["RFB 005.000\n", "3.8"],
  ];
  for (const [input, expected] of table) assert.equal(parseVersion(enc(input)), expected, input);
});

Deno.test("parseVersion() rejects malformed and too-old version messages", () => {
  for (
    const input of [
      "RFB 002.000\n",
      "RFB 003.008 ",
      "rfb 003.008\n",
      "RFB 3.8\n    ",
      "HTTP/1.1 200",
      "RFB 00a.008\n",
      "\0\0\0\0\0\0\0\0\0\0\0\0",
    ]
  ) {
    assert.throws(() => parseVersion(enc(input)), RfbError, JSON.stringify(input));
  }
});

Deno.test("encodeVersion() writes the 12-byte ProtocolVersion message", () => {
  assert.equal(new TextDecoder().decode(encodeVersion("3.8")), "RFB 003.008\n");
  assert.equal(new TextDecoder().decode(encodeVersion("3.7")), "RFB 003.007\n");
  assert.equal(new TextDecoder().decode(encodeVersion("3.3")), "RFB 003.003\n");
});

Deno.test("lowerVersion() picks the version both ends speak", () => {
  assert.equal(lowerVersion("3.3", "3.8"), "3.3");
  assert.equal(lowerVersion("3.8", "3.7"), "3.7");
  assert.equal(lowerVersion("3.8", "3.8"), "3.8");
});

Deno.test("encodeSecurityOffer() sends a u32 on 3.3 and a list on 3.7/3.8", () => {
  assert.deepEqual([...encodeSecurityOffer("3.3", [2])], [0, 0, 0, 2]);
  assert.deepEqual([...encodeSecurityOffer("3.7", [2])], [1, 2]);
  assert.deepEqual([...encodeSecurityOffer("3.8", [2])], [1, 2]);
});

Deno.test("encodeSecurityResult() adds the reason only to a 3.8 failure", () => {
  assert.deepEqual([...encodeSecurityResult("3.8", { ok: true })], [0, 0, 0, 0]);
  assert.deepEqual([...encodeSecurityResult("3.3", { ok: false, reason: "x" })], [0, 0, 0, 1]);
  assert.deepEqual([...encodeSecurityResult("3.7", { ok: false, reason: "x" })], [0, 0, 0, 1]);
  assert.deepEqual([...encodeSecurityResult("3.8", { ok: false, reason: "no" })], [
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    2,
    110,
    111,
  ]);
});

Deno.test("cleanReason() strips NUL and control characters and caps the length", () => {
  assert.equal(cleanReason(enc("Too many clients\0")), "Too many clients");
  assert.equal(cleanReason(enc("a\nb\r\x1b[31mc")), "ab[31mc");
  assert.equal(cleanReason(enc("x".repeat(1000))).length, 256);
});
