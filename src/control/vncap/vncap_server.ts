/**
 * The vncap control socket (`--vncap-listen`): twisted_vncauthproxy's
 * protocol, for Ganeti Web Manager, ganetimgr and other vncap clients,
 * onto the same admission, sessions and limits as snf's. One `\r\n`-ended
 * JSON line in, `<port>\r\n` or `FAILED\r\n` out, then close. vncap has no
 * control authentication: only loopback, `--vncap-allow` ranges or the
 * Unix socket's file permissions say who may ask.
 *
 * Unlike vncap, the VNC server is connected and its handshake done before
 * the reply (no port-reuse race), and the viewer is only ever offered VNC
 * Authentication (CVE-2022-36436 offered None).
 *
 * @module
 */

import type { Config, ConsoleType } from "../../config.ts";
import { RefusalError } from "../../errors.ts";
import type { Duplex } from "../../io/duplex.ts";
import { startDeadline } from "../../io/deadline.ts";
import type { ConnectionSlot } from "../../io/connection_slots.ts";
import { type Cidr, cidrContains, parseCidr } from "../../io/cidr.ts";
import type { TlsMaterial } from "../../io/tls_material.ts";
import type { Logger } from "../../log.ts";
import type { PortPool } from "../../session/port_pool.ts";
import type { SessionRegistry } from "../../session/session_registry.ts";
import type { RequestRateLimit } from "../request_rate_limit.ts";
import type { BackendTarget } from "../../rfb/backend_handshake.ts";
import { describeBackend } from "../../rfb/backend_handshake.ts";
import { type AdmissionDeps, admit, type Admitted, type ViewerRoute } from "../admission.ts";
import {
  clientHost,
  type ControlSocket,
  failureReasonOf,
  readFramedRequest,
  readRequestOrDrop,
  sendControlReply,
  startControlSocket,
} from "../control_socket.ts";
import { openWindow, type Window } from "./vncap_window.ts";
import {
  CrlfLineFraming,
  encodeVncapReply,
  parseVncapRequest,
  VNCAP_MAX_LINE_BYTES,
  type VncapRequest,
} from "./vncap_message.ts";

/** What the vncap control server needs from the daemon. */
export interface VncapServerDeps extends AdmissionDeps {
  /** The daemon's configuration (`vncapListen` set). */
  readonly config: Config;
  /** The daemon's logger. */
  readonly logger: Logger;
  /** Where admitted sessions run. */
  readonly sessions: SessionRegistry;
  /** vncap's own pool (`--vncap-min-port`..`--vncap-max-port`). */
  readonly vncapPorts: PortPool;
  /** The certificate of `tls` forwardings (`--vncap-cert`, `keys/vncap.crt`). */
  readonly vncapTls: () => TlsMaterial | undefined;
  /** `--rate-limit`: requests per source address (vncap has no users). @default {none} */
  readonly rateLimit?: RequestRateLimit;
}

/** Loopback may always ask: vncap's own default was `interface=localhost`. */
const LOOPBACK = ["127.0.0.0/8", "::1/128"].map(parseCidr);

/**
 * Binds the vncap control socket and starts accepting.
 *
 * @throws {Deno.errors.AddrInUse} and other bind errors, at start-up.
 */
export async function startVncapServer(deps: VncapServerDeps): Promise<ControlSocket> {
  const { config } = deps;
  const listen = config.vncapListen!;
  const allowed = [...LOOPBACK, ...config.vncapAllow.map(parseCidr)];
  return await startControlSocket({
    what: "vncap control",
    idPrefix: "V",
    listen: listen.transport === "unix"
      ? { path: listen.path }
      : { address: listen.host, port: listen.port },
    capacity: config.maxControlConnections,
    signal: deps.stopping,
    resolveTimeoutMs: config.controlTimeoutMs,
    logger: deps.logger,
    onConnection: (control, context) => {
      // A Unix socket's peers passed its file permissions.
      if (listen.transport === "tcp" && !isAllowed(control.remoteAddress, allowed)) {
        context.logger.warn(
          `Refused a vncap control connection from ${control.remoteAddress}: not in --vncap-allow`,
        );
        control.close();
        return Promise.resolve();
      }
      return handleVncapConnection(control, deps, context);
    },
    onBusy: async (control, logger) => {
      logger.warn(`Too many control requests in progress, refusing ${control.remoteAddress}`);
      deps.metrics?.requested();
      deps.metrics?.failed("server busy");
      await sendControlReply(control, encodeVncapReply(undefined), logger);
    },
  });
}

function isAllowed(remoteAddress: string, allowed: readonly Cidr[]): boolean {
  const host = remoteAddress.slice(0, remoteAddress.lastIndexOf(":")).replace(/^\[|\]$/g, "");
  return allowed.some((range) => cidrContains(range, host));
}

