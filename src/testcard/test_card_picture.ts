/**
 * The test card's picture, pure: eight full-intensity colour bars above a
 * dark band holding a clock (HH:MM:SS, UTC, in seven-segment digits) and a
 * block that steps one place to the right every second. Only the band
 * changes over time, so an incremental update sends only it.
 *
 * @module
 */

/** An RGB colour, 0-255 a channel. */
export type Rgb = readonly [number, number, number];

/** A rectangle of the framebuffer. */
export interface Rect {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/** Width of the test card. */
export const TEST_CARD_WIDTH = 640;
/** Height of the test card. */
export const TEST_CARD_HEIGHT = 480;

/** The bars, left to right: white, yellow, cyan, green, magenta, red, blue, black. */
export const BAR_COLOURS: readonly Rgb[] = [
  [255, 255, 255],
  [255, 255, 0],
  [0, 255, 255],
  [0, 255, 0],
  [255, 0, 255],
  [255, 0, 0],
  [0, 0, 255],
  [0, 0, 0],
];

/** Background of the band under the bars. */
export const BAND_COLOUR: Rgb = [32, 32, 32];
/** Colour of the clock's lit segments. */
export const CLOCK_COLOUR: Rgb = [255, 255, 255];
/** Colour of the moving block. */
export const BLOCK_COLOUR: Rgb = [255, 128, 0];

/** The bars' height: the top two thirds. */
const BARS_HEIGHT = Math.floor(TEST_CARD_HEIGHT * 2 / 3);
/** The part of the picture that changes from one second to the next. */
export const CHANGING_RECT: Rect = Object.freeze({
  x: 0,
  y: BARS_HEIGHT,
  width: TEST_CARD_WIDTH,
  height: TEST_CARD_HEIGHT - BARS_HEIGHT,
});

/** Positions of the moving block across the width. */
export const BLOCK_STEPS = 16;
const BLOCK_SIZE = TEST_CARD_WIDTH / BLOCK_STEPS;
const BLOCK_Y = TEST_CARD_HEIGHT - BLOCK_SIZE - 8;

// Seven-segment digits: segments a-g as bits 0-6 (a top, b top right,
// c bottom right, d bottom, e bottom left, f top left, g middle).
const SEGMENTS = [0x3f, 0x06, 0x5b, 0x4f, 0x66, 0x6d, 0x7d, 0x07, 0x7f, 0x6f];
const DIGIT_WIDTH = 36;
const DIGIT_HEIGHT = 72;
const STROKE = 8;
const CLOCK_Y = BARS_HEIGHT + 24;
/** Digit pitch and the colon gap. */
const DIGIT_PITCH = DIGIT_WIDTH + 12;
const COLON_WIDTH = 24;
const CLOCK_WIDTH = 6 * DIGIT_PITCH + 2 * COLON_WIDTH;
const CLOCK_X = Math.floor((TEST_CARD_WIDTH - CLOCK_WIDTH) / 2);

/** The bar colour at column `x` of the bars. */
export function barColourAt(x: number): Rgb {
  return BAR_COLOURS[Math.floor(x * BAR_COLOURS.length / TEST_CARD_WIDTH)]!;
}

/** Where the moving block is at `second` (a count of seconds). */
export function blockRect(second: number): Rect {
  const step = ((second % BLOCK_STEPS) + BLOCK_STEPS) % BLOCK_STEPS;
  return { x: step * BLOCK_SIZE, y: BLOCK_Y, width: BLOCK_SIZE, height: BLOCK_SIZE };
}

/**
 * Renders the picture at `second` (seconds since the Unix epoch, whole) as
 * RGB, 3 bytes a pixel, rows top to bottom.
 */
export function renderTestCard(second: number): Uint8Array {
  const width = TEST_CARD_WIDTH;
  const rgb = new Uint8Array(width * TEST_CARD_HEIGHT * 3);
  const fill = (rect: Rect, colour: Rgb) => {
    for (let y = rect.y; y < rect.y + rect.height; y++) {
      let at = (y * width + rect.x) * 3;
      for (let x = 0; x < rect.width; x++, at += 3) {
        rgb[at] = colour[0];
        rgb[at + 1] = colour[1];
        rgb[at + 2] = colour[2];
      }
    }
  };
  const barWidth = width / BAR_COLOURS.length;
  BAR_COLOURS.forEach((colour, i) => {
    fill({ x: i * barWidth, y: 0, width: barWidth, height: BARS_HEIGHT }, colour);
  });
  fill(CHANGING_RECT, BAND_COLOUR);

  const time = new Date(second * 1000);
  const digits = [time.getUTCHours(), time.getUTCMinutes(), time.getUTCSeconds()]
    .flatMap((n) => [Math.floor(n / 10), n % 10]);
  let x = CLOCK_X;
  digits.forEach((digit, i) => {
    for (const rect of segmentRects(SEGMENTS[digit]!, x, CLOCK_Y)) fill(rect, CLOCK_COLOUR);
    x += DIGIT_PITCH;
    if (i === 1 || i === 3) {
      for (const dy of [DIGIT_HEIGHT / 3, DIGIT_HEIGHT * 2 / 3]) {
        fill(
          { x: x - 4, y: CLOCK_Y + dy - STROKE / 2, width: STROKE, height: STROKE },
          CLOCK_COLOUR,
        );
      }
      x += COLON_WIDTH;
    }
  });
  fill(blockRect(second), BLOCK_COLOUR);
  return rgb;
}

/** The rectangles of a digit's lit segments with its top left at (x, y). */
function segmentRects(bits: number, x: number, y: number): Rect[] {
  const w = DIGIT_WIDTH;
  const half = DIGIT_HEIGHT / 2;
  const all: Rect[] = [
    { x, y, width: w, height: STROKE }, // a
    { x: x + w - STROKE, y, width: STROKE, height: half }, // b
    { x: x + w - STROKE, y: y + half, width: STROKE, height: half }, // c
    { x, y: y + DIGIT_HEIGHT - STROKE, width: w, height: STROKE }, // d
    { x, y: y + half, width: STROKE, height: half }, // e
    { x, y, width: STROKE, height: half }, // f
    { x, y: y + half - STROKE / 2, width: w, height: STROKE }, // g
  ];
  return all.filter((_, i) => (bits >> i) & 1);
}

/** The intersection of two rectangles, or `undefined` when it is empty. */
export function intersect(a: Rect, b: Rect): Rect | undefined {
  const x = Math.max(a.x, b.x);
  const y = Math.max(a.y, b.y);
  const right = Math.min(a.x + a.width, b.x + b.width);
  const bottom = Math.min(a.y + a.height, b.y + b.height);
  if (right <= x || bottom <= y) return undefined;
  return { x, y, width: right - x, height: bottom - y };
}
