//! The Prometheus exposition of aggregates and histograms, text and protobuf: what
//! cfn-promtext writes and cfn-serve's /metrics answers, with the contract's names, units
//! (`--base-units` from `cfn_core::units`) and collision rules. Naming and escaping are in
//! `names`; the protobuf form (native histograms included) in `protobuf`.

use cfn_core::aggregate::Aggregate;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub mod names;
pub mod protobuf;

/// Rendering settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub prefix: String,
    pub base_units: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            prefix: "cfn_".into(),
            base_units: false,
        }
    }
}

pub use crate::names::{
    escape_help, escape_label_value, format_value, sanitize_label, sanitize_name,
};

/// How a value is converted to the base unit. Division is its own case so that 410 ms is
/// exactly 0.41 s (multiplying by 0.001 is not).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    Identity,
    Multiply(f64),
    Divide(f64),
}

impl Scale {
    fn apply(self, v: f64) -> f64 {
        match self {
            Scale::Identity => v,
            Scale::Multiply(f) => v * f,
            Scale::Divide(d) => v / d,
        }
    }
}

/// The `--base-units` conversion of one unit.
struct BaseUnit {
    scale: Scale,
    /// Appended to the family name (`_seconds`).
    suffix: String,
    /// The unit shown in HELP.
    name: &'static str,
    /// Name endings replaced by `suffix` (`coordination_time_ms` -> `coordination_time_seconds`).
    replaces: Vec<String>,
}

/// The conversion of a unit of time or bytes in the contract's vocabulary
/// (`cfn_core::units`) to seconds or bytes.
fn base_unit(unit: Option<&str>) -> Option<BaseUnit> {
    let u = cfn_core::units::parse_unit(unit?)?;
    let name = u.dimension.prometheus_base()?;
    let scale = if u.to_base == 1.0 {
        Scale::Identity
    } else if u.to_base < 1.0 {
        // 1e-3 is not exact in binary; its inverse rounds to the exact 1,000.
        Scale::Divide((1.0 / u.to_base).round())
    } else {
        Scale::Multiply(u.to_base)
    };
    let mut replaces: Vec<String> = u.spellings.iter().map(|s| format!("_{s}")).collect();
    replaces.push(format!("_{name}"));
    // Longest first: `_milliseconds` before `_s`.
    replaces.sort_by_key(|r| std::cmp::Reverse(r.len()));
    Some(BaseUnit {
        scale,
        suffix: format!("_{name}"),
        name,
        replaces,
    })
}

/// A warning about the input (name collisions, duplicate series).
pub type Warning = String;

/// One metric's families (summary, _min, _max) to write.
struct Family<'a> {
    source: String,
    /// The unit of every series, or `None` when the family holds several (each series then
    /// says its own in a `unit` label) or none.
    unit: Option<String>,
    /// The newest aggregate of each label set, by rendered label text, and the scale that
    /// turns its values into the family's unit.
    series: BTreeMap<String, (&'a Aggregate, Scale)>,
    /// Series of more than one unit share this family (contract section 1).
    mixed_units: bool,
}

/// Renders aggregates as text exposition; returns the text and any warnings.
pub fn render(aggs: &[Aggregate], opts: &Options) -> (String, Vec<Warning>) {
    render_with_histograms(aggs, &[], opts)
}

/// One cumulative histogram series: how many values fell at or under each bound, counted by
/// whoever feeds it (cfn-serve, since it started).
#[derive(Clone, Debug)]
pub struct HistogramSeries {
    pub metric: String,
    pub unit: Option<String>,
    /// Group keys (agent, tag names) and their values; sanitized here.
    pub labels: Vec<(String, String)>,
    /// Upper bounds in the metric's own unit, increasing.
    pub bounds: Vec<f64>,
    /// Values per bucket (not cumulative): `counts[i]` fell in `(bounds[i-1], bounds[i]]`;
    /// one more at the end for values above every bound.
    pub counts: Vec<u64>,
    pub sum: f64,
    /// The same values as native (exponential) buckets, in the base unit (seconds, bytes):
    /// what the protobuf exposition carries beside the classic buckets.
    pub native: Option<cfn_stats::exponential::ExpHistogram>,
}

