/**
 * RESP2, the Redis serialisation protocol (https://redis.io/docs/latest/develop/reference/protocol-spec/):
 * a command encoder and an incremental, bounded reply parser. Pure: no I/O.
 *
 * A command goes out as an array of bulk strings. Replies come back as
 * simple strings (`+OK`), errors (`-ERR …`), integers (`:1`), bulk strings
 * (`$3\r\nfoo`, `$-1` for null) and arrays (`*2`, `*-1` for null) that may
 * nest. The parser takes bytes as they arrive, in any split, and yields
 * whole replies; every read is bounded (line length, bulk size, array
 * length, nesting depth, bytes of one reply), and a violation is a
 * {@linkcode RespProtocolError} after which the connection must be closed.
 *
 * @module
 */

import { concatBytes } from "../../io/bytes.ts";

/** An error reply of the server (`-ERR …`): a value, not a thrown error. */
export class RespErrorReply {
  /** The server's message (`ERR unknown command …`), as sent. */
  readonly message: string;
  constructor(message: string) {
    this.message = message;
  }
  /** The first word of the message (`ERR`, `NOSCRIPT`, `WRONGPASS`). */
  get code(): string {
    const space = this.message.indexOf(" ");
    return space === -1 ? this.message : this.message.slice(0, space);
  }
}

/**
 * One reply: a simple string as `string`, a bulk string as `Uint8Array`,
 * an integer as `number`, null bulk or array as `null`, an error as
 * {@linkcode RespErrorReply}, an array as an array.
 */
export type RespValue = string | number | Uint8Array | null | RespErrorReply | RespValue[];

/** The peer broke the protocol or a bound; the connection cannot be trusted any more. */
export class RespProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RespProtocolError";
  }
}

/** Bounds of {@linkcode RespParser}. */
export interface RespLimits {
  /** Longest line (type byte to CRLF exclusive). @default {65536} */
  readonly maxLineBytes?: number;
  /** Largest bulk string. @default {1048576} (1 MiB) */
  readonly maxBulkBytes?: number;
  /** Most elements in one array. @default {65536} */
  readonly maxArrayLength?: number;
  /** Deepest nesting of arrays (a top-level array is depth 1). @default {8} */
  readonly maxDepth?: number;
  /** Most bytes in one top-level reply. @default {4194304} (4 MiB) */
  readonly maxReplyBytes?: number;
}

const CR = 0x0d;
const LF = 0x0a;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });

