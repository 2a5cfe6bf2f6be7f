//! Versioned JSON state files (cfn-alert's `--state`, cfn-archive's progress): read whole
//! with the shared-directory checks, refused (never reset) when corrupt or of an unknown
//! version, written atomically.

use crate::exit::{Exit, fail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// The largest state file read (a state is a few KB; anything near this is not ours).
/// The largest state file read (a bigger one is refused as corrupt).
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// A state file's shape: its `version` field and the version this build writes.
pub trait Versioned: Serialize + DeserializeOwned {
    /// The version this build reads and writes.
    const VERSION: u32;
    /// What the file says.
    fn version(&self) -> u32;
}

/// Reads the state at `path`; `None` when there is no file.
///
/// `what` names it in messages ("archive state"), `if_corrupt` says what to do then.
///
/// # Errors
/// Exit 78 for a corrupt or truncated file or an unknown version (the file is left
/// untouched); open errors as [`crate::fsutil::open_safe`].
pub fn load<T: Versioned>(path: &Path, what: &str, if_corrupt: &str) -> anyhow::Result<Option<T>> {
    let file = match crate::fsutil::open_safe(path, crate::fsutil::Access::Read) {
        Ok(f) => f,
        Err(e) if crate::exit::exit_for(&e) == Exit::NoInput => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, MAX_STATE_BYTES), &mut bytes)
        .map_err(|e| {
            fail(
                Exit::IoErr,
                format!("cannot read {what} {}: {e}", path.display()),
            )
        })?;
    let state: T = serde_json::from_slice(&bytes).map_err(|e| {
        fail(
            Exit::Config,
            format!(
                "{what} {} is corrupt ({e}); nothing was changed. {if_corrupt}",
                path.display()
            ),
        )
    })?;
    if state.version() != T::VERSION {
        return Err(fail(
            Exit::Config,
            format!(
                "{what} {} has version {}, this build reads version {}; nothing was changed",
                path.display(),
                state.version(),
                T::VERSION
            ),
        ));
    }
    Ok(Some(state))
}

/// Writes the state atomically (temp file, fsync, rename, directory fsync), mode 0600.
///
/// # Errors
/// Exit 73/74 on write errors.
pub fn save<T: Serialize>(path: &Path, state: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(state)?;
    bytes.push(b'\n');
    crate::fsutil::write_atomic(path, 0o600, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct S {
        version: u32,
        n: u64,
    }

    impl Versioned for S {
        const VERSION: u32 = 1;
        fn version(&self) -> u32 {
            self.version
        }
    }

    #[test]
    fn round_trips_and_refuses_corrupt_or_unknown_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        assert_eq!(load::<S>(&p, "test state", "").unwrap(), None);
        save(&p, &S { version: 1, n: 7 }).unwrap();
        assert_eq!(load::<S>(&p, "test state", "").unwrap().unwrap().n, 7);
        std::fs::write(&p, "{\"version\":1,").unwrap();
        let err = load::<S>(&p, "test state", "Start over with --fresh.").unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), Exit::Config);
        assert!(err.to_string().contains("Start over with --fresh."));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"version\":1,");
        std::fs::write(&p, "{\"version\":9,\"n\":1}").unwrap();
        let err = load::<S>(&p, "test state", "").unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }
}