/// `v` in the metric's base unit (seconds for ms, bytes for kb and mb), as the histogram
/// families are exposed; unchanged for other units. A finite value stays finite: one whose
/// conversion passes the largest double (1e308 GB in bytes) is that double of its sign, so
/// it is counted in a bucket like every other value (a native histogram's count is the sum
/// of its buckets, or Prometheus rejects it).
pub fn base_value(unit: Option<&str>, v: f64) -> f64 {
    saturate(base_unit(unit).map_or(v, |b| b.scale.apply(v)))
}

/// `v`, or the largest double of its sign when it is past it (NaN stays NaN): how sums
/// and values past the range of a double are written, as cfn-agg writes such a sum.
pub fn saturate(v: f64) -> f64 {
    if v.is_nan() {
        v
    } else {
        v.clamp(-f64::MAX, f64::MAX)
    }
}

/// An exposition: the text, what was renamed or left out (warnings), and each histogram
/// series' native buckets by family name and label text (`agent="a1"`, without `le`), for
/// the protobuf form (borrowed from the series rendered: a scrape of thousands of series
/// copies none of them).
#[derive(Debug, Default)]
pub struct Exposition<'h> {
    pub text: String,
    pub warnings: Vec<Warning>,
    pub natives: BTreeMap<(String, String), &'h cfn_stats::exponential::ExpHistogram>,
}

/// Renders aggregates as summaries and `hists` as histogram families
/// (`<prefix><metric>_hist[_seconds|_bytes]`, always in base units, named after the summaries
/// so a histogram never takes a summary's name). Returns the text and any warnings.
pub fn render_with_histograms(
    aggs: &[Aggregate],
    hists: &[HistogramSeries],
    opts: &Options,
) -> (String, Vec<Warning>) {
    let e = render_exposition(aggs, hists, opts);
    (e.text, e.warnings)
}

/// One block of the exposition, by family name: a summary family's summary, minimum or
/// maximum, or a histogram family.
enum Block<'a, 'h> {
    Summary(&'a str, &'a Family<'a>, SummaryPart),
    Histogram(&'a str, &'a HistogramFamily<'h>),
}

impl Block<'_, '_> {
    /// At least the length of the block's text: its two comment lines (with the source
    /// name, unit and help) and each sample line (name, labels, a quantile or `le` label,
    /// and a value of at most 24 characters).
    fn max_len(&self) -> usize {
        const HEAD: usize = 256;
        const LINE: usize = 80;
        match self {
            Block::Summary(base, fam, part) => {
                let head = HEAD + 2 * base.len() + 2 * fam.source.len();
                let lines: usize = fam
                    .series
                    .iter()
                    .map(|(key, (a, _))| {
                        let n = match part {
                            SummaryPart::Distribution => a.quantiles.len() + 2,
                            _ => 1,
                        };
                        n * (LINE + base.len() + key.len())
                    })
                    .sum();
                head + lines
            }
            Block::Histogram(base, fam) => {
                let head = HEAD + 2 * base.len() + fam.metric.len();
                let lines: usize = fam
                    .series
                    .iter()
                    .map(|(key, h)| (h.bounds.len() + 3) * (LINE + base.len() + key.len()))
                    .sum();
                head + lines
            }
        }
    }
}

#[derive(Clone, Copy)]
enum SummaryPart {
    Distribution,
    Min,
    Max,
}

/// A histogram family, named, its series by label text.
struct HistogramFamily<'h> {
    metric: String,
    unit: Option<String>,
    scale: Scale,
    series: BTreeMap<String, &'h HistogramSeries>,
}

/// [`render_with_histograms`], also keeping each histogram series' native buckets for
/// [`protobuf::encode`]. Names are given first (summaries, then histograms, so the result
/// does not depend on the order of the input), then every block is written once, in name
/// order, into the text: memory is the text's, not a copy of it per block.
pub fn render_exposition<'h>(
    aggs: &[Aggregate],
    hists: &'h [HistogramSeries],
    opts: &Options,
) -> Exposition<'h> {
    let mut warnings = Vec::new();
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    let families = summary_families(aggs, opts, &mut used, &mut warnings);
    let hist_families = histogram_families(hists, opts, &mut used, &mut warnings);
    let mut natives = BTreeMap::new();
    for (base, fam) in &hist_families {
        for (key, h) in &fam.series {
            if let Some(n) = &h.native {
                natives.insert((base.clone(), key.clone()), n);
            }
        }
    }
    // Every family in one contiguous block, all blocks sorted by name.
    let mut blocks: BTreeMap<String, Block<'_, 'h>> = BTreeMap::new();
    for (base, fam) in &families {
        let part = |p| Block::Summary(base, fam, p);
        blocks.insert(format!("{base}_min"), part(SummaryPart::Min));
        blocks.insert(format!("{base}_max"), part(SummaryPart::Max));
        blocks.insert(base.clone(), part(SummaryPart::Distribution));
    }
    for (base, fam) in &hist_families {
        blocks.insert(base.clone(), Block::Histogram(base, fam));
    }
    // Sized up front from a bound on each block's length: grown by doubling, a text of
    // tens of megabytes would be copied at each step (the old copy and the new one both
    // resident), and capacity never written costs no memory.
    let mut text = String::with_capacity(blocks.values().map(Block::max_len).sum());
    for block in blocks.values() {
        match block {
            Block::Summary(base, fam, part) => write_summary_part(base, fam, *part, &mut text),
            Block::Histogram(base, fam) => write_histogram(base, fam, &mut text),
        }
    }
    Exposition {
        text,
        warnings,
        natives,
    }
}

