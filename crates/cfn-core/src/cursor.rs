//! Following a shard across trims, rotations, truncations and replacements: the file's
//! identity, the bytes consumed, and the last record read. Used by `cfn-cat --follow`, the
//! archiver's progress (persisted as is in its state file) and `cfn-serve`'s shard health.

use crate::input::Input;
use crate::reader::Position;
use crate::reader::{MalformedLog, RecordReader};
use crate::time::EpochMs;
use serde::{Deserialize, Serialize};
use std::fs::{File, Metadata};
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use crate::fsutil::FileId;

/// What became of a shard since a cursor was last moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The same file, at least as long as what was consumed: read on from the offset.
    Same,
    /// The same file, now shorter than what was consumed (truncated in place).
    Truncated,
    /// Another file at the path (renamed into place by a trim, or recreated).
    Replaced,
}

/// A position in a shard. The field names are those of cfn-archive's state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCursor {
    pub dev: u64,
    pub ino: u64,
    /// Bytes consumed (always the end of a complete line).
    pub offset: u64,
    /// The last record read: its timestamp and the FNV-1a hash of its bytes, to find where
    /// to resume in a rewritten file.
    pub last_ts: Option<i64>,
    pub last_hash: Option<u64>,
}

impl ShardCursor {
    /// A cursor at the start of the file `id`.
    pub fn at_start(id: FileId) -> Self {
        Self {
            dev: id.dev,
            ino: id.ino,
            ..Self::default()
        }
    }

    /// The identity of the file the cursor is in.
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// What became of the shard, given the metadata of the file at its path now.
    pub fn change(&self, now: &Metadata) -> Change {
        if FileId::of(now) != self.id() {
            Change::Replaced
        } else if now.len() < self.offset {
            Change::Truncated
        } else {
            Change::Same
        }
    }

    /// [`ShardCursor::change`], and for a file that only looks appended to, a check that the
    /// bytes before the offset still end with the last record read: a file truncated and
    /// written again past the old offset between two looks is the same file, longer, but
    /// reading on from the offset would start inside a line. Such a file is `Truncated`.
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn change_in(&self, file: &File, now: &Metadata) -> std::io::Result<Change> {
        let change = self.change(now);
        if change != Change::Same || self.offset == 0 || now.len() == self.offset {
            return Ok(change);
        }
        Ok(if self.ends_at_offset(file)? {
            Change::Same
        } else {
            Change::Truncated
        })
    }

    /// True when the line that ends at the offset is the last record read (or, for a record
    /// spread over lines, when a line ends there).
    fn ends_at_offset(&self, file: &File) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt;
        const WINDOW: u64 = 64 * 1024;
        let start = self.offset.saturating_sub(WINDOW);
        let mut buf = vec![0u8; (self.offset - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        let Some(body) = buf.strip_suffix(b"\n") else {
            return Ok(false);
        };
        let line_start = match memchr::memrchr(b'\n', body) {
            Some(i) => i + 1,
            None if start == 0 => 0,
            // A line longer than the window: not worth reading back; a newline is there.
            None => return Ok(true),
        };
        let line = crate::reader::trim_line(&body[line_start..]);
        // Only a one-line record can be compared; a pretty-printed one ends in `}`.
        if self.last_hash.is_none() || !line.starts_with(b"{") {
            return Ok(true);
        }
        Ok(self.is_last(line))
    }

    /// Remembers `raw` (stamped `ts_ms`) as the last record read.
    pub fn note_record(&mut self, ts_ms: i64, raw: &[u8]) {
        self.last_ts = Some(ts_ms);
        self.last_hash = Some(crate::paths::fnv1a64(raw));
    }

    /// True when `raw` is the last record read.
    pub fn is_last(&self, raw: &[u8]) -> bool {
        self.last_hash == Some(crate::paths::fnv1a64(raw))
    }

    /// Moves the cursor into `id` at `offset`, keeping the last record read.
    pub fn move_to(&mut self, id: FileId, offset: u64) {
        self.dev = id.dev;
        self.ino = id.ino;
        self.offset = offset;
    }

    /// In `file` (a rewritten or replaced shard), the position just after the last record
    /// read, or the start when it is not there (trimming removes the oldest records first,
    /// so then everything left is new).
    ///
    /// # Errors
    /// I/O errors.
    pub fn resume_in(&self, file: &File, name: &str) -> anyhow::Result<Position> {
        if self.last_hash.is_none() {
            return Ok(Position::default());
        }
        let mut f = file;
        f.seek(SeekFrom::Start(0))?;
        crate::reader::resume_position(BufReader::new(f), name, |raw| self.is_last(raw))
    }
}

/// One trim of a hot shard by the archiver (contract section 7, the state's `trims`): the
/// file it rewrote, the file renamed into its place, and how many bytes of the start of the
/// old one the new one leaves out. Recorded before the rename, so a reader that sees the new
/// file finds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trim {
    pub from_dev: u64,
    pub from_ino: u64,
    pub to_dev: u64,
    pub to_ino: u64,
    pub cut: u64,
    /// The trim's threshold: it removed only records stamped before it (absent in states
    /// written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<i64>,
}

