/**
 * The Worker entry of {@linkcode CryptPool}: computes one SHA-crypt string
 * per message, so the ~15 ms of CPU each check costs never runs on the
 * daemon's event loop. Keep it static (`new URL("./crypt_worker.ts",
 * import.meta.url)` in the pool) and named by `deno compile --include`, or
 * the compiled executable cannot start it.
 *
 * @module
 */

import type { CryptReply, CryptRequest } from "./crypt_pool.ts";
import { shaCrypt } from "./sha_crypt.ts";

/**
 * The parts of a Worker's global scope this module uses, typed here rather
 * than with the `deno.worker` lib, which cannot share one type-check with
 * the daemon's window-scope modules.
 */
interface WorkerScope {
  onmessage: ((event: MessageEvent<CryptRequest>) => void) | null;
  postMessage(message: CryptReply): void;
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (event) => {
  const { id, password, setting } = event.data;
  try {
    scope.postMessage({ id, hash: shaCrypt(password, setting) });
  } catch (error) {
    // shaCrypt's messages name the setting's kind, never the password.
    scope.postMessage({ id, error: error instanceof Error ? error.name : "Error" });
  }
};
