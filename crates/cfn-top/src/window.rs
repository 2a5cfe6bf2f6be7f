//! The sliding window: the values of the last few minutes per metric, kept as they arrive
//! from the shard follower, and the table computed from them (exact nearest-rank
//! quantiles, the statistic `cfn-agg` gives while a group is exact).

use cfn_core::pattern::NamePattern;
use cfn_core::reader::RecordRef;
use cfn_core::time::EpochMs;
use cfn_stats::stats::nearest_rank;
use std::collections::{BTreeMap, HashMap};

/// Most values kept over all metrics (24 bytes each: about 24 MB). Past it, new records are
/// counted as not shown and the header says so.
pub const MAX_SAMPLES: usize = 1_000_000;
/// Most distinct metric names kept; records of further names are counted as not shown.
pub const MAX_METRICS: usize = 10_000;
/// Most distinct agent names kept for the agent filter; records of further agents are kept
/// with no agent (an agent filter does not match them) and the header says so.
pub const MAX_AGENTS: usize = 100_000;
/// Slices of the window in a metric's sparkline (the view merges them to fit).
pub const SPARK_SLICES: usize = 24;

const NO_AGENT: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Sample {
    ts_ms: EpochMs,
    value: f64,
    agent: u32,
}

#[derive(Debug, Default)]
struct MetricValues {
    /// The unit of the first record of the metric that had one.
    unit: Option<String>,
    samples: Vec<Sample>,
}

/// A table row: one metric over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub metric: String,
    pub unit: Option<String>,
    pub count: u64,
    /// Records per second over the window.
    pub rate: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    /// Records per slice of the window, oldest first ([`SPARK_SLICES`] slices).
    pub spark: Vec<u64>,
}

/// The columns a table can be sorted by, in the table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Metric,
    Count,
    Rate,
    P50,
    P95,
    P99,
    Min,
    Max,
}

impl Column {
    pub const ALL: [Column; 8] = [
        Column::Metric,
        Column::Count,
        Column::Rate,
        Column::P50,
        Column::P95,
        Column::P99,
        Column::Min,
        Column::Max,
    ];

    /// The column's heading.
    pub fn title(self) -> &'static str {
        match self {
            Column::Metric => "metric",
            Column::Count => "count",
            Column::Rate => "rate/s",
            Column::P50 => "p50",
            Column::P95 => "p95",
            Column::P99 => "p99",
            Column::Min => "min",
            Column::Max => "max",
        }
    }

    fn key(self, r: &Row) -> f64 {
        match self {
            Column::Metric => 0.0,
            Column::Count => r.count as f64,
            Column::Rate => r.rate,
            Column::P50 => r.p50,
            Column::P95 => r.p95,
            Column::P99 => r.p99,
            Column::Min => r.min,
            Column::Max => r.max,
        }
    }
}

/// Which rows, in which order.
#[derive(Clone, Debug)]
pub struct TableQuery {
    pub window_ms: i64,
    pub metric: Option<NamePattern>,
    pub agent: Option<NamePattern>,
    pub sort: Column,
    /// Largest first (the default for figures) or smallest first.
    pub descending: bool,
}

/// What the window holds.
#[derive(Debug, Default)]
pub struct Window {
    /// Values older than this before the newest "now" are let go.
    retain_ms: i64,
    metrics: BTreeMap<String, MetricValues>,
    agent_names: Vec<String>,
    agent_ids: HashMap<String, u32>,
    samples: usize,
    /// Records not kept because a bound was reached ([`MAX_SAMPLES`], [`MAX_METRICS`]).
    pub not_kept: u64,
    /// Records kept without their agent past [`MAX_AGENTS`].
    pub agents_overflow: u64,
}

impl Window {
    /// An empty window that keeps values for `retain_ms` (the widest window the view offers).
    pub fn new(retain_ms: i64) -> Self {
        Self {
            retain_ms,
            ..Self::default()
        }
    }

