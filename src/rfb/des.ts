/**
 * Single DES encryption (FIPS 46-3) with the key schedule computed once per
 * key, for VNC Authentication (RFC 6143 §7.2.2), which needs one DES block
 * per 8 bytes of challenge.
 *
 * `node:crypto` has no single DES; emulating it with `des-ede3-cbc` costs a
 * cipher object (and three DES passes) per block. Matching a viewer's
 * response against every pending one-time password needs a DES block per
 * pending key, so this is a small table-driven DES in plain TypeScript:
 * tables for the initial and final permutations (one lookup per byte) and
 * S-boxes merged with the P permutation, so a block costs 16 rounds of
 * eight lookups. Encryption only; nothing here is secret-dependent in its
 * control flow (table lookups indexed by key-dependent values are, as in
 * every table-based DES, not cache-timing safe: acceptable for VNC
 * Authentication, whose key is an 8-character one-time password).
 *
 * @module
 */

/** Bits are numbered as in FIPS 46-3: bit 1 is the top bit of byte 0. */
// deno-fmt-ignore
const INITIAL_PERMUTATION = [
  58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4,
  62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8,
  57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3,
  61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];
// deno-fmt-ignore
const PERMUTED_CHOICE_1 = [
  57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18,
  10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36,
  63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22,
  14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];
// deno-fmt-ignore
const PERMUTED_CHOICE_2 = [
  14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10,
  23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2,
  41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48,
  44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];
const KEY_SHIFTS = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];
// deno-fmt-ignore
const P_PERMUTATION = [
  16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10,
  2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25,
];
/** S1..S8, each as four rows of sixteen. */
// deno-fmt-ignore
const S_BOXES = [
  [
    14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7,
    0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8,
    4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0,
    15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
  ],
  [
    15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10,
    3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5,
    0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15,
    13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
  ],
  [
    10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8,
    13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1,
    13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7,
    1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
  ],
  [
    7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15,
    13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9,
    10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4,
    3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
  ],
  [
    2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9,
    14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6,
    4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14,
    11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
  ],
  [
    12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11,
    10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8,
    9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6,
    4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
  ],
  [
    4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1,
    13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6,
    1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2,
    6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
  ],
  [
    13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7,
    1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2,
    7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8,
    2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
  ],
];

/** The final permutation is the inverse of the initial one (FIPS 46-3). */
const FINAL_PERMUTATION = (() => {
  const inverse = new Array<number>(64);
  INITIAL_PERMUTATION.forEach((source, target) => inverse[source - 1] = target + 1);
  return inverse;
})();

/**
 * A 64-bit permutation as lookup tables: for each input byte position and
 * value, the two 32-bit words of output it contributes; OR-ing the eight
 * contributions gives the permuted block.
 */
function byteTables(permutation: readonly number[]): Int32Array {
  const table = new Int32Array(8 * 256 * 2);
  for (let position = 0; position < 8; position++) {
    for (let value = 0; value < 256; value++) {
      let hi = 0;
      let lo = 0;
      permutation.forEach((source, target) => {
        const bit = source - 1;
        if ((bit >> 3) !== position || !(value & (0x80 >> (bit & 7)))) return;
        if (target < 32) hi |= 1 << (31 - target);
        else lo |= 1 << (63 - target);
      });
      table[(position * 256 + value) * 2] = hi;
      table[(position * 256 + value) * 2 + 1] = lo;
    }
  }
  return table;
}

/**
 * S-box j merged with P: for each 6-bit input (bits in E order), the 32-bit
 * value P(S_j(input) placed at nibble j).
 */
function spTables(): Int32Array {
  const table = new Int32Array(8 * 64);
  for (let box = 0; box < 8; box++) {
    for (let input = 0; input < 64; input++) {
      // FIPS 46-3: the outer bits choose the row, the middle four the column.
      const row = ((input >> 4) & 2) | (input & 1);
      const column = (input >> 1) & 0xf;
      const nibble = S_BOXES[box]![row * 16 + column]! << (28 - 4 * box);
      let permuted = 0;
      P_PERMUTATION.forEach((source, target) => {
        if (nibble & (1 << (32 - source))) permuted |= 1 << (31 - target);
      });
      table[box * 64 + input] = permuted;
    }
  }
  return table;
}

const IP_TABLE = byteTables(INITIAL_PERMUTATION);
const FP_TABLE = byteTables(FINAL_PERMUTATION);
const SP_TABLE = spTables();

