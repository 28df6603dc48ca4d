/**
 * `vncauthproxy demo`: the whole flow on one machine, in one command. It
 * runs the daemon in this process on loopback (the same `runDaemon` as
 * `serve`, with one `Config`), a throwaway control user in a users file in
 * a temporary directory, and the built-in test card (or `--backend`); then
 * asks for forwardings over the control socket as a panel would, and
 * prints each one: a noVNC URL through the gateway, and a plain-VNC
 * address with its one-time password. When a forwarding is used or
 * expires (its session's state, seen in process), it asks for a new one.
 * SIGINT/SIGTERM stop everything and remove what it created.
 *
 * Standard output is meant for people and for scripts: one line per fact,
 * `key: value` or `key N: value` (N numbers a request and what came of it);
 * see {@linkcode demoHelp}. The daemon's log goes to standard error.
 *
 * @module
 */

import { hashPassword } from "../auth/sha_crypt.ts";
import { serializeUsersFile, writeUsersFileAtomic } from "../auth/users_file.ts";
import {
  type Config,
  DEFAULT_CONFIG,
  type HostPort,
  parseHostPort,
  resolveConfig,
} from "../config.ts";
import {
  type ForwardingReply,
  type ForwardingRequest,
  forwardingRequestBody,
  requestForwarding,
} from "../control/snf/control_client.ts";
import { runDaemon, StartupError } from "../daemon.ts";
import { describeError, UsageError } from "../errors.ts";
import { pause, raceDeadline, startDeadline } from "../io/deadline.ts";
import { formatHostPort } from "../io/duplex.ts";
import { createLogger } from "../log.ts";
import type { Session, SessionState } from "../session/session.ts";
import { startTestCardServer, type TestCardServer } from "../testcard/test_card_server.ts";
import { formatOptionsHelp, type OptionSpec, parseOptions } from "./option_parser.ts";
import type { CliIo } from "./cli_io.ts";

/** Debian's noVNC, served when `--web` is not given and it is installed. */
export const DEBIAN_NOVNC_DIR = "/usr/share/novnc";

/** What the printed control requests show instead of a secret. */
export const MASK = "********";

const DEFAULT_TTL_SECONDS = 60;
/** Pause before asking again after a refused or failed request. */
const RETRY_MS = 5_000;
/** Bound on the wait for the session of an OK reply (it is there already). */
const SESSION_START_MS = 5_000;

/** The demo's options. */
export const DEMO_OPTIONS: readonly OptionSpec[] = [
  { long: "help", short: "h", kind: "flag", help: "show this help and exit" },
  {
    long: "backend",
    kind: "string",
    metavar: "HOST:PORT",
    help: "a real VNC server (security None) instead of the built-in test card",
  },
  {
    long: "web",
    kind: "string",
    metavar: "DIR",
    help: `the noVNC tree the gateway serves [${DEBIAN_NOVNC_DIR} when present]`,
  },
  {
    long: "ttl",
    kind: "float",
    metavar: "N",
    help: `seconds each forwarding waits for its viewer [${DEFAULT_TTL_SECONDS}]`,
  },
  {
    long: "listen-port",
    kind: "int",
    metavar: "PORT",
    help: "control socket port on 127.0.0.1, 0 = any free one [0]",
  },
  {
    long: "gateway-port",
    kind: "int",
    metavar: "PORT",
    help: "gateway port on 127.0.0.1, 0 = any free one [0]",
  },
  {
    long: "min-port",
    kind: "int",
    metavar: "MIN_PORT",
    help: `first port of the pool [${DEFAULT_CONFIG.minPort}]`,
  },
  {
    long: "max-port",
    kind: "int",
    metavar: "MAX_PORT",
    help: `last port of the pool [${DEFAULT_CONFIG.maxPort}]`,
  },
  { long: "debug", short: "d", kind: "flag", help: "log debug messages" },
];

