/**
 * Opening bench sessions: straight to the fake VNC server (directly, or
 * through socat or websockify, which pass its security None through), or
 * through vncauthproxy (control request, then the viewer's VNC
 * authentication). A session is open once ServerInit has arrived.
 *
 * @module
 */

import { vncAuthResponse } from "../src/rfb/vnc_auth.ts";
import { type ByteStream, TcpStream, WsStream } from "./byte_stream.ts";
import { COMMAND_ECHO, COMMAND_STREAM, DESKTOP_NAME, ECHO_LENGTH } from "./fake_vnc_server.ts";

/** Console types of vncauthproxy that the bench drives. */
export type ProxyType = "vnc" | "vnc-ws";

/** An open session: ClientInit sent, ServerInit read. */
export interface Session {
  /** The connection, ready for commands. */
  readonly stream: ByteStream;
  /**
   * Milliseconds from the control connect to SecurityResult OK after VNC
   * authentication (proxied sessions only).
   */
  readonly setupMs?: number;
}

/** What a session is opened through. */
export interface Target {
  /** Short name for tables and JSON. */
  readonly name: string;
  /** PID of the relaying process, for CPU and memory; none when direct. */
  readonly pid?: number;
  /** Opens one session. */
  open(): Promise<Session>;
}

/** Credentials and addresses of a running daemon. */
export interface ProxyEndpoint {
  /** Control port on 127.0.0.1. */
  readonly controlPort: number;
  /** Control user. */
  readonly user: string;
  /** Control password. */
  readonly password: string;
  /** The fake VNC server's port. */
  readonly serverPort: number;
}

const encoder = new TextEncoder();
const VERSION_38 = encoder.encode("RFB 003.008\n");
const SERVER_INIT_LENGTH = 24 + DESKTOP_NAME.length;
/** The one-time VNC password every forwarding gets. */
const VNC_PASSWORD = "benchpw1";

/** A target that connects straight to a TCP port that speaks security None. */
export function tcpTarget(name: string, port: number, pid?: number): Target {
  return {
    name,
    ...(pid === undefined ? {} : { pid }),
    async open() {
      const stream = await TcpStream.connect(port);
      return { stream: await noneHandshake(stream) };
    },
  };
}

/** A target that reaches the fake server through websockify on `port`. */
export function websockifyTarget(port: number, pid?: number): Target {
  return {
    name: "websockify",
    ...(pid === undefined ? {} : { pid }),
    async open() {
      const stream = await WsStream.connect(port);
      return { stream: await noneHandshake(stream) };
    },
  };
}

/** A target that sets up one vncauthproxy forwarding per session. */
export function proxyTarget(type: ProxyType, endpoint: ProxyEndpoint, pid: number): Target {
  return {
    name: type,
    pid,
    async open() {
      const started = performance.now();
      const port = await requestForwarding(type, endpoint);
      const stream = type === "vnc" ? await TcpStream.connect(port) : await WsStream.connect(port);
      return await openSession(stream, started, vncAuthHandshake);
    },
  };
}

/** A control reply, as the daemon sends it. */
export interface ControlReply {
  /** `OK` or `FAILED`. */
  readonly status?: string;
  /** The forwarded port, when OK. */
  readonly "source_port"?: number;
  /** Why not, when FAILED. */
  readonly reason?: string;
}

/**
 * Sends one control request (a JSON object) to 127.0.0.1:`port` and
 * returns the reply, whatever its status.
 *
 * @throws when the daemon closes without a JSON reply
 */
export async function controlRequest(port: number, request: object): Promise<ControlReply> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await new TcpStream(conn).write(encoder.encode(JSON.stringify(request) + "\n"));
    const text = await readToEnd(conn);
    try {
      return JSON.parse(text) as ControlReply;
    } catch {
      throw new Error(`No control reply: ${JSON.stringify(text)}`);
    }
  } finally {
    try {
      conn.close();
    } catch {
      // The daemon closed first.
    }
  }
}

