/**
 * A small WebSocket client over a raw TCP (or TLS) connection, for tests that
 * need what a browser's `WebSocket` hides: the exact upgrade request and
 * response, frames of any opcode and size (1-byte frames included), text
 * frames, ping/pong, close codes and reasons, and not reading at all.
 *
 * @module
 */

import { ConnDuplex, type Duplex } from "../../src/io/duplex.ts";

import { OPCODE } from "../../src/io/websocket_frames.ts";

export { OPCODE };

/** One frame from the server. */
export interface Frame {
  /** FIN bit. */
  fin: boolean;
  /** Opcode. */
  opcode: number;
  /** Unmasked payload. */
  payload: Uint8Array;
}

/** A parsed HTTP response head (and body, when not 101). */
export interface HttpResponse {
  /** Status code. */
  status: number;
  /** Response headers. */
  headers: Headers;
  /** Body text, read until end of stream or Content-Length; "" for 101. */
  body: string;
}

/** Options of {@linkcode connectRawWebSocket}. */
export interface RawWebSocketOptions {
  /** @default {"127.0.0.1"} */
  hostname?: string;
  /** Server port. */
  port: number;
  /** Request target. @default {"/websockify"} */
  path?: string;
  /** Sec-WebSocket-Protocol header value; omitted when undefined. */
  protocols?: string;
  /** Connect with TLS, trusting these CA certificates. */
  tls?: { caCerts: string[]; hostname?: string };
  /** Extra or replacement request headers (`null` removes a default one). */
  headers?: Record<string, string | null>;
  /** HTTP method. @default {"GET"} */
  method?: string;
  /**
   * Write every byte in a write of its own (over TLS, each its own record):
   * the upgrade request and every frame reach the server split to the byte.
   */
  oneByteWrites?: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Buffered reads over a connection, keeping bytes past what was asked. */
class ConnReader {
  readonly #conn: Duplex;
  #buffer = new Uint8Array(0);

