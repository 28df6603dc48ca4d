/**
 * The control socket (DESIGN §3): one JSON request per connection, read
 * stream-correctly within a size and time bound, answered with one reply.
 * Each connection is handled on its own, so a slow client never holds up
 * the others; the number handled at once is capped.
 *
 * @module
 */

import type { UserDb } from "../auth/users_file.ts";
import type { Config } from "../config.ts";
import { describeError, RefusalError } from "../errors.ts";
import type { BufferPool } from "../io/buffer_pool.ts";
import { ConnDuplex, type Duplex, formatHostPort } from "../io/duplex.ts";
import { isTimeout, raceDeadline, startDeadline, withDeadline } from "../io/deadline.ts";
import { bindAll } from "../io/listen_addresses.ts";
import type { Logger } from "../log.ts";
import type { ConnectFunction } from "../rfb/backend_handshake.ts";
import { type Forwarding, setUpForwarding, type TlsMaterial } from "../forward/forwarding.ts";
import type { PortPool } from "../forward/port_pool.ts";
import {
  type ControlReply,
  encodeReply,
  JsonObjectScanner,
  parseForwardRequest,
} from "./control_message.ts";

/** What the control server needs from the daemon. */
export interface ControlServerDeps {
  /** The daemon's configuration. */
  readonly config: Config;
  /** The daemon's logger. */
  readonly logger: Logger;
  /** The current control users (replaced on reload). */
  readonly users: () => UserDb;
  /** The port pool. */
  readonly ports: PortPool;
  /** Current certificate and key, if loaded. */
  readonly tls: () => TlsMaterial | undefined;
  /** The `proxy_address` of OK replies. */
  readonly proxyAddress: string;
  /** Aborted at SIGTERM: stop accepting and waiting. */
  readonly stopping: AbortSignal;
  /** Aborted when the drain time is over. */
  readonly closing: AbortSignal;
  /** The relay buffers all sessions share. */
  readonly buffers: BufferPool;
  /** Registers a running forwarding with the daemon. */
  readonly track: (forwarding: Forwarding, running: Promise<void>) => void;
  /** @default {Deno.connect} */
  readonly connect?: ConnectFunction;
}

/** A running control server. */
export interface ControlServer {
  /** Bound addresses (`127.0.0.1:24999`). */
  readonly addresses: readonly string[];
  /** Stops accepting and waits for the control connections in progress. */
  close(): Promise<void>;
  /**
   * With `--enable-ssl`, rebinds the control socket(s) on the same
   * addresses with the current `deps.tls()` material (SIGHUP); connections
   * in progress are untouched. Resolves to false when nothing changed.
   *
   * @throws when no listener could be bound again (the control socket is down)
   */
  reloadTls(): Promise<boolean>;
}

/**
 * Binds the control socket(s) and starts accepting.
 *
 * @throws {Deno.errors.AddrInUse} and other bind errors, at start-up.
 */
