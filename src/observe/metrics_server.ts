/**
 * The admin listener (`--metrics-listen`): plain HTTP/1.1, one request per
 * connection, three paths: `/metrics` (the Prometheus text exposition
 * format 0.0.4), `/healthz` (200 when the control socket is up, control
 * users are loaded and the pool has a free port; 503 naming what fails)
 * and `/readyz` (as `/healthz`, and 503 while draining after SIGTERM, so a
 * load balancer stops sending). Only loopback peers and `--metrics-allow`
 * ranges are answered; others get 403. Every wait has a deadline and the
 * connections in progress are capped.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import { encodeErrorResponse, encodeResponseHead, linger } from "../http/http_response.ts";
import { openListenerSet } from "../http/listener_set.ts";
import { parseRequestHead, readRequestHead } from "../http/request_head.ts";
import { type Cidr, cidrContains } from "../io/cidr.ts";
import { ConnectionSlots } from "../io/connection_slots.ts";
import { startDeadline, withDeadline } from "../io/deadline.ts";
import { ConnDuplex, type Duplex } from "../io/duplex.ts";
import type { Logger } from "../log.ts";
import type { HostPort } from "../config.ts";
import { EXPOSITION_CONTENT_TYPE, type MetricsRegistry } from "./metrics_registry.ts";

/** What `/healthz` and `/readyz` look at. */
export interface HealthSources {
  /** The control socket listens. */
  readonly controlUp: () => boolean;
  /** Control users loaded. */
  readonly users: () => number;
  /** Free pool ports. */
  readonly poolFree: () => number;
  /** Pool ports in all. */
  readonly poolSize: number;
  /** Draining after SIGTERM. */
  readonly draining: () => boolean;
  /**
   * The gateway's token store answers (a shared one may not); `/readyz`
   * fails while it does not. @default {no token store to ask}
   */
  readonly tokenStore?: () => boolean;
}

/** Options of {@linkcode startMetricsServer}. */
export interface MetricsServerOptions {
  /** Where to listen. */
  readonly listen: HostPort;
  /** Who besides loopback may ask. */
  readonly allow: readonly Cidr[];
  /** What `/metrics` renders. */
  readonly registry: MetricsRegistry;
  /** What health looks at. */
  readonly health: HealthSources;
  /** The daemon's logger. */
  readonly logger: Logger;
  /** Deadline for resolving a host name in `listen`. */
  readonly resolveTimeoutMs: number;
}

/** The running admin listener. */
export interface MetricsServer {
  /** Bound addresses. */
  readonly addresses: readonly string[];
  /** Stops listening and waits for requests in progress; idempotent. */
  close(): Promise<void>;
}

/** A scrape's whole budget: request head in, response out. */
const REQUEST_TIMEOUT_MS = 5_000;
/** Admin connections in progress at once. */
const MAX_CONNECTIONS = 32;
/** Longest request head (scrapers send a few hundred bytes). */
const MAX_HEAD_BYTES = 4096;

const LOOPBACK: readonly Cidr[] = [
  { bytes: Uint8Array.of(127, 0, 0, 0), prefix: 8, text: "127.0.0.0/8" },
  { bytes: Uint8Array.from([...new Array(15).fill(0), 1]), prefix: 128, text: "::1/128" },
];

/** The verdict of `/healthz`: what fails, one line each; empty when healthy. */
export function healthProblems(health: HealthSources): string[] {
  const problems: string[] = [];
  if (!health.controlUp()) problems.push("control: not listening");
  if (health.users() === 0) problems.push("users: none loaded");
  if (health.poolFree() === 0) problems.push(`pool: no free port of ${health.poolSize}`);
  return problems;
}

