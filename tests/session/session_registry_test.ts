/**
 * What an embedding program (the demo) sees of sessions: the registry's
 * `onStart` and a session's state changes, in order.
 *
 * @module
 */

import assert from "node:assert/strict";
import { silentLogger } from "../../src/log.ts";
import type { ArrivedViewer, Rendezvous } from "../../src/session/rendezvous.ts";
import { Session, type SessionState } from "../../src/session/session.ts";
import { SessionRegistry } from "../../src/session/session_registry.ts";
import { tcpPair } from "../_util/loopback.ts";

/** A rendezvous where no viewer ever comes. */
class NobodyComes implements Rendezvous {
  readonly description = "nobody";
  waitForViewer(signal: AbortSignal): Promise<ArrivedViewer> {
    return new Promise((_, reject) =>
      signal.addEventListener("abort", () => reject(signal.reason), { once: true })
    );
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("SessionRegistry onStart sees each session; onStateChange reports waiting -> closed", async () => {
  const server = await tcpPair();
  try {
    const started: Session[] = [];
    const registry = new SessionRegistry({ onStart: (session) => started.push(session) });
    const session = new Session(
      {
        backend: server.client,
        credential: { kind: "vnc-password", password: "0neTime8" },
        kind: "vnc",
        limits: {
          waitMs: 50,
          viewerHandshakeMs: 1000,
          serverWriteMs: 1000,
          idleTimeoutMs: 0,
          maxSessionTimeMs: 0,
          allowExclusive: false,
        },
      },
      new NobodyComes(),
      {
        logger: silentLogger,
        stopping: new AbortController().signal,
        closing: new AbortController().signal,
      },
    );
    const states: SessionState[] = [];
    const stop = session.onStateChange((state) => states.push(state));
    registry.start(session);
    assert.deepEqual(started, [session]);
    assert.equal(session.state, "waiting");
    await registry.settled();
    assert.deepEqual(states, ["closed"]);
    stop();
  } finally {
    server.client.close();
    server.server.close();
  }
});
