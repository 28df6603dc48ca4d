/**
 * Test helpers for the gateway: a daemon with `--gateway-listen`, the
 * gateway's port from its log, and a viewer's RFB handshake over a raw
 * WebSocket (security None for a token, VNC Authentication otherwise).
 *
 * @module
 */

import assert from "node:assert/strict";
import { vncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import { type DaemonProcess, startDaemon } from "./daemon_process.ts";
import { type RawWebSocket } from "./raw_websocket.ts";
import { makeTestCertificate, type TestCertificate } from "./tls.ts";

/** A daemon with a gateway, and what a test needs to reach it. */
export interface GatewayDaemon extends AsyncDisposable {
  readonly daemon: DaemonProcess;
  /** The gateway's port on this host. */
  readonly gatewayPort: number;
  /** The certificate the gateway serves (unless plain). */
  readonly certificate?: TestCertificate;
}

/** Starts a daemon whose gateway listens on `listen` (default 127.0.0.1:0). */
export async function startGatewayDaemon(options: {
  readonly users: Readonly<Record<string, string>>;
  readonly args?: readonly string[];
  readonly plain?: boolean;
  readonly listen?: string;
}): Promise<GatewayDaemon> {
  const certificate = options.plain ? undefined : await makeTestCertificate();
  let daemon: DaemonProcess;
  try {
    daemon = await startDaemon({
      users: options.users,
      args: [
        `--gateway-listen=${options.listen ?? "127.0.0.1:0"}`,
        ...(certificate
          ? [`--cert-file=${certificate.certFile}`, `--key-file=${certificate.keyFile}`]
          : ["--gateway-plain"]),
        ...(options.args ?? []),
      ],
    });
  } catch (error) {
    // A daemon that did not start (a port taken, say) leaves no certificate behind.
    await certificate?.[Symbol.asyncDispose]();
    throw error;
  }
  const line = await daemon.waitForLine(/Gateway on /);
  const gatewayPort = Number(/Gateway on \S*?:(\d+)/.exec(line)![1]);
  return {
    daemon,
    gatewayPort,
    ...(certificate ? { certificate } : {}),
    async [Symbol.asyncDispose]() {
      await daemon[Symbol.asyncDispose]();
      await certificate?.[Symbol.asyncDispose]();
    },
  };
}

/** Reads whole frames until at least `count` payload bytes have arrived. */
export async function readPayload(socket: RawWebSocket, count: number): Promise<Uint8Array> {
  let bytes = new Uint8Array();
  while (bytes.length < count) {
    const frame = await socket.readFrame();
    if (frame === null) throw new Error("WebSocket closed early");
    if (frame.opcode === 0x8) throw new Error("WebSocket close frame");
    const next = new Uint8Array(bytes.length + frame.payload.length);
    next.set(bytes);
    next.set(frame.payload, bytes.length);
    bytes = next;
  }
  return bytes;
}

/**
 * Runs a 3.8 viewer's handshake over the WebSocket: security None when
 * `password` is undefined, VNC Authentication otherwise; then ClientInit.
 * With `oneBytePerFrame`, every byte the viewer sends is a frame of its own.
 * Resolves to the SecurityResult status (0 = OK).
 */
export async function viewerHandshake(
  socket: RawWebSocket,
  password?: string,
  options: { readonly oneBytePerFrame?: boolean } = {},
): Promise<number> {
  const send = async (bytes: Uint8Array) => {
    if (!options.oneBytePerFrame) return await socket.sendBinary(bytes);
    for (let i = 0; i < bytes.length; i++) await socket.sendBinary(bytes.subarray(i, i + 1));
  };
  const decoder = new TextDecoder();
  if (decoder.decode(await readPayload(socket, 12)) !== "RFB 003.008\n") {
    throw new Error("Not an RFB 3.8 greeting");
  }
  await send(new TextEncoder().encode("RFB 003.008\n"));
  const offer = await readPayload(socket, 2);
  const type = password === undefined ? 1 : 2;
  if (offer[0] !== 1 || offer[1] !== type) throw new Error(`Offered [${[...offer]}]`);
  await send(Uint8Array.of(type));
  if (password !== undefined) {
    const challenge = await readPayload(socket, 16);
    await send(vncAuthResponse(password, challenge));
  }
  const result = new DataView((await readPayload(socket, 4)).buffer).getUint32(0);
  if (result === 0) await send(Uint8Array.of(1)); // ClientInit
  return result;
}

/** Reads exact byte counts out of a WebSocket's binary frames, keeping what is left. */
export class FrameBytes {
  readonly #socket: RawWebSocket;
  #buffered = new Uint8Array();

  constructor(socket: RawWebSocket) {
    this.#socket = socket;
  }

  async read(count: number): Promise<Uint8Array> {
    if (this.#buffered.length < count) {
      const more = await readPayload(this.#socket, count - this.#buffered.length);
      const joined = new Uint8Array(this.#buffered.length + more.length);
      joined.set(this.#buffered);
      joined.set(more, this.#buffered.length);
      this.#buffered = joined;
    }
    const bytes = this.#buffered.slice(0, count);
    this.#buffered = this.#buffered.subarray(count);
    return bytes;
  }
}

/**
 * After {@linkcode viewerHandshake}: reads ServerInit (RFC 6143 §7.3.2),
 * asks for the whole screen as Raw 32-bit little-endian true colour
 * (§7.5.1 SetPixelFormat, §7.5.2 SetEncodings, §7.5.3
 * FramebufferUpdateRequest) and asserts every pixel is the desktop colour.
 */
export async function assertRawDesktop(
  socket: RawWebSocket,
  desktop: {
    readonly width: number;
    readonly height: number;
    readonly name: string;
    readonly color: readonly number[];
  },
): Promise<void> {
  const { width: WIDTH, height: HEIGHT, color: COLOR } = desktop;
  const bytes = new FrameBytes(socket);
  const init = new DataView((await bytes.read(24)).buffer);
  assert.deepEqual([init.getUint16(0), init.getUint16(2)], [WIDTH, HEIGHT]);
  const name = new TextDecoder().decode(await bytes.read(init.getUint32(20)));
  assert.equal(name, desktop.name, "the desktop name");
  const format = Uint8Array.of(0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0);
  const encodings = Uint8Array.of(2, 0, 0, 1, 0, 0, 0, 0);
  const update = new Uint8Array(10);
  new DataView(update.buffer).setUint8(0, 3);
  new DataView(update.buffer).setUint16(6, WIDTH);
  new DataView(update.buffer).setUint16(8, HEIGHT);
  await socket.sendBinary(format);
  await socket.sendBinary(encodings);
  await socket.sendBinary(update);
  const seen = new Uint8Array(WIDTH * HEIGHT);
  while (seen.some((pixel) => pixel === 0)) {
    const head = await bytes.read(4);
    assert.equal(head[0], 0, "a FramebufferUpdate");
    const rects = new DataView(head.buffer).getUint16(2);
    for (let r = 0; r < rects; r++) {
      const rect = new DataView((await bytes.read(12)).buffer);
      const [x, y, w, h] = [0, 2, 4, 6].map((offset) => rect.getUint16(offset));
      assert.equal(rect.getInt32(8), 0, "Raw encoding");
      const pixels = new DataView((await bytes.read(w * h * 4)).buffer);
      for (let i = 0; i < w * h; i++) {
        const value = pixels.getUint32(i * 4, true);
        const rgb = [(value >> 16) & 0xff, (value >> 8) & 0xff, value & 0xff];
        const at = [x + (i % w), y + Math.floor(i / w)];
        assert.deepEqual(rgb, [...COLOR], `pixel (${at})`);
        seen[at[1] * WIDTH + at[0]] = 1;
      }
    }
  }
}
