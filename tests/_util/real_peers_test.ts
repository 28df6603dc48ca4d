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
