/**
 * The snf control socket: one JSON request per connection, read
 * stream-correctly within a size and time bound, answered with one reply.
 * Each connection is handled on its own, so a slow client never holds up
 * the others; the number handled at once is capped, and at the cap the
 * connection idle longest without a complete request makes room for the
 * newcomer, so a flood of idle connections cannot lock out a real panel.
 *
 * @module
 */

import type { Config, ConsoleType } from "../../config.ts";
import { RefusalError } from "../../errors.ts";
import type { Duplex } from "../../io/duplex.ts";
import { raceDeadline, startDeadline } from "../../io/deadline.ts";
import type { ConnectionSlot } from "../../io/connection_slots.ts";
import {
  clientHost,
  failureReasonOf,
  readFramedRequest,
  readRequestOrDrop,
  type RequestFraming,
  sendControlReply,
  startControlSocket,
} from "../control_socket.ts";
import type { Logger } from "../../log.ts";
import type { SessionRegistry } from "../../session/session_registry.ts";
import { publicHost, publicPort } from "../../gateway/gateway_server.ts";
import type { RequestRateLimit } from "../request_rate_limit.ts";
import {
  type AdmissionDeps,
  admit,
  type Admitted,
  authenticate,
  type ViewerRoute,
} from "../admission.ts";
import {
  type ControlReply,
  encodeReply,
  type ForwardRequest,
  JsonObjectScanner,
  parseForwardRequest,
  UNIX_PREFIX,
} from "./control_message.ts";
import {
  type BackendAddress,
  type BackendTarget,
  describeBackend,
} from "../../rfb/backend_handshake.ts";

/** What the control server needs from the daemon. */
export interface ControlServerDeps extends AdmissionDeps {
  /** The daemon's configuration. */
  readonly config: Config;
  /** The daemon's logger. */
  readonly logger: Logger;
  /** The `proxy_address` of OK replies. */
  readonly proxyAddress: string;
  /** Where admitted sessions run. */
  readonly sessions: SessionRegistry;
  /** `--rate-limit`: requests per source address and per user. @default {none} */
  readonly rateLimit?: RequestRateLimit;
}

/** A running control server. */
export interface ControlServer {
  /** Bound addresses (`127.0.0.1:24999`). */
  readonly addresses: readonly string[];
  /** Control connections open now (read, answered or refused). */
  readonly connections: number;
  /** Stops accepting and waits for the control connections in progress. */
  close(): Promise<void>;
  /**
   * With `--enable-ssl`, rebinds the control socket(s) on the same
   * addresses with the current `deps.tls()` material (SIGHUP); connections
   * in progress are untouched. Resolves to false when nothing changed.
   *
   * @throws when no listener could be bound again (the control socket is down)
   */
  reloadTls(): Promise<boolean>;
}

/**
 * Binds the control socket(s) and starts accepting.
 *
 * @throws {Deno.errors.AddrInUse} and other bind errors, at start-up.
 */
export async function startControlServer(deps: ControlServerDeps): Promise<ControlServer> {
  const { config } = deps;
  const socket = await startControlSocket({
    what: "Control",
    idPrefix: "C",
    listen: { address: config.listenAddress, port: config.listenPort },
    ...(config.enableSsl ? { tls: deps.tls } : {}),
    capacity: config.maxControlConnections,
    signal: deps.stopping,
    resolveTimeoutMs: config.controlTimeoutMs,
    logger: deps.logger,
    onConnection: (control, context) => handleControlConnection(control, deps, context),
    onBusy: (control, logger) => refuseBusy(control, logger, deps),
  });
  return {
    addresses: socket.addresses,
    get connections() {
      return socket.connections;
    },
    close: () => socket.close(),
    reloadTls: () => socket.reloadTls(),
  };
}

/** Answers a newcomer when every slot is held by a request being answered. */
async function refuseBusy(
  control: Duplex,
  logger: Logger,
  deps: Pick<ControlServerDeps, "metrics">,
): Promise<void> {
  logger.warn(`Too many control requests in progress, refusing ${control.remoteAddress}`);
  deps.metrics?.requested();
  deps.metrics?.failed("server busy");
  await sendReply(control, { status: "FAILED", reason: "server busy" }, logger);
}

