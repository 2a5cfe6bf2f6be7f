//! The rollups: per metric, the statistic of every minute, quarter hour and hour from the
//! horizon on (the same mergeable statistic `cfn-agg` keeps), fed one record at a time by
//! the index, which follows the shards. A query of whole minutes merges a few dozen of them
//! instead of reading the records.

use cfn_core::aggregate::Aggregate;
use cfn_core::pattern::NamePattern;
use cfn_core::reader::RecordRef;
use cfn_core::time::EpochMs;
use cfn_stats::group::{Aggregator, Options, RecordParts, aggregate_line};
use cfn_stats::stats::{Stats, StatsArena, relieve_budget};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::snapshot::{self, FrameReader, FrameWriter};

pub const MINUTE_MS: i64 = 60_000;
/// The rollup sizes: a day is 24 hours, a 15-minute chart bucket one quarter.
pub const TIERS: [i64; 3] = [MINUTE_MS, 15 * MINUTE_MS, 60 * MINUTE_MS];
/// Exact bytes the rollups may hold before the biggest are moved to digests (a day of 6M
/// records in 20 metrics holds about 100 MB of values before that).
const ARENA_BUDGET: usize = 64 << 20;
/// Records stamped further ahead than this are not rolled up (a flood of future-dated
/// records would otherwise grow rollups that never expire); ranges that reach them are read
/// from the records.
pub const FUTURE_SLACK_MS: i64 = 60 * MINUTE_MS;
/// Most names of metrics without rollups kept (past it, only the fact).
const MAX_UNINDEXED: usize = 100_000;

