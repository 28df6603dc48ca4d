/**
 * openBackend() against scripted VNC servers that need a password, VeNCrypt
 * or TLS: every exchange both whole and one byte per write (TLS records
 * included), real TLS with a throw-away PKI.
 */

import assert from "node:assert/strict";
import { RefusalError } from "../../src/errors.ts";
import { silentLogger } from "../../src/log.ts";
import {
  type BackendOptions,
  type BackendTarget,
  openBackend,
} from "../../src/rfb/backend_handshake.ts";
import { chooseSecurityType } from "../../src/rfb/backend_security.ts";
import { chooseVencryptSubtype } from "../../src/rfb/vencrypt.ts";
import { encodeU32 } from "../../src/rfb/rfb_messages.ts";
import {
  type ScriptPeer,
  serveServerInit,
  serveVersion,
  serveVncAuth,
  startScriptedVncServer,
} from "../_util/scripted_vnc_server.ts";
import { hasOpenssl, makeTestPki, type TestPki } from "../_util/tls.ts";

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
/** d3des's answer to challenge 00..0f with "secret" (vnc_auth_test.ts's vector). */
const SECRET_RESPONSE = "ee22539f33a5983ec12f9c2edbc995dd";

function options(extra: Partial<BackendOptions> = {}, timeoutMs = 8000): BackendOptions {
  return {
    retries: 1,
    retryWaitMs: 0,
    signal: AbortSignal.timeout(timeoutMs),
    logger: silentLogger,
    ...extra,
  };
}

type Script = (peer: ScriptPeer) => Promise<void>;

/** Runs openBackend() against `script`; returns "OK <version>" or the refusal; rethrows the script's errors. */
async function outcome(
  script: Script,
  target: Partial<BackendTarget> = {},
  extra: Partial<BackendOptions> & { oneByteWrites?: boolean } = {},
): Promise<string> {
  const { oneByteWrites, ...more } = extra;
  await using server = startScriptedVncServer(script, {
    oneByteWrites: oneByteWrites ?? false,
    hostname: "host" in target && target.host === "::1" ? "::1" : "127.0.0.1",
  });
  let result: string;
  try {
    const backend = await openBackend(
      { host: "127.0.0.1", port: server.port, ...target } as BackendTarget,
      options(more),
    );
    // The stream goes on: ClientInit through, ServerInit back.
    await backend.duplex.write(Uint8Array.of(1));
    const init = new Uint8Array(24);
    let got = 0;
    while (got < 24) {
      const n = await backend.duplex.read(init.subarray(got));
      assert.notEqual(n, null, "ServerInit cut short");
      got += n!;
    }
    assert.equal(new DataView(init.buffer).getUint16(0), 64);
    backend.duplex.close();
    result = `OK ${backend.version}`;
  } catch (error) {
    assert.ok(error instanceof RefusalError, String(error));
    result = error.message;
  }
  await server.idle();
  for (const error of server.errors) throw error;
  return result;
}

/** A plain security list answered with the choice `expected`, then `then`. */
function offering(
  version: string,
  types: number[],
  then: (peer: ScriptPeer, minor: number, chosen: number) => Promise<void>,
): Script {
  return async (peer) => {
    const minor = await serveVersion(peer, version);
    if (minor === 3) {
      await peer.sendU32(types[0]!);
      await then(peer, minor, types[0]!);
      return;
    }
    await peer.send([types.length, ...types]);
    const chosen = await peer.readU8().catch(() => -1);
    if (chosen === -1) return;
    await then(peer, minor, chosen);
  };
}

Deno.test("chooseSecurityType() prefers None, needs a password for VncAuth and TLS when asked", () => {
  const tls = { name: "localhost" };
  const table: [number[], { password?: string; tls?: typeof tls }, number | string][] = [
    [[1, 2], {}, 1],
    [[2, 1], { password: "x" }, 1],
    [[2], { password: "x" }, 2],
    [[2], {}, "VNC server requires authentication"],
    [[19], {}, "VNC server requires TLS"],
    [[18, 16], {}, "VNC server requires TLS"],
    [[2, 19], {}, "VNC server requires authentication"],
    [[16], {}, "VNC server requires authentication"],
    [[1, 2], { tls }, "VNC server does not offer TLS"],
    [[1, 18, 19], { tls }, 19],
    [[18, 1], { tls }, 18],
  ];
  for (const [types, wants, expected] of table) {
    let got: number | string;
    try {
      got = chooseSecurityType(types, { password: wants.password, tls: wants.tls });
    } catch (error) {
      got = (error as Error).message;
    }
    assert.equal(got, expected, `${types} ${JSON.stringify(wants)}`);
  }
});

