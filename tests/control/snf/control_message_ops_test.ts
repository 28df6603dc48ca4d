import assert from "node:assert/strict";
import { parseForwardRequest } from "../../../src/control/snf/control_message.ts";
import { RefusalError } from "../../../src/errors.ts";

const BASE = {
  "auth_user": "admin",
  "auth_password": "pw",
  "destination_address": "10.0.0.5",
  "destination_port": 5901,
  password: "one-time",
};

function parse(extra: Record<string, unknown>) {
  return parseForwardRequest(JSON.stringify({ ...BASE, ...extra }));
}

Deno.test("idle_timeout and max_session_time are seconds, 0 allowed, absent when not sent", () => {
  const parsed = parse({ idle_timeout: 1.5, max_session_time: 0 });
  assert.equal(parsed.idleTimeoutMs, 1500);
  assert.equal(parsed.maxSessionTimeMs, 0);
  const plain = parse({});
  assert.equal("idleTimeoutMs" in plain, false);
  assert.equal("maxSessionTimeMs" in plain, false);
  for (const bad of [-1, "5", null, true, 31 * 86_400 + 1, Infinity]) {
    assert.throws(
      () => parse({ idle_timeout: bad }),
      new RefusalError("malformed request: idle_timeout"),
      String(bad),
    );
    assert.throws(
      () => parse({ max_session_time: bad }),
      new RefusalError("malformed request: max_session_time"),
    );
  }
});

Deno.test("client_address on a pool port: an address or a range, canonicalised", () => {
  assert.equal(parse({ client_address: "[::1]" }).clientAddress, "::1");
  assert.equal(parse({ client_address: "::ffff:192.0.2.7" }).clientAddress, "192.0.2.7");
  assert.equal(parse({ client_address: "192.0.2.9/24" }).clientAddress, "192.0.2.9/24");
  assert.equal(parse({ client_address: "2001:DB8::/32" }).clientAddress, "2001:db8::/32");
  for (const bad of ["nope", "192.0.2.0/33", "", 7, null, "x".repeat(65)]) {
    assert.throws(
      () => parse({ client_address: bad }),
      new RefusalError("malformed request: client_address"),
      String(bad),
    );
  }
  // A token is claimed by one address: no range.
  assert.throws(
    () => parse({ gateway: true, type: "vnc-ws", client_address: "192.0.2.0/24" }),
    new RefusalError("malformed request: client_address"),
  );
});
