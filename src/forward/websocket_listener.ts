/**
 * The one-shot listener of `vnc-ws` and `vnc-wss` forwardings: an HTTP (or
 * HTTPS) server that upgrades one WebSocket on any path and hands it out as
 * a `Duplex` (DESIGN §5, peers.md §1.10).
 *
 * Unlike snf-vncauthproxy, which serialized request handling so one idle TCP
 * connection blocked the real viewer (peers.md §1.10, W16), `Deno.serve`
 * handles every connection and request on its own. It has no deadline for
 * reading request headers, so an idle connection lasts until the server
 * closes: when the forwarding times out without a viewer, or when its
 * session ends.
 *
 * @module
 */

import { formatHostPort } from "../io/duplex.ts";
import { bindAll } from "../io/listen_addresses.ts";
import { WebSocketDuplex } from "../io/websocket_duplex.ts";
import type { Logger } from "../log.ts";
import type { ClientListener } from "./client_listener.ts";

/** Options of {@linkcode openWebSocketListener}. */
export interface WebSocketListenerOptions {
  /** Certificate and key (PEM) for `vnc-wss`; plain `ws` without. */
  tls?: { cert: string; key: string };
  /** The forwarding's logger. */
  logger: Logger;
  /**
   * Keepalive: after this long without a frame from the viewer, send a ping;
   * close with 1001 if nothing arrives within as long again. 0 disables it,
   * like snf-vncauthproxy, which never pinged. Implemented by
   * `Deno.upgradeWebSocket`'s `idleTimeout` (seconds, pings at half of it),
   * which would otherwise default to 30 s. @default {0}
   */
  pingIntervalMs?: number;
  /** See `WebSocketDuplexOptions.maxQueuedBytes`. */
  maxQueuedBytes?: number;
  /** See `WebSocketDuplexOptions.maxBufferedBytes`. */
  maxBufferedBytes?: number;
}

/** Body of the answer to anything but a WebSocket upgrade. */
const NOT_WEBSOCKET = "This port serves one VNC WebSocket console\n";
/** RFC 6455 §7.4.1: going away; the reason snf-vncauthproxy sent. */
const CLOSE_GOING_AWAY = 1001;
const SECOND_CLIENT_REASON = "Only a single connection allowed";
/** RFC 6455 §4.2.1: the key is 16 random bytes in base64. */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;
/** Longest request path put in a log line. */
const MAX_LOGGED_PATH = 100;

/**
 * Opens an HTTP server (HTTPS with `options.tls`) on every address of
 * `address` at `port` (0 picks a free port, shown in `addresses`). The first
 * WebSocket to open wins; later ones are closed with 1001 "Only a single
 * connection allowed", other requests get a short 400 (405 for methods other
 * than GET and HEAD).
 *
 * `Deno.serve`'s shutdown also ends the WebSockets it upgraded, so the server
 * that carries the winner keeps listening (refusing everything) until the
 * winner or the listener closes, as snf-vncauthproxy's did; servers on other
 * addresses stop at once.
 *
 * @throws {Deno.errors.AddrInUse} when the port is taken (nothing stays open).
 */
export async function openWebSocketListener(
  address: string,
  port: number,
  options: WebSocketListenerOptions,
): Promise<ClientListener> {
  const listener = new WebSocketListener(options);
  let chosenPort = port;
  const handles = await bindAll(address, port, (hostname) => {
    const server = listener.serve(hostname, chosenPort);
    // Port 0: bind the other addresses of a host name at the same port.
    chosenPort = server.addr.port;
    return { server, close: () => void listener.close() };
  }).catch(async (error) => {
    await listener.close();
    throw error;
  });
  listener.recordAddresses(handles.map((handle) => handle.server));
  return listener;
}

type Server = Deno.HttpServer<Deno.NetAddr>;

class WebSocketListener implements ClientListener {
  readonly #options: WebSocketListenerOptions;
  readonly #logger: Logger;
  readonly #servers: Server[] = [];
  #addresses: string[] = [];
  #state: "listening" | "won" | "closed" = "listening";
  #winner: WebSocketDuplex | undefined;
  #winnerServer: Server | undefined;
  readonly #stopping = new Map<Server, Promise<void>>();
  readonly #won = Promise.withResolvers<WebSocketDuplex>();
  readonly #closedSignal = Promise.withResolvers<never>();
  #closing: Promise<void> | undefined;

  constructor(options: WebSocketListenerOptions) {
    this.#options = options;
    this.#logger = options.logger;
    // acceptOne may never be called; its rejection is only for it.
    this.#closedSignal.promise.catch(() => {});
  }

  get addresses(): readonly string[] {
    return this.#addresses;
  }

