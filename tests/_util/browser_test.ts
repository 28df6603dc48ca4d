/**
 * Proves the noVNC browser harness against a stack without our proxy:
 * Xvnc (VncAuth) behind Debian's websockify, over ws and wss.
 *
 * @module
 */

import { hasChromium, NOVNC_DIR, openNoVnc, startStaticServer, TEST_PAGE_PATH } from "./browser.ts";
import { makeTestCertificate } from "./tls.ts";

const PASSWORD = "s3cret-pw";
const DESKTOP_COLOUR = "#336699";
const DESKTOP_RGB = [0x33, 0x66, 0x99] as const;
const STARTUP_TIMEOUT_MS = 10_000;

const STACK_COMMANDS = [
  "Xvnc",
  "vncpasswd",
  "xsetroot",
  "websockify",
  "openssl",
];
const HAS_STACK = hasChromium() && NOVNC_DIR !== undefined &&
  STACK_COMMANDS.every((name) => findCommand(name) !== undefined);

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function assertEquals(actual: unknown, expected: unknown): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  assert(a === e, `Expected ${e}, got ${a}`);
}

function findCommand(name: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":");
  for (const dir of dirs) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return listener.addr.port;
}

/** A free X display number: no lock file and no socket. */
function freeDisplay(): number {
  for (let n = 40 + Math.floor(Math.random() * 400); n < 1000; n++) {
    const taken = [`/tmp/.X${n}-lock`, `/tmp/.X11-unix/X${n}`].some(
      (path) => {
        try {
          Deno.lstatSync(path);
          return true;
        } catch {
          return false;
        }
      },
    );
    if (!taken) return n;
  }
  throw new Error("Cannot find a free X display");
}

async function run(
  command: string,
  args: string[],
  options: { stdin?: Uint8Array; env?: Record<string, string> } = {},
): Promise<Uint8Array> {
  const child = new Deno.Command(command, {
    args,
    env: options.env,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(options.stdin);
    await writer.close();
  }
  const output = await child.output();
  if (!output.success) {
    throw new Error(
      `"${command}" failed: ${new TextDecoder().decode(output.stderr)}`,
    );
  }
  return output.stdout;
}

/** A long-running child whose output is collected and which is killed on dispose. */
function spawnDaemon(
  command: string,
  args: string[],
): { exited: Promise<Deno.CommandOutput> } & AsyncDisposable {
  const child = new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const exited = child.output();
  let killed = false;
  return {
    exited,
    async [Symbol.asyncDispose]() {
      if (!killed) {
        killed = true;
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited.
        }
      }
      await exited;
    },
  };
}

/** Waits until something accepts TCP connections on 127.0.0.1:port. */
async function waitForPort(
  port: number,
  exited: Promise<Deno.CommandOutput>,
  name: string,
): Promise<void> {
  let hasExited = false;
  exited.then(() => hasExited = true, () => hasExited = true);
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (hasExited) {
      const output = await exited;
      throw new Error(
        `${name} exited: ${new TextDecoder().decode(output.stderr)}`,
      );
    }
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`${name} did not listen on port ${port}`);
}

/**
 * Xvnc with VncAuth, its root window filled with {@linkcode DESKTOP_COLOUR},
 * behind websockify (ws, or wss with a fresh self-signed certificate).
 */
async function startVncStack(
  options: { tls: boolean },
): Promise<{ wsUrl: string } & AsyncDisposable> {
  await using stack = new AsyncDisposableStack();
  const dir = await Deno.makeTempDir({ prefix: "vncauthproxy-browser-test-" });
  stack.defer(() => Deno.remove(dir, { recursive: true }));

  const passwordFile = `${dir}/passwd`;
  const obfuscated = await run("vncpasswd", ["-f"], {
    stdin: new TextEncoder().encode(`${PASSWORD}\n${PASSWORD}\n`),
  });
  await Deno.writeFile(passwordFile, obfuscated, { mode: 0o600 });

  const display = freeDisplay();
  const rfbPort = freePort();
  const xvnc = stack.use(spawnDaemon("Xvnc", [
    `:${display}`,
    "-SecurityTypes",
    "VncAuth",
    "-PasswordFile",
    passwordFile,
    "-localhost",
    "-rfbport",
    String(rfbPort),
    "-geometry",
    "64x48",
    "-depth",
    "24",
    // Failed-password tests must not get 127.0.0.1 blacklisted.
    "-BlacklistThreshold",
    "1000",
  ]));
  await waitForPort(rfbPort, xvnc.exited, "Xvnc");
  await run("xsetroot", ["-solid", DESKTOP_COLOUR], {
    env: { DISPLAY: `:${display}` },
  });

  const wsPort = freePort();
  const websockifyArgs: string[] = [];
  if (options.tls) {
    const certificate = stack.use(await makeTestCertificate());
    websockifyArgs.push(
      "--ssl-only",
      "--cert",
      certificate.certFile,
      "--key",
      certificate.keyFile,
    );
  }
  websockifyArgs.push(`127.0.0.1:${wsPort}`, `127.0.0.1:${rfbPort}`);
  const websockify = stack.use(spawnDaemon("websockify", websockifyArgs));
  await waitForPort(wsPort, websockify.exited, "websockify");

  const wsUrl = `${options.tls ? "wss" : "ws"}://127.0.0.1:${wsPort}`;
  const owned = stack.move();
  return { wsUrl, [Symbol.asyncDispose]: () => owned.disposeAsync() };
}

