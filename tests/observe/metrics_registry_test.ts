import assert from "node:assert/strict";
import parsePrometheusTextFormat from "npm:parse-prometheus-text-format@1.1.1";
import { escapeLabelValue, MetricsRegistry } from "../../src/observe/metrics_registry.ts";
import { readExposition } from "../../src/observe/exposition_reader.ts";

Deno.test("MetricsRegistry renders counters, gauges and histograms in the 0.0.4 text format", () => {
  const registry = new MetricsRegistry();
  const counter = registry.counter("t_requests_total", "Requests.\nSecond line \\ here.", [
    "reason",
  ]);
  counter.inc({ reason: "a" });
  counter.inc({ reason: "a" }, 2);
  counter.declare({ reason: "b" });
  registry.gauge("t_free", "Free.", [], () => [[{}, 7]]);
  const histogram = registry.histogram("t_seconds", "Time.", [0.1, 1]);
  for (const value of [0.05, 0.5, 5]) histogram.observe(value);
  assert.equal(
    registry.render(),
    [
      "# HELP t_requests_total Requests.\\nSecond line \\\\ here.",
      "# TYPE t_requests_total counter",
      't_requests_total{reason="a"} 3',
      't_requests_total{reason="b"} 0',
      "# HELP t_free Free.",
      "# TYPE t_free gauge",
      "t_free 7",
      "# HELP t_seconds Time.",
      "# TYPE t_seconds histogram",
      't_seconds_bucket{le="0.1"} 1',
      't_seconds_bucket{le="1"} 2',
      't_seconds_bucket{le="+Inf"} 3',
      "t_seconds_sum 5.55",
      "t_seconds_count 3",
      "",
    ].join("\n"),
  );
});

Deno.test("label values are escaped so a real parser reads them back unchanged", () => {
  const registry = new MetricsRegistry();
  const tricky = 'back\\slash "quoted"\nnew line';
  registry.counter("t_total", "T.", ["v"]).inc({ v: tricky });
  assert.equal(escapeLabelValue(tricky), 'back\\\\slash \\"quoted\\"\\nnew line');
  const parsed = parsePrometheusTextFormat(registry.render());
  assert.equal(parsed[0].metrics[0].labels.v, tricky);
  assert.equal(readExposition(registry.render())[0]!.labels.v, tricky);
});

Deno.test("MetricsRegistry refuses bad names, duplicate families, wrong labels and negative counts", () => {
  const registry = new MetricsRegistry();
  assert.throws(() => registry.counter("bad-name", "x"), TypeError);
  assert.throws(() => registry.counter("t_total", "x", ["__reserved"]), TypeError);
  const counter = registry.counter("t_total", "x", ["a"]);
  assert.throws(() => registry.gauge("t_total", "x"), TypeError);
  assert.throws(() => counter.inc({}), TypeError);
  assert.throws(() => counter.inc({ a: "1", b: "2" }), TypeError);
  assert.throws(() => counter.inc({ a: "1" }, -1), RangeError);
  assert.throws(() => registry.histogram("t_h", "x", [1, 1]), RangeError);
});

Deno.test("readExposition() reads samples and skips comments and malformed lines", () => {
  const samples = readExposition(
    '# HELP a x\n# TYPE a counter\na{k="v",j="w"} 3\nbroken line\nb +Inf\nc 1.5 1700000000\n',
  );
  assert.deepEqual(samples, [
    { name: "a", labels: { k: "v", j: "w" }, value: 3 },
    { name: "b", labels: {}, value: Infinity },
    { name: "c", labels: {}, value: 1.5 },
  ]);
});
