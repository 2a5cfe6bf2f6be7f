//! What the server reads: records of a time range from the hot shards (seeking, never
//! scanning whole shards) and the archive, shard health kept up to date incrementally, and
//! the alerts `cfn-alert` wrote.

use cfn_core::aggregate::Aggregate;
use cfn_core::filter::RecordFilter;
use cfn_core::input::{seek_offset_for_time, wrap_reader};
use cfn_core::paths::parse_archive_name;
use cfn_core::reader::{MalformedLog, RecordReader};
use cfn_core::time::{EpochMs, parse_utc_day, utc_day};
use cfn_stats::group::{Aggregator, Options};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;

/// Where the data is.
#[derive(Clone, Debug)]
pub struct Sources {
    pub metrics_dir: PathBuf,
    /// `CFN_SHARDS`: shards numbered below it are looked at on every refresh, whatever
    /// they hold; other shard-named files only when they hold data or in the background
    /// sweep.
    pub shard_count: u32,
    pub archive_dir: Option<PathBuf>,
    pub alert_state: Option<PathBuf>,
    pub alerts_log: Option<PathBuf>,
}

/// The hot shards worth reading, (number, path): those the index knows to hold records,
/// so a directory full of stray empty files is not opened on every query.
#[derive(Clone, Debug, Default)]
pub struct HotShards(pub Vec<(u32, PathBuf)>);

/// Most names in a list read from the records (metrics, agents): a range holding a flood of
/// distinct names answers the first ones, marked as cut.
pub const MAX_LISTED: usize = 10_000;

