import assert from "node:assert/strict";
import { type ListenerScheme, OriginPolicy, parseOrigin } from "../../src/http/origin_policy.ts";
import { parseRequestHead } from "../../src/http/request_head.ts";

const LISTED = [
  "https://console.example",
  "http://panel.example:8080",
  "https://[2001:db8::1]:8443",
];

/** Origins a listed page really sends, spelled every way a client might. */
const ALLOWED: readonly [string, ListenerScheme][] = [
  ["https://console.example", "https"],
  ["https://console.example:443", "https"], // default port (RFC 6454 §6.2 drops it)
  ["https://CONSOLE.Example", "https"], // hosts compare case-insensitively
  ["HTTPS://console.example", "https"],
  ["http://panel.example:8080", "http"],
  ["https://[2001:db8::1]:8443", "https"],
  ["https://[2001:DB8:0:0::1]:8443", "https"], // the same IPv6 address, uncompressed
  ["https://console.example", "http"], // TLS terminated by a proxy in front
];

/** The CVE-2015-0259 family and the spellings that got past other checks. */
const REFUSED: readonly [string | undefined, ListenerScheme, RegExp][] = [
  [undefined, "https", /missing/],
  ["", "https", /missing/],
  ["null", "https", /"null"/],
  ["https://evil.example", "https", /not allowed/],
  ["http://console.example", "https", /not allowed/], // scheme mismatch
  ["http://console.example", "http", /not allowed/],
  ["https://console.example:8443", "https", /not allowed/], // port mismatch
  ["https://console.example:80", "https", /not allowed/],
  ["http://panel.example", "http", /not allowed/], // listed with a non-default port
  ["http://panel.example:80", "http", /not allowed/],
  ["https://panel.example:8080", "https", /not allowed/],
  ["https://console.example.evil.example", "https", /not allowed/], // suffix trick
  ["https://evilconsole.example", "https", /not allowed/],
  ["https://sub.console.example", "https", /not allowed/],
  ["https://console.example.", "https", /not allowed/], // trailing dot: another origin
  ["https://[2001:db8::1]", "https", /not allowed/], // listed on 8443
  ["https://[2001:db8::2]:8443", "https", /not allowed/],
  ["https://2001:db8::1:8443", "https", /not a serialized origin/], // no brackets
  ["https://console.example/", "https", /not a serialized origin/],
  ["https://console.example/path", "https", /not a serialized origin/],
  ["https://user@console.example", "https", /not a serialized origin/],
  ["https://evil.example@console.example", "https", /not a serialized origin/],
  ["https://console.example:443x", "https", /not a serialized origin/],
  ["https://console.example:99999", "https", /not a serialized origin/],
  ["https://console.example:", "https", /not a serialized origin/],
  ["https://%63onsole.example", "https", /not a serialized origin/],
  ["https:\\\\console.example", "https", /not a serialized origin/],
  ["https:console.example", "https", /not a serialized origin/],
  ["//console.example", "https", /not a serialized origin/],
  ["console.example", "https", /not a serialized origin/],
  ["https://", "https", /not a serialized origin/], // empty host
  ["://console.example", "https", /not a serialized origin/], // empty scheme
  ["wss://console.example", "https", /not a serialized origin/],
  ["file://", "https", /not a serialized origin/],
  ["chrome-extension://abcdef", "https", /not a serialized origin/],
  [" https://console.example", "https", /not a serialized origin/],
  // A second Origin header, joined by the parser, or a space-separated list
  // (RFC 6455 §4.1 allows exactly one origin on an upgrade).
  ["https://console.example, https://evil.example", "https", /not a serialized origin/],
  ["https://evil.example https://console.example", "https", /not a serialized origin/],
  // Listed, but a plain-HTTP page could be rewritten on the way: not on TLS.
  ["http://panel.example:8080", "https", /plain http on an https listener/],
];

Deno.test("OriginPolicy.check() allows listed origins however they are spelled", () => {
  const policy = new OriginPolicy(LISTED);
  for (const [origin, scheme] of ALLOWED) {
    assert.deepEqual(policy.check(origin, scheme), { ok: true }, `${origin} on ${scheme}`);
  }
});

Deno.test("OriginPolicy.check() refuses missing, null, malformed and mismatched origins", () => {
  const policy = new OriginPolicy(LISTED);
  for (const [origin, scheme, why] of REFUSED) {
    const verdict = policy.check(origin, scheme);
    assert.equal(verdict.ok, false, `${origin} on ${scheme} was allowed`);
    if (!verdict.ok) assert.match(verdict.why, why, `${origin} on ${scheme}`);
  }
});

