/**
 * The one-shot listener a forwarding opens for its viewer. The first client
 * wins and the listener stops accepting at once (one viewer per console). Plain `vnc`
 * forwardings listen on TCP here; `vnc-ws` and `vnc-wss` use
 * `websocket_listener.ts`, behind the same interface.
 *
 * @module
 */

import { ConnDuplex, type Duplex, formatHostPort, setNoDelay } from "../io/duplex.ts";
import { bindAll } from "../io/listen_addresses.ts";
import type { Logger } from "../log.ts";
import type { ViewerGate } from "./viewer_gate.ts";

/** A listener that hands out exactly one viewer connection. */
export interface ClientListener {
  /** The bound addresses, for log lines (`*:25123`, `127.0.0.1:25123`). */
  readonly addresses: readonly string[];
  /**
   * Waits for the first viewer and stops listening as soon as it arrives.
   * Rejects with the signal's reason when `signal` aborts first.
   */
  acceptOne(signal: AbortSignal): Promise<Duplex>;
  /** Stops listening and frees the port; idempotent. */
  close(): Promise<void>;
}

/** Who may connect, and where refusals are logged. */
export interface ListenerGate {
  /** Decides on each connection as it arrives, before any byte. */
  readonly gate: ViewerGate;
  /** Where refused connections are logged. */
  readonly logger: Logger;
}

/**
 * Opens a TCP listener (TLS with `tls`: raw VNC over TLS) on every address
 * of `address` at `port`; resolving
 * a host name ends when `signal` aborts. With `gate`, a connection it
 * refuses is closed at once and the listener goes on waiting.
 *
 * @throws {Deno.errors.AddrInUse} when the port is taken.
 */
export async function openTcpListener(
  address: string,
  port: number,
  signal?: AbortSignal,
  gate?: ListenerGate,
  tls?: { readonly cert: string; readonly key: string },
): Promise<ClientListener> {
  const listeners = await bindAll(
    address,
    port,
    (hostname, p) =>
      tls
        ? Deno.listenTls({ hostname, port: p, transport: "tcp", cert: tls.cert, key: tls.key })
        : Deno.listen({ hostname, port: p, transport: "tcp" }),
    signal ? { signal } : {},
  );
  return new TcpClientListener(listeners, gate);
}

class TcpClientListener implements ClientListener {
  readonly #listeners: Deno.Listener[];
  readonly #gate: ListenerGate | undefined;
  #closed = false;
  readonly addresses: readonly string[];

  constructor(listeners: Deno.Listener[], gate: ListenerGate | undefined) {
    this.#listeners = listeners;
    this.#gate = gate;
    this.addresses = listeners.map((l) => {
      const addr = l.addr as Deno.NetAddr;
      return formatHostPort(addr.hostname, addr.port);
    });
  }

  async acceptOne(signal: AbortSignal): Promise<Duplex> {
    signal.throwIfAborted();
    const onAbort = () => void this.close();
    signal.addEventListener("abort", onAbort, { once: true });
    const accepts = this.#listeners.map((l) => this.#acceptAllowed(l));
    try {
      const conn = await Promise.any(accepts);
      // The first client wins: stop listening before anything else, then
      // drop any connection another address family accepted at the same time.
      await this.close();
      for (const other of accepts) {
        other.then((c) => c !== conn && c.close(), () => {});
      }
      setNoDelay(conn);
      return new ConnDuplex(conn);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw error instanceof AggregateError ? error.errors[0] : error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The first connection on `listener` the gate lets in; refused ones are closed. */
  async #acceptAllowed(listener: Deno.Listener): Promise<Deno.Conn> {
    while (true) {
      const conn = await listener.accept();
      if (this.#gate === undefined) return conn;
      const remote = conn.remoteAddr as Deno.NetAddr;
      const verdict = this.#gate.gate.enter(formatHostPort(remote.hostname, remote.port));
      if (verdict.ok) {
        // The viewer is handed over at once: nothing is pending here.
        verdict.pending[Symbol.dispose]();
        return conn;
      }
      this.#gate.logger.warn(
        `Refused a client from ${formatHostPort(remote.hostname, remote.port)}: ${verdict.why}`,
        { event: "viewer_refused", refusal: verdict.refusal },
      );
      conn.close();
    }
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const listener of this.#listeners) {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    }
    return Promise.resolve();
  }
}
