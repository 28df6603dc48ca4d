/**
 * A throw-away HAProxy for tests, in the foreground (`-db`), with a generated config: one
 * TCP-mode frontend on a free 127.0.0.1 port balancing to N servers, each health-checked by
 * `GET /readyz` on its own metrics port, with fast checks and timeouts. What HAProxy thinks
 * of each server is read from its stats socket (`show stat`), so a test can wait until it
 * has seen an instance go down or come back.
 *
 * Debian package: `haproxy`. Tests that need it check {@linkcode hasHaproxy} and are
 * skipped loudly without it.
 *
 * @module
 */

import { concatBytes } from "../../src/io/bytes.ts";
import { findFreePort, hasCommand } from "./real_peers.ts";
import { ChildSlot, OwnedChild, pollUntil, stopThenRemove } from "./child_process.ts";

const LOOPBACK = "127.0.0.1";
/** Largest `show stat` answer read from the stats socket. */
const MAX_STATS_BYTES = 1024 * 1024;

/** Whether `haproxy` is on `PATH`. */
export function hasHaproxy(): boolean {
  return hasCommand("haproxy");
}

/** One server behind the frontend. */
export interface HaproxyServer {
  /** Its name in the config and in `show stat`. @default "s1", "s2", ... by position */
  readonly name?: string;
  /** Where connections go: `host:port`. */
  readonly address: string;
  /** The port serving `/readyz` on the same host (the daemon's `--metrics-listen`); without it, no health check. */
  readonly checkPort?: number;
  /** Only used when every other server is down. */
  readonly backup?: boolean;
}

/** Options of {@linkcode startHaproxy}. */
export interface StartHaproxyOptions {
  readonly servers: readonly HaproxyServer[];
  /**
   * `roundrobin` spreads connections; `first` sends every connection to the first server
   * that is up (in the order given), so a test can force one instance. @default "roundrobin"
   */
  readonly balance?: "roundrobin" | "first";
  /** Milliseconds between health checks. @default 200 */
  readonly checkIntervalMs?: number;
  /** Bound on start-up. @default 10000 */
  readonly timeoutMs?: number;
}

/**
 * What HAProxy's `show stat` says of a server: `UP`, `DOWN`, `no check`, `MAINT`..., or
 * `not checked yet` before its first health check (HAProxy counts it UP until then).
 */
export type ServerStatus = string;

/** A running haproxy, stopped and its files removed on dispose. */
export interface Haproxy extends AsyncDisposable {
  /** The frontend's port on 127.0.0.1. */
  readonly port: number;
  /** The generated config file. */
  readonly configFile: string;
  /** The server names, in the order given. */
  readonly serverNames: readonly string[];
  /** Every server's status now. */
  serverStatuses(): Promise<Map<string, ServerStatus>>;
  /** Waits until HAProxy reports `status` (e.g. `UP`, `DOWN`) for the server `name`. */
  waitForServer(name: string, status: ServerStatus, timeoutMs?: number): Promise<void>;
  /** Stops haproxy (SIGTERM); the port is free afterwards. */
  stop(): Promise<void>;
  /** The tail of haproxy's output. */
  log(): string;
}

/** The HAProxy configuration {@linkcode startHaproxy} writes, for a frontend on `port`. */
export function haproxyConfig(
  options: StartHaproxyOptions & { readonly port: number; readonly statsSocket: string },
): string {
  const inter = options.checkIntervalMs ?? 200;
  const lines = [
    "global",
    `    stats socket ${options.statsSocket} mode 600 level admin`,
    "    stats timeout 5s",
    "",
    "defaults",
    "    mode tcp",
    "    timeout connect 1s",
    "    timeout client 30s",
    "    timeout server 30s",
    "    timeout tunnel 1h",
    "    timeout check 1s",
    "",
    "frontend fe",
    `    bind ${LOOPBACK}:${options.port}`,
    "    default_backend be",
    "",
    "backend be",
    `    balance ${options.balance ?? "roundrobin"}`,
    "    option httpchk GET /readyz",
    "    http-check expect status 200",
    `    default-server inter ${inter}ms fastinter ${inter}ms downinter ${inter}ms fall 1 rise 1`,
  ];
  for (const [i, server] of options.servers.entries()) {
    const name = server.name ?? `s${i + 1}`;
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new SyntaxError(`Bad server name "${name}"`);
    if (!/^[^\s:]+:\d+$/.test(server.address)) {
      throw new SyntaxError(`Bad server address "${server.address}": expected "host:port"`);
    }
    lines.push(
      [
        `    server ${name} ${server.address}`,
        ...(server.checkPort === undefined ? [] : [`check port ${server.checkPort}`]),
        ...(server.backup ? ["backup"] : []),
      ].join(" "),
    );
  }
  return lines.join("\n") + "\n";
}

