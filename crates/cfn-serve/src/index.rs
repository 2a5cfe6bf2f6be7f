//! The rollup index: per metric, the statistic of every minute, quarter hour and hour (the
//! same mergeable statistic `cfn-agg` keeps), so a query of any range merges a few dozen
//! rollups instead of re-reading the shards.
//!
//! Built once at start-up, shard by shard, each hot shard (all of them, for shard health)
//! with the archive days the index span reaches of it, as of one moment (see
//! `Index::build_shard`); kept current by reading only what was appended since,
//! with a [`ShardCursor`] per shard and the shard's file held open: an append is read from
//! the offset; a trim (a new file renamed into place) first reads what was appended to the
//! old file, then resumes in the new one through the trims the archive state records; a
//! truncation starts over; and two trims between two looks read the records in between back
//! from the archive. So each record is counted once.
//!
//! Ranges rarely start or end on a minute: the partial minutes at the edges are read from
//! the records (a seek and at most a minute per shard), the whole minutes in between come
//! from the rollups. The numbers are therefore those of `cfn-cat --since … | cfn-agg`:
//! counts, sums, min and max exactly, quantiles within the statistic's bound (exact while
//! the merged rollups hold few enough values).

use crate::data::{ArchiveSnapshot, HotShards, Sources, for_each_archived, for_each_record};
use crate::dims::{DimQuery, Dims, QUARTER_MS};
use crate::histogram::Histograms;
use cfn_core::aggregate::Aggregate;
use cfn_core::cursor::{Change, FileId, ShardCursor, SplitFor};
use cfn_core::filter::RecordFilter;
use cfn_core::fsutil::{Access, is_refused, open_safe};
use cfn_core::pattern::NamePattern;
use cfn_core::reader::{Item, Position, RecordReader, RecordRef};
use cfn_core::time::{EpochMs, format_ms};
use cfn_stats::group::{Aggregator, Options};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

mod restore;
pub use restore::SnapshotStatus;

pub use crate::rollups::RangeQuery;
pub use crate::rollups::{FUTURE_SLACK_MS, MINUTE_MS, TIERS};
use crate::rollups::{Rollups, ceil_to, floor_to};
/// Most metric names kept past the metric limit, most agents tracked, and most refused files
/// remembered (each named once on stderr): a flood of distinct names costs bounded memory,
/// and queries fall back to reading the records.
const MAX_NAMES: usize = 100_000;
/// Most shards listed in the health table (the fullest first): thousands of stray empty
/// files must not make every page megabytes long.
pub const MAX_SHARDS_SHOWN: usize = 256;
/// Most shard files held open between looks (the ones read first; a directory flooded with
/// shard-named files must not take every descriptor). A shard past it is opened at each
/// look, and a record appended and trimmed away between two looks is then read back from
/// the archive, as `cfn-cat --follow` does past its own bound.
pub const MAX_HELD_FILES: usize = 512;

/// What a look at a file's metadata tells without opening it: when none of it changed, the
/// file holds what it held (an append changes the length, a rewrite the times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Seen {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Seen {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// How a pass over a hot shard's records feeds the rollups.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Every record.
    All,
    /// At the build, the part the archive state says is archived: records before byte
    /// `end` stamped before `below` are only counted in the health (the archive pass adds
    /// them).
    Archived { end: u64, below: EpochMs },
    /// At the build, past what the state says is archived: every record, and those
    /// stamped before `below` (replays, which the archive pass reads too) are remembered,
    /// in case the archiver syncs them before the archive pass reads their day file.
    PastSync { below: EpochMs },
}

/// Replays read from a hot shard at the build past the archived offset (see
/// [`Phase::PastSync`]): each copy the archive pass meets is skipped once. At most
/// [`MAX_SYNCED_DURING_BUILD`] are remembered; past that a replay synced during the build
/// may count twice, and the build says so.
#[derive(Debug, Default)]
struct SyncedDuringBuild {
    copies: HashMap<(u32, u64), u32>,
    remembered: usize,
    overflow: bool,
}

/// Most replays [`SyncedDuringBuild`] remembers (16 bytes and a hash slot each).
pub const MAX_SYNCED_DURING_BUILD: usize = 1 << 20;

impl SyncedDuringBuild {
    fn remember(&mut self, shard: u32, raw: &[u8]) {
        if self.remembered >= MAX_SYNCED_DURING_BUILD {
            self.overflow = true;
            return;
        }
        self.remembered += 1;
        *self
            .copies
            .entry((shard, cfn_core::paths::fnv1a64(raw)))
            .or_default() += 1;
    }

    /// True when `raw`, met in the archive, is a copy already read from shard `shard`.
    fn take(&mut self, shard: u32, raw: &[u8]) -> bool {
        if self.copies.is_empty() {
            return false;
        }
        let key = (shard, cfn_core::paths::fnv1a64(raw));
        match self.copies.get_mut(&key) {
            Some(c) if *c > 1 => {
                *c -= 1;
                true
            }
            Some(_) => {
                self.copies.remove(&key);
                true
            }
            None => false,
        }
    }
}

/// One hot shard's health, as `/api/shards` and the dashboard show it.
#[derive(Clone, Debug, Serialize)]
pub struct ShardHealth {
    pub shard: u32,
    pub file: Option<String>,
    pub bytes: u64,
    pub records: u64,
    pub malformed: u64,
    pub newest: Option<String>,
    pub newest_age_s: Option<f64>,
}

/// What the index knows of one hot shard: where it is read to, and its health (a snapshot
/// keeps all of it but the held file, which a start opens again).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ShardState {
    /// The file's metadata when last read to its end.
    seen: Seen,
    n: u32,
    cursor: ShardCursor,
    line: u64,
    bytes: u64,
    records: u64,
    malformed: u64,
    newest_ms: Option<EpochMs>,
    oldest_ms: Option<EpochMs>,
    /// The file last read, held open (up to [`MAX_HELD_FILES`] shards): when a trim renames
    /// another file into place, what was appended to this one since is read from it.
    #[serde(skip)]
    held: Option<File>,
}

impl ShardState {
    fn new(n: u32, id: FileId) -> Self {
        Self {
            seen: Seen::default(),
            n,
            cursor: ShardCursor::at_start(id),
            line: 0,
            bytes: 0,
            records: 0,
            malformed: 0,
            newest_ms: None,
            oldest_ms: None,
            held: None,
        }
    }

    fn count(&mut self, ts: Option<EpochMs>) {
        match ts {
            Some(ts) => {
                self.records += 1;
                self.newest_ms = Some(self.newest_ms.map_or(ts, |n| n.max(ts)));
                self.oldest_ms = Some(self.oldest_ms.map_or(ts, |o| o.min(ts)));
            }
            None => self.malformed += 1,
        }
    }
}

#[derive(Debug)]
struct AgentSeen {
    /// The shards it wrote to, a bit each ([`shard_bit`]): no allocation per agent.
    shards: u64,
    /// First and last record, count, done, gaps (contract section 10): who went silent.
    seen: cfn_core::presence::Seen,
}

/// Shard `n`'s bit in an agent's shard set: shards 0 to 62 a bit each, the rest share bit 63
/// (an agent filter then reads all of those: more than needed, never less).
fn shard_bit(n: u32) -> u64 {
    1 << n.min(63)
}

