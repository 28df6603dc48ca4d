/**
 * `vncauthproxy [serve] [options]`: the daemon, with snf-vncauthproxy's
 * flags and defaults, parsed the way optparse did.
 *
 * @module
 */

import {
  type Config,
  DEFAULT_CONFIG,
  parseHostPort,
  parseVncapListen,
  resolveConfig,
} from "../config.ts";
import { parseAuthFailLimit } from "../auth/auth_fail_limiter.ts";
import { runDaemon, StartupError } from "../daemon.ts";
import { UsageError } from "../errors.ts";
import { createLogger, FileSink, type LogSink, stderrSink } from "../log.ts";
import { formatOptionsHelp, type OptionSpec, parseOptions } from "./option_parser.ts";
import type { CliIo } from "./cli_io.ts";
import { AuditLog } from "../observe/audit_log.ts";

const d = DEFAULT_CONFIG;
const MIB = 1024 * 1024;

/** snf-vncauthproxy's options, in its order: their old prefixes keep working. */
const SNF_OPTIONS: readonly OptionSpec[] = [
  { long: "help", short: "h", kind: "flag", help: "show this help and exit" },
  { long: "debug", short: "d", kind: "flag", help: "log debug messages" },
  {
    long: "log",
    kind: "string",
    metavar: "FILE",
    help: "also write the log to FILE (reopened on SIGHUP)",
  },
  { long: "pid-file", kind: "string", metavar: "PIDFILE", help: "write the PID to PIDFILE" },
  {
    long: "listen-address",
    kind: "string",
    metavar: "LISTEN_ADDRESS",
    help: `control socket address, * for all [${d.listenAddress}]`,
  },
  {
    long: "listen-port",
    kind: "int",
    metavar: "LISTEN_PORT",
    help: `control socket port [${d.listenPort}]`,
  },
  {
    long: "server-timeout",
    kind: "float",
    metavar: "N",
    help: `seconds to connect to and handshake with a VNC server [${d.serverTimeoutMs / 1000}]`,
  },
  {
    long: "connect-retries",
    kind: "int",
    metavar: "N",
    help: `rounds of attempts to connect to a VNC server [${d.connectRetries}]`,
  },
  {
    long: "retry-wait",
    kind: "float",
    metavar: "N",
    help: `seconds between connection rounds [${d.retryWaitMs / 1000}]`,
  },
  {
    long: "connect-timeout",
    kind: "float",
    metavar: "N",
    help: `seconds a forwarding waits for its client [${d.connectTimeoutMs / 1000}]`,
  },
  {
    long: "min-port",
    short: "p",
    kind: "int",
    metavar: "MIN_PORT",
    help: `first port of the pool [${d.minPort}]`,
  },
  {
    long: "max-port",
    short: "P",
    kind: "int",
    metavar: "MAX_PORT",
    help: `last port of the pool [${d.maxPort}]`,
  },
  { long: "enable-ssl", kind: "flag", help: "TLS (1.2+) on the control socket" },
  {
    long: "cert-file",
    kind: "string",
    metavar: "CERTFILE",
    help: `PEM certificate [${d.certFile}]`,
  },
  { long: "key-file", kind: "string", metavar: "KEYFILE", help: `PEM private key [${d.keyFile}]` },
  {
    long: "auth-file",
    kind: "string",
    metavar: "AUTHFILE",
    help: `control users file [${d.authFile}]`,
  },
  {
    long: "proxy-listen-address",
    kind: "string",
    metavar: "PROXY_LISTEN_ADDRESS",
    help: `address of the forwarded ports, * for all IPv4 and IPv6 [${d.proxyListenAddress}]`,
  },
];

