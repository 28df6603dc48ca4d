import assert from "node:assert/strict";
import { createLogger } from "../src/log.ts";
import { auditFields, AuditLog, formatAuditText } from "../src/observe/audit_log.ts";

function capture(format: "text" | "json") {
  const lines: string[] = [];
  const logger = createLogger({
    format,
    level: "debug",
    sinks: [{ write: (line) => lines.push(line) }],
    now: () => new Date(Date.UTC(2026, 11, 1, 23, 50, 0, 123)),
  });
  return { logger, lines };
}

const END = {
  cause: "error",
  reason: 'relay "failed"',
  viewerAddress: "192.0.2.7:51234",
  startedAt: new Date(Date.UTC(2026, 11, 1, 23, 49, 0)),
  durationMs: 60_123.4,
  relayMs: 59_000,
  viewerToServer: 10,
  serverToViewer: 20,
} as const;
const FACTS = {
  controlUser: "admin",
  kind: "vnc",
  rendezvous: "port",
  backend: "10.0.0.5:5901",
} as const;

Deno.test("--log-format json: one object a line, with time, level, id, event, msg and fields", () => {
  const { logger, lines } = capture("json");
  logger.child("[C3]").warn("Bad\nthing", {
    event: "forwarding_failed",
    reason: "x",
    skip: undefined,
  });
  logger.info("Plain");
  const first = JSON.parse(lines[0]!);
  assert.equal(lines[0]!.endsWith("\n") && lines[0]!.split("\n").length, 2);
  assert.deepEqual(
    { ...first, pid: 0 },
    {
      time: "2026-12-01T23:50:00.123Z",
      level: "warn",
      program: "vncauthproxy",
      pid: 0,
      id: "C3",
      event: "forwarding_failed",
      msg: "Bad?thing",
      reason: "x",
    },
  );
  const second = JSON.parse(lines[1]!);
  assert.equal(second.event, "message");
  assert.equal("id" in second, false);
});

Deno.test("a field cannot overwrite time, level or msg", () => {
  const { logger, lines } = capture("json");
  logger.info("Real", { time: "forged", level: "error", msg: "forged" });
  const record = JSON.parse(lines[0]!);
  assert.deepEqual([record.time, record.level, record.msg], [
    "2026-12-01T23:50:00.123Z",
    "info",
    "Real",
  ]);
});

Deno.test("the audit line: text key=value (quoted when needed) and the same fields in JSON", () => {
  const fields = auditFields(FACTS, END);
  assert.equal(
    formatAuditText(fields),
    'AUDIT session_end user=admin kind=vnc rendezvous=port backend=10.0.0.5:5901 viewer=192.0.2.7:51234 start=2026-12-01T23:49:00.000Z duration_s=60.123 viewer_to_server=10 server_to_viewer=20 cause=error reason="relay \\"failed\\""',
  );
  const text = capture("text");
  const json = capture("json");
  const file = capture("json");
  new AuditLog([file.logger]).sessionEnded(json.logger.child("[C9]"), "[C9]", FACTS, END);
  new AuditLog().sessionEnded(text.logger.child("[C9]"), "[C9]", FACTS, END);
  assert.match(text.lines[0]!, /INFO: \[C9\] AUDIT session_end user=admin /);
  const record = JSON.parse(json.lines[0]!);
  assert.equal(record.event, "session_end");
  assert.equal(record.id, "C9");
  assert.equal(record.duration_s, 60.123);
  assert.equal(record.cause, "error");
  assert.deepEqual(JSON.parse(file.lines[0]!), record, "the audit file gets the same line");
});
