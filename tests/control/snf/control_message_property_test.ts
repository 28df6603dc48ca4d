/**
 * Property-based tests of the control request's pure half: the validator
 * `parseForwardRequest()` and the framing `JsonObjectScanner`, fed
 * generated requests, requests with one field replaced by any JSON value,
 * and mutated request bytes.
 */

import assert from "node:assert/strict";
import {
  type ForwardRequest,
  JsonObjectScanner,
  parseForwardRequest,
} from "../../../src/control/snf/control_message.ts";
import { CONSOLE_TYPES } from "../../../src/config.ts";
import { describeError, RefusalError } from "../../../src/errors.ts";
import { assertProperty, fc, mutated, segmentation } from "../../_util/property.ts";

/** The request fields in the order the validator checks them. */
const FIELDS = [
  "auth_user",
  "auth_password",
  "source_port",
  "destination_address",
  "destination_port",
  "password",
  "type",
] as const;
type Field = typeof FIELDS[number];

/** Every reason `parseForwardRequest()` may give. */
const REASON =
  /^(malformed request: (invalid JSON|not a JSON object|auth_user|auth_password|source_port|destination_address|destination_port|password|type)|unsupported console type)$/;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Secrets long and odd enough that a reason holding one is not chance. */
const secret = fc.string({ unit: "binary", minLength: 6, maxLength: 40 });
/** Latin-1 one-time passwords: 1 to 255 per character, never empty. */
const latin1Password = fc.string({
  unit: fc.integer({ min: 1, max: 0xff }).map((c) => String.fromCharCode(c)),
  minLength: 6,
  maxLength: 64,
});

const label = fc.stringMatching(/^[A-Za-z0-9]([A-Za-z0-9_-]{0,20})?$/);
const hostName = fc.array(label, { minLength: 1, maxLength: 4 }).chain((labels) =>
  fc.constantFrom(labels.join("."), `${labels.join(".")}.`)
);
const ipv4 = fc.ipV4();
const ipv6 = fc.ipV6().chain((address) => fc.constantFrom(address, `[${address}]`));
const port = (min: number) =>
  fc.integer({ min, max: 65535 }).chain((n) =>
    fc.constantFrom<number | string>(n, String(n), ` ${n}`, `${n}\t`, String(n).padStart(5, "0"))
  );

const blanks = fc.array(
  fc.constantFrom(" ", "\t", "\n", "\v", "\u00a0", "\u2028", "\ufeff", "\u3000"),
  {
    maxLength: 3,
  },
).map((chars) => chars.join(""));

/** A valid request as its JSON fields (absent optional fields left out). */
const validFields = fc.record(
  {
    auth_user: fc.string({ unit: "binary", maxLength: 40 }),
    auth_password: secret,
    source_port: fc.oneof(fc.constant(0), port(0)),
    destination_address: fc.oneof(hostName, ipv4, ipv6),
    destination_port: port(1),
    password: latin1Password,
    type: fc.constantFrom(...CONSOLE_TYPES),
    // Unknown keys are ignored, as snf ignored them.
    comment: fc.jsonValue(),
  },
  {
    requiredKeys: [
      "auth_user",
      "auth_password",
      "destination_address",
      "destination_port",
      "password",
    ],
  },
);

/** JSON text of `fields`, compact or indented. */
const jsonText = (fields: Record<string, unknown>) =>
  fc.constantFrom<string | number | undefined>(undefined, 1, "\t").map((indent) =>
    JSON.stringify(fields, null, indent)
  );

function portValue(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "string" && /^[0-9]{1,5}$/.test(value.trim())) return Number(value);
  return undefined;
}

function isPort(value: unknown, min: number): boolean {
  const n = portValue(value);
  return n !== undefined && Number.isInteger(n) && n >= min && n <= 65535;
}

function isShortString(value: unknown): value is string {
  return typeof value === "string" && value.length <= 1024;
}

/**
 * What the validator must make of `value` for `field`: accept it, refuse
 * it, or either (`host?`: host syntax, which the table tests pin down).
 * A present JSON `null` is a value of the wrong type for every field.
 */
