//! `sync --rebuild-state`: reconstructs a lost or corrupt state from what is on disk.
//!
//! Archive files are taken as committed up to their last complete line. For each hot shard,
//! what is already archived is found by content, day by day: sync copies a prefix of the
//! shard, sending each line to the file of its day in shard order, so for every day D the
//! shard's day-D lines that are archived are a prefix of them, and that prefix is the tail of
//! the archive's day-D file. The longest tail of the archive file that equals a prefix of the
//! shard's day-D lines (found with KMP over line hashes) gives the count per day; the shard's
//! archived prefix is where the first line beyond those counts begins. No time order is
//! assumed (replays are out of order), and identical records are counted, not searched for.
//!
//! One case stays ambiguous, and is resolved towards "archived": when the first lines of
//! the shard equal the last archived lines of an earlier, already trimmed part of it
//! (identical records, same millisecond, at a trim boundary).

use crate::ops::Ctx;
use crate::state::{ArchiveState, ShardProgress};
use cfn_core::fsutil::{Access, open_safe, skip_refused};
use cfn_core::paths::{fnv1a64, list_shards, parse_archive_name};
use cfn_core::reader::{Item, MAX_LINE_BYTES, RecordReader, read_line_bounded};
use cfn_core::time::utc_day;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of a hot shard, as sync would file it.
struct HotLine {
    /// The UTC day of the file it goes to; `None` for malformed lines before any record
    /// (sync files them under the day it ran, which is not known now).
    day: Option<String>,
    hash: u64,
    end: u64,
    /// (timestamp, hash) when it is a record: the anchor the state keeps.
    anchor: Option<(i64, u64)>,
}

fn read_hot_lines(file: &std::fs::File, name: &str) -> anyhow::Result<Vec<HotLine>> {
    let mut reader = RecordReader::new(BufReader::with_capacity(256 * 1024, file), name);
    reader.leave_partial_tail = true;
    let mut lines = Vec::new();
    let mut last_day: Option<String> = None;
    while let Some((day, hash, anchor)) = reader.next_item_with(|item| match item {
        Item::Record(rec) => {
            let h = fnv1a64(rec.raw);
            (Some(utc_day(rec.ts_ms)), h, Some((rec.ts_ms, h)))
        }
        Item::Malformed { raw, .. } => (None, fnv1a64(raw), None),
    })? {
        let day = day.or_else(|| last_day.clone());
        last_day.clone_from(&day);
        lines.push(HotLine {
            day,
            hash,
            end: reader.position().offset,
            anchor,
        });
    }
    Ok(lines)
}

/// The hashes of the last `keep` complete lines of `input`.
fn tail_hashes(input: impl BufRead, keep: usize, out: &mut VecDeque<u64>) -> std::io::Result<()> {
    let mut input = input;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = read_line_bounded(&mut input, &mut buf, MAX_LINE_BYTES)?;
        if read.bytes == 0 || buf.last() != Some(&b'\n') {
            return Ok(());
        }
        buf.pop();
        if out.len() == keep {
            out.pop_front();
        }
        if keep > 0 {
            out.push_back(fnv1a64(&buf));
        }
    }
}

