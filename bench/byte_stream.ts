/**
 * The load generator's view of a connection, over TCP or a WebSocket client:
 * exact reads for handshakes and echoes, and a cheap `discard` for bulk data
 * (one reused large buffer on TCP, byte counting on WebSocket messages).
 *
 * @module
 */

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
  readonly #conn: Deno.TcpConn;
  #closed = false;

  /** Wraps `conn` and disables Nagle's algorithm on it. */
  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
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

  async write(data: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < data.length) offset += await this.#conn.write(data.subarray(offset));
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
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime.
    }
  }
}

/**
 * A {@linkcode ByteStream} over Deno's `WebSocket` client: binary messages
 * are queued for exact reads, or only counted while a `discard` runs.
 */
export class WsStream implements ByteStream {
  readonly #socket: WebSocket;
  readonly #queue: Uint8Array[] = [];
  #queued = 0;
  #wake: (() => void) | undefined;
  #closed = false;
  #discardLeft = 0;
  #discardDone: PromiseWithResolvers<void> | undefined;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => this.#onMessage(event.data));
    socket.addEventListener("close", () => this.#onClose());
  }

  /** Opens `url` offering `protocols` and waits for the upgrade. */
  static connect(url: string, protocols: string[] = ["binary"]): Promise<WsStream> {
    const socket = new WebSocket(url, protocols);
    const stream = new WsStream(socket);
    return new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(stream), { once: true });
      socket.addEventListener(
        "error",
        (event) => reject(new Error(`WebSocket ${url} failed: ${describeEvent(event)}`)),
        { once: true },
      );
      socket.addEventListener(
        "close",
        (event) => reject(new Error(`WebSocket ${url} closed (${event.code}) before opening`)),
        { once: true },
      );
    });
  }

  #onMessage(data: unknown): void {
    const bytes = data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : new TextEncoder().encode(String(data));
    if (this.#discardLeft > 0) {
      const taken = Math.min(this.#discardLeft, bytes.length);
      this.#discardLeft -= taken;
      if (this.#discardLeft === 0) this.#discardDone?.resolve();
      if (taken === bytes.length) return;
      this.#push(bytes.subarray(taken));
      return;
    }
    this.#push(bytes);
  }

  #push(bytes: Uint8Array): void {
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    this.#wake?.();
  }

  #onClose(): void {
    this.#closed = true;
    this.#wake?.();
    this.#discardDone?.reject(endOfStream(this.#discardLeft));
  }

  async readFull(buffer: Uint8Array): Promise<void> {
    let filled = 0;
    while (filled < buffer.length) {
      if (this.#queued === 0) {
        if (this.#closed) throw endOfStream(buffer.length - filled);
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = undefined;
        continue;
      }
      const head = this.#queue[0]!;
      const n = Math.min(head.length, buffer.length - filled);
      buffer.set(head.subarray(0, n), filled);
      filled += n;
      this.#queued -= n;
      if (n === head.length) this.#queue.shift();
      else this.#queue[0] = head.subarray(n);
    }
  }

  write(data: Uint8Array): Promise<void> {
    if (this.#closed || this.#socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error("WebSocket is closed"));
    }
    this.#socket.send(data);
    return Promise.resolve();
  }

  async discard(count: number): Promise<void> {
    // Bytes already queued count first.
    let left = count;
    while (left > 0 && this.#queued > 0) {
      const head = this.#queue[0]!;
      const n = Math.min(head.length, left);
      left -= n;
      this.#queued -= n;
      if (n === head.length) this.#queue.shift();
      else this.#queue[0] = head.subarray(n);
    }
    if (left === 0) return;
    if (this.#closed) throw endOfStream(left);
    this.#discardLeft = left;
    this.#discardDone = Promise.withResolvers<void>();
    try {
      await this.#discardDone.promise;
    } finally {
      this.#discardDone = undefined;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#socket.close(1000);
    } catch {
      // Already closing.
    }
    this.#wake?.();
  }
}

function describeEvent(event: Event): string {
  return event instanceof ErrorEvent ? event.message : event.type;
}
