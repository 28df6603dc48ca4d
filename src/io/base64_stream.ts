/**
 * Base64 as a byte stream, for the WebSocket `base64` sub-protocol (noVNC
 * before 1.0): each message is a padded base64 text, so the stream is a
 * run of 4-character groups, each decoded on its own (padding ends a
 * group, not the stream). Memory is bounded: one scratch buffer of text,
 * one of decoded bytes.
 *
 * @module
 */

import { Buffer } from "node:buffer";

/** Value of each base64 character; -1 for others, -2 for `=`. */
const VALUES = (() => {
  const table = new Int8Array(256).fill(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i;
  table[0x3d] = -2;
  return table;
})();

/** Raw bytes per text frame a write sends: ~64 KiB of text. */
export const BASE64_CHUNK = 48 * 1024;

/** Encodes bytes as base64 text bytes (ASCII). */
export function encodeBase64(data: Uint8Array): Uint8Array {
  const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64");
  return new TextEncoder().encode(text);
}

/** Thrown for text that is no base64. */
export class Base64Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Base64Error";
  }
}

/** Decodes a base64 text stream fed in pieces; see the module doc. */
export class Base64Decoder {
  /** Where the caller reads text into before {@linkcode feed}. */
  readonly scratch = new Uint8Array(4096);
  readonly #carry = new Uint8Array(4);
  #carried = 0;
  readonly #decoded = new Uint8Array(3 * 1025);
  #start = 0;
  #end = 0;

  /** Copies decoded bytes into `buffer`; returns how many (0 when none are waiting). */
  take(buffer: Uint8Array): number {
    const n = Math.min(buffer.length, this.#end - this.#start);
    buffer.set(this.#decoded.subarray(this.#start, this.#start + n));
    this.#start += n;
    return n;
  }

  /**
   * Decodes the first `n` bytes of {@linkcode scratch}; call only once
   * {@linkcode take} gave everything out.
   *
   * @throws {Base64Error} on a character outside base64, or misplaced padding.
   */
  feed(n: number): void {
    this.#start = 0;
    this.#end = 0;
    for (let i = 0; i < n; i++) {
      this.#carry[this.#carried++] = this.scratch[i]!;
      if (this.#carried === 4) {
        this.#carried = 0;
        this.#decodeGroup();
      }
    }
  }

  #decodeGroup(): void {
    const g = this.#carry;
    const [a, b, c, d] = [VALUES[g[0]!]!, VALUES[g[1]!]!, VALUES[g[2]!]!, VALUES[g[3]!]!];
    if (a < 0 || b < 0 || c === -1 || d === -1 || (c === -2 && d !== -2)) {
      throw new Base64Error("Invalid base64 data");
    }
    const out = this.#decoded;
    out[this.#end++] = (a << 2) | (b >> 4);
    if (c === -2) return;
    out[this.#end++] = ((b & 0x0f) << 4) | (c >> 2);
    if (d === -2) return;
    out[this.#end++] = ((c & 0x03) << 6) | d;
  }
}
