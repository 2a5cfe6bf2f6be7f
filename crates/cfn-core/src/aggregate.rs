//! Aggregates (contract section 4): the line format `cfn-agg` writes and every consumer
//! (`cfn-alert`, `cfn-promtext`, `cfn-push`, `cfn-serve`) reads.

use crate::reader::MalformedLog;
use crate::record::{write_json_str, write_number};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::BufRead;

/// One group's statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregate {
    pub metric: String,
    pub unit: Option<String>,
    /// Present only when grouped by agent.
    pub agent: Option<String>,
    /// Present only for the tags grouped by.
    pub tags: BTreeMap<String, String>,
    /// Present only with `--bucket`.
    pub bucket_start: Option<String>,
    pub count: u64,
    pub sum: f64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    /// `(q, value)` in the order requested, written as `p50`, `p95`, `p99.9`...
    pub quantiles: Vec<(f64, f64)>,
    pub first: Option<String>,
    pub last: Option<String>,
    /// The mergeable state (`--with-digest`), opaque to consumers.
    pub state: Option<Value>,
}

/// The key of quantile `q`: `0.5` -> `p50`, `0.999` -> `p99.9`.
pub fn quantile_key(q: f64) -> String {
    let pct = (q * 100.0 * 1e6).round() / 1e6;
    format!("p{}", crate::record::number_text(pct))
}

/// The quantile of a key such as `p95` or `p99.9`.
pub fn parse_quantile_key(key: &str) -> Option<f64> {
    let rest = key.strip_prefix('p')?;
    if rest.is_empty() || !rest.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    let pct: f64 = rest.parse().ok()?;
    (0.0..=100.0)
        .contains(&pct)
        .then_some((pct / 100.0 * 1e9).round() / 1e9)
}

impl Aggregate {
    /// The value of a statistic by name: `count`, `sum`, `avg`, `min`, `max`, or a quantile
    /// key (`p95`).
    pub fn stat(&self, name: &str) -> Option<f64> {
        match name {
            "count" => Some(self.count as f64),
            "sum" => Some(self.sum),
            "avg" | "mean" => Some(self.avg),
            "min" => Some(self.min),
            "max" => Some(self.max),
            _ => {
                let q = parse_quantile_key(name)?;
                self.quantiles
                    .iter()
                    .find(|(k, _)| (k - q).abs() < 1e-9)
                    .map(|(_, v)| *v)
            }
        }
    }

    /// The group labels: `agent` and each tag, in that order.
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(a) = &self.agent {
            out.push(("agent".to_string(), a.clone()));
        }
        out.extend(self.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// Appends the aggregate as one JSON line (with `\n`), keys in the contract's order.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"metric\":");
        write_json_str(out, &self.metric);
        if let Some(u) = &self.unit {
            out.extend_from_slice(b",\"unit\":");
            write_json_str(out, u);
        }
        if let Some(a) = &self.agent {
            out.extend_from_slice(b",\"agent\":");
            write_json_str(out, a);
        }
        if !self.tags.is_empty() {
            out.extend_from_slice(b",\"tags\":{");
            for (i, (k, v)) in self.tags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(out, k);
                out.push(b':');
                write_json_str(out, v);
            }
            out.push(b'}');
        }
        if let Some(b) = &self.bucket_start {
            out.extend_from_slice(b",\"bucket_start\":");
            write_json_str(out, b);
        }
        out.extend_from_slice(b",\"count\":");
        write_number(out, self.count as f64);
        for (key, v) in [
            ("sum", self.sum),
            ("avg", self.avg),
            ("min", self.min),
            ("max", self.max),
        ] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            write_number(out, v);
        }
        for (q, v) in &self.quantiles {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(quantile_key(*q).as_bytes());
            out.extend_from_slice(b"\":");
            write_number(out, *v);
        }
        if let Some(f) = &self.first {
            out.extend_from_slice(b",\"first\":");
            write_json_str(out, f);
        }
        if let Some(l) = &self.last {
            out.extend_from_slice(b",\"last\":");
            write_json_str(out, l);
        }
        if let Some(s) = &self.state {
            out.extend_from_slice(b",\"state\":");
            let _ = serde_json::to_writer(&mut *out, s);
        }
        out.extend_from_slice(b"}\n");
    }

    /// Parses one aggregate line.
    ///
    /// # Errors
    /// A reason naming the missing or mistyped field.
    pub fn parse(line: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(map) = v else {
            return Err("not a JSON object".into());
        };
        Self::from_map(map)
    }

    fn from_map(mut map: Map<String, Value>) -> Result<Self, String> {
        let text = |map: &mut Map<String, Value>, k: &str| -> Result<Option<String>, String> {
            match map.remove(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(format!("{k} {other} is not a string")),
            }
        };
        let num = |map: &Map<String, Value>, k: &str| -> Result<f64, String> {
            match map.get(k) {
                Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN)),
                // Non-finite statistics are written as null.
                Some(Value::Null) | None => Ok(f64::NAN),
                Some(other) => Err(format!("{k} {other} is not a number")),
            }
        };
        let metric = text(&mut map, "metric")?.ok_or("missing \"metric\"")?;
        let count = match map.get("count") {
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .ok_or_else(|| format!("count {n} is not a count"))?,
            None => return Err("missing \"count\"".into()),
            Some(other) => return Err(format!("count {other} is not a number")),
        };
        let mut tags = BTreeMap::new();
        if let Some(Value::Object(t)) = map.remove("tags") {
            for (k, v) in t {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                tags.insert(k, s);
            }
        }
        let mut quantiles: Vec<(f64, f64)> = Vec::new();
        for (k, v) in &map {
            if let Some(q) = parse_quantile_key(k) {
                let val = match v {
                    Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                    Value::Null => f64::NAN,
                    other => return Err(format!("{k} {other} is not a number")),
                };
                quantiles.push((q, val));
            }
        }
        quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Self {
            unit: text(&mut map, "unit")?,
            agent: text(&mut map, "agent")?,
            bucket_start: text(&mut map, "bucket_start")?,
            first: text(&mut map, "first")?,
            last: text(&mut map, "last")?,
            sum: num(&map, "sum")?,
            avg: num(&map, "avg")?,
            min: num(&map, "min")?,
            max: num(&map, "max")?,
            state: map.remove("state"),
            metric,
            count,
            tags,
            quantiles,
        })
    }
}

