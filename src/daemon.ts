/**
 * The composition root: loads users and certificates, builds the port pool
 * and the control server, and handles signals:
 * SIGTERM/SIGINT stop accepting, drain live sessions for `--drain-timeout`,
 * then close them; SIGHUP reloads the users file and the certificate and
 * reopens the log file, without touching live sessions. Password checks run
 * in a pool of crypt Workers, terminated when the daemon stops.
 *
 * @module
 */

import { describeError } from "./errors.ts";
import { CryptPool } from "./auth/crypt_pool.ts";
import { UserDb, type UserDbOptions } from "./auth/user_db.ts";
import type { Config } from "./config.ts";
import { isWildcardAddress } from "./io/listen_addresses.ts";
import { AuthFailLimiter } from "./auth/auth_fail_limiter.ts";
import { type ControlServer, startControlServer } from "./control/snf/control_server.ts";
import { startVncapServer } from "./control/vncap/vncap_server.ts";
import type { ControlSocket } from "./control/control_socket.ts";
import {
  type BackendTlsMaterial,
  loadBackendTls,
  loadTls,
  type TlsMaterial,
} from "./io/tls_material.ts";
import { type AdmissionDeps, admit, destinationPolicy } from "./control/admission.ts";
import { decodeHandover } from "./control/handover.ts";
import { type Gateway, type GatewayDeps, startGateway } from "./gateway/gateway_server.ts";
import { StaticFiles } from "./gateway/static_files.ts";
import { OriginPolicy } from "./http/origin_policy.ts";
import { parseCidr } from "./io/cidr.ts";
import { formatHostPort } from "./io/duplex.ts";
import { PortPool } from "./session/port_pool.ts";
import { SessionRegistry } from "./session/session_registry.ts";
import type { Session } from "./session/session.ts";
import { BufferPool } from "./io/buffer_pool.ts";
import { getFqdn } from "./io/fqdn.ts";
import type { Logger } from "./log.ts";
import { acquirePidFile, type PidFile } from "./pid_file.ts";
import type { ConnectFunction } from "./rfb/backend_handshake.ts";
import { AuditLog } from "./observe/audit_log.ts";
import { DaemonMetrics } from "./observe/daemon_metrics.ts";
import { type MetricsServer, startMetricsServer } from "./observe/metrics_server.ts";
import { SessionQuota } from "./control/session_quota.ts";
import { RequestRateLimit } from "./control/request_rate_limit.ts";
import { PendingViewers, viewerGate } from "./session/viewer_gate.ts";
import { RedisClient } from "./tokens/redis/redis_client.ts";
import { parseRedisUrl } from "./tokens/redis/redis_url.ts";
import { RedisTokenStore } from "./tokens/redis_token_store.ts";
import { loadTokenStoreKey, type TokenStoreKey } from "./tokens/token_seal.ts";

/** Collaborators of the daemon, replaceable in tests. */
export interface DaemonDeps {
  /** The root logger. */
  readonly logger: Logger;
  /** Called on SIGHUP before the reload, e.g. to reopen the log file. */
  readonly onReload?: () => void;
  /** Resolves when the daemon should stop (tests); signals always work. */
  readonly stop?: Promise<void>;
  /** Called once the control socket listens, with its addresses. */
  readonly onReady?: (addresses: readonly string[]) => void;
  /** @default {Deno.connect} */
  readonly connect?: ConnectFunction;
  /**
   * Called with each session as it starts, once its control reply went out
   * (the demo watches its forwardings' states).
   */
  readonly onSessionStart?: (session: Session) => void;
  /** Where session-end audit lines go besides the log. @default {the log only} */
  readonly audit?: AuditLog;
}

