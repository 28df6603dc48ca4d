import assert from "node:assert/strict";
import { join } from "node:path";
import { UserDb } from "../../src/auth/user_db.ts";
import {
  type PasswdIo,
  runLegacyPasswdCommand,
  runPasswdCommand,
} from "../../src/cli/passwd_command.ts";
import { listDir } from "../_util/files.ts";

// crypt("secret", ...) (peers.md §1.4).
const H6 =
  "$6$abcdefghijklmnop$J/AWykHqo2Tx5UtavGnFc3ytI33la50JpzLTarSWVhkIXK6wOjNwwZjsrIw2UgmrER2EKrSHCeQyAINEEXAk1/";
const H5 = "$5$abcdefghijklmnop$i7zHaTeYqXlesRXJ8dXj6o.MEFQdzfIJpJpcWAtszs6";
const NEW_LINE = /^[a-z_][a-z0-9_]*:\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}$/;

interface FakeTerminal {
  readonly io: PasswdIo;
  stdout: string;
  stderr: string;
  readonly prompts: string[];
}

/** A terminal that answers prompts from `answers` (then cancels). */
function fakeTerminal(
  answers: readonly (string | null)[] = [],
  stdin = "",
): FakeTerminal {
  const queue = [...answers];
  const terminal: FakeTerminal = {
    stdout: "",
    stderr: "",
    prompts: [],
    io: {
      stdout: (text) => void (terminal.stdout += text),
      stderr: (text) => void (terminal.stderr += text),
      readPassword: (prompt) => {
        terminal.prompts.push(prompt);
        return Promise.resolve(queue.length > 0 ? queue.shift()! : null);
      },
      readStdin: () => Promise.resolve(stdin),
    },
  };
  return terminal;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Asserts that nothing secret went to stderr. */
function assertNoSecrets(terminal: FakeTerminal, ...secrets: string[]): void {
  assert.ok(!terminal.stderr.includes("$6$"), terminal.stderr);
  assert.ok(!terminal.stderr.includes("$5$"), terminal.stderr);
  for (const secret of secrets) {
    assert.ok(!terminal.stderr.includes(secret), terminal.stderr);
    assert.ok(!terminal.stdout.includes(secret), terminal.stdout);
  }
}

Deno.test("passwd add creates a 0600 file that UserDb accepts, prompting twice", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const t = fakeTerminal(["hunter2", "hunter2"]);
    assert.equal(await runPasswdCommand(["add", file, "alice"], t.io), 0);
    assert.deepEqual(t.prompts, ["Password: ", "Retype password: "]);
    assert.equal(t.stdout, "");
    assert.equal(t.stderr, "");
    const text = await Deno.readTextFile(file);
    assert.match(text.trimEnd(), NEW_LINE);
    assert.ok(text.startsWith("alice:") && text.endsWith("\n"));
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    const db = await UserDb.load(file);
    assert.equal(await db.verify("alice", "hunter2"), true);
    assert.equal(await db.verify("alice", "hunter3"), false);
    assert.deepEqual(await listDir(dir), ["users"]);
  });
});

Deno.test("passwd add replaces a user in place and keeps other lines", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const before = `# control users\n\nalice:${H6}\n# bob below\nbob:${H5}\n`;
    await Deno.writeTextFile(file, before);
    const t = fakeTerminal();
    assert.equal(
      await runPasswdCommand(["add", file, "alice", "-p", "hunter2"], t.io),
      0,
    );
    assert.deepEqual(t.prompts, []);
    const lines = (await Deno.readTextFile(file)).split("\n");
    assert.equal(lines.length, 6);
    assert.deepEqual(
      [lines[0], lines[1], lines[3], lines[4], lines[5]],
      ["# control users", "", "# bob below", `bob:${H5}`, ""],
    );
    assert.match(lines[2]!, NEW_LINE);
    assert.ok(lines[2]!.startsWith("alice:"));
    const db = await UserDb.load(file);
    assert.equal(await db.verify("alice", "hunter2"), true);
    assert.equal(await db.verify("alice", "secret"), false);
    assert.equal(await db.verify("bob", "secret"), true);
    assertNoSecrets(t, "hunter2");
  });
});

