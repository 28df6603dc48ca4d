/**
 * The control server's password check, in process: failed-login limits,
 * the crypt pool's refusals, and what reaches the reply and the log. A
 * scripted duplex stands in for the connection so each request can come
 * from any source address.
 */

import { SessionRegistry } from "../../../src/session/session_registry.ts";
import assert from "node:assert/strict";
import { CryptBusyError, CryptFailedError } from "../../../src/auth/crypt_pool.ts";
import { hashPassword, shaCrypt } from "../../../src/auth/sha_crypt.ts";
import { type CryptFunction, UserDb } from "../../../src/auth/user_db.ts";
import { resolveConfig } from "../../../src/config.ts";
import { AuthFailLimiter } from "../../../src/auth/auth_fail_limiter.ts";
import {
  type ControlServerDeps,
  handleControlConnection,
} from "../../../src/control/snf/control_server.ts";
import { PortPool } from "../../../src/session/port_pool.ts";
import type { Duplex } from "../../../src/io/duplex.ts";
import { createLogger } from "../../../src/log.ts";
import { forwardingRequestJson, randomPool } from "../../_util/daemon_process.ts";

const PASSWORD = "c0ntrol-Secret!";
const HASH = hashPassword(PASSWORD);

/** A connection that sends `text` from `remoteAddress` and keeps the reply. */
class ScriptedControl implements Duplex {
  readonly remoteAddress: string;
  #request: Uint8Array | undefined;
  reply = "";

  constructor(text: string, remoteAddress: string) {
    this.#request = new TextEncoder().encode(text);
    this.remoteAddress = remoteAddress;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    const request = this.#request;
    this.#request = undefined;
    if (request === undefined) return Promise.resolve(null);
    buffer.set(request);
    return Promise.resolve(request.length);
  }

  write(data: Uint8Array): Promise<void> {
    this.reply += new TextDecoder().decode(data);
    return Promise.resolve();
  }

  close(): void {}
}

/** Control-server deps around `crypt`, a limiter on a test clock, and a log. */
function harness(options: { crypt?: CryptFunction; perSecond?: number } = {}) {
  const calls: string[] = [];
  const crypt = options.crypt ?? ((password: string, setting: string) => {
    calls.push(setting);
    return shaCrypt(password, setting);
  });
  let now = 0;
  const lines: string[] = [];
  const logger = createLogger({ level: "debug", sinks: [{ write: (l) => lines.push(l) }] });
  const pool = randomPool(4);
  let users = new UserDb(new Map([["admin", HASH]]), { crypt });
  const deps: ControlServerDeps = {
    config: resolveConfig({ connectRetries: 1, retryWaitMs: 0 }),
    logger,
    users: () => users,
    ports: new PortPool(pool.min, pool.max),
    tls: () => undefined,
    proxyAddress: "127.0.0.1",
    stopping: new AbortController().signal,
    closing: new AbortController().signal,
    // The VNC server refuses: no session ever starts here.
    sessions: new SessionRegistry(),
    // A VNC server that refuses at once: an authenticated request ends there.
    connect: () => Promise.reject(new Deno.errors.ConnectionRefused("refused")),
    authFailures: new AuthFailLimiter({ perSecond: options.perSecond ?? 5 }, { now: () => now }),
  };
  return {
    calls,
    lines,
    /** Replaces the users, as a reload does (the cache starts empty). */
    reload() {
      users = new UserDb(new Map([["admin", HASH]]), { crypt });
    },
    advance(ms: number) {
      now += ms;
    },
    /** Sends one request from `address`; resolves to the reply's reason. */
    async send(address: string, user: string, password: string): Promise<string> {
      const control = new ScriptedControl(
        forwardingRequestJson({
          auth_user: user,
          auth_password: password,
          destination_port: 5900,
          password: "0neTime8",
        }),
        `${address}:40000`,
      );
      await handleControlConnection(control, deps, { logger });
      return JSON.parse(control.reply).reason;
    },
  };
}

const AUTHENTICATED = "cannot connect to VNC server";

Deno.test("failed logins over --auth-fail-limit are answered without a crypt, and logged", async () => {
  const h = harness();
  for (let i = 0; i < 10; i++) {
    assert.equal(await h.send("192.0.2.1", "admin", `wrong${i}`), "authentication failed");
  }
  assert.equal(h.calls.length, 10, "the burst of 10 is checked");
  assert.equal(await h.send("192.0.2.1", "admin", "wrong-again"), "authentication failed");
  assert.equal(await h.send("192.0.2.1", "nobody", "wrong-again"), "authentication failed");
  assert.equal(h.calls.length, 10, "over the limit: no crypt");
  const limited = h.lines.filter((line) => line.includes("password not checked"));
  assert.equal(limited.length, 2, h.lines.join("\n"));
  assert.match(
    limited[0]!,
    /WARNING: Authentication failed for control user "admin" from 192\.0\.2\.1:40000: too many failed logins for this address, password not checked/,
  );
  h.advance(1000); // 5 tokens back
  for (let i = 0; i < 5; i++) await h.send("192.0.2.1", `user${i}`, "wrong");
  assert.equal(h.calls.length, 15);
  await h.send("192.0.2.1", "user5", "wrong");
  assert.equal(h.calls.length, 15);
  for (const line of h.lines) assert.ok(!line.includes("wrong"), `password in the log: ${line}`);
});

