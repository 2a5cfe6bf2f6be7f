//! Grouping records and keeping each group's statistic: the `Aggregator` cfn-agg runs over
//! its input and cfn-serve over its rollups and records, so both give the same numbers. A
//! group is a metric, the `--by` keys, a time bucket and a unit kind (contract section 1:
//! values whose units do not convert into each other are never added).

use crate::stats::{MergeState, PartialState, Stats, StatsArena, relieve_budget};
use cfn_core::aggregate::Aggregate;
use cfn_core::exit::{Exit, fail};
use cfn_core::reader::RecordRef;
use cfn_core::time::{EpochMs, format_ms};
use cfn_core::units::{Dimension, UnitKind, conversion, unit_kind};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};

/// What to group by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub agent: bool,
    pub tags: Vec<String>,
}

impl GroupBy {
    /// Parses `--by` values.
    ///
    /// # Errors
    /// Exit 2 for anything but `agent`, `tag:NAME` (or `metric`, which is always on).
    pub fn parse(keys: &[String]) -> anyhow::Result<Self> {
        let mut g = GroupBy::default();
        for k in keys {
            for k in k.split(',') {
                match k.trim() {
                    "agent" => g.agent = true,
                    "metric" | "" => {}
                    t if t.starts_with("tag:") && t.len() > 4 => g.tags.push(t[4..].to_string()),
                    other => {
                        return Err(fail(
                            Exit::Usage,
                            format!("--by {other:?}: expected agent or tag:NAME"),
                        ));
                    }
                }
            }
        }
        Ok(g)
    }
}

/// Aggregation settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub by: GroupBy,
    pub quantiles: Vec<f64>,
    pub exact_limit: usize,
    pub bucket_ms: Option<i64>,
    pub with_digest: bool,
    /// Most groups kept; records of groups past it are counted ([`Aggregator::dropped`])
    /// and left out. No limit by default: a server answering untrusted queries sets one.
    pub max_groups: usize,
    /// Also keep who reported (contract section 10): every agent, and every value of these
    /// tags, bounded by [`cfn_core::presence::MAX_TRACKED`]. `None`: not kept.
    pub presence: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            by: GroupBy::default(),
            quantiles: vec![0.5, 0.95, 0.99],
            exact_limit: 1000,
            bucket_ms: None,
            with_digest: false,
            max_groups: usize::MAX,
            presence: None,
        }
    }
}

#[derive(Debug)]
struct Group {
    metric: String,
    /// The unit of the group's first value; the others are converted into it.
    unit: Option<String>,
    /// Units whose values were converted into `unit` (a few, for the warning).
    converted: Vec<String>,
    agent: Option<String>,
    tags: BTreeMap<String, String>,
    bucket: Option<i64>,
    stats: Stats,
}

/// A record as the aggregator needs it: what it is grouped by and its value and time.
#[derive(Debug)]
pub struct RecordParts<'a> {
    pub metric: &'a str,
    pub agent: Option<&'a str>,
    pub unit: Option<&'a str>,
    /// The values of the `--by tag:NAME` tags, in order.
    pub tag_values: &'a [Option<String>],
    pub value: f64,
    pub ts_ms: EpochMs,
}

/// One group of an aggregator as a part to merge into another ([`Aggregator::into_parts`],
/// [`Aggregator::merge_group_part`]): how parallel runs combine their blocks.
#[derive(Debug)]
pub struct GroupPart {
    metric: String,
    unit: Option<String>,
    converted: Vec<String>,
    agent: Option<String>,
    /// The values of the `--by tag:NAME` tags, in order.
    tag_values: Vec<Option<String>>,
    bucket: Option<EpochMs>,
    part: PartialState,
}

impl GroupPart {
    /// The group's metric.
    pub fn metric(&self) -> &str {
        &self.metric
    }
}

/// Groups records and keeps their statistics.
#[derive(Debug)]
pub struct Aggregator {
    opts: Options,
    index: FxHashMap<Box<[u8]>, u32>,
    groups: Vec<Group>,
    key: Vec<u8>,
    tag_values: Vec<Option<String>>,
    store: StatsArena,
    /// Records (or parts) left out because `max_groups` was reached.
    dropped: u64,
    /// Who reported, with [`Options::presence`].
    presence: Option<cfn_core::presence::Table>,
}

const SEP: u8 = 0xff; // never in UTF-8