/// The length of the longest suffix of `text` that is a prefix of `pattern` (KMP).
fn overlap(text: &VecDeque<u64>, pattern: &[u64]) -> usize {
    if pattern.is_empty() {
        return 0;
    }
    let mut fail = vec![0usize; pattern.len()];
    let mut k = 0;
    for i in 1..pattern.len() {
        while k > 0 && pattern[i] != pattern[k] {
            k = fail[k - 1];
        }
        if pattern[i] == pattern[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut k = 0;
    for &h in text {
        while k > 0 && (k == pattern.len() || h != pattern[k]) {
            k = fail[k - 1];
        }
        if h == pattern[k] {
            k += 1;
        }
    }
    k
}

/// The archived lines of `(day, shard)` that could overlap `keep` hot lines: the `.gz`
/// (older) then the plain file (written after the last rotation).
fn archive_tail(
    dir: &Path,
    files: &BTreeMap<(String, u32), Vec<(String, bool)>>,
    day: &str,
    shard: u32,
    keep: usize,
) -> anyhow::Result<VecDeque<u64>> {
    let mut tail = VecDeque::with_capacity(keep.min(1 << 16));
    let Some(names) = files.get(&(day.to_string(), shard)) else {
        return Ok(tail);
    };
    // `.jsonl` sorts before `.jsonl.gz`; the gzip holds the older lines.
    let mut ordered: Vec<&(String, bool)> = names.iter().collect();
    ordered.sort_by_key(|(_, gz)| !gz);
    for (name, gz) in ordered {
        let file = open_safe(&dir.join(name), Access::Read)?;
        let reader = cfn_core::input::wrap_reader(file, *gz);
        tail_hashes(reader, keep, &mut tail)?;
    }
    Ok(tail)
}

/// Length up to the last complete line of a plain archive file (what recovery keeps).
fn complete_length(path: &Path) -> anyhow::Result<u64> {
    let file = open_safe(path, Access::Read)?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let (mut end, mut pos) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = read_line_bounded(&mut reader, &mut buf, MAX_LINE_BYTES)?;
        if read.bytes == 0 {
            return Ok(end);
        }
        pos += read.bytes as u64;
        if buf.last() == Some(&b'\n') {
            end = pos;
        }
    }
}

/// Builds a state from the archive directory and the hot shards.
///
/// # Errors
/// I/O errors.
pub fn rebuild_state(ctx: &Ctx) -> anyhow::Result<ArchiveState> {
    let mut st = ArchiveState {
        version: 1,
        ..Default::default()
    };
    let mut files: BTreeMap<(String, u32), Vec<(String, bool)>> = BTreeMap::new();
    for entry in std::fs::read_dir(&ctx.archive_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some((day, n, gz)) = parse_archive_name(&name) else {
            continue;
        };
        if !gz {
            // Committed up to the last complete line; a partial tail is cut by recovery.
            let end = complete_length(&ctx.archive_dir.join(&name))?;
            st.archives.insert(name.clone(), end);
        }
        files.entry((day, n)).or_default().push((name, gz));
    }
    let shards = list_shards(&ctx.metrics_dir).unwrap_or_default();
    for (n, path) in shards {
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(file) = skip_refused("cfn-archive", false, open_safe(&path, Access::Read))? else {
            continue;
        };
        let meta = file.metadata()?;
        let lines = read_hot_lines(&file, &name)?;
        let mut by_day: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for l in &lines {
            if let Some(d) = &l.day {
                by_day.entry(d).or_default().push(l.hash);
            }
        }
        let mut archived_per_day: BTreeMap<&str, usize> = BTreeMap::new();
        for (day, hashes) in &by_day {
            let tail = archive_tail(&ctx.archive_dir, &files, day, n, hashes.len())?;
            archived_per_day.insert(day, overlap(&tail, hashes));
        }
        // The archived prefix ends before the first line past its day's archived count.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut progress = ShardProgress {
            dev: meta.dev(),
            ino: meta.ino(),
            ..Default::default()
        };
        for l in &lines {
            if let Some(d) = &l.day {
                let k = seen.entry(d).or_insert(0);
                if *k >= archived_per_day.get(d.as_str()).copied().unwrap_or(0) {
                    break;
                }
                *k += 1;
            }
            progress.offset = l.end;
            if let Some((ts, h)) = l.anchor {
                progress.last_ts = Some(ts);
                progress.last_hash = Some(h);
            }
        }
        st.shards.insert(name, progress);
    }
    eprintln!(
        "cfn-archive: rebuilt the state from {} archive files and {} hot shards",
        files.values().map(Vec::len).sum::<usize>(),
        st.shards.len()
    );
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_the_longest_archive_tail_that_starts_the_shard() {
        let t = |v: &[u64]| v.iter().copied().collect::<VecDeque<u64>>();
        assert_eq!(overlap(&t(&[1, 2, 3]), &[2, 3, 4]), 2);
        assert_eq!(overlap(&t(&[1, 2, 3]), &[4, 5]), 0);
        // Identical records: the archive ends with one R, the shard holds R R.
        assert_eq!(overlap(&t(&[9, 7]), &[7, 7]), 1);
        assert_eq!(overlap(&t(&[7, 7]), &[7, 7, 7]), 2);
        assert_eq!(overlap(&t(&[1, 2, 1, 2]), &[1, 2, 1, 2, 5]), 4);
        assert_eq!(overlap(&t(&[]), &[1]), 0);
        assert_eq!(overlap(&t(&[1, 2, 3]), &[1, 2, 3]), 3);
    }
}
