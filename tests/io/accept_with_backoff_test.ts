import assert from "node:assert/strict";
import { acceptWithBackoff } from "../../src/io/accept_with_backoff.ts";
import type { Logger } from "../../src/log.ts";

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger: Logger = {
    debug: (message) => lines.push(`DEBUG ${message}`),
    info: (message) => lines.push(`INFO ${message}`),
    warn: (message) => lines.push(`WARNING ${message}`),
    error: (message) => lines.push(`ERROR ${message}`),
    child: () => logger,
  };
  return { logger, lines };
}

/** A connection that only counts its closes. */
function fakeConn(): Deno.Conn & { closes: number } {
  const conn = { closes: 0, close: () => void conn.closes++ };
  return conn as unknown as Deno.Conn & { closes: number };
}

/** A listener whose accepts play `script` in order: an error to throw, or a connection. */
function scriptedListener(script: (() => Deno.Conn | Error)[]): Deno.Listener {
  return {
    accept() {
      const next = script.shift();
      if (next === undefined) return Promise.reject(new Deno.errors.BadResource("closed"));
      const value = next();
      return value instanceof Error ? Promise.reject(value) : Promise.resolve(value);
    },
  } as unknown as Deno.Listener;
}

Deno.test("acceptWithBackoff() logs a failed accept, pauses and then hands out the next connection", async () => {
  const { logger, lines } = recordingLogger();
  const conn = fakeConn();
  const listener = scriptedListener([
    () => new Error("Too many open files (os error 24)"),
    () => conn,
  ]);
  const started = performance.now();
  const got = await acceptWithBackoff(listener, {
    signal: new AbortController().signal,
    logger,
    what: "Test",
    retryMs: 50,
  });
  assert.equal(got, conn);
  assert.ok(performance.now() - started >= 40, "it paused before trying again");
  assert.deepEqual(lines, [
    "ERROR Test accept failed: Too many open files (os error 24); retrying in 50 ms",
  ]);
});

Deno.test("acceptWithBackoff() resolves to undefined once the listener is closed", async () => {
  const { logger, lines } = recordingLogger();
  const got = await acceptWithBackoff(scriptedListener([]), {
    signal: new AbortController().signal,
    logger,
    what: "Test",
  });
  assert.equal(got, undefined);
  assert.deepEqual(lines, []);
});

Deno.test("acceptWithBackoff() ends its pause when the signal aborts, and hands out nothing after", async () => {
  const { logger } = recordingLogger();
  const stopping = new AbortController();
  const conn = fakeConn();
  const listener = scriptedListener([() => new Error("Too many open files"), () => conn]);
  setTimeout(() => stopping.abort(), 20);
  const started = performance.now();
  const got = await acceptWithBackoff(listener, {
    signal: stopping.signal,
    logger,
    what: "Test",
    retryMs: 60_000,
  });
  assert.equal(got, undefined);
  assert.ok(performance.now() - started < 30_000, "the 60 s pause did not run out");
  assert.equal(conn.closes, 0, "never accepted");

  // A connection accepted just as the owner stops is closed, not handed out.
  const late = fakeConn();
  const racing = new AbortController();
  const lateListener = {
    accept() {
      racing.abort();
      return Promise.resolve(late);
    },
  } as unknown as Deno.Listener;
  assert.equal(
    await acceptWithBackoff(lateListener, { signal: racing.signal, logger, what: "T" }),
    undefined,
  );
  assert.equal(late.closes, 1);
});
