//! Cold storage: hand an archive file to S3 (or to a program) and know it is safe there
//! before anything deletes it.
//!
//! S3: a day file's bytes not yet in the store go up as one object named for their content
//! (`cfn_core::cold::object_name`: the day, the shard and the MD5's first digits), in one
//! PUT with Content-MD5, or in parts above a threshold (each part with its MD5, every part
//! recorded in the state as the store acknowledges it, so a killed upload resumes), then a
//! HEAD checks size and ETag against what was sent. Only then is the copy recorded in the
//! state; `prune` deletes a file only when recorded copies hold every byte of it. A `.gz`
//! only ever grows by whole gzip members (late records after its rotation), so the bytes
//! past the copies are themselves a gzip stream: a day uploaded again becomes a second
//! object beside the first, never a replacement, and every record is in the store once. An
//! object is never overwritten: its name says its content, and the upload is conditional.

use super::*;
use crate::state::{ColdCopy, UploadInFlight};
use cfn_core::cold::{Layout, object_name};
use cfn_net::s3::{ObjectInfo, S3Client, hex, md5_of, multipart_etag};

/// Where expired files go.
pub enum ColdTarget {
    S3(S3Target),
    /// PROGRAM ARG... FILE, without a shell; exit 0 means the file is safe elsewhere.
    Exec(Vec<String>),
}

/// An S3 bucket and prefix, and how to upload there.
pub struct S3Target {
    pub client: Box<S3Client>,
    pub bucket: String,
    /// The prefix given (empty or ending in `/`), `{host}` standing where the operator put
    /// the host's segment; without it the segment follows the prefix.
    pub prefix: String,
    pub host: String,
    pub layout: Layout,
    /// Files bigger than this go up in parts.
    pub threshold: u64,
    pub part_size: u64,
    /// Parts in flight at once.
    pub threads: usize,
}

impl S3Target {
    /// The key prefix where `layout` puts this host's objects of day `yyyymmdd`.
    pub fn dir(&self, layout: Layout, yyyymmdd: &str) -> String {
        cfn_core::cold::day_prefix(&self.prefix, &self.host, layout, yyyymmdd)
    }

    /// The prefix without the host (the flat layout of the first version).
    fn flat(&self) -> String {
        cfn_core::cold::flat_prefix(&self.prefix)
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn key_of_url<'u>(&self, url: &'u str) -> Option<&'u str> {
        url.strip_prefix("s3://")?
            .strip_prefix(self.bucket.as_str())?
            .strip_prefix('/')
    }
}

/// Bytes `offset..offset + size` of an archive file: what one object holds.
struct Source {
    path: PathBuf,
    offset: u64,
    size: u64,
    /// Their MD5 (hex), once a read of them has computed it.
    md5: Option<String>,
}

impl Source {
    fn new(path: &Path, offset: u64, size: u64) -> Self {
        Source {
            path: path.to_path_buf(),
            offset,
            size,
            md5: None,
        }
    }

    /// The file opened at the range's start, read only to its end.
    fn open(&self) -> anyhow::Result<std::io::Take<File>> {
        let mut f = open_safe(&self.path, Access::Read)?;
        f.seek(SeekFrom::Start(self.offset))?;
        Ok(f.take(self.size))
    }

