//! Rollups by agent and by the values of chosen tags (`--index-tags`), so a dashboard
//! filtered by agent or tag, or a summary by agent, over a day is answered without reading
//! the day's records.
//!
//! A series is one metric for one agent (records without an agent make a series of their
//! own) or one metric for one value of an indexed tag. Its values are kept as they came, in
//! one column (2 or 4 bytes each where the values are whole numbers of their decimals that
//! fit an `i16` or `i32`, else 8), cut into runs of values of one quarter hour with the
//! first and last times of the run: so the answers are exact, as cfn-agg's from the records
//! are, at 2 to 8 bytes a value plus 16 a run. Records arriving in time order per series (as an agent
//! writes them) make one run per quarter hour; records of several shards read one shard
//! after the other make more, which cost only their 16 bytes.
//!
//! Memory is bounded by a budget ([`DEFAULT_BUDGET`]): past it, the agent rollups are
//! dropped first, then the tag rollups, with a warning, and the queries they served read the
//! records again. A tag key with more than [`MAX_TAG_VALUES`] values is dropped the same way.

use cfn_core::pattern::NamePattern;
use cfn_core::reader::RecordRef;
use cfn_core::time::EpochMs;
use cfn_stats::group::{Aggregator, RecordParts};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

use crate::snapshot::{FrameReader, FrameWriter};

/// A quarter hour: the resolution of these rollups.
pub const QUARTER_MS: i64 = 15 * 60_000;

/// Bytes the rollups may hold by default.
pub const DEFAULT_BUDGET: usize = 44 << 20;

/// Most values one indexed tag key may have.
pub const MAX_TAG_VALUES: usize = 1_000;

/// A size for people: whole MiB or KiB where it is one, else bytes.
fn size_text(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Bytes of one run.
const RUN_BYTES: usize = std::mem::size_of::<Run>();

/// A series' values: integers of a number of decimals while every value is one (2 bytes
/// each while they fit an `i16`, then 4), else floats.
#[derive(Debug, Serialize, Deserialize)]
enum Column {
    /// `value * 10^decimals`, each checked to give the value back exactly.
    Small {
        decimals: u8,
        values: Vec<i16>,
    },
    Scaled {
        decimals: u8,
        values: Vec<i32>,
    },
    Plain(Vec<f64>),
}

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// `v` as an integer of `d` decimals when that gives `v` back exactly.
fn scale(v: f64, d: u8) -> Option<i64> {
    let s = (v * POW10[d as usize]).round();
    (s.abs() < 1e15 && s / POW10[d as usize] == v).then_some(s as i64)
}

/// Room for one more: grows by a sixteenth at a time (doubling while small), so the slack
/// stays small over many series.
fn make_room<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(if v.len() < 16 {
            v.len().max(2)
        } else {
            v.len() / 8
        });
    }
}

/// What a name costs: its text twice (the interner's key, the table's copy) and the entries.
fn name_bytes(len: usize) -> usize {
    2 * heap(len) + 96
}

/// What the allocator takes for a block of `bytes` (glibc: a header, 16-byte steps, 32 at
/// least): many series hold small vectors, so the budget counts this, not the length.
fn heap(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes + 8).div_ceil(16).max(2) * 16
    }
}

/// What a series costs besides its values and runs: itself and its entry in the table.
const SERIES_BYTES: usize = std::mem::size_of::<Series>() + 32;

/// A dimension as a record names it (borrowed: most records name one already known).
#[derive(Clone, Copy, Debug)]
enum DimRef<'a> {
    Agent(Option<&'a str>),
    Tag(usize, &'a str),
}

impl DimRef<'_> {
    /// The interner's key.
    fn key(self, out: &mut Vec<u8>) {
        out.clear();
        match self {
            DimRef::Agent(a) => {
                out.push(0);
                if let Some(a) = a {
                    out.push(b'=');
                    out.extend_from_slice(a.as_bytes());
                }
            }
            DimRef::Tag(k, v) => {
                out.push(u8::try_from(k + 1).unwrap_or(u8::MAX));
                out.extend_from_slice(v.as_bytes());
            }
        }
    }

    fn to_owned(self) -> Dim {
        match self {
            DimRef::Agent(a) => Dim::Agent(a.map(str::to_string)),
            DimRef::Tag(k, v) => Dim::Tag(k, v.to_string()),
        }
    }
}

