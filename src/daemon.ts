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
import { type Config, isWildcardAddress } from "./config.ts";
import { AuthFailLimiter } from "./auth/auth_fail_limiter.ts";
import { type ControlServer, startControlServer } from "./control/snf/control_server.ts";
import {
  type BackendTlsMaterial,
  loadBackendTls,
  loadTls,
  type TlsMaterial,
} from "./io/tls_material.ts";
import { destinationPolicy } from "./control/admission.ts";
import { type Gateway, type GatewayDeps, startGateway } from "./gateway/gateway_server.ts";
import { StaticFiles } from "./gateway/static_files.ts";
import { OriginPolicy } from "./http/origin_policy.ts";
import { parseCidr } from "./io/cidr.ts";
import { formatHostPort } from "./io/duplex.ts";
import { PortPool } from "./session/port_pool.ts";
import { SessionRegistry } from "./session/session_registry.ts";
import { BufferPool } from "./io/buffer_pool.ts";
import { getFqdn } from "./io/fqdn.ts";
import type { Logger } from "./log.ts";
import { acquirePidFile, type PidFile } from "./pid_file.ts";
import type { ConnectFunction } from "./rfb/backend_handshake.ts";

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
  const sessions = new SessionRegistry();
  let control: ControlServer | undefined;
  let gateway: Gateway | undefined;
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
    const buffers = new BufferPool({
      maxIdleBytes: config.relayBufferIdleBytes,
      maxLentBytes: config.relayBufferLentBytes,
    });

    const origins = config.allowedOrigins === undefined
      ? undefined
      : startupStep("Invalid --allowed-origins", () => new OriginPolicy(config.allowedOrigins));
    if (config.gatewayListen !== undefined) {
      gateway = await startGatewayAtStart(config, {
        logger,
        tls: () => tls,
        stopping: stopping.signal,
        ...(origins ? { origins } : {}),
        // As for pool ports: a wildcard listener is named by this host's FQDN.
        host: isWildcardAddress(config.gatewayListen.host)
          ? await getFqdn()
          : config.gatewayListen.host,
      });
    }

    try {
      control = await startControlServer({
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
      });
    } catch (error) {
      throw new StartupError(
        `Cannot listen on ${config.listenAddress}:${config.listenPort}: ${describeError(error)}`,
        { cause: error },
      );
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
          (config.webDir ? `, serving ${config.webDir}` : ""),
      );
    }
    deps.onReady?.(control.addresses);

    const cause = await stopRequested.promise;
    logger.info(`Caught ${cause}, closing control sockets`);
    stopping.abort(new Error("The daemon is stopping"));
    await control.close();
    await gateway?.close();
    await sessions.drain(config.drainTimeoutMs, logger);
  } finally {
    for (const [sig, handler] of signalHandlers) Deno.removeSignalListener(sig, handler);
    stopping.abort(new Error("The daemon is stopping"));
    await control?.close();
    await gateway?.close();
    closing.abort(new Error("The daemon stopped"));
    await sessions.settled();
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
  deps: Pick<GatewayDeps, "logger" | "tls" | "stopping" | "origins" | "host">,
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
