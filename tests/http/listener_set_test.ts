import assert from "node:assert/strict";
import { openListenerSet } from "../../src/http/listener_set.ts";
import type { TlsMaterial } from "../../src/io/tls_material.ts";
import { silentLogger } from "../../src/log.ts";
import { hasOpenssl, makeTestCertificate } from "../_util/tls.ts";

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

Deno.test("openListenerSet() hands every connection to its owner and stops on close()", async () => {
  const stop = new AbortController();
  const accepted: Deno.Conn[] = [];
  const set = await openListenerSet({
    address: "127.0.0.1",
    port: 0,
    signal: stop.signal,
    resolveTimeoutMs: 1_000,
    logger: silentLogger,
    what: "Test",
    onConnection: (conn) => accepted.push(conn),
  });
  const port = portOf(set.addresses[0]!);
  for (let i = 0; i < 3; i++) (await Deno.connect({ hostname: "127.0.0.1", port })).close();
  while (accepted.length < 3) await new Promise((resolve) => setTimeout(resolve, 10));
  for (const conn of accepted) conn.close();
  assert.equal(await set.reloadTls(), false, "a plain set has nothing to reload");
  await set.close();
  await set.close();
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port }),
    Deno.errors.ConnectionRefused,
  );
});

Deno.test({
  name: "ListenerSet.reloadTls() serves the new certificate on the same port (needs openssl)",
  ignore: !hasOpenssl(),
}, async () => {
  await using first = await makeTestCertificate();
  await using second = await makeTestCertificate();
  let material: TlsMaterial = first;
  const stop = new AbortController();
  const set = await openListenerSet({
    address: "127.0.0.1",
    port: 0,
    tls: () => material,
    signal: stop.signal,
    resolveTimeoutMs: 1_000,
    logger: silentLogger,
    what: "Test",
    onConnection: (conn) => {
      // A client refusing the certificate makes the write fail: fine here.
      conn.write(new TextEncoder().encode("hi")).catch(() => {}).finally(() => conn.close());
    },
  });
  const port = portOf(set.addresses[0]!);
  const hello = async (caCert: string) => {
    const conn = await Deno.connectTls({ hostname: "localhost", port, caCerts: [caCert] });
    try {
      const buffer = new Uint8Array(2);
      return (await conn.read(buffer)) === 2;
    } finally {
      conn.close();
    }
  };
  try {
    assert.ok(await hello(first.cert));
    assert.equal(await set.reloadTls(), false, "same certificate: nothing to do");
    material = second;
    assert.equal(await set.reloadTls(), true);
    assert.deepEqual(portOf(set.addresses[0]!), port);
    assert.ok(await hello(second.cert), "the new certificate is served");
    await assert.rejects(hello(first.cert), "the old one is gone");
  } finally {
    await set.close();
  }
});
