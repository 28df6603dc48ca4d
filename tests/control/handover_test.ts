import assert from "node:assert/strict";
import type { SessionRequest } from "../../src/control/admission.ts";
import { decodeHandover, encodeHandover, HandoverError } from "../../src/control/handover.ts";

const REQUEST: SessionRequest = {
  backend: { host: "10.0.0.5", port: 5901, password: "srv-secret", tls: true, tlsName: "hv1" },
  kind: "vnc-wss",
  route: { rendezvous: "token", ttlMs: 30_000, clientAddress: "192.0.2.7" },
  viewerPassword: "otp-1234",
  controlUser: "panel",
  id: "C7",
  idleTimeoutMs: 60_000,
  maxSessionTimeMs: 3_600_000,
};

Deno.test("a handover carries what another instance needs, all but the route", () => {
  const decoded = decodeHandover(encodeHandover(REQUEST));
  const { route: _route, ...fields } = REQUEST;
  assert.deepEqual(decoded, fields, "everything but the route");
});

Deno.test("a handover of a token-only Unix-socket forwarding keeps its absent fields absent", () => {
  const request: SessionRequest = {
    backend: { transport: "unix", path: "/run/qemu/vm1.vnc" },
    kind: "vnc-ws",
    route: { rendezvous: "token", ttlMs: 5_000 },
    viewerPassword: undefined,
    protocol: "vncap",
  };
  const decoded = decodeHandover(encodeHandover(request));
  assert.deepEqual(decoded, {
    backend: { transport: "unix", path: "/run/qemu/vm1.vnc" },
    kind: "vnc-ws",
    viewerPassword: undefined,
    protocol: "vncap",
  });
  assert.equal("controlUser" in decoded, false);
  assert.equal("password" in decoded.backend, false);
});

Deno.test("a handover that is not one this version wrote is refused, naming the field only", () => {
  const good = JSON.parse(new TextDecoder().decode(encodeHandover(REQUEST)));
  const cases: [string, unknown][] = [
    ["handover is not JSON", "{"],
    ["handover is not an object", [1]],
    ["handover of another version", { ...good, v: 2 }],
    ["handover field kind", { ...good, kind: "vnc" }],
    ["handover field kind", { ...good, kind: "rdp" }],
    ["handover field backend", { ...good, backend: "10.0.0.5:5901" }],
    ["handover field backend.host", { ...good, backend: { host: "a b", port: 1 } }],
    ["handover field backend.port", { ...good, backend: { host: "h", port: 0 } }],
    ["handover field backend.port", { ...good, backend: { host: "h", port: "5901" } }],
    ["handover field backend.unix", { ...good, backend: { unix: "relative/path" } }],
    ["handover field tls", { ...good, tls: "yes" }],
    ["handover field viewerPassword", { ...good, viewerPassword: "" }],
    ["handover field viewerPassword", { ...good, viewerPassword: "€uro" }],
    ["handover field idleTimeoutMs", { ...good, idleTimeoutMs: -1 }],
    ["handover field maxSessionTimeMs", { ...good, maxSessionTimeMs: 1.5 }],
    ["handover field protocol", { ...good, protocol: "snf" }],
    ["handover field controlUser", { ...good, controlUser: "x".repeat(5_000) }],
  ];
  for (const [message, value] of cases) {
    const bytes = new TextEncoder().encode(
      typeof value === "string" ? value : JSON.stringify(value),
    );
    assert.throws(() => decodeHandover(bytes), new HandoverError(message), message);
  }
  // Bytes that are not UTF-8 are not JSON either.
  assert.throws(
    () => decodeHandover(new Uint8Array([0x7b, 0xff, 0x7d])),
    new HandoverError("handover is not JSON"),
  );
});

Deno.test("no secret of a handover shows in the error of a broken one", () => {
  const good = JSON.parse(new TextDecoder().decode(encodeHandover(REQUEST)));
  const broken = new TextEncoder().encode(JSON.stringify({ ...good, kind: "srv-secret" }));
  assert.throws(() => decodeHandover(broken), (error) => {
    assert.ok(error instanceof HandoverError, `refused as a HandoverError: ${error}`);
    const text = `${error.message} ${error.stack}`;
    for (const secret of ["srv-secret", "otp-1234"]) assert.equal(text.includes(secret), false);
    return true;
  });
});