/**
 * Binds the admin listener and starts answering.
 *
 * @throws {Deno.errors.AddrInUse} and other bind errors, at start-up.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { logger } = options;
  const stopping = new AbortController();
  const handlers = new Set<Promise<void>>();
  const slots = new ConnectionSlots({
    capacity: MAX_CONNECTIONS,
    logger,
    what: "Metrics connection",
  });
  const allowed = [...LOOPBACK, ...options.allow];

  function onConnection(conn: Deno.Conn): void {
    const duplex = new ConnDuplex(conn);
    const slot = slots.admit(duplex.remoteAddress, () => duplex.close());
    if (slot === undefined) {
      duplex.close();
      return;
    }
    const handler = (async () => {
      using _held = slot;
      try {
        using phase = startDeadline(REQUEST_TIMEOUT_MS, stopping.signal);
        await withDeadline(duplex, phase.signal, () => answer(conn, duplex, phase.signal));
      } catch (error) {
        logger.debug(`Metrics request from ${duplex.remoteAddress}: ${describeError(error)}`);
      } finally {
        duplex.close();
      }
    })();
    handlers.add(handler);
    handler.finally(() => handlers.delete(handler));
  }

  async function answer(conn: Deno.Conn, duplex: Duplex, signal: AbortSignal): Promise<void> {
    const bytes = await readRequestHead(duplex, { maxBytes: MAX_HEAD_BYTES });
    // Refused after its request is in, so the client reads the 403, not a reset.
    const peer = (conn.remoteAddr as Deno.NetAddr).hostname;
    if (!allowed.some((range) => cidrContains(range, peer))) {
      logger.warn(`Refused a metrics request from ${duplex.remoteAddress}: not in --metrics-allow`);
      await duplex.write(encodeErrorResponse(403));
      await linger(conn, duplex, { signal });
      return;
    }
    let status: number;
    let body: string;
    let type = "text/plain; charset=utf-8";
    let method = "GET";
    if (typeof bytes === "number") {
      [status, body] = [bytes, "Bad request\n"];
    } else {
      let target: string;
      try {
        const head = parseRequestHead(bytes, { maxBytes: MAX_HEAD_BYTES });
        method = head.method;
        target = head.target;
      } catch (error) {
        await duplex.write(encodeErrorResponse(400, { body: `${describeError(error)}\n` }));
        await linger(conn, duplex, { signal });
        return;
      }
      const path = target.split("?")[0];
      if (method !== "GET" && method !== "HEAD") {
        await duplex.write(encodeErrorResponse(405, { headers: [["Allow", "GET, HEAD"]] }));
        await linger(conn, duplex, { signal });
        return;
      }
      if (path === "/metrics") {
        [status, body, type] = [200, options.registry.render(), EXPOSITION_CONTENT_TYPE];
      } else if (path === "/healthz" || path === "/readyz") {
        const problems = healthProblems(options.health);
        if (path === "/readyz") {
          // Not for /healthz: restarting the daemon would not bring Redis back.
          if (options.health.tokenStore?.() === false) problems.unshift("token store unreachable");
          if (options.health.draining()) problems.unshift("draining");
        }
        status = problems.length === 0 ? 200 : 503;
        body = problems.length === 0 ? "ok\n" : `${problems.join("\n")}\n`;
      } else {
        [status, body] = [404, "Not found: /metrics, /healthz, /readyz\n"];
      }
    }
    const payload = new TextEncoder().encode(body);
    await duplex.write(encodeResponseHead(status, [
      ["Content-Type", type],
      ["Content-Length", String(payload.length)],
      ["Cache-Control", "no-store"],
      ["Connection", "close"],
    ]));
    if (method !== "HEAD") await duplex.write(payload);
    await linger(conn, duplex, { signal });
  }

  const listeners = await openListenerSet({
    address: options.listen.host,
    port: options.listen.port,
    signal: stopping.signal,
    resolveTimeoutMs: options.resolveTimeoutMs,
    logger,
    what: "Metrics",
    onConnection,
  });
  let closing: Promise<void> | undefined;
  return {
    addresses: listeners.addresses,
    close() {
      closing ??= (async () => {
        stopping.abort(new Error("The metrics listener is closing"));
        await listeners.close();
        await Promise.allSettled([...handlers]);
      })();
      return closing;
    },
  };
}
