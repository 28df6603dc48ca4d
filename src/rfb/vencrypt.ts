/**
 * VeNCrypt (RFB security type 19), the part before TLS: the version
 * exchange and the sub-type choice. The VeNCrypt spec (version 0.2, as
 * QEMU, libvncserver and gtk-vnc speak it):
 *
 * 1. server: u8 major, u8 minor (its highest version);
 * 2. client: u8 major, u8 minor (the one to use); server: u8 0 = accepted;
 * 3. server: u8 count, then count u32 sub-types;
 * 4. client: u32 sub-type; server: u8 1 = accepted;
 * 5. for the X509 and TLS sub-types, a TLS handshake, then the sub-type's
 *    own authentication (none, or VNC Authentication), then SecurityResult.
 *
 * @module
 */

import { RefusalError } from "../errors.ts";
import { readExact, readU32, readU8 } from "../io/byte_reader.ts";
import type { Duplex } from "../io/duplex.ts";
import type { Logger } from "../log.ts";
import { encodeU32 } from "./rfb_messages.ts";

/** Sub-type Plain: user name and password in the clear, no TLS. */
export const VENCRYPT_PLAIN = 256;
/** Sub-type TLSNone: anonymous-DH TLS, no authentication. */
export const VENCRYPT_TLS_NONE = 257;
/** Sub-type TLSVnc: anonymous-DH TLS, then VNC Authentication. */
export const VENCRYPT_TLS_VNC = 258;
/** Sub-type X509None: TLS with the server's X.509 certificate, no authentication. */
export const VENCRYPT_X509_NONE = 260;
/** Sub-type X509Vnc: TLS with the server's X.509 certificate, then VNC Authentication. */
export const VENCRYPT_X509_VNC = 261;

/** Sub-types that are no authenticated encryption: anonymous DH (a MITM can sit in it) or none. */
const ANONYMOUS_SUBTYPES: readonly number[] = [
  VENCRYPT_PLAIN,
  VENCRYPT_TLS_NONE,
  VENCRYPT_TLS_VNC,
];

/** What the proxy can give the server. */
export interface VencryptWants {
  /** A VNC password is known (`destination_password`). */
  readonly hasPassword: boolean;
  /** `--backend-allow-anonymous-tls`. */
  readonly allowAnonymousTls: boolean;
}

/**
 * Chooses a sub-type from the server's list, whatever its order: X509Vnc
 * when a password is known, else X509None; X509None also when a password
 * is known but the server does not offer X509Vnc (it does not need one).
 *
 * Anonymous TLS is never chosen: `--backend-allow-anonymous-tls` only
 * changes what the log says, as the TLS library here (rustls) has no
 * anonymous Diffie-Hellman to offer such a server.
 *
 * @throws {RefusalError} when nothing offered can be used.
 */
export function chooseVencryptSubtype(
  subtypes: readonly number[],
  wants: VencryptWants,
  logger?: Logger,
): number {
  if (wants.hasPassword && subtypes.includes(VENCRYPT_X509_VNC)) return VENCRYPT_X509_VNC;
  if (subtypes.includes(VENCRYPT_X509_NONE)) return VENCRYPT_X509_NONE;
  if (subtypes.includes(VENCRYPT_X509_VNC)) {
    throw new RefusalError("VNC server requires authentication");
  }
  if (subtypes.some((subtype) => ANONYMOUS_SUBTYPES.includes(subtype))) {
    if (wants.allowAnonymousTls) {
      logger?.warn(
        "VNC server offers only anonymous TLS: allowed by --backend-allow-anonymous-tls, " +
          "but this TLS library (rustls) has no anonymous Diffie-Hellman",
      );
    }
    throw new RefusalError("VNC server offers only anonymous TLS");
  }
  throw new RefusalError("VNC server does not offer TLS");
}

/**
 * Steps 1 to 4: agrees on version 0.2 and a sub-type; returns the sub-type,
 * after which the server expects the TLS handshake.
 *
 * @throws {RefusalError} for another version, no usable sub-type, or a
 * server that refuses the choice.
 */
export async function negotiateVencrypt(
  server: Duplex,
  wants: VencryptWants,
  logger: Logger,
): Promise<number> {
  const [major, minor] = await readExact(server, 2);
  // 0.2 or later 0.x: the client answers with the version it speaks.
  if (major !== 0 || minor! < 2) {
    logger.debug(`VNC server speaks VeNCrypt ${major}.${minor}`);
    throw new RefusalError("VNC server VeNCrypt version not supported");
  }
  await server.write(Uint8Array.of(0, 2));
  if (await readU8(server) !== 0) {
    throw new RefusalError("VNC server VeNCrypt version not supported");
  }
  const count = await readU8(server);
  const subtypes: number[] = [];
  // At most 255 u32s: the count is a u8.
  for (let i = 0; i < count; i++) subtypes.push(await readU32(server));
  logger.debug(`VNC server offers VeNCrypt sub-types ${subtypes.join(", ") || "none"}`);
  const subtype = chooseVencryptSubtype(subtypes, wants, logger);
  await server.write(encodeU32(subtype));
  if (await readU8(server) !== 1) {
    throw new RefusalError("VNC server refused the VeNCrypt sub-type");
  }
  logger.debug(`Using VeNCrypt sub-type ${subtype}`);
  return subtype;
}
