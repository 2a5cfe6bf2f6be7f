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
    /// Verified copies in cold storage of archive files still here, by file name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cold: BTreeMap<String, ColdCopy>,
    /// Multipart uploads in progress, by file name, so a killed upload resumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uploading: BTreeMap<String, UploadInFlight>,
}

/// A verified copy of an archive file in cold storage: what was uploaded (the file, or its
/// gzip) and the object that holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdCopy {
    pub url: String,
    pub size: u64,
    pub md5: String,
    pub etag: String,
}

/// A multipart upload in progress: the object, the upload, what is being uploaded, and the
/// parts the store has acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInFlight {
    pub url: String,
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
