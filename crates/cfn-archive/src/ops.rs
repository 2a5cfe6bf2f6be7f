//! The four operations. Each runs under the archive directory's lock, after [`recover`] has
//! brought the archive back to what the state records.

use crate::hooks::{check_write, crash_point};
use crate::state::{ArchiveState, ShardProgress, TrimInFlight, save};
use cfn_core::exit::{Exit, fail};
use cfn_core::fsutil::{Access, lock_with_timeout, open_safe, skip_refused, sync_dir};
use cfn_core::paths::{archive_path, fnv1a64, list_shards, parse_archive_name};
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
                _ => continue,
            });
        }
        format!("cfn-archive: {}", out.join("; "))
    }
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

/// Plain and gzipped archive files in the directory: (name, day, shard, gz).
fn archive_files(dir: &Path) -> anyhow::Result<Vec<(String, String, u32, bool)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_fail("cannot read", dir, &e)),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((day, n, gz)) = parse_archive_name(&name) {
            out.push((name, day, n, gz));
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

/// Brings the archive back to what the state records: finishes or forgets interrupted
/// rotations and cuts plain archive files back to their committed length (bytes past it were
/// written by a sync that crashed before committing, and will be copied again).
///
/// # Errors
/// Exit 78 when an archive file is shorter than recorded (edited by hand) or exists with no
/// state at all.
pub fn recover(ctx: &Ctx, state: &mut ArchiveState, had_state: bool) -> anyhow::Result<bool> {
    let mut changed = false;
    for (plain, gz_before) in std::mem::take(&mut state.rotating) {
        let gz = ctx.archive_dir.join(format!("{plain}.gz"));
        let gz_now = std::fs::symlink_metadata(&gz).map(|m| m.len()).unwrap_or(0);
        if gz_now != gz_before {
            // The rotated file was renamed into place; only removing the plain one was left.
            if !ctx.dry_run {
                let _ = std::fs::remove_file(ctx.archive_dir.join(&plain));
            }
            state.archives.remove(&plain);
        }
        changed = true;
    }
    for (name, _, _, gz) in archive_files(&ctx.archive_dir)? {
        if gz {
            continue;
        }
        let path = ctx.archive_dir.join(&name);
        let committed = match state.archives.get(&name) {
            Some(c) => *c,
            None if !had_state => {
                return Err(fail(
                    Exit::Config,
                    format!(
                        "{} exists but there is no archive state; rebuild it with: cfn-archive sync --rebuild-state",
                        path.display()
                    ),
                ));
            }
            // Not written by a sync (every file is registered before its first byte).
            None => continue,
        };
        // Opened before anything is measured or cut, never through a symlink and never
        // another user's file: a swapped link here would truncate whatever it points at.
        let access = if ctx.dry_run {
            Access::Read
        } else {
            Access::ReadWrite
        };
        let file = open_safe(&path, access)?;
        let len = file.metadata()?.len();
        if len < committed {
            return Err(fail(
                Exit::Config,
                format!(
                    "{} is {len} bytes, shorter than the {committed} recorded: it was changed outside cfn-archive; check it, then run cfn-archive sync --rebuild-state",
                    path.display()
                ),
            ));
        }
        if len > committed && !ctx.dry_run {
            if committed == 0 {
                std::fs::remove_file(&path)?;
            } else {
                file.set_len(committed)?;
                file.sync_all()?;
            }
        }
    }
    let existing: Vec<String> = state
        .archives
        .keys()
        .filter(|n| !ctx.archive_dir.join(n).exists())
        .cloned()
        .collect();
    for n in existing {
        state.archives.remove(&n);
        changed = true;
    }
    Ok(changed)
}

/// Removes the temp files a killed run leaves behind: partial `.gz` files of a rotation and
/// state files in the archive directory (only one cfn-archive runs there, and the caller
/// holds its lock), and partial trim copies in the hot directory whose shard is not locked
/// now (a trim writes its copy under the shard's lock). Only our own regular files.
pub fn clean_stale_temp_files(ctx: &Ctx) {
    let me = cfn_core::fsutil::effective_uid();
    let ours = |path: &Path| {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.uid() == me)
    };
    let state_tmp = format!(".{}.", crate::state::STATE_FILE);
    for entry in std::fs::read_dir(&ctx.archive_dir).into_iter().flatten() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = (name.starts_with(".cfn-metrics-") && name.contains(".jsonl.gz."))
            || (name.starts_with(&state_tmp) && name.ends_with(".tmp"));
        if stale && ours(&entry.path()) && std::fs::remove_file(entry.path()).is_ok() {
            eprintln!(
                "cfn-archive: removed {} left by an interrupted run",
                entry.path().display()
            );
        }
    }
    for entry in std::fs::read_dir(&ctx.metrics_dir).into_iter().flatten() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix(".cfn-metrics-")
            .and_then(|r| r.split_once(".trim."))
            .and_then(|(n, _)| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !ours(&entry.path()) {
            continue;
        }
        let shard = cfn_core::paths::shard_path(&ctx.metrics_dir, n);
        let idle = match open_safe(&shard, Access::Read) {
            Ok(f) => f.try_lock().is_ok(),
            Err(e) => cfn_core::exit::exit_for(&e) == Exit::NoInput,
        };
        if idle && std::fs::remove_file(entry.path()).is_ok() {
            eprintln!(
                "cfn-archive: removed {} left by an interrupted trim",
                entry.path().display()
            );
        }
    }
}

