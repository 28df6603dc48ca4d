import assert from "node:assert/strict";
import {
  encodeReply,
  JsonObjectScanner,
  parseForwardRequest,
} from "../../../src/control/snf/control_message.ts";
import { RefusalError } from "../../../src/errors.ts";

const VALID = {
  "auth_user": "admin",
  "auth_password": "s3cret-control",
  "source_port": 0,
  "destination_address": "10.0.0.5",
  "destination_port": 5901,
  password: "one-time",
  type: "vnc-ws",
};

function refusal(fields: Record<string, unknown> | string): string {
  const text = typeof fields === "string" ? fields : JSON.stringify(fields);
  try {
    parseForwardRequest(text);
  } catch (error) {
    assert.ok(error instanceof RefusalError, String(error));
    return error.message;
  }
  assert.fail("expected a refusal");
}

Deno.test("parseForwardRequest() accepts a complete request", () => {
  assert.deepEqual(parseForwardRequest(JSON.stringify(VALID)), {
    authUser: "admin",
    authPassword: "s3cret-control",
    sourcePort: 0,
    destinationAddress: "10.0.0.5",
    destinationPort: 5901,
    destinationPassword: undefined,
    destinationTls: false,
    destinationTlsName: undefined,
    password: "one-time",
    type: "vnc-ws",
    gateway: false,
    ttlMs: undefined,
    clientAddress: undefined,
  });
});

Deno.test("parseForwardRequest() defaults type to vnc and source_port to 0, and takes integer strings", () => {
  const { type: _type, source_port: _sp, ...rest } = VALID;
  const parsed = parseForwardRequest(JSON.stringify({ ...rest, destination_port: "5901" }));
  assert.equal(parsed.type, "vnc");
  assert.equal(parsed.sourcePort, 0);
  assert.equal(parsed.destinationPort, 5901);
  assert.equal(
    parseForwardRequest(JSON.stringify({ ...VALID, source_port: "25001" })).sourcePort,
    25001,
  );
  for (
    const [host, bare] of [
      ["::1", "::1"],
      ["[::1]", "::1"],
      ["fe80::1", "fe80::1"],
      ["vnc-host.example.org", "vnc-host.example.org"],
      ["localhost", "localhost"],
      ["node_1", "node_1"],
    ]
  ) {
    assert.equal(
      parseForwardRequest(JSON.stringify({ ...VALID, destination_address: host }))
        .destinationAddress,
      bare,
    );
  }
});

Deno.test("parseForwardRequest() names the bad field and never echoes a value", () => {
  const table: [Record<string, unknown> | string, string][] = [
    ["not json", "malformed request: invalid JSON"],
    ["[1,2]", "malformed request: not a JSON object"],
    ["42", "malformed request: not a JSON object"],
    ["null", "malformed request: not a JSON object"],
    [{ ...VALID, auth_user: undefined }, "malformed request: auth_user"],
    [{ ...VALID, auth_user: 7 }, "malformed request: auth_user"],
    [{ ...VALID, auth_password: null }, "malformed request: auth_password"],
    [{ ...VALID, destination_address: undefined }, "malformed request: destination_address"],
    [{ ...VALID, destination_address: "a b" }, "malformed request: destination_address"],
    [{ ...VALID, destination_address: "" }, "malformed request: destination_address"],
    [{ ...VALID, destination_address: "x/../y" }, "malformed request: destination_address"],
    [{ ...VALID, destination_port: undefined }, "malformed request: destination_port"],
    [{ ...VALID, destination_port: 0 }, "malformed request: destination_port"],
    [{ ...VALID, destination_port: 70000 }, "malformed request: destination_port"],
    [{ ...VALID, destination_port: 5.5 }, "malformed request: destination_port"],
    [{ ...VALID, destination_port: "59x" }, "malformed request: destination_port"],
    [{ ...VALID, destination_port: true }, "malformed request: destination_port"],
    [{ ...VALID, source_port: -1 }, "malformed request: source_port"],
    [{ ...VALID, source_port: [] }, "malformed request: source_port"],
    [{ ...VALID, password: undefined }, "malformed request: password"],
    [{ ...VALID, password: "" }, "malformed request: password"],
    [{ ...VALID, password: "pässwörd€" }, "malformed request: password"],
    [{ ...VALID, password: "a\u0000b" }, "malformed request: password"],
    [{ ...VALID, type: "spice" }, "unsupported console type"],
    [{ ...VALID, type: ["vnc"] }, "unsupported console type"],
    [{ ...VALID, type: "VNC" }, "unsupported console type"],
    // JSON null is a present value of the wrong type, never "absent".
    [{ ...VALID, type: null }, "malformed request: type"],
    [{ ...VALID, source_port: null }, "malformed request: source_port"],
    [{ ...VALID, auth_user: null }, "malformed request: auth_user"],
    [{ ...VALID, destination_address: null }, "malformed request: destination_address"],
    [{ ...VALID, destination_port: null }, "malformed request: destination_port"],
    [{ ...VALID, password: null }, "malformed request: password"],
  ];
  for (const [input, expected] of table) {
    const reason = refusal(input);
    assert.equal(reason, expected, JSON.stringify(input));
    assert.ok(!reason.includes("s3cret-control") && !reason.includes("one-time"));
  }
});