/// What the archive holds of a hot shard (from the archive state): every record in the file
/// `id` before `offset`, and every record a trim took away, all stamped before `watermark`
/// (the latest trim's threshold). So records stamped at or after the watermark are all in
/// the hot file, and of those before it the hot file alone holds only the ones past
/// `offset`: readers that take both split them there, whatever order the records are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchivedSplit {
    pub id: FileId,
    pub offset: u64,
    pub watermark: EpochMs,
}

#[derive(Debug, Default, Deserialize)]
struct SplitState {
    #[serde(default)]
    shards: std::collections::BTreeMap<String, ShardCursor>,
    #[serde(default)]
    trims: std::collections::BTreeMap<String, Vec<Trim>>,
}

/// What the archive state in `archive_dir` says of shard file `shard_name`, now the file
/// `id` at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitFor {
    /// The split of that file: from the state's cursor when it is in the file, or through
    /// the recorded trims when a trim renamed the file into place and has not moved the
    /// cursor yet.
    Split(ArchivedSplit),
    /// The state knows no trim with a threshold of the shard (or cannot be read).
    Untrimmed,
    /// The state speaks of another file: one renamed away after the caller opened it, or
    /// recreated. Open the path again and ask again.
    OtherFile,
}

/// The split of shard file `shard_name`, open as the file `id` (see [`SplitFor`]). Read the
/// state after opening the file: records the archiver synced in between are then past the
/// split's offset, in the file and maybe in the archive too.
pub fn archived_split_for(archive_dir: &Path, shard_name: &str, id: FileId) -> SplitFor {
    let Some(state) = read_archive_state::<SplitState>(archive_dir) else {
        return SplitFor::Untrimmed;
    };
    let (Some(cursor), Some(trims)) = (state.shards.get(shard_name), state.trims.get(shard_name))
    else {
        return SplitFor::Untrimmed;
    };
    let Some(watermark) = trims.iter().filter_map(|t| t.cutoff).max() else {
        return SplitFor::Untrimmed;
    };
    match offset_after_trims(trims, cursor.id(), cursor.offset, id) {
        Some(offset) => SplitFor::Split(ArchivedSplit {
            id,
            offset,
            watermark,
        }),
        None => SplitFor::OtherFile,
    }
}

/// The rotations in flight the archive state in `archive_dir` records: a day file's name
/// and the length its `.gz` had before the rotation appended it as a member (empty when the
/// state cannot be read).
fn rotating(archive_dir: &Path) -> std::collections::HashMap<String, u64> {
    #[derive(serde::Deserialize)]
    struct RotatingState {
        #[serde(default)]
        rotating: std::collections::HashMap<String, u64>,
    }
    read_archive_state::<RotatingState>(archive_dir)
        .map(|s| s.rotating)
        .unwrap_or_default()
}

/// The parts of the archive state in `archive_dir` that `T` takes, read by a follower or a
/// reader that does not hold the archive's lock; `None` when it cannot be read or parsed.
fn read_archive_state<T: serde::de::DeserializeOwned>(archive_dir: &Path) -> Option<T> {
    let path = archive_dir.join(ARCHIVE_STATE_FILE);
    let file = crate::fsutil::open_safe(&path, crate::fsutil::Access::Read).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, crate::state_file::MAX_STATE_BYTES),
        &mut bytes,
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// True when the day file `plain` (open, named `name` in `archive_dir`) is already inside its
/// `.gz`, open as `gz`: a rotation appended it as the `.gz`'s last member and then removed it
/// (the open file is unlinked), or was killed in between (the state records the `.gz`'s
/// length before the rotation, and `gz` is longer). A reader of both then reads only the
/// `.gz`, so a rotation between its two opens never counts a record twice. Open the plain
/// file first, then the `.gz`, then ask.
pub fn plain_is_in_gz(
    archive_dir: &Path,
    name: &str,
    plain: &std::fs::File,
    gz: Option<&std::fs::File>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(gz) = gz else {
        return false;
    };
    if plain.metadata().is_ok_and(|m| m.nlink() == 0) {
        return true;
    }
    let gz_len = gz.metadata().map_or(0, |m| m.len());
    rotating(archive_dir)
        .get(name)
        .is_some_and(|&before| gz_len > before)
}

