//! `prune`: delete archive files older than the retention, after handing them to cold
//! storage when asked to.

use super::cold::{ColdTarget, send};
use super::*;
use cfn_core::exit::exit_for;
/// Deletes archive files whose day (from the file name) is older than `keep`, saying which;
/// with a cold `target`, each only once a verified copy is there.
///
/// A file another user planted in a shared archive directory (or a link, a FIFO) is
/// skipped with a warning naming it; the other files are still pruned.
///
/// # Errors
/// I/O errors deleting a file, and the target's errors: the file stays, the others are
/// still tried, and the first error is returned at the end.
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
    // Only gzipped day files go to S3: a due plain file (rotate not run, or late records
    // synced since) is rotated first, into its day's `.gz`, whose new member is then the
    // part not yet in the store.
    if let Some(ColdTarget::S3(_)) = target {
        super::rotate::rotate_days_before(ctx, state, &utc_day(limit), None, summary)?;
    }
    let mut changed = false;
    let mut first_error = None;
    let mut fatal = None;
    for ArchiveFile { name, day, .. } in archive_files(&ctx.archive_dir)? {
        let Some(start) = parse_utc_day(&day) else {
            continue;
        };
        if start >= limit {
            continue;
        }
        let path = ctx.archive_dir.join(&name);
        if skip_refused("cfn-archive", false, open_safe(&path, Access::Read))?.is_none() {
            continue;
        }
        let sent = match target {
            Some(t) => match send(ctx, state, t, &name, summary) {
                Ok(sent) => Some(sent),
                // The store is down or refuses us: the other files would fail the same way.
                Err(e) if matches!(exit_for(&e), Exit::TempFail | Exit::Config) => {
                    fatal = Some(e);
                    break;
                }
                // This file's object is in the way: the others may still go.
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            },
            None => None,
        };
        if sent == Some(false) {
            // A dry run: nothing was sent, so nothing may go.
            summary.pruned_files += 1;
            summary.pruned.push(name);
            continue;
        }
        if ctx.dry_run {
            eprintln!("cfn-archive: would prune {}", path.display());
        } else {
            if let Err(e) = std::fs::remove_file(&path) {
                first_error.get_or_insert(io_fail("cannot delete", &path, &e));
                continue;
            }
            crash_point("after_prune_delete");
            eprintln!("cfn-archive: pruned {}", path.display());
            changed |= state.archives.remove(&name).is_some();
            changed |= state.cold.remove(&name).is_some();
        }
        summary.pruned_files += 1;
        summary.pruned.push(name);
    }
    // Saved whatever stopped the loop: files deleted before it must leave the state too.
    if changed {
        save(&ctx.archive_dir, state)?;
    }
    fatal.or(first_error).map_or(Ok(()), Err)
}