Deno.test("the limit is per source address and per user name", async () => {
  const h = harness();
  // An address guessing user names is limited, other addresses are not.
  for (let i = 0; i < 10; i++) await h.send("192.0.2.1", `guess${i}`, "wrong");
  assert.equal(h.calls.length, 10);
  await h.send("192.0.2.1", "fresh", "wrong");
  assert.equal(h.calls.length, 10, "the address is over its limit");
  await h.send("192.0.2.2", "fresh", "wrong");
  assert.equal(h.calls.length, 11, "another address is checked");
  assert.equal(await h.send("192.0.2.2", "admin", PASSWORD), AUTHENTICATED);

  // Addresses taking turns at one user's password are limited by the user.
  for (let i = 10; i < 20; i++) await h.send(`192.0.2.${i}`, "admin", "wrong");
  assert.equal(h.calls.length, 22);
  assert.equal(await h.send("192.0.2.50", "admin", "wrong"), "authentication failed");
  assert.equal(h.calls.length, 22, "the user is over its limit");
  assert.match(h.lines.join("\n"), /too many failed logins for this user, password not checked/);
  await h.send("192.0.2.50", "operator", "wrong");
  assert.equal(h.calls.length, 23, "another user is checked");
});

Deno.test("successful logins are never limited", async () => {
  const h = harness();
  // Uncached successes (a reload before each) are never charged.
  for (let i = 0; i < 30; i++) {
    h.reload();
    assert.equal(await h.send("192.0.2.1", "admin", PASSWORD), AUTHENTICATED, `#${i}`);
  }
  assert.equal(h.calls.length, 30);
  // Failures still get the whole burst afterwards.
  for (let i = 0; i < 10; i++) await h.send("192.0.2.1", "admin", "wrong");
  assert.equal(h.calls.length, 40);
  // With both the address and the user over the limit, a recently verified
  // password still passes: the cache answers before the limit is looked at.
  assert.equal(await h.send("192.0.2.1", "admin", "wrong"), "authentication failed");
  assert.equal(h.calls.length, 40);
  for (let i = 0; i < 30; i++) {
    assert.equal(await h.send("192.0.2.1", "admin", PASSWORD), AUTHENTICATED, `#${i}`);
  }
  assert.equal(h.calls.length, 40);
});

Deno.test("many correct requests at once, none cached yet, are never limited", async () => {
  // A panel right after a restart: its parallel requests all crypt at once.
  const h = harness();
  const replies = await Promise.all(
    Array.from({ length: 30 }, () => h.send("192.0.2.1", "admin", PASSWORD)),
  );
  // Past the check every one is admitted (the 4-port pool may run out).
  for (const reply of replies) assert.notEqual(reply, "authentication failed");
});

Deno.test("--auth-fail-limit off checks every failed login", async () => {
  const h = harness({ perSecond: 0 });
  for (let i = 0; i < 50; i++) await h.send("192.0.2.1", "admin", "wrong");
  assert.equal(h.calls.length, 50);
});

Deno.test("a full crypt queue is answered `server busy`, and costs no failed-login token", async () => {
  let busy = true;
  const h = harness({
    crypt: (password, setting) =>
      busy ? Promise.reject(new CryptBusyError()) : shaCrypt(password, setting),
  });
  for (let i = 0; i < 20; i++) {
    assert.equal(await h.send("192.0.2.1", "admin", "wrong"), "server busy");
  }
  assert.match(h.lines.join("\n"), /Too many password checks waiting, refusing 192\.0\.2\.1:40000/);
  busy = false;
  assert.equal(await h.send("192.0.2.1", "admin", PASSWORD), AUTHENTICATED);
});

Deno.test("a failed crypt is answered `internal error` and logged, never a hang", async () => {
  const h = harness({
    crypt: () => Promise.reject(new CryptFailedError("The crypt worker threw Error: boom")),
  });
  assert.equal(await h.send("192.0.2.1", "admin", PASSWORD), "internal error");
  assert.match(
    h.lines.join("\n"),
    /ERROR: Control request failed: The crypt worker threw Error: boom/,
  );
  for (const line of h.lines) assert.ok(!line.includes(PASSWORD), `password in the log: ${line}`);
});
