/**
 * `vncauthproxy passwd add|del|list`, and the snf-compatible
 * `vncauthproxy-passwd [-h] [-n] [-d] [-p PASSWORD] file user`: edit the
 * control users file in place, atomically, keeping its mode and owner.
 *
 * Passwords and hashes never go to stderr; stdout only gets help, the
 * `list` output and the `--dry-run` file.
 *
 * @module
 */

import { hashPassword } from "../auth/sha_crypt.ts";
import {
  deleteUserFromText,
  parseUsersFile,
  setUserInText,
  writeUsersFileAtomic,
} from "../auth/users_file.ts";
import { describeError, UsageError } from "../errors.ts";
import { formatOptionsHelp, type OptionSpec, parseOptions } from "./option_parser.ts";

/** The terminal, injected so tests need no TTY. */
export interface PasswdIo {
  /** Writes to standard output. */
  stdout(text: string): void;
  /** Writes to standard error. */
  stderr(text: string): void;
  /**
   * Shows `prompt` and reads one line without echo; `null` when the user
   * cancels (Ctrl-C, Ctrl-D or end of input).
   */
  readPassword(prompt: string): Promise<string | null>;
  /** Reads all of standard input. */
  readStdin(): Promise<string>;
}

const USERNAME_PATTERN = "^[a-z_][a-z0-9_]{0,30}$";
const USERNAME = new RegExp(USERNAME_PATTERN);

const PROGRAM = "vncauthproxy passwd";
const SYNOPSIS = [
  `Usage: ${PROGRAM} add FILE USER [-p PASSWORD | --password-stdin] [-n]`,
  `       ${PROGRAM} del FILE USER [-n]`,
  `       ${PROGRAM} list FILE`,
].join("\n");

const OPTIONS: readonly OptionSpec[] = [
  {
    long: "password",
    short: "p",
    kind: "string",
    metavar: "PASSWORD",
    help: "add: the password (visible in ps; prefer the prompt)",
  },
  {
    long: "password-stdin",
    kind: "flag",
    help: "add: read the password from the first line of stdin",
  },
  {
    long: "dry-run",
    short: "n",
    kind: "flag",
    help: "print the resulting file to stdout, change nothing",
  },
  { long: "help", short: "h", kind: "flag", help: "show this help and exit" },
];

const HELP = `${SYNOPSIS}

Manage the control users file of vncauthproxy: one user:$6$salt$hash line
per user (SHA-512 crypt). "add" adds or replaces USER and asks for the
password twice unless one is given; "del" removes USER; "list" prints the
user names. Writes are atomic and keep the file's mode and owner; new files
are created with mode 0600. User names must match ${USERNAME_PATTERN}.

Options:
${formatOptionsHelp(OPTIONS)}
`;

/** Where the password of an `add` comes from. */
type PasswordSource =
  | { readonly kind: "given"; readonly password: string }
  | { readonly kind: "stdin" }
  | { readonly kind: "prompt" };

/** One change to a users file, common to both commands. */
interface Edit {
  readonly file: string;
  readonly user: string;
  readonly dryRun: boolean;
  /** The password source of an add; absent for a delete. */
  readonly password?: PasswordSource;
}

/**
 * Runs `vncauthproxy passwd` with `args` (the words after `passwd`).
 *
 * @returns the exit status: 0 on success, 1 when the change is refused or
 * fails, 2 on a usage error.
 */
export async function runPasswdCommand(
  args: string[],
  io: PasswdIo,
): Promise<number> {
  let parsed;
  try {
    parsed = parseOptions(OPTIONS, args);
  } catch (error) {
    if (error instanceof UsageError) return usageError(io, error.message);
    throw error;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    io.stdout(HELP);
    return 0;
  }
  const [subcommand, ...operands] = positionals;
  if (subcommand === undefined) return usageError(io, "Missing subcommand");
  if (!["add", "del", "list"].includes(subcommand)) {
    return usageError(io, `Unknown subcommand "${subcommand}"`);
  }
  const wanted = subcommand === "list" ? 1 : 2;
  if (operands.length !== wanted) {
    const names = subcommand === "list" ? "FILE" : "FILE and USER";
    return usageError(io, `"${subcommand}" takes ${names}`);
  }
  const allowed: Record<string, readonly string[]> = {
    add: ["password", "password-stdin", "dry-run"],
    del: ["dry-run"],
    list: [],
  };
  const extra = Object.keys(values).find((name) => !allowed[subcommand]!.includes(name));
  if (extra !== undefined) {
    return usageError(io, `"${subcommand}" does not take --${extra}`);
  }
  if (values.password !== undefined && values["password-stdin"] === true) {
    return usageError(io, "Give either --password or --password-stdin");
  }

  const [file, user] = operands as [string, string];
  if (subcommand === "list") return await listUsers(io, file);
  let password: PasswordSource | undefined;
  if (subcommand === "add") {
    if (typeof values.password === "string") {
      password = { kind: "given", password: values.password };
    } else if (values["password-stdin"] === true) {
      password = { kind: "stdin" };
    } else {
      password = { kind: "prompt" };
    }
  }
  return await applyEdit(io, {
    file,
    user,
    dryRun: values["dry-run"] === true,
    password,
  });
}

