import assert from "node:assert/strict";
import { cidrContains, parseCidr } from "../../src/io/cidr.ts";

Deno.test("cidrContains() matches IPv4 and IPv6 ranges, whatever the spelling", () => {
  const table: [string, string, boolean][] = [
    ["127.0.0.1", "127.0.0.1", true],
    ["127.0.0.1", "127.0.0.2", false],
    ["10.0.0.0/8", "10.255.1.2", true],
    ["10.0.0.0/8", "11.0.0.1", false],
    ["192.0.2.128/25", "192.0.2.200", true],
    ["192.0.2.128/25", "192.0.2.100", false],
    ["0.0.0.0/0", "203.0.113.9", true],
    ["::1", "::1", true],
    ["::1", "[::1]", true],
    ["::1", "0:0:0:0:0:0:0:1", true],
    ["2001:db8::/32", "2001:db8:1::5", true],
    ["2001:db8::/32", "2001:db9::5", false],
    ["127.0.0.1", "::ffff:127.0.0.1", true],
    ["::1", "127.0.0.1", false],
    ["10.0.0.0/8", "not-an-ip", false],
  ];
  for (const [range, address, expected] of table) {
    assert.equal(cidrContains(parseCidr(range), address), expected, `${address} in ${range}`);
  }
});

Deno.test("parseCidr() refuses what is not an address range", () => {
  for (
    const text of [
      "",
      "10.0.0.0/33",
      "::/129",
      "10.0.0/8",
      "host.example",
      "10.0.0.0/x",
      "1.2.3.4/ 8",
    ]
  ) {
    assert.throws(() => parseCidr(text), SyntaxError, text);
  }
});