/// An archive day's two files, opened so that a rotation between the two opens neither
/// loses nor repeats a record: `plain` is `None` when it was missing or is already the
/// `.gz`'s last member (then everything is in `gz`).
#[derive(Debug)]
pub struct DayPair {
    pub plain: Option<std::fs::File>,
    pub gz: Option<std::fs::File>,
}

/// Opens day file `plain_name` of `archive_dir` and then its `.gz` with `open` (which gives
/// `None` for a file that is not there), and leaves the plain file out when
/// [`plain_is_in_gz`] says so. Hold `gz` to read it later: a rotation renames a new `.gz`
/// into place, so the one held never gains the plain file's records.
///
/// # Errors
/// `open`'s errors.
pub fn open_day_pair(
    archive_dir: &Path,
    plain_name: &str,
    open: impl Fn(&Path) -> std::io::Result<Option<std::fs::File>>,
) -> std::io::Result<DayPair> {
    let plain = open(&archive_dir.join(plain_name))?;
    let gz = open(&archive_dir.join(format!("{plain_name}.gz")))?;
    let plain = plain.filter(|p| !plain_is_in_gz(archive_dir, plain_name, p, gz.as_ref()));
    Ok(DayPair { plain, gz })
}

/// Most trims of each shard the archive state keeps (the oldest go first).
pub const TRIMS_KEPT: usize = 16;

/// The name of the archiver's state file in the archive directory.
pub const ARCHIVE_STATE_FILE: &str = ".cfn-archive-state.json";

/// The trims of every shard, as the archive state keeps them.
#[derive(Debug, Default, Deserialize)]
struct TrimHistory {
    #[serde(default)]
    trims: std::collections::BTreeMap<String, Vec<Trim>>,
}

/// The trims the archiver recorded for shard file `shard_name` in `archive_dir` (empty when
/// the state cannot be read: then readers fall back to finding the last record read).
pub fn recorded_trims(archive_dir: &Path, shard_name: &str) -> Vec<Trim> {
    read_archive_state::<TrimHistory>(archive_dir)
        .and_then(|h| h.trims.get(shard_name).cloned())
        .unwrap_or_default()
}

impl Trim {
    /// The file the trim rewrote.
    pub fn from_id(&self) -> FileId {
        FileId {
            dev: self.from_dev,
            ino: self.from_ino,
        }
    }

    /// The file the trim made.
    pub fn to_id(&self) -> FileId {
        FileId {
            dev: self.to_dev,
            ino: self.to_ino,
        }
    }
}

/// The recorded trim of shard file `shard_name` that made file `id` and took something
/// (`None` when `id` is no trim's, or a trim of it cut nothing): a reader that first meets
/// `id` never saw what that trim took.
pub fn trim_that_made(archive_dir: &Path, shard_name: &str, id: FileId) -> Option<Trim> {
    recorded_trims(archive_dir, shard_name)
        .into_iter()
        .find(|t| t.cut > 0 && t.to_id() == id)
}

/// Where a reader that consumed `offset` bytes of file `from` is in file `to`, following the
/// recorded `trims` from one to the other. `None` when no chain of trims leads there, or
/// when a trim cut past what the reader had consumed (it never saw those bytes).
pub fn offset_after_trims(trims: &[Trim], from: FileId, offset: u64, to: FileId) -> Option<u64> {
    let (mut at, mut offset) = (from, offset);
    // Each file is trimmed into a new one at most once, so the chain has no cycle; the
    // bound keeps a corrupt history from looping. A trim killed before its rename is
    // recorded too (the record comes first) and never happened; the one that did is the
    // last recorded from the same file.
    for _ in 0..=trims.len() {
        if at == to {
            return Some(offset);
        }
        let t = trims
            .iter()
            .rfind(|t| t.from_dev == at.dev && t.from_ino == at.ino)?;
        offset = offset.checked_sub(t.cut)?;
        at = FileId {
            dev: t.to_dev,
            ino: t.to_ino,
        };
    }
    None
}

