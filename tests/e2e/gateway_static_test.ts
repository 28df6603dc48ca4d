/**
 * End to end: the static noVNC tree (`--web`) through the real gateway,
 * raw HTTP over TLS and over `--gateway-plain`: the traversal table of
 * peers.md S7 (`..`, `%2e%2e`, `//`, `///`, NUL, backslashes, `%5c`,
 * directories, absolute-form targets), symlinks leading out of the tree,
 * methods other than GET and HEAD, and the headers of a good file.
 */

import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { type GatewayDaemon, startGatewayDaemon } from "../_util/gateway.ts";
import { type HttpResponse, rawHttpRequest } from "../_util/raw_websocket.ts";
import { hasOpenssl } from "../_util/tls.ts";

const NOVNC = "/usr/share/novnc";
const USERS = { admin: "c0ntrol-Secret!" };
const ignore = !hasOpenssl() || !isDirectory(NOVNC);

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Sends one raw request to the gateway, over TLS unless it is plain. */
function send(gw: GatewayDaemon, request: string | Uint8Array): Promise<HttpResponse> {
  const cert = gw.certificate?.cert;
  return rawHttpRequest(gw.gatewayPort, request, "127.0.0.1", {
    ...(cert ? { tls: { caCerts: [cert], hostname: "localhost" } } : {}),
  });
}

