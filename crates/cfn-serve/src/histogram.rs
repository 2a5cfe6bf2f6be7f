//! Cumulative histograms of the records appended since start-up, for `/metrics`: the form
//! Prometheus can add up across hosts (`sum by (le)`), which summaries are not.
//!
//! Fed by the index with each record it reads after its start-up build, so a record counts
//! once whatever trims and rotations happen; a restart starts from zero, which Prometheus
//! reads as a counter reset.

use crate::snapshot::{FrameReader, FrameWriter};
use cfn_core::exit::{Exit, fail};
use cfn_core::pattern::NamePattern;
use cfn_core::reader::RecordRef;
use std::collections::HashMap;
use std::sync::Arc;

/// Default bounds per unit, in that unit.
fn default_bounds(unit: Option<&str>) -> &'static [f64] {
    const MS: &[f64] = &[
        1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0,
    ];
    const SECONDS: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0,
    ];
    const BYTES: &[f64] = &[
        1024.0,
        4096.0,
        16384.0,
        65536.0,
        262144.0,
        1048576.0,
        4194304.0,
        16777216.0,
        67108864.0,
        268435456.0,
        1073741824.0,
        4294967296.0,
    ];
    const KB: &[f64] = &[
        1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
        4194304.0,
    ];
    const MB: &[f64] = &[
        1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0,
    ];
    const PERCENT: &[f64] = &[
        1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0,
    ];
    const RATIO: &[f64] = &[
        0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
    ];
    const COUNT: &[f64] = &[
        0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
        100000.0, 1000000.0,
    ];
    use cfn_core::units::Dimension::{Bytes, Percent, Time};
    let Some(u) = unit.and_then(cfn_core::units::parse_unit) else {
        return COUNT;
    };
    match (u.dimension, u.to_base) {
        (Time, 1e-3) => MS,
        (Time, 1.0) => SECONDS,
        (Bytes, 1.0) => BYTES,
        (Bytes, 1024.0) => KB,
        (Bytes, 1_048_576.0) => MB,
        (Percent, 1.0) => PERCENT,
        (Percent, 100.0) => RATIO,
        _ => COUNT,
    }
}

/// What the histograms count and how.
#[derive(Clone, Debug, Default)]
pub struct HistogramConfig {
    /// `--buckets GLOB=B1,B2,…`, the first match wins.
    pub buckets: Vec<(NamePattern, Arc<[f64]>)>,
    /// `--histogram-by agent`.
    pub by_agent: bool,
    /// `--histogram-by tag:NAME`, in order.
    pub by_tags: Vec<String>,
    /// `--histogram-max-series`: most series over all metrics (0 is taken as the default).
    pub max_series: usize,
    /// `--native-schema`: the resolution native buckets start at.
    pub native_schema: i32,
    /// `--native-max-buckets`: most native buckets of each sign per series.
    pub native_max_buckets: usize,
}

/// The default of `--native-schema`: buckets 1.09% wide (2^(1/64)), so a quantile read
/// from them is within 1.09% of the exact one, under the 2% fleet target.
pub const DEFAULT_NATIVE_SCHEMA: i32 = 6;
/// The default of `--native-max-buckets`: at schema 6, a range of 2^15.6 (50,000x: 1 ms to
/// 50 s) before the resolution drops; at most 8 KB per series.
pub const DEFAULT_NATIVE_MAX_BUCKETS: usize = 1000;
/// Native buckets over all series: past it, a growing series lowers its resolution instead
/// of taking memory (16 MB).
const NATIVE_BUDGET: usize = 2_000_000;

/// The default of `--histogram-max-series`: 10,000 series of 16 buckets are about 4 MB of
/// memory and 15 MB of exposition.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

