/**
 * A scripted fake VNC server on loopback for tests: it speaks the RFB
 * handshake with whatever version, security types or failure it is told,
 * optionally one byte per write, then answers ClientInit with ServerInit
 * and echoes everything after it.
 *
 * @module
 */

import { readExact, readU32, readU8 } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import { DEFAULT_PIXEL_FORMAT, encodeServerInit } from "../../src/rfb/pixel_format.ts";
import { encodeU32 } from "../../src/rfb/rfb_messages.ts";
import { serveConnections } from "./loopback.ts";

/** How the fake server behaves. */
export interface FakeVncOptions {
  /** Version message sent first. @default {"RFB 003.008\n"} */
  readonly version?: string;
  /** Raw bytes sent instead of a version (garbage). */
  readonly garbage?: Uint8Array;
  /** Accept and never send anything. */
  readonly silent?: boolean;
  /** Security types offered (3.7/3.8) or the one chosen (3.3). @default {[1]} */
  readonly securityTypes?: readonly number[];
  /** Refuse the handshake with this reason (count 0, or type 0 on 3.3). */
  readonly refuseReason?: string;
  /** Send a failed SecurityResult with this reason after None (3.8). */
  readonly resultFailure?: string;
  /** Write every message one byte at a time. */
  readonly oneByteWrites?: boolean;
  /** Desktop name in ServerInit. @default {"fake"} */
  readonly desktopName?: string;
  /** Extra bytes sent right after ServerInit, in the same write. */
  readonly afterServerInit?: Uint8Array;
  /** End the connection right after ServerInit (the VNC server goes away). */
  readonly closeAfterServerInit?: boolean;
  /** Loopback address to listen on. @default {"127.0.0.1"} */
  readonly hostname?: "127.0.0.1" | "::1";
}

/** A running fake server. */
export interface FakeVncServer extends AsyncDisposable {
  /** Its loopback port. */
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** ClientInit shared flags received, in order. */
  readonly clientInits: number[];
  /** The version the proxy answered with, per connection. */
  readonly versionsReceived: string[];
  /** Resolves when every connection handler has finished. */
  idle(): Promise<void>;
}

/** Starts a fake VNC server on loopback (127.0.0.1 by default) with an ephemeral port. */
export function startFakeVncServer(options: FakeVncOptions = {}): FakeVncServer {
  const listener = Deno.listen({ hostname: options.hostname ?? "127.0.0.1", port: 0 });
  const clientInits: number[] = [];
  const versionsReceived: string[] = [];
  const loop = serveConnections(
    listener,
    (duplex) => serve(duplex, options, clientInits, versionsReceived),
  );
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return loop.accepted;
    },
    clientInits,
    versionsReceived,
    idle: () => loop.idle(),
    [Symbol.asyncDispose]: () => loop[Symbol.asyncDispose](),
  };
}

async function send(
  duplex: Duplex,
  bytes: Uint8Array,
  oneByte: boolean | undefined,
): Promise<void> {
  if (!oneByte) return await duplex.write(bytes);
  for (const byte of bytes) await duplex.write(Uint8Array.of(byte));
}

function withReason(prefix: Uint8Array, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason);
  const out = new Uint8Array(prefix.length + 4 + text.length);
  out.set(prefix, 0);
  out.set(encodeU32(text.length), prefix.length);
  out.set(text, prefix.length + 4);
  return out;
}

async function serve(
  duplex: Duplex,
  options: FakeVncOptions,
  clientInits: number[],
  versionsReceived: string[],
): Promise<void> {
  const one = options.oneByteWrites;
  if (options.silent) {
    await duplex.read(new Uint8Array(1));
    return;
  }
  if (options.garbage) {
    await send(duplex, options.garbage, one);
    await duplex.read(new Uint8Array(1));
    return;
  }
  const version = options.version ?? "RFB 003.008\n";
  await send(duplex, new TextEncoder().encode(version), one);
  const answer = new TextDecoder().decode(await readExact(duplex, 12));
  versionsReceived.push(answer);
  const minor = Number(answer.slice(8, 11));
  const types = options.securityTypes ?? [1];
  if (minor < 7) {
    if (options.refuseReason !== undefined) {
      await send(duplex, withReason(encodeU32(0), options.refuseReason), one);
      return;
    }
    await send(duplex, encodeU32(types[0]!), one);
    if (types[0] !== 1) return;
  } else {
    if (options.refuseReason !== undefined) {
      await send(duplex, withReason(Uint8Array.of(0), options.refuseReason), one);
      return;
    }
    await send(duplex, Uint8Array.from([types.length, ...types]), one);
    const chosen = await readU8(duplex);
    if (chosen !== 1) return;
    if (minor >= 8) {
      if (options.resultFailure !== undefined) {
        await send(duplex, withReason(encodeU32(1), options.resultFailure), one);
        return;
      }
      await send(duplex, encodeU32(0), one);
    }
  }
  clientInits.push(await readU8(duplex));
  const init = encodeServerInit({
    width: 64,
    height: 48,
    format: DEFAULT_PIXEL_FORMAT,
    name: options.desktopName ?? "fake",
  });
  const after = options.afterServerInit ?? new Uint8Array();
  const first = new Uint8Array(init.length + after.length);
  first.set(init);
  first.set(after, init.length);
  await send(duplex, first, one);
  if (options.closeAfterServerInit) return;
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await duplex.read(buffer);
    if (n === null) return;
    await duplex.write(buffer.slice(0, n));
  }
}

/** Reads a u32 reason string (tests' counterpart of the proxy's reader). */
export async function readReason(duplex: Duplex): Promise<string> {
  const length = await readU32(duplex);
  return new TextDecoder().decode(await readExact(duplex, length));
}
