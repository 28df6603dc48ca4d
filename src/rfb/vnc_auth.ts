/**
 * VNC Authentication (RFC 6143 §7.2.2): the 16-byte challenge and the DES
 * response computed with the password as key.
 *
 * The key is the password's first 8 bytes, NUL-padded, with each byte's
 * bits reversed (the RFB convention inherited from the d3des code VNC
 * shipped). Reversed, a byte's top bit lands on the DES parity bit, which
 * DES ignores: characters that differ only in bit 7 (`é` and `i`) are the
 * same password. `node:crypto` has no `des-ecb`, but `des-ede3-cbc` with
 * the key repeated three times and a zero IV, applied to one 8-byte block
 * at a time, is single DES in ECB mode.
 *
 * @module
 */

import { createCipheriv, randomBytes, timingSafeEqual } from "node:crypto";
import { CHALLENGE_LENGTH } from "./rfb_messages.ts";

/** Returns a fresh random challenge from a CSPRNG. */
export function newChallenge(): Uint8Array {
  return new Uint8Array(randomBytes(CHALLENGE_LENGTH));
}

/**
 * Computes the response a viewer must send for `challenge` and `password`.
 * The password must be Latin-1 (the control request parser ensures it).
 */
export function vncAuthResponse(password: string, challenge: Uint8Array): Uint8Array {
  if (challenge.length !== CHALLENGE_LENGTH) {
    throw new RangeError(`Challenge must be ${CHALLENGE_LENGTH} bytes, got ${challenge.length}`);
  }
  const key = new Uint8Array(24);
  for (let i = 0; i < 8; i++) {
    const code = i < password.length ? password.charCodeAt(i) & 0xff : 0;
    key[i] = key[i + 8] = key[i + 16] = reverseBits(code);
  }
  const response = new Uint8Array(CHALLENGE_LENGTH);
  for (let block = 0; block < CHALLENGE_LENGTH; block += 8) {
    const cipher = createCipheriv("des-ede3-cbc", key, new Uint8Array(8));
    cipher.setAutoPadding(false);
    response.set(cipher.update(challenge.subarray(block, block + 8)), block);
  }
  key.fill(0);
  return response;
}

/** Checks a viewer's response in constant time. */
export function verifyVncAuthResponse(
  password: string,
  challenge: Uint8Array,
  response: Uint8Array,
): boolean {
  const expected = vncAuthResponse(password, challenge);
  return response.length === expected.length && timingSafeEqual(expected, response);
}

function reverseBits(byte: number): number {
  let result = 0;
  for (let bit = 0; bit < 8; bit++) {
    if (byte & (1 << bit)) result |= 1 << (7 - bit);
  }
  return result;
}
