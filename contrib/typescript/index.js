// cfn-metrics TypeScript/Node bridge. Runs cfn-emit with an argument array (never a shell),
// by default as one long-lived `cfn-emit --stdin` child fed JSONL, so an agent pays no
// process start per metric. Types are in index.d.ts.
import { spawn } from "node:child_process";
import { writeSync } from "node:fs";

const live = new Set();
let hooked = false;

function hookExit() {
  if (hooked) return;
  hooked = true;
  // The event loop is empty: there is still time to close cleanly.
  process.on("beforeExit", () => {
    for (const b of live) b.close().catch(() => {});
  });
  // process.exit(): no more event loop, so hand what is queued to the child synchronously;
  // the child sees end of input when we are gone, writes everything and exits.
  process.on("exit", () => {
    for (const b of live) b._flushSync();
  });
}

export class MetricsBridge {
  constructor(options = {}) {
    this.emitPath = options.emitPath ?? process.env.CFN_EMIT ?? "cfn-emit";
    this.mode = options.mode ?? "stdin";
    if (this.mode !== "stdin" && this.mode !== "spawn") throw new TypeError(`unknown mode ${this.mode}`);
    this.env = { ...process.env, ...(options.env ?? {}) };
    this.onError = options.onError ?? ((e) => console.error(`cfn-metrics: ${e.message}`));
    this.errors = [];
    this.child = null;
    this.pending = "";
    this.scheduled = false;
    this.inflight = new Set();
    this.closed = false;
    if (options.closeOnExit ?? true) {
      live.add(this);
      hookExit();
    }
  }

  _fail(error) {
    this.errors.push(error);
    try {
      this.onError(error);
    } catch {
      // A throwing handler must not hide the failure: it is kept in this.errors.
    }
  }

  emit(metric, value, options = {}) {
    if (this.closed) throw new Error("MetricsBridge is closed");
    if (typeof metric !== "string" || metric.length === 0) throw new TypeError("metric must be a non-empty string");
    if (typeof value !== "number" || !Number.isFinite(value)) throw new TypeError(`value for ${metric} must be a finite number, got ${String(value)}`);
    const record = { metric, value };
    if (options.agent !== undefined) record.agent = String(options.agent);
    if (options.unit !== undefined) record.unit = String(options.unit);
    if (options.tags !== undefined) record.tags = options.tags;
    if (this.mode === "spawn") return this._spawnOne(record);
    this.pending += JSON.stringify(record) + "\n";
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this._flush());
    }
  }

  recordCoordinationTime(agentId, ms) {
    this.emit("coordination_time", ms, { agent: agentId, unit: "milliseconds" });
  }

  recordMessageDelivery(agentId, rate) {
    this.emit("message_delivery_rate", rate, { agent: agentId, unit: "ratio" });
  }

  recordMemoryUsage(agentId, mb) {
    this.emit("memory_usage_mb", mb, { agent: agentId, unit: "mb" });
  }

  _ensureChild() {
    if (this.child) return this.child;
    const child = spawn(this.emitPath, ["--stdin"], { env: this.env, stdio: ["pipe", "ignore", "pipe"], shell: false });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d) => (stderr += d));
    const done = new Promise((resolve) => {
      child.on("error", (e) => {
        this._fail(new Error(`cannot run ${this.emitPath}: ${e.message}`));
        resolve();
      });
      child.on("close", (code, signal) => {
        if (code !== 0) {
          this._fail(new Error(`cfn-emit exited with ${code ?? signal}: ${stderr.trim()}`));
        }
        resolve();
      });
    });
    // A dead child makes writes fail with EPIPE; the exit status above says why.
    child.stdin.on("error", () => {});
    // The child must not keep the agent alive: when the agent is done, `beforeExit` fires and
    // close() takes the references back while it waits for the last records.
    child.unref();
    child.stdin.unref?.();
    child.stderr.unref?.();
    this.child = child;
    this.inflight.add(done);
    done.then(() => {
      this.inflight.delete(done);
      if (this.child === child) this.child = null;
    });
    return child;
  }

  _flush() {
    this.scheduled = false;
    if (!this.pending) return;
    const data = this.pending;
    this.pending = "";
    this._ensureChild().stdin.write(data);
  }

  _flushSync() {
    if (!this.pending || this.mode !== "stdin") return;
    const child = this._ensureChild();
    const fd = child.stdin?._handle?.fd;
    if (typeof fd === "number" && fd >= 0) {
      try {
        writeSync(fd, this.pending);
        this.pending = "";
      } catch (e) {
        this._fail(new Error(`cannot hand ${this.pending.length} bytes to cfn-emit at exit: ${e.message}`));
      }
    }
  }

  _spawnOne(record) {
    const args = ["--stdin"];
    const child = spawn(this.emitPath, args, { env: this.env, stdio: ["pipe", "ignore", "pipe"], shell: false });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d) => (stderr += d));
    child.stdin.on("error", () => {});
    const done = new Promise((resolve) => {
      child.on("error", (e) => {
        this._fail(new Error(`cannot run ${this.emitPath}: ${e.message}`));
        resolve();
      });
      child.on("close", (code, signal) => {
        if (code !== 0) this._fail(new Error(`cfn-emit exited with ${code ?? signal}: ${stderr.trim()}`));
        resolve();
      });
    });
    this.inflight.add(done);
    done.then(() => this.inflight.delete(done));
    child.stdin.end(JSON.stringify(record) + "\n");
  }

  async close() {
    if (this.closed && this.inflight.size === 0) {
      if (this.errors.length) throw this._aggregate();
      return;
    }
    this.closed = true;
    live.delete(this);
    this._flush();
    if (this.child) {
      this.child.ref();
      this.child.stdin.ref?.();
      this.child.stderr.ref?.();
      this.child.stdin.end();
    }
    while (this.inflight.size) await Promise.all([...this.inflight]);
    if (this.errors.length) throw this._aggregate();
  }

  _aggregate() {
    const e = new Error(`cfn-metrics: ${this.errors.length} failure(s): ${this.errors.map((x) => x.message).join("; ")}`);
    e.errors = this.errors;
    return e;
  }
}

export default MetricsBridge;
