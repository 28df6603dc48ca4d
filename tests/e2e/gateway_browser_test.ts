/**
 * End to end in a real browser through the gateway: `main.ts` with
 * `--gateway-listen` and `--web=/usr/share/novnc` in front of a real Xvnc;
 * Debian's noVNC (`vnc.html`, served by the daemon) in headless Chromium at
 * the control reply's `url`, or at the URL an unchanged snf panel builds in
 * password mode. Every success is proved by the desktop's colour in noVNC's
 * canvas (or in a raw viewer's framebuffer); every refusal by noVNC's
 * failure and the daemon's log line.
 *
 * Chromium trusts the test certificate by its SPKI hash
 * (`--ignore-certificate-errors-spki-list`, honoured with a
 * `--user-data-dir`), not by `--ignore-certificate-errors`: only the one
 * certificate the daemon was given is accepted, so the page and its
 * WebSocket provably come from that daemon.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { chromium } from "npm:playwright-core@1.65.1";
import type { BrowserContext, Page } from "npm:playwright-core@1.65.1";
import {
  CHROMIUM_ARGS,
  CHROMIUM_PATH,
  hasChromium,
  NOVNC_DIR,
  openNoVnc,
} from "../_util/browser.ts";
import { requestForwardingRaw, waitForLines } from "../_util/daemon_process.ts";
import {
  assertRawDesktop,
  type GatewayDaemon,
  startGatewayDaemon,
  viewerHandshake,
} from "../_util/gateway.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";
import { hasCommand, startXvnc, type XvncServer } from "../_util/real_peers.ts";
import { hasOpenssl, type TestCertificate } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const USERS = { admin: CONTROL_PASSWORD };
const VNC_PASSWORD = "br0wser!";
const WIDTH = 64;
const HEIGHT = 48;
const COLOR_HEX = "#336699";
const COLOR = [0x33, 0x66, 0x99] as const;
/** What Xvnc shows through every path here. */
const DESKTOP = { width: WIDTH, height: HEIGHT, name: "real-peers", color: COLOR } as const;
/** Bound on each browser step (launch, load, outcome, pixels). */
const STEP_TIMEOUT_MS = 15_000;

const MISSING = [
  ...(hasChromium() ? [] : ["chromium"]),
  ...(NOVNC_DIR === undefined ? ["novnc"] : []),
  ...(hasCommand("Xvnc") ? [] : ["Xvnc (tigervnc-standalone-server)"]),
  ...(hasCommand("xsetroot") ? [] : ["xsetroot (x11-xserver-utils)"]),
  ...(hasOpenssl() ? [] : ["openssl"]),
];
const ignore = MISSING.length > 0;
if (ignore) {
  // deno-lint-ignore no-console
  console.warn(`!!! SKIPPED: gateway browser tests need ${MISSING.join(", ")}`);
}

// ---------------------------------------------------------------------------------------
// Page-side code. Functions, not strings: Playwright runs string predicates
// through eval, which the gateway's CSP forbids. This file is type-checked
// without the DOM library, hence `Reflect.get(globalThis, ...)`.
// ---------------------------------------------------------------------------------------

/**
 * Runs in noVNC's `vnc.html`: what its UI shows once it shows an outcome
 * (`connected`, `credentials` for the password prompt, `error: <status>`),
 * or null while it is still connecting. States in `skip` do not count.
 */
function noVncOutcome(skip: readonly string[]): string | null {
  const document = Reflect.get(globalThis, "document");
  const credentials = document.getElementById("noVNC_credentials_dlg");
  const status = document.getElementById("noVNC_status");
  const state = document.documentElement.classList.contains("noVNC_connected")
    ? "connected"
    : credentials?.classList.contains("noVNC_open")
    ? "credentials"
    : status?.classList.contains("noVNC_open") && status.classList.contains("noVNC_status_error")
    ? `error: ${status.textContent}`
    : null;
  return state === null || skip.includes(state) ? null : state;
}

