import assert from "node:assert/strict";
import { join, relative } from "node:path";
import {
  CONTENT_TYPES,
  contentSecurityPolicy,
  FALLBACK_CONTENT_TYPE,
  fileBodyChunks,
  StaticFiles,
  type StaticResponse,
} from "../../src/gateway/static_files.ts";
import { concatBytes } from "../../src/io/bytes.ts";

const DEBIAN_NOVNC = "/usr/share/novnc";

/** A web root with a sibling outside it, removed on dispose. */
async function makeTree(): Promise<{ root: string; outside: string } & AsyncDisposable> {
  const base = await Deno.makeTempDir({ prefix: "vncauthproxy-static-" });
  const root = join(base, "web");
  const outside = join(base, "outside");
  await Deno.mkdir(join(root, "app", "styles"), { recursive: true });
  await Deno.mkdir(outside);
  await Deno.writeTextFile(join(root, "vnc.html"), "<!doctype html><title>noVNC</title>\n");
  await Deno.writeTextFile(join(root, "app", "ui.js"), "export default 1;\n");
  await Deno.writeTextFile(join(root, "app", "styles", "base.css"), "body {}\n");
  await Deno.writeTextFile(join(root, "a b.txt"), "space\n");
  await Deno.writeTextFile(join(root, ".secret"), "hidden\n");
  await Deno.writeTextFile(join(root, "Makefile"), "all:\n");
  await Deno.writeFile(join(root, "big.bin"), new Uint8Array(64));
  await Deno.writeTextFile(join(outside, "secret.txt"), "outside\n");
  // Debian's noVNC links vnc_auto.html to vnc.html: inside to inside is fine.
  await Deno.symlink("vnc.html", join(root, "vnc_auto.html"));
  await Deno.symlink("../ui.js", join(root, "app", "styles", "up.js"));
  // Links leading out of the tree, to a file and to a directory.
  await Deno.symlink(join(outside, "secret.txt"), join(root, "escape.txt"));
  await Deno.symlink("../outside", join(root, "linkdir"));
  await Deno.symlink("/etc/passwd", join(root, "passwd.txt"));
  await Deno.symlink("missing.html", join(root, "dangling.html"));
  return {
    root,
    outside,
    [Symbol.asyncDispose]: () => Deno.remove(base, { recursive: true }),
  };
}

function header(response: StaticResponse, name: string): string | undefined {
  const lower = name.toLowerCase();
  return response.headers.find(([key]) => key.toLowerCase() === lower)?.[1];
}

async function bodyBytes(response: StaticResponse): Promise<Uint8Array> {
  if (response.body.kind === "bytes") return response.body.bytes;
  const chunks: Uint8Array[] = [];
  for await (const chunk of fileBodyChunks(response.body)) chunks.push(chunk.slice());
  return concatBytes(chunks);
}

async function get(files: StaticFiles, target: string, method = "GET") {
  using response = await files.serve({ method, target });
  return {
    status: response.status,
    why: response.why,
    type: header(response, "content-type"),
    cache: header(response, "cache-control"),
    length: header(response, "content-length"),
    text: new TextDecoder().decode(await bodyBytes(response)),
  };
}

/**
 * Requests that must get 404: traversal spelled every way that got past a
 * peer (peers.md §10 S7/S8; Nova CVE-2021-3654; CPython CVE-2021-28861),
 * hidden files, directories, and links out of the tree.
 */
