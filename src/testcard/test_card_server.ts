/**
 * A built-in VNC server that shows a test card (colour bars and a clock
 * that changes once a second), for `vncauthproxy demo`, tests and the
 * bench. RFB 3.3, 3.7 and 3.8 with security None, raw encoding only.
 *
 * It answers every FramebufferUpdateRequest: a full one at once, an
 * incremental one at once when the picture changed since the last update
 * this viewer got, else at the next second. It converts to any true-colour
 * pixel format (SetPixelFormat) and closes the connection on a colour-map
 * one, ignores key and pointer events and clipboard text, and bounds every
 * read: handshake time, clipboard length, connections at once; an unknown
 * message (whose length it cannot know) ends the connection.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import { acceptWithBackoff } from "../io/accept_with_backoff.ts";
import { readExact, readU8, UnexpectedEofError } from "../io/byte_reader.ts";
import { startDeadline, withDeadline } from "../io/deadline.ts";
import { ConnDuplex, type Duplex, formatHostPort } from "../io/duplex.ts";
import { type Logger, silentLogger } from "../log.ts";
import {
  decodePixelFormat,
  DEFAULT_PIXEL_FORMAT,
  encodeServerInit,
  packPixels,
  type PixelFormat,
  pixelFormatProblem,
} from "../rfb/pixel_format.ts";
import {
  encodeSecurityOffer,
  encodeSecurityResult,
  encodeVersion,
  parseVersion,
  SECURITY_NONE,
  VERSION_LENGTH,
} from "../rfb/rfb_messages.ts";
import {
  CHANGING_RECT,
  intersect,
  type Rect,
  renderTestCard,
  TEST_CARD_HEIGHT,
  TEST_CARD_WIDTH,
} from "./test_card_picture.ts";

/** The desktop name in ServerInit. */
export const TEST_CARD_NAME = "vncauthproxy test card";

/** Client message types (RFC 6143 §7.5). */
const SET_PIXEL_FORMAT = 0;
const SET_ENCODINGS = 2;
const FRAMEBUFFER_UPDATE_REQUEST = 3;
const KEY_EVENT = 4;
const POINTER_EVENT = 5;
const CLIENT_CUT_TEXT = 6;
/** Raw encoding (RFC 6143 §7.7.1). */
const ENCODING_RAW = 0;

/** Options of {@linkcode startTestCardServer}. */
export interface TestCardOptions {
  /** Address to listen on. @default {"127.0.0.1"} */
  readonly hostname?: string;
  /** Port; 0 picks one. @default {0} */
  readonly port?: number;
  /** Where connection events are logged. @default {silentLogger} */
  readonly logger?: Logger;
  /** Clock in milliseconds since the epoch. @default {Date.now} */
  readonly now?: () => number;
  /** Time for the version and security exchange. @default {10000} */
  readonly handshakeTimeoutMs?: number;
  /**
   * Time from the end of the security exchange to ClientInit: a proxy
   * holds the connection until its viewer comes, so this is long.
   * @default {330000}
   */
  readonly clientInitTimeoutMs?: number;
  /** Connections at once; more are closed at once. @default {64} */
  readonly maxConnections?: number;
  /** Longest ClientCutText accepted (and ignored); longer ends the connection. @default {1048576} */
  readonly maxCutTextBytes?: number;
  /** Called when a viewer's ClientInit arrives (a viewer is in). */
  readonly onClientInit?: (shared: boolean) => void;
}

