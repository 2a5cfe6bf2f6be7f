//! Bringing the archive back to what the state records, and cleaning up after a killed run.

use super::*;
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
    for ArchiveFile { name, gz, .. } in archive_files(&ctx.archive_dir)? {
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
        let path = entry.path();
        // An --exec copy's private directory, left by a run killed while the program ran.
        if name.starts_with(super::cold::EXEC_DIR_PREFIX)
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me)
            && std::fs::remove_dir_all(&path).is_ok()
        {
            eprintln!(
                "cfn-archive: removed {} left by an interrupted run",
                path.display()
            );
            continue;
        }
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
        let idle = match cfn_core::fsutil::lock_is_free(&shard) {
            Ok(free) => free,
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
