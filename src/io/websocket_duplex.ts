/**
 * A `Duplex` speaking RFC 6455 (server side) directly over a TCP or TLS
 * `Duplex`, after the opening handshake. No receive queue: a read takes
 * payload bytes straight from the socket into the caller's buffer and
 * unmasks them there, so TCP backpressure reaches the viewer and memory
 * stays bounded whatever it sends. A write sends one binary frame, with no
 * copy for large payloads, so memory stays bounded whatever the viewer does;
 * the relay leaves {@linkcode WebSocketDuplex.writeRoom} bytes before its
 * data, so header and payload go out in one write with no copy at all.
 *
 * @module
 */

import { readExact, readFull, UnexpectedEofError } from "./byte_reader.ts";
import { BASE64_CHUNK, Base64Decoder, Base64Error, encodeBase64 } from "./base64_stream.ts";
import type { Duplex } from "./duplex.ts";
import {
  clientFrameHeaderLength,
  CLOSE_CODE,
  encodeServerFrame,
  encodeServerFrameHeader,
  isControlOpcode,
  MAX_FRAME_HEADER_LENGTH,
  OPCODE,
  parseClientFrameHeader,
  serverFrameHeaderLength,
  unmask,
  WebSocketProtocolError,
  writeServerFrameHeader,
} from "./websocket_frames.ts";

/**
 * Payloads up to this size go out with their header in one write (one TCP
 * segment with `TCP_NODELAY`); larger ones as two writes, without copying.
 */
export const COALESCE_LIMIT = 64 * 1024;
/** How long a local close waits for its close frame to be written. */
export const CLOSE_WRITE_TIMEOUT_MS = 1_000;
/** The reason of a close without arguments (snf-vncauthproxy's words). */
const SERVER_GONE_REASON = "Server connection went away";
/** RFC 6455 §5.5.1: a close reason fits a control frame after the code. */
const MAX_CLOSE_REASON_BYTES = 123;

/** Options of {@linkcode WebSocketDuplex}. */
export interface WebSocketDuplexOptions {
  /**
   * Keepalive: after this long without anything from the viewer, send a
   * ping; close with 1001 if nothing arrives within as long again. 0
   * disables it (snf-vncauthproxy never pinged). @default {0}
   */
  pingIntervalMs?: number;
  /**
   * The `base64` sub-protocol (noVNC before 1.0): payloads are base64 text,
   * decoded on read; writes send text frames of base64. @default {false}
   */
  base64?: boolean;
}

/** The code and reason of the viewer's close frame. */
export interface WebSocketCloseInfo {
  /** Close code (1005 when the frame had none). */
  readonly code: number;
  /** Close reason, possibly empty. */
  readonly reason: string;
}

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * A WebSocket over a connected `Duplex`, whose opening handshake is done.
 *
 * Binary, text and continuation frames from the viewer are all taken as raw
 * payload bytes (snf-vncauthproxy did the same); message
 * boundaries do not matter to RFB. Pings are answered, pongs ignored, and a
 * close frame is answered and ends the stream. Only one `read()` may be
 * pending at a time, as with any `Duplex`.
 */
export class WebSocketDuplex implements Duplex {
  readonly #inner: Duplex;
  readonly #pingIntervalMs: number;
  /** Payload bytes of the current data frame not yet read. */
  #remaining = 0;
  /** Payload bytes of the current data frame already read (mask phase). */
  #position = 0;
  #maskKey: Uint8Array = new Uint8Array(4);
  /** Where each frame header is read: nothing allocated per frame but its parse. */
  readonly #header = new Uint8Array(MAX_FRAME_HEADER_LENGTH);
  readonly #headerStart = this.#header.subarray(0, 2);
  /** A fragmented data message has begun and not yet ended. */
  #inMessage = false;
  /** A write is on the wire: later ones wait their turn in `#waiting`. */
  #writing = false;
  /** Writes waiting for the wire, first come first served. */
  readonly #waiting: (() => void)[] = [];
  #closeSent = false;
  /** Set by a local close, the viewer's close, or a failure. */
  #closed = false;
  #peerClose: WebSocketCloseInfo | undefined;
  readonly #innerClosed = Promise.withResolvers<void>();
  #keepaliveTimer: ReturnType<typeof setTimeout> | undefined;
  #lastHeard = 0;
  #pingSentAt: number | undefined;
  /** With the `base64` sub-protocol: the decoder of the viewer's text. */
  readonly #base64: Base64Decoder | undefined;
  /** The peer's address as `host:port`. */
  readonly remoteAddress: string;
  /** Room for the longest server frame header before a payload. */
  readonly writeRoom: number = MAX_FRAME_HEADER_LENGTH - 4;

