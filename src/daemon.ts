/**
 * The composition root: loads users and certificates, builds the port pool
 * and the control server, and handles signals (DESIGN §2.1):
 * SIGTERM/SIGINT stop accepting, drain live sessions for `--drain-timeout`,
 * then close them; SIGHUP reloads the users file and the certificate and
 * reopens the log file, without touching live sessions.
 *
 * @module
 */

import { describeError } from "./errors.ts";
import { UserDb } from "./auth/users_file.ts";
import { type Config, isWildcardAddress } from "./config.ts";
import { type ControlServer, startControlServer } from "./control/control_server.ts";
import type { Forwarding, TlsMaterial } from "./forward/forwarding.ts";
import { PortPool } from "./forward/port_pool.ts";
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
  const sessions = new Map<Forwarding, Promise<void>>();
  let control: ControlServer | undefined;
  const signalHandlers: [Deno.Signal, () => void][] = [];
  try {
    let users = loadUsersAtStart(config.authFile, logger);
    let tls = loadTlsAtStart(config, logger);
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
        buffers,
        track(forwarding, running) {
          sessions.set(forwarding, running);
          running.finally(() => sessions.delete(forwarding));
        },
        ...(deps.connect ? { connect: deps.connect } : {}),
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
      users = reloadUsers(config.authFile, users, logger);
      tls = reloadTls(config, tls, logger);
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
    deps.onReady?.(control.addresses);

    const cause = await stopRequested.promise;
    logger.info(`Caught ${cause}, closing control sockets`);
    stopping.abort(new Error("The daemon is stopping"));
    await control.close();
    await drain(sessions, config.drainTimeoutMs, logger);
  } finally {
    for (const [sig, handler] of signalHandlers) Deno.removeSignalListener(sig, handler);
    stopping.abort(new Error("The daemon is stopping"));
    await control?.close();
    closing.abort(new Error("The daemon stopped"));
    await Promise.allSettled([...sessions.values()]);
    pidFile?.release();
  }
  logger.info("Stopped");
}

async function drain(
  sessions: Map<Forwarding, Promise<void>>,
  drainMs: number,
  logger: Logger,
): Promise<void> {
  if (sessions.size === 0) return;
  logger.info(`Waiting up to ${drainMs / 1000} s for ${sessions.size} live sessions`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)));
  await Promise.race([Promise.allSettled([...sessions.values()]), timeout]);
  clearTimeout(timer);
  if (sessions.size > 0) logger.info(`Closing ${sessions.size} sessions still live`);
}

function loadUsersAtStart(path: string, logger: Logger): UserDb {
  try {
    const users = UserDb.fromText(Deno.readTextFileSync(path));
    if (users.size === 0) {
      logger.warn(`No users defined in "${path}": every request will be refused`);
    }
    return users;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      logger.warn(`Authentication file "${path}" not found: every request will be refused`);
      return UserDb.empty();
    }
    throw new StartupError(`Cannot load authentication file "${path}": ${describeError(error)}`, {
      cause: error,
    });
  }
}

function reloadUsers(path: string, current: UserDb, logger: Logger): UserDb {
  try {
    return UserDb.fromText(Deno.readTextFileSync(path));
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

/** Reads the PEM files and proves they form a usable pair. */
export function loadTls(config: Pick<Config, "certFile" | "keyFile">): TlsMaterial {
  const cert = Deno.readTextFileSync(config.certFile);
  const key = Deno.readTextFileSync(config.keyFile);
  // Deno parses certificate and key when a TLS listener is made: a
  // throw-away one on an ephemeral loopback port validates the pair now,
  // not at the first browser.
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key }).close();
  } catch (error) {
    throw new Error(`Invalid certificate "${config.certFile}" or key "${config.keyFile}"`, {
      cause: error,
    });
  }
  return { cert, key };
}
