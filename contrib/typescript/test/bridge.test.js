// Tests of the bridge against the real cfn-emit (CFN_EMIT, or cfn-emit on PATH).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, mkdirSync, existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { MetricsBridge } from "../index.js";

const here = dirname(fileURLToPath(import.meta.url));

function records(dir) {
  const out = [];
  for (const f of readdirSync(dir).filter((f) => f.startsWith("cfn-metrics-"))) {
    const text = readFileSync(join(dir, f), "utf8");
    assert.ok(text === "" || text.endsWith("\n"), `${f} ends mid-line`);
    for (const line of text.split("\n").filter(Boolean)) out.push({ shard: f, ...JSON.parse(line) });
  }
  return out;
}

function fresh() {
  const dir = mkdtempSync(join(tmpdir(), "cfn-bridge-"));
  return { dir, env: { CFN_METRICS_DIR: dir, METRICS_FILE: "" } };
}

test("records every emit through one cfn-emit --stdin child", async () => {
  const { dir, env } = fresh();
  const bridge = new MetricsBridge({ env });
  for (let i = 0; i < 2000; i++) bridge.emit("task_duration_ms", i, { agent: `agent-${i % 50}`, unit: "milliseconds", tags: { phase: "build", i } });
  bridge.recordCoordinationTime("agent-42", 150.5);
  bridge.recordMessageDelivery("agent-42", 0.97);
  bridge.recordMemoryUsage("agent-42", 512);
  await bridge.close();
  const recs = records(dir);
  assert.equal(recs.length, 2003);
  const seen = new Set(recs.filter((r) => r.metric === "task_duration_ms").map((r) => r.value));
  assert.equal(seen.size, 2000);
  const ct = recs.find((r) => r.metric === "coordination_time");
  assert.deepEqual([ct.agent, ct.value, ct.unit, ct.shard], ["agent-42", 150.5, "milliseconds", "cfn-metrics-10.jsonl"]);
  assert.equal(recs.find((r) => r.metric === "message_delivery_rate").value, 0.97);
  assert.equal(recs.find((r) => r.metric === "memory_usage_mb").unit, "mb");
  const tagged = recs.find((r) => r.metric === "task_duration_ms" && r.value === 7);
  assert.deepEqual(tagged.tags, { phase: "build", i: 7 });
  assert.match(ct.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test("an agent id with shell syntax is recorded literally and runs nothing", async () => {
  const { dir, env } = fresh();
  mkdirSync("/tmp/x", { recursive: true });
  writeFileSync("/tmp/x/sentinel", "still here");
  for (const mode of ["stdin", "spawn"]) {
    const bridge = new MetricsBridge({ env, mode });
    bridge.emit("m", 1, { agent: "42; rm -rf /tmp/x", tags: { note: "$(touch /tmp/x/pwned) `id`" } });
    await bridge.close();
  }
  const recs = records(dir);
  assert.equal(recs.length, 2);
  for (const r of recs) {
    assert.equal(r.agent, "42; rm -rf /tmp/x");
    assert.equal(r.tags.note, "$(touch /tmp/x/pwned) `id`");
  }
  assert.ok(existsSync("/tmp/x/sentinel"));
  assert.ok(!existsSync("/tmp/x/pwned"));
});

test("bad values throw at once; nothing is sent for them", async () => {
  const { dir, env } = fresh();
  const bridge = new MetricsBridge({ env });
  for (const v of [NaN, Infinity, -Infinity, "12", undefined]) {
    assert.throws(() => bridge.emit("m", v), TypeError);
  }
  assert.throws(() => bridge.emit("", 1), TypeError);
  bridge.emit("m", 2);
  await bridge.close();
  assert.equal(records(dir).length, 1);
});

test("failures are reported, not thrown away", async () => {
  const { dir } = fresh();
  const seen = [];
  // A metrics directory that is a file: cfn-emit cannot create shards and exits non-zero.
  const notADir = join(dir, "file");
  writeFileSync(notADir, "");
  const bridge = new MetricsBridge({ env: { CFN_METRICS_DIR: notADir, METRICS_FILE: "" }, onError: (e) => seen.push(e) });
  bridge.emit("m", 1, { agent: "a-1" });
  await assert.rejects(bridge.close(), /cfn-emit exited with \d+: .*cannot open/);
  assert.equal(seen.length, 1);

  const missing = new MetricsBridge({ emitPath: "/nonexistent/cfn-emit", onError: () => {} });
  missing.emit("m", 1);
  await assert.rejects(missing.close(), /cannot run \/nonexistent\/cfn-emit/);
});

test("queued records are written when the process exits without close()", () => {
  const { dir } = fresh();
  for (const ending of ["process.exit(0);", "/* the event loop just empties */"]) {
    const script = `
      import { MetricsBridge } from ${JSON.stringify(join(here, "..", "index.js"))};
      const b = new MetricsBridge();
      for (let i = 0; i < 500; i++) b.emit("exit.test", i, { agent: "agent-1", tags: { ending: ${JSON.stringify(ending.slice(0, 12))} } });
      ${ending}
    `;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, CFN_METRICS_DIR: dir, METRICS_FILE: "" },
      encoding: "utf8",
      timeout: 20000,
    });
    assert.equal(r.status, 0, `${ending}: ${r.stderr} ${r.error ?? ""}`);
  }
  // The child may still be writing for a moment after the parent exited.
  const deadline = Date.now() + 5000;
  let n = 0;
  while (Date.now() < deadline && (n = records(dir).length) < 1000) spawnSync("sleep", ["0.05"]);
  assert.equal(n, 1000);
});
