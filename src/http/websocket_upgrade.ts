/**
 * The server side of the WebSocket opening handshake (RFC 6455 §4.2): the
 * verdict on a parsed request head, and the 101 that turns the connection
 * into a {@linkcode WebSocketDuplex}. It decides nothing about the request
 * target: which paths upgrade, and what a refusal says, are the caller's
 * (the one-shot listener takes any path; the gateway routes).
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Duplex } from "../io/duplex.ts";
import { WebSocketDuplex, type WebSocketDuplexOptions } from "../io/websocket_duplex.ts";
import { encodeResponseHead, type ResponseHeader } from "./http_response.ts";
import { headerTokens, type RequestHead } from "./request_head.ts";

/** RFC 6455 §1.3: appended to the client's key before hashing. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** RFC 6455 §4.2.1: the key is 16 random bytes in base64. */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;
/** The sub-protocol spoken by default: binary messages carrying raw RFB. */
const BINARY_PROTOCOL = "binary";
/** noVNC before 1.0: text messages carrying RFB in base64 (vncap forwardings only). */
const BASE64_PROTOCOL = "base64";
/** Prefix of a sub-protocol offer that carries a token instead of naming a protocol. */
const TOKEN_OFFER_PREFIX = "token.";
/**
 * A token offer's value: base64url without padding (RFC 4648 §5), whose
 * characters are all tchar (RFC 9110 §5.6.2), as a sub-protocol must be
 * (RFC 6455 §4.1); at most 64 characters.
 */
const TOKEN_OFFER_VALUE = /^[A-Za-z0-9_-]{1,64}$/;

/** A request head that may upgrade: what the 101 needs, and the token offered. */
export interface UpgradeAccepted {
  readonly upgrade: true;
  /** The client's `Sec-WebSocket-Key`, checked. */
  readonly key: string;
  /**
   * The sub-protocol to answer: `binary` when offered, else `base64` when
   * offered and allowed, else none.
   */
  readonly protocol?: "binary" | "base64";
  /**
   * The value of a sub-protocol offer `token.<value>` (base64url, at most 64
   * characters), when exactly one such offer came and it is valid. It is a
   * credential: never answered in the 101, never logged.
   */
  readonly tokenOffer?: string;
}

/** Why a request head may not upgrade, for callers that pick their own answer. */
export type UpgradeRefusal =
  /** Not GET: 405 with `Allow: GET`. */
  | "method"
  /** Not HTTP/1.1: 400 for another 1.x, 505 otherwise. */
  | "http-version"
  /** No `Upgrade: websocket`: 400. */
  | "not-websocket"
  /** No `Connection: upgrade`: 400. */
  | "connection"
  /** `Sec-WebSocket-Version` other than 13: 426, naming 13. */
  | "websocket-version"
  /** A missing or malformed `Sec-WebSocket-Key`: 400. */
  | "key";

/** A request head that may not upgrade, and the answer RFC 6455 §4.2.1 and §4.4 call for. */
export interface UpgradeRefused {
  readonly upgrade: false;
  /** What is wrong with the request. */
  readonly refusal: UpgradeRefusal;
  /** The status to answer with. */
  readonly status: 400 | 405 | 426 | 505;
  /** A short description for a log line. */
  readonly why: string;
  /** Headers the answer needs (`Allow`, `Upgrade` and `Sec-WebSocket-Version`). */
  readonly headers?: readonly ResponseHeader[];
}

/** What {@linkcode judgeUpgrade} decided. */
export type UpgradeVerdict = UpgradeAccepted | UpgradeRefused;

/**
 * True when the request asks for a WebSocket at all: its `Upgrade` header
 * names `websocket`, in any case (RFC 6455 §4.2.1 item 3). A router uses it
 * to send other requests elsewhere before {@linkcode judgeUpgrade}.
 */
export function wantsWebSocket(head: RequestHead): boolean {
  return lowerTokens(head.headers.get("upgrade")).includes("websocket");
}

/**
 * Decides whether a well-formed request head may upgrade (RFC 6455
 * §4.2.1), whatever its target: method GET, HTTP/1.1, `Upgrade: websocket`,
 * `Connection: upgrade`, version 13 and a valid key, checked in that order.
 * The sub-protocol offers are parsed once: `binary` is picked when offered,
 * else `base64` when offered and `options.base64` allows it, any other offer (or none) still upgrades with no protocol in the answer
 * (snf-vncauthproxy did so), and a `token.<value>` offer is reported as
 * `tokenOffer` (invalid, or more than one: ignored).
 */
