import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cryptRounds,
  deleteUserFromText,
  isSupportedHash,
  parseUsersFile,
  serializeUsersFile,
  setUserInText,
  writeUsersFileAtomic,
} from "../../src/auth/users_file.ts";
import { listDir } from "../_util/files.ts";

// All three are crypt("secret", ...) (peers.md §1.4).
const H6 =
  "$6$abcdefghijklmnop$J/AWykHqo2Tx5UtavGnFc3ytI33la50JpzLTarSWVhkIXK6wOjNwwZjsrIw2UgmrER2EKrSHCeQyAINEEXAk1/";
const H6B =
  "$6$saltsaltsaltsalt$ph0yGsyjzqdeFaon7.gJZo8eAG5/rj9/JdzOu1Rl7dKzBYg3xgvl7T2VQ2Rt81bc5AXkdA54r0p8QvC1omD6R1";
const H5 = "$5$abcdefghijklmnop$i7zHaTeYqXlesRXJ8dXj6o.MEFQdzfIJpJpcWAtszs6";
const H6_ROUNDS =
  "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";

Deno.test("parseUsersFile() reads the accepted line forms", () => {
  const cases: readonly (readonly [string, [string, string][]])[] = [
    ["", []],
    ["\n\n", []],
    [`alice:${H6}`, [["alice", H6]]],
    [`alice:${H6}\n`, [["alice", H6]]],
    [`alice:${H6}\r\nbob:${H5}\r\n`, [["alice", H6], ["bob", H5]]],
    [`  alice:${H6} \t\n`, [["alice", H6]]],
    [`# users\n\nalice:${H6}\n  # indented\n\n`, [["alice", H6]]],
    [`alice:${H6}\nbob:${H5}\nalice:${H6B}\n`, [["bob", H5], [
      "alice",
      H6B,
    ]]],
    [`carol:${H6_ROUNDS}\n`, [["carol", H6_ROUNDS]]],
    [`dave:$6$rounds=5000$saltsaltsaltsalt$${H6B.slice(20)}`, [[
      "dave",
      `$6$rounds=5000$saltsaltsaltsalt$${H6B.slice(20)}`,
    ]]],
  ];
  for (const [text, expected] of cases) {
    assert.deepEqual([...parseUsersFile(text)], expected, JSON.stringify(text));
  }
});

Deno.test("parseUsersFile() rejects malformed lines without showing the hash", () => {
  const cases: readonly (readonly [string, number, string | null])[] = [
    ["no-colon-here", 1, null],
    [`# ok\n\n:${H6}`, 3, null],
    ["alice:plaintextpassword", 1, "alice"],
    ["bob:$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1", 1, "bob"],
    [`ok:${H6}\ncarol:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o`, 2, "carol"],
    [`dave:${H6.slice(0, -1)}`, 1, "dave"],
    [`erin:${H5}x`, 1, "erin"],
    [`frank:$6$rounds=10$salt$${H6.slice(20)}`, 1, "frank"],
    [`gina:$6$rounds=05000$salt$${H6.slice(20)}`, 1, "gina"],
    [`hank:$6$toolongsaltstring1$${H6.slice(20)}`, 1, "hank"],
  ];
  for (const [text, line, user] of cases) {
    const error = captureError(() => parseUsersFile(text));
    assert.ok(error instanceof SyntaxError, text);
    assert.match(error.message, new RegExp(`\\bline ${line}\\b`), text);
    if (user !== null) assert.ok(error.message.includes(`"${user}"`), text);
    const hash = text.split("\n").at(-1)!.split(":").slice(1).join(":");
    if (hash !== "") assert.ok(!error.message.includes(hash), error.message);
    assert.ok(!error.message.includes("$"), error.message);
  }
});

Deno.test("parseUsersFile() refuses rounds= above maxRounds, naming the line, user and limit", () => {
  const text = `alice:${H6}\ncarol:${H6_ROUNDS}\n`;
  assert.equal(parseUsersFile(text, { maxRounds: 10_000 }).size, 2);
  const error = captureError(() => parseUsersFile(text, { maxRounds: 9999 }));
  assert.ok(error instanceof SyntaxError);
  assert.equal(
    error.message,
    'Malformed line 2: the hash of user "carol" has rounds=10000, more than the limit of 9999 (--max-crypt-rounds)',
  );
  assert.ok(!error.message.includes(H6_ROUNDS.slice(33)), "no hash in the message");
  // Without a limit, what crypt(3) accepts loads (the passwd tool edits such files).
  const huge = `dave:$6$rounds=999999999$saltsaltsaltsalt$${H6B.slice(20)}`;
  assert.equal(parseUsersFile(huge).size, 1);
  assert.throws(() => parseUsersFile(huge, { maxRounds: 20_000 }), /rounds=999999999/);
});

Deno.test("cryptRounds() reads rounds= or the default 5000", () => {
  assert.equal(cryptRounds(H6), 5000);
  assert.equal(cryptRounds(H5), 5000);
  assert.equal(cryptRounds(H6_ROUNDS), 10_000);
});

