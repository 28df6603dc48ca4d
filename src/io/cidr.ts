/**
 * Address ranges (`192.0.2.0/24`, `2001:db8::/32`, or one address) and the
 * question whether an address lies in one: whose `X-Forwarded-For` the
 * gateway believes (`--trusted-proxy`).
 *
 * @module
 */

import { canonicalIp } from "./ip_address.ts";

/** A parsed address range. */
export interface Cidr {
  /** The network's bytes (4 for IPv4, 16 for IPv6). */
  readonly bytes: Uint8Array;
  /** Prefix length in bits. */
  readonly prefix: number;
  /** As given, canonicalised, for log lines. */
  readonly text: string;
}

/**
 * Parses `192.0.2.0/24`, `2001:db8::/32`, or a lone address (a /32 or
 * /128). An IPv4-mapped IPv6 address counts as its IPv4 address.
 *
 * @throws {SyntaxError} for anything else.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  const address = canonicalIp(slash === -1 ? text : text.slice(0, slash));
  const bytes = address === undefined ? undefined : canonicalBytes(address);
  if (bytes === undefined) throw new SyntaxError(`Invalid address range "${text}"`);
  const bits = bytes.length * 8;
  const prefixText = slash === -1 ? String(bits) : text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > bits) {
    throw new SyntaxError(`Invalid prefix length in "${text}"`);
  }
  return { bytes, prefix, text: `${address}/${prefix}` };
}

/** True when `address` (any spelling, brackets allowed) lies in `range`. */
export function cidrContains(range: Cidr, address: string): boolean {
  const bytes = ipBytes(address);
  if (bytes === undefined || bytes.length !== range.bytes.length) return false;
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i]! & mask) !== (range.bytes[i]! & mask)) return false;
  }
  return true;
}

/**
 * The bytes of an IP address in any spelling (4 for IPv4, an IPv4-mapped
 * one included; 16 for IPv6), or `undefined` for anything else or a zone.
 */
export function ipBytes(address: string): Uint8Array | undefined {
  const canonical = canonicalIp(address);
  return canonical === undefined ? undefined : canonicalBytes(canonical);
}

/** The bytes of a canonical IP address (no zone), or `undefined`. */
function canonicalBytes(address: string): Uint8Array | undefined {
  if (!address.includes(":")) {
    const parts = address.split(".").map(Number);
    return parts.length === 4 && parts.every((p) => p >= 0 && p <= 255)
      ? Uint8Array.from(parts)
      : undefined;
  }
  if (address.includes("%")) return undefined;
  const [head = "", tail] = address.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined
    ? left
    : [...left, ...new Array(8 - left.length - right.length).fill("0"), ...right];
  if (groups.length !== 8) return undefined;
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    const value = Number.parseInt(group, 16);
    bytes[2 * i] = value >> 8;
    bytes[2 * i + 1] = value & 0xff;
  });
  return bytes;
}
