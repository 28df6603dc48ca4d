/**
 * Test-only harness: drive noVNC in Debian's headless Chromium.
 *
 * A tiny static server serves noVNC's files plus one extra page
 * ({@linkcode TEST_PAGE_PATH}) that imports `core/rfb.js`, connects to a
 * WebSocket URL with a VNC password and records noVNC's events in
 * `window.__events`. {@linkcode openNoVnc} launches Chromium through
 * playwright-core on that page and returns a {@linkcode NoVncSession}.
 *
 * Debian bookworm ships noVNC 1.3.0 in `/usr/share/novnc`: `core/rfb.js` is
 * an ES module (default export `RFB`), with pako vendored under `vendor/`.
 * The page is served from `http://127.0.0.1`, which browsers treat as a
 * secure context, as noVNC 1.4 and later require.
 *
 * @module
 */

import { chromium } from "npm:playwright-core@1.65.1";
import type { BrowserContext, Page } from "npm:playwright-core@1.65.1";

/** Where Debian's `chromium` package installs the browser. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/** Path of the extra test page served by {@linkcode startStaticServer}. */
export const TEST_PAGE_PATH = "/__test.html";

const NOVNC_CANDIDATES = ["/usr/share/novnc"];

/**
 * The noVNC directory (one holding `core/rfb.js` as an ES module), or
 * `undefined` when noVNC is not installed. `NOVNC_DIR` in the environment
 * takes precedence over Debian's `/usr/share/novnc` (noVNC 1.3.0 on bookworm).
 */
export const NOVNC_DIR: string | undefined = findNoVncDir();

const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_CONSOLE_LINES = 200;

