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
