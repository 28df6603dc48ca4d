/**
 * The gateway: one port (TLS, or plain behind a TLS-terminating proxy) for
 * every browser console. Each connection's request head is routed: a
 * WebSocket upgrade carrying a single-use token goes to the session the
 * token was minted for; with `--gateway-snf`, an upgrade without a token is
 * sent a VNC Authentication challenge and goes to the pending forwarding
 * whose one-time password its answer fits; a GET/HEAD is a static noVNC
 * file (`--web`); anything else is a short 4xx. Every refusal of a claim is
 * one uniform 403, logged with at most a short prefix of the token's hash.
 *
 * Each phase has a deadline (TLS handshake and request head together, then
 * the RFB challenge), and connections still in those phases are capped: at
 * the cap the one idle longest makes room, so idle or slow connections
 * cannot starve real viewers.
 *
 * @module
 */

import type { Config } from "../config.ts";
import { describeError } from "../errors.ts";
import type { AuthFailLimiter } from "../auth/auth_fail_limiter.ts";
import { encodeErrorResponse, encodeResponseHead, linger } from "../http/http_response.ts";
import { openListenerSet } from "../http/listener_set.ts";
import {
  parseRequestHead,
  pathForLog,
  readRequestHead,
  type RequestHead,
} from "../http/request_head.ts";
import { acceptUpgrade, judgeUpgrade, wantsWebSocket } from "../http/websocket_upgrade.ts";
import { type Cidr, cidrContains } from "../io/cidr.ts";
import { type ConnectionSlot, ConnectionSlots } from "../io/connection_slots.ts";
import { startDeadline, withDeadline } from "../io/deadline.ts";
import { ConnDuplex, type Duplex, setNoDelay, unbracketHost } from "../io/duplex.ts";
import { canonicalIp } from "../io/ip_address.ts";
import type { TlsMaterial } from "../io/tls_material.ts";
import type { WebSocketDuplex } from "../io/websocket_duplex.ts";
import type { Logger } from "../log.ts";
import { challengeViewer, sendViewerAuthResult } from "../rfb/client_handshake.ts";
import { HandoffRendezvous } from "../session/handoff_rendezvous.ts";
import { PasswordRendezvous } from "../session/password_rendezvous.ts";
import { MemoryTokenStore, type TokenStore } from "../tokens/token_store.ts";
import { type ListenerScheme, OriginPolicy } from "../http/origin_policy.ts";
import { fileBodyChunks, type StaticFiles } from "./static_files.ts";
import type { ViewerGate } from "../session/viewer_gate.ts";

/** What the gateway needs from the daemon. */
export interface GatewayDeps {
  /** The daemon's configuration (`gatewayListen` set). */
  readonly config: Config;
  /** The daemon's logger. */
  readonly logger: Logger;
  /** The certificate (unless `--gateway-plain`), read again on reload. */
  readonly tls: () => TlsMaterial | undefined;
  /** Aborted at SIGTERM: stop accepting. */
  readonly stopping: AbortSignal;
  /**
   * Which pages may open a WebSocket (`--allowed-origins`). @default {with
   * `--web`, the gateway's own origin only; without, any}
   */
  readonly origins?: OriginPolicy;
  /** The noVNC tree (`--web`), if served. */
  readonly web?: StaticFiles;
  /** `--trusted-proxy`, parsed. */
  readonly trustedProxies: readonly Cidr[];
  /** Counts refused claims per source address. */
  readonly claimFailures: AuthFailLimiter;
  /** What replies name as the gateway. @default {scheme://`host`:bound port} */
  readonly publicUrl?: URL;
  /** This host's name, for the default public URL. */
  readonly host: string;
  /**
   * Decides on each connection as it arrives (`--max-pending-per-viewer-ip`):
   * a refused one is closed before any byte. @default {anyone}
   */
  readonly viewerGate?: ViewerGate;
  /**
   * Makes the store of the gateway's tokens; `onExpire` must be called with
   * each entry whose token expires unclaimed. @default {one in this process,
   * capped at `--max-token-ttl`}
   */
  readonly tokens?: (onExpire: (rendezvous: HandoffRendezvous) => void) => TokenStore<
    HandoffRendezvous
  >;
  /**
   * Opens the session of a token another instance minted (a shared store):
   * connects to its VNC server and returns where to hand the viewer over.
   * Its errors are logged and answered 502. @default {such tokens are refused}
   */
  readonly redeem?: (handover: Uint8Array, log: Logger) => Promise<HandoffRendezvous>;
}

