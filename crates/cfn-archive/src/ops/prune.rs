//! `prune`: delete archive files older than the retention.

use super::*;
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
    for ArchiveFile { name, day, .. } in archive_files(&ctx.archive_dir)? {
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