/** Runs in `vnc.html`: whether noVNC's canvas shows `rgb` at (x, y). */
function pixelIs([x, y, rgb]: readonly [number, number, readonly number[]]): boolean {
  const canvas = Reflect.get(globalThis, "document").querySelector("#noVNC_container canvas");
  if (canvas === null || canvas.width <= x || canvas.height <= y) return false;
  const data = canvas.getContext("2d").getImageData(x, y, 1, 1).data;
  return rgb.every((value, i) => data[i] === value);
}

/** Runs in the foreign page: how its WebSocket attempt ended. */
function foreignOutcome(): Promise<string> {
  return Reflect.get(globalThis, "__outcome");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/** The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's pin list wants. */
function spkiPin(pem: string): string {
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/** Headless Chromium with a fresh profile, trusting `certificate` (only it) when given. */
async function launchChromium(
  certificate?: TestCertificate,
): Promise<{ context: BrowserContext } & AsyncDisposable> {
  const profile = await Deno.makeTempDir({ prefix: "vncauthproxy-chromium-" });
  const args = [...CHROMIUM_ARGS];
  if (certificate) args.push(`--ignore-certificate-errors-spki-list=${spkiPin(certificate.cert)}`);
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args,
      timeout: STEP_TIMEOUT_MS,
    });
  } catch (error) {
    await Deno.remove(profile, { recursive: true });
    throw error;
  }
  return {
    context,
    async [Symbol.asyncDispose]() {
      await context.close();
      await Deno.remove(profile, { recursive: true });
    },
  };
}

/** A page whose console output is kept for failure messages. */
interface ConsolePage {
  readonly page: Page;
  readonly log: string[];
}

async function openPage(context: BrowserContext, url: string): Promise<ConsolePage> {
  const page = await context.newPage();
  const log: string[] = [];
  page.on("console", (message) => log.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => log.push(`pageerror: ${error}`));
  await page.goto(url, { timeout: STEP_TIMEOUT_MS });
  return { page, log };
}

/** Waits for noVNC's next outcome (ignoring `skip`) and returns it. */
async function outcome({ page, log }: ConsolePage, skip: readonly string[] = []): Promise<string> {
  try {
    const handle = await page.waitForFunction(noVncOutcome, skip, { timeout: STEP_TIMEOUT_MS });
    return String(await handle.jsonValue());
  } catch (error) {
    throw new Error(`noVNC showed no outcome; console:\n${log.join("\n")}`, { cause: error });
  }
}

/** Asserts that noVNC draws the Xvnc desktop: its colour in two corners. */
async function assertDesktop({ page, log }: ConsolePage): Promise<void> {
  for (const [x, y] of [[10, 10], [WIDTH - 1, HEIGHT - 1]] as const) {
    try {
      await page.waitForFunction(pixelIs, [x, y, COLOR] as const, { timeout: STEP_TIMEOUT_MS });
    } catch (error) {
      throw new Error(
        `noVNC did not draw the desktop at (${x}, ${y}); console:\n${log.join("\n")}`,
        {
          cause: error,
        },
      );
    }
  }
}

/** Opens `url` in a new page and asserts noVNC reaches the desktop with no prompt. */
async function assertReachesDesktop(context: BrowserContext, url: string): Promise<ConsolePage> {
  const page = await openPage(context, url);
  assert.equal(await outcome(page), "connected");
  await assertDesktop(page);
  return page;
}

/** Opens `url` in a new page and asserts noVNC fails to connect. */
async function assertFailsToConnect(context: BrowserContext, url: string): Promise<void> {
  const page = await openPage(context, url);
  assert.equal(await outcome(page), "error: Failed to connect to server");
  await page.page.close();
}

function request(gw: GatewayDaemon, xvnc: XvncServer, fields: Record<string, unknown>) {
  return requestForwardingRaw(gw.daemon.controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: xvnc.port,
    ...fields,
  });
}

/** Log lines that appeared after the first `from`. */
function linesSince(gw: GatewayDaemon, from: number): string[] {
  return gw.daemon.lines.slice(from);
}

function assertNoSecrets(lines: readonly string[], secrets: readonly string[]): void {
  for (const line of lines) {
    for (const secret of secrets) assert.ok(!line.includes(secret), `secret in log: ${line}`);
  }
}

