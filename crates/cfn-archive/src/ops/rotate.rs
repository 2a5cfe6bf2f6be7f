//! `rotate`: gzip the day files of finished days, verified byte for byte.

use super::*;
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

/// The `.gz` as it will be: its current bytes, then the plain file as one more gzip member,
/// in a temp file beside it, synced, verified against the plain file byte for byte, and
/// private; with its length.
///
/// # Errors
/// Exit 74 on write or verification errors.
fn gzipped_copy(
    ctx: &Ctx,
    name: &str,
    plain_file: &std::fs::File,
    gz_path: &std::path::Path,
    gz_before: u64,
) -> anyhow::Result<(tempfile::NamedTempFile, u64)> {
    let plain = ctx.archive_dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.gz."))
        .tempfile_in(&ctx.archive_dir)
        .map_err(|e| io_fail("cannot create a temp file in", &ctx.archive_dir, &e))?;
    if gz_before > 0 {
        std::io::copy(
            &mut open_safe(gz_path, Access::Read)?,
            &mut WriteChecked::new(tmp.as_file_mut()),
        )
        .map_err(|e| io_fail("cannot write", gz_path, &e))?;
    }
    {
        // Streamed: a day file can be larger than memory.
        let mut enc = flate2::write::GzEncoder::new(
            WriteChecked::new(tmp.as_file_mut()),
            flate2::Compression::default(),
        );
        std::io::copy(&mut &*plain_file, &mut enc)
            .map_err(|e| io_fail("cannot write", gz_path, &e))?;
        enc.finish()
            .map_err(|e| io_fail("cannot write", gz_path, &e))?;
    }
    tmp.as_file().sync_all()?;
    // Byte for byte against the plain file: nothing else needs checking.
    verify_member(tmp.as_file_mut(), gz_before, &plain)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let gz_after = tmp.as_file().metadata()?.len();
    Ok((tmp, gz_after))
}

/// Gzips every archive file of a finished UTC day into `….jsonl.gz` (appending a gzip
/// member when the `.gz` exists), verifies it, then removes the plain file. Today's files are
/// never rotated.
///
/// # Errors
/// Exit 74 on write or verification errors; the plain file is kept.
pub fn rotate(
    ctx: &Ctx,
    state: &mut ArchiveState,
    upload: Option<&super::cold::ColdTarget>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    rotate_days_before(ctx, state, &utc_day(ctx.now), upload, summary)
}

/// [`rotate`] for the days before `day` (`YYYYMMDD`, at most today).
///
/// # Errors
/// As [`rotate`].
pub fn rotate_days_before(
    ctx: &Ctx,
    state: &mut ArchiveState,
    day: &str,
    upload: Option<&super::cold::ColdTarget>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let today = utc_day(ctx.now);
    let before = day.min(today.as_str());
    let todo: Vec<String> = archive_files(&ctx.archive_dir)?
        .into_iter()
        .filter(|f| !f.gz && f.day.as_str() < before)
        .map(|f| f.name)
        .collect();
    for (i, name) in todo.iter().enumerate() {
        show_progress(ctx, i, todo.len(), name);
        let plain = ctx.archive_dir.join(name);
        let gz_path = ctx.archive_dir.join(format!("{name}.gz"));
        // Another user's file (or a link) named like a day file in a shared archive
        // directory is skipped with a warning; the other days are still rotated.
        let Some(plain_file) = skip_refused("cfn-archive", false, open_safe(&plain, Access::Read))?
        else {
            continue;
        };
        if std::fs::symlink_metadata(&gz_path).is_ok()
            && skip_refused("cfn-archive", false, open_safe(&gz_path, Access::Read))?.is_none()
        {
            continue;
        }
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
        let (tmp, gz_after) = gzipped_copy(ctx, name, &plain_file, &gz_path, gz_before)?;
        crash_point("before_gz_rename");
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
        // --upload-on-rotate: the cold copy is a day behind, not a retention period.
        if let Some(t) = upload {
            super::cold::send(ctx, state, t, &format!("{name}.gz"), summary)?;
        }
    }
    Ok(())
}