Deno.test("passwd add appends a new user after the existing lines", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    await Deno.writeTextFile(file, `alice:${H6}`); // no final newline
    const t = fakeTerminal();
    assert.equal(
      await runPasswdCommand(["add", "--password=pw", file, "carol"], t.io),
      0,
    );
    const lines = (await Deno.readTextFile(file)).split("\n");
    assert.equal(lines[0], `alice:${H6}`);
    assert.match(lines[1]!, NEW_LINE);
    assert.equal(lines[2], "");
    assert.equal(lines.length, 3);
  });
});

Deno.test("passwd add --password-stdin takes the first line of stdin", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    for (const stdin of ["s3cret\nignored\n", "s3cret", "s3cret\r\n"]) {
      const t = fakeTerminal([], stdin);
      assert.equal(
        await runPasswdCommand(["add", file, "alice", "--password-stdin"], t.io),
        0,
      );
      assert.deepEqual(t.prompts, []);
      const db = await UserDb.load(file);
      assert.equal(await db.verify("alice", "s3cret"), true, JSON.stringify(stdin));
    }
  });
});

Deno.test("passwd add keeps the mode 0640 of an existing file", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    await Deno.writeTextFile(file, `bob:${H5}\n`);
    await Deno.chmod(file, 0o640);
    const t = fakeTerminal();
    assert.equal(
      await runPasswdCommand(["add", file, "alice", "-p", "pw"], t.io),
      0,
    );
    assert.equal((await Deno.stat(file)).mode! & 0o7777, 0o640);
    assert.deepEqual(await listDir(dir), ["users"]);
  });
});

Deno.test("passwd add refuses bad user names with snf's message", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    for (const user of ["Alice", "1abc", "a-b", "a".repeat(32), "", "a:b"]) {
      const t = fakeTerminal(["pw", "pw"]);
      assert.equal(await runPasswdCommand(["add", file, user], t.io), 1, user);
      assert.equal(
        t.stderr,
        "Username must match the following regexp: ^[a-z_][a-z0-9_]{0,30}$\n",
      );
      assert.deepEqual(t.prompts, []);
    }
    assert.equal(await exists(file), false);
    for (const user of ["_", "a".repeat(31), "x_9"]) {
      const t = fakeTerminal();
      assert.equal(
        await runPasswdCommand(["add", file, user, "-p", "pw"], t.io),
        0,
        user,
      );
    }
  });
});

Deno.test("passwd add refuses an empty password from every source", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const runs: [string[], FakeTerminal][] = [
      [["add", file, "alice", "-p", ""], fakeTerminal()],
      [["add", file, "alice"], fakeTerminal([""])],
      [["add", file, "alice", "--password-stdin"], fakeTerminal([], "\n")],
      [["add", file, "alice", "--password-stdin"], fakeTerminal([], "")],
    ];
    for (const [args, t] of runs) {
      assert.equal(await runPasswdCommand(args, t.io), 1, args.join(" "));
      assert.equal(t.stderr, "Password cannot be empty\n");
    }
    assert.equal(await exists(file), false);
  });
});

Deno.test("passwd add fails on a mismatched retype or a cancelled prompt", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const mismatch = fakeTerminal(["hunter2", "hunter3"]);
    assert.equal(await runPasswdCommand(["add", file, "alice"], mismatch.io), 1);
    assert.match(mismatch.stderr, /^Passwords do not match\n$/);
    assertNoSecrets(mismatch, "hunter2", "hunter3");
    for (const answers of [[null], ["hunter2", null]]) {
      const t = fakeTerminal(answers);
      assert.equal(await runPasswdCommand(["add", file, "alice"], t.io), 1);
      assert.equal(t.stderr, "Cancelled\n");
    }
    assert.equal(await exists(file), false);
  });
});

Deno.test("passwd add refuses a malformed file before prompting, hiding hashes", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const before = `alice:${H6}\nbob:$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1\n`;
    await Deno.writeTextFile(file, before);
    const t = fakeTerminal(["pw", "pw"]);
    assert.equal(await runPasswdCommand(["add", file, "carol"], t.io), 1);
    assert.deepEqual(t.prompts, []);
    assert.match(t.stderr, /line 2/);
    assert.ok(t.stderr.includes('"bob"'));
    assertNoSecrets(t, "cHJi5PXp");
    assert.equal(await Deno.readTextFile(file), before);
  });
});