  /** Wraps `inner` (after the handshake); the duplex owns it from now on. */
  constructor(inner: Duplex, options: WebSocketDuplexOptions = {}) {
    this.#inner = inner;
    this.remoteAddress = inner.remoteAddress;
    this.#pingIntervalMs = options.pingIntervalMs ?? 0;
    this.#base64 = options.base64 ? new Base64Decoder() : undefined;
    if (this.#pingIntervalMs > 0) {
      this.#lastHeard = performance.now();
      this.#armKeepalive(this.#pingIntervalMs);
    }
  }

  /** The viewer's close frame, once it has sent one. */
  get peerClose(): WebSocketCloseInfo | undefined {
    return this.#peerClose;
  }

  /** Resolves once the underlying connection is closed; never rejects. */
  get closed(): Promise<void> {
    return this.#innerClosed.promise;
  }

  /**
   * Reads at most `buffer.length` payload bytes of the current data frame
   * straight into `buffer`, handling control frames on the way. Resolves to
   * `null` at end of stream: after the viewer's close frame, at a clean end
   * of the connection between frames, or after a local `close()`.
   *
   * @throws {WebSocketProtocolError} when the viewer breaks RFC 6455 (the
   * connection is closed with the error's code first).
   * @throws {UnexpectedEofError} when the connection ends inside a frame.
   */
  read(buffer: Uint8Array): Promise<number | null> {
    return this.#base64 ? this.#readBase64(buffer, this.#base64) : this.#readPayload(buffer);
  }

