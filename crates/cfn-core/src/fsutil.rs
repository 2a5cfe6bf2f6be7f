//! Safe file handling in shared directories (contract section 3): no symlinks, regular files
//! only, no files owned by another non-root user, bounded lock waits with the same-inode
//! re-check, and atomic replacement of whole files.

use crate::exit::{Exit, fail};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The effective user id of this process (asked once).
pub fn effective_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    *UID.get_or_init(|| unsafe { libc::geteuid() })
}

/// The groups of this process (effective and supplementary), asked once.
pub fn my_groups() -> &'static [u32] {
    static GROUPS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    GROUPS.get_or_init(|| {
        let mut groups = vec![0 as libc::gid_t; 256];
        // SAFETY: getegid has no preconditions; getgroups writes at most `len` entries into
        // the buffer it is given, whose length is passed, and returns how many it wrote.
        #[allow(unsafe_code)]
        let (egid, n) = unsafe {
            (
                libc::getegid(),
                libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()),
            )
        };
        groups.truncate(usize::try_from(n).unwrap_or(0));
        groups.push(egid);
        groups
    })
}

/// True when `dir` (its metadata) is a group's shared hot directory: setgid,
/// group-writable, not writable by others, and its group one of this process's. Only the
/// owner and that group's members can put a file there, so a shard of another member is
/// trusted like one's own (the package's `/run/cfn-metrics`, mode 3770: setgid and sticky).
pub fn is_group_shared_dir(dir: &std::fs::Metadata) -> bool {
    let mode = dir.mode();
    dir.is_dir()
        && mode & 0o2000 != 0
        && mode & 0o020 != 0
        && mode & 0o002 == 0
        && my_groups().contains(&dir.gid())
}

/// The metadata of the directory `path` is in (not following a link), when it is a group's
/// shared directory.
fn group_shared_parent(path: &Path) -> Option<std::fs::Metadata> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::symlink_metadata(parent)
        .ok()
        .filter(is_group_shared_dir)
}

/// A file's identity: device and inode. A trim renames a new file into place, so the path
/// stays while the identity changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

pub use crate::exit::Refused;

fn refuse(exit: Exit, message: String) -> anyhow::Error {
    anyhow::Error::new(Refused(crate::exit::ExitError { exit, message }))
}

/// True when `err` is a [`Refused`] file.
pub fn is_refused(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<Refused>().is_some())
}

/// For tools that read every file of a shared directory: a refused file (a hostile
/// neighbour's symlink, FIFO or file) or one removed since the listing is skipped, the
/// refusal with a warning that names it, so one stray file never stops the pipeline.
/// `strict` turns a refusal back into the error. `Ok(None)` means "skip it".
///
/// # Errors
/// Any other error, and a refusal when `strict`.
pub fn skip_refused<T>(
    tool: &str,
    strict: bool,
    opened: anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match opened {
        Ok(t) => Ok(Some(t)),
        Err(e) if is_refused(&e) && !strict => {
            eprintln!("{tool}: warning: skipping {e}");
            Ok(None)
        }
        Err(e) if !is_refused(&e) && crate::exit::exit_for(&e) == Exit::NoInput => Ok(None),
        Err(e) => Err(e),
    }
}

/// How a file in a shared directory is opened.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    Read,
    /// Read and write an existing file in place (to cut it back); never creates.
    ReadWrite,
    /// Append, creating the file with the given mode if it does not exist.
    Append {
        create: bool,
        mode: u32,
    },
}

/// Opens `path` without following a symlink, and refuses anything that is not a regular file
/// owned by us or root.
///
/// # Errors
/// Exit 73 (writing) or 66/74 (reading) with a message naming the path and the reason.
pub fn open_safe(path: &Path, access: Access) -> anyhow::Result<File> {
    open_safe_meta(path, access).map(|(file, _)| file)
}

