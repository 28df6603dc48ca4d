/**
 * The VNC server side of a forwarding: connect (every resolved address,
 * several rounds) and run the RFB handshake up to SecurityResult with
 * security type None, before the control reply is sent (snf 1.2's security
 * fix: the backend is pinned before anyone learns the port).
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
import { isIpLiteral } from "../io/listen_addresses.ts";
import type { Logger } from "../log.ts";
import {
  cleanReason,
  encodeVersion,
  lowerVersion,
  MAX_REASON_BYTES,
  parseVersion,
  type RfbVersion,
  SECURITY_INVALID,
  SECURITY_NONE,
  VERSION_LENGTH,
} from "./rfb_messages.ts";

/** Where the VNC server is. */
export interface BackendTarget {
  /** Host name, IPv4 or IPv6 literal. */
  readonly host: string;
  /** TCP port. */
  readonly port: number;
}

/** Connects to one address; replaceable in tests. */
export type ConnectFunction = (
  hostname: string,
  port: number,
  signal: AbortSignal,
) => Promise<Deno.Conn>;

/** Resolves a host name to its addresses, in the resolver's order; replaceable in tests. */
export type ResolveFunction = (hostname: string) => Promise<string[]>;

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

/**
 * Connects to the VNC server and completes its security handshake.
 *
 * @throws {RefusalError} with a reason safe for the control reply.
 */
export async function openBackend(
  target: BackendTarget,
  options: BackendOptions,
): Promise<Backend> {
  const duplex = await connectWithRetries(target, options);
  try {
    const version = await withDeadline(
      duplex,
      options.signal,
      () => handshake(duplex, options.logger),
    );
    return { duplex, version };
  } catch (error) {
    duplex.close();
    throw toRefusal(error, options.logger);
  }
}

async function connectWithRetries(target: BackendTarget, options: BackendOptions): Promise<Duplex> {
  const { logger, signal } = options;
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
  let lastError: unknown = undefined;
  for (let round = 1; round <= options.retries; round++) {
    for (const address of addresses) {
      const where = formatHostPort(address, target.port);
      logger.debug(`Connecting to ${where} (attempt ${round} of ${options.retries})`);
      try {
        const conn = await connect(address, target.port, signal);
        setNoDelay(conn);
        return new ConnDuplex(conn);
      } catch (error) {
        lastError = error;
        if (signal.aborted) throw new RefusalError("VNC server timed out", { cause: error });
        logger.debug(`Cannot connect to VNC server "${where}": ${errorCode(error)}`);
      }
    }
    if (round < options.retries && options.retryWaitMs > 0) {
      await pause(options.retryWaitMs, signal);
      if (signal.aborted) throw new RefusalError("VNC server timed out", { cause: lastError });
    }
  }
  logger.warn(
    `Cannot connect to VNC server "${formatHostPort(target.host, target.port)}": ${
      errorCode(lastError)
    }`,
  );
  throw new RefusalError("cannot connect to VNC server", { cause: lastError });
}

/** RFC 6143 §7.1: version, security, SecurityResult, choosing None. */
async function handshake(server: Duplex, logger: Logger): Promise<RfbVersion> {
  const serverVersion = parseVersion(await readExact(server, VERSION_LENGTH));
  const version = lowerVersion(serverVersion, "3.8");
  await server.write(encodeVersion(version));
  logger.debug(`VNC server speaks RFB ${serverVersion}, using ${version}`);

  if (version === "3.3") {
    // §7.1.2 (3.3): the server decides the type and sends it as a u32.
    const type = await readU32(server);
    if (type === SECURITY_INVALID) throw await serverRefusal(server);
    if (type !== SECURITY_NONE) throw new RefusalError("VNC server requires authentication");
    return version;
  }

  const count = await readU8(server);
  if (count === 0) throw await serverRefusal(server);
  const types = await readExact(server, count);
  logger.debug(`VNC server offers security types ${[...types].join(", ")}`);
  if (!types.includes(SECURITY_NONE)) throw new RefusalError("VNC server requires authentication");
  await server.write(Uint8Array.of(SECURITY_NONE));

  // §7.1.3: 3.7 sends no SecurityResult for None; 3.8 does.
  if (version === "3.8") {
    const result = await readU32(server);
    if (result !== 0) throw await serverRefusal(server);
  }
  return version;
}

/** Reads the server's reason string (bounded) and builds the refusal. */
async function serverRefusal(server: Duplex): Promise<RefusalError> {
  const length = await readU32(server);
  const reason = cleanReason(await readExact(server, Math.min(length, MAX_REASON_BYTES)));
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
