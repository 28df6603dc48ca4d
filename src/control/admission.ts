/**
 * Admission, shared by every control front door: authenticate the control
 * user, then open a session for the validated request in DESIGN's order:
 * take a port (a full pool costs the VNC server nothing), pin the VNC
 * server, listen. What leaves here is a {@linkcode Session} that knows
 * nothing of the request: no control user, no control password.
 *
 * @module
 */

import { CryptBusyError } from "../auth/crypt_pool.ts";
import type { UserDb } from "../auth/user_db.ts";
import type { Config, ConsoleType } from "../config.ts";
import { RefusalError } from "../errors.ts";
import type { BufferPool } from "../io/buffer_pool.ts";
import { startDeadline } from "../io/deadline.ts";
import { DestinationPolicy } from "../io/destination_policy.ts";
import type { BackendTlsMaterial, TlsMaterial } from "../io/tls_material.ts";
import type { Logger } from "../log.ts";
import {
  type Backend,
  type BackendTarget,
  type ConnectFunction,
  describeBackend,
  openBackend,
} from "../rfb/backend_handshake.ts";
import type { Gateway, TokenOffer } from "../gateway/gateway_server.ts";
import type { OriginPolicy } from "../http/origin_policy.ts";
import { openPortRendezvous } from "../session/port_rendezvous.ts";
import { HandoffRendezvous } from "../session/handoff_rendezvous.ts";
import { TokenStoreUnavailableError } from "../tokens/token_store.ts";
import { encodeHandover } from "./handover.ts";
import type { Rendezvous } from "../session/rendezvous.ts";
import type { PortLease, PortPool } from "../session/port_pool.ts";
import { Session } from "../session/session.ts";
import type { SessionLimits } from "../session/session_spec.ts";
import type { AuthFailLimiter } from "../auth/auth_fail_limiter.ts";
import { parseCidr } from "../io/cidr.ts";
import type { AuditLog } from "../observe/audit_log.ts";
import type { DaemonMetrics } from "../observe/daemon_metrics.ts";
import { recordSession } from "../observe/session_recorder.ts";
import { type PendingViewers, viewerGate } from "../session/viewer_gate.ts";
import type { SessionQuota } from "./session_quota.ts";

/** What admission needs from the daemon. */
export interface AdmissionDeps {
  /** The daemon's configuration. */
  readonly config: Config;
  /** The current control users (replaced on reload). */
  readonly users: () => UserDb;
  /** The port pool. */
  readonly ports: PortPool;
  /** Current certificate and key, if loaded (`vnc-wss`). */
  readonly tls: () => TlsMaterial | undefined;
  /** Aborted at SIGTERM: stop accepting and waiting. */
  readonly stopping: AbortSignal;
  /** Aborted when the drain time is over. */
  readonly closing: AbortSignal;
  /** Limits failed logins (`--auth-fail-limit`). @default {no limit} */
  readonly authFailures?: AuthFailLimiter;
  /** The relay buffers all sessions share. @default {the relay's pool} */
  readonly buffers?: BufferPool;
  /** @default {Deno.connect} */
  readonly connect?: ConnectFunction;
  /** The gateway port, when `--gateway-listen` is set. */
  readonly gateway?: Gateway;
  /** Which pages may open a WebSocket (`--allowed-origins`). @default {any} */
  readonly origins?: OriginPolicy;
  /** The daemon's metrics. @default {none} */
  readonly metrics?: DaemonMetrics;
  /** Where session-end audit lines go. @default {none} */
  readonly audit?: AuditLog;
  /** `--max-sessions`, `--max-sessions-per-user`, `--max-sessions-per-backend`. @default {none} */
  readonly quota?: SessionQuota;
  /** `--max-pending-per-viewer-ip` at pool ports. @default {no limit} */
  readonly pendingViewers?: PendingViewers;
  /** Which VNC servers may be reached. @default {built from the config} */
  readonly destinations?: DestinationPolicy;
  /** Current CA and client certificate for VNC servers over TLS (replaced on reload). @default {none} */
  readonly backendTls?: () => BackendTlsMaterial;
}

/** A control user's credentials, as a front door received them (secret). */
export interface ControlCredentials {
  /** Control user. */
  readonly user: string;
  /** Control user's password. */
  readonly password: string;
}

