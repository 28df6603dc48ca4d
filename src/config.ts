/**
 * The daemon's configuration: one frozen object, built once by
 * {@linkcode resolveConfig} from the command line and passed down.
 *
 * @module
 */

import { parseCidr } from "./io/cidr.ts";

/** Console types a forwarding can be requested for: plain RFB, RFB over ws, over wss. */
export type ConsoleType = "vnc" | "vnc-ws" | "vnc-wss";

/** Every console type, in the order documented. */
export const CONSOLE_TYPES: readonly ConsoleType[] = [
  "vnc",
  "vnc-ws",
  "vnc-wss",
];

/** The daemon's settings. Times are in milliseconds. */
export interface Config {
  /** Log at DEBUG. */
  readonly debug: boolean;
  /** Extra log file, reopened on SIGHUP. */
  readonly logFile: string | undefined;
  /** PID file. */
  readonly pidFile: string | undefined;
  /** Control socket address (`*` = all). */
  readonly listenAddress: string;
  /** Control socket port. */
  readonly listenPort: number;
  /** Where forwarded ports listen (`*` = all IPv4 and IPv6). */
  readonly proxyListenAddress: string;
  /** First port of the pool. */
  readonly minPort: number;
  /** Last port of the pool (inclusive). */
  readonly maxPort: number;
  /** How long a forwarding waits for its viewer. */
  readonly connectTimeoutMs: number;
  /** Budget for connecting to and handshaking with the VNC server. */
  readonly serverTimeoutMs: number;
  /** Rounds of connection attempts to the VNC server. */
  readonly connectRetries: number;
  /** Pause between rounds. */
  readonly retryWaitMs: number;
  /** TLS on the control socket. */
  readonly enableSsl: boolean;
  /** PEM certificate (control TLS and vnc-wss). */
  readonly certFile: string;
  /** PEM private key (control TLS and vnc-wss). */
  readonly keyFile: string;
  /** Control users file. */
  readonly authFile: string;
  /** Pass the viewer's ClientInit shared flag unchanged (else forced to shared). */
  readonly allowExclusive: boolean;
  /** Deadline for a viewer's whole RFB handshake. */
  readonly clientTimeoutMs: number;
  /** Deadline for reading one control request. */
  readonly controlTimeoutMs: number;
  /** Largest control request accepted, in bytes. */
  readonly controlMaxBytes: number;
  /**
   * Control connections handled at once. At the cap, the one idle longest
   * without a complete request is dropped for the newcomer; only when every
   * one is being answered is the newcomer refused (`server busy`).
   */
  readonly maxControlConnections: number;
  /**
   * Connections per `vnc-ws`/`vnc-wss` port still in their WebSocket
   * handshake; at the cap the one idle longest is dropped for the newcomer.
   */
  readonly maxWsHandshakes: number;
  /** Grace time for live sessions at SIGTERM before they are closed. */
  readonly drainTimeoutMs: number;
  /** Time a freed pool port rests before it is preferred again. */
  readonly portCooldownMs: number;
  /** WebSocket ping interval; 0 disables pings. */
  readonly wsPingIntervalMs: number;
  /** A session with no bytes either way for this long ends; 0 = never. */
  readonly idleTimeoutMs: number;
  /** A session ends this long after its viewer authenticated; 0 = never. */
  readonly maxSessionTimeMs: number;
  /** Workers that run password checks (SHA-crypt) off the event loop. */
  readonly cryptWorkers: number;
  /** Password checks waiting for a worker; one more is answered `server busy`. */
  readonly cryptQueueLimit: number;
  /** Failed control logins a second, per source address and per user name; 0 = no limit. */
  readonly authFailLimit: number;
  /** Largest `rounds=` a users-file hash may have. */
  readonly maxCryptRounds: number;
  /** The gateway port: one port for every browser console; off when undefined. */
  readonly gatewayListen: HostPort | undefined;
  /** The gateway speaks plain HTTP (a TLS-terminating reverse proxy is in front). */
  readonly gatewayPlain: boolean;
  /** Address ranges whose `X-Forwarded-For` / `-Proto` the gateway believes. */
  readonly trustedProxies: readonly string[];
  /** What replies name as the gateway (`https://console.example:8443`); default: FQDN and port. */
  readonly gatewayPublicUrl: string | undefined;
  /** snf requests of the gateway's own WebSocket type go through the gateway (password mode). */
  readonly gatewaySnf: boolean;
  /** Origins a browser page must come from (`scheme://host[:port]`); unset = any. */
  readonly allowedOrigins: readonly string[] | undefined;
  /** A static noVNC tree the gateway serves. */
  readonly webDir: string | undefined;
  /** Longest life of a gateway token. */
  readonly maxTokenTtlMs: number;
  /** Gateway connections before their request is complete, at once. */
  readonly maxGatewayConnections: number;
  /**
   * Where gateway tokens live: `redis://[user:pass@]HOST:PORT/DB`,
   * `rediss://…` or `unix:/path` (shared by instances); unset = in this process.
   */
  readonly tokenStore: string | undefined;
  /** The key the instances sharing a token store seal its entries with. */
  readonly tokenStoreKeyFile: string | undefined;
  /** PEM CA a `rediss://` token store's certificate must chain to; default: system roots. */
  readonly redisCaFile: string | undefined;
  /** Directories whose Unix sockets forwardings may reach (`--unix-backend-dir`); none = no Unix socket. */
  readonly unixBackendDirs: readonly string[];
  /** PEM CA the VNC servers' certificates must chain to (`--backend-ca`); default: system roots. */
  readonly backendCaFile: string | undefined;
  /** PEM client certificate shown to VNC servers over TLS (`--backend-cert`). */
  readonly backendCertFile: string | undefined;
  /** Its PEM private key (`--backend-key`). */
  readonly backendKeyFile: string | undefined;
  /** Anonymous-DH VeNCrypt sub-types may be chosen (`--backend-allow-anonymous-tls`). */
  readonly backendAllowAnonymousTls: boolean;
  /** Address ranges forwardings may reach (`--backend-allow`); empty = any. */
  readonly backendAllow: readonly string[];
  /** Address ranges forwardings may not reach (`--backend-deny`); wins over the allow list. */
  readonly backendDeny: readonly string[];
  /** Free relay buffer bytes kept for reuse after traffic calms down. */
  readonly relayBufferIdleBytes: number;
  /** Relay buffer bytes lent out at once before sessions get a fair share of them. */
  readonly relayBufferLentBytes: number;

