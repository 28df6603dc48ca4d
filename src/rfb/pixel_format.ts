/**
 * RFB pixel formats and ServerInit (RFC 6143 §7.3.2, §7.4), pure: encode,
 * decode, check whether a true-colour format can be produced, and pack RGB
 * pixels into it. Used by the built-in test card and by tests' fake servers.
 *
 * @module
 */

/** A PIXEL_FORMAT (RFC 6143 §7.4): how the server writes each pixel. */
export interface PixelFormat {
  /** 8, 16 or 32. */
  readonly bitsPerPixel: number;
  /** Useful bits in each pixel. */
  readonly depth: number;
  /** Multi-byte pixels are big-endian. */
  readonly bigEndian: boolean;
  /** True-colour (false: colour map, which we do not produce). */
  readonly trueColour: boolean;
  /** Largest red value (2^n - 1). */
  readonly redMax: number;
  /** Largest green value. */
  readonly greenMax: number;
  /** Largest blue value. */
  readonly blueMax: number;
  /** Bits to shift red left. */
  readonly redShift: number;
  /** Bits to shift green left. */
  readonly greenShift: number;
  /** Bits to shift blue left. */
  readonly blueShift: number;
}

/** Length of an encoded PIXEL_FORMAT. */
export const PIXEL_FORMAT_LENGTH = 16;

/**
 * 32 bits a pixel, depth 24, little-endian, red in bits 16-23, green 8-15,
 * blue 0-7: what Xvnc and QEMU offer by default, and what noVNC draws.
 */
export const DEFAULT_PIXEL_FORMAT: PixelFormat = Object.freeze({
  bitsPerPixel: 32,
  depth: 24,
  bigEndian: false,
  trueColour: true,
  redMax: 255,
  greenMax: 255,
  blueMax: 255,
  redShift: 16,
  greenShift: 8,
  blueShift: 0,
});

/** Encodes a PIXEL_FORMAT (three padding bytes at the end). */
export function encodePixelFormat(format: PixelFormat): Uint8Array {
  const bytes = new Uint8Array(PIXEL_FORMAT_LENGTH);
  const view = new DataView(bytes.buffer);
  bytes[0] = format.bitsPerPixel;
  bytes[1] = format.depth;
  bytes[2] = format.bigEndian ? 1 : 0;
  bytes[3] = format.trueColour ? 1 : 0;
  view.setUint16(4, format.redMax);
  view.setUint16(6, format.greenMax);
  view.setUint16(8, format.blueMax);
  bytes[10] = format.redShift;
  bytes[11] = format.greenShift;
  bytes[12] = format.blueShift;
  return bytes;
}

/**
 * Decodes a PIXEL_FORMAT; any non-zero flag byte is true (RFC 6143 §7.4).
 *
 * @throws {RangeError} when `bytes` is shorter than 16 bytes.
 */
export function decodePixelFormat(bytes: Uint8Array): PixelFormat {
  if (bytes.length < PIXEL_FORMAT_LENGTH) {
    throw new RangeError(`A pixel format is ${PIXEL_FORMAT_LENGTH} bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    bitsPerPixel: bytes[0]!,
    depth: bytes[1]!,
    bigEndian: bytes[2] !== 0,
    trueColour: bytes[3] !== 0,
    redMax: view.getUint16(4),
    greenMax: view.getUint16(6),
    blueMax: view.getUint16(8),
    redShift: bytes[10]!,
    greenShift: bytes[11]!,
    blueShift: bytes[12]!,
  };
}

/**
 * Why a pixel format cannot be produced from RGB, or `undefined` when it
 * can: true-colour at 8, 16 or 32 bits a pixel, each channel's maximum of
 * the form 2^n - 1 and its bits inside the pixel, apart from the others'.
 */
export function pixelFormatProblem(format: PixelFormat): string | undefined {
  const bpp = format.bitsPerPixel;
  if (bpp !== 8 && bpp !== 16 && bpp !== 32) return `${bpp} bits per pixel`;
  if (!format.trueColour) return "a colour map (only true-colour is supported)";
  for (
    const [name, max, shift] of [
      ["red", format.redMax, format.redShift],
      ["green", format.greenMax, format.greenShift],
      ["blue", format.blueMax, format.blueShift],
    ] as const
  ) {
    if (max === 0 || (max & (max + 1)) !== 0) return `${name} maximum ${max}`;
    if (shift + Math.log2(max + 1) > bpp) return `${name} bits outside the pixel`;
  }
  const [red, green, blue] = [
    format.redMax * 2 ** format.redShift,
    format.greenMax * 2 ** format.greenShift,
    format.blueMax * 2 ** format.blueShift,
  ];
  if ((red & green) !== 0 || (red & blue) !== 0 || (green & blue) !== 0) {
    return "channels sharing bits";
  }
  return undefined;
}

/** A ServerInit's fields (RFC 6143 §7.3.2). */
export interface ServerInit {
  /** Framebuffer width. */
  readonly width: number;
  /** Framebuffer height. */
  readonly height: number;
  /** The server's pixel format. */
  readonly format: PixelFormat;
  /** Desktop name. */
  readonly name: string;
}

/** Encodes a ServerInit. */
export function encodeServerInit(init: ServerInit): Uint8Array {
  const name = new TextEncoder().encode(init.name);
  const bytes = new Uint8Array(24 + name.length);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, init.width);
  view.setUint16(2, init.height);
  bytes.set(encodePixelFormat(init.format), 4);
  view.setUint32(20, name.length);
  bytes.set(name, 24);
  return bytes;
}

/**
 * Packs `count` RGB pixels (3 bytes each, 0-255) from `rgb` at `offset`
 * into `out` at `outOffset`, in `format` (which must pass
 * {@linkcode pixelFormatProblem}); returns the offset after the last byte.
 */
export function packPixels(
  rgb: Uint8Array,
  format: PixelFormat,
  options: {
    readonly offset: number;
    readonly count: number;
    readonly out: Uint8Array;
    readonly outOffset: number;
  },
): number {
  const { count, out } = options;
  const bytesPerPixel = format.bitsPerPixel / 8;
  const { redMax, greenMax, blueMax, redShift, greenShift, blueShift, bigEndian } = format;
  const [redUnit, greenUnit, blueUnit] = [2 ** redShift, 2 ** greenShift, 2 ** blueShift];
  // Bits no channel uses are set: RFC 6143 leaves them free, and noVNC 1.3's
  // raw decoder takes the fourth byte of a 32-bit pixel as canvas alpha
  // (it means to set it to 255, but indexes from the start of its buffer).
  const unused = 2 ** format.bitsPerPixel - 1 -
    (redMax * redUnit + greenMax * greenUnit + blueMax * blueUnit);
  let at = options.offset;
  let o = options.outOffset;
  for (let i = 0; i < count; i++, at += 3) {
    // Scaled with rounding, so 255 maps to the maximum and 0 to 0.
    const value = Math.round(rgb[at]! * redMax / 255) * redUnit +
      Math.round(rgb[at + 1]! * greenMax / 255) * greenUnit +
      Math.round(rgb[at + 2]! * blueMax / 255) * blueUnit + unused;
    for (let b = 0; b < bytesPerPixel; b++) {
      const shift = 8 * (bigEndian ? bytesPerPixel - 1 - b : b);
      out[o++] = (value >>> shift) & 0xff;
    }
  }
  return o;
}
