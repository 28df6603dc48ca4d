/**
 * The vncap control socket end to end, against the daemon as run by a user:
 * peers.md §2 request and reply shapes byte for byte, framing across
 * segments, oversize, missing keys and bad values (each `FAILED\r\n` and a
 * log line with the reason), the viewer side of a forwarding (only VNC
 * Authentication: CVE-2022-36436), `client.password`, `client.ip`.
 */

import assert from "node:assert/strict";
import { startFakeVncServer } from "../../_util/fake_vnc_server.ts";
import { connectViewer } from "../../_util/test_viewer.ts";
import { replyPort, startVncapDaemon, vncapRaw, vncapRequest } from "../../_util/vncap.ts";
import { readExact } from "../../../src/io/byte_reader.ts";
import { ConnDuplex } from "../../../src/io/duplex.ts";
import { encodeVersion } from "../../../src/rfb/rfb_messages.ts";
import { runMain, waitForLines } from "../../_util/daemon_process.ts";
import { metricsPort, scrape } from "../../_util/metrics.ts";

const PASSWORD = "vncapPw1";

Deno.test("vncap requests get `<port>\\r\\n` or `FAILED\\r\\n` exactly, with a logged reason", async (t) => {
  await using vnc = startFakeVncServer();
  await using vncap = await startVncapDaemon();
  const { daemon, vncapPort } = vncap;
  const ok = { daddr: "127.0.0.1", dport: vnc.port, password: PASSWORD };

  await t.step(
    "a GWM request: the reply is a vncap pool port, and a viewer gets through",
    async () => {
      const reply = await vncapRequest(vncapPort, { ...ok, command: "ignored" });
      const port = replyPort(reply);
      assert.ok(port >= vncap.poolMin && port <= vncap.poolMax, reply);
      const viewer = await connectViewer({ port, password: PASSWORD });
      assert.deepEqual(viewer.offered, [2]);
      assert.equal(viewer.ok, true);
      viewer.duplex.close();
      await daemon.waitForLine(/Session ended/);
    },
  );

  await t.step("a request split across segments, \\r and \\n apart", async () => {
    const line = JSON.stringify(ok);
    const reply = await vncapRaw(vncapPort, [line.slice(0, 5), line.slice(5) + "\r", "\n"]);
    replyPort(reply);
  });

  await t.step("sport is honoured while free", async () => {
    const wished = vncap.poolMax;
    assert.equal(replyPort(await vncapRequest(vncapPort, { ...ok, sport: wished })), wished);
    // Taken now: vncap then took any other pool port.
    const other = replyPort(await vncapRequest(vncapPort, { ...ok, sport: wished }));
    assert.notEqual(other, wished);
  });

  // Each reason once in this daemon's log: waiting for it is waiting for this request's line.
  const failures: [string, (string | Uint8Array)[], RegExp][] = [
    [
      "an overlong line",
      ["{" + " ".repeat(17_000)],
      /FAILED forwarding: malformed request: line too long$/,
    ],
    [
      "no line end before EOF",
      [JSON.stringify(ok)],
      /FAILED forwarding: malformed request: no \\r\\n line end$/,
    ],
    ["bad JSON", ["{nope\r\n"], /FAILED forwarding: malformed request: invalid JSON$/],
    [
      "daddr missing",
      [JSON.stringify({ dport: 1, password: "p" }) + "\r\n"],
      /FAILED forwarding: malformed request: daddr missing$/,
    ],
    [
      "dport missing",
      [JSON.stringify({ daddr: "h", password: "p" }) + "\r\n"],
      /FAILED forwarding: malformed request: dport missing$/,
    ],
    [
      "password missing",
      [JSON.stringify({ daddr: "h", dport: 1 }) + "\r\n"],
      /FAILED forwarding: malformed request: password missing$/,
    ],
    [
      "a bad dport",
      [JSON.stringify({ ...ok, dport: "x" }) + "\r\n"],
      /FAILED forwarding: malformed request: dport$/,
    ],
    [
      "a bad timeout",
      [JSON.stringify({ ...ok, timeout: "x" }) + "\r\n"],
      /FAILED forwarding: malformed request: timeout$/,
    ],
    [
      "a bad client.ip",
      [JSON.stringify({ ...ok, client: { ip: "x" } }) + "\r\n"],
      /FAILED forwarding: malformed request: client\.ip$/,
    ],
    [
      "tls with no certificate",
      [JSON.stringify({ ...ok, tls: true }) + "\r\n"],
      /FAILED forwarding: TLS is not configured$/,
    ],
    [
      "a VNC server that is down",
      [JSON.stringify({ ...ok, dport: 1 }) + "\r\n"],
      /FAILED forwarding: cannot connect to VNC server/,
    ],
  ];
  for (const [what, pieces, reason] of failures) {
    await t.step(`${what}: FAILED\\r\\n and a log line with the reason`, async () => {
      const before = daemon.lines.length;
      const writer = what === "no line end before EOF"
        ? halfClose(vncapPort, pieces[0] as string)
        : vncapRaw(vncapPort, pieces);
      assert.equal(await writer, "FAILED\r\n");
      await daemon.waitForLine(reason);
      assert.equal(daemon.lines.filter((line) => reason.test(line)).length, 1);
      assert.ok(daemon.lines.length > before);
    });
  }

  await t.step("after the failures, nothing leaked: the pool still hands out ports", async () => {
    replyPort(await vncapRequest(vncapPort, ok));
    const free = await daemon.waitForLine(/Got port \d+ from pool, \d+ remaining/);
    assert.ok(free);
  });

  assert.ok(daemon.lines.every((line) => !line.includes(PASSWORD)), "a password was logged");
});

