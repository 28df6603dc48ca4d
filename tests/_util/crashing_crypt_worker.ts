/**
 * A crypt Worker for tests that fails on purpose: the password `crash`
 * throws an uncaught error, `vanish` closes the worker without a word (Deno
 * fires no event for that), any
 * other password is crypt-ed as the real worker does.
 *
 * @module
 */

import type { CryptReply, CryptRequest } from "../../src/auth/crypt_pool.ts";
import { shaCrypt } from "../../src/auth/sha_crypt.ts";

const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<CryptRequest>) => void) | null;
  postMessage(message: CryptReply | unknown): void;
  close(): void;
};

scope.onmessage = (event) => {
  const { id, password, setting } = event.data;
  if (password === "crash") throw new Error("Crashed on purpose");
  if (password === "vanish") return scope.close();
  scope.postMessage({ id, hash: shaCrypt(password, setting) });
};
