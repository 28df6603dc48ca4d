/**
 * The security part of the VNC server handshake (RFC 6143 §7.1.2, §7.2):
 * choosing a security type from what the server offers and what the
 * request gives (a password, TLS), then running it: None, VNC
 * Authentication, VeNCrypt with X.509 TLS, or the TLS type (18).
 *
 * @module
 */

import { describeError, RefusalError, RfbError } from "../errors.ts";
import { readExact, readU32, readU8, UnexpectedEofError } from "../io/byte_reader.ts";
import { isTimeout } from "../io/deadline.ts";
import type { Duplex } from "../io/duplex.ts";
import {
  type ClientCertificate,
  startTlsClient,
  type TlsDuplex,
  TlsHandshakeError,
} from "../io/tls_client.ts";
import type { Logger } from "../log.ts";
import {
  CHALLENGE_LENGTH,
  cleanReason,
  MAX_REASON_BYTES,
  type RfbVersion,
  SECURITY_NONE,
  SECURITY_VNC_AUTH,
} from "./rfb_messages.ts";
import { negotiateVencrypt, VENCRYPT_X509_VNC } from "./vencrypt.ts";
import { VncAuthKey } from "./vnc_auth.ts";

/** Security type TLS (gtk-vnc, vino): TLS, then a second type list inside it. */
export const SECURITY_TLS = 18;
/** Security type VeNCrypt. */
export const SECURITY_VENCRYPT = 19;

/** TLS to the VNC server: what to check and what to show. */
export interface BackendTls {
  /** The name the certificate must be for. */
  readonly name: string;
  /** PEM CAs to trust. @default {the system roots} */
  readonly caCerts?: readonly string[];
  /** A client certificate, for servers that ask for one. */
  readonly clientCertificate?: ClientCertificate;
}

/** What the request gives the handshake. */
export interface SecurityWants {
  /** The VNC server's own password (secret). */
  readonly password: string | undefined;
  /** TLS settings when the request asks for TLS. */
  readonly tls: BackendTls | undefined;
  /** `--backend-allow-anonymous-tls`. */
  readonly allowAnonymousTls: boolean;
}

/** Context of one security run. */
export interface SecurityContext {
  /** The version agreed. */
  readonly version: RfbVersion;
  /** What the request gives. */
  readonly wants: SecurityWants;
  /** The forwarding's logger. */
  readonly logger: Logger;
  /** The handshake's deadline. */
  readonly signal: AbortSignal;
}

/**
 * Chooses a security type from the server's list (3.7, 3.8), whatever its
 * order.
 *
 * With TLS asked for, only VeNCrypt (preferred: its X.509 sub-types say
 * what they check) or the TLS type will do. Without, None is preferred
 * even when a password is given: a server that offers None does not need
 * the password, and every answer to a challenge is something an impostor
 * could brute-force the password from offline.
 *
 * @throws {RefusalError} when nothing offered fits the request.
 */
export function chooseSecurityType(
  types: readonly number[],
  wants: Pick<SecurityWants, "password" | "tls">,
): number {
  if (wants.tls !== undefined) {
    if (types.includes(SECURITY_VENCRYPT)) return SECURITY_VENCRYPT;
    if (types.includes(SECURITY_TLS)) return SECURITY_TLS;
    throw new RefusalError("VNC server does not offer TLS");
  }
  if (types.includes(SECURITY_NONE)) return SECURITY_NONE;
  if (types.includes(SECURITY_VNC_AUTH)) {
    if (wants.password !== undefined) return SECURITY_VNC_AUTH;
    throw new RefusalError("VNC server requires authentication");
  }
  if (types.includes(SECURITY_VENCRYPT) || types.includes(SECURITY_TLS)) {
    throw new RefusalError("VNC server requires TLS");
  }
  throw new RefusalError("VNC server requires authentication");
}

/**
 * Runs security type `type` once chosen (or, on 3.3, decided by the
 * server) up to a successful SecurityResult; returns the stream the
 * session goes on over (a TLS one for the TLS types).
 *
 * @throws {RefusalError} with a reason for the control reply;
 * {@linkcode TlsHandshakeError}s are turned into refusals too.
 */
export async function runSecurity(
  server: Duplex,
  type: number,
  context: SecurityContext,
): Promise<Duplex> {
  const { version, wants, logger } = context;
  switch (type) {
    case SECURITY_NONE:
      // §7.1.3: SecurityResult follows None only from 3.8 on.
      if (version === "3.8") await readSecurityResult(server, version);
      return server;
    case SECURITY_VNC_AUTH:
      await answerVncAuth(server, wants.password);
      await readSecurityResult(server, version);
      return server;
    case SECURITY_VENCRYPT: {
      const subtype = await negotiateVencrypt(server, {
        hasPassword: wants.password !== undefined,
        allowAnonymousTls: wants.allowAnonymousTls,
      }, logger);
      const tls = await startBackendTls(server, context);
      try {
        if (subtype === VENCRYPT_X509_VNC) await answerVncAuth(tls, wants.password);
        // QEMU and gtk-vnc send SecurityResult after every sub-type, 3.7 too.
        await readSecurityResult(tls, version);
      } catch (error) {
        tls.close();
        throw afterTls(error, tls, logger);
      }
      return tls;
    }
    case SECURITY_TLS: {
      const tls = await startBackendTls(server, context);
      try {
        return await nestedSecurity(tls, context);
      } catch (error) {
        tls.close();
        throw afterTls(error, tls, logger);
      }
    }
    default:
      throw new RefusalError("VNC server requires authentication");
  }
}

