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
  /** Listen address: a literal, a host name (every address) or `*`; ignored with `path`. */
  readonly address: string;
  /**
   * A Unix socket path to listen on instead of TCP, made mode 0660 (its
   * file permissions are the authentication). @default {TCP}
   */
  readonly path?: string;
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
  if (options.path !== undefined) {
    listeners = [await bindUnixSocket(options.path)];
  } else {
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
      if (options.path !== undefined) return `unix:${options.path}`;
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
        if (options.path !== undefined) await removeSocketFile(options.path);
      })();
      return closing;
    },
  };
}

/** Mode of a Unix control socket: the owner and its group may connect. */
const UNIX_SOCKET_MODE = 0o660;

/**
 * Binds a Unix socket at `path` with mode 0660: bound under a temporary
 * name, its mode set, then renamed into place, so it is never reachable
 * with the umask's mode. A stale socket at `path` (nobody accepts) is
 * replaced; a live one is left alone.
 *
 * @throws {Deno.errors.AddrInUse} when a live socket is at `path`; other
 * errors when something that is no socket is there, or the bind fails.
 */
async function bindUnixSocket(path: string): Promise<Deno.Listener> {
  let existing: Deno.FileInfo | undefined;
  try {
    existing = await Deno.lstat(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (existing !== undefined) {
    if (!existing.isSocket) throw new Deno.errors.AlreadyExists(`${path} exists and is no socket`);
    let live = false;
    try {
      (await Deno.connect({ transport: "unix", path })).close();
      live = true;
    } catch { /* stale: nobody accepts */ }
    if (live) throw new Deno.errors.AddrInUse(`Another process listens on ${path}`);
  }
  const temporary = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  const listener = Deno.listen({ transport: "unix", path: temporary });
  try {
    await Deno.chmod(temporary, UNIX_SOCKET_MODE);
    await Deno.rename(temporary, path);
  } catch (error) {
    listener.close();
    await removeSocketFile(temporary);
    throw error;
  }
  return listener;
}

/** Removes a socket file we bound; gone already is fine. */
async function removeSocketFile(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch { /* gone, or not ours to remove */ }
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
