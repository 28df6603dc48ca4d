/**
 * A child process a test helper owns: its output kept (the tail) for error messages, and a
 * stop that always ends in an exit (SIGTERM, then SIGKILL after a grace period).
 *
 * @module
 */

import { concatBytes } from "../../src/io/bytes.ts";

/** Bytes of a child's output kept for error messages (the tail). */
const OUTPUT_TAIL_BYTES = 16 * 1024;
/** How long a child gets to exit after SIGTERM before SIGKILL. */
const KILL_GRACE_MS = 2_000;

/** A spawned program whose stdout and stderr are read into one tail. */
export class OwnedChild {
  readonly #child: Deno.ChildProcess;
  readonly #chunks: Uint8Array[] = [];
  #size = 0;
  readonly #drained: Promise<unknown>;
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;

  /** Spawns `command` with `args`, stdin closed. */
  constructor(command: string, args: readonly string[]) {
    this.#child = new Deno.Command(command, {
      args: [...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#drained = Promise.all([this.#drain(this.#child.stdout), this.#drain(this.#child.stderr)]);
    this.status = this.#child.status.then((status) => {
      this.#exited = true;
      return status;
    });
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** The last bytes of stdout and stderr together, as text. */
  output(): string {
    return new TextDecoder().decode(concatBytes(this.#chunks)).trim();
  }

  /** Sends `signal`; nothing when the process is gone. */
  kill(signal: Deno.Signal): void {
    signalChild(this.#child, signal);
  }

  /** SIGTERM, SIGKILL after a grace period; resolves when it exited and its output is read. */
  async stop(): Promise<Deno.CommandStatus> {
    await stopChild(this.#child);
    await this.#drained;
    return await this.status;
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const chunk of stream) {
      this.#chunks.push(chunk);
      this.#size += chunk.length;
      while (this.#size > OUTPUT_TAIL_BYTES && this.#chunks.length > 1) {
        this.#size -= this.#chunks.shift()!.length;
      }
    }
  }
}

/**
 * The one running child of a helper that can stop and start its program again (Redis,
 * HAProxy): `output()` is the running child's, or the last one's after it stopped.
 */
export class ChildSlot {
  #child: OwnedChild | undefined;
  #lastOutput = "";

  /** The running child, if any. */
  get current(): OwnedChild | undefined {
    return this.#child;
  }

  /** Takes `child` as the running one; throws while another runs. */
  set(child: OwnedChild): void {
    if (this.#child !== undefined) throw new Error("A child is running already");
    this.#child = child;
  }

  /** Stops the running child (see {@linkcode OwnedChild.stop}), keeping its output; idempotent. */
  async stop(): Promise<void> {
    const running = this.#child;
    this.#child = undefined;
    if (running === undefined) return;
    await running.stop();
    this.#lastOutput = running.output();
  }

  /** The tail of the running child's output, or of the last one's. */
  output(): string {
    return this.#child?.output() ?? this.#lastOutput;
  }
}

/**
 * The dispose of a helper that owns a child and a temp dir: `stop()`, then `dir` removed;
 * called again, it returns the first call's promise.
 */
export function stopThenRemove(stop: () => Promise<void>, dir: string): () => Promise<void> {
  let disposed: Promise<void> | undefined;
  return () =>
    disposed ??= (async () => {
      await stop();
      await Deno.remove(dir, { recursive: true });
    })();
}

/** Options of {@linkcode stopChild}. */
export interface StopChildOptions {
  /** How long the child may take to exit by itself before `signal`. @default 0 */
  readonly waitMs?: number;
  /** The signal that asks it to stop. @default "SIGTERM" */
  readonly signal?: Deno.Signal;
  /** How long after `signal` until SIGKILL. @default 2000 */
  readonly graceMs?: number;
}

/**
 * Waits up to `waitMs` for the child to exit by itself, then sends `signal` (SIGTERM), then
 * SIGKILL after a grace period, and waits for the exit.
 */
export async function stopChild(
  child: Deno.ChildProcess,
  options: StopChildOptions = {},
): Promise<Deno.CommandStatus> {
  const waitMs = options.waitMs ?? 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    if (waitMs > 0) {
      const exited = await Promise.race([
        child.status.then(() => true),
        new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), waitMs)),
      ]);
      if (exited) return await child.status;
    }
    timer = setTimeout(() => signalChild(child, "SIGKILL"), options.graceMs ?? KILL_GRACE_MS);
    signalChild(child, options.signal ?? "SIGTERM");
    return await child.status;
  } finally {
    clearTimeout(timer);
  }
}

/** Sends `signal` to `child`; nothing when it has exited. */
export function signalChild(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // Already exited.
  }
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `probe` every `intervalMs` until it returns a value other than undefined, the child
 * exits (then throws with its output), or `timeoutMs` passes (throws with the last reason
 * `probe` gave through `lastError`).
 */
export async function pollUntil<T>(
  what: string,
  child: OwnedChild | undefined,
  probe: () => Promise<T | undefined>,
  options: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const deadline = performance.now() + options.timeoutMs;
  let lastError = "no attempt";
  while (performance.now() < deadline) {
    if (child?.exited) {
      await child.stop();
      throw new Error(`${what}: the process exited: ${child.output()}`);
    }
    try {
      const value = await probe();
      if (value !== undefined) return value;
      lastError = "not yet";
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
    await delay(options.intervalMs ?? 50);
  }
  throw new Error(`${what} within ${options.timeoutMs} ms: ${lastError}`);
}

/** Waits until `check()` holds, looking every `intervalMs`; throws naming `what` after `timeoutMs`. */
export async function waitUntil(
  what: string,
  check: () => boolean,
  timeoutMs = 15_000,
  intervalMs = 10,
): Promise<void> {
  await pollUntil(what, undefined, () => Promise.resolve(check() ? true : undefined), {
    timeoutMs,
    intervalMs,
  });
}
