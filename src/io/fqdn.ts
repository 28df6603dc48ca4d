/**
 * This host's fully qualified domain name, as Python's `socket.getfqdn()`
 * finds it (snf-vncauthproxy sends it as `proxy_address` when the proxy
 * listens on every address).
 *
 * @module
 */

import { lookup, lookupService } from "node:dns/promises";

/**
 * Resolves the host name and asks for the canonical name of its address;
 * falls back to the plain host name when that has no dot or takes longer
 * than `timeoutMs`.
 */
export async function getFqdn(timeoutMs = 3000): Promise<string> {
  const host = Deno.hostname();
  if (host.includes(".")) return host;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeoutMs);
  });
  try {
    const name = await Promise.race([canonicalName(host), timeout]);
    return name !== undefined && name.includes(".") ? name : host;
  } catch {
    return host;
  } finally {
    clearTimeout(timer);
  }
}

async function canonicalName(host: string): Promise<string> {
  const { address } = await lookup(host);
  return (await lookupService(address, 0)).hostname;
}