/** A running test card server. */
export interface TestCardServer extends AsyncDisposable {
  /** The bound address. */
  readonly hostname: string;
  /** The bound port. */
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** ClientInits received so far (viewers that got in). */
  readonly viewers: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts the test card server on `options.hostname:options.port`. */
export function startTestCardServer(options: TestCardOptions = {}): TestCardServer {
  const hostname = options.hostname ?? "127.0.0.1";
  const listener = Deno.listen({ hostname, port: options.port ?? 0 });
  const logger = options.logger ?? silentLogger;
  const picture = new PictureClock(options.now ?? Date.now);
  const maxConnections = options.maxConnections ?? 64;
  const stopping = new AbortController();
  const connections = new Map<Duplex, Promise<void>>();
  let accepted = 0;
  let viewers = 0;

  const settings: ConnectionSettings = {
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    clientInitTimeoutMs: options.clientInitTimeoutMs ?? 330_000,
    maxCutTextBytes: options.maxCutTextBytes ?? 1024 * 1024,
    picture,
    onClientInit(shared) {
      viewers++;
      options.onClientInit?.(shared);
    },
  };

  const loop = (async () => {
    while (true) {
      const conn = await acceptWithBackoff(listener, {
        signal: stopping.signal,
        logger,
        what: "Test card",
      });
      if (conn === undefined) return;
      accepted++;
      const duplex = new ConnDuplex(conn);
      if (connections.size >= maxConnections) {
        logger.warn(`${maxConnections} connections already, closing ${duplex.remoteAddress}`);
        duplex.close();
        continue;
      }
      logger.debug(`Connection from ${duplex.remoteAddress}`);
      const served = serveConnection(duplex, settings, stopping.signal).then(
        () => logger.debug(`${duplex.remoteAddress} left`),
        (error) => {
          // A proxy closing the connection of a forwarding nobody used is routine.
          const routine = stopping.signal.aborted || error instanceof UnexpectedEofError;
          const log = routine ? logger.debug : logger.info;
          log(`${duplex.remoteAddress} dropped: ${describeError(error)}`);
        },
      ).finally(() => {
        duplex.close();
        connections.delete(duplex);
      });
      connections.set(duplex, served);
    }
  })();

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      stopping.abort(new Error("The test card is stopping"));
      listener.close();
      await loop;
      for (const duplex of connections.keys()) duplex.close();
      await Promise.allSettled([...connections.values()]);
      picture.stop();
    })();
    return closing;
  };
  const address = listener.addr as Deno.NetAddr;
  logger.debug(`Listening on ${formatHostPort(address.hostname, address.port)}`);
  return {
    hostname: address.hostname,
    port: address.port,
    get accepted() {
      return accepted;
    },
    get viewers() {
      return viewers;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * The current picture, rendered once a second and shared by every
 * connection; `next()` resolves at the next second. The timer runs only
 * while someone waits.
 */
class PictureClock {
  readonly #now: () => number;
  #second = Number.NaN;
  #rgb: Uint8Array = new Uint8Array();
  #tick: PromiseWithResolvers<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(now: () => number) {
    this.#now = now;
  }

  /** The current whole second and its picture. */
  current(): { second: number; rgb: Uint8Array } {
    const second = Math.floor(this.#now() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#rgb = renderTestCard(second);
    }
    return { second, rgb: this.#rgb };
  }

  /** Resolves at the start of the next second. */
  next(): Promise<void> {
    if (this.#tick === undefined) {
      const tick = this.#tick = Promise.withResolvers<void>();
      const ms = 1000 - (this.#now() % 1000);
      this.#timer = setTimeout(() => {
        this.#tick = undefined;
        this.#timer = undefined;
        tick.resolve();
      }, ms);
    }
    return this.#tick.promise;
  }

  /** Clears the timer; waiters are released. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#tick?.resolve();
    this.#tick = undefined;
  }
}

interface ConnectionSettings {
  readonly handshakeTimeoutMs: number;
  readonly clientInitTimeoutMs: number;
  readonly maxCutTextBytes: number;
  readonly picture: PictureClock;
  readonly onClientInit: (shared: boolean) => void;
}

/** One viewer: handshake, then messages until it leaves. */
async function serveConnection(
  duplex: Duplex,
  settings: ConnectionSettings,
  stopping: AbortSignal,
): Promise<void> {
  {
    using phase = startDeadline(settings.handshakeTimeoutMs, stopping);
    await withDeadline(duplex, phase.signal, () => greet(duplex));
  }
  let shared: number;
  {
    using phase = startDeadline(settings.clientInitTimeoutMs, stopping);
    shared = await withDeadline(duplex, phase.signal, () => readU8(duplex));
  }
  settings.onClientInit(shared !== 0);
  await duplex.write(encodeServerInit({
    width: TEST_CARD_WIDTH,
    height: TEST_CARD_HEIGHT,
    format: DEFAULT_PIXEL_FORMAT,
    name: TEST_CARD_NAME,
  }));
  await new Viewer(duplex, settings).run();
}

/** Steps 1-3 of RFC 6143 §7.1: version, security None, SecurityResult on 3.8. */
async function greet(duplex: Duplex): Promise<void> {
  await duplex.write(encodeVersion("3.8"));
  const version = parseVersion(await readExact(duplex, VERSION_LENGTH));
  await duplex.write(encodeSecurityOffer(version, [SECURITY_NONE]));
  if (version === "3.3") return;
  const chosen = await readU8(duplex);
  if (chosen !== SECURITY_NONE) {
    if (version === "3.8") {
      await duplex.write(
        encodeSecurityResult(version, { ok: false, reason: "Only security type None" }),
      );
    }
    throw new Error(`The viewer chose security type ${chosen}`);
  }
  // RFC 6143 §7.1.3: 3.7 sends no SecurityResult for None.
  if (version === "3.8") await duplex.write(encodeSecurityResult(version, { ok: true }));
}

/** The normal phase of one connection (RFC 6143 §7.5). */
class Viewer {
  readonly #duplex: Duplex;
  readonly #settings: ConnectionSettings;
  #format: PixelFormat = DEFAULT_PIXEL_FORMAT;
  /** The second of the picture last sent, NaN before the first update. */
  #sentSecond = Number.NaN;
  /** An incremental request waiting for the picture to change. */
  #waiting: Rect | undefined;
  #writes: Promise<void> = Promise.resolve();
  readonly #ended = Promise.withResolvers<"ended">();
  #isEnded = false;

  constructor(duplex: Duplex, settings: ConnectionSettings) {
    this.#duplex = duplex;
    this.#settings = settings;
  }

  async run(): Promise<void> {
    const ticking = this.#tickLoop();
    try {
      while (await this.#handleMessage());
    } finally {
      this.#isEnded = true;
      this.#ended.resolve("ended");
      await ticking;
      await this.#writes.catch(() => {});
    }
  }

  /** Reads and handles one message; false at the end of the stream. */
  async #handleMessage(): Promise<boolean> {
    const head = new Uint8Array(1);
    if (await this.#duplex.read(head) === null) return false;
    const duplex = this.#duplex;
    switch (head[0]) {
      case SET_PIXEL_FORMAT: {
        const body = await readExact(duplex, 19);
        const format = decodePixelFormat(body.subarray(3));
        const problem = pixelFormatProblem(format);
        if (problem !== undefined) throw new RangeError(`Unsupported pixel format: ${problem}`);
        this.#format = format;
        return true;
      }
      case SET_ENCODINGS: {
        // Raw is always allowed (RFC 6143 §7.7.1): the list changes nothing.
        const count = new DataView((await readExact(duplex, 3)).buffer).getUint16(1);
        await skip(duplex, count * 4);
        return true;
      }
      case FRAMEBUFFER_UPDATE_REQUEST: {
        const body = await readExact(duplex, 9);
        const view = new DataView(body.buffer);
        const rect = intersect(
          {
            x: view.getUint16(1),
            y: view.getUint16(3),
            width: view.getUint16(5),
            height: view.getUint16(7),
          },
          { x: 0, y: 0, width: TEST_CARD_WIDTH, height: TEST_CARD_HEIGHT },
        );
        if (rect !== undefined) await this.#answer(rect, body[0] !== 0);
        return true;
      }
      case KEY_EVENT:
        await skip(duplex, 7);
        return true;
      case POINTER_EVENT:
        await skip(duplex, 5);
        return true;
      case CLIENT_CUT_TEXT: {
        const length = new DataView((await readExact(duplex, 7)).buffer).getUint32(3);
        const max = this.#settings.maxCutTextBytes;
        if (length > max) {
          throw new RangeError(`Clipboard text of ${length} bytes (at most ${max})`);
        }
        await skip(duplex, length);
        return true;
      }
      default:
        throw new RangeError(`Unknown client message type ${head[0]}`);
    }
  }

  /** Answers a request now, or for an unchanged picture, at the next change. */
  async #answer(rect: Rect, incremental: boolean): Promise<void> {
    const { second } = this.#settings.picture.current();
    if (!incremental || Number.isNaN(this.#sentSecond)) {
      this.#waiting = undefined;
      return await this.#send(rect);
    }
    const changed = intersect(rect, CHANGING_RECT);
    if (changed === undefined) return; // nothing there ever changes
    if (second !== this.#sentSecond) {
      this.#waiting = undefined;
      return await this.#send(changed);
    }
    this.#waiting = changed;
  }

  /** Sends the waiting incremental update at each new second. */
  async #tickLoop(): Promise<void> {
    while (!this.#isEnded) {
      await Promise.race([this.#settings.picture.next(), this.#ended.promise]);
      const rect = this.#waiting;
      if (this.#isEnded || rect === undefined) continue;
      // A timer may fire early, or a clock stand still: only a new picture counts.
      if (this.#settings.picture.current().second === this.#sentSecond) continue;
      this.#waiting = undefined;
      await this.#send(rect).catch(() => this.#duplex.close());
    }
  }

  /** Sends one FramebufferUpdate of `rect`, raw, after any update in flight. */
  #send(rect: Rect): Promise<void> {
    const { second, rgb } = this.#settings.picture.current();
    this.#sentSecond = second;
    const bytes = encodeRawUpdate(rgb, { rect, format: this.#format });
    const write = this.#writes.then(() => this.#duplex.write(bytes));
    this.#writes = write.catch(() => {});
    return write;
  }
}

/**
 * A FramebufferUpdate with one raw rectangle (RFC 6143 §7.6.1, §7.7.1) of
 * the test card's RGB picture `rgb`.
 */
export function encodeRawUpdate(
  rgb: Uint8Array,
  options: { readonly rect: Rect; readonly format: PixelFormat },
): Uint8Array {
  const { rect, format } = options;
  const bytesPerPixel = format.bitsPerPixel / 8;
  const out = new Uint8Array(16 + rect.width * rect.height * bytesPerPixel);
  const view = new DataView(out.buffer);
  view.setUint8(0, 0);
  view.setUint16(2, 1);
  view.setUint16(4, rect.x);
  view.setUint16(6, rect.y);
  view.setUint16(8, rect.width);
  view.setUint16(10, rect.height);
  view.setInt32(12, ENCODING_RAW);
  let o = 16;
  for (let y = rect.y; y < rect.y + rect.height; y++) {
    o = packPixels(rgb, format, {
      offset: (y * TEST_CARD_WIDTH + rect.x) * 3,
      count: rect.width,
      out,
      outOffset: o,
    });
  }
  return out;
}

/** Reads and drops `length` bytes through a small buffer. */
async function skip(duplex: Duplex, length: number): Promise<void> {
  const buffer = new Uint8Array(Math.min(length, 4096));
  let left = length;
  while (left > 0) {
    const n = await duplex.read(buffer.subarray(0, Math.min(left, buffer.length)));
    if (n === null) throw new Error("Connection closed in the middle of a message");
    left -= n;
  }
}