impl ShardCursor {
    /// Where to go on in `file`, the shard `shard_name` now at its path, when the trims the
    /// archiver recorded in `archive_dir` lead to it from the file this cursor is in and
    /// the resulting offset starts a line. Exact, unlike [`ShardCursor::resume_in`]'s search
    /// for the last record read, which cannot find a replayed record (stamped days back,
    /// archived in an old day file) that a trim took away.
    ///
    /// # Errors
    /// I/O errors reading `file`.
    pub fn resume_after_trims(
        &self,
        archive_dir: &Path,
        shard_name: &str,
        file: &File,
    ) -> std::io::Result<Option<Position>> {
        let trims = recorded_trims(archive_dir, shard_name);
        let now = FileId::of(&file.metadata()?);
        let Some(offset) = offset_after_trims(&trims, self.id(), self.offset, now) else {
            return Ok(None);
        };
        let mut byte = [0u8; 1];
        if offset > 0
            && (std::os::unix::fs::FileExt::read_exact_at(file, &mut byte, offset - 1).is_err()
                || byte[0] != b'\n')
        {
            return Ok(None);
        }
        Ok(Some(Position {
            offset,
            line: lines_before(file, offset)?,
        }))
    }
}

/// Where a reader goes on after its shard changed, and what it missed.
#[derive(Debug)]
pub struct Resume {
    /// Where to read on in the file at the path now.
    pub pos: Position,
    /// Records the reader never saw that only the archive still holds (trimmed twice
    /// between two looks), read back from it: valid record lines, without newlines.
    pub missed: Vec<Vec<u8>>,
    /// Records may be missing: the file starts past the last record read and the archive
    /// does not hold that record.
    pub gap_unknown: bool,
}

impl ShardCursor {
    /// The one rule for following a shard through a change (used by `ShardFollower` and
    /// cfn-serve's index): in `file`, the shard `shard_name` now at its path after `change`
    /// (`display` names it in messages), go on through the trims the archiver recorded in
    /// `archive_dir` when they lead there (exact, replays included); else after the last
    /// record read when the file holds it; else from the start, with what was trimmed in
    /// between read back from the archive. A reader holding the old file reads it to its end
    /// first: then the trims always lead on, and the archive is needed only when the file
    /// was rewritten twice between two looks.
    ///
    /// # Errors
    /// I/O errors reading `file`.
    pub fn resume_after_change(
        &self,
        change: Change,
        archive_dir: Option<&Path>,
        shard_name: &str,
        file: &File,
        display: &str,
    ) -> anyhow::Result<Resume> {
        let exact = match (archive_dir, change) {
            (Some(dir), Change::Replaced) => self.resume_after_trims(dir, shard_name, file)?,
            _ => None,
        };
        let mut resume = Resume {
            pos: match exact {
                Some(pos) => pos,
                None => self.resume_in(file, display)?,
            },
            missed: Vec::new(),
            gap_unknown: false,
        };
        if exact.is_none() && self.last_hash.is_none() && change == Change::Replaced {
            // Nothing read yet, and a trim took more than that: what it took is in the
            // archive by day, with no record read to find it from.
            let trimmed_past = archive_dir.is_some_and(|dir| {
                recorded_trims(dir, shard_name)
                    .iter()
                    .any(|t| t.from_id() == self.id() && t.cut > self.offset)
            });
            resume.gap_unknown = trimmed_past;
        }
        if exact.is_some() || resume.pos.offset != 0 || self.last_hash.is_none() {
            return Ok(resume);
        }
        let shard_no = crate::paths::shard_number(shard_name);
        match (archive_dir, shard_no) {
            (Some(dir), Some(n)) => match trimmed_since(dir, n, self, file)? {
                Some(lines) => resume.missed = lines,
                None => resume.gap_unknown = true,
            },
            (None, Some(_)) => resume.gap_unknown = true,
            // Not a shard: the archive holds nothing of it.
            (_, None) => {}
        }
        Ok(resume)
    }
}

/// The lines in the first `offset` bytes of `file` (for malformed-line reports).
fn lines_before(file: &File, offset: u64) -> std::io::Result<u64> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    let mut r = std::io::Read::take(f, offset);
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        let n = std::io::Read::read(&mut r, &mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
}

/// The first complete line of `file`, without its newline (`None` when it has none yet).
fn first_line(file: &File) -> std::io::Result<Option<Vec<u8>>> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    let mut r = BufReader::new(f);
    crate::reader::read_line_bounded(&mut r, &mut line, crate::reader::MAX_LINE_BYTES)?;
    Ok(line.pop().filter(|&c| c == b'\n').map(|_| line))
}

