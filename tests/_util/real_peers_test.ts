import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import {
  captureVnc,
  countDifferentPixels,
  decodePng,
  decodePpm,
  encodeVncPasswordFile,
  hasCommand,
  type Image,
  parseHexColor,
  startQemu,
  startXvnc,
  waitForRfbBanner,
} from "./real_peers.ts";
import { hasOpenssl, makeTestCertificateAuthority } from "./tls.ts";

const hasXvnc = hasCommand("Xvnc") && hasCommand("xsetroot");
const hasViewer = hasCommand("gvnccapture");
const hasQemu = hasCommand("qemu-system-x86_64");

Deno.test("decodePpm() reads a P6 image with a comment", () => {
  const header = new TextEncoder().encode("P6\n# made by hand\n2 1\n255\n");
  const image = decodePpm(new Uint8Array([...header, 1, 2, 3, 250, 251, 252]));
  assert.deepEqual([image.width, image.height], [2, 1]);
  assert.deepEqual(image.pixel(0, 0), [1, 2, 3]);
  assert.deepEqual(image.pixel(1, 0), [250, 251, 252]);
});

Deno.test("decodePng() reads RGBA with every filter type", () => {
  // One row per filter type (0-4), filtered here by the PNG spec's formulas.
  const width = 3;
  const rows = [0, 1, 2, 3, 4].map((filter) => ({
    filter,
    pixels: Array.from({ length: width * 4 }, (_, i) => (i * 37 + filter * 11) & 0xff),
  }));
  const raw: number[] = [];
  let prior = new Array(width * 4).fill(0);
  for (const { filter, pixels } of rows) {
    raw.push(filter);
    for (let i = 0; i < pixels.length; i++) {
      const a = i >= 4 ? pixels[i - 4] : 0;
      const b = prior[i];
      const c = i >= 4 ? prior[i - 4] : 0;
      const p = a + b - c;
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c)
        ? a
        : Math.abs(p - b) <= Math.abs(p - c)
        ? b
        : c;
      const predictor = [0, a, b, (a + b) >> 1, paeth][filter];
      raw.push((pixels[i] - predictor) & 0xff);
    }
    prior = pixels;
  }
  const png = buildPng(width, rows.length, 6, new Uint8Array(deflateSync(new Uint8Array(raw))));
  const image = decodePng(png);
  assert.deepEqual([image.width, image.height], [width, rows.length]);
  for (const [y, { pixels }] of rows.entries()) {
    for (let x = 0; x < width; x++) {
      assert.deepEqual(image.pixel(x, y), [pixels[x * 4], pixels[x * 4 + 1], pixels[x * 4 + 2]]);
    }
  }
});