/** Sends `text` and shuts the write side: EOF before any line end. */
async function halfClose(port: number, text: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(text));
    await conn.closeWrite();
    const buffer = new Uint8Array(64);
    let reply = "";
    for (let n; (n = await conn.read(buffer)) !== null;) {
      reply += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return reply;
  } finally {
    conn.close();
  }
}

Deno.test("CVE-2022-36436: no vncap forwarding offers or accepts security None", async (t) => {
  await using vnc = startFakeVncServer();
  await using vncap = await startVncapDaemon();
  const request = { daddr: "127.0.0.1", dport: vnc.port, password: PASSWORD };
  for (const [i, version] of ["RFB 003.007\n", "RFB 003.008\n"].entries()) {
    await t.step(`a viewer choosing None on ${version.trim()} is refused`, async () => {
      const port = replyPort(await vncapRequest(vncap.vncapPort, request));
      let offered: number[] = [];
      let ok = false;
      try {
        const viewer = await connectViewer({ port, password: "", version, chooseType: 1 });
        offered = viewer.offered;
        ok = viewer.ok;
        viewer.duplex.close();
      } catch {
        // Closed without a SecurityResult: refused too.
      }
      if (offered.length > 0) assert.deepEqual(offered, [2], "only VNC Authentication offered");
      assert.equal(ok, false);
      await waitForLines(vncap.daemon, /Security type 1 is not offered/, i + 1);
    });
  }
  await t.step("the VNC server never got a ClientInit from a viewer that chose None", () => {
    // The forwarding's console is never relayed to a viewer that picked None.
    assert.deepEqual(vnc.clientInits, []);
  });
  await t.step("a 3.3 viewer is told VNC Authentication, never None", async () => {
    const port = replyPort(await vncapRequest(vncap.vncapPort, request));
    const conn = new ConnDuplex(await Deno.connect({ hostname: "127.0.0.1", port }));
    try {
      await readExact(conn, 12);
      await conn.write(encodeVersion("3.3"));
      const type = await readExact(conn, 4);
      assert.deepEqual([...type], [0, 0, 0, 2]);
    } finally {
      conn.close();
    }
  });
});

Deno.test("client.password is the viewer's, and client.ip binds the viewer's address", async (t) => {
  await using vnc = startFakeVncServer();
  await using vncap = await startVncapDaemon();
  const { vncapPort, daemon } = vncap;
  const base = { daddr: "127.0.0.1", dport: vnc.port, password: PASSWORD };

  await t.step("with client.password, `password` no longer lets the viewer in", async () => {
    const port = replyPort(
      await vncapRequest(vncapPort, { ...base, client: { password: "viewerPw" } }),
    );
    const wrong = await connectViewer({ port, password: PASSWORD });
    assert.equal(wrong.ok, false);
    wrong.duplex.close();
  });
  await t.step("with client.password, the viewer gets in with it", async () => {
    const port = replyPort(
      await vncapRequest(vncapPort, { ...base, client: { password: "viewerPw" } }),
    );
    const right = await connectViewer({ port, password: "viewerPw" });
    assert.equal(right.ok, true);
    right.duplex.close();
  });
  await t.step("client.ip refuses another address, and admits its own", async () => {
    const refusedPort = replyPort(
      await vncapRequest(vncapPort, { ...base, client: { ip: "192.0.2.9" } }),
    );
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: refusedPort });
    const buffer = new Uint8Array(16);
    assert.equal(await conn.read(buffer), null, "closed before any byte");
    conn.close();
    await daemon.waitForLine(/Refused a client from 127\.0\.0\.1:\d+/);
    const port = replyPort(
      await vncapRequest(vncapPort, { ...base, client: { ip: "127.0.0.1" } }),
    );
    const viewer = await connectViewer({ port, password: PASSWORD });
    assert.equal(viewer.ok, true);
    viewer.duplex.close();
  });
  await t.step("timeout is the forwarding's wait for its viewer", async () => {
    replyPort(await vncapRequest(vncapPort, { ...base, timeout: 0.5 }));
    await daemon.waitForLine(/Timed out, no connection after 0\.5 sec/);
  });
  assert.ok(daemon.lines.every((line) => !line.includes("viewerPw")));
});

