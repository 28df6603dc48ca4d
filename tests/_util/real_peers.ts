/**
 * Real VNC peers for end-to-end tests, all on 127.0.0.1: TigerVNC's `Xvnc` and QEMU as
 * servers (QEMU also with `password=on` set over QMP, on `-vnc unix:PATH`, and behind
 * `tls-creds-x509` or `tls-creds-anon`), gtk-vnc's `gvnccapture` as the viewer, plus the
 * small decoders needed to read what they produce (PPM from QEMU's `screendump`, PNG from
 * `gvnccapture`).
 *
 * Every helper owns its processes and temporary files and releases them in
 * `[Symbol.asyncDispose]()`, so tests can `await using` them with the sanitizers on.
 *
 * Debian packages: `tigervnc-standalone-server` (Xvnc), `x11-xserver-utils` (xsetroot),
 * `gvncviewer` (gvnccapture), `qemu-system-x86` (qemu-system-x86_64), `bsdutils` (script,
 * essential) and optionally `tigervnc-tools` (vncpasswd, only to cross-check a test).
 *
 * @module
 */

import { createCipheriv } from "node:crypto";
import { inflateSync } from "node:zlib";
import { concatBytes } from "../../src/io/bytes.ts";
import { delay, signalChild, stopChild } from "./child_process.ts";

const LOOPBACK = "127.0.0.1";
/** Bytes of a child's output kept for error messages (the tail). */
const OUTPUT_TAIL_BYTES = 16 * 1024;
/** RFC 6143 §7.1.1: the server's first 12 bytes, "RFB xxx.yyy\n". */
const RFB_BANNER = /^RFB \d{3}\.\d{3}\n$/;
/** gvnccapture only takes a display number and connects to port 5900 + display. */
const VNC_BASE_PORT = 5900;
/**
 * The fixed key of the classic vncpasswd file (d3des `fixedkey` 23 82 107 6 35 78 88 7),
 * each byte bit-reversed: d3des reads key bits least significant first, standard DES
 * (OpenSSL) most significant first. Checked against `echo secret | vncpasswd -f`.
 */
const VNC_PASSWD_FILE_KEY = new Uint8Array([0xe8, 0x4a, 0xd6, 0x60, 0xc4, 0x72, 0x1a, 0xe0]);

// ---------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------

/** A decoded RGB image. */
export interface Image {
  readonly width: number;
  readonly height: number;
  /** Pixels row by row, 3 bytes (R, G, B) each. */
  readonly data: Uint8Array;
  /** The `[r, g, b]` of one pixel; throws `RangeError` outside the image. */
  pixel(x: number, y: number): [number, number, number];
}

/** Wraps RGB bytes as an {@linkcode Image}. */
export function makeImage(width: number, height: number, data: Uint8Array): Image {
  if (data.length !== width * height * 3) {
    throw new RangeError(`Image data has ${data.length} bytes, expected ${width * height * 3}`);
  }
  return {
    width,
    height,
    data,
    pixel(x: number, y: number): [number, number, number] {
      if (
        !Number.isInteger(x) || !Number.isInteger(y) || x < 0 || y < 0 || x >= width || y >= height
      ) {
        throw new RangeError(`Pixel (${x}, ${y}) is outside the ${width}x${height} image`);
      }
      const i = (y * width + x) * 3;
      return [data[i], data[i + 1], data[i + 2]];
    },
  };
}

/**
 * Counts the pixels whose channels differ by more than `tolerance` between two images of
 * the same size; throws `RangeError` when the sizes differ.
 */
export function countDifferentPixels(a: Image, b: Image, tolerance = 0): number {
  if (a.width !== b.width || a.height !== b.height) {
    throw new RangeError(`Image sizes differ: ${a.width}x${a.height} and ${b.width}x${b.height}`);
  }
  let count = 0;
  for (let i = 0; i < a.data.length; i += 3) {
    if (
      Math.abs(a.data[i] - b.data[i]) > tolerance ||
      Math.abs(a.data[i + 1] - b.data[i + 1]) > tolerance ||
      Math.abs(a.data[i + 2] - b.data[i + 2]) > tolerance
    ) count++;
  }
  return count;
}

/** Parses `#rrggbb` into `[r, g, b]`. */
export function parseHexColor(color: string): [number, number, number] {
  const match = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (match === null) throw new SyntaxError(`Invalid colour "${color}": expected "#rrggbb"`);
  return [parseInt(match[1], 16), parseInt(match[2], 16), parseInt(match[3], 16)];
}

