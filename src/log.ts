/**
 * The one logger. One line per event: time, program and PID, level, then the
 * message, which starts with the `[C<n>]` forwarding id for per-forwarding
 * events (the snf-vncauthproxy format, so existing log tooling keeps working):
 *
 *     2026-11-23 11:40:32 vncauthproxy[1234]  INFO: [C3] Connection from 192.0.2.7:51234
 *
 * Callers never pass a password, one-time password, hash or token; the
 * messages are built from request fields that are not secret.
 *
 * @module
 */

/** `--log-format`: snf's text lines, or one JSON object a line. */
export type LogFormat = "text" | "json";

/**
 * Structured fields of an event, for JSON lines (`event` names it); text
 * lines carry the same facts in their message. Never a secret.
 */
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

/** Severity of a log line, in increasing order. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVEL_RANK: Record<LogLevel, number> = {
  debug: 0,
  info: 1,
  warn: 2,
  error: 3,
};
const LEVEL_NAME: Record<LogLevel, string> = {
  debug: "DEBUG",
  info: "INFO",
  warn: "WARNING",
  error: "ERROR",
};

/** Where formatted lines go. */
export interface LogSink {
  /** Writes one complete line (with its newline). */
  write(line: string): void;
}

/** The logging interface passed to every module that logs. */
export interface Logger {
  /** Logs at DEBUG (only with `--debug`). */
  debug(message: string, fields?: LogFields): void;
  /** Logs at INFO. */
  info(message: string, fields?: LogFields): void;
  /** Logs at WARNING. */
  warn(message: string, fields?: LogFields): void;
  /** Logs at ERROR. */
  error(message: string, fields?: LogFields): void;
  /** Returns a logger whose lines start with `prefix` (e.g. `[C3]`). */
  child(prefix: string): Logger;
}

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. @default {"info"} */
  level?: LogLevel;
  /** Destinations of every line. @default {[stderrSink]} */
  sinks?: readonly LogSink[];
  /** Clock, for tests. @default {() => new Date()} */
  now?: () => Date;
  /** Program name in each line. @default {"vncauthproxy"} */
  program?: string;
  /**
   * `text`: snf's lines; `json`: one object a line with `time` (ISO 8601,
   * UTC), `level`, `id` (the forwarding id, e.g. `C3`, when there is one),
   * `event` (`message` unless the caller named it), `msg` and the
   * caller's fields. @default {"text"}
   */
  format?: LogFormat;
}

const encoder = new TextEncoder();

/** A sink writing to the process's standard error. */
export const stderrSink: LogSink = {
  write(line: string): void {
    writeAllSync(Deno.stderr, encoder.encode(line));
  },
};

/** Creates the root logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const threshold = LEVEL_RANK[options.level ?? "info"];
  const sinks = options.sinks ?? [stderrSink];
  const now = options.now ?? (() => new Date());
  const program = options.program ?? "vncauthproxy";
  const head = `${program}[${Deno.pid}]`;
  const json = options.format === "json";

  function emit(level: LogLevel, prefix: string, message: string, fields?: LogFields): void {
    if (LEVEL_RANK[level] < threshold) return;
    const text = sanitizeLogText(message);
    const line = json
      ? jsonLine(now(), level, prefix, text, fields)
      : `${formatTime(now())} ${head}  ${LEVEL_NAME[level]}: ${prefix}${text}\n`;
    for (const sink of sinks) sink.write(line);
  }

  function make(prefix: string): Logger {
    return {
      debug: (message, fields) => emit("debug", prefix, message, fields),
      info: (message, fields) => emit("info", prefix, message, fields),
      warn: (message, fields) => emit("warn", prefix, message, fields),
      error: (message, fields) => emit("error", prefix, message, fields),
      child: (more) => make(`${prefix}${more} `),
    };
  }

  function jsonLine(
    date: Date,
    level: LogLevel,
    prefix: string,
    text: string,
    fields: LogFields | undefined,
  ): string {
    // `[C3] ` prefixes name the forwarding (the innermost one wins).
    const ids = [...prefix.matchAll(/\[([^\]]*)\]/g)].map((m) => m[1]);
    const record: Record<string, unknown> = {
      time: date.toISOString(),
      level,
      program,
      pid: Deno.pid,
      ...(ids.length > 0 ? { id: ids[ids.length - 1] } : {}),
      event: "message",
      msg: text,
    };
    for (const [key, value] of Object.entries(fields ?? {})) {
      if (value !== undefined && !(key in record && key !== "event")) record[key] = value;
    }
    return `${JSON.stringify(record)}\n`;
  }
  return make("");
}

/** A logger that drops everything, for tests and library callers. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};

/**
 * A sink appending to a file, reopened on demand (SIGHUP) so logrotate can
 * move the file away without `copytruncate`.
 */
export class FileSink implements LogSink {
  readonly #path: string;
  #file: Deno.FsFile;

  /** Opens `path` for appending, creating it with mode 0640. */
  constructor(path: string) {
    this.#path = path;
    this.#file = FileSink.#open(path);
  }

  static #open(path: string): Deno.FsFile {
    return Deno.openSync(path, {
      append: true,
      create: true,
      mode: 0o640,
    });
  }

  /** Appends one line. */
  write(line: string): void {
    writeAllSync(this.#file, encoder.encode(line));
  }

  /** Reopens the file at its path; keeps the old handle if that fails. */
  reopen(): void {
    const next = FileSink.#open(this.#path);
    this.#file.close();
    this.#file = next;
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}

function writeAllSync(
  target: Deno.FsFile | typeof Deno.stderr,
  data: Uint8Array,
): void {
  let offset = 0;
  while (offset < data.length) {
    offset += target.writeSync(data.subarray(offset));
  }
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

function formatTime(date: Date): string {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/**
 * Removes control characters so text from a peer (a VNC server's reason, a
 * host name) cannot forge extra log lines.
 */
export function sanitizeLogText(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f]/g, "?");
}