const TRAVERSALS = [
  "/../outside/secret.txt",
  "/app/../vnc.html",
  "/app/./ui.js",
  "/./vnc.html",
  "/%2e%2e/outside/secret.txt",
  "/%2E%2E/outside/secret.txt",
  "/.%2e/outside/secret.txt",
  "/%2e./outside/secret.txt",
  "/%2e/vnc.html",
  "/app/%2e%2e/vnc.html",
  "/%252e%252e/outside/secret.txt", // decoded once: a literal "%2e%2e", not ".."
  "/..%2foutside%2fsecret.txt",
  "/app%2fui.js",
  "/app%2Fui.js",
  "/app%5cui.js",
  "/app\\ui.js",
  "/..\\outside\\secret.txt",
  "/vnc.html%00",
  "/vnc.html%00.png",
  "/vnc.html\x00",
  "/%c0%ae%c0%ae/outside/secret.txt", // overlong UTF-8 dots
  "/%zz",
  "/vnc.html%",
  "//etc/passwd",
  "///etc/passwd",
  "//evil.example/",
  "/app//ui.js",
  "/vnc.html/",
  "/app/",
  "/app",
  "/app/styles",
  "/.secret",
  "/%2esecret",
  "/escape.txt",
  "/linkdir/secret.txt",
  "/passwd.txt",
  "/dangling.html",
  "/missing.html",
  "/vnc.html/x",
  "http://localhost/vnc.html",
  "*",
  "",
  "vnc.html",
  `/${"a".repeat(2000)}`,
] as const;

Deno.test("StaticFiles.serve() answers 404 to every traversal, hidden file and directory", async () => {
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root);
  for (const target of TRAVERSALS) {
    const response = await get(files, target);
    assert.equal(response.status, 404, `${JSON.stringify(target)}: ${response.text}`);
    assert.equal(response.text, "Not found\n");
    assert.ok(response.why !== undefined && !response.why.includes("secret"), response.why);
  }
});

Deno.test("StaticFiles.serve() serves files, links inside the tree and '/' as the index", async () => {
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root);
  const html = await Deno.readTextFile(join(tree.root, "vnc.html"));
  const table: [string, string, string][] = [
    ["/", "text/html; charset=utf-8", html],
    ["/?token=abc&x=/../..", "text/html; charset=utf-8", html],
    ["/vnc.html", "text/html; charset=utf-8", html],
    ["/vnc_auto.html", "text/html; charset=utf-8", html],
    ["/app/ui.js", "text/javascript; charset=utf-8", "export default 1;\n"],
    ["/app/ui.js?v=1", "text/javascript; charset=utf-8", "export default 1;\n"],
    ["/app/styles/up.js", "text/javascript; charset=utf-8", "export default 1;\n"],
    ["/app/styles/base.css", "text/css; charset=utf-8", "body {}\n"],
    ["/%61pp/ui.js", "text/javascript; charset=utf-8", "export default 1;\n"],
    ["/a%20b.txt", "text/plain; charset=utf-8", "space\n"],
    ["/Makefile", FALLBACK_CONTENT_TYPE, "all:\n"],
  ];
  for (const [target, type, text] of table) {
    const response = await get(files, target);
    assert.equal(response.status, 200, target);
    assert.equal(response.type, type, target);
    assert.equal(response.text, text, target);
    assert.equal(response.length, String(new TextEncoder().encode(text).length), target);
    assert.equal(response.why, undefined);
  }
});

Deno.test("StaticFiles.serve() sends nosniff, CSP, Referrer-Policy and Cache-Control", async () => {
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root, { maxAgeSeconds: 120 });
  for (const target of ["/", "/app/ui.js", "/missing", "/.."]) {
    using response = await files.serve({ method: "GET", target });
    assert.equal(header(response, "x-content-type-options"), "nosniff", target);
    assert.equal(header(response, "referrer-policy"), "no-referrer", target);
    const csp = header(response, "content-security-policy") ?? "";
    assert.match(csp, /(^|; )frame-ancestors 'none'(;|$)/, target);
    assert.match(csp, /(^|; )default-src 'none'(;|$)/, target);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/, target);
  }
  assert.equal((await get(files, "/")).cache, "no-cache");
  assert.equal((await get(files, "/vnc_auto.html")).cache, "no-cache");
  assert.equal((await get(files, "/app/ui.js")).cache, "max-age=120");
  assert.equal((await get(files, "/missing")).cache, "no-store");
});

