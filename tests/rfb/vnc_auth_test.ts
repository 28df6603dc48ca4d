import assert from "node:assert/strict";
import { newChallenge, verifyVncAuthResponse, vncAuthResponse } from "../../src/rfb/vnc_auth.ts";

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