/** Operations: metrics and health, log format and audit log, limits. */
const OPERATIONS_OPTIONS: readonly OptionSpec[] = [
  {
    long: "log-format",
    kind: "string",
    metavar: "text|json",
    help: `log lines as snf's text or as JSON objects [${d.logFormat}]`,
  },
  {
    long: "audit-log",
    kind: "string",
    metavar: "FILE",
    help: "also write the session-end audit lines to FILE (reopened on SIGHUP)",
  },
  {
    long: "metrics-listen",
    kind: "string",
    metavar: "ADDR:PORT",
    help: "serve /metrics (Prometheus), /healthz and /readyz here (off by default)",
  },
  {
    long: "metrics-allow",
    kind: "string",
    metavar: "CIDR,...",
    help: "who may scrape besides loopback; required for a non-loopback --metrics-listen",
  },
  {
    long: "max-sessions",
    kind: "int",
    metavar: "N",
    help: "sessions live and pending together; 0 = no limit [0]",
  },
  {
    long: "max-sessions-per-user",
    kind: "int",
    metavar: "N",
    help: "sessions per control user; 0 = no limit [0]",
  },
  {
    long: "max-sessions-per-backend",
    kind: "int",
    metavar: "N",
    help: "sessions per VNC server host:port; 0 = no limit [0]",
  },
  {
    long: "max-pending-per-viewer-ip",
    kind: "int",
    metavar: "N",
    help: "viewer connections in their handshake per address (gateway, ports); 0 = no limit [0]",
  },
  {
    long: "rate-limit",
    kind: "string",
    metavar: "N/s",
    help: "control requests per source address and per user, burst 2N; 0 or off = none [off]",
  },
  {
    long: "relay-memory",
    kind: "int",
    metavar: "MIB",
    help: "relay buffers lent to sessions at once, MiB; beyond it each streaming session " +
      `reads a fair share [${d.relayBufferLentBytes / MIB}]`,
  },
];

/** The vncap control protocol (twisted_vncauthproxy's), beside snf's. */
const VNCAP_OPTIONS: readonly OptionSpec[] = [
  {
    long: "vncap-listen",
    kind: "string",
    metavar: "ADDR:PORT|unix:PATH",
    help: "also take vncap (Ganeti Web Manager) requests here; no authentication (off)",
  },
  {
    long: "vncap-allow",
    kind: "string",
    metavar: "CIDR,...",
    repeatable: true,
    help: "who may send vncap requests besides loopback; needed off loopback",
  },
  {
    long: "vncap-min-port",
    kind: "int",
    metavar: "N",
    help: `first port of the vncap pool [${d.vncapMinPort}]`,
  },
  {
    long: "vncap-max-port",
    kind: "int",
    metavar: "N",
    help: `last port of the vncap pool [${d.vncapMaxPort}]`,
  },
  {
    long: "vncap-cert",
    kind: "string",
    metavar: "FILE",
    help: "PEM certificate of vncap tls forwardings [keys/vncap.crt if it exists]",
  },
  {
    long: "vncap-key",
    kind: "string",
    metavar: "FILE",
    help: "its PEM private key [keys/vncap.key if it exists]",
  },
  {
    long: "vncap-window",
    kind: "flag",
    help: "vncap forwardings take any number of viewers until their timeout (default: one)",
  },
];