Deno.test("contentSecurityPolicy() names extra WebSocket origins and refuses anything else", async () => {
  assert.match(contentSecurityPolicy(), /(^|; )connect-src 'self'(;|$)/);
  assert.match(
    contentSecurityPolicy(["wss://console.example:8443", "ws://[::1]:6080"]),
    /(^|; )connect-src 'self' wss:\/\/console\.example:8443 ws:\/\/\[::1\]:6080(;|$)/,
  );
  for (
    const bad of [
      "https://console.example",
      "wss://console.example/path",
      "wss://console.example; script-src *",
      "wss://*.example",
      "'unsafe-inline'",
      "",
    ]
  ) {
    assert.throws(() => contentSecurityPolicy([bad]), TypeError, bad);
  }
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root, { webSocketOrigins: ["wss://c.example"] });
  using response = await files.serve({ method: "GET", target: "/" });
  assert.equal(header(response, "content-security-policy"), files.contentSecurityPolicy);
  assert.match(files.contentSecurityPolicy, /connect-src 'self' wss:\/\/c\.example;/);
});

Deno.test("StaticFiles.serve() answers HEAD with the length and no body, and no open file", async () => {
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root);
  using response = await files.serve({ method: "HEAD", target: "/app/ui.js" });
  assert.equal(response.status, 200);
  assert.equal(header(response, "content-length"), "18");
  assert.equal(header(response, "content-type"), "text/javascript; charset=utf-8");
  assert.deepEqual(response.body, { kind: "bytes", bytes: new Uint8Array(0) });
  using missing = await files.serve({ method: "HEAD", target: "/../x" });
  assert.equal(missing.status, 404);
  assert.equal(header(missing, "content-length"), "10");
  assert.equal(missing.body.kind === "bytes" && missing.body.bytes.length, 0);
});

Deno.test("StaticFiles.serve() answers 405 with Allow to methods other than GET and HEAD", async () => {
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root);
  for (const method of ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get", "head"]) {
    using response = await files.serve({ method, target: "/vnc.html" });
    assert.equal(response.status, 405, method);
    assert.equal(header(response, "allow"), "GET, HEAD", method);
    assert.equal(response.body.kind, "bytes", method);
  }
});

Deno.test("StaticFiles.serve() refuses files over the size cap and non-regular files", async () => {
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root, { maxFileBytes: 63 });
  assert.equal((await get(files, "/big.bin")).status, 404);
  assert.equal((await get(files, "/big.bin")).why, "file is over the size limit");
  const exact = await StaticFiles.create(tree.root, { maxFileBytes: 64 });
  assert.equal((await get(exact, "/big.bin")).status, 200);

  // A FIFO must be refused before it is opened: opening it would block.
  const mkfifo = await new Deno.Command("mkfifo", { args: [join(tree.root, "pipe.txt")] })
    .output();
  assert.ok(mkfifo.success, "mkfifo failed");
  const pipe = await get(files, "/pipe.txt");
  assert.equal(pipe.status, 404);
  assert.equal(pipe.why, "path is not a regular file");
});

Deno.test("fileBodyChunks() sends exactly Content-Length bytes of a file that changed", async () => {
  await using tree = await makeTree();
  const files = await StaticFiles.create(tree.root);
  const path = join(tree.root, "app", "ui.js");
  {
    using grown = await files.serve({ method: "GET", target: "/app/ui.js" });
    await Deno.writeTextFile(path, "// more\n", { append: true });
    assert.equal(new TextDecoder().decode(await bodyBytes(grown)), "export default 1;\n");
  }
  {
    using shrunk = await files.serve({ method: "GET", target: "/app/ui.js" });
    await Deno.truncate(path, 4);
    await assert.rejects(() => bodyBytes(shrunk), RangeError);
  }
});

