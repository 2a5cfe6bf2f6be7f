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
use cfn_net::s3::{S3Client, S3Location, hex, md5_of, multipart_etag};

/// Where expired files go.
pub enum ColdTarget {
    S3(S3Target),
    /// PROGRAM ARG... FILE, without a shell; exit 0 means the file is safe elsewhere.
    Exec(Vec<String>),
}

/// An S3 bucket and prefix, and how to upload there.
pub struct S3Target {
    pub client: Box<S3Client>,
    /// Where this host's copies go (`PREFIX/HOST/`).
    pub location: S3Location,
    /// The same without the host: copies recorded there by earlier versions still count.
    pub flat: S3Location,
    /// Files bigger than this go up in parts.
    pub threshold: u64,
    pub part_size: u64,
    /// Parts in flight at once.
    pub threads: usize,
}

/// The upload source: the file itself, or a gzip of it in a temp file.
struct Source {
    path: PathBuf,
    object: String,
    size: u64,
    /// The file's MD5 (hex), once a read of it has computed it: a fresh upload reads the
    /// file once, hashing it on the way; only checks against an earlier copy hash it first.
    md5: Option<String>,
    _temp: Option<tempfile::TempPath>,
}

impl Source {
    /// The file's MD5 (hex), reading it now when no read has computed it yet.
    fn md5(&mut self) -> anyhow::Result<String> {
        if self.md5.is_none() {
            let (size, md5) = md5_file(&self.path)?;
            self.size = size;
            self.md5 = Some(md5);
        }
        Ok(self.md5.clone().unwrap_or_default())
    }

    /// The whole file's MD5 and each `part_size` part's, in one read.
    fn digests(&mut self, part_size: u64) -> anyhow::Result<Vec<[u8; 16]>> {
        use md5::Digest as _;
        let mut f = open_safe(&self.path, Access::Read)?;
        let mut whole = md5::Md5::new();
        let mut parts = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            (&mut f).take(part_size).read_to_end(&mut buf)?;
            if buf.is_empty() {
                break;
            }
            whole.update(&buf);
            parts.push(md5_of(&buf).0);
        }
        self.md5 = Some(hex(&whole.finalize()));
        Ok(parts)
    }
}

fn md5_file(path: &Path) -> anyhow::Result<(u64, String)> {
    use md5::Digest as _;
    let mut f = open_safe(path, Access::Read)?;
    let mut h = md5::Md5::new();
    let size = std::io::copy(&mut f, &mut h)?;
    Ok((size, hex(&h.finalize())))
}

fn source(ctx: &Ctx, name: &str) -> anyhow::Result<Source> {
    let path = ctx.archive_dir.join(name);
    if name.ends_with(".gz") {
        let size = open_safe(&path, Access::Read)?.metadata()?.len();
        return Ok(Source {
            path,
            object: name.to_string(),
            size,
            md5: None,
            _temp: None,
        });
    }
    // Still plain (today's, or a day rotate has not reached): gzipped on the way, into a
    // temp file so memory stays bounded, and hashed as it is written. Deterministic (no
    // name, time 0 in the header), so a resumed upload sends the same bytes.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.gz."))
        .tempfile_in(&ctx.archive_dir)
        .map_err(|e| io_fail("cannot create a temp file in", &ctx.archive_dir, &e))?;
    let (size, md5) = {
        let mut enc = flate2::write::GzEncoder::new(
            WriteChecked::new(tmp.as_file_mut()),
            flate2::Compression::default(),
        );
        std::io::copy(&mut open_safe(&path, Access::Read)?, &mut enc)
            .map_err(|e| io_fail("cannot gzip for upload into", &ctx.archive_dir, &e))?;
        enc.finish()
            .map_err(|e| io_fail("cannot gzip for upload into", &ctx.archive_dir, &e))?
            .digest()
    };
    let tmp_path = tmp.into_temp_path();
    Ok(Source {
        path: tmp_path.to_path_buf(),
        // Not `{name}.gz`: that is the day's rotated file's object, and a day can be in both
        // forms (late records after a rotation); each must reach the store whole.
        object: cfn_core::paths::cold_name_of_plain(name, &md5),
        size,
        md5: Some(md5),
        _temp: Some(tmp_path),
    })
}

