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
 * Writes this process's PID to `path` and holds an exclusive `flock` on it
 * until {@linkcode PidFile.release}. The lock, not the PID, says whether
 * the file is live: the kernel drops it when its holder dies, so a stale
 * file (or a reused PID) never blocks a start. Deno's permissions keep
 * `/proc/<pid>` and `kill(pid, 0)` out of reach of the daemon anyway.
 *
 * @throws {Deno.errors.AlreadyExists} when a live process holds the file.
 */
export function acquirePidFile(path: string): PidFile {
  let file: Deno.FsFile;
  for (let attempt = 1;; attempt++) {
    file = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o644 });
    try {
      if (!file.tryLockSync(true)) {
        const holder = readPid(path);
        throw new Deno.errors.AlreadyExists(
          `PID file "${path}" is held by running process ${holder ?? "(unknown PID)"}`,
        );
      }
      // The holder we waited for may have removed the file meanwhile: then
      // the lock is on an unlinked inode, so start over on the new path.
      if (sameFile(file, path) || attempt >= 5) break;
    } catch (error) {
      file.close();
      throw error;
    }
    file.close();
  }
  try {
    file.truncateSync(0);
    const bytes = new TextEncoder().encode(`${Deno.pid}\n`);
    for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
  } catch (error) {
    file.close();
    throw error;
  }
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      try {
        if (readPid(path) === Deno.pid) Deno.removeSync(path);
      } catch {
        // Removed by someone else meanwhile: nothing to do.
      } finally {
        file.close();
      }
    },
  };
}

function sameFile(file: Deno.FsFile, path: string): boolean {
  try {
    return file.statSync().ino === Deno.statSync(path).ino;
  } catch {
    return false;
  }
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