  // Operations (metrics, health, logs, limits).
  /** `--log-format`: snf's text lines or JSON lines. */
  readonly logFormat: "text" | "json";
  /** `--audit-log`: a file of its own for the audit lines, reopened on SIGHUP. */
  readonly auditLogFile: string | undefined;
  /** `--metrics-listen`: `/metrics`, `/healthz`, `/readyz`; off when undefined. */
  readonly metricsListen: HostPort | undefined;
  /** `--metrics-allow`: address ranges that may scrape (loopback always may). */
  readonly metricsAllow: readonly string[];
  /** `--max-sessions`: sessions live and pending together; 0 = no limit. */
  readonly maxSessions: number;
  /** `--max-sessions-per-user`: per control user; 0 = no limit. */
  readonly maxSessionsPerUser: number;
  /** `--max-sessions-per-backend`: per VNC server `host:port`; 0 = no limit. */
  readonly maxSessionsPerBackend: number;
  /** `--max-pending-per-viewer-ip`: viewer connections in their handshake per address; 0 = no limit. */
  readonly maxPendingPerViewerIp: number;
  /** `--rate-limit`: control requests a second per source address and per user; 0 = no limit. */
  readonly rateLimit: number;

  // The vncap control protocol (twisted_vncauthproxy's), beside snf's.
  /** `--vncap-listen`: TCP `ADDR:PORT` or a Unix socket path; off when undefined. */
  readonly vncapListen: VncapListen | undefined;
  /** `--vncap-allow`: address ranges that may send vncap requests besides loopback. */
  readonly vncapAllow: readonly string[];
  /** First port of the vncap pool (`--vncap-min-port`). */
  readonly vncapMinPort: number;
  /** Last port of the vncap pool, inclusive (`--vncap-max-port`). */
  readonly vncapMaxPort: number;
  /** PEM certificate of vncap `tls` forwardings; default `keys/vncap.crt` when it exists. */
  readonly vncapCertFile: string | undefined;
  /** Its PEM private key; default `keys/vncap.key` when it exists. */
  readonly vncapKeyFile: string | undefined;
  /** vncap's window: any number of viewers until the forwarding's timeout (else one-shot). */
  readonly vncapWindow: boolean;
}

