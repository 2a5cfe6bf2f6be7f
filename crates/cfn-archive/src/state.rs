//! The archiver's progress: how far each hot shard has been copied, how long each archive
//! file is known to be, and rotations in flight. Written atomically after the data it
//! describes is fsynced, so after a crash the archive can be cut back to what the state
//! says and the copy resumed: every record lands exactly once.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the state file inside the archive directory.
pub const STATE_FILE: &str = cfn_core::cursor::ARCHIVE_STATE_FILE;
/// Name of the lock file inside the archive directory.
pub const LOCK_FILE: &str = ".cfn-archive.lock";

/// How far one hot shard has been copied: cfn-core's shard cursor, persisted as is.
pub use cfn_core::cursor::ShardCursor as ShardProgress;

/// A trim between writing its new shard file and committing the progress: the new file's
/// identity and how many bytes of the old one it left out. A crash in between is recovered
/// exactly (offset minus cut) instead of by searching for the last record, which cannot
/// tell identical records apart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrimInFlight {
    pub dev: u64,
    pub ino: u64,
    pub cut: u64,
}

/// The whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    pub version: u32,
    /// By shard file name.
    pub shards: BTreeMap<String, ShardProgress>,
    /// Committed length of each plain archive file, by file name.
    pub archives: BTreeMap<String, u64>,
    /// Plain files being rotated, with the size of their `.gz` before the rotation.
    #[serde(default)]
    pub rotating: BTreeMap<String, u64>,
    /// Trims whose rename may have happened, by shard file name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trimming: BTreeMap<String, TrimInFlight>,
    /// The last trims of each shard (by shard file name, oldest first, at most
    /// `cfn_core::cursor::TRIMS_KEPT`), so a follower holding a trimmed file knows where it
    /// is in the new one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trims: BTreeMap<String, Vec<cfn_core::cursor::Trim>>,
    /// Verified copies in cold storage of archive files still here, by file name: the
    /// objects holding the file's bytes, in file order from its start (a `.gz` that grew a
    /// gzip member after an upload has its new bytes in an object of their own). A state of
    /// the previous version (one copy per file, no offset) reads as a list of one.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "copies_by_file"
    )]
    pub cold: BTreeMap<String, Vec<ColdCopy>>,
    /// Multipart uploads in progress, by file name, so a killed upload resumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uploading: BTreeMap<String, UploadInFlight>,
    /// What each shard had synced lately (by shard file name, oldest first, at most
    /// [`SYNC_MARKS_KEPT`]), so a trim leaves it in the shard for its grace period.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recent_syncs: BTreeMap<String, Vec<SyncMark>>,
}

/// How many recent syncs are remembered per shard; past it the two oldest merge into one
/// that holds both ranges until the later one's grace ends (never earlier).
pub const SYNC_MARKS_KEPT: usize = 32;

/// A sync of a hot shard: the bytes of the file `dev`/`ino` from `from` on were copied at
/// `at` (the real clock, epoch ms, not `--now`) or later. A trim takes none of them before
/// `at` plus its grace, so a follower that looks at the shard within the grace (cfn-serve
/// sweeps every second) reads a replayed record before the trim moves it to the archive,
/// where the follower cannot find it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMark {
    pub dev: u64,
    pub ino: u64,
    pub from: u64,
    pub at: i64,
}

impl SyncMark {
    fn id(&self) -> cfn_core::cursor::FileId {
        cfn_core::cursor::FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }
}

impl ArchiveState {
    /// Remembers that shard `name`, the file `id`, was synced from byte `from` on at `at`.
    pub fn note_synced(&mut self, name: &str, id: cfn_core::cursor::FileId, from: u64, at: i64) {
        let marks = self.recent_syncs.entry(name.to_owned()).or_default();
        marks.push(SyncMark {
            dev: id.dev,
            ino: id.ino,
            from,
            at,
        });
        while marks.len() > SYNC_MARKS_KEPT {
            // The merged mark starts where the older one did and ends with the later one.
            let older = marks.remove(0);
            marks[0].from = marks[0].from.min(older.from);
        }
    }