Deno.test("StaticFiles.create() fails at start-up on a missing root or index file", async () => {
  await using tree = await makeTree();
  await assert.rejects(() => StaticFiles.create(join(tree.root, "nope")), Deno.errors.NotFound);
  await assert.rejects(() => StaticFiles.create(join(tree.root, "vnc.html")), TypeError);
  await assert.rejects(() => StaticFiles.create(tree.outside), /no index file "vnc.html"/);
  await assert.rejects(
    () => StaticFiles.create(tree.root, { indexFile: "escape.txt" }),
    /no index file/,
  );
  await assert.rejects(() => StaticFiles.create(tree.root, { indexFile: "app" }), /no index file/);
  await assert.rejects(() => StaticFiles.create(tree.root, { maxFileBytes: -1 }), TypeError);
  const custom = await StaticFiles.create(tree.root, { indexFile: "app/ui.js" });
  assert.equal((await get(custom, "/")).text, "export default 1;\n");
  assert.equal(custom.root, await Deno.realPath(tree.root));
});

Deno.test("StaticFiles.serve() resolves the root once, through a symlinked root", async () => {
  await using tree = await makeTree();
  const link = `${tree.root}-link`;
  await Deno.symlink(tree.root, link);
  try {
    const files = await StaticFiles.create(link);
    assert.equal(files.root, await Deno.realPath(tree.root));
    assert.equal((await get(files, "/app/ui.js")).status, 200);
    assert.equal((await get(files, "/escape.txt")).status, 404);
  } finally {
    await Deno.remove(link);
  }
});

Deno.test("StaticFiles serves every file of Debian's noVNC with a known type", {
  ignore: !isDirectory(DEBIAN_NOVNC),
}, async () => {
  const files = await StaticFiles.create(DEBIAN_NOVNC);
  // Debian's noVNC 1.3.0 ships these without a web type: build files and
  // scripts nobody loads in a page. Anything else falling back is a gap in
  // the table.
  const expectedFallbacks = new Set([
    "app/images/icons/Makefile",
    "app/locale/README",
    "app/sounds/CREDITS",
    "utils/b64-to-binary.pl",
    "utils/novnc_proxy",
    "utils/u2x11",
    "utils/validate",
  ]);
  const fallbacks: string[] = [];
  let served = 0;
  for (const path of await walk(DEBIAN_NOVNC)) {
    const name = relative(DEBIAN_NOVNC, path);
    const target = "/" + name.split("/").map(encodeURIComponent).join("/");
    using response = await files.serve({ method: "GET", target });
    assert.equal(response.status, 200, `${target}: ${response.why}`);
    const type = header(response, "content-type") ?? "";
    if (type === FALLBACK_CONTENT_TYPE) fallbacks.push(name);
    else assert.ok(Object.values(CONTENT_TYPES).includes(type), `${name}: ${type}`);
    if (type.startsWith("text/")) assert.match(type, /; charset=utf-8$/, name);
    const size = (await Deno.stat(path)).size;
    assert.equal(header(response, "content-length"), String(size), name);
    assert.equal(response.body.kind === "file" && response.body.length, size, name);
    served++;
  }
  assert.ok(served > 100, `only ${served} files under ${DEBIAN_NOVNC}`);
  assert.deepEqual(fallbacks.filter((name) => !expectedFallbacks.has(name)), []);

  const index = await get(files, "/");
  assert.equal(index.type, "text/html; charset=utf-8");
  assert.equal(index.text, await Deno.readTextFile(join(DEBIAN_NOVNC, "vnc.html")));
  assert.equal((await get(files, "/vnc_auto.html")).text, index.text);
  assert.equal((await get(files, "/app/ui.js")).type, "text/javascript; charset=utf-8");
  assert.equal((await get(files, "/app/styles/Orbitron700.woff")).type, "font/woff");
  assert.equal((await get(files, "/app/locale/de.json")).type, "application/json");
  assert.equal((await get(files, "/app/")).status, 404);
  assert.equal((await get(files, "/core/../vnc.html")).status, 404);
});

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Every file and symlink under `dir`, recursively, sorted. */
async function walk(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) found.push(...await walk(path));
    else found.push(path);
  }
  return found.sort();
}