/**
 * How the viewer comes in: a pool port of its own (`sourcePort`, 0 lets
 * the pool choose), or the gateway port, by a single-use token (which
 * expires after `ttlMs`, and which only `clientAddress` may redeem when
 * set) or by its one-time password.
 */
export type ViewerRoute =
  | {
    readonly rendezvous: "port";
    readonly sourcePort: number;
    /** Only viewers from this address or range may connect. */
    readonly clientAddress?: string;
    /**
     * The port speaks TLS with this material: raw VNC over TLS for `vnc`,
     * and `vnc-wss`'s certificate. @default {`deps.tls()` for `vnc-wss`, else plain}
     */
    readonly tls?: TlsMaterial;
    /** The port's WebSocket also speaks the `base64` sub-protocol (noVNC < 1.0). */
    readonly webSocketBase64?: boolean;
    /** Takes the pool port from this pool instead of `deps.ports` (vncap's). */
    readonly ports?: PortPool;
    /**
     * The port, held by the caller for several sessions in turn (vncap's
     * window): listened on, and its release left to the caller's lease.
     */
    readonly heldPort?: number;
  }
  | { readonly rendezvous: "token"; readonly ttlMs: number; readonly clientAddress?: string }
  | { readonly rendezvous: "password" }
  /**
   * At the gateway, by a token another instance minted (shared token
   * store): the viewer is here already and is handed over at once.
   */
  | { readonly rendezvous: "redeemed" };

/** A validated request for a session, in no protocol's terms. */
export interface SessionRequest {
  /** The VNC server. */
  readonly backend: BackendTarget;
  /** Console kind: how the viewer connects. */
  readonly kind: ConsoleType;
  /** Where the viewer comes in. */
  readonly route: ViewerRoute;
  /**
   * The viewer's one-time VNC password (secret); required but for a token,
   * which alone is then the credential.
   */
  readonly viewerPassword: string | undefined;
  /** The control user who asked (not secret): session limits and the audit line. */
  readonly controlUser?: string;
  /** The forwarding id of log lines (`C3`). */
  readonly id?: string;
  /** The control protocol that asked, when not snf's: the audit line says it. */
  readonly protocol?: "vncap";
  /** How long the forwarding waits for its viewer. @default {`--connect-timeout`} */
  readonly waitMs?: number;
  /** Asked-for idle timeout; no larger than `--idle-timeout` (when set). */
  readonly idleTimeoutMs?: number;
  /** Asked-for session time limit; no larger than `--max-session-time` (when set). */
  readonly maxSessionTimeMs?: number;
}

/** A session ready for its viewer, and where the viewer goes. */
export interface Admitted {
  /** The session; start it once the front door's reply went out, else close it. */
  readonly session: Session;
  /** The pool port the viewer connects to; undefined through the gateway. */
  readonly port: number | undefined;
  /** Where it listens, for log lines. */
  readonly description: string;
  /** In token mode: the token minted for the viewer. */
  readonly token?: TokenOffer;
  /** For a redeemed token: where the gateway hands the viewer over. */
  readonly handoff?: HandoffRendezvous;
}

/**
 * Checks the control user's password, or throws the refusal to send back.
 * A recently verified password passes on this thread; otherwise the
 * failed-login limits are charged, then the crypt runs in the worker pool,
 * for unknown users too (so they cost what a wrong password costs), and
 * the reason never says which of user or password was wrong.
 *
 * @throws {RefusalError} `authentication failed` (wrong, unknown or over
 * the limit) or `server busy` (the crypt queue is full).
 */
export async function authenticate(
  credentials: ControlCredentials,
  peer: { readonly address: string; readonly logger: Logger },
  deps: Pick<AdmissionDeps, "users" | "authFailures">,
): Promise<void> {
  const users = deps.users();
  const { user, password } = credentials;
  const { logger } = peer;
  if (users.verifyCached(user, password)) return;
  // The port is dropped: one host's connections share their limit.
  const address = peer.address.slice(0, peer.address.lastIndexOf(":"));
  const limited = deps.authFailures?.exhausted(address, user);
  if (limited !== undefined) {
    logger.warn(
      `Authentication failed for control user "${user}" from ${peer.address}: ` +
        `too many failed logins for this ${limited}, password not checked`,
    );
    throw new RefusalError("authentication failed");
  }
  let ok: boolean;
  try {
    ok = await users.verify(user, password);
  } catch (error) {
    // No check happened: that is no failed login.
    if (!(error instanceof CryptBusyError)) throw error;
    logger.warn(`Too many password checks waiting, refusing ${peer.address}`);
    throw new RefusalError("server busy", { cause: error });
  }
  if (ok) return;
  deps.authFailures?.take(address, user);
  logger.warn(`Authentication failed for control user "${user}" from ${peer.address}`);
  throw new RefusalError("authentication failed");
}