/**
 * The TLS type's second negotiation, inside TLS (as gtk-vnc reads it): a
 * u8 count and u8 types (none: a failed SecurityResult follows), the
 * client's u8 choice, then that type as usual.
 */
async function nestedSecurity(tls: Duplex, context: SecurityContext): Promise<Duplex> {
  const count = await readU8(tls);
  if (count === 0) {
    await readSecurityResult(tls, context.version);
    throw new RefusalError("VNC server refused authentication");
  }
  const types = [...await readExact(tls, count)];
  context.logger.debug(`VNC server offers security types ${types.join(", ")} inside TLS`);
  const inner = chooseSecurityType(types, { password: context.wants.password, tls: undefined });
  if (inner !== SECURITY_NONE && inner !== SECURITY_VNC_AUTH) {
    throw new RefusalError("VNC server requires authentication");
  }
  await tls.write(Uint8Array.of(inner));
  return await runSecurity(tls, inner, context);
}

/**
 * An error after the client's side of the TLS handshake. With TLS 1.3 the
 * server checks the client certificate after the client is done, so a
 * refused (or missing) one shows as an alert or an end of stream at the
 * first read: a failure of the TLS layer, or an end before the server sent
 * a byte over TLS, is a failed handshake. Protocol errors, later ends and
 * timeouts keep their own reasons.
 */
function afterTls(error: unknown, tls: TlsDuplex, logger: Logger): unknown {
  const silentEnd = error instanceof UnexpectedEofError && tls.bytesReceived === 0;
  if (
    error instanceof RefusalError || error instanceof RfbError || isTimeout(error) ||
    (error instanceof UnexpectedEofError && !silentEnd)
  ) {
    return error;
  }
  logger.warn(`TLS with the VNC server failed: ${describeError(error)}`);
  return new RefusalError("VNC server TLS handshake failed", { cause: error });
}

async function startBackendTls(server: Duplex, context: SecurityContext): Promise<TlsDuplex> {
  const tls = context.wants.tls;
  // chooseSecurityType() picks a TLS type only when TLS was asked for; a
  // 3.3 server decides itself.
  if (tls === undefined) throw new RefusalError("VNC server requires TLS");
  try {
    return await startTlsClient(server, {
      name: tls.name,
      signal: context.signal,
      ...(tls.caCerts ? { caCerts: tls.caCerts } : {}),
      ...(tls.clientCertificate ? { clientCertificate: tls.clientCertificate } : {}),
    });
  } catch (error) {
    if (!(error instanceof TlsHandshakeError)) throw error;
    context.logger.warn(`TLS handshake with the VNC server failed: ${error.message}`);
    const reason = error.failure === "untrusted"
      ? "VNC server certificate not trusted"
      : error.failure === "name"
      ? "VNC server certificate does not match the name"
      : "VNC server TLS handshake failed";
    throw new RefusalError(reason, { cause: error });
  }
}

/**
 * §7.2.2: reads the 16-byte challenge and answers with the DES response.
 * The key is wiped once used; the password string itself cannot be.
 */
async function answerVncAuth(server: Duplex, password: string | undefined): Promise<void> {
  if (password === undefined) throw new RefusalError("VNC server requires authentication");
  const challenge = await readExact(server, CHALLENGE_LENGTH);
  const key = new VncAuthKey(password);
  try {
    await server.write(key.response(challenge));
  } finally {
    key.clear();
  }
}

/**
 * §7.1.3: u32 0 is OK; anything else failed, with a reason string on 3.8
 * only (3.3 and 3.7 just close).
 *
 * @throws {RefusalError} `VNC server refused: <cleaned reason>`, or
 * `VNC server refused authentication` without one.
 */
export async function readSecurityResult(server: Duplex, version: RfbVersion): Promise<void> {
  const result = await readU32(server);
  if (result === 0) return;
  const reason = version === "3.8" ? await readReason(server) : "";
  throw new RefusalError(
    reason === "" ? "VNC server refused authentication" : `VNC server refused: ${reason}`,
  );
}

/** Reads a u32-length reason, keeping at most {@linkcode MAX_REASON_BYTES} of it, cleaned. */
export async function readReason(server: Duplex): Promise<string> {
  const length = await readU32(server);
  // The rest of a longer reason is never read: the connection is closed next.
  return cleanReason(await readExact(server, Math.min(length, MAX_REASON_BYTES)));
}