/// One rollup: the statistic, and its quantiles as last computed (with the count they were
/// computed at: a closed minute is computed once, not on every refresh).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cell {
    stats: Stats,
    #[serde(skip)]
    cached: Option<(u64, Vec<(f64, f64)>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Series {
    metric: String,
    /// The unit of the metric's first record.
    unit: Option<String>,
    /// A record came in another spelling: the metric is read from the records from then
    /// on, where cfn-agg converts units or keeps them apart (contract section 1).
    mixed_units: bool,
    tiers: [BTreeMap<EpochMs, Cell>; 3],
}

/// Everything of [`Rollups`] but the arena's chunks and the series, in a snapshot.
#[derive(Serialize, Deserialize)]
struct RollupsHead {
    horizon: EpochMs,
    exact_limit: usize,
    future_limit: EpochMs,
    future_min: EpochMs,
    max_metrics: usize,
    unindexed: Vec<String>,
    unindexed_overflow: bool,
    arena: cfn_stats::stats::ArenaHead,
}

/// A range query the index answers.
#[derive(Clone, Debug)]
pub struct RangeQuery {
    pub since: EpochMs,
    pub until: EpochMs,
    pub bucket_ms: Option<i64>,
    pub metrics: Vec<NamePattern>,
    pub quantiles: Vec<f64>,
    /// Most aggregates answered (see [`cfn_stats::group::Options::max_groups`]).
    pub max_groups: usize,
}

/// The rollups of every metric with records from `horizon` on.
#[derive(Debug)]
pub struct Rollups {
    /// Records at or after this time are rolled up (always an hour boundary, so every
    /// rollup from it on is complete).
    horizon: EpochMs,
    exact_limit: usize,
    series: Vec<Series>,
    by_metric: HashMap<String, usize>,
    arena: StatsArena,
    /// Records are rolled up only before this time ([`FUTURE_SLACK_MS`] past the last look).
    future_limit: EpochMs,
    /// The earliest record seen past `future_limit`: ranges reaching it are read from the
    /// records.
    future_min: EpochMs,
    /// Most metrics with rollups (each costs up to about 1,600 rollups a day); the others
    /// are answered from the records.
    max_metrics: usize,
    /// Metrics without rollups: past `max_metrics`, or in several units (names kept up to
    /// [`MAX_UNINDEXED`], then only the fact).
    unindexed: BTreeSet<String>,
    unindexed_overflow: bool,
}

impl Rollups {
    /// Rollups from `horizon` on, at `now`, of at most `max_metrics` metrics.
    pub fn new(horizon: EpochMs, now: EpochMs, max_metrics: usize) -> Self {
        Self {
            horizon,
            exact_limit: Options::default().exact_limit,
            series: Vec::new(),
            by_metric: HashMap::new(),
            arena: StatsArena::with_budget(ARENA_BUDGET),
            future_limit: now.saturating_add(FUTURE_SLACK_MS),
            future_min: i64::MAX,
            max_metrics,
            unindexed: BTreeSet::new(),
            unindexed_overflow: false,
        }
    }

    pub fn horizon(&self) -> EpochMs {
        self.horizon
    }

    /// Records held in the rollups.
    pub fn records(&self) -> u64 {
        self.series
            .iter()
            .map(|s| s.tiers[2].values().map(|c| c.stats.count).sum::<u64>())
            .sum()
    }

    /// Metrics with rollups.
    pub fn metric_count(&self) -> usize {
        self.series.len()
    }

    /// Rolls `rec` up; false when it is not (before the horizon, too far ahead, a metric
    /// past the limit or in another unit than its first record's).
    pub fn add(&mut self, rec: &RecordRef<'_>) -> bool {
        if rec.ts_ms < self.horizon {
            return false;
        }
        if rec.ts_ms >= self.future_limit {
            self.future_min = self.future_min.min(rec.ts_ms);
            return false;
        }
        let Some(i) = self.series_for(rec) else {
            return false;
        };
        let series = &mut self.series[i];
        if series.mixed_units {
            return false;
        }
        if series.unit.as_deref() != rec.unit.as_deref() {
            series.mixed_units = true;
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "metric {:?} has records in {:?} and {:?}: it is read from the records from now on",
                    rec.metric,
                    series.unit.as_deref().unwrap_or("no unit"),
                    rec.unit.as_deref().unwrap_or("no unit"),
                ),
            );
            self.note_unindexed(&rec.metric);
            return false;
        }
        for (tier, size) in series.tiers.iter_mut().zip(TIERS) {
            tier.entry(floor_to(rec.ts_ms, size))
                .or_default()
                .stats
                .add(rec.value, rec.ts_ms, self.exact_limit, &mut self.arena);
        }
        if self.arena.over_budget() {
            let mut all: Vec<&mut Stats> = self
                .series
                .iter_mut()
                .flat_map(|s| s.tiers.iter_mut())
                .flat_map(|t| t.values_mut().map(|c| &mut c.stats))
                .collect();
            relieve_budget(&mut self.arena, &mut all, |s| &mut **s);
        }
        true
    }

    /// Remembers a metric read from the records, not the rollups.
    fn note_unindexed(&mut self, metric: &str) {
        if self.unindexed.len() < MAX_UNINDEXED {
            self.unindexed.insert(metric.to_string());
        } else {
            self.unindexed_overflow = true;
        }
    }

    /// The index of the series of `rec`'s metric, made when new; `None` past
    /// `max_metrics` (the metric is then read from the records, and said so once).
    fn series_for(&mut self, rec: &RecordRef<'_>) -> Option<usize> {
        if let Some(&i) = self.by_metric.get(rec.metric.as_ref()) {
            return Some(i);
        }
        if self.series.len() >= self.max_metrics {
            if self.unindexed.is_empty() && !self.unindexed_overflow {
                cfn_core::cli::warn(
                    "cfn-serve",
                    format!(
                        "more than {} metrics: {:?} and later ones get no rollups and are read from the records (--index-max-metrics)",
                        self.max_metrics, rec.metric
                    ),
                );
            }
            self.note_unindexed(&rec.metric);
            return None;
        }
        self.series.push(Series {
            metric: rec.metric.to_string(),
            unit: rec.unit.as_deref().map(str::to_string),
            mixed_units: false,
            tiers: Default::default(),
        });
        self.by_metric
            .insert(rec.metric.to_string(), self.series.len() - 1);
        Some(self.series.len() - 1)
    }

    /// Writes the rollups into a snapshot: its settings and limits, the arena's chunks, then
    /// the series.
    ///
    /// # Errors
    /// As [`FrameWriter::put`].
    pub fn save<W: Write>(&self, w: &mut FrameWriter<W>) -> anyhow::Result<()> {
        let (arena, chunks) = self.arena.parts();
        w.put(&RollupsHead {
            horizon: self.horizon,
            exact_limit: self.exact_limit,
            future_limit: self.future_limit,
            future_min: self.future_min,
            max_metrics: self.max_metrics,
            unindexed: self.unindexed.iter().cloned().collect(),
            unindexed_overflow: self.unindexed_overflow,
            arena,
        })?;
        w.seq(chunks.len(), chunks)?;
        w.seq(self.series.len(), &self.series)
    }

    /// The rollups [`Rollups::save`] wrote.
    ///
    /// # Errors
    /// A malformed snapshot.
    pub fn load<R: Read>(r: &mut FrameReader<R>) -> anyhow::Result<Self> {
        let head: RollupsHead = r.get()?;
        let chunks = r.vec((snapshot::MAX_BYTES / 256) as usize)?;
        let arena = StatsArena::from_parts(head.arena, chunks)?;
        let series: Vec<Series> = r.vec(head.max_metrics)?;
        let by_metric = series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.metric.clone(), i))
            .collect();
        Ok(Self {
            horizon: head.horizon,
            exact_limit: head.exact_limit,
            series,
            by_metric,
            arena,
            future_limit: head.future_limit,
            future_min: head.future_min,
            max_metrics: head.max_metrics,
            unindexed: head.unindexed.into_iter().collect(),
            unindexed_overflow: head.unindexed_overflow,
        })
    }

    /// Looks at `now`: records up to [`FUTURE_SLACK_MS`] past it are rolled up from now on.
    pub fn look_at(&mut self, now: EpochMs) {
        self.future_limit = self.future_limit.max(now.saturating_add(FUTURE_SLACK_MS));
    }

    /// Drops the rollups before `horizon` (when it is later than the current one); true when
    /// it moved.
    pub fn drop_before(&mut self, horizon: EpochMs) -> bool {
        if horizon <= self.horizon {
            return false;
        }
        self.horizon = horizon;
        for s in &mut self.series {
            for tier in &mut s.tiers {
                *tier = tier.split_off(&horizon);
            }
        }
        self.series.retain(|s| !s.tiers[2].is_empty());
        self.by_metric = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.metric.clone(), i))
            .collect();
        true
    }

    /// True when every metric `metrics` match (all when empty) has rollups for all of
    /// `[since, until)`: inside the horizon, before any record too far ahead, none of them
    /// read from the records.
    pub fn spans(&self, since: EpochMs, until: EpochMs, metrics: &[NamePattern]) -> bool {
        let unindexed_match = self.unindexed_overflow
            || self
                .unindexed
                .iter()
                .any(|m| metrics.is_empty() || metrics.iter().any(|p| p.matches(m)));
        since >= self.horizon && until <= self.future_min && !unindexed_match
    }

    /// The metrics with records in `[since, until)`.
    pub fn metrics_in(&self, since: EpochMs, until: EpochMs) -> BTreeSet<String> {
        self.series
            .iter()
            .filter(|s| {
                s.tiers[0]
                    .range(floor_to(since, MINUTE_MS)..until)
                    .any(|(_, c)| c.stats.count > 0)
            })
            .map(|s| s.metric.clone())
            .collect()
    }

    /// The start of the oldest minute holding records (any metric).
    pub fn data_since(&self) -> Option<EpochMs> {
        self.series
            .iter()
            .filter_map(|s| {
                s.tiers[0]
                    .iter()
                    .find(|(_, c)| c.stats.count > 0)
                    .map(|(t, _)| *t)
            })
            .min()
    }

    /// The unit of a metric with rollups (that of its first record).
    pub fn unit_of(&self, metric: &str) -> Option<&str> {
        let i = *self.by_metric.get(metric)?;
        self.series[i].unit.as_deref()
    }

    /// Rollups held, over every metric and tier.
    #[cfg(test)]
    pub fn cells(&self) -> usize {
        self.series
            .iter()
            .flat_map(|s| s.tiers.iter())
            .map(BTreeMap::len)
            .sum()
    }

    /// Adds the whole minutes `[a1, b1)` of the metrics `metrics` match to `agg`, in
    /// buckets of `bucket_ms` when given; a bucket that is one whole rollup inside
    /// `[since, until)` becomes an aggregate of its own (its quantiles computed once per
    /// change of the rollup), returned with the records left out past `max_groups`.
    ///
    /// # Errors
    /// A rollup that does not merge (never, for rollups this index built).
    pub fn add_whole_minutes(
        &mut self,
        q: &RangeQuery,
        (a1, b1): (EpochMs, EpochMs),
        agg: &mut Aggregator,
    ) -> anyhow::Result<(Vec<Aggregate>, u64)> {
        let mut direct = Vec::new();
        let mut dropped = 0;
        let intervals = whole_minute_intervals(a1, b1, q.bucket_ms);
        let arena = &self.arena;
        for s in &mut self.series {
            if !q.metrics.is_empty() && !q.metrics.iter().any(|p| p.matches(&s.metric)) {
                continue;
            }
            for &(from, to, bucket) in &intervals {
                let cells = cover(from, to);
                let whole = bucket.is_some_and(|bs| {
                    bs >= q.since && q.bucket_ms.is_some_and(|b| bs + b <= q.until)
                });
                if whole && cells.len() == 1 {
                    let (t, start) = cells[0];
                    if let Some(cell) = s.tiers[t].get_mut(&start)
                        && cell.stats.count > 0
                    {
                        if direct.len() + agg.len() >= q.max_groups {
                            dropped += cell.stats.count;
                            continue;
                        }
                        let qs = cell_quantiles(cell, arena, &q.quantiles);
                        direct.push(aggregate_line(
                            s.metric.clone(),
                            s.unit.clone(),
                            bucket,
                            &cell.stats,
                            qs,
                        ));
                    }
                    continue;
                }
                for (t, start) in cells {
                    let Some(cell) = s.tiers[t].get(&start).filter(|c| c.stats.count > 0) else {
                        continue;
                    };
                    let parts = RecordParts {
                        metric: &s.metric,
                        agent: None,
                        unit: s.unit.as_deref(),
                        tag_values: &[],
                        value: 0.0,
                        ts_ms: bucket.unwrap_or(start),
                    };
                    agg.merge_partial(&parts, cell.stats.snapshot(arena))
                        .map_err(|e| anyhow::anyhow!("rollup of {}: {e}", s.metric))?;
                }
            }
        }
        Ok((direct, dropped))
    }
}

