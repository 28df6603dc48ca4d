/**
 * HTTP/1.1 request heads, server side: reading one from a connection within
 * a byte bound, and a strict parser for it (RFC 9112 §2-§5), with no
 * knowledge of what the request is for. The per-port WebSocket listeners
 * and the gateway read every request through here.
 *
 * @module
 */

import type { ConnectionSlot } from "../io/connection_slots.ts";
import type { Duplex } from "../io/duplex.ts";

/** A parsed HTTP/1.1 request head. */
export interface RequestHead {
  /** Method, e.g. `GET` (case-sensitive, RFC 9110 §9.1). */
  readonly method: string;
  /** Request target as sent: path and query, or an absolute URI. */
  readonly target: string;
  /** Version, e.g. `HTTP/1.1`. */
  readonly version: string;
  /** Headers by lower-case name; repeated ones joined with ", " (RFC 9110 §5.3). */
  readonly headers: ReadonlyMap<string, string>;
}

/** Default bound on a request head, terminating blank line included. */
export const DEFAULT_MAX_HEAD_BYTES = 8192;
/** Header lines accepted in one request head. */
const MAX_HEADER_LINES = 100;
/** RFC 9110 §5.6.2: token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Request target: visible ASCII, no spaces (RFC 9112 §3.2). */
const TARGET = /^[\x21-\x7e]+$/;
/** RFC 9112 §2.3. */
const VERSION = /^HTTP\/[0-9]\.[0-9]$/;
/** RFC 9110 §5.5: field-vchar, obs-text, SP and HTAB; no other controls. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Longest request path put in a log line. */
const MAX_LOGGED_PATH = 100;

/** Options of {@linkcode readRequestHead}. */
export interface ReadRequestHeadOptions {
  /** Longest head accepted, blank line included. @default {8192} */
  readonly maxBytes?: number;
  /**
   * The connection's place among pending connections; touched after every
   * read, so a client still sending is never taken for the idle one.
   */
  readonly slot?: ConnectionSlot;
}

/**
 * Reads from `duplex` up to the blank line ending a request head, within
 * `maxBytes`, and returns the head's bytes for {@linkcode parseRequestHead}.
 * Returns 431 when the head does not fit (RFC 6585 §5), and 400 when bytes
 * follow it in the same reads: the head is the whole request, since a
 * WebSocket client sends nothing more before the 101 (RFC 6455 §4.1) and a
 * GET or HEAD has no body. Reads in pieces of whatever size arrives, and
 * searches each piece once.
 *
 * @throws {Error} when the connection ends before a complete head, or
 * whatever `duplex.read()` throws (e.g. after a deadline closed it).
 */
export async function readRequestHead(
  duplex: Duplex,
  options: ReadRequestHeadOptions = {},
): Promise<Uint8Array | 400 | 431> {
  const buffer = new Uint8Array(options.maxBytes ?? DEFAULT_MAX_HEAD_BYTES);
  let filled = 0;
  while (filled < buffer.length) {
    const n = await duplex.read(buffer.subarray(filled));
    options.slot?.touch();
    if (n === null) throw new Error("Connection closed before a complete request head");
    const end = findHeadEnd(buffer.subarray(0, filled + n), filled);
    filled += n;
    if (end >= 0) return end === filled ? buffer.subarray(0, end) : 400;
  }
  return 431;
}

/**
 * Index just past the `\r\n\r\n` ending a request head in `bytes`, or -1.
 * `from` lets a caller that reads in pieces skip what it already searched.
 */
export function findHeadEnd(bytes: Uint8Array, from = 0): number {
  for (let i = Math.max(0, from - 3); i + 3 < bytes.length; i++) {
    if (
      bytes[i] === 0x0d && bytes[i + 1] === 0x0a && bytes[i + 2] === 0x0d &&
      bytes[i + 3] === 0x0a
    ) {
      return i + 4;
    }
  }
  return -1;
}

/**
 * Parses an HTTP/1.1 request head: the request line and header lines up to
 * and including the blank line (RFC 9112 §2-§5), strictly. Bytes are read as
 * Latin-1, so any octet maps to one character.
 *
 * @throws {SyntaxError} on a malformed request line, a bare LF, obs-fold, a
 * header without a colon or with a non-token name or whitespace before the
 * colon, control characters in a value, more than `maxBytes` bytes, or a
 * missing final blank line.
 */
export function parseRequestHead(
  bytes: Uint8Array,
  options: { maxBytes?: number } = {},
): RequestHead {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_HEAD_BYTES;
  if (bytes.length > maxBytes) throw new SyntaxError("Request head is too long");
  const text = latin1(bytes);
  if (!text.endsWith("\r\n\r\n")) throw new SyntaxError("Request head is incomplete");
  const lines = text.slice(0, -4).split("\r\n");
  // A lone LF or CR anywhere is not a line ending we accept (RFC 9112 §2.2
  // allows tolerating a bare LF; being strict keeps parsers in agreement).
  if (lines.some((line) => line.includes("\n") || line.includes("\r"))) {
    throw new SyntaxError("Bare CR or LF in request head");
  }
  const requestLine = lines[0]!.split(" ");
  if (requestLine.length !== 3) throw new SyntaxError("Malformed request line");
  const [method, target, version] = requestLine as [string, string, string];
  if (!TOKEN.test(method)) throw new SyntaxError("Malformed request method");
  if (!TARGET.test(target)) throw new SyntaxError("Malformed request target");
  if (!VERSION.test(version)) throw new SyntaxError("Malformed HTTP version");
  if (lines.length - 1 > MAX_HEADER_LINES) throw new SyntaxError("Too many header lines");
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    // RFC 9112 §5.2: obs-fold is rejected in requests.
    if (line.startsWith(" ") || line.startsWith("\t")) {
      throw new SyntaxError("Obsolete line folding in request head");
    }
    const colon = line.indexOf(":");
    if (colon < 0) throw new SyntaxError("Header line without a colon");
    const name = line.slice(0, colon);
    // RFC 9112 §5.1: no whitespace between the name and the colon.
    if (!TOKEN.test(name)) throw new SyntaxError("Malformed header name");
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) throw new SyntaxError("Control character in header value");
    const key = name.toLowerCase();
    const previous = headers.get(key);
    headers.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }
  return { method, target, version, headers };
}

/** The comma-separated elements of a header value, trimmed, empty ones dropped. */
export function headerTokens(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value.split(",").map((token) => token.trim()).filter((token) => token !== "");
}

/**
 * The path of a request target for a log line: never the query or the
 * fragment, which may hold a token, and at most 100 characters. An
 * absolute-form target (RFC 9112 §3.2.2) is reduced to its path.
 */
export function pathForLog(target: string): string {
  let path = target;
  if (!path.startsWith("/")) {
    try {
      path = new URL(path).pathname;
    } catch {
      path = "(unparsed target)";
    }
  }
  path = path.split(/[?#]/, 1)[0]!;
  return path.length > MAX_LOGGED_PATH ? `${path.slice(0, MAX_LOGGED_PATH)}...` : path;
}

function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return text;
}