/** Thrown for start-up problems the CLI reports and exits non-zero for. */
export class StartupError extends Error {
  /** Creates a start-up error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StartupError";
  }
}

/**
 * Runs the daemon until SIGTERM/SIGINT (or `deps.stop`), then shuts down.
 *
 * @throws {StartupError} when it cannot start (port taken, bad certificate,
 * malformed users file, live PID file).
 */
export async function runDaemon(config: Config, deps: DaemonDeps): Promise<void> {
  const { logger } = deps;
  let pidFile: PidFile | undefined;
  if (config.pidFile !== undefined) {
    try {
      pidFile = acquirePidFile(config.pidFile);
    } catch (error) {
      throw new StartupError(`Cannot use PID file: ${describeError(error)}`, { cause: error });
    }
  }
  const stopping = new AbortController();
  const closing = new AbortController();
  const sessions = new SessionRegistry(
    deps.onSessionStart ? { onStart: deps.onSessionStart } : {},
  );
  let control: ControlServer | undefined;
  let vncap: ControlSocket | undefined;
  let controlUp = false;
  let draining = false;
  let gateway: Gateway | undefined;
  let metricsServer: MetricsServer | undefined;
  let redis: RedisClient | undefined;
  const signalHandlers: [Deno.Signal, () => void][] = [];
  const crypt = new CryptPool(
    { size: config.cryptWorkers, queueLimit: config.cryptQueueLimit },
    { logger },
  );
  const userOptions: UserDbOptions = {
    crypt: (password, setting) => crypt.crypt(password, setting),
    maxRounds: config.maxCryptRounds,
  };
  try {
    let users = loadUsersAtStart(config.authFile, userOptions, logger);
    let tls = loadTlsAtStart(config, logger);
    let backendTls = startupStep(
      "Cannot load --backend-ca, --backend-cert or --backend-key",
      () => loadBackendTls(backendTlsFiles(config)),
    );
    const destinations = startupStep(
      "Invalid --backend-allow or --backend-deny",
      () => destinationPolicy(config),
    );
    const proxyAddress = isWildcardAddress(config.proxyListenAddress)
      ? await getFqdn()
      : config.proxyListenAddress;
    const ports = new PortPool(config.minPort, config.maxPort, {
      cooldownMs: config.portCooldownMs,
    });
    const poolSize = config.maxPort - config.minPort + 1;
    const metrics = new DaemonMetrics({
      poolFree: () => ports.available,
      poolSize,
      controlConnections: () => (control?.connections ?? 0) + (vncap?.connections ?? 0),
      cryptQueue: () => crypt.waiting,
      users: () => users.size,
      draining: () => draining,
      ...(config.gatewayListen !== undefined
        ? { tokenStore: () => gateway?.tokensAvailable ?? false }
        : {}),
    });
    using _sampler = metrics;
    metrics.startLagSampler();
    const pendingViewers = new PendingViewers(config.maxPendingPerViewerIp);
    const buffers = new BufferPool({
      maxIdleBytes: config.relayBufferIdleBytes,
      maxLentBytes: config.relayBufferLentBytes,
    });

    const origins = config.allowedOrigins === undefined
      ? undefined
      : startupStep("Invalid --allowed-origins", () => new OriginPolicy(config.allowedOrigins));
    let sharedKey: TokenStoreKey | undefined;
    if (config.tokenStore !== undefined) {
      ({ redis, sharedKey } = await connectTokenStore(config, logger));
    }
    if (config.gatewayListen !== undefined) {
      const shared = redis === undefined ? undefined : { client: redis, key: sharedKey! };
      gateway = await startGatewayAtStart(config, {
        ...(shared
          ? {
            tokens: (onExpire) =>
              new RedisTokenStore({ ...shared, onExpire, maxTtlMs: config.maxTokenTtlMs }),
          }
          : {}),
        logger,
        tls: () => tls,
        stopping: stopping.signal,
        ...(origins ? { origins } : {}),
        // As for pool ports: a wildcard listener is named by this host's FQDN.
        host: isWildcardAddress(config.gatewayListen.host)
          ? await getFqdn()
          : config.gatewayListen.host,
        viewerGate: viewerGate({
          pending: pendingViewers,
          onRefused: (refusal) => metrics.viewerRefused(refusal),
        }),
        // A token another instance minted: this one opens its session.
        redeem: async (handover, log) => {
          const request = {
            ...decodeHandover(handover),
            route: { rendezvous: "redeemed" },
          } as const;
          const admitted = await admit(request, log, admission);
          sessions.start(admitted.session);
          return admitted.handoff!;
        },
      });
    }

    const vncapFiles = vncapTlsFiles(config);
    let vncapTls = vncapFiles === undefined ? undefined : startupStep(
      "Cannot load --vncap-cert and --vncap-key",
      () => loadTls(vncapFiles),
    );
    const admission: AdmissionDeps & Parameters<typeof startControlServer>[0] = {
      config,
      logger,
      users: () => users,
      ports,
      tls: () => tls,
      proxyAddress,
      stopping: stopping.signal,
      closing: closing.signal,
      sessions,
      buffers,
      ...(deps.connect ? { connect: deps.connect } : {}),
      destinations,
      backendTls: () => backendTls,
      authFailures: new AuthFailLimiter({ perSecond: config.authFailLimit }),
      ...(gateway ? { gateway } : {}),
      ...(origins ? { origins } : {}),
      metrics,
      audit: deps.audit ?? new AuditLog(),
      quota: new SessionQuota({
        maxSessions: config.maxSessions,
        maxPerUser: config.maxSessionsPerUser,
        maxPerBackend: config.maxSessionsPerBackend,
      }),
      pendingViewers,
      rateLimit: new RequestRateLimit(config.rateLimit),
    };
    try {
      control = await startControlServer(admission);
      controlUp = true;
    } catch (error) {
      throw new StartupError(
        `Cannot listen on ${config.listenAddress}:${config.listenPort}: ${describeError(error)}`,
        { cause: error },
      );
    }

    if (config.vncapListen !== undefined) {
      const listen = config.vncapListen;
      const where = listen.transport === "unix"
        ? `unix:${listen.path}`
        : formatHostPort(listen.host, listen.port);
      try {
        vncap = await startVncapServer({
          ...admission,
          vncapPorts: new PortPool(config.vncapMinPort, config.vncapMaxPort, {
            cooldownMs: config.portCooldownMs,
          }),
          vncapTls: () => vncapTls,
        });
      } catch (error) {
        throw new StartupError(`Cannot listen on ${where} (vncap): ${describeError(error)}`, {
          cause: error,
        });
      }
      logger.info(
        `Listening for vncap control connections on ${vncap.addresses.join(", ")}, ` +
          `forwarding ports ${config.vncapMinPort}-${config.vncapMaxPort}` +
          (vncapTls === undefined
            ? ", no TLS certificate (tls requests refused)"
            : `, TLS from ${vncapFiles!.certFile}`) +
          (config.vncapWindow ? ", window mode" : ""),
      );
    }

    if (config.metricsListen !== undefined) {
      const listen = config.metricsListen;
      const allow = startupStep(
        "Invalid --metrics-allow",
        () => config.metricsAllow.map(parseCidr),
      );
      try {
        metricsServer = await startMetricsServer({
          listen,
          allow,
          registry: metrics.registry,
          health: {
            controlUp: () => controlUp,
            users: () => users.size,
            poolFree: () => ports.available,
            poolSize,
            draining: () => draining,
            ...(gateway !== undefined ? { tokenStore: () => gateway!.tokensAvailable } : {}),
          },
          logger,
          resolveTimeoutMs: config.controlTimeoutMs,
        });
      } catch (error) {
        throw new StartupError(
          `Cannot listen on ${formatHostPort(listen.host, listen.port)} (metrics): ${
            describeError(error)
          }`,
          { cause: error },
        );
      }
      logger.info(`Metrics, health and readiness on ${metricsServer.addresses.join(", ")}`);
    }

    const server = control;
    const stopRequested = Promise.withResolvers<string>();
    deps.stop?.then(() => stopRequested.resolve("stop request"));
    const onSignal = (name: Deno.Signal) => () => stopRequested.resolve(name);
    const onHup = () => {
      try {
        deps.onReload?.();
      } catch (error) {
        logger.error(`Cannot reopen the log file: ${describeError(error)}`);
      }
      users = reloadUsers(config.authFile, userOptions, users, logger);
      tls = reloadTls(config, tls, logger);
      backendTls = reloadBackendTls(config, backendTls, logger);
      if (vncapFiles !== undefined) {
        try {
          vncapTls = loadTls(vncapFiles);
        } catch (error) {
          logger.error(`Keeping the old vncap certificate: ${describeError(error)}`);
        }
      }
      gateway?.reloadTls().then(
        (changed) => changed && logger.info("Gateway now uses the reloaded certificate"),
        (error) => logger.error(`Gateway after certificate reload: ${describeError(error)}`),
      );
      if (config.enableSsl) {
        server.reloadTls().then(
          (changed) => changed && logger.info("Control socket now uses the reloaded certificate"),
          (error) =>
            logger.error(`Control socket after certificate reload: ${describeError(error)}`),
        );
      }
      logger.info(
        `Reloaded: ${users.size} control users, ${sessions.size} live sessions untouched`,
      );
    };
    for (
      const [sig, handler] of [
        ["SIGTERM", onSignal("SIGTERM")],
        ["SIGINT", onSignal("SIGINT")],
        ["SIGHUP", onHup],
      ] as const
    ) {
      Deno.addSignalListener(sig, handler);
      signalHandlers.push([sig, handler]);
    }
    // Logged once the signal handlers are in place: a SIGHUP right after
    // this line must reload, not kill (the default action).
    logger.info(
      `Listening for control connections on ${control.addresses.join(", ")}` +
        (config.enableSsl ? " (TLS)" : "") +
        `, forwarding ports ${config.minPort}-${config.maxPort} on ${config.proxyListenAddress}`,
    );
    if (gateway !== undefined) {
      logger.info(
        `Gateway on ${gateway.addresses.join(", ")}` +
          (config.gatewayPlain ? " (plain HTTP)" : " (TLS)") +
          `, public URL ${gateway.publicUrl.origin}` +
          (config.gatewaySnf ? `, ${gateway.consoleType} requests by password` : "") +
          (redis !== undefined ? `, tokens shared through ${redis.description}` : "") +
          (config.webDir ? `, serving ${config.webDir}` : ""),
      );
    }
    deps.onReady?.(control.addresses);

    const cause = await stopRequested.promise;
    logger.info(`Caught ${cause}, closing control sockets`);
    draining = true;
    stopping.abort(new Error("The daemon is stopping"));
    await vncap?.close();
    await control.close();
    controlUp = false;
    await gateway?.close();
    await sessions.drain(config.drainTimeoutMs, logger);
  } finally {
    for (const [sig, handler] of signalHandlers) Deno.removeSignalListener(sig, handler);
    stopping.abort(new Error("The daemon is stopping"));
    await vncap?.close();
    await control?.close();
    await gateway?.close();
    closing.abort(new Error("The daemon stopped"));
    await sessions.settled();
    // Last: health and metrics answer through the whole drain.
    await metricsServer?.close();
    // After the gateway: its token store is closed.
    await redis?.close();
    // After the control server: its last requests got their checks.
    crypt.close();
    pidFile?.release();
  }
  logger.info("Stopped");
}

/** Runs a start-up step whose failure is a clear one-line start-up error. */
function startupStep<T>(what: string, step: () => T): T {
  try {
    return step();
  } catch (error) {
    throw new StartupError(`${what}: ${describeError(error)}`, { cause: error });
  }
}

/** Builds the gateway's parts from the configuration and binds it. */
async function startGatewayAtStart(
  config: Config,
  deps: Pick<
    GatewayDeps,
    "logger" | "tls" | "stopping" | "origins" | "host" | "viewerGate" | "redeem" | "tokens"
  >,
): Promise<Gateway> {
  const listen = config.gatewayListen!;
  if (!config.gatewayPlain && deps.tls() === undefined) {
    throw new StartupError(
      `The gateway needs --cert-file and --key-file (or --gateway-plain behind a TLS proxy)`,
    );
  }
  const trustedProxies = startupStep(
    "Invalid --trusted-proxy",
    () => config.trustedProxies.map(parseCidr),
  );
  const publicUrl = config.gatewayPublicUrl === undefined
    ? undefined
    : startupStep("Invalid --gateway-public-url", () => new URL(config.gatewayPublicUrl!));
  let web: StaticFiles | undefined;
  if (config.webDir !== undefined) {
    try {
      web = await StaticFiles.create(config.webDir, {
        ...(publicUrl ? { webSocketOrigins: [webSocketOrigin(publicUrl)] } : {}),
      });
    } catch (error) {
      throw new StartupError(`Cannot serve --web "${config.webDir}": ${describeError(error)}`, {
        cause: error,
      });
    }
  }
  try {
    return await startGateway({
      config,
      ...deps,
      trustedProxies,
      claimFailures: new AuthFailLimiter({ perSecond: config.authFailLimit }),
      ...(web ? { web } : {}),
      ...(publicUrl ? { publicUrl } : {}),
    });
  } catch (error) {
    throw new StartupError(
      `Cannot listen on ${formatHostPort(listen.host, listen.port)} (gateway): ${
        describeError(error)
      }`,
      { cause: error },
    );
  }
}

/**
 * Connects to the shared token store (`--token-store`) with its key and
 * CA. Redis need not answer yet: the daemon starts, refuses token requests
 * and fails `/readyz` until it does, and logs each change.
 *
 * @throws {StartupError} on a malformed URL, or a key or CA file that
 * cannot be used.
 */
async function connectTokenStore(
  config: Config,
  logger: Logger,
): Promise<{ redis: RedisClient; sharedKey: TokenStoreKey }> {
  const url = startupStep("Invalid --token-store", () => parseRedisUrl(config.tokenStore!));
  let sharedKey: TokenStoreKey;
  try {
    sharedKey = await loadTokenStoreKey(config.tokenStoreKeyFile!);
  } catch (error) {
    throw new StartupError(`Cannot use --token-store-key-file: ${describeError(error)}`, {
      cause: error,
    });
  }
  const caCerts = config.redisCaFile === undefined
    ? undefined
    : [startupStep("Cannot read --redis-ca", () => Deno.readTextFileSync(config.redisCaFile!))];
  let described = "";
  let lost = false;
  const redis = new RedisClient({
    url,
    ...(caCerts ? { caCerts } : {}),
    onStateChange: (available, reason) => {
      if (available) logger.info(`Token store ${described} answers${lost ? " again" : ""}`);
      else logger.error(`Token store ${described} unreachable: ${reason ?? "no answer"}`);
      lost ||= !available;
    },
  });
  described = redis.description;
  await redis.ready();
  if (!redis.available) {
    logger.error(
      `Token store ${described} does not answer yet: token requests are refused until it does`,
    );
  }
  return { redis, sharedKey };
}

/** The ws(s) origin a page at `url` opens its WebSocket to. */
function webSocketOrigin(url: URL): string {
  return `${url.protocol === "https:" ? "wss:" : "ws:"}//${url.host}`;
}

function loadUsersAtStart(path: string, options: UserDbOptions, logger: Logger): UserDb {
  try {
    const users = UserDb.fromText(Deno.readTextFileSync(path), options);
    if (users.size === 0) {
      logger.warn(`No users defined in "${path}": every request will be refused`);
    }
    return users;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      logger.warn(`Authentication file "${path}" not found: every request will be refused`);
      return UserDb.empty(options);
    }
    throw new StartupError(`Cannot load authentication file "${path}": ${describeError(error)}`, {
      cause: error,
    });
  }
}

