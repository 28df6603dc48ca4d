/**
 * The `base64` WebSocket sub-protocol of vncap forwardings (noVNC before
 * 1.0, what vncap's users run), with a scripted client: text frames of
 * padded base64 both ways, a message split anywhere, `binary` still
 * preferred when offered, and snf forwardings untouched.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectRawWebSocket, OPCODE, type RawWebSocket } from "../_util/raw_websocket.ts";
import { replyPort, startVncapDaemon, vncapRequest } from "../_util/vncap.ts";
import { vncAuthResponse } from "../../src/rfb/vnc_auth.ts";
import { judgeUpgrade } from "../../src/http/websocket_upgrade.ts";
import { parseRequestHead } from "../../src/http/request_head.ts";
import { Base64Decoder } from "../../src/io/base64_stream.ts";

const PASSWORD = "b64Viewr";

/** Reads decoded bytes from base64 text frames until `count` have arrived. */
class Base64Reader {
  #pending = new Uint8Array(0);
  constructor(readonly socket: RawWebSocket) {}
  async read(count: number): Promise<Uint8Array> {
    while (this.#pending.length < count) {
      const frame = await this.socket.readFrame();
      if (frame === null) throw new Error("closed");
      assert.equal(frame.opcode, OPCODE.text, "base64 goes out in text frames");
      const text = new TextDecoder().decode(frame.payload);
      assert.match(text, /^[A-Za-z0-9+/]*={0,2}$/);
      const bytes = Buffer.from(text, "base64");
      this.#pending = Uint8Array.from([...this.#pending, ...bytes]);
    }
    const out = this.#pending.slice(0, count);
    this.#pending = this.#pending.slice(count);
    return out;
  }
}

function send64(socket: RawWebSocket, bytes: Uint8Array): Promise<void> {
  return socket.sendText(Buffer.from(bytes).toString("base64"));
}

Deno.test("a scripted base64 client goes through a vncap ws forwarding", async (t) => {
  await using vnc = startFakeVncServer({ desktopName: "b64-desk" });
  await using vncap = await startVncapDaemon();
  const request = { daddr: "127.0.0.1", dport: vnc.port, password: PASSWORD, ws: true };

  await t.step("offered base64 alone: answered base64, RFB in base64 text frames", async () => {
    const port = replyPort(await vncapRequest(vncap.vncapPort, request));
    const { socket, response } = await connectRawWebSocket({ port, protocols: "base64" });
    assert.equal(response.status, 101);
    assert.equal(response.headers.get("sec-websocket-protocol"), "base64");
    const ws = socket!;
    const reader = new Base64Reader(ws);
    assert.equal(new TextDecoder().decode(await reader.read(12)), "RFB 003.008\n");
    // One message split in two, each padded: decoded group by group.
    const version = new TextEncoder().encode("RFB 003.008\n");
    await send64(ws, version.subarray(0, 5));
    await send64(ws, version.subarray(5));
    assert.deepEqual([...await reader.read(2)], [1, 2]);
    await send64(ws, Uint8Array.of(2));
    const challenge = await reader.read(16);
    await send64(ws, vncAuthResponse(PASSWORD, challenge));
    assert.deepEqual([...await reader.read(4)], [0, 0, 0, 0]);
    await send64(ws, Uint8Array.of(1));
    const init = await reader.read(24);
    const nameLength = new DataView(init.buffer).getUint32(20);
    assert.equal(new TextDecoder().decode(await reader.read(nameLength)), "b64-desk");
    ws.close();
    await vncap.daemon.waitForLine(/Session ended/);
  });

  await t.step("binary and base64 offered: binary wins, raw binary frames", async () => {
    const port = replyPort(await vncapRequest(vncap.vncapPort, request));
    const { socket, response } = await connectRawWebSocket({ port, protocols: "base64, binary" });
    assert.equal(response.headers.get("sec-websocket-protocol"), "binary");
    const frame = await socket!.readFrame();
    assert.equal(frame?.opcode, OPCODE.binary);
    assert.equal(new TextDecoder().decode(frame!.payload), "RFB 003.008\n");
    socket!.close();
  });

  await t.step("text that is no base64 closes with 1007", async () => {
    const port = replyPort(await vncapRequest(vncap.vncapPort, request));
    const { socket } = await connectRawWebSocket({ port, protocols: "base64" });
    const ws = socket!;
    await new Base64Reader(ws).read(12);
    await ws.sendText("RFB 003.008\n");
    let frame;
    while ((frame = await ws.readFrame()) !== null && frame.opcode !== OPCODE.close);
    assert.ok(frame, "a close frame");
    assert.equal(new DataView(frame.payload.buffer).getUint16(0), 1007);
    ws.close();
  });
});

Deno.test("base64 is offered only where asked: snf's listeners ignore it", () => {
  const head = parseRequestHead(
    new TextEncoder().encode(
      "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Protocol: base64\r\n\r\n",
    ),
    { maxBytes: 8192 },
  );
  const snf = judgeUpgrade(head);
  assert.ok(snf.upgrade && snf.protocol === undefined);
  const vncap = judgeUpgrade(head, { base64: true });
  assert.ok(vncap.upgrade && vncap.protocol === "base64");
});

Deno.test("the base64 stream decoder: groups across feeds, padding per group, bad text refused", () => {
  const decoder = new Base64Decoder();
  const feed = (text: string) => {
    decoder.scratch.set(new TextEncoder().encode(text));
    decoder.feed(text.length);
    const out = new Uint8Array(64);
    return new TextDecoder().decode(out.subarray(0, decoder.take(out)));
  };
  assert.equal(feed("UkZ"), "");
  assert.equal(feed("CIDAw"), "RFB 00");
  // Two padded messages back to back.
  assert.equal(feed("Mw==Lg=="), "3.");
  assert.throws(() => feed("ab=c"), /Invalid base64/);
  assert.throws(() => feed("a*bc"), /Invalid base64/);
});