/** Decodes a binary PPM (`P6`, maxval at most 255), as written by QEMU's `screendump`. */
export function decodePpm(bytes: Uint8Array): Image {
  let offset = 0;
  function token(): string {
    // Whitespace and `#` comments separate header fields (netpbm's ppm(5)).
    while (offset < bytes.length) {
      const c = bytes[offset];
      if (c === 0x23) {
        while (offset < bytes.length && bytes[offset] !== 0x0a) offset++;
      } else if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) {
        offset++;
      } else break;
    }
    const start = offset;
    while (offset < bytes.length && !/\s/.test(String.fromCharCode(bytes[offset]))) offset++;
    return String.fromCharCode(...bytes.subarray(start, offset));
  }
  const magic = token();
  if (magic !== "P6") throw new SyntaxError(`Invalid PPM: magic "${magic}", expected "P6"`);
  const width = Number(token());
  const height = Number(token());
  const maxval = Number(token());
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new SyntaxError(`Invalid PPM size ${width}x${height}`);
  }
  if (!Number.isInteger(maxval) || maxval < 1 || maxval > 255) {
    throw new SyntaxError(`Unsupported PPM maxval ${maxval}`);
  }
  offset++; // The single whitespace byte after maxval.
  const length = width * height * 3;
  if (bytes.length - offset < length) {
    throw new SyntaxError(`Truncated PPM: ${bytes.length - offset} of ${length} pixel bytes`);
  }
  const data = bytes.slice(offset, offset + length);
  if (maxval !== 255) {
    for (let i = 0; i < data.length; i++) data[i] = Math.round(data[i] * 255 / maxval);
  }
  return makeImage(width, height, data);
}

/**
 * Decodes a PNG with 8-bit samples, not interlaced (grey, grey+alpha, RGB or RGBA), as
 * written by `gvnccapture`; alpha is dropped.
 */
export function decodePng(bytes: Uint8Array): Image {
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length < 8 || signature.some((b, i) => bytes[i] !== b)) {
    throw new SyntaxError("Invalid PNG: bad signature");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Uint8Array[] = [];
  let offset = 8;
  while (true) {
    if (offset + 8 > bytes.length) throw new SyntaxError("Invalid PNG: missing IEND chunk");
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (data.length !== length) throw new SyntaxError(`Invalid PNG: truncated "${type}" chunk`);
    if (type === "IHDR") {
      if (length !== 13) throw new SyntaxError(`Invalid PNG: IHDR of ${length} bytes`);
      width = view.getUint32(offset + 8);
      height = view.getUint32(offset + 12);
      const [depth, colorType, , , interlace] = data.subarray(8, 13);
      const channelsByType: Record<number, number> = { 0: 1, 2: 3, 4: 2, 6: 4 };
      channels = channelsByType[colorType] ?? 0;
      if (depth !== 8 || channels === 0 || interlace !== 0) {
        throw new SyntaxError(
          `Unsupported PNG: bit depth ${depth}, colour type ${colorType}, interlace ${interlace}`,
        );
      }
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "IEND") {
      break;
    }
    offset += 12 + length; // Length, type, data, CRC (not checked: the file is local).
  }
  if (channels === 0) throw new SyntaxError("Invalid PNG: missing IHDR chunk");
  const raw = new Uint8Array(inflateSync(concatBytes(idat)));
  const stride = width * channels;
  if (raw.length < (stride + 1) * height) throw new SyntaxError("Invalid PNG: truncated data");
  const pixels = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const prior = y === 0 ? new Uint8Array(stride) : pixels.subarray((y - 1) * stride, y * stride);
    unfilterLine(filter, line, prior, out, channels);
  }
  const rgb = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    const s = p * channels;
    const grey = channels <= 2;
    rgb[p * 3] = pixels[s];
    rgb[p * 3 + 1] = grey ? pixels[s] : pixels[s + 1];
    rgb[p * 3 + 2] = grey ? pixels[s] : pixels[s + 2];
  }
  return makeImage(width, height, rgb);
}