/** Help text of the demo. */
export function demoHelp(): string {
  return [
    "Usage: vncauthproxy demo [options]",
    "",
    "Shows the whole flow on this machine: runs the daemon on 127.0.0.1 with a",
    "throwaway control user, a built-in test-card VNC server, asks for forwardings",
    "over the control socket as a panel does, and prints where to connect. Each",
    "forwarding works once; a new one is printed when it is used or expires.",
    "Ctrl-C stops everything and removes what the demo created.",
    "",
    "Options:",
    formatOptionsHelp(DEMO_OPTIONS),
    "",
    "Standard output, one line each (N numbers a request and its outcome):",
    "  backend: HOST:PORT (test card)       the VNC server the forwardings go to",
    "  control: HOST:PORT user USER          the control socket and its throwaway user",
    "  files: DIR                            the temporary directory (users file)",
    "  request N: {JSON}                     the control request sent, secrets masked",
    "  browser N: URL                        noVNC through the gateway (works once)",
    "  websocket N: URL                      the same without noVNC: for a WebSocket viewer",
    "  vnc N: HOST:PORT password PASSWORD    for a desktop VNC viewer (works once)",
    "  used N: KIND | expired N: KIND        what became of forwarding N",
    "  failed N: REASON                      request N was refused; retried",
    "  stopped: removed DIR                  after Ctrl-C, once everything is gone",
    "The daemon's log goes to standard error.",
    "",
  ].join("\n");
}

/** The demo's settings, from its command line. */
export interface DemoSettings {
  /** A real VNC server, or undefined for the test card. */
  readonly backend: HostPort | undefined;
  /** The noVNC tree, or undefined when there is none. */
  readonly webDir: string | undefined;
  /** How long each forwarding waits for its viewer. */
  readonly ttlMs: number;
  /** Control port (0 = any). */
  readonly listenPort: number;
  /** Gateway port (0 = any). */
  readonly gatewayPort: number;
  /** Pool. */
  readonly minPort: number;
  /** Pool. */
  readonly maxPort: number;
  /** Log at DEBUG. */
  readonly debug: boolean;
}

/**
 * Turns the demo's command line into its settings.
 *
 * @throws {UsageError} on bad flags or values.
 */
export function parseDemoArgs(args: readonly string[]): DemoSettings | "help" {
  const { values, positionals } = parseOptions(DEMO_OPTIONS, args);
  if (values.help) return "help";
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const ttl = (values.ttl as number | undefined) ?? DEFAULT_TTL_SECONDS;
  if (!(ttl > 0) || ttl > 86_400) {
    throw new UsageError("--ttl must be more than 0 and at most 86400 seconds");
  }
  let backend: HostPort | undefined;
  if (values.backend !== undefined) {
    try {
      backend = parseHostPort(values.backend as string);
    } catch (error) {
      throw new UsageError(`--backend: ${(error as Error).message}`, { cause: error });
    }
  }
  const web = values.web as string | undefined;
  return {
    backend,
    webDir: web ?? (isFile(`${DEBIAN_NOVNC_DIR}/vnc.html`) ? DEBIAN_NOVNC_DIR : undefined),
    ttlMs: Math.round(ttl * 1000),
    listenPort: (values["listen-port"] as number | undefined) ?? 0,
    gatewayPort: (values["gateway-port"] as number | undefined) ?? 0,
    minPort: (values["min-port"] as number | undefined) ?? DEFAULT_CONFIG.minPort,
    maxPort: (values["max-port"] as number | undefined) ?? DEFAULT_CONFIG.maxPort,
    debug: values.debug === true,
  };
}

