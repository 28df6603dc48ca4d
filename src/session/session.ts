/**
 * One session, as a straight line: wait for the viewer at the rendezvous,
 * make it prove its credential, hand its ClientInit to the VNC server
 * (forced shared), relay until either side ends, tear down exactly once and
 * log how it ended. It knows no control protocol: what it runs on is a
 * {@linkcode SessionSpec} and a {@linkcode Rendezvous}.
 *
 * @module
 */

import { describeError, ViewerAuthError } from "../errors.ts";
import type { BufferPool } from "../io/buffer_pool.ts";
import { readU8 } from "../io/byte_reader.ts";
import { isTimeout, startDeadline, withDeadline } from "../io/deadline.ts";
import type { Duplex } from "../io/duplex.ts";
import { relay, type RelayCounters, type RelayResult } from "../io/relay.ts";
import type { Logger } from "../log.ts";
import { authenticateViewer, greetViewerWithoutAuth } from "../rfb/client_handshake.ts";
import type { Rendezvous } from "./rendezvous.ts";
import type { SessionSpec } from "./session_spec.ts";
import type { SessionEndCause, SessionObserver } from "./session_events.ts";

/** What a session needs from the daemon. */
export interface SessionDeps {
  /** The session's logger (prefixed `[C<n>]`). */
  readonly logger: Logger;
  /** Aborted when the daemon stops accepting (SIGTERM): waiting ends. */
  readonly stopping: AbortSignal;
  /** Aborted when the drain time is over: live sessions end. */
  readonly closing: AbortSignal;
  /** Where the relay's bulk buffers come from. @default {the relay's pool} */
  readonly buffers?: BufferPool;
  /** Told of the viewer, the relay and the end (metrics, audit). @default {nobody} */
  readonly observer?: SessionObserver;
  /** Held for the session's life (its place under the session limits); disposed at close. */
  readonly hold?: Disposable;
}

/** Session states, logged on change (noVNC's connection state idea). */
export type SessionState = "waiting" | "authenticating" | "relaying" | "closed";

/** The session-end log's words for how the relay ended. */
const RELAY_OUTCOME: Readonly<Record<RelayResult["endedBy"], string>> = {
  a: "client closed",
  b: "server closed",
  aborted: "daemon stopped",
  idle: "idle timeout",
  "max-time": "max session time",
};

/** The fixed cause of each relay end. */
const RELAY_CAUSE: Readonly<Record<RelayResult["endedBy"], SessionEndCause>> = {
  a: "viewer_closed",
  b: "server_closed",
  aborted: "drained",
  idle: "idle_timeout",
  "max-time": "max_time",
};

/** A session from its rendezvous to its end. */
export class Session {
  readonly #backend: Duplex;
  readonly #limits: SessionSpec["limits"];
  readonly #rendezvous: Rendezvous;
  readonly #deps: SessionDeps;
  /** Dropped once the viewer has proved it: thousands of sessions may be live. */
  #credential: SessionSpec["credential"] | undefined;
  #viewer: Duplex | undefined;
  #state: SessionState = "waiting";
  #closed: Promise<void> | undefined;
  readonly #stateListeners = new Set<(state: SessionState) => void>();
  /** Bytes relayed so far: `aToB` viewer to server, `bToA` server to viewer. */
  readonly counters: RelayCounters = { aToB: 0, bToA: 0 };

  /** Takes ownership of the spec's backend connection and of the rendezvous. */
  constructor(spec: SessionSpec, rendezvous: Rendezvous, deps: SessionDeps) {
    // Not the spec itself: its credential must not live as long as the session.
    this.#backend = spec.backend;
    this.#limits = spec.limits;
    this.#rendezvous = rendezvous;
    this.#deps = deps;
    this.#credential = spec.credential;
  }

  /** The current state. */
  get state(): SessionState {
    return this.#state;
  }

