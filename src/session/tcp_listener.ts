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

/**
 * Opens a TCP listener on every address of `address` at `port`; resolving
 * a host name ends when `signal` aborts.
 *
 * @throws {Deno.errors.AddrInUse} when the port is taken.
 */
export async function openTcpListener(
  address: string,
  port: number,
  signal?: AbortSignal,
): Promise<ClientListener> {
  const listeners = await bindAll(
    address,
    port,
    (hostname, p) => Deno.listen({ hostname, port: p, transport: "tcp" }),
    signal ? { signal } : {},
  );
  return new TcpClientListener(listeners);
}

class TcpClientListener implements ClientListener {
  readonly #listeners: Deno.Listener[];
  #closed = false;
  readonly addresses: readonly string[];

  constructor(listeners: Deno.Listener[]) {
    this.#listeners = listeners;
    this.addresses = listeners.map((l) => {
      const addr = l.addr as Deno.NetAddr;
      return formatHostPort(addr.hostname, addr.port);
    });
  }

  async acceptOne(signal: AbortSignal): Promise<Duplex> {
    signal.throwIfAborted();
    const onAbort = () => void this.close();
    signal.addEventListener("abort", onAbort, { once: true });
    const accepts = this.#listeners.map((l) => l.accept());
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