function get(gw: GatewayDaemon, target: string, method = "GET"): Promise<HttpResponse> {
  return send(gw, `${method} ${target} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
}

/**
 * Every way out of the tree, or into something that is not a file, that a
 * request path can spell: each must be a plain 404 (never a redirect, never
 * a listing, never another file's bytes).
 */
const REFUSED_PATHS: readonly string[] = [
  "/../../../../etc/passwd",
  "/app/../vnc.html", // inside the tree, but no `..` is ever resolved
  "/..",
  "/.",
  "/./vnc.html",
  "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
  "/%2E%2E/%2E%2E/etc/passwd",
  "/app/%2e%2e/vnc.html",
  "/%2e/vnc.html",
  "/.%2e/etc/passwd",
  "/..%2f..%2f..%2fetc%2fpasswd",
  "/%2fetc%2fpasswd",
  "/%252e%252e/%252e%252e/etc/passwd", // decoded once: a name with `%2e` in it
  "//etc/passwd",
  "///etc/passwd",
  "//evil.example/",
  "///evil.example/%2f..",
  "/app//ui.js",
  "/app/ui.js/",
  "/vnc.html%00",
  "/vnc.html%00.txt",
  "/%00/etc/passwd",
  "/app%5c..%5cvnc.html",
  "/%5c..%5c..%5cetc%5cpasswd",
  "/app\\ui.js",
  "/..\\..\\etc\\passwd",
  "/app/",
  "/app",
  "/core/",
  "/vendor/pako",
  "/etc/passwd",
  "/no-such-file.html",
  "/%",
  "/%zz",
  `/${"a/".repeat(600)}vnc.html`,
  "http://localhost/vnc.html", // absolute form: not an origin-form path
  "http://localhost/../../etc/passwd",
  "*",
];

/** Good files: their content type and Cache-Control. */
const GOOD_FILES: readonly (readonly [string, string, string])[] = [
  ["/vnc.html", "text/html; charset=utf-8", "no-cache"],
  ["/vnc_auto.html", "text/html; charset=utf-8", "no-cache"], // a symlink inside the tree
  ["/vnc_lite.html?path=websockify%3Ftoken%3Dx", "text/html; charset=utf-8", "no-cache"],
  ["/app/ui.js", "text/javascript; charset=utf-8", "max-age=600"],
  ["/core/rfb.js", "text/javascript; charset=utf-8", "max-age=600"],
  ["/app/styles/base.css", "text/css; charset=utf-8", "max-age=600"],
  ["/app/images/connect.svg", "image/svg+xml", "max-age=600"],
  ["/app/locale/de.json", "application/json", "max-age=600"],
  ["/app/styles/Orbitron700.woff", "font/woff", "max-age=600"],
  ["/app/sounds/bell.oga", "audio/ogg", "max-age=600"],
  ["/app/sounds/CREDITS", "application/octet-stream", "max-age=600"],
  ["/%61pp/ui%2Ejs", "text/javascript; charset=utf-8", "max-age=600"], // decoded once, harmless
];

function assertSecurityHeaders(response: HttpResponse, what: string): void {
  assert.equal(response.headers.get("x-content-type-options"), "nosniff", what);
  assert.equal(response.headers.get("location"), null, `${what}: no redirect`);
}

function assertStaticHeaders(response: HttpResponse, what: string): void {
  assertSecurityHeaders(response, what);
  const csp = response.headers.get("content-security-policy") ?? "";
  assert.match(csp, /(^|; )frame-ancestors 'none'(;|$)/, `${what}: CSP frame-ancestors`);
  assert.match(csp, /(^|; )default-src 'none'(;|$)/, `${what}: CSP default-src`);
}

async function checkTraversalTable(gw: GatewayDaemon): Promise<void> {
  const index = await Deno.readTextFile(join(NOVNC, "vnc.html"));
  for (const path of REFUSED_PATHS) {
    const response = await get(gw, path);
    assert.equal(response.status, 404, `${path}: ${response.status}`);
    assertStaticHeaders(response, path);
    assert.equal(response.body, "Not found\n", `${path}: no listing, no file`);
  }

  // A NUL or a space in the target itself is no HTTP request at all.
  for (const target of ["/vnc.html\0", "/\0../etc/passwd", "/vnc\x01.html"]) {
    const response = await get(gw, target);
    assert.equal(response.status, 400, JSON.stringify(target));
    assertSecurityHeaders(response, JSON.stringify(target));
  }

  for (const [path, type, cacheControl] of GOOD_FILES) {
    const response = await get(gw, path);
    assert.equal(response.status, 200, path);
    assert.equal(response.headers.get("content-type"), type, path);
    assert.equal(response.headers.get("cache-control"), cacheControl, path);
    assertStaticHeaders(response, path);
    const file = join(NOVNC, decodeURIComponent(path.split("?")[0]!));
    assert.equal(Number(response.headers.get("content-length")), (await Deno.stat(file)).size);
  }

  // `/` is vnc.html itself, not a listing and not a redirect.
  const root = await get(gw, "/");
  assert.equal(root.status, 200);
  assert.equal(root.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(root.body, index);
  assertStaticHeaders(root, "/");

  // HEAD: the same head, no body.
  const head = await get(gw, "/vnc.html", "HEAD");
  assert.equal(head.status, 200);
  assert.equal(Number(head.headers.get("content-length")), new TextEncoder().encode(index).length);
  assertStaticHeaders(head, "HEAD");

  // Only GET and HEAD (methods are case-sensitive, RFC 9110 §9.1).
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get"]) {
    const response = await get(gw, "/vnc.html", method);
    assert.equal(response.status, 405, method);
    assert.equal(response.headers.get("allow"), "GET, HEAD", method);
    assertStaticHeaders(response, method);
  }
  // A body after the head is refused before any file is touched.
  const post = await send(
    gw,
    "POST /vnc.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nabcd",
  );
  assert.ok([400, 405].includes(post.status), `POST with a body: ${post.status}`);
}

Deno.test({
  name: "gateway --web over TLS: the traversal table is 404, good files get type, cache and CSP",
  ignore,
}, async () => {
  await using gw = await startGatewayDaemon({ users: USERS, args: [`--web=${NOVNC}`] });
  await checkTraversalTable(gw);
});

Deno.test({
  name: "gateway --web over --gateway-plain: the same traversal table and headers",
  ignore,
}, async () => {
  await using gw = await startGatewayDaemon({
    users: USERS,
    plain: true,
    args: [`--web=${NOVNC}`],
  });
  await checkTraversalTable(gw);
});

Deno.test({
  name: "gateway --web: symlinks leading out of DIR are 404, one staying inside is served",
  ignore,
}, async () => {
  const outside = await Deno.makeTempDir({ prefix: "vap-outside-" });
  const web = await Deno.makeTempDir({ prefix: "vap-web-" });
  try {
    await Deno.writeTextFile(join(outside, "secret.txt"), "top secret\n");
    await Deno.mkdir(join(outside, "dir"));
    await Deno.writeTextFile(join(outside, "dir", "inner.js"), "secret();\n");
    await Deno.writeTextFile(join(web, "vnc.html"), "<!doctype html><title>vnc</title>\n");
    await Deno.mkdir(join(web, "app"));
    await Deno.writeTextFile(join(web, "app", "ui.js"), "ui();\n");
    await Deno.symlink(join(outside, "secret.txt"), join(web, "secret.txt"));
    await Deno.symlink(join(outside, "dir"), join(web, "linked"));
    // Two levels up: the temp directory holding both trees.
    await Deno.symlink("../../", join(web, "app", "up"));
    await Deno.symlink("/etc/passwd", join(web, "passwd.txt"));
    await Deno.symlink("/", join(web, "rootfs"));
    await Deno.symlink("app/ui.js", join(web, "inside.js"));
    await Deno.symlink("app", join(web, "applink"));

    await using gw = await startGatewayDaemon({
      users: USERS,
      plain: true,
      args: [`--web=${web}`],
    });
    for (
      const path of [
        "/secret.txt",
        "/linked/inner.js",
        "/linked/",
        "/passwd.txt",
        "/rootfs/etc/passwd",
        `/app/up/${basename(outside)}/secret.txt`,
        `/app/up/${basename(outside)}/dir/inner.js`,
      ]
    ) {
      const response = await get(gw, path);
      assert.equal(response.status, 404, path);
      assert.equal(response.body, "Not found\n", path);
      assertStaticHeaders(response, path);
    }
    // Links whose target is inside DIR, however they get there, are served.
    for (
      const path of [
        "/inside.js",
        "/applink/ui.js",
        "/app/ui.js",
        `/app/up/${basename(web)}/app/ui.js`,
      ]
    ) {
      const response = await get(gw, path);
      assert.equal(response.status, 200, path);
      assert.equal(response.body, "ui();\n", path);
      assert.equal(response.headers.get("content-type"), "text/javascript; charset=utf-8");
    }
    const root = await get(gw, "/");
    assert.equal(root.status, 200);
    assert.equal(root.body, "<!doctype html><title>vnc</title>\n");
    assert.ok(
      !gw.daemon.lines.some((line) => line.includes("top secret") || line.includes(outside)),
      "nothing of the outside tree is logged",
    );
  } finally {
    await Deno.remove(web, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});