const LEGACY_PROGRAM = "vncauthproxy-passwd";
const LEGACY_USAGE = `usage: ${LEGACY_PROGRAM} [-h] [-n] [-d] [-p PASSWORD] file user`;
const LEGACY_OPTIONS: readonly OptionSpec[] = [
  { long: "help", short: "h", kind: "flag", help: "show this help and exit" },
  {
    long: "dry-run",
    short: "n",
    kind: "flag",
    help: "print the resulting file to stdout, change nothing",
  },
  { long: "delete", short: "d", kind: "flag", help: "delete the user" },
  {
    long: "password",
    short: "p",
    kind: "string",
    metavar: "PASSWORD",
    help: "the password (visible in ps; prefer the prompt)",
  },
];
const LEGACY_HELP = `${LEGACY_USAGE}

Add, update or delete a user of the vncauthproxy users file.

positional arguments:
  file    the users file
  user    the user name

options:
${formatOptionsHelp(LEGACY_OPTIONS)}
`;

/**
 * Runs the snf-compatible `vncauthproxy-passwd` with its argparse flags
 * (prefixes such as `--dry`, `--del`, `--pass` included). Unlike snf's tool
 * it draws the salt from the CSPRNG, keeps the file's mode and owner,
 * tolerates blank lines and comments, asks for the password twice, and
 * refuses empty passwords even from `-p`.
 *
 * @returns the exit status: 0 on success, 1 when the change is refused or
 * fails (including `-d` with `-p`), 2 on a usage error.
 */
export async function runLegacyPasswdCommand(
  args: string[],
  io: PasswdIo,
): Promise<number> {
  let parsed;
  try {
    parsed = parseOptions(LEGACY_OPTIONS, args);
  } catch (error) {
    if (error instanceof UsageError) {
      return legacyUsageError(io, error.message);
    }
    throw error;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    io.stdout(LEGACY_HELP);
    return 0;
  }
  if (positionals.length < 2) {
    const missing = ["file", "user"].slice(positionals.length).join(", ");
    return legacyUsageError(
      io,
      `the following arguments are required: ${missing}`,
    );
  }
  if (positionals.length > 2) {
    return legacyUsageError(
      io,
      `unrecognized arguments: ${positionals.slice(2).join(" ")}`,
    );
  }
  const deleting = values.delete === true;
  if (deleting && values.password !== undefined) {
    io.stderr(
      `${LEGACY_USAGE}\nCannot specify -d and -p opts at the same time\n`,
    );
    return 1;
  }
  const [file, user] = positionals as [string, string];
  let password: PasswordSource | undefined;
  if (!deleting) {
    password = typeof values.password === "string"
      ? { kind: "given", password: values.password }
      : { kind: "prompt" };
  }
  return await applyEdit(io, {
    file,
    user,
    dryRun: values["dry-run"] === true,
    password,
  });
}

/** Prints the user names of `file`, one per line. */
async function listUsers(io: PasswdIo, file: string): Promise<number> {
  const text = await readUsersText(io, file);
  if (text === undefined) return 1;
  if (text === null) return fail(io, `File "${file}" does not exist`);
  const users = parseOrReport(io, file, text);
  if (users === undefined) return 1;
  for (const user of users.keys()) io.stdout(`${user}\n`);
  return 0;
}

/** Adds, replaces or deletes one user, or prints the result on a dry run. */
async function applyEdit(io: PasswdIo, edit: Edit): Promise<number> {
  const { file, user } = edit;
  if (!USERNAME.test(user)) {
    return fail(
      io,
      `Username must match the following regexp: ${USERNAME_PATTERN}`,
    );
  }
  const text = await readUsersText(io, file);
  if (text === undefined) return 1;
  // Refuse a malformed file before asking for a password.
  if (text !== null && parseOrReport(io, file, text) === undefined) return 1;

  let result: string;
  if (edit.password === undefined) {
    if (text === null) {
      return fail(io, `Cannot delete user from non-existent file "${file}"`);
    }
    const removed = deleteUserFromText(text, user);
    if (removed === undefined) return fail(io, "User not found");
    result = removed;
  } else {
    const password = await obtainPassword(io, edit.password);
    if (password === null) return 1;
    if (password === "") return fail(io, "Password cannot be empty");
    result = setUserInText(text ?? "", user, hashPassword(password));
  }

  if (edit.dryRun) {
    io.stdout(result);
    return 0;
  }
  try {
    await writeUsersFileAtomic(file, result);
  } catch (error) {
    return fail(io, `Cannot write "${file}": ${describeError(error)}`);
  }
  return 0;
}

/**
 * Returns the password, or `null` after reporting why there is none
 * (cancelled prompt or mismatched retype).
 */
