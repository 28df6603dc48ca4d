/**
 * The bench's fake VNC server, run as its own process so its CPU does not
 * share a JavaScript thread with the load generator: RFB 3.8 with security
 * None (RFC 6143 §7.1–7.3), then a tiny command set from the client:
 *
 * - `S` + u64 N: stream N bytes as fast as possible, in 1 MiB writes of one
 *   reused buffer;
 * - `E` + 64 bytes: echo the 64 bytes back.
 *
 * Prints `PORT <n>` on stdout once it listens on 127.0.0.1.
 *
 * @module
 */

/** Command byte: stream N bytes to the client. */
export const COMMAND_STREAM = 0x53;
/** Command byte: echo {@linkcode ECHO_LENGTH} bytes back. */
export const COMMAND_ECHO = 0x45;
/** Payload of one echo command. */
export const ECHO_LENGTH = 64;
/** Desktop name sent in ServerInit. */
export const DESKTOP_NAME = "bench";

const WRITE_CHUNK = 1024 * 1024;
const VERSION = new TextEncoder().encode("RFB 003.008\n");
/** One security type offered: None (RFC 6143 §7.1.2). */
const SECURITY_OFFER = Uint8Array.of(1, 1);
/** SecurityResult OK (RFC 6143 §7.1.3). */
const SECURITY_OK = Uint8Array.of(0, 0, 0, 0);

/** ServerInit (RFC 6143 §7.3.2): 1024×768, 32 bpp true colour, name. */
export function encodeServerInit(name: string = DESKTOP_NAME): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  const bytes = new Uint8Array(24 + nameBytes.length);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, 1024);
  view.setUint16(2, 768);
  bytes.set([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0], 4);
  view.setUint32(20, nameBytes.length);
  bytes.set(nameBytes, 24);
  return bytes;
}

const SERVER_INIT = encodeServerInit();
/** Shared, never written after start: every stream sends these bytes. */
const STREAM_BUFFER = new Uint8Array(WRITE_CHUNK).fill(0x5a);

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await conn.write(data.subarray(offset));
}

async function readFull(conn: Deno.Conn, buffer: Uint8Array): Promise<boolean> {
  let filled = 0;
  while (filled < buffer.length) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) return false;
    filled += n;
  }
  return true;
}

async function stream(conn: Deno.Conn, total: number): Promise<void> {
  let left = total;
  while (left > 0) {
    const chunk = Math.min(left, WRITE_CHUNK);
    left -= await conn.write(STREAM_BUFFER.subarray(0, chunk));
  }
}

/** Serves one connection until the client goes away. */
async function serve(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const version = new Uint8Array(12);
  const one = new Uint8Array(1);
  await writeAll(conn, VERSION);
  if (!await readFull(conn, version)) return;
  await writeAll(conn, SECURITY_OFFER);
  if (!await readFull(conn, one)) return;
  await writeAll(conn, SECURITY_OK);
  if (!await readFull(conn, one)) return; // ClientInit
  await writeAll(conn, SERVER_INIT);
  const length = new Uint8Array(8);
  const echo = new Uint8Array(ECHO_LENGTH);
  while (await readFull(conn, one)) {
    if (one[0] === COMMAND_STREAM) {
      if (!await readFull(conn, length)) return;
      await stream(conn, Number(new DataView(length.buffer).getBigUint64(0)));
    } else if (one[0] === COMMAND_ECHO) {
      if (!await readFull(conn, echo)) return;
      await writeAll(conn, echo);
    } else {
      return;
    }
  }
}

async function main(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  await Deno.stdout.write(new TextEncoder().encode(`PORT ${port}\n`));
  for await (const conn of listener) {
    serve(conn).catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch {
        // Already closed by a reset.
      }
    });
  }
}

if (import.meta.main) await main();
