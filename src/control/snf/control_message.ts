/**
 * The control protocol's messages, pure: framing of one JSON object from a
 * byte stream, validation of a forwarding request, and the exact reply
 * bytes snf-vncauthproxy sends (its clients parse them).
 *
 * @module
 */

import { CONSOLE_TYPES, type ConsoleType } from "../../config.ts";
import { RefusalError } from "../../errors.ts";
import { unbracketHost } from "../../io/duplex.ts";
import { canonicalIp } from "../../io/ip_address.ts";
import { parseCidr } from "../../io/cidr.ts";
import {
  isHostLike,
  isVncPassword,
  malformed,
  parseJsonObject,
  requirePort,
} from "../request_fields.ts";

/** A validated forwarding request. */
export interface ForwardRequest {
  /** Control user. */
  readonly authUser: string;
  /** Control user's password (secret). */
  readonly authPassword: string;
  /** Requested port, 0 for one from the pool. */
  readonly sourcePort: number;
  /**
   * VNC server host name or address, an IPv6 literal without brackets, or
   * `unix:/abs/path` for a Unix socket.
   */
  readonly destinationAddress: string;
  /** VNC server port; 0 for a Unix socket. */
  readonly destinationPort: number;
  /** The VNC server's own password (secret, Latin-1), for VNC Authentication. */
  readonly destinationPassword: string | undefined;
  /** TLS to the VNC server (VeNCrypt X509None/X509Vnc, or the TLS type). */
  readonly destinationTls: boolean;
  /** The name the server certificate must match; default: the destination address. */
  readonly destinationTlsName: string | undefined;
  /**
   * One-time VNC password (secret), Latin-1; optional only with `gateway`,
   * where the token alone is then the viewer's credential.
   */
  readonly password: string | undefined;
  /** Console type; `vnc` when absent. */
  readonly type: ConsoleType;
  /** Token mode: the viewer comes through the gateway with a single-use token. */
  readonly gateway: boolean;
  /** The token's lifetime in milliseconds (`ttl`, in seconds on the wire). */
  readonly ttlMs: number | undefined;
  /**
   * Only this viewer address may redeem the token, or connect to the pool
   * port (`client_address`); for a pool port also a range (`192.0.2.0/24`).
   */
  readonly clientAddress: string | undefined;
  /** `idle_timeout` (seconds on the wire); 0 = never; absent = the daemon's. */
  readonly idleTimeoutMs?: number;
  /** `max_session_time` (seconds on the wire); 0 = never; absent = the daemon's. */
  readonly maxSessionTimeMs?: number;
}

/** What an OK reply adds in token mode, after snf's fields. */
export interface TokenReplyFields {
  /** The single-use token (secret). */
  readonly token: string;
  /** The WebSocket path noVNC asks for: `websockify?token=...`. */
  readonly path: string;
  /** With `--web`: the noVNC page that opens the console. */
  readonly url?: string;
}

/** A control reply. */
export type ControlReply =
  | {
    readonly status: "OK";
    readonly sourcePort: number;
    readonly proxyAddress: string;
    readonly tokenFields?: TokenReplyFields;
  }
  | { readonly status: "FAILED"; readonly reason: string };

/**
 * Finds where the first JSON object in a byte stream ends, fed chunk by
 * chunk, without parsing it: it tracks nesting, strings and escapes. So a
 * request may arrive in any number of segments, with or without a trailing
 * newline, while the client keeps its side open.
 */
export class JsonObjectScanner {
  #depth = 0;
  #inString = false;
  #escaped = false;
  #started = false;

  /**
   * Scans `chunk`; returns the index just past the object's closing brace
   * when it lies in this chunk, or `undefined` when more bytes are needed.
   *
   * @throws {SyntaxError} when the first non-blank byte is not `{`.
   */
  feed(chunk: Uint8Array): number | undefined {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i]!;
      if (!this.#started) {
        if (byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d) continue;
        if (byte !== 0x7b) throw new SyntaxError("Request is not a JSON object");
        this.#started = true;
        this.#depth = 1;
        continue;
      }
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (byte === 0x5c) this.#escaped = true;
        else if (byte === 0x22) this.#inString = false;
        continue;
      }
      if (byte === 0x22) this.#inString = true;
      else if (byte === 0x7b || byte === 0x5b) this.#depth++;
      else if (byte === 0x7d || byte === 0x5d) {
        this.#depth--;
        if (this.#depth === 0) return i + 1;
      }
    }
    return undefined;
  }
}

/**
 * Parses and validates a request's JSON text.
 *
 * Field errors name the field, never its value (snf echoed the whole
 * request, passwords included). JSON `null` is a value like any other, not
 * "absent": a field that is present with the wrong type is malformed.
 *
 * @throws {RefusalError} `malformed request: <field>` or
 * `unsupported console type`.
 */
