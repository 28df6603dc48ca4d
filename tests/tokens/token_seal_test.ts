import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  loadTokenStoreKey,
  MIN_TOKEN_STORE_KEY_BYTES,
  TokenStoreKey,
} from "../../src/tokens/token_seal.ts";
import { newToken } from "../../src/tokens/token_store.ts";
import { containsBytes } from "../_util/property.ts";

const enc = new TextEncoder();
const HANDOVER = enc.encode('{"host":"10.0.0.5","port":5901,"password":"backend-secret"}');
const REDIS_KEY = "vncauthproxy:token:0123abcd";

function randomKey(): TokenStoreKey {
  return new TokenStoreKey(crypto.getRandomValues(new Uint8Array(32)));
}

Deno.test("TokenStoreKey.seal() hides the handover and opens only with the same token, Redis key and shared key", () => {
  const key = randomKey();
  const token = newToken();
  const sealed = key.seal(HANDOVER, token, REDIS_KEY);
  assert.ok(!containsBytes(sealed, enc.encode("backend-secret")));
  assert.ok(!containsBytes(sealed, enc.encode(token)));
  assert.deepEqual(key.open(sealed, token, REDIS_KEY), HANDOVER);
  // Random IV: two seals of one handover differ.
  assert.notDeepEqual(key.seal(HANDOVER, token, REDIS_KEY), sealed);

  assert.equal(key.open(sealed, newToken(), REDIS_KEY), undefined, "another token");
  assert.equal(key.open(sealed, token, `${REDIS_KEY}x`), undefined, "another Redis key (AAD)");
  assert.equal(randomKey().open(sealed, token, REDIS_KEY), undefined, "another shared key");
  for (let i = 0; i < sealed.length; i++) {
    const tampered = sealed.slice();
    tampered[i]! ^= 0x01;
    assert.equal(key.open(tampered, token, REDIS_KEY), undefined, `byte ${i} changed`);
  }
  assert.equal(key.open(sealed.subarray(0, sealed.length - 1), token, REDIS_KEY), undefined);
  assert.equal(key.open(new Uint8Array(0), token, REDIS_KEY), undefined);
  // An empty handover seals and opens too.
  const empty = key.seal(new Uint8Array(0), token, REDIS_KEY);
  assert.deepEqual(key.open(empty, token, REDIS_KEY), new Uint8Array(0));
});

Deno.test("TokenStoreKey.addressTag() is equal for one address and key, different otherwise", () => {
  const key = randomKey();
  const tag = key.addressTag("192.0.2.7", REDIS_KEY);
  assert.equal(tag.length, 32);
  assert.deepEqual(key.addressTag("192.0.2.7", REDIS_KEY), tag);
  assert.notDeepEqual(key.addressTag("192.0.2.8", REDIS_KEY), tag);
  assert.notDeepEqual(key.addressTag("192.0.2.7", `${REDIS_KEY}x`), tag);
  assert.notDeepEqual(randomKey().addressTag("192.0.2.7", REDIS_KEY), tag);
  assert.ok(!containsBytes(tag, enc.encode("192.0.2.7")));
});

Deno.test("TokenStoreKey shows nothing of its key", () => {
  const material = new Uint8Array(32).fill(0x41);
  const key = new TokenStoreKey(material);
  assert.equal(Deno.inspect(key), "TokenStoreKey { [redacted] }");
  assert.equal(JSON.stringify({ key }), '{"key":"[redacted]"}');
  assert.throws(() => new TokenStoreKey(new Uint8Array(31)), RangeError);
});

Deno.test("loadTokenStoreKey() reads raw, hex and base64 key files, and one file gives one key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vap-key-" });
  try {
    const material = crypto.getRandomValues(new Uint8Array(32));
    const token = newToken();
    const reference = new TokenStoreKey(material).seal(HANDOVER, token, REDIS_KEY);
    const forms: [string, Uint8Array | string][] = [
      ["raw", material],
      ["hex", `${Buffer.from(material).toString("hex")}\n`],
      ["HEX", `  ${Buffer.from(material).toString("hex").toUpperCase()}  \n`],
      ["base64", `${Buffer.from(material).toString("base64")}\n`],
      ["base64url", Buffer.from(material).toString("base64url")],
    ];
    for (const [name, content] of forms) {
      const path = `${dir}/${name}`;
      if (typeof content === "string") await Deno.writeTextFile(path, content, { mode: 0o600 });
      else await Deno.writeFile(path, content, { mode: 0o600 });
      await Deno.chmod(path, 0o600);
      const key = await loadTokenStoreKey(path);
      assert.deepEqual(key.open(reference, token, REDIS_KEY), HANDOVER, name);
    }
    // Group-readable is fine (a group of daemons).
    await Deno.chmod(`${dir}/hex`, 0o640);
    await loadTokenStoreKey(`${dir}/hex`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTokenStoreKey() refuses a world-readable, short, large or missing file with a clear message", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vap-key-" });
  try {
    const write = async (name: string, content: Uint8Array | string, mode = 0o600) => {
      const path = `${dir}/${name}`;
      if (typeof content === "string") await Deno.writeTextFile(path, content);
      else await Deno.writeFile(path, content);
      await Deno.chmod(path, mode);
      return path;
    };
    const secretHex = "ab".repeat(32);
    const world = await write("world", secretHex, 0o644);
    await assert.rejects(loadTokenStoreKey(world), (error: Error) => {
      assert.match(
        error.message,
        /token store key file ".*world": readable by every user \(mode 644\)/,
      );
      assert.ok(!error.message.includes(secretHex));
      return true;
    });
    const short = await write("short", crypto.getRandomValues(new Uint8Array(31)));
    await assert.rejects(
      loadTokenStoreKey(short),
      new RegExp(`holds 31 bytes of key, at least ${MIN_TOKEN_STORE_KEY_BYTES}`),
    );
    const shortHex = await write("short-hex", "ab".repeat(31));
    // 62 hex digits are 31 bytes of key, not 62 raw bytes.
    await assert.rejects(loadTokenStoreKey(shortHex), /holds 31 bytes of key/);
    const big = await write("big", new Uint8Array(5000));
    await assert.rejects(loadTokenStoreKey(big), /larger than 4096 bytes/);
    await assert.rejects(loadTokenStoreKey(`${dir}/missing`), /"[^"]*missing": no such file/);
    await assert.rejects(loadTokenStoreKey(dir), /not a regular file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
