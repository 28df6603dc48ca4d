/**
 * A certificate and key in PEM form, read from files and proven usable
 * before anyone connects: the control socket with `--enable-ssl`, `vnc-wss`
 * ports and the gateway all use the same pair. VNC servers reached over
 * TLS get their own CA and client certificate.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";

/** A certificate and key in PEM form. */
export interface TlsMaterial {
  /** PEM certificate chain. */
  readonly cert: string;
  /** PEM private key. */
  readonly key: string;
}

/**
 * Reads the PEM files and proves they form a usable pair.
 *
 * @throws {Deno.errors.NotFound} (and other read errors) for a missing file,
 * {@linkcode Error} naming both files for a pair Deno cannot use.
 */
export function loadTls(
  files: { readonly certFile: string; readonly keyFile: string },
): TlsMaterial {
  const cert = Deno.readTextFileSync(files.certFile);
  const key = Deno.readTextFileSync(files.keyFile);
  // Deno parses certificate and key when a TLS listener is made: a
  // throw-away one on an ephemeral loopback port validates the pair now,
  // not at the first browser.
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key }).close();
  } catch (error) {
    throw new Error(`Invalid certificate "${files.certFile}" or key "${files.keyFile}"`, {
      cause: error,
    });
  }
  return { cert, key };
}

/** True when `a` and `b` are the same pair (or both absent). */
export function sameTls(a: TlsMaterial | undefined, b: TlsMaterial | undefined): boolean {
  return a?.cert === b?.cert && a?.key === b?.key;
}

/** TLS material for connections to VNC servers (`--backend-ca`, `--backend-cert`, `--backend-key`). */
export interface BackendTlsMaterial {
  /** PEM CA certificates to trust; absent: the system roots. */
  readonly caCerts?: readonly string[];
  /** A client certificate and key. */
  readonly clientCertificate?: TlsMaterial;
}

/**
 * Reads the backend CA and client certificate files that are set, and
 * proves them usable: the CA parses as a certificate, the client pair as a
 * pair Deno can use.
 *
 * @throws {Deno.errors.NotFound} (and other read errors) for a missing
 * file, {@linkcode Error} naming the file for one Deno cannot use.
 */
export function loadBackendTls(files: {
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}): BackendTlsMaterial {
  let caCerts: string[] | undefined;
  if (files.caFile !== undefined) {
    const pem = Deno.readTextFileSync(files.caFile);
    try {
      new X509Certificate(pem);
    } catch (error) {
      throw new Error(`Invalid CA certificate "${files.caFile}"`, { cause: error });
    }
    caCerts = [pem];
  }
  const clientCertificate = files.certFile !== undefined && files.keyFile !== undefined
    ? loadTls({ certFile: files.certFile, keyFile: files.keyFile })
    : undefined;
  return {
    ...(caCerts ? { caCerts } : {}),
    ...(clientCertificate ? { clientCertificate } : {}),
  };
}
