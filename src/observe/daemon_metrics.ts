/**
 * The daemon's metrics, every name prefixed `vncauthproxy_`: forwardings
 * requested, set up and failed (by a fixed reason), sessions active (by
 * console kind, rendezvous and state) and ended (by cause), bytes each way,
 * set-up / backend handshake / viewer authentication / session duration
 * histograms, pool ports free, control connections open, control
 * authentication failures, the crypt queue, viewers refused at a port, and
 * the process (RSS, open descriptors, event-loop lag). Labels hold only
 * fixed sets of words: never a backend address, user name, token or secret.
 *
 * @module
 */

import type { ConsoleType } from "../config.ts";
import { CONSOLE_TYPES } from "../config.ts";
import type { RelayCounters } from "../io/relay.ts";
import { SESSION_END_CAUSES, type SessionEnd } from "../session/session_events.ts";
import type { ViewerRefusal } from "../session/viewer_gate.ts";
import { FAILURE_REASONS, type FailureReason, failureReason } from "./failure_reasons.ts";
import { type Counter, type Histogram, type Labels, MetricsRegistry } from "./metrics_registry.ts";

/** How the viewer comes in: a pool port, or the gateway by token or by password. */
export type RendezvousKind = "port" | "token" | "password";

/** A live session's place in the gauges. */
export interface LiveSession {
  readonly kind: ConsoleType;
  readonly rendezvous: RendezvousKind;
  state: "waiting" | "authenticating" | "relaying";
  counters?: RelayCounters;
}

/** What the metrics read at each scrape. */
export interface MetricSources {
  /** Free pool ports. */
  readonly poolFree: () => number;
  /** Pool ports in all. */
  readonly poolSize: number;
  /** Control connections open now. */
  readonly controlConnections: () => number;
  /** Password checks waiting for a crypt worker. */
  readonly cryptQueue: () => number;
  /** Control users loaded. */
  readonly users: () => number;
  /** True while draining after SIGTERM. */
  readonly draining: () => boolean;
  /** Whether the gateway's token store answers. @default {no gauge: no gateway} */
  readonly tokenStore?: () => boolean;
}

/** Collaborators, replaceable in tests. */
export interface DaemonMetricsDeps {
  /** Wall clock in milliseconds, for the recent-failures window. @default {Date.now} */
  readonly now?: () => number;
}

/** Seconds: from sub-millisecond loopback set-ups to a slow backend's timeout. */
const FAST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Seconds: sessions last from seconds to a working day. */
const SESSION_BUCKETS = [1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400];
/** The recent-failures window: this many whole minutes, the current one included. */
export const RECENT_MINUTES = 5;
/** How often the event-loop lag is sampled. */
const LAG_SAMPLE_MS = 500;

/** The daemon's metrics; see the module doc. */
export class DaemonMetrics implements Disposable {
  /** The registry `/metrics` renders. */
  readonly registry = new MetricsRegistry();
  readonly #requested: Counter;
  readonly #setUp: Counter;
  readonly #failed: Counter;
  readonly #ended: Counter;
  readonly #authFailures: Counter;
  readonly #viewersRefused: Counter;
  readonly #setUpSeconds: Histogram;
  readonly #backendSeconds: Histogram;
  readonly #viewerAuthSeconds: Histogram;
  readonly #sessionSeconds: Histogram;
  readonly #live = new Set<LiveSession>();
  /** Bytes of sessions that ended; live ones are added at each scrape. */
  readonly #endedBytes = { viewerToServer: 0, serverToViewer: 0 };
  /** Failures per minute (minute number -> reason -> count), the last few minutes only. */
  readonly #recent = new Map<number, Map<FailureReason, number>>();
  readonly #now: () => number;
  #lagSeconds = 0;
  #lagTimer: ReturnType<typeof setInterval> | undefined;