export function parseForwardRequest(text: string): ForwardRequest {
  const fields = parseJsonObject(text);
  const authUser = requireString(fields, "auth_user");
  const authPassword = requireString(fields, "auth_password");
  const sourcePort = fields.source_port === undefined ? 0 : requirePort(fields, "source_port", 0);
  const address = requireString(fields, "destination_address");
  const unix = address.startsWith(UNIX_PREFIX);
  if (unix ? !isUnixPath(address.slice(UNIX_PREFIX.length)) : !isHostLike(address)) {
    throw malformed("destination_address");
  }
  const destinationAddress = unix ? address : unbracketHost(address);
  // A Unix socket has no port: exactly 0 says the client meant it.
  const destinationPort = requirePort(fields, "destination_port", unix ? 0 : 1);
  if (unix && destinationPort !== 0) throw malformed("destination_port");
  const destinationPassword = fields.destination_password === undefined
    ? undefined
    : requireString(fields, "destination_password");
  if (destinationPassword !== undefined && !isVncPassword(destinationPassword)) {
    throw malformed("destination_password");
  }
  const destinationTls = fields.destination_tls === undefined
    ? false
    : requireBoolean(fields, "destination_tls");
  let destinationTlsName: string | undefined;
  if (fields.destination_tls_name !== undefined) {
    const name = requireString(fields, "destination_tls_name");
    // A name without TLS would check nothing: a mistake worth saying.
    if (!destinationTls || !isHostLike(name)) throw malformed("destination_tls_name");
    destinationTlsName = unbracketHost(name);
  }
  // A socket path is no name a certificate could be for.
  if (unix && destinationTls && destinationTlsName === undefined) {
    throw malformed("destination_tls_name");
  }
  const gateway = fields.gateway === undefined ? false : requireBoolean(fields, "gateway");
  const password = gateway && fields.password === undefined
    ? undefined
    : requireString(fields, "password");
  if (password !== undefined && !isVncPassword(password)) throw malformed("password");
  const type = fields.type === undefined ? "vnc" : fields.type;
  if (type === null) throw malformed("type");
  if (typeof type !== "string" || !(CONSOLE_TYPES as readonly string[]).includes(type)) {
    throw new RefusalError("unsupported console type");
  }
  // A token is for a browser: a WebSocket console.
  if (gateway && type === "vnc") throw new RefusalError("unsupported console type");
  // Token-only fields: set without a token they would bind nothing.
  let ttlMs: number | undefined;
  if (fields.ttl !== undefined) {
    const ttl = fields.ttl;
    if (!gateway || typeof ttl !== "number" || !(ttl > 0) || ttl > 86_400) throw malformed("ttl");
    ttlMs = Math.round(ttl * 1000);
  }
  let clientAddress: string | undefined;
  if (fields.client_address !== undefined) {
    const text = fields.client_address;
    if (typeof text !== "string" || text.length > 64) throw malformed("client_address");
    // A token is claimed by one address; a pool port may take a range.
    clientAddress = text.includes("/") && !gateway ? cidrText(text) : canonicalIp(text);
    if (clientAddress === undefined) throw malformed("client_address");
  }
  const idleTimeoutMs = optionalSeconds(fields, "idle_timeout");
  const maxSessionTimeMs = optionalSeconds(fields, "max_session_time");
  return {
    authUser,
    authPassword,
    sourcePort,
    destinationAddress,
    destinationPort,
    destinationPassword,
    destinationTls,
    destinationTlsName,
    password,
    type: type as ConsoleType,
    gateway,
    ttlMs,
    clientAddress,
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    ...(maxSessionTimeMs !== undefined ? { maxSessionTimeMs } : {}),
  };
}

/** Longest per-request time limit accepted, in seconds (admission caps it further). */
const MAX_REQUEST_SECONDS = 31 * 86_400;

/** A time limit in seconds (0 allowed), as milliseconds; undefined when absent. */
function optionalSeconds(fields: Record<string, unknown>, name: string): number | undefined {
  const value = fields[name];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !(value >= 0) || value > MAX_REQUEST_SECONDS) {
    throw malformed(name);
  }
  return Math.round(value * 1000);
}

/** The canonical text of an address range, or undefined. */
function cidrText(text: string): string | undefined {
  try {
    return parseCidr(text).text;
  } catch {
    return undefined;
  }
}

/** How `destination_address` names a Unix socket: `unix:/abs/path`. */
export const UNIX_PREFIX = "unix:";

/**
 * An absolute path that fits a socket address (sun_path holds 107 bytes and
 * a NUL on Linux), without NUL or other control characters. `..` is left to
 * the backend policy, which resolves the path before it checks it.
 */
function isUnixPath(path: string): boolean {
  // deno-lint-ignore no-control-regex
  const control = /[\u0000-\u001f\u007f]/;
  return path.startsWith("/") && new TextEncoder().encode(path).length <= 107 &&
    !control.test(path);
}

function requireBoolean(fields: Record<string, unknown>, name: string): boolean {
  const value = fields[name];
  if (typeof value !== "boolean") throw malformed(name);
  return value;
}

function requireString(fields: Record<string, unknown>, name: string): string {
  const value = fields[name];
  if (typeof value !== "string" || value.length > 1024) throw malformed(name);
  return value;
}

/**
 * Encodes a reply exactly as snf-vncauthproxy's Python `json.dumps` did:
 * keys in its order, `", "` and `": "` separators, non-ASCII escaped, no
 * trailing newline.
 */
export function encodeReply(reply: ControlReply): Uint8Array {
  const text = reply.status === "OK"
    ? `{"source_port": ${reply.sourcePort}, "status": "OK", "proxy_address": ${
      pythonJsonString(reply.proxyAddress)
    }${tokenFieldsText(reply.tokenFields)}}`
    : `{"source_port": 0, "status": "FAILED", "reason": ${
      pythonJsonString(reply.reason)
    }, "proxy_address": null}`;
  return new TextEncoder().encode(text);
}

/** Token mode's fields after snf's: clients that ignore unknown fields keep working. */
function tokenFieldsText(fields: TokenReplyFields | undefined): string {
  if (fields === undefined) return "";
  const url = fields.url === undefined ? "" : `, "url": ${pythonJsonString(fields.url)}`;
  return `, "token": ${pythonJsonString(fields.token)}, "path": ${
    pythonJsonString(fields.path)
  }${url}`;
}

function pythonJsonString(text: string): string {
  return JSON.stringify(text).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
