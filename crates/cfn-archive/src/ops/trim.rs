//! `trim`: remove what is archived and older than the hot window from the shards.

use super::*;
use std::os::unix::fs::PermissionsExt as _;

/// How long a shard's lock is waited for once another shard's was held past the timeout.
const AFTER_BUSY_WAIT: Duration = Duration::from_millis(20);

/// Removes from each hot shard the records older than `hot` that are already archived,
/// rewriting it under its lock and renaming it into place (writers re-check the inode).
/// Records synced less than `grace` ago (on the real clock) stay, however old their
/// timestamps: a follower that has not looked at the shard since they were appended would
/// otherwise never see them (the archive keeps them by day, not where the shard had them).
///
/// A shard whose lock another process holds past the timeout (a member of the group can
/// hold its own shard's lock for ever) is skipped with a warning naming it, and the others
/// are trimmed; after the first such shard the rest are waited for 20 ms each, so many
/// locked shards cannot stall a run.
///
/// # Errors
/// Exit 75 at the end when a shard's lock was busy; I/O errors at once.
pub fn trim(
    ctx: &Ctx,
    state: &mut ArchiveState,
    (hot, grace): (Duration, Duration),
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let cutoff = ctx.now - hot.as_millis() as i64;
    let (wall_now, grace_ms) = (cfn_core::time::now_ms(), grace.as_millis() as i64);
    state.forget_settled_syncs(wall_now, grace_ms);
    let shards = match list_shards(&ctx.metrics_dir) {
        Ok(s) => s,
        Err(e) if cfn_core::exit::exit_for(&e) == Exit::NoInput => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut busy: Option<anyhow::Error> = None;
    for (n, path) in shards {
        let name = file_name(&path);
        let Some(prog) = state.shards.get(&name).cloned() else {
            continue;
        };
        let Some(file) = skip_refused("cfn-archive", false, open_safe(&path, Access::Read))? else {
            continue;
        };
        // After one shard held past the timeout, the others get a short wait: long enough
        // for a writer's append, short enough that many held locks cannot stall the run.
        let wait = if busy.is_some() {
            ctx.lock_timeout.min(AFTER_BUSY_WAIT)
        } else {
            ctx.lock_timeout
        };
        if !lock_with_timeout(&file, wait)? {
            let e = cfn_core::fsutil::lock_timeout(&path, ctx.lock_timeout);
            cfn_core::cli::warn("cfn-archive", format!("{e}; not trimmed this run"));
            busy.get_or_insert(e);
            continue;
        }
        let meta = file.metadata()?;
        // Only what this inode's archived prefix covers can go.
        if FileId::of(&meta) != prog.id() || !cfn_core::fsutil::same_file_at_path(&file, &path)? {
            continue;
        }
        let settled = state.settled_offset(&name, prog.id(), prog.offset, wall_now, grace_ms);
        let (cut, removed) = trimmable_prefix(&file, &name, cutoff, settled)?;
        if cut == 0 {
            continue;
        }
        summary.trimmed_records += removed;
        summary.trimmed_bytes += cut;
        if ctx.dry_run {
            continue;
        }
        let new_id = rewrite_from(ctx, state, n, &path, &file, (cut, cutoff))?;
        state.trimming.remove(&name);
        let mut moved = prog.clone();
        moved.move_to(new_id, prog.offset - cut);
        state.move_syncs(&name, (prog.id(), new_id), cut);
        state.shards.insert(name, moved);
        save(&ctx.archive_dir, state)?;
        // The shard's lock is held until here, so no writer appends to the old file.
        drop(file);
    }
    busy.map_or(Ok(()), Err)
}

/// The bytes at the start of the shard that may go, and how many lines they hold: whole
/// lines older than `cutoff` (malformed ones too), within the archived `archived` bytes.
fn trimmable_prefix(
    file: &File,
    name: &str,
    cutoff: EpochMs,
    archived: u64,
) -> anyhow::Result<(u64, u64)> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    let mut reader = RecordReader::new(BufReader::new(f), name);
    reader.leave_partial_tail = true;
    let (mut cut, mut removed) = (0u64, 0u64);
    while let Some(old) = reader.next_item_with(|item| match item {
        Item::Record(rec) => rec.ts_ms < cutoff,
        Item::Malformed { .. } => true,
    })? {
        if !old || reader.position().offset > archived {
            break;
        }
        cut = reader.position().offset;
        removed += 1;
    }
    Ok((cut, removed))
}

/// The mode a trimmed shard's new file gets from the old one's: its read and write bits,
/// never setuid, setgid, sticky or execute.
fn shard_mode(old: u32) -> u32 {
    old & 0o666
}

/// Writes the shard from byte `cut` on into a new file (same owner, read and write bits), records the
/// trim in the state, and renames the new file into place; returns its identity.
fn rewrite_from(
    ctx: &Ctx,
    state: &mut ArchiveState,
    n: u32,
    path: &Path,
    mut file: &File,
    (cut, cutoff): (u64, EpochMs),
) -> anyhow::Result<FileId> {
    let meta = file.metadata()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".cfn-metrics-{n}.trim."))
        .tempfile_in(&ctx.metrics_dir)
        .map_err(|e| io_fail("cannot create a temp file in", &ctx.metrics_dir, &e))?;
    file.seek(SeekFrom::Start(cut))?;
    std::io::copy(&mut file, tmp.as_file_mut())
        .map_err(|e| io_fail("cannot write", tmp.path(), &e))?;
    // Keep the shard's owner (root can), group and mode, so writers can still open it. An
    // archiver that is not root, trimming another group member's shard in a group-shared
    // directory, makes the new file its own: the group and mode are what let the members
    // append.
    let root = cfn_core::fsutil::effective_uid() == 0;
    match std::os::unix::fs::fchown(tmp.as_file(), root.then_some(meta.uid()), Some(meta.gid())) {
        Err(e) if !root && e.kind() == std::io::ErrorKind::PermissionDenied => {}
        other => other?,
    }
    // Read and write bits only: a setuid, setgid or execute bit an agent put on its shard
    // must not become a setuid file of the archiver's user holding the agent's bytes.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(shard_mode(meta.mode())))?;
    tmp.as_file().sync_all()?;
    let new_id = FileId::of(&tmp.as_file().metadata()?);
    // Recorded before the rename: a crash after it resumes at offset - cut, exactly, and a
    // follower that sees the new file finds how it came from the old one.
    state.trimming.insert(
        file_name(path),
        TrimInFlight {
            dev: new_id.dev,
            ino: new_id.ino,
            cut,
        },
    );
    let trims = state.trims.entry(file_name(path)).or_default();
    trims.push(cfn_core::cursor::Trim {
        from_dev: meta.dev(),
        from_ino: meta.ino(),
        to_dev: new_id.dev,
        to_ino: new_id.ino,
        cut,
        cutoff: Some(cutoff),
    });
    let over = trims.len().saturating_sub(cfn_core::cursor::TRIMS_KEPT);
    trims.drain(..over);
    save(&ctx.archive_dir, state)?;
    crash_point("before_trim_rename");
    tmp.persist(path)
        .map_err(|e| io_fail("cannot rename into", path, &e.error))?;
    crash_point("after_trim_rename");
    Ok(new_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_keeps_read_and_write_bits_and_drops_setuid_setgid_and_execute() {
        assert_eq!(shard_mode(0o6750), 0o640);
        assert_eq!(shard_mode(0o4777), 0o666);
        assert_eq!(shard_mode(0o1660), 0o660);
        assert_eq!(shard_mode(0o600), 0o600);
    }
}