/** Where the vncap control socket listens: TCP, or a Unix socket (mode 0660). */
export type VncapListen =
  | { readonly transport: "tcp"; readonly host: string; readonly port: number }
  | { readonly transport: "unix"; readonly path: string };

/**
 * Parses `--vncap-listen`: `ADDR:PORT` or `unix:/abs/path`.
 *
 * @throws {RangeError} for anything else.
 */
export function parseVncapListen(text: string): VncapListen {
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    if (!path.startsWith("/")) {
      throw new RangeError(`--vncap-listen unix: needs an absolute path, got "${text}"`);
    }
    return { transport: "unix", path };
  }
  return { transport: "tcp", ...parseHostPort(text) };
}

/** A listen address and port (`--gateway-listen`). */
export interface HostPort {
  /** Address: a literal (no brackets), a host name or `*`. */
  readonly host: string;
  /** TCP port (0 picks one). */
  readonly port: number;
}

/**
 * Parses `ADDR:PORT`, `[v6]:PORT` or `*:PORT`.
 *
 * @throws {RangeError} for anything else.
 */
export function parseHostPort(text: string): HostPort {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || port > 65535) {
    throw new RangeError(`Expected ADDR:PORT, got "${text}"`);
  }
  return { host: match[1] ?? match[2]!, port };
}

