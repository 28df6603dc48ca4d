/**
 * The static web tree behind `--web DIR` (Debian's noVNC in
 * `/usr/share/novnc`, typically): GET and HEAD of regular files inside DIR
 * and nothing else. No listings, no redirects (a redirect to `//host` was
 * Nova's open redirect, CVE-2021-3654), no traversal: a request path is
 * decoded once, segment by segment, and refused if any segment could mean
 * something else to the file system (`..`, `.`, `%2e%2e`, `%2f`, `%5c`,
 * `%00`, `//`, backslashes, NUL); what is left is resolved through its
 * symlinks and must still lie inside DIR.
 *
 * {@linkcode StaticFiles.serve} returns a description of the response, not
 * bytes on a wire; the gateway writes it. A file body stays an open file and
 * is streamed with {@linkcode fileBodyChunks}.
 *
 * @module
 */

import { extname } from "node:path";

/** A response body: a few bytes, or an open file to stream. */
export type StaticBody =
  | { readonly kind: "bytes"; readonly bytes: Uint8Array }
  | FileBody;

/** An open regular file and the number of bytes to send from it. */
export interface FileBody {
  /** Discriminant of {@linkcode StaticBody}. */
  readonly kind: "file";
  /** The file, opened read-only; closed by disposing the response. */
  readonly file: Deno.FsFile;
  /** Bytes to send: the size `fstat` gave, also sent as `Content-Length`. */
  readonly length: number;
}

/**
 * What to answer a request for a static file. Dispose it (`using`) once
 * written, which closes a file body.
 */
export interface StaticResponse extends Disposable {
  /** HTTP status: 200, 404, 405 or 500. */
  readonly status: number;
  /** Header fields in order, `Content-Length` included. */
  readonly headers: readonly (readonly [string, string])[];
  /** The body; empty bytes for HEAD, whose `Content-Length` still tells the size. */
  readonly body: StaticBody;
  /**
   * Why a request was refused, safe to log (it never holds the path or the
   * query); `undefined` for a 200.
   */
  readonly why?: string;
}

/** The parts of a request head static files need (a `RequestHead` fits). */
export interface StaticRequest {
  /** The method, case-sensitive (RFC 9110 §9.1). */
  readonly method: string;
  /** The request target as sent: path and optional query. */
  readonly target: string;
}

/** Options for {@linkcode StaticFiles.create}. */
export interface StaticFilesOptions {
  /**
   * File served for `/`, relative to the root.
   * @default {"vnc.html"}
   */
  indexFile?: string;
  /**
   * Largest file served, in bytes; bigger ones get 404.
   * @default {16777216}
   */
  maxFileBytes?: number;
  /**
   * `max-age` in seconds for everything but HTML (HTML is `no-cache`, so a
   * package upgrade reaches the page at once and the scripts soon after).
   * @default {600}
   */
  maxAgeSeconds?: number;
  /**
   * `ws:`/`wss:` origins to name in `connect-src` beside `'self'`, for
   * browsers whose `'self'` does not cover WebSockets (see
   * {@linkcode contentSecurityPolicy}).
   * @default {[]}
   */
  webSocketOrigins?: readonly string[];
}

/**
 * Content types by lower-case extension; text types carry `charset=utf-8`
 * so a browser never guesses (noVNC's files are UTF-8). Anything else is
 * `application/octet-stream`, which with `nosniff` a browser downloads
 * instead of running.
 */
export const CONTENT_TYPES: Readonly<Record<string, string>> = Object.freeze({
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  // RFC 9239: text/javascript for scripts and ES modules alike.
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  // RFC 8259 §11: JSON has no charset parameter; it is UTF-8.
  ".json": "application/json",
  ".map": "application/json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".otf": "font/otf",
  ".mp3": "audio/mpeg",
  ".oga": "audio/ogg",
  ".ogg": "audio/ogg",
  ".wav": "audio/wav",
});

/** The content type of files with an unknown extension. */
export const FALLBACK_CONTENT_TYPE = "application/octet-stream";

