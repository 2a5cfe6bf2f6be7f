//! `--follow`: poll the shards for appended records.
//!
//! Each file is tracked by its open descriptor and a cfn-core shard cursor (identity, offset
//! consumed, last record read). Appends are read from the offset (a trailing line without `\n`
//! is left for the next poll). When the archiver renames a shard away, the old descriptor is
//! drained first, then the new file at the path is read; when it rewrites a shard (`trim`),
//! the new file starts with records already read, so reading resumes after the last record
//! read from the old one. When the reader was slower than the archiver (two trims between
//! two polls), the new file may start past that record: what was trimmed in between is
//! already in the archive, so it is read from there, from the last record read up to the
//! new file's first. Records are therefore written exactly once.

use cfn_core::cursor::{Change, FileId, ShardCursor};
use cfn_core::exit::{Exit, fail};
use cfn_core::filter::RecordFilter;
use cfn_core::input::{Input, expand_inputs};
use cfn_core::paths::Config;
use cfn_core::reader::{MalformedLog, Position, RecordReader};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A shard being followed: the file held open (it is drained even after it was renamed
/// away) and the cursor in it.
struct Tracked {
    file: File,
    cursor: ShardCursor,
    /// Lines consumed, for malformed-line reports.
    line: u64,
}

impl Tracked {
    fn new(file: File) -> anyhow::Result<Self> {
        let cursor = ShardCursor::at_start(FileId::of(&file.metadata()?));
        Ok(Self {
            file,
            cursor,
            line: 0,
        })
    }

    fn position(&self) -> Position {
        Position {
            offset: self.cursor.offset,
            line: self.line,
        }
    }
}

fn open(input: &Input) -> anyhow::Result<File> {
    match input {
        Input::Stdin => Err(fail(Exit::Usage, "--follow cannot read stdin")),
        file => file.open_file(),
    }
}

/// Reads the records appended to `t` since its position.
fn drain(
    t: &mut Tracked,
    name: &str,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    t.file.seek(SeekFrom::Start(t.cursor.offset))?;
    let mut reader = RecordReader::new(BufReader::with_capacity(256 * 1024, &t.file), name)
        .with_position(t.position());
    reader.leave_partial_tail = true;
    let cursor = &mut t.cursor;
    while let Some(written) = reader.next_with(log, |rec| {
        cursor.note_record(rec.ts_ms, rec.raw);
        if filter.matches(&rec) {
            out.write_all(rec.raw)?;
            out.write_all(b"\n")?;
        }
        Ok::<_, std::io::Error>(())
    })? {
        written?;
    }
    let pos = reader.position();
    t.cursor.offset = pos.offset;
    t.line = pos.line;
    Ok(())
}

/// Follows `paths` (or every hot shard) until killed or until stdout is closed.
///
/// # Errors
/// I/O errors; a broken pipe ends the run normally.
pub fn follow(
    paths: &[PathBuf],
    config: &Config,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
    interval: Duration,
    strict: bool,
) -> anyhow::Result<()> {
    let mut tracked: BTreeMap<PathBuf, Tracked> = BTreeMap::new();
    // Rotated archives do not grow: each is read once.
    let mut gz_done: BTreeSet<PathBuf> = BTreeSet::new();
    let mut refused: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let inputs = match expand_inputs(paths, config) {
            Ok(i) => i,
            // The shard directory may be recreated; a named file may appear later.
            Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput && !tracked.is_empty() => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        for input in &inputs {
            let Some(path) = input.path() else {
                return Err(fail(Exit::Usage, "--follow cannot read stdin"));
            };
            if cfn_core::input::is_gzip_name(path) {
                if gz_done.insert(path.to_path_buf()) {
                    let mut reader = RecordReader::new(input.open()?, input.name());
                    crate::copy_records(&mut reader, filter, log, out, None)?;
                }
                continue;
            }
            if !tracked.contains_key(path) {
                let file = match open(input) {
                    Ok(f) => f,
                    Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput => continue,
                    // A stray file in the shared directory: said once, then left alone.
                    Err(e) if cfn_core::fsutil::is_refused(&e) && !strict => {
                        if refused.insert(path.to_path_buf()) {
                            cfn_core::cli::warn("cfn-cat", format!("skipping {e}"));
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                tracked.insert(path.to_path_buf(), Tracked::new(file)?);
            }
        }
        for (path, t) in tracked.iter_mut() {
            let name = path.display().to_string();
            // Whatever was appended to the file we hold, even if it has been renamed away.
            drain(t, &name, filter, log, out)?;
            check_replaced(
                path,
                &config.archive_dir,
                t,
                &name,
                filter,
                log,
                out,
                &mut refused,
            )?;
        }
        out.flush()?;
        std::thread::sleep(interval);
    }
}

/// Handles a shard renamed away and recreated, rewritten, or truncated in place.
#[allow(clippy::too_many_arguments)]
fn check_replaced(
    path: &Path,
    archive_dir: &Path,
    t: &mut Tracked,
    name: &str,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
    refused: &mut BTreeSet<PathBuf>,
) -> anyhow::Result<()> {
    let now = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // The file held is the one at the path when the identity matches, so its bytes can be
    // checked (a truncate-and-regrow looks like an append).
    let change = t.cursor.change_in(&t.file, &now)?;
    if change == Change::Same {
        return Ok(());
    }
    if change == Change::Replaced {
        let input = Input::File {
            path: path.to_path_buf(),
            shared: true,
        };
        let file = match open(&input) {
            Ok(f) => f,
            Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput => return Ok(()),
            // Replaced by something refused: keep the file we hold, say so once.
            Err(e) if cfn_core::fsutil::is_refused(&e) => {
                if refused.insert(path.to_path_buf()) {
                    cfn_core::cli::warn("cfn-cat", format!("skipping {e}"));
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        t.file = file;
    }
    let pos = t.cursor.resume_in(&t.file, name)?;
    if pos.offset == 0 && t.cursor.last_hash.is_some() {
        catch_up_from_archive(path, archive_dir, &t.file, &t.cursor, filter, out)?;
    }
    t.cursor
        .move_to(FileId::of(&t.file.metadata()?), pos.offset);
    t.line = pos.line;
    drain(t, name, filter, log, out)
}

/// Writes the records of `shard` that were trimmed from the hot file before this reader
/// saw them (from the archive); warns, naming the shard, when they cannot be found there.
fn catch_up_from_archive(
    shard: &Path,
    archive_dir: &Path,
    hot_now: &File,
    last: &ShardCursor,
    filter: &RecordFilter,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(n) = shard
        .file_name()
        .and_then(|s| s.to_str())
        .and_then(cfn_core::paths::shard_number)
    else {
        return Ok(());
    };
    let Some(lines) = cfn_core::cursor::trimmed_since(archive_dir, n, last, hot_now)? else {
        cfn_core::cli::warn(
            "cfn-cat",
            format!(
                "{} was rewritten past the last record read and {} does not hold that record; records trimmed in between may be missing (poll more often with --interval)",
                shard.display(),
                archive_dir.display()
            ),
        );
        return Ok(());
    };
    for line in lines {
        if let Ok(rec) = cfn_core::reader::parse_record(&line)
            && filter.matches(&rec)
        {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}