/**
 * Opens a session for an authenticated, validated request: takes its way
 * in (a pool port first, as a full pool costs the VNC server nothing),
 * connects to and handshakes with the VNC server, then listens on the port
 * or registers with the gateway. Everything taken is given back if a step
 * fails.
 *
 * @throws {RefusalError} with a reason for the front door's reply.
 */
export async function admit(
  request: SessionRequest,
  logger: Logger,
  deps: AdmissionDeps,
): Promise<Admitted> {
  const { config } = deps;
  const { route } = request;
  const gateway = route.rendezvous === "port" ? undefined : deps.gateway;
  if (route.rendezvous !== "port" && gateway === undefined) {
    throw new RefusalError("gateway is not configured");
  }
  const tokenLike = route.rendezvous === "token" || route.rendezvous === "redeemed";
  if (!tokenLike && request.viewerPassword === undefined) {
    throw new RefusalError("malformed request: password");
  }
  const tls = route.rendezvous !== "port"
    ? undefined
    : route.tls ?? (request.kind === "vnc-wss" ? deps.tls() : undefined);
  if (route.rendezvous === "port" && request.kind === "vnc-wss" && tls === undefined) {
    throw new RefusalError("TLS is not configured");
  }
  const limits = requestedLimits(request, config);
  const bound = route.rendezvous === "port" && route.clientAddress !== undefined
    ? parseCidr(route.clientAddress)
    : undefined;
  const backendText = describeBackend(request.backend);
  const hold = deps.quota?.reserve(request.controlUser, backendText);
  let lease: PortLease | undefined;
  let backend: Backend | undefined;
  let rendezvous: Rendezvous | undefined;
  try {
    const ports = (route.rendezvous === "port" ? route.ports : undefined) ?? deps.ports;
    lease = route.rendezvous !== "port"
      ? undefined
      : route.heldPort !== undefined
      ? heldLease(route.heldPort)
      : ports.acquire(route.sourcePort);
    if (lease) logger.debug(`Got port ${lease.port} from pool, ${ports.available} remaining`);
    using phase = startDeadline(config.serverTimeoutMs, deps.stopping);
    const dialled = performance.now();
    backend = await openBackend(request.backend, {
      retries: config.connectRetries,
      retryWaitMs: config.retryWaitMs,
      signal: phase.signal,
      logger,
      policy: deps.destinations ?? destinationPolicy(config),
      tls: { ...deps.backendTls?.(), allowAnonymousTls: config.backendAllowAnonymousTls },
      ...(deps.connect ? { connect: deps.connect } : {}),
    });
    deps.metrics?.backendHandshake(performance.now() - dialled);
    let port: number | undefined;
    let token: TokenOffer | undefined;
    let handoff: HandoffRendezvous | undefined;
    let waitMs = request.waitMs ?? config.connectTimeoutMs;
    if (lease !== undefined && route.rendezvous === "port") {
      const opened = await openPortRendezvous({
        kind: request.kind,
        lease,
        ports,
        requestedPort: route.sourcePort,
        listenAddress: config.proxyListenAddress,
        signal: phase.signal,
        logger,
        webSocket: {
          pingIntervalMs: config.wsPingIntervalMs,
          handshakeTimeoutMs: config.clientTimeoutMs,
          maxPendingHandshakes: config.maxWsHandshakes,
          ...(deps.origins ? { origins: deps.origins } : {}),
          ...(route.webSocketBase64 ? { base64: true } : {}),
        },
        ...(tls ? { tls } : {}),
        gate: viewerGate({
          ...(bound ? { bound } : {}),
          ...(deps.pendingViewers ? { pending: deps.pendingViewers } : {}),
          onRefused: (refusal) => deps.metrics?.viewerRefused(refusal),
        }),
      });
      rendezvous = opened;
      port = opened.port;
    } else if (route.rendezvous === "token") {
      token = await offerToken(gateway!, route, request);
      rendezvous = token.rendezvous;
      waitMs = token.ttlMs;
    } else if (route.rendezvous === "redeemed") {
      handoff = new HandoffRendezvous(`${gateway!.addresses.join(", ")} (gateway, shared token)`);
      rendezvous = handoff;
      waitMs = config.clientTimeoutMs;
    } else {
      rendezvous = gateway!.offerPassword(request.viewerPassword!);
    }
    const session = new Session(
      {
        backend: backend.duplex,
        credential: request.viewerPassword === undefined
          ? { kind: "none" }
          : { kind: "vnc-password", password: request.viewerPassword },
        kind: request.kind,
        limits: { ...sessionLimits(config), ...limits, waitMs },
      },
      rendezvous,
      {
        logger,
        stopping: deps.stopping,
        closing: deps.closing,
        ...(deps.buffers ? { buffers: deps.buffers } : {}),
        observer: recordSession(
          {
            controlUser: request.controlUser,
            kind: request.kind,
            rendezvous: route.rendezvous === "redeemed" ? "token" : route.rendezvous,
            backend: backendText,
            ...(request.protocol !== undefined ? { protocol: request.protocol } : {}),
          },
          { logger, id: `[${request.id ?? "-"}]` },
          deps,
        ),
        ...(hold ? { hold } : {}),
      },
    );
    return {
      session,
      port,
      description: rendezvous.description,
      ...(token ? { token } : {}),
      ...(handoff ? { handoff } : {}),
    };
  } catch (error) {
    // Leases and rendezvous release once: a second release is a no-op.
    backend?.duplex.close();
    await rendezvous?.close();
    lease?.release();
    hold?.[Symbol.dispose]();
    throw error;
  }
}