/** Options of {@linkcode handleControlConnection}. */
export interface ControlConnectionOptions {
  /** The connection's logger (`[C<n>]`). */
  readonly logger: Logger;
  /** The connection's forwarding id (`C3`), for the audit line. */
  readonly id?: string;
  /**
   * Its place among the control connections: touched on every read, and
   * completed once the request is in, so the connection cannot be evicted
   * while it is answered.
   */
  readonly slot?: ConnectionSlot;
}

/**
 * Handles one control connection: read, validate, authenticate, set up the
 * forwarding, reply, close. Never throws.
 */
export async function handleControlConnection(
  control: Duplex,
  deps: ControlServerDeps,
  options: ControlConnectionOptions,
): Promise<void> {
  const { config } = deps;
  const { logger, slot } = options;
  const { metrics } = deps;
  logger.info(`New control connection from ${control.remoteAddress}`, {
    event: "control_connection",
    peer: control.remoteAddress,
  });
  let admitted: Admitted | undefined;
  let reply: ControlReply;
  let received: number | undefined;
  let setUp: { kind: ConsoleType; rendezvous: "port" | "token" | "password" } | undefined;
  try {
    using phase = startDeadline(config.controlTimeoutMs, deps.stopping);
    const text = await readRequestOrDrop(
      control,
      readRequestText(control, { maxBytes: config.controlMaxBytes, slot }),
      { signal: phase.signal, slot, logger, what: "control request" },
    );
    if (text === undefined) return;
    received = performance.now();
    metrics?.requested();
    const host = clientHost(control.remoteAddress);
    if (host !== undefined) deps.rateLimit?.chargeAddress(host);
    const request = parseForwardRequest(text);
    await raceDeadline(
      phase.signal,
      authenticate(
        { user: request.authUser, password: request.authPassword },
        { address: control.remoteAddress, logger },
        deps,
      ),
    );
    deps.rateLimit?.chargeUser(request.authUser);
    const target = backendTargetOf(request);
    const backend = describeBackend(target);
    logger.info(
      `Request by "${request.authUser}": ${request.type} (client req'd: ${request.sourcePort}) -> ` +
        backend,
    );
    const gateway = deps.gateway;
    const route: ViewerRoute = request.gateway
      ? {
        rendezvous: "token",
        ttlMs: request.ttlMs ?? config.connectTimeoutMs,
        ...(request.clientAddress !== undefined ? { clientAddress: request.clientAddress } : {}),
      }
      : config.gatewaySnf && request.type === gateway?.consoleType
      ? { rendezvous: "password" }
      : {
        rendezvous: "port",
        sourcePort: request.sourcePort,
        ...(request.clientAddress !== undefined ? { clientAddress: request.clientAddress } : {}),
      };
    if (route.rendezvous === "password" && request.clientAddress !== undefined) {
      // A password viewer is matched after its handshake: nothing to bind.
      throw new RefusalError("malformed request: client_address");
    }
    admitted = await admit(
      {
        backend: target,
        kind: request.type,
        route,
        viewerPassword: request.password,
        controlUser: request.authUser,
        ...(options.id !== undefined ? { id: options.id } : {}),
        ...(request.idleTimeoutMs !== undefined ? { idleTimeoutMs: request.idleTimeoutMs } : {}),
        ...(request.maxSessionTimeMs !== undefined
          ? { maxSessionTimeMs: request.maxSessionTimeMs }
          : {}),
      },
      logger,
      deps,
    );
    reply = replyFor(admitted, deps);
    if (admitted.token !== undefined) {
      const { hashPrefix, ttlMs } = admitted.token;
      logger.info(`Token ${hashPrefix} minted, valid for ${ttlMs / 1000} s`);
    }
    logger.info(
      `New forwarding: ${admitted.description} (client req'd: ${request.sourcePort}) -> ${backend}`,
      {
        event: "forwarding_set_up",
        user: request.authUser,
        kind: request.type,
        rendezvous: route.rendezvous,
        backend,
        port: admitted.port,
        client_address: request.clientAddress,
      },
    );
    setUp = { kind: request.type, rendezvous: route.rendezvous };
  } catch (error) {
    const reason = failureReasonOf(error, logger, "Control request");
    logger.warn(`FAILED forwarding: ${reason}`, { event: "forwarding_failed", reason });
    // Requests that never arrived whole (timeouts, oversize) count too.
    if (received === undefined) metrics?.requested();
    metrics?.failed(reason);
    reply = { status: "FAILED", reason };
  }
  const delivered = await sendReply(control, reply, logger);
  if (admitted === undefined) return;
  if (!delivered) {
    // Nobody learned the port: the forwarding can never be used.
    logger.warn("Control client went away before the reply, dropping the forwarding");
    metrics?.failed("control client went away");
    await admitted.session.close();
    return;
  }
  if (setUp !== undefined && received !== undefined) {
    metrics?.setUp(setUp.kind, setUp.rendezvous, performance.now() - received);
  }
  deps.sessions.start(admitted.session);
}

