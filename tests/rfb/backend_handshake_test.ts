import assert from "node:assert/strict";
import { RefusalError } from "../../src/errors.ts";
import { silentLogger } from "../../src/log.ts";
import { openBackend } from "../../src/rfb/backend_handshake.ts";
import { type FakeVncOptions, startFakeVncServer } from "../_util/fake_vnc_server.ts";

function options(timeoutMs = 5000) {
  return {
    retries: 2,
    retryWaitMs: 10,
    signal: AbortSignal.timeout(timeoutMs),
    logger: silentLogger,
  };
}

async function refusalOf(fake: FakeVncOptions, timeoutMs?: number): Promise<string> {
  await using server = startFakeVncServer(fake);
  try {
    const backend = await openBackend({ host: "127.0.0.1", port: server.port }, options(timeoutMs));
    backend.duplex.close();
  } catch (error) {
    assert.ok(error instanceof RefusalError, String(error));
    return error.message;
  }
  assert.fail("expected a refusal");
}

for (const oneByteWrites of [false, true]) {
  const how = oneByteWrites ? "one byte per write" : "whole messages";
  Deno.test(`openBackend() completes the handshake with servers at every version (${how})`, async () => {
    const table: [string, string, string][] = [
      ["RFB 003.003\n", "3.3", "RFB 003.003\n"],
      ["RFB 003.007\n", "3.7", "RFB 003.007\n"],
      ["RFB 003.008\n", "3.8", "RFB 003.008\n"],
      ["RFB 003.889\n", "3.8", "RFB 003.008\n"],
      ["RFB 004.001\n", "3.8", "RFB 003.008\n"],
    ];
    for (const [serverVersion, expected, answered] of table) {
      await using server = startFakeVncServer({
        version: serverVersion,
        securityTypes: expected === "3.3" ? [1] : [2, 1, 16],
        oneByteWrites,
      });
      const backend = await openBackend({ host: "127.0.0.1", port: server.port }, options());
      assert.equal(backend.version, expected, serverVersion);
      backend.duplex.close();
      await server.idle();
      assert.deepEqual(server.versionsReceived, [answered]);
    }
  });

  Deno.test(`openBackend() passes the server's cleaned reason on (${how})`, async () => {
    assert.equal(
      await refusalOf({ refuseReason: "Too many security failures\0", oneByteWrites }),
      "VNC server refused: Too many security failures",
    );
    assert.equal(
      await refusalOf({ version: "RFB 003.003\n", refuseReason: "go away", oneByteWrites }),
      "VNC server refused: go away",
    );
    assert.equal(
      await refusalOf({ resultFailure: "no\nnewlines\x07", oneByteWrites }),
      "VNC server refused: nonewlines",
    );
  });
}

Deno.test("openBackend() refuses servers that demand authentication", async () => {
  assert.equal(await refusalOf({ securityTypes: [2] }), "VNC server requires authentication");
  assert.equal(await refusalOf({ securityTypes: [2, 19] }), "VNC server requires authentication");
  assert.equal(
    await refusalOf({ version: "RFB 003.003\n", securityTypes: [2] }),
    "VNC server requires authentication",
  );
});

Deno.test("openBackend() refuses garbage, a silent server and a closed port", async () => {
  assert.equal(
    await refusalOf({ garbage: new TextEncoder().encode("HTTP/1.1 400\r\n\r\n") }),
    "VNC server sent an invalid handshake",
  );
  assert.equal(await refusalOf({ silent: true }, 300), "VNC server timed out");
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  await assert.rejects(
    openBackend({ host: "127.0.0.1", port }, options()),
    (e: unknown) => e instanceof RefusalError && e.message === "cannot connect to VNC server",
  );
});

Deno.test("openBackend() makes --connect-retries rounds and does not pause after success", async () => {
  let attempts = 0;
  const started = performance.now();
  await assert.rejects(
    openBackend({ host: "127.0.0.1", port: 9 }, {
      ...options(),
      retries: 3,
      retryWaitMs: 1,
      connect: () => {
        attempts++;
        return Promise.reject(new Deno.errors.ConnectionRefused("refused"));
      },
    }),
    /cannot connect/,
  );
  assert.equal(attempts, 3);
  assert.ok(performance.now() - started < 5000);
});

Deno.test("openBackend() leaves the bytes after SecurityResult unread", async () => {
  await using server = startFakeVncServer({});
  const backend = await openBackend({ host: "127.0.0.1", port: server.port }, options());
  await backend.duplex.write(Uint8Array.of(1));
  const head = new Uint8Array(4);
  let got = 0;
  while (got < 4) got += (await backend.duplex.read(head.subarray(got)))!;
  assert.deepEqual([...head], [0, 64, 0, 48], "ServerInit starts right after the handshake");
  backend.duplex.close();
});

Deno.test("openBackend() tries every address a name resolves to, in order, until one answers", async () => {
  await using server = startFakeVncServer({});
  const tried: string[] = [];
  const backend = await openBackend({ host: "vnc.test", port: server.port }, {
    ...options(),
    resolve: (name) => Promise.resolve(name === "vnc.test" ? ["::1", "127.0.0.1"] : []),
    connect: (hostname, port, signal) => {
      tried.push(hostname);
      return Deno.connect({ hostname, port, signal });
    },
  });
  backend.duplex.close();
  // Nothing listens on [::1] at the fake server's port: refused, then 127.0.0.1 wins.
  assert.deepEqual(tried, ["::1", "127.0.0.1"]);
});

Deno.test("openBackend() gives up on a resolver that never answers when the deadline passes", async () => {
  const never = Promise.withResolvers<string[]>();
  const started = performance.now();
  await assert.rejects(
    openBackend({ host: "slow.test", port: 5900 }, {
      ...options(200),
      resolve: () => never.promise,
    }),
    (error) => error instanceof RefusalError && error.message === "VNC server timed out",
  );
  // Loose: only a wait without a deadline would miss it.
  assert.ok(performance.now() - started < 5_000);
});
