/**
 * TLS as a client over a connection that already carried plain bytes (RFB
 * negotiates VeNCrypt in the clear, then starts TLS on the same socket),
 * with an optional client certificate.
 *
 * `Deno.startTls` takes no client certificate (Deno 2.9: its options are
 * `hostname`, `caCerts`, `alpnProtocols`; a `cert`/`key` given anyway is
 * ignored and a server with `verify-peer=on` answers CertificateRequired).
 * `node:tls` `connect({ socket })` does present one, and accepts any
 * `node:stream` Duplex as the socket: so the connection, as a
 * {@linkcode Duplex}, is wrapped in a node stream, TLS runs over it, and
 * the TLS socket is wrapped back into a {@linkcode Duplex}. Both run on
 * Deno's rustls, which has no anonymous Diffie-Hellman.
 *
 * @module
 */

import { isIP } from "node:net";
import { Duplex as NodeDuplex } from "node:stream";
import { connect, type TLSSocket } from "node:tls";
import type { Duplex } from "./duplex.ts";

/** A client certificate and its key, PEM. */
export interface ClientCertificate {
  /** PEM certificate chain. */
  readonly cert: string;
  /** PEM private key. */
  readonly key: string;
}

/** Options of {@linkcode startTlsClient}. */
export interface TlsClientOptions {
  /** The name (DNS name or IP address) the server certificate must be for. */
  readonly name: string;
  /** PEM CA certificates to trust. @default {the system roots} */
  readonly caCerts?: readonly string[];
  /** Shown when the server asks for one. */
  readonly clientCertificate?: ClientCertificate;
  /** Aborts the handshake (the connection is then closed). */
  readonly signal: AbortSignal;
}

/** What went wrong in a TLS handshake, for the caller's reason. */
export type TlsFailure = "untrusted" | "name" | "failed";

/** A failed TLS handshake, with what kind of failure it was. */
export class TlsHandshakeError extends Error {
  /** The kind of failure. */
  readonly failure: TlsFailure;

  /** Creates the error; the message is the TLS library's, for the log. */
  constructor(failure: TlsFailure, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TlsHandshakeError";
    this.failure = failure;
  }
}

/** Chain errors (OpenSSL's codes, as node:tls reports rustls' verdicts). */
const UNTRUSTED_CODES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
  "INVALID_CA",
]);

/** A TLS connection as a {@linkcode Duplex}. */
export interface TlsDuplex extends Duplex {
  /** Bytes the peer sent over TLS so far. */
  readonly bytesReceived: number;
}

/** How big one read from the connection under TLS may be. */
const RAW_READ_BYTES = 16 * 1024;

/**
 * Decrypted bytes waiting for the reader at which the connection under TLS
 * is no longer read (node's default high-water mark, where the TLS socket
 * itself stops taking more). node:tls in Deno reads its socket as fast as
 * it can whoever reads the TLS side (its own pause does not reach the
 * socket underneath): without this gate a VNC server could fill memory
 * while the viewer is slow.
 */
const MAX_BUFFERED_BYTES = 64 * 1024;

/**
 * Holds reads of the connection under TLS while the TLS side has
 * {@linkcode MAX_BUFFERED_BYTES} or more waiting for its reader.
 */
export class ReadGate {
  #buffered: () => number = () => 0;
  #waiting: (() => void) | undefined;

  /** Sets how many bytes wait for the reader (once the TLS socket exists). */
  measure(buffered: () => number): void {
    this.#buffered = buffered;
  }

