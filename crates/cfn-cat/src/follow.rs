//! `--follow`: poll the shards for appended records.
//!
//! Each file is tracked by its open descriptor, device and inode, the offset consumed, and the
//! last record read from it. Appends are read from the offset (a trailing line without `\n`
//! is left for the next poll). When the archiver renames a shard away, the old descriptor is
//! drained first, then the new file at the path is read; when it rewrites a shard (`trim`),
//! the new file starts with records already read, so reading resumes after the last record
//! read from the old one. Records are therefore written exactly once.

use cfn_core::exit::{Exit, fail};
use cfn_core::filter::RecordFilter;
use cfn_core::input::{Input, expand_inputs};
use cfn_core::paths::Config;
use cfn_core::reader::{MalformedLog, Position, RecordReader};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Tracked {
    file: File,
    ino: (u64, u64),
    pos: Position,
    /// The last record read from this path: (timestamp, bytes).
    last: Option<(i64, Vec<u8>)>,
}

fn open(input: &Input) -> anyhow::Result<File> {
    match input {
        Input::Stdin => Err(fail(Exit::Usage, "--follow cannot read stdin")),
        file => file.open_file(),
    }
}

fn identity(file: &File) -> std::io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Reads the records appended to `t` since its position.
fn drain(
    t: &mut Tracked,
    name: &str,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    t.file.seek(SeekFrom::Start(t.pos.offset))?;
    let mut reader =
        RecordReader::new(BufReader::with_capacity(256 * 1024, &t.file), name).with_position(t.pos);
    reader.leave_partial_tail = true;
    let last = &mut t.last;
    loop {
        let r = reader.next_with(log, |rec| {
            let l = last.get_or_insert_with(|| (0, Vec::new()));
            l.0 = rec.ts_ms;
            l.1.clear();
            l.1.extend_from_slice(rec.raw);
            if filter.matches(&rec) {
                out.write_all(rec.raw)?;
                out.write_all(b"\n")?;
            }
            Ok::<_, std::io::Error>(())
        })?;
        match r {
            None => break,
            Some(res) => res?,
        }
    }
    t.pos = reader.position();
    Ok(())
}

/// In a rewritten or truncated file, the position just after the last record read before.
fn resume_position(file: &File, name: &str, last: &(i64, Vec<u8>)) -> anyhow::Result<Position> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    cfn_core::reader::resume_position(BufReader::new(f), name, |raw| raw == &last.1[..])
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
) -> anyhow::Result<()> {
    let mut tracked: BTreeMap<PathBuf, Tracked> = BTreeMap::new();
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
                // Rotated archives do not grow; read them once.
                if !tracked.contains_key(path) {
                    let mut reader = RecordReader::new(input.open()?, input.name());
                    crate::copy_records(&mut reader, filter, log, out)?;
                    let file = File::open(path)?;
                    let ino = identity(&file)?;
                    let pos = Position {
                        offset: u64::MAX,
                        line: 0,
                    };
                    tracked.insert(
                        path.to_path_buf(),
                        Tracked {
                            file,
                            ino,
                            pos,
                            last: None,
                        },
                    );
                }
                continue;
            }
            if !tracked.contains_key(path) {
                let file = match open(input) {
                    Ok(f) => f,
                    Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput => continue,
                    Err(e) => return Err(e),
                };
                let ino = identity(&file)?;
                tracked.insert(
                    path.to_path_buf(),
                    Tracked {
                        file,
                        ino,
                        pos: Position::default(),
                        last: None,
                    },
                );
            }
        }
        for (path, t) in tracked.iter_mut() {
            if t.pos.offset == u64::MAX {
                continue;
            }
            let name = path.display().to_string();
            // Whatever was appended to the file we hold, even if it has been renamed away.
            drain(t, &name, filter, log, out)?;
            check_replaced(path, t, &name, filter, log, out)?;
        }
        out.flush()?;
        std::thread::sleep(interval);
    }
}

/// Handles a shard renamed away and recreated, rewritten, or truncated in place.
fn check_replaced(
    path: &Path,
    t: &mut Tracked,
    name: &str,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let now = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let replaced = (now.dev(), now.ino()) != t.ino;
    let truncated = !replaced && now.len() < t.pos.offset;
    if !replaced && !truncated {
        return Ok(());
    }
    if replaced {
        let input = Input::File {
            path: path.to_path_buf(),
            shared: true,
        };
        let file = match open(&input) {
            Ok(f) => f,
            Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput => return Ok(()),
            Err(e) => return Err(e),
        };
        t.ino = identity(&file)?;
        t.file = file;
    }
    t.pos = match &t.last {
        Some(last) => resume_position(&t.file, name, last)?,
        None => Position::default(),
    };
    drain(t, name, filter, log, out)
}
