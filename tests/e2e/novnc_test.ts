/**
 * End to end in a real browser: noVNC (Debian's) in headless Chromium
 * reaches a real TigerVNC Xvnc through `main.ts` over `vnc-ws` and
 * `vnc-wss`, authenticating with the one-time password.
 */

import assert from "node:assert/strict";
import { hasChromium, NOVNC_DIR, openNoVnc } from "../_util/browser.ts";
import { requestForwardingRaw, startDaemon } from "../_util/daemon_process.ts";
import { hasCommand, startXvnc } from "../_util/real_peers.ts";
import { makeTestCertificate } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "brow5er!";
const COLOR: [number, number, number] = [0x33, 0x66, 0x99];
const ready = hasChromium() && NOVNC_DIR !== undefined && hasCommand("Xvnc");

async function forward(controlPort: number, vncPort: number, type: string) {
  const reply = await requestForwardingRaw(controlPort, {
    auth_password: CONTROL_PASSWORD,
    destination_port: vncPort,
    password: VNC_PASSWORD,
    type,
  });
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  return reply.source_port;
}

for (const type of ["vnc-ws", "vnc-wss"] as const) {
  Deno.test({
    name:
      `noVNC in Chromium shows the Xvnc desktop through a ${type} forwarding (needs chromium, novnc, Xvnc)`,
    ignore: !ready,
    async fn() {
      await using xvnc = await startXvnc({ geometry: "64x48", color: "#336699" });
      await using certificate = await makeTestCertificate();
      await using daemon = await startDaemon({
        users: { admin: CONTROL_PASSWORD },
        args: [`--cert-file=${certificate.certFile}`, `--key-file=${certificate.keyFile}`],
      });
      const port = await forward(daemon.controlPort, xvnc.port, type);
      const scheme = type === "vnc-wss" ? "wss" : "ws";
      await using session = await openNoVnc({
        wsUrl: `${scheme}://127.0.0.1:${port}/websockify`,
        password: VNC_PASSWORD,
        ignoreHttpsErrors: type === "vnc-wss",
        timeoutMs: 20_000,
      });
      await session.waitForConnected();
      await session.waitForPixel(10, 10, COLOR);
      assert.deepEqual(await session.pixel(63, 47), COLOR);
      await session.disconnect();
      await daemon.waitForLine(/Session ended \(client closed\)/);
    },
  });
}

Deno.test({
  name:
    "noVNC with a wrong one-time password ends in a security failure (needs chromium, novnc, Xvnc)",
  ignore: !ready,
  async fn() {
    await using xvnc = await startXvnc({ geometry: "64x48", color: "#336699" });
    await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
    const port = await forward(daemon.controlPort, xvnc.port, "vnc-ws");
    await using session = await openNoVnc({
      wsUrl: `ws://127.0.0.1:${port}/websockify`,
      password: "not-it!!",
      timeoutMs: 20_000,
    });
    assert.match(await session.waitForSecurityFailure(), /Authentication failed/);
    await daemon.waitForLine(/Authentication failed for client/);
  },
});
