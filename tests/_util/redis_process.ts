/**
 * A throw-away `redis-server` for tests: loopback only, no persistence, in
 * a temp dir, on a free port (and/or a Unix socket), stoppable and
 * restartable on the same port.
 *
 * @module
 */

/** Whether `redis-server` can be run; tests that need it skip loudly without. */
export function hasRedisServer(): boolean {
  try {
    return new Deno.Command("redis-server", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Logs once why Redis tests are skipped. */
export function redisSkipNotice(): boolean {
  const present = hasRedisServer();
  if (!present) {
    // deno-lint-ignore no-console
    console.warn("SKIPPED: redis-server is not installed; the Redis tests do not run");
  }
  return present;
}

/** Options of {@linkcode startRedis}. */
export interface RedisProcessOptions {
  /** Listen on TCP (plain, or TLS with the given files). @default {"tcp"} */
  readonly mode?: "tcp" | "tls" | "unix";
  /** For `tls`: the server's certificate, key and a CA file (required by redis). */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly caFile: string };
  /** More `redis-server` arguments (`--requirepass`, `--user`…). */
  readonly args?: readonly string[];
}

/** A running `redis-server`. */
export interface RedisProcess extends AsyncDisposable {
  /** The TCP (or TLS) port; 0 in `unix` mode. */
  readonly port: number;
  /** The Unix socket path (`unix` mode). */
  readonly socketPath: string;
  /** Stops the server (SIGKILL: a crash, nothing flushed); idempotent. */
  stop(): Promise<void>;
  /** Starts it again on the same port and socket (its data is gone). */
  start(): Promise<void>;
  /** Runs `redis-cli` against it (plain TCP or unix) and returns stdout. */
  cli(args: readonly string[]): Promise<string>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Starts a `redis-server` and waits until it accepts connections. */
export async function startRedis(options: RedisProcessOptions = {}): Promise<RedisProcess> {
  const mode = options.mode ?? "tcp";
  const dir = await Deno.makeTempDir({ prefix: "vap-redis-" });
  const socketPath = `${dir}/redis.sock`;
  const port = mode === "unix" ? 0 : freePort();
  const args = [
    ...["--save", "", "--appendonly", "no", "--dir", dir, "--bind", "127.0.0.1"],
    ...(mode === "tcp" ? ["--port", String(port)] : ["--port", "0"]),
    ...(mode === "unix" ? ["--unixsocket", socketPath, "--unixsocketperm", "700"] : []),
    ...(mode === "tls"
      ? [
        ...["--tls-port", String(port), "--tls-auth-clients", "no"],
        ...["--tls-cert-file", options.tls!.certFile, "--tls-key-file", options.tls!.keyFile],
        ...["--tls-ca-cert-file", options.tls!.caFile],
      ]
      : []),
    ...(options.args ?? []),
  ];
  let child: Deno.ChildProcess | undefined;

  async function ready(): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const conn = mode === "unix"
          ? await Deno.connect({ transport: "unix", path: socketPath })
          : await Deno.connect({ hostname: "127.0.0.1", port });
        conn.close();
        return;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`redis-server did not start: ${error}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
  }

  const handle: RedisProcess = {
    port,
    socketPath,
    async start() {
      if (child !== undefined) throw new Error("redis-server is running");
      child = new Deno.Command("redis-server", { args, stdout: "null", stderr: "null" }).spawn();
      await ready();
    },
    async stop() {
      const running = child;
      child = undefined;
      if (running === undefined) return;
      try {
        running.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await running.status;
    },
    async cli(cliArgs: readonly string[]) {
      const target = mode === "unix" ? ["-s", socketPath] : ["-h", "127.0.0.1", "-p", String(port)];
      const { stdout, success, stderr } = await new Deno.Command("redis-cli", {
        args: [...target, ...cliArgs],
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!success) throw new Error(`redis-cli failed: ${new TextDecoder().decode(stderr)}`);
      return new TextDecoder().decode(stdout);
    },
    async [Symbol.asyncDispose]() {
      await handle.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
  try {
    await handle.start();
  } catch (error) {
    await handle[Symbol.asyncDispose]();
    throw error;
  }
  return handle;
}