  /** `read` under the `base64` sub-protocol: payload text, decoded. */
  async #readBase64(buffer: Uint8Array, decoder: Base64Decoder): Promise<number | null> {
    if (buffer.length === 0) return this.#closed ? null : 0;
    while (true) {
      const taken = decoder.take(buffer);
      if (taken > 0) return taken;
      const n = await this.#readPayload(decoder.scratch);
      if (n === null) return null;
      try {
        decoder.feed(n);
      } catch (error) {
        if (!(error instanceof Base64Error)) throw error;
        const failure = new WebSocketProtocolError(error.message, CLOSE_CODE.invalidPayload);
        this.#shutDown(closePayload(failure.code, failure.message));
        throw failure;
      }
    }
  }

  /** `read` of the payload bytes as they are. */
  async #readPayload(buffer: Uint8Array): Promise<number | null> {
    if (buffer.length === 0) return this.#closed ? null : 0;
    try {
      while (!this.#closed) {
        if (this.#remaining > 0) {
          const want = Math.min(buffer.length, this.#remaining);
          const target = want === buffer.length ? buffer : buffer.subarray(0, want);
          const n = await this.#inner.read(target);
          if (n === null) throw new UnexpectedEofError(this.#remaining);
          this.#heard();
          unmask(
            n === target.length ? target : target.subarray(0, n),
            this.#maskKey,
            this.#position,
          );
          this.#position += n;
          this.#remaining -= n;
          return n;
        }
        if (!(await this.#readFrameHeader())) return null;
      }
      return null;
    } catch (error) {
      if (this.#closed) return null;
      // RFC 6455 §7.1.7: fail the connection, saying why when it is the
      // viewer's fault; a broken connection gets no close frame.
      this.#shutDown(
        error instanceof WebSocketProtocolError
          ? closePayload(error.code, error.message)
          : undefined,
      );
      throw error;
    }
  }

  /**
   * Sends `data` as one binary frame; resolves once the connection has
   * taken it, so the caller may then reuse `data`.
   *
   * @throws {Deno.errors.BadResource} once closed.
   */
  write(data: Uint8Array): Promise<void> {
    if (this.#closed || this.#closeSent) return Promise.reject(closedError());
    if (data.length === 0) return Promise.resolve();
    if (this.#base64) {
      return this.#serialize(async () => {
        for (let at = 0; at < data.length; at += BASE64_CHUNK) {
          const text = encodeBase64(data.subarray(at, at + BASE64_CHUNK));
          await this.#inner.write(encodeServerFrame(OPCODE.text, text));
        }
      });
    }
    if (data.length <= COALESCE_LIMIT) return this.#send(encodeServerFrame(OPCODE.binary, data));
    return this.#serialize(async () => {
      await this.#inner.write(encodeServerFrameHeader(OPCODE.binary, data.length));
      await this.#inner.write(data);
    });
  }

  /**
   * Sends `buffer[start, start + length)` as one binary frame, writing the
   * header into the room before it, so header and payload go out in one
   * write with no copy; `start` should be at least
   * {@linkcode writeRoom}. Resolves as {@linkcode write} does.
   *
   * @throws {Deno.errors.BadResource} once closed.
   */
  writeAfterRoom(buffer: Uint8Array, start: number, length: number): Promise<void> {
    const headerLength = serverFrameHeaderLength(length);
    if (this.#base64 || length === 0 || headerLength > start || this.#closed || this.#closeSent) {
      return this.write(buffer.subarray(start, start + length));
    }
    const at = start - headerLength;
    writeServerFrameHeader(buffer, OPCODE.binary, length, at);
    return this.#send(buffer.subarray(at, start + length));
  }

  /**
   * Sends a close frame with `code` and `reason` (RFC 6455 §7.4, best
   * effort, at most {@linkcode CLOSE_WRITE_TIMEOUT_MS}), then closes the
   * connection; later calls do nothing. A pending read resolves to `null`,
   * pending writes reject.
   *
   * Without arguments (the `Duplex` close the relay and the session use)
   * the code is 1001: the proxy closes a viewer's WebSocket only when the
   * far end of the session is gone (the VNC server closed, the daemon
   * stops, a limit ended it), which RFC 6455 §7.4.1 calls going away; a
   * viewer that closed first already got its own code echoed.
   */
  close(code: number = CLOSE_CODE.goingAway, reason = SERVER_GONE_REASON): void {
    if (this.#closed) return;
    this.#shutDown(closePayload(code, reason));
  }

  /**
   * Reads and handles one frame header (and a control frame's payload).
   * Resolves to false at a clean end of the connection between frames.
   */
  async #readFrameHeader(): Promise<boolean> {
    // Exact reads only: never consume a byte past this frame's header.
    const start = this.#headerStart;
    const n = await this.#inner.read(start);
    if (n === null) {
      this.#shutDown();
      return false;
    }
    if (n === 1) await readFull(this.#inner, this.#header.subarray(1, 2));
    this.#heard();
    const headerLength = clientFrameHeaderLength(start);
    await readFull(this.#inner, this.#header.subarray(2, headerLength));
    // The parse copies the mask key, so the scratch header can be reused.
    const header = parseClientFrameHeader(this.#header.subarray(0, headerLength));

    if (isControlOpcode(header.opcode)) {
      const payload = header.payloadLength === 0
        ? new Uint8Array(0)
        : await readExact(this.#inner, header.payloadLength);
      unmask(payload, header.maskKey);
      await this.#onControlFrame(header.opcode, payload);
      return true;
    }
    // RFC 6455 §5.4: a continuation continues a started message; a new
    // message must not start inside another.
    if (header.opcode === OPCODE.continuation) {
      if (!this.#inMessage) throw new WebSocketProtocolError("Unexpected continuation frame");
    } else if (this.#inMessage) {
      throw new WebSocketProtocolError("Expected a continuation frame");
    }
    this.#inMessage = !header.fin;
    this.#maskKey = header.maskKey;
    this.#remaining = header.payloadLength;
    this.#position = 0;
    return true;
  }

  async #onControlFrame(opcode: number, payload: Uint8Array): Promise<void> {
    if (opcode === OPCODE.ping) {
      // RFC 6455 §5.5.2: answer with the same payload.
      await this.#send(encodeServerFrame(OPCODE.pong, payload));
    } else if (opcode === OPCODE.close) {
      this.#peerClose = parseClosePayload(payload);
      // RFC 6455 §5.5.1: echo the status code, then the stream is over.
      const code = this.#peerClose.code;
      this.#shutDown(payload.length === 0 ? new Uint8Array(0) : closePayload(code, ""));
    }
    // Pongs only prove the viewer is alive, which reading them did.
  }

  /**
   * Ends the duplex once: sends a close frame with `payload` unless one was
   * sent or `payload` is undefined, then closes the connection.
   */
  #shutDown(payload?: Uint8Array): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#keepaliveTimer);
    this.#keepaliveTimer = undefined;
    if (this.#closeSent || payload === undefined) {
      this.#closeInner();
      return;
    }
    this.#closeSent = true;
    const frame = encodeServerFrame(OPCODE.close, payload);
    const sending = this.#send(frame);
    const timer = setTimeout(() => this.#closeInner(), CLOSE_WRITE_TIMEOUT_MS);
    sending.then(
      () => this.#closeInner(),
      () => this.#closeInner(),
    ).finally(() => clearTimeout(timer));
  }

  #closeInner(): void {
    this.#inner.close();
    this.#innerClosed.resolve();
  }

  /**
   * Writes `frame` after every write queued before it, so frames never
   * interleave; with none on the wire it goes out at once, with no
   * promise or closure beyond the write's own.
   */
  async #send(frame: Uint8Array): Promise<void> {
    const turn = this.#turn();
    if (turn !== undefined) await turn;
    try {
      await this.#inner.write(frame);
    } finally {
      this.#nextTurn();
    }
  }

  /** Runs `task` (several writes) as one turn of {@linkcode #send}. */
  async #serialize(task: () => Promise<void>): Promise<void> {
    const turn = this.#turn();
    if (turn !== undefined) await turn;
    try {
      await task();
    } finally {
      this.#nextTurn();
    }
  }

  /** Takes the wire: at once when free, else after the writes before. */
  #turn(): Promise<void> | undefined {
    if (!this.#writing) {
      this.#writing = true;
      return undefined;
    }
    return new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  /** Hands the wire to the next waiting write, or frees it. */
  #nextTurn(): void {
    const next = this.#waiting.shift();
    if (next === undefined) this.#writing = false;
    else next();
  }

  #heard(): void {
    if (this.#pingIntervalMs > 0) this.#lastHeard = performance.now();
  }

  #armKeepalive(ms: number): void {
    this.#keepaliveTimer = setTimeout(() => this.#onKeepalive(), Math.max(1, ms));
  }

  /** One timer: ping after a silent interval, close 1001 after another. */
  #onKeepalive(): void {
    this.#keepaliveTimer = undefined;
    if (this.#closed) return;
    const now = performance.now();
    const interval = this.#pingIntervalMs;
    if (this.#pingSentAt !== undefined && this.#lastHeard < this.#pingSentAt) {
      if (now - this.#pingSentAt >= interval) {
        this.#shutDown(closePayload(CLOSE_CODE.goingAway, "Ping timeout"));
        return;
      }
      this.#armKeepalive(this.#pingSentAt + interval - now);
      return;
    }
    this.#pingSentAt = undefined;
    const idle = now - this.#lastHeard;
    if (idle < interval) {
      this.#armKeepalive(interval - idle);
      return;
    }
    this.#pingSentAt = now;
    this.#send(encodeServerFrame(OPCODE.ping, new Uint8Array(0))).catch(ignore);
    this.#armKeepalive(interval);
  }
}