Deno.test("parseForwardRequest() takes the backend's password, TLS, TLS name and Unix sockets", () => {
  const parsed = parseForwardRequest(JSON.stringify({
    ...VALID,
    destination_password: "vm-sécret",
    destination_tls: true,
    destination_tls_name: "hv1.example.org",
  }));
  assert.equal(parsed.destinationPassword, "vm-sécret");
  assert.equal(parsed.destinationTls, true);
  assert.equal(parsed.destinationTlsName, "hv1.example.org");
  const unix = parseForwardRequest(JSON.stringify({
    ...VALID,
    destination_address: "unix:/run/qemu/vm 1/../vnc.sock",
    destination_port: 0,
  }));
  // `..` is the policy's to resolve, not the parser's.
  assert.equal(unix.destinationAddress, "unix:/run/qemu/vm 1/../vnc.sock");
  assert.equal(unix.destinationPort, 0);
  assert.equal(
    parseForwardRequest(JSON.stringify({
      ...VALID,
      destination_address: "unix:/run/vnc.sock",
      destination_port: "0",
      destination_tls: true,
      destination_tls_name: "[::1]",
    })).destinationTlsName,
    "::1",
  );
});

Deno.test("parseForwardRequest() refuses malformed backend fields by name, never echoing them", () => {
  const table: [Record<string, unknown>, string][] = [
    [{ ...VALID, destination_password: "" }, "malformed request: destination_password"],
    [{ ...VALID, destination_password: "pw€" }, "malformed request: destination_password"],
    [{ ...VALID, destination_password: "a\u0000b" }, "malformed request: destination_password"],
    [{ ...VALID, destination_password: 1234 }, "malformed request: destination_password"],
    [{ ...VALID, destination_password: null }, "malformed request: destination_password"],
    [
      { ...VALID, destination_password: "x".repeat(1025) },
      "malformed request: destination_password",
    ],
    [{ ...VALID, destination_tls: "yes" }, "malformed request: destination_tls"],
    [{ ...VALID, destination_tls: null }, "malformed request: destination_tls"],
    [{ ...VALID, destination_tls_name: "hv1" }, "malformed request: destination_tls_name"],
    [
      { ...VALID, destination_tls: true, destination_tls_name: "a b" },
      "malformed request: destination_tls_name",
    ],
    [
      { ...VALID, destination_tls: true, destination_tls_name: 7 },
      "malformed request: destination_tls_name",
    ],
    [
      { ...VALID, destination_address: "unix:relative/vnc.sock", destination_port: 0 },
      "malformed request: destination_address",
    ],
    [
      { ...VALID, destination_address: "unix:", destination_port: 0 },
      "malformed request: destination_address",
    ],
    [
      { ...VALID, destination_address: "unix:/run/a\nb", destination_port: 0 },
      "malformed request: destination_address",
    ],
    [
      { ...VALID, destination_address: `unix:/${"x".repeat(107)}`, destination_port: 0 },
      "malformed request: destination_address",
    ],
    [
      { ...VALID, destination_address: "unix:/run/vnc.sock", destination_port: 5900 },
      "malformed request: destination_port",
    ],
    [
      { ...VALID, destination_address: "unix:/run/vnc.sock", destination_port: undefined },
      "malformed request: destination_port",
    ],
    [
      {
        ...VALID,
        destination_address: "unix:/run/vnc.sock",
        destination_port: 0,
        destination_tls: true,
      },
      "malformed request: destination_tls_name",
    ],
    [
      { ...VALID, destination_address: "UNIX:/run/vnc.sock" },
      "malformed request: destination_address",
    ],
  ];
  for (const [input, expected] of table) {
    const reason = refusal(input);
    assert.equal(reason, expected, JSON.stringify(input));
    assert.ok(!reason.includes("pw€") && !reason.includes("/run"), reason);
  }
});

Deno.test("parseForwardRequest() accepts a Latin-1 one-time password", () => {
  assert.equal(
    parseForwardRequest(JSON.stringify({ ...VALID, password: "pässwörd" })).password,
    "pässwörd",
  );
});

Deno.test("JsonObjectScanner.feed() finds the end of one object fed one byte at a time", () => {
  const text = ' \n{"a": "x}\\"{", "b": [1, {"c": 2}]}\n{"next": 1}';
  const bytes = new TextEncoder().encode(text);
  const scanner = new JsonObjectScanner();
  let end: number | undefined;
  let offset = 0;
  for (; offset < bytes.length && end === undefined; offset++) {
    end = scanner.feed(bytes.subarray(offset, offset + 1));
  }
  assert.equal(offset, text.indexOf("}\n{") + 1);
  assert.equal(new JsonObjectScanner().feed(bytes), text.indexOf("}\n{") + 1);
});

Deno.test("JsonObjectScanner.feed() waits for more bytes and rejects non-objects at once", () => {
  const scanner = new JsonObjectScanner();
  assert.equal(scanner.feed(new TextEncoder().encode('{"a": {')), undefined);
  assert.equal(scanner.feed(new TextEncoder().encode("}}")), 2);
  assert.throws(() => new JsonObjectScanner().feed(new TextEncoder().encode("[{}]")), SyntaxError);
  assert.throws(
    () => new JsonObjectScanner().feed(new TextEncoder().encode("GET / HTTP/1.1")),
    SyntaxError,
  );
});

Deno.test("encodeReply() writes snf-vncauthproxy's exact reply bytes (peers.md §1.5)", () => {
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  assert.equal(
    decode(encodeReply({ status: "OK", sourcePort: 25123, proxyAddress: "vnc.example.org" })),
    '{"source_port": 25123, "status": "OK", "proxy_address": "vnc.example.org"}',
  );
  assert.equal(
    decode(encodeReply({ status: "FAILED", reason: "authentication failed" })),
    '{"source_port": 0, "status": "FAILED", "reason": "authentication failed", "proxy_address": null}',
  );
  assert.equal(
    decode(encodeReply({ status: "FAILED", reason: 'VNC server refused: \u00e9 "q"' })),
    '{"source_port": 0, "status": "FAILED", "reason": "VNC server refused: \\u00e9 \\"q\\"", "proxy_address": null}',
  );
});