/// [`open_safe`], also returning the metadata it checked (saving the caller an fstat).
///
/// # Errors
/// As [`open_safe`].
pub fn open_safe_meta(path: &Path, access: Access) -> anyhow::Result<(File, std::fs::Metadata)> {
    let mut opts = OpenOptions::new();
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    let writing = !matches!(access, Access::Read);
    match access {
        Access::Read => {
            opts.read(true);
        }
        Access::ReadWrite => {
            opts.read(true).write(true);
        }
        Access::Append { create, mode } => {
            // Readable too, so a writer can see a partial line a killed writer left
            // (append_whole); write-only where the mode allows no more.
            opts.read(true).append(true).create(create).mode(mode);
        }
    }
    let opened = match opts.open(path) {
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                && matches!(access, Access::Append { .. }) =>
        {
            opts.read(false).open(path)
        }
        other => other,
    };
    let file = opened.map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            refuse(
                if writing {
                    Exit::CantCreate
                } else {
                    Exit::IoErr
                },
                format!("refusing to follow the symlink at {}", path.display()),
            )
        } else if e.raw_os_error() == Some(libc::ENXIO) {
            // A FIFO (or device) with nobody at the other end, opened without blocking: not
            // a regular file, refused like one that opens.
            refuse(
                if writing {
                    Exit::CantCreate
                } else {
                    Exit::IoErr
                },
                format!("refusing {}: not a regular file", path.display()),
            )
        } else {
            let exit = match (writing, e.kind()) {
                (_, io::ErrorKind::NotFound) if !writing => Exit::NoInput,
                (true, io::ErrorKind::NotFound) => Exit::CantCreate,
                (true, io::ErrorKind::PermissionDenied) => Exit::CantCreate,
                _ => crate::exit::exit_for_io(&e),
            };
            fail(exit, format!("cannot open {}: {e}", path.display()))
        }
    })?;
    let meta = check_file(&file, path, writing)?;
    if let Access::Append { create: true, .. } = access {
        share_with_group(&file, path, &meta)?;
    }
    Ok((file, meta))
}

