//! Alert state across runs (`--state FILE`): which alerts are pending or firing, since when,
//! and which channels were told. Read and written under a lock on `FILE.lock`; written
//! atomically.

#[cfg(test)]
use cfn_core::exit::Exit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Pending or firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Firing,
}

/// One alert instance: a rule applied to one metric and group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub alert: String,
    pub metric: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub state: Phase,
    /// When the condition started to hold (epoch ms).
    pub since: i64,
    /// When the last firing notification went out (epoch ms).
    #[serde(default)]
    pub last_notified: Option<i64>,
    /// Remote channels told of the current firing, with when.
    #[serde(default)]
    pub notified: BTreeMap<String, i64>,
    pub severity: String,
    pub stat: String,
    pub op: String,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

/// The whole state file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub alerts: BTreeMap<String, Entry>,
    /// Alerts resolved lately, sent to Alertmanager as resolved until settled (see
    /// `alertmanager::settle_resolved`); only with --alertmanager.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolved: BTreeMap<String, Resolved>,
    /// Who reported, run after run (silence rules; contract section 10).
    #[serde(
        default,
        skip_serializing_if = "crate::silence::PresenceState::is_empty"
    )]
    pub presence: crate::silence::PresenceState,
}

/// An alert that resolved: what it was, when it ended, and whether its resolution has yet to
/// reach every Alertmanager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    pub entry: Entry,
    pub ended: i64,
    pub undelivered: bool,
}

impl cfn_core::state_file::Versioned for State {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

/// The state file and its lock, held for the run.
pub struct StateFile {
    path: PathBuf,
    _lock: Option<cfn_core::fsutil::LockFile>,
}

const IF_CORRUPT: &str = "Fix it, or move it away to start with no alert state.";

impl StateFile {
    /// Locks `path.lock` and reads `path` (an absent file is an empty state).
    ///
    /// # Errors
    /// Exit 75 when the lock is busy past the timeout; exit 78 for a corrupt state file,
    /// naming it and how to start over. It is never reset silently.
    pub fn open(path: &Path, timeout: std::time::Duration) -> anyhow::Result<(Self, State)> {
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = cfn_core::fsutil::LockFile::acquire(&lock_path, timeout)?;
        let state = Self::read(path)?;
        Ok((
            Self {
                path: path.to_path_buf(),
                _lock: Some(lock),
            },
            state,
        ))
    }

    /// Reads the state without locking or creating anything (`--dry-run` changes nothing,
    /// not even by leaving a lock file behind).
    ///
    /// # Errors
    /// As [`StateFile::open`], without the lock.
    pub fn read(path: &Path) -> anyhow::Result<State> {
        Ok(
            cfn_core::state_file::load::<State>(path, "state file", IF_CORRUPT)?.unwrap_or(State {
                version: 1,
                ..Default::default()
            }),
        )
    }

    /// Writes the state atomically (temp file, fsync, rename).
    ///
    /// # Errors
    /// Exit 73/74 on write errors.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        cfn_core::state_file::save(&self.path, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, "{\"version\":1,\"alerts\":{").unwrap();
        let err = StateFile::open(&p, std::time::Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(cfn_core::exit::exit_for(&err), Exit::Config);
        assert!(err.to_string().contains("corrupt"));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"version\":1,\"alerts\":{"
        );
    }
}