/** A port free a moment ago on every address (`::`, dual-stack), for `*:PORT`. */
function freeWildcardPort(): number {
  using listener = Deno.listen({ hostname: "::", port: 0 });
  return listener.addr.port;
}

/** Serves one page from its own origin that tries `wsUrl` and records how that ended. */
function startForeignPage(wsUrl: string): { listening: Promise<Deno.NetAddr> } & AsyncDisposable {
  const html = `<!doctype html><meta charset="utf-8"><title>elsewhere</title><script>
window.__outcome = new Promise((resolve) => {
  const socket = new WebSocket(${JSON.stringify(wsUrl)});
  socket.onopen = () => { resolve("open"); socket.close(); };
  socket.onclose = (event) => resolve("closed " + event.code);
});
</script>`;
  const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: resolve },
    () => new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } }),
  );
  return { listening, [Symbol.asyncDispose]: () => server.shutdown() };
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

const WEB = `--web=${NOVNC_DIR}`;

Deno.test({
  name:
    "gateway over TLS: noVNC at the reply's url shows the Xvnc desktop (token alone), and the same url fails again (needs chromium, novnc, Xvnc)",
  ignore,
}, async () => {
  await using xvnc = await startXvnc({ geometry: `${WIDTH}x${HEIGHT}`, color: COLOR_HEX });
  await using gw = await startGatewayDaemon({ users: USERS, args: [WEB] });
  await using browser = await launchChromium(gw.certificate);
  const reply = await request(gw, xvnc, { gateway: true, type: "vnc-wss" });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const url = reply.url!;
  assert.ok(
    url.startsWith(`https://127.0.0.1:${gw.gatewayPort}/vnc.html?`),
    `the gateway's own page: ${url}`,
  );

  const first = await assertReachesDesktop(browser.context, url);
  await first.page.close();
  await gw.daemon.waitForLine(/Session ended \(client closed\)/);

  const before = gw.daemon.lines.length;
  await assertFailsToConnect(browser.context, url);
  await gw.daemon.waitForLine(/Refused .*: 403 \(token [0-9a-f]{8}: unknown\)/);
  assertNoSecrets(gw.daemon.lines, [reply.token!, CONTROL_PASSWORD]);
  assert.ok(linesSince(gw, before).every((line) => !/redeemed/.test(line)), "not redeemed twice");
});

