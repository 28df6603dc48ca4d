/**
 * Sealing of what a shared token guards, with a key every instance holds
 * (`--token-store-key-file`), so that Redis never sees a backend secret,
 * a token or a client address in clear.
 *
 * - The handover of a token is encrypted with AES-256-GCM under a key
 *   derived by HKDF-SHA256 from the shared key (input key material) and
 *   the token itself (salt), with the Redis key as additional data and a
 *   random 96-bit IV. Redis holds only the token's SHA-256 hash: its
 *   contents plus the key file still do not open an entry without the
 *   token, and an entry cannot be moved under another key.
 * - The client-address binding is an HMAC-SHA256 tag, keyed by a key
 *   derived from the shared key, of the Redis key and the canonical IP:
 *   equal for the same address and token, so the claim script compares
 *   tags; different across tokens, so entries bound to one address cannot
 *   be linked without the key.
 *
 * The key file holds at least 32 bytes of key material: raw bytes, or the
 * same as text in hex (64 digits or more; a file of hex digits is always
 * read as hex) or base64 (standard or url-safe, 43 characters or more).
 * Surrounding white space of a text form is ignored. Make one with
 * `head -c 32 /dev/urandom > key` or `openssl rand -hex 32 > key`, give
 * every instance the same file, mode 0600 or 0640 (a world-readable file
 * is refused).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, createHmac, hkdfSync } from "node:crypto";
import { concatBytes } from "../io/bytes.ts";

/** Least bytes of key material in a key file. */
export const MIN_TOKEN_STORE_KEY_BYTES = 32;

/** Largest key file read. */
const MAX_KEY_FILE_BYTES = 4096;

const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Version byte of a sealed handover. */
const SEAL_VERSION = 1;
const SEAL_INFO = "vncauthproxy token seal v1";
const ADDRESS_INFO = "vncauthproxy address tag v1";

/** Bytes of an address tag (HMAC-SHA256). */
export const ADDRESS_TAG_BYTES = 32;

/** The key shared by the instances. Its bytes never leave it, nor show in inspect output. */
export class TokenStoreKey {
  readonly #material: Buffer;
  readonly #addressKey: Buffer;

  /**
   * Wraps key material (copied).
   *
   * @throws {RangeError} when it is shorter than {@linkcode MIN_TOKEN_STORE_KEY_BYTES}.
   */
  constructor(material: Uint8Array) {
    if (material.length < MIN_TOKEN_STORE_KEY_BYTES) {
      throw new RangeError(
        `The token store key has ${material.length} bytes, at least ${MIN_TOKEN_STORE_KEY_BYTES} are required`,
      );
    }
    this.#material = Buffer.from(material);
    this.#addressKey = Buffer.from(
      hkdfSync("sha256", this.#material, new Uint8Array(0), ADDRESS_INFO, 32),
    );
  }

  /**
   * Seals `handover` for `token`, bound to `redisKey`: version byte, IV,
   * ciphertext, GCM tag.
   */
  seal(handover: Uint8Array, token: string, redisKey: string): Uint8Array {
    const key = this.#sealKey(token);
    try {
      const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
      const cipher = createCipheriv("aes-256-gcm", key, iv);
      cipher.setAAD(Buffer.from(redisKey, "utf8"));
      const body = Buffer.concat([cipher.update(handover), cipher.final()]);
      return concatBytes([Uint8Array.of(SEAL_VERSION), iv, body, cipher.getAuthTag()]);
    } finally {
      key.fill(0);
    }
  }

  /**
   * Opens what {@linkcode seal} made; `undefined` when it does not open
   * (another token, another Redis key, another shared key, a changed byte).
   */
  open(sealed: Uint8Array, token: string, redisKey: string): Uint8Array | undefined {
    if (sealed.length < 1 + IV_BYTES + TAG_BYTES || sealed[0] !== SEAL_VERSION) return undefined;
    const key = this.#sealKey(token);
    try {
      const iv = sealed.subarray(1, 1 + IV_BYTES);
      const body = sealed.subarray(1 + IV_BYTES, sealed.length - TAG_BYTES);
      const decipher = createDecipheriv("aes-256-gcm", key, iv);
      decipher.setAAD(Buffer.from(redisKey, "utf8"));
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      const plain = Buffer.concat([decipher.update(body), decipher.final()]);
      return new Uint8Array(plain.buffer, plain.byteOffset, plain.length);
    } catch {
      return undefined;
    } finally {
      key.fill(0);
    }
  }

  /** The address tag of `canonicalAddress` for `redisKey` ({@linkcode ADDRESS_TAG_BYTES} bytes). */
  addressTag(canonicalAddress: string, redisKey: string): Uint8Array {
    const mac = createHmac("sha256", this.#addressKey);
    mac.update(redisKey, "utf8");
    mac.update(new Uint8Array([0]));
    mac.update(canonicalAddress, "utf8");
    return new Uint8Array(mac.digest());
  }

  /** What `Deno.inspect` and `console.log` show: nothing of the key. */
  [Symbol.for("Deno.customInspect")](): string {
    return "TokenStoreKey { [redacted] }";
  }

  /** Same as inspect: never the bytes. */
  toJSON(): string {
    return "[redacted]";
  }

  #sealKey(token: string): Buffer {
    return Buffer.from(
      hkdfSync("sha256", this.#material, Buffer.from(token, "utf8"), SEAL_INFO, 32),
    );
  }
}

/**
 * Reads the shared key from `path` (see the module's documentation for the
 * forms accepted).
 *
 * @throws {Error} when the file cannot be read, is readable by others
 * (mode `o+r`), is larger than 4 KiB, or holds less than 32 bytes of key.
 */
export async function loadTokenStoreKey(path: string): Promise<TokenStoreKey> {
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw new Error("not a regular file");
    if (info.mode !== null && (info.mode & 0o004) !== 0) {
      throw new Error(
        `readable by every user (mode ${(info.mode & 0o777).toString(8)}): chmod 600 or 640 it`,
      );
    }
    if (info.size > MAX_KEY_FILE_BYTES) throw new Error(`larger than ${MAX_KEY_FILE_BYTES} bytes`);
    bytes = await Deno.readFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : error instanceof Error
      ? error.message
      : String(error);
    throw new Error(`Cannot use token store key file "${path}": ${reason}`, { cause: error });
  }
  const material = decodeKeyFile(bytes);
  try {
    if (material.length < MIN_TOKEN_STORE_KEY_BYTES) {
      throw new Error(
        `Cannot use token store key file "${path}": it holds ${material.length} bytes of key, at least ${MIN_TOKEN_STORE_KEY_BYTES} are required (make one with "openssl rand -hex 32")`,
      );
    }
    return new TokenStoreKey(material);
  } finally {
    material.fill(0);
    bytes.fill(0);
  }
}

/** Key material from a key file's bytes: hex text, base64 text, or the raw bytes. */
function decodeKeyFile(bytes: Uint8Array): Uint8Array {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes).trim();
  // Hex text is always read as hex, so that a short hex key is refused, not taken raw.
  if (/^(?:[0-9a-f]{2})+$/i.test(text)) return new Uint8Array(Buffer.from(text, "hex"));
  if (text.length >= 43 && /^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    const decoded = new Uint8Array(Buffer.from(text, "base64"));
    if (decoded.length >= MIN_TOKEN_STORE_KEY_BYTES) return decoded;
  }
  return bytes.slice();
}
