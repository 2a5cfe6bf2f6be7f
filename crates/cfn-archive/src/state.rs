//! The archiver's progress: how far each hot shard has been copied, how long each archive
//! file is known to be, and rotations in flight. Written atomically after the data it
//! describes is fsynced, so after a crash the archive can be cut back to what the state
//! says and the copy resumed: every record lands exactly once.

use cfn_core::exit::{Exit, fail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the state file inside the archive directory.
pub const STATE_FILE: &str = ".cfn-archive-state.json";
/// Name of the lock file inside the archive directory.
pub const LOCK_FILE: &str = ".cfn-archive.lock";

/// How far one hot shard has been copied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardProgress {
    pub dev: u64,
    pub ino: u64,
    /// Bytes copied (always the end of a complete line).
    pub offset: u64,
    /// The last record copied: its timestamp and a hash of its bytes, to find the resume
    /// point in a shard that was rewritten (trimmed) or replaced.
    pub last_ts: Option<i64>,
    pub last_hash: Option<u64>,
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
}

/// Path of the state file.
pub fn state_path(archive_dir: &Path) -> PathBuf {
    archive_dir.join(STATE_FILE)
}

/// Reads the state; `None` when there is no state file.
///
/// # Errors
/// Exit 78 for a truncated or corrupt file, saying how to rebuild it.
pub fn load(archive_dir: &Path) -> anyhow::Result<Option<ArchiveState>> {
    let path = state_path(archive_dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let s: ArchiveState = serde_json::from_slice(&bytes).map_err(|e| {
                fail(
                    Exit::Config,
                    format!(
                        "archive state {} is corrupt ({e}); nothing was changed. Rebuild it from the archive and the hot shards with: cfn-archive sync --rebuild-state",
                        path.display()
                    ),
                )
            })?;
            if s.version != 1 {
                return Err(fail(
                    Exit::Config,
                    format!(
                        "archive state {} has unknown version {}",
                        path.display(),
                        s.version
                    ),
                ));
            }
            Ok(Some(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(
            Exit::IoErr,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Writes the state atomically (temp, fsync, rename, directory fsync).
///
/// # Errors
/// Exit 73/74 on write errors.
pub fn save(archive_dir: &Path, state: &ArchiveState) -> anyhow::Result<()> {
    crate::hooks::crash_point("before_state_save");
    let mut bytes = serde_json::to_vec_pretty(state)?;
    bytes.push(b'\n');
    cfn_core::fsutil::write_atomic(&state_path(archive_dir), 0o600, &bytes)
}
