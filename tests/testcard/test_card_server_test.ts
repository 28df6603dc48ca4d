/**
 * The built-in test card, over real loopback sockets: the handshake in
 * every version, its pixels in the default format and in the formats
 * viewers ask for, incremental updates that wait for the next second, and
 * hostile input that ends only its own connection.
 *
 * @module
 */

import assert from "node:assert/strict";
import { readExact, readU32 } from "../../src/io/byte_reader.ts";
import { ConnDuplex, type Duplex } from "../../src/io/duplex.ts";
import {
  DEFAULT_PIXEL_FORMAT,
  encodePixelFormat,
  type PixelFormat,
} from "../../src/rfb/pixel_format.ts";
import {
  BAND_COLOUR,
  BAR_COLOURS,
  barColourAt,
  BLOCK_COLOUR,
  blockRect,
  CHANGING_RECT,
  renderTestCard,
  TEST_CARD_HEIGHT,
  TEST_CARD_WIDTH,
} from "../../src/testcard/test_card_picture.ts";
import {
  startTestCardServer,
  TEST_CARD_NAME,
  type TestCardOptions,
} from "../../src/testcard/test_card_server.ts";
import { readRawUpdate, readServerInit, requestUpdate, rgbAt } from "../_util/test_viewer.ts";

const W = TEST_CARD_WIDTH;
const H = TEST_CARD_HEIGHT;

/** Connects and runs the viewer side of the handshake with security None. */
async function connect(port: number, version = "RFB 003.008\n"): Promise<Duplex> {
  const duplex = new ConnDuplex(await Deno.connect({ hostname: "127.0.0.1", port }));
  try {
    assert.equal(new TextDecoder().decode(await readExact(duplex, 12)), "RFB 003.008\n");
    await duplex.write(new TextEncoder().encode(version));
    if (version === "RFB 003.003\n") {
      assert.equal(await readU32(duplex), 1);
    } else {
      assert.deepEqual([...await readExact(duplex, 2)], [1, 1]);
      await duplex.write(Uint8Array.of(1));
      if (version === "RFB 003.008\n") assert.equal(await readU32(duplex), 0);
    }
    await duplex.write(Uint8Array.of(1));
    return duplex;
  } catch (error) {
    duplex.close();
    throw error;
  }
}

