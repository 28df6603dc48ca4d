/**
 * startTlsClient() against a TLS server that is not ours: `openssl
 * s_server -Verify 1 -verify_return_error` (a client certificate required),
 * which answers each line reversed (`-rev`).
 */

import assert from "node:assert/strict";
import { ConnDuplex, type Duplex } from "../../src/io/duplex.ts";
import { startTlsClient, TlsHandshakeError } from "../../src/io/tls_client.ts";
import { hasOpenssl, makeTestPki, type TestPki } from "../_util/tls.ts";
import { startScriptedVncServer } from "../_util/scripted_vnc_server.ts";

async function writeFile(pki: TestPki, name: string, text: string): Promise<string> {
  const path = `${pki.dir}/${name}`;
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test({
  name:
    "startTlsClient() shows a client certificate to openssl s_server -Verify, and fails without",
  ignore: !hasOpenssl(),
  async fn() {
    await using pki = await makeTestPki();
    for (const withCert of [true, false]) {
      await using server = await startServer(pki);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const raw = new ConnDuplex(conn);
      const tls = await startTlsClient(raw, {
        name: "localhost",
        caCerts: [pki.caCert],
        signal: AbortSignal.timeout(5000),
        ...(withCert ? { clientCertificate: { cert: pki.client.cert, key: pki.client.key } } : {}),
      }).catch((error) => error);
      if (tls instanceof Error) {
        // TLS 1.2 fails in the handshake itself.
        assert.ok(!withCert, String(tls));
        assert.ok(tls instanceof TlsHandshakeError);
        continue;
      }
      try {
        await tls.write(new TextEncoder().encode("hello\n"));
        const buffer = new Uint8Array(6);
        const n = await tls.read(buffer).catch(() => null);
        if (withCert) {
          assert.equal(new TextDecoder().decode(buffer.subarray(0, n ?? 0)), "olleh\n");
        } else {
          // TLS 1.3: the server's refusal comes with the first read.
          assert.equal(n, null);
        }
      } finally {
        tls.close();
      }
    }
  },
});

/** Starts s_server on a free port, requiring a client certificate from the PKI's CA. */
async function startServer(pki: TestPki) {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const child = new Deno.Command("openssl", {
    args: [
      "s_server",
      ...["-accept", `127.0.0.1:${port}`, "-rev", "-quiet"],
      ...["-cert", await writeFile(pki, "s.pem", pki.server.cert)],
      ...["-key", await writeFile(pki, "s.key", pki.server.key)],
      ...["-CAfile", pki.caFile, "-Verify", "1", "-verify_return_error"],
    ],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Waits for the port with a plain connect (s_server drops it and goes on).
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    port,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.stdin.close().catch(() => {});
      await child.status;
    },
  };
}

Deno.test({
  name: "startTlsClient() stops reading the connection while its reader takes nothing",
  ignore: !hasOpenssl(),
  async fn() {
    await using pki = await makeTestPki();
    const total = 8 * 1024 * 1024;
    await using server = startScriptedVncServer(async (peer) => {
      const tls = await peer.startTls(pki.server);
      const chunk = new Uint8Array(64 * 1024);
      for (let sent = 0; sent < total; sent += chunk.length) await tls.send(chunk);
      await tls.closedByPeer();
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const raw = new ConnDuplex(conn);
    let rawBytes = 0;
    const counting: Duplex = {
      read: async (buffer) => {
        const n = await raw.read(buffer);
        rawBytes += n ?? 0;
        return n;
      },
      write: (data) => raw.write(data),
      close: () => raw.close(),
      remoteAddress: raw.remoteAddress,
    };
    const tls = await startTlsClient(counting, {
      name: "localhost",
      caCerts: [pki.caCert],
      signal: AbortSignal.timeout(5000),
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.ok(rawBytes < 512 * 1024, `${rawBytes} bytes read for nobody`);
      const buffer = new Uint8Array(1024 * 1024);
      let got = 0;
      while (got < total) {
        const n = await tls.read(buffer);
        assert.notEqual(n, null, `ended after ${got} bytes`);
        got += n!;
      }
      assert.equal(got, total);
    } finally {
      tls.close();
    }
    await server.idle();
  },
});