/// The index of the group with `key`, created with `make` on first sight (`None` when that
/// would make more than `limit` groups). The key is only copied when a group is new.
fn group_index(
    index: &mut FxHashMap<Box<[u8]>, u32>,
    groups: &mut Vec<Group>,
    key: &[u8],
    limit: usize,
    make: impl FnOnce() -> Group,
) -> Option<usize> {
    if let Some(&i) = index.get(key) {
        return Some(i as usize);
    }
    if groups.len() >= limit {
        return None;
    }
    let i = groups.len();
    groups.push(make());
    index.insert(key.into(), i as u32);
    Some(i)
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(opts: Options) -> Self {
        let presence = opts
            .presence
            .as_ref()
            .map(|_| cfn_core::presence::Table::new(cfn_core::presence::MAX_TRACKED));
        Self {
            presence,
            opts,
            index: FxHashMap::default(),
            groups: Vec::new(),
            key: Vec::with_capacity(256),
            tag_values: Vec::new(),
            store: StatsArena::default(),
            dropped: 0,
        }
    }

    /// The settings it groups by.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Records (and merged parts) left out because their group would have been past
    /// [`Options::max_groups`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Number of groups so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when no record was added.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Notes who wrote `rec` (with [`Options::presence`]; [`Aggregator::add`] does it too).
    #[inline]
    pub fn observe(&mut self, rec: &RecordRef<'_>) {
        let Some(table) = &mut self.presence else {
            return;
        };
        let done = &*rec.metric == cfn_core::presence::DONE_METRIC;
        if let Some(agent) = rec.agent.as_deref() {
            table.observe_agent(agent, rec.ts_ms, done);
        }
        for name in self.opts.presence.iter().flatten() {
            if let Some(v) = rec.tag(name) {
                table.observe_tag(name, &v, rec.ts_ms, done);
            }
        }
    }

    /// Who reported so far (with [`Options::presence`]), leaving an empty table.
    pub fn take_presence(&mut self) -> Option<cfn_core::presence::Table> {
        let cap = self.presence.as_ref()?.cap;
        self.presence.replace(cfn_core::presence::Table::new(cap))
    }

    /// Folds who reported in records read after this aggregator's (a later block's).
    pub fn merge_presence(&mut self, later: cfn_core::presence::Table) {
        if let Some(t) = &mut self.presence {
            t.merge_later(later);
        }
    }

    /// Adds one record.
    #[inline]
    pub fn add(&mut self, rec: &RecordRef<'_>) {
        self.observe(rec);
        let mut tag_values = std::mem::take(&mut self.tag_values);
        tag_values.clear();
        tag_values.extend(self.opts.by.tags.iter().map(|t| rec.tag(t)));
        self.add_parts(&RecordParts {
            metric: &rec.metric,
            agent: rec.agent.as_deref(),
            unit: rec.unit.as_deref(),
            tag_values: &tag_values,
            value: rec.value,
            ts_ms: rec.ts_ms,
        });
        self.tag_values = tag_values;
    }

    /// Adds one record given by its parts (the values of the `--by` tags already looked up),
    /// as the parallel reader hands them over.
    #[inline]
    pub fn add_parts(&mut self, rec: &RecordParts<'_>) {
        let Some((idx, factor)) = self.group_of(rec) else {
            self.dropped += 1;
            return;
        };
        let g = &mut self.groups[idx];
        let value = if factor == 1.0 {
            rec.value
        } else {
            rec.value * factor
        };
        g.stats
            .add(value, rec.ts_ms, self.opts.exact_limit, &mut self.store);
        if self.store.over_budget() {
            relieve_budget(&mut self.store, &mut self.groups, |g| &mut g.stats);
        }
    }

    /// The groups as parts, in the order their first record came.
    pub fn into_parts(self) -> Vec<GroupPart> {
        let (by, store) = (&self.opts.by, &self.store);
        self.groups
            .into_iter()
            .map(|g| GroupPart {
                tag_values: by.tags.iter().map(|k| g.tags.get(k).cloned()).collect(),
                part: g.stats.snapshot(store),
                metric: g.metric,
                unit: g.unit,
                converted: g.converted,
                agent: g.agent,
                bucket: g.bucket,
            })
            .collect()
    }

    /// Adds the values of one run of records of the group `rec` names (its value is not
    /// used; its time names the bucket), whose first and last times are given: a rollup that
    /// keeps values but not each one's time.
    pub fn add_run(
        &mut self,
        rec: &RecordParts<'_>,
        values: &[f64],
        first_ms: EpochMs,
        last_ms: EpochMs,
    ) {
        let Some((idx, factor)) = self.group_of(rec) else {
            self.dropped += values.len() as u64;
            return;
        };
        let g = &mut self.groups[idx];
        for &v in values {
            g.stats
                .add(v * factor, first_ms, self.opts.exact_limit, &mut self.store);
        }
        g.stats.last_ms = g.stats.last_ms.max(last_ms);
        if self.store.over_budget() {
            relieve_budget(&mut self.store, &mut self.groups, |g| &mut g.stats);
        }
    }

    /// Folds in a group of another aggregator with the same options.
    pub fn merge_group_part(&mut self, g: GroupPart) {
        let rec = RecordParts {
            metric: &g.metric,
            agent: g.agent.as_deref(),
            unit: g.unit.as_deref(),
            tag_values: &g.tag_values,
            value: 0.0,
            // Any time in the bucket names it.
            ts_ms: g.bucket.unwrap_or(0),
        };
        // A snapshot's state always adds up to its count.
        let _ = self.merge_partial(&rec, g.part);
        if let Some((idx, _)) = self.group_of(&rec) {
            for u in g.converted {
                note_converted(&mut self.groups[idx], &u);
            }
        }
    }

    /// Folds in a part computed elsewhere (a rollup) for the group `rec` names; its value
    /// and time are not used.
    ///
    /// # Errors
    /// A reason when the part's state does not add up to its count.
    pub fn merge_partial(
        &mut self,
        rec: &RecordParts<'_>,
        part: PartialState,
    ) -> Result<(), String> {
        let Some((idx, factor)) = self.group_of(rec) else {
            self.dropped += part.count;
            return Ok(());
        };
        self.merge_into(idx, factor, part)
    }

    /// Folds `part`, its values times `factor` (into the group's unit), into group `idx`.
    fn merge_into(&mut self, idx: usize, factor: f64, part: PartialState) -> Result<(), String> {
        let part = if factor == 1.0 {
            part
        } else {
            part.scaled(factor)
        };
        self.groups[idx]
            .stats
            .merge(part, self.opts.exact_limit, &mut self.store)?;
        if self.store.over_budget() {
            relieve_budget(&mut self.store, &mut self.groups, |g| &mut g.stats);
        }
        Ok(())
    }

    /// The index of the group `rec` belongs to (created on first sight; `None` past
    /// `max_groups`) and the factor that converts its value into the group's unit. Values
    /// whose units do not convert into each other (contract section 1) are kept apart.
    #[inline]
    fn group_of(&mut self, rec: &RecordParts<'_>) -> Option<(usize, f64)> {
        let bucket = self.opts.bucket_ms.map(|b| rec.ts_ms.div_euclid(b) * b);
        self.key.clear();
        self.key.extend_from_slice(rec.metric.as_bytes());
        let by = &self.opts.by;
        if by.agent {
            self.key.push(SEP);
            if let Some(a) = rec.agent {
                self.key.extend_from_slice(a.as_bytes());
            }
        }
        for v in rec.tag_values {
            self.key.push(SEP);
            if let Some(v) = v {
                self.key.push(b'=');
                self.key.extend_from_slice(v.as_bytes());
            }
        }
        if let Some(b) = bucket {
            self.key.push(SEP);
            self.key.extend_from_slice(&b.to_le_bytes());
        }
        let limit = self.opts.max_groups;
        let idx = group_index(&mut self.index, &mut self.groups, &self.key, limit, || {
            Group {
                metric: rec.metric.to_string(),
                unit: rec.unit.map(str::to_string),
                converted: Vec::new(),
                agent: if by.agent {
                    rec.agent.map(str::to_string)
                } else {
                    None
                },
                tags: by
                    .tags
                    .iter()
                    .zip(rec.tag_values)
                    .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                    .collect(),
                bucket,
                stats: Stats::default(),
            }
        })?;
        self.group_for_unit(idx, rec.unit)
    }

    /// The group of `unit` among those sharing the key of the group at `idx` (its metric,
    /// `--by` keys and bucket), and the factor into its unit. The first group of a key takes
    /// its first value's unit; a value in a unit that converts into it is converted; one
    /// that does not goes to a group of its own, keyed by its unit's kind too. So the common
    /// case costs one comparison of two spellings.
    #[inline]
    fn group_for_unit(&mut self, idx: usize, unit: Option<&str>) -> Option<(usize, f64)> {
        let g = &mut self.groups[idx];
        if g.unit.as_deref() == unit {
            return Some((idx, 1.0));
        }
        if let Some(factor) = conversion(unit, g.unit.as_deref()) {
            if let Some(u) = unit {
                note_converted(g, u);
            }
            return Some((idx, factor));
        }
        push_unit_kind(&mut self.key, unit);
        let (metric, agent, tags, bucket) =
            (g.metric.clone(), g.agent.clone(), g.tags.clone(), g.bucket);
        let limit = self.opts.max_groups;
        let apart = group_index(&mut self.index, &mut self.groups, &self.key, limit, || {
            Group {
                metric,
                unit: unit.map(str::to_string),
                converted: Vec::new(),
                agent,
                tags,
                bucket,
                stats: Stats::default(),
            }
        })?;
        Some((apart, unit_factor(&mut self.groups[apart], unit)))
    }

    /// Folds in one aggregate line written with `--with-digest`.
    ///
    /// # Errors
    /// A reason when the line has no usable state.
    pub fn merge_line(&mut self, a: &Aggregate) -> Result<(), String> {
        let state = a
            .state
            .as_ref()
            .ok_or("no \"state\" (was it written with --with-digest?)")?;
        let (state, decimals) = MergeState::parse(state)?;
        let ms = |t: &Option<String>| t.as_deref().and_then(cfn_core::time::parse_timestamp_str);
        let bucket = a
            .bucket_start
            .as_deref()
            .and_then(cfn_core::time::parse_timestamp_str);
        self.key.clear();
        self.key.extend_from_slice(a.metric.as_bytes());
        self.key.push(SEP);
        if let Some(ag) = &a.agent {
            self.key.push(b'=');
            self.key.extend_from_slice(ag.as_bytes());
        }
        for (k, v) in &a.tags {
            self.key.push(SEP);
            self.key.extend_from_slice(k.as_bytes());
            self.key.push(b'=');
            self.key.extend_from_slice(v.as_bytes());
        }
        if let Some(b) = bucket {
            self.key.push(SEP);
            self.key.extend_from_slice(&b.to_le_bytes());
        }
        let limit = self.opts.max_groups;
        let Some(idx) = group_index(&mut self.index, &mut self.groups, &self.key, limit, || {
            Group {
                metric: a.metric.clone(),
                unit: a.unit.clone(),
                converted: Vec::new(),
                agent: a.agent.clone(),
                tags: a.tags.clone(),
                bucket,
                stats: Stats::default(),
            }
        }) else {
            self.dropped += 1;
            return Ok(());
        };
        let partial = PartialState {
            count: a.count,
            sum: a.sum,
            sum_error: 0.0,
            scale: 0,
            min: a.min,
            max: a.max,
            first_ms: ms(&a.first).unwrap_or(i64::MAX),
            last_ms: ms(&a.last).unwrap_or(i64::MIN),
            decimals,
            state,
        };
        let Some((idx, factor)) = self.group_for_unit(idx, a.unit.as_deref()) else {
            self.dropped += 1;
            return Ok(());
        };
        self.merge_into(idx, factor, partial)
    }

    /// What the units of the input made of its groups, a line per metric (at most
    /// [`MAX_UNIT_WARNINGS`], then how many more): values converted into the group's unit,
    /// or units that do not convert kept as groups of their own.
    pub fn unit_warnings(&self) -> Vec<String> {
        /// A metric's units, and the conversions made (from, to).
        type Seen<'a> = (BTreeSet<Option<&'a str>>, BTreeSet<(&'a str, &'a str)>);
        let mut by_metric: BTreeMap<&str, Seen<'_>> = BTreeMap::new();
        for g in &self.groups {
            let e = by_metric.entry(&g.metric).or_default();
            e.0.insert(g.unit.as_deref());
            for from in &g.converted {
                e.1.insert((from, g.unit.as_deref().unwrap_or("")));
            }
        }
        let lines: Vec<String> = by_metric
            .into_iter()
            .filter_map(|(metric, (units, converted))| {
                let mut parts: Vec<String> = converted
                    .iter()
                    .map(|(from, to)| format!("values in {from:?} converted to {to:?}"))
                    .collect();
                let kinds: BTreeSet<UnitKind> = units.iter().map(|u| unit_kind(*u)).collect();
                if kinds.len() > 1 {
                    let names: Vec<String> = kinds.iter().map(kind_name).collect();
                    let (last, rest) = names.split_last().unwrap_or((&names[0], &[]));
                    parts.push(format!(
                        "{} and {last} do not convert into each other: kept apart, one aggregate each",
                        rest.join(", ")
                    ));
                }
                (!parts.is_empty()).then(|| format!("metric {metric:?}: {}", parts.join("; ")))
            })
            .collect();
        let more = lines.len().saturating_sub(MAX_UNIT_WARNINGS);
        let mut out: Vec<String> = lines.into_iter().take(MAX_UNIT_WARNINGS).collect();
        if more > 0 {
            out.push(format!("{more} more metrics mix units"));
        }
        out
    }

    /// The aggregates, sorted by metric, agent, tags, bucket and unit.
    pub fn finish(mut self) -> Vec<Aggregate> {
        self.groups.sort_by(|a, b| {
            (&a.metric, &a.agent, &a.tags, a.bucket, &a.unit)
                .cmp(&(&b.metric, &b.agent, &b.tags, b.bucket, &b.unit))
        });
        let qs = self.opts.quantiles.clone();
        let with_digest = self.opts.with_digest;
        let store = &mut self.store;
        self.groups
            .into_iter()
            .map(|mut g| {
                let quantiles = g.stats.quantiles(&qs, store);
                let state = with_digest.then(|| g.stats.state(store));
                let mut a = aggregate_line(g.metric, g.unit, g.bucket, &g.stats, quantiles);
                a.agent = g.agent;
                a.tags = g.tags;
                a.state = state;
                a
            })
            .collect()
    }
}

