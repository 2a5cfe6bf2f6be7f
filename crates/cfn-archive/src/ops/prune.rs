//! `prune`: delete archive files older than the retention, after handing them to cold
//! storage when asked to.

use super::cold::{ColdTarget, send};
use super::*;
/// Deletes archive files whose day (from the file name) is older than `keep`, saying which;
/// with a cold `target`, each only once a verified copy is there.
///
/// # Errors
/// I/O errors deleting a file; the target's errors (the file and the rest stay).
pub fn prune(
    ctx: &Ctx,
    state: &mut ArchiveState,
    keep: Duration,
    target: Option<&ColdTarget>,
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
        if let Some(t) = target
            && !send(ctx, state, t, &name, summary)?
        {
            // A dry run: nothing was sent, so nothing may go.
            summary.pruned_files += 1;
            summary.pruned.push(name);
            continue;
        }
        if ctx.dry_run {
            eprintln!("cfn-archive: would prune {}", path.display());
        } else {
            std::fs::remove_file(&path).map_err(|e| io_fail("cannot delete", &path, &e))?;
            eprintln!("cfn-archive: pruned {}", path.display());
            changed |= state.archives.remove(&name).is_some();
            changed |= state.cold.remove(&name).is_some();
        }
        summary.pruned_files += 1;
        summary.pruned.push(name);
    }
    if changed {
        save(&ctx.archive_dir, state)?;
    }
    Ok(())
}
