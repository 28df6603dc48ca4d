import assert from "node:assert/strict";
import { createCipheriv, randomBytes } from "node:crypto";
import { DesKey } from "../../src/rfb/des.ts";

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (text: string) => Uint8Array.from(text.match(/../g)!, (pair) => parseInt(pair, 16));

function encrypt(key: Uint8Array, block: Uint8Array): Uint8Array {
  const output = new Uint8Array(8);
  new DesKey(key).encrypt(block, 0, output, 0);
  return output;
}

/** Single DES by way of node:crypto: 3DES with K1 = K2 = K3 is single DES. */
function openSslDes(key: Uint8Array, block: Uint8Array): Uint8Array {
  const tripled = new Uint8Array(24);
  tripled.set(key);
  tripled.set(key, 8);
  tripled.set(key, 16);
  const cipher = createCipheriv("des-ede3-cbc", tripled, new Uint8Array(8));
  cipher.setAutoPadding(false);
  return new Uint8Array(cipher.update(block));
}

Deno.test("DesKey.encrypt() gives the published known answers", () => {
  const table: readonly (readonly [string, string, string])[] = [
    // The worked example of J. Orlin Grabbe, "The DES Algorithm Illustrated".
    ["133457799bbcdff1", "0123456789abcdef", "85e813540f0ab405"],
    // NBS SP 500-20 variable-plaintext test, first entry.
    ["0101010101010101", "8000000000000000", "95f8a5e5dd31d900"],
    ["0000000000000000", "0000000000000000", "8ca64de9c1b123a7"],
    ["ffffffffffffffff", "ffffffffffffffff", "7359b2163e4edc58"],
  ];
  for (const [key, plain, cipher] of table) {
    assert.equal(hex(encrypt(unhex(key), unhex(plain))), cipher, key);
  }
});

Deno.test("DesKey.encrypt() agrees with OpenSSL on 500 random keys and blocks", () => {
  for (let i = 0; i < 500; i++) {
    const key = new Uint8Array(randomBytes(8));
    const block = new Uint8Array(randomBytes(8));
    assert.equal(hex(encrypt(key, block)), hex(openSslDes(key, block)), `key ${hex(key)}`);
  }
});

Deno.test("DesKey.encrypt() ignores the parity bits and works in place at an offset", () => {
  const key = unhex("133457799bbcdff1");
  const noParity = key.map((byte) => byte & 0xfe);
  assert.deepEqual(encrypt(noParity, unhex("0123456789abcdef")), unhex("85e813540f0ab405"));
  const buffer = unhex("ff0123456789abcdefff");
  new DesKey(key).encrypt(buffer, 1, buffer, 1);
  assert.equal(hex(buffer), "ff85e813540f0ab405ff");
});

Deno.test("new DesKey() refuses a key that is not 8 bytes", () => {
  assert.throws(() => new DesKey(new Uint8Array(7)), RangeError);
  assert.throws(() => new DesKey(new Uint8Array(24)), RangeError);
});
