//! `sync --rebuild-state`: reconstructs a lost or corrupt state from what is on disk.
//!
//! Archive files are taken as committed up to their last complete line. For each hot shard,
//! the newest archived record of that shard (the last line of its newest day file) is looked
//! up in the shard; copying resumes after it. Shards are in time order, so what precedes it
//! is archived and what follows is not.

use crate::ops::Ctx;
use crate::state::{ArchiveState, ShardProgress};
use cfn_core::paths::{fnv1a64, list_shards, parse_archive_name};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;

/// The last complete line of a reader (plain or decompressed) that is a valid record: the
/// anchor to look for in the hot shard (a malformed line cannot be found by record).
fn last_line(r: impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut last = None;
    let mut buf = Vec::new();
    let mut br = BufReader::new(r);
    loop {
        buf.clear();
        let n = br.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok(last);
        }
        buf.pop();
        if cfn_core::reader::parse_record(&buf).is_ok() {
            last = Some(buf.clone());
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
    // Newest archived line per shard number: (day, line).
    let mut newest: BTreeMap<u32, (String, Vec<u8>)> = BTreeMap::new();
    let mut names: Vec<String> = std::fs::read_dir(&ctx.archive_dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        let Some((day, n, gz)) = parse_archive_name(&name) else {
            continue;
        };
        let path = ctx.archive_dir.join(&name);
        let file = std::fs::File::open(&path)?;
        let line = if gz {
            last_line(flate2::read::MultiGzDecoder::new(BufReader::new(file)))?
        } else {
            // Committed up to the last complete line; a partial tail is cut by recovery.
            let bytes = std::fs::read(&path)?;
            let end = bytes.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
            st.archives.insert(name.clone(), end as u64);
            last_line(&bytes[..end])?
        };
        if let Some(line) = line
            && newest.get(&n).is_none_or(|(d, _)| *d <= day)
        {
            newest.insert(n, (day, line));
        }
    }
    let shards = list_shards(&ctx.metrics_dir).unwrap_or_default();
    for (n, path) in shards {
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(file) = cfn_core::fsutil::skip_refused(
            "cfn-archive",
            false,
            cfn_core::fsutil::open_safe(&path, cfn_core::fsutil::Access::Read),
        )?
        else {
            continue;
        };
        let meta = file.metadata()?;
        // No archived record of this shard (or none parses): nothing of it is known to be
        // archived, so copying starts at the beginning.
        let Some((rec_ts, line)) = newest
            .get(&n)
            .and_then(|(_, l)| Some((cfn_core::reader::parse_record(l).ok()?.ts_ms, l)))
        else {
            st.shards.insert(
                name,
                ShardProgress {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    ..Default::default()
                },
            );
            continue;
        };
        let hash = fnv1a64(line);
        let pos = cfn_core::reader::resume_position(BufReader::new(&file), &name, rec_ts, |raw| {
            fnv1a64(raw) == hash
        })?;
        st.shards.insert(
            name,
            ShardProgress {
                dev: meta.dev(),
                ino: meta.ino(),
                offset: pos.offset,
                last_ts: Some(rec_ts),
                last_hash: Some(hash),
            },
        );
    }
    eprintln!(
        "cfn-archive: rebuilt the state from {} archive files and {} hot shards",
        st.archives.len(),
        st.shards.len()
    );
    Ok(st)
}
