/**
 * Property-based tests of the control request reader `readRequestText()`
 * over an in-memory `Duplex` fed any segmentation of generated, mutated
 * and random bytes.
 */

import assert from "node:assert/strict";
import {
  JsonObjectScanner,
  parseForwardRequest,
} from "../../../src/control/snf/control_message.ts";
import { readRequestText } from "../../../src/control/snf/control_server.ts";
import { RefusalError } from "../../../src/errors.ts";
import { assertProperty, fc, mutated, ScriptedDuplex, segmentation } from "../../_util/property.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Every reason `readRequestText()` may give. */
const REASON = /^malformed request: (too large|empty|incomplete JSON|not a JSON object)$/;

/** Outcome of reading a request: its text, or the refusal's reason. */
type Outcome = { text: string } | { reason: string };

/**
 * What reading `bytes` must give within `maxBytes`, and the offset of the
 * byte that decides it (the read that returns it may be the last one):
 * the scanner fed the whole input one byte at a time.
 */
function expected(bytes: Uint8Array, maxBytes: number): { outcome: Outcome; decidedAt: number } {
  const scanner = new JsonObjectScanner();
  const limit = Math.min(bytes.length, maxBytes);
  for (let i = 0; i < limit; i++) {
    try {
      if (scanner.feed(bytes.subarray(i, i + 1)) !== undefined) {
        return { outcome: { text: decoder.decode(bytes.subarray(0, i + 1)) }, decidedAt: i };
      }
    } catch {
      return { outcome: { reason: "malformed request: not a JSON object" }, decidedAt: i };
    }
  }
  if (bytes.length >= maxBytes) {
    return { outcome: { reason: "malformed request: too large" }, decidedAt: maxBytes - 1 };
  }
  return {
    outcome: {
      reason: bytes.length === 0
        ? "malformed request: empty"
        : "malformed request: incomplete JSON",
    },
    decidedAt: bytes.length,
  };
}

async function read(duplex: ScriptedDuplex, maxBytes: number): Promise<Outcome> {
  try {
    return { text: await readRequestText(duplex, { maxBytes }) };
  } catch (error) {
    assert.ok(error instanceof RefusalError, `not a RefusalError: ${String(error)}`);
    assert.match(error.message, REASON);
    return { reason: error.message };
  }
}

/** A plausible request: JSON object text, maybe indented, maybe after blanks. */
const requestText = fc.tuple(
  fc.constantFrom("", " ", "\n", "\r\n\t "),
  fc.record({
    auth_user: fc.string({ unit: "binary", maxLength: 12 }),
    auth_password: fc.string({ unit: "binary", maxLength: 12 }),
    destination_address: fc.constantFrom("10.0.0.5", "vnc.example.org", "[::1]"),
    destination_port: fc.integer({ min: 1, max: 65535 }),
    password: fc.stringMatching(/^[ -~]{1,12}$/),
    extra: fc.jsonValue({ maxDepth: 2 }),
  }),
  fc.constantFrom<string | number | undefined>(undefined, 2, "\t"),
).map(([blank, fields, indent]) => blank + JSON.stringify(fields, null, indent));

/** What a client may send after its object: nothing, a newline, more JSON, junk. */
const trailing = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.constant(encoder.encode("\n")),
  fc.constant(encoder.encode('{"second": 1}')),
  fc.uint8Array({ minLength: 1, maxLength: 16 }),
);

function assertBoundedReads(duplex: ScriptedDuplex, maxBytes: number, decidedAt: number): void {
  for (const { at, length } of duplex.requests) {
    // The buffer offered never runs past the size bound, nor reads go on
    // once the deciding byte is in.
    assert.ok(at + length <= maxBytes, `a read of ${length} at ${at} exceeds ${maxBytes}`);
    assert.ok(length <= 16 * 1024);
    assert.ok(at <= decidedAt, `read at ${at} after the outcome was decided at ${decidedAt}`);
  }
}

Deno.test("readRequestText() returns exactly the object of every valid request, however it is split", async () => {
  await assertProperty(
    fc.asyncProperty(
      requestText,
      trailing,
      segmentation(),
      fc.nat(64),
      async (text, after, segments, slack) => {
        const head = encoder.encode(text);
        const maxBytes = head.length + slack;
        const duplex = new ScriptedDuplex(new Uint8Array([...head, ...after]), segments);
        assert.deepEqual(await read(duplex, maxBytes), { text });
        assertBoundedReads(duplex, maxBytes, head.length - 1);
        // The reader's text is what the validator gets.
        parseForwardRequest(text);
      },
    ),
  );
});

Deno.test("readRequestText() gives the same text or reason for any bytes whatever the segmentation", async () => {
  const input = fc.oneof(
    mutated(requestText.map((text) => encoder.encode(text))),
    fc.uint8Array({ maxLength: 48 }),
    // Unbalanced and string-heavy inputs, where the scanner's state matters.
    fc.array(fc.constantFrom(...'{}[]"\\ a\n'), { maxLength: 40 }).map((chars) =>
      encoder.encode(`{${chars.join("")}`)
    ),
  );
  await assertProperty(
    fc.asyncProperty(
      input,
      segmentation(),
      fc.integer({ min: 1, max: 300 }),
      async (bytes, segments, maxBytes) => {
        const { outcome, decidedAt } = expected(bytes, maxBytes);
        const duplex = new ScriptedDuplex(bytes, segments);
        assert.deepEqual(await read(duplex, maxBytes), outcome);
        assertBoundedReads(duplex, maxBytes, decidedAt);
      },
    ),
  );
});