/** Starts haproxy on a free port and waits until its stats socket answers. */
export async function startHaproxy(options: StartHaproxyOptions): Promise<Haproxy> {
  if (!hasHaproxy()) {
    throw new Error('Command "haproxy" is not installed (Debian package "haproxy")');
  }
  if (options.servers.length === 0) throw new RangeError("HAProxy needs at least one server");
  const timeoutMs = options.timeoutMs ?? 10_000;
  const serverNames = options.servers.map((s, i) => s.name ?? `s${i + 1}`);
  if (new Set(serverNames).size !== serverNames.length) {
    throw new SyntaxError("Server names must differ");
  }
  const dir = await Deno.makeTempDir({ prefix: "vap-haproxy-" });
  const configFile = `${dir}/haproxy.cfg`;
  const statsSocket = `${dir}/stats.sock`;
  const child = new ChildSlot();
  let port = 0;
  try {
    for (let attempt = 1;; attempt++) {
      port = findFreePort();
      await Deno.writeTextFile(configFile, haproxyConfig({ ...options, port, statsSocket }));
      const started = new OwnedChild("haproxy", ["-db", "-f", configFile]);
      try {
        await pollUntil("haproxy's stats socket answers", started, async () => {
          await showStat(statsSocket);
          return true;
        }, { timeoutMs });
        child.set(started);
        break;
      } catch (error) {
        await started.stop();
        // Another process may take the port between choosing it and haproxy's bind.
        if (attempt < 5 && /cannot bind|Address already in use/i.test(started.output())) continue;
        const message = error instanceof Error ? error.message : String(error);
        throw new Error(`Cannot start haproxy: ${message}\n${started.output()}`);
      }
    }
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }

  const stop = () => child.stop();
  const serverStatuses = async () => {
    const statuses = new Map<string, ServerStatus>();
    for (const row of parseShowStat(await showStat(statsSocket))) {
      if (row.pxname === "be" && serverNames.includes(row.svname)) {
        // A checked server starts out UP before its first check has run.
        statuses.set(
          row.svname,
          /INI/.test(row.check_status ?? "") ? "not checked yet" : row.status,
        );
      }
    }
    return statuses;
  };
  return {
    port,
    configFile,
    serverNames,
    serverStatuses,
    async waitForServer(name: string, status: ServerStatus, waitMs = 10_000) {
      if (!serverNames.includes(name)) throw new RangeError(`No server "${name}"`);
      let last: ServerStatus | undefined;
      await pollUntil(`HAProxy sees server "${name}" ${status}`, child.current, async () => {
        last = (await serverStatuses()).get(name);
        if (last === status) return true;
        throw new Error(`it is "${last}"`);
      }, { timeoutMs: waitMs });
    },
    stop,
    log() {
      return child.output();
    },
    [Symbol.asyncDispose]: stopThenRemove(stop, dir),
  };
}

/** Sends `show stat` to the stats socket and returns the CSV answer. */
async function showStat(socketPath: string): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path: socketPath });
  const timer = setTimeout(() => conn.close(), 2_000);
  try {
    await conn.write(new TextEncoder().encode("show stat\n"));
    const chunks: Uint8Array[] = [];
    let size = 0;
    const buffer = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
      size += n;
      if (size > MAX_STATS_BYTES) throw new RangeError("HAProxy's show stat answer is too large");
    }
    const text = new TextDecoder().decode(concatBytes(chunks));
    if (!text.startsWith("# pxname,")) {
      throw new SyntaxError(`Unexpected show stat answer "${text}"`);
    }
    return text;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the deadline.
    }
  }
}

/** Parses `show stat` CSV (header `# pxname,svname,...`) into rows keyed by column name. */
export function parseShowStat(csv: string): Record<string, string>[] {
  const [header, ...rows] = csv.split("\n").filter((line) => line !== "");
  const columns = header.replace(/^# /, "").split(",");
  return rows.map((row) => {
    const cells = row.split(",");
    return Object.fromEntries(columns.map((column, i) => [column, cells[i] ?? ""]));
  });
}
