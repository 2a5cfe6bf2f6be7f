//! Opening inputs: hot shards, files, directories of archives (plain and gzip), and stdin.

use crate::exit::{Exit, fail};
use crate::fsutil::{Access, open_safe};
use crate::paths::Config;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Buffer size for record input; large enough that a read syscall carries many records.
pub const READ_BUF: usize = 256 * 1024;

/// One input to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin,
    /// A file; `shared` ones (hot shards found by listing a shared directory) are opened with
    /// the symlink and owner checks.
    File {
        path: PathBuf,
        shared: bool,
    },
}

impl Input {
    /// The name used in messages.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".into(),
            Input::File { path, .. } => path.display().to_string(),
        }
    }

    /// The path, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Input::Stdin => None,
            Input::File { path, .. } => Some(path),
        }
    }

    /// Opens the input for reading, decompressing `.gz` (every gzip member).
    ///
    /// # Errors
    /// Exit 66 when a file does not exist; 74 for other I/O errors.
    pub fn open(&self) -> anyhow::Result<Box<dyn BufRead + Send>> {
        match self {
            Input::Stdin => Ok(Box::new(BufReader::with_capacity(
                READ_BUF,
                std::io::stdin(),
            ))),
            Input::File { path, .. } => Ok(wrap_reader(self.open_file()?, is_gzip_name(path))),
        }
    }

    /// Opens a file input as a plain `File` (for seeking); shared ones with the symlink and
    /// owner checks.
    ///
    /// # Errors
    /// Exit 2 for stdin; exit 66 when the file does not exist; 74 for other I/O errors.
    pub fn open_file(&self) -> anyhow::Result<std::fs::File> {
        match self {
            Input::Stdin => Err(fail(Exit::Usage, "stdin cannot be opened as a file here")),
            Input::File { path, shared: true } => open_safe(path, Access::Read),
            Input::File {
                path,
                shared: false,
            } => std::fs::File::open(path).map_err(|e| {
                fail(
                    crate::exit::exit_for_io(&e),
                    format!("cannot open {}: {e}", path.display()),
                )
            }),
        }
    }
}

/// Wraps a reader in a buffer, with a multi-member gzip decoder when `gzip`.
pub fn wrap_reader<R: Read + Send + 'static>(r: R, gzip: bool) -> Box<dyn BufRead + Send> {
    if gzip {
        Box::new(BufReader::with_capacity(
            READ_BUF,
            flate2::read::MultiGzDecoder::new(BufReader::new(r)),
        ))
    } else {
        Box::new(BufReader::with_capacity(READ_BUF, r))
    }
}

/// True for `*.gz`.
pub fn is_gzip_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

fn is_record_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")
}

/// Expands command-line paths into inputs: no path means every hot shard, `-` is stdin, a
/// directory means every `*.jsonl` and `*.jsonl.gz` below it (sorted), a file is itself.
///
/// # Errors
/// Exit 66 naming a path that does not exist.
pub fn expand_inputs(paths: &[PathBuf], config: &Config) -> anyhow::Result<Vec<Input>> {
    if paths.is_empty() {
        return Ok(config
            .hot_shards()?
            .into_iter()
            .map(|(_, path)| Input::File { path, shared: true })
            .collect());
    }
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(Input::Stdin);
            continue;
        }
        let meta = std::fs::metadata(p)
            .map_err(|e| fail(Exit::NoInput, format!("{}: {e}", p.display())))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            for entry in walkdir::WalkDir::new(p).follow_links(false) {
                let entry = entry
                    .map_err(|e| fail(Exit::IoErr, format!("walking {}: {e}", p.display())))?;
                if entry.file_type().is_file() && is_record_file(entry.path()) {
                    files.push(entry.into_path());
                }
            }
            files.sort();
            out.extend(files.into_iter().map(|path| Input::File {
                path,
                shared: false,
            }));
        } else {
            out.push(Input::File {
                path: p.clone(),
                shared: false,
            });
        }
    }
    Ok(out)
}

/// Like [`expand_inputs`], but a path that does not exist is reported on stderr
/// (`tool: error: PATH: ...`) and skipped, as grep does, so the other paths are still read;
/// the first such error is returned for the caller to end with once it is done.
///
/// # Errors
/// Errors other than a missing path (an unreadable directory, a missing shard directory).
pub fn expand_inputs_reporting(
    tool: &str,
    paths: &[PathBuf],
    config: &Config,
) -> anyhow::Result<(Vec<Input>, Option<anyhow::Error>)> {
    if paths.is_empty() {
        return Ok((expand_inputs(paths, config)?, None));
    }
    let mut inputs = Vec::new();
    let mut first_missing = None;
    for p in paths {
        match expand_inputs(std::slice::from_ref(p), config) {
            Ok(found) => inputs.extend(found),
            Err(e) if crate::exit::exit_for(&e) == Exit::NoInput => {
                eprintln!("{tool}: error: {e}");
                first_missing.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((inputs, first_missing))
}

/// How far out of time order a shard may be for range readers: writers stamp records under
/// the shard's lock, so a shard is in time order but for clock steps and `--timestamp`
/// replays; a reader that has seen a record this much past the end of its range has seen
/// every record of the range (the contract, section 1).
pub const ORDER_SLACK_MS: i64 = 60_000;

/// Finds where records at or after `since` begin in a time-ordered file (a hot shard or an
/// archive file: each is written in time order under its lock), by binary search over byte
/// offsets. Returns an offset at the start of a line; everything before it is older than
/// `since`. Reads O(log n) small windows instead of the whole file, which is what keeps a
/// 30-second query over a 1 GB tmpfs fast.
///
/// # Errors
/// I/O errors.
pub fn seek_offset_for_time(
    file: &mut std::fs::File,
    since: crate::time::EpochMs,
) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    // Small files are cheaper to scan.
    if len < 1 << 20 {
        return Ok(0);
    }
    // Invariant: the line starting at `lo` (a line start) may be >= since; every line starting
    // before `lo` is older than `since`.
    let mut lo = 0u64;
    let mut hi = len;
    let mut window = vec![0u8; 64 * 1024];
    while hi - lo > 64 * 1024 {
        let mid = lo + (hi - lo) / 2;
        file.seek(SeekFrom::Start(mid))?;
        let n = read_full(file, &mut window)?;
        let chunk = &window[..n];
        // The first complete line after `mid`.
        let Some(nl) = memchr::memchr(b'\n', chunk) else {
            hi = mid;
            continue;
        };
        let line_start = mid + nl as u64 + 1;
        let rest = &chunk[nl + 1..];
        let line_end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        match crate::reader::parse_record(&rest[..line_end]) {
            Ok(rec) if rec.ts_ms < since => lo = line_start,
            Ok(_) => hi = mid,
            // A malformed line tells nothing about time: narrow conservatively.
            Err(_) => hi = mid,
        }
    }
    Ok(lo)
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match file.read(&mut buf[total..]) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}