/// A writer that fails like a full disk when the test hook says so, and hashes what it
/// writes.
struct WriteChecked<'a> {
    file: &'a mut File,
    md5: md5::Md5,
    size: u64,
}

impl<'a> WriteChecked<'a> {
    fn new(file: &'a mut File) -> Self {
        use md5::Digest as _;
        Self {
            file,
            md5: md5::Md5::new(),
            size: 0,
        }
    }

    /// Bytes written and their MD5 (hex).
    fn digest(self) -> (u64, String) {
        use md5::Digest as _;
        (self.size, hex(&self.md5.finalize()))
    }
}

impl Write for WriteChecked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use md5::Digest as _;
        check_write(buf.len())?;
        let n = self.file.write(buf)?;
        self.md5.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
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
fn expected_etag(src: &mut Source, multipart: bool, part_size: u64) -> anyhow::Result<String> {
    let parts = src.digests(part_size)?;
    if multipart {
        Ok(multipart_etag(&parts))
    } else {
        src.md5()
    }
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
    let t = match target {
        ColdTarget::Exec(argv) => return exec(ctx, argv, name),
        ColdTarget::S3(t) => t,
    };
    if ctx.dry_run {
        let to = t.location.url(&t.location.prefix);
        eprintln!("cfn-archive: would upload {name} to {to}");
        return Ok(false);
    }
    let (client, location) = (&t.client, &t.location);
    let mut src = source(ctx, name)?;
    let key = format!("{}{}", location.prefix, src.object);
    let url = location.url(&key);
    let flat_url = t.flat.url(&format!("{}{}", t.flat.prefix, src.object));
    if let Some(c) = state.cold.get(name)
        && (c.url == url || c.url == flat_url)
        && c.size == src.size
        && c.md5 == src.md5()?
    {
        return Ok(true);
    }
    let ours = state.cold.get(name).is_some_and(|c| c.url == url)
        || state.uploading.get(name).is_some_and(|u| u.url == url);
    let existing = client.head(&location.bucket, &key)?;
    let upload = Upload {
        ctx,
        client,
        bucket: &location.bucket,
        key: &key,
        url: &url,
        name,
        part_size: t.part_size,
        threads: t.threads,
        // Where nothing was there, a conditional write: an object that appears meanwhile
        // (another host on the same prefix) is not overwritten.
        if_absent: existing.is_none(),
    };
    let multipart = src.size > t.threshold;
    // What the store's ETag must be: computed from the file only when an object is already
    // there; after an upload, from the parts' MD5s as they were sent.
    let etag = match existing {
        // Uploaded by a run that stopped before recording it.
        Some(info)
            if info.size == src.size
                && info.etag == expected_etag(&mut src, multipart, t.part_size)? =>
        {
            info.etag
        }
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
            let etag = if multipart {
                upload.run(state, &mut src)?
            } else {
                upload.put_whole(state, &mut src, ours)?
            };
            summary.uploaded_files += 1;
            summary.uploaded_bytes += src.size;
            etag
        }
    };
    upload.verify(&src, &etag)?;
    upload.record_copy(state, &mut src, etag)?;
    Ok(true)
}

/// Parts in flight by default: as many as fit in a sixteenth of the memory available now,
/// between 2 and 8 (the AWS CLI runs 10 of 8 MiB).
pub fn default_upload_threads(part_size: u64) -> usize {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (available / 16 / part_size.max(1)).clamp(2, 8) as usize
}

/// A part the store acknowledged.
#[derive(Debug)]
struct PartSent {
    number: u32,
    etag: String,
    md5: [u8; 16],
}