/// At most this many metrics are named in the unit warnings.
pub const MAX_UNIT_WARNINGS: usize = 10;

/// At most this many units are remembered as converted into one group.
const MAX_CONVERTED: usize = 4;

/// Appends what keeps apart values whose units do not convert into each other: the kind of
/// `unit` (its dimension, else its spelling, else none).
fn push_unit_kind(key: &mut Vec<u8>, unit: Option<&str>) {
    key.push(SEP);
    match unit_kind(unit) {
        UnitKind::None => key.push(b'-'),
        UnitKind::Known(d) => key.extend_from_slice(match d {
            Dimension::Time => b"kt",
            Dimension::Bytes => b"kb",
            Dimension::Percent => b"kp",
        }),
        UnitKind::Other(s) => {
            key.push(b'o');
            key.extend_from_slice(s.as_bytes());
        }
    }
}

/// The factor from `unit` to the group's unit (1 when they are spelled alike); notes the
/// conversion for the warning.
#[inline]
fn unit_factor(g: &mut Group, unit: Option<&str>) -> f64 {
    if g.unit.as_deref() == unit {
        return 1.0;
    }
    let factor = conversion(unit, g.unit.as_deref()).unwrap_or(1.0);
    if let Some(u) = unit {
        note_converted(g, u);
    }
    factor
}