/** A token minted for one session. */
export interface TokenOffer {
  /** The session's rendezvous. */
  readonly rendezvous: HandoffRendezvous;
  /** The token (secret: only the control reply carries it). */
  readonly token: string;
  /** A short prefix of its hash: the only trace in logs. */
  readonly hashPrefix: string;
  /** Its lifetime after the cap, in milliseconds. */
  readonly ttlMs: number;
}

/** The running gateway, as admission sees it. */
export interface Gateway {
  /** Bound addresses, for log lines. */
  readonly addresses: readonly string[];
  /** What replies name as the gateway. */
  readonly publicUrl: URL;
  /**
   * The console type viewers reach the gateway with: `vnc-wss` when its
   * public URL is https (a TLS gateway, or a plain one behind a TLS proxy),
   * else `vnc-ws`.
   */
  readonly consoleType: "vnc-ws" | "vnc-wss";
  /**
   * Mints a single-use token whose redemption reaches the returned
   * rendezvous; `handover` says what another instance needs to open the
   * session (asked for only by a shared store).
   *
   * @throws {TokenStoreUnavailableError} when a shared store cannot be reached.
   */
  offerToken(
    options: { ttlMs: number; clientAddress?: string; handover?: () => Uint8Array },
  ): Promise<TokenOffer>;
  /** False while the token store cannot be reached (readiness). */
  readonly tokensAvailable: boolean;
  /**
   * Registers a rendezvous reached by the viewer whose VNC Authentication
   * answer fits `password` (`--gateway-snf`).
   *
   * @throws {PasswordCollisionError} when a pending one has the same key.
   */
  offerPassword(password: string): HandoffRendezvous;
  /** Rebinds with a reloaded certificate (SIGHUP); false when nothing changed. */
  reloadTls(): Promise<boolean>;
  /** Stops accepting, ends pending claims and waits for connections in progress. */
  close(): Promise<void>;
}

/** Security headers on every gateway refusal (static files bring theirs). */
const SECURITY_HEADERS: readonly (readonly [string, string])[] = [
  ["X-Content-Type-Options", "nosniff"],
  ["Cache-Control", "no-store"],
];

/** The one answer to every refused claim: no hint which part was wrong. */
const FORBIDDEN = encodeErrorResponse(403, { headers: SECURITY_HEADERS });

/** A WebSocket viewer past its upgrade, to be matched by its password. */
interface PasswordViewer {
  readonly socket: WebSocketDuplex;
  /** Its address (after trusted proxies), for the rate limit and logs. */
  readonly ip: string;
}

/**
 * Binds the gateway and starts serving.
 *
 * @throws {Deno.errors.AddrInUse} and other bind errors, at start-up.
 */
