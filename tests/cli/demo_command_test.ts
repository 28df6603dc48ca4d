/**
 * `vncauthproxy demo`'s command line and its printed request, without
 * running it (tests/e2e/demo_test.ts runs it).
 *
 * @module
 */

import assert from "node:assert/strict";
import { DEFAULT_CONFIG } from "../../src/config.ts";
import { UsageError } from "../../src/errors.ts";
import {
  DEBIAN_NOVNC_DIR,
  demoHelp,
  MASK,
  maskedRequestText,
  parseDemoArgs,
} from "../../src/cli/demo_command.ts";

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

Deno.test("parseDemoArgs: defaults are loopback-friendly (any free port, the test card, 60 s)", () => {
  assert.deepEqual(parseDemoArgs([]), {
    backend: undefined,
    webDir: isFile(`${DEBIAN_NOVNC_DIR}/vnc.html`) ? DEBIAN_NOVNC_DIR : undefined,
    ttlMs: 60_000,
    listenPort: 0,
    gatewayPort: 0,
    minPort: DEFAULT_CONFIG.minPort,
    maxPort: DEFAULT_CONFIG.maxPort,
    debug: false,
  });
});

Deno.test("parseDemoArgs: --backend, --web, --ttl and the ports are taken as given", () => {
  const settings = parseDemoArgs([
    "--backend=[::1]:5901",
    "--web",
    "/srv/novnc",
    "--ttl=2.5",
    "--listen-port=24999",
    "--gateway-port=8080",
    "--min-port=26000",
    "--max-port=26010",
    "-d",
  ]);
  assert.deepEqual(settings, {
    backend: { host: "::1", port: 5901 },
    webDir: "/srv/novnc",
    ttlMs: 2500,
    listenPort: 24999,
    gatewayPort: 8080,
    minPort: 26000,
    maxPort: 26010,
    debug: true,
  });
  assert.equal(parseDemoArgs(["-h"]), "help");
});

for (
  const args of [
    ["--backend=localhost"],
    ["--backend=host:99999"],
    ["--ttl=0"],
    ["--ttl=-1"],
    ["--ttl=100000"],
    ["extra"],
    ["--no-such-flag"],
  ]
) {
  Deno.test(`parseDemoArgs ${JSON.stringify(args)} is a usage error`, () => {
    assert.throws(() => parseDemoArgs(args), UsageError);
  });
}

Deno.test("maskedRequestText: a VNC server's own password is masked too", () => {
  const text = maskedRequestText({
    destinationAddress: "127.0.0.1",
    destinationPort: 5900,
    destinationPassword: "hyp3rvisor",
    authUser: "demo-abcd",
    authPassword: "c0ntrol-secret",
    password: "0neTime!",
    type: "vnc",
  });
  for (const secret of ["hyp3rvisor", "c0ntrol-secret", "0neTime!"]) {
    assert.equal(text.includes(secret), false, secret);
  }
  assert.equal(typeof JSON.parse(text).destination_password, "string");
});

Deno.test("maskedRequestText: the request as sent, with both passwords masked", () => {
  const text = maskedRequestText({
    destinationAddress: "127.0.0.1",
    destinationPort: 5900,
    authUser: "demo-abcd",
    authPassword: "c0ntrol-secret",
    password: "0neTime!",
    type: "vnc",
  });
  assert.equal(text.includes("c0ntrol-secret"), false);
  assert.equal(text.includes("0neTime!"), false);
  assert.deepEqual(JSON.parse(text), {
    source_port: 0,
    destination_address: "127.0.0.1",
    destination_port: 5900,
    password: MASK,
    auth_user: "demo-abcd",
    auth_password: MASK,
    type: "vnc",
  });
  const token = JSON.parse(maskedRequestText({
    destinationAddress: "127.0.0.1",
    destinationPort: 5900,
    authUser: "u",
    authPassword: "p",
    type: "vnc-ws",
    gateway: true,
    ttl: 60,
  }));
  assert.deepEqual(token, {
    source_port: 0,
    destination_address: "127.0.0.1",
    destination_port: 5900,
    auth_user: "u",
    auth_password: MASK,
    type: "vnc-ws",
    gateway: true,
    ttl: 60,
  });
});

Deno.test("demoHelp names every output line key", () => {
  const help = demoHelp();
  for (
    const key of ["backend:", "control:", "files:", "request N:", "browser N:", "websocket N:"]
  ) {
    assert.ok(help.includes(key), key);
  }
  for (const key of ["vnc N:", "used N:", "expired N:", "failed N:", "stopped:"]) {
    assert.ok(help.includes(key), key);
  }
});
