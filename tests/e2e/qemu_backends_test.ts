/**
 * End to end against real QEMU as the backend (issue 11): a per-VM VNC password set over
 * QMP, `-vnc unix:PATH`, VeNCrypt with `tls-creds-x509` (`verify-peer=off` and `on`),
 * TLS plus password (X509Vnc). Each forwarding is asked for with `main.ts client`; the
 * viewer is gtk-vnc's gvnccapture with the one-time password, and what it saves must be
 * QEMU's own screendump of its paused guest. Every refusal is a FAILED with the
 * contract's reason; the daemons run with a pool of one port, so the forwarding that
 * works after the refusals proves they kept none.
 *
 * @module
 */

import {
  assertCaptureShows,
  assertFailed,
  assertNoSecrets,
  assertOk,
  clientRequest,
  USERS,
} from "../_util/backend_e2e.ts";
import { startDaemon, waitForLines } from "../_util/daemon_process.ts";
import { hasCommand, type QemuX509Options, startQemu } from "../_util/real_peers.ts";
import { hasOpenssl, makeTestCertificateAuthority } from "../_util/tls.ts";

const VIEWER_PASSWORD = "v1ewer-OTP";
/** QEMU keeps 8 characters of a VNC password. */
const QEMU_PASSWORD = "qemu-Pw8";
const WRONG_PASSWORD = "wrong-P8";

const MISSING = [
  ...(hasCommand("qemu-system-x86_64") ? [] : ["qemu-system-x86_64 (qemu-system-x86)"]),
  ...(hasCommand("gvnccapture") ? [] : ["gvnccapture (gvncviewer)"]),
  ...(hasCommand("script") ? [] : ["script (bsdutils)"]),
  ...(hasOpenssl() ? [] : ["openssl"]),
];
const ignore = MISSING.length > 0;
if (ignore) {
  // deno-lint-ignore no-console
  console.warn(`!!! SKIPPED: QEMU backend tests need ${MISSING.join(", ")}`);
}

const QEMU_START = { timeoutMs: 20_000 };
const SETTLE = { timeoutMs: 30_000 };

/** `-d 127.0.0.1 -p PORT -P <one-time password>` plus `extra`. */
function tcp(port: number, ...extra: string[]): string[] {
  return ["-d", "127.0.0.1", "-p", String(port), "-P", VIEWER_PASSWORD, ...extra];
}

Deno.test({
  name: "QEMU password=on with set_password: --dest-password reaches its screen; " +
    "none or a wrong one is refused (needs qemu, gvnccapture)",
  ignore,
  async fn() {
    await using qemu = await startQemu({ ...QEMU_START, password: QEMU_PASSWORD });
    const screen = await qemu.waitForStableScreen(SETTLE);
    await using daemon = await startDaemon({ users: USERS, poolSize: 1 });
    const control = daemon.controlPort;

    assertFailed(
      await clientRequest(control, tcp(qemu.port)),
      "VNC server requires authentication",
    );
    assertFailed(
      await clientRequest(control, tcp(qemu.port, "--dest-password", WRONG_PASSWORD)),
      "VNC server refused: Authentication failed",
    );
    const port = assertOk(
      await clientRequest(control, tcp(qemu.port, "--dest-password", QEMU_PASSWORD)),
    );
    await assertCaptureShows(port, VIEWER_PASSWORD, screen);
    await daemon.waitForLine(/Session ended/);
    assertNoSecrets(daemon, [QEMU_PASSWORD, WRONG_PASSWORD, VIEWER_PASSWORD]);
  },
});