impl Dim {
    fn as_ref(&self) -> DimRef<'_> {
        match self {
            Dim::Agent(a) => DimRef::Agent(a.as_deref()),
            Dim::Tag(k, v) => DimRef::Tag(*k, v),
        }
    }
}

impl Column {
    fn new() -> Self {
        Column::Small {
            decimals: 0,
            values: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Small { values, .. } => values.len(),
            Column::Scaled { values, .. } => values.len(),
            Column::Plain(values) => values.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Column::Small { values, .. } => values.capacity(),
            Column::Scaled { values, .. } => values.capacity(),
            Column::Plain(values) => values.capacity(),
        }
    }

    /// Bytes of `capacity` values in this column's current form (a change of form is
    /// counted in its new form: an estimate on the high side).
    fn bytes_at(&self, capacity: usize) -> usize {
        match self {
            Column::Small { .. } => capacity * 2,
            Column::Scaled { .. } => capacity * 4,
            Column::Plain(_) => capacity * 8,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Column::Small { values, .. } => values.capacity() * 2,
            Column::Scaled { values, .. } => values.capacity() * 4,
            Column::Plain(values) => values.capacity() * 8,
        }
    }

    fn get(&self, i: usize) -> f64 {
        match self {
            Column::Small { decimals, values } => f64::from(values[i]) / POW10[*decimals as usize],
            Column::Scaled { decimals, values } => f64::from(values[i]) / POW10[*decimals as usize],
            Column::Plain(values) => values[i],
        }
    }

    fn push(&mut self, v: f64) {
        match self {
            Column::Small { decimals, values } => {
                if let Some(s) = scale(v, *decimals).and_then(|s| i16::try_from(s).ok()) {
                    make_room(values);
                    values.push(s);
                    return;
                }
            }
            Column::Scaled { decimals, values } => {
                if let Some(s) = scale(v, *decimals).and_then(|s| i32::try_from(s).ok()) {
                    make_room(values);
                    values.push(s);
                    return;
                }
            }
            Column::Plain(values) => {
                make_room(values);
                values.push(v);
                return;
            }
        }
        self.widen_for(v);
    }

    /// Rewrites the column in the narrowest form that holds its values and `v`, with `v`.
    fn widen_for(&mut self, v: f64) {
        let d = match self {
            Column::Small { decimals, .. } | Column::Scaled { decimals, .. } => *decimals,
            Column::Plain(_) => 0,
        };
        let scaled = (d..=6).find_map(|e| {
            let factor = 10i64.pow(u32::from(e - d));
            let mut all: Vec<i64> = Vec::with_capacity(self.len() + 1);
            for i in 0..self.len() {
                let x = match self {
                    Column::Small { values, .. } => i64::from(values[i]),
                    Column::Scaled { values, .. } => i64::from(values[i]),
                    Column::Plain(_) => return None,
                };
                all.push(x.checked_mul(factor)?);
            }
            all.push(scale(v, e)?);
            Some((e, all))
        });
        *self = match scaled {
            Some((decimals, all)) => {
                if let Ok(values) = all.iter().map(|&x| i16::try_from(x)).collect() {
                    Column::Small { decimals, values }
                } else if let Ok(values) = all.iter().map(|&x| i32::try_from(x)).collect() {
                    Column::Scaled { decimals, values }
                } else {
                    Column::Plain(
                        all.iter()
                            .map(|&x| x as f64 / POW10[decimals as usize])
                            .collect(),
                    )
                }
            }
            None => {
                let mut plain: Vec<f64> = (0..self.len()).map(|i| self.get(i)).collect();
                plain.push(v);
                Column::Plain(plain)
            }
        };
    }
}

/// Values of one quarter hour, from `start` to the next run's start, in 12 bytes: the
/// quarter hour's number since the epoch (24 bits: until the year 2448) and the first and
/// last record times in ms after its start (20 bits each: a quarter hour is 900,000 ms).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Run {
    start: u32,
    hi: u32,
    lo: u32,
}

impl Run {
    fn new(start: u32, quarter: u32, first: u32, last: u32) -> Self {
        Self {
            start,
            hi: (quarter << 8) | (first >> 12),
            lo: ((first & 0xfff) << 20) | (last & 0xf_ffff),
        }
    }
    fn quarter(&self) -> u32 {
        self.hi >> 8
    }
    fn first(&self) -> u32 {
        ((self.hi & 0xff) << 12) | (self.lo >> 20)
    }
    fn last(&self) -> u32 {
        self.lo & 0xf_ffff
    }
}