/// How far a refresh looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// The shards that matter: those numbered below `CFN_SHARDS`, those holding data, and
    /// files new since the last listing (the directory is listed again when its
    /// modification time moved). What each request does.
    Quick,
    /// A quick look after listing the directory again, plus a tenth of the other
    /// shard-named files (empty or refused ones), in turn: the background refresher's, once
    /// a second, so a new file is seen within a second and a stray file that starts to hold
    /// data within [`SWEEP_LOOKS`] seconds, without every look costing a stat per file.
    Sweep,
}

/// Sweeping looks it takes to look at every quiet file once.
pub const SWEEP_LOOKS: usize = 10;

/// What a query filters or groups on that only the rollups by agent and tag hold.
#[derive(Clone, Copy, Debug)]
pub struct DimFilter<'a> {
    pub agents: &'a [NamePattern],
    pub tag: Option<&'a (String, String)>,
    pub by_agent: bool,
}

/// The index.
pub struct Index {
    src: Sources,
    span_ms: i64,
    rollups: Rollups,
    /// Per shard file name (the directory is `src.metrics_dir`): hashed names, since a
    /// refresh looks each one up and a hostile directory may hold tens of thousands.
    shards: HashMap<OsString, ShardState>,
    agents: HashMap<String, AgentSeen>,
    /// Refused files at their last look, so an unchanged one is not opened again.
    refused: HashMap<OsString, Seen>,
    /// Refused files already named on stderr (up to [`MAX_NAMES`]; past it, one line says
    /// that more are not named).
    warned: HashSet<OsString>,
    /// Files opened by the refreshes so far (an unchanged file is only looked at).
    files_opened: u64,
    /// The shard-named files of the directory at its last listing, and its modification
    /// time then (listed again when it moves).
    listed: Vec<(u32, OsString)>,
    listed_mtime: Option<i128>,
    /// Where the next sweep starts in `listed`.
    sweep_at: usize,
    /// More distinct agents than [`MAX_NAMES`]: agent filters read every shard.
    agents_overflow: bool,
    /// Records of agents past [`MAX_NAMES`] (`cfn_presence_untracked_records`).
    agents_untracked: u64,
    /// The histograms of the records appended after their shard was built (`/metrics`).
    pub histograms: Histograms,
    /// The rollups by agent and by indexed tag value.
    pub dims: Dims,
    /// Queries answered from `dims`.
    pub dims_answers: u64,
    building: bool,
    /// Shard files held open (at most [`MAX_HELD_FILES`]).
    held_files: usize,
    /// While building: replays read from the hot shards past the archived offset.
    synced_during_build: SyncedDuringBuild,
    /// While building: when the shards built so far were last caught up, and how often.
    caught_up: Instant,
    catch_up_every: std::time::Duration,
    /// Times a shard was rewritten twice between two looks and what was trimmed in between
    /// was read back from the archive (by day, so not always exact).
    pub(crate) gaps_from_archive: u64,
    /// Where snapshots go and what they did.
    pub snapshots: SnapshotStatus,
    /// Tests: called after the build read a shard, before it reads that shard's archive.
    #[cfg(test)]
    after_hot_read: Option<Box<dyn FnMut(u32) + Send>>,
}

/// How often the build catches up the shards it has read (see `Index::catch_up_if_due`):
/// well under the archiver's period, so a shard is seldom trimmed twice in between.
pub const CATCH_UP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Times the build opens a shard again when the archive state speaks of another file.
const SPLIT_ATTEMPTS: u32 = 3;

/// Progress on stderr for a build that takes more than a second.
struct Progress {
    started: Instant,
    last: Instant,
    total: u64,
}

impl Progress {
    fn tick(&mut self, done: u64) {
        if self.last.elapsed().as_secs() >= 1 && self.started.elapsed().as_secs() >= 1 {
            self.last = Instant::now();
            eprintln!(
                "cfn-serve: indexing the hot shards: {} of {} MB",
                done >> 20,
                self.total >> 20
            );
        }
    }
}

impl Index {
    /// Builds the index of everything at or after `now - span` (rounded down to the hour) in
    /// the hot shards and the archive, and the health of every hot shard.
    ///
    /// # Errors
    /// I/O errors other than missing or refused files.
    pub fn build(
        src: Sources,
        span_ms: i64,
        now: EpochMs,
        max_metrics: usize,
        histograms: Histograms,
        dims: Dims,
    ) -> anyhow::Result<Self> {
        let mut index = Self::empty(src, span_ms, now, max_metrics, histograms, dims);
        index.build_all()?;
        Ok(index)
    }

