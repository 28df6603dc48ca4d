/**
 * Pixel formats and ServerInit, pure: byte layout (RFC 6143 §7.3.2, §7.4),
 * which formats can be produced, and packing with unused bits set.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  decodePixelFormat,
  DEFAULT_PIXEL_FORMAT,
  encodePixelFormat,
  encodeServerInit,
  packPixels,
  type PixelFormat,
  pixelFormatProblem,
} from "../../src/rfb/pixel_format.ts";

Deno.test("the default pixel format encodes as Xvnc's 32/24 little-endian red-16 format", () => {
  assert.deepEqual(
    [...encodePixelFormat(DEFAULT_PIXEL_FORMAT)],
    [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0],
  );
  assert.deepEqual(
    decodePixelFormat(encodePixelFormat(DEFAULT_PIXEL_FORMAT)),
    DEFAULT_PIXEL_FORMAT,
  );
});

Deno.test("decodePixelFormat takes any non-zero flag as true and refuses short input", () => {
  const bytes = encodePixelFormat(DEFAULT_PIXEL_FORMAT);
  bytes[2] = 7;
  assert.equal(decodePixelFormat(bytes).bigEndian, true);
  assert.throws(() => decodePixelFormat(bytes.subarray(0, 15)), RangeError);
});

Deno.test("encodeServerInit: width, height, format, name length and name", () => {
  const bytes = encodeServerInit({
    width: 640,
    height: 480,
    format: DEFAULT_PIXEL_FORMAT,
    name: "ab",
  });
  assert.deepEqual([...bytes.subarray(0, 4)], [2, 128, 1, 224]);
  assert.deepEqual([...bytes.subarray(4, 20)], [...encodePixelFormat(DEFAULT_PIXEL_FORMAT)]);
  assert.deepEqual([...bytes.subarray(20)], [0, 0, 0, 2, 0x61, 0x62]);
});

const d = DEFAULT_PIXEL_FORMAT;
for (
  const [format, problem] of [
    [d, undefined],
    [
      {
        ...d,
        bitsPerPixel: 16,
        redMax: 31,
        greenMax: 63,
        blueMax: 31,
        redShift: 11,
        greenShift: 5,
      },
      undefined,
    ],
    [{ ...d, bitsPerPixel: 24 }, "24 bits per pixel"],
    [{ ...d, trueColour: false }, "a colour map (only true-colour is supported)"],
    [{ ...d, greenMax: 0 }, "green maximum 0"],
    [{ ...d, blueMax: 100 }, "blue maximum 100"],
    [{ ...d, redShift: 25 }, "red bits outside the pixel"],
    [{ ...d, greenShift: 12 }, "channels sharing bits"],
  ] as [PixelFormat, string | undefined][]
) {
  Deno.test(`pixelFormatProblem(${JSON.stringify(format)}) is ${problem}`, () => {
    assert.equal(pixelFormatProblem(format), problem);
  });
}

Deno.test("packPixels scales channels and sets the bits no channel uses", () => {
  const rgb = Uint8Array.of(255, 128, 0, 0, 0, 0);
  const out = new Uint8Array(8);
  assert.equal(packPixels(rgb, d, { offset: 0, count: 2, out, outOffset: 0 }), 8);
  // Little-endian BGRX, X set: noVNC 1.3 draws that byte as alpha.
  assert.deepEqual([...out], [0, 128, 255, 255, 0, 0, 0, 255]);
  const rgb565 = {
    ...d,
    bitsPerPixel: 16,
    depth: 16,
    bigEndian: true,
    redMax: 31,
    greenMax: 63,
    blueMax: 31,
    redShift: 11,
    greenShift: 5,
  };
  const two = new Uint8Array(2);
  packPixels(Uint8Array.of(255, 255, 255), rgb565, { offset: 0, count: 1, out: two, outOffset: 0 });
  assert.deepEqual([...two], [0xff, 0xff]);
});