/** The daemon's options: snf's, then ours. */
export const SERVE_OPTIONS: readonly OptionSpec[] = [
  ...SNF_OPTIONS.map((spec) => ({ ...spec, legacy: true })),
  {
    long: "allow-exclusive",
    kind: "flag",
    help: "pass the viewer's ClientInit shared flag unchanged (default: force shared)",
  },
  {
    long: "client-timeout",
    kind: "float",
    metavar: "N",
    help: `seconds for a client's whole VNC handshake [${d.clientTimeoutMs / 1000}]`,
  },
  {
    long: "control-timeout",
    kind: "float",
    metavar: "N",
    help: `seconds a control client has to send its request [${d.controlTimeoutMs / 1000}]`,
  },
  {
    long: "drain-timeout",
    kind: "float",
    metavar: "N",
    help: `seconds live sessions may go on after SIGTERM [${d.drainTimeoutMs / 1000}]`,
  },
  {
    long: "port-cooldown",
    kind: "float",
    metavar: "N",
    help: `seconds a freed port rests before reuse is preferred [${d.portCooldownMs / 1000}]`,
  },
  {
    long: "max-control-connections",
    kind: "int",
    metavar: "N",
    help: `control connections handled at once [${d.maxControlConnections}]`,
  },
  {
    long: "max-ws-handshakes",
    kind: "int",
    metavar: "N",
    help: `connections per WebSocket port still in their handshake [${d.maxWsHandshakes}]`,
  },
  {
    long: "ws-ping-interval",
    kind: "float",
    metavar: "N",
    help: "seconds between WebSocket pings; a client that does not answer is dropped; 0 = off [0]",
  },
  {
    long: "idle-timeout",
    kind: "float",
    metavar: "N",
    help: "seconds without a byte either way that end a session; 0 = never [0]",
  },
  {
    long: "max-session-time",
    kind: "float",
    metavar: "N",
    help: "seconds after which a session ends, busy or not; 0 = never [0]",
  },
  {
    long: "crypt-workers",
    kind: "int",
    metavar: "N",
    help: `workers that check control passwords off the event loop [${d.cryptWorkers}]`,
  },
  {
    long: "crypt-queue",
    kind: "int",
    metavar: "N",
    help: `password checks waiting for a worker; more get "server busy" [${d.cryptQueueLimit}]`,
  },
  {
    long: "auth-fail-limit",
    kind: "string",
    metavar: "N/s",
    help:
      `failed control logins per source address and per user, burst 2N; 0 or off = none [${d.authFailLimit}/s]`,
  },
  {
    long: "max-crypt-rounds",
    kind: "int",
    metavar: "N",
    help: `largest rounds= of a users-file hash [${d.maxCryptRounds}]`,
  },
  {
    long: "gateway-listen",
    kind: "string",
    metavar: "ADDR:PORT",
    help: "one TLS port for every browser console, routed by token (off by default)",
  },
  {
    long: "gateway-plain",
    kind: "flag",
    help: "the gateway speaks plain HTTP, for use behind a TLS-terminating reverse proxy",
  },
  {
    long: "trusted-proxy",
    kind: "string",
    metavar: "CIDR,...",
    help: "proxies whose X-Forwarded-For/-Proto the gateway believes (with --gateway-plain)",
  },
  {
    long: "gateway-public-url",
    kind: "string",
    metavar: "URL",
    help: "what replies name as the gateway [https://FQDN:PORT]",
  },
  {
    long: "gateway-snf",
    kind: "flag",
    help: "snf requests of the gateway's type (vnc-wss for an https public URL) use it",
  },
  {
    long: "allowed-origins",
    kind: "string",
    metavar: "ORIGIN,...",
    help: "origins WebSocket pages must come from (with --web: the gateway's own) [any]",
  },
  {
    long: "web",
    kind: "string",
    metavar: "DIR",
    help: "a static noVNC tree the gateway serves (e.g. /usr/share/novnc)",
  },
  {
    long: "max-token-ttl",
    kind: "float",
    metavar: "N",
    help: `longest life of a gateway token, seconds [${d.maxTokenTtlMs / 1000}]`,
  },
  {
    long: "max-gateway-connections",
    kind: "int",
    metavar: "N",
    help: `gateway connections before their request is complete [${d.maxGatewayConnections}]`,
  },
  {
    long: "token-store",
    kind: "string",
    metavar: "URL",
    help: "share gateway tokens between instances: redis://[USER:PASS@]HOST:PORT/DB, " +
      "rediss://..., unix:/PATH [memory]",
  },
  {
    long: "token-store-key-file",
    kind: "string",
    metavar: "FILE",
    help: "the key (32+ bytes) every instance sharing --token-store seals tokens with",
  },
  {
    long: "redis-ca",
    kind: "string",
    metavar: "FILE",
    help: "PEM CA a rediss:// token store's certificate must chain to [system roots]",
  },
  {
    long: "unix-backend-dir",
    kind: "string",
    metavar: "DIR",
    repeatable: true,
    help: "VNC servers may be Unix sockets below DIR (repeatable; none = no Unix sockets)",
  },
  {
    long: "backend-ca",
    kind: "string",
    metavar: "FILE",
    help: "PEM CA the VNC servers' TLS certificates must chain to [system roots]",
  },
  {
    long: "backend-cert",
    kind: "string",
    metavar: "FILE",
    help: "PEM client certificate for VNC servers over TLS (with --backend-key)",
  },
  {
    long: "backend-key",
    kind: "string",
    metavar: "FILE",
    help: "PEM private key of --backend-cert",
  },
  {
    long: "backend-allow-anonymous-tls",
    kind: "flag",
    help: "do not refuse anonymous-DH VeNCrypt (unsupported by the TLS library: still refused)",
  },
  {
    long: "backend-allow",
    kind: "string",
    metavar: "CIDR,...",
    repeatable: true,
    help: "address ranges forwardings may reach (repeatable) [any]",
  },
  {
    long: "backend-deny",
    kind: "string",
    metavar: "CIDR,...",
    repeatable: true,
    help: "address ranges forwardings may not reach; wins over --backend-allow (repeatable)",
  },
  ...OPERATIONS_OPTIONS,
  ...VNCAP_OPTIONS,
];

