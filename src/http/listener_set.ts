/**
 * The long-lived listening sockets of one service (the control socket, the
 * gateway): bound on every address of a listen address, accepting with
 * back-off, each connection handed to the owner, and, for TLS, rebound with
 * a reloaded certificate on SIGHUP without touching connections in progress.
 *
 * @module
 */

import { acceptWithBackoff } from "../io/accept_with_backoff.ts";
import { pause, startDeadline } from "../io/deadline.ts";
import { formatHostPort } from "../io/duplex.ts";
import { bindAll } from "../io/listen_addresses.ts";
import { sameTls, type TlsMaterial } from "../io/tls_material.ts";
import type { Logger } from "../log.ts";

/** Options of {@linkcode openListenerSet}. */
export interface ListenerSetOptions {
  /** Listen address: a literal, a host name (every address) or `*`. */
  readonly address: string;
  /** Port; 0 picks one, the same on every address. */
  readonly port: number;
  /**
   * The certificate to serve, read at bind and at each reload; absent for
   * plain TCP. @default {plain TCP}
   */
  readonly tls?: () => TlsMaterial | undefined;
  /** Aborted when the service stops: accepting ends. */
  readonly signal: AbortSignal;
  /** Deadline for resolving a host name in `address`, in milliseconds. */
  readonly resolveTimeoutMs: number;
  /** Where failed accepts are logged. */
  readonly logger: Logger;
  /** What listens, for log lines (`Control`, `Gateway`). */
  readonly what: string;
  /** Takes each accepted connection; it owns it from then on. */
  readonly onConnection: (conn: Deno.Conn) => void;
}

/** Bound listening sockets; see {@linkcode openListenerSet}. */
export interface ListenerSet {
  /** Bound addresses (`127.0.0.1:24999`, `[::1]:8443`). */
  readonly addresses: readonly string[];
  /**
   * With TLS, rebinds every socket on its address with the current
   * certificate when it changed; connections in progress are untouched.
   * Resolves to false when nothing changed.
   *
   * @throws when no socket could be bound again (the service is down), or
   * with the first error when some kept the old certificate.
   */
  reloadTls(): Promise<boolean>;
  /** Stops listening and waits for the accept loops; idempotent. */
  close(): Promise<void>;
}

/** How long a rebind waits for the old socket of a port to be released. */
const REBIND_ATTEMPTS = 40;
const REBIND_PAUSE_MS = 50;

/**
 * Binds every address of `options.address` and starts accepting.
 *
 * @throws {Deno.errors.AddrInUse} and other bind errors; a TLS service whose
 * `tls()` gives nothing throws a plain {@linkcode Error}.
 */
export async function openListenerSet(options: ListenerSetOptions): Promise<ListenerSet> {
  const { logger, what, signal } = options;
  let material = options.tls?.();
  if (options.tls !== undefined && material === undefined) {
    throw new Error(`${what} TLS is enabled but not configured`);
  }
  const bind = (hostname: string, port: number, pair = material): Deno.Listener =>
    pair
      ? Deno.listenTls({ hostname, port, transport: "tcp", cert: pair.cert, key: pair.key })
      : Deno.listen({ hostname, port, transport: "tcp" });
  let chosenPort = options.port;
  let listeners: Deno.Listener[];
  {
    using resolving = startDeadline(options.resolveTimeoutMs, signal);
    listeners = await bindAll(options.address, options.port, (hostname) => {
      const listener = bind(hostname, chosenPort);
      // Port 0: the other addresses of a host name get the same port.
      chosenPort = (listener.addr as Deno.NetAddr).port;
      return listener;
    }, { signal: resolving.signal });
  }

  async function acceptLoop(listener: Deno.Listener): Promise<void> {
    const accepting = { signal, logger, what };
    for (let conn; (conn = await acceptWithBackoff(listener, accepting)) !== undefined;) {
      options.onConnection(conn);
    }
  }

  let loops = listeners.map(acceptLoop);
  let closing: Promise<void> | undefined;
  let reloading: Promise<boolean> = Promise.resolve(false);

  // Deno has no way to swap the certificate of a TLS listener, and a second
  // socket on the same port needs SO_REUSEPORT on both (unstable): so close
  // the old listeners, then bind the same addresses again. Connections
  // arriving in between are refused; clients retry.
  async function rebind(): Promise<boolean> {
    const next = options.tls?.();
    if (closing || next === undefined || sameTls(next, material)) return false;
    const old = listeners;
    for (const listener of old) listener.close();
    await Promise.all(loops);
    const fresh: Deno.Listener[] = [];
    let failure: unknown;
    for (const listener of old) {
      const { hostname, port } = listener.addr as Deno.NetAddr;
      try {
        fresh.push(await bindRetrying(() => bind(hostname, port, next)));
      } catch (error) {
        // Keep serving with the old certificate rather than not at all.
        failure = error;
        try {
          fresh.push(await bindRetrying(() => bind(hostname, port, material)));
        } catch { /* the error below says it */ }
      }
    }
    listeners = fresh;
    loops = fresh.map(acceptLoop);
    if (fresh.length === 0) {
      throw new Error(`Cannot listen for ${what.toLowerCase()} connections again`, {
        cause: failure,
      });
    }
    if (failure !== undefined) throw failure;
    material = next;
    return true;
  }

  return {
    addresses: listeners.map((l) => {
      const addr = l.addr as Deno.NetAddr;
      return formatHostPort(addr.hostname, addr.port);
    }),
    reloadTls() {
      reloading = reloading.catch(() => false).then(rebind);
      return reloading;
    },
    close() {
      closing ??= (async () => {
        await reloading.catch(() => {});
        for (const listener of listeners) {
          try {
            listener.close();
          } catch {
            // Already closed.
          }
        }
        await Promise.all(loops);
      })();
      return closing;
    },
  };
}

/** Binds, retrying briefly while the old socket on the port is released. */
async function bindRetrying(bind: () => Deno.Listener): Promise<Deno.Listener> {
  for (let attempt = 1;; attempt++) {
    try {
      return bind();
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse) || attempt >= REBIND_ATTEMPTS) throw error;
      await pause(REBIND_PAUSE_MS, new AbortController().signal);
    }
  }
}