impl HistogramConfig {
    /// Parses the flags.
    ///
    /// # Errors
    /// Exit 2 naming the bad value.
    pub fn parse(
        buckets: &[String],
        by: &[String],
        max_series: usize,
        native_schema: i32,
        native_max_buckets: usize,
    ) -> anyhow::Result<Self> {
        if max_series == 0 {
            return Err(fail(
                Exit::Usage,
                "--histogram-max-series 0: must be at least 1",
            ));
        }
        cfn_stats::exponential::check_limits(
            ("--native-schema", native_schema),
            ("--native-max-buckets", native_max_buckets),
        )?;
        let mut cfg = Self {
            max_series,
            native_schema,
            native_max_buckets,
            ..Self::default()
        };
        for b in buckets {
            let (glob, list) = b.rsplit_once('=').ok_or_else(|| {
                fail(
                    Exit::Usage,
                    format!("--buckets {b:?}: expected METRIC_GLOB=B1,B2,..."),
                )
            })?;
            let pattern = NamePattern::new(glob)
                .map_err(|e| fail(Exit::Usage, format!("--buckets {b:?}: {e}")))?;
            let mut bounds = Vec::new();
            for part in list.split(',') {
                let v: f64 = part
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite())
                    .ok_or_else(|| {
                        fail(
                            Exit::Usage,
                            format!("--buckets {b:?}: {part:?} is not a finite number"),
                        )
                    })?;
                if bounds.last().is_some_and(|&last| v <= last) {
                    return Err(fail(
                        Exit::Usage,
                        format!(
                            "--buckets {b:?}: bounds must increase ({v} after {})",
                            bounds[bounds.len() - 1]
                        ),
                    ));
                }
                bounds.push(v);
            }
            cfg.buckets.push((pattern, bounds.into()));
        }
        for key in by {
            match key.as_str() {
                "agent" => cfg.by_agent = true,
                k => match k.strip_prefix("tag:").filter(|t| !t.is_empty()) {
                    Some(t) => cfg.by_tags.push(t.to_string()),
                    None => {
                        return Err(fail(
                            Exit::Usage,
                            format!("--histogram-by {k:?}: expected agent or tag:NAME"),
                        ));
                    }
                },
            }
        }
        Ok(cfg)
    }

    fn bounds_for(&self, metric: &str, unit: Option<&str>) -> Arc<[f64]> {
        self.buckets
            .iter()
            .find(|(p, _)| p.matches(metric))
            .map_or_else(|| default_bounds(unit).into(), |(_, b)| b.clone())
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Series {
    labels: Vec<(String, String)>,
    counts: Vec<u64>,
    sum: f64,
    /// The same values in native buckets, in the base unit.
    native: cfn_stats::exponential::ExpHistogram,
}

/// One metric's histograms: its bounds and unit, fixed at its first record, and a series
/// per label values.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MetricHistograms {
    unit: Option<String>,
    bounds: Arc<[f64]>,
    series: HashMap<Vec<String>, Series>,
}

/// Which of a metric's histograms (one per unit) a record in `unit` goes to: the first
/// whose unit it converts into, else new ones in its own unit (values without a unit are
/// never taken for any); `None` past [`MAX_UNITS_PER_METRIC`].
fn unit_histograms(
    units: &mut Vec<MetricHistograms>,
    cfg: &HistogramConfig,
    metric: &str,
    unit: Option<&str>,
) -> Option<usize> {
    if let Some(i) = units
        .iter()
        .position(|m| cfn_core::units::conversion(unit, m.unit.as_deref()).is_some())
    {
        return Some(i);
    }
    if units.len() >= MAX_UNITS_PER_METRIC {
        return None;
    }
    units.push(MetricHistograms {
        unit: unit.map(str::to_string),
        bounds: cfg.bounds_for(metric, unit),
        series: HashMap::new(),
    });
    Some(units.len() - 1)
}

/// At most this many units per metric have histograms of their own (a flood of unit words
/// costs no more); a record in yet another is counted in [`Histograms::unit_refused`].
pub const MAX_UNITS_PER_METRIC: usize = 8;

/// The histograms, per metric and label values.
///
/// Bounded: at most `max_series` series over all metrics. A record that would start a series
/// past it is counted in [`Histograms::dropped`] (exposed as
/// `cfn_serve_series_limit_dropped_records_total`), and the first such series is named once on
/// stderr; a flood of distinct metric names or agents costs no more than the limit.
#[derive(Debug, Default)]
pub struct Histograms {
    cfg: HistogramConfig,
    /// Per metric, its histograms per unit: values in units that convert into each other
    /// share one (in its first unit); values without a unit, or in another dimension or word,
    /// have one of their own (contract section 1), at most [`MAX_UNITS_PER_METRIC`].
    metrics: HashMap<String, Vec<MetricHistograms>>,
    series: usize,
    dropped: u64,
    /// Records of a metric that already had [`MAX_UNITS_PER_METRIC`] units, none of which
    /// theirs converts into.
    unit_refused: u64,
    /// Native buckets held over all series.
    native_buckets: usize,
}

