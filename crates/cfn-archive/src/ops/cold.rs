//! Cold storage: hand an archive file to S3 (or to a program) and know it is safe there
//! before anything deletes it.
//!
//! S3: the file (gzipped first into a temp file when still plain) is uploaded in one PUT
//! with Content-MD5, or in parts above a threshold (each part with its MD5, every part
//! recorded in the state as the store acknowledges it, so a killed upload resumes), then a
//! HEAD checks size and ETag against what was sent. Only then is the copy recorded in the
//! state; `prune` deletes a file only with such a record. S3 makes an object visible whole
//! or not at all (one PUT, or CompleteMultipartUpload), so the final name never holds a
//! partial object; an object already there that is not ours is never overwritten.

use super::*;
use crate::state::{ColdCopy, UploadInFlight};
use cfn_core::s3::{S3Client, S3Location, hex, md5_of, multipart_etag};

/// Where expired files go.
pub enum ColdTarget {
    S3 {
        client: Box<S3Client>,
        /// Where this host's copies go (`PREFIX/HOST/`).
        location: S3Location,
        /// The same without the host: copies recorded there by earlier versions still count.
        flat: S3Location,
        threshold: u64,
        part_size: u64,
        /// Parts in flight at once.
        threads: usize,
    },
    /// PROGRAM ARG... FILE, without a shell; exit 0 means the file is safe elsewhere.
    Exec(Vec<String>),
}

/// The upload source: the file itself, or a gzip of it in a temp file.
struct Source {
    path: PathBuf,
    object: String,
    size: u64,
    md5: String,
    _temp: Option<tempfile::TempPath>,
}

fn md5_file(path: &Path) -> anyhow::Result<(u64, String)> {
    use md5::Digest as _;
    let mut f = open_safe(path, Access::Read)?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&h.finalize())))
}

fn source(ctx: &Ctx, name: &str) -> anyhow::Result<Source> {
    let path = ctx.archive_dir.join(name);
    if name.ends_with(".gz") {
        let (size, md5) = md5_file(&path)?;
        return Ok(Source {
            path,
            object: name.to_string(),
            size,
            md5,
            _temp: None,
        });
    }
    // Still plain (today's, or a day rotate has not reached): gzipped on the way, into a
    // temp file so memory stays bounded. Deterministic (no name, time 0 in the header), so
    // a resumed upload sends the same bytes.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.gz."))
        .tempfile_in(&ctx.archive_dir)
        .map_err(|e| io_fail("cannot create a temp file in", &ctx.archive_dir, &e))?;
    {
        let mut enc = flate2::write::GzEncoder::new(
            WriteChecked(tmp.as_file_mut()),
            flate2::Compression::default(),
        );
        std::io::copy(&mut open_safe(&path, Access::Read)?, &mut enc)
            .map_err(|e| io_fail("cannot gzip for upload into", &ctx.archive_dir, &e))?;
        enc.finish()
            .map_err(|e| io_fail("cannot gzip for upload into", &ctx.archive_dir, &e))?;
    }
    let tmp_path = tmp.into_temp_path();
    let (size, md5) = md5_file(&tmp_path)?;
    Ok(Source {
        path: tmp_path.to_path_buf(),
        // Not `{name}.gz`: that is the day's rotated file's object, and a day can be in both
        // forms (late records after a rotation); each must reach the store whole.
        object: cfn_core::paths::cold_name_of_plain(name, &md5),
        size,
        md5,
        _temp: Some(tmp_path),
    })
}

/// A writer that fails like a full disk when the test hook says so.
struct WriteChecked<'a>(&'a mut File);

impl Write for WriteChecked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        check_write(buf.len())?;
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut f = open_safe(path, Access::Read)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The ETag the store gives `src` uploaded as is (one PUT) or in `part_size` parts.
fn expected_etag(src: &Source, multipart: bool, part_size: u64) -> anyhow::Result<String> {
    if !multipart {
        return Ok(src.md5.clone());
    }
    let mut md5s = Vec::new();
    let mut off = 0;
    while off < src.size {
        let n = part_size.min(src.size - off);
        md5s.push(md5_of(&read_at(&src.path, off, n)?).0);
        off += n;
    }
    Ok(multipart_etag(&md5s))
}

