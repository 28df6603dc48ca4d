import assert from "node:assert/strict";
import { generateSalt, hashPassword, shaCrypt } from "../../src/auth/sha_crypt.ts";
import { DREPPER_VECTORS, SNF_VECTORS } from "../_util/crypt_vectors.ts";

Deno.test("shaCrypt() matches snf-vncauthproxy's crypt(3) vectors", () => {
  for (const [setting, password, expected] of SNF_VECTORS) {
    assert.equal(shaCrypt(password, setting), expected, setting);
    // A whole stored hash works as the setting.
    assert.equal(shaCrypt(password, expected), expected, expected);
  }
});

Deno.test("shaCrypt() matches Drepper's published vectors, rounds= included", () => {
  for (const [setting, password, expected] of DREPPER_VECTORS) {
    assert.equal(shaCrypt(password, setting), expected, setting);
  }
});

Deno.test("shaCrypt() keeps an explicit rounds=5000 and truncates the salt to 16", () => {
  const result = shaCrypt("secret", "$6$rounds=5000$saltsaltsaltsaltEXTRA");
  assert.match(result, /^\$6\$rounds=5000\$saltsaltsaltsalt\$/);
  assert.equal(
    result.slice("$6$rounds=5000$".length),
    SNF_VECTORS[1]![2].slice("$6$".length),
  );
});

Deno.test("shaCrypt() throws SyntaxError for unsupported ids", () => {
  for (
    const setting of ["$1$abcdefgh", "$y$j9T$salt", "$2b$10$x", "salt", ""]
  ) {
    assert.throws(() => shaCrypt("secret", setting), SyntaxError, setting);
  }
});

Deno.test("shaCrypt() encodes the password as UTF-8, like glibc crypt(3)", () => {
  // Made with `printf 'pässwörd ✓\n' | mkpasswd -m sha-512|sha-256 -S ... -s`.
  const password = "p\u00e4ssw\u00f6rd \u2713";
  const sha512 =
    "$6$abcdefghijklmnop$q700hF7ZGenNoPkEk27qhI.5HJ6/sYJzvJUM0BqAJwiqlfoAgE1EmcvRP1MHK6Sympu7qa3B1G16wVm15wRMZ1";
  const sha256 = "$5$abcdefghijklmnop$V4TanKaWYUXTMBQVttfvGo.K0qrdiFMAjLNSI0Xezz7";
  assert.equal(shaCrypt(password, "$6$abcdefghijklmnop"), sha512);
  assert.equal(shaCrypt(password, "$5$abcdefghijklmnop"), sha256);
  // No Unicode normalization: the decomposed form is another password.
  assert.notEqual(shaCrypt(password.normalize("NFD"), sha512), sha512);
});

Deno.test("generateSalt() draws from ./0-9A-Za-z with the requested length", () => {
  assert.equal(generateSalt().length, 16);
  assert.equal(generateSalt(8).length, 8);
  assert.equal(generateSalt(0), "");
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const salt = generateSalt();
    assert.match(salt, /^[./0-9A-Za-z]{16}$/);
    for (const char of salt) seen.add(char);
  }
  // 3200 draws over 64 characters: every character shows up.
  assert.equal(seen.size, 64);
  assert.notEqual(generateSalt(), generateSalt());
  assert.throws(() => generateSalt(-1), RangeError);
});

Deno.test("hashPassword() writes $6$, a 16-character salt and 86 characters", () => {
  const hash = hashPassword("secret");
  assert.match(hash, /^\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}$/);
  assert.equal(shaCrypt("secret", hash), hash);
  assert.notEqual(shaCrypt("Secret", hash), hash);
  assert.notEqual(hashPassword("secret"), hash);
});

Deno.test("hashPassword() writes rounds= only when not the default", () => {
  assert.doesNotMatch(hashPassword("x", { rounds: 5000 }), /rounds=/);
  const hash = hashPassword("x", { rounds: 1000 });
  assert.match(
    hash,
    /^\$6\$rounds=1000\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}$/,
  );
  assert.equal(shaCrypt("x", hash), hash);
  for (const rounds of [999, 1_000_000_000, 1500.5, Number.NaN]) {
    assert.throws(() => hashPassword("x", { rounds }), RangeError);
  }
});

const MKPASSWD = "/usr/bin/mkpasswd";
const hasMkpasswd = (() => {
  try {
    return Deno.statSync(MKPASSWD).isFile;
  } catch {
    return false;
  }
})();

async function mkpasswd(args: string[], password: string): Promise<string> {
  const child = new Deno.Command(MKPASSWD, {
    args: [...args, "--stdin"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(`${password}\n`));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const error = new TextDecoder().decode(stderr);
  assert.equal(code, 0, `mkpasswd ${args.join(" ")} failed: ${error}`);
  return new TextDecoder().decode(stdout).trim();
}

const MKPASSWD_CASES: readonly (readonly [string[], string])[] = [
  [["-m", "sha-512"], "secret"],
  [["-m", "sha-512"], "correct horse battery staple"],
  [["-m", "sha-512"], "pässwörd ✓"],
  [["-m", "sha-512", "-S", "abcdefghijklmnop"], "x"],
  [["-m", "sha-512", "-R", "7000"], "secret"],
  [["-m", "sha-512", "-R", "5000"], "secret"],
  [["-m", "sha-256"], "secret"],
  [["-m", "sha-256"], "pässwörd ✓"],
  [["-m", "sha-256", "-R", "7000"], "secret"],
];

Deno.test({
  name: "shaCrypt() verifies lines made by Debian's mkpasswd (needs mkpasswd)",
  ignore: !hasMkpasswd,
  async fn() {
    for (const [args, password] of MKPASSWD_CASES) {
      const line = await mkpasswd(args, password);
      const label = `mkpasswd ${args.join(" ")}`;
      assert.equal(shaCrypt(password, line), line, label);
      assert.notEqual(shaCrypt(`${password}!`, line), line, label);
    }
  },
});

Deno.test({
  name: "mkpasswd agrees with hashPassword() output (needs mkpasswd)",
  ignore: !hasMkpasswd,
  async fn() {
    const hash = hashPassword("secret");
    const salt = hash.split("$")[2]!;
    assert.equal(await mkpasswd(["-m", "sha-512", "-S", salt], "secret"), hash);
  },
});