export function judgeUpgrade(
  head: RequestHead,
  options: { readonly base64?: boolean } = {},
): UpgradeVerdict {
  const { headers } = head;
  if (head.method !== "GET") {
    return {
      upgrade: false,
      refusal: "method",
      status: 405,
      why: `method ${head.method}`,
      headers: [["Allow", "GET"]],
    };
  }
  if (head.version !== "HTTP/1.1") {
    const status = head.version.startsWith("HTTP/1.") ? 400 : 505;
    return { upgrade: false, refusal: "http-version", status, why: `${head.version} request` };
  }
  if (!wantsWebSocket(head)) {
    return {
      upgrade: false,
      refusal: "not-websocket",
      status: 400,
      why: "not a WebSocket upgrade",
    };
  }
  if (!lowerTokens(headers.get("connection")).includes("upgrade")) {
    return { upgrade: false, refusal: "connection", status: 400, why: "no Connection: upgrade" };
  }
  if (headers.get("sec-websocket-version") !== "13") {
    // RFC 6455 §4.4: name the version this server speaks.
    return {
      upgrade: false,
      refusal: "websocket-version",
      status: 426,
      why: "unsupported WebSocket version",
      headers: [["Upgrade", "websocket"], ["Sec-WebSocket-Version", "13"]],
    };
  }
  const key = headers.get("sec-websocket-key") ?? "";
  if (!WEBSOCKET_KEY.test(key)) {
    return { upgrade: false, refusal: "key", status: 400, why: "bad WebSocket key" };
  }
  // Offers match exactly as sent, as a browser matches our answer to its offers.
  const offers = headerTokens(headers.get("sec-websocket-protocol"));
  const tokenOffers = offers.filter((offer) => offer.startsWith(TOKEN_OFFER_PREFIX))
    .map((offer) => offer.slice(TOKEN_OFFER_PREFIX.length));
  // Two token offers are ambiguous: let neither count rather than the order.
  const tokenOffer = tokenOffers.length === 1 && TOKEN_OFFER_VALUE.test(tokenOffers[0]!)
    ? tokenOffers[0]
    : undefined;
  return {
    upgrade: true,
    key,
    ...(offers.includes(BINARY_PROTOCOL)
      ? { protocol: BINARY_PROTOCOL }
      : options.base64 && offers.includes(BASE64_PROTOCOL)
      ? { protocol: BASE64_PROTOCOL }
      : {}),
    ...(tokenOffer !== undefined ? { tokenOffer } : {}),
  };
}

/** RFC 6455 §4.2.2: the `Sec-WebSocket-Accept` value for a client's key. */
export function computeAcceptKey(key: string): string {
  return createHash("sha1").update(key + ACCEPT_GUID).digest("base64");
}

/**
 * Encodes the 101 Switching Protocols for an accepted upgrade (RFC 6455
 * §4.2.2): the accept key, and `Sec-WebSocket-Protocol` for the one chosen.
 * A token offer is never echoed.
 */
export function encodeUpgradeResponse(accepted: UpgradeAccepted): Uint8Array {
  return encodeResponseHead(101, [
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade"],
    ["Sec-WebSocket-Accept", computeAcceptKey(accepted.key)],
    ...(accepted.protocol ? [["Sec-WebSocket-Protocol", accepted.protocol] as const] : []),
  ]);
}

/**
 * Writes the 101 for `accepted` on `duplex` and returns the WebSocket over
 * it; the returned duplex owns `duplex` from then on.
 */
export async function acceptUpgrade(
  duplex: Duplex,
  accepted: UpgradeAccepted,
  options: WebSocketDuplexOptions = {},
): Promise<WebSocketDuplex> {
  await duplex.write(encodeUpgradeResponse(accepted));
  return new WebSocketDuplex(duplex, {
    ...options,
    ...(accepted.protocol === "base64" ? { base64: true } : {}),
  });
}

/** The comma-separated tokens of a header value, lower-cased (for case-insensitive ones). */
function lowerTokens(value: string | undefined): string[] {
  return headerTokens(value).map((token) => token.toLowerCase());
}
