import assert from "node:assert/strict";
import { join } from "node:path";
import { CryptBusyError, CryptPool } from "../../src/auth/crypt_pool.ts";
import { shaCrypt } from "../../src/auth/sha_crypt.ts";
import { isSupportedHash } from "../../src/auth/users_file.ts";
import { UserDb } from "../../src/auth/user_db.ts";
import { createLogger } from "../../src/log.ts";

// All three are crypt("secret", ...) (peers.md §1.4).
const H6 =
  "$6$abcdefghijklmnop$J/AWykHqo2Tx5UtavGnFc3ytI33la50JpzLTarSWVhkIXK6wOjNwwZjsrIw2UgmrER2EKrSHCeQyAINEEXAk1/";
const H5 = "$5$abcdefghijklmnop$i7zHaTeYqXlesRXJ8dXj6o.MEFQdzfIJpJpcWAtszs6";
const H6_ROUNDS =
  "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";

Deno.test("UserDb.verify() accepts the right password and refuses others", async () => {
  const db = UserDb.fromText(`alice:${H6}\nbob:${H5}\ncarol:${H6_ROUNDS}\n`);
  assert.equal(db.size, 3);
  assert.ok(db.has("alice") && db.has("bob") && !db.has("mallory"));
  assert.deepEqual(db.users(), ["alice", "bob", "carol"]);
  assert.equal(await db.verify("alice", "secret"), true);
  assert.equal(await db.verify("bob", "secret"), true);
  assert.equal(await db.verify("carol", "Hello world!"), true);
  assert.equal(await db.verify("alice", "Secret"), false);
  assert.equal(await db.verify("alice", ""), false);
  assert.equal(await db.verify("bob", "secret "), false);
  assert.equal(await db.verify("mallory", "secret"), false);
  assert.equal(await db.verify("", ""), false);
});

/** A synchronous crypt function that counts its calls. */
function countingCrypt() {
  const calls: string[] = [];
  return {
    calls,
    crypt(password: string, setting: string): string {
      calls.push(setting);
      return shaCrypt(password, setting);
    },
  };
}

Deno.test("UserDb.verify() runs a full $6$ crypt for an unknown user", async () => {
  const { calls, crypt } = countingCrypt();
  const db = new UserDb(new Map([["alice", H6]]), { crypt });
  assert.equal(await db.verify("mallory", "secret"), false);
  assert.equal(await db.verify("mallory", "secret"), false);
  assert.equal(calls.length, 2);
  assert.match(calls[0]!, /^\$6\$[^$]{16}\$[./0-9A-Za-z]{86}$/);
  assert.ok(isSupportedHash(calls[0]!));
  assert.equal(await UserDb.empty().verify("alice", "secret"), false);
});

Deno.test("UserDb.verify() answers a repeated correct password from its cache", async () => {
  const { calls, crypt } = countingCrypt();
  const db = new UserDb(new Map([["alice", H6], ["bob", H5]]), { crypt });
  assert.equal(db.verifyCached("alice", "secret"), false, "not before the first check");
  assert.equal(await db.verify("alice", "secret"), true);
  assert.equal(db.verifyCached("alice", "secret"), true);
  assert.equal(await db.verify("alice", "secret"), true);
  assert.equal(await db.verify("alice", "secret"), true);
  assert.equal(calls.length, 1);
  // Wrong passwords never enter the cache and always cost a crypt.
  assert.equal(await db.verify("alice", "wrong"), false);
  assert.equal(await db.verify("alice", "wrong"), false);
  assert.equal(db.verifyCached("alice", "wrong"), false);
  assert.equal(calls.length, 3);
  // The cache is per user.
  assert.equal(db.verifyCached("bob", "secret"), false);
  assert.equal(await db.verify("bob", "secret"), true);
  assert.equal(calls.length, 4);
  // A reload starts a new cache.
  const reloaded = new UserDb(new Map([["alice", H6]]), { crypt });
  assert.equal(reloaded.verifyCached("alice", "secret"), false);
  assert.equal(await reloaded.verify("alice", "secret"), true);
  assert.equal(calls.length, 5);
  assert.equal(reloaded.verifyCached("nobody", "secret"), false);
});