/// What a series is of, besides its metric.
#[derive(Debug, Serialize, Deserialize)]
enum Dim {
    /// An agent (`None`: records without one).
    Agent(Option<String>),
    /// The value of the `key`-th indexed tag.
    Tag(usize, String),
}

/// Names turned into small numbers, so a record finds its series by one lookup of two
/// numbers in a table that stays in cache (not by hashing and comparing its strings).
#[derive(Debug, Default)]
struct Interner {
    ids: FxHashMap<Box<[u8]>, u32>,
}

impl Interner {
    fn get_or_insert(&mut self, key: &[u8], limit: usize) -> Option<u32> {
        if let Some(&id) = self.ids.get(key) {
            return Some(id);
        }
        if self.ids.len() >= limit {
            return None;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(key.into(), id);
        Some(id)
    }
}

/// Most tag keys with rollups, named and met (a key's number is a byte of its values' keys).
pub const MAX_TAG_KEYS: usize = 200;
/// Longest tag key given rollups without being named.
const MAX_KEY_BYTES: usize = 128;
/// The default of `--index-auto-tags`: tag keys met in records, not named, given rollups.
pub const DEFAULT_AUTO_KEYS: usize = 32;

/// Most distinct metrics, agents and tag values named (each costs its name once).
const MAX_NAMES: usize = 200_000;

#[derive(Debug, Serialize, Deserialize)]
struct Series {
    metric: u32,
    dim: u32,
    column: Column,
    runs: Vec<Run>,
}

impl Series {
    fn bytes(&self) -> usize {
        heap(self.column.bytes()) + heap(self.runs.capacity() * RUN_BYTES)
    }

    fn end_of(&self, run: usize) -> usize {
        self.runs
            .get(run + 1)
            .map_or(self.column.len(), |r| r.start as usize)
    }

    /// Adds a value; returns the bytes it took (nonzero only when a vector grew).
    fn push(&mut self, v: f64, ts_ms: EpochMs) -> usize {
        let before = (self.column.capacity(), self.runs.capacity());
        let quarter = ts_ms.div_euclid(QUARTER_MS);
        let offset = (ts_ms - quarter * QUARTER_MS) as u32;
        let quarter = quarter as u32;
        match self.runs.last_mut() {
            Some(r) if r.quarter() == quarter => {
                *r = Run::new(
                    r.start,
                    quarter,
                    r.first().min(offset),
                    r.last().max(offset),
                );
            }
            _ => {
                make_room(&mut self.runs);
                self.runs
                    .push(Run::new(self.column.len() as u32, quarter, offset, offset));
            }
        }
        self.column.push(v);
        if before == (self.column.capacity(), self.runs.capacity()) {
            return 0;
        }
        let old = heap(before.1 * RUN_BYTES) + heap(self.column.bytes_at(before.0));
        self.bytes().saturating_sub(old)
    }

    /// Drops the runs before quarter `keep_from`; returns the bytes freed.
    fn drop_before(&mut self, keep_from: u32) -> usize {
        if self.runs.iter().all(|r| r.quarter() >= keep_from) {
            return 0;
        }
        let before = self.bytes();
        let mut kept = Series {
            metric: self.metric,
            dim: self.dim,
            column: Column::new(),
            runs: Vec::new(),
        };
        for (i, r) in self.runs.iter().enumerate() {
            if r.quarter() < keep_from {
                continue;
            }
            let start = kept.column.len() as u32;
            for j in r.start as usize..self.end_of(i) {
                kept.column.push(self.column.get(j));
            }
            kept.runs.push(Run { start, ..*r });
        }
        self.column = kept.column;
        self.runs = kept.runs;
        before.saturating_sub(self.bytes())
    }
}

/// What a query asks of these rollups: whole quarter hours `[from, to)`, and the filters.
#[derive(Debug)]
pub struct DimQuery<'a> {
    pub from: EpochMs,
    pub to: EpochMs,
    pub metrics: &'a [NamePattern],
    pub agents: &'a [NamePattern],
    pub tag: Option<&'a (String, String)>,
    /// Group by agent (else one group per metric).
    pub by_agent: bool,
}

