/**
 * The gateway's bench: vncauthproxy's one port (`--gateway-listen` with
 * `--gateway-plain`, single-use tokens) next to Debian's websockify with
 * its token plugin (`--token-plugin TokenFile`), on the same workload:
 * throughput through one token session, set-up latency (issue a token,
 * redeem it with a WebSocket upgrade, RFB handshake to SecurityResult OK),
 * and many sessions at once through the one port.
 *
 * Like with like: neither side speaks TLS (websockify is run without
 * `--cert`), both carry vnc-ws binary frames, and both viewers get security
 * None (no `password` in the control request: the token is the credential;
 * websockify passes the fake server's None through).
 *
 * @module
 */

import { requestForwarding } from "../src/control/snf/control_client.ts";
import { WsStream } from "./byte_stream.ts";
import {
  type Daemon,
  type FakeServer,
  freePort,
  type Reference,
  spawn,
  startDaemon,
  type UsersFile,
  waitForPort,
} from "./processes.ts";
import type { BenchSizes, GatewayResults, GatewayTargetName, Outcome } from "./report.ts";
import {
  concurrency,
  type ConcurrencyResult,
  setupLatency,
  type SetupResult,
  throughput,
} from "./scenarios.ts";
import { noneSecurity, openSession, type ProxyEndpoint, type Target } from "./sessions.ts";

/**
 * websockify forks one Python process per connection (several MB of private
 * memory each once it runs), so on a shared machine it gets at most this
 * many sessions at once; its row says how many.
 */
export const WEBSOCKIFY_MAX_SESSIONS = 500;

const MIB = 1024 * 1024;

/** How bench.ts runs a scenario: a time limit and an outcome. */
export type ScenarioRunner = <T>(
  name: string,
  limitMs: number,
  run: () => Promise<T>,
  incomplete?: (result: T) => string | undefined,
) => Promise<Outcome<T>>;

/** What {@linkcode runGateway} needs from the bench. */
export interface GatewayBenchDeps {
  readonly sizes: BenchSizes;
  readonly quick: boolean;
  readonly users: UsersFile;
  readonly fake: FakeServer;
  /** The daemon's port pool (unused by gateway sessions, but required). */
  readonly pool: { readonly minPort: number; readonly maxPort: number };
  /** Whether websockify is on PATH. */
  readonly websockify: boolean;
  readonly scenario: ScenarioRunner;
  /** Which rows to run: one session's (throughput, set-up), crowds. @default {both} */
  readonly parts?: { readonly single: boolean; readonly crowds: boolean };
}

/** The daemon flags of the gateway rows. */
const GATEWAY_FLAGS = ["--gateway-listen=127.0.0.1:0", "--gateway-plain"];

/** A daemon whose gateway listens on 127.0.0.1, plain. */
function startGatewayDaemon(deps: GatewayBenchDeps): Promise<Daemon> {
  return startDaemon(deps.users, deps.fake.port, { ...deps.pool, args: GATEWAY_FLAGS });
}

/**
 * Token sessions through the daemon's gateway: a control request with
 * `"gateway": true`, then the reply's `path` on its `source_port`.
 */
export function gatewayTarget(endpoint: ProxyEndpoint, pid: number): Target {
  return {
    name: "gateway",
    pid,
    async open() {
      const started = performance.now();
      const reply = await requestForwarding({
        destinationAddress: "127.0.0.1",
        destinationPort: endpoint.serverPort,
        authUser: endpoint.user,
        authPassword: endpoint.password,
        type: "vnc-ws",
        gateway: true,
      }, { port: endpoint.controlPort, timeoutMs: 30_000 });
      if (reply.status !== "OK" || reply.path === undefined) {
        throw new Error(`Gateway request failed: ${reply.reason ?? JSON.stringify(reply)}`);
      }
      const stream = await WsStream.connect(reply.source_port, `/${reply.path}`);
      return await openSession(stream, started, noneSecurity);
    },
  };
}

/** websockify with `--token-plugin TokenFile` and the bench as its panel. */
export interface TokenWebsockify extends Reference {
  /** Adds `token: 127.0.0.1:FAKE` to the token file, atomically. */
  addToken(token: string): void;
  /** Takes `token` out of the token file again (its tokens are multi-use). */
  removeToken(token: string): void;
}

/**
 * Starts `websockify --token-plugin TokenFile --token-source FILE
 * 127.0.0.1:P`. The file holds the pending tokens, one `TOKEN: host:port`
 * line each; the plugin reads it again for every connection.
 */
