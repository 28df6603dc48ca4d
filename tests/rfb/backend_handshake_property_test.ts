/**
 * Property-based tests of `openBackend()`'s RFB handshake (RFC 6143 §7.1)
 * against a scripted in-memory VNC server: generated handshakes at every
 * version, refusals, and mutated or random server bytes, in any
 * segmentation. A small model of the client side of the handshake says
 * what each script must give and how many bytes it may take.
 */

import assert from "node:assert/strict";
import { RefusalError } from "../../src/errors.ts";
import { silentLogger } from "../../src/log.ts";
import { openBackend } from "../../src/rfb/backend_handshake.ts";
import { cleanReason, encodeU32, MAX_REASON_BYTES } from "../../src/rfb/rfb_messages.ts";
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

/** Every reason `openBackend()` may give once connected. */
const REASON =
  /^(VNC server (requires authentication|requires TLS|closed the connection|sent an invalid handshake|refused|refused authentication|refused: .+|handshake failed))$/s;

/** What the handshake must give for a script, and what the proxy must have sent. */
interface Expected {
  readonly outcome: { version: string } | { reason: string };
  /** Bytes of the script the handshake takes. */
  readonly consumed: number;
  /** Bytes the proxy writes to the server. */
  readonly written: Uint8Array;
}

/** The client side of RFC 6143 §7.1 as the proxy plays it, over a whole script. */
function model(script: Uint8Array): Expected {
  let at = 0;
  const written: Uint8Array[] = [];
  const take = (n: number): Uint8Array | undefined => {
    if (at + n > script.length) return undefined;
    at += n;
    return script.subarray(at - n, at);
  };
  const u32 = (): number | undefined => {
    const bytes = take(4);
    return bytes && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  };
  const end = (outcome: Expected["outcome"]): Expected => ({
    outcome,
    consumed: outcome === EOF ? script.length : at,
    written: concat(written),
  });
  // A refused handshake says "refused"; a failed SecurityResult, "refused authentication".
  const refusal = (empty = "VNC server refused"): Expected => {
    const length = u32();
    const reason = length === undefined ? undefined : take(Math.min(length, MAX_REASON_BYTES));
    if (reason === undefined) return end(EOF);
    const text = cleanReason(reason);
    return end({ reason: text === "" ? empty : `VNC server refused: ${text}` });
  };
  // No password and no TLS asked for: None, or why not.
  const without = (types: ArrayLike<number>): string => {
    const offered = Array.from(types);
    if (offered.includes(2)) return "VNC server requires authentication";
    if (offered.includes(18) || offered.includes(19)) return "VNC server requires TLS";
    return "VNC server requires authentication";
  };

  const versionBytes = take(12);
  if (versionBytes === undefined) return end(EOF);
  const match = /^RFB ([0-9]{3})\.([0-9]{3})\n$/.exec(String.fromCharCode(...versionBytes));
  if (match === null || Number(match[1]) < 3) {
    return end({ reason: "VNC server sent an invalid handshake" });
  }
  const [major, minor] = [Number(match[1]), Number(match[2])];
  const version = major > 3 || minor >= 8 ? "3.8" : minor === 7 ? "3.7" : "3.3";
  written.push(encoder.encode(`RFB 003.00${version.at(-1)}\n`));
  if (version === "3.3") {
    const type = u32();
    if (type === undefined) return end(EOF);
    if (type === 0) return refusal();
    return end(type === 1 ? { version } : { reason: without([type]) });
  }
  const count = take(1)?.[0];
  if (count === undefined) return end(EOF);
  if (count === 0) return refusal();
  const types = take(count);
  if (types === undefined) return end(EOF);
  if (!types.includes(1)) return end({ reason: without(types) });
  written.push(Uint8Array.of(1));
  if (version === "3.8") {
    const result = u32();
    if (result === undefined) return end(EOF);
    if (result !== 0) return refusal("VNC server refused authentication");
  }
  return end({ version });
}

const EOF = { reason: "VNC server closed the connection" };

/** Runs `openBackend()` against `script`; the outcome and the fake server. */
async function run(
  script: Uint8Array,
  segments: Segmentation,
): Promise<{ outcome: Expected["outcome"]; server: ScriptedDuplex }> {
  const server = new ScriptedDuplex(script, segments);
  try {
    const backend = await openBackend({ host: "192.0.2.7", port: 5900 }, {
      retries: 1,
      retryWaitMs: 0,
      signal: new AbortController().signal,
      logger: silentLogger,
      connect: () => Promise.resolve(server.asConn()),
    });
    assert.ok(!server.closed, "the backend was closed on success");
    backend.duplex.close();
    return { outcome: { version: backend.version }, server };
  } catch (error) {
    assert.ok(error instanceof RefusalError, `not a RefusalError: ${String(error)}`);
    assert.match(error.message, REASON);
    assert.ok(server.closed, "the backend was left open after a refusal");
    return { outcome: { reason: error.message }, server };
  }
}

