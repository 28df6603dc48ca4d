/**
 * The VNC server side of a forwarding: check the destination against the
 * policy, connect (every allowed address, several rounds; or a Unix
 * socket) and run the RFB handshake up to SecurityResult (None, VNC
 * Authentication with the request's password, VeNCrypt or TLS), before the
 * control reply is sent (snf 1.2's security fix: the backend is pinned
 * before anyone learns the port).
 *
 * ClientInit is not sent here: the viewer's own ClientInit goes through
 * later, so the ServerInit the viewer sees is live (QEMU changes its
 * desktop size while booting: one fetched at request time would be stale).
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { describeError, RefusalError, RfbError } from "../errors.ts";
import { readExact, readU32, readU8, UnexpectedEofError } from "../io/byte_reader.ts";
import { ConnDuplex, type Duplex, formatHostPort, setNoDelay } from "../io/duplex.ts";
import { isTimeout, pause, raceDeadline, withDeadline } from "../io/deadline.ts";
import { DestinationPolicy, DestinationRefusedError } from "../io/destination_policy.ts";
import { isIpLiteral } from "../io/listen_addresses.ts";
import type { ClientCertificate } from "../io/tls_client.ts";
import type { Logger } from "../log.ts";
import {
  type BackendTls,
  chooseSecurityType,
  readReason,
  runSecurity,
  type SecurityWants,
} from "./backend_security.ts";
import {
  encodeVersion,
  lowerVersion,
  parseVersion,
  type RfbVersion,
  SECURITY_INVALID,
  VERSION_LENGTH,
} from "./rfb_messages.ts";

/** Where the VNC server listens: a TCP host and port, or a Unix socket. */
export type BackendAddress =
  | {
    readonly transport?: "tcp";
    /** Host name, IPv4 or IPv6 literal. */
    readonly host: string;
    /** TCP port. */
    readonly port: number;
  }
  | {
    readonly transport: "unix";
    /** Absolute socket path, checked against the policy's directories. */
    readonly path: string;
  };

/** Where the VNC server is and how to authenticate to it. */
export type BackendTarget = BackendAddress & {
  /** The VNC server's own password (secret), for VNC Authentication. */
  readonly password?: string;
  /** TLS to the server (VeNCrypt X509None/X509Vnc, or the TLS type). @default {false} */
  readonly tls?: boolean;
  /** The name its certificate must be for. @default {the host} */
  readonly tlsName?: string;
};

/** Daemon-wide TLS settings for VNC servers (`--backend-ca`, `--backend-cert`, `--backend-key`). */
export interface BackendTlsSettings {
  /** PEM CAs to trust. @default {the system roots} */
  readonly caCerts?: readonly string[];
  /** A client certificate, for servers that ask for one. */
  readonly clientCertificate?: ClientCertificate;
  /** `--backend-allow-anonymous-tls`. @default {false} */
  readonly allowAnonymousTls?: boolean;
}

/** Connects to one address; replaceable in tests. */
export type ConnectFunction = (
  hostname: string,
  port: number,
  signal: AbortSignal,
) => Promise<Deno.Conn>;

/** Resolves a host name to its addresses, in the resolver's order; replaceable in tests. */
export type ResolveFunction = (hostname: string) => Promise<string[]>;

/** Connects to one Unix socket; replaceable in tests. */
export type ConnectUnixFunction = (path: string) => Promise<Deno.Conn>;

/** Options of {@linkcode openBackend}. */
export interface BackendOptions {
  /** Rounds of attempts over all resolved addresses. */
  readonly retries: number;
  /** Pause between failed rounds, in milliseconds. */
  readonly retryWaitMs: number;
  /** Deadline (and shutdown) for the whole step. */
  readonly signal: AbortSignal;
  /** Logger of the forwarding. */
  readonly logger: Logger;
  /** @default {Deno.connect} */
  readonly connect?: ConnectFunction;
  /** @default {node:dns lookup, every address, unsorted} */
  readonly resolve?: ResolveFunction;
  /** @default {Deno.connect with transport "unix"} */
  readonly connectUnix?: ConnectUnixFunction;
  /** Which destinations may be reached. @default {any TCP address, no Unix socket} */
  readonly policy?: DestinationPolicy;
  /** TLS settings for servers reached with `tls`. @default {system roots, no client certificate} */
  readonly tls?: BackendTlsSettings;
}

