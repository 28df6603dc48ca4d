/**
 * VNC Authentication (RFC 6143 §7.2.2): the 16-byte challenge and the DES
 * response computed with the password as key.
 *
 * The key is the password's first 8 bytes, NUL-padded, with each byte's
 * bits reversed (the RFB convention inherited from the d3des code VNC
 * shipped). Reversed, a byte's top bit lands on the DES parity bit, which
 * DES ignores: characters that differ only in bit 7 (`é` and `i`) are the
 * same password. The DES is `des.ts`, with the key schedule computed once
 * per {@linkcode VncAuthKey}, so one more response costs two DES blocks
 * (`node:crypto` has no single DES; `des-ede3-cbc` with the key repeated
 * needed a cipher object per block, about 10 µs where this takes 0.2 µs).
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import { DES_BLOCK_LENGTH, DesKey } from "./des.ts";
import { CHALLENGE_LENGTH } from "./rfb_messages.ts";

/** Returns a fresh random challenge from a CSPRNG. */
export function newChallenge(): Uint8Array {
  return new Uint8Array(randomBytes(CHALLENGE_LENGTH));
}

/**
 * A password prepared for VNC Authentication: its DES key derived and
 * scheduled once, so each response or check costs two DES blocks and no
 * allocation. {@linkcode VncAuthKey.clear} wipes it.
 */
export class VncAuthKey {
  /** The effective key: parity bits cleared, so equal keys are equal bytes. */
  readonly #key: Uint8Array;
  readonly #des: DesKey;
  readonly #block = new Uint8Array(DES_BLOCK_LENGTH);

  /** Prepares `password`, which must be Latin-1 (the control request parser ensures it). */
  constructor(password: string) {
    this.#key = new Uint8Array(DES_BLOCK_LENGTH);
    for (let i = 0; i < DES_BLOCK_LENGTH; i++) {
      const code = i < password.length ? password.charCodeAt(i) & 0xff : 0;
      // Bit 0 after the reversal is the parity bit DES ignores (FIPS 46-3).
      this.#key[i] = reverseBits(code) & 0xfe;
    }
    this.#des = new DesKey(this.#key);
  }

  /** The response a viewer must send for `challenge`. */
  response(challenge: Uint8Array): Uint8Array {
    checkChallenge(challenge);
    const response = new Uint8Array(CHALLENGE_LENGTH);
    for (let block = 0; block < CHALLENGE_LENGTH; block += DES_BLOCK_LENGTH) {
      this.#des.encrypt(challenge, block, response, block);
    }
    return response;
  }

  /**
   * Checks a viewer's `response` to `challenge`, comparing each 8-byte
   * block in constant time.
   *
   * The second block is computed only when the first matched, which halves
   * the cost of trying many keys. That early exit tells a viewer only that
   * the first 8 bytes of its own response were right, which it can bring
   * about no faster than by guessing 64 bits.
   */
  verify(challenge: Uint8Array, response: Uint8Array): boolean {
    checkChallenge(challenge);
    if (response.length !== CHALLENGE_LENGTH) return false;
    const block = this.#block;
    let ok = true;
    for (let offset = 0; ok && offset < CHALLENGE_LENGTH; offset += DES_BLOCK_LENGTH) {
      this.#des.encrypt(challenge, offset, block, 0);
      let difference = 0;
      for (let i = 0; i < DES_BLOCK_LENGTH; i++) difference |= block[i]! ^ response[offset + i]!;
      ok = difference === 0;
    }
    block.fill(0);
    return ok;
  }

  /**
   * Whether `other` is the same DES key, so that no viewer could tell the
   * two passwords apart (same first 8 bytes, NUL-padded, bit 7 ignored).
   * Constant time.
   */
  sameKey(other: VncAuthKey): boolean {
    let difference = 0;
    for (let i = 0; i < DES_BLOCK_LENGTH; i++) difference |= this.#key[i]! ^ other.#key[i]!;
    return difference === 0;
  }

  /** Wipes the key; the object must not be used afterwards. */
  clear(): void {
    this.#key.fill(0);
    this.#des.clear();
  }
}

/**
 * Computes the response a viewer must send for `challenge` and `password`.
 * The password must be Latin-1 (the control request parser ensures it).
 */
export function vncAuthResponse(password: string, challenge: Uint8Array): Uint8Array {
  const key = new VncAuthKey(password);
  try {
    return key.response(challenge);
  } finally {
    key.clear();
  }
}

/** Checks a viewer's response in constant time. */
export function verifyVncAuthResponse(
  password: string,
  challenge: Uint8Array,
  response: Uint8Array,
): boolean {
  const key = new VncAuthKey(password);
  try {
    return key.verify(challenge, response);
  } finally {
    key.clear();
  }
}

function checkChallenge(challenge: Uint8Array): void {
  if (challenge.length !== CHALLENGE_LENGTH) {
    throw new RangeError(`Challenge must be ${CHALLENGE_LENGTH} bytes, got ${challenge.length}`);
  }
}

function reverseBits(byte: number): number {
  let result = 0;
  for (let bit = 0; bit < 8; bit++) {
    if (byte & (1 << bit)) result |= 1 << (7 - bit);
  }
  return result;
}
