/**
 * Property-based tests of `authenticateViewer()` (RFC 6143 §7.1, §7.2.2)
 * against a scripted in-memory viewer: right and wrong responses at every
 * version, and mutated or random viewer bytes, in any segmentation. A small
 * model of the server side says what each script must give, what the proxy
 * must send and how many bytes it may take.
 */

import assert from "node:assert/strict";
import { RfbError } from "../../src/errors.ts";
import { UnexpectedEofError } from "../../src/io/byte_reader.ts";
import { authenticateViewer } from "../../src/rfb/client_handshake.ts";
import { encodeU32 } from "../../src/rfb/rfb_messages.ts";
import { vncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import {
  assertProperty,
  concat,
  fc,
  mutated,
  ScriptedDuplex,
  segmentation,
} from "../_util/property.ts";

const encoder = new TextEncoder();

/** What the handshake must give, send and take. */
interface Expected {
  readonly outcome: { version: string } | { error: string; message: string };
  readonly consumed: number;
  readonly written: Uint8Array;
}

/** The server side of the handshake as the proxy plays it, over a whole viewer script. */
function model(script: Uint8Array, password: string, challenge: Uint8Array): Expected {
  let at = 0;
  const written: Uint8Array[] = [encoder.encode("RFB 003.008\n")];
  const take = (n: number): Uint8Array | undefined => {
    if (at + n > script.length) return undefined;
    at += n;
    return script.subarray(at - n, at);
  };
  const end = (outcome: Expected["outcome"]): Expected => ({
    outcome,
    consumed: at,
    written: concat(written),
  });
  const eof = (): Expected => {
    at = script.length;
    return end({ error: "UnexpectedEofError", message: "" });
  };
  const failed = (version: string, reason: string): Uint8Array =>
    version === "3.8"
      ? concat([encodeU32(1), encodeU32(encoder.encode(reason).length), encoder.encode(reason)])
      : encodeU32(1);

  const versionBytes = take(12);
  if (versionBytes === undefined) return eof();
  const match = /^RFB ([0-9]{3})\.([0-9]{3})\n$/.exec(String.fromCharCode(...versionBytes));
  if (match === null) {
    return end({ error: "RfbError", message: "Invalid protocol version message" });
  }
  const [major, minor] = [Number(match[1]), Number(match[2])];
  if (major < 3) {
    return end({ error: "RfbError", message: `Unsupported protocol version ${major}.${minor}` });
  }
  const version = major > 3 || minor >= 8 ? "3.8" : minor === 7 ? "3.7" : "3.3";
  written.push(version === "3.3" ? encodeU32(2) : Uint8Array.of(1, 2));
  if (version !== "3.3") {
    const chosen = take(1)?.[0];
    if (chosen === undefined) return eof();
    if (chosen !== 2) {
      const reason = `Security type ${chosen} is not offered`;
      written.push(failed(version, reason));
      return end({ error: "RfbError", message: reason });
    }
  }
  written.push(challenge);
  const response = take(16);
  if (response === undefined) return eof();
  const right = vncAuthResponse(password, challenge);
  if (!right.every((byte, i) => response[i] === byte)) {
    written.push(failed(version, "Authentication failed"));
    return end({ error: "ViewerAuthError", message: "Authentication failed" });
  }
  written.push(encodeU32(0));
  return end({ version });
}

/** A one-time password as the control request allows it: Latin-1, not empty. */
const password = fc.string({
  unit: fc.integer({ min: 1, max: 0xff }).map((c) => String.fromCharCode(c)),
  minLength: 1,
  maxLength: 16,
});
const challenge = fc.uint8Array({ minLength: 16, maxLength: 16 });

const versionMessage = fc.oneof(
  fc.constantFrom("RFB 003.003\n", "RFB 003.007\n", "RFB 003.008\n", "RFB 003.889\n"),
  fc.tuple(fc.integer({ min: 3, max: 999 }), fc.integer({ min: 0, max: 999 })).map(([a, b]) =>
    `RFB ${String(a).padStart(3, "0")}.${String(b).padStart(3, "0")}\n`
  ),
).map((text) => encoder.encode(text));

/**
 * What a well-behaved viewer sends at `version`: its version, its pick of
 * VNC Authentication (not on 3.3), and the response to `bytes` computed
 * with `wrong` when given, else with the right password `secret`.
 */
function viewerScript(
  version: Uint8Array,
  secret: string,
  bytes: Uint8Array,
  wrong: string | undefined,
): Uint8Array {
  const minor = Number(String.fromCharCode(...version.subarray(8, 11)));
  const major = Number(String.fromCharCode(...version.subarray(4, 7)));
  const picks = major > 3 || minor >= 7 ? [Uint8Array.of(2)] : [];
  return concat([version, ...picks, vncAuthResponse(wrong ?? secret, bytes)]);
}

const scenario = fc.record({
  version: versionMessage,
  password,
  challenge,
  wrong: fc.option(password, { nil: undefined }),
  clientInit: fc.uint8Array({ maxLength: 8 }),
});

/**
 * The part of a password VNC Authentication uses: the first 8 bytes
 * (RFC 6143 §7.2.2), each without its top bit, which the RFB bit reversal
 * turns into the DES parity bit that DES ignores (so `"é"` and `"i"` are
 * the same key).
 */
function desKey(secret: string): string {
  return [...secret.slice(0, 8).padEnd(8, "\0")].map((c) => c.charCodeAt(0) & 0x7f).join(",");
}

/** Runs `authenticateViewer()` with `script` as the viewer. */
async function run(script: Uint8Array, secret: string, bytes: Uint8Array, segments: number[]) {
  const viewer = new ScriptedDuplex(script, segments);
  let outcome: Expected["outcome"];
  try {
    outcome = { version: await authenticateViewer(viewer, secret, { challenge: () => bytes }) };
  } catch (error) {
    assert.ok(
      error instanceof RfbError || error instanceof UnexpectedEofError,
      `not an RfbError or UnexpectedEofError: ${String(error)}`,
    );
    assert.notEqual(error.message, "", "an error without a reason");
    assertNoSecret(error.message, secret, bytes);
    outcome = { error: error.name, message: error instanceof RfbError ? error.message : "" };
  }
  return { outcome, viewer };
}

/** Neither the password nor the expected response appears in `text`. */
function assertNoSecret(text: string, secret: string, bytes: Uint8Array): void {
  if (secret.length >= 4) assert.ok(!text.includes(secret), "the password in an error message");
  const response = vncAuthResponse(secret, bytes);
  for (
    const form of [
      [...response].map((b) => b.toString(16).padStart(2, "0")).join(""),
      btoa(String.fromCharCode(...response)),
    ]
  ) {
    assert.ok(!text.includes(form), "the expected response in an error message");
  }
}

Deno.test("authenticateViewer() accepts the right response at every version and rejects a wrong one, leaving ClientInit unread, however it is split", async () => {
  await assertProperty(
    fc.asyncProperty(scenario, segmentation(), async (s, segments) => {
      const handshake = viewerScript(s.version, s.password, s.challenge, s.wrong);
      const script = concat([handshake, s.clientInit]);
      const expected = model(script, s.password, s.challenge);
      const { outcome, viewer } = await run(script, s.password, s.challenge, [...segments]);
      assert.deepEqual(outcome, expected.outcome);
      const same = s.wrong === undefined || desKey(s.wrong) === desKey(s.password);
      assert.equal("version" in outcome, same);
      assert.equal(viewer.position, handshake.length, "read into ClientInit");
      assert.deepEqual(viewer.written, expected.written);
    }),
  );
});

Deno.test("authenticateViewer() answers mutated or random viewer bytes as the model does, never reading further", async () => {
  const input = scenario.chain((s) =>
    fc.tuple(
      fc.constant(s),
      fc.oneof(
        {
          weight: 4,
          arbitrary: mutated(
            fc.constant(viewerScript(s.version, s.password, s.challenge, undefined)),
          ),
        },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) },
      ),
    )
  );
  await assertProperty(
    fc.asyncProperty(input, segmentation(), async ([s, script], segments) => {
      const expected = model(script, s.password, s.challenge);
      const { outcome, viewer } = await run(script, s.password, s.challenge, [...segments]);
      assert.deepEqual(outcome, expected.outcome);
      assert.equal(viewer.position, expected.consumed);
      assert.deepEqual(viewer.written, expected.written);
    }),
  );
});
