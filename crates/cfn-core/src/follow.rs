//! Following the hot shards: every record appended since the last poll, exactly once, across
//! the archiver's renames and rewrites. Used by `cfn-cat --follow` and `cfn-top`.
//!
//! Each file is tracked by its open descriptor and a shard cursor (identity, offset
//! consumed, last record read). Appends are read from the offset (a trailing line without `\n`
//! is left for the next poll). When the archiver renames a shard away, the old descriptor is
//! drained first, then the new file at the path is read; when it rewrites a shard (`trim`),
//! the new file starts with records already read, so reading resumes after the last record
//! read from the old one. When the reader was slower than the archiver (two trims between
//! two polls), the new file may start past that record: what was trimmed in between is
//! already in the archive, so it is read from there, from the last record read up to the
//! new file's first. Records are therefore handed over exactly once.

use crate::cursor::{Change, FileId, ShardCursor};
use crate::exit::{Exit, exit_for, fail};
use crate::input::{Input, expand_inputs, is_gzip_name};
use crate::paths::Config;
use crate::reader::{MalformedLog, Position, RecordReader, RecordRef};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where a record handed over by [`ShardFollower::poll`] came from.
pub type Emit<'e> = dyn FnMut(&Path, &RecordRef<'_>) -> std::io::Result<()> + 'e;

/// A shard being followed: the file held open (it is drained even after it was renamed
/// away) and the cursor in it.
struct Tracked {
    file: File,
    cursor: ShardCursor,
    /// Lines consumed, for malformed-line reports.
    line: u64,
    malformed: u64,
}

impl Tracked {
    fn new(file: File) -> anyhow::Result<Self> {
        let cursor = ShardCursor::at_start(FileId::of(&file.metadata()?));
        Ok(Self {
            file,
            cursor,
            line: 0,
            malformed: 0,
        })
    }

    fn position(&self) -> Position {
        Position {
            offset: self.cursor.offset,
            line: self.line,
        }
    }
}

/// What a follower knows of one shard it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowedShard {
    pub path: PathBuf,
    /// Bytes read up to the end of the last complete line of the file held.
    pub offset: u64,
    /// Malformed lines skipped in it so far.
    pub malformed: u64,
}

/// Follows the given paths (or every hot shard) poll by poll.
pub struct ShardFollower {
    paths: Vec<PathBuf>,
    config: Config,
    strict: bool,
    tracked: BTreeMap<PathBuf, Tracked>,
    /// Rotated archives do not grow: each is read once.
    gz_done: BTreeSet<PathBuf>,
    /// Files refused and already named on stderr (a stray file in the shared directory is
    /// said once, then left alone).
    refused: BTreeSet<PathBuf>,
    /// What the caller should tell the operator (a refused file, records that could not be
    /// caught up), since the last [`ShardFollower::take_warnings`].
    warnings: Vec<String>,
}

/// Most files followed at once: a directory flooded with shard-named files costs at most
/// this many descriptors; the others are named once and left alone.
pub const MAX_FOLLOWED: usize = 4096;

fn open(input: &Input) -> anyhow::Result<File> {
    match input {
        Input::Stdin => Err(fail(Exit::Usage, "following cannot read stdin")),
        file => file.open_file(),
    }
}

/// Reads the records appended to `t` since its position.
fn drain(
    t: &mut Tracked,
    path: &Path,
    log: &mut MalformedLog,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    t.file.seek(SeekFrom::Start(t.cursor.offset))?;
    let name = path.display().to_string();
    let mut reader = RecordReader::new(BufReader::with_capacity(256 * 1024, &t.file), name)
        .with_position(t.position());
    reader.leave_partial_tail = true;
    let cursor = &mut t.cursor;
    let before = log.count;
    while let Some(written) = reader.next_with(log, |rec| {
        cursor.note_record(rec.ts_ms, rec.raw);
        emit(path, &rec)
    })? {
        written?;
    }
    t.malformed += log.count - before;
    let pos = reader.position();
    t.cursor.offset = pos.offset;
    t.line = pos.line;
    Ok(())
}