fn check_file(file: &File, path: &Path, writing: bool) -> anyhow::Result<std::fs::Metadata> {
    let meta = file.metadata()?;
    let exit = if writing {
        Exit::CantCreate
    } else {
        Exit::IoErr
    };
    if !meta.file_type().is_file() {
        return Err(refuse(
            exit,
            format!("refusing {}: not a regular file", path.display()),
        ));
    }
    let me = effective_uid();
    if meta.uid() == me || meta.uid() == 0 {
        return Ok(meta);
    }
    // Another user's file: accepted only from a member of a group-shared directory's group
    // (of that group, not writable by others); never in a world-writable directory.
    let member = group_shared_parent(path)
        .is_some_and(|dir| meta.gid() == dir.gid() && meta.mode() & 0o002 == 0);
    if !member {
        return Err(refuse(
            exit,
            format!(
                "refusing {}: owned by uid {}, not by this user (uid {me}), root, or a member of the group of a group-shared (setgid, not world-writable) directory",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(meta)
}

/// In a group-shared directory, makes a file this user created readable and writable by the
/// group (the umask may have taken that away), so the other members can append to it. Only
/// an empty file is looked at (one just created): an append to a shard that holds records
/// costs no look at its directory.
fn share_with_group(file: &File, path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if meta.len() == 0
        && meta.uid() == effective_uid()
        && meta.mode() & 0o060 != 0o060
        && group_shared_parent(path).is_some()
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(
            (meta.mode() & 0o777) | 0o060,
        ))?;
    }
    Ok(())
}

/// Checks a directory that tools write into (the archive directory): refused when another
/// user (not root) owns it and others may write to it without the sticky bit, since then
/// anyone could swap the files in it for symlinks or their own between two calls. In a sticky
/// directory (like /dev/shm) the per-file owner checks of [`open_safe`] are enough.
///
/// # Errors
/// Exit 78 naming the directory and what is wrong with it; 66 when it does not exist.
pub fn check_shared_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        fail(
            crate::exit::exit_for_io(&e),
            format!("cannot use directory {}: {e}", dir.display()),
        )
    })?;
    if !meta.is_dir() {
        return Err(fail(
            Exit::Config,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mode = meta.mode();
    let others_write = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    let me = effective_uid();
    if others_write && !sticky && meta.uid() != me && meta.uid() != 0 {
        return Err(fail(
            Exit::Config,
            format!(
                "refusing directory {}: owned by uid {} and writable by others (mode {:o}) without the sticky bit; use a directory of your own",
                dir.display(),
                meta.uid(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Waits up to `timeout` for an exclusive flock on `file`.
///
/// Returns `false` on timeout. std's `File::lock` is flock(2) on Linux, so this excludes
/// bash scripts that `flock` the same file.
///
/// # Errors
/// I/O errors other than contention.
pub fn lock_with_timeout(file: &File, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    // Start short: most waits are a few microseconds behind another writer.
    let mut pause = Duration::from_micros(50);
    let mut spins = 0u32;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        // Spread the retries of many waiting writers so they do not wake in step.
        spins = spins.wrapping_add(1);
        let jitter = Duration::from_micros(
            ((std::process::id() ^ spins.wrapping_mul(2_654_435_761)) % 200) as u64,
        );
        std::thread::sleep((pause + jitter).min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// A held lock on a sidecar lock file (`FILE.lock`, `METRICS_LOCK_FILE`, the archive
/// directory's `.cfn-archive.lock`): files that are replaced atomically cannot be locked
/// themselves. The lock is released when this is dropped.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

impl LockFile {
    fn open(path: &Path) -> anyhow::Result<File> {
        open_safe(
            path,
            Access::Append {
                create: true,
                mode: 0o600,
            },
        )
    }

    /// Creates (mode 0600) and locks `path`, waiting up to `timeout`.
    ///
    /// # Errors
    /// Exit 75 when the lock is busy past the timeout; open errors as [`open_safe`].
    pub fn acquire(path: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let file = Self::open(path)?;
        if !lock_with_timeout(&file, timeout)? {
            return Err(lock_timeout(path, timeout));
        }
        Ok(Self { _file: file })
    }

    /// Locks `path` only if nobody holds it; `None` when somebody does.
    ///
    /// # Errors
    /// Open errors as [`open_safe`], and I/O errors other than contention.
    pub fn try_acquire(path: &Path) -> anyhow::Result<Option<Self>> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

/// True when nobody holds the lock of the file at `path` now (probed with a lock taken and
/// let go at once): the one lock probe, for cleaning up after a writer that was killed.
///
/// # Errors
/// Open errors as [`open_safe`] (a missing file is exit 66), other lock errors.
pub fn lock_is_free(path: &Path) -> anyhow::Result<bool> {
    let file = open_safe(path, Access::Read)?;
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Opens `path` for appending, creating it with `mode`, and holds its exclusive lock.
///
/// After locking, checks that the locked file is still the one at the path (same device and
/// inode); if the archiver renamed it away meanwhile, reopens and retries, so a record never
/// lands in a file that is no longer the shard.
///
/// # Errors
/// Exit 75 when the lock is not free within `timeout`; open errors as [`open_safe`].
pub fn open_locked_append(path: &Path, mode: u32, timeout: Duration) -> anyhow::Result<File> {
    let mut handle = AppendHandle::new(path, mode);
    handle.lock_current(timeout)?;
    let (file, _) = handle
        .open
        .take()
        .expect("lock_current leaves the file open");
    Ok(file)
}

/// A file kept open between appends by a long-lived writer (`cfn-emit --stdin`): each append
/// locks it, checks with one `lstat` that it is still the file at the path (the archiver may
/// have renamed it away; then it is reopened), writes, and unlocks. That is three system
/// calls fewer per record than opening the shard each time.
#[derive(Debug)]
pub struct AppendHandle {
    path: std::path::PathBuf,
    mode: u32,
    open: Option<(File, FileId)>,
}

impl AppendHandle {
    /// A handle for `path`, created with `mode` when it does not exist; opened on first use.
    pub fn new(path: &Path, mode: u32) -> Self {
        Self {
            path: path.to_path_buf(),
            mode,
            open: None,
        }
    }

    /// Locks the file, lets `fill` put whole lines into `buf` (so timestamps it takes are
    /// in file order), and appends them with one write.
    ///
    /// # Errors
    /// Exit 75 when the lock is not free within `timeout`; open errors as [`open_safe`];
    /// write errors (disk full: 74).
    pub fn append_locked(
        &mut self,
        timeout: Duration,
        buf: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> anyhow::Result<()> {
        self.lock_current(timeout)?;
        let Some((file, _)) = &self.open else {
            unreachable!("lock_current leaves the file open")
        };
        buf.clear();
        fill(buf);
        let written = append_whole(file, buf);
        let _ = file.unlock();
        written.map_err(|e| {
            fail(
                crate::exit::exit_for_io(&e),
                format!("cannot write to {}: {e}", self.path.display()),
            )
        })
    }

    /// Opens (if needed) and locks the file, then makes sure it is still the file at the
    /// path (same device and inode, one lstat, the identity taken from the checks made at
    /// open); if the archiver renamed it away meanwhile, reopens and retries until `timeout`.
    fn lock_current(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open.is_none() {
                let (file, meta) = open_safe_meta(
                    &self.path,
                    Access::Append {
                        create: true,
                        mode: self.mode,
                    },
                )?;
                self.open = Some((file, FileId::of(&meta)));
            }
            let Some((file, id)) = &self.open else {
                unreachable!("opened above")
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !lock_with_timeout(file, left)? {
                return Err(lock_timeout(&self.path, timeout));
            }
            let current = match std::fs::symlink_metadata(&self.path) {
                Ok(m) => Some(FileId::of(&m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            };
            if current == Some(*id) {
                return Ok(());
            }
            // Renamed away (a trim) or removed: reopen the file at the path.
            let _ = file.unlock();
            self.open = None;
            if Instant::now() >= deadline {
                return Err(lock_timeout(&self.path, timeout));
            }
        }
    }
}

/// The error for a lock that was not free in time (exit 75).
pub fn lock_timeout(path: &Path, timeout: Duration) -> anyhow::Error {
    fail(
        Exit::TempFail,
        format!(
            "timed out after {} ms waiting for the lock on {} (another process holds it; raise CFN_LOCK_TIMEOUT_MS to wait longer)",
            timeout.as_millis(),
            path.display()
        ),
    )
}

/// True when `file` is the file currently at `path` (not renamed away or replaced).
///
/// # Errors
/// I/O errors other than the path being gone.
pub fn same_file_at_path(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename,
/// then fsync of the directory. Readers see the old file or the new one, never a part.
///
/// # Errors
/// Exit 73 when the temp file cannot be created, 74 on other I/O errors (disk full).
pub fn write_atomic(path: &Path, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| {
            fail(
                Exit::CantCreate,
                format!("cannot create a temp file in {}: {e}", dir.display()),
            )
        })?;
    let io_err = |e: io::Error| {
        fail(
            crate::exit::exit_for_io(&e),
            format!("cannot write {}: {e}", path.display()),
        )
    };
    tmp.write_all(bytes).map_err(io_err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| {
        fail(
            Exit::IoErr,
            format!("cannot rename into {}: {}", path.display(), e.error),
        )
    })?;
    sync_dir(dir);
    Ok(())
}

/// Best-effort fsync of a directory so a rename survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The last `max` bytes of a file in a shared directory, opened like a shard: no symlink, no
/// FIFO, not another user's file. Returns the bytes and whether the start was cut (so the
/// first line is partial).
///
/// # Errors
/// Refused or unreadable files.
pub fn read_tail(path: &Path, max: u64) -> anyhow::Result<(Vec<u8>, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = open_safe(path, Access::Read)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    f.take(max).read_to_end(&mut bytes)?;
    Ok((bytes, start > 0))
}

/// Appends `buf` (whole lines) to `file`, whose lock the caller holds, so that the file
/// ends with all of it or none of it: a write cut short (a full disk) is cut back off, and
/// a partial line left at the end by a writer killed mid-write (never acknowledged) is cut
/// off first, so the next record is not glued to it and lost with it. A partial tail longer
/// than a record may be ([`crate::record::MAX_LINE_BYTES`]) is ended with a newline instead
/// (a malformed line, reported by readers) rather than cut.
///
/// # Errors
/// The write's error, after the file was cut back to where it was.
pub fn append_whole(file: &File, buf: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut start = len;
    let mut last = [0u8];
    if len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
        let back = len.min(crate::record::MAX_LINE_BYTES as u64 + 1);
        let mut tail = vec![0u8; back as usize];
        file.read_exact_at(&mut tail, len - back)?;
        match memchr::memrchr(b'\n', &tail) {
            Some(nl) => start = len - back + nl as u64 + 1,
            None if back == len => start = 0,
            None => {
                (&*file).write_all(b"\n")?;
                start = len + 1;
            }
        }
        if start < len {
            file.set_len(start)?;
        }
    }
    match (&*file).write_all(buf) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = file.set_len(start);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlink_and_leaves_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_safe(
            &link,
            Access::Append {
                create: true,
                mode: 0o600,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn creates_new_files_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = open_locked_append(&p, 0o600, Duration::from_millis(100)).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn lock_times_out_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let holder = open_locked_append(&p, 0o600, Duration::from_millis(100)).unwrap();
        let err = open_locked_append(&p, 0o600, Duration::from_millis(50)).unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), Exit::TempFail);
        drop(holder);
        assert!(open_locked_append(&p, 0o600, Duration::from_millis(50)).is_ok());
    }

    #[test]
    fn an_append_handle_follows_a_shard_renamed_away_and_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut h = AppendHandle::new(&p, 0o600);
        let mut buf = Vec::new();
        h.append_locked(Duration::from_millis(100), &mut buf, |b| {
            b.extend_from_slice(b"one\n")
        })
        .unwrap();
        // The archiver's trim: the shard renamed away, a new file in its place.
        std::fs::rename(&p, dir.path().join("old")).unwrap();
        std::fs::write(&p, "").unwrap();
        h.append_locked(Duration::from_millis(100), &mut buf, |b| {
            b.extend_from_slice(b"two\n")
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("old")).unwrap(),
            "one\n"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        // Held by someone else: a bounded wait, then exit 75.
        let holder = open_locked_append(&p, 0o600, Duration::from_millis(100)).unwrap();
        let err = h
            .append_locked(Duration::from_millis(50), &mut buf, |b| {
                b.extend_from_slice(b"x\n")
            })
            .unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), Exit::TempFail);
        drop(holder);
        // A symlink planted at the path is refused, not followed.
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(dir.path().join("old"), &p).unwrap();
        assert!(
            h.append_locked(Duration::from_millis(50), &mut buf, |b| b
                .extend_from_slice(b"y\n"))
                .is_err()
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("old")).unwrap(),
            "one\n"
        );
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.prom");
        write_atomic(&p, 0o644, b"one\n").unwrap();
        write_atomic(&p, 0o644, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
