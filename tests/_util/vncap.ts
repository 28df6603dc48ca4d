/**
 * A daemon with a vncap control socket, and a vncap client as Ganeti Web
 * Manager's `vapclient.py` is: one JSON line with `\r\n`, read the reply.
 *
 * @module
 */

import { type DaemonProcess, startDaemon } from "./daemon_process.ts";

/** A daemon with `--vncap-listen` on loopback. */
export interface VncapDaemon extends AsyncDisposable {
  readonly daemon: DaemonProcess;
  /** The vncap control port (0 on a Unix socket). */
  readonly vncapPort: number;
  /** First port of its vncap pool. */
  readonly poolMin: number;
  /** Last port of its vncap pool. */
  readonly poolMax: number;
}

/**
 * Starts a daemon with a vncap socket on `127.0.0.1:0` (or `listen`) and a
 * random vncap pool of `poolSize` ports apart from snf's.
 */
export async function startVncapDaemon(
  options: { args?: readonly string[]; listen?: string; poolSize?: number; cwd?: string } = {},
): Promise<VncapDaemon> {
  // Above snf's pools (the tests' random ones and the default) and below
  // the ephemeral range.
  const size = options.poolSize ?? 20;
  const min = 30_100 + Math.floor(Math.random() * (32_700 - 30_100 - size));
  const pool = { min, max: min + size - 1 };
  const daemon = await startDaemon({
    args: [
      `--vncap-listen=${options.listen ?? "127.0.0.1:0"}`,
      `--vncap-min-port=${pool.min}`,
      `--vncap-max-port=${pool.max}`,
      ...(options.args ?? []),
    ],
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  });
  let vncapPort = 0;
  try {
    const line = await daemon.waitForLine(/Listening for vncap control connections on /);
    const match = /vncap control connections on [^\s,]*?:(\d+)[,\s]/.exec(line);
    if (match) vncapPort = Number(match[1]);
  } catch (error) {
    await daemon[Symbol.asyncDispose]();
    throw error;
  }
  return {
    daemon,
    vncapPort,
    poolMin: pool.min,
    poolMax: pool.max,
    [Symbol.asyncDispose]: () => daemon[Symbol.asyncDispose](),
  };
}

/** Sends `bytes` (in `pieces`, with a pause between) and returns the whole raw reply. */
export async function vncapRaw(
  where: number | string,
  pieces: readonly (string | Uint8Array)[],
): Promise<string> {
  const conn = typeof where === "number"
    ? await Deno.connect({ hostname: "127.0.0.1", port: where })
    : await Deno.connect({ transport: "unix", path: where });
  try {
    for (const [i, piece] of pieces.entries()) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, 50));
      await conn.write(typeof piece === "string" ? new TextEncoder().encode(piece) : piece);
    }
    const chunks: number[] = [];
    const buffer = new Uint8Array(1024);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(...buffer.subarray(0, n));
    }
    return new TextDecoder().decode(Uint8Array.from(chunks));
  } finally {
    conn.close();
  }
}

/** One vncap request as GWM sends it: `json + "\r\n"`. */
export function vncapRequest(
  where: number | string,
  request: Record<string, unknown>,
): Promise<string> {
  return vncapRaw(where, [JSON.stringify(request) + "\r\n"]);
}

/** The port of a success reply; throws on `FAILED`. */
export function replyPort(reply: string): number {
  const match = /^(\d+)\r\n$/.exec(reply);
  if (match === null) throw new Error(`Not a port reply: ${JSON.stringify(reply)}`);
  return Number(match[1]);
}
