/**
 * What a session needs, and nothing of the front door that asked for it:
 * the pinned VNC server connection, what the viewer must prove, the console
 * kind and the limits. No control user, no control password, no request.
 *
 * @module
 */

import type { ConsoleType } from "../config.ts";
import type { Duplex } from "../io/duplex.ts";

/**
 * What the viewer must prove before the relay starts: the one-time VNC
 * password (RFC 6143 §7.2.2, the proxy plays the server), or nothing
 * beyond how it arrived (a single-use token, or a password rendezvous that
 * already checked it).
 */
export type ViewerCredential =
  | { readonly kind: "vnc-password"; readonly password: string }
  | { readonly kind: "none" };

/** The time limits and policies of one session. Times are in milliseconds. */
export interface SessionLimits {
  /** How long the rendezvous waits for the viewer (`--connect-timeout`). */
  readonly waitMs: number;
  /** The viewer's whole RFB handshake (`--client-timeout`). */
  readonly viewerHandshakeMs: number;
  /** Handing the viewer's ClientInit to the VNC server (`--server-timeout`). */
  readonly serverWriteMs: number;
  /** No byte either way for this long ends the relay; 0 = never. */
  readonly idleTimeoutMs: number;
  /** The relay ends this long after it started; 0 = never. */
  readonly maxSessionTimeMs: number;
  /** Pass the viewer's ClientInit shared flag unchanged (else forced to 1). */
  readonly allowExclusive: boolean;
}

/** Everything one session runs on. */
export interface SessionSpec {
  /**
   * The VNC server connection, past its security handshake and waiting for
   * ClientInit; the session owns it from now on.
   */
  readonly backend: Duplex;
  /** What the viewer must prove. */
  readonly credential: ViewerCredential;
  /** The console kind, for log lines. */
  readonly kind: ConsoleType;
  /** Time limits and policies. */
  readonly limits: SessionLimits;
}