    /// How far a trim at `now` with `grace` may cut shard `name`, the file `id`, of which
    /// `archived` bytes are synced: up to the first byte synced within the grace.
    pub fn settled_offset(
        &self,
        name: &str,
        id: cfn_core::cursor::FileId,
        archived: u64,
        now: i64,
        grace_ms: i64,
    ) -> u64 {
        self.recent_syncs
            .get(name)
            .into_iter()
            .flatten()
            .filter(|m| m.id() == id && m.at > now.saturating_sub(grace_ms))
            .map(|m| m.from)
            .fold(archived, u64::min)
    }

    /// Forgets the syncs whose grace has passed and those of files no longer the shard's.
    pub fn forget_settled_syncs(&mut self, now: i64, grace_ms: i64) {
        let shards = &self.shards;
        self.recent_syncs.retain(|name, marks| {
            let current = shards.get(name).map(ShardProgress::id);
            marks.retain(|m| Some(m.id()) == current && m.at > now.saturating_sub(grace_ms));
            !marks.is_empty()
        });
    }

    /// Forgets the syncs of files no longer their shard's (a sync, which knows no grace).
    pub fn forget_syncs_of_other_files(&mut self) {
        // As of the earliest time, no grace has passed.
        self.forget_settled_syncs(i64::MIN, 0);
    }

    /// After a trim made `to` out of `from` by leaving out its first `cut` bytes, the
    /// marks of `from` hold for the same bytes of `to`.
    pub fn move_syncs(
        &mut self,
        name: &str,
        (from, to): (cfn_core::cursor::FileId, cfn_core::cursor::FileId),
        cut: u64,
    ) {
        for m in self.recent_syncs.get_mut(name).into_iter().flatten() {
            if m.id() == from {
                (m.dev, m.ino) = (to.dev, to.ino);
                m.from = m.from.saturating_sub(cut);
            }
        }
    }
}

/// A verified copy in cold storage of the bytes `offset..offset + size` of an archive file
/// (whole gzip members), and the object that holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdCopy {
    pub url: String,
    #[serde(default)]
    pub offset: u64,
    pub size: u64,
    pub md5: String,
    pub etag: String,
}

impl ColdCopy {
    /// The first byte of the file after this copy.
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// `cold` of this version (a list per file) or of the previous one (one copy per file).
fn copies_by_file<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<ColdCopy>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<ColdCopy>),
        One(ColdCopy),
    }
    let by_file = BTreeMap::<String, OneOrMany>::deserialize(d)?;
    Ok(by_file
        .into_iter()
        .map(|(name, copies)| match copies {
            OneOrMany::Many(v) => (name, v),
            OneOrMany::One(c) => (name, vec![c]),
        })
        .collect())
}

/// A multipart upload in progress: the object, the upload, what is being uploaded, and the
/// parts the store has acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInFlight {
    pub url: String,
    /// Where in the file the bytes being uploaded start.
    #[serde(default)]
    pub offset: u64,
    pub upload_id: String,
    pub size: u64,
    pub md5: String,
    pub part_size: u64,
    /// (part number, ETag, MD5 hex) of each part done.
    pub parts: Vec<(u32, String, String)>,
}

/// Path of the state file.
pub fn state_path(archive_dir: &Path) -> PathBuf {
    archive_dir.join(STATE_FILE)
}