impl ShardFollower {
    /// A follower of `paths` (none: every hot shard of `config`); `strict` makes a refused
    /// file an error.
    pub fn new(paths: Vec<PathBuf>, config: Config, strict: bool) -> Self {
        Self {
            paths,
            config,
            strict,
            tracked: BTreeMap::new(),
            gz_done: BTreeSet::new(),
            refused: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }

    /// The warnings since the last call (a terminal view shows them in place; a stream
    /// tool prints them on stderr).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The shards followed so far, by path.
    pub fn shards(&self) -> Vec<FollowedShard> {
        self.tracked
            .iter()
            .map(|(path, t)| FollowedShard {
                path: path.clone(),
                offset: t.cursor.offset,
                malformed: t.malformed,
            })
            .collect()
    }

    fn warn_refused(&mut self, path: &Path, e: &anyhow::Error) {
        if self.refused.len() < MAX_FOLLOWED && self.refused.insert(path.to_path_buf()) {
            self.warnings.push(format!("skipping {e}"));
        }
    }

    /// Hands every record appended since the last poll to `emit`, with the path it was
    /// read from.
    ///
    /// # Errors
    /// I/O errors, `emit`'s errors; a missing directory only before anything was followed.
    pub fn poll(&mut self, log: &mut MalformedLog, emit: &mut Emit<'_>) -> anyhow::Result<()> {
        let inputs = match expand_inputs(&self.paths, &self.config) {
            Ok(i) => i,
            // The shard directory may be recreated; a named file may appear later.
            Err(e) if exit_for(&e) == Exit::NoInput && !self.tracked.is_empty() => Vec::new(),
            Err(e) => return Err(e),
        };
        for input in &inputs {
            self.look_at(input, log, emit)?;
        }
        let archive_dir = self.config.archive_dir.clone();
        let mut refused = Vec::new();
        for (path, t) in self.tracked.iter_mut() {
            // Whatever was appended to the file we hold, even if it has been renamed away.
            drain(t, path, log, emit)?;
            if let Err(e) = check_replaced(path, &archive_dir, t, log, emit, &mut self.warnings)? {
                refused.push((path.clone(), e));
            }
        }
        for (path, e) in refused {
            self.warn_refused(&path, &e);
        }
        Ok(())
    }

    /// Starts following `input` if it is new (a rotated archive is read whole, once).
    fn look_at(
        &mut self,
        input: &Input,
        log: &mut MalformedLog,
        emit: &mut Emit<'_>,
    ) -> anyhow::Result<()> {
        let Some(path) = input.path() else {
            return Err(fail(Exit::Usage, "following cannot read stdin"));
        };
        if is_gzip_name(path) {
            if self.gz_done.insert(path.to_path_buf()) {
                let mut reader = RecordReader::new(input.open()?, input.name());
                while let Some(r) = reader.next_with(log, |rec| emit(path, &rec))? {
                    r?;
                }
            }
            return Ok(());
        }
        if self.tracked.contains_key(path) || self.refused.contains(path) {
            return Ok(());
        }
        if self.tracked.len() >= MAX_FOLLOWED {
            let e = anyhow::anyhow!("{}: already following {MAX_FOLLOWED} files", path.display());
            self.warn_refused(path, &e);
            return Ok(());
        }
        let file = match open(input) {
            Ok(f) => f,
            Err(e) if exit_for(&e) == Exit::NoInput => return Ok(()),
            Err(e) if crate::fsutil::is_refused(&e) && !self.strict => {
                self.warn_refused(path, &e);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.tracked.insert(path.to_path_buf(), Tracked::new(file)?);
        Ok(())
    }
}

/// Handles a shard renamed away and recreated, rewritten, or truncated in place. Returns
/// `Ok(Err(e))` when the path now holds a file that is refused (the one held is kept).
fn check_replaced(
    path: &Path,
    archive_dir: &Path,
    t: &mut Tracked,
    log: &mut MalformedLog,
    emit: &mut Emit<'_>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Result<(), anyhow::Error>> {
    let now = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(())),
        Err(e) => return Err(e.into()),
    };
    // The file held is the one at the path when the identity matches, so its bytes can be
    // checked (a truncate-and-regrow looks like an append).
    let change = t.cursor.change_in(&t.file, &now)?;
    if change == Change::Same {
        return Ok(Ok(()));
    }
    if change == Change::Replaced {
        let input = Input::File {
            path: path.to_path_buf(),
            shared: true,
        };
        t.file = match open(&input) {
            Ok(f) => f,
            Err(e) if exit_for(&e) == Exit::NoInput => return Ok(Ok(())),
            Err(e) if crate::fsutil::is_refused(&e) => return Ok(Err(e)),
            Err(e) => return Err(e),
        };
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let display = path.display().to_string();
    let resume =
        t.cursor
            .resume_after_change(change, Some(archive_dir), name, &t.file, &display)?;
    for line in &resume.missed {
        if let Ok(rec) = crate::reader::parse_record(line) {
            emit(path, &rec)?;
        }
    }
    if resume.gap_unknown {
        warnings.push(format!(
            "{display} was rewritten past the last record read and {} does not hold that record; records trimmed in between may be missing (poll more often)",
            archive_dir.display()
        ));
    }
    t.cursor
        .move_to(FileId::of(&t.file.metadata()?), resume.pos.offset);
    t.line = resume.pos.line;
    drain(t, path, log, emit)?;
    Ok(Ok(()))
}
