/**
 * Exact reads over a `Duplex`: each call asks the transport for exactly the
 * bytes it needs, so nothing after a message is consumed (the relay gets it).
 *
 * @module
 */

import type { Duplex } from "./duplex.ts";

/** Thrown when a peer closes the stream in the middle of a message. */
export class UnexpectedEofError extends Error {
  /** Creates the error with the number of bytes still missing. */
  constructor(missing: number) {
    super(`Connection closed with ${missing} bytes of a message missing`);
    this.name = "UnexpectedEofError";
  }
}

/** Reads exactly `length` bytes from `source`, however the peer splits them. */
export async function readExact(
  source: Duplex,
  length: number,
): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  await readFull(source, buffer);
  return buffer;
}

/** Fills `buffer` from `source`, however the peer splits the bytes. */
export async function readFull(source: Duplex, buffer: Uint8Array): Promise<void> {
  let filled = 0;
  while (filled < buffer.length) {
    const n = await source.read(filled === 0 ? buffer : buffer.subarray(filled));
    if (n === null) throw new UnexpectedEofError(buffer.length - filled);
    filled += n;
  }
}

/** Reads one byte. */
export async function readU8(source: Duplex): Promise<number> {
  return (await readExact(source, 1))[0]!;
}

/** Reads a big-endian unsigned 32-bit integer (RFC 6143 §7: network order). */
export async function readU32(source: Duplex): Promise<number> {
  const bytes = await readExact(source, 4);
  return new DataView(bytes.buffer).getUint32(0);
}