Deno.test("passwd del removes the user and keeps other lines", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    await Deno.writeTextFile(file, `# head\nalice:${H6}\n\nbob:${H5}\n`);
    await Deno.chmod(file, 0o640);
    const t = fakeTerminal();
    assert.equal(await runPasswdCommand(["del", file, "alice"], t.io), 0);
    assert.equal(await Deno.readTextFile(file), `# head\n\nbob:${H5}\n`);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o640);
    assert.equal(t.stdout + t.stderr, "");
  });
});

Deno.test("passwd del fails for a missing user or a missing file", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const missingFile = fakeTerminal();
    assert.equal(await runPasswdCommand(["del", file, "alice"], missingFile.io), 1);
    assert.match(missingFile.stderr, /^Cannot delete user from non-existent file/);
    assert.equal(await exists(file), false);

    await Deno.writeTextFile(file, `bob:${H5}\n`);
    const missingUser = fakeTerminal();
    assert.equal(await runPasswdCommand(["del", file, "alice"], missingUser.io), 1);
    assert.equal(missingUser.stderr, "User not found\n");
    assert.equal(await Deno.readTextFile(file), `bob:${H5}\n`);
  });
});

Deno.test("passwd list prints user names only", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    await Deno.writeTextFile(file, `# c\nalice:${H6}\n\nbob:${H5}\r\n`);
    const t = fakeTerminal();
    assert.equal(await runPasswdCommand(["list", file], t.io), 0);
    assert.equal(t.stdout, "alice\nbob\n");
    assert.equal(t.stderr, "");
    const missing = fakeTerminal();
    assert.equal(
      await runPasswdCommand(["list", join(dir, "nope")], missing.io),
      1,
    );
    assert.equal(missing.stdout, "");
  });
});

Deno.test("passwd --dry-run prints the resulting file and changes nothing", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const before = `# head\nalice:${H6}\nbob:${H5}\n`;
    await Deno.writeTextFile(file, before);
    const stat = await Deno.stat(file);

    const add = fakeTerminal();
    assert.equal(
      await runPasswdCommand(["add", "-n", file, "carol", "-p", "pw"], add.io),
      0,
    );
    assert.ok(add.stdout.startsWith(before));
    assert.match(add.stdout.slice(before.length).trimEnd(), NEW_LINE);

    const del = fakeTerminal();
    assert.equal(
      await runPasswdCommand(["del", "--dry-run", file, "alice"], del.io),
      0,
    );
    assert.equal(del.stdout, `# head\nbob:${H5}\n`);

    const created = fakeTerminal();
    const newFile = join(dir, "new");
    assert.equal(
      await runPasswdCommand(["add", "--dry", newFile, "x", "-p", "pw"], created.io),
      0,
    );
    assert.match(created.stdout.trimEnd(), NEW_LINE);

    assert.equal(await Deno.readTextFile(file), before);
    assert.equal((await Deno.stat(file)).ino, stat.ino);
    assert.deepEqual(await listDir(dir), ["users"]);
  });
});

Deno.test("passwd usage errors exit 2 with one line and a hint", async () => {
  const cases: string[][] = [
    [],
    ["frobnicate", "f", "u"],
    ["add", "f"],
    ["add", "f", "u", "extra"],
    ["list"],
    ["add", "f", "u", "-p", "x", "--password-stdin"],
    ["del", "f", "u", "-p", "x"],
    ["list", "f", "-n"],
    ["add", "f", "u", "--bogus"],
    ["add", "f", "u", "-p"],
    ["add", "f", "u", "--pass", "x"], // ambiguous prefix
  ];
  for (const args of cases) {
    const t = fakeTerminal();
    assert.equal(await runPasswdCommand(args, t.io), 2, args.join(" "));
    const lines = t.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 2, t.stderr);
    assert.match(lines[0]!, /^vncauthproxy passwd: /);
    assert.match(lines[1]!, /--help/);
    assert.equal(t.stdout, "");
    assert.deepEqual(t.prompts, []);
  }
});