/// An archive file being appended to in this sync.
struct Sink {
    path: PathBuf,
    file: File,
    committed: u64,
    written: u64,
    pending: Vec<u8>,
}

impl Sink {
    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        check_write(self.pending.len())?;
        self.file.write_all(&self.pending)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

fn resume_point(file: &File, name: &str, prog: &ShardProgress) -> anyhow::Result<Position> {
    match prog.last_hash {
        Some(h) => {
            let mut f = file;
            f.seek(SeekFrom::Start(0))?;
            cfn_core::reader::resume_position(BufReader::new(f), name, |raw| fnv1a64(raw) == h)
        }
        None => Ok(Position::default()),
    }
}

/// Copies every record appended to the hot shards since the last sync into the archive file
/// of its UTC day, then commits the progress.
///
/// # Errors
/// Exit 74 on write errors (disk full): the archive files are cut back, the state and the
/// hot shards are untouched.
pub fn sync(ctx: &Ctx, state: &mut ArchiveState, summary: &mut Summary) -> anyhow::Result<()> {
    let shards = match list_shards(&ctx.metrics_dir) {
        Ok(s) => s,
        Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut sinks: BTreeMap<String, Sink> = BTreeMap::new();
    let mut progress: BTreeMap<String, ShardProgress> = BTreeMap::new();
    let today = utc_day(ctx.now);
    let result = (|| -> anyhow::Result<()> {
        for (n, path) in &shards {
            let name = path
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let Some(mut file) = skip_refused("cfn-archive", false, open_safe(path, Access::Read))?
            else {
                // Keep what is known of it, in case it comes back as a proper shard.
                if let Some(prev) = state.shards.get(&name) {
                    progress.insert(name, prev.clone());
                }
                continue;
            };
            let meta = file.metadata()?;
            let prev = state.shards.get(&name).cloned().unwrap_or_default();
            let same =
                prev.dev == meta.dev() && prev.ino == meta.ino() && prev.offset <= meta.len();
            let trimmed = state
                .trimming
                .get(&name)
                .filter(|t| t.dev == meta.dev() && t.ino == meta.ino() && t.cut <= prev.offset);
            let start = if same {
                Position {
                    offset: prev.offset,
                    line: 0,
                }
            } else if let Some(t) = trimmed {
                // A trim renamed this file into place and crashed before committing.
                Position {
                    offset: prev.offset - t.cut,
                    line: 0,
                }
            } else {
                resume_point(&file, &name, &prev)?
            };
            file.seek(SeekFrom::Start(start.offset))?;
            let mut reader = RecordReader::new(
                BufReader::with_capacity(256 * 1024, &file),
                path.display().to_string(),
            )
            .with_position(start);
            reader.leave_partial_tail = true;
            let mut last_day = None::<String>;
            let mut last = (prev.last_ts, prev.last_hash);
            loop {
                let item = reader.next_item_with(|item| match item {
                    Item::Record(rec) => (
                        Some((utc_day(rec.ts_ms), rec.ts_ms, fnv1a64(rec.raw))),
                        rec.raw.to_vec(),
                    ),
                    Item::Malformed { raw, .. } => (None, raw.to_vec()),
                })?;
                let Some((info, raw)) = item else { break };
                let day = match &info {
                    Some((day, ts, h)) => {
                        last = (Some(*ts), Some(*h));
                        summary.synced_records += 1;
                        day.clone()
                    }
                    // Malformed lines travel with the records around them, unchanged.
                    None => {
                        summary.synced_malformed += 1;
                        last_day.clone().unwrap_or_else(|| today.clone())
                    }
                };
                summary.synced_bytes += raw.len() as u64 + 1;
                let target = archive_path(&ctx.archive_dir, &day, *n);
                let tname = target
                    .file_name()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                last_day = Some(day);
                if ctx.dry_run {
                    continue;
                }
                if !sinks.contains_key(&tname) {
                    let file = open_archive_append(&target)?;
                    let committed = match state.archives.get(&tname) {
                        Some(c) => *c,
                        None => {
                            // Register a file before the first byte goes into it, so recovery
                            // after a crash knows to cut it back, and leaves alone any file
                            // it does not know (an operator's restored archive, say).
                            let len = file
                                .metadata()
                                .map_err(|e| io_fail("cannot stat", &target, &e))?
                                .len();
                            state.archives.insert(tname.clone(), len);
                            save(&ctx.archive_dir, state)?;
                            len
                        }
                    };
                    sinks.insert(
                        tname.clone(),
                        Sink {
                            path: target,
                            file,
                            committed,
                            written: 0,
                            pending: Vec::new(),
                        },
                    );
                }
                let sink = sinks.get_mut(&tname).expect("inserted above");
                sink.pending.extend_from_slice(&raw);
                sink.pending.push(b'\n');
                if sink.pending.len() >= FLUSH_BYTES {
                    sink.flush()
                        .map_err(|e| io_fail("cannot write", &sink.path, &e))?;
                    crash_point("after_first_flush");
                }
            }
            progress.insert(
                name,
                ShardProgress {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    offset: reader.position().offset,
                    last_ts: last.0,
                    last_hash: last.1,
                },
            );
        }
        for sink in sinks.values_mut() {
            sink.flush()
                .map_err(|e| io_fail("cannot write", &sink.path, &e))?;
        }
        crash_point("after_writes");
        for sink in sinks.values() {
            sink.file
                .sync_all()
                .map_err(|e| io_fail("cannot fsync", &sink.path, &e))?;
        }
        sync_dir(&ctx.archive_dir);
        crash_point("after_fsync");
        Ok(())
    })();
    if let Err(e) = result {
        // Leave the archive as the state describes it; the next sync copies the rest.
        for sink in sinks.values() {
            let _ = sink.file.set_len(sink.committed);
        }
        return Err(e);
    }
    if ctx.dry_run {
        return Ok(());
    }
    for (name, sink) in &sinks {
        state
            .archives
            .insert(name.clone(), sink.committed + sink.written);
    }
    state.shards = progress;
    state.trimming.clear();
    save(&ctx.archive_dir, state)
}

/// Opens an archive file for appending (created 0600; a planted symlink or another user's
/// file is refused, as for the hot shards).
fn open_archive_append(path: &Path) -> anyhow::Result<File> {
    open_safe(
        path,
        Access::Append {
            create: true,
            mode: 0o600,
        },
    )
}

/// Removes from each hot shard the records older than `hot` that are already archived,
/// rewriting it under its lock and renaming it into place (writers re-check the inode).
///
/// # Errors
/// Exit 75 when a shard's lock is busy past the timeout.
pub fn trim(
    ctx: &Ctx,
    state: &mut ArchiveState,
    hot: Duration,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let cutoff = ctx.now - hot.as_millis() as i64;
    let shards = match list_shards(&ctx.metrics_dir) {
        Ok(s) => s,
        Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput => return Ok(()),
        Err(e) => return Err(e),
    };
    for (n, path) in shards {
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(prog) = state.shards.get(&name).cloned() else {
            continue;
        };
        let Some(mut file) = skip_refused("cfn-archive", false, open_safe(&path, Access::Read))?
        else {
            continue;
        };
        if !lock_with_timeout(&file, ctx.lock_timeout)? {
            return Err(cfn_core::fsutil::lock_timeout(&path, ctx.lock_timeout));
        }
        let meta = file.metadata()?;
        // Only what this inode's archived prefix covers can go.
        if meta.dev() != prog.dev
            || meta.ino() != prog.ino
            || !cfn_core::fsutil::same_file_at_path(&file, &path)?
        {
            continue;
        }
        let mut reader = RecordReader::new(BufReader::new(&file), name.clone());
        reader.leave_partial_tail = true;
        let mut cut = 0u64;
        let mut removed = 0u64;
        loop {
            let step = reader.next_item_with(|item| match item {
                Item::Record(rec) => rec.ts_ms < cutoff,
                Item::Malformed { .. } => true,
            })?;
            match step {
                Some(true) if reader.position().offset <= prog.offset => {
                    cut = reader.position().offset;
                    removed += 1;
                }
                _ => break,
            }
        }
        if cut == 0 {
            continue;
        }
        summary.trimmed_records += removed;
        summary.trimmed_bytes += cut;
        if ctx.dry_run {
            continue;
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".cfn-metrics-{n}.trim."))
            .tempfile_in(&ctx.metrics_dir)
            .map_err(|e| io_fail("cannot create a temp file in", &ctx.metrics_dir, &e))?;
        file.seek(SeekFrom::Start(cut))?;
        std::io::copy(&mut file, tmp.as_file_mut())
            .map_err(|e| io_fail("cannot write", tmp.path(), &e))?;
        // Keep the shard's owner and mode, so writers can still open it.
        std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()))?;
        tmp.as_file().set_permissions(meta.permissions())?;
        tmp.as_file().sync_all()?;
        let new_meta = tmp.as_file().metadata()?;
        state.trimming.insert(
            name.clone(),
            TrimInFlight {
                dev: new_meta.dev(),
                ino: new_meta.ino(),
                cut,
            },
        );
        save(&ctx.archive_dir, state)?;
        tmp.persist(&path)
            .map_err(|e| io_fail("cannot rename into", &path, &e.error))?;
        crash_point("after_trim_rename");
        state.trimming.remove(&name);
        state.shards.insert(
            name,
            ShardProgress {
                dev: new_meta.dev(),
                ino: new_meta.ino(),
                offset: prog.offset - cut,
                ..prog
            },
        );
        save(&ctx.archive_dir, state)?;
        drop(file);
    }
    Ok(())
}