const versionMessage = fc.oneof(
  fc.constantFrom("RFB 003.003\n", "RFB 003.007\n", "RFB 003.008\n", "RFB 003.889\n"),
  fc.tuple(fc.integer({ min: 3, max: 999 }), fc.integer({ min: 0, max: 999 })).map(([a, b]) =>
    `RFB ${String(a).padStart(3, "0")}.${String(b).padStart(3, "0")}\n`
  ),
).map((text) => encoder.encode(text));

/** A server's reason string: text, junk, or longer than the proxy keeps. */
const reasonBytes = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }).map((text) => encoder.encode(text)),
  fc.uint8Array({ maxLength: 40 }),
  fc.uint8Array({ minLength: MAX_REASON_BYTES - 2, maxLength: MAX_REASON_BYTES + 40 }),
);
const withLength = (bytes: Uint8Array) => concat([encodeU32(bytes.length), bytes]);

/** Security types offered with None among them, or without it. */
const offer = (withNone: boolean) =>
  fc.tuple(
    fc.array(fc.integer({ min: 0, max: 255 }).filter((t) => t !== 1), { maxLength: 12 }),
    fc.nat(),
  ).map(([others, at]) => {
    const types = withNone ? others.toSpliced(at % (others.length + 1), 0, 1) : others;
    return Uint8Array.from([types.length, ...types]);
  }).filter((bytes) => bytes[0]! > 0);

/** A complete, well-formed server side of the handshake, ending in success or a refusal. */
const handshakeScript = fc.tuple(
  versionMessage,
  fc.constantFrom("ok", "refuse", "auth only"),
  offer(true),
  offer(false),
  reasonBytes,
  fc.integer({ min: 1, max: 0xffffffff }),
).map(([version, how, withNone, withoutNone, reason, failure]) => {
  const minor = Number(String.fromCharCode(...version.subarray(8, 11)));
  const major = Number(String.fromCharCode(...version.subarray(4, 7)));
  const speaks = major > 3 || minor >= 8 ? "3.8" : minor === 7 ? "3.7" : "3.3";
  const parts: Uint8Array[] = [version];
  if (speaks === "3.3") {
    if (how === "ok") parts.push(encodeU32(1));
    else if (how === "refuse") parts.push(encodeU32(0), withLength(reason));
    else parts.push(encodeU32(failure === 1 ? 2 : failure));
  } else if (how === "auth only") {
    parts.push(withoutNone);
  } else if (how === "refuse" && speaks === "3.7") {
    parts.push(Uint8Array.of(0), withLength(reason));
  } else {
    parts.push(withNone);
    if (speaks === "3.8") {
      parts.push(how === "ok" ? encodeU32(0) : concat([encodeU32(failure), withLength(reason)]));
    }
  }
  return { bytes: concat(parts), succeeds: how === "ok" };
});

/** What a server sends right after the handshake (ServerInit): must stay unread. */
const after = fc.uint8Array({ maxLength: 24 });

Deno.test("openBackend() completes every well-formed handshake and leaves what follows unread, however it is split", async () => {
  await assertProperty(
    fc.asyncProperty(handshakeScript, after, segmentation(), async (script, rest, segments) => {
      const input = concat([script.bytes, rest]);
      const expected = model(input);
      const { outcome, server } = await run(input, segments);
      assert.deepEqual(outcome, expected.outcome);
      assert.equal("version" in outcome, script.succeeds);
      // A refusal's reason may be longer than the part the proxy reads.
      if (script.succeeds) assert.equal(expected.consumed, script.bytes.length);
      assert.equal(server.position, expected.consumed, "read past what the handshake needs");
      assert.deepEqual(server.written, expected.written);
    }),
  );
});

Deno.test("openBackend() answers mutated or random server bytes as the model does, never reading further", async () => {
  const script = fc.oneof(
    { weight: 4, arbitrary: mutated(handshakeScript.map((s) => s.bytes)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) },
  );
  await assertProperty(
    fc.asyncProperty(script, segmentation(), async (bytes, segments) => {
      const expected = model(bytes);
      const { outcome, server } = await run(bytes, segments);
      assert.deepEqual(outcome, expected.outcome);
      assert.equal(server.position, expected.consumed);
      assert.deepEqual(server.written, expected.written);
    }),
  );
});
