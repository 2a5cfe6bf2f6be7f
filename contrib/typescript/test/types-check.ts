// Compiled with `tsc --noEmit --strict` in CI: the declarations must describe the real API.
import { MetricsBridge, type EmitOptions } from "../index.js";

const bridge = new MetricsBridge({ mode: "stdin", env: { CFN_METRICS_DIR: "/tmp" }, onError: (e: Error) => console.log(e.message) });
const opts: EmitOptions = { agent: "agent-1", unit: "ms", tags: { phase: "x", n: 1, ok: true } };
bridge.emit("coordination.time", 150, opts);
bridge.recordCoordinationTime("agent-1", 12);
bridge.recordMessageDelivery("agent-1", 0.99);
bridge.recordMemoryUsage("agent-1", 512);
const failures: readonly Error[] = bridge.errors;
void failures;
const done: Promise<void> = bridge.close();
void done;
