/**
 * Which web pages may open a WebSocket to us: the Origin check that stops
 * Cross-Site WebSocket Hijacking (RFC 6455 §10.2; OpenStack Nova
 * CVE-2015-0259). A browser always sends the page's origin (RFC 6454 §7) on
 * a WebSocket upgrade, and a page on another site must not reach a console
 * just because the viewer's browser holds a token or sits inside the network.
 *
 * The policy is built once from `--allowed-origins` and never changes: it
 * compares the Origin header with that fixed list and nothing else. It never
 * sees the Host header, because a Host the attacker's page chose says nothing
 * about who may connect (Nova added each request's Host to its list, which let
 * a forged Host open the door for later requests: Launchpad bug 2158919).
 *
 * @module
 */

/** The scheme a listener serves: `https` for TLS (wss), `http` for plain (ws). */
export type ListenerScheme = "http" | "https";

/** The answer of {@linkcode OriginPolicy.check}; `why` is safe to log. */
export type OriginVerdict =
  | { readonly ok: true }
  | { readonly ok: false; readonly why: string };

const ALLOWED: OriginVerdict = Object.freeze({ ok: true });

/**
 * A serialized origin as browsers send it (RFC 6454 §6.2): scheme, `://`,
 * host, optional port, nothing else. Hosts are ASCII (browsers send IDNs in
 * punycode) or bracketed IPv6 literals; no userinfo, path, percent-escapes
 * or spaces (RFC 6454 §7.1 allows a space-separated list, but a WebSocket
 * upgrade carries exactly one origin, RFC 6455 §4.1 step 8).
 */
const SERIALIZED_ORIGIN =
  /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?$/;
/** What a normalised host may look like; rejects `*` and other would-be wildcards. */
const NORMALISED_HOST = /^(?:\[[0-9a-f:.]+\]|[a-z0-9._-]+)$/;
/** Longest Origin value quoted in a refusal, so a log line stays short. */
const MAX_QUOTED = 100;

/**
 * Normalises one `--allowed-origins` entry to its RFC 6454 §6.2
 * serialization: `scheme://host[:port]` with the scheme and host lower-cased,
 * IPv6 literals bracketed and compressed, IDNs in punycode and the default
 * port (http 80, https 443) dropped. A single trailing `/` is tolerated.
 *
 * @throws {SyntaxError} when the entry is not an http or https origin
 * (a path, query, userinfo, wildcard or other scheme).
 */
export function parseOrigin(text: string): string {
  const quoted = JSON.stringify(text);
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#@\\]+\/?$/.test(text)) {
    throw new SyntaxError(`Invalid origin ${quoted}: expected scheme://host[:port]`);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch (error) {
    throw new SyntaxError(`Invalid origin ${quoted}: expected scheme://host[:port]`, {
      cause: error,
    });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new SyntaxError(`Invalid origin ${quoted}: the scheme must be http or https`);
  }
  if (!NORMALISED_HOST.test(url.hostname)) {
    throw new SyntaxError(`Invalid origin ${quoted}: the host must be a name or an IP address`);
  }
  return url.origin;
}

/**
 * The Origin check for WebSocket upgrades, fixed at start-up. With a list,
 * only pages from a listed origin pass; without one (no `--allowed-origins`
 * and no `--web`) every request passes, as for snf's per-port listeners.
 */
export class OriginPolicy {
  readonly #allowed: ReadonlySet<string> | undefined;
  readonly #origins: readonly string[] | undefined;

  /**
   * Builds the policy from `origins` (each normalised by
   * {@linkcode parseOrigin}); `undefined` allows every request. The array is
   * copied, so changing it afterwards changes nothing.
   *
   * @throws {SyntaxError} on an entry that is not an origin
   * @throws {RangeError} on an empty list, which would refuse every browser
   */
  constructor(origins?: readonly string[]) {
    if (origins === undefined) {
      this.#allowed = undefined;
      this.#origins = undefined;
    } else {
      if (origins.length === 0) {
        throw new RangeError("An origin allow-list needs at least one origin");
      }
      const normalised = [...new Set(origins.map(parseOrigin))];
      this.#origins = Object.freeze(normalised);
      this.#allowed = new Set(normalised);
    }
    Object.freeze(this);
  }

  /** The allowed origins, normalised and frozen; `undefined` when all are allowed. */
  get origins(): readonly string[] | undefined {
    return this.#origins;
  }

  /**
   * Judges the Origin header of an upgrade request arriving on a listener
   * serving `listenerScheme`. Refused: a missing Origin, `null` (sandboxed
   * frames, `file:` pages), anything that is not one serialized origin, an
   * origin not on the list (scheme, host and port all count, after
   * normalisation), and an `http` origin on an `https` listener even when
   * listed, since an on-path attacker can rewrite a plain-HTTP page and
   * would turn TLS on the WebSocket into nothing (Nova's scheme check for
   * CVE-2015-0259). An `https` origin on an `http` listener is judged by the
   * list alone: that listener sits behind a TLS-terminating proxy, and
   * browsers never let an https page open a plain ws: socket anyway.
   */
  check(originHeader: string | undefined, listenerScheme: ListenerScheme): OriginVerdict {
    if (this.#allowed === undefined) return ALLOWED;
    if (originHeader === undefined || originHeader === "") {
      return refuse("Origin header is missing");
    }
    const origin = normaliseHeader(originHeader);
    if (origin === undefined) {
      return refuse(
        originHeader === "null"
          ? `Origin is "null"`
          : `Origin ${quote(originHeader)} is not a serialized origin`,
      );
    }
    if (!this.#allowed.has(origin)) return refuse(`Origin ${quote(origin)} is not allowed`);
    if (listenerScheme === "https" && origin.startsWith("http:")) {
      return refuse(`Origin ${quote(origin)} is plain http on an https listener`);
    }
    return ALLOWED;
  }
}

/** The RFC 6454 §6.2 serialization of an Origin header's value, or undefined. */
function normaliseHeader(value: string): string | undefined {
  const match = SERIALIZED_ORIGIN.exec(value);
  if (match === null) return undefined;
  const scheme = match[1]!.toLowerCase();
  if (scheme !== "http" && scheme !== "https") return undefined;
  try {
    // The URL parser does the RFC 6454 normalisation: lower-case host,
    // default port dropped, IPv6 compressed; the pattern above has already
    // kept out everything it would have been lenient about.
    return new URL(`${scheme}://${match[2]}${match[3] === undefined ? "" : `:${match[3]}`}`)
      .origin;
  } catch {
    return undefined;
  }
}

function refuse(why: string): OriginVerdict {
  return { ok: false, why };
}

function quote(value: string): string {
  return JSON.stringify(value.length > MAX_QUOTED ? `${value.slice(0, MAX_QUOTED)}…` : value);
}