fn note_converted(g: &mut Group, unit: &str) {
    if g.converted.len() < MAX_CONVERTED && !g.converted.iter().any(|c| c == unit) {
        g.converted.push(unit.to_string());
    }
}

fn kind_name(k: &UnitKind) -> String {
    match k {
        UnitKind::None => "values without a unit".into(),
        UnitKind::Known(d) => format!("values in units of {}", d.name()),
        UnitKind::Other(s) => format!("values in {s:?}"),
    }
}

/// The aggregate line of one group's statistic, its quantiles already computed (no agent,
/// tags or state: the caller adds what it grouped by).
pub fn aggregate_line(
    metric: String,
    unit: Option<String>,
    bucket: Option<EpochMs>,
    stats: &Stats,
    quantiles: Vec<(f64, f64)>,
) -> Aggregate {
    let count = stats.count;
    // Beyond f64's range the sum is written as the largest f64 of its sign (JSON has no
    // infinity, and `sum > X` must still fire); the mean stays exact. The tool warns.
    let sum = match stats.sum() {
        s if s.is_infinite() && count > 0 => f64::MAX.copysign(s),
        s => s,
    };
    // Merged parts without first/last leave the sentinels: no time is known.
    let first = (count > 0 && stats.first_ms != i64::MAX).then(|| format_ms(stats.first_ms));
    let last = (count > 0 && stats.last_ms != i64::MIN).then(|| format_ms(stats.last_ms));
    Aggregate {
        quantiles,
        state: None,
        metric,
        unit,
        agent: None,
        tags: BTreeMap::new(),
        bucket_start: bucket.map(format_ms),
        count,
        sum,
        avg: stats.mean(),
        min: stats.min,
        max: stats.max,
        first,
        last,
    }
}
