/**
 * Who may knock at a viewer port (a pool port or the gateway), decided as
 * the TCP connection arrives, before any byte is read or written: the
 * forwarding's `client_address` (an address or range; others are closed
 * without burning the forwarding, which keeps listening for its viewer),
 * and `--max-pending-per-viewer-ip`, a daemon-wide cap on the connections
 * one address (one /64 for IPv6) has in their handshake at once.
 *
 * @module
 */

import { addressKey } from "../auth/auth_fail_limiter.ts";
import { type Cidr, cidrContains } from "../io/cidr.ts";

/** Why a viewer connection was closed at the door. */
export type ViewerRefusal = "client_address" | "pending_per_ip";

/** The verdict on a knocking connection: a pending place to hold, or a refusal. */
export type GateVerdict =
  | { readonly ok: true; readonly pending: Disposable }
  | { readonly ok: false; readonly refusal: ViewerRefusal; readonly why: string };

/** Decides on connections to one port; see the module doc. */
export interface ViewerGate {
  /** The verdict on a connection from `remoteAddress` (`ip:port` or `[v6]:port`). */
  enter(remoteAddress: string): GateVerdict;
}

/** Connections in their handshake, per source address, daemon-wide. */
export class PendingViewers {
  readonly #max: number;
  readonly #counts = new Map<string, number>();

  /** At most `max` pending connections per address; 0 = no limit. */
  constructor(max: number) {
    this.#max = max;
  }

  /** A pending place for `ip`, or `undefined` at the cap. */
  enter(ip: string): Disposable | undefined {
    const key = addressKey(ip);
    const held = this.#counts.get(key) ?? 0;
    if (this.#max > 0 && held >= this.#max) return undefined;
    this.#counts.set(key, held + 1);
    let done = false;
    return {
      [Symbol.dispose]: () => {
        if (done) return;
        done = true;
        const next = (this.#counts.get(key) ?? 1) - 1;
        if (next <= 0) this.#counts.delete(key);
        else this.#counts.set(key, next);
      },
    };
  }
}

/** Parts of a {@linkcode ViewerGate}. */
export interface ViewerGateOptions {
  /** Only viewers from this range may connect. @default {any} */
  readonly bound?: Cidr;
  /** The daemon-wide pending counts. @default {no limit} */
  readonly pending?: PendingViewers;
  /** Told of every refusal (metrics). */
  readonly onRefused?: (refusal: ViewerRefusal) => void;
}

const NOTHING: Disposable = { [Symbol.dispose]() {} };

/** The host part of `ip:port` / `[v6]:port`. */
export function hostOf(remoteAddress: string): string {
  const colon = remoteAddress.lastIndexOf(":");
  const host = colon === -1 ? remoteAddress : remoteAddress.slice(0, colon);
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** A gate of the given parts; see the module doc. */
export function viewerGate(options: ViewerGateOptions): ViewerGate {
  return {
    enter(remoteAddress) {
      const ip = hostOf(remoteAddress);
      if (options.bound !== undefined && !cidrContains(options.bound, ip)) {
        options.onRefused?.("client_address");
        return {
          ok: false,
          refusal: "client_address",
          why: `not the bound client address ${options.bound.text}`,
        };
      }
      const pending = options.pending === undefined ? NOTHING : options.pending.enter(ip);
      if (pending === undefined) {
        options.onRefused?.("pending_per_ip");
        return {
          ok: false,
          refusal: "pending_per_ip",
          why: "too many pending connections from this address",
        };
      }
      return { ok: true, pending };
    },
  };
}
