/**
 * The pool-port rendezvous: one port of the pool, one one-shot listener on
 * it (plain TCP for `vnc`, a WebSocket upgrade for `vnc-ws`/`vnc-wss`), and
 * the first viewer to arrive wins; the port closes at once and goes back to
 * the pool when the session ends.
 *
 * @module
 */

import type { ConsoleType } from "../config.ts";
import { describeError, RefusalError } from "../errors.ts";
import { isTimeout } from "../io/deadline.ts";
import { formatHostPort } from "../io/duplex.ts";
import type { OriginPolicy } from "../http/origin_policy.ts";
import type { TlsMaterial } from "../io/tls_material.ts";
import type { Logger } from "../log.ts";
import type { PortLease, PortPool } from "./port_pool.ts";
import type { ArrivedViewer, Rendezvous } from "./rendezvous.ts";
import { type ClientListener, openTcpListener } from "./tcp_listener.ts";
import { openWebSocketListener } from "./websocket_listener.ts";
import type { ViewerGate } from "./viewer_gate.ts";

/** Options of {@linkcode openPortRendezvous}. */
export interface PortRendezvousOptions {
  /** The console kind: what listens on the port. */
  readonly kind: ConsoleType;
  /**
   * The port taken for this session (before the VNC server was pinned);
   * the rendezvous owns it from now on, whatever happens.
   */
  readonly lease: PortLease;
  /** Where another port comes from when something else holds this one. */
  readonly ports: PortPool;
  /** The port the request asked for; 0 lets the pool choose another. */
  readonly requestedPort: number;
  /** `--proxy-listen-address`. */
  readonly listenAddress: string;
  /** Certificate and key, for `vnc-wss`, and for `vnc` raw VNC over TLS. */
  readonly tls?: TlsMaterial;
  /** Ends the resolution of a host name in `listenAddress`. */
  readonly signal: AbortSignal;
  /** The session's logger. */
  readonly logger: Logger;
  /** For `vnc-ws`/`vnc-wss`: keepalive, handshake deadline and cap. */
  readonly webSocket: {
    readonly pingIntervalMs: number;
    readonly handshakeTimeoutMs: number;
    readonly maxPendingHandshakes: number;
    /** Which pages may open the WebSocket. @default {any} */
    readonly origins?: OriginPolicy;
    /** Also speak the `base64` sub-protocol when offered. @default {false} */
    readonly base64?: boolean;
  };
  /** Who may connect (`client_address`, pending per address). @default {anyone} */
  readonly gate?: ViewerGate;
}

/** How many bind attempts on other pool ports before giving up. */
const BIND_ATTEMPTS = 8;

/**
 * Listens on the leased port, or, when another process holds it, on other
 * ports of the pool (a few attempts).
 *
 * @throws {RefusalError} `source port in use`, `no free ports`, `cannot
 * listen on the forwarded port` or `request timed out`; the lease (and any
 * other taken) is back in the pool by then.
 */
export async function openPortRendezvous(options: PortRendezvousOptions): Promise<PortRendezvous> {
  let lease = options.lease;
  try {
    for (let attempt = 1;; attempt++) {
      const listener = await listen(lease.port, options);
      if (listener !== undefined) return new PortRendezvous(lease, listener, options);
      // Something else holds the port: try another one from the pool.
      lease.release();
      if (options.requestedPort !== 0) throw new RefusalError("source port in use");
      if (attempt >= BIND_ATTEMPTS) throw new RefusalError("no free ports");
      lease = options.ports.acquire();
      options.logger.debug(
        `Got port ${lease.port} from pool, ${options.ports.available} remaining`,
      );
    }
  } catch (error) {
    lease.release();
    throw error;
  }
}

/** Opens the listener of the console kind; `undefined` when the port is taken. */
async function listen(
  port: number,
  options: PortRendezvousOptions,
): Promise<ClientListener | undefined> {
  const { listenAddress, logger, signal, tls } = options;
  try {
    return options.kind === "vnc"
      ? await openTcpListener(
        listenAddress,
        port,
        signal,
        options.gate ? { gate: options.gate, logger } : undefined,
        tls,
      )
      : await openWebSocketListener(listenAddress, port, {
        logger,
        pingIntervalMs: options.webSocket.pingIntervalMs,
        handshakeTimeoutMs: options.webSocket.handshakeTimeoutMs,
        maxPendingHandshakes: options.webSocket.maxPendingHandshakes,
        ...(options.webSocket.origins ? { origins: options.webSocket.origins } : {}),
        ...(options.webSocket.base64 ? { base64: true } : {}),
        ...(options.gate ? { gate: options.gate } : {}),
        signal,
        ...(tls ? { tls } : {}),
      });
  } catch (error) {
    if (isTimeout(error) || signal.aborted) {
      logger.warn(`Resolving "${listenAddress}" took too long`);
      throw new RefusalError("request timed out", { cause: error });
    }
    const where = formatHostPort(listenAddress, port);
    if (error instanceof Deno.errors.AddrInUse) {
      logger.warn(`Error binding to ${where}: port taken by another process`);
      return undefined;
    }
    logger.error(`Error binding to ${where}: ${describeError(error)}`);
    throw new RefusalError("cannot listen on the forwarded port", { cause: error });
  }
}

/** A pool port waiting for its one viewer; see {@linkcode openPortRendezvous}. */
export class PortRendezvous implements Rendezvous {
  readonly #lease: PortLease;
  readonly #ports: PortPool;
  readonly #logger: Logger;
  #listener: ClientListener | undefined;
  #closed: Promise<void> | undefined;
  /** The bound addresses (`127.0.0.1:25123`, `[::]:25123`). */
  readonly addresses: readonly string[];

  /** Use {@linkcode openPortRendezvous}. */
  constructor(lease: PortLease, listener: ClientListener, options: PortRendezvousOptions) {
    this.#lease = lease;
    this.#ports = options.ports;
    this.#logger = options.logger;
    this.#listener = listener;
    this.addresses = listener.addresses;
  }

  /** The port the viewer connects to. */
  get port(): number {
    return this.#lease.port;
  }

  /** The bound addresses, joined for log lines. */
  get description(): string {
    return this.addresses.join(", ");
  }

  /**
   * Waits for the first viewer; the port stops listening as it arrives, and
   * the listener is let go (thousands of sessions may be live): a WebSocket
   * listener still tells upgrades in flight that the console is taken
   * (1001), each on its own deadline.
   */
  async waitForViewer(signal: AbortSignal): Promise<ArrivedViewer> {
    const listener = this.#listener;
    if (listener === undefined) throw new Deno.errors.BadResource("The rendezvous is closed");
    const duplex = await listener.acceptOne(signal);
    this.#listener = undefined;
    return { duplex, authenticated: false };
  }

  /** Stops listening and gives the port back to the pool; idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      try {
        await this.#listener?.close();
      } finally {
        this.#listener = undefined;
        this.#lease.release();
        this.#logger.debug(
          `Returned port ${this.#lease.port} to port pool, contains ${this.#ports.available} ports`,
        );
      }
    })();
    return this.#closed;
  }
}