Deno.test({
  name: "encodeVncPasswordFile() matches `vncpasswd -f` (needs vncpasswd)",
  ignore: !hasCommand("vncpasswd"),
  async fn() {
    const output = await new Deno.Command("vncpasswd", {
      args: ["-f"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const writer = output.stdin.getWriter();
    await writer.write(new TextEncoder().encode("secret\n"));
    await writer.close();
    const { stdout } = await output.output();
    assert.deepEqual(encodeVncPasswordFile("secret"), stdout);
  },
});

Deno.test({
  name: "gvnccapture captures Xvnc's desktop in its fill colour (needs Xvnc, gvnccapture)",
  ignore: !hasXvnc || !hasViewer,
  async fn() {
    const color = "#336699";
    await using xvnc = await startXvnc({ geometry: "64x48", color });
    assert.deepEqual(await waitForRfbBanner(xvnc.port), "RFB 003.008");
    const image = await captureVnc({ host: "127.0.0.1", port: xvnc.port });
    assert.deepEqual([image.width, image.height], [64, 48]);
    assertUniform(image, parseHexColor(color));
  },
});

Deno.test({
  name: "gvnccapture types a VNC password for Xvnc and fails on a wrong one " +
    "(needs Xvnc, gvnccapture, script)",
  ignore: !hasXvnc || !hasViewer || !hasCommand("script"),
  async fn() {
    await using xvnc = await startXvnc({ color: "#10e020", password: "s3cret!" });
    const image = await captureVnc({ host: "127.0.0.1", port: xvnc.port, password: "s3cret!" });
    assertUniform(image, [0x10, 0xe0, 0x20]);
    await assert.rejects(
      () => captureVnc({ host: "127.0.0.1", port: xvnc.port, password: "wrong!!" }),
      (error: Error) => {
        assert.match(error.message, /Viewer gvnccapture failed/);
        assert(!error.message.includes("wrong!!"), error.message);
        return true;
      },
    );
  },
});

Deno.test({
  name: "captureVnc() fails clearly when nothing listens (needs gvnccapture)",
  ignore: !hasViewer,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    await assert.rejects(
      () => captureVnc({ host: "127.0.0.1", port, timeoutMs: 5_000 }),
      (error: Error) => error.message.includes(`failed (exit code 1) on "127.0.0.1:${port}"`),
    );
  },
});

Deno.test({
  name: "gvnccapture sees exactly QEMU's own screendump (needs qemu-system-x86_64, gvnccapture)",
  ignore: !hasQemu || !hasViewer,
  async fn() {
    await using qemu = await startQemu();
    const screen = await qemu.waitForStableScreen();
    assert(screen.width >= 320 && screen.height >= 200, `${screen.width}x${screen.height}`);
    // Not a blank screen: SeaBIOS printed something.
    assert(countDifferentPixels(screen, solid(screen, screen.pixel(0, 0))) > 100);
    let capture = await captureVnc({ host: "127.0.0.1", port: qemu.port });
    // A viewer that connected mid-resize may save the old size; the guest is paused now.
    for (let retry = 0; retry < 3 && capture.width !== screen.width; retry++) {
      capture = await captureVnc({ host: "127.0.0.1", port: qemu.port });
    }
    assert.deepEqual([capture.width, capture.height], [screen.width, screen.height]);
    assert.deepEqual(countDifferentPixels(capture, screen), 0);
  },
});

Deno.test({
  name: "QEMU with password=on and set_password: gvnccapture with it sees the screendump, " +
    "a wrong one is refused (needs qemu-system-x86_64, gvnccapture, script)",
  ignore: !hasQemu || !hasViewer || !hasCommand("script"),
  async fn() {
    await using qemu = await startQemu({ password: "qemu-pw1", timeoutMs: 20_000 });
    assert.match(qemu.vncArgument, /,password=on$/);
    const screen = await qemu.waitForStableScreen({ timeoutMs: 30_000 });
    assert.deepEqual(await securityTypes(qemu.port), [2]);
    let capture = await captureVnc({ host: "127.0.0.1", port: qemu.port, password: "qemu-pw1" });
    for (let retry = 0; retry < 3 && capture.width !== screen.width; retry++) {
      capture = await captureVnc({ host: "127.0.0.1", port: qemu.port, password: "qemu-pw1" });
    }
    assert.deepEqual([capture.width, capture.height], [screen.width, screen.height]);
    assert.equal(countDifferentPixels(capture, screen), 0);
    await qemu.setPassword("qemu-pw2");
    await assert.rejects(
      () => captureVnc({ host: "127.0.0.1", port: qemu.port, password: "qemu-pw1" }),
      /Viewer gvnccapture failed/,
    );
  },
});

Deno.test({
  name: "QEMU on -vnc unix:PATH greets on that socket (needs qemu-system-x86_64)",
  ignore: !hasQemu,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "real_peers_unix_" });
    try {
      const unixPath = `${dir}/vnc.sock`;
      await using qemu = await startQemu({ unixPath, password: "unix-pw1", timeoutMs: 20_000 });
      assert.equal(qemu.port, 0);
      assert.equal(qemu.vncArgument, `unix:${unixPath},password=on`);
      assert.equal(await waitForRfbBanner(0, { unixPath }), "RFB 003.008");
      assert.deepEqual(await securityTypes({ unixPath }), [2]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "QEMU with tls-creds offers VeNCrypt 0.2 with X509None, X509Vnc with a password, " +
    "TLSNone / TLSVnc with tls-creds-anon (needs qemu-system-x86_64, openssl)",
  ignore: !hasQemu || !hasOpenssl(),
  async fn() {
    await using ca = await makeTestCertificateAuthority();
    const server = await ca.issue({ purpose: "server" });
    const x509 = { kind: "x509" as const, caCertFile: ca.certFile, ...server };
    const cases = [
      { tls: x509, password: undefined, subTypes: [260] },
      { tls: { ...x509, verifyPeer: true }, password: "tls-pw12", subTypes: [261] },
      { tls: { kind: "anon" as const }, password: undefined, subTypes: [257] },
      { tls: { kind: "anon" as const }, password: "anon-pw1", subTypes: [258] },
    ];
    for (const { tls, password, subTypes } of cases) {
      await using qemu = await startQemu({ tls, password, timeoutMs: 20_000 });
      assert.match(qemu.vncArgument, /tls-creds=tls0$/);
      assert.deepEqual(await securityTypes(qemu.port), [19]);
      assert.deepEqual(await vencryptSubTypes(qemu.port), subTypes, qemu.vncArgument);
      if (subTypes[0] === 260) {
        assert.equal(await x509NoneResult(qemu.port, ca.cert), 0, "TLS with the test CA");
      }
    }
  },
});

/** Runs VeNCrypt X509None to the end with Deno's TLS trusting `caCert`: SecurityResult. */
async function x509NoneResult(port: number, caCert: string): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let tls: Deno.TlsConn | undefined;
  try {
    const reader = exactReader(conn);
    await reader(12);
    await conn.write(new TextEncoder().encode("RFB 003.008\n"));
    await reader((await reader(1))[0]);
    await conn.write(Uint8Array.of(19));
    await reader(2);
    await conn.write(Uint8Array.of(0, 2));
    await reader(1);
    await reader((await reader(1))[0] * 4);
    await conn.write(Uint8Array.of(0, 0, 1, 4)); // 260, X509None
    assert.deepEqual([...await reader(1)], [1], "sub-type accepted");
    tls = await Deno.startTls(conn, { hostname: "127.0.0.1", caCerts: [caCert] });
    const result = await exactReader(tls)(4);
    return new DataView(result.buffer).getUint32(0);
  } finally {
    (tls ?? conn).close();
  }
}

/** Connects as an RFB 3.8 viewer and returns the security types offered, then hangs up. */
async function securityTypes(where: number | { unixPath: string }): Promise<number[]> {
  using conn = await connectTo(where);
  const reader = exactReader(conn);
  assert.equal(new TextDecoder().decode(await reader(12)), "RFB 003.008\n");
  await conn.write(new TextEncoder().encode("RFB 003.008\n"));
  const [count] = await reader(1);
  return [...await reader(count)];
}

/** Picks VeNCrypt (19), agrees on version 0.2 and returns the sub-types offered. */
async function vencryptSubTypes(port: number): Promise<number[]> {
  using conn = await connectTo(port);
  const reader = exactReader(conn);
  await reader(12);
  await conn.write(new TextEncoder().encode("RFB 003.008\n"));
  const [count] = await reader(1);
  await reader(count);
  await conn.write(Uint8Array.of(19));
  assert.deepEqual([...await reader(2)], [0, 2], "VeNCrypt version");
  await conn.write(Uint8Array.of(0, 2));
  assert.deepEqual([...await reader(1)], [0], "version accepted");
  const [subCount] = await reader(1);
  const bytes = await reader(subCount * 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: subCount }, (_, i) => view.getUint32(i * 4));
}

