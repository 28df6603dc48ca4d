/**
 * A vncap forwarding with real peers: TigerVNC's Xvnc behind it, gtk-vnc's
 * gvnccapture in front, the request sent as Ganeti Web Manager sends it.
 * `password` is what the viewer proves and what Xvnc's VNC Authentication
 * gets; with `client.password`, the viewer proves that instead.
 */

import assert from "node:assert/strict";
import { captureVnc, hasCommand, parseHexColor, startXvnc } from "../_util/real_peers.ts";
import { replyPort, startVncapDaemon, vncapRequest } from "../_util/vncap.ts";

const ignore = !hasCommand("Xvnc") || !hasCommand("gvnccapture") || !hasCommand("script");

async function assertCapture(port: number, password: string, color: string): Promise<void> {
  const image = await captureVnc({ host: "127.0.0.1", port, password, timeoutMs: 20_000 });
  assert.equal(image.width, 64);
  assert.equal(image.height, 48);
  for (const [x, y] of [[0, 0], [63, 47], [32, 24]] as const) {
    assert.deepEqual(image.pixel(x, y), parseHexColor(color), `pixel ${x},${y}`);
  }
}

Deno.test({
  name:
    "gvnccapture through a vncap forwarding to Xvnc with VNC auth: `password` both ways (needs Xvnc, gvnccapture)",
  ignore,
  async fn() {
    const password = "vncapXv1";
    await using xvnc = await startXvnc({ geometry: "64x48", color: "#336699", password });
    await using vncap = await startVncapDaemon();
    const port = replyPort(
      await vncapRequest(vncap.vncapPort, { daddr: "127.0.0.1", dport: xvnc.port, password }),
    );
    await assertCapture(port, password, "#336699");
    await vncap.daemon.waitForLine(/Session ended/);
    assert.ok(vncap.daemon.lines.every((line) => !line.includes(password)));
  },
});

Deno.test({
  name:
    "gvnccapture through a vncap forwarding with client.password: the viewer's, `password` for Xvnc (needs Xvnc, gvnccapture)",
  ignore,
  async fn() {
    const backend = "xvncOnly";
    const viewer = "viewer42";
    await using xvnc = await startXvnc({
      geometry: "64x48",
      color: "#993366",
      password: backend,
    });
    await using vncap = await startVncapDaemon();
    const request = {
      daddr: "127.0.0.1",
      dport: xvnc.port,
      password: backend,
      client: { password: viewer, ip: "127.0.0.1" },
    };
    const port = replyPort(await vncapRequest(vncap.vncapPort, request));
    await assertCapture(port, viewer, "#993366");
    // The backend's password does not open a client.password forwarding.
    const second = replyPort(await vncapRequest(vncap.vncapPort, request));
    await assert.rejects(
      captureVnc({ host: "127.0.0.1", port: second, password: backend, timeoutMs: 20_000 }),
    );
    await vncap.daemon.waitForLine(/Authentication failed for client/);
    for (const secret of [backend, viewer]) {
      assert.ok(vncap.daemon.lines.every((line) => !line.includes(secret)));
    }
  },
});