/** Runs the demo until SIGINT/SIGTERM; returns the exit code. */
export async function runDemoCommand(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseDemoArgs(args);
  if (parsed === "help") {
    io.stdout(demoHelp());
    return 0;
  }
  const settings = parsed;
  const logger = createLogger({ level: settings.debug ? "debug" : "info" });
  const print = (line: string) => io.stdout(`${line}\n`);

  // Our own handlers from the first moment: a Ctrl-C while the daemon is
  // still starting must clean up too (the daemon adds its own once it runs).
  const stopping = new AbortController();
  const onSignal = () => stopping.abort(new Error("Stopped by a signal"));
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, onSignal);

  const files = await Deno.makeTempDir({ prefix: "vncauthproxy-demo-" });
  let card: TestCardServer | undefined;
  try {
    const user = `demo-${randomText(4, LOWER_ALPHANUMERIC)}`;
    const password = randomText(24, ALPHANUMERIC);
    const authFile = `${files}/users`;
    await writeUsersFileAtomic(
      authFile,
      serializeUsersFile(new Map([[user, hashPassword(password)]])),
    );

    let backend: HostPort;
    if (settings.backend === undefined) {
      card = startTestCardServer({
        hostname: "127.0.0.1",
        logger: logger.child("[test card]"),
        // The daemon holds the card's connection until the viewer comes
        // (the TTL) and has made it through its handshake (30 s at most).
        clientInitTimeoutMs: settings.ttlMs + 60_000,
      });
      backend = { host: card.hostname, port: card.port };
      print(`backend: ${formatHostPort(backend.host, backend.port)} (test card)`);
    } else {
      backend = settings.backend;
      print(`backend: ${formatHostPort(backend.host, backend.port)}`);
    }

    let config: Config;
    try {
      config = resolveConfig({
        debug: settings.debug,
        listenAddress: "127.0.0.1",
        listenPort: settings.listenPort,
        proxyListenAddress: "127.0.0.1",
        minPort: settings.minPort,
        maxPort: settings.maxPort,
        authFile,
        connectTimeoutMs: settings.ttlMs,
        // Ctrl-C means now: live sessions are closed at once.
        drainTimeoutMs: 0,
        cryptWorkers: 1,
        gatewayListen: { host: "127.0.0.1", port: settings.gatewayPort },
        gatewayPlain: true,
        webDir: settings.webDir,
        maxTokenTtlMs: Math.max(settings.ttlMs, DEFAULT_CONFIG.maxTokenTtlMs),
      });
    } catch (error) {
      if (error instanceof RangeError) throw new UsageError(error.message, { cause: error });
      throw error;
    }

    const watcher = new SessionWatcher();
    const ready = Promise.withResolvers<readonly string[]>();
    const daemon = runDaemon(config, {
      logger,
      stop: new Promise((resolve) => {
        if (stopping.signal.aborted) resolve();
        else stopping.signal.addEventListener("abort", () => resolve(), { once: true });
      }),
      onReady: ready.resolve,
      onSessionStart: (session) => watcher.started(session),
    });
    let offers: Promise<void> | undefined;
    try {
      const addresses = await Promise.race([ready.promise, daemon.then(() => undefined)]);
      if (addresses !== undefined) {
        const control = addresses[0]!;
        print(`control: ${control} user ${user}`);
        print(`files: ${files}`);
        if (settings.webDir === undefined) {
          print(`note: no noVNC found (${DEBIAN_NOVNC_DIR}); pass --web DIR for a browser URL`);
        }
        const panel = new DemoPanel({
          control: parseHostPort(control),
          user,
          password,
          backend,
          ttlSeconds: settings.ttlMs / 1000,
          print,
          watcher,
          signal: stopping.signal,
        });
        offers = Promise.all([panel.keepOffering("browser"), panel.keepOffering("vnc")]).then(
          () => {},
          (error) => {
            // A bug, not a refusal (those are printed and retried): stop cleanly.
            logger.error(`The demo's requests failed: ${describeError(error)}`);
            stopping.abort(error);
          },
        );
      }
      await daemon;
    } catch (error) {
      if (error instanceof StartupError) {
        logger.error(error.message);
        return 1;
      }
      throw error;
    } finally {
      stopping.abort(new Error("The demo is stopping"));
      await daemon.catch(() => {});
      await offers;
    }
    return 0;
  } finally {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.removeSignalListener(signal, onSignal);
    }
    await card?.close();
    await Deno.remove(files, { recursive: true });
    print(`stopped: removed ${files}`);
  }
}

/** What a panel asks for: a browser console through the gateway, or a plain VNC port. */
type OfferKind = "browser" | "vnc";

/**
 * Hands each session the daemon starts to the request that caused it. The
 * demo's requests are the only ones its daemon accepts (a random control
 * password on loopback) and are sent one at a time, and the daemon starts
 * a session before its client sees the end of the reply, so the session
 * started during a request is that request's.
 */
class SessionWatcher {
  #waiting: PromiseWithResolvers<Session> | undefined;

  /** Called by the daemon for every session it starts. */
  started(session: Session): void {
    this.#waiting?.resolve(session);
    this.#waiting = undefined;
  }

  /** Expects the next started session; call before sending the request. */
  expect(): Promise<Session> {
    const waiting = this.#waiting = Promise.withResolvers<Session>();
    return waiting.promise;
  }

  /** Stops expecting (the request failed). */
  cancel(): void {
    this.#waiting = undefined;
  }
}

interface DemoPanelOptions {
  readonly control: HostPort;
  readonly user: string;
  readonly password: string;
  readonly backend: HostPort;
  readonly ttlSeconds: number;
  readonly print: (line: string) => void;
  readonly watcher: SessionWatcher;
  readonly signal: AbortSignal;
}

/** The demo's stand-in for a cloud panel: asks for forwardings and prints them. */
class DemoPanel {
  readonly #options: DemoPanelOptions;
  #requests = 0;
  /** Requests go one at a time (see {@linkcode SessionWatcher}). */
  #turn: Promise<void> = Promise.resolve();

