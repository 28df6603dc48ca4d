/**
 * The control socket (DESIGN §3): one JSON request per connection, read
 * stream-correctly within a size and time bound, answered with one reply.
 * Each connection is handled on its own, so a slow client never holds up
 * the others; the number handled at once is capped, and at the cap the
 * connection idle longest without a complete request makes room for the
 * newcomer, so a flood of idle connections cannot lock out a real panel.
 *
 * @module
 */

import { CryptBusyError } from "../auth/crypt_pool.ts";
import type { UserDb } from "../auth/user_db.ts";
import type { Config } from "../config.ts";
import { describeError, RefusalError } from "../errors.ts";
import { ConnDuplex, type Duplex, formatHostPort } from "../io/duplex.ts";
import { isTimeout, raceDeadline, startDeadline, withDeadline } from "../io/deadline.ts";
import { acceptWithBackoff } from "../io/accept_with_backoff.ts";
import { type ConnectionSlot, ConnectionSlots } from "../io/connection_slots.ts";
import { bindAll } from "../io/listen_addresses.ts";
import type { Logger } from "../log.ts";
import type { ConnectFunction } from "../rfb/backend_handshake.ts";
import { type Forwarding, setUpForwarding, type TlsMaterial } from "../forward/forwarding.ts";
import type { PortPool } from "../forward/port_pool.ts";
import type { AuthFailLimiter } from "./auth_fail_limiter.ts";
import {
  type ControlReply,
  encodeReply,
  type ForwardRequest,
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
  /** Registers a running forwarding with the daemon. */
  readonly track: (forwarding: Forwarding, running: Promise<void>) => void;
  /** @default {Deno.connect} */
  readonly connect?: ConnectFunction;
  /** Limits failed logins (`--auth-fail-limit`). @default {no limit} */
  readonly authFailures?: AuthFailLimiter;
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
  let listeners: Deno.Listener[];
  {
    // A host name in --listen-address is resolved once, within a deadline.
    using resolving = startDeadline(config.controlTimeoutMs, deps.stopping);
    listeners = await bindAll(config.listenAddress, config.listenPort, bind, {
      signal: resolving.signal,
    });
  }
  const handlers = new Set<Promise<void>>();
  let nextId = 1;

  // The cap counts connections still sending their request and those being
  // answered; a flood of idle ones evicts itself instead of the real client.
  const slots = new ConnectionSlots({
    capacity: config.maxControlConnections,
    logger: deps.logger,
    what: "Control connection",
  });

  async function acceptLoop(listener: Deno.Listener): Promise<void> {
    const options = { signal: deps.stopping, logger: deps.logger, what: "Control" };
    for (let conn; (conn = await acceptWithBackoff(listener, options)) !== undefined;) {
      const control = new ConnDuplex(conn);
      const logger = deps.logger.child(`[C${nextId++}]`);
      const slot = slots.admit(control.remoteAddress, () => control.close());
      const handler = slot === undefined
        ? refuseBusy(control, logger)
        : handleAdmitted(control, slot, logger);
      handlers.add(handler);
      handler.finally(() => handlers.delete(handler));
    }
  }

  async function handleAdmitted(
    control: Duplex,
    slot: ConnectionSlot,
    logger: Logger,
  ): Promise<void> {
    using _held = slot;
    await handleControlConnection(control, deps, { logger, slot });
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
    // Each accept loop ends when its listener closes.
    for (const listener of old) listener.close();
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

/** Answers a newcomer when every slot is held by a request being answered. */
async function refuseBusy(control: Duplex, logger: Logger): Promise<void> {
  logger.warn(`Too many control requests in progress, refusing ${control.remoteAddress}`);
  await sendReply(control, { status: "FAILED", reason: "server busy" }, logger);
}

/** Options of {@linkcode handleControlConnection}. */
export interface ControlConnectionOptions {
  /** The connection's logger (`[C<n>]`). */
  readonly logger: Logger;
  /**
   * Its place among the control connections: touched on every read, and
   * completed once the request is in, so the connection cannot be evicted
   * while it is answered.
   */
  readonly slot?: ConnectionSlot;
}

/**
 * Handles one control connection: read, validate, authenticate, set up the
 * forwarding, reply, close. Never throws.
 */
export async function handleControlConnection(
  control: Duplex,
  deps: ControlServerDeps,
  options: ControlConnectionOptions,
): Promise<void> {
  const { config } = deps;
  const { logger, slot } = options;
  logger.info(`New control connection from ${control.remoteAddress}`);
  let forwarding: Forwarding | undefined;
  let reply: ControlReply;
  try {
    using phase = startDeadline(config.controlTimeoutMs, deps.stopping);
    let text: string;
    try {
      text = await raceDeadline(
        phase.signal,
        readRequestText(control, { maxBytes: config.controlMaxBytes, slot }),
      );
      slot?.complete();
    } catch (error) {
      // Dropped for a newcomer (logged by the slots): its socket is closed.
      if (slot?.evicted) return;
      if (error instanceof RefusalError || isTimeout(error)) throw error;
      // The transport failed (reset, failed TLS handshake): nobody to answer.
      logger.warn(`Cannot read the control request: ${describeError(error)}`);
      control.close();
      return;
    }
    const request = parseForwardRequest(text);
    await raceDeadline(phase.signal, authenticate(request, control.remoteAddress, deps, logger));
    logger.info(
      `Request by "${request.authUser}": ${request.type} (client req'd: ${request.sourcePort}) -> ` +
        formatHostPort(request.destinationAddress, request.destinationPort),
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

/**
 * Checks the control user's password, or throws the refusal to send back.
 * A recently verified password passes on this thread; otherwise the
 * failed-login limits are charged, then the crypt runs in the worker pool,
 * for unknown users too (so they cost what a wrong password costs), and
 * the reason never says which of user or password was wrong.
 *
 * @throws {RefusalError} `authentication failed` (wrong, unknown or over
 * the limit) or `server busy` (the crypt queue is full).
 */
async function authenticate(
  request: ForwardRequest,
  remoteAddress: string,
  deps: ControlServerDeps,
  logger: Logger,
): Promise<void> {
  const users = deps.users();
  const { authUser: user, authPassword: password } = request;
  if (users.verifyCached(user, password)) return;
  // The port is dropped: one host's connections share their limit.
  const address = remoteAddress.slice(0, remoteAddress.lastIndexOf(":"));
  const limited = deps.authFailures?.take(address, user);
  if (limited !== undefined) {
    logger.warn(
      `Authentication failed for control user "${user}" from ${remoteAddress}: ` +
        `too many failed logins for this ${limited}, password not checked`,
    );
    throw new RefusalError("authentication failed");
  }
  let ok: boolean;
  try {
    ok = await users.verify(user, password);
  } catch (error) {
    // No check happened: that is no failed login.
    deps.authFailures?.giveBack(address, user);
    if (!(error instanceof CryptBusyError)) throw error;
    logger.warn(`Too many password checks waiting, refusing ${remoteAddress}`);
    throw new RefusalError("server busy", { cause: error });
  }
  if (ok) {
    deps.authFailures?.giveBack(address, user);
    return;
  }
  logger.warn(`Authentication failed for control user "${user}" from ${remoteAddress}`);
  throw new RefusalError("authentication failed");
}

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
 * its side open. Bounded by `options.maxBytes`; every read touches
 * `options.slot`, so a client still sending is not the idle one.
 *
 * @throws {RefusalError} when the request is too large, not an object or
 * incomplete at end of stream.
 */
export async function readRequestText(
  control: Duplex,
  options: { readonly maxBytes: number; readonly slot?: ConnectionSlot },
): Promise<string> {
  const { maxBytes, slot } = options;
  const scanner = new JsonObjectScanner();
  const buffer = new Uint8Array(maxBytes);
  let filled = 0;
  while (true) {
    if (filled === maxBytes) throw new RefusalError("malformed request: too large");
    const n = await control.read(buffer.subarray(filled, Math.min(maxBytes, filled + 16 * 1024)));
    slot?.touch();
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
