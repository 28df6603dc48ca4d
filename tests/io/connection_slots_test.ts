import assert from "node:assert/strict";
import { type ConnectionSlot, ConnectionSlots } from "../../src/io/connection_slots.ts";
import type { Logger } from "../../src/log.ts";

/** A logger that keeps its lines, for assertions. */
function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger: Logger = {
    debug: (message) => lines.push(`DEBUG ${message}`),
    info: (message) => lines.push(`INFO ${message}`),
    warn: (message) => lines.push(`WARNING ${message}`),
    error: (message) => lines.push(`ERROR ${message}`),
    child: () => logger,
  };
  return { logger, lines };
}

/** Slots on a hand-driven clock, with the closes each connection received. */
function makeSlots(capacity: number) {
  const clock = { now: 0 };
  const { logger, lines } = recordingLogger();
  const slots = new ConnectionSlots({ capacity, logger, what: "Test", now: () => clock.now });
  const closes = new Map<string, number>();
  const admit = (address: string): ConnectionSlot | undefined => {
    closes.set(address, 0);
    return slots.admit(address, () => closes.set(address, closes.get(address)! + 1));
  };
  return { slots, clock, lines, closes, admit };
}

Deno.test("ConnectionSlots.admit() evicts the pending connection idle longest, not the newcomer", () => {
  const { slots, clock, closes, admit } = makeSlots(3);
  const a = admit("a")!;
  clock.now = 1;
  const b = admit("b")!;
  clock.now = 2;
  const c = admit("c")!;
  clock.now = 5;
  a.touch(); // a received a byte: b is now the idlest (since 1), then c (since 2).
  clock.now = 6;
  const d = admit("d");
  assert.ok(d !== undefined, "the newcomer is admitted");
  assert.deepEqual([...closes], [["a", 0], ["b", 1], ["c", 0], ["d", 0]]);
  assert.deepEqual([a.evicted, b.evicted, c.evicted, d.evicted], [false, true, false, false]);
  assert.equal(slots.size, 3);
  clock.now = 7;
  admit("e");
  assert.equal(closes.get("c"), 1, "then c, idle since 2");
  clock.now = 8;
  admit("f");
  assert.equal(closes.get("a"), 1, "then a, idle since its byte at 5");
  assert.equal(closes.get("d"), 0);
});

Deno.test("ConnectionSlots.admit() breaks a tie in idle time by evicting the one admitted first", () => {
  const { closes, admit } = makeSlots(2);
  admit("first");
  admit("second");
  admit("third");
  assert.equal(closes.get("first"), 1);
  assert.equal(closes.get("second"), 0);
});

Deno.test("ConnectionSlots never evicts a connection whose request completed", () => {
  const { slots, clock, closes, admit } = makeSlots(2);
  const answering = admit("answering")!;
  answering.complete();
  clock.now = 100;
  admit("idle-1");
  clock.now = 200;
  admit("idle-2");
  clock.now = 300;
  admit("idle-3");
  assert.equal(closes.get("answering"), 0, "idle since 0 but completed: kept");
  assert.equal(closes.get("idle-1"), 1);
  assert.equal(closes.get("idle-2"), 1);
  assert.equal(closes.get("idle-3"), 0);
  assert.equal(answering.evicted, false);
  assert.deepEqual({ size: slots.size, pending: slots.pending }, { size: 2, pending: 1 });
});

Deno.test("ConnectionSlots.admit() refuses the newcomer when every slot holds a completed request", () => {
  const { slots, closes, admit } = makeSlots(2);
  const one = admit("one")!;
  const two = admit("two")!;
  one.complete();
  two.complete();
  assert.equal(admit("three"), undefined);
  assert.deepEqual([...closes.values()], [0, 0, 0], "nobody was closed");
  two[Symbol.dispose]();
  assert.ok(admit("four") !== undefined, "a released slot is free again");
  assert.equal(slots.size, 2);
  one[Symbol.dispose]();
});

Deno.test("ConnectionSlots gives every slot back exactly once, whatever the order of calls", () => {
  const { slots, admit } = makeSlots(4);
  const pending = admit("pending")!;
  const completed = admit("completed")!;
  completed.complete();
  completed.complete();
  assert.deepEqual({ size: slots.size, pending: slots.pending }, { size: 2, pending: 1 });
  pending[Symbol.dispose]();
  pending[Symbol.dispose]();
  pending.complete(); // too late: released
  completed[Symbol.dispose]();
  completed[Symbol.dispose]();
  assert.deepEqual({ size: slots.size, pending: slots.pending }, { size: 0, pending: 0 });

  // An evicted slot's own release (its handler ending later) changes nothing.
  const small = makeSlots(1);
  const victim = small.admit("victim")!;
  const winner = small.admit("winner")!;
  victim.complete();
  victim[Symbol.dispose]();
  assert.deepEqual({ size: small.slots.size, pending: small.slots.pending }, {
    size: 1,
    pending: 1,
  });
  winner[Symbol.dispose]();
  assert.equal(small.slots.size, 0);
});

Deno.test("ConnectionSlots holds no more than its capacity through a flood of 10,000", () => {
  const { slots, clock, closes, admit } = makeSlots(64);
  const held: ConnectionSlot[] = [];
  for (let i = 0; i < 10_000; i++) {
    clock.now = i;
    held.push(admit(`flood-${i}`)!);
    assert.ok(slots.size <= 64);
  }
  const evicted = [...closes.values()].filter((n) => n === 1).length;
  assert.equal(evicted, 10_000 - 64);
  assert.ok([...closes.values()].every((n) => n <= 1), "nobody is closed twice");
  for (const slot of held) slot[Symbol.dispose]();
  assert.deepEqual({ size: slots.size, pending: slots.pending }, { size: 0, pending: 0 });
});

Deno.test("ConnectionSlots logs an eviction with the addresses only, warning at most every 10 s", () => {
  const { clock, lines, admit } = makeSlots(1);
  admit("192.0.2.1:1000");
  clock.now = 1_000;
  admit("192.0.2.2:2000");
  clock.now = 2_000;
  admit("192.0.2.3:3000");
  clock.now = 12_000;
  admit("192.0.2.4:4000");
  assert.deepEqual(lines.map((line) => line.split(" ")[0]), ["WARNING", "DEBUG", "WARNING"]);
  assert.match(lines[0]!, /^WARNING Test cap of 1 reached: .*1000 ms.*from 192\.0\.2\.1:1000/);
  assert.match(lines[1]!, /from 192\.0\.2\.2:2000, for 192\.0\.2\.3:3000$/);
});

Deno.test("new ConnectionSlots() throws a RangeError for a capacity below 1", () => {
  const { logger } = recordingLogger();
  for (const capacity of [0, -1, 1.5, NaN]) {
    assert.throws(() => new ConnectionSlots({ capacity, logger }), RangeError);
  }
});