    /// The build: each hot shard with its part of the archive, one after the other, the
    /// shards done so far caught up every [`CATCH_UP_EVERY`]; then the archive of shards
    /// that have no hot file.
    fn build_all(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let dir = self.src.metrics_dir.clone();
        let shards: Vec<(u32, OsString, std::fs::Metadata)> = list_shard_names(&dir)
            .into_iter()
            .filter_map(|(n, name)| {
                let meta = std::fs::symlink_metadata(dir.join(&name)).ok()?;
                Some((n, name, meta))
            })
            .collect();
        let total = shards.iter().map(|(_, _, m)| m.len()).sum();
        let mut progress = Progress {
            started,
            last: started,
            total,
        };
        let mut done = 0;
        for (n, name, meta) in shards {
            self.build_shard(n, &name, &meta, (&mut progress, done))?;
            done += self.shards.get(&name).map_or(0, |s| s.bytes);
            self.catch_up_if_due()?;
        }
        self.add_archive_only()?;
        self.building = false;
        if started.elapsed().as_secs() >= 1 {
            eprintln!(
                "cfn-serve: indexed {} records in {} metrics in {:.1} s",
                self.indexed_records(),
                self.rollups.metric_count(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// An index holding nothing yet.
    fn empty(
        src: Sources,
        span_ms: i64,
        now: EpochMs,
        max_metrics: usize,
        histograms: Histograms,
        dims: Dims,
    ) -> Self {
        Self {
            src,
            span_ms,
            rollups: Rollups::new(
                floor_to(now.saturating_sub(span_ms), TIERS[2]),
                now,
                max_metrics,
            ),
            shards: HashMap::new(),
            agents: HashMap::new(),
            refused: HashMap::new(),
            warned: HashSet::new(),
            files_opened: 0,
            listed: Vec::new(),
            listed_mtime: None,
            sweep_at: 0,
            agents_overflow: false,
            agents_untracked: 0,
            histograms,
            dims,
            dims_answers: 0,
            building: true,
            held_files: 0,
            synced_during_build: SyncedDuringBuild::default(),
            caught_up: Instant::now(),
            catch_up_every: CATCH_UP_EVERY,
            gaps_from_archive: 0,
            snapshots: SnapshotStatus::default(),
            #[cfg(test)]
            after_hot_read: None,
        }
    }

    /// At the build, one hot shard and its part of the archive, read as of one moment: the
    /// file opened, then the archive state's split of it, then the archive's day files of
    /// the shard opened (an [`ArchiveSnapshot`]); the file is read (what the split says is
    /// archived only counted in the health), then the snapshot (what is older than the
    /// shard's hot records, less the replays the file held past the archived offset).
    /// Records appended or synced after that are read from the shard by the next look.
    fn build_shard(
        &mut self,
        n: u32,
        file_name: &OsStr,
        before: &std::fs::Metadata,
        (progress, done): (&mut Progress, u64),
    ) -> anyhow::Result<()> {
        let Some((file, split)) = self.open_with_split(file_name, Seen::of(before)) else {
            return Ok(());
        };
        let snapshot = match &self.src.archive_dir {
            Some(dir) => Some(ArchiveSnapshot::take(
                dir,
                self.rollups.horizon(),
                Some(&BTreeSet::from([n])),
                None,
            )?),
            None => None,
        };
        let meta = file.metadata()?;
        let name = self.src.metrics_dir.join(file_name).display().to_string();
        let mut st = ShardState::new(n, FileId::of(&meta));
        st.bytes = meta.len();
        let mut rest = Phase::All;
        if let Some(sp) = split {
            let archived = Phase::Archived {
                end: sp.offset,
                below: sp.watermark,
            };
            self.read_records(&mut st, &file, &name, archived, Some((progress, done)))?;
            rest = Phase::PastSync {
                below: sp.watermark,
            };
        }
        self.read_records(&mut st, &file, &name, rest, Some((progress, done)))?;
        let hot_from = match split {
            Some(sp) => sp.watermark,
            None => st.oldest_ms.unwrap_or(i64::MAX),
        };
        self.keep_shard(file_name, st, file, &meta);
        #[cfg(test)]
        if let Some(hook) = self.after_hot_read.as_mut() {
            hook(n);
        }
        if let Some(snapshot) = snapshot {
            let filter = RecordFilter {
                since: Some(self.rollups.horizon()),
                ..Default::default()
            };
            let mut caught_up = Ok(());
            snapshot.read(&filter, &BTreeMap::from([(n, hot_from)]), |rec| match rec {
                // A replay the file held past the archived offset is skipped once.
                Some((n, rec)) if !self.synced_during_build.take(n, rec.raw) => self.add(n, rec),
                Some(_) => {}
                None if caught_up.is_ok() => caught_up = self.catch_up_if_due(),
                None => {}
            })?;
            caught_up?;
        }
        self.forget_synced_during_build();
        Ok(())
    }

    /// Opens shard file `file_name` (`seen` as listed) and reads the archive state's split
    /// of that very file; `None` when the file is refused or gone. When the state speaks of
    /// another file (a trim renamed it away meanwhile), opens the path again, a few times.
    fn open_with_split(
        &mut self,
        file_name: &OsStr,
        seen: Seen,
    ) -> Option<(File, Option<cfn_core::cursor::ArchivedSplit>)> {
        let shard_name = file_name.to_string_lossy();
        for attempt in 0..=SPLIT_ATTEMPTS {
            let file = self.open_shard(file_name, seen)?;
            let Some(dir) = &self.src.archive_dir else {
                return Some((file, None));
            };
            let id = FileId::of(&file.metadata().ok()?);
            match cfn_core::cursor::archived_split_for(dir, &shard_name, id) {
                SplitFor::Split(split) => return Some((file, Some(split))),
                // The state follows another file (the shard was recreated, or keeps being
                // trimmed): the records' times split hot from archived, as without a state.
                SplitFor::OtherFile if attempt == SPLIT_ATTEMPTS => return Some((file, None)),
                SplitFor::Untrimmed => return Some((file, None)),
                SplitFor::OtherFile => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        None
    }

    /// After a build step: the replays remembered for it are done with.
    fn forget_synced_during_build(&mut self) {
        if self.synced_during_build.overflow {
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "more than {MAX_SYNCED_DURING_BUILD} replayed records past the archived offset of a hot shard; one the archiver synced during the build may be counted twice"
                ),
            );
        }
        self.synced_during_build = SyncedDuringBuild::default();
    }

    /// At the build, every [`CATCH_UP_EVERY`]: reads what was appended to the shards built
    /// so far, so a shard the archiver trims again and again while the others are read is
    /// followed through each trim from the file it held (exact), not read back from the
    /// archive.
    fn catch_up_if_due(&mut self) -> anyhow::Result<()> {
        if self.caught_up.elapsed() < self.catch_up_every {
            return Ok(());
        }
        let built: Vec<(u32, OsString)> = self
            .shards
            .iter()
            .filter(|(_, st)| st.held.is_some())
            .map(|(name, st)| (st.n, name.clone()))
            .collect();
        // What a shard got after it was built is an append like any later one (the
        // histograms count it).
        let building = std::mem::replace(&mut self.building, false);
        let looked = built
            .into_iter()
            .try_for_each(|(n, name)| self.look_at(n, &name));
        self.building = building;
        self.caught_up = Instant::now();
        looked?;
        Ok(())
    }

    /// At the end of the build: the archive of the shards that have no hot file (or whose
    /// file was refused).
    fn add_archive_only(&mut self) -> anyhow::Result<()> {
        let hot: BTreeMap<u32, EpochMs> = self.shards.values().map(|s| (s.n, i64::MIN)).collect();
        let filter = RecordFilter {
            since: Some(self.rollups.horizon()),
            ..Default::default()
        };
        let src = self.src.clone();
        for_each_archived(&src, &filter, None, &hot, |n, rec| self.add(n, rec))
    }

    /// Records held in the rollups.
    pub fn indexed_records(&self) -> u64 {
        self.rollups.records()
    }

    fn add(&mut self, shard: u32, rec: &RecordRef<'_>) {
        if let Some(agent) = rec.agent.as_deref() {
            let done = &*rec.metric == cfn_core::presence::DONE_METRIC;
            self.note_agent(agent, shard, rec.ts_ms, done);
        }
        if !self.building {
            self.histograms.record(rec);
        }
        // Only metrics with rollups get rollups by agent and tag: a query touching the others
        // reads the records anyway.
        if self.rollups.add(rec) {
            self.dims.add(rec);
        }
    }

    /// Remembers that `agent` wrote to `shard` (up to [`MAX_NAMES`] agents).
    fn note_agent(&mut self, agent: &str, shard: u32, ts_ms: EpochMs, done: bool) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.shards |= shard_bit(shard);
            a.seen.observe(ts_ms, done);
        } else if self.agents.len() < MAX_NAMES {
            let a = AgentSeen {
                shards: shard_bit(shard),
                seen: cfn_core::presence::Seen::first(ts_ms, done),
            };
            self.agents.insert(agent.to_string(), a);
        } else {
            self.agents_overflow = true;
            self.agents_untracked += 1;
        }
    }

    /// Reads what was appended to every hot shard since the last look, and drops rollups
    /// older than the span.
    ///
    /// # Errors
    /// I/O errors other than missing or refused files.
    pub fn refresh(&mut self, now: EpochMs, look: Look) -> anyhow::Result<()> {
        self.rollups.look_at(now);
        let dir = self.src.metrics_dir.clone();
        let mtime = std::fs::symlink_metadata(&dir)
            .ok()
            .map(|m| Seen::of(&m).mtime_ns);
        // File times tick by the jiffy: a file made in the same tick as the last listing
        // leaves the directory's time as it was. So the background look lists every time
        // (a readdir, no stat), and a request lists again when the time moved.
        if look == Look::Sweep || mtime.is_none() || mtime != self.listed_mtime {
            self.listed = list_shard_names(&dir);
            self.listed_mtime = mtime;
            let present: HashSet<&OsStr> = self
                .listed
                .iter()
                .map(|(_, name)| name.as_os_str())
                .collect();
            let mut held = self.held_files;
            self.shards.retain(|name, st| {
                let keep = present.contains(name.as_os_str());
                if !keep && st.held.is_some() {
                    held -= 1;
                }
                keep
            });
            self.held_files = held;
            self.refused
                .retain(|name, _| present.contains(name.as_os_str()));
        }
        let listed = std::mem::take(&mut self.listed);
        let mut quiet = Vec::new();
        for (i, (n, name)) in listed.iter().enumerate() {
            let matters = *n < self.src.shard_count
                || self.shards.get(name).is_some_and(|st| st.bytes > 0)
                || (!self.shards.contains_key(name) && !self.refused.contains_key(name));
            if matters {
                self.look_at(*n, name)?;
            } else if look == Look::Sweep {
                quiet.push(i);
            }
        }
        if look == Look::Sweep && !quiet.is_empty() {
            let step = quiet.len().div_ceil(SWEEP_LOOKS);
            for k in 0..step {
                let (n, name) = &listed[quiet[(self.sweep_at + k) % quiet.len()]];
                self.look_at(*n, name)?;
            }
            self.sweep_at = (self.sweep_at + step) % quiet.len();
        }
        self.listed = listed;
        // Keep an hour past the span, so a query of the whole span finds its start.
        let horizon = floor_to(now.saturating_sub(self.span_ms), TIERS[2]) - TIERS[2];
        if self.rollups.drop_before(horizon) {
            self.dims.drop_before(horizon);
        }
        Ok(())
    }

    /// Looks at one listed file: its metadata, then what was appended if that changed.
    fn look_at(&mut self, n: u32, file_name: &OsStr) -> anyhow::Result<()> {
        match std::fs::symlink_metadata(self.src.metrics_dir.join(file_name)) {
            Ok(meta) => self.refresh_shard(n, file_name, &meta),
            // Gone since the listing: the next listing drops it.
            Err(_) => Ok(()),
        }
    }

    /// Reads what was appended to shard file `file_name` (whose metadata, as the directory
    /// listing saw it, is `before`) since the last look; opens it only when that metadata
    /// changed.
    fn refresh_shard(
        &mut self,
        n: u32,
        file_name: &OsStr,
        before: &std::fs::Metadata,
    ) -> anyhow::Result<()> {
        let seen = Seen::of(before);
        if self.shards.get(file_name).is_some_and(|st| st.seen == seen)
            || self.refused.get(file_name) == Some(&seen)
        {
            return Ok(());
        }
        let Some(file) = self.open_shard(file_name, seen) else {
            return Ok(());
        };
        let meta = file.metadata()?;
        let name = self.src.metrics_dir.join(file_name).display().to_string();
        let mut st = match self.shards.remove(file_name) {
            None => {
                self.warn_if_trimmed_unseen(file_name, FileId::of(&meta), &name);
                ShardState::new(n, FileId::of(&meta))
            }
            Some(mut st) => {
                self.follow_change(&mut st, &file, &meta, &name)?;
                st
            }
        };
        st.bytes = meta.len();
        self.read_records(&mut st, &file, &name, Phase::All, None)?;
        self.keep_shard(file_name, st, file, &meta);
        Ok(())
    }

    /// A shard first seen, after the build, in a file a trim made: what the trim took was
    /// never read here, and the archive holds it by day, not where a reader could find it
    /// (the fleet soak found this silent: replays written, archived and trimmed within a
    /// second of a shard's birth). Said once, and counted as a gap.
    fn warn_if_trimmed_unseen(&mut self, file_name: &OsStr, id: FileId, name: &str) {
        let Some(archive) = self.src.archive_dir.as_deref().filter(|_| !self.building) else {
            return;
        };
        let made_by_trim =
            cfn_core::cursor::trim_that_made(archive, &file_name.to_string_lossy(), id);
        if let Some(t) = made_by_trim {
            self.gaps_from_archive += 1;
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "{name} was trimmed before it was first read: the {} bytes the trim took are in the archive, not in the index",
                    t.cut
                ),
            );
        }
    }

