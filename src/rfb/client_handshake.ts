/**
 * The viewer side of a forwarding: the proxy plays the VNC server and makes
 * the viewer pass VNC Authentication with the one-time password
 * (RFC 6143 §7.1, §7.2.2). One attempt only: any failure ends the session.
 *
 * @module
 */

import { RfbError, ViewerAuthError } from "../errors.ts";
import { readExact, readU8 } from "../io/byte_reader.ts";
import type { Duplex } from "../io/duplex.ts";
import {
  CHALLENGE_LENGTH,
  encodeSecurityOffer,
  encodeSecurityResult,
  encodeVersion,
  parseVersion,
  type RfbVersion,
  SECURITY_NONE,
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
 * @throws {ViewerAuthError} when the viewer's answer is wrong.
 * @throws {RfbError} when the viewer speaks a bad version or picks another
 * security type.
 */
export async function authenticateViewer(
  viewer: Duplex,
  password: string,
  options: ViewerAuthOptions = {},
): Promise<RfbVersion> {
  const { version, challenge, response } = await challengeViewer(viewer, options);
  const ok = verifyVncAuthResponse(password, challenge, response);
  await sendViewerAuthResult(viewer, version, ok);
  if (!ok) throw new ViewerAuthError();
  return version;
}

/** What a viewer answered to the VNC Authentication challenge. */
export interface ViewerChallenge {
  /** The version agreed with the viewer. */
  readonly version: RfbVersion;
  /** The 16 random bytes it was sent. */
  readonly challenge: Uint8Array;
  /** Its 16-byte answer, not yet checked. */
  readonly response: Uint8Array;
}

/**
 * Runs the handshake up to the viewer's VNC Authentication answer, without
 * checking it: the gateway's password mode finds the forwarding whose
 * password the answer fits. Send the verdict with
 * {@linkcode sendViewerAuthResult}.
 *
 * @throws {RfbError} when the viewer speaks a bad version or picks another
 * security type.
 */
export async function challengeViewer(
  viewer: Duplex,
  options: ViewerAuthOptions = {},
): Promise<ViewerChallenge> {
  const version = await offerOneSecurityType(viewer, SECURITY_VNC_AUTH);
  const challenge = (options.challenge ?? newChallenge)();
  await viewer.write(challenge);
  return { version, challenge, response: await readExact(viewer, CHALLENGE_LENGTH) };
}

/** Tells the viewer the verdict on its answer (§7.1.3; the reason on 3.8). */
export async function sendViewerAuthResult(
  viewer: Duplex,
  version: RfbVersion,
  ok: boolean,
): Promise<void> {
  await viewer.write(
    encodeSecurityResult(
      version,
      ok ? { ok: true } : { ok: false, reason: "Authentication failed" },
    ),
  );
}

/**
 * Runs the server half of the RFB handshake offering only security type
 * None, for a viewer whose credential was its way in (a single-use token).
 *
 * @returns the version agreed with the viewer.
 * @throws {RfbError} when the viewer speaks a bad version or picks another
 * security type.
 */
export async function greetViewerWithoutAuth(viewer: Duplex): Promise<RfbVersion> {
  const version = await offerOneSecurityType(viewer, SECURITY_NONE);
  // §7.1.3: 3.3 and 3.7 send no SecurityResult for None; 3.8 does.
  if (version === "3.8") await viewer.write(encodeSecurityResult(version, { ok: true }));
  return version;
}

/**
 * §7.1.1-§7.1.2: our version, the viewer's, then an offer of exactly
 * `type`; a viewer choosing anything else (None when `type` is VNC
 * Authentication: CVE-2022-36436) is told why and refused.
 */
async function offerOneSecurityType(viewer: Duplex, type: number): Promise<RfbVersion> {
  await viewer.write(encodeVersion("3.8"));
  const version = parseVersion(await readExact(viewer, VERSION_LENGTH));
  await viewer.write(encodeSecurityOffer(version, [type]));
  // 3.3: the server decides, the viewer does not answer.
  if (version === "3.3") return version;
  const chosen = await readU8(viewer);
  if (chosen !== type) {
    const reason = `Security type ${chosen} is not offered`;
    await viewer.write(encodeSecurityResult(version, { ok: false, reason }));
    throw new RfbError(reason);
  }
  return version;
}