Deno.test("chooseVencryptSubtype() picks the same sub-type from every offer order", () => {
  const table: [number[], boolean, number | string][] = [
    [[260, 261], true, 261],
    [[260, 261], false, 260],
    [[261], false, "VNC server requires authentication"],
    [[260], true, 260],
    [[257, 258, 256], true, "VNC server offers only anonymous TLS"],
    [[257, 260, 258], false, 260],
    [[258, 261, 257], true, 261],
    [[262, 259], true, "VNC server does not offer TLS"],
    [[], false, "VNC server does not offer TLS"],
  ];
  for (const [subtypes, hasPassword, expected] of table) {
    for (const order of permutations(subtypes)) {
      for (const allowAnonymousTls of [false, true]) {
        let got: number | string;
        try {
          got = chooseVencryptSubtype(order, { hasPassword, allowAnonymousTls });
        } catch (error) {
          got = (error as Error).message;
        }
        assert.equal(got, expected, `${order} password=${hasPassword}`);
      }
    }
  }
});

function permutations(items: number[]): number[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest])
  );
}

for (const oneByteWrites of [false, true]) {
  const how = oneByteWrites ? "one byte per write" : "whole messages";

  Deno.test(`openBackend() answers VncAuth challenges on 3.3, 3.7 and 3.8 with the DES vector (${how})`, async () => {
    for (const version of ["RFB 003.003\n", "RFB 003.007\n", "RFB 003.008\n"]) {
      let response = "";
      const result = await outcome(
        offering(version, [2], async (peer, minor, chosen) => {
          assert.equal(chosen, 2);
          response = hex(await serveVncAuth(peer, { password: "secret", minor }));
          await serveServerInit(peer);
        }),
        { password: "secret" },
        { oneByteWrites },
      );
      assert.equal(result, `OK 3.${version[10]}`, version);
      assert.equal(response, SECRET_RESPONSE, version);
    }
  });

  Deno.test(`openBackend() reports a wrong backend password with and without the server's reason (${how})`, async () => {
    const table: [string, string | undefined, string][] = [
      ["RFB 003.008\n", "Authentication failed\0", "VNC server refused: Authentication failed"],
      ["RFB 003.008\n", "bad\npass\x07word\x1b[31m", "VNC server refused: badpassword[31m"],
      ["RFB 003.008\n", "", "VNC server refused authentication"],
      ["RFB 003.008\n", "x".repeat(1000), `VNC server refused: ${"x".repeat(256)}`],
      ["RFB 003.007\n", undefined, "VNC server refused authentication"],
      ["RFB 003.003\n", undefined, "VNC server refused authentication"],
    ];
    for (const [version, failReason, expected] of table) {
      const result = await outcome(
        offering(version, [2], async (peer, minor) => {
          await serveVncAuth(peer, {
            password: "right",
            minor,
            ...(failReason !== undefined ? { failReason } : {}),
          });
          assert.ok(await peer.closedByPeer(), "the proxy kept the connection");
        }),
        { password: "wrong" },
        { oneByteWrites },
      );
      assert.equal(result, expected, JSON.stringify(failReason));
    }
  });

  Deno.test(`openBackend() chooses None over VncAuth even with a password (${how})`, async () => {
    const result = await outcome(
      offering("RFB 003.008\n", [2, 1], async (peer, _minor, chosen) => {
        assert.equal(chosen, 1);
        await peer.sendU32(0);
        await serveServerInit(peer);
      }),
      { password: "secret" },
      { oneByteWrites },
    );
    assert.equal(result, "OK 3.8");
  });

  Deno.test(`openBackend() negotiates VeNCrypt 0.2 and refuses other versions (${how})`, async () => {
    const table: [number[], number | undefined, string][] = [
      [[0, 1], undefined, "VNC server VeNCrypt version not supported"],
      [[1, 0], undefined, "VNC server VeNCrypt version not supported"],
      [[0, 2], 0xff, "VNC server VeNCrypt version not supported"],
      // 0.3: the proxy answers 0.2, the server accepts, then refuses the sub-type.
      [[0, 3], 0, "VNC server refused the VeNCrypt sub-type"],
      [[0, 2], 0, "VNC server refused the VeNCrypt sub-type"],
    ];
    for (const [serverVersion, ack, expected] of table) {
      let answered: number[] | undefined;
      let chosen: number | undefined;
      const result = await outcome(
        offering("RFB 003.008\n", [19], async (peer) => {
          await peer.send(serverVersion);
          if (ack === undefined) {
            assert.ok(await peer.closedByPeer(), "the proxy answered a version it does not speak");
            return;
          }
          answered = [...await peer.read(2)];
          await peer.send([ack]);
          if (ack !== 0) return;
          await peer.send([2, ...encodeU32(261), ...encodeU32(260)]);
          chosen = await peer.readU32();
          await peer.send([0]);
        }),
        { tls: true, password: "secret" },
        { oneByteWrites },
      );
      assert.equal(result, expected, String(serverVersion));
      if (ack !== undefined) assert.deepEqual(answered, [0, 2]);
      if (ack === 0) assert.equal(chosen, 261);
    }
  });

  Deno.test(`openBackend() chooses the VeNCrypt sub-type whatever the offer order (${how})`, async () => {
    const table: [number[], boolean, number | string][] = [
      [[260, 261], true, 261],
      [[261, 260], false, 260],
      [[256, 257, 258], true, "VNC server offers only anonymous TLS"],
      [[258, 260], true, 260],
    ];
    for (const [subtypes, withPassword, expected] of table) {
      for (const order of permutations(subtypes)) {
        let chosen: number | undefined;
        const result = await outcome(
          offering("RFB 003.008\n", [1, 19], async (peer, _minor, type) => {
            assert.equal(type, 19);
            await peer.send([0, 2]);
            await peer.read(2);
            await peer.send([0, order.length, ...order.flatMap((s) => [...encodeU32(s)])]);
            if (typeof expected === "string") {
              assert.ok(await peer.closedByPeer(), "the proxy chose an anonymous sub-type");
              return;
            }
            chosen = await peer.readU32();
            await peer.send([0]);
          }),
          { tls: true, ...(withPassword ? { password: "secret" } : {}) },
          { oneByteWrites },
        );
        if (typeof expected === "string") assert.equal(result, expected, String(order));
        else assert.equal(chosen, expected, String(order));
      }
    }
  });
}