Deno.test({
  name:
    "gateway over TLS: with a password in the request, noVNC asks for it, then shows the desktop (needs chromium, novnc, Xvnc)",
  ignore,
}, async () => {
  await using xvnc = await startXvnc({ geometry: `${WIDTH}x${HEIGHT}`, color: COLOR_HEX });
  await using gw = await startGatewayDaemon({ users: USERS, args: [WEB] });
  await using browser = await launchChromium(gw.certificate);
  const reply = await request(gw, xvnc, {
    gateway: true,
    type: "vnc-wss",
    password: VNC_PASSWORD,
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const tab = await openPage(browser.context, reply.url!);
  assert.equal(await outcome(tab), "credentials", "the second factor is asked for");
  await tab.page.fill("#noVNC_password_input", VNC_PASSWORD, { timeout: STEP_TIMEOUT_MS });
  await tab.page.click("#noVNC_credentials_button", { timeout: STEP_TIMEOUT_MS });
  assert.equal(await outcome(tab, ["credentials"]), "connected");
  await assertDesktop(tab);
  assertNoSecrets(gw.daemon.lines, [reply.token!, VNC_PASSWORD, CONTROL_PASSWORD]);
});

Deno.test({
  name:
    "gateway --gateway-plain: noVNC at the reply's http url shows the desktop, once (needs chromium, novnc, Xvnc)",
  ignore,
}, async () => {
  await using xvnc = await startXvnc({ geometry: `${WIDTH}x${HEIGHT}`, color: COLOR_HEX });
  await using gw = await startGatewayDaemon({ users: USERS, plain: true, args: [WEB] });
  await using browser = await launchChromium();
  const reply = await request(gw, xvnc, { gateway: true, type: "vnc-ws" });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const url = reply.url!;
  assert.ok(url.startsWith(`http://127.0.0.1:${gw.gatewayPort}/vnc.html?`), url);
  const first = await assertReachesDesktop(browser.context, url);
  await first.page.close();
  await assertFailsToConnect(browser.context, url);
  await gw.daemon.waitForLine(/Refused .*: 403 \(token [0-9a-f]{8}: unknown\)/);
});

Deno.test({
  name:
    "gateway: an expired token fails in noVNC; a page from another origin is refused and burns nothing (needs chromium, novnc, Xvnc)",
  ignore,
}, async () => {
  await using xvnc = await startXvnc({ geometry: `${WIDTH}x${HEIGHT}`, color: COLOR_HEX });
  await using gw = await startGatewayDaemon({ users: USERS, args: [WEB] });
  await using browser = await launchChromium(gw.certificate);

  const short = await request(gw, xvnc, { gateway: true, type: "vnc-wss", ttl: 1 });
  assert.equal(short.status, "OK", JSON.stringify(short));
  await gw.daemon.waitForLine(/Session ended \(no client\)/, 5_000);
  await assertFailsToConnect(browser.context, short.url!);
  await gw.daemon.waitForLine(/Refused .*: 403 \(token [0-9a-f]{8}: (unknown|expired)\)/);

  const reply = await request(gw, xvnc, { gateway: true, type: "vnc-wss" });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  await using foreign = startForeignPage(`wss://127.0.0.1:${gw.gatewayPort}/${reply.path!}`);
  const { port } = await foreign.listening;
  const page = await openPage(browser.context, `http://127.0.0.1:${port}/`);
  assert.equal(await page.page.evaluate(foreignOutcome), "closed 1006");
  const refusal = await gw.daemon.waitForLine(/origin refused/);
  assert.match(refusal, new RegExp(`403 \\(origin refused: Origin "http://127.0.0.1:${port}"`));
  await page.page.close();

  // Refused before its token was looked at: the url still opens the console.
  await assertReachesDesktop(browser.context, reply.url!);
});

Deno.test({
  name:
    "gateway: a token bound to ::1 fails in noVNC at 127.0.0.1 and is not burnt (a raw viewer from ::1 reaches the desktop); one bound to 127.0.0.1 opens there (needs chromium, novnc, Xvnc)",
  ignore,
}, async () => {
  await using xvnc = await startXvnc({ geometry: `${WIDTH}x${HEIGHT}`, color: COLOR_HEX });
  // The public URL must name the port, so the port is chosen first; another
  // process may take it in between, so a few tries.
  let started: GatewayDaemon | undefined;
  for (let attempt = 1; started === undefined; attempt++) {
    const port = freeWildcardPort();
    try {
      started = await startGatewayDaemon({
        users: USERS,
        listen: `*:${port}`,
        args: [WEB, `--gateway-public-url=https://127.0.0.1:${port}`],
      });
    } catch (error) {
      if (attempt === 3) throw error;
    }
  }
  await using gw = started;
  await using browser = await launchChromium(gw.certificate);
  const reply = await request(gw, xvnc, {
    gateway: true,
    type: "vnc-wss",
    client_address: "::1",
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  assert.ok(reply.url!.startsWith(`https://127.0.0.1:${gw.gatewayPort}/`), reply.url);
  await assertFailsToConnect(browser.context, reply.url!);
  await gw.daemon.waitForLine(/Refused .*: 403 \(token [0-9a-f]{8}: wrong-address\)/);

  const { socket, response } = await connectRawWebSocket({
    hostname: "::1",
    port: gw.gatewayPort,
    path: `/${reply.path!}`,
    tls: { caCerts: [gw.certificate!.cert], hostname: "localhost" },
    headers: { origin: `https://127.0.0.1:${gw.gatewayPort}` },
  });
  assert.ok(socket, `upgrade refused: ${response.status}`);
  try {
    assert.equal(await viewerHandshake(socket), 0);
    await assertRawDesktop(socket, DESKTOP);
  } finally {
    socket.close();
  }
  await gw.daemon.waitForLine(/Token [0-9a-f]{8} redeemed by ::1/);

  // The binding is by address, not against IPv4 on a dual-stack port: a
  // token bound to 127.0.0.1 opens from the page at 127.0.0.1.
  const v4 = await request(gw, xvnc, {
    gateway: true,
    type: "vnc-wss",
    client_address: "127.0.0.1",
  });
  assert.equal(v4.status, "OK", JSON.stringify(v4));
  await assertReachesDesktop(browser.context, v4.url!);
  await gw.daemon.waitForLine(/Token [0-9a-f]{8} redeemed by 127\.0\.0\.1/);
});

Deno.test({
  name:
    "gateway: noVNC in Chromium can offer the token as a sub-protocol beside binary (needs chromium, novnc, Xvnc)",
  ignore,
}, async () => {
  await using xvnc = await startXvnc({ geometry: `${WIDTH}x${HEIGHT}`, color: COLOR_HEX });
  // No --web: noVNC comes from the harness's own page, on another origin,
  // which the gateway then allows (no allow-list without --web).
  await using gw = await startGatewayDaemon({ users: USERS });
  const reply = await request(gw, xvnc, { gateway: true, type: "vnc-wss" });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  await using session = await openNoVnc({
    wsUrl: `wss://127.0.0.1:${gw.gatewayPort}/websockify`,
    wsProtocols: ["binary", `token.${reply.token!}`],
    password: "",
    ignoreHttpsErrors: true,
    timeoutMs: STEP_TIMEOUT_MS,
  });
  await session.waitForConnected();
  await session.waitForPixel(10, 10, COLOR);
  assert.deepEqual(await session.pixel(WIDTH - 1, HEIGHT - 1), [...COLOR]);
  await gw.daemon.waitForLine(/Token [0-9a-f]{8} redeemed by 127\.0\.0\.1 on path \/websockify/);
  assertNoSecrets(gw.daemon.lines, [reply.token!]);
});

Deno.test({
  name:
    "gateway --gateway-snf: an unchanged snf request's password takes noVNC and a raw viewer to the desktop through the one port (needs chromium, novnc, Xvnc)",
  ignore,
}, async () => {
  await using xvnc = await startXvnc({ geometry: `${WIDTH}x${HEIGHT}`, color: COLOR_HEX });
  await using gw = await startGatewayDaemon({ users: USERS, args: [WEB, "--gateway-snf"] });
  await using browser = await launchChromium(gw.certificate);
  const snf = (password: string) =>
    request(gw, xvnc, { source_port: 0, password, type: "vnc-wss" });

  const reply = await snf(VNC_PASSWORD);
  assert.deepEqual(Object.keys(reply).sort(), ["proxy_address", "source_port", "status"]);
  assert.equal(reply.status, "OK");
  assert.equal(reply.source_port, gw.gatewayPort);
  // What a panel builds from snf's reply: host, port and the one-time password.
  const host = reply.proxy_address!;
  const query = new URLSearchParams({
    host,
    port: String(reply.source_port),
    path: "websockify",
    password: VNC_PASSWORD,
    autoconnect: "true",
  });
  const page = await assertReachesDesktop(
    browser.context,
    `https://${host}:${reply.source_port}/vnc.html?${query}`,
  );
  await page.page.close();
  await waitForLines(gw.daemon, /Session ended \(client closed\)/, 1, STEP_TIMEOUT_MS);

  const second = await snf("raw-v1ew");
  assert.equal(second.status, "OK", JSON.stringify(second));
  const { socket, response } = await connectRawWebSocket({
    port: gw.gatewayPort,
    tls: { caCerts: [gw.certificate!.cert], hostname: "localhost" },
    headers: { origin: `https://127.0.0.1:${gw.gatewayPort}` },
  });
  assert.ok(socket, `upgrade refused: ${response.status}`);
  try {
    assert.equal(await viewerHandshake(socket, "raw-v1ew"), 0);
    await assertRawDesktop(socket, DESKTOP);
  } finally {
    socket.close();
  }
  await waitForLines(gw.daemon, /Session ended \(client closed\)/, 2, STEP_TIMEOUT_MS);
  await waitForLines(gw.daemon, /matched a pending forwarding by its password/, 2, STEP_TIMEOUT_MS);
  assertNoSecrets(gw.daemon.lines, [VNC_PASSWORD, "raw-v1ew", CONTROL_PASSWORD]);
});
