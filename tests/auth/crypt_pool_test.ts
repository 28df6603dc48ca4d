import assert from "node:assert/strict";
import { CryptBusyError, CryptFailedError, CryptPool } from "../../src/auth/crypt_pool.ts";
import { shaCrypt } from "../../src/auth/sha_crypt.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { DREPPER_VECTORS, SNF_VECTORS } from "../_util/crypt_vectors.ts";

function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    logger: createLogger({ level: "debug", sinks: [{ write: (l) => lines.push(l) }] }),
    lines,
  };
}

const CRASHING_WORKER = new URL("../_util/crashing_crypt_worker.ts", import.meta.url);
const crashingWorker = () => new Worker(CRASHING_WORKER, { type: "module" });

/** A setting that keeps a worker busy for a while (~50-100 ms here). */
const SLOW = "$6$rounds=20000$saltsaltsaltsalt";

Deno.test("CryptPool.crypt() gives the synchronous shaCrypt() result for known vectors", async () => {
  const { logger } = capturingLogger();
  // Drepper's vectors go up to 123,456 rounds: on a loaded CI machine one
  // can take seconds, which is no failure of the pool.
  using pool = new CryptPool({ size: 2, queueLimit: 64, timeoutMs: 120_000 }, { logger });
  const vectors = [...SNF_VECTORS, ...DREPPER_VECTORS];
  // All at once: the two workers share the queue and answers match checks.
  const results = await Promise.all(
    vectors.map(([setting, password]) => pool.crypt(password, setting)),
  );
  for (const [i, [setting, password, expected]] of vectors.entries()) {
    assert.equal(results[i], expected, setting);
    assert.equal(shaCrypt(password, setting), expected, setting);
  }
  // A whole stored string is a setting too: that is how a check works.
  const [, , stored] = SNF_VECTORS[0]!;
  assert.equal(await pool.crypt("secret", stored), stored);
  assert.equal(pool.workers, 2, "never more workers than the pool size");
});

Deno.test("CryptPool.crypt() refuses at once with CryptBusyError when the queue is full", async () => {
  const { logger } = capturingLogger();
  using pool = new CryptPool({ size: 1, queueLimit: 2 }, { logger });
  const running = pool.crypt("a", SLOW);
  const queued = [pool.crypt("b", SLOW), pool.crypt("c", SLOW)];
  assert.equal(pool.waiting, 2);
  const started = performance.now();
  await assert.rejects(pool.crypt("d", SLOW), CryptBusyError);
  // Loose: waiting for a worker would take the three slow checks (~300 ms).
  assert.ok(performance.now() - started < 200, "refused without waiting for a worker");
  assert.equal(pool.waiting, 2, "the refused check did not queue");
  assert.deepEqual(
    await Promise.all([running, ...queued]),
    ["a", "b", "c"].map((password) => shaCrypt(password, SLOW)),
  );
  assert.equal(await pool.crypt("d", SLOW), shaCrypt("d", SLOW), "room again once drained");
});

Deno.test("a crypt worker that throws is replaced: its check fails cleanly and the queue goes on", async () => {
  const { logger, lines } = capturingLogger();
  using pool = new CryptPool({ size: 1, queueLimit: 4 }, { logger, createWorker: crashingWorker });
  const crashed = pool.crypt("crash", SLOW);
  const next = pool.crypt("after", SLOW);
  await assert.rejects(crashed, (error: unknown) => {
    assert.ok(error instanceof CryptFailedError);
    assert.match(error.message, /^The crypt worker threw /);
    return true;
  });
  assert.equal(await next, shaCrypt("after", SLOW), "a new worker took the queued check");
  assert.equal(pool.workers, 1);
  const errors = lines.filter((line) => line.includes("ERROR"));
  assert.equal(errors.length, 1, lines.join("\n"));
  assert.match(errors[0]!, /ERROR: Crypt worker 1 threw .*Crashed on purpose: replacing it/);
  for (const line of lines) assert.ok(!line.includes("after"), "no password in the log");
});

Deno.test("a crypt worker that dies silently is replaced after timeoutMs, never a hang", async () => {
  const { logger, lines } = capturingLogger();
  using pool = new CryptPool({ size: 1, queueLimit: 4, timeoutMs: 1_000 }, {
    logger,
    createWorker: crashingWorker,
  });
  const started = performance.now();
  await assert.rejects(pool.crypt("vanish", SLOW), CryptFailedError);
  const waited = performance.now() - started;
  assert.ok(waited >= 950 && waited < 10_000, `failed after ${waited} ms`);
  assert.match(lines.join("\n"), /Crypt worker 1 took more than 1000 ms: replacing it/);
  // A cheap check (the default 5000 rounds) for the new worker, so a loaded
  // machine does not push it over the same 1 s.
  const FAST = "$6$saltsaltsaltsalt";
  assert.equal(await pool.crypt("x", FAST), shaCrypt("x", FAST));
});

Deno.test("an idle crypt worker stops after idleMs, and the next check starts a new one", async () => {
  const { logger, lines } = capturingLogger();
  using pool = new CryptPool({ size: 1, queueLimit: 4, idleMs: 100 }, { logger });
  assert.equal(pool.workers, 0, "no worker before the first check");
  assert.equal(await pool.crypt("a", SLOW), shaCrypt("a", SLOW));
  assert.equal(pool.workers, 1);
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.equal(pool.workers, 0);
  assert.match(lines.join("\n"), /DEBUG: Crypt worker 1 stopped after 100 ms idle/);
  assert.equal(await pool.crypt("b", SLOW), shaCrypt("b", SLOW));
  assert.match(lines.join("\n"), /DEBUG: Crypt worker 2 started/);
});

Deno.test("CryptPool.close() fails running and waiting checks and terminates the workers", async () => {
  const { logger } = capturingLogger();
  const pool = new CryptPool({ size: 1, queueLimit: 4 }, { logger });
  const running = pool.crypt("a", SLOW);
  const waiting = pool.crypt("b", SLOW);
  pool.close();
  pool.close();
  await assert.rejects(running, CryptFailedError);
  await assert.rejects(waiting, CryptFailedError);
  await assert.rejects(pool.crypt("c", SLOW), /The crypt pool is closed/);
  assert.equal(pool.workers, 0);
});

Deno.test("new CryptPool() rejects bad sizes", () => {
  const { logger } = capturingLogger();
  assert.throws(() => new CryptPool({ size: 0, queueLimit: 1 }, { logger }), RangeError);
  assert.throws(() => new CryptPool({ size: 1.5, queueLimit: 1 }, { logger }), RangeError);
  assert.throws(() => new CryptPool({ size: 1, queueLimit: -1 }, { logger }), RangeError);
});
