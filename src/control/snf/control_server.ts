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

import type { Config } from "../../config.ts";
import { describeError, RefusalError } from "../../errors.ts";
import { ConnDuplex, type Duplex, formatHostPort } from "../../io/duplex.ts";
import { isTimeout, raceDeadline, startDeadline, withDeadline } from "../../io/deadline.ts";
import { type ConnectionSlot, ConnectionSlots } from "../../io/connection_slots.ts";
import { openListenerSet } from "../../http/listener_set.ts";
import type { Logger } from "../../log.ts";
import type { SessionRegistry } from "../../session/session_registry.ts";
import { publicHost, publicPort } from "../../gateway/gateway_server.ts";
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
import type { BackendAddress, BackendTarget } from "../../rfb/backend_handshake.ts";

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
}

/** A running control server. */
export interface ControlServer {
  /** Bound addresses (`127.0.0.1:24999`). */
  readonly addresses: readonly string[];
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
  const handlers = new Set<Promise<void>>();
  let nextId = 1;

  // The cap counts connections still sending their request and those being
  // answered; a flood of idle ones evicts itself instead of the real client.
  const slots = new ConnectionSlots({
    capacity: config.maxControlConnections,
    logger: deps.logger,
    what: "Control connection",
  });

  function onConnection(conn: Deno.Conn): void {
    const control = new ConnDuplex(conn);
    const logger = deps.logger.child(`[C${nextId++}]`);
    const slot = slots.admit(control.remoteAddress, () => control.close());
    const handler = slot === undefined
      ? refuseBusy(control, logger)
      : handleAdmitted(control, slot, logger);
    handlers.add(handler);
    handler.finally(() => handlers.delete(handler));
  }

  async function handleAdmitted(
    control: Duplex,
    slot: ConnectionSlot,
    logger: Logger,
  ): Promise<void> {
    using _held = slot;
    await handleControlConnection(control, deps, { logger, slot });
  }

  const listeners = await openListenerSet({
    address: config.listenAddress,
    port: config.listenPort,
    ...(config.enableSsl ? { tls: deps.tls } : {}),
    signal: deps.stopping,
    resolveTimeoutMs: config.controlTimeoutMs,
    logger: deps.logger,
    what: "Control",
    onConnection,
  });
  let closing: Promise<void> | undefined;
  return {
    addresses: listeners.addresses,
    close() {
      closing ??= (async () => {
        await listeners.close();
        await Promise.allSettled([...handlers]);
      })();
      return closing;
    },
    reloadTls: () => config.enableSsl ? listeners.reloadTls() : Promise.resolve(false),
  };
}

/** Answers a newcomer when every slot is held by a request being answered. */
async function refuseBusy(control: Duplex, logger: Logger): Promise<void> {
  logger.warn(`Too many control requests in progress, refusing ${control.remoteAddress}`);
  await sendReply(control, { status: "FAILED", reason: "server busy" }, logger);
}

/** Options of {@linkcode handleControlConnection}. */
export interface ControlConnectionOptions {
  /** The connection's logger (`[C<n>]`). */
  readonly logger: Logger;
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
  logger.info(`New control connection from ${control.remoteAddress}`);
  let admitted: Admitted | undefined;
  let reply: ControlReply;
  try {
    using phase = startDeadline(config.controlTimeoutMs, deps.stopping);
    let text: string;
    try {
      text = await raceDeadline(
        phase.signal,
        readRequestText(control, { maxBytes: config.controlMaxBytes, slot }),
      );
      slot?.complete();
    } catch (error) {
      // Dropped for a newcomer (logged by the slots): its socket is closed.
      if (slot?.evicted) return;
      if (error instanceof RefusalError || isTimeout(error)) throw error;
      // The transport failed (reset, failed TLS handshake): nobody to answer.
      logger.warn(`Cannot read the control request: ${describeError(error)}`);
      control.close();
      return;
    }
    const request = parseForwardRequest(text);
    await raceDeadline(
      phase.signal,
      authenticate(
        { user: request.authUser, password: request.authPassword },
        { address: control.remoteAddress, logger },
        deps,
      ),
    );
    const backend = request.destinationAddress.startsWith(UNIX_PREFIX)
      ? request.destinationAddress
      : formatHostPort(request.destinationAddress, request.destinationPort);
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
      : { rendezvous: "port", sourcePort: request.sourcePort };
    admitted = await admit(
      {
        backend: backendTargetOf(request),
        kind: request.type,
        route,
        viewerPassword: request.password,
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
    );
  } catch (error) {
    const reason = error instanceof RefusalError
      ? error.message
      : isTimeout(error)
      ? "request timed out"
      : "internal error";
    if (!(error instanceof RefusalError)) {
      const log = isTimeout(error) ? logger.warn : logger.error;
      log(`Control request failed: ${describeError(error)}`);
    }
    logger.warn(`FAILED forwarding: ${reason}`);
    reply = { status: "FAILED", reason };
  }
  const delivered = await sendReply(control, reply, logger);
  if (admitted === undefined) return;
  if (!delivered) {
    // Nobody learned the port: the forwarding can never be used.
    logger.warn("Control client went away before the reply, dropping the forwarding");
    await admitted.session.close();
    return;
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

/** First size of the buffer a control request is read into. */
const FIRST_REQUEST_BUFFER = 1024;

/** How long a control client may take to accept its reply. */
const REPLY_TIMEOUT_MS = 10_000;

/** Writes the reply and closes; false when the client could not take it. */
async function sendReply(control: Duplex, reply: ControlReply, logger: Logger): Promise<boolean> {
  try {
    using phase = startDeadline(REPLY_TIMEOUT_MS);
    await withDeadline(control, phase.signal, () => control.write(encodeReply(reply)));
    return true;
  } catch (error) {
    logger.warn(`Cannot send the control reply: ${describeError(error)}`);
    return false;
  } finally {
    control.close();
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
export async function readRequestText(
  control: Duplex,
  options: { readonly maxBytes: number; readonly slot?: ConnectionSlot },
): Promise<string> {
  const { maxBytes, slot } = options;
  const scanner = new JsonObjectScanner();
  // Requests are a few hundred bytes: start small and grow up to the bound,
  // so a flood of connections does not cost `maxBytes` each.
  let buffer = new Uint8Array(Math.min(maxBytes, FIRST_REQUEST_BUFFER));
  let filled = 0;
  while (true) {
    if (filled === maxBytes) throw new RefusalError("malformed request: too large");
    if (filled === buffer.length) {
      const grown = new Uint8Array(Math.min(maxBytes, buffer.length * 4));
      grown.set(buffer);
      buffer = grown;
    }
    const n = await control.read(buffer.subarray(filled));
    slot?.touch();
    if (n === null) {
      throw new RefusalError(
        filled === 0 ? "malformed request: empty" : "malformed request: incomplete JSON",
      );
    }
    let end: number | undefined;
    try {
      end = scanner.feed(buffer.subarray(filled, filled + n));
    } catch (error) {
      throw new RefusalError("malformed request: not a JSON object", { cause: error });
    }
    if (end !== undefined) return new TextDecoder().decode(buffer.subarray(0, filled + end));
    filled += n;
  }
}