export async function startGateway(deps: GatewayDeps): Promise<Gateway> {
  const { config, logger } = deps;
  const listen = config.gatewayListen!;
  const scheme: ListenerScheme = config.gatewayPlain ? "http" : "https";
  const onExpire = (rendezvous: HandoffRendezvous) => rendezvous.expire();
  const tokens = deps.tokens?.(onExpire) ??
    new MemoryTokenStore<HandoffRendezvous>({ onExpire, maxTtlMs: config.maxTokenTtlMs });
  const passwords = new PasswordRendezvous<HandoffRendezvous>();
  const slots = new ConnectionSlots({
    capacity: config.maxGatewayConnections,
    logger,
    what: "Gateway connection",
  });
  const handlers = new Set<Promise<void>>();
  let nextId = 1;
  // Known once bound (the default is the gateway's own origin); nothing is
  // served before, and it never changes after.
  const policy: { origins?: OriginPolicy } = {};

  function onConnection(conn: Deno.Conn): void {
    setNoDelay(conn);
    const duplex = new ConnDuplex(conn);
    const log = logger.child(`[G${nextId++}]`);
    // Behind a trusted proxy every viewer shares its address: not counted.
    const direct = canonicalIp((conn.remoteAddr as Deno.NetAddr).hostname) ?? "";
    const viaProxy = deps.trustedProxies.some((range) => cidrContains(range, direct));
    const verdict = viaProxy ? undefined : deps.viewerGate?.enter(duplex.remoteAddress);
    if (verdict !== undefined && !verdict.ok) {
      log.warn(`Refused ${duplex.remoteAddress}: ${verdict.why}`, {
        event: "viewer_refused",
        refusal: verdict.refusal,
      });
      duplex.close();
      return;
    }
    const slot = slots.admit(duplex.remoteAddress, () => duplex.close());
    const handler = slot === undefined
      ? refuseBusy(conn, duplex, log)
      : serveConnection(conn, duplex, slot, log);
    handlers.add(handler);
    handler.finally(() => {
      verdict?.pending[Symbol.dispose]();
      handlers.delete(handler);
    });
  }

  async function serveConnection(
    conn: Deno.Conn,
    duplex: Duplex,
    slot: ConnectionSlot,
    log: Logger,
  ): Promise<void> {
    using _held = slot;
    let handedOver = false;
    try {
      // Phase 1: TLS handshake, request head and upgrade, one deadline.
      let routed: boolean | PasswordViewer;
      {
        using phase = startDeadline(config.clientTimeoutMs, deps.stopping);
        routed = await withDeadline(
          duplex,
          phase.signal,
          () => route(conn, duplex, slot, log, phase.signal),
        );
      }
      if (typeof routed === "boolean") {
        handedOver = routed;
        return;
      }
      // Phase 2 (password mode): the RFB challenge, a deadline of its own.
      using phase = startDeadline(config.clientTimeoutMs, deps.stopping);
      const { socket } = routed;
      handedOver = await withDeadline(socket, phase.signal, () => matchByPassword(routed, log));
    } catch (error) {
      if (!slot.evicted) log.debug(`Gateway connection failed: ${describeError(error)}`);
    } finally {
      if (!handedOver) duplex.close();
    }
  }

  /** Reads the request head and routes it; see {@linkcode upgrade}. */
  async function route(
    conn: Deno.Conn,
    duplex: Duplex,
    slot: ConnectionSlot,
    log: Logger,
    signal: AbortSignal,
  ): Promise<boolean | PasswordViewer> {
    const bytes = await readRequestHead(duplex, { slot });
    if (typeof bytes === "number") {
      await refuse(conn, duplex, bytes, log, "malformed request head", signal);
      return false;
    }
    let head: RequestHead;
    try {
      head = parseRequestHead(bytes);
    } catch (error) {
      await refuse(conn, duplex, 400, log, describeError(error), signal);
      return false;
    }
    const peer = viewerAddress(conn, head, deps.trustedProxies);
    if (!wantsWebSocket(head)) {
      await serveStatic(conn, duplex, head, log, signal);
      return false;
    }
    return await upgrade(conn, duplex, head, peer, { slot, log, signal });
  }

  /** Routes a WebSocket upgrade by its token, or by its RFB answer; true when handed over. */
  async function upgrade(
    conn: Deno.Conn,
    duplex: Duplex,
    head: RequestHead,
    peer: { ip: string; scheme: ListenerScheme },
    phase: { slot: ConnectionSlot; log: Logger; signal: AbortSignal },
  ): Promise<boolean | PasswordViewer> {
    const { log, signal } = phase;
    const origin = policy.origins?.check(head.headers.get("origin"), peer.scheme) ??
      { ok: false, why: "the gateway is starting" };
    if (!origin.ok) {
      await refuse(conn, duplex, 403, log, `origin refused: ${origin.why}`, signal);
      return false;
    }
    const verdict = judgeUpgrade(head);
    if (!verdict.upgrade) {
      await refuse(conn, duplex, verdict.status, log, verdict.why, signal, verdict.headers);
      return false;
    }
    const token = queryToken(head.target) ?? verdict.tokenOffer;
    if (token === undefined && !config.gatewaySnf) {
      await refuse(conn, duplex, 403, log, "no token", signal);
      return false;
    }
    const tooMany = async () => {
      await refuse(conn, duplex, 403, log, `too many refused claims from ${peer.ip}`, signal);
      return false;
    };
    if (token !== undefined) {
      // A token claim is charged only once refused: tokens are far beyond
      // guessing, and viewers behind one address redeeming at once must not
      // count against each other while their claims are in flight.
      if (deps.claimFailures.exhausted(peer.ip) !== undefined) return await tooMany();
      const claim = await tokens.claim(token, peer.ip);
      if (!claim.ok && claim.why === "unavailable") {
        // Nothing was decided: the viewer may try again, and is not charged.
        await refuse(conn, duplex, 503, log, `token ${claim.hashPrefix}: ${claim.why}`, signal, [
          ["Retry-After", "1"],
        ]);
        return false;
      }
      if (!claim.ok || (claim.entry === undefined && deps.redeem === undefined)) {
        // The token (if it exists) is not burnt when only the address was wrong.
        deps.claimFailures.take(peer.ip);
        const why = claim.ok ? "minted elsewhere" : claim.why;
        await refuse(conn, duplex, 403, log, `token ${claim.hashPrefix}: ${why}`, signal);
        return false;
      }
      phase.slot.complete();
      log.info(
        `Token ${claim.hashPrefix} redeemed by ${peer.ip} on path ${pathForLog(head.target)}` +
          (claim.entry === undefined ? " (minted by another instance)" : ""),
      );
      let rendezvous: HandoffRendezvous;
      if (!("handover" in claim)) {
        rendezvous = claim.entry;
      } else {
        try {
          rendezvous = await deps.redeem!(claim.handover, log);
        } catch (error) {
          await refuse(
            conn,
            duplex,
            502,
            log,
            `cannot open the session: ${describeError(error)}`,
            signal,
          );
          return false;
        } finally {
          claim.handover.fill(0);
        }
      }
      let socket: WebSocketDuplex;
      try {
        socket = await acceptUpgrade(duplex, verdict, { pingIntervalMs: config.wsPingIntervalMs });
      } catch (error) {
        // The token is spent: its session need not wait for a viewer that left.
        await rendezvous.close();
        throw error;
      }
      return handOver(rendezvous, socket, false, log);
    }
    // --gateway-snf: the viewer's VNC Authentication answer names its
    // forwarding. An eight-character password is guessable, so the attempt
    // is charged before it starts: attempts in flight are bounded too.
    if (deps.claimFailures.take(peer.ip) !== undefined) return await tooMany();
    phase.slot.complete();
    const socket = await acceptUpgrade(duplex, verdict, {
      pingIntervalMs: config.wsPingIntervalMs,
    });
    return { socket, ip: peer.ip };
  }

  /** Password mode: one challenge, one answer, the forwarding it fits or nothing. */
  async function matchByPassword(viewer: PasswordViewer, log: Logger): Promise<boolean> {
    const { socket, ip } = viewer;
    const answer = await challengeViewer(socket);
    const entry = passwords.match(answer.challenge, answer.response);
    await sendViewerAuthResult(socket, answer.version, entry !== undefined);
    if (entry === undefined) {
      // Charged before the attempt already.
      log.warn(`Authentication failed for client ${ip}: no pending forwarding matches`);
      socket.close();
      return false;
    }
    deps.claimFailures.giveBack(ip);
    log.info(`Client ${ip} matched a pending forwarding by its password`);
    return handOver(entry, socket, true, log);
  }

  function handOver(
    rendezvous: HandoffRendezvous,
    socket: WebSocketDuplex,
    authenticated: boolean,
    log: Logger,
  ): boolean {
    if (rendezvous.deliver({ duplex: socket, authenticated })) return true;
    log.info("The session gave up waiting just now: closing the viewer");
    socket.close();
    return false;
  }

  async function serveStatic(
    conn: Deno.Conn,
    duplex: Duplex,
    head: RequestHead,
    log: Logger,
    signal: AbortSignal,
  ): Promise<void> {
    if (deps.web === undefined) {
      await refuse(conn, duplex, 404, log, "no static files here", signal);
      return;
    }
    using response = await deps.web.serve(head);
    log.debug(
      `${head.method} ${pathForLog(head.target)}: ${response.status}` +
        (response.why ? ` (${response.why})` : ""),
    );
    const headers = [...response.headers, ["Connection", "close"] as const];
    const { body } = response;
    const length = body.kind === "bytes" ? body.bytes.length : body.length;
    if (!headers.some(([name]) => name.toLowerCase() === "content-length")) {
      headers.push(["Content-Length", String(length)]);
    }
    await duplex.write(encodeResponseHead(response.status, headers));
    if (head.method !== "HEAD") {
      if (body.kind === "bytes") await duplex.write(body.bytes);
      else for await (const chunk of fileBodyChunks(body)) await duplex.write(chunk);
    }
    await linger(conn, duplex, { signal });
  }

  async function refuse(
    conn: Deno.Conn,
    duplex: Duplex,
    status: number,
    log: Logger,
    why: string,
    signal: AbortSignal,
    headers: readonly (readonly [string, string])[] = [],
  ): Promise<void> {
    log.info(`Refused ${duplex.remoteAddress}: ${status} (${why})`);
    await duplex.write(
      status === 403 ? FORBIDDEN : encodeErrorResponse(status, {
        headers: [...SECURITY_HEADERS, ...headers],
      }),
    );
    await linger(conn, duplex, { signal });
  }

  async function refuseBusy(conn: Deno.Conn, duplex: Duplex, log: Logger): Promise<void> {
    log.warn(`Too many gateway connections in progress, refusing ${duplex.remoteAddress}`);
    try {
      using phase = startDeadline(1_000, deps.stopping);
      await withDeadline(duplex, phase.signal, async () => {
        await duplex.write(encodeErrorResponse(503, { headers: [["Retry-After", "1"]] }));
        await linger(conn, duplex, { signal: phase.signal, timeoutMs: 200 });
      });
    } catch {
      // It is refused either way.
    } finally {
      duplex.close();
    }
  }

  const listeners = await openListenerSet({
    address: listen.host,
    port: listen.port,
    ...(config.gatewayPlain ? {} : { tls: deps.tls }),
    signal: deps.stopping,
    resolveTimeoutMs: config.controlTimeoutMs,
    logger,
    what: "Gateway",
    onConnection,
  });

  const boundPort = Number(
    listeners.addresses[0]!.slice(listeners.addresses[0]!.lastIndexOf(":") + 1),
  );
  const host = deps.host.includes(":") ? `[${deps.host}]` : deps.host;
  const publicUrl = deps.publicUrl ?? new URL(`${scheme}://${host}:${boundPort}`);
  policy.origins = deps.origins ??
    (deps.web === undefined ? new OriginPolicy() : new OriginPolicy([publicUrl.origin]));
  let closing: Promise<void> | undefined;
  return {
    addresses: listeners.addresses,
    publicUrl,
    // What the viewer's page speaks: behind a TLS proxy a plain gateway is wss too.
    consoleType: publicUrl.protocol === "https:" ? "vnc-wss" : "vnc-ws",
    async offerToken(options) {
      let remove: () => void = () => {};
      const rendezvous = new HandoffRendezvous(
        `${listeners.addresses.join(", ")} (gateway, token)`,
        () => remove(),
      );
      const issued = await tokens.issue(rendezvous, {
        ttlMs: options.ttlMs,
        ...(options.clientAddress !== undefined ? { clientAddress: options.clientAddress } : {}),
        ...(options.handover !== undefined ? { handover: options.handover } : {}),
      });
      // Draining, the token stays redeemable on the other instances (if shared).
      remove = () =>
        void tokens.remove(rendezvous, { keepShared: deps.stopping.aborted }).catch(() => {});
      return {
        rendezvous,
        token: issued.token,
        hashPrefix: issued.hashPrefix,
        ttlMs: issued.ttlMs,
      };
    },
    get tokensAvailable() {
      return tokens.available;
    },
    offerPassword(password) {
      const rendezvous = new HandoffRendezvous(
        `${listeners.addresses.join(", ")} (gateway, password)`,
        () => passwords.remove(rendezvous),
      );
      passwords.register(password, rendezvous);
      return rendezvous;
    },
    reloadTls: () => config.gatewayPlain ? Promise.resolve(false) : listeners.reloadTls(),
    close() {
      closing ??= (async () => {
        await listeners.close();
        await tokens.close();
        await Promise.allSettled([...handlers]);
      })();
      return closing;
    },
  };
}