  /**
   * Calls `listener` with each later state, in order (the demo offers a new
   * forwarding once this one is taken or gone); the returned function stops it.
   */
  onStateChange(listener: (state: SessionState) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Waits for the viewer, authenticates it and relays until either side
   * ends; always tears down. Never throws: the outcome is logged.
   */
  async run(): Promise<void> {
    const { logger } = this.#deps;
    const limits = this.#limits;
    const observer = this.#deps.observer;
    const startedAt = new Date();
    const started = performance.now();
    let relayStarted: number | undefined;
    let outcome = "ended";
    let cause: SessionEndCause = "error";
    let reason: string | undefined;
    observer?.waiting();
    try {
      const arrived = await this.#waitForViewer();
      if (typeof arrived === "string") {
        outcome = arrived;
        cause = arrived === "no client" ? "no_viewer" : "drained";
        return;
      }
      const viewer = this.#viewer = arrived.duplex;
      logger.info(`Connection from ${viewer.remoteAddress}`);
      observer?.viewerArrived(viewer.remoteAddress);

      this.#setState("authenticating");
      const authStarted = performance.now();
      const clientInit = await this.#authenticate(viewer, arrived.authenticated);
      if (typeof clientInit === "string") {
        outcome = "client handshake failed";
        cause = "viewer_handshake_failed";
        reason = clientInit;
        return;
      }
      observer?.viewerAuthenticated(performance.now() - authStarted);
      // With QEMU's default policy an exclusive viewer drops every other
      // client of the VM, another session's waiting backend included.
      const shared = limits.allowExclusive ? clientInit : 1;
      {
        const backend = this.#backend;
        using phase = startDeadline(limits.serverWriteMs, this.#deps.closing);
        await withDeadline(backend, phase.signal, () => backend.write(Uint8Array.of(shared)));
      }

      this.#setState("relaying");
      relayStarted = performance.now();
      observer?.relayStarted(this.counters);
      const result = await relay(viewer, this.#backend, {
        signal: this.#deps.closing,
        counters: this.counters,
        idleTimeoutMs: limits.idleTimeoutMs,
        maxDurationMs: limits.maxSessionTimeMs,
        ...(this.#deps.buffers ? { pool: this.#deps.buffers } : {}),
      });
      outcome = RELAY_OUTCOME[result.endedBy];
      cause = RELAY_CAUSE[result.endedBy];
    } catch (error) {
      outcome = `failed: ${describeError(error)}`;
      cause = "error";
      reason = describeError(error);
      logger.error(`Forwarding failed: ${describeError(error)}`);
    } finally {
      await this.close();
      const ended = performance.now();
      observer?.ended({
        cause,
        ...(reason !== undefined ? { reason } : {}),
        ...(this.#viewer ? { viewerAddress: this.#viewer.remoteAddress } : {}),
        startedAt,
        durationMs: ended - started,
        relayMs: relayStarted === undefined ? 0 : ended - relayStarted,
        viewerToServer: this.counters.aToB,
        serverToViewer: this.counters.bToA,
      });
      const seconds = ((ended - started) / 1000).toFixed(1);
      logger.info(
        `Session ended (${outcome}) after ${seconds} s: ` +
          `${this.counters.aToB} bytes client->server, ${this.counters.bToA} bytes server->client` +
          (this.#viewer ? `, client ${this.#viewer.remoteAddress}` : ""),
      );
    }
  }

  /** Waits `--connect-timeout` for the viewer; a string says why none came. */
  async #waitForViewer() {
    const { logger } = this.#deps;
    const { waitMs } = this.#limits;
    logger.info(`Waiting for a client to connect at ${this.#rendezvous.description}`);
    using phase = startDeadline(waitMs, this.#deps.stopping);
    try {
      return await this.#rendezvous.waitForViewer(phase.signal);
    } catch (error) {
      if (isTimeout(error)) {
        logger.info(`Timed out, no connection after ${waitMs / 1000} sec`);
        return "no client";
      }
      logger.info(`No client: ${describeError(error)}`);
      return "stopped before a client came";
    }
  }

  /**
   * Makes the viewer prove its credential within `--client-timeout` (unless
   * the rendezvous already did) and reads its ClientInit; a string (logged,
   * a short reason) when it fails.
   */
  async #authenticate(viewer: Duplex, authenticated: boolean): Promise<number | string> {
    const { logger } = this.#deps;
    const credential = this.#credential;
    this.#credential = undefined;
    using phase = startDeadline(this.#limits.viewerHandshakeMs, this.#deps.closing);
    try {
      return await withDeadline(viewer, phase.signal, async () => {
        if (authenticated) {
          // The rendezvous ran the security handshake (password mode).
        } else if (credential === undefined) {
          // Closed meanwhile: fail closed, never admit without a credential.
          throw new Error("The session is closed");
        } else if (credential.kind === "vnc-password") {
          const version = await authenticateViewer(viewer, credential.password);
          logger.debug(`Client ${viewer.remoteAddress} authenticated with RFB ${version}`);
        } else {
          // The way in was the credential (a single-use token): security None.
          const version = await greetViewerWithoutAuth(viewer);
          logger.debug(`Client ${viewer.remoteAddress} admitted with RFB ${version}`);
        }
        // RFC 6143 §7.3.1: ClientInit is one byte, the shared flag.
        return await readU8(viewer);
      });
    } catch (error) {
      if (error instanceof ViewerAuthError) {
        logger.warn(`Authentication failed for client ${viewer.remoteAddress}`);
        return "authentication failed";
      }
      logger.warn(`Client ${viewer.remoteAddress} handshake failed: ${describeError(error)}`);
      return isTimeout(error) ? "handshake timed out" : "handshake failed";
    }
  }

  /** Closes everything the session holds and frees its rendezvous; idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#setState("closed");
      this.#credential = undefined;
      this.#viewer?.close();
      this.#backend.close();
      try {
        await this.#rendezvous.close();
      } finally {
        this.#deps.hold?.[Symbol.dispose]();
      }
    })();
    return this.#closed;
  }

  #setState(next: SessionState): void {
    if (this.#state === next) return;
    this.#deps.logger.debug(`State ${this.#state} -> ${next}`);
    this.#state = next;
    for (const listener of [...this.#stateListeners]) listener(next);
  }
}
