/**
 * The `--pid-file`: refuse to start while a live process holds it, replace
 * a stale one, remove it at exit.
 *
 * @module
 */

/** A PID file this process holds. */
export interface PidFile {
  /** Removes the file if it still names this process; idempotent. */
  release(): void;
}

/**
 * Writes this process's PID to `path` (atomically: temp file and rename).
 *
 * @throws {Deno.errors.AlreadyExists} when a live process holds the file.
 */
export function acquirePidFile(path: string): PidFile {
  const holder = readPid(path);
  if (holder !== undefined && holder !== Deno.pid && isAlive(holder)) {
    throw new Deno.errors.AlreadyExists(`PID file "${path}" is held by running process ${holder}`);
  }
  const temp = `${path}.${Deno.pid}.tmp`;
  Deno.writeTextFileSync(temp, `${Deno.pid}\n`, { mode: 0o644 });
  Deno.renameSync(temp, path);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      if (readPid(path) === Deno.pid) {
        try {
          Deno.removeSync(path);
        } catch {
          // Removed by someone else meanwhile: nothing to do.
        }
      }
    },
  };
}

function readPid(path: string): number | undefined {
  try {
    const text = Deno.readTextFileSync(path).trim();
    return /^\d+$/.test(text) ? Number(text) : undefined;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

function isAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}