    /// Values held now.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Adds a record seen at `now`; records older than what is retained are let go at once.
    pub fn add(&mut self, rec: &RecordRef<'_>, now: EpochMs) {
        if rec.ts_ms < now - self.retain_ms || !rec.value.is_finite() {
            return;
        }
        if self.samples >= MAX_SAMPLES
            || (self.metrics.len() >= MAX_METRICS && !self.metrics.contains_key(&*rec.metric))
        {
            self.not_kept += 1;
            return;
        }
        let agent = match rec.agent.as_deref() {
            None => NO_AGENT,
            Some(a) => self.agent_id(a),
        };
        let m = self.metrics.entry(rec.metric.to_string()).or_default();
        if m.unit.is_none() {
            m.unit = rec.unit.as_deref().map(str::to_string);
        }
        m.samples.push(Sample {
            ts_ms: rec.ts_ms,
            value: rec.value,
            agent,
        });
        self.samples += 1;
    }

    fn agent_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.agent_ids.get(name) {
            return id;
        }
        if self.agent_names.len() >= MAX_AGENTS {
            self.agents_overflow += 1;
            return NO_AGENT;
        }
        let id = self.agent_names.len() as u32;
        self.agent_names.push(name.to_string());
        self.agent_ids.insert(name.to_string(), id);
        id
    }

    /// Lets go of the values older than the retained span before `now`, and of metrics
    /// left with none.
    pub fn evict(&mut self, now: EpochMs) {
        let oldest = now - self.retain_ms;
        let mut held = 0;
        self.metrics.retain(|_, m| {
            m.samples.retain(|s| s.ts_ms >= oldest);
            held += m.samples.len();
            !m.samples.is_empty()
        });
        self.samples = held;
    }

    /// The table for `q` at `now`: every metric (matching the filters) with records at or
    /// after `now - window`, as `cfn-cat --since WINDOW | cfn-agg` would give it.
    pub fn rows(&self, q: &TableQuery, now: EpochMs) -> Vec<Row> {
        let since = now - q.window_ms;
        let agent_ok: Option<Vec<bool>> = q
            .agent
            .as_ref()
            .map(|p| self.agent_names.iter().map(|a| p.matches(a)).collect());
        let mut rows: Vec<Row> = self
            .metrics
            .iter()
            .filter(|(name, _)| q.metric.as_ref().is_none_or(|p| p.matches(name)))
            .filter_map(|(name, m)| {
                let mut spark = vec![0u64; SPARK_SLICES];
                let slice_ms = (q.window_ms / SPARK_SLICES as i64).max(1);
                let mut values: Vec<f64> = Vec::new();
                for s in &m.samples {
                    if s.ts_ms < since {
                        continue;
                    }
                    if let Some(ok) = &agent_ok
                        && !ok.get(s.agent as usize).copied().unwrap_or(false)
                    {
                        continue;
                    }
                    values.push(s.value);
                    let slice = ((s.ts_ms - since) / slice_ms).clamp(0, SPARK_SLICES as i64 - 1);
                    spark[slice as usize] += 1;
                }
                row_of(name, m.unit.clone(), values, q.window_ms, spark)
            })
            .collect();
        sort_rows(&mut rows, q.sort, q.descending);
        rows
    }
}

fn row_of(
    metric: &str,
    unit: Option<String>,
    mut values: Vec<f64>,
    window_ms: i64,
    spark: Vec<u64>,
) -> Option<Row> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    Some(Row {
        metric: metric.to_string(),
        unit,
        count: values.len() as u64,
        rate: values.len() as f64 * 1000.0 / window_ms.max(1) as f64,
        p50: nearest_rank(&values, 0.5),
        p95: nearest_rank(&values, 0.95),
        p99: nearest_rank(&values, 0.99),
        min: values[0],
        max: values[values.len() - 1],
        spark,
    })
}