impl cfn_core::state_file::Versioned for ArchiveState {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

/// Reads the state; `None` when there is no state file.
///
/// # Errors
/// Exit 78 for a truncated or corrupt file, saying how to rebuild it.
pub fn load(archive_dir: &Path) -> anyhow::Result<Option<ArchiveState>> {
    cfn_core::state_file::load(
        &state_path(archive_dir),
        "archive state",
        "Rebuild it from the archive and the hot shards with: cfn-archive sync --rebuild-state",
    )
}

/// Writes the state atomically (temp, fsync, rename, directory fsync).
///
/// # Errors
/// Exit 73/74 on write errors.
pub fn save(archive_dir: &Path, state: &ArchiveState) -> anyhow::Result<()> {
    crate::hooks::crash_point("before_state_save");
    cfn_core::state_file::save(&state_path(archive_dir), state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfn_core::cursor::FileId;

    const A: FileId = FileId { dev: 1, ino: 10 };
    const B: FileId = FileId { dev: 1, ino: 11 };

    #[test]
    fn a_trim_cuts_no_byte_synced_within_the_grace() {
        let mut s = ArchiveState::default();
        s.note_synced("cfn-metrics-0.jsonl", A, 0, 1_000);
        s.note_synced("cfn-metrics-0.jsonl", A, 500, 5_000);
        let at = |now| s.settled_offset("cfn-metrics-0.jsonl", A, 900, now, 2_000);
        assert_eq!(at(2_000), 0, "everything synced within the grace stays");
        assert_eq!(
            at(3_000),
            500,
            "the first sync's bytes settle after its grace"
        );
        assert_eq!(at(7_001), 900, "then all that is archived may go");
        // Another file of the shard, or another shard, is not held by these marks.
        assert_eq!(
            s.settled_offset("cfn-metrics-0.jsonl", B, 900, 2_000, 2_000),
            900
        );
        assert_eq!(
            s.settled_offset("cfn-metrics-1.jsonl", A, 900, 2_000, 2_000),
            900
        );
    }

    #[test]
    fn merging_marks_past_the_bound_never_settles_a_byte_earlier() {
        let mut s = ArchiveState::default();
        let syncs = SYNC_MARKS_KEPT as u64 + 10;
        for i in 0..syncs {
            s.note_synced("x", A, i * 100, 1_000 + i as i64);
        }
        let marks = &s.recent_syncs["x"];
        assert_eq!(marks.len(), SYNC_MARKS_KEPT);
        assert_eq!(marks[0].from, 0, "the oldest bytes are still held");
        // At any time, no byte is settled before its own sync's grace ended.
        for now in 1_000..1_100 {
            let settled = s.settled_offset("x", A, syncs * 100, now, 10);
            let exact = ((now - 10 - 1_000 + 1).max(0) as u64 * 100).min(syncs * 100);
            assert!(settled <= exact, "at {now}: {settled} > {exact}");
        }
    }

    #[test]
    fn a_trim_moves_the_marks_to_its_new_file_and_old_files_are_forgotten() {
        let mut s = ArchiveState::default();
        s.shards.insert("x".into(), ShardProgress::at_start(A));
        s.note_synced("x", A, 300, 5_000);
        s.move_syncs("x", (A, B), 200);
        assert_eq!(s.settled_offset("x", B, 900, 5_500, 1_000), 100);
        // The progress still names A: B's marks are of a file no longer the shard's.
        s.forget_settled_syncs(5_500, 1_000);
        assert!(s.recent_syncs.is_empty());
        s.shards.insert("x".into(), ShardProgress::at_start(B));
        s.note_synced("x", B, 0, 5_000);
        s.forget_settled_syncs(5_500, 1_000);
        assert_eq!(s.recent_syncs["x"].len(), 1);
        s.forget_settled_syncs(6_000, 1_000);
        assert!(s.recent_syncs.is_empty(), "a mark whose grace passed goes");
    }

    #[test]
    fn a_state_of_the_previous_version_reads_its_one_copy_as_a_list() {
        let old = r#"{"version":1,"shards":{},"archives":{},"cold":{"cfn-metrics-20261020-2.jsonl.gz":{"url":"s3://b/h/cfn-metrics-20261020-2.jsonl.gz","size":10,"md5":"m","etag":"e"}}}"#;
        let s: ArchiveState = serde_json::from_str(old).unwrap();
        let copies = &s.cold["cfn-metrics-20261020-2.jsonl.gz"];
        assert_eq!(copies.len(), 1);
        assert_eq!((copies[0].offset, copies[0].end()), (0, 10));
        let again: ArchiveState =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }
}