  /** Resolves once the reader has room. */
  wait(): Promise<void> {
    if (this.#buffered() < MAX_BUFFERED_BYTES) return Promise.resolve();
    return new Promise((resolve) => this.#waiting = resolve);
  }

  /** Called after the reader took bytes (or at the end): lets a held read go. */
  release(force = false): void {
    if (this.#waiting === undefined || (!force && this.#buffered() >= MAX_BUFFERED_BYTES)) return;
    const resolve = this.#waiting;
    this.#waiting = undefined;
    resolve();
  }
}

/**
 * Runs a TLS client handshake over `raw` and returns the encrypted stream.
 * From this call on, the returned duplex owns `raw`: closing it closes
 * `raw`, and closing `raw` ends it.
 *
 * @throws {TlsHandshakeError} when the handshake fails (the connection is
 * then closed).
 */
export async function startTlsClient(
  raw: Duplex,
  options: TlsClientOptions,
): Promise<TlsDuplex> {
  const { signal } = options;
  signal.throwIfAborted();
  const gate = new ReadGate();
  const socket = connect({
    socket: toNodeStream(raw, gate),
    host: options.name,
    // SNI carries DNS names only (RFC 6066 §3); the name check uses `host`.
    ...(isIP(options.name) === 0 ? { servername: options.name } : {}),
    ...(options.caCerts ? { ca: [...options.caCerts] } : {}),
    ...(options.clientCertificate
      ? { cert: options.clientCertificate.cert, key: options.clientCertificate.key }
      : {}),
    rejectUnauthorized: true,
    minVersion: "TLSv1.2",
  });
  // Kept for the socket's life: a late error with no listener would throw.
  socket.on("error", () => {});
  const onAbort = () => socket.destroy();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", (error) => reject(classify(error)));
      const closed = () => {
        reject(new TlsHandshakeError("failed", "Connection closed during the TLS handshake"));
      };
      socket.once("end", closed);
      socket.once("close", closed);
    });
  } catch (error) {
    socket.destroy();
    raw.close();
    throw signal.aborted ? signal.reason : error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  return new TlsSocketDuplex(socket, raw.remoteAddress, gate);
}

function classify(error: unknown): TlsHandshakeError {
  const code = (error as { code?: unknown } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  let failure: TlsFailure = "failed";
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") failure = "name";
  else if (typeof code === "string" && UNTRUSTED_CODES.has(code)) failure = "untrusted";
  else if (/UnknownIssuer|BadSignature|unknown ca/i.test(message)) failure = "untrusted";
  else if (/NotValidForName|CertNotValidForName/i.test(message)) failure = "name";
  return new TlsHandshakeError(failure, message, { cause: error });
}

/**
 * `raw` as the node stream `node:tls` wants under it (exported for tests,
 * whose scripted servers run the server side of TLS the same way).
 */
export function toNodeStream(raw: Duplex, gate: ReadGate): NodeDuplex {
  const buffer = new Uint8Array(RAW_READ_BYTES);
  return new NodeDuplex({
    read() {
      gate.wait().then(() => raw.read(buffer)).then(
        (n) => this.push(n === null ? null : buffer.slice(0, n)),
        (error) => this.destroy(error),
      );
    },
    write(chunk: Uint8Array, _encoding, callback) {
      raw.write(chunk).then(() => callback(), (error) => callback(error));
    },
    destroy(error, callback) {
      raw.close();
      callback(error);
    },
  });
}

/**
 * A TLS socket as a {@linkcode Duplex}: reads hand out what TLS decrypted,
 * at most the caller's buffer, keeping the rest for the next read.
 */
export class TlsSocketDuplex implements TlsDuplex {
  readonly #socket: TLSSocket;
  #pending: Uint8Array | undefined;
  #ended = false;
  #error: unknown = undefined;
  #wake: (() => void) | undefined;
  #received = 0;
  readonly #gate: ReadGate;
  /** The server's address for log lines. */
  readonly remoteAddress: string;

  /**
   * Wraps `socket` (connected, or whose handshake is under way), made over
   * {@linkcode toNodeStream} with `gate`; it owns the socket from now on.
   */
  constructor(socket: TLSSocket, remoteAddress: string, gate: ReadGate) {
    this.#socket = socket;
    this.remoteAddress = remoteAddress;
    this.#gate = gate;
    gate.measure(() => socket.readableLength + (this.#pending?.length ?? 0));
    socket.once("close", () => gate.release(true));
    const wake = () => {
      const resolve = this.#wake;
      this.#wake = undefined;
      resolve?.();
    };
    socket.on("readable", wake);
    socket.on("end", () => {
      this.#ended = true;
      wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      wake();
    });
    socket.on("error", (error) => {
      this.#error = error;
      wake();
    });
  }

  /** Reads at most `buffer.length` bytes; `null` at the end. */
  async read(buffer: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#pending === undefined) {
        const chunk = this.#socket.read() as Uint8Array | null;
        if (chunk !== null) this.#pending = chunk;
      }
      const pending = this.#pending;
      if (pending !== undefined) {
        const n = Math.min(buffer.length, pending.length);
        buffer.set(pending.subarray(0, n));
        this.#pending = n < pending.length ? pending.subarray(n) : undefined;
        this.#received += n;
        this.#gate.release();
        return n;
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended || this.#socket.destroyed) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** Bytes handed out by {@linkcode read} so far. */
  get bytesReceived(): number {
    return this.#received;
  }

  /** Writes all of `data`; resolves once TLS has taken it. */
  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#socket.destroyed) return reject(new Error("The TLS connection is closed"));
      this.#socket.write(data, (error) => error ? reject(error) : resolve());
    });
  }

  /** Closes TLS and the connection under it; idempotent. */
  close(): void {
    this.#socket.destroy();
    this.#gate.release(true);
  }
}
