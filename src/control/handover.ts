/**
 * What a token's issuer hands to the instance that redeems it, when tokens
 * are shared between instances (`--token-store redis://…`): the session
 * request without its route, as versioned JSON. The token store seals it
 * (only a claim of the token opens it); this module only encodes it and, on
 * the way back, checks every field as strictly as a control request: an
 * entry opened with the shared key still comes from outside this process,
 * and the redeeming instance applies its own destination policy to it.
 *
 * @module
 */

import { CONSOLE_TYPES, type ConsoleType } from "../config.ts";
import type { BackendTarget } from "../rfb/backend_handshake.ts";
import { isHostLike, isVncPassword } from "./request_fields.ts";

/** The format written; a redeeming instance refuses any other. */
const VERSION = 1;

/** Longest field a handover may carry (a Unix path, a TLS name, a user name). */
const MAX_TEXT = 4_096;

/**
 * What a handover carries: a session request's fields but its route (the
 * viewer arrives through the redeeming instance's gateway).
 */
export interface Handover {
  /** The VNC server and its credentials (secret). */
  readonly backend: BackendTarget;
  /** Console kind (`vnc-ws` or `vnc-wss`: a gateway's). */
  readonly kind: ConsoleType;
  /** The viewer's one-time VNC password (secret); none for a token alone. */
  readonly viewerPassword: string | undefined;
  /** The control user who asked (not secret): session limits and the audit line. */
  readonly controlUser?: string;
  /** The minting instance's forwarding id, for log lines. */
  readonly id?: string;
  /** The control protocol that asked, when not snf's. */
  readonly protocol?: "vncap";
  /** Asked-for idle timeout. */
  readonly idleTimeoutMs?: number;
  /** Asked-for session time limit. */
  readonly maxSessionTimeMs?: number;
}

/** A handover that is not one this version wrote. */
export class HandoverError extends Error {
  /** Creates the error; `message` names the field, never its value. */
  constructor(message: string) {
    super(message);
    this.name = "HandoverError";
  }
}

/**
 * Encodes what another instance needs to open `request`'s session: the VNC
 * server and its credentials, the viewer's one-time password, the console
 * kind, the asked-for limits, and who asked (for its audit line).
 */
export function encodeHandover(request: Handover): Uint8Array {
  const { backend } = request;
  const fields = {
    v: VERSION,
    kind: request.kind,
    backend: backend.transport === "unix"
      ? { unix: backend.path }
      : { host: backend.host, port: backend.port },
    backendPassword: backend.password,
    tls: backend.tls === true ? true : undefined,
    tlsName: backend.tlsName,
    viewerPassword: request.viewerPassword,
    controlUser: request.controlUser,
    id: request.id,
    protocol: request.protocol,
    idleTimeoutMs: request.idleTimeoutMs,
    maxSessionTimeMs: request.maxSessionTimeMs,
  };
  return new TextEncoder().encode(JSON.stringify(fields));
}

/**
 * Decodes a handover into the fields of the session request it stands for.
 *
 * @throws {HandoverError} naming the first field that is missing or wrong.
 */
export function decodeHandover(bytes: Uint8Array): Handover {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new HandoverError("handover is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HandoverError("handover is not an object");
  }
  const fields = value as Record<string, unknown>;
  if (fields.v !== VERSION) throw new HandoverError("handover of another version");
  const kind = fields.kind;
  if (!CONSOLE_TYPES.includes(kind as ConsoleType) || kind === "vnc") {
    throw new HandoverError("handover field kind");
  }
  const request: Handover = {
    backend: backendOf(fields),
    kind: kind as ConsoleType,
    viewerPassword: optionalText(fields, "viewerPassword", isVncPassword),
    ...present("controlUser", optionalText(fields, "controlUser")),
    ...present("id", optionalText(fields, "id")),
    ...present("protocol", optionalText(fields, "protocol", (text) => text === "vncap")),
    ...present("idleTimeoutMs", optionalMs(fields, "idleTimeoutMs")),
    ...present("maxSessionTimeMs", optionalMs(fields, "maxSessionTimeMs")),
  } as Handover;
  return request;
}

function backendOf(fields: Record<string, unknown>): BackendTarget {
  const where = fields.backend;
  if (typeof where !== "object" || where === null || Array.isArray(where)) {
    throw new HandoverError("handover field backend");
  }
  const address = where as Record<string, unknown>;
  const password = optionalText(fields, "backendPassword");
  const tlsName = optionalText(fields, "tlsName", isHostLike);
  if (fields.tls !== undefined && fields.tls !== true) {
    throw new HandoverError("handover field tls");
  }
  const security = {
    ...(password !== undefined ? { password } : {}),
    ...(fields.tls === true ? { tls: true } : {}),
    ...(tlsName !== undefined ? { tlsName } : {}),
  };
  if (address.unix !== undefined) {
    const path = optionalText(address, "unix", (text) => text.startsWith("/"), "backend.unix");
    return { transport: "unix", path: path!, ...security };
  }
  const host = optionalText(address, "host", isHostLike, "backend.host");
  const port = address.port;
  if (host === undefined) throw new HandoverError("handover field backend.host");
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new HandoverError("handover field backend.port");
  }
  return { host, port, ...security };
}

/** A text field, undefined when absent; `valid` decides what it may hold. */
function optionalText(
  fields: Record<string, unknown>,
  name: string,
  valid: (text: string) => boolean = () => true,
  label = name,
): string | undefined {
  const value = fields[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length > MAX_TEXT || !valid(value)) {
    throw new HandoverError(`handover field ${label}`);
  }
  return value;
}

/** A non-negative whole number of milliseconds, undefined when absent. */
function optionalMs(fields: Record<string, unknown>, name: string): number | undefined {
  const value = fields[name];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new HandoverError(`handover field ${name}`);
  }
  return value;
}

/** `{ [name]: value }`, or nothing when the value is undefined. */
function present<K extends string, V>(name: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [name]: value }) as { [P in K]?: V };
}