/// The rollups by agent and by tag value.
#[derive(Debug)]
pub struct Dims {
    /// The named keys (`--index-tags`) first, then those found in records.
    tag_keys: Vec<String>,
    /// How many of `tag_keys` were named.
    named: usize,
    /// Most keys found in records that get rollups (`--index-auto-tags`); 0 once the
    /// rollups were dropped for too many names.
    auto_keys: usize,
    /// Key numbers by name.
    key_ids: FxHashMap<Box<str>, u32>,
    budget: usize,
    bytes: usize,
    agents_on: bool,
    tags_on: Vec<bool>,
    tag_values: Vec<usize>,
    /// Metric names and units, by metric number.
    metrics: Vec<(String, Option<String>)>,
    metric_ids: Interner,
    /// What each dimension number stands for.
    dims: Vec<Dim>,
    dim_ids: Interner,
    series: Vec<Series>,
    /// Series number by (metric number << 32 | dimension number).
    by_ids: FxHashMap<u64, u32>,
    key: Vec<u8>,
}

impl Dims {
    /// Rollups by agent and by the values of `tag_keys`, within `budget` bytes (none when
    /// it is 0).
    pub fn new(tag_keys: Vec<String>, budget: usize) -> Self {
        let n = tag_keys.len();
        let key_ids = tag_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str().into(), i as u32))
            .collect();
        Self {
            tag_keys,
            named: n,
            auto_keys: 0,
            key_ids,
            budget,
            bytes: 0,
            agents_on: budget > 0,
            tags_on: vec![budget > 0; n],
            tag_values: vec![0; n],
            metrics: Vec::new(),
            metric_ids: Interner::default(),
            dims: Vec::new(),
            dim_ids: Interner::default(),
            series: Vec::new(),
            by_ids: FxHashMap::default(),
            key: Vec::new(),
        }
    }

    /// Also rollups by the values of the first `n` tag keys met in records that were not
    /// named (each while it has at most [`MAX_TAG_VALUES`] values), within the same budget.
    pub fn with_auto_keys(mut self, n: usize) -> Self {
        self.auto_keys = if self.budget > 0 {
            n.min(MAX_TAG_KEYS.saturating_sub(self.named))
        } else {
            0
        };
        self
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether agent rollups are kept (false once the budget dropped them).
    pub fn agents_on(&self) -> bool {
        self.agents_on
    }

    /// Whether the rollups of tag `key` are kept.
    pub fn tag_on(&self, key: &str) -> bool {
        self.tag_keys
            .iter()
            .position(|k| k == key)
            .is_some_and(|i| self.tags_on[i])
    }

    /// Adds one record (already known to be inside the index's span).
    pub fn add(&mut self, rec: &RecordRef<'_>) {
        let auto_room = self.tag_keys.len() < self.named + self.auto_keys;
        if !self.agents_on && !auto_room && !self.tags_on.iter().any(|&on| on) {
            return;
        }
        if self.agents_on {
            let agent = rec.agent.as_deref();
            self.add_to(rec, DimRef::Agent(agent));
        }
        if rec.tags.is_some() {
            for (key, value) in rec.tag_list() {
                if let Some(k) = self.key_number(&key)
                    && self.tags_on[k]
                {
                    self.add_to(rec, DimRef::Tag(k, &value));
                }
            }
        }
        if self.bytes > self.budget {
            self.relieve();
        }
    }

    /// The number of tag key `key`: a named one, one met before, or a new one while fewer
    /// than `auto_keys` were met (`None`: not indexed).
    fn key_number(&mut self, key: &str) -> Option<usize> {
        if let Some(&k) = self.key_ids.get(key) {
            return Some(k as usize);
        }
        if self.tag_keys.len() >= self.named + self.auto_keys || key.len() > MAX_KEY_BYTES {
            return None;
        }
        let k = self.tag_keys.len();
        self.key_ids.insert(key.into(), k as u32);
        self.tag_keys.push(key.to_string());
        self.tags_on.push(true);
        self.tag_values.push(0);
        self.bytes += name_bytes(key.len());
        Some(k)
    }

    /// Adds `rec` to its series of `dim`. The names are looked up each time: dropping
    /// rollups renumbers them.
    fn add_to(&mut self, rec: &RecordRef<'_>, dim: DimRef<'_>) {
        let Some(dim) = self.dim_id(dim) else {
            return;
        };
        let Some(metric) = self.metric_id(rec) else {
            self.relieve_names("metrics");
            return;
        };
        self.push(metric, dim, rec);
    }

    /// The number of `dim`, named now if new (`None`: not kept, said why).
    fn dim_id(&mut self, dim: DimRef<'_>) -> Option<u32> {
        let mut key = std::mem::take(&mut self.key);
        dim.key(&mut key);
        let id = self.dim_ids.get_or_insert(&key, MAX_NAMES);
        let key_len = key.len();
        self.key = key;
        let Some(id) = id else {
            self.relieve_names("agents and tag values");
            return None;
        };
        if id as usize == self.dims.len() {
            self.bytes += name_bytes(key_len);
            self.dims.push(dim.to_owned());
            if let DimRef::Tag(k, _) = dim {
                self.tag_values[k] += 1;
                if self.tag_values[k] > MAX_TAG_VALUES {
                    let why = format!("more than {MAX_TAG_VALUES} values");
                    self.drop_tag(k, &why);
                    return None;
                }
            }
        }
        Some(id)
    }

    fn metric_id(&mut self, rec: &RecordRef<'_>) -> Option<u32> {
        let id = self
            .metric_ids
            .get_or_insert(rec.metric.as_bytes(), MAX_NAMES)?;
        if id as usize == self.metrics.len() {
            self.bytes += name_bytes(rec.metric.len());
            self.metrics.push((rec.metric.to_string(), None));
        }
        let unit = &mut self.metrics[id as usize].1;
        if unit.is_none() {
            *unit = rec.unit.as_deref().map(str::to_string);
        }
        Some(id)
    }

    fn push(&mut self, metric: u32, dim: u32, rec: &RecordRef<'_>) {
        let ids = (u64::from(metric) << 32) | u64::from(dim);
        let i = match self.by_ids.get(&ids) {
            Some(&i) => i as usize,
            None => {
                self.series.push(Series {
                    metric,
                    dim,
                    column: Column::new(),
                    runs: Vec::new(),
                });
                self.by_ids.insert(ids, self.series.len() as u32 - 1);
                self.bytes += SERIES_BYTES;
                self.series.len() - 1
            }
        };
        self.bytes += self.series[i].push(rec.value, rec.ts_ms);
    }

    /// Too many names to keep: the rollups are dropped, as past the budget.
    fn relieve_names(&mut self, what: &str) {
        cfn_core::cli::warn(
            "cfn-serve",
            format!("more than {MAX_NAMES} {what}: the rollups by agent and tag are dropped"),
        );
        self.agents_on = false;
        self.tags_on.iter_mut().for_each(|on| *on = false);
        self.auto_keys = 0;
        self.series.clear();
        self.reindex();
    }

    /// Over budget: the tags nobody named go first (the last met first), then the agent
    /// rollups (the most series), then the named tags'.
    fn relieve(&mut self) {
        let why = format!("the budget of {}", size_text(self.budget));
        for k in (self.named..self.tag_keys.len()).rev() {
            if self.bytes <= self.budget {
                return;
            }
            self.drop_tag(k, &why);
        }
        if self.bytes <= self.budget {
            return;
        }
        if self.agents_on {
            self.agents_on = false;
            let dims = &self.dims;
            self.series
                .retain(|s| !matches!(dims[s.dim as usize], Dim::Agent(_)));
            self.reindex();
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "the agent rollups passed {} (--index-dims-budget); agent filters and by=agent read the records",
                    size_text(self.budget)
                ),
            );
        }
        for k in 0..self.named {
            if self.bytes <= self.budget {
                break;
            }
            self.drop_tag(k, &why);
        }
        if self.bytes > self.budget {
            // Names alone (of metrics no series holds any more) cannot be over: reindex
            // keeps only the names series use. Nothing is left to drop.
            self.series.clear();
            self.reindex();
        }
    }

    fn drop_tag(&mut self, k: usize, why: &str) {
        if !self.tags_on[k] {
            return;
        }
        self.tags_on[k] = false;
        let dims = &self.dims;
        self.series
            .retain(|s| !matches!(&dims[s.dim as usize], Dim::Tag(i, _) if *i == k));
        self.reindex();
        // A key nobody named with many values (a request id) is expected: no word of it.
        if k < self.named || !why.contains("values") {
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "the rollups of tag {:?} passed {why}; filters on it read the records",
                    self.tag_keys[k]
                ),
            );
        }
    }

    /// Renumbers what the series use (names no series uses any more are forgotten), and
    /// counts the bytes again.
    fn reindex(&mut self) {
        let mut metric_map = vec![u32::MAX; self.metrics.len()];
        let mut dim_map = vec![u32::MAX; self.dims.len()];
        let (mut metrics, mut dims) = (Vec::new(), Vec::new());
        let (mut metric_ids, mut dim_ids) = (Interner::default(), Interner::default());
        let mut old_dims: Vec<Option<Dim>> = std::mem::take(&mut self.dims)
            .into_iter()
            .map(Some)
            .collect();
        let mut key = Vec::new();
        for s in &mut self.series {
            let m = s.metric as usize;
            if metric_map[m] == u32::MAX {
                metric_map[m] = metrics.len() as u32;
                let named = std::mem::take(&mut self.metrics[m]);
                metric_ids
                    .ids
                    .insert(named.0.as_bytes().into(), metric_map[m]);
                metrics.push(named);
            }
            s.metric = metric_map[m];
            let d = s.dim as usize;
            if dim_map[d] == u32::MAX
                && let Some(dim) = old_dims[d].take()
            {
                dim_map[d] = dims.len() as u32;
                dim.as_ref().key(&mut key);
                dim_ids.ids.insert(key.as_slice().into(), dim_map[d]);
                dims.push(dim);
            }
            s.dim = dim_map[d];
        }
        self.tag_values = vec![0; self.tag_keys.len()];
        for d in &dims {
            if let Dim::Tag(k, _) = d {
                self.tag_values[*k] += 1;
            }
        }
        let names: usize = metrics
            .iter()
            .map(|(m, _)| name_bytes(m.len()))
            .sum::<usize>()
            + self.tag_keys[self.named..]
                .iter()
                .map(|k| name_bytes(k.len()))
                .sum::<usize>()
            + dim_ids
                .ids
                .keys()
                .map(|k| name_bytes(k.len()))
                .sum::<usize>();
        (self.metrics, self.metric_ids, self.dims, self.dim_ids) =
            (metrics, metric_ids, dims, dim_ids);
        self.bytes = names
            + self
                .series
                .iter()
                .map(|s| s.bytes() + SERIES_BYTES)
                .sum::<usize>();
        self.by_ids = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| ((u64::from(s.metric) << 32) | u64::from(s.dim), i as u32))
            .collect();
    }

    /// Writes these rollups into a snapshot: settings and counts, names, then series (the
    /// lookup tables are made again from them at load).
    ///
    /// # Errors
    /// As [`FrameWriter::put`].
    pub fn save<W: Write>(&self, w: &mut FrameWriter<W>) -> anyhow::Result<()> {
        w.put(&(self.named, self.auto_keys))?;
        w.put(&(
            &self.tag_keys,
            self.budget,
            self.bytes,
            self.agents_on,
            &self.tags_on,
            &self.tag_values,
        ))?;
        w.seq(self.metrics.len(), &self.metrics)?;
        w.seq(self.dims.len(), &self.dims)?;
        w.seq(self.series.len(), &self.series)
    }

    /// The rollups [`Dims::save`] wrote.
    ///
    /// # Errors
    /// A malformed snapshot: a series naming a metric or dimension it does not hold.
    pub fn load<R: Read>(r: &mut FrameReader<R>) -> anyhow::Result<Self> {
        type Head = (Vec<String>, usize, usize, bool, Vec<bool>, Vec<usize>);
        let (named, auto_keys): (usize, usize) = r.get()?;
        let (tag_keys, budget, bytes, agents_on, tags_on, tag_values): Head = r.get()?;
        let n = tag_keys.len();
        anyhow::ensure!(
            tags_on.len() == n && tag_values.len() == n,
            "dims: tag counts"
        );
        let metrics: Vec<(String, Option<String>)> = r.vec(MAX_NAMES)?;
        let dims: Vec<Dim> = r.vec(MAX_NAMES)?;
        let series: Vec<Series> = r.vec(usize::MAX)?;
        anyhow::ensure!(named <= n && n <= MAX_TAG_KEYS, "dims: tag keys");
        let mut out = Self::new(tag_keys, budget);
        (out.named, out.auto_keys) = (named, auto_keys);
        let mut key = Vec::new();
        for (i, (m, _)) in metrics.iter().enumerate() {
            out.metric_ids.ids.insert(m.as_bytes().into(), i as u32);
        }
        for (i, d) in dims.iter().enumerate() {
            anyhow::ensure!(
                !matches!(d, Dim::Tag(k, _) if *k >= n),
                "dims: a tag past the keys"
            );
            d.as_ref().key(&mut key);
            out.dim_ids.ids.insert(key.as_slice().into(), i as u32);
        }
        for (i, s) in series.iter().enumerate() {
            anyhow::ensure!(
                (s.metric as usize) < metrics.len() && (s.dim as usize) < dims.len(),
                "dims: a series naming what is not there"
            );
            out.by_ids
                .insert((u64::from(s.metric) << 32) | u64::from(s.dim), i as u32);
        }
        (out.bytes, out.agents_on, out.tags_on, out.tag_values) =
            (bytes, agents_on, tags_on, tag_values);
        (out.metrics, out.dims, out.series) = (metrics, dims, series);
        Ok(out)
    }

    /// Drops what is older than `horizon`.
    pub fn drop_before(&mut self, horizon: EpochMs) {
        let keep_from = horizon.div_euclid(QUARTER_MS).max(0) as u32;
        for s in &mut self.series {
            s.drop_before(keep_from);
        }
        self.series.retain(|s| !s.runs.is_empty());
        self.reindex();
    }

    /// True when these rollups hold what `q` filters on (an agent filter or by=agent: the
    /// agent rollups; a tag filter: that tag's; not both kinds at once).
    pub fn can_answer(&self, q: &DimQuery<'_>) -> bool {
        let by_agent = !q.agents.is_empty() || q.by_agent;
        match q.tag {
            Some((k, _)) => !by_agent && self.tag_on(k),
            None => by_agent && self.agents_on,
        }
    }

    /// Whether series `s` is one `q` reads.
    fn selects(&self, s: &Series, q: &DimQuery<'_>) -> bool {
        let metric = &self.metrics[s.metric as usize].0;
        if !q.metrics.is_empty() && !q.metrics.iter().any(|p| p.matches(metric)) {
            return false;
        }
        match (&self.dims[s.dim as usize], q.tag) {
            (Dim::Tag(k, v), Some((key, value))) => self.tag_keys[*k] == *key && v == value,
            (Dim::Agent(a), None) => {
                q.agents.is_empty()
                    || a.as_deref()
                        .is_some_and(|a| q.agents.iter().any(|p| p.matches(a)))
            }
            _ => false,
        }
    }

    /// The metrics `q` reads, sorted.
    pub fn metrics(&self, q: &DimQuery<'_>) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .series
            .iter()
            .filter(|s| self.selects(s, q))
            .map(|s| self.metrics[s.metric as usize].0.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Folds the runs of metric `metric` that `q` selects into `agg`, one group per agent
    /// when `q.by_agent` (`values` is scratch space).
    pub fn fold_metric(
        &self,
        q: &DimQuery<'_>,
        metric: &str,
        agg: &mut Aggregator,
        values: &mut Vec<f64>,
    ) {
        let Some(&id) = self.metric_ids.ids.get(metric.as_bytes()) else {
            return;
        };
        let (from, to) = (
            q.from.div_euclid(QUARTER_MS) as u32,
            q.to.div_euclid(QUARTER_MS) as u32,
        );
        let unit = self.metrics[id as usize].1.as_deref();
        for s in self.series.iter().filter(|s| s.metric == id) {
            if !self.selects(s, q) {
                continue;
            }
            let agent = match (&self.dims[s.dim as usize], q.by_agent) {
                (Dim::Agent(a), true) => a.as_deref(),
                _ => None,
            };
            for (i, r) in s.runs.iter().enumerate() {
                if r.quarter() < from || r.quarter() >= to {
                    continue;
                }
                values.clear();
                values.extend((r.start as usize..s.end_of(i)).map(|j| s.column.get(j)));
                let start = i64::from(r.quarter()) * QUARTER_MS;
                let parts = RecordParts {
                    metric,
                    agent,
                    unit,
                    tag_values: &[],
                    value: 0.0,
                    ts_ms: start,
                };
                agg.add_run(
                    &parts,
                    values,
                    start + i64::from(r.first()),
                    start + i64::from(r.last()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_gives_every_value_back_exactly_and_scales_while_it_can() {
        let mut c = Column::new();
        let vals = [
            3.0,
            124.8,
            0.1 + 0.2,
            -7.25,
            1e-7,
            99.999999,
            1e12,
            f64::MIN_POSITIVE,
        ];
        for (i, &v) in vals.iter().enumerate() {
            c.push(v);
            for (j, &w) in vals[..=i].iter().enumerate() {
                assert_eq!(c.get(j).to_bits(), w.to_bits(), "{w} after pushing {v}");
            }
        }
        let mut c = Column::new();
        for v in [1.0, 2.5, 124.75] {
            c.push(v);
        }
        assert!(matches!(c, Column::Small { decimals: 2, .. }), "{c:?}");
        assert!(c.bytes() <= 8 * 2, "{}", c.bytes());
        c.push(400.0);
        assert!(matches!(c, Column::Scaled { decimals: 2, .. }), "{c:?}");
        assert_eq!(c.get(3), 400.0);
        assert_eq!(c.get(2), 124.75);
    }

    /// Adds one record with `tags` (a JSON object's text) to `d`.
    fn add_tagged(d: &mut Dims, agent: &str, tags: &str, value: f64) {
        let line = format!(
            r#"{{"timestamp":"2026-01-01T00:00:00.000Z","agent":"{agent}","metric":"m","value":{value},"tags":{tags}}}"#
        );
        let rec = cfn_core::reader::parse_record(line.as_bytes()).unwrap();
        d.add(&rec);
    }

    #[test]
    fn keys_nobody_named_are_indexed_up_to_their_bounds() {
        let mut d = Dims::new(vec!["phase".into()], 1 << 30).with_auto_keys(3);
        add_tagged(&mut d, "a", r#"{"phase":"x","host":"h1","req":"r0"}"#, 1.0);
        for i in 1..=MAX_TAG_VALUES + 1 {
            add_tagged(
                &mut d,
                "a",
                &format!(r#"{{"host":"h{}","req":"r{i}"}}"#, i % 8),
                2.0,
            );
        }
        // Keys past the three met: never indexed, whatever their values.
        for k in 0..100 {
            add_tagged(&mut d, "a", &format!(r#"{{"k{k}":"v"}}"#), 3.0);
        }
        assert!(d.tag_on("phase") && d.tag_on("host"), "{:?}", d.tag_keys);
        assert!(
            !d.tag_on("req"),
            "more than {MAX_TAG_VALUES} values: dropped"
        );
        assert!(d.tag_on("k0"), "the third key met");
        assert!(
            !d.tag_on("k1") && !d.tag_on("k99"),
            "past --index-auto-tags"
        );
        assert_eq!(d.tag_keys.len(), 4);
        // The same, through a snapshot.
        let mut buf = Vec::new();
        crate::snapshot::tests::round_trip(
            &mut buf,
            |w| d.save(w),
            // A closure: the reader's lifetime is the call's, not one the function names.
            #[allow(clippy::redundant_closure)]
            |r| Dims::load(r),
            |e| {
                assert!(e.tag_on("host") && !e.tag_on("req") && !e.tag_on("k1"));
                assert_eq!(
                    (e.named, e.auto_keys, e.bytes),
                    (d.named, d.auto_keys, d.bytes)
                );
            },
        );
    }

    #[test]
    fn over_budget_keys_nobody_named_go_before_agents_and_named_keys() {
        let mut d = Dims::new(vec!["phase".into()], 64 << 10).with_auto_keys(8);
        let mut i = 0;
        while d.tag_on("host") {
            let tags = format!(r#"{{"phase":"p{}","host":"h{}"}}"#, i % 5, i % 900);
            add_tagged(&mut d, &format!("agent-{}", i % 50), &tags, i as f64 / 3.0);
            i += 1;
            assert!(i < 1_000_000, "the budget never bit");
        }
        assert!(
            d.agents_on() && d.tag_on("phase"),
            "only the key nobody named went"
        );
        assert!(d.bytes() <= 64 << 10);
    }

    #[test]
    fn runs_cut_at_quarter_hours_and_keep_first_and_last() {
        let mut s = Series {
            metric: 0,
            dim: 0,
            column: Column::new(),
            runs: Vec::new(),
        };
        let q = 1_000 * QUARTER_MS;
        for (v, t) in [
            (1.0, q + 5),
            (2.0, q + 1),
            (3.0, q + QUARTER_MS),
            (4.0, q + 9),
        ] {
            s.push(v, t);
        }
        assert_eq!(s.runs.len(), 3);
        assert_eq!((s.runs[0].first(), s.runs[0].last()), (1, 5));
        let r = Run::new(7, 1_999_999, 899_999, 123_456);
        assert_eq!(
            (r.start, r.quarter(), r.first(), r.last()),
            (7, 1_999_999, 899_999, 123_456)
        );
        assert_eq!(s.end_of(0), 2);
        s.drop_before(1_001);
        assert_eq!(s.runs.len(), 1);
        assert_eq!(s.column.len(), 1);
        assert_eq!(s.column.get(0), 3.0);
    }
}