  constructor(options: DemoPanelOptions) {
    this.#options = options;
  }

  /** Offers `kind` forwardings, one after the other, until the demo stops. */
  async keepOffering(kind: OfferKind): Promise<void> {
    const { signal, print } = this.#options;
    while (!signal.aborted) {
      const offered = await this.#offer(kind);
      if (offered === undefined) {
        await pause(RETRY_MS, signal);
        continue;
      }
      const state = await nextState(offered.session, signal);
      if (signal.aborted) return;
      print(`${state === "closed" ? "expired" : "used"} ${offered.n}: ${kind}`);
    }
  }

  /** One request; prints it and its outcome. Undefined when it failed. */
  async #offer(kind: OfferKind): Promise<{ n: number; session: Session } | undefined> {
    const previous = this.#turn;
    const done = Promise.withResolvers<void>();
    this.#turn = done.promise;
    await previous;
    try {
      return await this.#request(kind);
    } finally {
      done.resolve();
    }
  }

  async #request(kind: OfferKind): Promise<{ n: number; session: Session } | undefined> {
    const { control, backend, print, watcher, signal } = this.#options;
    if (signal.aborted) return undefined;
    const n = ++this.#requests;
    const vncPassword = kind === "vnc" ? randomText(8, ALPHANUMERIC) : undefined;
    const request: ForwardingRequest = {
      destinationAddress: backend.host,
      destinationPort: backend.port,
      authUser: this.#options.user,
      authPassword: this.#options.password,
      ...(vncPassword === undefined
        ? { type: "vnc-ws", gateway: true, ttl: this.#options.ttlSeconds }
        : { type: "vnc", password: vncPassword }),
    };
    print(`request ${n}: ${maskedRequestText(request)}`);
    const session = watcher.expect();
    let reply: ForwardingReply;
    try {
      reply = await requestForwarding(request, {
        server: control.host,
        port: control.port,
        timeoutMs: 30_000,
      });
    } catch (error) {
      watcher.cancel();
      if (!signal.aborted) print(`failed ${n}: ${describeError(error)}`);
      return undefined;
    }
    if (reply.status !== "OK") {
      watcher.cancel();
      print(`failed ${n}: ${reply.reason ?? "no reason given"}`);
      return undefined;
    }
    const address = formatHostPort(reply.proxy_address ?? "127.0.0.1", reply.source_port);
    if (vncPassword !== undefined) {
      print(`vnc ${n}: ${address} password ${vncPassword}`);
    } else if (reply.url !== undefined) {
      print(`browser ${n}: ${reply.url}`);
    } else {
      print(`websocket ${n}: ws://${address}/${reply.path ?? ""}`);
    }
    // Started before the reply's end reached us; the bound only guards that claim.
    using bound = startDeadline(SESSION_START_MS, signal);
    const started = await raceDeadline(bound.signal, session).catch(() => undefined);
    if (started === undefined) {
      watcher.cancel();
      if (!signal.aborted) print(`failed ${n}: the daemon started no session for the reply`);
      return undefined;
    }
    return { n, session: started };
  }
}

/** The request as JSON, the way it is sent, with every secret masked. */
export function maskedRequestText(request: ForwardingRequest): string {
  const body = forwardingRequestBody(request);
  for (const secret of ["password", "auth_password", "destination_password"]) {
    if (body[secret] !== undefined) body[secret] = MASK;
  }
  return JSON.stringify(body);
}

/** Resolves with the session's first state after `waiting` (or `closed` when stopping). */
function nextState(session: Session, signal: AbortSignal): Promise<SessionState> {
  return new Promise((resolve) => {
    const done = (state: SessionState) => {
      stop();
      signal.removeEventListener("abort", onAbort);
      resolve(state);
    };
    const onAbort = () => done("closed");
    const stop = session.onStateChange((state) => {
      if (state !== "waiting") done(state);
    });
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort();
    else if (session.state !== "waiting") done(session.state);
  });
}

const ALPHANUMERIC = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
const LOWER_ALPHANUMERIC = "abcdefghijkmnopqrstuvwxyz23456789";

/** `length` characters of `alphabet`, from the system's random source, unbiased. */
function randomText(length: number, alphabet: string): string {
  let text = "";
  const limit = 256 - (256 % alphabet.length);
  while (text.length < length) {
    for (const byte of crypto.getRandomValues(new Uint8Array(length * 2))) {
      if (byte < limit && text.length < length) text += alphabet[byte % alphabet.length];
    }
  }
  return text;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}