    /// The range's MD5 (hex), reading it now when no read has computed it yet.
    fn md5(&mut self) -> anyhow::Result<String> {
        if self.md5.is_none() {
            use md5::Digest as _;
            let mut h = md5::Md5::new();
            let mut f = self.open()?;
            // Large reads: a day file is hundreds of MiB, and 8 KiB reads cost a syscall each.
            let mut buf = vec![0u8; 1 << 20];
            let mut read = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                read += n as u64;
            }
            if read != self.size {
                return Err(fail(
                    Exit::IoErr,
                    format!(
                        "{} is shorter than it was a moment ago",
                        self.path.display()
                    ),
                ));
            }
            self.md5 = Some(hex(&h.finalize()));
        }
        Ok(self.md5.clone().unwrap_or_default())
    }

    /// The range's MD5 and each `part_size` part's, in one read.
    fn digests(&mut self, part_size: u64) -> anyhow::Result<Vec<[u8; 16]>> {
        use md5::Digest as _;
        let mut f = self.open()?;
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

    /// Whether `info` describes an object holding exactly these bytes (sent in one PUT, or
    /// in `part_size` parts).
    fn is_held_by(&mut self, info: &ObjectInfo, part_size: u64) -> anyhow::Result<bool> {
        if info.size != self.size {
            return Ok(false);
        }
        let parts = self.digests(part_size)?;
        if info.etag == self.md5()? || info.etag == multipart_etag(&parts) {
            return Ok(true);
        }
        // Sent in parts of another size (an earlier run's --part-size): the ETag's part
        // count allows only a few whole-MiB part sizes; each is tried, so such an object is
        // still known as this range's, never "in the way" for ever.
        for other in part_sizes_for(&info.etag, self.size).filter(|p| *p != part_size) {
            if info.etag == multipart_etag(&self.digests(other)?) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The whole-MiB part sizes (at least 5 MiB, at most 16 of them) an object of `size` bytes
/// can have been uploaded in, for a multipart ETag (`…-N`: N parts, all but the last full).
fn part_sizes_for(etag: &str, size: u64) -> impl Iterator<Item = u64> {
    const MIB: u64 = 1 << 20;
    let n: u64 = etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .filter(|n| *n > 1)
        .unwrap_or(0);
    let first = size.div_ceil(n.max(1)).div_ceil(MIB).max(5);
    (first..first + 16)
        .map(|m| m * MIB)
        .filter(move |p| n > 1 && (n - 1) * p < size && size <= n * p)
}

/// Sends archive file `name` to `target` unless verified copies of all of it are already
/// recorded; returns true once it is safe elsewhere (and, for S3, recorded in the state).
/// Only `.gz` day files go to S3 (prune rotates a plain file first).
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
    let Some((day, shard, true)) = parse_archive_name(name) else {
        return Err(fail(
            Exit::Usage,
            format!("{name} is not a gzipped day file; only those go to S3 (rotate it first)"),
        ));
    };
    if ctx.dry_run {
        let to = t.url(&t.dir(t.layout, &day));
        eprintln!("cfn-archive: would upload {name} to {to}");
        return Ok(false);
    }
    let path = ctx.archive_dir.join(name);
    let len = open_safe(&path, Access::Read)?.metadata()?.len();
    let day_file = DayFile {
        t,
        name,
        path: &path,
        day: &day,
        shard,
        len,
    };
    let known = state.cold.contains_key(name) || state.uploading.contains_key(name);
    let mut covered = day_file.recorded_coverage(state)?;
    covered = day_file.landed_intent(ctx, state, covered)?;
    if !known {
        covered = day_file.discover(ctx, state, covered)?;
    }
    while covered < len {
        let mut src = Source::new(&path, covered, len - covered);
        let key = format!(
            "{}{}",
            t.dir(t.layout, &day),
            object_name(&day, shard, &src.md5()?)
        );
        covered = day_file.upload(ctx, state, &mut src, &key, summary)?;
    }
    Ok(true)
}

/// One day file on its way to S3.
struct DayFile<'a> {
    t: &'a S3Target,
    name: &'a str,
    path: &'a Path,
    day: &'a str,
    shard: u32,
    len: u64,
}

impl DayFile<'_> {
    /// How far from its start the state's copies hold the file. Copies that do not match
    /// its bytes belong to an earlier file of the same name (pruned, then made again by
    /// late records): they are forgotten here, their objects stay in the store.
    fn recorded_coverage(&self, state: &mut ArchiveState) -> anyhow::Result<u64> {
        let Some(copies) = state.cold.get_mut(self.name) else {
            return Ok(0);
        };
        let mut covered = 0;
        let mut kept = 0;
        for c in copies.iter() {
            if c.offset != covered || c.end() > self.len {
                break;
            }
            if Source::new(self.path, c.offset, c.size).md5()? != c.md5 {
                break;
            }
            covered = c.end();
            kept += 1;
        }
        if kept < copies.len() {
            eprintln!(
                "cfn-archive: {} is not the file whose cold copies the state records (its objects stay in the store); uploading it anew",
                self.name
            );
            copies.truncate(kept);
        }
        Ok(covered)
    }

    /// An upload the state records as about to be sent: when the store took it (its reply
    /// lost, or the run killed before recording it), it is recorded as a copy now.
    fn landed_intent(
        &self,
        ctx: &Ctx,
        state: &mut ArchiveState,
        covered: u64,
    ) -> anyhow::Result<u64> {
        let Some(u) = state.uploading.get(self.name).cloned() else {
            return Ok(covered);
        };
        if u.offset != covered || u.size == 0 || covered + u.size > self.len {
            return Ok(covered);
        }
        let Some(key) = self.t.key_of_url(&u.url) else {
            return Ok(covered);
        };
        Ok(self
            .record_if_held(ctx, state, covered, u.size, key)?
            .unwrap_or(covered))
    }

    /// The state knows nothing of this file (lost, or rebuilt): objects of earlier runs
    /// that hold its first members, under any layout's names (the content names of both
    /// layouts, the whole-file names of earlier versions), are found by listing the day's
    /// names and comparing contents, so no byte goes up twice.
    fn discover(
        &self,
        ctx: &Ctx,
        state: &mut ArchiveState,
        mut covered: u64,
    ) -> anyhow::Result<u64> {
        let t = self.t;
        let stem = format!("cfn-metrics-{}-{}.", self.day, self.shard);
        let dirs = [
            t.dir(Layout::Hive, self.day),
            t.dir(Layout::Host, self.day),
            t.flat(),
        ];
        let mut candidates = Vec::new();
        for dir in dirs {
            candidates.extend(t.client.list(&t.bucket, &format!("{dir}{stem}"))?);
        }
        'next: while covered < self.len {
            for (key, size) in &candidates {
                if *size > 0
                    && covered + size <= self.len
                    && let Some(end) = self.record_if_held(ctx, state, covered, *size, key)?
                {
                    covered = end;
                    continue 'next;
                }
            }
            break;
        }
        Ok(covered)
    }

    /// When `key` holds exactly the file's bytes `offset..offset + size`, records it as a
    /// copy and returns where the copies now end.
    fn record_if_held(
        &self,
        ctx: &Ctx,
        state: &mut ArchiveState,
        offset: u64,
        size: u64,
        key: &str,
    ) -> anyhow::Result<Option<u64>> {
        let Some(info) = self.t.client.head(&self.t.bucket, key)? else {
            return Ok(None);
        };
        let mut src = Source::new(self.path, offset, size);
        if !src.is_held_by(&info, self.t.part_size)? {
            return Ok(None);
        }
        self.record_copy(ctx, state, &mut src, key, info.etag)?;
        Ok(Some(offset + size))
    }

    /// Uploads `src` to `key` (its content's name) unless the store holds it already,
    /// verifies and records it; returns where the copies now end.
    fn upload(
        &self,
        ctx: &Ctx,
        state: &mut ArchiveState,
        src: &mut Source,
        key: &str,
        summary: &mut Summary,
    ) -> anyhow::Result<u64> {
        let t = self.t;
        let url = t.url(key);
        let multipart = src.size > t.threshold;
        let upload = Upload {
            ctx,
            client: &t.client,
            bucket: &t.bucket,
            key,
            url: &url,
            name: self.name,
            part_size: t.part_size,
            threads: t.threads,
        };
        let etag = match t.client.head(&t.bucket, key)? {
            // Uploaded by a run that stopped before recording it.
            Some(info) if src.is_held_by(&info, t.part_size)? => info.etag,
            // A name is its content: what is there is not ours, and never overwritten.
            Some(info) => {
                return Err(fail(
                    Exit::DataErr,
                    format!(
                        "{url} already exists and is not {} ({} bytes, ETag {}); not overwriting it, {} is kept",
                        self.name, info.size, info.etag, self.name
                    ),
                ));
            }
            None => {
                let etag = if multipart {
                    upload.run(state, src)?
                } else {
                    upload.put_whole(state, src)?
                };
                summary.uploaded_files += 1;
                summary.uploaded_bytes += src.size;
                etag
            }
        };
        upload.verify(src, &etag)?;
        self.record_copy(ctx, state, src, key, etag)?;
        Ok(src.offset + src.size)
    }

    /// Records a verified copy in the state (saved), the upload in flight done.
    fn record_copy(
        &self,
        ctx: &Ctx,
        state: &mut ArchiveState,
        src: &mut Source,
        key: &str,
        etag: String,
    ) -> anyhow::Result<()> {
        state.uploading.remove(self.name);
        let url = self.t.url(key);
        let copy = ColdCopy {
            url: url.clone(),
            offset: src.offset,
            size: src.size,
            md5: src.md5()?,
            etag,
        };
        let copies = state.cold.entry(self.name.to_string()).or_default();
        copies.retain(|c| c.end() <= copy.offset);
        copies.push(copy);
        save(&ctx.archive_dir, state)?;
        crash_point("after_cold_record");
        let what = if src.offset == 0 && src.size == self.len {
            String::new()
        } else {
            format!(" (bytes {}..{})", src.offset, src.offset + src.size)
        };
        eprintln!(
            "cfn-archive: uploaded {}{what} to {url} (verified)",
            self.name
        );
        Ok(())
    }
}