/// `items` grouped by metric, the metrics in the order names are given: those whose
/// sanitized name needs no change first, so a clean name keeps its name whatever else
/// appears.
fn in_naming_order<'a, T>(
    items: &'a [T],
    metric_of: impl Fn(&'a T) -> &'a str,
) -> Vec<(&'a str, Vec<&'a T>)> {
    let mut by_metric: BTreeMap<&str, Vec<&T>> = BTreeMap::new();
    for item in items {
        by_metric.entry(metric_of(item)).or_default().push(item);
    }
    let mut order: Vec<(&str, Vec<&T>)> = by_metric.into_iter().collect();
    order.sort_by_key(|(m, _)| (sanitize_name(m) != *m, *m));
    order
}

/// One unit's aggregates of a metric: the unit, the scale into its family's unit, the
/// aggregates.
type UnitPart<'a> = (Option<&'a str>, Scale, Vec<&'a Aggregate>);

/// The summary families of `aggs` by name, named in [`in_naming_order`]; colliders get a
/// stable hash suffix (`used` keeps every name given).
///
/// A metric whose aggregates come in several units (values without a unit from a legacy
/// caller beside values in ms, or units that do not convert: contract section 1) is never
/// merged and never loses a series: each unit's aggregates go to the family their unit
/// names (`_seconds` with --base-units, the bare name without a unit), and units that name
/// the same family share it with a `unit` label on every series (`unit=""` for none).
fn summary_families<'a>(
    aggs: &'a [Aggregate],
    opts: &Options,
    used: &mut BTreeMap<String, String>,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<String, Family<'a>> {
    let mut families = BTreeMap::new();
    for (metric, list) in in_naming_order(aggs, |a| &a.metric) {
        let mut by_unit: BTreeMap<Option<&str>, Vec<&Aggregate>> = BTreeMap::new();
        for a in &list {
            by_unit.entry(a.unit.as_deref()).or_default().push(a);
        }
        // The units of this metric by the family name each would give.
        let mut by_name: BTreeMap<String, Vec<UnitPart<'_>>> = BTreeMap::new();
        for (unit, group) in by_unit {
            let (name, scale, _) = wanted_name(metric, unit, opts);
            by_name.entry(name).or_default().push((unit, scale, group));
        }
        for (wanted, units) in by_name {
            let base = unique_name(
                wanted,
                metric,
                &["_sum", "_count", "_min", "_max"],
                used,
                warnings,
            );
            families.insert(base, unit_family(metric, &units, opts, warnings));
        }
    }
    families
}