/** Help text of the daemon. */
export function serveHelp(): string {
  return [
    "Usage: vncauthproxy [serve] [options]",
    "",
    "VNC authentication proxy: sets up one-time forwardings to VNC servers on",
    "request over a JSON control socket. Runs in the foreground.",
    "",
    "Options:",
    formatOptionsHelp(SERVE_OPTIONS),
    "",
    "Other commands: vncauthproxy passwd --help, vncauthproxy client --help,",
    "vncauthproxy demo --help, vncauthproxy status --help",
    "",
  ].join("\n");
}

/**
 * Turns the daemon's command line into a `Config`.
 *
 * @throws {UsageError} on bad flags or values.
 */
export function parseServeArgs(args: readonly string[]): Config | "help" {
  const { values, positionals } = parseOptions(SERVE_OPTIONS, args);
  if (values.help) return "help";
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const str = (name: string) => values[name] as string | undefined;
  const num = (name: string) => values[name] as number | undefined;
  // Lists are comma- or space-separated, in one value.
  const list = (name: string) => (str(name) ?? "").split(/[,\s]+/).filter((item) => item !== "");
  // Repeatable options: every value given, each itself a list.
  const all = (name: string) => (values[name] ?? []) as readonly string[];
  const lists = (name: string) =>
    all(name).flatMap((value) => value.split(/[,\s]+/)).filter((item) => item !== "");
  const ms = (name: string) => {
    const value = num(name);
    return value === undefined ? undefined : Math.round(value * 1000);
  };
  try {
    return resolveConfig({
      debug: values.debug === true,
      logFile: str("log"),
      pidFile: str("pid-file"),
      listenAddress: str("listen-address"),
      listenPort: num("listen-port"),
      serverTimeoutMs: ms("server-timeout"),
      connectRetries: num("connect-retries"),
      retryWaitMs: ms("retry-wait"),
      connectTimeoutMs: ms("connect-timeout"),
      minPort: num("min-port"),
      maxPort: num("max-port"),
      enableSsl: values["enable-ssl"] === true,
      certFile: str("cert-file"),
      keyFile: str("key-file"),
      authFile: str("auth-file"),
      proxyListenAddress: str("proxy-listen-address"),
      allowExclusive: values["allow-exclusive"] === true,
      clientTimeoutMs: ms("client-timeout"),
      controlTimeoutMs: ms("control-timeout"),
      drainTimeoutMs: ms("drain-timeout"),
      portCooldownMs: ms("port-cooldown"),
      maxControlConnections: num("max-control-connections"),
      maxWsHandshakes: num("max-ws-handshakes"),
      relayBufferLentBytes: num("relay-memory") === undefined
        ? undefined
        : num("relay-memory")! * MIB,
      wsPingIntervalMs: ms("ws-ping-interval"),
      idleTimeoutMs: ms("idle-timeout"),
      maxSessionTimeMs: ms("max-session-time"),
      cryptWorkers: num("crypt-workers"),
      cryptQueueLimit: num("crypt-queue"),
      authFailLimit: str("auth-fail-limit") === undefined
        ? undefined
        : parseAuthFailLimit(str("auth-fail-limit")!),
      maxCryptRounds: num("max-crypt-rounds"),
      gatewayListen: str("gateway-listen") === undefined
        ? undefined
        : parseHostPort(str("gateway-listen")!),
      gatewayPlain: values["gateway-plain"] === true,
      trustedProxies: list("trusted-proxy"),
      gatewayPublicUrl: str("gateway-public-url"),
      gatewaySnf: values["gateway-snf"] === true,
      allowedOrigins: str("allowed-origins") === undefined ? undefined : list("allowed-origins"),
      webDir: str("web"),
      maxTokenTtlMs: ms("max-token-ttl"),
      maxGatewayConnections: num("max-gateway-connections"),
      tokenStore: str("token-store") === "memory" ? undefined : str("token-store"),
      tokenStoreKeyFile: str("token-store-key-file"),
      redisCaFile: str("redis-ca"),
      unixBackendDirs: all("unix-backend-dir"),
      backendCaFile: str("backend-ca"),
      backendCertFile: str("backend-cert"),
      backendKeyFile: str("backend-key"),
      backendAllowAnonymousTls: values["backend-allow-anonymous-tls"] === true,
      backendAllow: lists("backend-allow"),
      backendDeny: lists("backend-deny"),
      ...operationsOverrides(str, num, list),
      vncapListen: str("vncap-listen") === undefined
        ? undefined
        : parseVncapListen(str("vncap-listen")!),
      vncapAllow: lists("vncap-allow"),
      vncapMinPort: num("vncap-min-port"),
      vncapMaxPort: num("vncap-max-port"),
      vncapCertFile: str("vncap-cert"),
      vncapKeyFile: str("vncap-key"),
      vncapWindow: values["vncap-window"] === true,
    } as Partial<Config>);
  } catch (error) {
    if (error instanceof RangeError) throw new UsageError(error.message, { cause: error });
    throw error;
  }
}

