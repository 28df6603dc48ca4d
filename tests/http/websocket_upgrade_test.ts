import assert from "node:assert/strict";
import { parseRequestHead, type RequestHead } from "../../src/http/request_head.ts";
import {
  acceptUpgrade,
  computeAcceptKey,
  encodeUpgradeResponse,
  judgeUpgrade,
  type UpgradeAccepted,
  wantsWebSocket,
} from "../../src/http/websocket_upgrade.ts";
import { readExact } from "../../src/io/byte_reader.ts";
import { OPCODE } from "../../src/io/websocket_frames.ts";
import { WebSocketDuplex } from "../../src/io/websocket_duplex.ts";
import { concat, ScriptedDuplex } from "../_util/property.ts";
import { encodeFrame } from "../_util/raw_websocket.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** RFC 6455 §1.3's example key. */
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const UPGRADE_HEADERS: Record<string, string> = {
  Host: "localhost",
  Upgrade: "websocket",
  Connection: "Upgrade",
  "Sec-WebSocket-Key": KEY,
  "Sec-WebSocket-Version": "13",
};

/** A parsed head of a valid upgrade, with headers replaced (`null` removes one). */
function upgradeHead(
  changes: Record<string, string | null> = {},
  requestLine = "GET /websockify HTTP/1.1",
): RequestHead {
  const headers = { ...UPGRADE_HEADERS, ...changes };
  const lines = Object.entries(headers).filter(([, value]) => value !== null)
    .map(([name, value]) => `${name}: ${value}`);
  return parseRequestHead(encoder.encode(`${requestLine}\r\n${lines.join("\r\n")}\r\n\r\n`));
}

