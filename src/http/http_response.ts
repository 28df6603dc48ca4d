/**
 * Small HTTP/1.1 responses, server side (RFC 9112 §4, RFC 9110 §15): the
 * encoding of a response head and of a short plain-text response that closes
 * the connection, and the drain after it that lets the client read it. For
 * the answers of the per-port WebSocket listeners and the gateway: the 101,
 * the 4xx, and the heads of static files.
 *
 * @module
 */

import { startDeadline, withDeadline } from "../io/deadline.ts";
import type { Duplex } from "../io/duplex.ts";

/** A response header: name and value, in the order they go out. */
export type ResponseHeader = readonly [name: string, value: string];

/** RFC 9110 §15: the reason phrases of the statuses this server sends. */
const STATUS_TEXT: Readonly<Record<number, string>> = Object.freeze({
  101: "Switching Protocols",
  200: "OK",
  204: "No Content",
  304: "Not Modified",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  414: "URI Too Long",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
});
/** RFC 9110 §5.6.2: a field name is a token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * Field values we send: visible ASCII, SP and HTAB (RFC 9110 §5.5), so no
 * CR or LF from a caller's value can split the head (response splitting).
 */
const FIELD_VALUE = /^[\t\x20-\x7e]*$/;
const DEFAULT_LINGER_MS = 1_000;
const DEFAULT_LINGER_BYTES = 64 * 1024;

const encoder = new TextEncoder();

/**
 * Encodes a response head: the status line, `headers` as given, and the
 * blank line. The caller supplies every header (`Content-Length` included)
 * and writes the body, if any, after it.
 *
 * @throws {RangeError} for a status without a reason phrase here.
 * @throws {TypeError} for a header name that is not a token or a value
 * with characters other than visible ASCII, SP and HTAB.
 */
export function encodeResponseHead(
  status: number,
  headers: readonly ResponseHeader[] = [],
): Uint8Array {
  const reason = STATUS_TEXT[status];
  if (reason === undefined) throw new RangeError(`Unknown HTTP status ${status}`);
  const lines = [`HTTP/1.1 ${status} ${reason}`];
  for (const [name, value] of headers) {
    if (!TOKEN.test(name)) throw new TypeError(`Invalid header name "${name}"`);
    if (!FIELD_VALUE.test(value)) throw new TypeError(`Invalid value of header "${name}"`);
    lines.push(`${name}: ${value}`);
  }
  return encoder.encode(`${lines.join("\r\n")}\r\n\r\n`);
}

/** Options of {@linkcode encodeErrorResponse}. */
export interface ErrorResponseOptions {
  /** Headers after the fixed ones (e.g. `Allow`). @default {[]} */
  readonly headers?: readonly ResponseHeader[];
  /** Plain-text body. @default {"<reason phrase>\n"} */
  readonly body?: string;
  /**
   * The request's method, when known. The answer to `HEAD` is the head
   * alone, with the `Content-Length` a `GET` would get (RFC 9110 §9.3.2).
   */
  readonly method?: string;
}

/**
 * Encodes a short plain-text response that closes the connection: status
 * line, `Content-Type: text/plain; charset=utf-8`, `Content-Length`,
 * `Connection: close`, then `options.headers`, and the body unless the
 * request was `HEAD`.
 *
 * @throws {RangeError} / {TypeError} as {@linkcode encodeResponseHead}.
 */
export function encodeErrorResponse(
  status: number,
  options: ErrorResponseOptions = {},
): Uint8Array {
  const reason = STATUS_TEXT[status];
  if (reason === undefined) throw new RangeError(`Unknown HTTP status ${status}`);
  const body = encoder.encode(options.body ?? `${reason}\n`);
  const head = encodeResponseHead(status, [
    ["Content-Type", "text/plain; charset=utf-8"],
    ["Content-Length", String(body.length)],
    ["Connection", "close"],
    ...(options.headers ?? []),
  ]);
  if (options.method === "HEAD") return head;
  const response = new Uint8Array(head.length + body.length);
  response.set(head);
  response.set(body, head.length);
  return response;
}

/** Options of {@linkcode linger}. */
export interface LingerOptions {
  /** Ends the drain early (the daemon's shutdown, the phase's deadline). */
  readonly signal?: AbortSignal;
  /** How long to read what the client still sends. @default {1000} */
  readonly timeoutMs?: number;
  /** How much of it to read at most. @default {65536} */
  readonly maxBytes?: number;
}

/**
 * After a response that closes the connection: shuts the write side, then
 * reads (and drops) what the client still sends for a short while, so that
 * closing with unread input does not reset the connection before the
 * client has read the response (RFC 9112 §9.6). Never throws; the caller
 * closes `duplex` afterwards.
 */
export async function linger(
  conn: Pick<Deno.Conn, "closeWrite">,
  duplex: Duplex,
  options: LingerOptions = {},
): Promise<void> {
  const maxBytes = options.maxBytes ?? DEFAULT_LINGER_BYTES;
  try {
    await conn.closeWrite();
    using phase = startDeadline(
      options.timeoutMs ?? DEFAULT_LINGER_MS,
      ...(options.signal ? [options.signal] : []),
    );
    await withDeadline(duplex, phase.signal, async () => {
      const sink = new Uint8Array(4096);
      let total = 0;
      while (total < maxBytes) {
        const n = await duplex.read(sink);
        if (n === null) return;
        total += n;
      }
    });
  } catch {
    // The response is out; whatever happens now, the connection closes.
  }
}
