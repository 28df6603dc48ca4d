/** The vncap protocol's pure parts: line framing, request keys, reply bytes. */

import assert from "node:assert/strict";
import {
  CrlfLineFraming,
  encodeVncapReply,
  parseVncapRequest,
} from "../../../src/control/vncap/vncap_message.ts";
import { RefusalError } from "../../../src/errors.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("a vncap line ends at \\r\\n, also when \\r and \\n come in two segments", () => {
  const whole = new CrlfLineFraming();
  assert.equal(whole.feed(bytes('{"a": 1}\r\nmore')), 10);
  const split = new CrlfLineFraming();
  assert.equal(split.feed(bytes('{"a": 1}\r')), undefined);
  assert.equal(split.feed(bytes("\nrest")), 1);
  // A bare \n is no vncap line end (Twisted's LineReceiver waits on).
  const bare = new CrlfLineFraming();
  assert.equal(bare.feed(bytes('{"a": 1}\n')), undefined);
  const crcr = new CrlfLineFraming();
  assert.equal(crcr.feed(bytes("x\r\r\n")), 4);
});

Deno.test("the reply is the port and \\r\\n, or FAILED\\r\\n, byte for byte", () => {
  assert.deepEqual(encodeVncapReply(5801), bytes("5801\r\n"));
  assert.deepEqual(encodeVncapReply(undefined), bytes("FAILED\r\n"));
});

Deno.test("GWM's request maps every key; defaults as vncap's", () => {
  const minimal = parseVncapRequest(
    '{"daddr": "10.0.0.5", "dport": 5900, "password": "s3cret"}\r\n',
  );
  assert.deepEqual(minimal, {
    daddr: "10.0.0.5",
    dport: 5900,
    password: "s3cret",
    sport: 0,
    ws: false,
    tls: false,
    clientIp: undefined,
    clientPassword: undefined,
    timeoutMs: 30_000,
  });
  const full = parseVncapRequest(JSON.stringify({
    daddr: "[2001:db8::5]",
    dport: "5901",
    password: "backend",
    sport: 5850,
    ws: true,
    tls: true,
    client: { ip: "192.0.2.7", password: "viewer" },
    timeout: 2.5,
    command: "ignored: GWM's SSH requests",
  }));
  assert.equal(full.daddr, "2001:db8::5");
  assert.equal(full.dport, 5901);
  assert.equal(full.sport, 5850);
  assert.equal(full.ws, true);
  assert.equal(full.tls, true);
  assert.equal(full.clientIp, "192.0.2.7");
  assert.equal(full.clientPassword, "viewer");
  assert.equal(full.timeoutMs, 2500);
});

Deno.test("missing keys and bad values are refused, naming the key and never a value", () => {
  const base = { daddr: "127.0.0.1", dport: 5900, password: "pw-VALUE" };
  const cases: [unknown, RegExp][] = [
    [{ dport: 5900, password: "p" }, /daddr missing/],
    [{ daddr: "h", password: "p" }, /dport missing/],
    [{ daddr: "h", dport: 1 }, /password missing/],
    [{ ...base, daddr: "not a host!" }, /daddr$/],
    [{ ...base, daddr: 7 }, /daddr$/],
    [{ ...base, dport: 70000 }, /dport$/],
    [{ ...base, dport: "x" }, /dport$/],
    [{ ...base, dport: 0 }, /dport$/],
    [{ ...base, password: "" }, /password$/],
    [{ ...base, password: 5 }, /password$/],
    [{ ...base, password: "\u20ac" }, /password$/],
    [{ ...base, sport: -1 }, /sport$/],
    [{ ...base, ws: "yes" }, /ws$/],
    [{ ...base, tls: 1 }, /tls$/],
    [{ ...base, client: "x" }, /client$/],
    [{ ...base, client: [] }, /client$/],
    [{ ...base, client: { ip: "nope" } }, /client\.ip$/],
    [{ ...base, client: { password: 3 } }, /client\.password$/],
    [{ ...base, timeout: -1 }, /timeout$/],
    [{ ...base, timeout: 0 }, /timeout$/],
    [{ ...base, timeout: "30" }, /timeout$/],
    [{ ...base, timeout: 1e9 }, /timeout$/],
    [[1, 2], /not a JSON object/],
    ["text", /not a JSON object/],
  ];
  for (const [request, reason] of cases) {
    assert.throws(
      () => parseVncapRequest(JSON.stringify(request)),
      (error: unknown) => {
        assert.ok(error instanceof RefusalError, String(error));
        assert.match(error.message, reason, JSON.stringify(request));
        assert.ok(!error.message.includes("VALUE"));
        return true;
      },
    );
  }
  assert.throws(() => parseVncapRequest('{"daddr": "pw-VALUE"'), /invalid JSON/);
});