Deno.test("--vncap-listen off loopback needs --vncap-allow; a Unix socket takes none", async () => {
  const bare = await runMain([
    "--vncap-listen=0.0.0.0:8888",
    "--auth-file=/nonexistent",
    "--listen-port=0",
  ], { timeoutMs: 10_000 });
  assert.notEqual(bare.code, 0);
  assert.match(bare.stderr, /--vncap-listen on a non-loopback address needs --vncap-allow CIDR/);
  const unix = await runMain(["--vncap-listen=unix:/tmp/x.sock", "--vncap-allow=10.0.0.0/8"]);
  assert.match(unix.stderr, /--vncap-allow is for a TCP --vncap-listen/);
});

Deno.test("--vncap-window: two viewers on one port, each authenticated on its own VNC server connection", async () => {
  await using vnc = startFakeVncServer();
  await using vncap = await startVncapDaemon({ args: ["--vncap-window"] });
  const { daemon, vncapPort } = vncap;
  const port = replyPort(
    await vncapRequest(vncapPort, {
      daddr: "127.0.0.1",
      dport: vnc.port,
      password: PASSWORD,
      timeout: 3,
    }),
  );
  const first = await connectViewer({ port, password: PASSWORD });
  assert.equal(first.ok, true);
  await daemon.waitForLine(/Window on port \d+: viewer 2 may come/);
  const wrong = await connectViewer({ port, password: "notTheOne" });
  assert.equal(wrong.ok, false, "every viewer proves the password");
  wrong.duplex.close();
  await daemon.waitForLine(/Window on port \d+: viewer 3 may come/);
  const second = await connectViewer({ port, password: PASSWORD });
  assert.equal(second.ok, true);
  // Each viewer got its own VNC server connection (one more waits for the next).
  assert.ok(vnc.accepted >= 3, `${vnc.accepted} VNC server connections`);
  first.duplex.close();
  second.duplex.close();
  await daemon.waitForLine(/Window on port \d+ closed after 3 viewer\(s\)/, 10_000);
  // The port is back in the vncap pool once the window is over.
  replyPort(
    await vncapRequest(vncapPort, {
      daddr: "127.0.0.1",
      dport: vnc.port,
      password: PASSWORD,
      sport: port,
      timeout: 0.2,
    }),
  );
  // Asked for by sport, and got it: the window's port was free again.
  await daemon.waitForLine(new RegExp(`\\[V2\\] New forwarding: 127\\.0\\.0\\.1:${port} `));
});

Deno.test("vncap forwardings are in the metrics and audit lines like snf's, labelled vncap", async () => {
  await using vnc = startFakeVncServer();
  await using vncap = await startVncapDaemon({ args: ["--metrics-listen=127.0.0.1:0"] });
  const { daemon, vncapPort } = vncap;
  const metrics = await metricsPort(daemon);
  const port = replyPort(
    await vncapRequest(vncapPort, { daddr: "127.0.0.1", dport: vnc.port, password: PASSWORD }),
  );
  assert.equal(await vncapRequest(vncapPort, { daddr: "127.0.0.1" }), "FAILED\r\n");
  const viewer = await connectViewer({ port, password: PASSWORD });
  viewer.duplex.close();
  await daemon.waitForLine(
    /AUDIT session_end user=- protocol=vncap kind=vnc rendezvous=port backend=127\.0\.0\.1:\d+ viewer=127\.0\.0\.1:\d+/,
  );
  const sample = await scrape(metrics);
  assert.equal(sample.value("vncauthproxy_forwardings_requested_total"), 2);
  assert.equal(
    sample.value("vncauthproxy_forwardings_set_up_total", { kind: "vnc", rendezvous: "port" }),
    1,
  );
  assert.equal(
    sample.value("vncauthproxy_forwardings_failed_total", { reason: "malformed_request" }),
    1,
  );
});

const outside = Deno.networkInterfaces().find((i) =>
  i.family === "IPv4" && !i.address.startsWith("127.")
)?.address;

Deno.test({
  name:
    "--vncap-allow: a peer outside loopback and the ranges gets no answer (needs a non-loopback IPv4)",
  ignore: outside === undefined,
  async fn() {
    await using vnc = startFakeVncServer();
    const request = JSON.stringify({ daddr: "127.0.0.1", dport: vnc.port, password: PASSWORD });
    const ask = async (port: number) => {
      const conn = await Deno.connect({ hostname: outside!, port });
      try {
        await conn.write(new TextEncoder().encode(request + "\r\n"));
        const buffer = new Uint8Array(64);
        const n = await conn.read(buffer).catch(() => null);
        return n === null ? "" : new TextDecoder().decode(buffer.subarray(0, n));
      } finally {
        conn.close();
      }
    };
    {
      await using refused = await startVncapDaemon({
        listen: "0.0.0.0:0",
        args: ["--vncap-allow=198.51.100.0/24"],
      });
      assert.equal(await ask(refused.vncapPort), "");
      await refused.daemon.waitForLine(
        new RegExp(`Refused a vncap control connection from ${outside}:\\d+: not in --vncap-allow`),
      );
      // Loopback may always ask.
      replyPort(await vncapRequest(refused.vncapPort, JSON.parse(request)));
    }
    await using allowed = await startVncapDaemon({
      listen: "0.0.0.0:0",
      args: [`--vncap-allow=${outside}`],
    });
    replyPort(await ask(allowed.vncapPort));
  },
});
