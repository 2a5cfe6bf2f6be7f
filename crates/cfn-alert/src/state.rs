//! Alert state across runs (`--state FILE`): which alerts are pending or firing, since when,
//! and which channels were told. Read and written under a lock on `FILE.lock`; written
//! atomically.

use cfn_core::exit::{Exit, fail};
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
}

/// The state file and its lock, held for the run.
pub struct StateFile {
    path: PathBuf,
    _lock: std::fs::File,
}

impl StateFile {
    /// Locks `path.lock` and reads `path` (an absent file is an empty state).
    ///
    /// # Errors
    /// Exit 75 when the lock is busy past the timeout; exit 78 for a corrupt state file,
    /// naming it and how to start over. It is never reset silently.
    pub fn open(path: &Path, timeout: std::time::Duration) -> anyhow::Result<(Self, State)> {
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = cfn_core::fsutil::open_safe(
            &lock_path,
            cfn_core::fsutil::Access::Append {
                create: true,
                mode: 0o600,
            },
        )?;
        if !cfn_core::fsutil::lock_with_timeout(&lock, timeout)? {
            return Err(cfn_core::fsutil::lock_timeout(&lock_path, timeout));
        }
        let state = match std::fs::read(path) {
            Ok(bytes) => parse_state(&bytes).map_err(|e| {
                fail(
                    Exit::Config,
                    format!(
                        "state file {} is corrupt ({e}); it was left untouched: fix it, or move it away to start with no alert state",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State { version: 1, ..Default::default() },
            Err(e) => return Err(fail(Exit::IoErr, format!("cannot read state file {}: {e}", path.display()))),
        };
        Ok((
            Self {
                path: path.to_path_buf(),
                _lock: lock,
            },
            state,
        ))
    }

    /// Writes the state atomically (temp file, fsync, rename).
    ///
    /// # Errors
    /// Exit 73/74 on write errors.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(state)?;
        bytes.push(b'\n');
        cfn_core::fsutil::write_atomic(&self.path, 0o600, &bytes)
    }
}

fn parse_state(bytes: &[u8]) -> Result<State, String> {
    let s: State = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if s.version != 1 {
        return Err(format!("unknown version {}", s.version));
    }
    Ok(s)
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