function reloadUsers(
  path: string,
  options: UserDbOptions,
  current: UserDb,
  logger: Logger,
): UserDb {
  try {
    return UserDb.fromText(Deno.readTextFileSync(path), options);
  } catch (error) {
    logger.error(`Keeping the old users: cannot reload "${path}": ${describeError(error)}`);
    return current;
  }
}

/**
 * Reads and checks the certificate and key. With `--enable-ssl` they are
 * required; otherwise they are optional and only `vnc-wss` needs them.
 */
function loadTlsAtStart(config: Config, logger: Logger): TlsMaterial | undefined {
  try {
    return loadTls(config);
  } catch (error) {
    if (config.enableSsl) {
      throw new StartupError(`Cannot load TLS certificate and key: ${describeError(error)}`, {
        cause: error,
      });
    }
    logger.info(
      `No usable TLS certificate (${describeError(error)}): vnc-wss requests will be refused`,
    );
    return undefined;
  }
}

/** vncap's own defaults, where GWM's docs put them. */
const VNCAP_DEFAULT_CERT = "keys/vncap.crt";
const VNCAP_DEFAULT_KEY = "keys/vncap.key";

/**
 * The certificate and key of vncap `tls` forwardings: `--vncap-cert` and
 * `--vncap-key`, else `keys/vncap.crt` and `keys/vncap.key` in the working
 * directory when both exist (made absolute: SIGHUP rereads them); none
 * without `--vncap-listen`.
 */
