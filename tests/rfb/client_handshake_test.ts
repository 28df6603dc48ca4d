import assert from "node:assert/strict";
import { RfbError } from "../../src/errors.ts";
import { readExact } from "../../src/io/byte_reader.ts";
import { authenticateViewer } from "../../src/rfb/client_handshake.ts";
import { tcpPair } from "../_util/loopback.ts";
import { handshake } from "../_util/test_viewer.ts";

async function run(viewer: Parameters<typeof handshake>[1], password = "secret") {
  using pair = await tcpPair();
  const [proxy, seen] = await Promise.allSettled([
    authenticateViewer(pair.server, password),
    handshake(pair.client, viewer),
  ]);
  return { proxy, seen };
}

for (const oneByteWrites of [false, true]) {
  const how = oneByteWrites ? "one byte per write" : "whole messages";
  Deno.test(`authenticateViewer() accepts viewers at 3.3, 3.7 and 3.8 with the right password (${how})`, async () => {
    const table: [string, string, number[]][] = [
      ["RFB 003.003\n", "3.3", [2]],
      ["RFB 003.007\n", "3.7", [2]],
      ["RFB 003.008\n", "3.8", [2]],
    ];
    for (const [version, expected, offered] of table) {
      const { proxy, seen } = await run({ port: 0, password: "secret", version, oneByteWrites });
      assert.equal(proxy.status === "fulfilled" && proxy.value, expected, version);
      assert.ok(seen.status === "fulfilled");
      assert.equal(seen.value.serverVersion, "RFB 003.008\n");
      assert.deepEqual(seen.value.offered, offered);
      assert.equal(seen.value.ok, true);
    }
  });

  Deno.test(`authenticateViewer() fails a wrong password, with the reason on 3.8 only (${how})`, async () => {
    for (
      const [version, reason] of [["RFB 003.008\n", "Authentication failed"], [
        "RFB 003.007\n",
        undefined,
      ], ["RFB 003.003\n", undefined]] as const
    ) {
      const { proxy, seen } = await run({ port: 0, password: "wrong", version, oneByteWrites });
      assert.ok(proxy.status === "rejected" && proxy.reason instanceof RfbError);
      assert.ok(seen.status === "fulfilled");
      assert.equal(seen.value.ok, false);
      assert.equal(seen.value.reason, reason);
    }
  });
}

Deno.test("authenticateViewer() refuses any security type but VNC Authentication", async () => {
  for (const type of [0, 1, 16, 19, 255]) {
    const { proxy, seen } = await run({ port: 0, password: "secret", chooseType: type });
    assert.ok(proxy.status === "rejected" && proxy.reason instanceof RfbError, `type ${type}`);
    assert.ok(seen.status === "fulfilled");
    assert.equal(seen.value.ok, false);
    assert.equal(seen.value.reason, `Security type ${type} is not offered`);
  }
});

Deno.test("authenticateViewer() rejects a bad version message", async () => {
  for (const version of ["RFB 002.002\n", "GET / HTTP/1.", "RFB 003.00x\n"]) {
    using pair = await tcpPair();
    const proxy = authenticateViewer(pair.server, "secret");
    await readExact(pair.client, 12);
    await pair.client.write(new TextEncoder().encode(version));
    await assert.rejects(proxy, RfbError, version);
  }
});

Deno.test("authenticateViewer() compares only the first 8 bytes of the password", async () => {
  const { proxy, seen } = await run({ port: 0, password: "12345678-and-more" }, "12345678");
  assert.equal(proxy.status, "fulfilled");
  assert.ok(seen.status === "fulfilled" && seen.value.ok);
});

Deno.test("authenticateViewer() leaves ClientInit and what follows for the relay", async () => {
  using pair = await tcpPair();
  const proxy = authenticateViewer(pair.server, "secret");
  const viewer = handshake(pair.client, { port: 0, password: "secret", shared: 0 });
  await proxy;
  await viewer;
  await pair.client.write(new TextEncoder().encode("XYZ"));
  assert.deepEqual([...await readExact(pair.server, 4)], [0, 88, 89, 90]);
});