Deno.test("computeAcceptKey() matches RFC 6455 §1.3", () => {
  // The RFC's own example (§1.3, §4.2.2); `openssl sha1 -binary | base64` agrees.
  assert.equal(computeAcceptKey(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("judgeUpgrade() refuses what RFC 6455 §4.2.1 refuses, in order, with the status and headers to answer", () => {
  const table: [string, RequestHead, string, number, [string, string][] | undefined][] = [
    ["POST", upgradeHead({}, "POST / HTTP/1.1"), "method", 405, [["Allow", "GET"]]],
    ["HEAD without Upgrade", upgradeHead({ Upgrade: null }, "HEAD / HTTP/1.1"), "method", 405, [[
      "Allow",
      "GET",
    ]]],
    ["HTTP/1.0", upgradeHead({}, "GET / HTTP/1.0"), "http-version", 400, undefined],
    ["HTTP/2.0", upgradeHead({}, "GET / HTTP/2.0"), "http-version", 505, undefined],
    [
      "HTTP/1.0 without Upgrade",
      upgradeHead({ Upgrade: null }, "GET / HTTP/1.0"),
      "http-version",
      400,
      undefined,
    ],
    ["no Upgrade", upgradeHead({ Upgrade: null }), "not-websocket", 400, undefined],
    ["Upgrade: h2c", upgradeHead({ Upgrade: "h2c" }), "not-websocket", 400, undefined],
    [
      "no Connection: upgrade",
      upgradeHead({ Connection: "keep-alive" }),
      "connection",
      400,
      undefined,
    ],
    [
      "version 8",
      upgradeHead({ "Sec-WebSocket-Version": "8" }),
      "websocket-version",
      426,
      [["Upgrade", "websocket"], ["Sec-WebSocket-Version", "13"]],
    ],
    ["no version", upgradeHead({ "Sec-WebSocket-Version": null }), "websocket-version", 426, [
      ["Upgrade", "websocket"],
      ["Sec-WebSocket-Version", "13"],
    ]],
    ["no key", upgradeHead({ "Sec-WebSocket-Key": null }), "key", 400, undefined],
    ["a short key", upgradeHead({ "Sec-WebSocket-Key": "c2hvcnQ=" }), "key", 400, undefined],
    [
      "a 17-byte key",
      upgradeHead({ "Sec-WebSocket-Key": btoa("x".repeat(17)) }),
      "key",
      400,
      undefined,
    ],
  ];
  for (const [name, head, refusal, status, headers] of table) {
    const verdict = judgeUpgrade(head);
    assert.ok(!verdict.upgrade, name);
    assert.equal(verdict.refusal, refusal, name);
    assert.equal(verdict.status, status, name);
    assert.deepStrictEqual(verdict.headers, headers, name);
    assert.notEqual(verdict.why, "", name);
  }
});

Deno.test("judgeUpgrade() accepts any target and any case of the Upgrade and Connection tokens", () => {
  const targets = ["/", "/websockify?token=abc", "/a/b/c", "http://example.org/x", "*"];
  for (const target of targets) {
    const verdict = judgeUpgrade(upgradeHead({}, `GET ${target} HTTP/1.1`));
    assert.deepStrictEqual(verdict, { upgrade: true, key: KEY }, target);
  }
  const verdict = judgeUpgrade(
    upgradeHead({ Upgrade: "WebSocket", Connection: "keep-alive, UPGRADE" }),
  );
  assert.ok(verdict.upgrade);
});

Deno.test("wantsWebSocket() is true when Upgrade names websocket, whatever else is wrong", () => {
  assert.ok(wantsWebSocket(upgradeHead()));
  assert.ok(wantsWebSocket(upgradeHead({ Upgrade: "h2c, WEBSOCKET" }, "POST / HTTP/1.0")));
  assert.ok(!wantsWebSocket(upgradeHead({ Upgrade: null })));
  assert.ok(!wantsWebSocket(upgradeHead({ Upgrade: "websockets" })));
});

Deno.test("judgeUpgrade() answers binary when offered, reports a token.<value> offer, and the 101 never echoes it", () => {
  const token = "Ab0_-".repeat(12) + "xyzw"; // 64 characters
  const table: [string, string[] | undefined, "binary" | undefined, string | undefined][] = [
    ["no offer", undefined, undefined, undefined],
    ["binary", ["binary"], "binary", undefined],
    ["binary among others", ["base64, binary"], "binary", undefined],
    ["another protocol only", ["base64"], undefined, undefined],
    ["near misses of binary", ["binaryx, bin, Binary"], undefined, undefined],
    ["binary and a token", ["binary, token.abc"], "binary", "abc"],
    ["a token and binary", ["token.abc, binary"], "binary", "abc"],
    ["a token alone", ["token.abc"], undefined, "abc"],
    ["in two header lines", ["binary", "token.abc"], "binary", "abc"],
    ["every base64url character, 64 of them", [`binary, token.${token}`], "binary", token],
    ["65 characters", [`binary, token.${token}x`], "binary", undefined],
    ["an empty value", ["binary, token."], "binary", undefined],
    ["base64 '+' and '/'", ["binary, token.a+b/c"], "binary", undefined],
    ["padding", ["binary, token.abc="], "binary", undefined],
    ["a dot in the value", ["binary, token.abc.def"], "binary", undefined],
    ["another case of the prefix", ["binary, Token.abc"], "binary", undefined],
    ["two tokens", ["binary, token.abc, token.def"], "binary", undefined],
    ["two tokens, one invalid", ["token.abc, token.a=b"], undefined, undefined],
    ["the prefix without its dot", ["tokenabc"], undefined, undefined],
  ];
  for (const [name, offers, protocol, tokenOffer] of table) {
    const head = parseRequestHead(encoder.encode(
      "GET /websockify HTTP/1.1\r\n" +
        Object.entries(UPGRADE_HEADERS).map(([n, v]) => `${n}: ${v}\r\n`).join("") +
        (offers ?? []).map((offer) => `Sec-WebSocket-Protocol: ${offer}\r\n`).join("") +
        "\r\n",
    ));
    const verdict = judgeUpgrade(head);
    assert.ok(verdict.upgrade, name);
    assert.equal(verdict.protocol, protocol, name);
    assert.equal(verdict.tokenOffer, tokenOffer, name);
    const response = decoder.decode(encodeUpgradeResponse(verdict));
    assert.equal(
      response.includes("Sec-WebSocket-Protocol: binary\r\n"),
      protocol === "binary",
      name,
    );
    assert.equal(response.match(/Sec-WebSocket-Protocol/g)?.length ?? 0, protocol ? 1 : 0, name);
    assert.ok(!response.includes("token"), `${name}: the token went back`);
  }
});

Deno.test("encodeUpgradeResponse() writes the 101 of RFC 6455 §4.2.2", () => {
  const accepted: UpgradeAccepted = {
    upgrade: true,
    key: KEY,
    protocol: "binary",
    tokenOffer: "x",
  };
  assert.equal(
    decoder.decode(encodeUpgradeResponse(accepted)),
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: binary\r\n\r\n",
  );
  assert.equal(
    decoder.decode(encodeUpgradeResponse({ upgrade: true, key: KEY })),
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
  );
});

Deno.test("acceptUpgrade() writes the 101 and returns a WebSocket reading frames sent one byte at a time", async () => {
  const input = concat([
    encodeFrame(OPCODE.binary, Uint8Array.of(1, 2, 3)),
    encodeFrame(OPCODE.close, Uint8Array.of(0x03, 0xe8)),
  ]);
  const duplex = new ScriptedDuplex(input, [1]);
  const verdict = judgeUpgrade(upgradeHead({ "Sec-WebSocket-Protocol": "binary" }));
  assert.ok(verdict.upgrade);
  const socket = await acceptUpgrade(duplex, verdict);
  assert.ok(socket instanceof WebSocketDuplex);
  assert.equal(socket.remoteAddress, duplex.remoteAddress);
  assert.deepStrictEqual(duplex.written, encodeUpgradeResponse(verdict));
  assert.deepStrictEqual(await readExact(socket, 3), Uint8Array.of(1, 2, 3));
  assert.equal(await socket.read(new Uint8Array(1)), null);
  assert.deepStrictEqual(socket.peerClose, { code: 1000, reason: "" });
  await socket.closed;
});
