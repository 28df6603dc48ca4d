import assert from "node:assert/strict";
import { DestinationPolicy, DestinationRefusedError } from "../../src/io/destination_policy.ts";

Deno.test("DestinationPolicy.allowedAddresses() keeps the allowed addresses, deny winning", () => {
  const addresses = ["127.0.0.1", "10.1.2.3", "::1", "2001:db8::5", "192.0.2.9", "fe80::1%lo"];
  const table: [{ allow?: string[]; deny?: string[] }, string[]][] = [
    [{}, addresses],
    [{ allow: ["127.0.0.0/8", "::1"] }, ["127.0.0.1", "::1"]],
    [{ deny: ["10.0.0.0/8", "2001:db8::/32"] }, ["127.0.0.1", "::1", "192.0.2.9"]],
    [{ allow: ["0.0.0.0/0"], deny: ["127.0.0.1"] }, ["10.1.2.3", "192.0.2.9"]],
    [{ allow: ["::/0"], deny: ["::1/128"] }, ["2001:db8::5"]],
    [{ allow: ["10.0.0.0/8"], deny: ["10.1.0.0/16"] }, []],
  ];
  for (const [options, expected] of table) {
    assert.deepEqual(
      new DestinationPolicy(options).allowedAddresses(addresses),
      expected,
      JSON.stringify(options),
    );
  }
  // An IPv4-mapped IPv6 address is its IPv4 address, both ways.
  const policy = new DestinationPolicy({ deny: ["127.0.0.0/8"] });
  assert.deepEqual(policy.allowedAddresses(["::ffff:127.0.0.1", "::ffff:192.0.2.1"]), [
    "::ffff:192.0.2.1",
  ]);
});

Deno.test("DestinationPolicy() refuses a range that does not parse", () => {
  assert.throws(() => new DestinationPolicy({ allow: ["10.0.0.0/33"] }), SyntaxError);
  assert.throws(() => new DestinationPolicy({ deny: ["example.org"] }), SyntaxError);
});

Deno.test("DestinationPolicy.resolveUnixPath() allows sockets below the directories only", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "vap-unix-" }));
  try {
    const allowed = `${root}/allowed`;
    const outside = `${root}/outside`;
    await Deno.mkdir(`${allowed}/sub`, { recursive: true });
    await Deno.mkdir(outside);
    for (const path of [`${allowed}/vm.sock`, `${allowed}/sub/vm.sock`, `${outside}/vm.sock`]) {
      await Deno.writeTextFile(path, "");
    }
    await Deno.symlink(`${outside}/vm.sock`, `${allowed}/escape.sock`);
    await Deno.symlink(outside, `${allowed}/escape-dir`);
    await Deno.symlink(`${allowed}/sub/vm.sock`, `${allowed}/inside.sock`);
    // The directory itself named through a symlink.
    await Deno.symlink(allowed, `${root}/link-to-allowed`);
    const policy = new DestinationPolicy({ unixDirs: [`${root}/link-to-allowed`] });

    assert.equal(await policy.resolveUnixPath(`${allowed}/vm.sock`), `${allowed}/vm.sock`);
    assert.equal(
      await policy.resolveUnixPath(`${root}/link-to-allowed/sub/vm.sock`),
      `${allowed}/sub/vm.sock`,
    );
    assert.equal(await policy.resolveUnixPath(`${allowed}/inside.sock`), `${allowed}/sub/vm.sock`);
    assert.equal(await policy.resolveUnixPath(`${allowed}/sub/../vm.sock`), `${allowed}/vm.sock`);
    for (
      const path of [
        `${outside}/vm.sock`,
        `${allowed}/../outside/vm.sock`,
        `${allowed}/escape.sock`,
        `${allowed}/escape-dir/vm.sock`,
        allowed,
        `${root}/allowed-not/vm.sock`,
        "/etc/passwd",
        // Outside and missing: refused without saying it does not exist.
        `${outside}/missing.sock`,
      ]
    ) {
      await assert.rejects(
        policy.resolveUnixPath(path),
        DestinationRefusedError,
        path,
      );
    }
    // Inside and missing: a connection failure, not a refusal.
    await assert.rejects(policy.resolveUnixPath(`${allowed}/missing.sock`), Deno.errors.NotFound);
    // No directory: every socket refused.
    await assert.rejects(
      new DestinationPolicy().resolveUnixPath(`${allowed}/vm.sock`),
      DestinationRefusedError,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