/**
 * The Content-Security-Policy of every response, as tight as Debian's noVNC
 * (1.3, `vnc.html`) allows: its scripts (a classic one and ES modules),
 * stylesheet, font, images and bell sounds all come from the same origin;
 * it sets styles only through CSSOM (`element.style.x = ...`), which
 * `style-src` does not govern, so no `'unsafe-inline'`; it draws tight/PNG
 * rectangles and the local cursor from `data:` URLs (`img-src data:`); it
 * fetches its locale JSON and opens its WebSocket to the page's own host and
 * port. CSP Level 3 lets `'self'` match `ws:`/`wss:` on that host and port
 * (Chromium and Firefox do; Safari has not always), so `webSocketOrigins`
 * (e.g. `wss://console.example:8443`) can be named as well. It uses no
 * blob:, workers, frames, plugins, `<base>` or form submission (its one
 * form's submit handler calls `preventDefault`). `frame-ancestors 'none'`
 * keeps the console out of other sites' frames (clickjacking).
 *
 * @throws {TypeError} on a `webSocketOrigins` entry that is not a `ws:` or
 * `wss:` origin
 */
export function contentSecurityPolicy(webSocketOrigins: readonly string[] = []): string {
  for (const origin of webSocketOrigins) {
    if (!WEBSOCKET_ORIGIN.test(origin)) {
      throw new TypeError(`Invalid WebSocket origin ${JSON.stringify(origin)}`);
    }
  }
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "media-src 'self'",
    ["connect-src 'self'", ...webSocketOrigins].join(" "),
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/** A `ws:` or `wss:` origin, and nothing that could end a CSP source list. */
const WEBSOCKET_ORIGIN = /^wss?:\/\/(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$/;

/** Headers on every response, refusals included. */
function securityHeaders(csp: string): readonly (readonly [string, string])[] {
  return Object.freeze(
    [
      ["X-Content-Type-Options", "nosniff"],
      ["Content-Security-Policy", csp],
      // The page URL carries a one-time token in its query: no Referer may leak it.
      ["Referrer-Policy", "no-referrer"],
      ["Cross-Origin-Resource-Policy", "same-origin"],
      // For browsers that predate frame-ancestors.
      ["X-Frame-Options", "DENY"],
    ] as const,
  );
}

const DEFAULT_INDEX_FILE = "vnc.html";
const DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_AGE_SECONDS = 600;
/** Bound on a request path, so resolving one costs little. */
const MAX_PATH_LENGTH = 1024;
/** Bytes read per chunk when streaming a file. */
const CHUNK_BYTES = 64 * 1024;

/**
 * Serves the regular files of one directory tree, fixed at start-up.
 *
 * @example
 * ```ts
 * const files = await StaticFiles.create("/usr/share/novnc");
 * using response = await files.serve(head);
 * // write status and headers, then the body
 * ```
 */
export class StaticFiles {
  readonly #root: string;
  readonly #indexFile: string;
  readonly #maxFileBytes: number;
  readonly #assetCacheControl: string;
  readonly #csp: string;
  readonly #securityHeaders: readonly (readonly [string, string])[];

  private constructor(
    root: string,
    indexFile: string,
    options: { maxFileBytes: number; maxAgeSeconds: number; csp: string },
  ) {
    this.#root = root;
    this.#indexFile = indexFile;
    this.#maxFileBytes = options.maxFileBytes;
    this.#assetCacheControl = `max-age=${options.maxAgeSeconds}`;
    this.#csp = options.csp;
    this.#securityHeaders = securityHeaders(options.csp);
  }

  /**
   * Resolves `root` once (its real path is what every request must stay
   * inside) and checks that the index file is there, so a wrong `--web`
   * fails at start-up rather than with a 404 in a viewer's browser.
   *
   * @throws {Deno.errors.NotFound} when `root` or its index file is missing
   * @throws {TypeError} when `root` is not a directory, the index file not a
   * regular file inside it, or an option is invalid
   */
  static async create(root: string, options: StaticFilesOptions = {}): Promise<StaticFiles> {
    const indexFile = options.indexFile ?? DEFAULT_INDEX_FILE;
    const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    const maxAgeSeconds = options.maxAgeSeconds ?? DEFAULT_MAX_AGE_SECONDS;
    if (!Number.isSafeInteger(maxFileBytes) || maxFileBytes < 0) {
      throw new TypeError(`Invalid maximum file size ${maxFileBytes}`);
    }
    if (!Number.isSafeInteger(maxAgeSeconds) || maxAgeSeconds < 0) {
      throw new TypeError(`Invalid max-age ${maxAgeSeconds}`);
    }
    const csp = contentSecurityPolicy(options.webSocketOrigins);
    const realRoot = await Deno.realPath(root);
    if (!(await Deno.stat(realRoot)).isDirectory) {
      throw new TypeError(`Cannot serve "${root}": not a directory`);
    }
    const files = new StaticFiles(realRoot, indexFile, { maxFileBytes, maxAgeSeconds, csp });
    const index = splitSegments(`/${indexFile}`);
    const indexPath = index === undefined ? undefined : await files.#resolve(index);
    if (typeof indexPath !== "string" || !(await Deno.stat(indexPath)).isFile) {
      throw new TypeError(`Cannot serve "${root}": no index file "${indexFile}" inside it`);
    }
    return files;
  }

  /** The real path of the root directory. */
  get root(): string {
    return this.#root;
  }

  /** The Content-Security-Policy sent with every response. */
  get contentSecurityPolicy(): string {
    return this.#csp;
  }

  /**
   * Answers one request: 405 with `Allow` for methods other than GET and
   * HEAD, 404 for any path that is unsafe, missing, outside the root, a
   * directory (no listings; `/` is the index file), not a regular file, or
   * over the size cap; otherwise 200 with the open file. The query string
   * is ignored.
   */
  async serve(request: StaticRequest): Promise<StaticResponse> {
    const head = request.method === "HEAD";
    if (request.method !== "GET" && !head) {
      return this.#text(405, "Method not allowed\n", head, "method is not GET or HEAD", [
        ["Allow", "GET, HEAD"],
      ]);
    }
    const query = request.target.indexOf("?");
    const path = query < 0 ? request.target : request.target.slice(0, query);
    const segments = path === "/" ? splitSegments(`/${this.#indexFile}`) : splitSegments(path);
    if (segments === undefined) return this.#notFound(head, "path is not a safe path");
    const resolved = await this.#resolve(segments);
    if (typeof resolved !== "string") return this.#notFound(head, resolved.why);
    return await this.#openFile(resolved, head);
  }

  /** The real path of `segments` under the root, or why there is none inside it. */
  async #resolve(segments: readonly string[]): Promise<string | Refusal> {
    let real: string;
    try {
      // realPath follows every symlink on the way, so the containment check
      // below is on the file the kernel will open, not on the spelling.
      real = await Deno.realPath(`${this.#root}/${segments.join("/")}`);
    } catch {
      return { why: "no such file" };
    }
    const prefix = this.#root.endsWith("/") ? this.#root : `${this.#root}/`;
    return real.startsWith(prefix) ? real : { why: "path leads outside the root" };
  }

  async #openFile(real: string, head: boolean): Promise<StaticResponse> {
    // lstat before open: opening a FIFO would block until a writer came, and
    // `real` has no symlinks in it, so one appearing now means the tree is
    // changing under us.
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(real);
    } catch {
      return this.#notFound(head, "file cannot be read");
    }
    if (!info.isFile) return this.#notFound(head, "path is not a regular file");
    let file: Deno.FsFile;
    try {
      file = await Deno.open(real, { read: true });
    } catch (error) {
      return isMissing(error)
        ? this.#notFound(head, "file cannot be read")
        : this.#text(500, "Internal server error\n", head, "file cannot be opened");
    }
    try {
      // Judge the file that is open, not the name: if the last component was
      // swapped between lstat and open, this is another inode and is refused.
      // (Deno has no openat/O_NOFOLLOW, so a directory swapped higher up the
      // path is not caught: DIR must not be writable by anyone untrusted.)
      const opened = await file.stat();
      if (!opened.isFile || opened.ino !== info.ino || opened.dev !== info.dev) {
        file.close();
        return this.#notFound(head, "file changed while being opened");
      }
      if (opened.size > this.#maxFileBytes) {
        file.close();
        return this.#notFound(head, "file is over the size limit");
      }
      const type = CONTENT_TYPES[extname(real).toLowerCase()] ?? FALLBACK_CONTENT_TYPE;
      const cacheControl = type.startsWith("text/html") ? "no-cache" : this.#assetCacheControl;
      const headers = [
        ["Content-Type", type],
        ["Content-Length", String(opened.size)],
        ["Cache-Control", cacheControl],
        ...this.#securityHeaders,
      ] as const;
      if (head) {
        file.close();
        return response(200, headers, EMPTY_BODY);
      }
      return response(200, headers, { kind: "file", file, length: opened.size });
    } catch (error) {
      file.close();
      throw error;
    }
  }

  #notFound(head: boolean, why: string): StaticResponse {
    return this.#text(404, "Not found\n", head, why);
  }

  #text(
    status: number,
    text: string,
    head: boolean,
    why: string,
    extra: readonly (readonly [string, string])[] = [],
  ): StaticResponse {
    const bytes = ENCODER.encode(text);
    const headers = [
      ["Content-Type", "text/plain; charset=utf-8"],
      ["Content-Length", String(bytes.length)],
      ["Cache-Control", "no-store"],
      ...extra,
      ...this.#securityHeaders,
    ] as const;
    return response(status, headers, head ? EMPTY_BODY : { kind: "bytes", bytes }, why);
  }
}