    /// Puts `st`, just read from `file` (`meta` before the read), back in the index, the
    /// file held while fewer than [`MAX_HELD_FILES`] are.
    fn keep_shard(
        &mut self,
        file_name: &OsStr,
        mut st: ShardState,
        file: File,
        meta: &std::fs::Metadata,
    ) {
        // Unchanged from here on only if nothing came after what was read.
        st.seen = if st.cursor.offset == meta.len() {
            Seen::of(meta)
        } else {
            Seen::default()
        };
        if st.held.is_some() || self.held_files < MAX_HELD_FILES {
            // A file held before is the one at the path, just read, or was taken (and
            // counted off) by `follow_change`.
            self.held_files += usize::from(st.held.is_none());
            st.held = Some(file);
        }
        self.shards.insert(file_name.to_os_string(), st);
    }

    /// Opens shard file `file_name` (`seen` as listed), or remembers and names it once when
    /// it is refused; `None` when refused or gone.
    fn open_shard(&mut self, file_name: &OsStr, seen: Seen) -> Option<File> {
        self.files_opened += 1;
        let path = self.src.metrics_dir.join(file_name);
        match open_safe(&path, Access::Read) {
            Ok(f) => {
                self.refused.remove(file_name);
                Some(f)
            }
            Err(e) if is_refused(&e) => {
                let dropped = self.shards.remove(file_name);
                if dropped.is_some_and(|st| st.held.is_some()) {
                    self.held_files -= 1;
                }
                self.refused.insert(file_name.to_os_string(), seen);
                self.warn_refused(file_name, &e);
                None
            }
            // Gone between the listing and the open: the next look sees it.
            Err(_) => None,
        }
    }

    /// Brings `st` to where reading goes on in `file` (the shard at its path now, `meta`)
    /// when it was rewritten, replaced or truncated since the last look.
    fn follow_change(
        &mut self,
        st: &mut ShardState,
        file: &File,
        meta: &std::fs::Metadata,
        name: &str,
    ) -> anyhow::Result<()> {
        let change = st.cursor.change_in(file, meta)?;
        if change == Change::Replaced
            && let Some(old) = st.held.take()
        {
            // What was appended to the old file before it was renamed away is read from the
            // old file: a trim may have taken it from the path since, and looking for it in
            // the archive's day files is not exact (they are by day, not in file order).
            self.held_files -= 1;
            self.read_records(st, &old, name, Phase::All, None)?;
        }
        if change != Change::Same {
            self.follow_rewrite(st, change, file, name)?;
        }
        Ok(())
    }