/// Calls `f` with every record in `[since, until)` from the `hot` shards, and from the
/// archive for the part of the range older than what the shards hold. `shards`, when
/// given, limits the reading to those shard numbers (an agent's records are all in its
/// shard).
///
/// # Errors
/// I/O errors other than missing files.
pub fn for_each_record(
    src: &Sources,
    hot: &HotShards,
    filter: &RecordFilter,
    shards: Option<&BTreeSet<u32>>,
    mut f: impl FnMut(u32, &cfn_core::reader::RecordRef<'_>),
) -> anyhow::Result<()> {
    let since = filter.since.unwrap_or(i64::MIN);
    // Per shard number: where the archive takes over (the oldest record still hot, or
    // i64::MIN when the hot shard reaches back past `since`; or the archive state's
    // watermark, below which records come from the archive and from past its offset).
    let mut oldest_hot: BTreeMap<u32, EpochMs> = BTreeMap::new();
    let mut log = MalformedLog::quiet();
    for (n, path) in &hot.0 {
        let n = *n;
        if shards.is_some_and(|s| !s.contains(&n)) {
            continue;
        }
        let Ok(mut file) = cfn_core::fsutil::open_safe(path, cfn_core::fsutil::Access::Read) else {
            continue;
        };
        // The state read after the file was opened, so its split is of this very file.
        let id = cfn_core::cursor::FileId::of(&file.metadata()?);
        let name = path.file_name().map(|f| f.to_string_lossy().into_owned());
        let split = match (&src.archive_dir, name) {
            (Some(dir), Some(name)) => cfn_core::cursor::archived_split_for(dir, &name, id),
            _ => cfn_core::cursor::SplitFor::Untrimmed,
        };
        if let cfn_core::cursor::SplitFor::Split(split) = split {
            read_split(&mut file, path, n, split, filter, &mut log, &mut f)?;
            oldest_hot.insert(n, split.watermark);
            continue;
        }
        let off = seek_offset_for_time(&mut file, since)?;
        file.seek(SeekFrom::Start(off))?;
        let mut reader = RecordReader::new(
            BufReader::with_capacity(256 * 1024, file),
            path.display().to_string(),
        );
        reader.leave_partial_tail = true;
        let mut oldest = if off > 0 { i64::MIN } else { i64::MAX };
        // Shards are written in time order (what the seek relies on too): past the end of the
        // range, and past any writer that may still be behind, nothing more is in it.
        let stop_at = filter.until.map_or(i64::MAX, |u| {
            u.saturating_add(cfn_core::input::ORDER_SLACK_MS)
        });
        while let Some(more) = reader.next_with(&mut log, |rec| {
            oldest = oldest.min(rec.ts_ms);
            if filter.matches(&rec) {
                f(n, &rec);
            }
            rec.ts_ms < stop_at
        })? {
            if !more {
                break;
            }
        }
        oldest_hot.insert(n, oldest);
    }
    for_each_archived(src, filter, shards, &oldest_hot, f)
}

/// The hot part of a shard the archive state splits (see `ArchivedSplit`): records stamped
/// at or after the watermark from anywhere in the file, those before it only past the
/// archived offset. Read to the end: with replays (records stamped days back) the file is
/// not in time order, so no early stop; the seek is safe, since a replay is always older
/// than the records around it.
fn read_split(
    file: &mut std::fs::File,
    path: &std::path::Path,
    n: u32,
    split: cfn_core::cursor::ArchivedSplit,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    f: &mut impl FnMut(u32, &cfn_core::reader::RecordRef<'_>),
) -> anyhow::Result<()> {
    let start = seek_offset_for_time(file, filter.since.unwrap_or(i64::MIN))?;
    let len = file.metadata()?.len();
    for (from, to, archived) in [
        (start, split.offset.max(start), true),
        (split.offset.max(start), len, false),
    ] {
        if from >= to && archived {
            continue;
        }
        let mut part = &*file;
        part.seek(SeekFrom::Start(from))?;
        let mut reader = RecordReader::new(
            BufReader::with_capacity(256 * 1024, std::io::Read::take(part, to - from)),
            path.display().to_string(),
        );
        reader.leave_partial_tail = true;
        while let Some(()) = reader.next_with(log, |rec| {
            let in_archive = archived && rec.ts_ms < split.watermark;
            if !in_archive && filter.matches(&rec) {
                f(n, &rec);
            }
        })? {}
    }
    Ok(())
}

/// The archive's days a reader takes: by plain file name, the shard, the day's start, and
/// whether the plain file and the .gz were listed. Only days that end after `since` and
/// start before their shard's oldest hot record (`oldest_hot`, when given).
fn archive_days(
    archive: &std::path::Path,
    since: EpochMs,
    shards: Option<&BTreeSet<u32>>,
    oldest_hot: Option<&BTreeMap<u32, EpochMs>>,
) -> BTreeMap<String, (u32, EpochMs, bool, bool)> {
    let mut days: BTreeMap<String, (u32, EpochMs, bool, bool)> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(archive) else {
        return days;
    };
    let first_day = utc_day(since.max(0));
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((day, n, gz)) = parse_archive_name(&name) else {
            continue;
        };
        if shards.is_some_and(|s| !s.contains(&n)) {
            continue;
        }
        let hot_from = oldest_hot.map_or(i64::MAX, |o| o.get(&n).copied().unwrap_or(i64::MAX));
        let Some(day_start) = parse_utc_day(&day) else {
            continue;
        };
        if day >= first_day && day_start < hot_from && hot_from > since {
            let plain = name.strip_suffix(".gz").unwrap_or(&name).to_string();
            let entry = days.entry(plain).or_insert((n, day_start, false, false));
            if gz {
                entry.3 = true;
            } else {
                entry.2 = true;
            }
        }
    }
    days
}

/// One archive day of one shard, as [`ArchiveSnapshot`] holds it.
#[derive(Debug)]
struct HeldDay {
    shard: u32,
    day_start: EpochMs,
    plain_path: PathBuf,
    /// The plain file and its length when opened.
    plain: Option<(std::fs::File, u64)>,
    gz: Option<std::fs::File>,
}

/// An archive's day files opened at one moment and read later as they were then: each
/// plain file up to the length it had, each `.gz` as it was (a rotation renames a new one
/// into place). cfn-serve's build takes one per shard right after reading the archive
/// state and before reading the shard, so a record the archiver syncs after that (one
/// appended to the shard meanwhile) is read from the shard alone.
#[derive(Debug)]
pub struct ArchiveSnapshot {
    days: Vec<HeldDay>,
}

/// Records between two calls of a snapshot reader's tick.
pub const TICK_RECORDS: u64 = 65_536;

impl ArchiveSnapshot {
    /// Opens the day files of `archive` that [`archive_days`] takes, the plain file of each
    /// day before its `.gz` (see `open_day_pair`).
    ///
    /// # Errors
    /// I/O errors other than missing or refused files.
    pub fn take(
        archive: &std::path::Path,
        since: EpochMs,
        shards: Option<&BTreeSet<u32>>,
        oldest_hot: Option<&BTreeMap<u32, EpochMs>>,
    ) -> anyhow::Result<Self> {
        let mut days = Vec::new();
        for (plain_name, (n, day_start, has_plain, has_gz)) in
            archive_days(archive, since, shards, oldest_hot)
        {
            let pair = cfn_core::cursor::open_day_pair(archive, &plain_name, |path| {
                let listed = if path.extension().is_some_and(|e| e == "gz") {
                    has_gz || has_plain
                } else {
                    has_plain
                };
                Ok(listed
                    .then(|| cfn_core::fsutil::open_safe(path, cfn_core::fsutil::Access::Read).ok())
                    .flatten())
            })?;
            let plain = match pair.plain {
                Some(f) => {
                    let len = f.metadata()?.len();
                    Some((f, len))
                }
                None => None,
            };
            let gz = pair.gz.filter(|_| has_gz || plain.is_none());
            days.push(HeldDay {
                shard: n,
                day_start,
                plain_path: archive.join(&plain_name),
                plain,
                gz,
            });
        }
        Ok(Self { days })
    }

    /// Calls `f` with the records of `filter` older than their shard's oldest hot record
    /// (`oldest_hot`, a shard missing there has none), as `Some((shard, record))`, and with
    /// `None` after every [`TICK_RECORDS`] records (a long read's chance to do other work).
    ///
    /// # Errors
    /// I/O errors reading a file.
    pub fn read(
        self,
        filter: &RecordFilter,
        oldest_hot: &BTreeMap<u32, EpochMs>,
        mut f: impl FnMut(Option<(u32, &cfn_core::reader::RecordRef<'_>)>),
    ) -> anyhow::Result<()> {
        let mut log = MalformedLog::quiet();
        let mut read = 0u64;
        for day in self.days {
            let n = day.shard;
            let hot_from = oldest_hot.get(&n).copied().unwrap_or(i64::MAX);
            if day.day_start >= hot_from {
                continue;
            }
            // Only what is older than the shard's hot records comes from the archive, so
            // nothing counts twice.
            let older = RecordFilter {
                until: Some(filter.until.map_or(hot_from, |u| u.min(hot_from))),
                ..filter.clone()
            };
            let gz_name = format!("{}.gz", day.plain_path.display());
            let plain = day.plain.map(|(file, len)| {
                (
                    wrap_reader(std::io::Read::take(file, len), false),
                    day.plain_path.display().to_string(),
                )
            });
            let gz = day.gz.map(|file| (wrap_reader(file, true), gz_name));
            for (input, name) in [plain, gz].into_iter().flatten() {
                let mut reader = RecordReader::new(input, name);
                // A plain file's length may have ended inside a line a sync was writing:
                // that record is read from the shard.
                reader.leave_partial_tail = true;
                while reader
                    .next_with(&mut log, |rec| {
                        if older.matches(&rec) {
                            f(Some((n, &rec)));
                            read += 1;
                            if read.is_multiple_of(TICK_RECORDS) {
                                f(None);
                            }
                        }
                    })?
                    .is_some()
                {}
            }
        }
        Ok(())
    }
}

/// Calls `f` with the archived records of `filter`'s range that are older than the oldest
/// hot record of their shard (`oldest_hot`; a shard missing there has no hot records), so a
/// record is read from the archive or the hot shard, never both.
///
/// # Errors
/// I/O errors reading an archive file.
pub fn for_each_archived(
    src: &Sources,
    filter: &RecordFilter,
    shards: Option<&BTreeSet<u32>>,
    oldest_hot: &BTreeMap<u32, EpochMs>,
    mut f: impl FnMut(u32, &cfn_core::reader::RecordRef<'_>),
) -> anyhow::Result<()> {
    let since = filter.since.unwrap_or(i64::MIN);
    let Some(archive) = &src.archive_dir else {
        return Ok(());
    };
    ArchiveSnapshot::take(archive, since, shards, Some(oldest_hot))?.read(
        filter,
        oldest_hot,
        |rec| {
            if let Some((n, rec)) = rec {
                f(n, rec);
            }
        },
    )
}

/// Aggregates the records of `filter` (and of `tag`, `(name, value)`, when given) with
/// `opts`, reading only `shards` when given (the cfn-agg library, so the numbers are the
/// command line's). Also returns how many records were left out for groups past
/// `opts.max_groups`.
///
/// # Errors
/// I/O errors.
pub fn aggregate(
    src: &Sources,
    hot: &HotShards,
    filter: &RecordFilter,
    shards: Option<&BTreeSet<u32>>,
    tag: Option<&(String, String)>,
    opts: Options,
) -> anyhow::Result<(Vec<Aggregate>, u64)> {
    let mut agg = Aggregator::new(opts);
    for_each_record(src, hot, filter, shards, |_, rec| {
        if tag.is_none_or(|(k, v)| rec.tag(k).as_deref() == Some(v.as_str())) {
            agg.add(rec)
        }
    })?;
    let dropped = agg.dropped();
    Ok((agg.finish(), dropped))
}

/// Metric names and agents seen in a range (at most [`MAX_LISTED`] of each), and whether a
/// list was cut.
///
/// # Errors
/// I/O errors.
pub fn names(
    src: &Sources,
    hot: &HotShards,
    filter: &RecordFilter,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>, bool)> {
    let (mut metrics, mut agents) = (BTreeSet::new(), BTreeSet::new());
    let mut cut = false;
    for_each_record(src, hot, filter, None, |_, rec| {
        if !metrics.contains(rec.metric.as_ref()) {
            if metrics.len() < MAX_LISTED {
                metrics.insert(rec.metric.to_string());
            } else {
                cut = true;
            }
        }
        if let Some(a) = &rec.agent
            && !agents.contains(a.as_ref())
        {
            if agents.len() < MAX_LISTED {
                agents.insert(a.to_string());
            } else {
                cut = true;
            }
        }
    })?;
    Ok((metrics, agents, cut))
}

/// The alerts firing now (from `cfn-alert --state`, else from the alerts log) and the most
/// recent events from the log.
pub fn alerts(src: &Sources) -> Value {
    let now =
        cfn_core::alert_event::alerts_now(src.alert_state.as_deref(), src.alerts_log.as_deref());
    serde_json::to_value(now).unwrap_or(Value::Null)
}
