/**
 * SHA-256-crypt (`$5$`) and SHA-512-crypt (`$6$`), as specified by Ulrich
 * Drepper in "Unix crypt using SHA-256 and SHA-512"
 * (https://www.akkadia.org/drepper/SHA-crypt.txt) and implemented by glibc
 * and libxcrypt `crypt(3)`. Deno has no `crypt(3)`, and the users files that
 * `mkpasswd -m sha-512` and snf's `vncauthproxy-passwd` write must load
 * unchanged.
 *
 * @module
 */

import { createHash, randomBytes } from "node:crypto";
import { Buffer } from "node:buffer";

/** The `rounds=` default of the spec; such hashes carry no `rounds=` field. */
export const DEFAULT_ROUNDS = 5000;
/** The smallest `rounds=` value; smaller values are raised to it. */
export const MIN_ROUNDS = 1000;
/** The largest `rounds=` value; larger values are lowered to it. */
export const MAX_ROUNDS = 999_999_999;
/** The longest salt; longer salts are truncated. */
export const MAX_SALT_LENGTH = 16;

const CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

interface Variant {
  readonly algorithm: "sha256" | "sha512";
  /** Byte triples of the final digest in output order (spec steps 22 e/f). */
  readonly order: readonly (readonly [number, number, number])[];
  /** The last group: byte indexes (-1 for a zero byte) and its length. */
  readonly tail: readonly [number, number, number, number];
}

const SHA256_VARIANT: Variant = {
  algorithm: "sha256",
  order: [
    [0, 10, 20],
    [21, 1, 11],
    [12, 22, 2],
    [3, 13, 23],
    [24, 4, 14],
    [15, 25, 5],
    [6, 16, 26],
    [27, 7, 17],
    [18, 28, 8],
    [9, 19, 29],
  ],
  tail: [-1, 31, 30, 3],
};

const SHA512_VARIANT: Variant = {
  algorithm: "sha512",
  order: [
    [0, 21, 42],
    [22, 43, 1],
    [44, 2, 23],
    [3, 24, 45],
    [25, 46, 4],
    [47, 5, 26],
    [6, 27, 48],
    [28, 49, 7],
    [50, 8, 29],
    [9, 30, 51],
    [31, 52, 10],
    [53, 11, 32],
    [12, 33, 54],
    [34, 55, 13],
    [56, 14, 35],
    [15, 36, 57],
    [37, 58, 16],
    [59, 17, 38],
    [18, 39, 60],
    [40, 61, 19],
    [62, 20, 41],
  ],
  tail: [-1, -1, 63, 2],
};

const VARIANTS: Readonly<Record<string, Variant>> = {
  "5": SHA256_VARIANT,
  "6": SHA512_VARIANT,
};

/**
 * Computes the crypt string of `password` for a `$5$` or `$6$` setting.
 *
 * `setting` is `$6$salt`, `$6$rounds=N$salt`, or a whole stored crypt string
 * (whose hash part is ignored), so `shaCrypt(password, stored) === stored`
 * checks a password. As in the spec, the salt ends at the next `$` and is
 * truncated to 16 characters, `rounds=` is clamped to 1000..999999999, and a
 * `rounds=` field that is present is kept in the output even when it equals
 * the default. The password is encoded as UTF-8.
 *
 * @throws {SyntaxError} when the setting does not start with `$5$` or `$6$`.
 */
export function shaCrypt(password: string, setting: string): string {
  const match = /^\$([^$]*)\$/.exec(setting);
  const variant = match === null ? undefined : VARIANTS[match[1]!];
  if (match === null || variant === undefined) {
    throw new SyntaxError(
      'Unsupported crypt setting: expected "$5$" or "$6$"',
    );
  }
  let rest = setting.slice(match[0].length);
  let rounds = DEFAULT_ROUNDS;
  let roundsField = "";
  // Spec: "rounds=" followed by a decimal number and "$"; anything else is
  // part of the salt.
  const roundsMatch = /^rounds=(\d+)\$/.exec(rest);
  if (roundsMatch !== null) {
    rounds = Math.min(
      MAX_ROUNDS,
      Math.max(MIN_ROUNDS, Number(roundsMatch[1]!)),
    );
    roundsField = `rounds=${rounds}$`;
    rest = rest.slice(roundsMatch[0].length);
  }
  const end = rest.indexOf("$");
  const salt = (end === -1 ? rest : rest.slice(0, end)).slice(
    0,
    MAX_SALT_LENGTH,
  );
  const digest = computeDigest(
    variant,
    Buffer.from(password, "utf8"),
    Buffer.from(salt, "utf8"),
    rounds,
  );
  return `$${match[1]}$${roundsField}${salt}$${encodeDigest(variant, digest)}`;
}

