//! The operations, one module each. Each runs under the archive directory's lock, after
//! [`recover`] has brought the archive back to what the state records.

pub mod cold;
mod prune;
mod recover;
mod rotate;
mod sync;
mod trim;

pub use prune::prune;
pub use recover::{clean_stale_temp_files, recover};
pub use rotate::rotate;
pub use sync::sync;
pub use trim::trim;

use crate::hooks::{check_write, crash_point};
use crate::state::{ArchiveState, ShardProgress, TrimInFlight, save};
use cfn_core::cursor::{Change, FileId};
use cfn_core::exit::{Exit, fail};
use cfn_core::fsutil::{Access, lock_with_timeout, open_safe, skip_refused, sync_dir};
use cfn_core::paths::{archive_path, list_shards, parse_archive_name};
use cfn_core::reader::{Item, Position, RecordReader};
use cfn_core::time::{EpochMs, parse_utc_day, utc_day};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
const FLUSH_BYTES: usize = 1 << 20;

/// Where things are and how to behave.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub metrics_dir: PathBuf,
    pub archive_dir: PathBuf,
    pub dry_run: bool,
    pub lock_timeout: Duration,
    /// Show progress on stderr (only on a terminal).
    pub progress: bool,
    pub now: EpochMs,
}

/// What a run did, printed as one line or as JSON.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub dry_run: bool,
    pub synced_records: u64,
    pub synced_malformed: u64,
    pub synced_bytes: u64,
    pub trimmed_records: u64,
    pub trimmed_bytes: u64,
    pub rotated_files: u64,
    pub bytes_saved: i64,
    pub pruned_files: u64,
    pub pruned: Vec<String>,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
}

impl Summary {
    /// The one-line summary.
    pub fn line(&self, parts: &[&str]) -> String {
        let mut out = Vec::new();
        let would = if self.dry_run { "would have " } else { "" };
        for p in parts {
            out.push(match *p {
                "sync" => format!(
                    "{would}synced {} records ({} malformed, {} bytes)",
                    self.synced_records, self.synced_malformed, self.synced_bytes
                ),
                "trim" => format!(
                    "{would}trimmed {} records ({} bytes) from the hot shards",
                    self.trimmed_records, self.trimmed_bytes
                ),
                "rotate" => format!(
                    "{would}rotated {} files (saved {} bytes)",
                    self.rotated_files, self.bytes_saved
                ),
                "prune" => format!("{would}pruned {} files", self.pruned_files),
                "upload" if self.uploaded_files > 0 => format!(
                    "uploaded {} files ({} bytes)",
                    self.uploaded_files, self.uploaded_bytes
                ),
                _ => continue,
            });
        }
        format!("cfn-archive: {}", out.join("; "))
    }
}

/// A writer that fails like a full disk when the test hook says so.
pub(crate) struct WriteChecked<'a> {
    file: &'a mut File,
}

impl<'a> WriteChecked<'a> {
    pub(crate) fn new(file: &'a mut File) -> Self {
        Self { file }
    }
}

impl Write for WriteChecked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        check_write(buf.len())?;
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The file name of `path` as text ("" when it has none).
fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

fn io_fail(what: &str, path: &Path, e: &std::io::Error) -> anyhow::Error {
    let exit = cfn_core::exit::exit_for_io(e);
    let hint = if e.raw_os_error() == Some(28) {
        " (disk full)"
    } else {
        ""
    };
    fail(exit, format!("{what} {}: {e}{hint}", path.display()))
}

/// An archive file, as its name describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ArchiveFile {
    name: String,
    /// `YYYYMMDD`.
    day: String,
    shard: u32,
    gz: bool,
}

/// Plain and gzipped archive files in the directory, sorted by name.
fn archive_files(dir: &Path) -> anyhow::Result<Vec<ArchiveFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_fail("cannot read", dir, &e)),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((day, shard, gz)) = parse_archive_name(&name) {
            out.push(ArchiveFile {
                name,
                day,
                shard,
                gz,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Number of archive files (plain or gzipped) in the directory.
///
/// # Errors
/// I/O errors reading the directory.
pub fn archive_file_count(dir: &Path) -> anyhow::Result<usize> {
    Ok(archive_files(dir)?.len())
}