function connectTo(where: number | { unixPath: string }): Promise<Deno.Conn> {
  return typeof where === "number"
    ? Deno.connect({ hostname: "127.0.0.1", port: where })
    : Deno.connect({ transport: "unix", path: where.unixPath });
}

/** Exact reads with a 10 s bound (closing the connection ends a stuck read). */
function exactReader(conn: Deno.Conn): (n: number) => Promise<Uint8Array> {
  return async (n) => {
    const out = new Uint8Array(n);
    const timer = setTimeout(() => conn.close(), 10_000);
    try {
      let filled = 0;
      while (filled < n) {
        const got = await conn.read(out.subarray(filled));
        if (got === null) throw new Error(`Connection closed after ${filled} of ${n} bytes`);
        filled += got;
      }
      return out;
    } finally {
      clearTimeout(timer);
    }
  };
}

function assertUniform(image: Image, expected: [number, number, number]): void {
  const different = countDifferentPixels(image, solid(image, expected));
  assert.deepEqual(different, 0, `${different} pixels differ from rgb(${expected.join(", ")})`);
}

function solid(like: Image, rgb: [number, number, number]): Image {
  const data = new Uint8Array(like.width * like.height * 3);
  for (let i = 0; i < data.length; i += 3) data.set(rgb, i);
  return decodePpm(
    new Uint8Array([
      ...new TextEncoder().encode(`P6 ${like.width} ${like.height} 255\n`),
      ...data,
    ]),
  );
}

function buildPng(width: number, height: number, colorType: number, idat: Uint8Array) {
  const chunk = (type: string, data: Uint8Array) => {
    const out = new Uint8Array(12 + data.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, data.length);
    out.set(new TextEncoder().encode(type), 4);
    out.set(data, 8);
    return out; // CRC left zero: the decoder does not check it.
  };
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  ihdr.set([8, colorType, 0, 0, 0], 8);
  const signature = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const parts = [
    signature,
    chunk("IHDR", ihdr),
    chunk("IDAT", idat),
    chunk("IEND", new Uint8Array()),
  ];
  return new Uint8Array(parts.flatMap((p) => [...p]));
}
