/**
 * What every control front door (snf's, vncap's) shares: the listening
 * socket(s) with a capped set of connections, where at the cap the one idle
 * longest without a complete request makes room for the newcomer; reading
 * one request within a size bound, however it is split; and writing the one
 * reply before closing. The protocols differ only in how a request ends,
 * what it says and what the reply looks like.
 *
 * @module
 */

import { describeError, RefusalError } from "../errors.ts";
import { ConnDuplex, type Duplex } from "../io/duplex.ts";
import { isTimeout, raceDeadline, startDeadline, withDeadline } from "../io/deadline.ts";
import { type ConnectionSlot, ConnectionSlots } from "../io/connection_slots.ts";
import { openListenerSet } from "../http/listener_set.ts";
import type { TlsMaterial } from "../io/tls_material.ts";
import type { Logger } from "../log.ts";

/** Options of {@linkcode startControlSocket}. */
export interface ControlSocketOptions {
  /** What listens, for log lines (`Control`, `vncap control`). */
  readonly what: string;
  /** Prefix of the connections' ids (`C` gives `C1`, `C2`...). */
  readonly idPrefix: string;
  /** TCP address and port, or a Unix socket path (mode 0660). */
  readonly listen:
    | { readonly address: string; readonly port: number }
    | { readonly path: string };
  /** TLS on the socket, read at bind and at each reload. @default {plain} */
  readonly tls?: () => TlsMaterial | undefined;
  /** Connections handled at once (`--max-control-connections`). */
  readonly capacity: number;
  /** Aborted when the daemon stops: accepting ends. */
  readonly signal: AbortSignal;
  /** Deadline for resolving a host name in the address. */
  readonly resolveTimeoutMs: number;
  /** The daemon's logger. */
  readonly logger: Logger;
  /** Handles one admitted connection; never throws. */
  readonly onConnection: (
    control: Duplex,
    context: { readonly logger: Logger; readonly slot: ConnectionSlot; readonly id: string },
  ) => Promise<void>;
  /** Answers a newcomer when every slot is held by a request being answered. */
  readonly onBusy: (control: Duplex, logger: Logger) => Promise<void>;
}

/** A running control socket. */
export interface ControlSocket {
  /** Bound addresses (`127.0.0.1:24999`, `unix:/run/vncap.sock`). */
  readonly addresses: readonly string[];
  /** Control connections open now (read, answered or refused). */
  readonly connections: number;
  /** Stops accepting and waits for the control connections in progress. */
  close(): Promise<void>;
  /** Rebinds with the current `tls()` material; false when nothing changed. */
  reloadTls(): Promise<boolean>;
}

/**
 * Binds the control socket(s) and starts accepting.
 *
 * @throws {Deno.errors.AddrInUse} and other bind errors, at start-up.
 */
export async function startControlSocket(options: ControlSocketOptions): Promise<ControlSocket> {
  const handlers = new Set<Promise<void>>();
  let nextId = 1;
  // The cap counts connections still sending their request and those being
  // answered; a flood of idle ones evicts itself instead of the real client.
  const slots = new ConnectionSlots({
    capacity: options.capacity,
    logger: options.logger,
    what: `${options.what} connection`,
  });

  function onConnection(conn: Deno.Conn): void {
    const control = new ConnDuplex(conn);
    const id = `${options.idPrefix}${nextId++}`;
    const logger = options.logger.child(`[${id}]`);
    const slot = slots.admit(control.remoteAddress, () => control.close());
    const handler = slot === undefined
      ? options.onBusy(control, logger)
      : handleAdmitted(control, slot, logger, id);
    handlers.add(handler);
    handler.finally(() => handlers.delete(handler));
  }

  async function handleAdmitted(
    control: Duplex,
    slot: ConnectionSlot,
    logger: Logger,
    id: string,
  ): Promise<void> {
    using _held = slot;
    await options.onConnection(control, { logger, slot, id });
  }

  const { listen } = options;
  const listeners = await openListenerSet({
    ...("path" in listen
      ? { address: "", port: 0, path: listen.path }
      : { address: listen.address, port: listen.port }),
    ...(options.tls ? { tls: options.tls } : {}),
    signal: options.signal,
    resolveTimeoutMs: options.resolveTimeoutMs,
    logger: options.logger,
    what: options.what,
    onConnection,
  });
  let closing: Promise<void> | undefined;
  return {
    addresses: listeners.addresses,
    get connections() {
      return handlers.size;
    },
    close() {
      closing ??= (async () => {
        await listeners.close();
        await Promise.allSettled([...handlers]);
      })();
      return closing;
    },
    reloadTls: () => options.tls ? listeners.reloadTls() : Promise.resolve(false),
  };
}