/// The family of a metric's units that ask for one name: a `unit` label on every series
/// when there are several.
fn unit_family<'a>(
    metric: &str,
    units: &[UnitPart<'a>],
    opts: &Options,
    warnings: &mut Vec<Warning>,
) -> Family<'a> {
    let mixed = units.len() > 1;
    let first_unit = units[0].0;
    let (_, _, shown) = wanted_name(metric, first_unit, opts);
    let mut series = BTreeMap::new();
    for (unit, scale, group) in units {
        let unit_label = mixed.then_some(*unit);
        for (key, a) in newest_series(metric, group, unit_label, warnings) {
            series.insert(key, (a, *scale));
        }
    }
    Family {
        source: metric.to_string(),
        unit: (!mixed)
            .then(|| shown.or_else(|| first_unit.map(str::to_string)))
            .flatten(),
        series,
        mixed_units: mixed,
    }
}

/// One unit's histogram series of a metric.
type HistUnitPart<'h> = (Option<&'h str>, Vec<&'h HistogramSeries>);

/// The histogram families of `hists` by name, named after the summaries (as
/// [`summary_families`] does, in `used`).
fn histogram_families<'h>(
    hists: &'h [HistogramSeries],
    opts: &Options,
    used: &mut BTreeMap<String, String>,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<String, HistogramFamily<'h>> {
    let mut families = BTreeMap::new();
    for (metric, list) in in_naming_order(hists, |h| &h.metric) {
        // A metric's units apart, as for the summaries: units without a base unit (none,
        // percent, other words) name the same family and share it with a `unit` label.
        let mut by_unit: BTreeMap<Option<&str>, Vec<&HistogramSeries>> = BTreeMap::new();
        for h in &list {
            by_unit.entry(h.unit.as_deref()).or_default().push(h);
        }
        let mut by_suffix: BTreeMap<Option<String>, Vec<HistUnitPart<'_>>> = BTreeMap::new();
        for (unit, group) in by_unit {
            let suffix = base_unit(unit).map(|b| b.suffix.to_string());
            by_suffix.entry(suffix).or_default().push((unit, group));
        }
        for (_, units) in by_suffix {
            let mixed = units.len() > 1;
            let unit = units[0].0;
            let base_unit = base_unit(unit);
            let base = histogram_name(metric, base_unit.as_ref(), opts, used, warnings);
            let mut series = BTreeMap::new();
            for (u, group) in &units {
                for (key, h) in histogram_series(metric, group, warnings) {
                    let key = if mixed { with_unit_label(key, *u) } else { key };
                    series.insert(key, h);
                }
            }
            families.insert(
                base,
                HistogramFamily {
                    metric: metric.to_string(),
                    unit: (!mixed)
                        .then(|| {
                            base_unit
                                .as_ref()
                                .map(|b| b.name.to_string())
                                .or(unit.map(str::to_string))
                        })
                        .flatten(),
                    scale: base_unit.map_or(Scale::Identity, |b| b.scale),
                    series,
                },
            );
        }
    }
    families
}

/// The name of a metric's histogram family: `<prefix><metric>_hist`, with its base unit's
/// suffix in place of a unit ending (`_hist_seconds`), made unique among `used`.
fn histogram_name(
    metric: &str,
    base_unit: Option<&BaseUnit>,
    opts: &Options,
    used: &mut BTreeMap<String, String>,
    warnings: &mut Vec<Warning>,
) -> String {
    let mut base = format!("{}{}", opts.prefix, sanitize_name(metric));
    if let Some(b) = base_unit
        && let Some(stripped) = b
            .replaces
            .iter()
            .find_map(|s| base.strip_suffix(s.as_str()))
    {
        base = stripped.to_string();
    }
    base.push_str("_hist");
    if let Some(b) = base_unit {
        base.push_str(&b.suffix);
    }
    unique_name(base, metric, &["_bucket", "_sum", "_count"], used, warnings)
}

/// A histogram family's series by label text (labels made valid; a collision renamed and
/// reported).
fn histogram_series<'h>(
    metric: &str,
    list: &[&'h HistogramSeries],
    warnings: &mut Vec<Warning>,
) -> BTreeMap<String, &'h HistogramSeries> {
    let mut series: BTreeMap<String, &'h HistogramSeries> = BTreeMap::new();
    for h in list {
        let mut labels: Vec<(String, String)> = Vec::new();
        for (k, v) in &h.labels {
            let mut name = sanitize_label(k);
            if name == "le" || labels.iter().any(|(n, _)| *n == name) {
                let renamed = hash_suffixed(&name, k);
                warnings.push(format!(
                    "label {k:?} of {metric:?} collides with another as {name}; writing it as {renamed}"
                ));
                name = renamed;
            }
            labels.push((name, v.clone()));
        }
        labels.sort();
        let key = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect::<Vec<_>>()
            .join(",");
        series.insert(key, h);
    }
    series
}