/// Sends archive file `name` to `target` unless a verified copy is already recorded;
/// returns true once it is safe elsewhere (and, for S3, recorded in the state).
///
/// # Errors
/// Exit 75 for a store that failed or timed out, 78 for credentials or a missing bucket,
/// 65 for an object in the way or a failed verification, 73/74 for local I/O. The file is
/// never touched.
pub fn send(
    ctx: &Ctx,
    state: &mut ArchiveState,
    target: &ColdTarget,
    name: &str,
    summary: &mut Summary,
) -> anyhow::Result<bool> {
    let (client, location, flat, threshold, part_size, threads) = match target {
        ColdTarget::Exec(argv) => return exec(ctx, argv, name),
        ColdTarget::S3 {
            client,
            location,
            flat,
            threshold,
            part_size,
            threads,
        } => (client, location, flat, *threshold, *part_size, *threads),
    };
    if ctx.dry_run {
        eprintln!(
            "cfn-archive: would upload {} to {}",
            name,
            location.url(&location.prefix)
        );
        return Ok(false);
    }
    let src = source(ctx, name)?;
    let key = format!("{}{}", location.prefix, src.object);
    let url = location.url(&key);
    let flat_url = flat.url(&format!("{}{}", flat.prefix, src.object));
    if let Some(c) = state.cold.get(name)
        && (c.url == url || c.url == flat_url)
        && c.size == src.size
        && c.md5 == src.md5
    {
        return Ok(true);
    }
    let multipart = src.size > threshold;
    let ours = state.cold.get(name).is_some_and(|c| c.url == url)
        || state.uploading.get(name).is_some_and(|u| u.url == url);
    let existing = client.head(&location.bucket, &key)?;
    // What the store's ETag must be: computed from the file only when an object is already
    // there; after an upload, from the parts' MD5s as they were sent.
    let mut etag = match &existing {
        Some(_) => expected_etag(&src, multipart, part_size)?,
        None => String::new(),
    };
    match existing {
        // Uploaded by a run that stopped before recording it.
        Some(info) if info.size == src.size && info.etag == etag => {}
        Some(info) if !ours => {
            return Err(fail(
                Exit::DataErr,
                format!(
                    "{url} already exists and is not {name} ({} bytes, ETag {}); not overwriting it, {name} is kept",
                    info.size, info.etag
                ),
            ));
        }
        _ => {
            // Where nothing was there, a conditional write: an object that appears meanwhile
            // (another host on the same prefix) is not overwritten.
            let if_absent = existing.is_none();
            etag = if multipart {
                upload_parts(
                    ctx, state, client, location, &key, &url, name, &src, part_size, threads,
                    if_absent,
                )?
            } else {
                client.put(
                    &location.bucket,
                    &key,
                    &read_at(&src.path, 0, src.size)?,
                    if_absent,
                )?;
                src.md5.clone()
            };
            summary.uploaded_files += 1;
            summary.uploaded_bytes += src.size;
        }
    }
    // Verified by what the store says it holds, not by what was sent.
    match client.head(&location.bucket, &key)? {
        Some(info) if info.size == src.size && info.etag == etag => {}
        other => {
            return Err(fail(
                Exit::DataErr,
                format!(
                    "verification of {url} failed: the store holds {other:?}, expected {} bytes with ETag {etag}; {name} is kept",
                    src.size
                ),
            ));
        }
    }
    state.uploading.remove(name);
    state.cold.insert(
        name.to_string(),
        ColdCopy {
            url: url.clone(),
            size: src.size,
            md5: src.md5.clone(),
            etag,
        },
    );
    save(&ctx.archive_dir, state)?;
    crash_point("after_cold_record");
    eprintln!("cfn-archive: uploaded {name} to {url} (verified)");
    Ok(true)
}