/**
 * The bytes of a file body, exactly `body.length` of them, in chunks of up
 * to 64 KiB: a file that grew since `fstat` is cut at the length announced
 * in `Content-Length`.
 *
 * @throws {RangeError} when the file ends early (it shrank); the response
 * is then broken and the connection must be closed
 */
export async function* fileBodyChunks(body: FileBody): AsyncGenerator<Uint8Array> {
  let left = body.length;
  while (left > 0) {
    const chunk = new Uint8Array(Math.min(CHUNK_BYTES, left));
    const read = await body.file.read(chunk);
    if (read === null) throw new RangeError(`File ended ${left} bytes early`);
    left -= read;
    yield chunk.subarray(0, read);
  }
}

/** Why a path was refused, for {@linkcode StaticResponse.why}. */
interface Refusal {
  readonly why: string;
}

const EMPTY_BODY: StaticBody = Object.freeze({ kind: "bytes", bytes: new Uint8Array(0) });
const ENCODER = new TextEncoder();

/**
 * The decoded segments of an origin-form path (RFC 9112 §3.2.1), or
 * undefined when any segment is unsafe. Each segment is percent-decoded
 * exactly once (decoding twice is how `%252e%252e` becomes `..` in some
 * servers) and refused if, raw or decoded, it is empty (`//`, a trailing
 * `/`: no directories), `.` or `..`, starts with a dot (no hidden files),
 * or holds `/`, `\`, NUL or another control character.
 */
function splitSegments(path: string): string[] | undefined {
  if (!path.startsWith("/") || path.length > MAX_PATH_LENGTH) return undefined;
  const segments: string[] = [];
  for (const raw of path.slice(1).split("/")) {
    if (raw === "" || raw.includes("\\")) return undefined;
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return undefined;
    }
    // deno-lint-ignore no-control-regex -- NUL and other controls are what it refuses
    if (segment.startsWith(".") || /[\x00-\x1f\x7f/\\]/.test(segment)) return undefined;
    segments.push(segment);
  }
  return segments;
}

function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied;
}

function response(
  status: number,
  headers: readonly (readonly [string, string])[],
  body: StaticBody,
  why?: string,
): StaticResponse {
  let open = body.kind === "file";
  return {
    status,
    headers,
    body,
    ...(why === undefined ? {} : { why }),
    [Symbol.dispose]() {
      if (open && body.kind === "file") body.file.close();
      open = false;
    },
  };
}
