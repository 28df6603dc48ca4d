/**
 * Property-based tests of the request-head parser (RFC 9112) and of
 * `readRequestHead()`, fed generated, mutated and random bytes in any
 * segmentation.
 */

import assert from "node:assert/strict";
import { findHeadEnd, parseRequestHead, readRequestHead } from "../../src/http/request_head.ts";
import {
  assertProperty,
  concat,
  fc,
  mutated,
  ScriptedDuplex,
  segmentation,
} from "../_util/property.ts";

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

/** `findHeadEnd()` as `readRequestHead()` calls it: once per read, from where it stopped. */
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

/** Whether a peer sending in `segments` pauses exactly at byte `at` (cyclic sizes). */
function pausesAt(at: number, segments: readonly number[]): boolean {
  let position = 0;
  for (let i = 0; position < at; i++) position += Math.max(1, segments[i % segments.length]!);
  return position === at;
}

Deno.test("readRequestHead() returns exactly the head however it arrives, 400 when bytes come with it, 431 past maxBytes", async () => {
  await assertProperty(
    fc.asyncProperty(
      validHead,
      fc.uint8Array({ maxLength: 16 }),
      segmentation(),
      fc.boolean(),
      async ({ bytes }, body, segments, tooSmall) => {
        const maxBytes = tooSmall ? Math.max(1, bytes.length - 1) : bytes.length + body.length;
        const duplex = new ScriptedDuplex(concat([bytes, body]), segments);
        const result = await readRequestHead(duplex, { maxBytes });
        // No read asks for more than the bound leaves room for.
        for (const { at, length } of duplex.requests) assert.ok(at + length <= maxBytes);
        if (tooSmall) {
          assert.equal(result, 431);
          assert.equal(duplex.position, maxBytes);
        } else if (body.length === 0 || pausesAt(bytes.length, segments)) {
          assert.deepEqual(result, bytes);
          assert.equal(duplex.position, bytes.length, "read past the head");
        } else {
          assert.equal(result, 400);
        }
      },
    ),
  );
});
