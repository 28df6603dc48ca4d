/**
 * A VNC server for tests that runs a script per connection, on loopback TCP
 * or a Unix socket: the script sends and reads exact bytes, checks what the
 * proxy answered (its choices, its VNC Authentication response), can start
 * the server side of TLS (node:tls over the connection, with or without
 * requiring a client certificate) and can write one byte per write, TLS
 * records included.
 *
 * @module
 */

import { TLSSocket } from "node:tls";
import { readExact, readU32, readU8 } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import { ReadGate, TlsSocketDuplex, toNodeStream } from "../../src/io/tls_client.ts";
import { encodeU32 } from "../../src/rfb/rfb_messages.ts";
import { verifyVncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import { serveConnections } from "./loopback.ts";

/** The server side of TLS. */
export interface ServerTlsOptions {
  readonly cert: string;
  readonly key: string;
  /** Ask for a client certificate and refuse a connection without one from `ca`. */
  readonly requireClientCert?: boolean;
  /** CAs client certificates must chain to. */
  readonly ca?: string;
}

/** One connection, as the script sees it. */
export class ScriptPeer {
  readonly #duplex: Duplex;

  constructor(duplex: Duplex) {
    this.#duplex = duplex;
  }

  /** Sends `bytes` (one byte per write when the server was started so). */
  async send(bytes: Uint8Array | readonly number[]): Promise<void> {
    const data = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
    await this.#duplex.write(data);
  }

  /** Sends a big-endian u32. */
  sendU32(value: number): Promise<void> {
    return this.send(encodeU32(value));
  }

  /** Sends a u32 length and the text. */
  sendReason(text: string): Promise<void> {
    const bytes = new TextEncoder().encode(text);
    return this.send([...encodeU32(bytes.length), ...bytes]);
  }

  /** Reads exactly `n` bytes. */
  read(n: number): Promise<Uint8Array> {
    return readExact(this.#duplex, n);
  }

  /** Reads a u8. */
  readU8(): Promise<number> {
    return readU8(this.#duplex);
  }

  /** Reads a u32. */
  readU32(): Promise<number> {
    return readU32(this.#duplex);
  }

  /** True when the proxy closed the connection (the next read sees EOF). */
  async closedByPeer(): Promise<boolean> {
    try {
      return await this.#duplex.read(new Uint8Array(1)) === null;
    } catch {
      return true;
    }
  }

  /**
   * Runs the server side of a TLS handshake; returns the peer over TLS.
   *
   * @throws when the handshake fails (a client certificate missing, say).
   */
  async startTls(options: ServerTlsOptions): Promise<ScriptPeer> {
    const gate = new ReadGate();
    const socket = new TLSSocket(toNodeStream(this.#duplex, gate), {
      isServer: true,
      cert: options.cert,
      key: options.key,
      ...(options.requireClientCert
        ? {
          requestCert: true,
          rejectUnauthorized: true,
          ...(options.ca ? { ca: [options.ca] } : {}),
        }
        : {}),
    });
    socket.on("error", () => {});
    const tls = new TlsSocketDuplex(socket, this.#duplex.remoteAddress, gate);
    await new Promise<void>((resolve, reject) => {
      socket.once("secure", () => resolve());
      socket.once("error", reject);
      const closed = () => reject(new Error("Closed during the TLS handshake"));
      socket.once("end", closed);
      socket.once("close", closed);
    });
    // Already one byte per write underneath: TLS records arrive split.
    return new ScriptPeer(tls);
  }

  /** Closes the connection. */
  close(): void {
    this.#duplex.close();
  }
}

/** A duplex whose writes go out one byte each. */
class OneByteWrites implements Duplex {
  readonly #inner: Duplex;
  readonly remoteAddress: string;
  constructor(inner: Duplex) {
    this.#inner = inner;
    this.remoteAddress = inner.remoteAddress;
  }
  read(buffer: Uint8Array): Promise<number | null> {
    return this.#inner.read(buffer);
  }
  async write(data: Uint8Array): Promise<void> {
    for (const byte of data) await this.#inner.write(Uint8Array.of(byte));
  }
  close(): void {
    this.#inner.close();
  }
}

/** Options of {@linkcode startScriptedVncServer}. */
export interface ScriptedServerOptions {
  /** Every write one byte at a time (TLS records too). */
  readonly oneByteWrites?: boolean;
  /** Loopback address. @default {"127.0.0.1"} */
  readonly hostname?: "127.0.0.1" | "::1";
  /** Listen on this Unix socket path instead of TCP. */
  readonly path?: string;
}

/** A running scripted server. */
export interface ScriptedVncServer extends AsyncDisposable {
  /** Its TCP port (0 on a Unix socket). */
  readonly port: number;
  /** Connections accepted. */
  readonly accepted: number;
  /** What each finished script threw (assertion failures included), in order. */
  readonly errors: unknown[];
  /** Waits for every script so far to finish. */
  idle(): Promise<void>;
}

/** Starts a server that runs `script` on every connection. */
export function startScriptedVncServer(
  script: (peer: ScriptPeer) => Promise<void>,
  options: ScriptedServerOptions = {},
): ScriptedVncServer {
  const listener = options.path !== undefined
    ? Deno.listen({ transport: "unix", path: options.path })
    : Deno.listen({ hostname: options.hostname ?? "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  const loop = serveConnections(listener, async (raw) => {
    const duplex = options.oneByteWrites ? new OneByteWrites(raw) : raw;
    try {
      await script(new ScriptPeer(duplex));
    } catch (error) {
      errors.push(error);
    }
  });
  return {
    port: options.path !== undefined ? 0 : (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return loop.accepted;
    },
    errors,
    idle: () => loop.idle(),
    [Symbol.asyncDispose]: () => loop[Symbol.asyncDispose](),
  };
}

/** The challenge scripted servers send: bytes 0 to 15, as vnc_auth_test.ts's vectors use. */
export const TEST_CHALLENGE = Uint8Array.from({ length: 16 }, (_, i) => i);

/** Sends `version`, reads the proxy's answer; returns the minor version it chose. */
export async function serveVersion(peer: ScriptPeer, version = "RFB 003.008\n"): Promise<number> {
  await peer.send(new TextEncoder().encode(version));
  const answer = new TextDecoder().decode(await peer.read(12));
  return Number(answer.slice(8, 11));
}

/**
 * Sends {@linkcode TEST_CHALLENGE}, reads the response and answers
 * SecurityResult: OK when it is right for `password`, else failed with
 * `failReason` on 3.8 (none on 3.3 and 3.7). Returns the response.
 */
export async function serveVncAuth(
  peer: ScriptPeer,
  options: { password: string; minor: number; failReason?: string },
): Promise<Uint8Array> {
  await peer.send(TEST_CHALLENGE);
  const response = await peer.read(16);
  if (verifyVncAuthResponse(options.password, TEST_CHALLENGE, response)) {
    await peer.sendU32(0);
  } else {
    await peer.sendU32(1);
    if (options.minor >= 8) await peer.sendReason(options.failReason ?? "");
  }
  return response;
}

/** Reads ClientInit, sends a 64x48 ServerInit named "scripted", then echoes. */
export async function serveServerInit(peer: ScriptPeer): Promise<void> {
  await peer.readU8();
  const name = new TextEncoder().encode("scripted");
  const init = new Uint8Array(24 + name.length);
  const view = new DataView(init.buffer);
  view.setUint16(0, 64);
  view.setUint16(2, 48);
  init.set([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0], 4);
  view.setUint32(20, name.length);
  init.set(name, 24);
  await peer.send(init);
  while (true) {
    const byte = await peer.read(1).catch(() => undefined);
    if (byte === undefined) return;
    await peer.send(byte);
  }
}