/** snf-vncauthproxy's defaults, plus ours for the settings it lacks. */
export const DEFAULT_CONFIG: Config = Object.freeze({
  debug: false,
  logFile: undefined,
  pidFile: undefined,
  listenAddress: "127.0.0.1",
  listenPort: 24999,
  proxyListenAddress: "*",
  minPort: 25000,
  maxPort: 30000,
  connectTimeoutMs: 30_000,
  serverTimeoutMs: 60_000,
  connectRetries: 3,
  retryWaitMs: 100,
  enableSsl: false,
  certFile: "/var/lib/vncauthproxy/cert.pem",
  keyFile: "/var/lib/vncauthproxy/key.pem",
  authFile: "/var/lib/vncauthproxy/users",
  allowExclusive: false,
  clientTimeoutMs: 30_000,
  controlTimeoutMs: 10_000,
  controlMaxBytes: 64 * 1024,
  maxControlConnections: 256,
  maxWsHandshakes: 64,
  drainTimeoutMs: 5_000,
  portCooldownMs: 2_000,
  wsPingIntervalMs: 0,
  idleTimeoutMs: 0,
  maxSessionTimeMs: 0,
  // One core is left to the event loop; more than 4 workers only add memory
  // (a V8 isolate each, ~20-30 MB of RSS while running) for checks the
  // panel's repeated credentials skip (UserDb's cache).
  cryptWorkers: Math.max(1, Math.min(4, (navigator.hardwareConcurrency ?? 2) - 1)),
  cryptQueueLimit: 64,
  // A panel mistypes rarely; 5 a second (a burst of 10) keeps a guessing
  // client to a few hundred guesses a minute and well under one core.
  authFailLimit: 5,
  // About 100 ms of SHA-512 on a shared 2-core machine (4-5 µs a round);
  // the default 5000 rounds is ~15-20 ms.
  maxCryptRounds: 20_000,
  gatewayListen: undefined,
  gatewayPlain: false,
  trustedProxies: [],
  gatewayPublicUrl: undefined,
  gatewaySnf: false,
  allowedOrigins: undefined,
  webDir: undefined,
  maxTokenTtlMs: 300_000,
  maxGatewayConnections: 1024,
  tokenStore: undefined,
  tokenStoreKeyFile: undefined,
  redisCaFile: undefined,
  unixBackendDirs: [],
  backendCaFile: undefined,
  backendCertFile: undefined,
  backendKeyFile: undefined,
  backendAllowAnonymousTls: false,
  backendAllow: [],
  backendDeny: [],
  relayBufferIdleBytes: 4 * 1024 * 1024,
  // 5,000 sessions streaming at once still read 64 KiB each (issue 16).
  relayBufferLentBytes: 320 * 1024 * 1024,
  logFormat: "text",
  auditLogFile: undefined,
  metricsListen: undefined,
  metricsAllow: [],
  maxSessions: 0,
  maxSessionsPerUser: 0,
  maxSessionsPerBackend: 0,
  maxPendingPerViewerIp: 0,
  rateLimit: 0,
  vncapListen: undefined,
  vncapAllow: [],
  vncapMinPort: 5800,
  vncapMaxPort: 5899,
  vncapCertFile: undefined,
  vncapKeyFile: undefined,
  vncapWindow: false,
});

/**
 * Builds the frozen configuration from `overrides` on top of the defaults.
 *
 * @throws {RangeError} when a value is out of range (ports, times, pool).
 */