/** The plain part of VeNCrypt up to the accepted sub-type; returns the sub-type chosen. */
async function vencryptPrelude(peer: ScriptPeer, subtypes: number[]): Promise<number> {
  const minor = await serveVersion(peer);
  assert.equal(minor, 8);
  await peer.send([1, 19]);
  assert.equal(await peer.readU8(), 19);
  await peer.send([0, 2]);
  assert.deepEqual([...await peer.read(2)], [0, 2]);
  await peer.send([0, subtypes.length, ...subtypes.flatMap((s) => [...encodeU32(s)])]);
  const chosen = await peer.readU32();
  await peer.send([1]);
  return chosen;
}

const tlsTests = hasOpenssl();
let pki: TestPki | undefined;
async function testPki(): Promise<TestPki> {
  pki ??= await makeTestPki();
  return pki;
}

for (const oneByteWrites of [false, true]) {
  const how = oneByteWrites ? "one byte per write, TLS records too" : "whole messages";

  Deno.test({
    name: `openBackend() speaks VeNCrypt X509None and X509Vnc over real TLS (${how})`,
    ignore: !tlsTests,
    async fn() {
      const { server, caCert } = await testPki();
      for (
        const [subtypes, password, expectedType] of [[[260], undefined, 260], [
          [260, 261],
          "secret",
          261,
        ]] as const
      ) {
        let response = "";
        let chosen = 0;
        const result = await outcome(
          async (peer) => {
            chosen = await vencryptPrelude(peer, [...subtypes]);
            const tls = await peer.startTls(server);
            if (chosen === 261) {
              response = hex(await serveVncAuth(tls, { password: "secret", minor: 8 }));
            } else {
              await tls.sendU32(0);
            }
            await serveServerInit(tls);
          },
          { tls: true, ...(password ? { password } : {}), tlsName: "localhost" },
          { tls: { caCerts: [caCert] }, oneByteWrites },
        );
        assert.equal(result, "OK 3.8");
        assert.equal(chosen, expectedType);
        if (expectedType === 261) assert.equal(response, SECRET_RESPONSE);
      }
    },
  });

  Deno.test({
    name: `openBackend() refuses a wrong password inside VeNCrypt X509Vnc (${how})`,
    ignore: !tlsTests,
    async fn() {
      const { server, caCert } = await testPki();
      const result = await outcome(
        async (peer) => {
          await vencryptPrelude(peer, [261]);
          const tls = await peer.startTls(server);
          await serveVncAuth(tls, { password: "right", minor: 8, failReason: "Wrong password\0" });
        },
        { tls: true, password: "wrong" },
        { tls: { caCerts: [caCert] }, oneByteWrites },
      );
      assert.equal(result, "VNC server refused: Wrong password");
    },
  });

  Deno.test({
    name: `openBackend() speaks the TLS type (18) with its second type list inside TLS (${how})`,
    ignore: !tlsTests,
    async fn() {
      const { server, caCert } = await testPki();
      for (const [inner, password] of [[[1], undefined], [[2], "secret"]] as const) {
        const result = await outcome(
          offering("RFB 003.008\n", [18], async (peer, _minor, chosen) => {
            assert.equal(chosen, 18);
            const tls = await peer.startTls(server);
            await tls.send([inner.length, ...inner]);
            const type = await tls.readU8();
            assert.equal(type, inner[0]);
            if (type === 2) {
              assert.equal(
                hex(await serveVncAuth(tls, { password: "secret", minor: 8 })),
                SECRET_RESPONSE,
              );
            } else {
              await tls.sendU32(0);
            }
            await serveServerInit(tls);
          }),
          { tls: true, ...(password ? { password } : {}) },
          { tls: { caCerts: [caCert] }, oneByteWrites },
        );
        assert.equal(result, "OK 3.8", String(inner));
      }
    },
  });
}

