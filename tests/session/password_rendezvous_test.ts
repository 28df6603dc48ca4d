import assert from "node:assert/strict";
import {
  PasswordCollisionError,
  PasswordRendezvous,
} from "../../src/session/password_rendezvous.ts";
import { RefusalError } from "../../src/errors.ts";
import { newChallenge, vncAuthResponse } from "../../src/rfb/vnc_auth.ts";

interface Pending {
  readonly backend: string;
}

const ONE: Pending = { backend: "10.0.0.1:5900" };
const TWO: Pending = { backend: "10.0.0.2:5900" };

Deno.test("PasswordRendezvous.match() gives each viewer the forwarding of its own password", () => {
  const rendezvous = new PasswordRendezvous<Pending>();
  rendezvous.register("Fe6Pe7ud", ONE);
  rendezvous.register("Q2xyTw9k", TWO);
  const challenge = newChallenge();
  assert.equal(rendezvous.match(challenge, vncAuthResponse("Q2xyTw9k", challenge)), TWO);
  const other = newChallenge();
  assert.equal(rendezvous.match(other, vncAuthResponse("Fe6Pe7ud", other)), ONE);
  assert.equal(rendezvous.size, 0);
});

Deno.test("PasswordRendezvous.match() takes an entry once", () => {
  const rendezvous = new PasswordRendezvous<Pending>();
  rendezvous.register("Fe6Pe7ud", ONE);
  const challenge = newChallenge();
  const response = vncAuthResponse("Fe6Pe7ud", challenge);
  assert.equal(rendezvous.match(challenge, response), ONE);
  assert.equal(rendezvous.match(challenge, response), undefined);
});

Deno.test("PasswordRendezvous.match() with a wrong response matches nothing and burns nothing", () => {
  const rendezvous = new PasswordRendezvous<Pending>();
  rendezvous.register("Fe6Pe7ud", ONE);
  rendezvous.register("Q2xyTw9k", TWO);
  const challenge = newChallenge();
  const right = vncAuthResponse("Fe6Pe7ud", challenge);
  const wrongs = [
    vncAuthResponse("Fe6Pe7uD", challenge),
    vncAuthResponse("", challenge),
    vncAuthResponse("Fe6Pe7ud", newChallenge()), // a replay from another challenge
    new Uint8Array(16),
    right.subarray(0, 15),
    Uint8Array.from([...right.subarray(0, 8), ...new Uint8Array(8)]), // first half right
  ];
  for (const wrong of wrongs) assert.equal(rendezvous.match(challenge, wrong), undefined);
  assert.equal(rendezvous.size, 2);
  assert.equal(rendezvous.match(challenge, right), ONE);
  assert.throws(() => rendezvous.match(new Uint8Array(8), right), RangeError);
});

Deno.test("PasswordRendezvous.register() refuses a password DES cannot tell from a pending one", () => {
  const collisions: readonly (readonly [string, string])[] = [
    ["Fe6Pe7ud", "Fe6Pe7ud"],
    ["password1", "password2"], // equal in the first 8 bytes
    ["short", "short\0"], // NUL padding
    ["\xe9t\xe9", "iti"], // é is i with bit 7 set, which DES ignores
    ["Fe6Pe7ud", "\xc6\xe5\xb6\xd0\xe5\xb7\xf5\xe4"], // every byte's bit 7 flipped
  ];
  for (const [pending, arriving] of collisions) {
    const rendezvous = new PasswordRendezvous<Pending>();
    rendezvous.register(pending, ONE);
    assert.throws(() => rendezvous.register(arriving, TWO), (error: unknown) => {
      assert.ok(error instanceof PasswordCollisionError);
      assert.ok(error instanceof RefusalError);
      assert.equal(error.name, "PasswordCollisionError");
      assert.ok(!error.message.includes(pending) && !error.message.includes(arriving));
      return true;
    });
    assert.equal(rendezvous.size, 1);
    // The refusal was right: a viewer of the second password would have reached the first.
    const challenge = newChallenge();
    assert.equal(rendezvous.match(challenge, vncAuthResponse(arriving, challenge)), ONE);
  }
});

Deno.test("PasswordRendezvous.register() refuses the same entry twice", () => {
  const rendezvous = new PasswordRendezvous<Pending>();
  rendezvous.register("Fe6Pe7ud", ONE);
  assert.throws(() => rendezvous.register("Q2xyTw9k", ONE), TypeError);
});

Deno.test("PasswordRendezvous.remove() drops an entry, whose password is free again", () => {
  const rendezvous = new PasswordRendezvous<Pending>();
  rendezvous.register("Fe6Pe7ud", ONE);
  assert.equal(rendezvous.remove(ONE), true);
  assert.equal(rendezvous.remove(ONE), false);
  const challenge = newChallenge();
  assert.equal(rendezvous.match(challenge, vncAuthResponse("Fe6Pe7ud", challenge)), undefined);
  rendezvous.register("Fe6Pe7ud", TWO);
  assert.equal(rendezvous.match(challenge, vncAuthResponse("Fe6Pe7ud", challenge)), TWO);
});

Deno.test("PasswordRendezvous shows no password when inspected", () => {
  const rendezvous = new PasswordRendezvous<Pending>();
  rendezvous.register("Fe6Pe7ud", ONE);
  for (const text of [Deno.inspect(rendezvous, { showHidden: true }), JSON.stringify(rendezvous)]) {
    assert.ok(!text.includes("Fe6Pe7ud"), text);
  }
  assert.equal(Deno.inspect(rendezvous), "PasswordRendezvous { pending: 1 }");
});

Deno.test("PasswordRendezvous.match() over 1,000 pending forwardings: cost printed", () => {
  const rendezvous = new PasswordRendezvous<Pending>();
  const passwords = Array.from({ length: 1_000 }, (_, i) => `pw${String(i).padStart(6, "0")}`);
  const entries = passwords.map((password) => ({ backend: password }));
  let start = performance.now();
  passwords.forEach((password, i) => rendezvous.register(password, entries[i]!));
  const registerMs = performance.now() - start;

  const challenge = newChallenge();
  const wrong = vncAuthResponse("not pending", challenge);
  for (let i = 0; i < 20; i++) rendezvous.match(challenge, wrong); // warm up the JIT
  const samples: number[] = [];
  for (let i = 0; i < 50; i++) {
    start = performance.now();
    assert.equal(rendezvous.match(challenge, wrong), undefined);
    samples.push(performance.now() - start);
  }
  samples.sort((a, b) => a - b);
  // The last registered is tried last: the worst case of a match that succeeds.
  const last = vncAuthResponse(passwords.at(-1)!, challenge);
  start = performance.now();
  assert.equal(rendezvous.match(challenge, last), entries.at(-1));
  const lastMs = performance.now() - start;
  // deno-lint-ignore no-console
  console.log(
    `1,000 pending: register ${(registerMs * 1000 / 1_000).toFixed(1)} µs each; ` +
      `a miss ${samples[25]!.toFixed(3)} ms median, ${samples.at(-1)!.toFixed(3)} ms max ` +
      `(${(samples[25]! * 1000 / 1_000).toFixed(2)} µs per key); the last one matched in ${
        lastMs.toFixed(3)
      } ms`,
  );
  // Loose bound only: a stall could not meet it, a slow or busy machine will.
  assert.ok(samples[25]! < 50, `a miss over 1,000 pending took ${samples[25]} ms`);
});
