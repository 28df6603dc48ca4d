import assert from "node:assert/strict";
import {
  newChallenge,
  verifyVncAuthResponse,
  VncAuthKey,
  vncAuthResponse,
} from "../../src/rfb/vnc_auth.ts";

const CHALLENGE = Uint8Array.from({ length: 16 }, (_, i) => i);
const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("vncAuthResponse() matches the known answers of snf's d3des (peers.md §1.8)", () => {
  const table: [string, string][] = [
    ["", "491e890de9ace932838a49792f2213f3"],
    ["secret", "ee22539f33a5983ec12f9c2edbc995dd"],
    ["password", "b866924125c8eebb9debc1db61c538e2"],
    ["password-longer", "b866924125c8eebb9debc1db61c538e2"],
    ["12345678", "83dd2b4dbd04367f28578fdd5b142740"],
  ];
  for (const [password, expected] of table) {
    assert.equal(hex(vncAuthResponse(password, CHALLENGE)), expected, password);
  }
});

Deno.test("verifyVncAuthResponse() accepts the right response and rejects others", () => {
  const response = vncAuthResponse("secret", CHALLENGE);
  assert.equal(verifyVncAuthResponse("secret", CHALLENGE, response), true);
  assert.equal(verifyVncAuthResponse("secreT", CHALLENGE, response), false);
  assert.equal(verifyVncAuthResponse("secret", CHALLENGE, response.subarray(0, 15)), false);
  const flipped = response.slice();
  flipped[15]! ^= 1;
  assert.equal(verifyVncAuthResponse("secret", CHALLENGE, flipped), false);
});

Deno.test("newChallenge() returns 16 fresh random bytes", () => {
  const a = newChallenge();
  const b = newChallenge();
  assert.equal(a.length, 16);
  assert.notDeepEqual(a, b);
});

Deno.test("VncAuthKey gives the same responses as vncAuthResponse() and checks them", () => {
  for (const password of ["", "secret", "password", "12345678", "\xe9t\xe9"]) {
    const key = new VncAuthKey(password);
    const challenge = newChallenge();
    const response = key.response(challenge);
    assert.deepEqual(response, vncAuthResponse(password, challenge), password);
    assert.equal(key.verify(challenge, response), true, password);
    for (const at of [0, 7, 8, 15]) {
      const wrong = response.slice();
      wrong[at]! ^= 0x80;
      assert.equal(key.verify(challenge, wrong), false, `${password} byte ${at}`);
    }
    assert.equal(key.verify(challenge, response.subarray(0, 8)), false);
    assert.throws(() => key.verify(challenge.subarray(0, 8), response), RangeError);
  }
});

Deno.test("VncAuthKey.sameKey() compares what DES sees: 8 bytes, NUL-padded, bit 7 ignored", () => {
  const same: readonly (readonly [string, string])[] = [
    ["password", "password-longer"],
    ["12345678", "12345678x"],
    ["secret", "secret\0\0"],
    ["\xe9", "i"], // é is i with bit 7 set
    ["abc", "\xe1\xe2\xe3"],
    ["", "\0"],
  ];
  for (const [a, b] of same) {
    assert.equal(new VncAuthKey(a).sameKey(new VncAuthKey(b)), true, `${a} ~ ${b}`);
    // The responses agree too, which is why the keys count as one.
    assert.deepEqual(vncAuthResponse(a, CHALLENGE), vncAuthResponse(b, CHALLENGE));
  }
  const different: readonly (readonly [string, string])[] = [
    ["password", "passwore"],
    ["secret", "secreT"],
    ["1234567", "12345678"],
    ["a", "b"],
  ];
  for (const [a, b] of different) {
    assert.equal(new VncAuthKey(a).sameKey(new VncAuthKey(b)), false, `${a} / ${b}`);
  }
});
