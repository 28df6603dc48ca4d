/**
 * `main.ts demo` end to end, as a newcomer runs it: a viewer takes the
 * printed address and one-time password, completes the RFB handshake
 * through the proxy and sees the test card's pixels; a used or expired
 * forwarding is followed by a new one; `--backend` goes to another VNC
 * server; Ctrl-C (SIGINT) leaves no process, port or file behind.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BAND_COLOUR,
  BAR_COLOURS,
  CHANGING_RECT,
  renderTestCard,
  TEST_CARD_HEIGHT,
  TEST_CARD_WIDTH,
} from "../../src/testcard/test_card_picture.ts";
import { captureVnc, hasCommand } from "../_util/real_peers.ts";
import { startTestCardServer, TEST_CARD_NAME } from "../../src/testcard/test_card_server.ts";
import { runMain } from "../_util/daemon_process.ts";
import { type DemoProcess, parseVncOffer, startDemo } from "../_util/demo_process.ts";
import {
  connectViewer,
  readRawUpdate,
  readServerInit,
  requestUpdate,
  rgbAt,
} from "../_util/test_viewer.ts";

/** Connects a viewer to the `vnc N:` offer and asserts it shows the test card's bars. */
async function assertViewerSeesTestCard(value: string): Promise<void> {
  const offer = parseVncOffer(value);
  const viewer = await connectViewer({
    host: offer.host,
    port: offer.port,
    password: offer.password,
  });
  try {
    assert.equal(viewer.ok, true, viewer.reason);
    const init = await readServerInit(viewer.duplex);
    assert.deepEqual(init, {
      width: TEST_CARD_WIDTH,
      height: TEST_CARD_HEIGHT,
      name: TEST_CARD_NAME,
    });
    await requestUpdate(viewer.duplex, { width: TEST_CARD_WIDTH, height: 20 });
    const [rect] = await readRawUpdate(viewer.duplex, 4);
    BAR_COLOURS.forEach((colour, i) => {
      const x = i * (TEST_CARD_WIDTH / 8) + 10;
      assert.deepEqual(rgbAt(rect!, x, 10), [...colour], `bar ${i} at x=${x}`);
    });
  } finally {
    viewer.duplex.close();
  }
}

/** True when nothing accepts connections on 127.0.0.1:`port`. */
async function refuses(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return false;
  } catch (error) {
    return error instanceof Deno.errors.ConnectionRefused;
  }
}

/** The processes whose parent is `pid` (the demo starts none; its crypt workers are threads). */
function childPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) children.push(Number(entry.name));
    } catch {
      // Gone meanwhile.
    }
  }
  return children;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function value(demo: DemoProcess, key: string): string {
  const line = demo.lines.find((l) => l.key === key);
  assert.ok(line, `no "${key}" line`);
  return line.value;
}

Deno.test("demo: a viewer at the printed address and password sees the test card; a new forwarding follows", async () => {
  await using demo = startDemo();
  const first = await demo.waitFor("vnc");
  await assertViewerSeesTestCard(first.value);
  const used = await demo.waitFor("used");
  assert.deepEqual([used.n, used.value], [first.n, "vnc"]);
  const second = await demo.waitFor("vnc", { after: first.n });
  assert.notEqual(parseVncOffer(second.value).password, parseVncOffer(first.value).password);
  await assertViewerSeesTestCard(second.value);

  // The printed request is what a panel sends, without its secrets.
  const request = demo.lines.find((l) => l.key === "request" && l.n === first.n)!;
  const body = JSON.parse(request.value);
  assert.equal(body.type, "vnc");
  assert.equal(body.password, "********");
  assert.equal(body.auth_password, "********");
  assert.match(body.auth_user, /^demo-/);
  assert.equal(request.value.includes(parseVncOffer(first.value).password), false);
  assert.deepEqual(
    demo.log.filter((line) => line.includes(parseVncOffer(first.value).password)),
    [],
    "a one-time password in the log",
  );
});