impl Histograms {
    pub fn new(mut cfg: HistogramConfig) -> Self {
        if cfg.max_series == 0 {
            cfg.max_series = DEFAULT_MAX_SERIES;
        }
        if cfg.native_max_buckets == 0 {
            cfg.native_schema = DEFAULT_NATIVE_SCHEMA;
            cfg.native_max_buckets = DEFAULT_NATIVE_MAX_BUCKETS;
        }
        Self {
            cfg,
            ..Default::default()
        }
    }

    /// Writes the histograms' counts into a snapshot (the settings are the command
    /// line's, which the snapshot's fingerprint vouches for).
    ///
    /// # Errors
    /// As [`FrameWriter::put`].
    pub fn save<W: std::io::Write>(&self, w: &mut FrameWriter<W>) -> anyhow::Result<()> {
        w.put(&(
            self.series,
            self.dropped,
            self.unit_refused,
            self.native_buckets,
        ))?;
        w.seq(self.metrics.len(), &self.metrics)
    }

    /// The histograms [`Histograms::save`] wrote, under the settings `cfg`.
    ///
    /// # Errors
    /// A malformed snapshot.
    pub fn load<R: std::io::Read>(
        r: &mut FrameReader<R>,
        cfg: HistogramConfig,
    ) -> anyhow::Result<Self> {
        let mut out = Self::new(cfg);
        (
            out.series,
            out.dropped,
            out.unit_refused,
            out.native_buckets,
        ) = r.get()?;
        r.seq(
            usize::MAX,
            |(metric, units): (String, Vec<MetricHistograms>)| {
                anyhow::ensure!(units.len() <= MAX_UNITS_PER_METRIC, "histograms: units");
                out.metrics.insert(metric, units);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// The settings.
    pub fn config(&self) -> &HistogramConfig {
        &self.cfg
    }

    /// Records not counted because their series would have passed the limit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Counts the record as dropped, naming the first one.
    fn drop_record(&mut self, rec: &RecordRef<'_>) {
        if self.dropped == 0 {
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "more than {} histogram series (--histogram-max-series): a record of {:?}{} and later new series are not counted in /metrics' histograms (cfn_serve_series_limit_dropped_records_total counts them)",
                    self.cfg.max_series,
                    rec.metric,
                    rec.agent
                        .as_deref()
                        .map_or(String::new(), |a| format!(" (agent {a:?})"))
                ),
            );
        }
        self.dropped += 1;
    }

    /// Records not counted because their metric already had [`MAX_UNITS_PER_METRIC`] units
    /// and theirs converts into none of them.
    pub fn unit_refused(&self) -> u64 {
        self.unit_refused
    }

    fn refuse_unit(&mut self, rec: &RecordRef<'_>, unit: Option<&str>) {
        if self.unit_refused == 0 {
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "a record of {:?} in {:?} converts into none of the metric's {MAX_UNITS_PER_METRIC} units (the first {:?}): not counted in /metrics' histograms (cfn_serve_unit_mismatch_dropped_records_total counts such records)",
                    rec.metric,
                    rec.unit.as_deref().unwrap_or("no unit"),
                    unit.unwrap_or("no unit"),
                ),
            );
        }
        self.unit_refused += 1;
    }

    /// Counts one appended record (without labels, no allocation once its metric is known).
    pub fn record(&mut self, rec: &RecordRef<'_>) {
        if !self.metrics.contains_key(rec.metric.as_ref()) && self.series >= self.cfg.max_series {
            return self.drop_record(rec);
        }
        let cfg = &self.cfg;
        let units = match self.metrics.get_mut(rec.metric.as_ref()) {
            Some(m) => m,
            None => self.metrics.entry(rec.metric.to_string()).or_default(),
        };
        let unit = rec.unit.as_deref();
        let Some(idx) = unit_histograms(units, cfg, &rec.metric, unit) else {
            let first = units.first().and_then(|m| m.unit.clone());
            return self.refuse_unit(rec, first.as_deref());
        };
        let metric = &mut units[idx];
        let factor = cfn_core::units::conversion(unit, metric.unit.as_deref()).unwrap_or(1.0);
        let value = rec.value * factor;
        let mut values = Vec::new();
        if cfg.by_agent {
            values.push(rec.agent.as_deref().unwrap_or("").to_string());
        }
        for t in &cfg.by_tags {
            values.push(rec.tag(t).unwrap_or_default());
        }
        let n = metric.bounds.len() + 1;
        if !metric.series.contains_key(&values) {
            if self.series >= cfg.max_series {
                // A unit (or metric) made just now has no series yet: it goes again.
                if metric.series.is_empty() {
                    units.remove(idx);
                    if units.is_empty() {
                        self.metrics.remove(rec.metric.as_ref());
                    }
                }
                return self.drop_record(rec);
            }
            self.series += 1;
        }
        let series = metric.series.entry(values).or_insert_with_key(|values| {
            let names = cfg
                .by_agent
                .then(|| "agent".to_string())
                .into_iter()
                .chain(cfg.by_tags.iter().cloned());
            Series {
                labels: names.zip(values.iter().cloned()).collect(),
                counts: vec![0; n],
                sum: 0.0,
                native: cfn_stats::exponential::ExpHistogram::new(
                    cfg.native_schema,
                    cfg.native_max_buckets,
                ),
            }
        });
        let i = metric.bounds.partition_point(|&b| b < value);
        series.counts[i] += 1;
        series.sum = cfn_prom::saturate(series.sum + value);
        let before = series.native.bucket_count();
        series
            .native
            .record(cfn_prom::base_value(metric.unit.as_deref(), value));
        self.native_buckets = self.native_buckets + series.native.bucket_count() - before;
        if self.native_buckets > NATIVE_BUDGET {
            let before = series.native.bucket_count();
            series.native.downscale();
            self.native_buckets -= before - series.native.bucket_count();
        }
    }

    /// Every series, for the exposition.
    pub fn snapshot(&self) -> Vec<cfn_prom::HistogramSeries> {
        self.metrics
            .iter()
            .flat_map(|(metric, units)| units.iter().map(move |m| (metric, m)))
            .flat_map(|(metric, m)| {
                m.series.values().map(move |s| cfn_prom::HistogramSeries {
                    metric: metric.clone(),
                    unit: m.unit.clone(),
                    labels: s.labels.clone(),
                    bounds: m.bounds.to_vec(),
                    counts: s.counts.clone(),
                    sum: s.sum,
                    native: Some(s.native.clone()),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_flags_parse_and_bad_ones_are_named() {
        let cfg = HistogramConfig::parse(
            &["coordination.*=10,50,100".into(), "x=1".into()],
            &["agent".into(), "tag:phase".into()],
            10,
            6,
            100,
        )
        .unwrap();
        assert_eq!(
            &*cfg.bounds_for("coordination.time", Some("ms")),
            &[10.0, 50.0, 100.0]
        );
        assert_eq!(cfg.bounds_for("other", Some("ms"))[..2], [1.0, 2.5]);
        assert!(cfg.by_agent);
        assert_eq!(cfg.by_tags, vec!["phase"]);
        for bad in ["m=1,1", "m=2,1", "m=1,x", "m=inf", "nobounds"] {
            let e = HistogramConfig::parse(&[bad.into()], &[], 10, 6, 100).unwrap_err();
            assert_eq!(cfn_core::exit::exit_for(&e), Exit::Usage, "{bad}");
        }
        assert!(HistogramConfig::parse(&[], &["host".into()], 10, 6, 100).is_err());
        assert!(HistogramConfig::parse(&[], &[], 0, 6, 100).is_err());
        for (schema, max) in [(9, 100), (-5, 100), (6, 0)] {
            let e = HistogramConfig::parse(&[], &[], 10, schema, max).unwrap_err();
            assert_eq!(cfn_core::exit::exit_for(&e), Exit::Usage, "{schema} {max}");
        }
    }

    #[test]
    fn series_past_the_limit_are_counted_as_dropped_not_kept() {
        let cfg = HistogramConfig::parse(&[], &["agent".into()], 3, 6, 100).unwrap();
        let mut h = Histograms::new(cfg);
        let mut lines = Vec::new();
        for i in 0..1000 {
            // Two metrics, agents a0..a499 each: 1000 would-be series.
            lines.push(format!(
                r#"{{"timestamp":"2026-11-01T00:00:00Z","metric":"m{}","agent":"a{}","value":1}}"#,
                i % 2,
                i / 2
            ));
        }
        // And a record of a series already there, after the limit: still counted.
        lines.push(
            r#"{"timestamp":"2026-11-01T00:00:00Z","metric":"m0","agent":"a0","value":2}"#.into(),
        );
        for l in &lines {
            h.record(&cfn_core::reader::parse_record(l.as_bytes()).unwrap());
        }
        let snap = h.snapshot();
        assert_eq!(snap.len(), 3);
        let counted: u64 = snap.iter().flat_map(|s| s.counts.iter()).sum();
        assert_eq!(
            counted + h.dropped(),
            1001,
            "every record counted or dropped"
        );
        assert_eq!(counted, 4);
    }

    /// Issue 36 (low 1): 1e308 and -1e308 GB are finite, but past the largest double in
    /// bytes; they were left out of the native buckets and kept in the count (a count
    /// mismatch Prometheus rejects), and `_sum` came out +Inf for a sum of 0.
    #[test]
    fn extreme_values_are_in_the_buckets_and_the_count_and_the_sum_stays_finite() {
        let cfg = HistogramConfig::parse(&[], &[], 10, 6, 160).unwrap();
        let mut h = Histograms::new(cfg);
        for v in ["1e308", "-1e308", "1.7976931348623157e308", "3"] {
            let line = format!(
                r#"{{"timestamp":"2026-11-01T00:00:00Z","metric":"heap","value":{v},"unit":"gb"}}"#
            );
            h.record(&cfn_core::reader::parse_record(line.as_bytes()).unwrap());
        }
        let snap = h.snapshot();
        let s = &snap[0];
        let classic: u64 = s.counts.iter().sum();
        let native = s.native.as_ref().unwrap();
        let in_buckets: u64 = native.zero_count
            + native.positive.counts.iter().sum::<u64>()
            + native.negative.counts.iter().sum::<u64>();
        assert_eq!((classic, native.count, in_buckets), (4, 4, 4));
        assert!(
            native.sum.is_finite() && s.sum.is_finite(),
            "{} {}",
            native.sum,
            s.sum
        );
        let text = cfn_prom::render_exposition(&[], &snap, &cfn_prom::Options::default()).text;
        let sum = text
            .lines()
            .find(|l| l.starts_with("cfn_heap_hist_bytes_sum"))
            .unwrap();
        assert!(!sum.contains("Inf") && !sum.contains("NaN"), "{sum}");
    }

    /// Issue 38: values without a unit, in ms and in a word of their own are three kinds;
    /// none is refused or counted in another's unit: ms in `_hist_seconds`, the two without
    /// a base unit sharing `_hist` with a `unit` label each.
    #[test]
    fn each_unit_of_a_metric_has_histograms_of_its_own() {
        let mut h = Histograms::new(HistogramConfig::parse(&[], &[], 10, 6, 160).unwrap());
        for (v, unit) in [
            ("150", ""),
            ("12034", r#","unit":"ms""#),
            ("2", r#","unit":"s""#),
            ("3", r#","unit":"widgets""#),
        ] {
            let line =
                format!(r#"{{"timestamp":"2026-11-01T00:00:00Z","metric":"m","value":{v}{unit}}}"#);
            h.record(&cfn_core::reader::parse_record(line.as_bytes()).unwrap());
        }
        assert_eq!(h.unit_refused(), 0);
        let snap = h.snapshot();
        let text = cfn_prom::render_exposition(&[], &snap, &cfn_prom::Options::default()).text;
        assert!(
            text.contains("cfn_m_hist_seconds_count 2\n"),
            "ms and s together: {text}"
        );
        assert!(text.contains("cfn_m_hist_seconds_sum 14.034\n"), "{text}");
        assert!(text.contains("cfn_m_hist_count{unit=\"\"} 1\n"), "{text}");
        assert!(
            text.contains("cfn_m_hist_count{unit=\"widgets\"} 1\n"),
            "{text}"
        );
    }
}