export async function startControlServer(deps: ControlServerDeps): Promise<ControlServer> {
  const { config } = deps;
  let tls = config.enableSsl ? deps.tls() : undefined;
  if (config.enableSsl && tls === undefined) throw new Error("TLS is enabled but not configured");
  const bind = (hostname: string, port: number, material = tls): Deno.Listener =>
    material
      ? Deno.listenTls({ hostname, port, transport: "tcp", cert: material.cert, key: material.key })
      : Deno.listen({ hostname, port, transport: "tcp" });
  let listeners: Deno.Listener[] = await bindAll(config.listenAddress, config.listenPort, bind);
  const retired = new WeakSet<Deno.Listener>();
  const handlers = new Set<Promise<void>>();
  let nextId = 1;

  async function acceptLoop(listener: Deno.Listener): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (
          error instanceof Deno.errors.BadResource || deps.stopping.aborted ||
          retired.has(listener)
        ) return;
        // EMFILE and the like: keep serving once resources are back.
        deps.logger.error(
          `Control accept failed: ${describeError(error)}`,
        );
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      const id = nextId++;
      const handler = handlers.size >= config.maxControlConnections
        ? refuseBusy(new ConnDuplex(conn), deps.logger.child(`[C${id}]`))
        : handleControlConnection(new ConnDuplex(conn), deps, deps.logger.child(`[C${id}]`));
      handlers.add(handler);
      handler.finally(() => handlers.delete(handler));
    }
  }

  let loops = listeners.map(acceptLoop);
  let closing: Promise<void> | undefined;
  let reloading: Promise<boolean> = Promise.resolve(false);

  // Deno has no way to swap the certificate of a TLS listener, and a second
  // socket on the same port needs SO_REUSEPORT on both (unstable): so close
  // the old listeners, then bind the same addresses again. Connections
  // arriving in between are refused; clients retry.
  async function rebind(): Promise<boolean> {
    const next = deps.tls();
    if (!config.enableSsl || closing || next === undefined) return false;
    if (next.cert === tls?.cert && next.key === tls?.key) return false;
    const old = listeners;
    for (const listener of old) {
      retired.add(listener);
      listener.close();
    }
    await Promise.all(loops);
    const fresh: Deno.Listener[] = [];
    let failure: unknown;
    for (const listener of old) {
      const { hostname, port } = listener.addr as Deno.NetAddr;
      try {
        fresh.push(await bindRetrying(() => bind(hostname, port, next)));
      } catch (error) {
        // Keep serving with the old material rather than not at all.
        failure = error;
        try {
          fresh.push(await bindRetrying(() => bind(hostname, port, tls)));
        } catch { /* the error below says it */ }
      }
    }
    listeners = fresh;
    loops = fresh.map(acceptLoop);
    if (fresh.length === 0) {
      throw new Error("Cannot listen for control connections again", { cause: failure });
    }
    if (failure !== undefined) throw failure;
    tls = next;
    return true;
  }

  return {
    addresses: listeners.map((l) => {
      const addr = l.addr as Deno.NetAddr;
      return formatHostPort(addr.hostname, addr.port);
    }),
    close() {
      closing ??= (async () => {
        await reloading.catch(() => {});
        for (const listener of listeners) listener.close();
        await Promise.all(loops);
        await Promise.allSettled([...handlers]);
      })();
      return closing;
    },
    reloadTls() {
      reloading = reloading.catch(() => false).then(rebind);
      return reloading;
    },
  };
}

