/**
 * One forwarding's lifecycle, as a straight line (DESIGN §4): take a port,
 * pin the VNC server, listen, and (after the control reply) wait for one
 * viewer, authenticate it, relay, and tear down exactly once.
 *
 * @module
 */

import type { Config } from "../config.ts";
import type { BufferPool } from "../io/buffer_pool.ts";
import type { ForwardRequest } from "../control/control_message.ts";
import { describeError, RefusalError, RfbError } from "../errors.ts";
import { readU8 } from "../io/byte_reader.ts";
import { type Duplex, formatHostPort } from "../io/duplex.ts";
import { isTimeout, startDeadline, withDeadline } from "../io/deadline.ts";
import { relay, type RelayCounters } from "../io/relay.ts";
import type { Logger } from "../log.ts";
import { type Backend, type ConnectFunction, openBackend } from "../rfb/backend_handshake.ts";
import { authenticateViewer } from "../rfb/client_handshake.ts";
import { type ClientListener, openTcpListener } from "./client_listener.ts";
import type { PortLease, PortPool } from "./port_pool.ts";
import { openWebSocketListener } from "./websocket_listener.ts";

/** A certificate and key in PEM form. */
export interface TlsMaterial {
  /** PEM certificate chain. */
  readonly cert: string;
  /** PEM private key. */
  readonly key: string;
}

/** What a forwarding needs from the daemon. */
export interface ForwardingDeps {
  /** The daemon's configuration. */
  readonly config: Config;
  /** The forwarding's logger (prefixed `[C<n>]`). */
  readonly logger: Logger;
  /** The port pool. */
  readonly ports: PortPool;
  /** Current certificate and key for `vnc-wss`, if configured. */
  readonly tls: () => TlsMaterial | undefined;
  /** Aborted when the daemon stops accepting (SIGTERM): waiting ends. */
  readonly stopping: AbortSignal;
  /** Aborted when the drain time is over: live sessions end. */
  readonly closing: AbortSignal;
  /** The relay buffers all sessions share. */
  readonly buffers: BufferPool;
  /** @default {Deno.connect} */
  readonly connect?: ConnectFunction;
}

/** Session states, logged on change (noVNC's connection state idea). */
export type ForwardingState = "listening" | "authenticating" | "relaying" | "closed";

/** How many bind attempts on other pool ports before giving up. */
const BIND_ATTEMPTS = 8;

/**
 * Sets up a forwarding for a validated and authenticated request: leases a
 * port, connects to and handshakes with the VNC server, and listens.
 * Everything taken is given back if a step fails.
 *
 * @throws {RefusalError} with a reason for the `FAILED` reply.
 */
export async function setUpForwarding(
  request: ForwardRequest,
  deps: ForwardingDeps,
): Promise<Forwarding> {
  const { config, logger } = deps;
  const tls = request.type === "vnc-wss" ? deps.tls() : undefined;
  if (request.type === "vnc-wss" && tls === undefined) {
    throw new RefusalError("TLS is not configured");
  }

  // DESIGN §4: take a port first (a full pool costs the VNC server nothing),
  // then pin the VNC server, then listen.
  let lease = deps.ports.acquire(request.sourcePort);
  logger.debug(`Got port ${lease.port} from pool, ${deps.ports.available} remaining`);
  let backend: Backend | undefined;
  try {
    const host = request.destinationAddress.replace(/^\[(.*)\]$/, "$1");
    using phase = startDeadline(config.serverTimeoutMs, deps.stopping);
    backend = await openBackend({ host, port: request.destinationPort }, {
      retries: config.connectRetries,
      retryWaitMs: config.retryWaitMs,
      signal: phase.signal,
      logger,
      ...(deps.connect ? { connect: deps.connect } : {}),
    });
    for (let attempt = 1;; attempt++) {
      const listener = await listen(lease.port, request, deps, tls);
      if (listener !== undefined) {
        return new Forwarding(deps, { password: request.password, lease, listener, backend });
      }
      // Something else holds the port: try another one from the pool.
      lease.release();
      if (request.sourcePort !== 0) throw new RefusalError("source port in use");
      if (attempt >= BIND_ATTEMPTS) throw new RefusalError("no free ports");
      lease = deps.ports.acquire();
      logger.debug(`Got port ${lease.port} from pool, ${deps.ports.available} remaining`);
    }
  } catch (error) {
    backend?.duplex.close();
    lease.release();
    throw error;
  }
}

/**
 * Opens the viewer listener of `request`'s type on `port`; `undefined` when
 * another process holds the port.
 */
async function listen(
  port: number,
  request: ForwardRequest,
  deps: ForwardingDeps,
  tls: TlsMaterial | undefined,
): Promise<ClientListener | undefined> {
  const { config, logger } = deps;
  try {
    return request.type === "vnc"
      ? await openTcpListener(config.proxyListenAddress, port)
      : await openWebSocketListener(config.proxyListenAddress, port, {
        logger,
        pingIntervalMs: config.wsPingIntervalMs,
        handshakeTimeoutMs: config.clientTimeoutMs,
        ...(tls ? { tls } : {}),
      });
  } catch (error) {
    const where = formatHostPort(config.proxyListenAddress, port);
    if (error instanceof Deno.errors.AddrInUse) {
      logger.warn(`Error binding to ${where}: port taken by another process`);
      return undefined;
    }
    logger.error(`Error binding to ${where}: ${describeError(error)}`);
    throw new RefusalError("cannot listen on the forwarded port", { cause: error });
  }
}

/** What a forwarding keeps of its deps for its whole life. */
type SessionDeps = Pick<
  ForwardingDeps,
  "config" | "logger" | "ports" | "stopping" | "closing" | "buffers"
>;