function ignore(): void {}

function closedError(): Deno.errors.BadResource {
  return new Deno.errors.BadResource("WebSocket is closed");
}

/** A close frame's payload: the code, then the reason cut to fit. */
function closePayload(code: number, reason: string): Uint8Array {
  let text = encoder.encode(reason);
  if (text.length > MAX_CLOSE_REASON_BYTES) {
    // Cut on a character boundary so the reason stays valid UTF-8.
    let end = MAX_CLOSE_REASON_BYTES;
    while (end > 0 && (text[end]! & 0xc0) === 0x80) end--;
    text = text.subarray(0, end);
  }
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >>> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return payload;
}

/**
 * Parses a close frame's payload (RFC 6455 §5.5.1, §7.4).
 *
 * @throws {WebSocketProtocolError} on a 1-byte payload or a code no peer
 * may send (1002), or a reason that is not UTF-8 (1007).
 */
function parseClosePayload(payload: Uint8Array): WebSocketCloseInfo {
  if (payload.length === 0) return { code: 1005, reason: "" };
  if (payload.length === 1) throw new WebSocketProtocolError("Close frame with a 1-byte payload");
  const code = (payload[0]! << 8) | payload[1]!;
  if (!isValidCloseCode(code)) throw new WebSocketProtocolError(`Invalid close code ${code}`);
  try {
    return { code, reason: strictDecoder.decode(payload.subarray(2)) };
  } catch {
    throw new WebSocketProtocolError("Close reason is not UTF-8", CLOSE_CODE.invalidPayload);
  }
}

/** RFC 6455 §7.4.1-§7.4.2: codes a peer may put in a close frame. */
function isValidCloseCode(code: number): boolean {
  if (code >= 3000 && code <= 4999) return true;
  return code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006;
}
