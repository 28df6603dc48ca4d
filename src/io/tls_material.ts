/**
 * A certificate and key in PEM form, read from files and proven usable
 * before anyone connects: the control socket with `--enable-ssl`, `vnc-wss`
 * ports and the gateway all use the same pair.
 *
 * @module
 */

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
