/**
 * The CSP of {@linkcode StaticFiles} against the page it is for: Debian's
 * noVNC `vnc.html`, served by StaticFiles in headless Chromium, opens its
 * WebSocket to the page's own origin (allowed by `connect-src 'self'`),
 * reaches a real Xvnc through a minimal bridge and draws the desktop, with
 * no CSP violation reported on the way.
 */

import assert from "node:assert/strict";
import { chromium } from "npm:playwright-core@1.65.1";
import { fileBodyChunks, StaticFiles } from "../../src/gateway/static_files.ts";
import { CHROMIUM_PATH, hasChromium, NOVNC_DIR } from "../_util/browser.ts";
import { hasCommand, startXvnc } from "../_util/real_peers.ts";

const COLOR = [0x33, 0x66, 0x99] as const;
const TIMEOUT_MS = 20_000;
const ready = hasChromium() && NOVNC_DIR !== undefined && hasCommand("Xvnc");

/** Records every CSP violation the page reports, as "directive blocked-uri". */
const RECORD_VIOLATIONS = `
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.effectiveDirective + " " + event.blockedURI);
});
`;

/**
 * Runs in the page: whether noVNC's canvas shows `rgb` at (x, y). A function,
 * not a string, since Playwright evaluates string predicates with `eval`,
 * which this CSP forbids. `Reflect.get` stands in for the DOM types.
 */
function pixelIs([x, y, rgb]: readonly [number, number, readonly number[]]): boolean {
  const canvas = Reflect.get(globalThis, "document").querySelector("#noVNC_container canvas");
  if (canvas === null || canvas.width <= x || canvas.height <= y) return false;
  const data = canvas.getContext("2d").getImageData(x, y, 1, 1).data;
  return rgb.every((value, i) => data[i] === value);
}

/** A 1×1 PNG, as noVNC's tight decoder hands JPEG and PNG rectangles to `<img>`. */
const PIXEL_PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

/** Runs in the page: whether an image loads from a data: URL and from a blob: URL. */
async function imagesLoad(png: string): Promise<[boolean, boolean]> {
  function load(src: string): Promise<boolean> {
    const image = new (Reflect.get(globalThis, "Image"))();
    return new Promise((resolve) => {
      image.onload = () => resolve(true);
      image.onerror = () => resolve(false);
      image.src = src;
    });
  }
  const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
  const blobUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  return [await load(`data:image/png;base64,${png}`), await load(blobUrl)];
}

/** Runs in the page: whether at least `count` violations were recorded. */
function hasViolations(count: number): boolean {
  return Reflect.get(globalThis, "__violations").length >= count;
}

/** Serves StaticFiles on 127.0.0.1 and bridges `/websockify` to a TCP port. */
function startGatewayStandIn(files: StaticFiles, vncPort: number) {
  const origins: (string | null)[] = [];
  const bridges = new Set<Promise<void>>();
  const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: resolve }, (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/websockify") {
      origins.push(request.headers.get("origin"));
      const { socket, response } = Deno.upgradeWebSocket(request);
      bridges.add(bridge(socket, vncPort));
      return response;
    }
    return toResponse(files, request.method, url.pathname + url.search);
  });
  return {
    origins,
    listening,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Promise.all(bridges);
    },
  };
}

async function toResponse(files: StaticFiles, method: string, target: string): Promise<Response> {
  using served = await files.serve({ method, target });
  let body: Uint8Array<ArrayBuffer> | null = null;
  if (served.body.kind === "file") {
    body = new Uint8Array(served.body.length);
    let offset = 0;
    for await (const chunk of fileBodyChunks(served.body)) {
      body.set(chunk, offset);
      offset += chunk.length;
    }
  } else if (method !== "HEAD") {
    body = new Uint8Array(served.body.bytes);
  }
  return new Response(body, { status: served.status, headers: served.headers.map((h) => [...h]) });
}

/** Relays one WebSocket to a fresh TCP connection until either side ends. */
async function bridge(socket: WebSocket, port: number): Promise<void> {
  socket.binaryType = "arraybuffer";
  await new Promise((resolve) => socket.addEventListener("open", resolve, { once: true }));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const closed = new Promise<void>((resolve) => socket.addEventListener("close", () => resolve()));
  socket.addEventListener("message", (event) => {
    conn.write(new Uint8Array(event.data as ArrayBuffer)).catch(() => socket.close());
  });
  const upstream = (async () => {
    try {
      for await (const chunk of conn.readable) socket.send(chunk);
    } catch {
      // The connection closed under the reader: the session is over.
    }
    if (socket.readyState === WebSocket.OPEN) socket.close();
  })();
  await closed;
  try {
    conn.close();
  } catch {
    // Already closed by the end of conn.readable.
  }
  await upstream;
}

Deno.test({
  name:
    "Debian's noVNC served by StaticFiles runs under its CSP and shows Xvnc (needs chromium, novnc, Xvnc)",
  ignore: !ready,
  async fn() {
    await using xvnc = await startXvnc({ geometry: "64x48", color: "#336699" });
    const files = await StaticFiles.create(NOVNC_DIR!);
    await using standIn = startGatewayStandIn(files, xvnc.port);
    const { port } = await standIn.listening;
    const profile = await Deno.makeTempDir({ prefix: "vncauthproxy-chromium-" });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
      timeout: TIMEOUT_MS,
    });
    try {
      const page = context.pages()[0] ?? await context.newPage();
      const consoleLines: string[] = [];
      page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
      page.on("pageerror", (error) => consoleLines.push(`pageerror: ${error}`));
      // Page-side code is given as text: this file is type-checked without the DOM library.
      await page.addInitScript({ content: RECORD_VIOLATIONS });
      const violations = () => page.evaluate("window.__violations");

      await page.goto(`http://127.0.0.1:${port}/?autoconnect=true&path=websockify&resize=off`, {
        timeout: TIMEOUT_MS,
      });
      try {
        await page.waitForFunction(pixelIs, [10, 10, COLOR] as const, { timeout: TIMEOUT_MS });
      } catch (error) {
        throw new Error(`noVNC did not draw the desktop; console:\n${consoleLines.join("\n")}`, {
          cause: error,
        });
      }
      assert.deepEqual(standIn.origins, [`http://127.0.0.1:${port}`]);
      assert.deepEqual(await violations(), [], consoleLines.join("\n"));

      // What the desktop above did not need: tight/PNG rectangles arrive as
      // data: images (allowed); blob: images are not used by noVNC (refused).
      assert.deepEqual(await page.evaluate(imagesLoad, PIXEL_PNG), [true, false]);
      // And the listener does see violations: an inline style attribute is one.
      await page.evaluate(`document.body.setAttribute("style", "color: red")`);
      await page.waitForFunction(hasViolations, 2, { timeout: TIMEOUT_MS });
      assert.deepEqual(await violations(), ["img-src blob", "style-src-attr inline"]);
    } finally {
      await context.close();
      await Deno.remove(profile, { recursive: true });
    }
  },
});