fn read_at(src: &Source) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(src.size as usize);
    src.open()?.read_to_end(&mut buf)?;
    Ok(buf)
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

    /// Sends `src` in one PUT; returns its MD5 (the ETag the store must give it).
    fn put_whole(&self, state: &mut ArchiveState, src: &mut Source) -> anyhow::Result<String> {
        let body = read_at(src)?;
        let md5 = hex(&md5_of(&body).0);
        // Recorded before the PUT: when the store takes the object but its reply is lost
        // and the file grows a member before the next run, that run finds this object by
        // the intent and uploads only the new member.
        let intent = UploadInFlight {
            url: self.url.to_string(),
            offset: src.offset,
            size: src.size,
            md5: md5.clone(),
            ..UploadInFlight::default()
        };
        state.uploading.insert(self.name.to_string(), intent);
        save(&self.ctx.archive_dir, state)?;
        crash_point("before_put");
        // Conditional: an object that appears meanwhile is never overwritten.
        self.client.put(self.bucket, self.key, &body, true)?;
        crash_point("after_put");
        src.md5 = Some(md5.clone());
        Ok(md5)
    }

    fn begin(&self, state: &mut ArchiveState, src: &Source) -> anyhow::Result<()> {
        let resumable = state.uploading.get(self.name).is_some_and(|u| {
            u.url == self.url
                && u.offset == src.offset
                && u.size == src.size
                && u.part_size == self.part_size
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
            offset: src.offset,
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
            let (src, stop) = (&*src, &stop);
            let acked = &acked;
            let reader = scope.spawn(move || self.read_parts(src, acked, work_tx, stop));
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
        src: &Source,
        acked: &BTreeMap<u32, String>,
        work: std::sync::mpsc::SyncSender<(u32, Vec<u8>)>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<ReadOutcome> {
        use md5::Digest as _;
        use std::sync::atomic::Ordering;
        let mut f = src.open()?;
        // The range's MD5 is known already when its object's name was made from it (the
        // archive lock keeps the bytes as they were): not computed a second time.
        let mut whole = src.md5.is_none().then(md5::Md5::new);
        for number in 1u32.. {
            if stop.load(Ordering::SeqCst) {
                return Ok(ReadOutcome::Stopped);
            }
            let mut part = Vec::with_capacity(self.part_size as usize);
            (&mut f).take(self.part_size).read_to_end(&mut part)?;
            if part.is_empty() {
                break;
            }
            if let Some(w) = whole.as_mut() {
                w.update(&part);
            }
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
        Ok(ReadOutcome::Whole(match (whole, &src.md5) {
            (Some(w), _) => hex(&w.finalize()),
            (None, known) => known.clone().unwrap_or_default(),
        }))
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
        let completed =
            self.client
                .complete_multipart(self.bucket, self.key, &u.upload_id, &numbered, true)?;
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

#[cfg(test)]
mod tests {
    use super::part_sizes_for;

    #[test]
    fn a_multipart_etag_allows_the_part_sizes_of_its_part_count() {
        const MIB: u64 = 1 << 20;
        // 256 MiB in 16 parts: 16 MiB only (17 MiB would need 16 parts too, but 15 full ones
        // of 17 MiB leave 1 MiB: also 16 parts).
        let sizes: Vec<u64> = part_sizes_for("abc-16", 256 * MIB).collect();
        assert_eq!(sizes, [16 * MIB, 17 * MIB]);
        assert!(part_sizes_for("abc-3", 13 * MIB).all(|p| 2 * p < 13 * MIB && 13 * MIB <= 3 * p));
        assert_eq!(
            part_sizes_for("d41d8cd98f00b204e9800998ecf8427e", 100).count(),
            0
        );
    }
}