    /// Reads the records of `file` from the cursor on into the rollups, as `phase` says.
    fn read_records(
        &mut self,
        st: &mut ShardState,
        file: &File,
        name: &str,
        phase: Phase,
        mut progress: Option<(&mut Progress, u64)>,
    ) -> anyhow::Result<()> {
        let end = match phase {
            Phase::Archived { end, .. } => end,
            _ => u64::MAX,
        };
        let from = st.cursor.offset;
        let mut reader = RecordReader::new(
            BufReader::with_capacity(
                256 * 1024,
                ReadAt::new(file, from)?.take(end.saturating_sub(from)),
            ),
            name.to_string(),
        )
        .with_position(Position {
            offset: from,
            line: st.line,
        });
        reader.leave_partial_tail = true;
        let mut seen = 0u64;
        loop {
            let more = reader.next_item_with(|item| match item {
                Item::Record(rec) => {
                    st.count(Some(rec.ts_ms));
                    st.cursor.note_record(rec.ts_ms, rec.raw);
                    match phase {
                        Phase::Archived { below, .. } if rec.ts_ms < below => {}
                        Phase::PastSync { below } if rec.ts_ms < below => {
                            self.synced_during_build.remember(st.n, rec.raw);
                            self.add(st.n, &rec);
                        }
                        _ => self.add(st.n, &rec),
                    }
                }
                Item::Malformed { .. } => st.count(None),
            })?;
            if more.is_none() {
                break;
            }
            seen += 1;
            if seen.is_multiple_of(65_536)
                && let Some((p, done)) = progress.as_mut()
            {
                p.tick(*done + reader.position().offset);
            }
        }
        let pos = reader.position();
        st.cursor.offset = pos.offset;
        st.line = pos.line;
        Ok(())
    }

