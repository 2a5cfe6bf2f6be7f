//! `sync`: copy what was appended to the hot shards into the day files, exactly once.

use super::*;
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
    // Where each shard's copy started in its file, for the marks a trim's grace reads.
    let mut synced_from: BTreeMap<String, u64> = BTreeMap::new();
    let result = (|| -> anyhow::Result<()> {
        for (n, path) in &shards {
            let name = file_name(path);
            let Some(file) = skip_refused("cfn-archive", false, open_safe(path, Access::Read))?
            else {
                // Keep what is known of it, in case it comes back as a proper shard.
                if let Some(prev) = state.shards.get(&name) {
                    progress.insert(name, prev.clone());
                }
                continue;
            };
            let (copied, from) = copy_shard(ctx, state, *n, path, &file, &mut sinks, summary)?;
            synced_from.insert(name.clone(), from);
            progress.insert(name, copied);
        }
        make_durable(ctx, &mut sinks)
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
    note_syncs(state, &progress, &synced_from);
    state.shards = progress;
    state.forget_syncs_of_other_files();
    state.trimming.clear();
    save(&ctx.archive_dir, state)
}

/// Marks what this sync copied of each shard (on the real clock, as the followers the
/// trim's grace waits for run on it). A file other than the one the state knew is marked
/// from its start: what is in it before the copy began may have been synced just now too,
/// in the file a trim renamed away before this run could record it.
fn note_syncs(
    state: &mut ArchiveState,
    progress: &BTreeMap<String, ShardProgress>,
    synced_from: &BTreeMap<String, u64>,
) {
    let now = cfn_core::time::now_ms();
    for (name, copied) in progress {
        let Some(&from) = synced_from.get(name) else {
            continue;
        };
        let known = state.shards.get(name).map(ShardProgress::id) == Some(copied.id());
        if copied.offset > from || !known {
            state.note_synced(name, copied.id(), if known { from } else { 0 }, now);
        }
    }
}

/// Where copying shard `name` resumes: the committed offset in the same file; after a trim
/// that crashed before committing, the offset less what it cut; in any other file, just
/// after the last record copied.
fn resume_at(
    state: &ArchiveState,
    name: &str,
    file: &File,
    meta: &std::fs::Metadata,
) -> anyhow::Result<Position> {
    let prev = state.shards.get(name).cloned().unwrap_or_default();
    if prev.change_in(file, meta)? == Change::Same {
        return Ok(Position {
            offset: prev.offset,
            line: 0,
        });
    }
    let trimmed = state
        .trimming
        .get(name)
        .filter(|t| t.dev == meta.dev() && t.ino == meta.ino() && t.cut <= prev.offset);
    match trimmed {
        Some(t) => Ok(Position {
            offset: prev.offset - t.cut,
            line: 0,
        }),
        None => prev.resume_in(file, name),
    }
}

/// Copies one shard's new lines into the day files' sinks; returns its new progress and
/// where in the file the copy started.
fn copy_shard(
    ctx: &Ctx,
    state: &mut ArchiveState,
    n: u32,
    path: &Path,
    mut file: &File,
    sinks: &mut BTreeMap<String, Sink>,
    summary: &mut Summary,
) -> anyhow::Result<(ShardProgress, u64)> {
    let name = file_name(path);
    let meta = file.metadata()?;
    let start = resume_at(state, &name, file, &meta)?;
    file.seek(SeekFrom::Start(start.offset))?;
    let mut reader = RecordReader::new(
        BufReader::with_capacity(256 * 1024, file),
        path.display().to_string(),
    )
    .with_position(start);
    reader.leave_partial_tail = true;
    let mut cursor = state.shards.get(&name).cloned().unwrap_or_default();
    let today = utc_day(ctx.now);
    let mut last_day = None::<String>;
    loop {
        let item = reader.next_item_with(|item| match item {
            Item::Record(rec) => (Some((utc_day(rec.ts_ms), rec.ts_ms)), rec.raw.to_vec()),
            Item::Malformed { raw, .. } => (None, raw.to_vec()),
        })?;
        let Some((record, raw)) = item else { break };
        let day = match record {
            Some((day, ts)) => {
                cursor.note_record(ts, &raw);
                summary.synced_records += 1;
                day
            }
            // Malformed lines travel with the records around them, unchanged.
            None => {
                summary.synced_malformed += 1;
                last_day.clone().unwrap_or_else(|| today.clone())
            }
        };
        summary.synced_bytes += raw.len() as u64 + 1;
        let target = archive_path(&ctx.archive_dir, &day, n);
        last_day = Some(day);
        if ctx.dry_run {
            continue;
        }
        let sink = sink_for(ctx, state, sinks, target)?;
        sink.pending.extend_from_slice(&raw);
        sink.pending.push(b'\n');
        if sink.pending.len() >= FLUSH_BYTES {
            sink.flush()
                .map_err(|e| io_fail("cannot write", &sink.path, &e))?;
            crash_point("after_first_flush");
        }
    }
    cursor.move_to(FileId::of(&meta), reader.position().offset);
    Ok((cursor, start.offset))
}

/// The sink of the day file at `target`, opened (and registered in the state before its
/// first byte, so recovery after a crash knows to cut it back, and leaves alone any file it
/// does not know, such as an operator's restored archive) on first use.
fn sink_for<'s>(
    ctx: &Ctx,
    state: &mut ArchiveState,
    sinks: &'s mut BTreeMap<String, Sink>,
    target: PathBuf,
) -> anyhow::Result<&'s mut Sink> {
    let tname = file_name(&target);
    if !sinks.contains_key(&tname) {
        let file = open_archive_append(&target)?;
        let committed = match state.archives.get(&tname) {
            Some(c) => *c,
            None => {
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
    Ok(sinks.get_mut(&tname).expect("inserted above"))
}

/// Writes what is pending and fsyncs every day file and the directory, before the state
/// may say any of it was copied.
fn make_durable(ctx: &Ctx, sinks: &mut BTreeMap<String, Sink>) -> anyhow::Result<()> {
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
