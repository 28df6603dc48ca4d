/**
 * vncap's window (`--vncap-window`): a forwarding's port takes any number
 * of viewers until its `timeout`, as twisted_vncauthproxy did, for panels
 * that rely on it. It is sessions in turn, not a second engine: the window
 * holds the pool port; each session is admitted as usual (its own VNC
 * server connection, handshake done before it listens) and listens on the
 * port; when its viewer arrives, the next session is admitted for the time
 * left. Each viewer proves the password on its own session.
 *
 * Between one viewer's arrival and the next session's listener (a VNC
 * server connection, usually milliseconds) the port does not listen.
 *
 * @module
 */

import { describeError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import type { PortPool } from "../../session/port_pool.ts";
import type { Session } from "../../session/session.ts";
import type { SessionRegistry } from "../../session/session_registry.ts";
import { type AdmissionDeps, admit, type Admitted, type SessionRequest } from "../admission.ts";

/** What a window needs besides admission's. */
export interface WindowDeps extends AdmissionDeps {
  /** Where the later sessions run. */
  readonly sessions: SessionRegistry;
  /** The pool the window's port comes from. */
  readonly vncapPorts: PortPool;
}

/** An open window: its first session (start it once the reply went out). */
export interface Window {
  /** The first session, as {@linkcode admit} gave it. */
  readonly first: Admitted;
  /** The port. */
  readonly port: number;
  /**
   * Starts the first session and the chain after it; the port goes back to
   * the pool when the time is over and no session is waiting.
   */
  start(): void;
  /** The reply never went out: closes the first session and frees the port. */
  abandon(): Promise<void>;
}

/**
 * Takes a port from the vncap pool (the request's `sourcePort` when free)
 * and admits the window's first session on it.
 *
 * @throws {RefusalError} as {@linkcode admit} does; the port is back by then.
 */
export async function openWindow(
  request: SessionRequest,
  logger: Logger,
  deps: WindowDeps,
): Promise<Window> {
  const route = request.route;
  if (route.rendezvous !== "port") throw new TypeError("A window is a pool port");
  const lease = deps.vncapPorts.acquire(route.sourcePort);
  const port = lease.port;
  const endsAt = performance.now() + (request.waitMs ?? deps.config.connectTimeoutMs);
  const forPort = (waitMs: number): SessionRequest => ({
    ...request,
    route: { ...route, sourcePort: port, heldPort: port },
    waitMs,
  });
  let first: Admitted;
  try {
    first = await admit(forPort(endsAt - performance.now()), logger, deps);
  } catch (error) {
    lease.release();
    throw error;
  }
  let viewers = 0;

  /** Admits the next session when `session` got its viewer; else the window is over. */
  function follow(session: Session): void {
    const stop = session.onStateChange((state) => {
      if (state === "waiting") return;
      stop();
      const left = endsAt - performance.now();
      if (state === "closed") {
        // Timed out (or the daemon stops) with nobody: the window is over.
        close();
        return;
      }
      viewers++;
      if (left <= 0 || deps.stopping.aborted) {
        close();
        return;
      }
      admit(forPort(left), logger, deps).then(
        (next) => {
          logger.info(
            `Window on port ${port}: viewer ${viewers + 1} may come for ${
              (left / 1000).toFixed(1)
            } s more`,
          );
          follow(next.session);
          deps.sessions.start(next.session);
        },
        (error) => {
          logger.warn(`Window on port ${port} closes early: ${describeError(error)}`);
          close();
        },
      );
    });
  }

  let closed = false;
  function close(): void {
    if (closed) return;
    closed = true;
    lease.release();
    logger.info(`Window on port ${port} closed after ${viewers} viewer(s)`);
  }

  return {
    first,
    port,
    start() {
      follow(first.session);
      deps.sessions.start(first.session);
    },
    async abandon() {
      await first.session.close();
      close();
    },
  };
}