Deno.test("OriginPolicy.check() matches IPv6 and IPv4-mapped literal origins", () => {
  const policy = new OriginPolicy(["http://[::1]:6080", "http://[::ffff:127.0.0.1]"]);
  assert.deepEqual(policy.check("http://[::1]:6080", "http"), { ok: true });
  assert.deepEqual(policy.check("http://[0:0:0:0:0:0:0:1]:6080", "http"), { ok: true });
  assert.deepEqual(policy.check("http://[::ffff:7f00:1]", "http"), { ok: true });
  assert.deepEqual(policy.check("http://[::ffff:127.0.0.1]:80", "http"), { ok: true });
  assert.equal(policy.check("http://[::1]", "http").ok, false);
  assert.equal(policy.check("http://127.0.0.1:6080", "http").ok, false);
  assert.equal(policy.check("http://[::1%25lo]:6080", "http").ok, false);
});

Deno.test("OriginPolicy.check() refuses an evil Origin whatever the Host header says", () => {
  // Nova bug 2158919: the list grew with each request's Host, so a request
  // with Host and Origin both evil was let in, and so was the next one. The
  // policy takes no Host at all; these are the two requests of that report.
  const policy = new OriginPolicy(["https://console.example"]);
  const poisoning = parseRequestHead(
    new TextEncoder().encode(
      "GET /websockify HTTP/1.1\r\nHost: evil.example\r\nOrigin: https://evil.example\r\n\r\n",
    ),
  );
  const follower = parseRequestHead(
    new TextEncoder().encode(
      "GET /websockify HTTP/1.1\r\nHost: console.example\r\nOrigin: https://evil.example\r\n\r\n",
    ),
  );
  for (const head of [poisoning, follower, poisoning]) {
    assert.equal(policy.check(head.headers.get("origin"), "https").ok, false);
  }
  assert.deepEqual(policy.origins, ["https://console.example"]);
});

Deno.test("OriginPolicy's list is frozen: mutating it, the input or the policy changes nothing", () => {
  const input = ["https://console.example"];
  const policy = new OriginPolicy(input);
  input.push("https://evil.example");
  input[0] = "https://evil.example";
  const origins = policy.origins as string[];
  assert.ok(Object.isFrozen(origins));
  assert.ok(Object.isFrozen(policy));
  assert.throws(() => origins.push("https://evil.example"), TypeError);
  assert.throws(() => {
    origins[0] = "https://evil.example";
  }, TypeError);
  assert.throws(() => {
    Object.assign(policy, { check: () => ({ ok: true }) });
  }, TypeError);
  assert.deepEqual(policy.origins, ["https://console.example"]);
  assert.equal(policy.check("https://evil.example", "https").ok, false);
  assert.deepEqual(policy.check("https://console.example", "https"), { ok: true });
});

Deno.test("OriginPolicy without a list allows every request, Origin or not", () => {
  const policy = new OriginPolicy();
  assert.equal(policy.origins, undefined);
  for (const origin of [undefined, "null", "https://evil.example", "garbage"]) {
    assert.deepEqual(policy.check(origin, "https"), { ok: true });
  }
});

Deno.test("OriginPolicy refuses an empty list and malformed entries at construction", () => {
  assert.throws(() => new OriginPolicy([]), RangeError);
  assert.throws(
    () => new OriginPolicy(["https://console.example", "console.example"]),
    SyntaxError,
  );
});

Deno.test("parseOrigin() normalises an --allowed-origins entry to RFC 6454 §6.2 form", () => {
  const table: [string, string][] = [
    ["https://console.example", "https://console.example"],
    ["HTTPS://Console.Example:443", "https://console.example"],
    ["https://console.example/", "https://console.example"],
    ["http://console.example:80", "http://console.example"],
    ["http://console.example:8080", "http://console.example:8080"],
    ["https://console.example:80", "https://console.example:80"],
    ["http://[2001:DB8:0::1]:6080", "http://[2001:db8::1]:6080"],
    ["http://[::ffff:127.0.0.1]", "http://[::ffff:7f00:1]"],
    ["https://bücher.example", "https://xn--bcher-kva.example"],
    ["http://127.0.0.1:6080", "http://127.0.0.1:6080"],
  ];
  for (const [entry, expected] of table) assert.equal(parseOrigin(entry), expected, entry);
});

Deno.test("parseOrigin() refuses entries that are not http or https origins", () => {
  for (
    const entry of [
      "",
      "null",
      "console.example",
      "//console.example",
      "https://",
      "https://console.example/path",
      "https://console.example//",
      "https://console.example?x=1",
      "https://console.example#x",
      "https://user:pw@console.example",
      "https://*.console.example",
      "https://console.example:99999",
      "ftp://console.example",
      "wss://console.example",
      "https:\\\\console.example",
    ]
  ) {
    assert.throws(() => parseOrigin(entry), SyntaxError, entry);
  }
});