async function obtainPassword(
  io: PasswdIo,
  source: PasswordSource,
): Promise<string | null> {
  switch (source.kind) {
    case "given":
      return source.password;
    case "stdin": {
      const input = await io.readStdin();
      const end = input.indexOf("\n");
      const line = end === -1 ? input : input.slice(0, end);
      return line.endsWith("\r") ? line.slice(0, -1) : line;
    }
    case "prompt": {
      const first = await io.readPassword("Password: ");
      if (first === null) {
        fail(io, "Cancelled");
        return null;
      }
      // An empty answer is refused by the caller; no point asking again.
      if (first === "") return first;
      const second = await io.readPassword("Retype password: ");
      if (second === null) {
        fail(io, "Cancelled");
        return null;
      }
      if (second !== first) {
        fail(io, "Passwords do not match");
        return null;
      }
      return first;
    }
  }
}

/**
 * Reads `file`: its text, `null` when it does not exist, or `undefined`
 * after reporting another failure.
 */
async function readUsersText(
  io: PasswdIo,
  file: string,
): Promise<string | null | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    fail(io, `Cannot read "${file}": ${describeError(error)}`);
    return undefined;
  }
}

/** Parses `text`, or reports the (hash-free) reason and returns `undefined`. */
function parseOrReport(
  io: PasswdIo,
  file: string,
  text: string,
): Map<string, string> | undefined {
  try {
    return parseUsersFile(text);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    fail(io, `Cannot parse "${file}": ${error.message}`);
    return undefined;
  }
}

function fail(io: PasswdIo, message: string): number {
  io.stderr(`${message}\n`);
  return 1;
}

function usageError(io: PasswdIo, message: string): number {
  io.stderr(
    `${PROGRAM}: ${message}\nTry "${PROGRAM} --help" for more information\n`,
  );
  return 2;
}

function legacyUsageError(io: PasswdIo, message: string): number {
  io.stderr(`${LEGACY_USAGE}\n${LEGACY_PROGRAM}: error: ${message}\n`);
  return 2;
}

/**
 * Returns the {@linkcode PasswdIo} of the real terminal: prompts go to
 * stderr, and on a TTY the password is read in raw mode without echo
 * (Backspace edits, Ctrl-U clears, Ctrl-C and Ctrl-D cancel). Without a TTY
 * a line is read from stdin.
 */
export function terminalPasswdIo(): PasswdIo {
  const encoder = new TextEncoder();
  const write = (stream: typeof Deno.stdout, text: string) => {
    const bytes = encoder.encode(text);
    for (let written = 0; written < bytes.length;) {
      written += stream.writeSync(bytes.subarray(written));
    }
  };
  // Bytes read past the end of one answer (typed ahead or piped), kept for
  // the next prompt.
  let pending = new Uint8Array(0);

  async function readPassword(prompt: string): Promise<string | null> {
    write(Deno.stderr, prompt);
    const raw = Deno.stdin.isTerminal();
    if (raw) Deno.stdin.setRaw(true);
    try {
      const answer: number[] = [];
      const chunk = new Uint8Array(256);
      while (true) {
        if (pending.length === 0) {
          const n = await Deno.stdin.read(chunk);
          if (n === null) {
            return answer.length > 0 ? decode(answer) : null;
          }
          pending = chunk.slice(0, n);
        }
        let index = 0;
        let outcome: "more" | "done" | "cancel" = "more";
        for (; index < pending.length && outcome === "more"; index++) {
          outcome = editLine(answer, pending[index]!, raw);
        }
        pending = pending.slice(index);
        if (outcome === "cancel") return null;
        if (outcome === "done") return decode(answer);
      }
    } finally {
      if (raw) Deno.stdin.setRaw(false);
      // The Enter key was not echoed (or the input was piped).
      write(Deno.stderr, "\n");
    }
  }

  return {
    stdout: (text) => write(Deno.stdout, text),
    stderr: (text) => write(Deno.stderr, text),
    readPassword,
    readStdin: () => new Response(Deno.stdin.readable).text(),
  };
}

/** Applies one input byte to the answer being typed. */
function editLine(
  answer: number[],
  byte: number,
  raw: boolean,
): "more" | "done" | "cancel" {
  if (byte === 0x0a || (raw && byte === 0x0d)) return "done";
  if (!raw) {
    answer.push(byte);
    return "more";
  }
  switch (byte) {
    case 0x03: // Ctrl-C
    case 0x04: // Ctrl-D
      return "cancel";
    case 0x15: // Ctrl-U
      answer.length = 0;
      return "more";
    case 0x08: // Backspace
    case 0x7f: { // Delete, what most terminals send for Backspace
      // Drop one UTF-8 character: its continuation bytes, then its lead.
      while (answer.length > 0 && (answer.at(-1)! & 0xc0) === 0x80) {
        answer.pop();
      }
      answer.pop();
      return "more";
    }
    default:
      answer.push(byte);
      return "more";
  }
}

function decode(bytes: number[]): string {
  const text = new TextDecoder().decode(new Uint8Array(bytes));
  return text.endsWith("\r") ? text.slice(0, -1) : text;
}
