import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import { createLogger } from "../../src/log.ts";
import type { ArrivedViewer, Rendezvous } from "../../src/session/rendezvous.ts";
import { Session } from "../../src/session/session.ts";
import type { SessionSpec, ViewerCredential } from "../../src/session/session_spec.ts";
import { type DuplexPair, tcpPair } from "../_util/loopback.ts";
import { handshake } from "../_util/test_viewer.ts";

const LIMITS: SessionSpec["limits"] = {
  waitMs: 5_000,
  viewerHandshakeMs: 5_000,
  serverWriteMs: 5_000,
  idleTimeoutMs: 0,
  maxSessionTimeMs: 0,
  allowExclusive: false,
};

/** A rendezvous that hands over one prepared viewer connection. */
class HandOver implements Rendezvous {
  readonly description = "test rendezvous";
  closed = 0;
  constructor(readonly viewer: ArrivedViewer | undefined) {}
  waitForViewer(signal: AbortSignal): Promise<ArrivedViewer> {
    if (this.viewer) return Promise.resolve(this.viewer);
    return new Promise((_, reject) =>
      signal.addEventListener("abort", () => reject(signal.reason))
    );
  }
  close(): Promise<void> {
    this.closed++;
    return Promise.resolve();
  }
}

function harness(credential: ViewerCredential, options: { authenticated?: boolean } = {}) {
  const lines: string[] = [];
  const logger = createLogger({ level: "debug", sinks: [{ write: (l) => lines.push(l) }] });
  return {
    lines,
    async start(): Promise<{
      server: DuplexPair;
      viewer: DuplexPair;
      rendezvous: HandOver;
      running: Promise<void>;
    }> {
      const server = await tcpPair();
      const viewer = await tcpPair();
      const rendezvous = new HandOver({
        duplex: viewer.server,
        authenticated: options.authenticated ?? false,
      });
      const session = new Session(
        { backend: server.client, credential, kind: "vnc", limits: LIMITS },
        rendezvous,
        {
          logger,
          stopping: new AbortController().signal,
          closing: new AbortController().signal,
        },
      );
      return { server, viewer, rendezvous, running: session.run() };
    },
  };
}

/** The VNC server's end reads the forced-shared ClientInit, then echoes one message. */
async function echoOnce(server: Duplex, viewer: Duplex): Promise<void> {
  assert.deepEqual([...await readExact(server, 1)], [1], "ClientInit forced shared");
  await viewer.write(new TextEncoder().encode("ping"));
  assert.equal(new TextDecoder().decode(await readExact(server, 4)), "ping");
  await server.write(new TextEncoder().encode("pong"));
  assert.equal(new TextDecoder().decode(await readExact(viewer, 4)), "pong");
}

Deno.test("Session.run() makes the viewer prove the one-time password, then relays", async () => {
  const h = harness({ kind: "vnc-password", password: "0neTime8" });
  const { server, viewer, rendezvous, running } = await h.start();
  try {
    const result = await handshake(viewer.client, { port: 0, password: "0neTime8" });
    assert.equal(result.ok, true);
    assert.deepEqual(result.offered, [2], "only VNC Authentication is offered");
    await echoOnce(server.server, viewer.client);
    viewer.client.close();
    await running;
    assert.equal(rendezvous.closed, 1, "the rendezvous is closed once");
    assert.ok(h.lines.some((l) => l.includes("Session ended (client closed)")), h.lines.join(""));
    assert.ok(h.lines.every((l) => !l.includes("0neTime8")), "no password in the log");
  } finally {
    server[Symbol.dispose]();
    viewer[Symbol.dispose]();
  }
});

Deno.test("Session.run() burns the session on a wrong password and never relays", async () => {
  const h = harness({ kind: "vnc-password", password: "0neTime8" });
  const { server, viewer, running } = await h.start();
  try {
    const result = await handshake(viewer.client, { port: 0, password: "wrong!!!" });
    assert.equal(result.ok, false);
    assert.equal(result.reason, "Authentication failed");
    await running;
    assert.ok(h.lines.some((l) => l.includes("Authentication failed for client")));
    assert.equal(await server.server.read(new Uint8Array(1)), null, "the VNC server is let go");
  } finally {
    server[Symbol.dispose]();
    viewer[Symbol.dispose]();
  }
});