/** Finds where a request ends in a byte stream, fed chunk by chunk. */
export interface RequestFraming {
  /**
   * Scans `chunk`; returns the index just past the request's end when it
   * lies in this chunk, or `undefined` when more bytes are needed.
   *
   * @throws {RefusalError} when the bytes cannot be a request.
   */
  feed(chunk: Uint8Array): number | undefined;
}

/** Why a request stream ended early, in the protocol's words. */
export interface FramingErrors {
  /** Nothing arrived. */
  readonly empty: string;
  /** Something arrived, not a whole request. */
  readonly incomplete: string;
  /** The bound was reached first. */
  readonly tooLarge: string;
}

/** First size of the buffer a control request is read into. */
const FIRST_REQUEST_BUFFER = 1024;

/**
 * Reads bytes until `framing` finds the end of one request, however it is
 * split, with the client keeping its side open. Bounded by
 * `options.maxBytes`; every read touches `options.slot`, so a client still
 * sending is not the idle one. Bytes after the request are ignored.
 *
 * @returns the request's bytes, as text.
 * @throws {RefusalError} with `options.errors`' reasons, or the framing's.
 */
export async function readFramedRequest(
  control: Duplex,
  options: {
    readonly maxBytes: number;
    readonly framing: RequestFraming;
    readonly errors: FramingErrors;
    readonly slot?: ConnectionSlot | undefined;
  },
): Promise<string> {
  const { maxBytes, slot, framing, errors } = options;
  // Requests are a few hundred bytes: start small and grow up to the bound,
  // so a flood of connections does not cost `maxBytes` each.
  let buffer = new Uint8Array(Math.min(maxBytes, FIRST_REQUEST_BUFFER));
  let filled = 0;
  while (true) {
    if (filled === maxBytes) throw new RefusalError(errors.tooLarge);
    if (filled === buffer.length) {
      const grown = new Uint8Array(Math.min(maxBytes, buffer.length * 4));
      grown.set(buffer);
      buffer = grown;
    }
    const n = await control.read(buffer.subarray(filled));
    slot?.touch();
    if (n === null) throw new RefusalError(filled === 0 ? errors.empty : errors.incomplete);
    const end = framing.feed(buffer.subarray(filled, filled + n));
    if (end !== undefined) return new TextDecoder().decode(buffer.subarray(0, filled + end));
    filled += n;
  }
}

/**
 * Reads one request within `signal`'s deadline and completes `slot` once
 * it is in. Resolves to `undefined` when nobody is left to answer: the
 * connection was dropped for a newcomer (the slots logged it), or the
 * transport failed (reset, failed TLS handshake; logged here, closed).
 *
 * @throws {RefusalError} or the deadline's timeout: a bad or late request,
 * to be answered.
 */
export async function readRequestOrDrop(
  control: Duplex,
  read: Promise<string>,
  context: {
    readonly signal: AbortSignal;
    readonly slot: ConnectionSlot | undefined;
    readonly logger: Logger;
    /** The request, for the log line (`control request`). */
    readonly what: string;
  },
): Promise<string | undefined> {
  const { slot } = context;
  try {
    const text = await raceDeadline(context.signal, read);
    slot?.complete();
    return text;
  } catch (error) {
    if (slot?.evicted) return undefined;
    if (error instanceof RefusalError || isTimeout(error)) throw error;
    context.logger.warn(`Cannot read the ${context.what}: ${describeError(error)}`);
    control.close();
    return undefined;
  }
}

/**
 * The host part of a control client's address, which rate limits count
 * by (its connections share their limit); `undefined` for a Unix socket,
 * whose peers have no address.
 */
export function clientHost(remoteAddress: string): string | undefined {
  if (remoteAddress.startsWith("unix:")) return undefined;
  return remoteAddress.slice(0, remoteAddress.lastIndexOf(":"));
}

/**
 * The reply's reason for a request that failed with `error`: a refusal's
 * own words, `request timed out`, or `internal error`. Anything but a
 * refusal (whose reason is logged by the caller) is logged here with its
 * details, under `label` (`Control request`).
 */
export function failureReasonOf(error: unknown, logger: Logger, label: string): string {
  if (error instanceof RefusalError) return error.message;
  const timedOut = isTimeout(error);
  (timedOut ? logger.warn : logger.error)(`${label} failed: ${describeError(error)}`);
  return timedOut ? "request timed out" : "internal error";
}

/** How long a control client may take to accept its reply. */
const REPLY_TIMEOUT_MS = 10_000;

/** Writes the reply bytes and closes; false when the client could not take them. */
export async function sendControlReply(
  control: Duplex,
  bytes: Uint8Array,
  logger: Logger,
): Promise<boolean> {
  try {
    using phase = startDeadline(REPLY_TIMEOUT_MS);
    await withDeadline(control, phase.signal, () => control.write(bytes));
    return true;
  } catch (error) {
    logger.warn(`Cannot send the control reply: ${describeError(error)}`);
    return false;
  } finally {
    control.close();
  }
}
