//! `xtask gen-data`: a deterministic data set of realistic records for benchmarks and large
//! tests: 500 agents, 20 metrics, lognormal latencies, tags on about a third of the records.

use std::io::Write;

/// xorshift64*: deterministic and fast; statistical quality is ample for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }
}

const METRICS: [(&str, &str); 20] = [
    ("coordination.time", "milliseconds"),
    ("coordination.delivery_rate", "percent"),
    ("coordination.error_rate", "percent"),
    ("coordination.queue_depth", "count"),
    ("coordination.agents", "count"),
    ("coordination.messages", "count"),
    ("consensus.score", "percent"),
    ("agent.confidence", "percent"),
    ("memory_usage_mb", "mb"),
    ("task_duration_ms", "milliseconds"),
    ("tool_call_ms", "milliseconds"),
    ("llm_latency_ms", "milliseconds"),
    ("tokens_in", "count"),
    ("tokens_out", "count"),
    ("cpu_percent", "percent"),
    ("disk_io_kb", "kb"),
    ("retries", "count"),
    ("cache_hit_rate", "percent"),
    ("build_time_ms", "milliseconds"),
    ("test_failures", "count"),
];

const PHASES: [&str; 4] = ["consensus", "coordination", "validation", "planning"];

/// Writes `lines` records spread over `span_ms` ending at `end_ms`, in time order.
pub fn write_records(
    out: &mut impl Write,
    lines: u64,
    end_ms: i64,
    span_ms: i64,
    seed: u64,
) -> std::io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut buf = Vec::with_capacity(1 << 20);
    let start = end_ms - span_ms;
    for i in 0..lines {
        let ts = start + ((i as i128 * span_ms as i128) / lines.max(1) as i128) as i64;
        let agent = rng.next_u64() % 500;
        let (metric, unit) = METRICS[(rng.next_u64() % 20) as usize];
        let value = match unit {
            "milliseconds" => (rng.lognormal(4.5, 1.0) * 10.0).round() / 10.0,
            "percent" => ((100.0 - rng.lognormal(0.5, 1.0)).max(0.0) * 100.0).round() / 100.0,
            "mb" => (rng.lognormal(6.0, 0.5)).round(),
            "kb" => (rng.lognormal(8.0, 1.2)).round(),
            _ => (rng.lognormal(2.0, 1.0)).floor(),
        };
        let tagged = rng.next_u64().is_multiple_of(3);
        buf.extend_from_slice(b"{\"timestamp\":\"");
        buf.extend_from_slice(cfn_core::time::format_ms(ts).as_bytes());
        buf.extend_from_slice(
            format!("\",\"agent\":\"agent-{agent}\",\"metric\":\"{metric}\",\"value\":").as_bytes(),
        );
        cfn_core::record::write_number(&mut buf, value);
        buf.extend_from_slice(format!(",\"unit\":\"{unit}\"").as_bytes());
        if tagged {
            let phase = PHASES[(rng.next_u64() % 4) as usize];
            buf.extend_from_slice(
                format!(
                    ",\"tags\":{{\"phase\":\"{phase}\",\"host\":\"web{}\"}}",
                    agent % 8
                )
                .as_bytes(),
            );
        }
        buf.extend_from_slice(b"}\n");
        if buf.len() > (1 << 20) - 512 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)
}

/// Writes `per_agent_per_sec * agents * secs` records into hot shards under `dir`, as 500
/// agents emitting once a second would have in the last `secs` seconds.
pub fn write_hot_shards(
    dir: &std::path::Path,
    agents: u32,
    secs: i64,
    end_ms: i64,
    shards: u32,
) -> std::io::Result<()> {
    let mut rng = Rng::new(7);
    let mut files: Vec<Vec<u8>> = vec![Vec::new(); shards as usize];
    for s in 0..secs {
        for a in 0..agents {
            let ts = end_ms - (secs - s) * 1000 + (a as i64 * 1000 / agents as i64);
            let (metric, unit) = METRICS[(rng.next_u64() % 20) as usize];
            let v = (rng.lognormal(4.5, 1.0) * 10.0).round() / 10.0;
            let line = format!(
                "{{\"timestamp\":\"{}\",\"agent\":\"agent-{a}\",\"metric\":\"{metric}\",\"value\":{},\"unit\":\"{unit}\"}}\n",
                cfn_core::time::format_ms(ts),
                cfn_core::record::number_text(v)
            );
            files[(a % shards) as usize].extend_from_slice(line.as_bytes());
        }
    }
    std::fs::create_dir_all(dir)?;
    for (n, bytes) in files.iter().enumerate() {
        std::fs::write(cfn_core::paths::shard_path(dir, n as u32), bytes)?;
    }
    Ok(())
}