/** Resolves true when the server closes `duplex` (reads until EOF, bounded). */
async function closedByServer(duplex: Duplex): Promise<boolean> {
  const buffer = new Uint8Array(64 * 1024);
  const timer = setTimeout(() => duplex.close(), 10_000);
  try {
    while (await duplex.read(buffer) !== null);
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function serve(options: TestCardOptions = {}) {
  return startTestCardServer(options);
}

for (const version of ["RFB 003.008\n", "RFB 003.007\n", "RFB 003.003\n"]) {
  Deno.test(`the test card speaks ${version.trim()} with security None and sends its ServerInit`, async () => {
    await using card = serve();
    const duplex = await connect(card.port, version);
    try {
      const init = await readServerInit(duplex);
      assert.deepEqual(init, { width: W, height: H, name: TEST_CARD_NAME });
      assert.equal(card.viewers, 1);
    } finally {
      duplex.close();
    }
  });
}

Deno.test("a full update shows the eight colour bars and the band in the default format", async () => {
  const second = 1_767_225_605; // 2026-01-01 00:00:05 UTC
  await using card = serve({ now: () => second * 1000 + 200 });
  const duplex = await connect(card.port);
  try {
    await readServerInit(duplex);
    await requestUpdate(duplex, { width: W, height: H });
    const [rect, ...rest] = await readRawUpdate(duplex, 4);
    assert.equal(rest.length, 0);
    assert.deepEqual([rect!.x, rect!.y, rect!.width, rect!.height], [0, 0, W, H]);
    BAR_COLOURS.forEach((colour, i) => {
      const x = i * (W / 8) + W / 16;
      assert.deepEqual(rgbAt(rect!, x, 10), [...colour], `bar ${i}`);
      assert.deepEqual(barColourAt(x), colour);
    });
    assert.deepEqual(rgbAt(rect!, 2, H - 2), [...BAND_COLOUR]);
    const block = blockRect(second);
    assert.equal(block.x, (second % 16) * (W / 16));
    assert.deepEqual(rgbAt(rect!, block.x + 4, block.y + 4), [...BLOCK_COLOUR]);
  } finally {
    duplex.close();
  }
});

/**
 * Pixel formats viewers ask for, with the bytes expected for pure yellow
 * (255, 255, 0). Unused bits are set: noVNC 1.3 draws the fourth byte as alpha.
 */
const FORMATS: readonly { name: string; format: PixelFormat; yellow: number[] }[] = [
  {
    name: "noVNC's 32-bit RGBX (red shift 0)",
    format: { ...DEFAULT_PIXEL_FORMAT, redShift: 0, greenShift: 8, blueShift: 16 },
    yellow: [255, 255, 0, 255],
  },
  {
    name: "32-bit big-endian, red shift 16",
    format: { ...DEFAULT_PIXEL_FORMAT, bigEndian: true },
    yellow: [255, 255, 255, 0],
  },
  {
    name: "16-bit RGB565 little-endian",
    format: {
      bitsPerPixel: 16,
      depth: 16,
      bigEndian: false,
      trueColour: true,
      redMax: 31,
      greenMax: 63,
      blueMax: 31,
      redShift: 11,
      greenShift: 5,
      blueShift: 0,
    },
    yellow: [0xe0, 0xff],
  },
  {
    name: "8-bit BGR233",
    format: {
      bitsPerPixel: 8,
      depth: 8,
      bigEndian: false,
      trueColour: true,
      redMax: 7,
      greenMax: 7,
      blueMax: 3,
      redShift: 0,
      greenShift: 3,
      blueShift: 6,
    },
    yellow: [0x3f],
  },
];

for (const { name, format, yellow } of FORMATS) {
  Deno.test(`SetPixelFormat to ${name}: the yellow bar comes in that format`, async () => {
    await using card = serve();
    const duplex = await connect(card.port);
    try {
      await readServerInit(duplex);
      await duplex.write(Uint8Array.from([0, 0, 0, 0, ...encodePixelFormat(format)]));
      const x = W / 8 + 5; // the yellow bar
      await requestUpdate(duplex, { x, y: 7, width: 1, height: 1 });
      const [rect] = await readRawUpdate(duplex, format.bitsPerPixel / 8);
      assert.deepEqual([rect!.x, rect!.y, rect!.width, rect!.height], [x, 7, 1, 1]);
      assert.deepEqual([...rect!.pixels], yellow);
    } finally {
      duplex.close();
    }
  });
}

for (
  const [name, format] of [
    ["a colour map", { ...DEFAULT_PIXEL_FORMAT, trueColour: false }],
    ["24 bits per pixel", { ...DEFAULT_PIXEL_FORMAT, bitsPerPixel: 24 }],
    ["a red maximum that is not 2^n - 1", { ...DEFAULT_PIXEL_FORMAT, redMax: 200 }],
    ["red bits outside the pixel", { ...DEFAULT_PIXEL_FORMAT, redShift: 30 }],
    ["red and green sharing bits", { ...DEFAULT_PIXEL_FORMAT, redShift: 4 }],
  ] as const
) {
  Deno.test(`SetPixelFormat with ${name} ends that connection, not the server`, async () => {
    await using card = serve();
    const duplex = await connect(card.port);
    try {
      await readServerInit(duplex);
      await duplex.write(Uint8Array.from([0, 0, 0, 0, ...encodePixelFormat(format)]));
      assert.equal(await closedByServer(duplex), true);
    } finally {
      duplex.close();
    }
    const next = await connect(card.port);
    next.close();
  });
}

Deno.test("an incremental request waits for the next second and gets only the changing band", async () => {
  let now = 1_767_225_600_000;
  await using card = serve({ now: () => now });
  const duplex = await connect(card.port);
  try {
    await readServerInit(duplex);
    await requestUpdate(duplex, { width: W, height: H });
    await readRawUpdate(duplex, 4);
    await requestUpdate(duplex, { incremental: true, width: W, height: H });
    const update = readRawUpdate(duplex, 4);
    let arrived = false;
    update.then(() => arrived = true, () => {});
    // The clock has not moved: the card's next tick (real time, within a
    // second) finds the same picture and must not answer.
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    assert.equal(arrived, false, "answered an incremental request with nothing changed");
    now += 1000;
    const [rect, ...rest] = await update;
    assert.equal(rest.length, 0);
    assert.deepEqual(
      [rect!.x, rect!.y, rect!.width, rect!.height],
      [CHANGING_RECT.x, CHANGING_RECT.y, CHANGING_RECT.width, CHANGING_RECT.height],
    );
    const block = blockRect(now / 1000);
    assert.deepEqual(rgbAt(rect!, block.x + 4, block.y + 4), [...BLOCK_COLOUR]);
  } finally {
    duplex.close();
  }
});

Deno.test("an incremental request for the bars alone (which never change) is not answered", async () => {
  let now = 1_767_225_600_000;
  await using card = serve({ now: () => now });
  const duplex = await connect(card.port);
  try {
    await readServerInit(duplex);
    await requestUpdate(duplex, { width: W, height: 10 });
    await readRawUpdate(duplex, 4);
    await requestUpdate(duplex, { incremental: true, width: W, height: 10 });
    now += 5000;
    // A full request after it is answered first: the incremental one was dropped.
    await requestUpdate(duplex, { y: H - 1, width: 1, height: 1 });
    const [rect] = await readRawUpdate(duplex, 4);
    assert.deepEqual([rect!.y, rect!.height], [H - 1, 1]);
  } finally {
    duplex.close();
  }
});

Deno.test("the picture changes from one second to the next, in the band only", () => {
  const a = renderTestCard(1_767_225_600);
  const b = renderTestCard(1_767_225_601);
  const bandStart = CHANGING_RECT.y * W * 3;
  assert.deepEqual(a.subarray(0, bandStart), b.subarray(0, bandStart));
  assert.notDeepEqual(a.subarray(bandStart), b.subarray(bandStart));
  assert.notDeepEqual(blockRect(1_767_225_600), blockRect(1_767_225_601));
});

Deno.test("key, pointer, SetEncodings (65535 entries) and clipboard messages are read and ignored", async () => {
  await using card = serve();
  const duplex = await connect(card.port);
  try {
    await readServerInit(duplex);
    const encodings = new Uint8Array(4 + 65535 * 4);
    encodings.set([2, 0, 0xff, 0xff]);
    await duplex.write(encodings);
    await duplex.write(Uint8Array.of(4, 1, 0, 0, 0, 0, 0x41, 0x41));
    await duplex.write(Uint8Array.of(5, 1, 0, 10, 0, 10));
    await duplex.write(Uint8Array.of(6, 0, 0, 0, 0, 0, 0, 3, 0x61, 0x62, 0x63));
    await requestUpdate(duplex, { width: 1, height: 1 });
    const [rect] = await readRawUpdate(duplex, 4);
    assert.deepEqual(rgbAt(rect!, 0, 0), [...BAR_COLOURS[0]!]);
  } finally {
    duplex.close();
  }
});

for (
  const [name, bytes] of [
    ["an unknown message type", Uint8Array.of(99, 0, 0, 0)],
    ["clipboard text longer than the limit", Uint8Array.of(6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff)],
  ] as const
) {
  Deno.test(`${name} ends that connection at once`, async () => {
    await using card = serve({ maxCutTextBytes: 1024 });
    const duplex = await connect(card.port);
    try {
      await readServerInit(duplex);
      await duplex.write(bytes);
      assert.equal(await closedByServer(duplex), true);
    } finally {
      duplex.close();
    }
  });
}

Deno.test("a viewer silent in the handshake is dropped after the handshake time", async () => {
  await using card = serve({ handshakeTimeoutMs: 200 });
  const duplex = new ConnDuplex(await Deno.connect({ hostname: "127.0.0.1", port: card.port }));
  try {
    assert.equal(await closedByServer(duplex), true);
  } finally {
    duplex.close();
  }
});

Deno.test("a garbage version message ends the connection; the server keeps serving", async () => {
  await using card = serve();
  const duplex = new ConnDuplex(await Deno.connect({ hostname: "127.0.0.1", port: card.port }));
  try {
    await readExact(duplex, 12);
    await duplex.write(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
    assert.equal(await closedByServer(duplex), true);
  } finally {
    duplex.close();
  }
  const next = await connect(card.port);
  next.close();
});

Deno.test("connections beyond maxConnections are closed at once", async () => {
  await using card = serve({ maxConnections: 2 });
  const held = [await connect(card.port), await connect(card.port)];
  const extra = new ConnDuplex(await Deno.connect({ hostname: "127.0.0.1", port: card.port }));
  try {
    assert.equal(await closedByServer(extra), true);
  } finally {
    extra.close();
    for (const duplex of held) duplex.close();
  }
});

Deno.test("a viewer choosing VNC Authentication is refused with a reason (3.8)", async () => {
  await using card = serve();
  const duplex = new ConnDuplex(await Deno.connect({ hostname: "127.0.0.1", port: card.port }));
  try {
    await readExact(duplex, 12);
    await duplex.write(new TextEncoder().encode("RFB 003.008\n"));
    await readExact(duplex, 2);
    await duplex.write(Uint8Array.of(2));
    assert.equal(await readU32(duplex), 1);
    const reason = await readExact(duplex, await readU32(duplex));
    assert.match(new TextDecoder().decode(reason), /None/);
    assert.equal(await closedByServer(duplex), true);
  } finally {
    duplex.close();
  }
  assert.equal(card.viewers, 0);
});