Deno.test({
  name: "QEMU on -vnc unix:PATH, with and without password=on, through " +
    "--unix-backend-dir (needs qemu, gvnccapture)",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "vap-unix-e2e-" });
    try {
      await using plain = await startQemu({ ...QEMU_START, unixPath: `${dir}/plain.sock` });
      await using locked = await startQemu({
        ...QEMU_START,
        unixPath: `${dir}/locked.sock`,
        password: QEMU_PASSWORD,
      });
      const plainScreen = await plain.waitForStableScreen(SETTLE);
      const lockedScreen = await locked.waitForStableScreen(SETTLE);
      await using daemon = await startDaemon({
        users: USERS,
        poolSize: 1,
        args: [`--unix-backend-dir=${dir}`],
      });
      const unix = (path: string, ...extra: string[]) => [
        ...["-d", `unix:${path}`, "-p", "0", "-P", VIEWER_PASSWORD],
        ...extra,
      ];

      const first = assertOk(await clientRequest(daemon.controlPort, unix(`${dir}/plain.sock`)));
      await assertCaptureShows(first, VIEWER_PASSWORD, plainScreen);
      await waitForLines(daemon, /Session ended/, 1);

      assertFailed(
        await clientRequest(daemon.controlPort, unix(`${dir}/locked.sock`)),
        "VNC server requires authentication",
      );
      assertFailed(
        await clientRequest(
          daemon.controlPort,
          unix(`${dir}/locked.sock`, "--dest-password", WRONG_PASSWORD),
        ),
        "VNC server refused: Authentication failed",
      );
      const second = assertOk(
        await clientRequest(
          daemon.controlPort,
          unix(`${dir}/locked.sock`, "--dest-password", QEMU_PASSWORD),
        ),
      );
      await assertCaptureShows(second, VIEWER_PASSWORD, lockedScreen);
      await waitForLines(daemon, /Session ended/, 2);
      assertNoSecrets(daemon, [QEMU_PASSWORD, WRONG_PASSWORD, VIEWER_PASSWORD]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "QEMU with tls-creds-x509 verify-peer=off: --dest-tls with --backend-ca, " +
    "--dest-tls-name; without --dest-tls refused (needs qemu, gvnccapture, openssl)",
  ignore,
  async fn() {
    await using ca = await makeTestCertificateAuthority();
    const server = await ca.issue({ purpose: "server" });
    const tls: QemuX509Options = { kind: "x509", caCertFile: ca.certFile, ...server };
    await using qemu = await startQemu({ ...QEMU_START, tls });
    const screen = await qemu.waitForStableScreen(SETTLE);
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: [`--backend-ca=${ca.certFile}`],
    });

    assertFailed(
      await clientRequest(daemon.controlPort, tcp(qemu.port)),
      "VNC server requires TLS",
    );
    const first = assertOk(await clientRequest(daemon.controlPort, tcp(qemu.port, "--dest-tls")));
    await assertCaptureShows(first, VIEWER_PASSWORD, screen);
    await waitForLines(daemon, /Session ended/, 1);
    // The certificate names localhost too: checked against that name instead.
    const second = assertOk(
      await clientRequest(
        daemon.controlPort,
        tcp(qemu.port, "--dest-tls", "--dest-tls-name", "localhost"),
      ),
    );
    await assertCaptureShows(second, VIEWER_PASSWORD, screen);
    await waitForLines(daemon, /Session ended/, 2);
  },
});

Deno.test({
  name: "QEMU with tls-creds-x509 verify-peer=on: --backend-cert/--backend-key get in, " +
    "no client certificate or one from another CA does not (needs qemu, gvnccapture, openssl)",
  ignore,
  async fn() {
    await using ca = await makeTestCertificateAuthority();
    await using otherCa = await makeTestCertificateAuthority("another test CA");
    const server = await ca.issue({ purpose: "server" });
    const clientCert = await ca.issue({ purpose: "client", names: ["DNS:vncauthproxy"] });
    const strangerCert = await otherCa.issue({ purpose: "client", names: ["DNS:vncauthproxy"] });
    const tls: QemuX509Options = {
      kind: "x509",
      caCertFile: ca.certFile,
      ...server,
      verifyPeer: true,
    };
    await using qemu = await startQemu({ ...QEMU_START, tls });
    const screen = await qemu.waitForStableScreen(SETTLE);

    {
      await using anonymous = await startDaemon({
        users: USERS,
        poolSize: 1,
        args: [`--backend-ca=${ca.certFile}`],
      });
      assertFailed(
        await clientRequest(anonymous.controlPort, tcp(qemu.port, "--dest-tls")),
        "VNC server TLS handshake failed",
      );
    }
    {
      await using stranger = await startDaemon({
        users: USERS,
        poolSize: 1,
        args: [
          `--backend-ca=${ca.certFile}`,
          `--backend-cert=${strangerCert.certFile}`,
          `--backend-key=${strangerCert.keyFile}`,
        ],
      });
      assertFailed(
        await clientRequest(stranger.controlPort, tcp(qemu.port, "--dest-tls")),
        "VNC server TLS handshake failed",
      );
    }
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: [
        `--backend-ca=${ca.certFile}`,
        `--backend-cert=${clientCert.certFile}`,
        `--backend-key=${clientCert.keyFile}`,
      ],
    });
    const port = assertOk(await clientRequest(daemon.controlPort, tcp(qemu.port, "--dest-tls")));
    await assertCaptureShows(port, VIEWER_PASSWORD, screen);
    await daemon.waitForLine(/Session ended/);
  },
});

