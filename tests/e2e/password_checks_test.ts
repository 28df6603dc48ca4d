/**
 * End to end: control password checks never stall the daemon. `main.ts`
 * runs as a subprocess; a flood of unknown-user control requests must not
 * stop a live console session from relaying (the crypt runs in Workers),
 * and a users file whose `rounds=` would freeze a check is refused at
 * start-up and on SIGHUP.
 */

import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import type { Duplex } from "../../src/io/duplex.ts";
import { shaCrypt } from "../../src/auth/sha_crypt.ts";
import {
  type DaemonProcess,
  forwardingRequestJson,
  rawControl,
  runMain,
  startDaemon,
} from "../_util/daemon_process.ts";
import { runControlFlood } from "../_util/control_flood.ts";
import { type FakeVncServer, startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "0neTime8";
const FLOOD_CLIENTS = 32;
const FLOOD_MS = 3_000;
/**
 * Echo round trips the session must complete during the flood. With the
 * crypt on the event loop it managed 4 in 3 s; with Workers, hundreds.
 */
const MIN_ROUND_TRIPS = 50;

function request(fakePort: number, fields: Record<string, unknown> = {}): string {
  return forwardingRequestJson({
    auth_password: CONTROL_PASSWORD,
    source_port: 0,
    destination_port: fakePort,
    password: VNC_PASSWORD,
    type: "vnc",
    ...fields,
  });
}

/** Sets up a forwarding and a viewer relaying through it; the caller closes it. */
async function openSession(daemon: DaemonProcess, fake: FakeVncServer): Promise<Duplex> {
  const reply = JSON.parse(await rawControl(daemon.controlPort, request(fake.port)));
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
  try {
    assert.equal(viewer.ok, true);
    await readServerInit(viewer.duplex);
  } catch (error) {
    viewer.duplex.close();
    throw error;
  }
  return viewer.duplex;
}

/** Echo round trips through the session until `until` resolves; their times in ms. */
async function echoUntil(viewer: Duplex, until: Promise<void>): Promise<number[]> {
  let done = false;
  until.then(() => (done = true));
  const message = new TextEncoder().encode("ping-0123456789!");
  const times: number[] = [];
  while (!done) {
    const started = performance.now();
    await viewer.write(message);
    await readExact(viewer, message.length);
    times.push(performance.now() - started);
  }
  return times;
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

async function floodWhileEchoing(args: readonly string[]) {
  await using fake = startFakeVncServer({});
  await using daemon = await startDaemon({ users: { admin: CONTROL_PASSWORD }, args });
  const viewer = await openSession(daemon, fake);
  try {
    const baseline = await echoUntil(viewer, new Promise((resolve) => setTimeout(resolve, 300)));
    const unknownUser = request(fake.port, { auth_user: "nobody", auth_password: "guess" });
    // In its own process: the flood must not slow this test's event loop.
    const flooding = runControlFlood(daemon.controlPort, unknownUser, {
      clients: FLOOD_CLIENTS,
      ms: FLOOD_MS,
    });
    await flooding.started;
    const during = await echoUntil(viewer, flooding.result.then(() => {}));
    const { answered, reasons } = await flooding.result;
    const summary = `${during.length} round trips in ${FLOOD_MS} ms during the flood ` +
      `(p50 ${percentile(during, 0.5).toFixed(2)} ms, p99 ${
        percentile(during, 0.99).toFixed(2)
      } ms; baseline p50 ${percentile(baseline, 0.5).toFixed(2)} ms), ` +
      `${answered} flood requests answered: ${JSON.stringify(reasons)}`;
    if (Deno.env.get("VAP_TEST_LOG")) {
      await Deno.stderr.write(new TextEncoder().encode(`flood ${args.join(" ")}: ${summary}\n`));
    }
    assert.ok(during.length >= MIN_ROUND_TRIPS, `the session stalled: ${summary}`);
    assert.ok(answered > 0, `the flood got no answer at all: ${summary}`);
    for (const reason of Object.keys(reasons)) {
      assert.ok(
        ["authentication failed", "server busy"].includes(reason) || !reason.includes(" "),
        `unexpected reason: ${summary}`,
      );
    }
    // The real user is still served once the flood is over.
    const reply = JSON.parse(await rawControl(daemon.controlPort, request(fake.port)));
    assert.equal(reply.status, "OK", JSON.stringify(reply));
    const second = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
    second.duplex.close();
  } finally {
    viewer.close();
  }
  await daemon.waitForLine(/Session ended/);
  for (const line of daemon.lines) {
    assert.ok(!line.includes("guess") && !line.includes(CONTROL_PASSWORD), `secret: ${line}`);
  }
}

Deno.test("a live session keeps relaying while 32 clients flood unknown-user requests (no limit: every request crypts)", async () => {
  await floodWhileEchoing(["--auth-fail-limit=off"]);
});

Deno.test("a live session keeps relaying while 32 clients flood unknown-user requests (default --auth-fail-limit)", async () => {
  await floodWhileEchoing([]);
});

/** A users file with one line per entry, in its own temp dir. */
async function usersFileWith(
  lines: readonly string[],
): Promise<{ path: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "vap-users-" });
  const path = `${dir}/users`;
  await Deno.writeTextFile(path, lines.map((line) => `${line}\n`).join(""), { mode: 0o600 });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A valid `$6$` line for `user` with `rounds=` (computed at a cheap cost, then relabelled). */
function lineWithRounds(user: string, rounds: number): string {
  // The hash part need not match: only loading is tested, never a check.
  const hash = shaCrypt("x", "$6$rounds=1000$saltsaltsaltsalt").split("$").at(-1);
  return `${user}:$6$rounds=${rounds}$saltsaltsaltsalt$${hash}`;
}

Deno.test("start-up fails with a clear message on rounds= above --max-crypt-rounds", async () => {
  await using users = await usersFileWith([
    `admin:${shaCrypt(CONTROL_PASSWORD, "$6$saltsaltsaltsalt")}`,
    lineWithRounds("slow", 999_999_999),
  ]);
  const started = performance.now();
  const result = await runMain([
    "--listen-port=0",
    `--auth-file=${users.path}`,
    "--proxy-listen-address=127.0.0.1",
  ]);
  assert.equal(result.code, 1, result.stderr);
  assert.ok(performance.now() - started < 15_000, "refused at load, not frozen in a check");
  assert.match(
    result.stderr,
    /ERROR: Cannot load authentication file ".*": Malformed line 2: the hash of user "slow" has rounds=999999999, more than the limit of 20000 \(--max-crypt-rounds\)/,
  );
  assert.ok(!result.stderr.includes("saltsaltsaltsalt"), "no hash in the message");

  // Raising the limit accepts the line.
  await Deno.writeTextFile(users.path, `${lineWithRounds("slow", 30_000)}\n`);
  await using daemon = await startDaemon({
    authFile: users.path,
    args: ["--max-crypt-rounds=30000"],
  });
  assert.ok(daemon.controlPort > 0);
});

Deno.test("SIGHUP with rounds= above --max-crypt-rounds keeps the old users and logs why", async () => {
  await using fake = startFakeVncServer({});
  await using users = await usersFileWith([
    `admin:${shaCrypt(CONTROL_PASSWORD, "$6$saltsaltsaltsalt")}`,
  ]);
  await using daemon = await startDaemon({ authFile: users.path });
  await Deno.writeTextFile(
    users.path,
    `admin:${shaCrypt(CONTROL_PASSWORD, "$6$saltsaltsaltsalt")}\n${
      lineWithRounds("slow", 50_000)
    }\n`,
  );
  daemon.kill("SIGHUP");
  const logged = await daemon.waitForLine(/Keeping the old users/);
  assert.match(
    logged,
    /ERROR: Keeping the old users: cannot reload ".*": Malformed line 2: the hash of user "slow" has rounds=50000, more than the limit of 20000 \(--max-crypt-rounds\)/,
  );
  const reply = JSON.parse(await rawControl(daemon.controlPort, request(fake.port)));
  assert.equal(reply.status, "OK", JSON.stringify(reply));
  const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
  viewer.duplex.close();
  await daemon.waitForLine(/Session ended/);
});