/** Encodes a command (name and arguments) as a RESP array of bulk strings. */
export function encodeCommand(args: readonly (string | Uint8Array)[]): Uint8Array {
  const parts: Uint8Array[] = [encoder.encode(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === "string" ? encoder.encode(arg) : arg;
    parts.push(encoder.encode(`$${bytes.length}\r\n`), bytes, CRLF);
  }
  return concatBytes(parts);
}

const CRLF = new Uint8Array([CR, LF]);

/** Encodes a reply (for tests and fake servers): the inverse of {@linkcode RespParser}. */
export function encodeReply(value: RespValue): Uint8Array {
  const parts: Uint8Array[] = [];
  const walk = (v: RespValue): void => {
    if (v === null) parts.push(encoder.encode("$-1\r\n"));
    else if (typeof v === "string") parts.push(encoder.encode(`+${v}\r\n`));
    else if (typeof v === "number") parts.push(encoder.encode(`:${v}\r\n`));
    else if (v instanceof RespErrorReply) parts.push(encoder.encode(`-${v.message}\r\n`));
    else if (v instanceof Uint8Array) {
      parts.push(encoder.encode(`$${v.length}\r\n`), v, CRLF);
    } else {
      parts.push(encoder.encode(`*${v.length}\r\n`));
      v.forEach(walk);
    }
  };
  walk(value);
  return concatBytes(parts);
}

interface OpenArray {
  readonly items: RespValue[];
  readonly length: number;
}

/**
 * Turns bytes into replies, incrementally. {@linkcode push} the bytes read,
 * then take replies with {@linkcode next} until it returns `undefined`.
 * Holds at most one incomplete line or bulk string (plus what was pushed
 * and not yet parsed); after a {@linkcode RespProtocolError} every call
 * throws again.
 */
export class RespParser {
  readonly #maxLine: number;
  readonly #maxBulk: number;
  readonly #maxArray: number;
  readonly #maxDepth: number;
  readonly #maxReply: number;
  #buffer = new Uint8Array(0);
  #start = 0;
  #end = 0;
  /** Where the search for the next CR resumes (a line's bytes are scanned once). */
  #scanned = 0;
  /** Length of the bulk string whose body is awaited, or -1. */
  #bulk = -1;
  readonly #stack: OpenArray[] = [];
  /** Bytes of the current top-level reply consumed so far. */
  #replyBytes = 0;
  #failure: RespProtocolError | undefined;

  /** A parser with the given bounds. */
  constructor(limits: RespLimits = {}) {
    this.#maxLine = limits.maxLineBytes ?? 65_536;
    this.#maxBulk = limits.maxBulkBytes ?? 1_048_576;
    this.#maxArray = limits.maxArrayLength ?? 65_536;
    this.#maxDepth = limits.maxDepth ?? 8;
    this.#maxReply = limits.maxReplyBytes ?? 4_194_304;
  }

  /** Bytes pushed and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Appends bytes read from the connection. */
  push(bytes: Uint8Array): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (bytes.length === 0) return;
    const pending = this.#end - this.#start;
    if (this.#start > 0 && this.#end + bytes.length > this.#buffer.length) {
      // Move the unconsumed bytes to the front before growing.
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#scanned -= this.#start;
      this.#start = 0;
      this.#end = pending;
    }
    if (this.#end + bytes.length > this.#buffer.length) {
      const grown = new Uint8Array(
        Math.max(this.#end + bytes.length, this.#buffer.length * 2, 256),
      );
      grown.set(this.#buffer.subarray(0, this.#end));
      this.#buffer = grown;
    }
    this.#buffer.set(bytes, this.#end);
    this.#end += bytes.length;
  }

  /**
   * The next whole reply, or `undefined` when more bytes are needed.
   *
   * @throws {RespProtocolError} on bytes that are not RESP2 or break a bound.
   */
  next(): RespValue | undefined {
    if (this.#failure !== undefined) throw this.#failure;
    try {
      return this.#next();
    } catch (error) {
      if (error instanceof RespProtocolError) {
        this.#failure = error;
        this.#buffer = new Uint8Array(0);
        this.#start = this.#end = this.#scanned = 0;
        this.#stack.length = 0;
      }
      throw error;
    }
  }

  #next(): RespValue | undefined {
    for (;;) {
      let value: RespValue;
      if (this.#bulk >= 0) {
        const length = this.#bulk;
        if (this.#end - this.#start < length + 2) return undefined;
        const at = this.#start;
        if (this.#buffer[at + length] !== CR || this.#buffer[at + length + 1] !== LF) {
          throw new RespProtocolError("Bulk string not followed by CRLF");
        }
        value = this.#buffer.slice(at, at + length);
        this.#consume(length + 2);
        this.#bulk = -1;
      } else {
        const line = this.#line();
        if (line === undefined) return undefined;
        const parsed = this.#header(line);
        if (parsed === OPENED) continue;
        value = parsed;
      }
      const done = this.#settle(value);
      if (done !== NOT_DONE) return done;
    }
  }

  /** Places a finished value in its array, closing arrays it completes; the top-level value when whole. */
  #settle(value: RespValue): RespValue | typeof NOT_DONE {
    let current = value;
    for (;;) {
      const top = this.#stack.at(-1);
      if (top === undefined) {
        this.#replyBytes = 0;
        return current;
      }
      top.items.push(current);
      if (top.items.length < top.length) return NOT_DONE;
      this.#stack.pop();
      current = top.items;
    }
  }

  /** The next line without its CRLF, or undefined when it has not all arrived. */
  #line(): Uint8Array | undefined {
    const from = Math.max(this.#scanned, this.#start);
    const cr = this.#buffer.subarray(from, this.#end).indexOf(CR);
    if (cr === -1 || from + cr + 1 >= this.#end) {
      this.#scanned = cr === -1 ? this.#end : from + cr;
      if (this.#end - this.#start > this.#maxLine + 2) {
        throw new RespProtocolError(`Reply line longer than ${this.#maxLine} bytes`);
      }
      return undefined;
    }
    const at = from + cr;
    if (this.#buffer[at + 1] !== LF) throw new RespProtocolError("CR not followed by LF");
    if (at - this.#start > this.#maxLine) {
      throw new RespProtocolError(`Reply line longer than ${this.#maxLine} bytes`);
    }
    const line = this.#buffer.slice(this.#start, at);
    this.#consume(at + 2 - this.#start);
    return line;
  }

  #consume(n: number): void {
    this.#start += n;
    this.#scanned = this.#start;
    this.#replyBytes += n;
    if (this.#replyBytes > this.#maxReply) {
      throw new RespProtocolError(`Reply larger than ${this.#maxReply} bytes`);
    }
    if (this.#start === this.#end) {
      this.#start = this.#end = this.#scanned = 0;
      // Do not keep a large reply's buffer for the connection's life.
      if (this.#buffer.length > 65_536) this.#buffer = new Uint8Array(0);
    }
  }

  /** Interprets a header line: a whole value, or OPENED for a bulk body or array to come. */
  #header(line: Uint8Array): RespValue | typeof OPENED {
    if (line.length === 0) throw new RespProtocolError("Empty reply line");
    const text = decoder.decode(line.subarray(1));
    switch (line[0]) {
      case 0x2b: // '+'
        return text;
      case 0x2d: // '-'
        return new RespErrorReply(text);
      case 0x3a: // ':'
        return integer(text, "integer");
      case 0x24: { // '$'
        const length = integer(text, "bulk length");
        if (length === -1) return null;
        if (length < 0) throw new RespProtocolError(`Invalid bulk length "${length}"`);
        if (length > this.#maxBulk) {
          throw new RespProtocolError(`Bulk string of ${length} bytes exceeds ${this.#maxBulk}`);
        }
        if (this.#replyBytes + length + 2 > this.#maxReply) {
          throw new RespProtocolError(`Reply larger than ${this.#maxReply} bytes`);
        }
        this.#bulk = length;
        return OPENED;
      }
      case 0x2a: { // '*'
        const length = integer(text, "array length");
        if (length === -1) return null;
        if (length < 0) throw new RespProtocolError(`Invalid array length "${length}"`);
        if (length > this.#maxArray) {
          throw new RespProtocolError(`Array of ${length} elements exceeds ${this.#maxArray}`);
        }
        if (length === 0) return [];
        if (this.#stack.length >= this.#maxDepth) {
          throw new RespProtocolError(`Arrays nested deeper than ${this.#maxDepth}`);
        }
        this.#stack.push({ items: [], length });
        return OPENED;
      }
      default:
        throw new RespProtocolError(`Unknown reply type byte ${line[0]}`);
    }
  }
}

const OPENED = Symbol("opened");
const NOT_DONE = Symbol("not done");

function integer(text: string, what: string): number {
  if (!/^-?\d{1,19}$/.test(text)) {
    throw new RespProtocolError(`Invalid ${what} "${text.slice(0, 32)}"`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new RespProtocolError(`Invalid ${what} "${text.slice(0, 32)}"`);
  }
  return value;
}