Deno.test({
  name: "QEMU with tls-creds-x509 and password=on (VeNCrypt X509Vnc): --dest-tls " +
    "--dest-password; a wrong password refused (needs qemu, gvnccapture, openssl)",
  ignore,
  async fn() {
    await using ca = await makeTestCertificateAuthority();
    const server = await ca.issue({ purpose: "server" });
    const tls: QemuX509Options = { kind: "x509", caCertFile: ca.certFile, ...server };
    await using qemu = await startQemu({ ...QEMU_START, tls, password: QEMU_PASSWORD });
    const screen = await qemu.waitForStableScreen(SETTLE);
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: [`--backend-ca=${ca.certFile}`],
    });
    const control = daemon.controlPort;

    assertFailed(
      await clientRequest(control, tcp(qemu.port, "--dest-tls")),
      "VNC server requires authentication",
    );
    assertFailed(
      await clientRequest(control, tcp(qemu.port, "--dest-tls", "--dest-password", WRONG_PASSWORD)),
      "VNC server refused: Authentication failed",
    );
    const port = assertOk(
      await clientRequest(control, tcp(qemu.port, "--dest-tls", "--dest-password", QEMU_PASSWORD)),
    );
    await assertCaptureShows(port, VIEWER_PASSWORD, screen);
    await daemon.waitForLine(/Session ended/);
    assertNoSecrets(daemon, [QEMU_PASSWORD, WRONG_PASSWORD, VIEWER_PASSWORD]);
  },
});

Deno.test({
  name: "QEMU's certificate from another CA, for another name, or anonymous TLS: " +
    "refused with the reason, no port kept (needs qemu, gvnccapture, openssl)",
  ignore,
  async fn() {
    await using ca = await makeTestCertificateAuthority();
    await using otherCa = await makeTestCertificateAuthority("another test CA");
    const foreign = await otherCa.issue({ purpose: "server" });
    const misnamed = await ca.issue({ purpose: "server", names: ["DNS:vm7.example"] });
    await using daemon = await startDaemon({
      users: USERS,
      poolSize: 1,
      args: [`--backend-ca=${ca.certFile}`],
    });
    const control = daemon.controlPort;

    {
      await using qemu = await startQemu({
        ...QEMU_START,
        tls: { kind: "x509", caCertFile: otherCa.certFile, ...foreign },
      });
      assertFailed(
        await clientRequest(control, tcp(qemu.port, "--dest-tls")),
        "VNC server certificate not trusted",
      );
    }
    {
      await using qemu = await startQemu({ ...QEMU_START, tls: { kind: "anon" } });
      assertFailed(
        await clientRequest(control, tcp(qemu.port, "--dest-tls")),
        "VNC server offers only anonymous TLS",
      );
      // Allowed, it still cannot be spoken: Deno's TLS (rustls) has no anonymous
      // Diffie-Hellman, so the daemon says so in its log and refuses the same way.
      await using lenient = await startDaemon({
        users: USERS,
        poolSize: 1,
        args: ["--backend-allow-anonymous-tls"],
      });
      assertFailed(
        await clientRequest(lenient.controlPort, tcp(qemu.port, "--dest-tls")),
        "VNC server offers only anonymous TLS",
      );
      await lenient.waitForLine(/anonymous Diffie-Hellman/i);
    }
    await using qemu = await startQemu({
      ...QEMU_START,
      tls: { kind: "x509", caCertFile: ca.certFile, ...misnamed },
    });
    const screen = await qemu.waitForStableScreen(SETTLE);
    assertFailed(
      await clientRequest(control, tcp(qemu.port, "--dest-tls")),
      "VNC server certificate does not match the name",
    );
    assertFailed(
      await clientRequest(control, tcp(qemu.port, "--dest-tls", "--dest-tls-name", "vm8.example")),
      "VNC server certificate does not match the name",
    );
    // The one pool port is still free: the right name gets it and QEMU's screen.
    const port = assertOk(
      await clientRequest(control, tcp(qemu.port, "--dest-tls", "--dest-tls-name", "vm7.example")),
    );
    await assertCaptureShows(port, VIEWER_PASSWORD, screen);
    await daemon.waitForLine(/Session ended/);
  },
});
