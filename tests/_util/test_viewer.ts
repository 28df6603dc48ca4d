/**
 * A minimal scripted VNC viewer for tests: connects to a forwarded port,
 * answers the proxy's handshake as told (version, security type, password,
 * one byte per write) and reports what happened.
 *
 * @module
 */

import { readExact, readU32, readU8 } from "../../src/io/byte_reader.ts";
import { ConnDuplex, type Duplex } from "../../src/io/duplex.ts";
import { vncAuthResponse } from "../../src/rfb/vnc_auth.ts";

/** How the viewer behaves. */
export interface ViewerOptions {
  /** Loopback port to connect to. */
  readonly port: number;
  /** Host. @default {"127.0.0.1"} */
  readonly host?: string;
  /** Password to answer the challenge with. */
  readonly password: string;
  /** Version to answer with. @default {"RFB 003.008\n"} */
  readonly version?: string;
  /** Security type to choose on 3.7/3.8. @default {2} */
  readonly chooseType?: number;
  /** Shared flag of ClientInit. @default {0} */
  readonly shared?: number;
  /** Write every message one byte at a time. */
  readonly oneByteWrites?: boolean;
}

/** What the viewer saw. */
export interface ViewerResult {
  /** The proxy's version message. */
  readonly serverVersion: string;
  /** Security types offered (3.7/3.8) or the u32 type (3.3). */
  readonly offered: number[];
  /** true when SecurityResult was OK. */
  readonly ok: boolean;
  /** The failure reason (3.8), if any. */
  readonly reason?: string;
  /** The connection, open after success (ServerInit is next). */
  readonly duplex: Duplex;
}

async function send(duplex: Duplex, bytes: Uint8Array, oneByte?: boolean): Promise<void> {
  if (!oneByte) return await duplex.write(bytes);
  for (const byte of bytes) await duplex.write(Uint8Array.of(byte));
}

/** Connects and runs the viewer's half of the handshake. */
export async function connectViewer(options: ViewerOptions): Promise<ViewerResult> {
  const conn = await Deno.connect({ hostname: options.host ?? "127.0.0.1", port: options.port });
  const duplex = new ConnDuplex(conn);
  try {
    return await handshake(duplex, options);
  } catch (error) {
    duplex.close();
    throw error;
  }
}

/** Runs the viewer's half of the handshake on an open duplex. */
export async function handshake(duplex: Duplex, options: ViewerOptions): Promise<ViewerResult> {
  const one = options.oneByteWrites;
  const serverVersion = new TextDecoder().decode(await readExact(duplex, 12));
  const version = options.version ?? "RFB 003.008\n";
  await send(duplex, new TextEncoder().encode(version), one);
  const minor = Number(version.slice(8, 11));
  let offered: number[];
  if (minor === 3) {
    offered = [await readU32(duplex)];
  } else {
    const count = await readU8(duplex);
    offered = [...await readExact(duplex, count)];
    const chosen = options.chooseType ?? 2;
    await send(duplex, Uint8Array.of(chosen), one);
    if (chosen !== 2) {
      return { serverVersion, offered, ...(await result(duplex, minor)), duplex };
    }
  }
  const challenge = await readExact(duplex, 16);
  await send(duplex, vncAuthResponse(options.password, challenge), one);
  const outcome = await result(duplex, minor);
  if (outcome.ok) await send(duplex, Uint8Array.of(options.shared ?? 0), one);
  return { serverVersion, offered, ...outcome, duplex };
}

async function result(duplex: Duplex, minor: number): Promise<{ ok: boolean; reason?: string }> {
  const status = await readU32(duplex);
  if (status === 0) return { ok: true };
  if (minor < 8) return { ok: false };
  const length = await readU32(duplex);
  return { ok: false, reason: new TextDecoder().decode(await readExact(duplex, length)) };
}

/** Reads a ServerInit (RFC 6143 §7.3.2) and returns width, height, name. */
export async function readServerInit(
  duplex: Duplex,
): Promise<{ width: number; height: number; name: string }> {
  const head = await readExact(duplex, 24);
  const view = new DataView(head.buffer);
  const name = new TextDecoder().decode(await readExact(duplex, view.getUint32(20)));
  return { width: view.getUint16(0), height: view.getUint16(2), name };
}

/** Sends a FramebufferUpdateRequest (RFC 6143 §7.5.3). */
export async function requestUpdate(
  duplex: Duplex,
  options: {
    readonly incremental?: boolean;
    readonly x?: number;
    readonly y?: number;
    readonly width: number;
    readonly height: number;
  },
): Promise<void> {
  const bytes = new Uint8Array(10);
  const view = new DataView(bytes.buffer);
  bytes[0] = 3;
  bytes[1] = options.incremental ? 1 : 0;
  view.setUint16(2, options.x ?? 0);
  view.setUint16(4, options.y ?? 0);
  view.setUint16(6, options.width);
  view.setUint16(8, options.height);
  await duplex.write(bytes);
}

/** One raw rectangle of a FramebufferUpdate. */
export interface RawRect {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
  /** The rectangle's pixels, `bytesPerPixel` each, rows top to bottom. */
  readonly pixels: Uint8Array;
}

/**
 * Reads one FramebufferUpdate (RFC 6143 §7.6.1) whose rectangles are all
 * raw; throws on any other message or encoding.
 */
export async function readRawUpdate(duplex: Duplex, bytesPerPixel: number): Promise<RawRect[]> {
  const head = await readExact(duplex, 4);
  if (head[0] !== 0) throw new Error(`Expected a FramebufferUpdate, got message type ${head[0]}`);
  const count = new DataView(head.buffer).getUint16(2);
  const rects: RawRect[] = [];
  for (let i = 0; i < count; i++) {
    const header = new DataView((await readExact(duplex, 12)).buffer);
    const [x, y, width, height] = [0, 2, 4, 6].map((at) => header.getUint16(at)) as [
      number,
      number,
      number,
      number,
    ];
    const encoding = header.getInt32(8);
    if (encoding !== 0) throw new Error(`Expected raw encoding, got ${encoding}`);
    rects.push({
      x,
      y,
      width,
      height,
      pixels: await readExact(duplex, width * height * bytesPerPixel),
    });
  }
  return rects;
}

/** The RGB of pixel (x, y) of a raw rectangle in the 32-bit default format (blue, green, red, 0). */
export function rgbAt(rect: RawRect, x: number, y: number): [number, number, number] {
  const at = ((y - rect.y) * rect.width + (x - rect.x)) * 4;
  return [rect.pixels[at + 2]!, rect.pixels[at + 1]!, rect.pixels[at]!];
}
