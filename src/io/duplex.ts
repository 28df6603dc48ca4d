/**
 * The one byte-stream interface the handshakes and the relay use, whatever
 * the transport: a TCP or TLS connection, or a WebSocket.
 *
 * @module
 */

/** A bidirectional byte stream, shaped like `Deno.Conn`'s reader and writer. */
export interface Duplex {
  /**
   * Reads at most `buffer.length` bytes into `buffer` and never more, so a
   * caller that asks for exactly what it needs never reads ahead.
   * Resolves to the number of bytes read, or `null` at end of stream.
   */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes all of `data`; resolves once the transport has taken it. */
  write(data: Uint8Array): Promise<void>;
  /** Closes the stream; idempotent. Pending reads and writes then reject. */
  close(): void;
  /**
   * Bytes a framing transport (a WebSocket) puts before each write's data.
   * A writer that leaves this much room before its data and calls
   * {@linkcode Duplex.writeAfterRoom} lets the header go out in the same
   * write as the data, without a copy. Absent for plain byte streams.
   */
  readonly writeRoom?: number;
  /**
   * Writes `buffer[start, start + length)` as {@linkcode Duplex.write}
   * would, and may first overwrite `buffer[0, start)` (the room) with its
   * framing. Present exactly when {@linkcode Duplex.writeRoom} is.
   */
  writeAfterRoom?(buffer: Uint8Array, start: number, length: number): Promise<void>;
  /** The peer's address for log lines, e.g. `192.0.2.7:51234` or `[::1]:4000`. */
  readonly remoteAddress: string;
}

/** Removes the brackets of a bracketed IPv6 literal (`[::1]` -> `::1`). */
export function unbracketHost(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/**
 * Formats a host and port for log lines and error messages: `host:port`,
 * `[v6]:port` (whether or not `hostname` came bracketed), and an
 * IPv4-mapped IPv6 address as its IPv4 form.
 */
export function formatHostPort(hostname: string, port: number): string {
  let host = unbracketHost(hostname);
  if (host.startsWith("::ffff:") && host.includes(".")) host = host.slice("::ffff:".length);
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A `Duplex` over a `Deno.Conn` (TCP, TLS or a Unix socket). */
export class ConnDuplex implements Duplex {
  readonly #conn: Deno.Conn;
  #closed = false;
  /** The peer's address as `host:port`. */
  readonly remoteAddress: string;

  /** Wraps `conn`; the duplex owns it from now on. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    const addr = conn.remoteAddr;
    this.remoteAddress = "path" in addr
      ? `unix:${addr.path}`
      : formatHostPort((addr as Deno.NetAddr).hostname, (addr as Deno.NetAddr).port);
  }

  /** Reads at most `buffer.length` bytes. */
  read(buffer: Uint8Array): Promise<number | null> {
    return this.#conn.read(buffer);
  }

  /** Writes all of `data`, looping over partial writes. */
  async write(data: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < data.length) {
      offset += await this.#conn.write(data.subarray(offset));
    }
  }

  /** Closes the connection once; later calls do nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime (e.g. after a reset): nothing to free.
    }
  }
}

/**
 * Disables Nagle's algorithm on a TCP connection so small input events are
 * not delayed behind a bulk write. TLS connections have no such switch in Deno.
 */
export function setNoDelay(conn: Deno.Conn): void {
  if ("setNoDelay" in conn && typeof conn.setNoDelay === "function") {
    try {
      conn.setNoDelay(true);
    } catch {
      // The socket may already be gone; the relay will notice.
    }
  }
}
