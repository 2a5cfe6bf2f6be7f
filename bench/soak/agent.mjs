// Simulated TypeScript agents for the soak run: AGENTS agents in one Node process sharing one
// MetricsBridge (one cfn-emit --stdin child), each doing a little work and emitting about once
// a second until END (epoch ms). Prints counts, the bridge child's CPU time and call latency.
import { readFileSync } from "node:fs";
import { MetricsBridge } from "../../contrib/typescript/index.js";

const [first, agents, end] = process.argv.slice(2).map(Number);
const bridge = new MetricsBridge();
const counts = new Map();
const lat = [];
let childPid = null;

function cpuOf(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 1/100 s
  } catch {
    return 0;
  }
}

await new Promise((resolve) => {
  let running = agents;
  for (let a = first; a < first + agents; a++) {
    const agent = `agent-${a}`;
    counts.set(agent, 0);
    const tick = () => {
      if (Date.now() >= end) {
        if (--running === 0) resolve();
        return;
      }
      let x = 0;
      for (let i = 0; i < 2000; i++) x += Math.sqrt(i * a); // the agent's "work"
      const t0 = process.hrtime.bigint();
      bridge.emit("soak.seq", counts.get(agent), { agent, tags: { via: "ts" } });
      lat.push(Number(process.hrtime.bigint() - t0) / 1000);
      counts.set(agent, counts.get(agent) + 1);
      childPid ??= bridge.child?.pid ?? null;
      setTimeout(tick, 850 + Math.random() * 300 + (x % 1));
    };
    setTimeout(tick, Math.random() * 1000);
  }
});
const childCpu = childPid ? cpuOf(childPid) : 0;
await bridge.close();
for (const [agent, n] of counts) console.log(`count ${agent.slice(6)} ${n} 0`);
console.log(`bridgecpu ${childCpu}`);
console.log(`lat ${lat.join(" ")}`);
