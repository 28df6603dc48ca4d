/**
 * The WebSocket frame codec, server side (RFC 6455 §5), with no I/O: frame
 * headers out and in, and unmasking. The transport (`websocket_duplex.ts`)
 * does the reading and writing; the opening handshake before the first
 * frame is `../http/websocket_upgrade.ts`.
 *
 * @module
 */

/** RFC 6455 §5.2 opcodes. */
export const OPCODE = Object.freeze({
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
});

/** RFC 6455 §7.4.1 status codes this server sends. */
export const CLOSE_CODE = Object.freeze({
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  invalidPayload: 1007,
  tooBig: 1009,
});

/** Longest frame header: 2 bytes, a 64-bit length, a 4-byte mask key. */
export const MAX_FRAME_HEADER_LENGTH = 14;
/** RFC 6455 §5.5: control frame payloads are at most 125 bytes. */
export const MAX_CONTROL_PAYLOAD = 125;

/**
 * A violation of RFC 6455 by the peer, with the close code to answer it
 * with (1002 protocol error, 1007 invalid payload, 1009 too big).
 */
export class WebSocketProtocolError extends Error {
  /** The close code to send (RFC 6455 §7.4.1). */
  readonly code: number;

  /** Creates the error; `message` is safe to send as the close reason. */
  constructor(message: string, code: number = CLOSE_CODE.protocolError) {
    super(message);
    this.name = "WebSocketProtocolError";
    this.code = code;
  }
}

/** A parsed client frame header (RFC 6455 §5.2). */
export interface FrameHeader {
  /** FIN: the last frame of a message. */
  readonly fin: boolean;
  /** Opcode, one of {@linkcode OPCODE}. */
  readonly opcode: number;
  /** MASK bit; always true for a header that parsed. */
  readonly masked: boolean;
  /** The 4-byte masking key. */
  readonly maskKey: Uint8Array;
  /** Payload length in bytes (below 2^53). */
  readonly payloadLength: number;
  /** Header length in bytes (6 to 14). */
  readonly headerLength: number;
}

/** True for close, ping and pong (RFC 6455 §5.5: opcodes 0x8 and above). */
export function isControlOpcode(opcode: number): boolean {
  return (opcode & 0x8) !== 0;
}

/** Bytes of the header of a server frame carrying `payloadLength` bytes. */
export function serverFrameHeaderLength(payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10;
}

/**
 * Writes the header of an unmasked server frame (FIN set) into `target` at
 * `at` and returns its length; `target` needs
 * {@linkcode serverFrameHeaderLength} bytes there. A writer that keeps
 * that much room before a payload sends header and payload in one write.
 */
export function writeServerFrameHeader(
  target: Uint8Array,
  opcode: number,
  payloadLength: number,
  at = 0,
): number {
  if (!Number.isSafeInteger(payloadLength) || payloadLength < 0) {
    throw new RangeError(`Invalid payload length ${payloadLength}`);
  }
  target[at] = 0x80 | opcode;
  if (payloadLength < 126) {
    target[at + 1] = payloadLength;
    return 2;
  }
  if (payloadLength < 0x10000) {
    target[at + 1] = 126;
    target[at + 2] = payloadLength >>> 8;
    target[at + 3] = payloadLength & 0xff;
    return 4;
  }
  target[at + 1] = 127;
  const high = Math.floor(payloadLength / 0x1_0000_0000);
  const low = payloadLength >>> 0;
  for (let i = 0; i < 4; i++) {
    target[at + 2 + i] = (high >>> (24 - 8 * i)) & 0xff;
    target[at + 6 + i] = (low >>> (24 - 8 * i)) & 0xff;
  }
  return 10;
}

/** Encodes the header of an unmasked server frame (FIN set) into a new array. */
export function encodeServerFrameHeader(
  opcode: number,
  payloadLength: number,
): Uint8Array {
  const header = new Uint8Array(serverFrameHeaderLength(payloadLength));
  writeServerFrameHeader(header, opcode, payloadLength);
  return header;
}

/**
 * Encodes a complete unmasked server frame: header and payload in one array
 * (for control frames and small messages).
 */
export function encodeServerFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(serverFrameHeaderLength(payload.length) + payload.length);
  frame.set(payload, writeServerFrameHeader(frame, opcode, payload.length));
  return frame;
}

/**
 * Checks the first two bytes of a client frame and returns the full header
 * length they announce (6, 8 or 14), so a reader can fetch exactly the rest.
 *
 * @throws {WebSocketProtocolError} on an unmasked frame, RSV bits, an
 * unknown opcode, or a fragmented or oversized control frame.
 */