/**
 * Returns a random salt of `length` characters from `./0-9A-Za-z`, drawn
 * from the CSPRNG; the alphabet has 64 characters, so masking a byte to six
 * bits picks each one with equal probability.
 *
 * @param length Number of characters. @default {16}
 */
export function generateSalt(length = MAX_SALT_LENGTH): string {
  if (!Number.isInteger(length) || length < 0) {
    throw new RangeError(`Invalid salt length "${length}"`);
  }
  const bytes = randomBytes(length);
  let salt = "";
  for (const byte of bytes) salt += CRYPT_ALPHABET[byte & 0x3f];
  return salt;
}

/** Options of {@linkcode hashPassword}. */
export interface HashPasswordOptions {
  /**
   * SHA-512-crypt rounds, 1000..999999999; the default is written without a
   * `rounds=` field, as `mkpasswd -m sha-512` does.
   * @default {5000}
   */
  rounds?: number;
}

/**
 * Hashes `password` with SHA-512-crypt and a fresh 16-character salt:
 * `$6$<salt>$<86 characters>`, the format of `mkpasswd -m sha-512`.
 *
 * @throws {RangeError} when `rounds` is not an integer in 1000..999999999.
 */
export function hashPassword(
  password: string,
  options: HashPasswordOptions = {},
): string {
  const rounds = options.rounds ?? DEFAULT_ROUNDS;
  if (!Number.isInteger(rounds) || rounds < MIN_ROUNDS || rounds > MAX_ROUNDS) {
    throw new RangeError(
      `Invalid rounds "${rounds}": expected an integer from ${MIN_ROUNDS} to ${MAX_ROUNDS}`,
    );
  }
  const roundsField = rounds === DEFAULT_ROUNDS ? "" : `rounds=${rounds}$`;
  return shaCrypt(password, `$6$${roundsField}${generateSalt()}`);
}

/** Spec steps 1-21: the final digest C. */
function computeDigest(
  variant: Variant,
  password: Buffer,
  salt: Buffer,
  rounds: number,
): Buffer {
  const hash = () => createHash(variant.algorithm);

  // Steps 4-8: digest B = H(P S P).
  const b = hash().update(password).update(salt).update(password).digest();

  // Steps 1-3, 9-12: digest A.
  const a = hash().update(password).update(salt);
  a.update(repeatTo(b, password.length));
  for (let n = password.length; n > 0; n >>= 1) {
    a.update(n & 1 ? b : password);
  }
  const digestA = a.digest();

  // Steps 13-16: the P sequence, from H(P repeated |P| times).
  const dp = hash();
  for (let i = 0; i < password.length; i++) dp.update(password);
  const p = repeatTo(dp.digest(), password.length);

  // Steps 17-20: the S sequence, from H(S repeated 16 + A[0] times).
  const ds = hash();
  for (let i = 0; i < 16 + digestA[0]!; i++) ds.update(salt);
  const s = repeatTo(ds.digest(), salt.length);

  // Step 21: the rounds.
  let c = digestA;
  for (let i = 0; i < rounds; i++) {
    const round = hash();
    round.update(i & 1 ? p : c);
    if (i % 3 !== 0) round.update(s);
    if (i % 7 !== 0) round.update(p);
    round.update(i & 1 ? c : p);
    c = round.digest();
  }
  return c;
}

/** `source` repeated and cut to `length` bytes (spec steps 9-10, 16, 20). */
function repeatTo(source: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let offset = 0; offset < length; offset += source.length) {
    source.copy(out, offset, 0, Math.min(source.length, length - offset));
  }
  return out;
}

/** Spec step 22: the crypt base-64 encoding in the permuted byte order. */
function encodeDigest(variant: Variant, digest: Buffer): string {
  let out = "";
  for (const [b2, b1, b0] of variant.order) {
    out += encode24(digest[b2]!, digest[b1]!, digest[b0]!, 4);
  }
  const [b2, b1, b0, count] = variant.tail;
  const byte = (index: number) => index === -1 ? 0 : digest[index]!;
  return out + encode24(byte(b2), byte(b1), byte(b0), count);
}

function encode24(b2: number, b1: number, b0: number, count: number): string {
  let word = (b2 << 16) | (b1 << 8) | b0;
  let out = "";
  for (let i = 0; i < count; i++) {
    out += CRYPT_ALPHABET[word & 0x3f];
    word >>= 6;
  }
  return out;
}