/** Flags for headless Chromium in a container (no sandbox, no GPU, no background traffic). */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const CONTENT_TYPES: Record<string, string> = {
  ".css": "text/css; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".ico": "image/x-icon",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};

/**
 * The test page. `window.__start(options)` creates the RFB object;
 * `window.__waitFor(type, timeoutMs)` resolves with the first recorded event
 * of that type, or rejects as soon as it can no longer happen;
 * `window.__pixel(x, y)` reads one canvas pixel as `[r, g, b]`.
 */
const TEST_PAGE_HTML = `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>vncauthproxy noVNC test page</title>
<style>html, body { margin: 0; background: #000; } #screen { width: 800px; height: 600px; }</style>
</head>
<body>
<div id="screen"></div>
<script type="module">
import RFB from "./core/rfb.js";

const events = [];
const listeners = new Set();
window.__events = events;

function record(event) {
  events.push({ ...event, at: performance.now() });
  for (const listener of [...listeners]) listener();
}

// Events after which the wanted one can no longer arrive.
const BLOCKERS = {
  connect: ["disconnect", "securityfailure", "credentialsrequired"],
  securityfailure: ["connect", "disconnect", "credentialsrequired"],
  disconnect: [],
  credentialsrequired: ["connect", "disconnect", "securityfailure"],
};

window.__start = (options) => {
  const rfbOptions = { credentials: { password: options.password } };
  if (options.wsProtocols) rfbOptions.wsProtocols = options.wsProtocols;
  const rfb = new RFB(document.getElementById("screen"), options.wsUrl, rfbOptions);
  rfb.scaleViewport = false;
  rfb.resizeSession = false;
  rfb.addEventListener("connect", () => record({ type: "connect" }));
  rfb.addEventListener("disconnect", (e) => record({ type: "disconnect", clean: e.detail.clean }));
  rfb.addEventListener("securityfailure", (e) =>
    record({ type: "securityfailure", status: e.detail.status, reason: e.detail.reason ?? "" }));
  rfb.addEventListener("credentialsrequired", (e) =>
    record({ type: "credentialsrequired", types: e.detail.types }));
  rfb.addEventListener("desktopname", (e) => record({ type: "desktopname", name: e.detail.name }));
  window.__rfb = rfb;
};

window.__disconnect = () => window.__rfb?.disconnect();

window.__waitFor = (type, timeoutMs) => new Promise((resolve, reject) => {
  const blockers = BLOCKERS[type] ?? [];
  let timer;
  function check() {
    const hit = events.find((e) => e.type === type);
    const blocker = events.find((e) => blockers.includes(e.type));
    if (!hit && !blocker) return;
    listeners.delete(check);
    clearTimeout(timer);
    if (hit) resolve(hit);
    else reject(new Error("Expected " + type + " but got " + JSON.stringify(events)));
  }
  timer = setTimeout(() => {
    listeners.delete(check);
    reject(new Error("Timed out after " + timeoutMs + " ms waiting for " + type + "; events: " + JSON.stringify(events)));
  }, timeoutMs);
  listeners.add(check);
  check();
});

// The whole canvas as RGB bytes, base64 (a plain array would be 4 numbers per byte of JSON).
window.__image = () => {
  const canvas = document.querySelector("#screen canvas");
  if (!canvas) return null;
  const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let binary = "";
  for (let i = 0; i < rgba.length; i += 4) {
    binary += String.fromCharCode(rgba[i], rgba[i + 1], rgba[i + 2]);
  }
  return { width: canvas.width, height: canvas.height, rgb: btoa(binary) };
};

window.__pixel = (x, y) => {
  const canvas = document.querySelector("#screen canvas");
  if (!canvas || x >= canvas.width || y >= canvas.height) return null;
  const data = canvas.getContext("2d").getImageData(x, y, 1, 1).data;
  return [data[0], data[1], data[2]];
};

window.__ready = true;
</script>
</body>
</html>
`;

/** A noVNC event recorded by the test page, e.g. `{ type: "connect" }`. */
export interface NoVncEvent {
  /** `connect`, `disconnect`, `securityfailure`, `credentialsrequired` or `desktopname`. */
  type: string;
  /** Page time (`performance.now()`) when it was recorded. */
  at: number;
  /** Other fields from the event's detail (`clean`, `status`, `reason`, ...). */
  [field: string]: unknown;
}

/** One noVNC client running in Chromium. */
export interface NoVncSession {
  /** Resolves on noVNC's `connect`; rejects on failure first or on timeout. */
  waitForConnected(): Promise<void>;
  /** Resolves with the reason of noVNC's `securityfailure`; rejects otherwise. */
  waitForSecurityFailure(): Promise<string>;
  /** Resolves on noVNC's `disconnect` with its clean flag. */
  waitForDisconnect(): Promise<{ clean: boolean }>;
  /** The canvas pixel at (x, y); rejects if the canvas is smaller. */
  pixel(x: number, y: number): Promise<[number, number, number]>;
  /** The whole canvas (noVNC's framebuffer, unscaled) as RGB; rejects without a canvas. */
  image(): Promise<{ width: number; height: number; data: Uint8Array }>;
  /** Polls {@linkcode NoVncSession.pixel} until it equals `rgb`; rejects on timeout. */
  waitForPixel(
    x: number,
    y: number,
    rgb: readonly [number, number, number],
  ): Promise<void>;
  /** Asks noVNC to disconnect (a clean disconnect). */
  disconnect(): Promise<void>;
  /** Every event recorded so far, in order. */
  events(): Promise<NoVncEvent[]>;
  /** The page's console output so far (bounded), for failure messages. */
  consoleLines(): string[];
}

/** Options for {@linkcode openNoVnc}. */
export interface OpenNoVncOptions {
  /** `ws://` or `wss://` URL noVNC connects to. */
  wsUrl: string;
  /** VNC password given to noVNC up front. */
  password: string;
  /** WebSocket subprotocols; noVNC 1.3 sends none by default. */
  wsProtocols?: string[];
  /** Accept self-signed certificates (for `wss://`). */
  ignoreHttpsErrors?: boolean;
  /** Deadline for each launch, load and wait step; default 10 s. */
  timeoutMs?: number;
}

/** Whether Debian's Chromium is installed at {@linkcode CHROMIUM_PATH}. */
export function hasChromium(): boolean {
  return isFile(CHROMIUM_PATH);
}

/**
 * Serves the files under `root` and the test page on an ephemeral port of
 * 127.0.0.1. Only GET and HEAD; paths that leave `root` (`..`, encoded
 * slashes, symlinks pointing outside) get 404.
 */
export async function startStaticServer(
  root: string,
): Promise<{ url: string } & AsyncDisposable> {
  const realRoot = await Deno.realPath(root);
  const { promise: listening, resolve } = Promise.withResolvers<
    Deno.NetAddr
  >();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: resolve },
    (request) => serveStatic(realRoot, request),
  );
  const address = await listening;
  return {
    url: `http://127.0.0.1:${address.port}`,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/**
 * Launches Chromium with a fresh profile, opens the test page and starts
 * noVNC against `options.wsUrl`. Disposing closes the browser, the static
 * server and removes the profile directory.
 */
export async function openNoVnc(
  options: OpenNoVncOptions,
): Promise<NoVncSession & AsyncDisposable> {
  if (NOVNC_DIR === undefined) throw new Error("Cannot find noVNC");
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  await using stack = new AsyncDisposableStack();

  const userDataDir = await Deno.makeTempDir({
    prefix: "vncauthproxy-chromium-",
  });
  stack.defer(() => Deno.remove(userDataDir, { recursive: true }));
  const server = stack.use(await startStaticServer(NOVNC_DIR));

  const args = [...CHROMIUM_ARGS];
  if (options.ignoreHttpsErrors) args.push("--ignore-certificate-errors");
  // launchPersistentContext is how playwright takes our own --user-data-dir.
  const context: BrowserContext = await chromium.launchPersistentContext(
    userDataDir,
    {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args,
      ignoreHTTPSErrors: options.ignoreHttpsErrors ?? false,
      timeout: timeoutMs,
    },
  );
  stack.defer(() => context.close());

  const page: Page = context.pages()[0] ?? await context.newPage();
  const pageLog: string[] = [];
  page.on("console", (message) => {
    if (pageLog.length < MAX_CONSOLE_LINES) {
      pageLog.push(`${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => {
    if (pageLog.length < MAX_CONSOLE_LINES) pageLog.push(`pageerror: ${error}`);
  });

  await page.goto(server.url + TEST_PAGE_PATH, { timeout: timeoutMs });
  await page.waitForFunction(
    () => Reflect.get(globalThis, "__ready") === true,
    {
      timeout: timeoutMs,
    },
  );
  await page.evaluate((start) => {
    Reflect.get(globalThis, "__start")(start);
  }, {
    wsUrl: options.wsUrl,
    password: options.password,
    wsProtocols: options.wsProtocols,
  });

  const session = createSession(page, pageLog, timeoutMs);
  const owned = stack.move();
  return {
    ...session,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

function createSession(
  page: Page,
  pageLog: string[],
  timeoutMs: number,
): NoVncSession {
  async function waitFor(type: string): Promise<NoVncEvent> {
    try {
      return await page.evaluate(
        ([type, timeoutMs]) => Reflect.get(globalThis, "__waitFor")(type, timeoutMs),
        [type, timeoutMs] as const,
      );
    } catch (error) {
      throw new Error(
        `noVNC did not reach "${type}"; console:\n${pageLog.join("\n")}`,
        { cause: error },
      );
    }
  }

  async function pixel(
    x: number,
    y: number,
  ): Promise<[number, number, number]> {
    const rgb = await page.evaluate(
      ([x, y]) => Reflect.get(globalThis, "__pixel")(x, y),
      [x, y] as const,
    ) as [number, number, number] | null;
    if (rgb === null) {
      throw new RangeError(`Pixel (${x}, ${y}) is outside the canvas`);
    }
    return rgb;
  }

  return {
    async waitForConnected() {
      await waitFor("connect");
    },
    async waitForSecurityFailure() {
      const event = await waitFor("securityfailure");
      return String(event.reason ?? "");
    },
    async waitForDisconnect() {
      const event = await waitFor("disconnect");
      return { clean: event.clean === true };
    },
    pixel,
    async image() {
      const image = await page.evaluate(() => Reflect.get(globalThis, "__image")()) as
        | { width: number; height: number; rgb: string }
        | null;
      if (image === null) throw new RangeError("noVNC has no canvas yet");
      const binary = atob(image.rgb);
      const data = Uint8Array.from(binary, (c) => c.charCodeAt(0));
      return { width: image.width, height: image.height, data };
    },
    async waitForPixel(x, y, rgb) {
      const deadline = Date.now() + timeoutMs;
      let last: [number, number, number] | undefined;
      while (Date.now() < deadline) {
        try {
          last = await pixel(x, y);
          if (last.every((value, i) => value === rgb[i])) return;
        } catch (error) {
          if (!(error instanceof RangeError)) throw error;
        }
        await page.waitForTimeout(50);
      }
      throw new Error(
        `Pixel (${x}, ${y}) is ${JSON.stringify(last)}, expected ${JSON.stringify(rgb)}`,
      );
    },
    async disconnect() {
      await page.evaluate(() => Reflect.get(globalThis, "__disconnect")());
    },
    events() {
      return page.evaluate(() => Reflect.get(globalThis, "__events")) as Promise<NoVncEvent[]>;
    },
    consoleLines() {
      return [...pageLog];
    },
  };
}

async function serveStatic(root: string, request: Request): Promise<Response> {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("Method not allowed\n", {
      status: 405,
      headers: { allow: "GET, HEAD" },
    });
  }
  const pathname = new URL(request.url).pathname;
  let body: Uint8Array<ArrayBuffer> | string | undefined;
  let type = CONTENT_TYPES[".html"];
  if (pathname === TEST_PAGE_PATH) {
    body = TEST_PAGE_HTML;
  } else if (pathname === "/favicon.ico") {
    // Keeps a 404 for the browser's automatic request out of the page log.
    return new Response(null, { status: 204 });
  } else {
    const file = await resolveFile(root, pathname);
    if (file !== undefined) {
      body = await Deno.readFile(file);
      type = CONTENT_TYPES[extension(file)] ?? "application/octet-stream";
    }
  }
  if (body === undefined) return new Response("Not found\n", { status: 404 });
  return new Response(request.method === "HEAD" ? null : body, {
    headers: { "content-type": type, "cache-control": "no-store" },
  });
}

/** The real path of a regular file under `root`, or undefined. */
async function resolveFile(
  root: string,
  pathname: string,
): Promise<string | undefined> {
  const segments: string[] = [];
  for (const raw of pathname.split("/")) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return undefined;
    }
    if (segment === "" || segment === ".") continue;
    if (segment === ".." || /[\/\\\0]/.test(segment)) return undefined;
    segments.push(segment);
  }
  if (segments.length === 0) return undefined;
  try {
    const real = await Deno.realPath(`${root}/${segments.join("/")}`);
    if (!real.startsWith(root + "/")) return undefined;
    const info = await Deno.stat(real);
    return info.isFile ? real : undefined;
  } catch {
    return undefined;
  }
}

function extension(path: string): string {
  const dot = path.lastIndexOf(".");
  return dot > path.lastIndexOf("/") ? path.slice(dot).toLowerCase() : "";
}

function findNoVncDir(): string | undefined {
  let fromEnv: string | undefined;
  try {
    fromEnv = Deno.env.get("NOVNC_DIR");
  } catch {
    // No env permission: fall back to the Debian location.
  }
  const candidates = fromEnv ? [fromEnv, ...NOVNC_CANDIDATES] : NOVNC_CANDIDATES;
  return candidates.find((dir) => isFile(`${dir}/core/rfb.js`));
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}