/** A VNC server connection ready for the viewer's ClientInit. */
export interface Backend {
  /** The connection, owned by the caller from now on. */
  readonly duplex: Duplex;
  /** The version agreed with the server. */
  readonly version: RfbVersion;
}

async function defaultResolve(hostname: string): Promise<string[]> {
  return (await lookup(hostname, { all: true, verbatim: true })).map((entry) => entry.address);
}

function defaultConnect(hostname: string, port: number, signal: AbortSignal): Promise<Deno.Conn> {
  return Deno.connect({ hostname, port, transport: "tcp", signal });
}

function defaultConnectUnix(path: string): Promise<Deno.Conn> {
  return Deno.connect({ path, transport: "unix" });
}

/** One place to connect to, for the retry loop. */
interface Endpoint {
  /** For log lines. */
  readonly where: string;
  readonly connect: (signal: AbortSignal) => Promise<Deno.Conn>;
}

/**
 * Connects to the VNC server and completes its security handshake.
 *
 * @throws {RefusalError} with a reason safe for the control reply.
 */
export async function openBackend(
  target: BackendTarget,
  options: BackendOptions,
): Promise<Backend> {
  const wants = securityWants(target, options);
  const duplex = await connectWithRetries(await endpointsOf(target, options), options);
  let server: Duplex = duplex;
  try {
    const version = await withDeadline(duplex, options.signal, async () => {
      const result = await handshake(duplex, {
        wants,
        logger: options.logger,
        signal: options.signal,
      });
      server = result.server;
      return result.version;
    });
    return { duplex: server, version };
  } catch (error) {
    server.close();
    duplex.close();
    throw toRefusal(error, options.logger);
  }
}

function securityWants(target: BackendTarget, options: BackendOptions): SecurityWants {
  let tls: BackendTls | undefined;
  if (target.tls) {
    const name = target.tlsName ?? (target.transport === "unix" ? undefined : target.host);
    // A socket path is no name a certificate could be for.
    if (name === undefined) throw new RefusalError("malformed request: destination_tls_name");
    const settings = options.tls ?? {};
    tls = {
      name,
      ...(settings.caCerts ? { caCerts: settings.caCerts } : {}),
      ...(settings.clientCertificate ? { clientCertificate: settings.clientCertificate } : {}),
    };
  }
  return {
    password: target.password,
    tls,
    allowAnonymousTls: options.tls?.allowAnonymousTls ?? false,
  };
}

/**
 * Where to connect, once the policy allowed it: the resolved socket path,
 * or the allowed addresses of the host in the resolver's order.
 *
 * @throws {RefusalError} `backend not allowed`, or a connection failure.
 */
async function endpointsOf(target: BackendTarget, options: BackendOptions): Promise<Endpoint[]> {
  const { logger, signal } = options;
  const policy = options.policy ?? new DestinationPolicy();
  if (target.transport === "unix") {
    const connectUnix = options.connectUnix ?? defaultConnectUnix;
    let path: string;
    try {
      path = await raceDeadline(signal, policy.resolveUnixPath(target.path));
    } catch (error) {
      if (error instanceof DestinationRefusedError) {
        logger.warn(`Backend not allowed: ${error.message}`);
        throw new RefusalError("backend not allowed", { cause: error });
      }
      if (signal.aborted) throw new RefusalError("VNC server timed out", { cause: error });
      logger.warn(`Cannot connect to VNC server "unix:${target.path}": ${errorCode(error)}`);
      throw new RefusalError("cannot connect to VNC server", { cause: error });
    }
    return [{ where: `unix:${path}`, connect: (signal) => connectLate(signal, connectUnix(path)) }];
  }
  const connect = options.connect ?? defaultConnect;
  const resolve = options.resolve ?? defaultResolve;
  let addresses: string[];
  try {
    // The resolver takes no signal: the deadline races it (a late answer is dropped).
    addresses = isIpLiteral(target.host)
      ? [target.host]
      : await raceDeadline(signal, resolve(target.host));
  } catch (error) {
    if (signal.aborted) throw new RefusalError("VNC server timed out", { cause: error });
    logger.warn(`Cannot resolve "${target.host}": ${errorCode(error)}`);
    throw new RefusalError("cannot connect to VNC server", { cause: error });
  }
  // Checked on the addresses connected to, not on the name: a name that
  // resolves elsewhere next time cannot slip by.
  const allowed = policy.allowedAddresses(addresses);
  const refused = addresses.filter((address) => !allowed.includes(address));
  if (refused.length > 0) {
    logger.warn(`Backend not allowed: "${target.host}" address ${refused.join(", ")} refused`);
  }
  if (allowed.length === 0) throw new RefusalError("backend not allowed");
  return allowed.map((address) => ({
    where: formatHostPort(address, target.port),
    connect: (signal) => connect(address, target.port, signal),
  }));
}

