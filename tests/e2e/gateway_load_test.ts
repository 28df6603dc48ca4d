/**
 * End to end under load: 1,000 concurrent sessions through the one gateway
 * port (TLS), each minted by a control request and redeemed by a WebSocket
 * viewer that runs the RFB handshake and one echo, all held open at once;
 * and password mode's cost with 1,000 pending forwardings. Both print
 * their times; the bounds are loose, so only a stall can miss them.
 */

import assert from "node:assert/strict";
import { vncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import { requestForwardingRaw } from "../_util/daemon_process.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import {
  type GatewayDaemon,
  readPayload,
  startGatewayDaemon,
  viewerHandshake,
} from "../_util/gateway.ts";
import { connectRawWebSocket, type RawWebSocket } from "../_util/raw_websocket.ts";
import { hasOpenssl } from "../_util/tls.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const USERS = { admin: CONTROL_PASSWORD };
const SESSIONS = 1_000;
/** Control requests in flight at once. */
const MINT_CONCURRENCY = 8;
/** Viewers connecting at once. */
const VIEWER_CONCURRENCY = 50;
/** The whole load test must end within this, or it fails loudly. */
const LOAD_BOUND_MS = 60_000;
const ignore = !hasOpenssl();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Runs `task(i)` for i in [0, count), `concurrency` at a time; results in order. */
async function pooled<T>(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await task(i);
      }
    }),
  );
  return results;
}

/** Rejects with a clear error when `work` takes longer than `ms`. */
async function bounded<T>(what: string, ms: number, work: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function tlsOf(gw: GatewayDaemon) {
  return { caCerts: [gw.certificate!.cert], hostname: "localhost" };
}

Deno.test({
  name: "gateway: 1,000 concurrent token sessions through the one port, held open, then closed",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({ desktopName: "load" });
  await using gw = await startGatewayDaemon({
    users: USERS,
    // Tokens must outlive the minting of all 1,000.
    args: ["--connect-timeout=120"],
  });
  const viewers: RawWebSocket[] = [];
  try {
    await bounded(
      "1,000 sessions",
      LOAD_BOUND_MS,
      (async () => {
        const t0 = performance.now();
        const replies = await pooled(SESSIONS, MINT_CONCURRENCY, async () => {
          const reply = await requestForwardingRaw(gw.daemon.controlPort, {
            auth_password: CONTROL_PASSWORD,
            destination_port: fake.port,
            gateway: true,
            type: "vnc-wss",
          });
          assert.equal(reply.status, "OK", JSON.stringify(reply));
          return reply.path!;
        });
        const minted = performance.now() - t0;

        const t1 = performance.now();
        let failures = 0;
        await pooled(SESSIONS, VIEWER_CONCURRENCY, async (i) => {
          const probe = encoder.encode(`echo-${i}`);
          const { socket, response } = await connectRawWebSocket({
            port: gw.gatewayPort,
            path: `/${replies[i]}`,
            protocols: "binary",
            tls: tlsOf(gw),
          });
          if (socket === undefined) {
            failures++;
            throw new Error(`Viewer ${i}: upgrade refused with ${response.status}`);
          }
          viewers.push(socket);
          assert.equal(await viewerHandshake(socket), 0, `viewer ${i}`);
          const init = await readPayload(socket, 24 + "load".length);
          assert.equal(decoder.decode(init.subarray(24)), "load");
          await socket.sendBinary(probe);
          assert.equal(decoder.decode(await readPayload(socket, probe.length)), `echo-${i}`);
        });
        const opened = performance.now() - t1;
        assert.equal(failures, 0);
        assert.equal(viewers.length, SESSIONS, "all 1,000 open at once");
        assert.equal(fake.clientInits.length, SESSIONS, "1,000 sessions reached the VNC server");

        const t2 = performance.now();
        for (const viewer of viewers.splice(0)) viewer.close();
        const ended = /Session ended \(client closed\)/;
        while (gw.daemon.lines.filter((line) => ended.test(line)).length < SESSIONS) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        const closed = performance.now() - t2;
        // deno-lint-ignore no-console
        console.log(
          `${SESSIONS} sessions: minted in ${(minted / 1000).toFixed(1)} s, ` +
            `opened (TLS, upgrade, RFB, echo) in ${(opened / 1000).toFixed(1)} s, ` +
            `all ended in ${(closed / 1000).toFixed(1)} s`,
        );
      })(),
    );
  } finally {
    for (const viewer of viewers) viewer.close();
  }
  assert.equal(
    gw.daemon.lines.filter((line) => /Session ended \(client closed\)/.test(line)).length,
    SESSIONS,
    "the daemon logs exactly 1,000 session ends",
  );
});

Deno.test({
  name: "gateway --gateway-snf: a viewer finds the last of 1,000 pending forwardings (timed)",
  ignore,
}, async () => {
  await using fake = startFakeVncServer({ desktopName: "last" });
  await using gw = await startGatewayDaemon({
    users: USERS,
    args: ["--gateway-snf", "--connect-timeout=120"],
  });
  // Eight characters, all distinct as DES keys.
  const password = (i: number) => `p${String(i).padStart(7, "0")}`;
  await bounded(
    "1,000 pending forwardings",
    LOAD_BOUND_MS,
    (async () => {
      const t0 = performance.now();
      await pooled(SESSIONS, MINT_CONCURRENCY, async (i) => {
        const reply = await requestForwardingRaw(gw.daemon.controlPort, {
          auth_password: CONTROL_PASSWORD,
          destination_port: fake.port,
          type: "vnc-wss",
          password: password(i),
        });
        assert.equal(reply.status, "OK", JSON.stringify(reply));
      });
      const registered = performance.now() - t0;

      // Time from the viewer's answer to the SecurityResult: one DES block
      // per pending forwarding, on the gateway's event loop.
      const timeAnswer = async (answer: string): Promise<{ ms: number; ok: boolean }> => {
        const { socket } = await connectRawWebSocket({ port: gw.gatewayPort, tls: tlsOf(gw) });
        assert.ok(socket);
        try {
          await readPayload(socket, 12);
          await socket.sendBinary(encoder.encode("RFB 003.008\n"));
          await readPayload(socket, 2);
          await socket.sendBinary(Uint8Array.of(2));
          const challenge = await readPayload(socket, 16);
          const response = vncAuthResponse(answer, challenge);
          const started = performance.now();
          await socket.sendBinary(response);
          const result = new DataView((await readPayload(socket, 4)).buffer).getUint32(0);
          const ms = performance.now() - started;
          if (result === 0) {
            await socket.sendBinary(Uint8Array.of(1));
            const init = await readPayload(socket, 24 + "last".length);
            assert.equal(decoder.decode(init.subarray(24)), "last");
          }
          return { ms, ok: result === 0 };
        } finally {
          socket.close();
        }
      };
      const miss = await timeAnswer("nobody!!");
      assert.equal(miss.ok, false, "a wrong password matches none of 1,000");
      const hit = await timeAnswer(password(SESSIONS - 1));
      assert.equal(hit.ok, true, "the last registered is found");
      // deno-lint-ignore no-console
      console.log(
        `${SESSIONS} pending forwardings registered in ${(registered / 1000).toFixed(1)} s; ` +
          `answer to SecurityResult: last one ${hit.ms.toFixed(1)} ms, ` +
          `no match ${miss.ms.toFixed(1)} ms`,
      );
      // Loose: the scan is ~1 ms; only a stall takes seconds.
      assert.ok(hit.ms < 5_000 && miss.ms < 5_000, "password matching stalled");
    })(),
  );
  await gw.daemon.waitForLine(/matched a pending forwarding by its password/);
});
