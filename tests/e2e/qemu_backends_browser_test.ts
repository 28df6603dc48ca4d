/**
 * End to end in a real browser against real QEMU backends (issue 11): Debian's noVNC in
 * headless Chromium shows QEMU's screen through a `vnc-ws` forwarding to a Unix socket
 * with a VNC password, and through the gateway (a single-use token asked for with
 * `main.ts client --gateway`) to QEMU behind VeNCrypt X509Vnc. noVNC's canvas must be
 * QEMU's own screendump of its paused guest.
 *
 * @module
 */

import assert from "node:assert/strict";
import { hasChromium, NOVNC_DIR, type NoVncSession, openNoVnc } from "../_util/browser.ts";
import {
  assertFailed,
  assertNoSecrets,
  assertOk,
  clientRequest,
  USERS,
} from "../_util/backend_e2e.ts";
import { startDaemon, waitForLines } from "../_util/daemon_process.ts";
import { startGatewayDaemon } from "../_util/gateway.ts";
import {
  countDifferentPixels,
  hasCommand,
  type Image,
  makeImage,
  startQemu,
} from "../_util/real_peers.ts";
import { hasOpenssl, makeTestCertificateAuthority } from "../_util/tls.ts";

const VIEWER_PASSWORD = "br0wser!";
const QEMU_PASSWORD = "qemu-Pw8";
const WRONG_PASSWORD = "wrong-P8";
const STEP_TIMEOUT_MS = 20_000;

const MISSING = [
  ...(hasChromium() ? [] : ["chromium"]),
  ...(NOVNC_DIR === undefined ? ["novnc"] : []),
  ...(hasCommand("qemu-system-x86_64") ? [] : ["qemu-system-x86_64 (qemu-system-x86)"]),
  ...(hasOpenssl() ? [] : ["openssl"]),
];
const ignore = MISSING.length > 0;
if (ignore) {
  // deno-lint-ignore no-console
  console.warn(`!!! SKIPPED: QEMU browser tests need ${MISSING.join(", ")}`);
}

/**
 * Polls noVNC's canvas until it is `screen` (noVNC draws updates as they come), within
 * `tolerance` per channel; fails with the last difference count.
 */
async function waitForScreen(session: NoVncSession, screen: Image, tolerance = 0): Promise<void> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let last = "no canvas";
  while (Date.now() < deadline) {
    try {
      const canvas = await session.image();
      if (canvas.width === screen.width && canvas.height === screen.height) {
        const image = makeImage(canvas.width, canvas.height, canvas.data);
        const different = countDifferentPixels(image, screen, tolerance);
        if (different === 0) return;
        last = `${different} pixels differ`;
      } else {
        last = `canvas ${canvas.width}x${canvas.height}, screen ${screen.width}x${screen.height}`;
      }
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.fail(`noVNC's canvas is not QEMU's screendump: ${last}`);
}

Deno.test({
  name: "noVNC in Chromium shows QEMU's screen through vnc-ws to -vnc unix:PATH,password=on " +
    "(needs chromium, novnc, qemu)",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "vap-unix-browser-" });
    try {
      const unixPath = `${dir}/vm.sock`;
      await using qemu = await startQemu({
        timeoutMs: STEP_TIMEOUT_MS,
        unixPath,
        password: QEMU_PASSWORD,
      });
      const screen = await qemu.waitForStableScreen({ timeoutMs: 30_000 });
      await using daemon = await startDaemon({
        users: USERS,
        args: [`--unix-backend-dir=${dir}`],
      });
      const port = assertOk(
        await clientRequest(daemon.controlPort, [
          ...["-d", `unix:${unixPath}`, "-p", "0", "-P", VIEWER_PASSWORD],
          ...["--dest-password", QEMU_PASSWORD, "--type", "vnc-ws"],
        ]),
      );
      await using session = await openNoVnc({
        wsUrl: `ws://127.0.0.1:${port}/websockify`,
        password: VIEWER_PASSWORD,
        timeoutMs: STEP_TIMEOUT_MS,
      });
      await session.waitForConnected();
      await waitForScreen(session, screen);
      await session.disconnect();
      await daemon.waitForLine(/Session ended/);
      assertNoSecrets(daemon, [QEMU_PASSWORD, VIEWER_PASSWORD]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "noVNC in Chromium shows QEMU's screen through the gateway's token to " +
    "tls-creds-x509 with password=on (X509Vnc) (needs chromium, novnc, qemu, openssl)",
  ignore,
  async fn() {
    await using ca = await makeTestCertificateAuthority();
    const server = await ca.issue({ purpose: "server" });
    await using qemu = await startQemu({
      timeoutMs: STEP_TIMEOUT_MS,
      tls: { kind: "x509", caCertFile: ca.certFile, ...server },
      password: QEMU_PASSWORD,
    });
    const screen = await qemu.waitForStableScreen({ timeoutMs: 30_000 });
    await using gw = await startGatewayDaemon({
      users: USERS,
      plain: true,
      args: [`--backend-ca=${ca.certFile}`],
    });
    const viaGateway = [
      "-d",
      "127.0.0.1",
      "-p",
      String(qemu.port),
      "--gateway",
      "--type",
      "vnc-ws",
    ];
    // A wrong backend password: FAILED, and no token was ever minted.
    assertFailed(
      await clientRequest(gw.daemon.controlPort, [
        ...viaGateway,
        ...["--dest-tls", "--dest-password", WRONG_PASSWORD],
      ]),
      "VNC server refused: Authentication failed",
    );
    const { reply, code } = await clientRequest(gw.daemon.controlPort, [
      ...viaGateway,
      ...["--dest-tls", "--dest-password", QEMU_PASSWORD],
    ]);
    // Log lines come in order: once this token's line is read, one for the refusal would be too.
    const minted = /Token [0-9a-f]{8} minted/;
    await gw.daemon.waitForLine(minted);
    assert.equal(
      gw.daemon.lines.filter((line) => minted.test(line)).length,
      1,
      "a refusal's token",
    );
    assert.equal(code, 0, JSON.stringify(reply));
    assert.equal(reply.status, "OK", JSON.stringify(reply));
    assert.match(reply.path ?? "", /^websockify\?token=/);
    await using session = await openNoVnc({
      wsUrl: `ws://127.0.0.1:${gw.gatewayPort}/${reply.path}`,
      password: "",
      timeoutMs: STEP_TIMEOUT_MS,
    });
    await session.waitForConnected();
    await waitForScreen(session, screen);
    await session.disconnect();
    await waitForLines(gw.daemon, /Session ended/, 1);
    assertNoSecrets(gw.daemon, [QEMU_PASSWORD, WRONG_PASSWORD, reply.token!]);
  },
});
