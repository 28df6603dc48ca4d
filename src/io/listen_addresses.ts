/**
 * Turning a listen address option into the sockets to bind: `*` (and snf's
 * other wildcard spellings) means every IPv4 and IPv6 address, a host name
 * means each address it resolves to, a literal means itself.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { raceDeadline } from "./deadline.ts";
import { unbracketHost } from "./duplex.ts";

/** True when `address` means "every address" (snf's wildcard spellings). */
export function isWildcardAddress(address: string): boolean {
  return ["*", "0.0.0.0", "::", "::0", "None"].includes(address);
}

/**
 * Binds one listener per address of `address` on `port` with `bind`.
 *
 * For a wildcard, one dual-stack `::` socket serves IPv4 and IPv6 (Deno
 * cannot set `IPV6_V6ONLY`, so a second `0.0.0.0` socket on the same port
 * would collide); on a host without IPv6 it falls back to `0.0.0.0`
 * (snf assumed IPv6). If any bind fails, the ones made are closed and the
 * error is rethrown, so no socket leaks. Resolving a host name ends when
 * `options.signal` aborts.
 */
export async function bindAll<L extends { close(): void }>(
  address: string,
  port: number,
  bind: (hostname: string, port: number) => L,
  options: { readonly signal?: AbortSignal } = {},
): Promise<L[]> {
  if (isWildcardAddress(address)) {
    try {
      return [bind("::", port)];
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) throw error;
      return [bind("0.0.0.0", port)];
    }
  }
  const hosts = await resolveListenHosts(address, options.signal);
  const made: L[] = [];
  try {
    for (const host of hosts) made.push(bind(host, port));
  } catch (error) {
    for (const listener of made) listener.close();
    throw error;
  }
  return made;
}

/**
 * Resolves a host name to its distinct addresses; literals pass through.
 * The resolver takes no signal: `signal` races it and a late answer is dropped.
 */
export async function resolveListenHosts(
  address: string,
  signal: AbortSignal = new AbortController().signal,
): Promise<string[]> {
  const literal = unbracketHost(address);
  if (isIpLiteral(literal)) return [literal];
  const found = await raceDeadline(signal, lookup(literal, { all: true, verbatim: true }));
  return [...new Set(found.map((entry) => entry.address))];
}

/** True for an IPv4 dotted quad or an IPv6 literal (no brackets). */
export function isIpLiteral(text: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(text) ||
    (text.includes(":") && /^[0-9a-fA-F:.]+$/.test(text));
}