  /** Starts one server; throws synchronously when the port is taken. */
  serve(hostname: string, port: number): Server {
    const server: Server = Deno.serve({
      hostname,
      port,
      ...(this.#options.tls ?? {}),
      onListen: () => {}, // Deno.serve would print "Listening on ..."
      onError: (error) => {
        this.#logger.warn(`WebSocket listener error: ${describe(error)}`);
        return textResponse(500, "Internal error\n");
      },
    }, (request, info): Response => this.#handle(request, info, server));
    this.#servers.push(server);
    return server;
  }

  /** Notes the bound addresses once every server is up. */
  recordAddresses(servers: Server[]): void {
    this.#addresses = servers.map((server) =>
      formatHostPort(server.addr.hostname, server.addr.port)
    );
  }

  async acceptOne(signal: AbortSignal): Promise<WebSocketDuplex> {
    signal.throwIfAborted();
    const aborted = Promise.withResolvers<never>();
    const onAbort = () => aborted.reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await Promise.race([
        this.#won.promise,
        this.#closedSignal.promise,
        aborted.promise,
      ]);
    } catch (error) {
      if (signal.aborted) {
        await this.close();
        throw signal.reason;
      }
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Stops every server and frees the port; idempotent. The winning
   * WebSocket, if any, is closed too: it lives on its server.
   */
  close(): Promise<void> {
    this.#closing ??= this.#closeAll();
    return this.#closing;
  }

  async #closeAll(): Promise<void> {
    this.#state = "closed";
    this.#closedSignal.reject(
      new Deno.errors.BadResource("WebSocket listener is closed"),
    );
    // The winner's server stops once the viewer has had its close frame
    // (the duplex's onClose); shutting it down first would cut the socket.
    this.#winner?.close(CLOSE_GOING_AWAY, "Server going away");
    await Promise.all([
      this.#winner?.closed,
      ...this.#servers
        .filter((server) => server !== this.#winnerServer)
        .map((server) => this.#stop(server)),
    ]);
  }

  /** Shuts `server` down once, however often asked. */
  #stop(server: Server): Promise<void> {
    let stopping = this.#stopping.get(server);
    if (stopping === undefined) {
      stopping = server.shutdown();
      this.#stopping.set(server, stopping);
    }
    return stopping;
  }

  #handle(
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
    server: Server,
  ): Response {
    const remote = formatHostPort(
      info.remoteAddr.hostname,
      info.remoteAddr.port,
    );
    if (request.method !== "GET" && request.method !== "HEAD") {
      return textResponse(405, NOT_WEBSOCKET, { allow: "GET" });
    }
    const upgrade = request.headers.get("upgrade") ?? "";
    if (!/\bwebsocket\b/i.test(upgrade) || request.method !== "GET") {
      this.#logger.debug(`Refused a plain HTTP request from ${remote}`);
      return textResponse(400, NOT_WEBSOCKET);
    }
    // Deno.upgradeWebSocket checks Connection and the key's presence only.
    if (request.headers.get("sec-websocket-version") !== "13") {
      this.#logger.debug(`Unsupported WebSocket version from ${remote}`);
      // RFC 6455 §4.4: answer with the version this server speaks.
      return textResponse(426, "Unsupported WebSocket version\n", {
        "sec-websocket-version": "13",
      });
    }
    if (!WEBSOCKET_KEY.test(request.headers.get("sec-websocket-key") ?? "")) {
      this.#logger.debug(`Bad WebSocket key from ${remote}`);
      return textResponse(400, "Bad WebSocket upgrade request\n");
    }
    let upgraded: { socket: WebSocket; response: Response };
    try {
      upgraded = Deno.upgradeWebSocket(request, {
        // Only "binary" is spoken; an offer without it still connects, with
        // no Sec-WebSocket-Protocol in the answer (snf-vncauthproxy did so).
        ...(offersBinary(request) ? { protocol: "binary" } : {}),
        idleTimeout: 2 * (this.#options.pingIntervalMs ?? 0) / 1000,
      });
    } catch (error) {
      this.#logger.debug(
        `Bad WebSocket upgrade from ${remote}: ${describe(error)}`,
      );
      return textResponse(400, "Bad WebSocket upgrade request\n");
    }
    const { socket, response } = upgraded;
    const path = logPath(request.url);
    socket.addEventListener(
      "open",
      () => this.#onOpen(socket, server, remote, path),
      { once: true },
    );
    return response;
  }

  #onOpen(
    socket: WebSocket,
    server: Server,
    remote: string,
    path: string,
  ): void {
    if (this.#state !== "listening") {
      this.#logger.info(
        `Refused a second WebSocket client from ${remote}: only a single connection allowed`,
      );
      socket.close(CLOSE_GOING_AWAY, SECOND_CLIENT_REASON);
      return;
    }
    this.#state = "won";
    this.#logger.debug(`WebSocket upgrade from ${remote} on path ${path}`);
    const duplex = new WebSocketDuplex(socket, {
      remoteAddress: remote,
      ...(this.#options.maxQueuedBytes !== undefined
        ? { maxQueuedBytes: this.#options.maxQueuedBytes }
        : {}),
      ...(this.#options.maxBufferedBytes !== undefined
        ? { maxBufferedBytes: this.#options.maxBufferedBytes }
        : {}),
      // The socket lives on `server`: stop it only once the socket is done.
      onClose: () => this.#stop(server),
    });
    this.#winner = duplex;
    this.#winnerServer = server;
    // The first client wins: servers on other addresses stop now.
    for (const other of this.#servers) {
      if (other !== server) void this.#stop(other);
    }
    this.#won.resolve(duplex);
  }
}

/** True when a `Sec-WebSocket-Protocol` header offers the token `binary`. */
function offersBinary(request: Request): boolean {
  const offered = request.headers.get("sec-websocket-protocol") ?? "";
  return offered.split(",").some((token) => token.trim() === "binary");
}

/** The request path for a log line: never the query, which may hold a token. */
function logPath(url: string): string {
  const path = new URL(url).pathname;
  return path.length > MAX_LOGGED_PATH ? `${path.slice(0, MAX_LOGGED_PATH)}...` : path;
}

function textResponse(
  status: number,
  body: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