/// Writes histogram family `base` to `out`.
fn write_histogram(base: &str, fam: &HistogramFamily<'_>, out: &mut String) {
    let unit_note = fam
        .unit
        .as_deref()
        .map(|u| format!(" (unit: {u})"))
        .unwrap_or_default();
    let _ = write!(
        out,
        "# HELP {base} {}\n# TYPE {base} histogram\n",
        escape_help(&format!(
            "Values of {}{unit_note} appended to the hot shards since cfn-serve started",
            fam.metric
        ))
    );
    for (key, h) in &fam.series {
        let sep = if key.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{base}_bucket{{{key}{sep}le=\"{}\"}} {cumulative}",
                format_value(fam.scale.apply(*bound))
            );
        }
        let count: u64 = h.counts.iter().sum();
        let _ = writeln!(out, "{base}_bucket{{{key}{sep}le=\"+Inf\"}} {count}");
        let braces = if key.is_empty() {
            String::new()
        } else {
            format!("{{{key}}}")
        };
        let _ = writeln!(
            out,
            "{base}_sum{braces} {}",
            format_value(saturate(fam.scale.apply(h.sum)))
        );
        let _ = writeln!(out, "{base}_count{braces} {count}");
    }
}

/// The family name of `metric` (prefixed, sanitized, converted to the base unit, and made
/// unique with a hash suffix when it collides with a name already used), its scale, and the
/// unit to show when converted.
/// The family name a metric's values in `unit` ask for (before [`unique_name`]), the scale
/// into the unit it is exposed in, and that unit's name when it is a base unit.
fn wanted_name(
    metric: &str,
    unit: Option<&str>,
    opts: &Options,
) -> (String, Scale, Option<String>) {
    let mut base = format!("{}{}", opts.prefix, sanitize_name(metric));
    let mut scale = Scale::Identity;
    let mut shown = None;
    if opts.base_units
        && let Some(b) = base_unit(unit)
    {
        scale = b.scale;
        shown = Some(b.name.to_string());
        if let Some(stripped) = b
            .replaces
            .iter()
            .find_map(|s| base.strip_suffix(s.as_str()))
        {
            base = stripped.to_string();
        }
        base.push_str(&b.suffix);
    }
    (base, scale, shown)
}

/// `base`, or `base` with a stable hash suffix when it or any of its series names (`base`
/// plus each of `suffixes`) is already taken; marks them all taken by `metric`.
fn unique_name(
    mut base: String,
    metric: &str,
    suffixes: &[&str],
    used: &mut BTreeMap<String, String>,
    warnings: &mut Vec<Warning>,
) -> String {
    let derived = |b: &str| {
        std::iter::once(b.to_string())
            .chain(suffixes.iter().map(|s| format!("{b}{s}")))
            .collect::<Vec<_>>()
    };
    if let Some(other) = derived(&base).iter().find_map(|n| used.get(n)) {
        let renamed = hash_suffixed(&base, metric);
        warnings.push(format!(
            "metrics {other:?} and {metric:?} both map to {base}; writing {metric:?} as {renamed}"
        ));
        base = renamed;
    }
    for n in derived(&base) {
        used.insert(n, metric.to_string());
    }
    base
}

/// `name` made unique by a stable hash of what it was made from (`cfn_x_1a2b3c4d`).
fn hash_suffixed(name: &str, source: &str) -> String {
    format!(
        "{name}_{:08x}",
        cfn_core::paths::fnv1a64(source.as_bytes()) as u32
    )
}

