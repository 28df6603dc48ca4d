import assert from "node:assert/strict";
import { formatHostPort, unbracketHost } from "../../src/io/duplex.ts";

Deno.test("formatHostPort() brackets IPv6 once, whether or not the host came bracketed", () => {
  const table: [string, number, string][] = [
    ["127.0.0.1", 5900, "127.0.0.1:5900"],
    ["vnc.example.org", 5901, "vnc.example.org:5901"],
    ["::1", 5900, "[::1]:5900"],
    ["[::1]", 5900, "[::1]:5900"],
    ["fe80::1", 1, "[fe80::1]:1"],
    ["::ffff:192.0.2.7", 4000, "192.0.2.7:4000"],
    ["[::ffff:192.0.2.7]", 4000, "192.0.2.7:4000"],
  ];
  for (const [host, port, expected] of table) assert.equal(formatHostPort(host, port), expected);
});

Deno.test("unbracketHost() strips only the brackets of a bracketed literal", () => {
  assert.equal(unbracketHost("[::1]"), "::1");
  assert.equal(unbracketHost("::1"), "::1");
  assert.equal(unbracketHost("host"), "host");
  assert.equal(unbracketHost("[x"), "[x");
});
