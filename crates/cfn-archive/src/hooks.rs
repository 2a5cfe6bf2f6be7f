//! Fault injection for the crash-safety tests and the chaos soak: `CFN_ARCHIVE_CRASH_AT=<point>`
//! kills the process with SIGKILL (no cleanup, no buffered writes) when it reaches that point
//! (they are listed in `CRASH_POINTS`), and
//! `CFN_ARCHIVE_FAIL_WRITE_AFTER=<bytes>` makes archive writes fail with "no space left on
//! device" after that many bytes, where a test cannot mount a small filesystem;
//! `CFN_ARCHIVE_REPORT_READS=1` prints the bytes the process read from files (`rchar` of
//! /proc/self/io) when it ends, so a test can tell one read of a file from two.
//!
//! Armed only by the `cfn-archive-faults` binary (its `main` calls [`arm`] before the tool's
//! own): the `cfn-archive` an operator runs never arms them, so nothing in its environment can
//! make it fail on purpose. Both binaries come from one build: the tests and the chaos soak
//! need no second build with other features (a check of an atomic flag is all it costs).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ARMED: AtomicBool = AtomicBool::new(false);

/// Lets the variables above take effect in this process (`cfn-archive-faults` only).
pub fn arm() {
    ARMED.store(true, Ordering::Relaxed);
}

fn armed() -> bool {
    ARMED.load(Ordering::Relaxed)
}

/// Every named point, by phase, for a harness that aims its kills (`after_part_N` for any N
/// counts a multipart upload's acknowledged parts).
pub const CRASH_POINTS: &[(&str, &str)] = &[
    ("sync", "after_first_flush"),
    ("sync", "after_writes"),
    ("sync", "after_fsync"),
    ("trim", "before_trim_rename"),
    ("trim", "after_trim_rename"),
    ("rotate", "before_gz_rename"),
    ("rotate", "after_gz_rename"),
    ("upload", "before_put"),
    ("upload", "after_put"),
    ("upload", "after_cold_record"),
    ("upload", "after_part_1"),
    ("prune", "after_prune_delete"),
    ("state", "before_state_save"),
];

/// Dies by SIGKILL here when `CFN_ARCHIVE_CRASH_AT` names this point (`cfn-archive-faults` only):
/// the signal a kill from outside sends, so no core file and no unwinding.
pub fn crash_point(name: &str) {
    if armed() && std::env::var("CFN_ARCHIVE_CRASH_AT").is_ok_and(|v| v == name) {
        // SAFETY: kill(2) on this process's own pid; it does not return.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Counts `n` bytes about to be written; fails like a full disk past the configured limit
/// (`cfn-archive-faults` only).
///
/// # Errors
/// `ENOSPC` once the limit is passed.
pub fn check_write(n: usize) -> std::io::Result<()> {
    if !armed() {
        return Ok(());
    }
    if let Some(limit) = std::env::var("CFN_ARCHIVE_FAIL_WRITE_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let before = WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
        if before + n as u64 > limit {
            return Err(std::io::Error::from_raw_os_error(28));
        }
    }
    Ok(())
}

/// Prints the bytes this process has read when `CFN_ARCHIVE_REPORT_READS` is set
/// (`cfn-archive-faults` only).
pub fn report_reads() {
    if !armed() || std::env::var_os("CFN_ARCHIVE_REPORT_READS").is_none() {
        return;
    }
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    if let Some(n) = io.lines().find_map(|l| l.strip_prefix("rchar:")) {
        eprintln!("cfn-archive: test-hooks: read {} bytes", n.trim());
    }
}
