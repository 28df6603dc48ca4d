/**
 * The CLI's output channels: what every subcommand writes to, so tests can
 * capture it and the dispatcher alone decides exit codes.
 *
 * @module
 */

/** The CLI's output channels, replaceable in tests. */
export interface CliIo {
  /** Writes to standard output. */
  stdout(text: string): void;
  /** Writes to standard error. */
  stderr(text: string): void;
}

const encoder = new TextEncoder();

/** Standard output and error of the process. */
export const processIo: CliIo = {
  stdout: (text) => void Deno.stdout.writeSync(encoder.encode(text)),
  stderr: (text) => void Deno.stderr.writeSync(encoder.encode(text)),
};