/**
 * Mints the viewer's token. With a shared store the token also carries
 * what another instance needs to open the session (see `handover.ts`).
 *
 * @throws {RefusalError} `token store unavailable`.
 */
async function offerToken(
  gateway: Gateway,
  route: Extract<ViewerRoute, { rendezvous: "token" }>,
  request: SessionRequest,
): Promise<TokenOffer> {
  try {
    return await gateway.offerToken({
      ttlMs: route.ttlMs,
      ...(route.clientAddress !== undefined ? { clientAddress: route.clientAddress } : {}),
      handover: () => encodeHandover(request),
    });
  } catch (error) {
    if (error instanceof TokenStoreUnavailableError) {
      throw new RefusalError("token store unavailable", { cause: error });
    }
    throw error;
  }
}

/** A lease on a port someone else holds: releasing it does nothing. */
function heldLease(port: number): PortLease {
  const release = () => {};
  return { port, release, [Symbol.dispose]: release };
}

/**
 * The request's own idle and session time limits: no larger than the
 * daemon's (0 asks for "never", larger than any limit).
 *
 * @throws {RefusalError} `idle_timeout above the daemon's limit` /
 * `max_session_time above the daemon's limit`.
 */
function requestedLimits(
  request: SessionRequest,
  config: Config,
): Pick<SessionLimits, "idleTimeoutMs" | "maxSessionTimeMs"> {
  const pick = (asked: number | undefined, daemon: number, field: string) => {
    if (asked === undefined) return daemon;
    if (daemon > 0 && (asked === 0 || asked > daemon)) {
      throw new RefusalError(`${field} above the daemon's limit`);
    }
    return asked;
  };
  return {
    idleTimeoutMs: pick(request.idleTimeoutMs, config.idleTimeoutMs, "idle_timeout"),
    maxSessionTimeMs: pick(request.maxSessionTimeMs, config.maxSessionTimeMs, "max_session_time"),
  };
}

/** The destinations `config` lets forwardings reach. */
export function destinationPolicy(config: Config): DestinationPolicy {
  return new DestinationPolicy({
    allow: config.backendAllow,
    deny: config.backendDeny,
    unixDirs: config.unixBackendDirs,
  });
}

/** The daemon-wide limits every session gets. */
export function sessionLimits(config: Config): SessionLimits {
  return {
    waitMs: config.connectTimeoutMs,
    viewerHandshakeMs: config.clientTimeoutMs,
    serverWriteMs: config.serverTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    maxSessionTimeMs: config.maxSessionTimeMs,
    allowExclusive: config.allowExclusive,
  };
}