export async function startTokenWebsockify(serverPort: number): Promise<TokenWebsockify> {
  const dir = await Deno.makeTempDir({ prefix: "vap-bench-tokens-" });
  const file = `${dir}/tokens`;
  const pending = new Set<string>();
  // Synchronous write and rename: the file is whole whenever websockify
  // reads it, and concurrent sessions cannot interleave their updates.
  const write = () => {
    const text = [...pending].map((token) => `${token}: 127.0.0.1:${serverPort}\n`).join("");
    Deno.writeTextFileSync(`${file}.new`, text);
    Deno.renameSync(`${file}.new`, file);
  };
  write();
  const port = freePort();
  try {
    const { started } = await spawn(
      "websockify",
      [
        "--token-plugin",
        "TokenFile",
        "--token-source",
        file,
        `127.0.0.1:${port}`,
      ],
      undefined,
      { role: "relay" },
    );
    await waitForPort(port, started);
    const stop = started[Symbol.asyncDispose].bind(started);
    return Object.assign(started, {
      port,
      addToken(token: string) {
        pending.add(token);
        write();
      },
      removeToken(token: string) {
        pending.delete(token);
        write();
      },
      async [Symbol.asyncDispose]() {
        await stop();
        await Deno.remove(dir, { recursive: true });
      },
    });
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

/** A token as a panel would make one for websockify: 256 random bits, base64url. */
function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

/**
 * Token sessions through websockify: write the token line, open
 * `/websockify?token=...`, and take the line out once the session is open.
 */
export function websockifyTokenTarget(websockify: TokenWebsockify): Target {
  return {
    name: "websockify-token",
    pid: websockify.pid,
    async open() {
      const started = performance.now();
      const token = randomToken();
      websockify.addToken(token);
      try {
        const stream = await WsStream.connect(websockify.port, `/websockify?token=${token}`);
        return await openSession(stream, started, noneSecurity);
      } finally {
        websockify.removeToken(token);
      }
    },
  };
}

function allSucceeded(r: SetupResult): string | undefined {
  return r.succeeded === r.attempted
    ? undefined
    : `${r.succeeded}/${r.attempted} succeeded; first error: ${r.firstError}`;
}

function allStreamed(r: ConcurrencyResult): string | undefined {
  return r.streamed === r.sessions
    ? undefined
    : `${r.streamed}/${r.sessions} streamed; first error: ${r.firstError}`;
}

/**
 * Runs the gateway's scenarios: throughput and set-up against one daemon
 * and one websockify, then the sessions at once, each side freshly started
 * so its memory at start is a real baseline.
 */
export async function runGateway(deps: GatewayBenchDeps): Promise<GatewayResults> {
  const { sizes, scenario } = deps;
  const limitMs = deps.quick ? 60_000 : 240_000;
  const sessions = Math.max(...sizes.sessions);
  const websockifySessions = Math.min(sessions, WEBSOCKIFY_MAX_SESSIONS);
  const results: GatewayResults = {
    throughput: {},
    setup: {},
    concurrency: {},
    sessions,
    websockifySessions,
    byCount: {},
  };
  const parts = deps.parts ?? { single: true, crowds: true };
  const notInstalled = (): Outcome<never> => ({
    status: "not installed",
    seconds: 0,
    error: "websockify is not installed",
  });
  if (parts.single) {
    await using daemon = await startGatewayDaemon(deps);
    await using websockify = deps.websockify
      ? await startTokenWebsockify(deps.fake.port)
      : undefined;
    const targets: [GatewayTargetName, Target | undefined][] = [
      ["websockify-token", websockify && websockifyTokenTarget(websockify)],
      ["gateway", gatewayTarget(daemon.endpoint, daemon.pid)],
    ];
    for (const [name, target] of targets) {
      results.throughput[name] = target === undefined ? notInstalled() : await scenario(
        `throughput ${name}`,
        limitMs,
        () => throughput(target, sizes.wsBytes, Math.min(sizes.wsBytes, 16 * MIB)),
      );
    }
    for (const [name, target] of targets) {
      results.setup[name] = target === undefined ? notInstalled() : await scenario(
        `set-up ${name} x${sizes.setups}`,
        limitMs,
        () => setupLatency(target, sizes.setups, 5),
        allSucceeded,
      );
    }
  }
  if (!parts.crowds) return results;
  const options = {
    bytesEach: sizes.bytesEach,
    openInflight: 64,
    measureMemory: true,
    idleMs: 0,
    settleMs: 0,
  };
  results.concurrency["websockify-token"] = !deps.websockify ? notInstalled() : await scenario(
    `${websockifySessions} sessions websockify-token`,
    limitMs,
    async () => {
      await using websockify = await startTokenWebsockify(deps.fake.port);
      return await concurrency(websockifyTokenTarget(websockify), websockifySessions, {
        ...options,
        // Its memory is spread over one forked process per session.
        measureMemory: false,
      });
    },
    allStreamed,
  );
  for (const n of [...sizes.sessions].sort((a, b) => b - a)) {
    results.byCount![String(n)] = await scenario(
      `${n} sessions gateway`,
      limitMs,
      async () => {
        await using daemon = await startGatewayDaemon(deps);
        const target = gatewayTarget(daemon.endpoint, daemon.pid);
        // A panel's first login: later ones are answered from the cache, as
        // in steady state, instead of 64 crypts at once.
        (await target.open()).stream.close();
        // Let the fresh daemon settle before its baseline RSS is read.
        await new Promise((resolve) => setTimeout(resolve, 500));
        // Only the largest count's memory is reported.
        return await concurrency(target, n, { ...options, measureMemory: n === sessions });
      },
      allStreamed,
    );
  }
  results.concurrency.gateway = results.byCount![String(sessions)]!;
  return results;
}

/** Every outcome of the gateway rows, named, for the bench's exit status. */
export function gatewayOutcomes(results: GatewayResults | undefined): [string, Outcome<unknown>][] {
  if (results === undefined) return [];
  const list: [string, Outcome<unknown>][] = [];
  for (const family of ["throughput", "setup", "concurrency"] as const) {
    for (const [name, outcome] of Object.entries(results[family])) {
      list.push([`gateway ${family} ${name}`, outcome as Outcome<unknown>]);
    }
  }
  for (const [count, outcome] of Object.entries(results.byCount ?? {})) {
    // The largest count is listed above, as the gateway's concurrency.
    if (Number(count) !== results.sessions) list.push([`gateway ${count} sessions`, outcome]);
  }
  return list;
}