    /// Names a refused file on stderr, once per file per process.
    fn warn_refused(&mut self, file_name: &OsStr, e: &anyhow::Error) {
        if self.warned.contains(file_name) {
            return;
        }
        if self.warned.len() < MAX_NAMES {
            self.warned.insert(file_name.to_os_string());
            cfn_core::cli::warn("cfn-serve", format!("skipping {e}"));
        } else if self.warned.len() == MAX_NAMES {
            // One more entry, never a file name, marks that this was said.
            self.warned.insert(OsString::new());
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "more than {MAX_NAMES} refused files; the others are skipped without a word"
                ),
            );
        }
    }

    /// The hot shards worth reading (known, not refused, not empty), for the readers of
    /// records: a directory of thousands of stray empty files is not opened on every query.
    pub fn hot_shards(&self) -> HotShards {
        let mut hot: Vec<(u32, std::path::PathBuf)> = self
            .shards
            .iter()
            .filter(|(_, st)| st.bytes > 0)
            .map(|(name, st)| (st.n, self.src.metrics_dir.join(name)))
            .collect();
        // In shard order, as a listing reads them: answers never depend on hashing.
        hot.sort();
        HotShards(hot)
    }

    /// A shard rewritten (trimmed), replaced or truncated since the last look: finds where
    /// to go on in the file now, reads back from the archive what two trims in a row took
    /// away unseen, and recounts the health of what the file still holds before that point.
    fn follow_rewrite(
        &mut self,
        st: &mut ShardState,
        change: Change,
        file: &File,
        name: &str,
    ) -> anyhow::Result<()> {
        let shard_name = Path::new(name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let archive_dir = self.src.archive_dir.clone();
        let resume = st.cursor.resume_after_change(
            change,
            archive_dir.as_deref(),
            &shard_name,
            file,
            name,
        )?;
        if !resume.missed.is_empty() || resume.gap_unknown {
            self.gaps_from_archive += 1;
        }
        for line in &resume.missed {
            if let Ok(rec) = cfn_core::reader::parse_record(line) {
                self.add(st.n, &rec);
            }
        }
        if resume.gap_unknown {
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "{name} was rewritten past the last record indexed and the archive does not hold that record; records trimmed in between are not in the index"
                ),
            );
        }
        let pos = resume.pos;
        // Health describes the file as it is: count what stays before the resume point.
        let mut fresh = ShardState::new(st.n, FileId::of(&file.metadata()?));
        let mut reader = RecordReader::new(
            BufReader::with_capacity(256 * 1024, ReadAt::new(file, 0)?.take(pos.offset)),
            name,
        );
        while let Some(ts) = reader.next_item_with(|item| match item {
            Item::Record(rec) => Some(rec.ts_ms),
            Item::Malformed { .. } => None,
        })? {
            fresh.count(ts);
        }
        fresh.cursor = st.cursor.clone();
        fresh.held = st.held.take();
        fresh
            .cursor
            .move_to(FileId::of(&file.metadata()?), pos.offset);
        fresh.line = pos.line;
        *st = fresh;
        Ok(())
    }

    /// Shard health: per hot shard its bytes, records, malformed lines and newest record; at
    /// most [`MAX_SHARDS_SHOWN`], the ones holding data first. Also the number of shards.
    pub fn shard_health(&self, now: EpochMs) -> (Vec<ShardHealth>, usize) {
        let mut all: Vec<(&OsString, &ShardState)> = self.shards.iter().collect();
        all.sort_by_key(|(name, h)| (h.bytes == 0, h.n, *name));
        let shown = all
            .into_iter()
            .take(MAX_SHARDS_SHOWN)
            .map(|(name, h)| ShardHealth {
                shard: h.n,
                file: Some(name.to_string_lossy().into_owned()),
                bytes: h.bytes,
                records: h.records,
                malformed: h.malformed,
                newest: h.newest_ms.map(format_ms),
                newest_age_s: h.newest_ms.map(|t| (now - t) as f64 / 1000.0),
            })
            .collect();
        (shown, self.shards.len())
    }

    /// Every agent held (at most [`MAX_NAMES`]) with what was seen of it.
    pub fn agents_seen(&self) -> impl Iterator<Item = (&str, &cfn_core::presence::Seen)> {
        self.agents.iter().map(|(a, s)| (a.as_str(), &s.seen))
    }

    /// Records of agents past [`MAX_NAMES`].
    pub fn agents_untracked(&self) -> u64 {
        self.agents_untracked
    }

    /// Metric names with records in `[since, until)` and agents whose newest record is at or
    /// after `since`; `None` when the range starts before the horizon.
    pub fn names(
        &self,
        since: EpochMs,
        until: EpochMs,
    ) -> Option<(BTreeSet<String>, BTreeSet<String>, bool)> {
        if !self.rollups.spans(since, until, &[]) || self.agents_overflow {
            return None;
        }
        let metrics = self.rollups.metrics_in(since, until);
        let mut agents: BTreeSet<String> = self
            .agents
            .iter()
            .filter(|(_, a)| a.seen.last >= since)
            .map(|(n, _)| n.clone())
            .collect();
        let cut = agents.len() > crate::data::MAX_LISTED;
        while agents.len() > crate::data::MAX_LISTED {
            agents.pop_last();
        }
        Some((metrics, agents, cut))
    }

    /// The start of the oldest indexed minute holding records (any metric), and each
    /// indexed metric's unit: what the page needs to pick a range and scale an axis.
    pub fn data_since(&self) -> Option<EpochMs> {
        self.rollups.data_since()
    }

    /// The unit of an indexed metric (that of its first record with one).
    pub fn unit_of(&self, metric: &str) -> Option<&str> {
        self.rollups.unit_of(metric)
    }

    /// The shards holding records of agents that `patterns` match.
    pub fn shards_of_agents(&self, patterns: &[NamePattern]) -> BTreeSet<u32> {
        if self.agents_overflow {
            return self.shards.values().map(|s| s.n).collect();
        }
        let mask = self
            .agents
            .iter()
            .filter(|(name, _)| patterns.iter().any(|p| p.matches(name)))
            .fold(0u64, |m, (_, a)| m | a.shards);
        self.shards
            .values()
            .map(|s| s.n)
            .filter(|&n| mask & shard_bit(n) != 0)
            .collect()
    }

    /// True when `q` can be answered from the rollups: inside the span, before any record
    /// too far in the future to be rolled up, in whole-minute buckets, and touching no metric
    /// past the metric limit. Everything else is read from the records, without the index's
    /// lock.
    pub fn covers(&self, q: &RangeQuery) -> bool {
        self.spans(q) && q.bucket_ms.is_none_or(|b| b % MINUTE_MS == 0)
    }

    /// True when the range of `q` is inside what the index holds, for every metric it asks.
    fn spans(&self, q: &RangeQuery) -> bool {
        self.rollups.spans(q.since, q.until, &q.metrics)
    }

    /// The aggregates of `q` filtered by agent or tag (or grouped by agent) from the rollups
    /// by agent and tag value ([`Dims`]): the whole quarter hours of the range from them, the
    /// edges from the records (of `shards` only, when given). `None` when they cannot answer
    /// it (a filter on a tag not indexed, both kinds of filter, buckets not of whole quarter
    /// hours, a range outside the span): the caller reads the records.
    ///
    /// # Errors
    /// I/O errors reading the edges.
    pub fn aggregate_dims(
        &mut self,
        q: &RangeQuery,
        f: &DimFilter<'_>,
        shards: Option<&BTreeSet<u32>>,
    ) -> Option<anyhow::Result<(Vec<Aggregate>, u64)>> {
        let (from, to) = (ceil_to(q.since, QUARTER_MS), floor_to(q.until, QUARTER_MS));
        let dq = DimQuery {
            from,
            to: to.max(from),
            metrics: &q.metrics,
            agents: f.agents,
            tag: f.tag,
            by_agent: f.by_agent,
        };
        let answerable = self.spans(q)
            && q.bucket_ms.is_none_or(|b| b % QUARTER_MS == 0)
            && self.dims.can_answer(&dq);
        if answerable {
            self.dims_answers += 1;
        }
        answerable.then(|| self.aggregate_dims_unchecked(q, &dq, shards))
    }

    fn aggregate_dims_unchecked(
        &self,
        q: &RangeQuery,
        dq: &DimQuery<'_>,
        shards: Option<&BTreeSet<u32>>,
    ) -> anyhow::Result<(Vec<Aggregate>, u64)> {
        let opts = Options {
            by: cfn_stats::group::GroupBy {
                agent: dq.by_agent,
                tags: Vec::new(),
            },
            bucket_ms: q.bucket_ms,
            quantiles: q.quantiles.clone(),
            ..Default::default()
        };
        // The partial quarter hours at both ends, from the records (no more groups than the
        // answer may have).
        let mut edge = Aggregator::new(Options {
            max_groups: q.max_groups,
            ..opts.clone()
        });
        let intervals: &[(EpochMs, EpochMs)] = if dq.from < dq.to {
            &[(q.since, dq.from), (dq.to, q.until)]
        } else {
            &[(q.since, q.until)]
        };
        let hot = self.hot_shards();
        for &(since, until) in intervals.iter().filter(|(s, u)| s < u) {
            let filter = RecordFilter {
                since: Some(since),
                until: Some(until),
                metrics: q.metrics.clone(),
                agents: dq.agents.to_vec(),
            };
            for_each_record(&self.src, &hot, &filter, shards, |_, rec| {
                if dq
                    .tag
                    .is_none_or(|(k, v)| rec.tag(k).as_deref() == Some(v.as_str()))
                {
                    edge.add(rec)
                }
            })?;
        }
        let mut dropped = edge.dropped();
        let mut edge_parts: HashMap<String, Vec<cfn_stats::group::GroupPart>> = HashMap::new();
        for p in edge.into_parts() {
            edge_parts
                .entry(p.metric().to_string())
                .or_default()
                .push(p);
        }
        let mut metrics: Vec<String> = self
            .dims
            .metrics(dq)
            .into_iter()
            .map(str::to_string)
            .chain(edge_parts.keys().cloned())
            .collect();
        metrics.sort_unstable();
        metrics.dedup();
        // A metric at a time: only its groups are held while they are computed.
        let (mut out, mut values) = (Vec::new(), Vec::new());
        for m in &metrics {
            let mut agg = Aggregator::new(Options {
                max_groups: q.max_groups.saturating_sub(out.len()),
                ..opts.clone()
            });
            self.dims.fold_metric(dq, m, &mut agg, &mut values);
            for p in edge_parts.remove(m).unwrap_or_default() {
                agg.merge_group_part(p);
            }
            dropped += agg.dropped();
            out.extend(agg.finish());
        }
        Ok((out, dropped))
    }

    /// The aggregates of `q` (one per metric, or per metric and bucket), as `cfn-agg` would
    /// compute them from the records of the range, and how many records were left out for
    /// groups past `q.max_groups`.
    ///
    /// # Errors
    /// I/O errors reading the edges.
    pub fn aggregate(&mut self, q: &RangeQuery) -> anyhow::Result<(Vec<Aggregate>, u64)> {
        let mut dropped = 0;
        let opts = Options {
            bucket_ms: q.bucket_ms,
            quantiles: q.quantiles.clone(),
            max_groups: q.max_groups,
            ..Default::default()
        };
        let mut agg = Aggregator::new(opts);
        // `covers` let only whole-minute buckets through.
        let (a1, b1) = (ceil_to(q.since, MINUTE_MS), floor_to(q.until, MINUTE_MS));
        self.add_edges(q, a1, b1, &mut agg)?;
        let mut direct = Vec::new();
        if a1 < b1 {
            (direct, dropped) = self.rollups.add_whole_minutes(q, (a1, b1), &mut agg)?;
        }
        dropped += agg.dropped();
        let mut out = agg.finish();
        out.extend(direct);
        out.sort_by(|a, b| (&a.metric, &a.bucket_start).cmp(&(&b.metric, &b.bucket_start)));
        Ok((out, dropped))
    }

    /// Adds the records of `q`'s partial minutes (before `a1` and from `b1` on, or all of
    /// `q` when it holds no whole minute) to `agg`, read from the records.
    fn add_edges(
        &self,
        q: &RangeQuery,
        a1: EpochMs,
        b1: EpochMs,
        agg: &mut Aggregator,
    ) -> anyhow::Result<()> {
        let hot = self.hot_shards();
        let edges: &[(EpochMs, EpochMs)] = if a1 < b1 {
            &[(q.since, a1), (b1, q.until)]
        } else {
            &[(q.since, q.until)]
        };
        for &(since, until) in edges.iter().filter(|(s, u)| s < u) {
            let filter = RecordFilter {
                since: Some(since),
                until: Some(until),
                metrics: q.metrics.clone(),
                ..Default::default()
            };
            for_each_record(&self.src, &hot, &filter, None, |_, rec| agg.add(rec))?;
        }
        Ok(())
    }
}

/// The shard-named entries of `dir`: number and file name, in shard order (a missing or
/// unreadable directory lists nothing).
fn list_shard_names(dir: &Path) -> Vec<(u32, OsString)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, OsString)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            Some((name.to_str().and_then(cfn_core::paths::shard_number)?, name))
        })
        .collect();
    out.sort();
    out
}

/// A file read from an offset, through a shared descriptor.
struct ReadAt<'a> {
    file: &'a File,
}

