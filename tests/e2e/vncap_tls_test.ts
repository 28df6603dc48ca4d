/**
 * vncap's other ways in: the control socket on a Unix socket (mode 0660),
 * and `tls` forwardings with vncap's `keys/vncap.crt` and `keys/vncap.key`
 * from the working directory (or `--vncap-cert`/`--vncap-key`): raw VNC
 * over TLS, which snf lacks, and noVNC in Chromium over `ws` and `ws, tls`.
 */

import assert from "node:assert/strict";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { handshake } from "../_util/test_viewer.ts";
import { hasOpenssl, makeTestCertificate } from "../_util/tls.ts";
import { replyPort, startVncapDaemon, vncapRequest } from "../_util/vncap.ts";
import { ConnDuplex } from "../../src/io/duplex.ts";
import { hasChromium, NOVNC_DIR, openNoVnc } from "../_util/browser.ts";
import { hasCommand, startXvnc } from "../_util/real_peers.ts";

const PASSWORD = "tlsVncap";

Deno.test("--vncap-listen unix:PATH: mode 0660, requests answered, the socket removed at exit", async () => {
  await using vnc = startFakeVncServer();
  const dir = await Deno.makeTempDir({ prefix: "vap-vncap-unix-" });
  try {
    const path = `${dir}/vncap.sock`;
    {
      await using vncap = await startVncapDaemon({ listen: `unix:${path}` });
      const info = await Deno.stat(path);
      assert.ok(info.isSocket);
      assert.equal(info.mode! & 0o777, 0o660);
      await vncap.daemon.waitForLine(new RegExp(`vncap control connections on unix:${path}`));
      const port = replyPort(
        await vncapRequest(path, { daddr: "127.0.0.1", dport: vnc.port, password: PASSWORD }),
      );
      assert.ok(port >= vncap.poolMin && port <= vncap.poolMax);
    }
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
    // A stale socket file (nobody accepts) is replaced at start.
    Deno.listen({ transport: "unix", path }).close();
    await using again = await startVncapDaemon({ listen: `unix:${path}` });
    replyPort(await vncapRequest(path, { daddr: "127.0.0.1", dport: vnc.port, password: "x" }));
    assert.ok(again.vncapPort === 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a tls forwarding is raw VNC over TLS with keys/vncap.crt from the working directory",
  ignore: !hasOpenssl(),
  async fn() {
    await using vnc = startFakeVncServer();
    await using certificate = await makeTestCertificate();
    const dir = await Deno.makeTempDir({ prefix: "vap-vncap-keys-" });
    try {
      await Deno.mkdir(`${dir}/keys`);
      await Deno.copyFile(certificate.certFile, `${dir}/keys/vncap.crt`);
      await Deno.copyFile(certificate.keyFile, `${dir}/keys/vncap.key`);
      await using vncap = await startVncapDaemon({ cwd: dir });
      await vncap.daemon.waitForLine(/TLS from \S*keys\/vncap\.crt/);
      const port = replyPort(
        await vncapRequest(vncap.vncapPort, {
          daddr: "127.0.0.1",
          dport: vnc.port,
          password: PASSWORD,
          tls: true,
        }),
      );
      const conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port,
        caCerts: [certificate.cert],
      });
      const viewer = await handshake(new ConnDuplex(conn), { port, password: PASSWORD });
      assert.equal(viewer.ok, true);
      assert.deepEqual(viewer.offered, [2]);
      viewer.duplex.close();
      await vncap.daemon.waitForLine(/Session ended/);
      // Plain RFB on a TLS port gets nowhere.
      const plainPort = replyPort(
        await vncapRequest(vncap.vncapPort, {
          daddr: "127.0.0.1",
          dport: vnc.port,
          password: PASSWORD,
          tls: true,
        }),
      );
      const plain = await Deno.connect({ hostname: "127.0.0.1", port: plainPort });
      await plain.write(new TextEncoder().encode("RFB 003.008\n"));
      const buffer = new Uint8Array(64);
      const got = await plain.read(buffer).catch(() => null);
      assert.ok(got === null || !new TextDecoder().decode(buffer).startsWith("RFB"));
      plain.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const browserReady = hasChromium() && NOVNC_DIR !== undefined && hasCommand("Xvnc") &&
  hasOpenssl();
const COLOR: [number, number, number] = [0x33, 0x66, 0x99];

for (const tls of [false, true]) {
  Deno.test({
    name: `noVNC in Chromium through a vncap ${
      tls ? "ws, tls" : "ws"
    } forwarding to Xvnc (needs chromium, novnc, Xvnc)`,
    ignore: !browserReady,
    async fn() {
      await using xvnc = await startXvnc({ geometry: "64x48", color: "#336699" });
      await using certificate = await makeTestCertificate();
      await using vncap = await startVncapDaemon({
        args: [`--vncap-cert=${certificate.certFile}`, `--vncap-key=${certificate.keyFile}`],
      });
      const port = replyPort(
        await vncapRequest(vncap.vncapPort, {
          daddr: "127.0.0.1",
          dport: xvnc.port,
          password: PASSWORD,
          ws: true,
          tls,
        }),
      );
      await using session = await openNoVnc({
        wsUrl: `${tls ? "wss" : "ws"}://127.0.0.1:${port}/websockify`,
        password: PASSWORD,
        ignoreHttpsErrors: tls,
        timeoutMs: 20_000,
      });
      await session.waitForConnected();
      await session.waitForPixel(10, 10, COLOR);
      await session.disconnect();
      await vncap.daemon.waitForLine(/Session ended \(client closed\)/);
    },
  });
}
