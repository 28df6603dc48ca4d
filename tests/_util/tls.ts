/**
 * A throw-away self-signed certificate for `localhost` and 127.0.0.1, made
 * with openssl in a temp dir, acceptable to rustls (SAN present, not a CA).
 *
 * @module
 */

/** A certificate and key on disk and in memory. */
export interface TestCertificate extends AsyncDisposable {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
}

/** Makes a fresh self-signed certificate; disposing removes the files. */
export async function makeTestCertificate(): Promise<TestCertificate> {
  const dir = await Deno.makeTempDir({ prefix: "vap-tls-" });
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  const { success, stderr } = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"],
      ...["-keyout", keyFile, "-out", certFile, "-subj", "/CN=localhost"],
      // rustls checks the name against the SAN and refuses a CA
      // certificate as the server's own (CaUsedAsEndEntity).
      ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
      ...["-addext", "basicConstraints=critical,CA:FALSE"],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`openssl failed: ${new TextDecoder().decode(stderr)}`);
  return {
    certFile,
    keyFile,
    cert: await Deno.readTextFile(certFile),
    key: await Deno.readTextFile(keyFile),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Whether `openssl` can be run, for tests that need {@linkcode makeTestCertificate}. */
export function hasOpenssl(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

/** A certificate authority made with openssl; disposing removes its files and those it issued. */
export interface TestCertificateAuthority extends AsyncDisposable {
  /** The CA's own certificate (PEM), what a verifier is given. */
  readonly certFile: string;
  readonly cert: string;
  /**
   * Issues a leaf certificate signed by this CA: `purpose` sets the extended key usage
   * (`serverAuth` or `clientAuth`, as QEMU's sanity checks want), `names` the SAN
   * (`DNS:localhost`, `IP:127.0.0.1`; the first DNS name is also the CN).
   */
  issue(options: IssueOptions): Promise<IssuedCertificate>;
}

/** Options of {@linkcode TestCertificateAuthority.issue}. */
export interface IssueOptions {
  readonly purpose: "server" | "client";
  /** SAN entries. @default ["DNS:localhost", "IP:127.0.0.1"] */
  readonly names?: readonly string[];
}

/** A leaf certificate and its key, in the CA's directory. */
export interface IssuedCertificate {
  readonly certFile: string;
  readonly keyFile: string;
}

async function openssl(args: readonly string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", {
    args: [...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(stderr)}`);
}

/**
 * Makes a fresh CA (RSA 2048, v3, `CA:TRUE`, `keyCertSign`) named `name`. Its leaves
 * carry the extensions QEMU's `tls-creds-x509` checks when it loads them (basic
 * constraints, key usage, key purpose) and rustls checks when it verifies (SAN).
 */
export async function makeTestCertificateAuthority(
  name = "vncauthproxy test CA",
): Promise<TestCertificateAuthority> {
  const dir = await Deno.makeTempDir({ prefix: "vap-ca-" });
  const certFile = `${dir}/ca-cert.pem`;
  const keyFile = `${dir}/ca-key.pem`;
  let serial = 0;
  try {
    await openssl([
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"],
      ...["-keyout", keyFile, "-out", certFile, "-subj", `/CN=${name}`],
      ...["-addext", "basicConstraints=critical,CA:TRUE"],
      ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]);
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  return {
    certFile,
    cert: await Deno.readTextFile(certFile),
    async issue(options: IssueOptions): Promise<IssuedCertificate> {
      const names = options.names ?? ["DNS:localhost", "IP:127.0.0.1"];
      const cn = names.find((n) => n.startsWith("DNS:"))?.slice(4) ?? options.purpose;
      const base = `${dir}/${options.purpose}-${++serial}`;
      const extFile = `${base}.ext`;
      await Deno.writeTextFile(
        extFile,
        [
          "basicConstraints=critical,CA:FALSE",
          "keyUsage=critical,digitalSignature,keyEncipherment",
          `extendedKeyUsage=${options.purpose === "server" ? "serverAuth" : "clientAuth"}`,
          ...(names.length > 0 ? [`subjectAltName=${names.join(",")}`] : []),
          "",
        ].join("\n"),
      );
      await openssl([
        ...["req", "-new", "-newkey", "rsa:2048", "-nodes"],
        ...["-keyout", `${base}-key.pem`, "-out", `${base}.csr`, "-subj", `/CN=${cn}`],
      ]);
      await openssl([
        ...["x509", "-req", "-in", `${base}.csr`, "-CA", certFile, "-CAkey", keyFile],
        ...["-set_serial", String(1000 + serial), "-days", "1", "-extfile", extFile],
        ...["-out", `${base}-cert.pem`],
      ]);
      return { certFile: `${base}-cert.pem`, keyFile: `${base}-key.pem` };
    },
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A throw-away PKI: a CA, a server and a client certificate from it, and a server certificate from another CA. */
export interface TestPki extends AsyncDisposable {
  readonly dir: string;
  /** The CA (PEM) and its file. */
  readonly caCert: string;
  readonly caFile: string;
  /** Server certificate for localhost, 127.0.0.1 and ::1, signed by the CA. */
  readonly server: { readonly cert: string; readonly key: string };
  /** Client certificate (clientAuth), signed by the CA, and its files. */
  readonly client: {
    readonly cert: string;
    readonly key: string;
    readonly certFile: string;
    readonly keyFile: string;
  };
  /** Server certificate for the same names, signed by another CA. */
  readonly otherServer: { readonly cert: string; readonly key: string };
}

/** Makes a fresh {@linkcode TestPki} with openssl; disposing removes it. */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "vap-pki-" });
  const f = (name: string) => `${dir}/${name}`;
  const makeCa = async (name: string) => {
    await openssl([
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"],
      ...["-keyout", f(`${name}.key`), "-out", f(`${name}.pem`), "-subj", `/CN=${name}`],
      ...["-addext", "basicConstraints=critical,CA:TRUE"],
      ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]);
  };
  const issue = async (name: string, ca: string, extensions: string) => {
    await openssl([
      ...["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f(`${name}.key`)],
      ...["-out", f(`${name}.csr`), "-subj", `/CN=${name}`],
    ]);
    await Deno.writeTextFile(f(`${name}.ext`), extensions);
    await openssl([
      ...["x509", "-req", "-in", f(`${name}.csr`), "-CA", f(`${ca}.pem`)],
      ...["-CAkey", f(`${ca}.key`), "-CAcreateserial", "-days", "1"],
      ...["-out", f(`${name}.pem`), "-extfile", f(`${name}.ext`)],
    ]);
  };
  const serverExtensions = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n" +
    "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n";
  await makeCa("ca");
  await makeCa("otherca");
  await issue("server", "ca", serverExtensions);
  await issue("otherserver", "otherca", serverExtensions);
  await issue(
    "client",
    "ca",
    "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n",
  );
  const read = (name: string) => Deno.readTextFile(f(name));
  return {
    dir,
    caCert: await read("ca.pem"),
    caFile: f("ca.pem"),
    server: { cert: await read("server.pem"), key: await read("server.key") },
    client: {
      cert: await read("client.pem"),
      key: await read("client.key"),
      certFile: f("client.pem"),
      keyFile: f("client.key"),
    },
    otherServer: { cert: await read("otherserver.pem"), key: await read("otherserver.key") },
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}