Deno.test("UserDb.verify() clears the cache when it is full", async () => {
  const { calls, crypt } = countingCrypt();
  const db = new UserDb(new Map([["alice", H6], ["bob", H5]]), {
    crypt,
    cacheSize: 1,
  });
  assert.equal(await db.verify("alice", "secret"), true);
  assert.equal(await db.verify("bob", "secret"), true); // clears, then holds bob
  assert.equal(await db.verify("bob", "secret"), true);
  assert.equal(calls.length, 2);
  assert.equal(await db.verify("alice", "secret"), true);
  assert.equal(calls.length, 3);
});

Deno.test("UserDb.verify() passes on the crypt function's error (a busy pool)", async () => {
  const db = new UserDb(new Map([["alice", H6]]), {
    crypt: () => Promise.reject(new CryptBusyError()),
  });
  await assert.rejects(db.verify("alice", "secret"), CryptBusyError);
  await assert.rejects(db.verify("mallory", "secret"), CryptBusyError);
});

Deno.test("new UserDb() rejects an unsupported hash without showing it", () => {
  const error = captureError(() =>
    new UserDb(new Map([["alice", "$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1"]]))
  );
  assert.ok(error instanceof SyntaxError);
  assert.ok(error.message.includes('"alice"'));
  assert.ok(!error.message.includes("cHJi5PXp"));
});

Deno.test("new UserDb() and UserDb.fromText() refuse rounds= above maxRounds", () => {
  const error = captureError(() =>
    new UserDb(new Map([["carol", H6_ROUNDS]]), { maxRounds: 5000 })
  );
  assert.ok(error instanceof SyntaxError);
  assert.equal(
    error.message,
    'The hash of user "carol" has rounds=10000, more than the limit of 5000 (--max-crypt-rounds)',
  );
  assert.throws(
    () => UserDb.fromText(`alice:${H6}\ncarol:${H6_ROUNDS}\n`, { maxRounds: 5000 }),
    /^SyntaxError: Malformed line 2: the hash of user "carol" has rounds=10000, more than the limit of 5000/,
  );
  assert.equal(UserDb.fromText(`carol:${H6_ROUNDS}\n`, { maxRounds: 10_000 }).size, 1);
});

Deno.test("UserDb.load() reads a file, and throws NotFound or SyntaxError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "users");
    await assert.rejects(() => UserDb.load(path), Deno.errors.NotFound);
    await Deno.writeTextFile(path, `# users\nalice:${H6}\n`);
    const db = await UserDb.load(path);
    assert.equal(await db.verify("alice", "secret"), true);
    await Deno.writeTextFile(path, `alice:${H6}\nbob:$1$abcdefgh$cHJi5PXp\n`);
    const error = await UserDb.load(path).then(() => null, (e) => e);
    assert.ok(error instanceof SyntaxError);
    assert.ok(error.message.includes(`"${path}"`), error.message);
    assert.match(error.message, /line 2/);
    assert.ok(!error.message.includes("cHJi5PXp"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

Deno.test("an unknown user costs as much as a wrong password, measured through the crypt workers", async () => {
  using pool = new CryptPool({ size: 1, queueLimit: 4 }, {
    logger: createLogger({ sinks: [] }),
  });
  const db = new UserDb(new Map([["alice", H6]]), {
    crypt: (password, setting) => pool.crypt(password, setting),
  });
  const time = async (user: string, password: string, expected: boolean) => {
    const started = performance.now();
    assert.equal(await db.verify(user, password), expected);
    return performance.now() - started;
  };
  await time("alice", "secret", true); // starts the worker and fills the cache
  const unknown: number[] = [];
  const wrong: number[] = [];
  const cached: number[] = [];
  // Interleaved, so a burst of load from elsewhere hits both alike.
  for (let i = 0; i < 15; i++) {
    unknown.push(await time(`nobody${i}`, "secret", false));
    wrong.push(await time("alice", `wrong${i}`, false));
    cached.push(await time("alice", "secret", true));
  }
  const ratio = median(unknown) / median(wrong);
  const report = `unknown ${median(unknown).toFixed(2)} ms, wrong ${
    median(wrong).toFixed(2)
  } ms, cached ${median(cached).toFixed(3)} ms (medians of 15)`;
  assert.ok(ratio > 0.5 && ratio < 2, `ratio ${ratio.toFixed(2)}: ${report}`);
  // Both really crypt: a cached answer is orders of magnitude cheaper.
  assert.ok(median(unknown) > 10 * median(cached), report);
  assert.ok(median(wrong) > 10 * median(cached), report);
});

function captureError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  assert.fail("expected an error");
}