Deno.test({
  name: hasCommand("gvnccapture") && hasCommand("script")
    ? "demo: gvnccapture (a real desktop viewer) at the printed address and password captures the test card"
    : "IGNORED (needs gvnccapture, script): demo with a real desktop viewer",
  ignore: !hasCommand("gvnccapture") || !hasCommand("script"),
  async fn() {
    await using demo = startDemo();
    const offer = parseVncOffer((await demo.waitFor("vnc")).value);
    const image = await captureVnc({
      host: offer.host,
      port: offer.port,
      password: offer.password,
    });
    assert.deepEqual([image.width, image.height], [TEST_CARD_WIDTH, TEST_CARD_HEIGHT]);
    // The bars never change: every pixel of them is the test card's.
    const bars = CHANGING_RECT.y * TEST_CARD_WIDTH * 3;
    assert.deepEqual(image.data.subarray(0, bars), renderTestCard(0).subarray(0, bars));
    assert.deepEqual(image.pixel(1, TEST_CARD_HEIGHT - 1), [...BAND_COLOUR]);
  },
});

Deno.test("demo --ttl 1: an unused forwarding expires and a new one is printed", async () => {
  await using demo = startDemo(["--ttl=1"]);
  const first = await demo.waitFor("vnc");
  const expired = await demo.waitFor("expired", { timeoutMs: 10_000 });
  assert.ok(["vnc", "browser", "websocket"].includes(expired.value));
  const next = await demo.waitFor("vnc", { after: first.n });
  await assertViewerSeesTestCard(next.value);
});

Deno.test("demo --backend HOST:PORT forwards to that VNC server and refreshes after a use", async () => {
  await using card = startTestCardServer();
  await using demo = startDemo([`--backend=127.0.0.1:${card.port}`]);
  assert.equal((await demo.waitFor("backend")).value, `127.0.0.1:${card.port}`);
  const first = await demo.waitFor("vnc");
  await assertViewerSeesTestCard(first.value);
  assert.equal(card.viewers, 1);
  assert.equal((await demo.waitFor("used")).n, first.n);
  await demo.waitFor("vnc", { after: first.n });
});

Deno.test("demo: SIGINT, with a viewer connected, leaves no process, port or temporary file", async () => {
  const demo = startDemo();
  try {
    const vnc = await demo.waitFor("vnc");
    const browser = await demo.waitFor("browser").catch(() => demo.waitFor("websocket"));
    const files = value(demo, "files");
    assert.equal(exists(`${files}/users`), true);
    const ports = [
      Number(/:(\d+) \(test card\)$/.exec(value(demo, "backend"))![1]),
      Number(/:(\d+) user /.exec(value(demo, "control"))![1]),
      Number(new URL(browser.value).port),
      parseVncOffer(vnc.value).port,
    ];
    const offer = parseVncOffer(vnc.value);
    const viewer = await connectViewer({
      host: offer.host,
      port: offer.port,
      password: offer.password,
    });
    assert.equal(viewer.ok, true);
    await readServerInit(viewer.duplex);
    await demo.waitFor("used");
    const children = childPids(demo.child.pid);

    demo.child.kill("SIGINT");
    const status = await demo.status;
    assert.equal(status.code, 0, demo.log.join("\n"));
    assert.equal(await viewer.duplex.read(new Uint8Array(1)), null, "the viewer was not let go");
    viewer.duplex.close();

    assert.equal(value(demo, "stopped"), `removed ${files}`);
    assert.equal(exists(files), false, `${files} is still there`);
    for (const pid of [demo.child.pid, ...children]) {
      assert.equal(exists(`/proc/${pid}`), false, `process ${pid} is still there`);
    }
    for (const port of ports) assert.equal(await refuses(port), true, `port ${port} still accepts`);
  } finally {
    await demo[Symbol.asyncDispose]();
  }
});

Deno.test("demo --help names every flag and the output lines", async () => {
  const { code, stdout } = await runMain(["demo", "--help"]);
  assert.equal(code, 0);
  for (const flag of ["--backend", "--web", "--ttl", "--listen-port", "--gateway-port"]) {
    assert.ok(stdout.includes(flag), flag);
  }
  for (const key of ["browser N:", "vnc N:", "request N:", "used N:", "expired N:", "stopped:"]) {
    assert.ok(stdout.includes(key), key);
  }
});