/** The `token` query parameter of a request target, if any. */
function queryToken(target: string): string | undefined {
  const query = target.indexOf("?");
  if (query === -1) return undefined;
  const token = new URLSearchParams(target.slice(query + 1)).get("token");
  return token === null || token === "" ? undefined : token;
}

/**
 * The viewer's address and the scheme its page used: the connection's own,
 * unless it comes from a trusted proxy, whose `X-Forwarded-For` (the last
 * address not itself a trusted proxy) and `X-Forwarded-Proto` count.
 * Nothing from an untrusted peer's headers is believed.
 */
function viewerAddress(
  conn: Deno.Conn,
  head: RequestHead,
  trusted: readonly Cidr[],
): { ip: string; scheme: ListenerScheme } {
  const direct = canonicalIp((conn.remoteAddr as Deno.NetAddr).hostname) ??
    (conn.remoteAddr as Deno.NetAddr).hostname;
  const ownScheme: ListenerScheme = isTls(conn) ? "https" : "http";
  const isTrusted = (ip: string) => trusted.some((range) => cidrContains(range, ip));
  if (!isTrusted(direct)) return { ip: direct, scheme: ownScheme };
  const hops = (head.headers.get("x-forwarded-for") ?? "").split(",").map((hop) => hop.trim());
  let ip = direct;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = canonicalIp(hops[i]!);
    if (hop === undefined) break;
    ip = hop;
    if (!isTrusted(hop)) break;
  }
  const proto = head.headers.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase();
  const scheme = proto === "https" ? "https" : proto === "http" ? "http" : ownScheme;
  return { ip, scheme };
}

/** A `Deno.TlsConn` (only it has a handshake). */
function isTls(conn: Deno.Conn): boolean {
  return "handshake" in conn;
}

/** The `source_port` replies carry for the gateway. */
export function publicPort(url: URL): number {
  return url.port === "" ? (url.protocol === "https:" ? 443 : 80) : Number(url.port);
}

/** The `proxy_address` replies carry for the gateway (no IPv6 brackets). */
export function publicHost(url: URL): string {
  return unbracketHost(url.hostname);
}
