/**
 * Helpers for the end-to-end tests against real hypervisor backends (issue 11): the
 * forwarding asked for with `main.ts client --json` as an operator would, a capture
 * through the proxy compared with QEMU's own screen, a Unix listener that counts who
 * reached it, and the log scan for secrets.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ForwardingReply } from "../../src/control/snf/control_client.ts";
import { type DaemonProcess, runMain } from "./daemon_process.ts";
import { captureVnc, countDifferentPixels, type Image } from "./real_peers.ts";

/** The control user every backend test's daemon has. */
export const CONTROL_USER = "admin";
export const CONTROL_PASSWORD = "c0ntrol-Secret!";
export const USERS: Readonly<Record<string, string>> = { [CONTROL_USER]: CONTROL_PASSWORD };

/** What `main.ts client --json` printed and how it exited. */
export interface ClientResult {
  readonly code: number;
  readonly reply: ForwardingReply;
}

/**
 * Runs `main.ts client --json ARGS` against the daemon (the control user's flags
 * added) and parses its reply; throws when it printed no JSON (a usage error, say).
 */
export async function clientRequest(
  controlPort: number,
  args: readonly string[],
): Promise<ClientResult> {
  const run = await runMain([
    ...["client", "--server=127.0.0.1", `--server-port=${controlPort}`],
    ...[`--auth-user=${CONTROL_USER}`, `--auth-password=${CONTROL_PASSWORD}`, "--json"],
    ...args,
  ], { permissions: ["--allow-net", "--allow-read"] });
  let reply: ForwardingReply;
  try {
    reply = JSON.parse(run.stdout);
  } catch {
    throw new Error(
      `vncauthproxy client printed no reply (exit ${run.code}): ${run.stdout}${run.stderr}`,
    );
  }
  return { code: run.code, reply };
}

/** Asserts a FAILED reply with exactly `reason`, exit code 1 and no port. */
export function assertFailed(result: ClientResult, reason: string | RegExp): void {
  const text = JSON.stringify(result.reply);
  assert.equal(result.reply.status, "FAILED", text);
  if (typeof reason === "string") assert.equal(result.reply.reason, reason, text);
  else assert.match(result.reply.reason ?? "", reason, text);
  assert.equal(result.reply.source_port, 0, text);
  assert.equal(result.reply.token, undefined, text);
  assert.equal(result.code, 1, text);
}

/** Asserts an OK reply (exit code 0) and returns its port. */
export function assertOk(result: ClientResult): number {
  const text = JSON.stringify(result.reply);
  assert.equal(result.reply.status, "OK", text);
  assert.equal(result.code, 0, text);
  assert.ok(result.reply.source_port > 0, text);
  return result.reply.source_port;
}

/**
 * Captures the forwarded port with gvnccapture and the one-time password and asserts it
 * shows `screen` (QEMU's screendump of its paused guest) pixel for pixel, within
 * `tolerance` per channel.
 */
export async function assertCaptureShows(
  port: number,
  viewerPassword: string,
  screen: Image,
  tolerance = 0,
): Promise<void> {
  const image = await captureVnc({
    host: "127.0.0.1",
    port,
    password: viewerPassword,
    timeoutMs: 20_000,
  });
  assert.deepEqual([image.width, image.height], [screen.width, screen.height]);
  assert.equal(countDifferentPixels(image, screen, tolerance), 0, "pixels differ from screendump");
}

/**
 * Asserts nothing the daemon printed (stderr, where it logs, and stdout) contains any of
 * `secrets`; the daemons of these tests run with `--debug`.
 */
export function assertNoSecrets(daemon: DaemonProcess, secrets: readonly string[]): void {
  assert.ok(daemon.lines.length > 0, "the daemon logged nothing");
  assert.ok(daemon.lines.some((line) => line.includes("DEBUG:")), "not at --debug");
  for (const line of [...daemon.lines, ...daemon.stdoutLines]) {
    for (const secret of secrets) assert.ok(!line.includes(secret), `secret in log: ${line}`);
  }
}

/** A Unix socket listener that accepts, counts and closes every connection. */
export interface CountingUnixListener extends AsyncDisposable {
  readonly path: string;
  /** Connections accepted so far. */
  readonly accepted: number;
}

/** Listens on the Unix socket `path`; disposing stops, waits and removes the socket. */
export function listenUnixCounting(path: string): CountingUnixListener {
  const listener = Deno.listen({ transport: "unix", path });
  let accepted = 0;
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        conn.close();
      }
    } catch {
      // Closed by dispose.
    }
  })();
  return {
    path,
    get accepted() {
      return accepted;
    },
    async [Symbol.asyncDispose]() {
      try {
        listener.close();
      } catch { /* already closed */ }
      await loop;
      await Deno.remove(path).catch(() => {});
    },
  };
}
