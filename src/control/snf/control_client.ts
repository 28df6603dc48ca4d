/**
 * Requesting a forwarding from a running daemon: the function behind
 * `vncauthproxy client`, exported for programs that embed it (as snf's
 * `request_forwarding()` was for Synnefo).
 *
 * @module
 */

import type { ConsoleType } from "../../config.ts";
import { ConnDuplex, type Duplex, unbracketHost } from "../../io/duplex.ts";
import { startDeadline, withDeadline } from "../../io/deadline.ts";

/** A forwarding request, in the wire protocol's terms. */
export interface ForwardingRequest {
  /** Port to forward from; 0 picks one from the pool. @default {0} */
  readonly sourcePort?: number;
  /** VNC server host, or `unix:/abs/path` for a Unix socket. */
  readonly destinationAddress: string;
  /** VNC server port; 0 for a Unix socket. */
  readonly destinationPort: number;
  /** The VNC server's own password (VNC Authentication), if it has one. */
  readonly destinationPassword?: string;
  /** TLS to the VNC server (VeNCrypt or the TLS type). @default {false} */
  readonly destinationTls?: boolean;
  /** The name the server certificate must match. @default {the destination address} */
  readonly destinationTlsName?: string;
  /**
   * One-time VNC password the viewer must give; required unless `gateway`,
   * where without it the token alone is the viewer's credential.
   */
  readonly password?: string;
  /** Control user. */
  readonly authUser: string;
  /** Control user's password. */
  readonly authPassword: string;
  /** Console type. @default {"vnc"} */
  readonly type?: ConsoleType;
  /**
   * Token mode: the viewer comes through the daemon's gateway with a
   * single-use token (`vnc-ws` or `vnc-wss` only). @default {false}
   */
  readonly gateway?: boolean;
  /**
   * Token mode: the token's lifetime in seconds, capped by the daemon's
   * `--max-token-ttl`. @default {the daemon's --connect-timeout}
   */
  readonly ttl?: number;
  /** Token mode: the only viewer IP address that may redeem the token. */
  readonly clientAddress?: string;
}

/** The daemon's reply, as decoded JSON. */
export interface ForwardingReply {
  /** `OK` or `FAILED`. */
  readonly status: string;
  /** The forwarded port (0 on failure). */
  readonly "source_port": number;
  /** Where viewers connect; null on failure. */
  readonly "proxy_address": string | null;
  /** Why it failed. */
  readonly reason?: string;
  /** Token mode: the single-use token (secret). */
  readonly token?: string;
  /** Token mode: the WebSocket path with the token (`websockify?token=...`). */
  readonly path?: string;
  /** Token mode with `--web`: the noVNC page that opens the console. */
  readonly url?: string;
}

/** Options of {@linkcode requestForwarding}. */
export interface RequestForwardingOptions {
  /** Daemon address. @default {"127.0.0.1"} */
  readonly server?: string;
  /** Daemon control port. @default {24999} */
  readonly port?: number;
  /** Use TLS. @default {false} */
  readonly tls?: boolean;
  /** PEM CA certificate(s) to trust, beyond the system's. */
  readonly caCerts?: readonly string[];
  /** Whole-request deadline in milliseconds. @default {60000} */
  readonly timeoutMs?: number;
}

/**
 * Sends one request and returns the reply.
 *
 * @throws {Error} when the daemon cannot be reached or sends no valid reply.
 */
export async function requestForwarding(
  request: ForwardingRequest,
  options: RequestForwardingOptions = {},
): Promise<ForwardingReply> {
  const hostname = unbracketHost(options.server ?? "127.0.0.1");
  const port = options.port ?? 24999;
  using deadline = startDeadline(options.timeoutMs ?? 60_000);
  const { signal } = deadline;
  // One deadline for every wait: the TCP connect (Deno.connectTls takes no
  // signal, so TLS starts over a connection made with one), the TLS
  // handshake, the request and the reply.
  const tcp = await Deno.connect({ hostname, port, signal });
  const conn = options.tls
    ? await Deno.startTls(tcp, {
      hostname,
      ...(options.caCerts ? { caCerts: [...options.caCerts] } : {}),
    })
    : tcp;
  const control: Duplex = new ConnDuplex(conn);
  try {
    return await withDeadline(control, signal, async () => {
      if (conn !== tcp) await (conn as Deno.TlsConn).handshake();
      const body = {
        "source_port": request.sourcePort ?? 0,
        "destination_address": request.destinationAddress,
        "destination_port": request.destinationPort,
        ...(request.destinationPassword === undefined
          ? {}
          : { "destination_password": request.destinationPassword }),
        ...(request.destinationTls ? { "destination_tls": true } : {}),
        ...(request.destinationTlsName === undefined
          ? {}
          : { "destination_tls_name": request.destinationTlsName }),
        ...(request.password === undefined ? {} : { password: request.password }),
        "auth_user": request.authUser,
        "auth_password": request.authPassword,
        type: request.type ?? "vnc",
        ...(request.gateway ? { gateway: true } : {}),
        ...(request.ttl === undefined ? {} : { ttl: request.ttl }),
        ...(request.clientAddress === undefined ? {} : { "client_address": request.clientAddress }),
      };
      await control.write(new TextEncoder().encode(JSON.stringify(body) + "\n"));
      return parseReply(await readAll(control, 64 * 1024));
    });
  } finally {
    control.close();
  }
}

async function readAll(source: Duplex, maxBytes: number): Promise<string> {
  const buffer = new Uint8Array(maxBytes);
  let filled = 0;
  while (filled < maxBytes) {
    const n = await source.read(buffer.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return new TextDecoder().decode(buffer.subarray(0, filled));
}

function parseReply(text: string): ForwardingReply {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError("The daemon sent an invalid reply", { cause: error });
  }
  if (
    typeof value !== "object" || value === null ||
    typeof (value as { status?: unknown }).status !== "string"
  ) {
    throw new SyntaxError("The daemon sent an invalid reply");
  }
  return value as ForwardingReply;
}