Deno.test("isSupportedHash() accepts $5$ and $6$ crypt strings only", () => {
  assert.ok(isSupportedHash(H6));
  assert.ok(isSupportedHash(H5));
  assert.ok(isSupportedHash(H6_ROUNDS));
  assert.ok(!isSupportedHash("$6$rounds=1000000000$salt$" + "a".repeat(86)));
  assert.ok(!isSupportedHash(`${H6}\n`));
  assert.ok(!isSupportedHash(""));
});

Deno.test("serializeUsersFile() writes one line per user that parses back", () => {
  const entries = new Map([["alice", H6], ["bob", H5]]);
  const text = serializeUsersFile(entries);
  assert.equal(text, `alice:${H6}\nbob:${H5}\n`);
  assert.deepEqual(parseUsersFile(text), entries);
  assert.equal(serializeUsersFile(new Map()), "");
});

Deno.test("setUserInText() replaces in place and keeps every other line", () => {
  const text = `# head\n\nalice:${H6}\n# mid\nbob:${H5}\n`;
  assert.equal(
    setUserInText(text, "alice", H6B),
    `# head\n\nalice:${H6B}\n# mid\nbob:${H5}\n`,
  );
  assert.equal(
    setUserInText(text, "carol", H6B),
    `${text}carol:${H6B}\n`,
  );
  // No final newline, CRLF endings and duplicates.
  assert.equal(setUserInText(`a:${H5}`, "b", H6), `a:${H5}\nb:${H6}\n`);
  assert.equal(
    setUserInText(`a:${H5}\r\n`, "b", H6),
    `a:${H5}\r\nb:${H6}\r\n`,
  );
  assert.equal(
    setUserInText(`a:${H5}\nb:${H5}\na:${H6}\n`, "a", H6B),
    `a:${H6B}\nb:${H5}\n`,
  );
  assert.equal(setUserInText("", "a", H6), `a:${H6}\n`);
});

Deno.test("deleteUserFromText() removes every line of the user", () => {
  const text = `# head\nalice:${H6}\n\nbob:${H5}\nalice:${H6B}\n`;
  assert.equal(deleteUserFromText(text, "alice"), `# head\n\nbob:${H5}\n`);
  assert.equal(deleteUserFromText(text, "carol"), undefined);
  assert.equal(deleteUserFromText(`alice:${H6}`, "alice"), "");
});

Deno.test("writeUsersFileAtomic() creates new files with mode 0600", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "users");
    await writeUsersFileAtomic(path, `alice:${H6}\n`);
    assert.equal(await Deno.readTextFile(path), `alice:${H6}\n`);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual(await listDir(dir), ["users"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeUsersFileAtomic() keeps the mode 0640 of an existing file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "users");
    await Deno.writeTextFile(path, "old\n");
    await Deno.chmod(path, 0o640);
    const before = await Deno.stat(path);
    await writeUsersFileAtomic(path, `alice:${H6}\n`);
    const after = await Deno.stat(path);
    assert.equal(await Deno.readTextFile(path), `alice:${H6}\n`);
    assert.equal(after.mode! & 0o7777, 0o640);
    assert.notEqual(after.ino, before.ino); // replaced, not rewritten
    assert.deepEqual(await listDir(dir), ["users"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "writeUsersFileAtomic() keeps the owner and group (needs root)",
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const path = join(dir, "users");
      await Deno.writeTextFile(path, "old\n");
      await Deno.chown(path, 65534, 65534);
      await writeUsersFileAtomic(path, `alice:${H6}\n`);
      const after = await Deno.stat(path);
      assert.equal(after.uid, 65534);
      assert.equal(after.gid, 65534);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("writeUsersFileAtomic() failing to rename leaves the target and no temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The target is a non-empty directory, so the final rename fails.
    const path = join(dir, "users");
    await Deno.mkdir(path);
    await Deno.writeTextFile(join(path, "keep"), "kept\n");
    await assert.rejects(() => writeUsersFileAtomic(path, `alice:${H6}\n`));
    assert.equal(await Deno.readTextFile(join(path, "keep")), "kept\n");
    assert.deepEqual(await listDir(dir), ["users"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "writeUsersFileAtomic() in a read-only directory leaves the old file (needs non-root)",
  ignore: Deno.uid() === 0,
  async fn() {
    const dir = await Deno.makeTempDir();
    const path = join(dir, "users");
    try {
      await Deno.writeTextFile(path, `alice:${H6}\n`);
      await Deno.chmod(dir, 0o500);
      await assert.rejects(() => writeUsersFileAtomic(path, "new\n"));
      assert.equal(await Deno.readTextFile(path), `alice:${H6}\n`);
      assert.deepEqual(await listDir(dir), ["users"]);
    } finally {
      await Deno.chmod(dir, 0o700);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

function captureError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  assert.fail("expected an error");
}