  constructor(conn: Duplex) {
    this.#conn = conn;
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) return false;
    const merged = new Uint8Array(this.#buffer.length + n);
    merged.set(this.#buffer);
    merged.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = merged;
    return true;
  }

  /** Reads exactly `n` bytes, or `null` at a clean end before any. */
  async exact(n: number): Promise<Uint8Array | null> {
    while (this.#buffer.length < n) {
      if (!(await this.#fill())) {
        if (this.#buffer.length === 0) return null;
        throw new Error(`Connection closed ${n - this.#buffer.length} bytes short`);
      }
    }
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return out;
  }

  /** Reads up to and including `delimiter`; `null` at end of stream. */
  async until(delimiter: string): Promise<string | null> {
    const needle = encoder.encode(delimiter);
    while (true) {
      const at = indexOf(this.#buffer, needle);
      if (at >= 0) {
        const out = this.#buffer.slice(0, at + needle.length);
        this.#buffer = this.#buffer.slice(at + needle.length);
        return decoder.decode(out);
      }
      if (!(await this.#fill())) return null;
    }
  }

  /** Everything until end of stream. */
  async rest(): Promise<Uint8Array> {
    try {
      while (await this.#fill());
    } catch {
      // A reset after the body still leaves the bytes read so far.
    }
    const out = this.#buffer;
    this.#buffer = new Uint8Array(0);
    return out;
  }
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/** Parses an HTTP response head. */
async function readResponseHead(reader: ConnReader): Promise<HttpResponse> {
  const head = await reader.until("\r\n\r\n");
  if (head === null) throw new Error("Connection closed before a response");
  const [statusLine, ...lines] = head.trimEnd().split("\r\n");
  const status = Number(statusLine!.split(" ")[1]);
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return { status, headers, body: "" };
}

/** Reads a body of Content-Length bytes, or until end of stream. */
async function readBody(
  reader: ConnReader,
  response: HttpResponse,
  method: string,
): Promise<Uint8Array> {
  if (method === "HEAD") return new Uint8Array(0);
  const length = response.headers.get("content-length");
  if (length === null) return await reader.rest();
  return (await reader.exact(Number(length))) ?? new Uint8Array(0);
}

/** A client-side WebSocket over a raw connection. */
export class RawWebSocket {
  readonly #conn: Duplex;
  readonly #reader: ConnReader;
  /** The server's upgrade response. */
  readonly response: HttpResponse;

  /** Use {@linkcode connectRawWebSocket}. */
  constructor(conn: Duplex, reader: ConnReader, response: HttpResponse) {
    this.#conn = conn;
    this.#reader = reader;
    this.response = response;
  }

  /** Sends one masked frame (RFC 6455 §5.2, §5.3). */
  async sendFrame(
    opcode: number,
    payload: Uint8Array,
    fin = true,
  ): Promise<void> {
    await this.#conn.write(encodeFrame(opcode, payload, fin));
  }

  /** Sends one binary message. */
  sendBinary(bytes: Uint8Array): Promise<void> {
    return this.sendFrame(OPCODE.binary, bytes);
  }

  /** Sends one text message. */
  sendText(text: string): Promise<void> {
    return this.sendFrame(OPCODE.text, encoder.encode(text));
  }

  /** Sends a close frame with `code` and `reason`. */
  sendClose(code = 1000, reason = ""): Promise<void> {
    const text = encoder.encode(reason);
    const payload = new Uint8Array(2 + text.length);
    new DataView(payload.buffer).setUint16(0, code);
    payload.set(text, 2);
    return this.sendFrame(OPCODE.close, payload);
  }

  /** Reads the next frame, or `null` at end of stream. */
  async readFrame(): Promise<Frame | null> {
    const head = await this.#reader.exact(2);
    if (head === null) return null;
    const fin = (head[0]! & 0x80) !== 0;
    const opcode = head[0]! & 0x0f;
    if (head[1]! & 0x80) throw new Error("Server frames must not be masked");
    let length = head[1]! & 0x7f;
    if (length === 126) {
      const ext = (await this.#reader.exact(2))!;
      length = new DataView(ext.buffer).getUint16(0);
    } else if (length === 127) {
      const ext = (await this.#reader.exact(8))!;
      length = Number(new DataView(ext.buffer).getBigUint64(0));
    }
    const payload = length === 0 ? new Uint8Array(0) : await this.#reader.exact(length);
    if (payload === null) throw new Error("Connection closed inside a frame");
    return { fin, opcode, payload };
  }

  /**
   * Reads data frames until `count` payload bytes have arrived; answers
   * pings. Throws if the server closes first.
   */
  async readBytes(count: number): Promise<Uint8Array> {
    const out = new Uint8Array(count);
    let filled = 0;
    while (filled < count) {
      const frame = await this.readFrame();
      if (frame === null) throw new Error("Connection closed");
      if (frame.opcode === OPCODE.ping) {
        await this.sendFrame(OPCODE.pong, frame.payload);
      } else if (frame.opcode === OPCODE.close) {
        throw new Error(`Closed: ${JSON.stringify(parseClose(frame.payload))}`);
      } else {
        if (filled + frame.payload.length > count) {
          throw new Error("More bytes than expected");
        }
        out.set(frame.payload, filled);
        filled += frame.payload.length;
      }
    }
    return out;
  }

  /**
   * Reads frames until a close frame (data frames are dropped, pings not
   * answered) and returns its code and reason; `null` if the connection
   * ended without one.
   */
  async readClose(): Promise<{ code: number; reason: string } | null> {
    while (true) {
      const frame = await this.readFrame();
      if (frame === null) return null;
      if (frame.opcode === OPCODE.close) return parseClose(frame.payload);
    }
  }

  /** Closes the TCP connection (no closing handshake); idempotent. */
  close(): void {
    this.#conn.close();
  }

  /** Closes the connection. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function parseClose(payload: Uint8Array): { code: number; reason: string } {
  if (payload.length < 2) return { code: 1005, reason: "" };
  return {
    code: new DataView(payload.buffer, payload.byteOffset).getUint16(0),
    reason: decoder.decode(payload.subarray(2)),
  };
}

/** Encodes one masked client frame. */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array,
  fin = true,
): Uint8Array {
  const extra = payload.length < 126 ? 0 : payload.length < 65536 ? 2 : 8;
  const frame = new Uint8Array(2 + extra + 4 + payload.length);
  const view = new DataView(frame.buffer);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  if (extra === 0) frame[1] = 0x80 | payload.length;
  else if (extra === 2) {
    frame[1] = 0x80 | 126;
    view.setUint16(2, payload.length);
  } else {
    frame[1] = 0x80 | 127;
    view.setBigUint64(2, BigInt(payload.length));
  }
  const mask = crypto.getRandomValues(new Uint8Array(4));
  frame.set(mask, 2 + extra);
  const body = 2 + extra + 4;
  for (let i = 0; i < payload.length; i++) {
    frame[body + i] = payload[i]! ^ mask[i & 3]!;
  }
  return frame;
}

/** A duplex whose writes go out one byte per write. */
class OneByteWrites implements Duplex {
  readonly #inner: Duplex;

  constructor(inner: Duplex) {
    this.#inner = inner;
  }

  get remoteAddress(): string {
    return this.#inner.remoteAddress;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    return this.#inner.read(buffer);
  }

  async write(data: Uint8Array): Promise<void> {
    for (let i = 0; i < data.length; i++) await this.#inner.write(data.subarray(i, i + 1));
  }

  close(): void {
    this.#inner.close();
  }
}

async function connect(options: RawWebSocketOptions): Promise<Duplex> {
  const duplex = await connectTransport(options.port, options.hostname, options.tls);
  return options.oneByteWrites ? new OneByteWrites(duplex) : duplex;
}

/** TCP to `hostname`, or TLS over it checked against the certificate's name. */
async function connectTransport(
  port: number,
  hostname = "127.0.0.1",
  tls?: { caCerts: string[]; hostname?: string },
): Promise<Duplex> {
  const tcp = await Deno.connect({ hostname, port });
  tcp.setNoDelay(true);
  if (tls === undefined) return new ConnDuplex(tcp);
  return new ConnDuplex(
    await Deno.startTls(tcp, { hostname: tls.hostname ?? hostname, caCerts: tls.caCerts }),
  );
}

/**
 * Opens a connection, sends a WebSocket upgrade request and reads the
 * response head. On 101 returns the open socket; otherwise reads the body,
 * closes and returns the response alone.
 */
export async function connectRawWebSocket(
  options: RawWebSocketOptions,
): Promise<{ socket?: RawWebSocket; response: HttpResponse }> {
  const headers: Record<string, string | null> = {
    host: `localhost:${options.port}`,
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-key": btoa(
      String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
    ),
    "sec-websocket-version": "13",
    ...(options.protocols !== undefined ? { "sec-websocket-protocol": options.protocols } : {}),
    ...options.headers,
  };
  const lines = [
    `${options.method ?? "GET"} ${options.path ?? "/websockify"} HTTP/1.1`,
  ];
  for (const [name, value] of Object.entries(headers)) {
    if (value !== null) lines.push(`${name}: ${value}`);
  }
  const conn = await connect(options);
  try {
    await conn.write(encoder.encode(`${lines.join("\r\n")}\r\n\r\n`));
    const reader = new ConnReader(conn);
    const response = await readResponseHead(reader);
    if (response.status === 101) {
      return { socket: new RawWebSocket(conn, reader, response), response };
    }
    const body = await readBody(reader, response, options.method ?? "GET");
    conn.close();
    return { response: { ...response, body: decoder.decode(body) } };
  } catch (error) {
    conn.close();
    throw error;
  }
}

/**
 * Sends a raw HTTP request (over TLS with `options.tls`) and returns the
 * response (body included).
 */
export async function rawHttpRequest(
  port: number,
  request: string | Uint8Array,
  hostname = "127.0.0.1",
  options: { tls?: { caCerts: string[]; hostname?: string } } = {},
): Promise<HttpResponse> {
  const conn = await connectTransport(port, hostname, options.tls);
  const bytes = typeof request === "string" ? encoder.encode(request) : request;
  try {
    await conn.write(bytes);
    const reader = new ConnReader(conn);
    const response = await readResponseHead(reader);
    const method = decoder.decode(bytes.subarray(0, 16)).split(" ")[0]!;
    const body = await readBody(reader, response, method);
    return { ...response, body: decoder.decode(body) };
  } finally {
    conn.close();
  }
}
