/**
 * Field checks every control front door shares: a request as one JSON
 * object, what a VNC password, a port and a host name may be, and the
 * refusal that names a bad field.
 *
 * @module
 */

import { RefusalError } from "../errors.ts";

/**
 * Parses a request's JSON text, which must be one object.
 *
 * @throws {RefusalError} `malformed request: invalid JSON` or
 * `malformed request: not a JSON object` (never quoting the text).
 */
export function parseJsonObject(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // No cause: V8's SyntaxError quotes the text, passwords included.
    throw new RefusalError("malformed request: invalid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new RefusalError("malformed request: not a JSON object");
  }
  return value as Record<string, unknown>;
}

/**
 * VNC Authentication keys DES with bytes: a password must be Latin-1 (snf
 * crashed on anything else) and not empty.
 */
export function isVncPassword(text: string): boolean {
  // deno-lint-ignore no-control-regex
  return text !== "" && /^[\u0001-\u00ff]*$/.test(text);
}

/** The refusal for a bad field: names the field, never its value. */
export function malformed(field: string): RefusalError {
  return new RefusalError(`malformed request: ${field}`);
}

/** Accepts integers and integer strings (as snf's `int()` did). */
export function requirePort(fields: Record<string, unknown>, name: string, min: number): number {
  const value = fields[name];
  let port: number;
  if (typeof value === "number") port = value;
  else if (typeof value === "string" && /^\s*\d{1,5}\s*$/.test(value)) port = Number(value);
  else throw malformed(name);
  if (!Number.isInteger(port) || port < min || port > 65535) throw malformed(name);
  return port;
}

/** Host names, IPv4 and IPv6 literals (optionally bracketed). */
export function isHostLike(text: string): boolean {
  if (text.length === 0 || text.length > 253) return false;
  if (/^\[?[0-9a-fA-F:.]+\]?$/.test(text) && text.includes(":")) return true;
  return /^[A-Za-z0-9]([A-Za-z0-9_-]{0,62})?(\.[A-Za-z0-9]([A-Za-z0-9_-]{0,62})?)*\.?$/.test(text);
}