/** Reverses one PNG filter (PNG spec §9.2: None, Sub, Up, Average, Paeth). */
function unfilterLine(
  filter: number,
  line: Uint8Array,
  prior: Uint8Array,
  out: Uint8Array,
  bpp: number,
): void {
  for (let i = 0; i < line.length; i++) {
    const a = i >= bpp ? out[i - bpp] : 0;
    const b = prior[i];
    const c = i >= bpp ? prior[i - bpp] : 0;
    let predictor: number;
    switch (filter) {
      case 0:
        predictor = 0;
        break;
      case 1:
        predictor = a;
        break;
      case 2:
        predictor = b;
        break;
      case 3:
        predictor = (a + b) >> 1;
        break;
      case 4: {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
        break;
      }
      default:
        throw new SyntaxError(`Invalid PNG: filter type ${filter}`);
    }
    out[i] = (line[i] + predictor) & 0xff;
  }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/** Whether an executable called `name` is on `PATH`. */
export function hasCommand(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return true;
    } catch {
      // Not in this directory.
    }
  }
  return false;
}

function requireCommand(name: string, debianPackage: string): void {
  if (!hasCommand(name)) {
    throw new Error(`Command "${name}" is not installed (Debian package "${debianPackage}")`);
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released). */
export function findFreePort(): number {
  using listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  return listener.addr.port;
}

/**
 * Encodes a password as a classic vncpasswd file (what `vncpasswd -f` prints and what
 * `Xvnc -PasswordFile` and `vncsnapshot -passwd` read): the first 8 bytes, NUL-padded,
 * DES-encrypted with the fixed d3des key.
 */
export function encodeVncPasswordFile(password: string): Uint8Array {
  const plain = new Uint8Array(8);
  plain.set(new TextEncoder().encode(password).subarray(0, 8));
  const key = concatBytes([VNC_PASSWD_FILE_KEY, VNC_PASSWD_FILE_KEY, VNC_PASSWD_FILE_KEY]);
  // Triple DES with three equal keys is single DES, which OpenSSL 3 keeps out of "legacy".
  const cipher = createCipheriv("des-ede3-cbc", key, new Uint8Array(8));
  cipher.setAutoPadding(false);
  return concatBytes([cipher.update(plain), cipher.final()]);
}

/** Options for {@linkcode waitForRfbBanner}. */
export interface WaitForRfbBannerOptions {
  /** @default "127.0.0.1" */
  hostname?: string;
  /** Connect to this Unix socket instead (`port` and `hostname` are then ignored). */
  unixPath?: string;
  /** @default 10000 */
  timeoutMs?: number;
}

/**
 * Connects to `port` until the server sends an RFB version banner (RFC 6143 §7.1.1) or
 * the time is up, then hangs up; returns the banner without its newline.
 */
export async function waitForRfbBanner(
  port: number,
  options: WaitForRfbBannerOptions = {},
): Promise<string> {
  const hostname = options.hostname ?? LOOPBACK;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const { unixPath } = options;
  const connect = unixPath === undefined
    ? () => Deno.connect({ hostname, port })
    : () => Deno.connect({ transport: "unix", path: unixPath });
  let lastError = "no attempt";
  while (Date.now() < deadline) {
    try {
      const banner = await readBanner(connect, deadline);
      if (RFB_BANNER.test(banner)) return banner.trimEnd();
      lastError = `unexpected banner ${JSON.stringify(banner)}`;
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
    await delay(50);
  }
  const where = unixPath === undefined ? `${hostname}:${port}` : `unix:${unixPath}`;
  throw new Error(`No RFB banner from "${where}" within ${timeoutMs} ms: ${lastError}`);
}

async function readBanner(connect: () => Promise<Deno.Conn>, deadline: number): Promise<string> {
  const conn = await connect();
  // Closing the connection makes a pending read settle, so the deadline leaks no op.
  const timer = setTimeout(() => conn.close(), Math.max(0, deadline - Date.now()));
  const banner = new Uint8Array(12);
  let filled = 0;
  try {
    while (filled < banner.length) {
      const n = await conn.read(banner.subarray(filled));
      if (n === null) break;
      filled += n;
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Already closed by the deadline.
    }
  }
  return new TextDecoder().decode(banner.subarray(0, filled));
}

/** Keeps the last bytes of a process's output for error messages. */
class OutputTail {
  #chunks: Uint8Array[] = [];
  #size = 0;

  push(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    while (this.#size > OUTPUT_TAIL_BYTES && this.#chunks.length > 1) {
      this.#size -= this.#chunks.shift()!.length;
    }
  }

  text(): string {
    return new TextDecoder().decode(concatBytes(this.#chunks)).trim();
  }
}

async function drainInto(
  stream: ReadableStream<Uint8Array>,
  tail: OutputTail,
  onChunk?: (chunk: Uint8Array) => void,
): Promise<void> {
  for await (const chunk of stream) {
    tail.push(chunk);
    onChunk?.(chunk);
  }
}

// ---------------------------------------------------------------------------------------
// Xvnc
// ---------------------------------------------------------------------------------------

/** Options for {@linkcode startXvnc}. */
export interface StartXvncOptions {
  /** Desktop size. @default "64x48" */
  geometry?: string;
  /** `#rrggbb` fill of the whole desktop (root window). @default black, unset */
  color?: string;
  /** Require VNC authentication with this password (else security type None). */
  password?: string;
  /** Bound on start-up. @default 10000 */
  timeoutMs?: number;
}

/** A running TigerVNC `Xvnc`, stopped on dispose. */
export interface XvncServer extends AsyncDisposable {
  /** RFB port on 127.0.0.1. */
  readonly port: number;
  /** X display number (`DISPLAY=:N`). */
  readonly display: number;
  /** The tail of Xvnc's log (stderr). */
  log(): string;
}

/**
 * Starts `Xvnc` on a free X display (chosen by Xvnc through `-displayfd`) and a free RFB
 * port on 127.0.0.1, waits for the RFB banner and fills the desktop with `color`.
 */
export async function startXvnc(options: StartXvncOptions = {}): Promise<XvncServer> {
  requireCommand("Xvnc", "tigervnc-standalone-server");
  if (options.color !== undefined) {
    parseHexColor(options.color);
    requireCommand("xsetroot", "x11-xserver-utils");
  }
  const geometry = options.geometry ?? "64x48";
  if (!/^\d+x\d+$/.test(geometry)) {
    throw new SyntaxError(`Invalid geometry "${geometry}": expected "WIDTHxHEIGHT"`);
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  const dir = await Deno.makeTempDir({ prefix: "real_peers_xvnc_" });
  try {
    const security = ["-SecurityTypes", "None"];
    if (options.password !== undefined) {
      const file = `${dir}/passwd`;
      await Deno.writeFile(file, encodeVncPasswordFile(options.password), { mode: 0o600 });
      security.splice(0, 2, "-SecurityTypes", "VncAuth", "-PasswordFile", file);
    }
    for (let attempt = 1;; attempt++) {
      const port = findFreePort();
      const server = await XvncProcess.spawn({ port, geometry, security, dir, timeoutMs });
      if (server instanceof XvncProcess) {
        try {
          await waitForRfbBanner(port, { timeoutMs });
          if (options.color !== undefined) await fillRoot(server.display, options.color);
        } catch (error) {
          await server[Symbol.asyncDispose]();
          throw error;
        }
        return server;
      }
      // Another process may take the port between findFreePort() and Xvnc's bind.
      if (attempt < 5 && server.includes("Address already in use")) continue;
      throw new Error(`Cannot start Xvnc: ${server}`);
    }
  } catch (error) {
    // A started server removed the directory on dispose already.
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

async function fillRoot(display: number, color: string): Promise<void> {
  // xsetroot ends with XCloseDisplay, which waits for the server to process the fill.
  const output = await new Deno.Command("xsetroot", {
    args: ["-solid", color],
    env: { DISPLAY: `:${display}`, XAUTHORITY: "/dev/null" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`Cannot fill Xvnc display :${display} with "${color}": ${stderr}`);
  }
}

interface XvncSpawnOptions {
  port: number;
  geometry: string;
  security: string[];
  dir: string;
  timeoutMs: number;
}

class XvncProcess implements XvncServer {
  readonly port: number;
  readonly display: number;
  readonly #child: Deno.ChildProcess;
  readonly #stderr: OutputTail;
  readonly #drained: Promise<unknown>;
  readonly #dir: string;
  #closed?: Promise<void>;

  private constructor(
    init: {
      port: number;
      display: number;
      child: Deno.ChildProcess;
      stderr: OutputTail;
      drained: Promise<unknown>;
      dir: string;
    },
  ) {
    this.port = init.port;
    this.display = init.display;
    this.#child = init.child;
    this.#stderr = init.stderr;
    this.#drained = init.drained;
    this.#dir = init.dir;
  }

  /** Starts Xvnc; returns the server, or Xvnc's log when it exited without a display. */
  static async spawn(options: XvncSpawnOptions): Promise<XvncProcess | string> {
    const child = new Deno.Command("Xvnc", {
      args: [
        // Xvnc picks a free display and prints its number here once it accepts clients.
        "-displayfd",
        "1",
        "-rfbport",
        String(options.port),
        "-interface",
        LOOPBACK,
        "-localhost",
        ...options.security,
        "-geometry",
        options.geometry,
        "-depth",
        "24",
        "-desktop",
        "real-peers",
        // Only the local Unix socket for xsetroot; -pn tolerates a missing /tmp/.X11-unix.
        "-nolisten",
        "tcp",
        "-pn",
        "-s",
        "0",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new OutputTail();
    const stderrDrained = drainInto(child.stderr, stderr);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      signalChild(child, "SIGKILL");
    }, options.timeoutMs);
    const reader = child.stdout.getReader();
    let stdout = "";
    try {
      while (!stdout.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        stdout += new TextDecoder().decode(value);
      }
    } finally {
      clearTimeout(timer);
    }
    const stdoutDrained = (async () => {
      while (!(await reader.read()).done) { /* Nothing more is expected. */ }
    })();
    const drained = Promise.all([stderrDrained, stdoutDrained]);
    const display = /^(\d+)\n/.exec(stdout)?.[1];
    if (display === undefined) {
      const status = await stopChild(child);
      await drained;
      const how = timedOut
        ? `no display reported within ${options.timeoutMs} ms`
        : `exit code ${status.code}`;
      return `${how}: ${stderr.text()}`;
    }
    return new XvncProcess({
      port: options.port,
      display: Number(display),
      child,
      stderr,
      drained,
      dir: options.dir,
    });
  }

  log(): string {
    return this.#stderr.text();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#closed ??= (async () => {
      await stopChild(this.#child);
      await this.#drained;
      await Deno.remove(this.#dir, { recursive: true });
    })();
    return this.#closed;
  }
}

// ---------------------------------------------------------------------------------------
// QEMU
// ---------------------------------------------------------------------------------------

/** QEMU's x509 credentials (`-object tls-creds-x509`): files copied into its `dir=`. */
export interface QemuX509Options {
  readonly kind: "x509";
  /** Becomes `ca-cert.pem`: the CA the server cert chains to and client certs must. */
  readonly caCertFile: string;
  /** Becomes `server-cert.pem`. */
  readonly certFile: string;
  /** Becomes `server-key.pem`. */
  readonly keyFile: string;
  /** `verify-peer=on`: a client must show a certificate signed by the CA. @default false */
  readonly verifyPeer?: boolean;
}

/** Options for {@linkcode startQemu}. */
export interface StartQemuOptions {
  /** Bound on start-up and on each QMP command. @default 10000 */
  timeoutMs?: number;
  /**
   * `password=on`, with this password set over QMP `set_password` once QEMU runs
   * (VNC Authentication; QEMU uses the first 8 characters).
   */
  password?: string;
  /** `-vnc unix:PATH` instead of a TCP display on 127.0.0.1. */
  unixPath?: string;
  /**
   * `tls-creds=`: x509 (VeNCrypt X509None, or X509Vnc with `password`) or `anon`
   * (`tls-creds-anon`: TLSNone, or TLSVnc with `password`).
   */
  tls?: QemuX509Options | { readonly kind: "anon" };
}

/** Options for {@linkcode QemuServer.waitForStableScreen}. */
export interface WaitForStableScreenOptions {
  /** @default 15000 */
  timeoutMs?: number;
  /** How long no new frame may appear before the screen counts as settled. @default 1500 */
  settleMs?: number;
}

/** A running QEMU (no disk: SeaBIOS ends at "No bootable device"), stopped on dispose. */
export interface QemuServer extends AsyncDisposable {
  /** VNC port on 127.0.0.1; 0 with {@linkcode StartQemuOptions.unixPath}. */
  readonly port: number;
  /** The `-vnc` argument QEMU was started with (for messages and docs). */
  readonly vncArgument: string;
  /** QEMU's own view of its screen, through QMP `screendump`. */
  screendump(): Promise<Image>;
  /** QMP `set_password` for VNC (what libvirt and Ganeti do per VM). */
  setPassword(password: string): Promise<void>;
  /**
   * Waits until the boot output has settled, then pauses the guest (QMP `stop`) so the
   * screen is frozen, and returns it. Pausing matters: QEMU blinks the VGA text cursor on
   * the guest's clock, so a running guest never shows one stable frame.
   */
  waitForStableScreen(options?: WaitForStableScreenOptions): Promise<Image>;
  /** The tail of QEMU's stderr. */
  log(): string;
}

/**
 * Starts `qemu-system-x86_64` (TCG, 32 MiB, VGA, no disk) with its VNC server on a free
 * display of 127.0.0.1 (or a Unix socket) and QMP on its stdin/stdout; with `password`,
 * `tls` as asked.
 */
export async function startQemu(options: StartQemuOptions = {}): Promise<QemuServer> {
  requireCommand("qemu-system-x86_64", "qemu-system-x86");
  const timeoutMs = options.timeoutMs ?? 10_000;
  const dir = await Deno.makeTempDir({ prefix: "real_peers_qemu_" });
  // QEMU takes the first free display of the range (`to=`); QMP `query-vnc` tells which.
  // A random start keeps parallel test processes from probing the same ports.
  const first = 100 + Math.floor(Math.random() * 5_000);
  const vncOptions = [
    options.unixPath === undefined
      ? `${LOOPBACK}:${first},to=${first + 200}`
      : `unix:${options.unixPath}`,
    ...(options.password === undefined ? [] : ["password=on"]),
    ...(options.tls === undefined ? [] : ["tls-creds=tls0"]),
  ];
  let child: Deno.ChildProcess;
  try {
    const objectArgs = await tlsObjectArgs(options.tls, dir);
    child = new Deno.Command("qemu-system-x86_64", {
      args: [
        "-nodefaults",
        "-accel",
        "tcg",
        "-m",
        "32",
        "-vga",
        "std",
        "-display",
        "none",
        ...objectArgs,
        "-vnc",
        vncOptions.join(","),
        "-qmp",
        "stdio",
        "-name",
        "real-peers",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  const server = new QemuProcess(child, dir, timeoutMs, vncOptions.join(","), options);
  try {
    await server.start();
  } catch (error) {
    await server[Symbol.asyncDispose]();
    throw new Error(`Cannot start QEMU: ${(error as Error).message}; stderr: ${server.log()}`, {
      cause: error,
    });
  }
  return server;
}

/** The `-object tls-creds-*` arguments; x509 files are copied under `dir` as QEMU names them. */
async function tlsObjectArgs(tls: StartQemuOptions["tls"], dir: string): Promise<string[]> {
  if (tls === undefined) return [];
  if (tls.kind === "anon") return ["-object", "tls-creds-anon,id=tls0,endpoint=server"];
  const credsDir = `${dir}/x509`;
  await Deno.mkdir(credsDir, { mode: 0o700 });
  await Deno.copyFile(tls.caCertFile, `${credsDir}/ca-cert.pem`);
  await Deno.copyFile(tls.certFile, `${credsDir}/server-cert.pem`);
  await Deno.copyFile(tls.keyFile, `${credsDir}/server-key.pem`);
  const verify = tls.verifyPeer ? "on" : "off";
  return [
    "-object",
    `tls-creds-x509,id=tls0,dir=${credsDir},endpoint=server,verify-peer=${verify}`,
  ];
}

class QemuProcess implements QemuServer {
  #port = 0;
  readonly #child: Deno.ChildProcess;
  readonly #dir: string;
  readonly #timeoutMs: number;
  readonly #stderr = new OutputTail();
  readonly #stderrDrained: Promise<void>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffered = "";
  #queue: Promise<unknown> = Promise.resolve();
  #dumps = 0;
  #closed?: Promise<void>;
  readonly vncArgument: string;
  readonly #options: StartQemuOptions;

  constructor(
    child: Deno.ChildProcess,
    dir: string,
    timeoutMs: number,
    vncArgument: string,
    options: StartQemuOptions,
  ) {
    this.#child = child;
    this.#dir = dir;
    this.#timeoutMs = timeoutMs;
    this.vncArgument = vncArgument;
    this.#options = options;
    this.#stderrDrained = drainInto(child.stderr, this.#stderr);
    this.#writer = child.stdin.getWriter();
    this.#reader = child.stdout.getReader();
  }

  get port(): number {
    return this.#port;
  }

  async start(): Promise<void> {
    const greeting = await this.#withDeadline(() => this.#readMessage());
    if (!("QMP" in greeting)) {
      throw new Error(`Unexpected QMP greeting ${JSON.stringify(greeting)}`);
    }
    await this.#execute("qmp_capabilities");
    if (this.#options.password !== undefined) await this.setPassword(this.#options.password);
    const vnc = await this.#execute("query-vnc") as { enabled?: boolean; service?: string };
    const { unixPath } = this.#options;
    if (unixPath !== undefined) {
      if (!vnc.enabled) throw new Error(`QEMU reports no VNC server: ${JSON.stringify(vnc)}`);
      await waitForRfbBanner(0, { unixPath, timeoutMs: this.#timeoutMs });
      return;
    }
    const port = Number(vnc.service);
    if (!vnc.enabled || !Number.isInteger(port) || port < 1) {
      throw new Error(`QEMU reports no VNC server: ${JSON.stringify(vnc)}`);
    }
    this.#port = port;
    await waitForRfbBanner(port, { timeoutMs: this.#timeoutMs });
  }

  log(): string {
    return this.#stderr.text();
  }

  async setPassword(password: string): Promise<void> {
    await this.#execute("set_password", { protocol: "vnc", password });
  }

  async screendump(): Promise<Image> {
    const file = `${this.#dir}/screen-${++this.#dumps}.ppm`;
    await this.#execute("screendump", { filename: file, format: "ppm" });
    try {
      return decodePpm(await Deno.readFile(file));
    } finally {
      await Deno.remove(file);
    }
  }

  async waitForStableScreen(options: WaitForStableScreenOptions = {}): Promise<Image> {
    const timeoutMs = options.timeoutMs ?? 15_000;
    const settleMs = options.settleMs ?? 1_500;
    const deadline = Date.now() + timeoutMs;
    // The blinking cursor alternates two frames; settled means no third frame for a while.
    let distinct: Image[] = [];
    let changedAt = Date.now();
    while (Date.now() - changedAt < settleMs) {
      if (Date.now() > deadline) {
        throw new Error(`QEMU's screen did not settle within ${timeoutMs} ms`);
      }
      const frame = await this.screendump();
      const known = distinct.filter((seen) => !sameImage(seen, frame));
      if (known.length === distinct.length) changedAt = Date.now();
      distinct = [...known.slice(-2), frame];
      await delay(150);
    }
    await this.#execute("stop");
    let previous = await this.screendump();
    while (true) {
      await delay(100);
      const frame = await this.screendump();
      if (sameImage(previous, frame)) return frame;
      if (Date.now() > deadline) {
        throw new Error(`QEMU's screen still changes ${timeoutMs} ms after pausing the guest`);
      }
      previous = frame;
    }
  }

  /** Runs one QMP command (QMP spec: one JSON object per line) and returns its result. */
  #execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const run = async () => {
      const request = JSON.stringify(
        args ? { execute: command, arguments: args } : { execute: command },
      );
      await this.#writer.write(new TextEncoder().encode(request + "\n"));
      return await this.#withDeadline(async () => {
        while (true) {
          const message = await this.#readMessage();
          if ("return" in message) return message.return;
          if ("error" in message) {
            throw new Error(`QMP "${command}" failed: ${JSON.stringify(message.error)}`);
          }
          // Asynchronous events ("event") are not needed here.
        }
      });
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  async #readMessage(): Promise<Record<string, unknown>> {
    while (!this.#buffered.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("QEMU closed QMP (exited?)");
      this.#buffered += new TextDecoder().decode(value);
    }
    const newline = this.#buffered.indexOf("\n");
    const line = this.#buffered.slice(0, newline);
    this.#buffered = this.#buffered.slice(newline + 1);
    return JSON.parse(line);
  }

  /** Kills QEMU when `work` takes too long, which ends the pending read, leaking no op. */
  async #withDeadline<T>(work: () => Promise<T>): Promise<T> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      signalChild(this.#child, "SIGKILL");
    }, this.#timeoutMs);
    try {
      return await work();
    } catch (error) {
      if (timedOut) throw new Error(`QMP did not answer within ${this.#timeoutMs} ms`);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#closed ??= (async () => {
      await this.#writer.close().catch(() => {});
      await stopChild(this.#child);
      await this.#reader.cancel().catch(() => {});
      await this.#stderrDrained;
      await Deno.remove(this.#dir, { recursive: true });
    })();
    return this.#closed;
  }
}

function sameImage(a: Image, b: Image): boolean {
  if (a.width !== b.width || a.height !== b.height) return false;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------
// Viewer
// ---------------------------------------------------------------------------------------

/** Options for {@linkcode captureVnc}. */
export interface CaptureVncOptions {
  /** IPv4 address or name (gvnccapture splits at the first colon). */
  host: string;
  port: number;
  /** VNC password; typed into the viewer's terminal prompt, never put in argv. */
  password?: string;
  /** The viewer is killed after this long. @default 10000 */
  timeoutMs?: number;
}

/**
 * Takes one screenshot with a real viewer, gtk-vnc's `gvnccapture` (lossless PNG, RFB
 * 3.8), and decodes it.
 *
 * gvnccapture reads a password only from a terminal (it turns echo off first), so with
 * `password` it runs under util-linux `script`, which gives it a pseudo-terminal fed from
 * our pipe; the password is typed after the "Password:" prompt. Throws with the viewer's
 * output (password redacted) when it fails or times out.
 */
export async function captureVnc(options: CaptureVncOptions): Promise<Image> {
  requireCommand("gvnccapture", "gvncviewer");
  const { host, port, password } = options;
  const timeoutMs = options.timeoutMs ?? 10_000;
  if (password !== undefined) {
    requireCommand("script", "bsdutils");
    if (/[\r\n\0]/.test(password)) {
      throw new TypeError("A VNC password for gvnccapture cannot contain line breaks or NUL");
    }
  }
  if (host.includes(":")) throw new TypeError(`Host "${host}" cannot contain ":"`);
  const dir = await Deno.makeTempDir({ prefix: "real_peers_capture_" });
  try {
    const file = `${dir}/capture.png`;
    // gvnccapture connects to 5900 + display; atoi() takes a negative display too.
    const viewerArgs = [`${host}:${port - VNC_BASE_PORT}`, file];
    const command = password === undefined
      ? new Deno.Command("gvnccapture", {
        args: viewerArgs,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      })
      : new Deno.Command("script", {
        args: [
          "-q",
          "-e",
          "-c",
          `exec ${["gvnccapture", ...viewerArgs].map(shellQuote).join(" ")}`,
          "/dev/null",
        ],
        env: { SHELL: "/bin/sh" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      });
    const child = command.spawn();
    let timedOut = false;
    let stopped: Promise<unknown> | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      // `script` waits 2 s after passing SIGTERM on; ending its child first avoids that.
      const viewers = childPids(child.pid);
      for (const pid of viewers) signalPid(pid, "SIGTERM");
      stopped = stopChild(child, { waitMs: viewers.length > 0 ? 1_000 : 0 });
    }, timeoutMs);
    const stdout = new OutputTail();
    const stderr = new OutputTail();
    let status: Deno.CommandStatus;
    try {
      const typist = password === undefined ? undefined : new PasswordTypist(child, password);
      const drained = Promise.all([
        drainInto(child.stdout, stdout, typist && ((chunk) => typist.onOutput(chunk))),
        drainInto(child.stderr, stderr),
      ]);
      status = await child.status;
      await stopped;
      await typist?.close();
      await drained;
    } finally {
      clearTimeout(timer);
    }
    const output = redact(
      [stdout.text(), stderr.text()].filter((s) => s !== "").join("\n"),
      password,
    );
    // gvnccapture's own messages name the display, port - 5900.
    const target = `"${host}:${port}" (display ${port - VNC_BASE_PORT} to gvnccapture)`;
    if (timedOut) {
      throw new Error(`Viewer gvnccapture timed out after ${timeoutMs} ms on ${target}: ${output}`);
    }
    if (!status.success) {
      throw new Error(
        `Viewer gvnccapture failed (exit code ${status.code}) on ${target}: ${output}`,
      );
    }
    return decodePng(await Deno.readFile(file));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Types the password when gvnccapture prompts. The viewer turns echo off with
 * `TCSAFLUSH`, which discards input that arrived before; so it types a moment after the
 * prompt and again if the viewer still has not connected (an extra line is harmless).
 */
class PasswordTypist {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #line: Uint8Array;
  #seen = "";
  #timer?: ReturnType<typeof setTimeout>;
  #typed = 0;
  #closed = false;

  constructor(child: Deno.ChildProcess, password: string) {
    this.#writer = child.stdin.getWriter();
    this.#line = new TextEncoder().encode(password + "\n");
  }

  onOutput(chunk: Uint8Array): void {
    this.#seen = (this.#seen + new TextDecoder().decode(chunk)).slice(-200);
    if (/Connected to|Unable to connect|Saved display/.test(this.#seen)) {
      clearTimeout(this.#timer);
    } else if (this.#seen.includes("Password:") && this.#timer === undefined) {
      this.#schedule(100);
    }
  }

  #schedule(ms: number): void {
    this.#timer = setTimeout(() => {
      if (this.#closed || this.#typed >= 5) return;
      this.#typed++;
      this.#writer.write(this.#line).catch(() => {});
      this.#schedule(1_000);
    }, ms);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#writer.close().catch(() => {});
  }
}

/** Linux: the direct children of a process, from procfs (none when unreadable). */
function childPids(pid: number): number[] {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`);
    return text.split(" ").filter((word) => word !== "").map(Number);
  } catch {
    return [];
  }
}

function signalPid(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch {
    // Already exited.
  }
}

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

function redact(text: string, secret: string | undefined): string {
  return secret ? text.replaceAll(secret, "<redacted>") : text;
}