/// Reads every aggregate line from `input`; malformed lines go to `log`.
///
/// # Errors
/// I/O errors, and the first malformed line when `log` is strict.
pub fn read_aggregates(
    input: impl BufRead,
    source: &str,
    log: &mut MalformedLog,
) -> anyhow::Result<Vec<Aggregate>> {
    let mut out = Vec::new();
    for_each_aggregate(input, source, log, |a| {
        out.push(a);
        Ok(())
    })?;
    Ok(out)
}

/// Passes every aggregate line of `input` to `f`; a line that does not parse, or that `f`
/// refuses (with a reason), goes to `log` under its line number. Lines are read with the
/// same bound as records ([`crate::reader::MAX_LINE_BYTES`]).
///
/// # Errors
/// I/O errors, and the first bad line when `log` is strict.
pub fn for_each_aggregate(
    input: impl BufRead,
    source: &str,
    log: &mut MalformedLog,
    f: impl FnMut(Aggregate) -> Result<(), String>,
) -> anyhow::Result<()> {
    // Presence lines (contract section 10) are not aggregates, nor malformed: skipped here.
    for_each_line(input, source, log, f, |_| Ok(()))
}

/// The aggregates and the presence lines (contract section 10) of `input`; a line that
/// does not parse goes to `log`.
///
/// # Errors
/// As [`for_each_aggregate`].
pub fn read_analysis(
    input: impl BufRead,
    source: &str,
    log: &mut MalformedLog,
) -> anyhow::Result<(Vec<Aggregate>, Vec<crate::presence::Line>)> {
    let (mut aggs, mut presence) = (Vec::new(), Vec::new());
    for_each_line(
        input,
        source,
        log,
        |a| {
            aggs.push(a);
            Ok(())
        },
        |line| {
            presence.push(crate::presence::parse_line(line)?);
            Ok(())
        },
    )?;
    Ok((aggs, presence))
}

fn for_each_line(
    mut input: impl BufRead,
    source: &str,
    log: &mut MalformedLog,
    mut f: impl FnMut(Aggregate) -> Result<(), String>,
    mut presence: impl FnMut(&str) -> Result<(), String>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let read =
            crate::reader::read_line_bounded(&mut input, &mut buf, crate::reader::MAX_LINE_BYTES)
                .map_err(|e| anyhow::Error::new(e).context(format!("reading {source}")))?;
        if read.bytes == 0 {
            return Ok(());
        }
        line_no += 1;
        let outcome = if read.too_long {
            Err(format!(
                "line is longer than {} bytes",
                crate::reader::MAX_LINE_BYTES
            ))
        } else {
            match std::str::from_utf8(&buf) {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) if crate::presence::is_presence_line(line) => presence(line),
                Ok(line) => Aggregate::parse(line).and_then(&mut f),
                Err(_) => Err("line is not valid UTF-8".into()),
            }
        };
        if let Err(reason) = outcome {
            log.report(source, line_no, &reason)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_keys_round_trip() {
        assert_eq!(quantile_key(0.5), "p50");
        assert_eq!(quantile_key(0.95), "p95");
        assert_eq!(quantile_key(0.999), "p99.9");
        assert_eq!(parse_quantile_key("p99.9"), Some(0.999));
        assert_eq!(parse_quantile_key("pfoo"), None);
    }

    #[test]
    fn writes_contract_example_and_reads_it_back() {
        let a = Aggregate {
            metric: "coordination.time".into(),
            unit: Some("milliseconds".into()),
            agent: Some("agent-42".into()),
            tags: [("phase".to_string(), "consensus".to_string())].into(),
            count: 1200,
            sum: 181234.0,
            avg: 151.03,
            min: 3.0,
            max: 10234.0,
            quantiles: vec![(0.5, 120.0), (0.95, 410.0), (0.99, 1900.0)],
            first: Some("2026-11-27T10:00:00.001Z".into()),
            last: Some("2026-11-27T10:00:29.998Z".into()),
            ..Default::default()
        };
        let mut out = Vec::new();
        a.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"metric\":\"coordination.time\",\"unit\":\"milliseconds\",\"agent\":\"agent-42\",\"tags\":{\"phase\":\"consensus\"},\"count\":1200,\"sum\":181234,\"avg\":151.03,\"min\":3,\"max\":10234,\"p50\":120,\"p95\":410,\"p99\":1900,\"first\":\"2026-11-27T10:00:00.001Z\",\"last\":\"2026-11-27T10:00:29.998Z\"}\n"
        );
        assert_eq!(Aggregate::parse(text.trim()).unwrap(), a);
        assert_eq!(a.stat("p95"), Some(410.0));
        assert_eq!(a.stat("count"), Some(1200.0));
    }
}
