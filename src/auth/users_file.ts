/**
 * The control users file: one `user:$6$salt$hash` line per user (crypt(3)
 * output, as `mkpasswd -m sha-512` and snf's `vncauthproxy-passwd` write),
 * its parsing, in-place editing and atomic rewriting. `user_db.ts` checks
 * the passwords.
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { DEFAULT_ROUNDS, MAX_ROUNDS, MIN_ROUNDS } from "./sha_crypt.ts";

/**
 * A `$5$` or `$6$` crypt string with an optional canonical `rounds=` field
 * and a salt of at most 16 characters. Stricter than crypt(3) on purpose: a
 * line that could never verify fails at load rather than at login.
 */
const CRYPT_HASH =
  /^\$([56])\$(?:rounds=([1-9]\d{3,8})\$)?(?!rounds=)[^$:\s]{0,16}\$([./0-9A-Za-z]+)$/;
/** Encoded hash length by crypt id. */
const HASH_LENGTH: Readonly<Record<string, number>> = { "5": 43, "6": 86 };

/** Whether `hash` is a `$5$`/`$6$` crypt string that `UserDb` accepts. */
export function isSupportedHash(hash: string): boolean {
  const match = CRYPT_HASH.exec(hash);
  if (match === null || match[3]!.length !== HASH_LENGTH[match[1]!]) {
    return false;
  }
  const rounds = cryptRounds(hash);
  return rounds >= MIN_ROUNDS && rounds <= MAX_ROUNDS;
}

/**
 * The SHA-crypt rounds of a supported `hash` (see {@linkcode isSupportedHash}):
 * its `rounds=` field, or the default 5000 without one. The cost of checking
 * a password grows linearly with it.
 */
export function cryptRounds(hash: string): number {
  const field = /^\$[56]\$rounds=(\d+)\$/.exec(hash);
  return field === null ? DEFAULT_ROUNDS : Number(field[1]);
}

/** Options of {@linkcode parseUsersFile}. */
export interface ParseUsersFileOptions {
  /**
   * Largest `rounds=` accepted: a line above it is refused, as one check of
   * `rounds=999999999` would take about an hour of CPU.
   * @default {999_999_999}
   */
  readonly maxRounds?: number;
}

/**
 * Why the hash of `user` cannot be used, or `undefined` when it can. The
 * reason never holds the hash.
 */
export function hashProblem(
  user: string,
  hash: string,
  options: ParseUsersFileOptions = {},
): string | undefined {
  if (!isSupportedHash(hash)) {
    return `the hash of user "${user}" is not a SHA-256 or SHA-512 crypt string`;
  }
  const rounds = cryptRounds(hash);
  const max = options.maxRounds ?? MAX_ROUNDS;
  if (rounds > max) {
    return `the hash of user "${user}" has rounds=${rounds}, more than the limit of ${max} (--max-crypt-rounds)`;
  }
  return undefined;
}

/** One line of a users file, split into its parts. */
type Line =
  | { readonly kind: "other" }
  | { readonly kind: "user"; readonly user: string; readonly hash: string }
  | { readonly kind: "malformed"; readonly reason: string };

function classifyLine(raw: string): Line {
  const line = raw.trim();
  if (line === "" || line.startsWith("#")) return { kind: "other" };
  const colon = line.indexOf(":");
  if (colon <= 0) {
    return { kind: "malformed", reason: 'expected "user:hash"' };
  }
  return {
    kind: "user",
    user: line.slice(0, colon),
    hash: line.slice(colon + 1),
  };
}

/**
 * Parses a users file into a map from user name to stored crypt string.
 *
 * Blank lines and `#` comments are skipped, surrounding whitespace and `\r`
 * are ignored, each line splits on its first `:`, and of duplicate users the
 * last line wins (as in snf-vncauthproxy).
 *
 * @throws {SyntaxError} for a line without `user:`, whose hash is not a
 * `$5$`/`$6$` crypt string, or whose `rounds=` is above
 * `options.maxRounds`. The message names the line number and the user,
 * never the hash.
 */
export function parseUsersFile(
  text: string,
  options: ParseUsersFileOptions = {},
): Map<string, string> {
  const users = new Map<string, string>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = classifyLine(lines[i]!);
    if (line.kind === "other") continue;
    if (line.kind === "malformed") {
      throw new SyntaxError(`Malformed line ${i + 1}: ${line.reason}`);
    }
    const problem = hashProblem(line.user, line.hash, options);
    if (problem !== undefined) throw new SyntaxError(`Malformed line ${i + 1}: ${problem}`);
    users.delete(line.user);
    users.set(line.user, line.hash);
  }
  return users;
}