/** The operations block of the command line. */
function operationsOverrides(
  str: (name: string) => string | undefined,
  num: (name: string) => number | undefined,
  list: (name: string) => string[],
): Partial<Config> {
  const rate = str("rate-limit");
  return {
    logFormat: str("log-format") as Config["logFormat"] | undefined,
    auditLogFile: str("audit-log"),
    metricsListen: str("metrics-listen") === undefined
      ? undefined
      : parseHostPort(str("metrics-listen")!),
    metricsAllow: list("metrics-allow"),
    maxSessions: num("max-sessions"),
    maxSessionsPerUser: num("max-sessions-per-user"),
    maxSessionsPerBackend: num("max-sessions-per-backend"),
    maxPendingPerViewerIp: num("max-pending-per-viewer-ip"),
    rateLimit: rate === undefined ? undefined : parseRate(rate),
  } as Partial<Config>;
}

/**
 * Parses `--rate-limit`: `N/s`, `0` or `off`.
 *
 * @throws {RangeError} on anything else.
 */
function parseRate(text: string): number {
  const value = text.trim().toLowerCase();
  if (value === "off" || value === "0") return 0;
  const match = /^(\d+(?:\.\d+)?)\/s$/.exec(value);
  if (match === null) {
    throw new RangeError(`--rate-limit must be "N/s", "0" or "off", got "${text}"`);
  }
  return Number(match[1]);
}

/** Runs the daemon; returns the exit code. */
export async function runServeCommand(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseServeArgs(args);
  if (parsed === "help") {
    io.stdout(serveHelp());
    return 0;
  }
  const config = parsed;
  const sinks: LogSink[] = [stderrSink];
  let file: FileSink | undefined;
  if (config.logFile !== undefined) {
    try {
      file = new FileSink(config.logFile);
    } catch (error) {
      io.stderr(
        `vncauthproxy: Cannot open log file "${config.logFile}": ${(error as Error).message}\n`,
      );
      return 1;
    }
    sinks.push(file);
  }
  const logger = createLogger({
    level: config.debug ? "debug" : "info",
    sinks,
    format: config.logFormat,
  });
  let auditFile: FileSink | undefined;
  if (config.auditLogFile !== undefined) {
    try {
      auditFile = new FileSink(config.auditLogFile);
    } catch (error) {
      file?.close();
      io.stderr(
        `vncauthproxy: Cannot open audit log "${config.auditLogFile}": ${
          (error as Error).message
        }\n`,
      );
      return 1;
    }
  }
  const audit = new AuditLog(
    auditFile === undefined
      ? []
      : [createLogger({ level: "info", sinks: [auditFile], format: config.logFormat })],
  );
  try {
    await runDaemon(config, {
      logger,
      audit,
      onReload: () => {
        file?.reopen();
        auditFile?.reopen();
      },
    });
    return 0;
  } catch (error) {
    if (error instanceof StartupError) {
      logger.error(error.message);
      return 1;
    }
    throw error;
  } finally {
    file?.close();
    auditFile?.close();
  }
}
