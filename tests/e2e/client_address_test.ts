/**
 * End to end, `client_address` on pool ports (`vnc` and `vnc-ws`): a viewer
 * from another address is closed before any RFB byte, logged and counted,
 * without burning the forwarding; the bound viewer still gets in after it.
 */

import assert from "node:assert/strict";
import { requestForwardingRaw, startDaemon } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { viewerHandshake } from "../_util/gateway.ts";
import { metricsPort, scrape } from "../_util/metrics.ts";
import { connectRawWebSocket } from "../_util/raw_websocket.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "b1nd-Control!";
const VNC_PASSWORD = "once-bnd";

function hasIpv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

const ipv6 = hasIpv6Loopback();

/** Connects from ::1 and expects the connection closed without a byte. */
async function refusedFromIpv6(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "::1", port });
  try {
    const got = await conn.read(new Uint8Array(16)).catch(() => null);
    assert.equal(got, null, "closed before any RFB byte");
  } finally {
    conn.close();
  }
}

Deno.test({
  name: ipv6
    ? "client_address: a viewer from ::1 is refused where 127.0.0.1 was bound, the bound viewer gets in (vnc, vnc-ws)"
    : "IGNORED (no ::1 on this machine): client_address binding on pool ports",
  ignore: !ipv6,
  async fn(t) {
    await using fake = startFakeVncServer({});
    await using daemon = await startDaemon({
      users: { admin: CONTROL_PASSWORD },
      args: ["--proxy-listen-address=*", "--metrics-listen=127.0.0.1:0"],
    });
    const metrics = await metricsPort(daemon);

    await t.step("vnc", async () => {
      const reply = await requestForwardingRaw(daemon.controlPort, {
        auth_password: CONTROL_PASSWORD,
        destination_port: fake.port,
        password: VNC_PASSWORD,
        client_address: "127.0.0.1",
      });
      assert.equal(reply.status, "OK", JSON.stringify(reply));
      await refusedFromIpv6(reply.source_port);
      await daemon.waitForLine(
        /Refused a client from \[::1\]:\d+: not the bound client address 127\.0\.0\.1\/32/,
      );
      const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
      try {
        assert.ok(viewer.ok, "the bound viewer still gets in");
        assert.equal((await readServerInit(viewer.duplex)).name, "fake");
      } finally {
        viewer.duplex.close();
      }
      await daemon.waitForLine(/AUDIT session_end .*viewer=127\.0\.0\.1:\d+ .*cause=viewer_closed/);
    });

    await t.step("vnc-ws, bound to a range", async () => {
      const reply = await requestForwardingRaw(daemon.controlPort, {
        auth_password: CONTROL_PASSWORD,
        destination_port: fake.port,
        password: VNC_PASSWORD,
        type: "vnc-ws",
        client_address: "127.0.0.0/8",
      });
      assert.equal(reply.status, "OK", JSON.stringify(reply));
      await refusedFromIpv6(reply.source_port);
      const { socket } = await connectRawWebSocket({ port: reply.source_port });
      assert.ok(socket, "the bound viewer gets its upgrade");
      try {
        assert.equal(await viewerHandshake(socket, VNC_PASSWORD), 0);
      } finally {
        socket.close();
      }
      await daemon.waitForLine(/\[C2\] AUDIT session_end .*kind=vnc-ws .*cause=viewer_closed/);
    });

    const counted = await scrape(metrics);
    assert.equal(
      counted.value("vncauthproxy_viewer_connections_refused_total", { reason: "client_address" }),
      2,
    );

    await t.step("malformed addresses are refused", async () => {
      for (const bad of ["not-an-ip", "10.0.0.0/33", 7]) {
        const reply = await requestForwardingRaw(daemon.controlPort, {
          auth_password: CONTROL_PASSWORD,
          destination_port: fake.port,
          password: VNC_PASSWORD,
          client_address: bad,
        });
        assert.deepEqual([reply.status, reply.reason], [
          "FAILED",
          "malformed request: client_address",
        ]);
      }
    });
  },
});