/** Where and how to reach the VNC server a request names. */
function backendTargetOf(request: ForwardRequest): BackendTarget {
  const address: BackendAddress = request.destinationAddress.startsWith(UNIX_PREFIX)
    ? { transport: "unix", path: request.destinationAddress.slice(UNIX_PREFIX.length) }
    : { host: request.destinationAddress, port: request.destinationPort };
  return {
    ...address,
    ...(request.destinationPassword !== undefined ? { password: request.destinationPassword } : {}),
    ...(request.destinationTls ? { tls: true } : {}),
    ...(request.destinationTlsName !== undefined ? { tlsName: request.destinationTlsName } : {}),
  };
}

/**
 * The OK reply: snf's fields (through the gateway, its public port and
 * host), and in token mode the token, its WebSocket path and, with `--web`,
 * the noVNC page that opens the console.
 */
function replyFor(admitted: Admitted, deps: ControlServerDeps): ControlReply {
  if (admitted.port !== undefined) {
    return { status: "OK", sourcePort: admitted.port, proxyAddress: deps.proxyAddress };
  }
  const url = deps.gateway!.publicUrl;
  const base = {
    status: "OK",
    sourcePort: publicPort(url),
    proxyAddress: publicHost(url),
  } as const;
  const token = admitted.token;
  if (token === undefined) return base;
  const path = `websockify?token=${token.token}`;
  const page = `${url.origin}/vnc.html?path=${encodeURIComponent(path)}&autoconnect=true`;
  return {
    ...base,
    tokenFields: {
      token: token.token,
      path,
      ...(deps.config.webDir === undefined ? {} : { url: page }),
    },
  };
}

/** Writes the reply and closes; false when the client could not take it. */
function sendReply(control: Duplex, reply: ControlReply, logger: Logger): Promise<boolean> {
  return sendControlReply(control, encodeReply(reply), logger);
}

/** How snf requests end: the closing brace of one JSON object. */
class JsonObjectFraming implements RequestFraming {
  readonly #scanner = new JsonObjectScanner();

  feed(chunk: Uint8Array): number | undefined {
    try {
      return this.#scanner.feed(chunk);
    } catch (error) {
      throw new RefusalError("malformed request: not a JSON object", { cause: error });
    }
  }
}

/**
 * Reads bytes until one complete JSON object has arrived, however it is
 * split, with or without a newline after it, and with the client keeping
 * its side open. Bounded by `options.maxBytes`; every read touches
 * `options.slot`, so a client still sending is not the idle one.
 *
 * @throws {RefusalError} when the request is too large, not an object or
 * incomplete at end of stream.
 */
export function readRequestText(
  control: Duplex,
  options: { readonly maxBytes: number; readonly slot?: ConnectionSlot | undefined },
): Promise<string> {
  return readFramedRequest(control, {
    maxBytes: options.maxBytes,
    slot: options.slot,
    framing: new JsonObjectFraming(),
    errors: {
      empty: "malformed request: empty",
      incomplete: "malformed request: incomplete JSON",
      tooLarge: "malformed request: too large",
    },
  });
}
