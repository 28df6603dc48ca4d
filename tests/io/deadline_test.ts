import assert from "node:assert/strict";
import {
  isTimeout,
  pause,
  raceDeadline,
  startDeadline,
  withDeadline,
} from "../../src/io/deadline.ts";
import { tcpPair } from "../_util/loopback.ts";

Deno.test("startDeadline() aborts with a TimeoutError when time is up", async () => {
  using phase = startDeadline(10);
  await new Promise((resolve) => phase.signal.addEventListener("abort", resolve));
  assert.ok(isTimeout(phase.signal.reason));
});

Deno.test("startDeadline() follows its parents and clears its timer on dispose", () => {
  const parent = new AbortController();
  {
    using phase = startDeadline(60_000, parent.signal);
    parent.abort(new Error("stopping"));
    assert.equal((phase.signal.reason as Error).message, "stopping");
  }
  // The sanitizer would report a leaked 60 s timer if dispose did not clear it.
  using late = startDeadline(60_000, parent.signal);
  assert.ok(late.signal.aborted, "an already aborted parent aborts at once");
});

Deno.test("withDeadline() closes the duplex and throws the timeout when a read hangs", async () => {
  using pair = await tcpPair();
  using phase = startDeadline(20);
  await assert.rejects(
    withDeadline(pair.server, phase.signal, () => pair.server.read(new Uint8Array(1))),
    (error: unknown) => isTimeout(error),
  );
});

Deno.test("raceDeadline() rejects on time without closing the transport", async () => {
  using pair = await tcpPair();
  using phase = startDeadline(20);
  const pending = pair.server.read(new Uint8Array(1));
  await assert.rejects(raceDeadline(phase.signal, pending), (error: unknown) => isTimeout(error));
  await pair.server.write(new TextEncoder().encode("still open"));
  const buffer = new Uint8Array(10);
  assert.equal(await pair.client.read(buffer), 10);
});

Deno.test("pause() waits its time, or ends early without rejecting when the signal aborts", async () => {
  const started = performance.now();
  await pause(30, new AbortController().signal);
  assert.ok(performance.now() - started >= 25);

  const stop = new AbortController();
  setTimeout(() => stop.abort(new Error("stopping")), 10);
  // The sanitizer would report the 60 s timer if the abort did not clear it.
  await pause(60_000, stop.signal);
  await pause(60_000, stop.signal);
});
