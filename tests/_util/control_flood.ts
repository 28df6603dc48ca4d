/**
 * A control-request flood in its own process, so the flooding clients never
 * share an event loop with what a test measures meanwhile:
 *
 *     deno run --allow-net control_flood.ts PORT CLIENTS MS < REQUEST
 *
 * CLIENTS parallel loops send REQUEST (stdin) to 127.0.0.1:PORT, each as
 * soon as its last one is answered, for MS milliseconds. On stdout: the line
 * `flooding` when the loops start (the subprocess's own start-up is not part
 * of the flood), then one JSON line:
 * `{"answered": N, "reasons": {"authentication failed": N, ...}}`.
 * Refused or reset requests count under the error's name.
 *
 * @module
 */

import { rawControl, readLines } from "./daemon_process.ts";

/** What {@linkcode runControlFlood} reports. */
export interface FloodResult {
  /** Requests that got a reply. */
  readonly answered: number;
  /** Replies by reason, and failed requests by error name. */
  readonly reasons: Readonly<Record<string, number>>;
}

const FLOOD_SCRIPT = new URL(import.meta.url).pathname;

/** A flood running in its subprocess. */
export interface RunningFlood {
  /** Resolves when the clients start sending. */
  readonly started: Promise<void>;
  /** Resolves when the flood is over. */
  readonly result: Promise<FloodResult>;
}

/** Starts the flood in a subprocess. */
export function runControlFlood(
  port: number,
  request: string,
  options: { clients: number; ms: number },
): RunningFlood {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      FLOOD_SCRIPT,
      String(port),
      String(options.clients),
      String(options.ms),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const started = Promise.withResolvers<void>();
  const result = (async () => {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(request));
    await writer.close();
    let last = "";
    for await (const line of readLines(child.stdout)) {
      if (line === "flooding") started.resolve();
      last = line;
    }
    const status = await child.status;
    if (!status.success) throw new Error(`The flood process failed with code ${status.code}`);
    return JSON.parse(last) as FloodResult;
  })();
  result.catch((error) => started.reject(error));
  return { started: started.promise, result };
}

async function flood(port: number, request: string, clients: number, ms: number) {
  const end = performance.now() + ms;
  const reasons: Record<string, number> = {};
  let answered = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end) {
        let reason: string;
        try {
          reason = JSON.parse(await rawControl(port, request)).reason;
          answered++;
        } catch (error) {
          reason = error instanceof Error ? error.name : String(error);
        }
        reasons[reason] = (reasons[reason] ?? 0) + 1;
      }
    }),
  );
  return { answered, reasons };
}

if (import.meta.main) {
  const [port, clients, ms] = Deno.args.map(Number);
  const request = await new Response(Deno.stdin.readable).text();
  await Deno.stdout.write(new TextEncoder().encode("flooding\n"));
  const result = await flood(port!, request, clients!, ms!);
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(result) + "\n"));
}
