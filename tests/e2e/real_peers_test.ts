/**
 * End to end with real peers from Debian: TigerVNC's Xvnc and QEMU as the
 * VNC servers, gtk-vnc's gvnccapture as the viewer, `main.ts` as the daemon
 * and `main.ts client` requesting the forwarding, as an operator would.
 */

import assert from "node:assert/strict";
import { runMain, startDaemon } from "../_util/daemon_process.ts";
import {
  captureVnc,
  countDifferentPixels,
  hasCommand,
  parseHexColor,
  startQemu,
  startXvnc,
} from "../_util/real_peers.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "r3alPeer";

/** Runs `main.ts client` and returns the forwarded port. */
async function requestWithClient(controlPort: number, vncPort: number): Promise<number> {
  const output = await runMain([
    ...["client", "--server", "127.0.0.1", "--server-port", String(controlPort)],
    ...["-d", "127.0.0.1", "-p", String(vncPort), "-P", VNC_PASSWORD],
    ...["--auth-user", "admin", "--auth-password", CONTROL_PASSWORD, "--type", "vnc"],
  ], { permissions: ["--allow-net", "--allow-read"] });
  const text = output.stdout;
  assert.equal(output.code, 0, text + output.stderr);
  const match = /^Forwarding 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:\d+: OK$/m.exec(text);
  assert.ok(match, text);
  return Number(match[1]);
}

Deno.test({
  name:
    "gvnccapture captures the Xvnc desktop through the proxy with the one-time password (needs Xvnc, gvnccapture)",
  ignore: !hasCommand("Xvnc") || !hasCommand("gvnccapture") || !hasCommand("script"),
  async fn() {
    await using xvnc = await startXvnc({ geometry: "64x48", color: "#336699" });
    await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
    const port = await requestWithClient(daemon.controlPort, xvnc.port);
    const image = await captureVnc({
      host: "127.0.0.1",
      port,
      password: VNC_PASSWORD,
      timeoutMs: 20_000,
    });
    assert.equal(image.width, 64);
    assert.equal(image.height, 48);
    const color = parseHexColor("#336699");
    for (const [x, y] of [[0, 0], [10, 10], [63, 47], [32, 24]] as const) {
      assert.deepEqual(image.pixel(x, y), color, `pixel ${x},${y}`);
    }
    await daemon.waitForLine(/Session ended/);
    assert.ok(daemon.lines.every((line) => !line.includes(VNC_PASSWORD)));
  },
});

Deno.test({
  name:
    "gvnccapture with a wrong password is refused and the forwarding is burnt (needs Xvnc, gvnccapture)",
  ignore: !hasCommand("Xvnc") || !hasCommand("gvnccapture") || !hasCommand("script"),
  async fn() {
    await using xvnc = await startXvnc({ geometry: "64x48", color: "#336699" });
    await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
    const port = await requestWithClient(daemon.controlPort, xvnc.port);
    await assert.rejects(
      captureVnc({ host: "127.0.0.1", port, password: "wrong-pw", timeoutMs: 20_000 }),
    );
    await daemon.waitForLine(/Authentication failed for client 127\.0\.0\.1/);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));
  },
});

Deno.test({
  name:
    "gvnccapture through the proxy sees exactly QEMU's own screen (needs qemu-system-x86_64, gvnccapture)",
  ignore: !hasCommand("qemu-system-x86_64") || !hasCommand("gvnccapture") || !hasCommand("script"),
  async fn() {
    await using qemu = await startQemu({ timeoutMs: 20_000 });
    const screen = await qemu.waitForStableScreen({ timeoutMs: 30_000 });
    await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD } });
    const port = await requestWithClient(daemon.controlPort, qemu.port);
    const image = await captureVnc({
      host: "127.0.0.1",
      port,
      password: VNC_PASSWORD,
      timeoutMs: 20_000,
    });
    assert.equal(image.width, screen.width);
    assert.equal(image.height, screen.height);
    assert.equal(countDifferentPixels(image, screen), 0);
    await daemon.waitForLine(/Session ended/);
  },
});
