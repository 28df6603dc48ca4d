/**
 * The daemon's configuration: one frozen object, built once by
 * {@linkcode resolveConfig} from the command line and passed down.
 *
 * @module
 */

/** Console types a forwarding can be requested for (DESIGN §5). */
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
  /** Pass the viewer's ClientInit shared flag unchanged (DESIGN §4.7). */
  readonly allowExclusive: boolean;
  /** Deadline for a viewer's whole RFB handshake. */
  readonly clientTimeoutMs: number;
  /** Deadline for reading one control request (DESIGN §3). */
  readonly controlTimeoutMs: number;
  /** Largest control request accepted, in bytes (DESIGN §3). */
  readonly controlMaxBytes: number;
  /** Control connections handled at once; more are refused. */
  readonly maxControlConnections: number;
  /** Grace time for live sessions at SIGTERM before they are closed. */
  readonly drainTimeoutMs: number;
  /** Time a freed pool port rests before it is preferred again. */
  readonly portCooldownMs: number;
  /** WebSocket ping interval; 0 disables pings. */
  readonly wsPingIntervalMs: number;
  /** Free relay buffer bytes kept for reuse after traffic calms down. */
  readonly relayBufferIdleBytes: number;
  /** Relay buffer bytes lent out at once before sessions get small ones. */
  readonly relayBufferLentBytes: number;
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
  drainTimeoutMs: 5_000,
  portCooldownMs: 2_000,
  wsPingIntervalMs: 0,
  relayBufferIdleBytes: 4 * 1024 * 1024,
  relayBufferLentBytes: 64 * 1024 * 1024,
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
  if (config.listenAddress === "") {
    throw new RangeError("--listen-address must not be empty");
  }
  if (config.proxyListenAddress === "") {
    throw new RangeError("--proxy-listen-address must not be empty");
  }
  return Object.freeze(config);
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

/** True when `address` means "every address" (snf's wildcard spellings). */
export function isWildcardAddress(address: string): boolean {
  return ["*", "0.0.0.0", "::", "::0", "None"].includes(address);
}
