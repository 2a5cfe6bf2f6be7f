//! The index in a snapshot and back: what it knows of each shard (the cursor, the health),
//! of each agent, and its rollups, dims and histograms. A restored index catches up as a
//! running one does after a pause (appends read from the cursor, trims followed through the
//! archive state), and is given up for a build where that cannot be exact.

use super::{AgentSeen, Index, ShardState};
use crate::data::Sources;
use crate::dims::Dims;
use crate::histogram::{HistogramConfig, Histograms};
use crate::rollups::Rollups;
use crate::snapshot;
use crate::snapshot::{FrameReader, FrameWriter};
use cfn_core::cursor::{FileId, SplitFor};
use cfn_core::time::EpochMs;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Instant;

/// An agent as a snapshot keeps it: name, shard bits, first, last, count, done, gaps.
type AgentForm = (
    String,
    u64,
    EpochMs,
    EpochMs,
    u64,
    Option<EpochMs>,
    [u8; cfn_core::presence::GAP_BUCKETS],
);

impl Index {
    /// Writes the index into a snapshot.
    ///
    /// # Errors
    /// As [`FrameWriter::put`].
    pub fn save<W: Write>(&self, w: &mut FrameWriter<W>) -> anyhow::Result<()> {
        w.put(&(
            self.span_ms,
            self.agents_overflow,
            self.agents_untracked,
            self.gaps_from_archive,
        ))?;
        w.seq(
            self.shards.len(),
            self.shards.iter().map(|(name, st)| (name.as_bytes(), st)),
        )?;
        w.seq(
            self.agents.len(),
            self.agents.iter().map(|(name, a)| -> AgentForm {
                let s = &a.seen;
                (
                    name.clone(),
                    a.shards,
                    s.first,
                    s.last,
                    s.count,
                    s.done,
                    s.gaps.buckets(),
                )
            }),
        )?;
        self.rollups.save(w)?;
        self.dims.save(w)?;
        self.histograms.save(w)
    }

    /// The index [`Index::save`] wrote, over `src`, not yet caught up (see
    /// [`Index::catch_up_restored`]).
    ///
    /// # Errors
    /// A malformed snapshot.
    pub fn load<R: Read>(
        r: &mut FrameReader<R>,
        src: Sources,
        now: EpochMs,
        histograms: HistogramConfig,
    ) -> anyhow::Result<Self> {
        let (span_ms, agents_overflow, agents_untracked, gaps_from_archive): (i64, bool, u64, u64) =
            r.get()?;
        let mut shards = HashMap::new();
        r.seq(usize::MAX, |(name, st): (Vec<u8>, ShardState)| {
            shards.insert(OsString::from_vec(name), st);
            Ok(())
        })?;
        let mut agents = HashMap::new();
        r.seq(super::MAX_NAMES, |a: AgentForm| {
            let (name, bits, first, last, count, done, gaps) = a;
            let seen = cfn_core::presence::Seen {
                first,
                last,
                count,
                done,
                gaps: cfn_core::presence::Gaps::from_buckets(gaps),
            };
            agents.insert(name, AgentSeen { shards: bits, seen });
            Ok(())
        })?;
        let rollups = Rollups::load(r)?;
        let dims = Dims::load(r)?;
        let histograms = Histograms::load(r, histograms)?;
        let mut index = Self::empty(src, span_ms, now, 1, histograms, dims);
        index.rollups = rollups;
        index.shards = shards;
        index.agents = agents;
        index.agents_overflow = agents_overflow;
        index.agents_untracked = agents_untracked;
        index.gaps_from_archive = gaps_from_archive;
        index.building = false;
        Ok(index)
    }

