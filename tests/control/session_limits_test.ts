import assert from "node:assert/strict";
import { RefusalError } from "../../src/errors.ts";
import { SessionQuota } from "../../src/control/session_quota.ts";
import { RequestRateLimit } from "../../src/control/request_rate_limit.ts";
import { PendingViewers, viewerGate } from "../../src/session/viewer_gate.ts";
import { parseCidr } from "../../src/io/cidr.ts";

Deno.test("SessionQuota refuses each limit with its reason and frees a place exactly once", () => {
  const quota = new SessionQuota({ maxSessions: 3, maxPerUser: 2, maxPerBackend: 1 });
  const a = quota.reserve("alice", "h:1");
  assert.throws(
    () => quota.reserve("bob", "h:1"),
    new RefusalError("too many sessions for this VNC server"),
  );
  const b = quota.reserve("alice", "h:2");
  assert.throws(
    () => quota.reserve("alice", "h:3"),
    new RefusalError("too many sessions for this user"),
  );
  quota.reserve("bob", "h:3");
  assert.throws(() => quota.reserve("carol", "h:4"), new RefusalError("too many sessions"));
  a[Symbol.dispose]();
  a[Symbol.dispose]();
  assert.equal(quota.size, 2);
  quota.reserve("carol", "h:1");
  assert.throws(() => quota.reserve("dave", "h:5"), new RefusalError("too many sessions"));
  b[Symbol.dispose]();
  assert.equal(quota.size, 2);
});

Deno.test("SessionQuota with zeros limits nothing", () => {
  const quota = new SessionQuota({ maxSessions: 0, maxPerUser: 0, maxPerBackend: 0 });
  for (let i = 0; i < 100; i++) quota.reserve("alice", "h:1");
  assert.equal(quota.size, 100);
});

Deno.test("RequestRateLimit charges addresses (per /64) and users apart, burst 2N", () => {
  let now = 0;
  const limit = new RequestRateLimit(1, { now: () => now });
  limit.chargeAddress("2001:db8::1");
  limit.chargeAddress("2001:db8::2");
  assert.throws(() => limit.chargeAddress("2001:db8::3"), new RefusalError("too many requests"));
  limit.chargeAddress("192.0.2.1");
  limit.chargeUser("alice");
  limit.chargeUser("alice");
  assert.throws(() => limit.chargeUser("alice"), new RefusalError("too many requests"));
  limit.chargeUser("bob");
  now += 1000;
  limit.chargeUser("alice");
});

Deno.test("viewerGate() refuses other addresses and extra pending connections, then lets them in", () => {
  const refused: string[] = [];
  const pending = new PendingViewers(1);
  const gate = viewerGate({
    bound: parseCidr("127.0.0.0/8"),
    pending,
    onRefused: (why) => refused.push(why),
  });
  const other = gate.enter("[::1]:5000");
  assert.equal(other.ok, false);
  const first = gate.enter("127.0.0.1:5001");
  assert.ok(first.ok);
  const second = gate.enter("127.0.0.1:5002");
  assert.ok(!second.ok && second.refusal === "pending_per_ip");
  first.pending[Symbol.dispose]();
  first.pending[Symbol.dispose]();
  const third = gate.enter("127.0.0.1:5003");
  assert.ok(third.ok);
  assert.deepEqual(refused, ["client_address", "pending_per_ip"]);
  // Unbound, unlimited: anyone.
  assert.ok(viewerGate({}).enter("[2001:db8::1]:1").ok);
});
