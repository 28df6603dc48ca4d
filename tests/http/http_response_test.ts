import assert from "node:assert/strict";
import { encodeErrorResponse, encodeResponseHead, linger } from "../../src/http/http_response.ts";
import { ConnDuplex, type Duplex } from "../../src/io/duplex.ts";
import { ScriptedDuplex } from "../_util/property.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("encodeResponseHead() writes the status line and the headers in order, then the blank line", () => {
  const head = encodeResponseHead(200, [
    ["Content-Type", "text/html; charset=utf-8"],
    ["Content-Length", "12"],
    ["X-Content-Type-Options", "nosniff"],
  ]);
  assert.equal(
    decoder.decode(head),
    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 12\r\n" +
      "X-Content-Type-Options: nosniff\r\n\r\n",
  );
  assert.equal(decoder.decode(encodeResponseHead(404)), "HTTP/1.1 404 Not Found\r\n\r\n");
});

Deno.test("encodeResponseHead() refuses unknown statuses and headers that could split the response", () => {
  assert.throws(() => encodeResponseHead(418), RangeError);
  assert.throws(() => encodeErrorResponse(299), RangeError);
  const table: [string, [string, string]][] = [
    ["a CR LF in a value", ["Location", "/x\r\nSet-Cookie: a=b"]],
    ["a bare LF in a value", ["Location", "/x\nA: b"]],
    ["a NUL in a value", ["X", "a\x00b"]],
    ["a non-ASCII value", ["X", "café"]],
    ["a space in a name", ["X Y", "z"]],
    ["a colon in a name", ["X:", "z"]],
    ["an empty name", ["", "z"]],
  ];
  for (const [name, header] of table) {
    assert.throws(() => encodeResponseHead(200, [header]), TypeError, name);
    assert.throws(() => encodeErrorResponse(400, { headers: [header] }), TypeError, name);
  }
});

Deno.test("encodeErrorResponse() sends a plain-text body that closes the connection", () => {
  const table: [string, number, Parameters<typeof encodeErrorResponse>[1], string][] = [
    [
      "the default body is the reason phrase",
      400,
      {},
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n" +
      "Content-Length: 12\r\nConnection: close\r\n\r\nBad Request\n",
    ],
    [
      "extra headers go after the fixed ones",
      405,
      { headers: [["Allow", "GET"]], body: "Nope\n", method: "POST" },
      "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n" +
      "Content-Length: 5\r\nConnection: close\r\nAllow: GET\r\n\r\nNope\n",
    ],
    [
      "HEAD gets the head with the length a GET would get, and no body (RFC 9110 §9.3.2)",
      403,
      { method: "HEAD" },
      "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n" +
      "Content-Length: 10\r\nConnection: close\r\n\r\n",
    ],
    [
      "the length counts UTF-8 bytes",
      404,
      { body: "é\n" },
      "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n" +
      "Content-Length: 3\r\nConnection: close\r\n\r\né\n",
    ],
  ];
  for (const [name, status, options, expected] of table) {
    assert.equal(decoder.decode(encodeErrorResponse(status, options)), expected, name);
  }
});

/** A `closeWrite()` that records its call. */
function halfClose(): { closeWrite(): Promise<void>; calls: number } {
  return {
    calls: 0,
    closeWrite() {
      this.calls++;
      return Promise.resolve();
    },
  };
}

/** A duplex whose reads wait until it is closed, as a silent peer's would. */
function silentDuplex(): Duplex & { closed: boolean } {
  const closed = Promise.withResolvers<never>();
  closed.promise.catch(() => {});
  return {
    remoteAddress: "192.0.2.7:51234",
    closed: false,
    read: () => closed.promise,
    write: () => Promise.resolve(),
    close() {
      this.closed = true;
      closed.reject(new Deno.errors.BadResource("closed"));
    },
  };
}

Deno.test("linger() shuts the write side and drains the client until it ends, or maxBytes", async () => {
  const conn = halfClose();
  const duplex = new ScriptedDuplex(new Uint8Array(10_000), [100]);
  await linger(conn, duplex);
  assert.equal(conn.calls, 1);
  assert.equal(duplex.position, 10_000);

  const bounded = new ScriptedDuplex(new Uint8Array(10_000), [100]);
  await linger(halfClose(), bounded, { maxBytes: 1000 });
  assert.equal(bounded.position, 1000);
});

Deno.test("linger() gives up after timeoutMs or when the signal aborts, and never throws", async () => {
  const started = performance.now();
  const silent = silentDuplex();
  await linger(halfClose(), silent, { timeoutMs: 50 });
  assert.ok(silent.closed, "the deadline closes the duplex to end the read");
  assert.ok(performance.now() - started < 1000);

  // Aborted at once, it ends long before its 1 s default.
  const controller = new AbortController();
  const abortedAt = performance.now();
  const lingering = linger(halfClose(), silentDuplex(), { signal: controller.signal });
  controller.abort(new Error("shutdown"));
  await lingering;
  assert.ok(performance.now() - abortedAt < 500);

  const failing = { closeWrite: () => Promise.reject(new Deno.errors.NotConnected("gone")) };
  await linger(failing, silentDuplex());
});

Deno.test("linger() lets a client that keeps sending read the whole error response over TCP", async () => {
  using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: (server.addr as Deno.NetAddr).port,
  });
  const conn = await server.accept();
  const duplex = new ConnDuplex(conn);
  try {
    const response = encodeErrorResponse(400, { body: "x".repeat(100_000) });
    // Unread input at close would make the kernel reset the connection.
    await client.write(encoder.encode("GET / HTTP/1.1\r\n\r\nmore bytes the server never parses"));
    const serving = (async () => {
      await duplex.write(response);
      await linger(conn, duplex, { timeoutMs: 5000 });
      duplex.close();
    })();
    const received: Uint8Array[] = [];
    const buffer = new Uint8Array(65536);
    for (let n; (n = await client.read(buffer)) !== null;) received.push(buffer.slice(0, n));
    assert.equal(received.reduce((sum, chunk) => sum + chunk.length, 0), response.length);
    client.close();
    await serving;
  } finally {
    duplex.close();
    try {
      client.close();
    } catch {
      // Closed above.
    }
  }
});