Deno.test({
  name: "openBackend() checks the server certificate's CA and name",
  ignore: !tlsTests,
  async fn() {
    const { server, otherServer, caCert } = await testPki();
    const table: [typeof server, Partial<BackendTarget>, string][] = [
      [otherServer, {}, "VNC server certificate not trusted"],
      [server, { tlsName: "vnc.example" }, "VNC server certificate does not match the name"],
      [server, { host: "127.0.0.1" }, "OK 3.8"],
      [server, { host: "::1" }, "OK 3.8"],
      [server, { tlsName: "localhost" }, "OK 3.8"],
    ];
    for (const [cert, target, expected] of table) {
      const result = await outcome(
        async (peer) => {
          await vencryptPrelude(peer, [260]);
          const tls = await peer.startTls(cert).catch(() => undefined);
          if (tls === undefined) return;
          await tls.sendU32(0);
          await serveServerInit(tls);
        },
        { tls: true, ...target },
        { tls: { caCerts: [caCert] } },
      );
      assert.equal(result, expected, JSON.stringify(target));
    }
  },
});

Deno.test({
  name: "openBackend() shows the client certificate to a server that requires one",
  ignore: !tlsTests,
  async fn() {
    const { server, caCert, client } = await testPki();
    for (const withCert of [true, false]) {
      const result = await outcome(
        async (peer) => {
          await vencryptPrelude(peer, [260]);
          const tls = await peer.startTls({ ...server, requireClientCert: true, ca: caCert })
            .catch(() => undefined);
          if (tls === undefined) return;
          await tls.sendU32(0);
          await serveServerInit(tls);
        },
        { tls: true },
        {
          tls: {
            caCerts: [caCert],
            ...(withCert ? { clientCertificate: { cert: client.cert, key: client.key } } : {}),
          },
        },
      );
      assert.equal(result, withCert ? "OK 3.8" : "VNC server TLS handshake failed");
    }
  },
});

Deno.test({
  name: "openBackend() reports a TLS handshake broken half way, and one that never starts",
  ignore: !tlsTests,
  async fn() {
    const { caCert } = await testPki();
    // The server accepts the sub-type, reads the ClientHello, answers garbage and closes.
    assert.equal(
      await outcome(
        async (peer) => {
          await vencryptPrelude(peer, [260]);
          await peer.read(5);
          await peer.send(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
        },
        { tls: true },
        { tls: { caCerts: [caCert] } },
      ),
      "VNC server TLS handshake failed",
    );
    // Closed right after the accept byte.
    assert.equal(
      await outcome(
        async (peer) => {
          await vencryptPrelude(peer, [260]);
        },
        { tls: true },
        { tls: { caCerts: [caCert] } },
      ),
      "VNC server TLS handshake failed",
    );
    // Never answers the ClientHello: the deadline ends it.
    await using server = startScriptedVncServer(async (peer) => {
      await vencryptPrelude(peer, [260]);
      // Takes the ClientHello and waits for more than will ever come.
      await peer.read(1 << 20).catch(() => {});
    });
    const started = Date.now();
    await assert.rejects(
      openBackend(
        { host: "127.0.0.1", port: server.port, tls: true },
        options({ tls: { caCerts: [caCert] } }, 300),
      ),
      (error: Error) => error instanceof RefusalError && error.message === "VNC server timed out",
    );
    assert.ok(Date.now() - started < 5000);
  },
});

Deno.test({
  name:
    "openBackend() refuses TLS requests to servers without TLS, and TLS-only servers without TLS",
  async fn() {
    assert.equal(
      await outcome(offering("RFB 003.008\n", [1, 2], async () => {}), { tls: true }),
      "VNC server does not offer TLS",
    );
    assert.equal(
      await outcome(offering("RFB 003.008\n", [19, 18], async () => {}), {}),
      "VNC server requires TLS",
    );
    assert.equal(
      await outcome(offering("RFB 003.003\n", [19], async () => {}), {}),
      "VNC server requires TLS",
    );
  },
});

Deno.test({
  name: "(PKI removal)",
  ignore: !tlsTests,
  async fn() {
    await pki?.[Symbol.asyncDispose]();
  },
});
