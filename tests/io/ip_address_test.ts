import assert from "node:assert/strict";
import { canonicalIp } from "../../src/io/ip_address.ts";

Deno.test("canonicalIp() gives every spelling of one address the same text", () => {
  const table: readonly (readonly [string, string])[] = [
    ["192.0.2.7", "192.0.2.7"],
    [" 192.0.2.7 ", "192.0.2.7"],
    ["::ffff:192.0.2.7", "192.0.2.7"],
    ["[::ffff:192.0.2.7]", "192.0.2.7"],
    ["::FFFF:c000:0207", "192.0.2.7"],
    ["::1", "::1"],
    ["[::1]", "::1"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["2001:DB8:0:0::0:1", "2001:db8::1"],
    ["[2001:0db8::0001]", "2001:db8::1"],
    ["fe80::1%eth0", "fe80::1%eth0"],
  ];
  for (const [address, canonical] of table) assert.equal(canonicalIp(address), canonical, address);
});

Deno.test("canonicalIp() returns undefined for what is not an IP address", () => {
  for (
    const text of ["", "localhost", "192.0.2.7:5900", "[::1]:5900", "01.2.3.4", "1.2.3", "[::1"]
  ) {
    assert.equal(canonicalIp(text), undefined, text);
  }
});
