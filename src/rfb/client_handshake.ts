/**
 * The viewer side of a forwarding: the proxy plays the VNC server and makes
 * the viewer pass VNC Authentication with the one-time password
 * (RFC 6143 §7.1, §7.2.2). One attempt only: any failure ends the session.
 *
 * @module
 */

import { RfbError } from "../errors.ts";
import { readExact, readU8 } from "../io/byte_reader.ts";
import type { Duplex } from "../io/duplex.ts";
import {
  CHALLENGE_LENGTH,
  encodeSecurityOffer,
  encodeSecurityResult,
  encodeVersion,
  parseVersion,
  type RfbVersion,
  SECURITY_VNC_AUTH,
  VERSION_LENGTH,
} from "./rfb_messages.ts";
import { newChallenge, verifyVncAuthResponse } from "./vnc_auth.ts";

/** Options of {@linkcode authenticateViewer}. */
export interface ViewerAuthOptions {
  /** Challenge source, for tests. @default {newChallenge} */
  readonly challenge?: () => Uint8Array;
}

/**
 * Runs the server half of the RFB handshake with a viewer, offering only
 * VNC Authentication, and checks its response in constant time.
 *
 * The caller bounds it in time (`withDeadline`). On a failed check the
 * viewer is told (with a reason on 3.8) before this throws.
 *
 * @returns the version agreed with the viewer.
 * @throws {RfbError} when the viewer speaks a bad version, picks another
 * security type, or fails authentication.
 */
export async function authenticateViewer(
  viewer: Duplex,
  password: string,
  options: ViewerAuthOptions = {},
): Promise<RfbVersion> {
  await viewer.write(encodeVersion("3.8"));
  const version = parseVersion(await readExact(viewer, VERSION_LENGTH));

  await viewer.write(encodeSecurityOffer(version, [SECURITY_VNC_AUTH]));
  if (version !== "3.3") {
    // §7.1.2: the viewer picks one of the offered types. Anything but VNC
    // Authentication (None in particular, CVE-2022-36436) is refused.
    const chosen = await readU8(viewer);
    if (chosen !== SECURITY_VNC_AUTH) {
      const reason = `Security type ${chosen} is not offered`;
      await viewer.write(encodeSecurityResult(version, { ok: false, reason }));
      throw new RfbError(reason);
    }
  }

  const challenge = (options.challenge ?? newChallenge)();
  await viewer.write(challenge);
  const response = await readExact(viewer, CHALLENGE_LENGTH);
  if (!verifyVncAuthResponse(password, challenge, response)) {
    await viewer.write(
      encodeSecurityResult(version, { ok: false, reason: "Authentication failed" }),
    );
    throw new RfbError("Authentication failed");
  }
  await viewer.write(encodeSecurityResult(version, { ok: true }));
  return version;
}