impl<'a> ReadAt<'a> {
    fn new(file: &'a File, offset: u64) -> std::io::Result<Self> {
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Self { file })
    }
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut f = self.file;
        f.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::cover;

    #[test]
    fn cover_uses_the_biggest_rollups_that_fit() {
        let h = TIERS[2];
        let q = TIERS[1];
        let m = MINUTE_MS;
        assert_eq!(cover(0, h), vec![(2, 0)]);
        assert_eq!(
            cover(14 * m, h + 2 * m),
            vec![
                (0, 14 * m),
                (1, q),
                (1, 2 * q),
                (1, 3 * q),
                (0, h),
                (0, h + m)
            ]
        );
        let c = cover(3 * m, 26 * h + 7 * m);
        assert_eq!(c.iter().filter(|c| c.0 == 2).count(), 25);
        let mut t = 3 * m;
        for (tier, start) in c {
            assert_eq!(start, t, "contiguous");
            t += TIERS[tier];
        }
        assert_eq!(t, 26 * h + 7 * m);
    }

    fn index_of(dir: &Path, now: EpochMs) -> Index {
        let src = Sources {
            metrics_dir: dir.to_path_buf(),
            shard_count: 16,
            archive_dir: None,
            alert_state: None,
            alerts_log: None,
        };
        Index::build(
            src,
            86_400_000,
            now,
            10,
            Histograms::default(),
            Dims::new(vec![], 1 << 20),
        )
        .unwrap()
    }

    #[test]
    fn a_refresh_opens_only_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_795_773_600_000;
        let rec = format!(
            "{{\"timestamp\":\"{}\",\"metric\":\"m\",\"value\":1}}\n",
            format_ms(now - 1000)
        );
        std::fs::write(dir.path().join("cfn-metrics-0.jsonl"), &rec).unwrap();
        for n in 1..500 {
            std::fs::write(dir.path().join(format!("cfn-metrics-{n}.jsonl")), "").unwrap();
        }
        let mut index = index_of(dir.path(), now);
        let opened = index.files_opened;
        assert_eq!(opened, 500, "the build reads every shard once");
        index.refresh(now, Look::Quick).unwrap();
        for _ in 0..SWEEP_LOOKS {
            index.refresh(now, Look::Sweep).unwrap();
        }
        assert_eq!(
            index.files_opened, opened,
            "nothing changed, nothing opened"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("cfn-metrics-0.jsonl"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, rec.as_bytes()))
            .unwrap();
        index.refresh(now, Look::Quick).unwrap();
        assert_eq!(index.files_opened, opened + 1, "only the shard appended to");
        assert_eq!(index.indexed_records(), 2);
        // A quiet stray file that starts to hold data is read within a round of sweeps.
        std::fs::write(dir.path().join("cfn-metrics-400.jsonl"), &rec).unwrap();
        index.refresh(now, Look::Quick).unwrap();
        assert_eq!(index.indexed_records(), 2, "a quick look skips quiet files");
        for _ in 0..SWEEP_LOOKS {
            index.refresh(now, Look::Sweep).unwrap();
        }
        assert_eq!(index.indexed_records(), 3);
        assert_eq!(
            index.hot_shards().0.len(),
            2,
            "shards 0 and 400 hold records; the empty ones are not read by queries"
        );
    }

    #[test]
    fn records_far_in_the_future_are_not_rolled_up_and_their_ranges_read_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_795_773_600_000;
        let mut text = format!(
            "{{\"timestamp\":\"{}\",\"metric\":\"m\",\"value\":1}}\n",
            format_ms(now - 1000)
        );
        for h in 0..1000 {
            text.push_str(&format!(
                "{{\"timestamp\":\"{}\",\"metric\":\"m\",\"value\":1}}\n",
                format_ms(now + 2 * 3_600_000 + h * 3_600_000)
            ));
        }
        std::fs::write(dir.path().join("cfn-metrics-0.jsonl"), text).unwrap();
        let index = index_of(dir.path(), now);
        let cells = index.rollups.cells();
        assert_eq!(
            cells, 3,
            "one minute, quarter and hour: the present record's"
        );
        let q = |since, until| RangeQuery {
            since,
            until,
            bucket_ms: None,
            metrics: Vec::new(),
            quantiles: vec![0.5],
            max_groups: 10,
        };
        assert!(index.covers(&q(now - 3_600_000, now + 1)));
        assert!(
            !index.covers(&q(now, now + 3 * 3_600_000)),
            "reaches a future record"
        );
    }

    /// A record of metric `m` stamped `ts`, as a shard line.
    fn line(ts: EpochMs, v: f64) -> String {
        format!(
            "{{\"timestamp\":\"{}\",\"metric\":\"m\",\"value\":{v}}}\n",
            format_ms(ts)
        )
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    }

    /// The archiver's sync and trim, done in the test's own time (between two steps of a
    /// build), with the state file the index reads (contract section 7).
    struct Archiver {
        hot: std::path::PathBuf,
        archive: std::path::PathBuf,
        state: serde_json::Value,
    }

    impl Archiver {
        fn new(hot: &Path, archive: &Path) -> Self {
            Self {
                hot: hot.to_path_buf(),
                archive: archive.to_path_buf(),
                state: serde_json::json!({"shards": {}, "trims": {}}),
            }
        }

        fn shard(&self, n: u32) -> (std::path::PathBuf, String) {
            let name = format!("cfn-metrics-{n}.jsonl");
            (self.hot.join(&name), name)
        }

        fn cursor(&self, name: &str, path: &Path) -> ShardCursor {
            match self.state["shards"].get(name) {
                Some(c) => serde_json::from_value(c.clone()).unwrap(),
                None => ShardCursor::at_start(FileId::of(&std::fs::metadata(path).unwrap())),
            }
        }

        fn save(&self) {
            let path = self.archive.join(cfn_core::cursor::ARCHIVE_STATE_FILE);
            std::fs::write(path, self.state.to_string()).unwrap();
        }

        /// Appends what the shard holds past the archived offset to the day files.
        fn sync(&mut self, n: u32) {
            let (path, name) = self.shard(n);
            let mut cursor = self.cursor(&name, &path);
            let bytes = std::fs::read(&path).unwrap();
            for l in bytes[cursor.offset as usize..].split_inclusive(|&b| b == b'\n') {
                let ts = cfn_core::reader::parse_record(&l[..l.len() - 1])
                    .unwrap()
                    .ts_ms;
                let day = cfn_core::time::utc_day(ts);
                append(
                    &cfn_core::paths::archive_path(&self.archive, &day, n),
                    std::str::from_utf8(l).unwrap(),
                );
            }
            cursor.offset = bytes.len() as u64;
            self.state["shards"][&name] = serde_json::to_value(cursor).unwrap();
            self.save();
        }

        /// Rewrites the shard without its archived records stamped before `cutoff` and
        /// renames the new file into place, the trim recorded first.
        fn trim(&mut self, n: u32, cutoff: EpochMs) {
            let (path, name) = self.shard(n);
            let mut cursor = self.cursor(&name, &path);
            let bytes = std::fs::read(&path).unwrap();
            let mut cut = 0;
            for l in bytes[..cursor.offset as usize].split_inclusive(|&b| b == b'\n') {
                let rec = cfn_core::reader::parse_record(&l[..l.len() - 1]).unwrap();
                if rec.ts_ms >= cutoff {
                    break;
                }
                cut += l.len();
            }
            let tmp = self.hot.join(format!(".trim-{n}"));
            std::fs::write(&tmp, &bytes[cut..]).unwrap();
            let (from, to) = (cursor.id(), FileId::of(&std::fs::metadata(&tmp).unwrap()));
            let trim = cfn_core::cursor::Trim {
                from_dev: from.dev,
                from_ino: from.ino,
                to_dev: to.dev,
                to_ino: to.ino,
                cut: cut as u64,
                cutoff: Some(cutoff),
            };
            let trims = &mut self.state["trims"][&name];
            if trims.is_null() {
                *trims = serde_json::json!([]);
            }
            trims
                .as_array_mut()
                .unwrap()
                .push(serde_json::to_value(trim).unwrap());
            self.save();
            std::fs::rename(&tmp, &path).unwrap();
            cursor.move_to(to, cursor.offset - cut as u64);
            self.state["shards"][&name] = serde_json::to_value(cursor).unwrap();
            self.save();
        }
    }

    /// An index of `hot` and `archive` built with `hook` called after each shard's read
    /// (before its archive), catching up every `catch_up_every`, then refreshed once.
    fn index_built_with(
        hot: &Path,
        archive: &Path,
        now: EpochMs,
        catch_up_every: std::time::Duration,
        hook: impl FnMut(u32) + Send + 'static,
    ) -> Index {
        let src = Sources {
            metrics_dir: hot.to_path_buf(),
            shard_count: 16,
            archive_dir: Some(archive.to_path_buf()),
            alert_state: None,
            alerts_log: None,
        };
        let dims = Dims::new(vec![], 1 << 20);
        let histograms = Histograms::new(crate::histogram::HistogramConfig::default());
        let mut index = Index::empty(src, 86_400_000, now, 10, histograms, dims);
        index.after_hot_read = Some(Box::new(hook));
        index.catch_up_every = catch_up_every;
        index.build_all().unwrap();
        index.refresh(now, Look::Quick).unwrap();
        index
    }

    fn hot_and_archive() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (hot, archive) = (dir.path().join("hot"), dir.path().join("archive"));
        std::fs::create_dir(&hot).unwrap();
        std::fs::create_dir(&archive).unwrap();
        (dir, hot, archive)
    }

    const NOW: EpochMs = 1_795_773_600_000; // 10:00 UTC: every record here is of that day
    const MIN: i64 = 60_000;

    #[test]
    fn a_replay_appended_and_synced_after_its_shard_was_read_is_counted_once() {
        // The build reads a shard, then the archive older than the shard's hot records.
        // A replay (stamped before the trim threshold) appended after the shard was read
        // and synced before its day file is read would be in both: the day files are
        // opened, and their lengths taken, before the shard is read.
        let (_dir, hot, archive) = hot_and_archive();
        let shard = hot.join("cfn-metrics-4.jsonl");
        std::fs::write(
            &shard,
            line(NOW - 30 * MIN, 1.0) + &line(NOW - 29 * MIN, 2.0) + &line(NOW - MIN / 6, 4.0),
        )
        .unwrap();
        let mut arch = Archiver::new(&hot, &archive);
        arch.sync(4);
        arch.trim(4, NOW - MIN);
        assert_eq!(std::fs::read_to_string(&shard).unwrap().lines().count(), 1);
        let index = index_built_with(&hot, &archive, NOW, CATCH_UP_EVERY, move |n| {
            assert_eq!(n, 4);
            append(&arch.shard(4).0, &line(NOW - 180 * MIN, 3.0));
            arch.sync(4);
        });
        assert_eq!(index.indexed_records(), 4);
    }

    #[test]
    fn a_shard_trimmed_after_the_build_began_is_split_by_the_state_of_its_file() {
        // Shard 2 is trimmed while shard 1 is built, and then gets a replay older than
        // anything it holds: the split must be the one the state gives its new file, not
        // the one read when the build began (nor the oldest hot record, which the replay
        // makes hours too old: the records trimmed would then be missed).
        let (_dir, hot, archive) = hot_and_archive();
        std::fs::write(hot.join("cfn-metrics-1.jsonl"), line(NOW - MIN / 12, 10.0)).unwrap();
        std::fs::write(
            hot.join("cfn-metrics-2.jsonl"),
            line(NOW - 180 * MIN, 1.0) + &line(NOW - 50 * MIN, 2.0) + &line(NOW - 5 * MIN, 3.0),
        )
        .unwrap();
        let mut arch = Archiver::new(&hot, &archive);
        arch.sync(2);
        arch.trim(2, NOW - 120 * MIN);
        let index = index_built_with(&hot, &archive, NOW, CATCH_UP_EVERY, move |n| {
            if n == 1 {
                arch.trim(2, NOW - 30 * MIN);
                append(&arch.shard(2).0, &line(NOW - 170 * MIN, 4.0));
            }
        });
        assert_eq!(index.indexed_records(), 5);
    }

    #[test]
    fn a_shard_trimmed_twice_during_the_build_is_followed_file_by_file() {
        // Shard 1 is trimmed while its archive is read and again while shard 2 is built,
        // with records appended before each trim. Caught up between the two, the index
        // follows each trim from the file it holds; without that, it would have to read the
        // records in between back from the archive's day files.
        let run = |catch_up_every| {
            let (_dir, hot, archive) = hot_and_archive();
            std::fs::write(
                hot.join("cfn-metrics-1.jsonl"),
                line(NOW - 180 * MIN, 1.0)
                    + &line(NOW - 50 * MIN, 2.0)
                    + &line(NOW - 40 * MIN, 3.0),
            )
            .unwrap();
            std::fs::write(hot.join("cfn-metrics-2.jsonl"), line(NOW - MIN, 10.0)).unwrap();
            std::fs::write(hot.join("cfn-metrics-3.jsonl"), line(NOW - MIN, 20.0)).unwrap();
            let mut arch = Archiver::new(&hot, &archive);
            arch.sync(1);
            arch.trim(1, NOW - 120 * MIN);
            let shard = arch.shard(1).0;
            let index = index_built_with(&hot, &archive, NOW, catch_up_every, move |n| {
                let (ts, cutoff) = match n {
                    1 => (NOW - MIN / 3, NOW - 45 * MIN),
                    2 => (NOW - MIN / 6, NOW - MIN / 12),
                    _ => return,
                };
                append(&shard, &line(ts, 4.0));
                arch.sync(1);
                arch.trim(1, cutoff);
                if n == 2 {
                    append(&shard, &line(NOW - MIN / 60, 5.0));
                }
            });
            // The three records appended after shard 1 was built are appends to the
            // histograms, whether a catch-up or the first refresh read them.
            let appended: u64 = index
                .histograms
                .snapshot()
                .iter()
                .map(|h| h.counts.iter().sum::<u64>())
                .sum();
            (index.indexed_records(), index.gaps_from_archive, appended)
        };
        assert_eq!(run(std::time::Duration::ZERO), (8, 0, 3));
        // Without catching up, the count is still right here (all in one day file), but
        // only by reading the archive back.
        assert_eq!(run(std::time::Duration::from_secs(3600)), (8, 1, 3));
    }

    #[test]
    fn ceil_and_floor_on_negative_and_positive_times() {
        assert_eq!(ceil_to(61_000, MINUTE_MS), 120_000);
        assert_eq!(ceil_to(60_000, MINUTE_MS), 60_000);
        assert_eq!(floor_to(-1, MINUTE_MS), -60_000);
    }
}