/** Binds, retrying briefly while the old socket on the port is released. */
async function bindRetrying(bind: () => Deno.Listener): Promise<Deno.Listener> {
  for (let attempt = 1;; attempt++) {
    try {
      return bind();
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse) || attempt >= 40) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function refuseBusy(control: Duplex, logger: Logger): Promise<void> {
  logger.warn(`Too many control connections, refusing ${control.remoteAddress}`);
  await sendReply(control, { status: "FAILED", reason: "server busy" }, logger);
}

/**
 * Handles one control connection: read, validate, authenticate, set up the
 * forwarding, reply, close. Never throws.
 */
export async function handleControlConnection(
  control: Duplex,
  deps: ControlServerDeps,
  logger: Logger,
): Promise<void> {
  const { config } = deps;
  logger.info(`New control connection from ${control.remoteAddress}`);
  let forwarding: Forwarding | undefined;
  let reply: ControlReply;
  try {
    using phase = startDeadline(config.controlTimeoutMs, deps.stopping);
    let text: string;
    try {
      text = await raceDeadline(phase.signal, readRequestText(control, config.controlMaxBytes));
    } catch (error) {
      if (error instanceof RefusalError || isTimeout(error)) throw error;
      // The transport failed (reset, failed TLS handshake): nobody to answer.
      logger.warn(`Cannot read the control request: ${describeError(error)}`);
      control.close();
      return;
    }
    const request = parseForwardRequest(text);
    // The crypt always runs, for unknown users too, and the reason never
    // says which of user or password was wrong (DESIGN §3).
    if (!deps.users().verify(request.authUser, request.authPassword)) {
      logger.warn(
        `Authentication failed for control user "${request.authUser}" from ${control.remoteAddress}`,
      );
      throw new RefusalError("authentication failed");
    }
    logger.info(
      `Request by "${request.authUser}": ${request.type} (client req'd: ${request.sourcePort}) -> ` +
        formatHostPort(
          request.destinationAddress.replace(/^\[(.*)\]$/, "$1"),
          request.destinationPort,
        ),
    );
    forwarding = await setUpForwarding(request, { ...deps, logger });
    reply = { status: "OK", sourcePort: forwarding.port, proxyAddress: deps.proxyAddress };
    logger.info(
      `New forwarding: ${
        forwarding.addresses.join(", ")
      } (client req'd: ${request.sourcePort}) -> ` +
        formatHostPort(request.destinationAddress, request.destinationPort),
    );
  } catch (error) {
    const reason = error instanceof RefusalError
      ? error.message
      : isTimeout(error)
      ? "request timed out"
      : "internal error";
    if (!(error instanceof RefusalError)) {
      const log = isTimeout(error) ? logger.warn : logger.error;
      log(`Control request failed: ${describeError(error)}`);
    }
    logger.warn(`FAILED forwarding: ${reason}`);
    reply = { status: "FAILED", reason };
  }
  const delivered = await sendReply(control, reply, logger);
  if (forwarding === undefined) return;
  if (!delivered) {
    // Nobody learned the port: the forwarding can never be used.
    logger.warn("Control client went away before the reply, dropping the forwarding");
    await forwarding.close();
    return;
  }
  deps.track(forwarding, forwarding.run());
}

/** First size of the buffer a control request is read into. */
const FIRST_REQUEST_BUFFER = 1024;

/** How long a control client may take to accept its reply. */
const REPLY_TIMEOUT_MS = 10_000;

/** Writes the reply and closes; false when the client could not take it. */
async function sendReply(control: Duplex, reply: ControlReply, logger: Logger): Promise<boolean> {
  try {
    using phase = startDeadline(REPLY_TIMEOUT_MS);
    await withDeadline(control, phase.signal, () => control.write(encodeReply(reply)));
    return true;
  } catch (error) {
    logger.warn(`Cannot send the control reply: ${describeError(error)}`);
    return false;
  } finally {
    control.close();
  }
}

/**
 * Reads bytes until one complete JSON object has arrived, however it is
 * split, with or without a newline after it, and with the client keeping
 * its side open. Bounded by `maxBytes`.
 *
 * @throws {RefusalError} when the request is too large, not an object or
 * incomplete at end of stream.
 */
export async function readRequestText(control: Duplex, maxBytes: number): Promise<string> {
  const scanner = new JsonObjectScanner();
  // Requests are a few hundred bytes: start small and grow up to the bound,
  // so a flood of connections does not cost `maxBytes` each.
  let buffer = new Uint8Array(Math.min(maxBytes, FIRST_REQUEST_BUFFER));
  let filled = 0;
  while (true) {
    if (filled === maxBytes) throw new RefusalError("malformed request: too large");
    if (filled === buffer.length) {
      const grown = new Uint8Array(Math.min(maxBytes, buffer.length * 4));
      grown.set(buffer);
      buffer = grown;
    }
    const n = await control.read(buffer.subarray(filled));
    if (n === null) {
      throw new RefusalError(
        filled === 0 ? "malformed request: empty" : "malformed request: incomplete JSON",
      );
    }
    let end: number | undefined;
    try {
      end = scanner.feed(buffer.subarray(filled, filled + n));
    } catch (error) {
      throw new RefusalError("malformed request: not a JSON object", { cause: error });
    }
    if (end !== undefined) return new TextDecoder().decode(buffer.subarray(0, filled + end));
    filled += n;
  }
}
