/**
 * The vncap control protocol's messages (osuosl twisted_vncauthproxy, as
 * Ganeti Web Manager and ganetimgr speak it), pure: one JSON object per
 * `\r\n`-terminated line, validated into a request, and the exact reply
 * bytes `<port>\r\n` or `FAILED\r\n`.
 *
 * @module
 */

import { RefusalError } from "../../errors.ts";
import { unbracketHost } from "../../io/duplex.ts";
import { canonicalIp } from "../../io/ip_address.ts";
import type { RequestFraming } from "../control_socket.ts";
import {
  isHostLike,
  isVncPassword,
  malformed,
  parseJsonObject,
  requirePort,
} from "../request_fields.ts";

/** vncap's line cap: Twisted `LineReceiver.MAX_LENGTH`, the line and its `\r\n`. */
export const VNCAP_MAX_LINE_BYTES = 16_384;

/** vncap's default `timeout`, in seconds. */
const DEFAULT_TIMEOUT_SECONDS = 30;
/** Longest `timeout` accepted, in seconds: a day. */
const MAX_TIMEOUT_SECONDS = 86_400;

/** A validated vncap request. */
export interface VncapRequest {
  /** `daddr`: the VNC server's host (a name, IPv4 or IPv6 literal, no brackets). */
  readonly daddr: string;
  /** `dport`: the VNC server's port. */
  readonly dport: number;
  /**
   * `password` (secret): the viewer's, unless `client.password` is set; it
   * is always what the VNC server gets if it asks for VNC Authentication.
   */
  readonly password: string;
  /** `sport`: the pool port wished for; 0 for none. */
  readonly sport: number;
  /** `ws`: the viewer comes over WebSocket. */
  readonly ws: boolean;
  /** `tls`: the forwarded port speaks TLS. */
  readonly tls: boolean;
  /** `client.ip`: the only viewer address admitted. */
  readonly clientIp: string | undefined;
  /** `client.password` (secret): the viewer's password instead of `password`. */
  readonly clientPassword: string | undefined;
  /** `timeout`, in milliseconds: how long the forwarding waits. */
  readonly timeoutMs: number;
}

/**
 * How vncap requests end: `\r\n` (Twisted's `LineReceiver` delimiter), which
 * may arrive split between two segments.
 */
export class CrlfLineFraming implements RequestFraming {
  #afterCr = false;

  feed(chunk: Uint8Array): number | undefined {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i]!;
      if (this.#afterCr && byte === 0x0a) return i + 1;
      this.#afterCr = byte === 0x0d;
    }
    return undefined;
  }
}

/**
 * Parses and validates one request line (its `\r\n` may still be on it).
 * Unknown keys (`command`, GWM's SSH requests) are ignored, as vncap did.
 * Errors name the key, never its value.
 *
 * @throws {RefusalError} `malformed request: <key>` or `... invalid JSON`.
 */
export function parseVncapRequest(text: string): VncapRequest {
  const fields = parseJsonObject(text);
  if (fields.daddr === undefined) throw new RefusalError("malformed request: daddr missing");
  if (fields.dport === undefined) throw new RefusalError("malformed request: dport missing");
  if (fields.password === undefined) throw new RefusalError("malformed request: password missing");
  const daddr = fields.daddr;
  if (typeof daddr !== "string" || !isHostLike(daddr)) throw malformed("daddr");
  const dport = requirePort(fields, "dport", 1);
  const password = vncPassword(fields.password, "password");
  const sport = fields.sport === undefined || fields.sport === null
    ? 0
    : requirePort(fields, "sport", 1);
  const ws = optionalBoolean(fields, "ws");
  const tls = optionalBoolean(fields, "tls");
  let clientIp: string | undefined;
  let clientPassword: string | undefined;
  if (fields.client !== undefined) {
    const client = fields.client;
    if (typeof client !== "object" || client === null || Array.isArray(client)) {
      throw malformed("client");
    }
    const options = client as Record<string, unknown>;
    if (options.ip !== undefined) {
      const ip = typeof options.ip === "string" && options.ip.length <= 64
        ? canonicalIp(options.ip)
        : undefined;
      if (ip === undefined) throw malformed("client.ip");
      clientIp = ip;
    }
    if (options.password !== undefined) {
      clientPassword = vncPassword(options.password, "client.password");
    }
  }
  const timeout = fields.timeout === undefined ? DEFAULT_TIMEOUT_SECONDS : fields.timeout;
  if (typeof timeout !== "number" || !(timeout > 0) || timeout > MAX_TIMEOUT_SECONDS) {
    throw malformed("timeout");
  }
  return {
    daddr: unbracketHost(daddr),
    dport,
    password,
    sport,
    ws,
    tls,
    clientIp,
    clientPassword,
    timeoutMs: Math.round(timeout * 1000),
  };
}

function vncPassword(value: unknown, name: string): string {
  if (typeof value !== "string" || value.length > 1024 || !isVncPassword(value)) {
    throw malformed(name);
  }
  return value;
}

function optionalBoolean(fields: Record<string, unknown>, name: string): boolean {
  const value = fields[name];
  if (value === undefined) return false;
  if (typeof value !== "boolean") throw malformed(name);
  return value;
}

/** The reply bytes: the port in decimal and `\r\n`, or `FAILED\r\n`. */
export function encodeVncapReply(port: number | undefined): Uint8Array {
  return new TextEncoder().encode(port === undefined ? "FAILED\r\n" : `${port}\r\n`);
}