/// Sorts by `col` (names A to Z for the metric column unless `descending`), ties by name.
pub fn sort_rows(rows: &mut [Row], col: Column, descending: bool) {
    rows.sort_by(|a, b| {
        let ord = match col {
            Column::Metric => a.metric.cmp(&b.metric),
            _ => col.key(a).total_cmp(&col.key(b)),
        };
        let ord = if descending { ord.reverse() } else { ord };
        ord.then_with(|| a.metric.cmp(&b.metric))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfn_core::reader::parse_record;

    fn add(w: &mut Window, line: &str, now: EpochMs) {
        w.add(&parse_record(line.as_bytes()).unwrap(), now);
    }

    fn query(window_ms: i64) -> TableQuery {
        TableQuery {
            window_ms,
            metric: None,
            agent: None,
            sort: Column::Metric,
            descending: false,
        }
    }

    const T0: i64 = 1_795_773_600_000; // 2026-11-27T10:00:00Z

    #[test]
    fn rows_are_exact_over_the_window_and_filtered_by_metric_and_agent() {
        let mut w = Window::new(900_000);
        for i in 0..100 {
            let ts = cfn_core::time::format_ms(T0 - 59_000 + i * 500);
            add(
                &mut w,
                &format!(
                    r#"{{"timestamp":"{ts}","metric":"lat","value":{},"agent":"a{}","unit":"ms"}}"#,
                    i + 1,
                    i % 2
                ),
                T0,
            );
        }
        // Outside a 30 s window, inside the retained span.
        add(
            &mut w,
            r#"{"timestamp":"2026-11-27T09:58:00Z","metric":"old","value":5}"#,
            T0,
        );
        let rows = w.rows(&query(60_000), T0);
        assert_eq!(rows.len(), 1, "a record before the window is not counted");
        let lat = &rows[0];
        assert_eq!((lat.count, lat.min, lat.max), (100, 1.0, 100.0));
        assert_eq!((lat.p50, lat.p95, lat.p99), (50.0, 95.0, 99.0));
        assert_eq!(lat.spark.iter().sum::<u64>(), 100);
        assert!((lat.rate - 100.0 / 60.0).abs() < 1e-9);
        assert_eq!(w.rows(&query(30_000), T0)[0].count, 42);
        assert_eq!(w.rows(&query(300_000), T0).len(), 2);
        let odd = TableQuery {
            agent: Some(NamePattern::new("a1").unwrap()),
            ..query(60_000)
        };
        let rows = w.rows(&odd, T0);
        assert_eq!(
            rows.len(),
            1,
            "the agent filter drops metrics without its records"
        );
        assert_eq!((rows[0].count, rows[0].min, rows[0].max), (50, 2.0, 100.0));
        let globbed = TableQuery {
            metric: Some(NamePattern::new("o*").unwrap()),
            ..query(600_000)
        };
        assert_eq!(w.rows(&globbed, T0)[0].metric, "old");
    }

    #[test]
    fn sorting_by_each_column_and_eviction() {
        let mut w = Window::new(60_000);
        for (m, v, n) in [("a", 5.0, 1), ("b", 1.0, 3), ("c", 9.0, 2)] {
            for _ in 0..n {
                add(
                    &mut w,
                    &format!(
                        r#"{{"timestamp":"2026-11-27T09:59:50Z","metric":"{m}","value":{v}}}"#
                    ),
                    T0,
                );
            }
        }
        let names = |col, desc| {
            let q = TableQuery {
                sort: col,
                descending: desc,
                ..query(60_000)
            };
            w.rows(&q, T0)
                .iter()
                .map(|r| r.metric.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Column::Metric, false), ["a", "b", "c"]);
        assert_eq!(names(Column::Metric, true), ["c", "b", "a"]);
        assert_eq!(names(Column::Count, true), ["b", "c", "a"]);
        assert_eq!(names(Column::P99, true), ["c", "a", "b"]);
        assert_eq!(names(Column::Min, false), ["b", "a", "c"]);
        assert_eq!(w.samples(), 6);
        w.evict(T0 + 55_000);
        assert_eq!(w.samples(), 0, "values past the retained span are let go");
        assert!(w.rows(&query(60_000), T0 + 55_000).is_empty());
    }

    #[test]
    fn bounds_count_what_is_not_kept() {
        let mut w = Window::new(60_000);
        for i in 0..MAX_METRICS + 5 {
            add(
                &mut w,
                &format!(r#"{{"timestamp":"2026-11-27T09:59:50Z","metric":"m{i}","value":1}}"#),
                T0,
            );
        }
        assert_eq!(w.metrics.len(), MAX_METRICS);
        assert_eq!(w.not_kept, 5);
        add(
            &mut w,
            r#"{"timestamp":"2026-11-27T09:59:50Z","metric":"m0","value":1}"#,
            T0,
        );
        assert_eq!(w.not_kept, 5, "a known metric is still kept");
    }
}