export function resolveConfig(overrides: Partial<Config> = {}): Config {
  const config: Config = { ...DEFAULT_CONFIG, ...withoutUndefined(overrides) };
  checkPort("--listen-port", config.listenPort, 0);
  checkPort("--min-port", config.minPort, 1);
  checkPort("--max-port", config.maxPort, 1);
  if (config.minPort > config.maxPort) {
    throw new RangeError(
      `--min-port ${config.minPort} is greater than --max-port ${config.maxPort}`,
    );
  }
  for (
    const [flag, value] of [
      ["--connect-timeout", config.connectTimeoutMs],
      ["--server-timeout", config.serverTimeoutMs],
      ["--client-timeout", config.clientTimeoutMs],
      ["--control-timeout", config.controlTimeoutMs],
    ] as const
  ) {
    if (!(value > 0) || !Number.isFinite(value)) {
      throw new RangeError(`${flag} must be a positive number of seconds`);
    }
  }
  for (
    const [flag, value] of [
      ["--retry-wait", config.retryWaitMs],
      ["--drain-timeout", config.drainTimeoutMs],
      ["--port-cooldown", config.portCooldownMs],
      ["--ws-ping-interval", config.wsPingIntervalMs],
      ["--idle-timeout", config.idleTimeoutMs],
      ["--max-session-time", config.maxSessionTimeMs],
      ["relayBufferIdleBytes", config.relayBufferIdleBytes],
      ["relayBufferLentBytes", config.relayBufferLentBytes],
    ] as const
  ) {
    if (!(value >= 0) || !Number.isFinite(value)) {
      throw new RangeError(`${flag} must not be negative`);
    }
  }
  if (!Number.isInteger(config.connectRetries) || config.connectRetries < 1) {
    throw new RangeError("--connect-retries must be at least 1");
  }
  if (
    !Number.isInteger(config.maxControlConnections) ||
    config.maxControlConnections < 1
  ) {
    throw new RangeError("--max-control-connections must be at least 1");
  }
  if (!Number.isInteger(config.maxWsHandshakes) || config.maxWsHandshakes < 1) {
    throw new RangeError("--max-ws-handshakes must be at least 1");
  }
  if (!Number.isInteger(config.cryptWorkers) || config.cryptWorkers < 1) {
    throw new RangeError("--crypt-workers must be at least 1");
  }
  if (!Number.isInteger(config.cryptQueueLimit) || config.cryptQueueLimit < 0) {
    throw new RangeError("--crypt-queue must not be negative");
  }
  if (!(config.authFailLimit >= 0) || !Number.isFinite(config.authFailLimit)) {
    throw new RangeError("--auth-fail-limit must not be negative");
  }
  if (
    !Number.isInteger(config.maxCryptRounds) || config.maxCryptRounds < 1000 ||
    config.maxCryptRounds > 999_999_999
  ) {
    throw new RangeError("--max-crypt-rounds must be an integer from 1000 to 999999999");
  }
  if (!(config.maxTokenTtlMs > 0) || !Number.isFinite(config.maxTokenTtlMs)) {
    throw new RangeError("--max-token-ttl must be a positive number of seconds");
  }
  if (!Number.isInteger(config.maxGatewayConnections) || config.maxGatewayConnections < 1) {
    throw new RangeError("--max-gateway-connections must be at least 1");
  }
  if (config.gatewayListen === undefined) {
    // A security option that is set but would do nothing is a mistake: say so.
    for (
      const [flag, set] of [
        ["--gateway-plain", config.gatewayPlain],
        ["--gateway-snf", config.gatewaySnf],
        ["--gateway-public-url", config.gatewayPublicUrl !== undefined],
        ["--trusted-proxy", config.trustedProxies.length > 0],
        ["--web", config.webDir !== undefined],
        ["--token-store", config.tokenStore !== undefined],
      ] as const
    ) {
      if (set) throw new RangeError(`${flag} needs --gateway-listen`);
    }
  }
  if (config.tokenStore !== undefined && config.tokenStoreKeyFile === undefined) {
    throw new RangeError("--token-store needs --token-store-key-file (the instances' shared key)");
  }
  if (config.tokenStore === undefined && config.tokenStoreKeyFile !== undefined) {
    throw new RangeError("--token-store-key-file needs --token-store");
  }
  if (config.redisCaFile !== undefined && !config.tokenStore?.startsWith("rediss://")) {
    throw new RangeError("--redis-ca needs a rediss:// --token-store");
  }
  if (config.trustedProxies.length > 0 && !config.gatewayPlain) {
    throw new RangeError("--trusted-proxy needs --gateway-plain (a proxy in front speaks TLS)");
  }
  if (
    config.gatewayPublicUrl !== undefined &&
    !/^https?:\/\/[^/?#]+\/?$/.test(config.gatewayPublicUrl)
  ) {
    throw new RangeError("--gateway-public-url must be http(s)://host[:port]");
  }
  for (const dir of config.unixBackendDirs) {
    if (!dir.startsWith("/")) {
      throw new RangeError(`--unix-backend-dir must be an absolute path, got "${dir}"`);
    }
  }
  if ((config.backendCertFile === undefined) !== (config.backendKeyFile === undefined)) {
    throw new RangeError("--backend-cert and --backend-key go together");
  }
  for (
    const [flag, ranges] of [
      ["--backend-allow", config.backendAllow],
      ["--backend-deny", config.backendDeny],
    ] as const
  ) {
    for (const range of ranges) {
      try {
        parseCidr(range);
      } catch (error) {
        throw new RangeError(`${flag}: ${(error as Error).message}`, { cause: error });
      }
    }
  }
  if (config.listenAddress === "") {
    throw new RangeError("--listen-address must not be empty");
  }
  checkOperations(config);
  checkVncap(config);
  if (config.proxyListenAddress === "") {
    throw new RangeError("--proxy-listen-address must not be empty");
  }
  return Object.freeze(config);
}

/** The operations block: formats, limits, and where metrics may be scraped from. */
function checkOperations(config: Config): void {
  if (config.logFormat !== "text" && config.logFormat !== "json") {
    throw new RangeError(`--log-format must be text or json, got "${config.logFormat}"`);
  }
  for (
    const [flag, value] of [
      ["--max-sessions", config.maxSessions],
      ["--max-sessions-per-user", config.maxSessionsPerUser],
      ["--max-sessions-per-backend", config.maxSessionsPerBackend],
      ["--max-pending-per-viewer-ip", config.maxPendingPerViewerIp],
    ] as const
  ) {
    if (!Number.isInteger(value) || value < 0) {
      throw new RangeError(`${flag} must be a non-negative integer (0 = no limit)`);
    }
  }
  if (!(config.rateLimit >= 0) || !Number.isFinite(config.rateLimit)) {
    throw new RangeError("--rate-limit must not be negative");
  }
  if (config.metricsListen === undefined) {
    if (config.metricsAllow.length > 0) {
      throw new RangeError("--metrics-allow needs --metrics-listen");
    }
  } else if (!isLoopbackHost(config.metricsListen.host) && config.metricsAllow.length === 0) {
    // Metrics show what runs where: only on loopback unless ranges are named.
    throw new RangeError("--metrics-listen on a non-loopback address needs --metrics-allow CIDR");
  }
}

/** The vncap block: its pool, and who may reach a control socket with no authentication. */
function checkVncap(config: Config): void {
  checkPort("--vncap-min-port", config.vncapMinPort, 1);
  checkPort("--vncap-max-port", config.vncapMaxPort, 1);
  if (config.vncapMinPort > config.vncapMaxPort) {
    throw new RangeError(
      `--vncap-min-port ${config.vncapMinPort} is greater than --vncap-max-port ${config.vncapMaxPort}`,
    );
  }
  if (config.vncapMinPort <= config.maxPort && config.minPort <= config.vncapMaxPort) {
    throw new RangeError(
      `The vncap pool ${config.vncapMinPort}-${config.vncapMaxPort} overlaps ` +
        `--min-port/--max-port ${config.minPort}-${config.maxPort}`,
    );
  }
  if ((config.vncapCertFile === undefined) !== (config.vncapKeyFile === undefined)) {
    throw new RangeError("--vncap-cert and --vncap-key go together");
  }
  for (const range of config.vncapAllow) {
    try {
      parseCidr(range);
    } catch (error) {
      throw new RangeError(`--vncap-allow: ${(error as Error).message}`, { cause: error });
    }
  }
  const listen = config.vncapListen;
  if (listen === undefined) {
    for (
      const [flag, set] of [
        ["--vncap-allow", config.vncapAllow.length > 0],
        ["--vncap-window", config.vncapWindow],
        ["--vncap-cert", config.vncapCertFile !== undefined],
      ] as const
    ) {
      if (set) throw new RangeError(`${flag} needs --vncap-listen`);
    }
    return;
  }
  if (listen.transport === "unix") {
    // File permissions are the authentication there: addresses mean nothing.
    if (config.vncapAllow.length > 0) {
      throw new RangeError("--vncap-allow is for a TCP --vncap-listen, not a Unix socket");
    }
  } else if (!isLoopbackHost(listen.host) && config.vncapAllow.length === 0) {
    // vncap requests carry no credentials: anyone who reaches the port gets consoles.
    throw new RangeError("--vncap-listen on a non-loopback address needs --vncap-allow CIDR");
  }
}

/** True for loopback literals and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function checkPort(flag: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min || value > 65535) {
    throw new RangeError(
      `${flag} must be an integer from ${min} to 65535, got ${value}`,
    );
  }
}

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(value).filter(([, v]) => v !== undefined),
  ) as Partial<T>;
}