/// The rendered label text of `a`'s group keys: sanitized, de-collided, sorted, escaped.
fn label_text(metric: &str, a: &Aggregate, warnings: &mut Vec<Warning>) -> String {
    let mut labels: Vec<(String, String)> = Vec::new();
    for (k, v) in a.labels() {
        let mut name = sanitize_label(&k);
        if labels.iter().any(|(n, _)| *n == name) {
            let renamed = hash_suffixed(&name, &k);
            warnings.push(format!(
                "label {k:?} of {metric:?} collides with another as {name}; writing it as {renamed}"
            ));
            name = renamed;
        }
        labels.push((name, v));
    }
    labels.sort();
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `key` (a series' rendered labels) with the label saying which unit the series is in, for
/// a family that holds several (contract section 1): `unit`, or `cfn_unit` where a label of
/// that name is there already; `""` for values without a unit.
fn with_unit_label(key: String, unit: Option<&str>) -> String {
    let name = if key.split(',').any(|l| l.starts_with("unit=")) {
        "cfn_unit"
    } else {
        "unit"
    };
    let label = format!("{name}=\"{}\"", escape_label_value(unit.unwrap_or("")));
    if key.is_empty() {
        label
    } else {
        format!("{key},{label}")
    }
}

/// One aggregate per label set: in bucketed input, the newest bucket.
fn newest_series<'a>(
    metric: &str,
    list: &[&'a Aggregate],
    unit_label: Option<Option<&str>>,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<String, &'a Aggregate> {
    let mut series: BTreeMap<String, &'a Aggregate> = BTreeMap::new();
    for a in list {
        let mut key = label_text(metric, a, warnings);
        if let Some(unit) = unit_label {
            key = with_unit_label(key, unit);
        }
        match series.get(&key) {
            Some(prev) if prev.bucket_start >= a.bucket_start => {
                if prev.bucket_start == a.bucket_start {
                    warnings.push(format!(
                        "duplicate series {metric}{{{key}}}; keeping the first"
                    ));
                }
            }
            _ => {
                series.insert(key, a);
            }
        }
    }
    series
}

/// Writes one block of summary family `base` to `out`: the summary, or its `_min` or
/// `_max` gauge.
fn write_summary_part(base: &str, fam: &Family<'_>, part: SummaryPart, out: &mut String) {
    let unit_note = match (&fam.unit, fam.mixed_units) {
        (_, true) => " (in several units: each series' unit label says which)".to_string(),
        (Some(u), false) => format!(" (unit: {u})"),
        (None, false) => String::new(),
    };
    let (suffix, kind, what) = match part {
        SummaryPart::Distribution => ("", "summary", "Distribution"),
        SummaryPart::Min => ("_min", "gauge", "Minimum"),
        SummaryPart::Max => ("_max", "gauge", "Maximum"),
    };
    let help = escape_help(&format!(
        "{what} of {}{unit_note}, from cfn-agg",
        fam.source
    ));
    let _ = write!(
        out,
        "# HELP {base}{suffix} {help}\n# TYPE {base}{suffix} {kind}\n"
    );
    for (key, (a, scale)) in &fam.series {
        let conv = |v: f64| format_value(saturate(scale.apply(v)));
        let with = |extra: &str| -> String {
            match (key.is_empty(), extra.is_empty()) {
                (true, true) => String::new(),
                (true, false) => format!("{{{extra}}}"),
                (false, true) => format!("{{{key}}}"),
                (false, false) => format!("{{{key},{extra}}}"),
            }
        };
        match part {
            SummaryPart::Distribution => {
                for (q, v) in &a.quantiles {
                    let quantile = format!("quantile=\"{}\"", cfn_core::record::number_text(*q));
                    let _ = writeln!(out, "{base}{} {}", with(&quantile), conv(*v));
                }
                let _ = writeln!(out, "{base}_sum{} {}", with(""), conv(a.sum));
                let _ = writeln!(out, "{base}_count{} {}", with(""), a.count);
            }
            SummaryPart::Min => {
                let _ = writeln!(out, "{base}_min{} {}", with(""), conv(a.min));
            }
            SummaryPart::Max => {
                let _ = writeln!(out, "{base}_max{} {}", with(""), conv(a.max));
            }
        }
    }
}

/// Most `cfn_agent_last_seen_timestamp_seconds` series: silent agents first, then active,
/// done and gone; the rest are counted in `cfn_agent_last_seen_not_exported`.
pub const MAX_LAST_SEEN_SERIES: usize = 10_000;

/// Who reported, gathered one agent at a time in bounded memory (at most
/// [`MAX_LAST_SEEN_SERIES`] names kept, however many agents pass), then rendered by
/// [`AgentFamilies::render`].
#[derive(Debug, Default)]
pub struct AgentFamilies {
    /// Agents per state, in [`cfn_core::presence::AgentState::ALL`] order.
    counts: [u64; 4],
    /// Kept names and last-seen times, per state (same order), at most the cap over all.
    kept: [Vec<(String, cfn_core::time::EpochMs)>; 4],
    not_exported: u64,
    hide: Vec<cfn_core::pattern::NamePattern>,
}

impl AgentFamilies {
    /// Leaves the agents `hide` matches out of the last-seen series (still counted).
    pub fn new(hide: &[cfn_core::pattern::NamePattern]) -> Self {
        AgentFamilies {
            hide: hide.to_vec(),
            ..Default::default()
        }
    }

    /// One agent. Past the cap a silent agent takes the place of a kept one of a later
    /// state (active, done, gone), so the silent ones are always exported first.
    pub fn add(
        &mut self,
        agent: &str,
        last: cfn_core::time::EpochMs,
        state: cfn_core::presence::AgentState,
    ) {
        use cfn_core::presence::AgentState;
        let i = AgentState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        self.counts[i] += 1;
        if self.hide.iter().any(|p| p.matches(agent)) {
            return;
        }
        let rank = |s: AgentState| s as usize; // Silent < Active < Done < Gone
        let kept: usize = self.kept.iter().map(Vec::len).sum();
        if kept < MAX_LAST_SEEN_SERIES {
            self.kept[i].push((agent.to_string(), last));
            return;
        }
        // Full: evict from the latest state that ranks after this one, if any.
        let victim = (0..4)
            .filter(|&j| rank(AgentState::ALL[j]) > rank(state) && !self.kept[j].is_empty())
            .max_by_key(|&j| rank(AgentState::ALL[j]));
        if let Some(j) = victim {
            self.kept[j].pop();
            self.kept[i].push((agent.to_string(), last));
        }
        self.not_exported += 1;
    }

    /// The families (contract section 10): `cfn_agent_last_seen_timestamp_seconds{agent}`
    /// sorted by agent, `cfn_agents{state}` for every state, `cfn_agent_last_seen_not_exported`
    /// and `cfn_presence_untracked_records`. `source` names where the figures come from.
    pub fn render(self, untracked: u64, source: &str) -> String {
        use cfn_core::presence::{AgentState, MAX_KEY_BYTES, MAX_TRACKED};
        let mut out = format!(
            "# HELP cfn_agent_last_seen_timestamp_seconds When each agent's newest record was written ({source})\n\
             # TYPE cfn_agent_last_seen_timestamp_seconds gauge\n"
        );
        let mut all: Vec<(String, i64)> = self.kept.into_iter().flatten().collect();
        all.sort();
        for (agent, last) in &all {
            let _ = writeln!(
                out,
                "cfn_agent_last_seen_timestamp_seconds{{agent=\"{}\"}} {}",
                names::escape_label_value(agent),
                cfn_core::record::number_text(*last as f64 / 1000.0)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cfn_agents Agents by state ({source}): active, silent (past its threshold), done (said so), gone (past the horizon)\n\
             # TYPE cfn_agents gauge"
        );
        let mut by_name: Vec<(&str, u64)> = AgentState::ALL
            .iter()
            .zip(self.counts)
            .map(|(s, n)| (s.as_str(), n))
            .collect();
        by_name.sort();
        for (state, n) in by_name {
            let _ = writeln!(out, "cfn_agents{{state=\"{state}\"}} {n}");
        }
        let _ = write!(
            out,
            "# HELP cfn_agent_last_seen_not_exported Agents past the {MAX_LAST_SEEN_SERIES} last-seen series (silent ones are exported first)\n\
             # TYPE cfn_agent_last_seen_not_exported gauge\n\
             cfn_agent_last_seen_not_exported {}\n\
             # HELP cfn_presence_untracked_records Records of agents not tracked ({source}; over {MAX_TRACKED} kept, or an id over {MAX_KEY_BYTES} bytes)\n\
             # TYPE cfn_presence_untracked_records gauge\n\
             cfn_presence_untracked_records {untracked}\n",
            self.not_exported
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid() {
        assert_eq!(sanitize_name("9lives.p-99 ms"), "_9lives_p_99_ms");
        assert_eq!(sanitize_name("coordination.time"), "coordination_time");
        assert_eq!(sanitize_label("__name__"), "tag__name__");
        assert_eq!(sanitize_label("quantile"), "tagquantile");
    }

    #[test]
    fn special_values_are_spelled_as_prometheus_expects() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(3.0), "3");
    }

    #[test]
    fn colliding_names_are_kept_apart_and_reported() {
        let a = Aggregate {
            metric: "coordination.time".into(),
            count: 1,
            quantiles: vec![(0.5, 1.0)],
            ..Default::default()
        };
        let b = Aggregate {
            metric: "coordination_time".into(),
            count: 2,
            quantiles: vec![(0.5, 2.0)],
            ..Default::default()
        };
        let (text, warnings) = render(&[a, b], &Options::default());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(text.contains("cfn_coordination_time_count 2\n"), "{text}");
        let renamed = format!(
            "cfn_coordination_time_{:08x}_count 1\n",
            cfn_core::paths::fnv1a64(b"coordination.time") as u32
        );
        assert!(text.contains(&renamed), "{text}");
    }

    /// Every unit of time and bytes in the contract's vocabulary goes to seconds or bytes
    /// with the factor OTLP's UCUM code and the views use: `mb` is 1,048,576 bytes here and
    /// `MiBy` there.
    #[test]
    fn base_units_come_from_the_contracts_vocabulary() {
        assert_eq!(base_value(Some("ms"), 410.0), 0.41);
        assert_eq!(base_value(Some("us"), 1500.0), 0.0015);
        assert_eq!(base_value(Some("min"), 2.0), 120.0);
        assert_eq!(base_value(Some("mb"), 1.0), 1_048_576.0);
        assert_eq!(base_value(Some("GB"), 2.0), 2_147_483_648.0);
        assert_eq!(base_value(Some("percent"), 12.0), 12.0);
        assert_eq!(cfn_core::units::ucum("mb"), "MiBy");
        let a = Aggregate {
            metric: "heap_gb".into(),
            unit: Some("gb".into()),
            count: 1,
            sum: 2.0,
            quantiles: vec![(0.5, 2.0)],
            ..Default::default()
        };
        let opts = Options {
            base_units: true,
            ..Options::default()
        };
        let (text, _) = render(&[a], &opts);
        assert!(text.contains("cfn_heap_bytes_sum 2147483648\n"), "{text}");
    }

    #[test]
    fn last_seen_series_are_bounded_and_silent_agents_always_exported() {
        use cfn_core::presence::AgentState;
        let mut f = AgentFamilies::new(&[cfn_core::pattern::NamePattern::new("hidden-*").unwrap()]);
        for i in 0..MAX_LAST_SEEN_SERIES + 3 {
            f.add(&format!("a-{i:05}"), 1_000, AgentState::Active);
        }
        for i in 0..5 {
            f.add(&format!("s-{i}"), 2_000, AgentState::Silent);
        }
        f.add("hidden-1", 3_000, AgentState::Silent);
        let text = f.render(7, "test");
        let series = text
            .lines()
            .filter(|l| l.starts_with("cfn_agent_last_seen_timestamp_seconds{"))
            .count();
        assert_eq!(series, MAX_LAST_SEEN_SERIES);
        for i in 0..5 {
            assert!(text.contains(&format!("{{agent=\"s-{i}\"}} 2\n")), "s-{i}");
        }
        assert!(!text.contains("hidden-1"));
        assert!(text.contains("cfn_agents{state=\"silent\"} 6\n"));
        assert!(text.contains(&format!(
            "cfn_agents{{state=\"active\"}} {}\n",
            MAX_LAST_SEEN_SERIES + 3
        )));
        // 3 actives past the cap, then 5 more evicted for the silent ones.
        assert!(
            text.contains("cfn_agent_last_seen_not_exported 8\n"),
            "{}",
            &text[text.len() - 600..]
        );
        assert!(text.contains("cfn_presence_untracked_records 7\n"));
    }
}
