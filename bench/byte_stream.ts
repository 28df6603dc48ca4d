/**
 * The load generator's view of a connection, over TCP or WebSocket: exact
 * reads for handshakes and echoes, and a cheap `discard` for bulk data that
 * reads into one reused large buffer.
 *
 * @module
 */

import { ConnDuplex } from "../src/io/duplex.ts";
import { encodeFrame, OPCODE } from "../tests/_util/raw_websocket.ts";

/** A client connection as the bench uses it. */
export interface ByteStream {
  /** Fills `buffer` completely; rejects at end of stream. */
  readFull(buffer: Uint8Array): Promise<void>;
  /** Writes all of `data`. */
  write(data: Uint8Array): Promise<void>;
  /** Reads and drops exactly `count` bytes. */
  discard(count: number): Promise<void>;
  /** Closes; idempotent. */
  close(): void;
}

/** Shared discard buffer: what is read into it is never looked at. */
const SINK = new Uint8Array(1024 * 1024);

function endOfStream(missing: number): Error {
  return new Error(`Connection closed with ${missing} bytes still expected`);
}

/** A {@linkcode ByteStream} over a TCP connection. */
export class TcpStream implements ByteStream {
  readonly #conn: ConnDuplex;

  /** Wraps `conn` and disables Nagle's algorithm on it. */
  constructor(conn: Deno.TcpConn) {
    this.#conn = new ConnDuplex(conn);
    conn.setNoDelay(true);
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<TcpStream> {
    return new TcpStream(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async readFull(buffer: Uint8Array): Promise<void> {
    let filled = 0;
    while (filled < buffer.length) {
      const n = await this.#conn.read(buffer.subarray(filled));
      if (n === null) throw endOfStream(buffer.length - filled);
      filled += n;
    }
  }

  write(data: Uint8Array): Promise<void> {
    return this.#conn.write(data);
  }

  async discard(count: number): Promise<void> {
    let left = count;
    while (left > 0) {
      const n = await this.#conn.read(SINK.subarray(0, Math.min(left, SINK.length)));
      if (n === null) throw endOfStream(left);
      left -= n;
    }
  }

  close(): void {
    this.#conn.close();
  }
}

const HEADER_BUFFER = 64 * 1024;

/**
 * A {@linkcode ByteStream} over a minimal WebSocket client on a raw TCP
 * connection (RFC 6455): it parses frame headers and reads payloads straight
 * into the caller's buffer, so discarding bulk data costs about what it
 * costs on plain TCP. (Deno's `WebSocket` client allocates and dispatches an
 * event per message, and saturated a core near 650–900 MB/s here, which
 * would cap every WebSocket figure at the load generator's speed.)
 */
export class WsStream implements ByteStream {
  readonly #conn: ConnDuplex;
  /** Bytes read past a frame header, not yet consumed. */
  readonly #buffer = new Uint8Array(HEADER_BUFFER);
  #start = 0;
  #end = 0;
  /** Payload bytes left in the current data frame. */
  #payloadLeft = 0;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = new ConnDuplex(conn);
    conn.setNoDelay(true);
  }

  /**
   * Connects to 127.0.0.1:`port`, sends the upgrade request for `path`
   * offering `protocol`, and checks for 101 Switching Protocols.
   */
  static async connect(port: number, path = "/", protocol = "binary"): Promise<WsStream> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const stream = new WsStream(conn);
    try {
      const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
      const request = [
        `GET ${path} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`,
        "Upgrade: websocket",
        "Connection: Upgrade",
        `Sec-WebSocket-Key: ${key}`,
        "Sec-WebSocket-Version: 13",
        `Sec-WebSocket-Protocol: ${protocol}`,
        "",
        "",
      ].join("\r\n");
      await stream.#conn.write(new TextEncoder().encode(request));
      const head = await stream.#readHead();
      if (!/^HTTP\/1\.1 101 /.test(head)) {
        throw new Error(`WebSocket upgrade refused: ${head.split("\r\n")[0]}`);
      }
      return stream;
    } catch (error) {
      stream.close();
      throw error;
    }
  }

  /** Reads the HTTP response head; bytes after it stay buffered. */
  async #readHead(): Promise<string> {
    const decoder = new TextDecoder();
    while (true) {
      const text = decoder.decode(this.#buffer.subarray(this.#start, this.#end));
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.#start += end + 4; // The head is ASCII: characters are bytes.
        return text.slice(0, end);
      }
      if (!await this.#fill()) throw endOfStream(1);
    }
  }

  /** Reads more bytes into the header buffer; false at end of stream. */
  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buffer.length) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#conn.read(this.#buffer.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  async #need(count: number): Promise<void> {
    while (this.#end - this.#start < count) {
      if (!await this.#fill()) throw endOfStream(count - (this.#end - this.#start));
    }
  }

  /** Reads frame headers until a data frame starts; answers pings. */
  async #nextDataFrame(): Promise<void> {
    while (true) {
      await this.#need(2);
      const b0 = this.#buffer[this.#start]!;
      const b1 = this.#buffer[this.#start + 1]!;
      if (b1 & 0x80) throw new Error("Server sent a masked frame");
      let length = b1 & 0x7f;
      let headerLength = 2;
      if (length === 126) headerLength = 4;
      if (length === 127) headerLength = 10;
      await this.#need(headerLength);
      const view = new DataView(this.#buffer.buffer, this.#start, headerLength);
      if (length === 126) length = view.getUint16(2);
      if (length === 127) length = Number(view.getBigUint64(2));
      this.#start += headerLength;
      const opcode = b0 & 0x0f;
      if (
        opcode === OPCODE.binary || opcode === OPCODE.text || opcode === OPCODE.continuation
      ) {
        this.#payloadLeft = length;
        if (length > 0) return;
        continue;
      }
      await this.#need(length);
      const payload = this.#buffer.slice(this.#start, this.#start + length);
      this.#start += length;
      if (opcode === OPCODE.close) throw new Error("Server closed the WebSocket");
      if (opcode === OPCODE.ping) await this.#writeFrame(OPCODE.pong, payload);
    }
  }

  /** Reads up to `target.length` payload bytes into `target`. */
  async #readPayload(target: Uint8Array): Promise<number> {
    if (this.#payloadLeft === 0) await this.#nextDataFrame();
    const want = Math.min(target.length, this.#payloadLeft);
    let n: number;
    if (this.#end > this.#start) {
      n = Math.min(want, this.#end - this.#start);
      target.set(this.#buffer.subarray(this.#start, this.#start + n));
      this.#start += n;
    } else {
      // Never past the payload: the next frame's header stays in the socket.
      const read = await this.#conn.read(target.subarray(0, want));
      if (read === null) throw endOfStream(want);
      n = read;
    }
    this.#payloadLeft -= n;
    return n;
  }

  async readFull(buffer: Uint8Array): Promise<void> {
    let filled = 0;
    while (filled < buffer.length) filled += await this.#readPayload(buffer.subarray(filled));
  }

  async discard(count: number): Promise<void> {
    let left = count;
    while (left > 0) left -= await this.#readPayload(SINK.subarray(0, Math.min(left, SINK.length)));
  }

  /** Sends `data` as one masked binary frame (RFC 6455 §5.3). */
  write(data: Uint8Array): Promise<void> {
    return this.#writeFrame(OPCODE.binary, data);
  }

  #writeFrame(opcode: number, data: Uint8Array): Promise<void> {
    return this.#conn.write(encodeFrame(opcode, data));
  }

  close(): void {
    this.#conn.close();
  }
}