Deno.test("Session.run() with credential none offers security None only, then relays", async () => {
  for (const version of ["RFB 003.003\n", "RFB 003.007\n", "RFB 003.008\n"]) {
    const h = harness({ kind: "none" });
    const { server, viewer, running } = await h.start();
    try {
      const v = viewer.client;
      assert.equal(new TextDecoder().decode(await readExact(v, 12)), "RFB 003.008\n");
      // One byte at a time: the handshake is stream-correct.
      for (const byte of new TextEncoder().encode(version)) await v.write(Uint8Array.of(byte));
      if (version === "RFB 003.003\n") {
        assert.deepEqual([...await readExact(v, 4)], [0, 0, 0, 1], "3.3: type None as a u32");
      } else {
        assert.deepEqual([...await readExact(v, 2)], [1, 1], "one type offered: None");
        await v.write(Uint8Array.of(1));
        // RFC 6143 §7.1.3: only 3.8 sends a SecurityResult for None.
        if (version === "RFB 003.008\n") assert.deepEqual([...await readExact(v, 4)], [0, 0, 0, 0]);
      }
      await v.write(Uint8Array.of(0)); // ClientInit, exclusive: forced shared
      await echoOnce(server.server, v);
      v.close();
      await running;
    } finally {
      server[Symbol.dispose]();
      viewer[Symbol.dispose]();
    }
  }
});

Deno.test("Session.run() with credential none refuses a viewer choosing VNC Authentication", async () => {
  const h = harness({ kind: "none" });
  const { server, viewer, running } = await h.start();
  try {
    const v = viewer.client;
    await readExact(v, 12);
    await v.write(new TextEncoder().encode("RFB 003.008\n"));
    assert.deepEqual([...await readExact(v, 2)], [1, 1]);
    await v.write(Uint8Array.of(2));
    // The offer was [1]: choosing 2 gets a failed SecurityResult with a reason.
    assert.deepEqual([...await readExact(v, 4)], [0, 0, 0, 1]);
    const length = new DataView((await readExact(v, 4)).buffer).getUint32(0);
    assert.equal(
      new TextDecoder().decode(await readExact(v, length)),
      "Security type 2 is not offered",
    );
    await running;
    assert.ok(h.lines.some((l) => /handshake failed: Security type 2 is not offered/.test(l)));
  } finally {
    server[Symbol.dispose]();
    viewer[Symbol.dispose]();
  }
});

Deno.test("Session.run() goes straight to ClientInit when the rendezvous authenticated the viewer", async () => {
  const h = harness({ kind: "vnc-password", password: "0neTime8" }, { authenticated: true });
  const { server, viewer, running } = await h.start();
  try {
    await viewer.client.write(Uint8Array.of(1)); // ClientInit: no RFB greeting first
    await echoOnce(server.server, viewer.client);
    viewer.client.close();
    await running;
  } finally {
    server[Symbol.dispose]();
    viewer[Symbol.dispose]();
  }
});

Deno.test("Session.run() ends with 'no client' when nobody comes, closing the backend and the rendezvous", async () => {
  const lines: string[] = [];
  const logger = createLogger({ level: "debug", sinks: [{ write: (l) => lines.push(l) }] });
  using server = await tcpPair();
  const rendezvous = new HandOver(undefined);
  const session = new Session(
    {
      backend: server.client,
      credential: { kind: "vnc-password", password: "0neTime8" },
      kind: "vnc",
      limits: { ...LIMITS, waitMs: 100 },
    },
    rendezvous,
    { logger, stopping: new AbortController().signal, closing: new AbortController().signal },
  );
  await session.run();
  assert.equal(rendezvous.closed, 1);
  assert.equal(await server.server.read(new Uint8Array(1)), null);
  assert.ok(lines.some((l) => l.includes("Session ended (no client)")), lines.join(""));
});