/// How one pass over the parts ended.
enum PartsOutcome {
    /// Completed: the object's ETag.
    Done(String),
    /// The upload must start over, for this reason.
    StartOver(&'static str),
}

/// What the reading side of a pass saw.
enum ReadOutcome {
    /// Every part read: the whole file's MD5 (hex).
    Whole(String),
    /// A part the store already has differs from the file now.
    Changed,
    /// Stopped early (a failure elsewhere).
    Stopped,
}

/// What the recording side of a pass saw.
#[derive(Default)]
struct Recorded {
    gone: bool,
    failed: Option<anyhow::Error>,
}

/// The upload of one file: one PUT (`put_whole`) or multipart (`run`). A multipart upload
/// reads the file once, in order, on one thread that
/// hashes it whole and hands each part to one of `threads` uploaders (each hashes its part
/// for Content-MD5); the calling thread records each part in the state as the store
/// acknowledges it, so a killed upload resumes. A resumed upload checks the parts the store
/// has against the file as it reads them.
struct Upload<'a> {
    ctx: &'a Ctx,
    client: &'a S3Client,
    bucket: &'a str,
    key: &'a str,
    url: &'a str,
    name: &'a str,
    part_size: u64,
    threads: usize,
    if_absent: bool,
}

impl Upload<'_> {
    /// Uploads `src`, starting over once when the upload disappears or the file changed;
    /// returns the ETag the completed object must have.
    fn run(&self, state: &mut ArchiveState, src: &mut Source) -> anyhow::Result<String> {
        for _ in 0..2 {
            self.begin(state, src)?;
            match self.send_parts(state, src)? {
                PartsOutcome::Done(etag) => return Ok(etag),
                PartsOutcome::StartOver(why) => {
                    eprintln!("cfn-archive: {why} {}; starting it over", self.url);
                    if let Some(old) = state.uploading.remove(self.name)
                        && !old.upload_id.is_empty()
                    {
                        self.client
                            .abort_multipart(self.bucket, self.key, &old.upload_id);
                    }
                }
            }
        }
        Err(fail(
            Exit::TempFail,
            format!(
                "the multipart upload of {} kept starting over; {} is kept",
                self.url, self.name
            ),
        ))
    }

    /// Keeps the upload the state records when it is of the same size in the same parts
    /// to the same object (its parts are checked as the file is read), else starts one.
    /// Checks that the store holds `src` (its size, and `etag`): what it says it holds, not
    /// what was sent.
    fn verify(&self, src: &Source, etag: &str) -> anyhow::Result<()> {
        match self.client.head(self.bucket, self.key)? {
            Some(info) if info.size == src.size && info.etag == etag => Ok(()),
            other => Err(fail(
                Exit::DataErr,
                format!(
                    "verification of {} failed: the store holds {other:?}, expected {} bytes with ETag {etag}; {} is kept",
                    self.url, src.size, self.name
                ),
            )),
        }
    }

    /// Records the verified copy in the state (saved), the upload in flight done.
    fn record_copy(
        &self,
        state: &mut ArchiveState,
        src: &mut Source,
        etag: String,
    ) -> anyhow::Result<()> {
        state.uploading.remove(self.name);
        let copy = ColdCopy {
            url: self.url.to_string(),
            size: src.size,
            md5: src.md5()?,
            etag,
        };
        state.cold.insert(self.name.to_string(), copy);
        save(&self.ctx.archive_dir, state)?;
        crash_point("after_cold_record");
        eprintln!(
            "cfn-archive: uploaded {} to {} (verified)",
            self.name, self.url
        );
        Ok(())
    }

    /// Sends `src` in one PUT; returns its MD5 (the ETag the store must give it).
    fn put_whole(
        &self,
        state: &mut ArchiveState,
        src: &mut Source,
        ours: bool,
    ) -> anyhow::Result<String> {
        let body = read_at(&src.path, 0, src.size)?;
        let md5 = hex(&md5_of(&body).0);
        // Recorded before the PUT: when the store takes the object but its reply is lost,
        // the object is known as ours, so a later run may replace it (the file may have
        // grown a gzip member meanwhile) instead of refusing it as in the way.
        if !ours {
            let intent = UploadInFlight {
                url: self.url.to_string(),
                size: src.size,
                md5: md5.clone(),
                ..UploadInFlight::default()
            };
            state.uploading.insert(self.name.to_string(), intent);
            save(&self.ctx.archive_dir, state)?;
        }
        crash_point("before_put");
        self.client
            .put(self.bucket, self.key, &body, self.if_absent)?;
        crash_point("after_put");
        src.md5 = Some(md5.clone());
        Ok(md5)
    }

    fn begin(&self, state: &mut ArchiveState, src: &Source) -> anyhow::Result<()> {
        let resumable = state.uploading.get(self.name).is_some_and(|u| {
            u.url == self.url && u.size == src.size && u.part_size == self.part_size
        });
        if resumable {
            return Ok(());
        }
        // A single PUT's intent has no upload to abort.
        if let Some(old) = state.uploading.remove(self.name)
            && !old.upload_id.is_empty()
        {
            self.client
                .abort_multipart(self.bucket, self.key, &old.upload_id);
        }
        let upload_id = self.client.create_multipart(self.bucket, self.key)?;
        let in_flight = UploadInFlight {
            url: self.url.to_string(),
            upload_id,
            size: src.size,
            md5: src.md5.clone().unwrap_or_default(),
            part_size: self.part_size,
            parts: Vec::new(),
        };
        state.uploading.insert(self.name.to_string(), in_flight);
        save(&self.ctx.archive_dir, state)
    }

    /// One pass over the file: reads, uploads and records the parts, then completes.
    fn send_parts(
        &self,
        state: &mut ArchiveState,
        src: &mut Source,
    ) -> anyhow::Result<PartsOutcome> {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex, mpsc};
        let u = &state.uploading[self.name];
        let upload_id = u.upload_id.clone();
        let acked: BTreeMap<u32, String> = u.parts.iter().map(|p| (p.0, p.2.clone())).collect();
        let stop = AtomicBool::new(false);
        let (work_tx, work_rx) = mpsc::sync_channel::<(u32, Vec<u8>)>(1);
        // Owned by the uploaders alone: when they have all stopped, the reader's send fails.
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::channel::<anyhow::Result<Option<PartSent>>>();
        let todo = (src.size.div_ceil(self.part_size) as usize).saturating_sub(acked.len());
        let (read, recorded) = std::thread::scope(|scope| {
            for _ in 0..self.threads.clamp(1, todo.max(1)) {
                let (work_rx, done_tx, upload_id) = (work_rx.clone(), done_tx.clone(), &upload_id);
                scope.spawn(move || self.upload_parts(&work_rx, &done_tx, upload_id));
            }
            drop((done_tx, work_rx));
            let (path, stop) = (&src.path, &stop);
            let acked = &acked;
            let reader = scope.spawn(move || self.read_parts(path, acked, work_tx, stop));
            let recorded = self.record(state, done_rx, stop);
            let read = reader
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the reading thread stopped")));
            (read, recorded)
        });
        if let Some(e) = recorded.failed {
            return Err(e);
        }
        let whole = match read? {
            ReadOutcome::Whole(md5) => md5,
            ReadOutcome::Changed => {
                return Ok(PartsOutcome::StartOver(
                    "the file changed since the parts sent to",
                ));
            }
            ReadOutcome::Stopped if recorded.gone => {
                return Ok(PartsOutcome::StartOver("the multipart upload is gone:"));
            }
            ReadOutcome::Stopped => {
                return Err(anyhow::anyhow!("the upload of {} stopped", self.url));
            }
        };
        if recorded.gone {
            return Ok(PartsOutcome::StartOver("the multipart upload is gone:"));
        }
        self.complete(state, src, whole)
    }

    /// An uploader thread: takes parts until there are none, sends each with its MD5.
    fn upload_parts(
        &self,
        work: &std::sync::Mutex<std::sync::mpsc::Receiver<(u32, Vec<u8>)>>,
        done: &std::sync::mpsc::Sender<anyhow::Result<Option<PartSent>>>,
        upload_id: &str,
    ) {
        loop {
            let job = work.lock().map(|rx| rx.recv());
            let Ok(Ok((number, bytes))) = job else { return };
            let (md5, content_md5) = md5_of(&bytes);
            let sent = self
                .client
                .upload_part(
                    self.bucket,
                    self.key,
                    upload_id,
                    number,
                    &bytes,
                    &content_md5,
                )
                .map(|etag| etag.map(|etag| PartSent { number, etag, md5 }));
            if done.send(sent).is_err() {
                return;
            }
        }
    }

    /// The reading thread: the file in order, once, hashed whole; parts the store already
    /// has are checked, the others handed to the uploaders.
    fn read_parts(
        &self,
        path: &Path,
        acked: &BTreeMap<u32, String>,
        work: std::sync::mpsc::SyncSender<(u32, Vec<u8>)>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<ReadOutcome> {
        use md5::Digest as _;
        use std::sync::atomic::Ordering;
        let mut f = open_safe(path, Access::Read)?;
        let mut whole = md5::Md5::new();
        for number in 1u32.. {
            if stop.load(Ordering::SeqCst) {
                return Ok(ReadOutcome::Stopped);
            }
            let mut part = Vec::with_capacity(self.part_size as usize);
            (&mut f).take(self.part_size).read_to_end(&mut part)?;
            if part.is_empty() {
                break;
            }
            whole.update(&part);
            if let Some(md5) = acked.get(&number) {
                if hex(&md5_of(&part).0) != *md5 {
                    stop.store(true, Ordering::SeqCst);
                    return Ok(ReadOutcome::Changed);
                }
                continue;
            }
            if work.send((number, part)).is_err() {
                return Ok(ReadOutcome::Stopped);
            }
        }
        Ok(ReadOutcome::Whole(hex(&whole.finalize())))
    }

    /// The calling thread: records each acknowledged part in the state; on a failure or a
    /// vanished upload, stops the reader (the parts in flight finish and are recorded).
    fn record(
        &self,
        state: &mut ArchiveState,
        done: std::sync::mpsc::Receiver<anyhow::Result<Option<PartSent>>>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Recorded {
        let mut out = Recorded::default();
        let mut acknowledged = 0;
        for sent in done {
            match sent {
                Ok(Some(part)) => {
                    if let Some(u) = state.uploading.get_mut(self.name) {
                        u.parts.push((part.number, part.etag, hex(&part.md5)));
                    }
                    if let Err(e) = save(&self.ctx.archive_dir, state) {
                        out.failed.get_or_insert(e);
                    }
                    acknowledged += 1;
                    crash_point(&format!("after_part_{acknowledged}"));
                }
                Ok(None) => out.gone = true,
                Err(e) => {
                    out.failed.get_or_insert(e);
                }
            }
            if out.gone || out.failed.is_some() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        out
    }

    /// Completes the upload from the parts the state records; returns the ETag the object
    /// must have (the multipart ETag of the parts' MD5s as they were sent).
    fn complete(
        &self,
        state: &ArchiveState,
        src: &mut Source,
        whole_md5: String,
    ) -> anyhow::Result<PartsOutcome> {
        let u = &state.uploading[self.name];
        let mut parts = u.parts.clone();
        parts.sort();
        let mut md5s = Vec::with_capacity(parts.len());
        for (_, _, md5) in &parts {
            match unhex16(md5) {
                Some(d) => md5s.push(d),
                None => {
                    return Ok(PartsOutcome::StartOver(
                        "a part's MD5 is unreadable in the state for",
                    ));
                }
            }
        }
        let numbered: Vec<(u32, String)> = parts.into_iter().map(|(n, e, _)| (n, e)).collect();
        let completed = self.client.complete_multipart(
            self.bucket,
            self.key,
            &u.upload_id,
            &numbered,
            self.if_absent,
        )?;
        if completed.is_none() {
            return Ok(PartsOutcome::StartOver("the multipart upload is gone:"));
        }
        src.md5 = Some(whole_md5);
        Ok(PartsOutcome::Done(multipart_etag(&md5s)))
    }
}

/// 32 hex digits as 16 bytes.
fn unhex16(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
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
        std::io::copy(&mut file, &mut WriteChecked::new(&mut out))
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