pub fn floor_to(t: EpochMs, step: i64) -> EpochMs {
    t.div_euclid(step) * step
}

pub fn ceil_to(t: EpochMs, step: i64) -> EpochMs {
    -floor_to(-t, step)
}

/// The rollups that make up `[from, to)` (both on minutes): the biggest that fit, in order.
pub fn cover(from: EpochMs, to: EpochMs) -> Vec<(usize, EpochMs)> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let tier = (0..TIERS.len())
            .rev()
            .find(|&i| t % TIERS[i] == 0 && t + TIERS[i] <= to)
            .unwrap_or(0);
        out.push((tier, t));
        t += TIERS[tier];
    }
    out
}

/// A rollup's quantiles, recomputed only when it has grown since the last time (on a copy,
/// so a growing rollup's digest batches are not cut short).
fn cell_quantiles(cell: &mut Cell, arena: &StatsArena, qs: &[f64]) -> Vec<(f64, f64)> {
    if let Some((count, cached)) = &cell.cached
        && *count == cell.stats.count
        && cached.len() == qs.len()
        && cached.iter().zip(qs).all(|(c, q)| c.0 == *q)
    {
        return cached.clone();
    }
    let mut tmp_arena = StatsArena::default();
    let mut tmp = Stats::default();
    let exact_limit = Options::default().exact_limit;
    // A snapshot of a rollup this index built always adds up.
    let _ = tmp.merge(cell.stats.snapshot(arena), exact_limit, &mut tmp_arena);
    let out = tmp.quantiles(qs, &mut tmp_arena);
    cell.cached = Some((cell.stats.count, out.clone()));
    out
}

/// The whole minutes `[a1, b1)` as one interval, or cut at each bucket of `bucket_ms`
/// (with the bucket's start).
fn whole_minute_intervals(
    a1: EpochMs,
    b1: EpochMs,
    bucket_ms: Option<i64>,
) -> Vec<(EpochMs, EpochMs, Option<EpochMs>)> {
    let Some(b) = bucket_ms else {
        return vec![(a1, b1, None)];
    };
    let mut out = Vec::new();
    let mut bs = floor_to(a1, b);
    while bs < b1 {
        out.push((bs.max(a1), (bs + b).min(b1), Some(bs)));
        bs += b;
    }
    out
}