/** Formats `entries` as a users file, one `user:hash` line each. */
export function serializeUsersFile(
  entries: ReadonlyMap<string, string>,
): string {
  let text = "";
  for (const [user, hash] of entries) text += `${user}:${hash}\n`;
  return text;
}

/** Splits `text` into lines that keep their terminator. */
function splitKeepingEnds(text: string): string[] {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/**
 * Sets the hash of `user` in the users file `text`, keeping every other line
 * (comments and blank lines included) in place: the user's first line is
 * replaced where it is, later duplicates are dropped, and a new user is
 * appended.
 */
export function setUserInText(
  text: string,
  user: string,
  hash: string,
): string {
  const lines = splitKeepingEnds(text);
  let found = false;
  const out: string[] = [];
  for (const raw of lines) {
    const line = classifyLine(raw);
    if (line.kind !== "user" || line.user !== user) {
      out.push(raw);
      continue;
    }
    if (found) continue;
    found = true;
    out.push(`${user}:${hash}${lineEnd(raw)}`);
  }
  if (!found) {
    const last = out.at(-1);
    const eol = lines.length > 0 && lines[0]!.endsWith("\r\n") ? "\r\n" : "\n";
    if (last !== undefined && !last.endsWith("\n")) out.push(eol);
    out.push(`${user}:${hash}${eol}`);
  }
  return out.join("");
}

/**
 * Removes every line of `user` from the users file `text`, keeping the other
 * lines in place; returns `undefined` when the user has no line.
 */
export function deleteUserFromText(
  text: string,
  user: string,
): string | undefined {
  const lines = splitKeepingEnds(text);
  const out = lines.filter((raw) => {
    const line = classifyLine(raw);
    return line.kind !== "user" || line.user !== user;
  });
  return out.length === lines.length ? undefined : out.join("");
}

function lineEnd(raw: string): string {
  if (raw.endsWith("\r\n")) return "\r\n";
  return "\n";
}

/**
 * Replaces the file at `path` with `text` atomically: writes a temporary
 * file with a random name in the same directory (mode 0600), flushes it to
 * disk, gives it the mode, owner and group of the existing file, and renames
 * it over `path`. A new file is mode 0600. On any failure the temporary file
 * is removed and the old file is left as it was.
 *
 * @throws {Deno.errors.PermissionDenied} (or another `Deno.errors` class)
 * when a step fails, including when the owner or group of the existing file
 * cannot be kept (not root and not already the owner).
 */
export async function writeUsersFileAtomic(
  path: string,
  text: string,
): Promise<void> {
  const tempPath = join(
    dirname(path),
    `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`,
  );
  const file = await Deno.open(tempPath, {
    write: true,
    createNew: true,
    mode: 0o600,
  });
  try {
    try {
      const bytes = new TextEncoder().encode(text);
      for (let written = 0; written < bytes.length;) {
        written += await file.write(bytes.subarray(written));
      }
      await file.sync();
    } finally {
      file.close();
    }
    const target = await statIfExists(path);
    if (target === null) {
      // The umask could have removed bits from the mode given to open().
      await Deno.chmod(tempPath, 0o600);
    } else {
      await Deno.chmod(tempPath, (target.mode ?? 0o600) & 0o7777);
      await keepOwner(tempPath, path, target);
    }
    await Deno.rename(tempPath, path);
  } catch (error) {
    await Deno.remove(tempPath).catch(() => {});
    throw error;
  }
  await syncDirectory(dirname(path));
}

async function statIfExists(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

async function keepOwner(
  tempPath: string,
  path: string,
  target: Deno.FileInfo,
): Promise<void> {
  if (target.uid === null || target.gid === null) return;
  try {
    await Deno.chown(tempPath, target.uid, target.gid);
  } catch (error) {
    const temp = await Deno.stat(tempPath);
    if (temp.uid === target.uid && temp.gid === target.gid) return;
    throw new Deno.errors.PermissionDenied(
      `Cannot keep the owner "${target.uid}:${target.gid}" of "${path}"`,
      { cause: error },
    );
  }
}

/** Makes the rename durable; best effort, as not every system allows it. */
async function syncDirectory(directory: string): Promise<void> {
  try {
    using dir = await Deno.open(directory, { read: true });
    await dir.sync();
  } catch {
    // The rename has happened; only its durability across a crash is at stake.
  }
}