/** Options of {@linkcode handleVncapConnection}. */
export interface VncapConnectionOptions {
  /** The connection's logger (`[V<n>]`). */
  readonly logger: Logger;
  /** The forwarding id (`V3`), for the audit line. */
  readonly id?: string;
  /** Its place among the control connections. */
  readonly slot?: ConnectionSlot;
}

/**
 * Handles one vncap control connection: read the line, validate, set up
 * the forwarding, reply, close. Never throws.
 */
export async function handleVncapConnection(
  control: Duplex,
  deps: VncapServerDeps,
  options: VncapConnectionOptions,
): Promise<void> {
  const { config, metrics } = deps;
  const { logger, slot } = options;
  logger.info(`New vncap control connection from ${control.remoteAddress}`, {
    event: "control_connection",
    protocol: "vncap",
    peer: control.remoteAddress,
  });
  let admitted: Admitted | undefined;
  let window: Window | undefined;
  let port: number | undefined;
  let received: number | undefined;
  let kind: ConsoleType | undefined;
  let request: VncapRequest | undefined;
  try {
    using phase = startDeadline(config.controlTimeoutMs, deps.stopping);
    const text = await readRequestOrDrop(
      control,
      readFramedRequest(control, {
        maxBytes: VNCAP_MAX_LINE_BYTES,
        slot,
        framing: new CrlfLineFraming(),
        errors: {
          empty: "malformed request: empty",
          incomplete: "malformed request: no \\r\\n line end",
          tooLarge: "malformed request: line too long",
        },
      }),
      { signal: phase.signal, slot, logger, what: "vncap request" },
    );
    if (text === undefined) return;
    received = performance.now();
    metrics?.requested();
    const host = clientHost(control.remoteAddress);
    if (host !== undefined) deps.rateLimit?.chargeAddress(host);
    request = parseVncapRequest(text);
    kind = request.ws ? (request.tls ? "vnc-wss" : "vnc-ws") : "vnc";
    const target: BackendTarget = {
      host: request.daddr,
      port: request.dport,
      // vncap answered a VNC server's VncAuth with `password`, always.
      password: request.password,
    };
    const backend = describeBackend(target);
    logger.info(
      `vncap request: ${kind}${request.tls && !request.ws ? " over TLS" : ""} ` +
        `(client req'd: ${request.sport}) -> ${backend}`,
    );
    const tls = request.tls ? deps.vncapTls() : undefined;
    if (request.tls && tls === undefined) throw new RefusalError("TLS is not configured");
    const ports = deps.vncapPorts;
    // vncap honoured `sport` only while it was free, else took any port.
    const sourcePort = request.sport !== 0 && ports.isAvailable(request.sport) ? request.sport : 0;
    const route: ViewerRoute = {
      rendezvous: "port",
      sourcePort,
      ports,
      ...(request.clientIp !== undefined ? { clientAddress: request.clientIp } : {}),
      ...(tls ? { tls } : {}),
      ...(request.ws ? { webSocketBase64: true } : {}),
    };
    const sessionRequest = {
      backend: target,
      kind,
      route,
      viewerPassword: request.clientPassword ?? request.password,
      ...(options.id !== undefined ? { id: options.id } : {}),
      protocol: "vncap" as const,
      waitMs: request.timeoutMs,
    };
    if (config.vncapWindow) {
      window = await openWindow(sessionRequest, logger, deps);
      admitted = window.first;
    } else {
      admitted = await admit(sessionRequest, logger, deps);
    }
    port = admitted.port;
    logger.info(
      `New forwarding: ${admitted.description} (client req'd: ${request.sport}) -> ${backend}` +
        (window ? `, any number of viewers for ${request.timeoutMs / 1000} s` : ""),
      {
        event: "forwarding_set_up",
        protocol: "vncap",
        kind,
        rendezvous: "port",
        backend,
        port,
        client_address: request.clientIp,
      },
    );
  } catch (error) {
    port = undefined;
    const reason = failureReasonOf(error, logger, "vncap request");
    logger.warn(`FAILED forwarding: ${reason}`, {
      event: "forwarding_failed",
      protocol: "vncap",
      reason,
    });
    if (received === undefined) metrics?.requested();
    metrics?.failed(reason);
  }
  const delivered = await sendControlReply(control, encodeVncapReply(port), logger);
  if (admitted === undefined) return;
  if (!delivered) {
    logger.warn("Control client went away before the reply, dropping the forwarding");
    metrics?.failed("control client went away");
    await (window ? window.abandon() : admitted.session.close());
    return;
  }
  if (kind !== undefined && received !== undefined) {
    metrics?.setUp(kind, "port", performance.now() - received);
  }
  if (window) window.start();
  else deps.sessions.start(admitted.session);
}