export function clientFrameHeaderLength(bytes: Uint8Array): number {
  if (bytes.length < 2) throw new RangeError("A frame header needs at least 2 bytes");
  const first = bytes[0]!;
  const second = bytes[1]!;
  // RFC 6455 §5.2: RSV1-3 must be 0 unless an extension says otherwise,
  // and this server negotiates none.
  if ((first & 0x70) !== 0) throw new WebSocketProtocolError("Reserved bits set");
  const opcode = first & 0x0f;
  if (
    opcode > OPCODE.binary && opcode !== OPCODE.close && opcode !== OPCODE.ping &&
    opcode !== OPCODE.pong
  ) {
    throw new WebSocketProtocolError(`Unknown opcode ${opcode}`);
  }
  // RFC 6455 §5.1: a server must close on an unmasked client frame.
  if ((second & 0x80) === 0) throw new WebSocketProtocolError("Client frame not masked");
  const length7 = second & 0x7f;
  if (isControlOpcode(opcode)) {
    // RFC 6455 §5.5: control frames are never fragmented, at most 125 bytes.
    if ((first & 0x80) === 0) throw new WebSocketProtocolError("Fragmented control frame");
    if (length7 > MAX_CONTROL_PAYLOAD) throw new WebSocketProtocolError("Control frame too long");
  }
  return 2 + (length7 === 126 ? 2 : length7 === 127 ? 8 : 0) + 4;
}

/**
 * Parses a client frame header from `bytes`, which must hold at least the
 * length {@linkcode clientFrameHeaderLength} reports. The mask key is
 * copied, so `bytes` may be reused.
 *
 * @throws {WebSocketProtocolError} as {@linkcode clientFrameHeaderLength},
 * and with 1009 for a 64-bit length of 2^53 or more.
 */
export function parseClientFrameHeader(bytes: Uint8Array): FrameHeader {
  const headerLength = clientFrameHeaderLength(bytes);
  if (bytes.length < headerLength) {
    throw new RangeError(`The frame header needs ${headerLength} bytes, got ${bytes.length}`);
  }
  const length7 = bytes[1]! & 0x7f;
  let payloadLength = length7;
  if (length7 === 126) {
    payloadLength = (bytes[2]! << 8) | bytes[3]!;
  } else if (length7 === 127) {
    const high = ((bytes[2]! << 24) | (bytes[3]! << 16) | (bytes[4]! << 8) | bytes[5]!) >>> 0;
    const low = ((bytes[6]! << 24) | (bytes[7]! << 16) | (bytes[8]! << 8) | bytes[9]!) >>> 0;
    // RFC 6455 §5.2 wants the top bit 0; JavaScript numbers stop at 2^53.
    if (high >= 0x20_0000) {
      throw new WebSocketProtocolError("Frame length too large", CLOSE_CODE.tooBig);
    }
    payloadLength = high * 0x1_0000_0000 + low;
  }
  return {
    fin: (bytes[0]! & 0x80) !== 0,
    opcode: bytes[0]! & 0x0f,
    masked: true,
    maskKey: bytes.slice(headerLength - 4, headerLength),
    payloadLength,
    headerLength,
  };
}

/** The mask key rotated to a word's phase, as bytes and as that word. */
const keyBytes = new Uint8Array(4);
const keyWord = new Uint32Array(keyBytes.buffer);
/** Below this many bytes, a word view costs more than it saves. */
const WORDWISE_FROM = 16;

/**
 * Unmasks (or masks) `data` in place with `maskKey` (RFC 6455 §5.3), where
 * `offset` is the position of `data[0]` within the frame's payload, so a
 * payload read in pieces can be unmasked piece by piece.
 *
 * Bulk goes a 32-bit word at a time, four words per turn: the bytes up to
 * a 4-byte boundary of the memory one by one, then the words with the key
 * rotated to their phase, then the tail. The key word is built through a
 * byte view, so it works whatever the platform's endianness; nothing is
 * allocated but the word view.
 */
export function unmask(data: Uint8Array, maskKey: Uint8Array, offset = 0): void {
  const length = data.length;
  let i = 0;
  if (length >= WORDWISE_FROM) {
    const head = (4 - (data.byteOffset & 3)) & 3;
    for (; i < head; i++) data[i]! ^= maskKey[(offset + i) & 3]!;
    const words = (length - i) >>> 2;
    for (let k = 0; k < 4; k++) keyBytes[k] = maskKey[(offset + i + k) & 3]!;
    const key = keyWord[0]!;
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    const unrolled = words & ~3;
    let w = 0;
    for (; w < unrolled; w += 4) {
      view[w]! ^= key;
      view[w + 1]! ^= key;
      view[w + 2]! ^= key;
      view[w + 3]! ^= key;
    }
    for (; w < words; w++) view[w]! ^= key;
    i += words * 4;
  }
  for (; i < length; i++) data[i]! ^= maskKey[(offset + i) & 3]!;
}
