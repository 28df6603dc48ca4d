/**
 * One text form per IP address, so that two spellings of the same address
 * compare equal: the address a viewer connected from (as Deno reports it)
 * against one a control client wrote (`[::1]`, `0:0:0:0:0:0:0:1`,
 * `::FFFF:192.0.2.7`).
 *
 * @module
 */

import { isIP } from "node:net";
import { unbracketHost } from "./duplex.ts";

/** An IPv4-mapped IPv6 address (RFC 4291 §2.5.5.2) in the URL parser's compressed form. */
const MAPPED_IPV4 = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/**
 * Returns the canonical text of an IP address, or `undefined` when
 * `address` is not one: brackets stripped, IPv6 in the compressed
 * lower-case form of RFC 5952, and an IPv4-mapped IPv6 address as the IPv4
 * address it carries (a dual-stack listener reports IPv4 peers that way).
 * A zone (`%eth0`) is kept as written.
 */
export function canonicalIp(address: string): string | undefined {
  const bare = unbracketHost(address.trim());
  const version = isIP(bare);
  if (version === 4) return bare;
  if (version !== 6) return undefined;
  const zoneAt = bare.indexOf("%");
  const zone = zoneAt === -1 ? "" : bare.slice(zoneAt);
  const base = zoneAt === -1 ? bare : bare.slice(0, zoneAt);
  // The WHATWG URL parser serialises IPv6 hosts as RFC 5952 says.
  const compressed = new URL(`http://[${base}]/`).hostname.slice(1, -1);
  const mapped = MAPPED_IPV4.exec(compressed);
  if (mapped !== null && zone === "") {
    const high = Number.parseInt(mapped[1]!, 16);
    const low = Number.parseInt(mapped[2]!, 16);
    return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  }
  return compressed + zone;
}