/** Races a connect that takes no signal; a connection made too late is closed. */
async function connectLate(signal: AbortSignal, pending: Promise<Deno.Conn>): Promise<Deno.Conn> {
  try {
    return await raceDeadline(signal, pending);
  } catch (error) {
    pending.then((conn) => conn.close(), () => {});
    throw error;
  }
}

async function connectWithRetries(
  endpoints: readonly Endpoint[],
  options: BackendOptions,
): Promise<Duplex> {
  const { logger, signal } = options;
  let lastError: unknown = undefined;
  for (let round = 1; round <= options.retries; round++) {
    for (const endpoint of endpoints) {
      logger.debug(`Connecting to ${endpoint.where} (attempt ${round} of ${options.retries})`);
      try {
        const conn = await endpoint.connect(signal);
        setNoDelay(conn);
        return new ConnDuplex(conn);
      } catch (error) {
        lastError = error;
        if (signal.aborted) throw new RefusalError("VNC server timed out", { cause: error });
        logger.debug(`Cannot connect to VNC server "${endpoint.where}": ${errorCode(error)}`);
      }
    }
    if (round < options.retries && options.retryWaitMs > 0) {
      await pause(options.retryWaitMs, signal);
      if (signal.aborted) throw new RefusalError("VNC server timed out", { cause: lastError });
    }
  }
  const where = endpoints.map((endpoint) => endpoint.where).join(", ");
  logger.warn(`Cannot connect to VNC server "${where}": ${errorCode(lastError)}`);
  throw new RefusalError("cannot connect to VNC server", { cause: lastError });
}

/**
 * RFC 6143 §7.1: version, security type, the type's own exchange, and
 * SecurityResult; returns the stream to go on over (TLS for TLS types).
 */
async function handshake(
  raw: Duplex,
  context: { wants: SecurityWants; logger: Logger; signal: AbortSignal },
): Promise<{ version: RfbVersion; server: Duplex }> {
  const { logger } = context;
  const serverVersion = parseVersion(await readExact(raw, VERSION_LENGTH));
  const version = lowerVersion(serverVersion, "3.8");
  await raw.write(encodeVersion(version));
  logger.debug(`VNC server speaks RFB ${serverVersion}, using ${version}`);

  let type: number;
  if (version === "3.3") {
    // §7.1.2 (3.3): the server decides the type and sends it as a u32.
    type = await readU32(raw);
    if (type === SECURITY_INVALID) throw await serverRefusal(raw);
    logger.debug(`VNC server decided security type ${type}`);
    // Its decision must fit the request as a choice from a list would.
    chooseSecurityType([type], context.wants);
  } else {
    const count = await readU8(raw);
    if (count === 0) throw await serverRefusal(raw);
    const types = [...await readExact(raw, count)];
    logger.debug(`VNC server offers security types ${types.join(", ")}`);
    type = chooseSecurityType(types, context.wants);
    await raw.write(Uint8Array.of(type));
  }
  const server = await runSecurity(raw, type, { ...context, version });
  return { version, server };
}

/** Reads the server's reason string (bounded) and builds the refusal. */
async function serverRefusal(server: Duplex): Promise<RefusalError> {
  const reason = await readReason(server);
  return new RefusalError(reason === "" ? "VNC server refused" : `VNC server refused: ${reason}`);
}

function toRefusal(error: unknown, logger: Logger): RefusalError {
  if (error instanceof RefusalError) {
    logger.warn(`VNC server handshake failed: ${error.message}`);
    return error;
  }
  let reason = "VNC server handshake failed";
  if (isTimeout(error)) reason = "VNC server timed out";
  else if (error instanceof UnexpectedEofError) reason = "VNC server closed the connection";
  else if (error instanceof RfbError) reason = "VNC server sent an invalid handshake";
  logger.warn(`${reason}: ${describeError(error)}`);
  return new RefusalError(reason, { cause: error });
}

function errorCode(error: unknown): string {
  if (error instanceof Error) return error.name === "Error" ? error.message : error.name;
  return String(error);
}