/** Sends one control request and returns the forwarded port. */
export async function requestForwarding(type: ProxyType, endpoint: ProxyEndpoint): Promise<number> {
  const reply = await controlRequest(endpoint.controlPort, {
    auth_user: endpoint.user,
    auth_password: endpoint.password,
    source_port: 0,
    destination_address: "127.0.0.1",
    destination_port: endpoint.serverPort,
    password: VNC_PASSWORD,
    type,
  });
  if (reply.status !== "OK" || typeof reply.source_port !== "number") {
    throw new Error(`Control request failed: ${JSON.stringify(reply)}`);
  }
  return reply.source_port;
}

async function readToEnd(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(4096);
  let filled = 0;
  while (filled < buffer.length) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return new TextDecoder().decode(buffer.subarray(0, filled));
}

/** The viewer's side of RFB 3.8 with security None, through ServerInit. */
async function noneHandshake(stream: ByteStream): Promise<ByteStream> {
  try {
    await noneSecurity(stream);
    await finishInit(stream);
    return stream;
  } catch (error) {
    stream.close();
    throw error;
  }
}

/** The viewer's side of RFB 3.8 with security None, to SecurityResult OK. */
export async function noneSecurity(stream: ByteStream): Promise<void> {
  await stream.readFull(new Uint8Array(12));
  await stream.write(VERSION_38);
  const types = await readCountedTypes(stream);
  if (!types.includes(1)) throw new Error(`Security None not offered: ${types}`);
  await stream.write(Uint8Array.of(1));
  await expectSecurityOk(stream);
}

/** The viewer's side of RFB 3.8 with VNC authentication, to SecurityResult. */
async function vncAuthHandshake(stream: ByteStream): Promise<void> {
  await stream.readFull(new Uint8Array(12));
  await stream.write(VERSION_38);
  const types = await readCountedTypes(stream);
  if (!types.includes(2)) throw new Error(`VNC authentication not offered: ${types}`);
  await stream.write(Uint8Array.of(2));
  const challenge = new Uint8Array(16);
  await stream.readFull(challenge);
  await stream.write(vncAuthResponse(VNC_PASSWORD, challenge));
  await expectSecurityOk(stream);
}

async function readCountedTypes(stream: ByteStream): Promise<number[]> {
  const count = new Uint8Array(1);
  await stream.readFull(count);
  if (count[0] === 0) throw new Error("Server refused the connection");
  const types = new Uint8Array(count[0]!);
  await stream.readFull(types);
  return [...types];
}

async function expectSecurityOk(stream: ByteStream): Promise<void> {
  const result = new Uint8Array(4);
  await stream.readFull(result);
  if (new DataView(result.buffer).getUint32(0) !== 0) throw new Error("SecurityResult failed");
}

/** Sends a shared ClientInit and reads the fake server's ServerInit. */
/**
 * Runs a viewer's security handshake on `stream`, timing the set-up from
 * `started` to its end, then ClientInit and ServerInit; closes the stream
 * if any of it fails.
 */
export async function openSession(
  stream: ByteStream,
  started: number,
  security: (stream: ByteStream) => Promise<void>,
): Promise<Session> {
  try {
    await security(stream);
    const setupMs = performance.now() - started;
    await finishInit(stream);
    return { stream, setupMs };
  } catch (error) {
    stream.close();
    throw error;
  }
}

export async function finishInit(stream: ByteStream): Promise<void> {
  await stream.write(Uint8Array.of(1));
  await stream.readFull(new Uint8Array(SERVER_INIT_LENGTH));
}

/** Asks the fake server for `bytes` bytes and discards them. */
export async function streamFromServer(stream: ByteStream, bytes: number): Promise<void> {
  const command = new Uint8Array(9);
  command[0] = COMMAND_STREAM;
  new DataView(command.buffer).setBigUint64(1, BigInt(bytes));
  await stream.write(command);
  await stream.discard(bytes);
}

/** A reusable 64-byte echo exchange; resolves after the echo is back. */
export function echoer(stream: ByteStream): () => Promise<void> {
  const command = new Uint8Array(1 + ECHO_LENGTH).fill(0x61);
  command[0] = COMMAND_ECHO;
  const reply = new Uint8Array(ECHO_LENGTH);
  return async () => {
    await stream.write(command);
    await stream.readFull(reply);
  };
}