/// A multipart upload of `src`, resuming the one the state records for `name` when it is
/// for the same bytes; up to `threads` parts in flight, each recorded in the state as the
/// store acknowledges it. Returns the ETag the completed object must have.
#[allow(clippy::too_many_arguments)]
fn upload_parts(
    ctx: &Ctx,
    state: &mut ArchiveState,
    client: &S3Client,
    location: &S3Location,
    key: &str,
    url: &str,
    name: &str,
    src: &Source,
    part_size: u64,
    threads: usize,
    if_absent: bool,
) -> anyhow::Result<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let bucket = &location.bucket;
    for _ in 0..2 {
        let resumable = state.uploading.get(name).is_some_and(|u| {
            u.url == url && u.size == src.size && u.md5 == src.md5 && u.part_size == part_size
        });
        if !resumable {
            if let Some(old) = state.uploading.remove(name) {
                client.abort_multipart(bucket, key, &old.upload_id);
            }
            let upload_id = client.create_multipart(bucket, key)?;
            state.uploading.insert(
                name.to_string(),
                UploadInFlight {
                    url: url.to_string(),
                    upload_id,
                    size: src.size,
                    md5: src.md5.clone(),
                    part_size,
                    parts: Vec::new(),
                },
            );
            save(&ctx.archive_dir, state)?;
        }
        let parts_total = src.size.div_ceil(part_size) as u32;
        let upload_id = state.uploading[name].upload_id.clone();
        let todo: Vec<u32> = (1..=parts_total)
            .filter(|n| !state.uploading[name].parts.iter().any(|p| p.0 == *n))
            .collect();
        let next = AtomicUsize::new(0);
        let mut gone = false;
        let mut failed: Option<anyhow::Error> = None;
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let (tx, rx) = std::sync::mpsc::channel();
            for _ in 0..threads.clamp(1, todo.len().max(1)) {
                let tx = tx.clone();
                let (todo, next, upload_id) = (&todo, &next, &upload_id);
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&n) = todo.get(i) else { break };
                        let off = u64::from(n - 1) * part_size;
                        let sent = read_at(&src.path, off, part_size.min(src.size - off)).and_then(
                            |bytes| {
                                let md5 = hex(&md5_of(&bytes).0);
                                Ok(client
                                    .upload_part(bucket, key, upload_id, n, &bytes)?
                                    .map(|etag| (n, etag, md5)))
                            },
                        );
                        if tx.send(sent).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let mut acknowledged = 0;
            for sent in rx {
                match sent {
                    Ok(Some(part)) => {
                        if let Some(u) = state.uploading.get_mut(name) {
                            u.parts.push(part);
                        }
                        save(&ctx.archive_dir, state)?;
                        acknowledged += 1;
                        crash_point(&format!("after_part_{acknowledged}"));
                    }
                    Ok(None) => gone = true,
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
                if gone || failed.is_some() {
                    // No new parts: the ones in flight finish and are recorded.
                    next.store(usize::MAX / 2, Ordering::SeqCst);
                }
            }
            Ok(())
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !gone {
            let u = &state.uploading[name];
            let mut parts = u.parts.clone();
            parts.sort();
            let numbered: Vec<(u32, String)> =
                parts.iter().map(|(n, e, _)| (*n, e.clone())).collect();
            if client
                .complete_multipart(bucket, key, &u.upload_id, &numbered, if_absent)?
                .is_some()
            {
                let md5s: Vec<[u8; 16]> = parts
                    .iter()
                    .map(|(_, _, m)| {
                        let mut d = [0u8; 16];
                        for (i, b) in d.iter_mut().enumerate() {
                            *b = u8::from_str_radix(m.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                                .unwrap_or(0);
                        }
                        d
                    })
                    .collect();
                return Ok(multipart_etag(&md5s));
            }
        }
        // The upload expired or was aborted elsewhere: start it over, once.
        eprintln!("cfn-archive: the multipart upload of {url} is gone; starting it over");
        state.uploading.remove(name);
    }
    Err(fail(
        Exit::TempFail,
        format!("the multipart upload of {url} kept disappearing; {name} is kept"),
    ))
}

/// The prefix of the private directory an `--exec` program's copy is made in.
pub const EXEC_DIR_PREFIX: &str = ".cfn-metrics-exec.";

/// Runs the `--exec` program on a private copy of the file; true when it exits 0.
///
/// The program gets a path nobody else can swap: the file is opened as every other open in
/// the shared directory is (no link, a regular file of ours), then copied from that open
/// descriptor into a fresh directory only we can enter, under the file's own name (so
/// `rclone copy` or `aws s3 cp` name the object right).
fn exec(ctx: &Ctx, argv: &[String], name: &str) -> anyhow::Result<bool> {
    let path = ctx.archive_dir.join(name);
    if ctx.dry_run {
        eprintln!("cfn-archive: would run {} on {}", argv[0], path.display());
        return Ok(false);
    }
    let mut file = open_safe(&path, Access::Read)?;
    let private = tempfile::Builder::new()
        .prefix(EXEC_DIR_PREFIX)
        .tempdir_in(&ctx.archive_dir)
        .map_err(|e| io_fail("cannot create a private directory in", &ctx.archive_dir, &e))?;
    let copy = private.path().join(name);
    {
        let mut out = File::create_new(&copy).map_err(|e| io_fail("cannot create", &copy, &e))?;
        std::io::copy(&mut file, &mut WriteChecked(&mut out))
            .map_err(|e| io_fail("cannot copy for --exec into", &copy, &e))?;
    }
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg(&copy)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            fail(
                if e.kind() == std::io::ErrorKind::NotFound {
                    Exit::Config
                } else {
                    Exit::IoErr
                },
                format!("cannot run --exec program {:?}: {e}", argv[0]),
            )
        })?;
    if status.success() {
        return Ok(true);
    }
    Err(fail(
        Exit::TempFail,
        format!(
            "--exec {} {} exited with {status}; {} is kept",
            argv[0],
            copy.display(),
            name
        ),
    ))
}