fn show_progress(ctx: &Ctx, i: usize, total: usize, name: &str) {
    if ctx.progress {
        eprint!("\rcfn-archive: rotating {}/{total} {name}\x1b[K", i + 1);
        if i + 1 == total {
            eprintln!();
        }
    }
}

/// Compares a gzip stream with the plain file it was made from, byte for byte.
fn verify_member(gz: &mut File, from: u64, plain: &Path) -> anyhow::Result<()> {
    gz.seek(SeekFrom::Start(from))?;
    let mut dec = flate2::read::MultiGzDecoder::new(BufReader::new(gz));
    let mut orig = BufReader::new(open_safe(plain, Access::Read)?);
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut dec, &mut a)?;
        let m = read_full(&mut orig, &mut b)?;
        if n != m || a[..n] != b[..m] {
            return Err(fail(
                Exit::IoErr,
                format!(
                    "verification of the gzip of {} failed: contents differ",
                    plain.display()
                ),
            ));
        }
        if n == 0 {
            return Ok(());
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match r.read(&mut buf[total..])? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}

/// Gzips every archive file of a finished UTC day into `….jsonl.gz` (appending a gzip
/// member when the `.gz` exists), verifies it, then removes the plain file. Today's files are
/// never rotated.
///
/// # Errors
/// Exit 74 on write or verification errors; the plain file is kept.
pub fn rotate(ctx: &Ctx, state: &mut ArchiveState, summary: &mut Summary) -> anyhow::Result<()> {
    let today = utc_day(ctx.now);
    let todo: Vec<(String, String)> = archive_files(&ctx.archive_dir)?
        .into_iter()
        .filter(|(_, day, _, gz)| !gz && *day < today)
        .map(|(name, day, _, _)| (name, day))
        .collect();
    for (i, (name, _)) in todo.iter().enumerate() {
        show_progress(ctx, i, todo.len(), name);
        let plain = ctx.archive_dir.join(name);
        let gz_path = ctx.archive_dir.join(format!("{name}.gz"));
        let plain_file = open_safe(&plain, Access::Read)?;
        let plain_len = plain_file.metadata()?.len();
        let gz_before = match std::fs::symlink_metadata(&gz_path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_fail("cannot stat", &gz_path, &e)),
        };
        if ctx.dry_run {
            summary.rotated_files += 1;
            continue;
        }
        state.rotating.insert(name.clone(), gz_before);
        save(&ctx.archive_dir, state)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.gz."))
            .tempfile_in(&ctx.archive_dir)
            .map_err(|e| io_fail("cannot create a temp file in", &ctx.archive_dir, &e))?;
        if gz_before > 0 {
            std::io::copy(&mut open_safe(&gz_path, Access::Read)?, tmp.as_file_mut())?;
        }
        {
            // Streamed: a day file can be larger than memory.
            let mut enc =
                flate2::write::GzEncoder::new(tmp.as_file_mut(), flate2::Compression::default());
            std::io::copy(&mut &plain_file, &mut enc)
                .map_err(|e| io_fail("cannot write", &gz_path, &e))?;
            enc.finish()
                .map_err(|e| io_fail("cannot write", &gz_path, &e))?;
        }
        tmp.as_file().sync_all()?;
        // Byte for byte against the plain file: nothing else needs checking.
        verify_member(tmp.as_file_mut(), gz_before, &plain)?;
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let gz_after = tmp.as_file().metadata()?.len();
        tmp.persist(&gz_path)
            .map_err(|e| io_fail("cannot rename into", &gz_path, &e.error))?;
        sync_dir(&ctx.archive_dir);
        crash_point("after_gz_rename");
        std::fs::remove_file(&plain)?;
        state.archives.remove(name);
        state.rotating.remove(name);
        save(&ctx.archive_dir, state)?;
        summary.rotated_files += 1;
        summary.bytes_saved += plain_len as i64 - (gz_after - gz_before) as i64;
    }
    Ok(())
}

/// Deletes archive files whose day (from the file name) is older than `keep`, saying which.
///
/// # Errors
/// I/O errors deleting a file.
pub fn prune(
    ctx: &Ctx,
    state: &mut ArchiveState,
    keep: Duration,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let today_start = ctx.now.div_euclid(DAY_MS) * DAY_MS;
    let keep_days = (keep.as_millis() as i64).div_euclid(DAY_MS);
    let limit = today_start - keep_days * DAY_MS;
    let mut changed = false;
    for (name, day, _, _) in archive_files(&ctx.archive_dir)? {
        let Some(start) = parse_utc_day(&day) else {
            continue;
        };
        if start >= limit {
            continue;
        }
        let path = ctx.archive_dir.join(&name);
        if ctx.dry_run {
            eprintln!("cfn-archive: would prune {}", path.display());
        } else {
            std::fs::remove_file(&path).map_err(|e| io_fail("cannot delete", &path, &e))?;
            eprintln!("cfn-archive: pruned {}", path.display());
            changed |= state.archives.remove(&name).is_some();
        }
        summary.pruned_files += 1;
        summary.pruned.push(name);
    }
    if changed {
        save(&ctx.archive_dir, state)?;
    }
    Ok(())
}
