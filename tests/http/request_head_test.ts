import assert from "node:assert/strict";
import type { ConnectionSlot } from "../../src/io/connection_slots.ts";
import {
  DEFAULT_MAX_HEAD_BYTES,
  findHeadEnd,
  headerTokens,
  parseRequestHead,
  pathForLog,
  readRequestHead,
} from "../../src/http/request_head.ts";
import { ScriptedDuplex } from "../_util/property.ts";

const encoder = new TextEncoder();

/** A slot that counts its touches. */
function countingSlot(): ConnectionSlot & { touches: number } {
  return {
    address: "192.0.2.7:51234",
    evicted: false,
    touches: 0,
    touch() {
      this.touches++;
    },
    complete() {},
    [Symbol.dispose]() {},
  };
}

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

Deno.test("readRequestHead() takes a head sent one byte at a time and touches the slot on every read", async () => {
  const head = encoder.encode("GET /websockify HTTP/1.1\r\nHost: x\r\n\r\n");
  const duplex = new ScriptedDuplex(head, [1]);
  const slot = countingSlot();
  assert.deepStrictEqual(await readRequestHead(duplex, { slot }), head);
  assert.equal(duplex.requests.length, head.length);
  assert.equal(slot.touches, head.length);
  assert.equal(duplex.written.length, 0);
});

Deno.test("readRequestHead() never reads past a head that ends a read", async () => {
  const head = encoder.encode("GET / HTTP/1.1\r\n\r\n");
  // The next segment (a client's first frame, say) stays in the stream.
  const duplex = new ScriptedDuplex(encoder.encode("GET / HTTP/1.1\r\n\r\nnext"), [3, 15, 4]);
  assert.deepStrictEqual(await readRequestHead(duplex), head);
  assert.equal(duplex.position, head.length);
});

Deno.test("readRequestHead() returns 400 for bytes after the head in the same read", async () => {
  const duplex = new ScriptedDuplex(encoder.encode("GET / HTTP/1.1\r\n\r\n\x82\x80"));
  assert.equal(await readRequestHead(duplex), 400);
});

Deno.test("readRequestHead() returns 431 after maxBytes without a blank line, reading no further", async () => {
  const long = encoder.encode(`GET / HTTP/1.1\r\nX: ${"a".repeat(200)}\r\n\r\n`);
  const duplex = new ScriptedDuplex(long, [7]);
  assert.equal(await readRequestHead(duplex, { maxBytes: 100 }), 431);
  assert.equal(duplex.position, 100);
  // A head of exactly maxBytes fits.
  assert.deepStrictEqual(
    await readRequestHead(new ScriptedDuplex(long), { maxBytes: long.length }),
    long,
  );
  const big = encoder.encode(`GET / HTTP/1.1\r\nX: ${"a".repeat(DEFAULT_MAX_HEAD_BYTES)}\r\n\r\n`);
  assert.equal(await readRequestHead(new ScriptedDuplex(big)), 431);
});

Deno.test("readRequestHead() throws when the connection ends before the blank line", async () => {
  const slot = countingSlot();
  const duplex = new ScriptedDuplex(encoder.encode("GET / HTTP/1.1\r\n"), [1]);
  await assert.rejects(readRequestHead(duplex, { slot }), /before a complete request head/);
  // The final read (end of stream) touches the slot too.
  assert.equal(slot.touches, 17);
});

Deno.test("pathForLog() keeps neither the query nor the fragment, and bounds the length", () => {
  const table: [string, string][] = [
    ["/websockify?token=SECRET", "/websockify"],
    ["/a/b#frag?x", "/a/b"],
    ["/", "/"],
    ["http://example.org/path?token=SECRET", "/path"],
    ["*", "(unparsed target)"],
    [`/${"a".repeat(150)}`, `/${"a".repeat(99)}...`],
  ];
  for (const [target, expected] of table) assert.equal(pathForLog(target), expected, target);
});

/** One byte per character, as a client sending Latin-1 would. */
function latin1(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => char.charCodeAt(0));
}