/** The 16 round keys of `key`, as 8 six-bit groups each (FIPS 46-3 key schedule). */
function roundKeys(key: Uint8Array): Uint8Array {
  const bit = (index: number) => (key[(index - 1) >> 3]! >> (7 - ((index - 1) & 7))) & 1;
  let c = 0;
  let d = 0;
  for (let i = 0; i < 28; i++) {
    c = (c << 1) | bit(PERMUTED_CHOICE_1[i]!);
    d = (d << 1) | bit(PERMUTED_CHOICE_1[i + 28]!);
  }
  const keys = new Uint8Array(16 * 8);
  const rotate = (half: number, by: number) => ((half << by) | (half >>> (28 - by))) & 0xfffffff;
  for (let round = 0; round < 16; round++) {
    c = rotate(c, KEY_SHIFTS[round]!);
    d = rotate(d, KEY_SHIFTS[round]!);
    for (let group = 0; group < 8; group++) {
      let value = 0;
      for (let i = 0; i < 6; i++) {
        const source = PERMUTED_CHOICE_2[group * 6 + i]!; // 1..56 over C then D
        const half = source <= 28 ? c : d;
        const offset = source <= 28 ? source : source - 28;
        value = (value << 1) | ((half >> (28 - offset)) & 1);
      }
      keys[round * 8 + group] = value;
    }
  }
  return keys;
}

/** Length of a DES block and key, in bytes. */
export const DES_BLOCK_LENGTH = 8;

/**
 * A DES key with its schedule computed once; {@linkcode DesKey.encrypt}
 * then costs one block of table lookups and allocates nothing.
 */
export class DesKey {
  readonly #keys: Uint8Array;

  /**
   * Prepares `key` (8 bytes; the low bit of each, the parity bit, is
   * ignored as DES specifies).
   *
   * @throws {RangeError} when `key` is not 8 bytes.
   */
  constructor(key: Uint8Array) {
    if (key.length !== DES_BLOCK_LENGTH) {
      throw new RangeError(`A DES key must be ${DES_BLOCK_LENGTH} bytes, got ${key.length}`);
    }
    this.#keys = roundKeys(key);
  }

  /**
   * Encrypts the 8 bytes of `input` at `inputOffset` into `output` at
   * `outputOffset` (ECB: one block, no chaining). `input` and `output` may
   * be the same array.
   */
  encrypt(input: Uint8Array, inputOffset: number, output: Uint8Array, outputOffset: number): void {
    let left = 0;
    let right = 0;
    for (let i = 0; i < 8; i++) {
      const at = (i * 256 + input[inputOffset + i]!) * 2;
      left |= IP_TABLE[at]!;
      right |= IP_TABLE[at + 1]!;
    }
    const keys = this.#keys;
    for (let round = 0; round < 128; round += 8) {
      // E expands R into eight 6-bit groups: group j (from 0) is bits
      // 4j..4j+5 of R numbered from 1, bit 0 meaning bit 32, which are the
      // top six bits of R rotated left by 4j - 1.
      const r = right;
      const f = SP_TABLE[(((r >>> 1) | (r << 31)) >>> 26) ^ keys[round]!]! |
        SP_TABLE[64 + ((((r << 3) | (r >>> 29)) >>> 26) ^ keys[round + 1]!)]! |
        SP_TABLE[128 + ((((r << 7) | (r >>> 25)) >>> 26) ^ keys[round + 2]!)]! |
        SP_TABLE[192 + ((((r << 11) | (r >>> 21)) >>> 26) ^ keys[round + 3]!)]! |
        SP_TABLE[256 + ((((r << 15) | (r >>> 17)) >>> 26) ^ keys[round + 4]!)]! |
        SP_TABLE[320 + ((((r << 19) | (r >>> 13)) >>> 26) ^ keys[round + 5]!)]! |
        SP_TABLE[384 + ((((r << 23) | (r >>> 9)) >>> 26) ^ keys[round + 6]!)]! |
        SP_TABLE[448 + ((((r << 27) | (r >>> 5)) >>> 26) ^ keys[round + 7]!)]!;
      right = left ^ f;
      left = r;
    }
    // The last round does not swap: the pre-output is R16 L16.
    let hi = 0;
    let lo = 0;
    for (let i = 0; i < 4; i++) {
      const at = (i * 256 + ((right >>> (24 - 8 * i)) & 0xff)) * 2;
      hi |= FP_TABLE[at]!;
      lo |= FP_TABLE[at + 1]!;
    }
    for (let i = 0; i < 4; i++) {
      const at = ((i + 4) * 256 + ((left >>> (24 - 8 * i)) & 0xff)) * 2;
      hi |= FP_TABLE[at]!;
      lo |= FP_TABLE[at + 1]!;
    }
    for (let i = 0; i < 4; i++) {
      output[outputOffset + i] = hi >>> (24 - 8 * i);
      output[outputOffset + 4 + i] = lo >>> (24 - 8 * i);
    }
  }

  /** Overwrites the key schedule (the caller is done with the key). */
  clear(): void {
    this.#keys.fill(0);
  }
}