    /// Brings a loaded snapshot up to the shards as they are now, as a running index
    /// follows them: `Ok(None)` when it is, `Ok(Some(why))` when the snapshot cannot give
    /// a build's answers (see [`Index::followed_exactly`], or the archive holds records of a
    /// file it never read): then the caller builds instead.
    ///
    /// # Errors
    /// I/O errors other than missing or refused files.
    pub fn catch_up_restored(&mut self, now: EpochMs) -> anyhow::Result<Option<String>> {
        let dir = self.src.metrics_dir.clone();
        // What the snapshot read of each shard, followed from where it stopped.
        for (name, st) in self.shards.iter().filter(|(_, st)| st.cursor.offset > 0) {
            if let Some(why) = self.followed_exactly(&dir, name, &st.cursor)? {
                return Ok(Some(format!("shard {} {why}", name.to_string_lossy())));
            }
        }
        // Shards it read nothing of are read from their start: exact unless the archiver
        // already took records of them, which the snapshot never saw.
        if let Some(archive) = &self.src.archive_dir {
            for (_, name) in super::list_shard_names(&dir) {
                if self
                    .shards
                    .get(&name)
                    .is_some_and(|st| st.cursor.offset > 0)
                {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(dir.join(&name)) else {
                    continue;
                };
                let id = FileId::of(&meta);
                let split =
                    cfn_core::cursor::archived_split_for(archive, &name.to_string_lossy(), id);
                // A file a trim made holds nothing of what the trim took, archived or not:
                // records the snapshot never saw (the fleet soak found this one).
                let trimmed_into =
                    cfn_core::cursor::trim_that_made(archive, &name.to_string_lossy(), id)
                        .is_some();
                if matches!(split, SplitFor::Split(s) if s.offset > 0)
                    || split == SplitFor::OtherFile
                    || trimmed_into
                {
                    return Ok(Some(format!(
                        "shard {} was written and archived since",
                        name.to_string_lossy()
                    )));
                }
            }
        }
        // A shard that changed between those looks and this one may still need the
        // archive's day files to be followed: not exact either.
        let from_archive = self.gaps_from_archive;
        self.refresh(now, super::Look::Sweep)?;
        if self.gaps_from_archive > from_archive {
            return Ok(Some(
                "a shard was rewritten meanwhile past what the snapshot had read".into(),
            ));
        }
        Ok(None)
    }

    /// Why shard file `name`, read to `cursor` when the snapshot was written, cannot be
    /// followed exactly from there (`None`: it can). Exact: the same file, appended to; or
    /// files the archiver's recorded trims lead to, each cutting no further than the
    /// snapshot had read. A trim that cut past it took records the snapshot never saw, and
    /// the archive's day files hold them by day, not in file order (a replay stamped days
    /// back is in an old one): only a build counts them exactly. So is a file replaced
    /// otherwise, truncated, or gone.
    fn followed_exactly(
        &self,
        dir: &std::path::Path,
        name: &std::ffi::OsStr,
        cursor: &cfn_core::cursor::ShardCursor,
    ) -> anyhow::Result<Option<&'static str>> {
        let Ok(file) = cfn_core::fsutil::open_safe(&dir.join(name), cfn_core::fsutil::Access::Read)
        else {
            return Ok(Some("is gone or refused since"));
        };
        let meta = file.metadata()?;
        match cursor.change_in(&file, &meta)? {
            cfn_core::cursor::Change::Same => Ok(None),
            cfn_core::cursor::Change::Truncated => Ok(Some("was truncated since")),
            cfn_core::cursor::Change::Replaced => {
                let trims = match &self.src.archive_dir {
                    Some(archive) => {
                        cfn_core::cursor::recorded_trims(archive, &name.to_string_lossy())
                    }
                    None => Vec::new(),
                };
                let at = cfn_core::cursor::offset_after_trims(
                    &trims,
                    cursor.id(),
                    cursor.offset,
                    FileId::of(&meta),
                );
                Ok(match at {
                    Some(_) => None,
                    None => Some("was trimmed past what the snapshot had read, or replaced"),
                })
            }
        }
    }
}

/// What the snapshots did since start (`/metrics`), and where they go.
#[derive(Clone, Debug, Default)]
pub struct SnapshotStatus {
    /// `--snapshot-dir`: none, no snapshots.
    pub dir: Option<PathBuf>,
    /// The fingerprint of the settings a snapshot must have been written with.
    pub config: u64,
    /// Snapshots not used, by reason (corrupt, version, config, untrusted, stale).
    pub refused: BTreeMap<&'static str, u64>,
    /// The index came from a snapshot (else from a build).
    pub restored: bool,
    pub written: u64,
    pub write_errors: u64,
    pub last_written_ms: Option<EpochMs>,
    pub last_bytes: u64,
}

impl Index {
    /// The index at start-up: from the newest snapshot in `status.dir` that loads whole and
    /// can be caught up exactly, else built from the records. Each snapshot passed over is
    /// named once on stderr and counted in `status`.
    ///
    /// # Errors
    /// I/O errors reading the shards.
    pub fn start(
        src: Sources,
        span_ms: i64,
        now: EpochMs,
        max_metrics: usize,
        (histograms, dims): (Histograms, Dims),
        mut status: SnapshotStatus,
    ) -> anyhow::Result<Self> {
        for path in status
            .dir
            .as_deref()
            .map(snapshot::list)
            .unwrap_or_default()
        {
            let started = Instant::now();
            let cfg = histograms.config().clone();
            let loaded = snapshot::read(&path, status.config, |r| {
                Index::load(r, src.clone(), now, cfg)
            });
            let (header, mut index) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    *status.refused.entry(snapshot::reason(&e)).or_default() += 1;
                    cfn_core::cli::warn(
                        "cfn-serve",
                        format!("ignoring snapshot {}: {e:#}", path.display()),
                    );
                    continue;
                }
            };
            match index.catch_up_restored(now)? {
                None => {
                    eprintln!(
                        "cfn-serve: restored the index from {} (written {}) in {:.2} s",
                        path.display(),
                        cfn_core::time::format_ms(header.written_ms),
                        started.elapsed().as_secs_f64()
                    );
                    status.restored = true;
                    index.snapshots = status;
                    return Ok(index);
                }
                Some(why) => {
                    *status.refused.entry("stale").or_default() += 1;
                    cfn_core::cli::warn(
                        "cfn-serve",
                        format!(
                            "not using snapshot {}: {why}; building the index from the records",
                            path.display()
                        ),
                    );
                    break;
                }
            }
        }
        let mut index = Self::build(src, span_ms, now, max_metrics, histograms, dims)?;
        index.snapshots = status;
        Ok(index)
    }

    /// Writes a snapshot of the index now into `--snapshot-dir` (nothing without one), and
    /// counts it; a failure is counted and returned.
    ///
    /// # Errors
    /// What kept the snapshot from being written (the previous ones stay).
    pub fn write_snapshot(&mut self, now: EpochMs) -> anyhow::Result<()> {
        let Some(dir) = self.snapshots.dir.clone() else {
            return Ok(());
        };
        let header = snapshot::Header {
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: self.snapshots.config,
            written_ms: now,
        };
        match snapshot::write(&dir, &header, |w| self.save(w)) {
            Ok((_, bytes)) => {
                self.snapshots.written += 1;
                self.snapshots.last_written_ms = Some(now);
                self.snapshots.last_bytes = bytes;
                Ok(())
            }
            Err(e) => {
                self.snapshots.write_errors += 1;
                Err(e)
            }
        }
    }
}