  /** Registers every metric; `sources` are read at each scrape. */
  constructor(sources: MetricSources, deps: DaemonMetricsDeps = {}) {
    const r = this.registry;
    this.#now = deps.now ?? Date.now;
    this.#requested = r.counter(
      "vncauthproxy_forwardings_requested_total",
      "Control requests for a forwarding received.",
    );
    this.#requested.declare();
    this.#setUp = r.counter(
      "vncauthproxy_forwardings_set_up_total",
      "Forwardings set up and answered OK, by console kind and rendezvous.",
      ["kind", "rendezvous"],
    );
    this.#failed = r.counter(
      "vncauthproxy_forwardings_failed_total",
      "Forwardings refused or failed, by reason (a fixed set).",
      ["reason"],
    );
    for (const reason of FAILURE_REASONS) this.#failed.declare({ reason });
    r.gauge(
      "vncauthproxy_forwardings_failed_recent",
      `Forwardings failed in the last ${RECENT_MINUTES} whole minutes (the current one included), by reason.`,
      ["reason"],
      () => this.#recentFailures(),
    );
    r.gauge(
      "vncauthproxy_sessions_active",
      "Sessions live now (waiting for their viewer, authenticating it, or relaying), by console kind, rendezvous and state.",
      ["kind", "rendezvous", "state"],
      () => this.#activeSessions(),
    );
    this.#ended = r.counter(
      "vncauthproxy_sessions_ended_total",
      "Sessions ended, by cause.",
      ["cause"],
    );
    for (const cause of SESSION_END_CAUSES) this.#ended.declare({ cause });
    r.collectedCounter(
      "vncauthproxy_relayed_bytes_total",
      "Bytes relayed since start, live sessions included, by direction.",
      ["direction"],
      () => this.#bytes(),
    );
    this.#setUpSeconds = r.histogram(
      "vncauthproxy_setup_seconds",
      "Time from a control request to its OK reply.",
      FAST_BUCKETS,
    );
    this.#backendSeconds = r.histogram(
      "vncauthproxy_backend_handshake_seconds",
      "Time to connect to and handshake with the VNC server.",
      FAST_BUCKETS,
    );
    this.#viewerAuthSeconds = r.histogram(
      "vncauthproxy_viewer_auth_seconds",
      "Time of a viewer's RFB handshake and authentication.",
      FAST_BUCKETS,
    );
    this.#sessionSeconds = r.histogram(
      "vncauthproxy_session_duration_seconds",
      "Time sessions relayed, from the viewer's ClientInit to the end.",
      SESSION_BUCKETS,
    );
    r.gauge("vncauthproxy_pool_ports_free", "Pool ports free now.", [], () => [[
      {},
      sources.poolFree(),
    ]]);
    r.gauge("vncauthproxy_pool_ports", "Pool ports in all.", [], () => [[{}, sources.poolSize]]);
    r.gauge(
      "vncauthproxy_control_connections_open",
      "Control connections open now.",
      [],
      () => [[{}, sources.controlConnections()]],
    );
    this.#authFailures = r.counter(
      "vncauthproxy_control_auth_failures_total",
      "Control requests refused as authentication failed (wrong, unknown or over the limit).",
    );
    this.#authFailures.declare();
    r.gauge(
      "vncauthproxy_crypt_queue_length",
      "Password checks waiting for a crypt worker.",
      [],
      () => [[{}, sources.cryptQueue()]],
    );
    r.gauge("vncauthproxy_control_users", "Control users loaded.", [], () => [[
      {},
      sources.users(),
    ]]);
    r.gauge("vncauthproxy_draining", "1 while draining after SIGTERM, else 0.", [], () => [[
      {},
      sources.draining() ? 1 : 0,
    ]]);
    const tokenStore = sources.tokenStore;
    if (tokenStore !== undefined) {
      r.gauge(
        "vncauthproxy_token_store_up",
        "1 while the gateway's token store answers, else 0.",
        [],
        () => [[{}, tokenStore() ? 1 : 0]],
      );
    }
    this.#viewersRefused = r.counter(
      "vncauthproxy_viewer_connections_refused_total",
      "Viewer connections closed at a port before any RFB byte, by reason.",
      ["reason"],
    );
    for (const reason of ["client_address", "pending_per_ip"]) {
      this.#viewersRefused.declare({ reason });
    }
    r.gauge(
      "vncauthproxy_process_resident_memory_bytes",
      "Resident memory of the process.",
      [],
      () => [[{}, Deno.memoryUsage().rss]],
    );
    r.gauge("vncauthproxy_process_open_fds", "Open file descriptors.", [], () => openFds());
    r.gauge(
      "vncauthproxy_event_loop_lag_seconds",
      `How late the last ${LAG_SAMPLE_MS} ms timer fired.`,
      [],
      () => [[{}, this.#lagSeconds]],
    );
  }

  /** Starts sampling the event-loop lag (an unreferenced timer); stopped by dispose. */
  startLagSampler(): void {
    if (this.#lagTimer !== undefined) return;
    let expected = performance.now() + LAG_SAMPLE_MS;
    const timer = setInterval(() => {
      const now = performance.now();
      this.#lagSeconds = Math.max(0, now - expected) / 1000;
      expected = now + LAG_SAMPLE_MS;
    }, LAG_SAMPLE_MS);
    Deno.unrefTimer(timer);
    this.#lagTimer = timer;
  }

  /** Stops the lag sampler. */
  [Symbol.dispose](): void {
    clearInterval(this.#lagTimer);
    this.#lagTimer = undefined;
  }

  /** A control request for a forwarding arrived. */
  requested(): void {
    this.#requested.inc();
  }

  /** A forwarding was answered OK, `ms` after its request arrived. */
  setUp(kind: ConsoleType, rendezvous: RendezvousKind, ms: number): void {
    this.#setUp.inc({ kind, rendezvous });
    this.#setUpSeconds.observe(ms / 1000);
  }

  /** A forwarding failed with the reply reason `reason` (mapped to a fixed label). */
  failed(reason: string): void {
    const label = failureReason(reason);
    this.#failed.inc({ reason: label });
    if (label === "authentication_failed") this.#authFailures.inc();
    const minute = Math.floor(this.#now() / 60_000);
    let counts = this.#recent.get(minute);
    if (counts === undefined) {
      counts = new Map();
      this.#recent.set(minute, counts);
      for (const old of this.#recent.keys()) {
        if (old <= minute - RECENT_MINUTES) this.#recent.delete(old);
      }
    }
    counts.set(label, (counts.get(label) ?? 0) + 1);
  }

  /** The VNC server was connected and handshaken in `ms`. */
  backendHandshake(ms: number): void {
    this.#backendSeconds.observe(ms / 1000);
  }

  /** A viewer connection was closed before any RFB byte. */
  viewerRefused(reason: ViewerRefusal): void {
    this.#viewersRefused.inc({ reason });
  }

  /** A session of this kind starts waiting; the returned entry is updated by its observer. */
  sessionWaiting(kind: ConsoleType, rendezvous: RendezvousKind): LiveSession {
    const live: LiveSession = { kind, rendezvous, state: "waiting" };
    this.#live.add(live);
    return live;
  }

  /** The viewer passed its handshake in `ms`. */
  viewerAuthenticated(ms: number): void {
    this.#viewerAuthSeconds.observe(ms / 1000);
  }

  /** A live session ended. */
  sessionEnded(live: LiveSession, end: SessionEnd): void {
    this.#live.delete(live);
    this.#ended.inc({ cause: end.cause });
    this.#endedBytes.viewerToServer += end.viewerToServer;
    this.#endedBytes.serverToViewer += end.serverToViewer;
    if (end.relayMs > 0) this.#sessionSeconds.observe(end.relayMs / 1000);
  }

  *#recentFailures(): Iterable<[Labels, number]> {
    const since = Math.floor(this.#now() / 60_000) - RECENT_MINUTES;
    const totals = new Map<FailureReason, number>(FAILURE_REASONS.map((r) => [r, 0]));
    for (const [minute, counts] of this.#recent) {
      if (minute <= since) continue;
      for (const [reason, n] of counts) totals.set(reason, totals.get(reason)! + n);
    }
    for (const [reason, n] of totals) yield [{ reason }, n];
  }

  *#activeSessions(): Iterable<[Labels, number]> {
    const counts = new Map<string, number>();
    for (const kind of CONSOLE_TYPES) {
      for (const rendezvous of ["port", "token", "password"]) {
        for (const state of ["waiting", "authenticating", "relaying"]) {
          counts.set(`${kind} ${rendezvous} ${state}`, 0);
        }
      }
    }
    for (const live of this.#live) {
      const key = `${live.kind} ${live.rendezvous} ${live.state}`;
      counts.set(key, counts.get(key)! + 1);
    }
    for (const [key, n] of counts) {
      const [kind, rendezvous, state] = key.split(" ") as [string, string, string];
      // A pool port serves one kind; the gateway only WebSocket kinds.
      if (rendezvous !== "port" && kind === "vnc") continue;
      yield [{ kind, rendezvous, state }, n];
    }
  }

  *#bytes(): Iterable<[Labels, number]> {
    let { viewerToServer, serverToViewer } = this.#endedBytes;
    for (const live of this.#live) {
      viewerToServer += live.counters?.aToB ?? 0;
      serverToViewer += live.counters?.bToA ?? 0;
    }
    yield [{ direction: "viewer_to_server" }, viewerToServer];
    yield [{ direction: "server_to_viewer" }, serverToViewer];
  }
}

/**
 * Entries of `/proc/self/fd` (Linux). Deno lets only `--allow-all` read
 * `/proc/self`, which the daemon's permissions do not include: then there
 * is no sample rather than a wrong one.
 */
function openFds(): Iterable<[Labels, number]> {
  try {
    let n = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
    return [[{}, n]];
  } catch {
    return [];
  }
}