function expectation(field: Field, value: unknown): "valid" | "invalid" | "host?" {
  switch (field) {
    case "auth_user":
    case "auth_password":
      return isShortString(value) ? "valid" : "invalid";
    case "source_port":
      return value === undefined || isPort(value, 0) ? "valid" : "invalid";
    case "destination_port":
      return isPort(value, 1) ? "valid" : "invalid";
    case "destination_address":
      // The host syntax is the table test's business; here: only strings.
      return typeof value === "string" && value.length > 0 && value.length <= 253
        ? "host?"
        : "invalid";
    case "password":
      return isShortString(value) && value !== "" &&
          [...value].every((c) => c.charCodeAt(0) >= 1 && c.charCodeAt(0) <= 0xff)
        ? "valid"
        : "invalid";
    case "type":
      return value === undefined ||
          (typeof value === "string" && (CONSOLE_TYPES as readonly string[]).includes(value))
        ? "valid"
        : "invalid";
  }
}

function reasonsFor(field: Field): string[] {
  // A type of the wrong kind is malformed; a string that names no type is unsupported.
  return field === "type"
    ? ["unsupported console type", "malformed request: type"]
    : [`malformed request: ${field}`];
}

/** Checks an accepted request against the fields it came from. */
function assertAccepted(request: ForwardRequest, fields: Record<string, unknown>): void {
  assert.equal(request.authUser, fields.auth_user);
  assert.equal(request.authPassword, fields.auth_password);
  assert.equal(request.sourcePort, portValue(fields.source_port) ?? 0);
  // IPv6 literals come back without brackets.
  assert.equal(
    request.destinationAddress,
    String(fields.destination_address).replace(/^\[(.*)\]$/, "$1"),
  );
  assert.equal(request.destinationPort, portValue(fields.destination_port));
  assert.equal(request.password, fields.password);
  assert.equal(request.type, fields.type ?? "vnc");
}

/** The invariants of any accepted request, whatever text it came from. */
function assertWellFormed(request: ForwardRequest): void {
  assert.ok(isShortString(request.authUser) && isShortString(request.authPassword));
  assert.ok(Number.isInteger(request.sourcePort) && request.sourcePort >= 0);
  assert.ok(request.sourcePort <= 65535);
  assert.ok(Number.isInteger(request.destinationPort) && request.destinationPort >= 1);
  assert.ok(request.destinationPort <= 65535);
  assert.match(request.destinationAddress, /^[A-Za-z0-9_.:[\]-]{1,253}$/);
  assert.equal(expectation("password", request.password), "valid");
  assert.ok(CONSOLE_TYPES.includes(request.type));
}

/** Asserts `error` is a refusal with a known, non-empty reason holding no secret. */
function assertSafeRefusal(error: unknown, secrets: readonly string[]): RefusalError {
  assert.ok(error instanceof RefusalError, `not a RefusalError: ${String(error)}`);
  assert.match(error.message, REASON);
  // The cause chain too: a logger or a debugger may print it.
  const causes: string[] = [];
  for (let cause = error.cause; cause !== undefined; cause = (cause as Error).cause) {
    causes.push(String(cause), cause instanceof Error ? cause.message : "");
    if (!(cause instanceof Error)) break;
  }
  for (const text of [error.message, String(error), describeError(error), ...causes]) {
    for (const value of secrets) {
      if (value.length >= 4) assert.ok(!text.includes(value), "a secret in the reason");
    }
  }
  return error;
}

function secretsOf(fields: Record<string, unknown>): string[] {
  return [fields.auth_password, fields.password].filter((v): v is string => typeof v === "string");
}

Deno.test("parseForwardRequest() accepts every valid request and returns its fields", async () => {
  await assertProperty(
    fc.property(
      validFields.chain((fields) => fc.tuple(fc.constant(fields), jsonText(fields))),
      ([fields, text]) => {
        assertAccepted(parseForwardRequest(text), fields);
      },
    ),
  );
});