async function fetchStatus(
  url: string,
  init?: RequestInit,
): Promise<[number, string]> {
  const response = await fetch(url, init);
  return [response.status, await response.text()];
}

/** Sends a raw request line, so the path reaches the server unnormalised. */
async function rawStatus(port: number, target: string): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    ),
  );
  const buffer = new Uint8Array(4096);
  const n = await conn.read(buffer);
  const head = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
  return head.split("\r\n")[0];
}

Deno.test(
  "startStaticServer() serves noVNC and the test page, GET/HEAD only, no escapes",
  {
    ignore: NOVNC_DIR === undefined,
  },
  async () => {
    const root = await Deno.makeTempDir({ prefix: "vncauthproxy-static-" });
    try {
      await Deno.mkdir(`${root}/core`);
      await Deno.writeTextFile(`${root}/core/rfb.js`, "export default 1;\n");
      await Deno.symlink("/etc", `${root}/etc-link`);
      await using server = await startStaticServer(root);
      const port = Number(new URL(server.url).port);

      const page = await fetch(server.url + TEST_PAGE_PATH);
      assertEquals(page.status, 200);
      assert(
        (await page.text()).includes('import RFB from "./core/rfb.js"'),
        "Test page does not import core/rfb.js",
      );
      const js = await fetch(`${server.url}/core/rfb.js`);
      assertEquals(
        js.headers.get("content-type"),
        "text/javascript; charset=utf-8",
      );
      assertEquals(await js.text(), "export default 1;\n");

      const head = await fetch(`${server.url}/core/rfb.js`, { method: "HEAD" });
      assertEquals(head.status, 200);
      await head.body?.cancel();

      const post = await fetch(`${server.url}/core/rfb.js`, { method: "POST" });
      assertEquals([post.status, post.headers.get("allow")], [
        405,
        "GET, HEAD",
      ]);
      await post.body?.cancel();

      assertEquals((await fetchStatus(`${server.url}/missing.js`))[0], 404);
      assertEquals((await fetchStatus(`${server.url}/core`))[0], 404);
      assertEquals(
        (await fetchStatus(`${server.url}/etc-link/hostname`))[0],
        404,
      );
      for (
        const target of [
          "/../../../../etc/hostname",
          "/%2e%2e/%2e%2e/%2e%2e/etc/hostname",
          "/core/..%2f..%2f..%2fetc/hostname",
          "/core%5c..%5c..%5cetc/hostname",
          "/%E0%A4%A",
        ]
      ) {
        assertEquals([target, await rawStatus(port, target)], [
          target,
          "HTTP/1.1 404 Not Found",
        ]);
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test(
  "openNoVnc() connects through websockify over ws and reads the desktop colour (needs chromium, Xvnc)",
  {
    ignore: !HAS_STACK,
  },
  async () => {
    await using vnc = await startVncStack({ tls: false });
    await using session = await openNoVnc({
      wsUrl: vnc.wsUrl,
      password: PASSWORD,
    });
    await session.waitForConnected();
    await session.waitForPixel(10, 10, DESKTOP_RGB);
    assertEquals(await session.pixel(63, 47), DESKTOP_RGB);
    await session.disconnect();
    assertEquals(await session.waitForDisconnect(), { clean: true });
    const types = (await session.events()).map((event) => event.type);
    assertEquals(types.filter((type) => type !== "desktopname"), [
      "connect",
      "disconnect",
    ]);
  },
);

Deno.test(
  "openNoVnc() connects through websockify over wss with a self-signed certificate (needs chromium, Xvnc)",
  {
    ignore: !HAS_STACK,
  },
  async () => {
    await using vnc = await startVncStack({ tls: true });
    assert(vnc.wsUrl.startsWith("wss://"), "Expected a wss:// URL");
    await using session = await openNoVnc({
      wsUrl: vnc.wsUrl,
      password: PASSWORD,
      ignoreHttpsErrors: true,
    });
    await session.waitForConnected();
    await session.waitForPixel(32, 24, DESKTOP_RGB);
  },
);

Deno.test(
  "openNoVnc() with a wrong password ends in securityfailure (needs chromium, Xvnc)",
  {
    ignore: !HAS_STACK,
  },
  async () => {
    await using vnc = await startVncStack({ tls: false });
    await using session = await openNoVnc({
      wsUrl: vnc.wsUrl,
      password: "wrong-password",
    });
    const reason = await session.waitForSecurityFailure();
    assert(reason.length > 0, "Expected a failure reason from Xvnc");
    assertEquals(await session.waitForDisconnect(), { clean: false });
    let connected = false;
    await session.waitForConnected().then(() => connected = true, () => {});
    assert(!connected, "Should not have connected");
  },
);