/**
 * A forwarding between its control reply and its end. It keeps only what
 * the session needs, and lets go of each part once it is done with it (the
 * viewer's one-time password after authentication, the listener once the
 * viewer is in), since thousands may be live at once.
 */
export class Forwarding {
  readonly #deps: SessionDeps;
  readonly #lease: PortLease;
  readonly #server: Duplex;
  #password: string | undefined;
  #listener: ClientListener | undefined;
  #viewer: Duplex | undefined;
  #state: ForwardingState = "listening";
  #closed = false;
  /** Bytes relayed so far. */
  readonly counters: RelayCounters = { aToB: 0, bToA: 0 };

  /** Use {@linkcode setUpForwarding}. */
  constructor(
    deps: ForwardingDeps,
    parts: { password: string; lease: PortLease; listener: ClientListener; backend: Backend },
  ) {
    const { config, logger, ports, stopping, closing, buffers } = deps;
    this.#deps = { config, logger, ports, stopping, closing, buffers };
    this.#password = parts.password;
    this.#lease = parts.lease;
    this.#listener = parts.listener;
    this.#server = parts.backend.duplex;
  }

  /** The forwarded port. */
  get port(): number {
    return this.#lease.port;
  }

  /** The current state. */
  get state(): ForwardingState {
    return this.#state;
  }

  /** The listener's addresses, for log lines; empty once the viewer is in. */
  get addresses(): readonly string[] {
    return this.#listener?.addresses ?? [];
  }

  /**
   * Waits for the viewer, authenticates it and relays until either side
   * ends; always tears down. Never throws: outcomes are logged.
   */
  async run(): Promise<void> {
    const { config, logger } = this.#deps;
    const started = performance.now();
    let outcome = "ended";
    try {
      const viewer = await this.#waitForViewer();
      if (typeof viewer === "string") {
        outcome = viewer;
        return;
      }
      this.#viewer = viewer;
      logger.info(`Connection from ${viewer.remoteAddress}`);
      // The listener stopped listening when the viewer won (a WebSocket
      // listener still answers, on their own deadline, the handshakes that
      // were in flight then): the session has no more use for it.
      this.#listener = undefined;

      this.#setState("authenticating");
      const clientInit = await this.#authenticate(viewer);
      this.#password = undefined;
      if (clientInit === undefined) {
        outcome = "client handshake failed";
        return;
      }
      // With QEMU's default policy an exclusive viewer drops every other
      // client of the VM, another forwarding's backend included (DESIGN §4.7).
      const shared = config.allowExclusive ? clientInit : 1;
      await this.#server.write(Uint8Array.of(shared));

      this.#setState("relaying");
      const result = await relay(viewer, this.#server, {
        signal: this.#deps.closing,
        counters: this.counters,
        pool: this.#deps.buffers,
      });
      outcome = result.endedBy === "a"
        ? "client closed"
        : result.endedBy === "b"
        ? "server closed"
        : "daemon stopped";
    } catch (error) {
      outcome = `failed: ${describeError(error)}`;
      logger.error(`Forwarding failed: ${describeError(error)}`);
    } finally {
      await this.close();
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      logger.info(
        `Session ended (${outcome}) after ${seconds} s: ` +
          `${this.counters.aToB} bytes client->server, ${this.counters.bToA} bytes server->client` +
          (this.#viewer ? `, client ${this.#viewer.remoteAddress}` : ""),
      );
    }
  }

  /** Waits `--connect-timeout` for the first viewer; a string says why none came. */
  async #waitForViewer(): Promise<Duplex | string> {
    const { config, logger } = this.#deps;
    const listener = this.#listener!;
    logger.info(`Waiting for a client to connect at ${listener.addresses.join(", ")}`);
    using phase = startDeadline(config.connectTimeoutMs, this.#deps.stopping);
    try {
      return await listener.acceptOne(phase.signal);
    } catch (error) {
      if (isTimeout(error)) {
        logger.info(`Timed out, no connection after ${config.connectTimeoutMs / 1000} sec`);
        return "no client";
      }
      logger.info(`No client: ${describeError(error)}`);
      return "stopped before a client came";
    }
  }

  /**
   * Makes the viewer pass VNC Authentication within `--client-timeout` and
   * reads its ClientInit; `undefined` (logged) when it fails.
   */
  async #authenticate(viewer: Duplex): Promise<number | undefined> {
    const { config, logger } = this.#deps;
    using phase = startDeadline(config.clientTimeoutMs, this.#deps.closing);
    try {
      return await withDeadline(viewer, phase.signal, async () => {
        const version = await authenticateViewer(viewer, this.#password!);
        logger.debug(`Client ${viewer.remoteAddress} authenticated with RFB ${version}`);
        // RFC 6143 §7.3.1: ClientInit is one byte, the shared flag.
        return await readU8(viewer);
      });
    } catch (error) {
      if (error instanceof RfbError && error.message === "Authentication failed") {
        logger.warn(`Authentication failed for client ${viewer.remoteAddress}`);
      } else {
        logger.warn(`Client ${viewer.remoteAddress} handshake failed: ${describeError(error)}`);
      }
      return undefined;
    }
  }

  /** Closes everything the forwarding holds and returns its port; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#setState("closed");
    this.#viewer?.close();
    this.#server.close();
    try {
      await this.#listener?.close();
    } finally {
      this.#listener = undefined;
      this.#lease.release();
      this.#deps.logger.debug(
        `Returned port ${this.#lease.port} to port pool, contains ${this.#deps.ports.available} ports`,
      );
    }
  }

  #setState(next: ForwardingState): void {
    if (this.#state === next) return;
    this.#deps.logger.debug(`State ${this.#state} -> ${next}`);
    this.#state = next;
  }
}