Deno.test("parseForwardRequest() refuses a request with one field replaced, naming that field", async () => {
  const replacement = fc.oneof(
    fc.jsonValue(),
    fc.constant(undefined),
    fc.constant(null),
    fc.string({ unit: "binary", maxLength: 8 }),
    fc.integer({ min: -10, max: 70000 }).map(String),
    // What `\s` and `trim()` take: ASCII and Unicode blanks around digits.
    fc.tuple(blanks, fc.integer({ min: -1, max: 70000 }), blanks).map(([a, n, b]) => a + n + b),
    fc.integer({ min: -10, max: 70000 }),
    fc.double(),
    fc.string({ minLength: 1020, maxLength: 1030 }),
  );
  await assertProperty(
    fc.property(
      validFields,
      fc.array(fc.tuple(fc.constantFrom(...FIELDS), replacement), { minLength: 1, maxLength: 3 }),
      (valid, replacements) => {
        const fields: Record<string, unknown> = { ...valid };
        for (const [field, value] of replacements) fields[field] = value;
        // JSON has no undefined: a field set to it is absent.
        const parsed = JSON.parse(JSON.stringify(fields)) as Record<string, unknown>;
        const replaced = new Set(replacements.map(([field]) => field));
        const verdicts = FIELDS.map((field) =>
          [field, replaced.has(field) ? expectation(field, parsed[field]) : "valid"] as const
        );
        const mustFail = verdicts.filter(([, v]) => v === "invalid").flatMap(([f]) =>
          reasonsFor(f)
        );
        const mayFail = verdicts.filter(([, v]) => v !== "valid").flatMap(([f]) => reasonsFor(f));
        let request: ForwardRequest;
        try {
          request = parseForwardRequest(JSON.stringify(fields));
        } catch (error) {
          const refusal = assertSafeRefusal(error, secretsOf(fields));
          assert.ok(mayFail.includes(refusal.message), `${refusal.message} names a valid field`);
          return;
        }
        assert.deepEqual(mustFail, [], "an invalid field was accepted");
        assertWellFormed(request);
        assert.equal(request.type, parsed.type ?? "vnc");
        assert.equal(request.sourcePort, portValue(parsed.source_port) ?? 0);
      },
    ),
  );
});

Deno.test("parseForwardRequest() answers any mutated request text with a request or a safe refusal", async () => {
  await assertProperty(
    fc.property(
      validFields.chain((fields) =>
        fc.tuple(fc.constant(fields), mutated(jsonText(fields).map((t) => encoder.encode(t))))
      ),
      ([fields, bytes]) => {
        let request: ForwardRequest;
        try {
          request = parseForwardRequest(decoder.decode(bytes));
        } catch (error) {
          assertSafeRefusal(error, secretsOf(fields));
          return;
        }
        assertWellFormed(request);
      },
    ),
  );
});

Deno.test("JsonObjectScanner.feed() finds the exact end of any JSON object, however it is split", async () => {
  const object = fc.dictionary(fc.string({ unit: "binary", maxLength: 6 }), fc.jsonValue(), {
    maxKeys: 6,
  });
  await assertProperty(
    fc.property(
      object.chain(jsonText),
      fc.constantFrom("", " ", "\r\n\t "),
      fc.uint8Array({ maxLength: 8 }),
      segmentation(),
      (text, blank, trailing, segments) => {
        const head = encoder.encode(blank + text);
        const bytes = new Uint8Array([...head, ...trailing]);
        const scanner = new JsonObjectScanner();
        let offset = 0;
        let end: number | undefined;
        for (let i = 0; end === undefined; i++) {
          assert.ok(offset < bytes.length, "ran out of bytes before the object ended");
          const size = Math.min(segments[i % segments.length]!, bytes.length - offset);
          end = scanner.feed(bytes.subarray(offset, offset + size));
          if (end === undefined) offset += size;
        }
        assert.equal(offset + end, head.length);
      },
    ),
  );
});