/// The records of shard `shard_no` that a reader missed because the shard was trimmed twice
/// between two looks (the new file starts past the last record read): they are in the
/// archive, after `last`'s record and before the first line of `hot_now`, the shard's file
/// now. Returns their lines (valid records only, without newlines), or `None` when the
/// archive does not hold the last record read.
///
/// # Errors
/// I/O errors reading `hot_now`.
pub fn trimmed_since(
    archive_dir: &Path,
    shard_no: u32,
    last: &ShardCursor,
    hot_now: &File,
) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
    let Some(last_ts) = last.last_ts else {
        return Ok(Some(Vec::new()));
    };
    let stop = first_line(hot_now)?;
    let from_day = crate::time::utc_day(last_ts);
    // The shard's day files from the last record's day on, the .gz (older) before the plain.
    let mut files: Vec<(String, bool, PathBuf)> = std::fs::read_dir(archive_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let (day, n, gz) = crate::paths::parse_archive_name(&name)?;
            (n == shard_no && day >= from_day).then(|| (day, !gz, e.path()))
        })
        .collect();
    files.sort();
    let mut found = false;
    let mut quiet = MalformedLog::quiet();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    'files: for (_, _, path) in &files {
        let input = Input::File {
            path: path.clone(),
            shared: false,
        };
        let Ok(r) = input.open() else { continue };
        let mut reader = RecordReader::new(r, input.name());
        while let Some(step) = reader.next_with(&mut quiet, |rec| {
            // Every copy of the last record read restarts the gap: records written in one
            // millisecond can be identical, and only the last copy is where reading stopped.
            if last.is_last(rec.raw) {
                return Some(true);
            }
            if !found {
                return None;
            }
            if stop.as_deref() == Some(rec.raw) {
                return Some(false);
            }
            pending.push(rec.raw.to_vec());
            None
        })? {
            match step {
                // The last record read (the last copy of it wins, as in resume_position).
                Some(true) => {
                    found = true;
                    pending.clear();
                }
                Some(false) => break 'files,
                None => {}
            }
        }
    }
    Ok(found.then_some(pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Found by the fleet soak (issue 41): a reader that had read nothing of a shard whose
    /// file a trim then cut went on at the new file's start without a word; the trim took
    /// records it never saw. Now that is a gap it cannot fill, said by the caller.
    #[test]
    fn a_trim_past_a_reader_that_read_nothing_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (hot, archive) = (dir.path().join("hot"), dir.path().join("archive"));
        std::fs::create_dir_all(&hot).unwrap();
        std::fs::create_dir_all(&archive).unwrap();
        let old = hot.join("old.jsonl");
        std::fs::write(&old, "x\n").unwrap();
        let cursor = ShardCursor::at_start(FileId::of(&std::fs::metadata(&old).unwrap()));
        let now = hot.join("cfn-metrics-3.jsonl");
        std::fs::write(&now, "").unwrap();
        let (from, to) = (cursor.id(), FileId::of(&std::fs::metadata(&now).unwrap()));
        let state = |from: FileId, cut: u64| {
            let trims = format!(
                "{{\"trims\":{{\"cfn-metrics-3.jsonl\":[{{\"from_dev\":{},\"from_ino\":{},\"to_dev\":{},\"to_ino\":{},\"cut\":{cut}}}]}}}}",
                from.dev, from.ino, to.dev, to.ino
            );
            std::fs::write(archive.join(ARCHIVE_STATE_FILE), trims).unwrap();
        };
        let file = File::open(&now).unwrap();
        let resume = |c: &ShardCursor| {
            c.resume_after_change(
                Change::Replaced,
                Some(&archive),
                "cfn-metrics-3.jsonl",
                &file,
                "s",
            )
            .unwrap()
        };
        state(from, 120);
        assert!(
            resume(&cursor).gap_unknown,
            "a trim of 120 bytes from the file read from 0"
        );
        // A trim of another file (the shard deleted and written anew, say) took nothing
        // from this reader.
        state(to, 120);
        assert!(!resume(&cursor).gap_unknown);
    }

    #[test]
    fn tells_appends_truncation_and_replacement_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(
            &p,
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":1}\n",
        )
        .unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        let mut c = ShardCursor::at_start(FileId::of(&meta));
        c.offset = meta.len();
        c.note_record(
            0,
            b"{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":1}",
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"x\n")
            .unwrap();
        assert_eq!(c.change(&std::fs::metadata(&p).unwrap()), Change::Same);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(3)
            .unwrap();
        assert_eq!(c.change(&std::fs::metadata(&p).unwrap()), Change::Truncated);
        // A trim: the last record read and one more, renamed into place.
        let tmp = dir.path().join("t");
        std::fs::write(
            &tmp,
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":1}\n{\"timestamp\":\"2026-11-27T10:00:01Z\",\"metric\":\"m\",\"value\":2}\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(c.change(&f.metadata().unwrap()), Change::Replaced);
        assert_eq!(c.resume_in(&f, "s").unwrap().offset, 60);
    }

    #[test]
    fn a_file_truncated_and_written_past_the_offset_is_not_taken_for_appended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cfn-metrics-1.jsonl");
        let rec = |i: u32| {
            format!("{{\"timestamp\":\"2026-11-01T00:00:0{i}Z\",\"metric\":\"m\",\"value\":{i}}}\n")
        };
        std::fs::write(&p, format!("{}{}", rec(1), rec(2))).unwrap();
        let f = File::open(&p).unwrap();
        let mut c = ShardCursor::at_start(FileId::of(&f.metadata().unwrap()));
        c.offset = (rec(1).len() + rec(2).len()) as u64;
        c.note_record(0, rec(2).trim_end().as_bytes());
        // Appended: the same.
        std::fs::write(&p, format!("{}{}{}", rec(1), rec(2), rec(3))).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(c.change_in(&f, &m).unwrap(), Change::Same);
        // Truncated and written again past the offset (same inode): not the same.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::io::Write::write_all(
            &mut w,
            format!("x{}{}{}", rec(4), rec(5), rec(6)).as_bytes(),
        )
        .unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(c.change(&m), Change::Same, "metadata alone cannot tell");
        assert_eq!(c.change_in(&f, &m).unwrap(), Change::Truncated);
    }

    #[test]
    fn the_gap_after_two_trims_starts_at_the_last_copy_of_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let line = |v: u32| {
            format!("{{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":{v}}}")
        };
        // Records written in one millisecond: the last one read (7) appears three times.
        let day: String = [7, 1, 7, 2, 7, 3, 4]
            .iter()
            .map(|&v| line(v) + "\n")
            .collect();
        std::fs::write(dir.path().join("cfn-metrics-20261127-3.jsonl"), day).unwrap();
        let mut c = ShardCursor::default();
        c.note_record(1_795_773_600_000, line(7).as_bytes());
        // The hot file now starts at 4: 3 was trimmed before it was read.
        let hot = dir.path().join("hot");
        std::fs::write(&hot, line(4) + "\n" + &line(5) + "\n").unwrap();
        let gap = trimmed_since(dir.path(), 3, &c, &File::open(&hot).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(gap, vec![line(3).into_bytes()]);
        // A shard whose day file does not hold the last record: None.
        assert!(
            trimmed_since(dir.path(), 4, &c, &File::open(&hot).unwrap())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_reader_follows_recorded_trims_to_its_place_in_the_new_file() {
        let id = |ino| FileId { dev: 1, ino };
        let trim = |from, to, cut| Trim {
            from_dev: 1,
            from_ino: from,
            to_dev: 1,
            to_ino: to,
            cut,
            cutoff: None,
        };
        let trims = [trim(10, 11, 100), trim(11, 12, 40), trim(99, 98, 5)];
        assert_eq!(offset_after_trims(&trims, id(10), 250, id(10)), Some(250));
        assert_eq!(offset_after_trims(&trims, id(10), 250, id(11)), Some(150));
        assert_eq!(offset_after_trims(&trims, id(10), 250, id(12)), Some(110));
        // The second trim cut bytes the reader never saw: only the archive has them.
        assert_eq!(offset_after_trims(&trims, id(10), 120, id(12)), None);
        assert_eq!(offset_after_trims(&trims, id(10), 250, id(13)), None);
        assert_eq!(offset_after_trims(&trims, id(12), 5, id(10)), None);
        // A trim of 10 killed before its rename (into 20, which never took the path), then
        // the one that happened: the reader follows the second.
        let retried = [trim(10, 20, 70), trim(10, 11, 100), trim(11, 12, 40)];
        assert_eq!(offset_after_trims(&retried, id(10), 250, id(11)), Some(150));
        assert_eq!(offset_after_trims(&retried, id(10), 250, id(12)), Some(110));
        let cycle = [trim(1, 2, 0), trim(2, 1, 0)];
        assert_eq!(offset_after_trims(&cycle, id(1), 5, id(3)), None);
    }
}