function vncapTlsFiles(config: Config): { certFile: string; keyFile: string } | undefined {
  if (config.vncapListen === undefined) return undefined;
  if (config.vncapCertFile !== undefined && config.vncapKeyFile !== undefined) {
    return { certFile: config.vncapCertFile, keyFile: config.vncapKeyFile };
  }
  const exists = (path: string) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  };
  if (!exists(VNCAP_DEFAULT_CERT) || !exists(VNCAP_DEFAULT_KEY)) return undefined;
  const cwd = Deno.cwd();
  return { certFile: `${cwd}/${VNCAP_DEFAULT_CERT}`, keyFile: `${cwd}/${VNCAP_DEFAULT_KEY}` };
}

function backendTlsFiles(config: Config) {
  return {
    caFile: config.backendCaFile,
    certFile: config.backendCertFile,
    keyFile: config.backendKeyFile,
  };
}

function reloadBackendTls(
  config: Config,
  current: BackendTlsMaterial,
  logger: Logger,
): BackendTlsMaterial {
  try {
    return loadBackendTls(backendTlsFiles(config));
  } catch (error) {
    logger.error(`Keeping the old backend TLS files: ${describeError(error)}`);
    return current;
  }
}

function reloadTls(
  config: Config,
  current: TlsMaterial | undefined,
  logger: Logger,
): TlsMaterial | undefined {
  try {
    return loadTls(config);
  } catch (error) {
    if (current !== undefined) logger.error(`Keeping the old certificate: ${describeError(error)}`);
    return current;
  }
}