Deno.test("passwd --help prints the help and exits 0", async () => {
  for (const args of [["--help"], ["-h"], ["add", "-h"]]) {
    const t = fakeTerminal();
    assert.equal(await runPasswdCommand(args, t.io), 0);
    assert.match(t.stdout, /^Usage: vncauthproxy passwd add FILE USER/);
    assert.match(t.stdout, /--password-stdin/);
    assert.equal(t.stderr, "");
  }
});

Deno.test("vncauthproxy-passwd adds, updates and deletes with snf's flags", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    await Deno.writeTextFile(file, `\nbob:${H5}\n`); // snf's tool crashed here
    await Deno.chmod(file, 0o640);

    const add = fakeTerminal(["hunter2", "hunter2"]);
    assert.equal(await runLegacyPasswdCommand([file, "alice"], add.io), 0);
    assert.deepEqual(add.prompts, ["Password: ", "Retype password: "]);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o640);
    let db = await UserDb.load(file);
    assert.equal(await db.verify("alice", "hunter2"), true);
    assert.equal(await db.verify("bob", "secret"), true);

    const update = fakeTerminal();
    assert.equal(
      await runLegacyPasswdCommand(["--pass", "pw2", file, "alice"], update.io),
      0,
    );
    db = await UserDb.load(file);
    assert.equal(await db.verify("alice", "pw2"), true);
    assert.deepEqual(db.users(), ["bob", "alice"]);

    const dry = fakeTerminal();
    assert.equal(
      await runLegacyPasswdCommand(["--dry", "--del", file, "bob"], dry.io),
      0,
    );
    assert.match(dry.stdout, /^\nalice:\$6\$/);

    const del = fakeTerminal();
    assert.equal(await runLegacyPasswdCommand(["-d", file, "bob"], del.io), 0);
    db = await UserDb.load(file);
    assert.deepEqual(db.users(), ["alice"]);

    const missing = fakeTerminal();
    assert.equal(
      await runLegacyPasswdCommand(["-d", file, "bob"], missing.io),
      1,
    );
    assert.equal(missing.stderr, "User not found\n");
    assertNoSecrets(add, "hunter2");
    assertNoSecrets(update, "pw2");
  });
});

Deno.test("vncauthproxy-passwd refuses -d with -p, bad names and empty passwords", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "users");
    const both = fakeTerminal();
    assert.equal(
      await runLegacyPasswdCommand(["-d", "-p", "x", file, "alice"], both.io),
      1,
    );
    assert.match(both.stderr, /Cannot specify -d and -p opts at the same time\n$/);
    assert.equal(both.stdout, "");

    const name = fakeTerminal();
    assert.equal(
      await runLegacyPasswdCommand(["-p", "x", file, "Alice"], name.io),
      1,
    );
    assert.equal(
      name.stderr,
      "Username must match the following regexp: ^[a-z_][a-z0-9_]{0,30}$\n",
    );

    const empty = fakeTerminal();
    assert.equal(
      await runLegacyPasswdCommand(["-p", "", file, "alice"], empty.io),
      1,
    );
    assert.equal(empty.stderr, "Password cannot be empty\n");

    const mismatch = fakeTerminal(["a", "b"]);
    assert.equal(await runLegacyPasswdCommand([file, "alice"], mismatch.io), 1);
    assert.equal(await exists(file), false);
  });
});

Deno.test("vncauthproxy-passwd usage errors exit 2 and -h exits 0", async () => {
  for (const args of [[], ["f"], ["f", "u", "x"], ["--bogus", "f", "u"], ["--d", "f", "u"]]) {
    const t = fakeTerminal();
    assert.equal(await runLegacyPasswdCommand(args, t.io), 2, args.join(" "));
    assert.match(
      t.stderr,
      /^usage: vncauthproxy-passwd \[-h\] \[-n\] \[-d\] \[-p PASSWORD\] file user\nvncauthproxy-passwd: error: /,
    );
    assert.equal(t.stdout, "");
  }
  const help = fakeTerminal();
  assert.equal(await runLegacyPasswdCommand(["-h"], help.io), 0);
  assert.match(help.stdout, /^usage: vncauthproxy-passwd/);
  assert.match(help.stdout, /--dry-run/);
});
