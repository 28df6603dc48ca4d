/**
 * Pure encoders and decoders for the RFB handshake messages (RFC 6143 §7.1),
 * with no I/O, so tables of valid and invalid input are tested without
 * sockets.
 *
 * @module
 */

import { RfbError } from "../errors.ts";

/** The protocol versions the proxy speaks, after normalisation. */
export type RfbVersion = "3.3" | "3.7" | "3.8";

/** Length of a ProtocolVersion message: `RFB xxx.yyy\n` (RFC 6143 §7.1.1). */
export const VERSION_LENGTH = 12;
/** Security type 0: the handshake failed; a reason follows (§7.1.2). */
export const SECURITY_INVALID = 0;
/** Security type 1: None (§7.2.1). */
export const SECURITY_NONE = 1;
/** Security type 2: VNC Authentication (§7.2.2). */
export const SECURITY_VNC_AUTH = 2;
/** Length of the VNC Authentication challenge and response (§7.2.2). */
export const CHALLENGE_LENGTH = 16;
/** Longest reason string kept from a peer, in bytes (enough for any real one). */
export const MAX_REASON_BYTES = 256;

const VERSION_PATTERN = /^RFB (\d{3})\.(\d{3})\n$/;

/**
 * Parses a ProtocolVersion message and maps it to the version to speak.
 *
 * RFC 6143 §7.1.1: versions other than 3.3, 3.7 and 3.8 are to be treated
 * as 3.3; we also treat anything above 3.8 (e.g. Apple's 3.889, or 4.x) as
 * 3.8 (later minor versions are 3.8 with extensions we do not speak).
 *
 * @throws {RfbError} when `bytes` is not a ProtocolVersion message.
 */
export function parseVersion(bytes: Uint8Array): RfbVersion {
  const text = String.fromCharCode(...bytes);
  const match = VERSION_PATTERN.exec(text);
  if (match === null) throw new RfbError("Invalid protocol version message");
  const major = Number(match[1]);
  const minor = Number(match[2]);
  if (major < 3) throw new RfbError(`Unsupported protocol version ${major}.${minor}`);
  if (major > 3 || minor >= 8) return "3.8";
  if (minor === 7) return "3.7";
  return "3.3";
}

/** Encodes a ProtocolVersion message, e.g. `RFB 003.008\n`. */
export function encodeVersion(version: RfbVersion): Uint8Array {
  const minor = version.split(".")[1]!.padStart(3, "0");
  return new TextEncoder().encode(`RFB 003.${minor}\n`);
}

/** The lower of two versions: what both ends can speak. */
export function lowerVersion(a: RfbVersion, b: RfbVersion): RfbVersion {
  return Number(a.split(".")[1]) <= Number(b.split(".")[1]) ? a : b;
}

/** Encodes a big-endian u32. */
export function encodeU32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value);
  return bytes;
}

/**
 * Encodes the server's security offer: a u32 type for 3.3 (§7.1.2, "the
 * server decides"), a count and list of types for 3.7 and 3.8.
 */
export function encodeSecurityOffer(version: RfbVersion, types: readonly number[]): Uint8Array {
  if (version === "3.3") return encodeU32(types[0] ?? SECURITY_INVALID);
  return Uint8Array.from([types.length, ...types]);
}

/**
 * Encodes a SecurityResult (§7.1.3): u32 0 for OK, 1 for failed, followed
 * on 3.8 by a length-prefixed reason string.
 */
export function encodeSecurityResult(
  version: RfbVersion,
  result: { ok: true } | { ok: false; reason: string },
): Uint8Array {
  if (result.ok) return encodeU32(0);
  if (version !== "3.8") return encodeU32(1);
  const reason = new TextEncoder().encode(result.reason);
  const bytes = new Uint8Array(8 + reason.length);
  bytes.set(encodeU32(1), 0);
  bytes.set(encodeU32(reason.length), 4);
  bytes.set(reason, 8);
  return bytes;
}

/**
 * Turns a reason string from a peer into text safe for a reply or a log
 * line: at most {@linkcode MAX_REASON_BYTES} bytes, control characters and
 * NUL removed (QEMU ends its reasons with a NUL), invalid UTF-8 replaced.
 */
export function cleanReason(bytes: Uint8Array): string {
  const text = new TextDecoder().decode(bytes.subarray(0, MAX_REASON_BYTES));
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "").trim();
}
