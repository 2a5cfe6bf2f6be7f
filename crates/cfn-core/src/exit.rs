//! Exit codes (contract section 6) and the error type that carries one.

use std::fmt;
use std::io;

/// The exit statuses every cfn tool uses; a script can rely on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// `cfn-alert` only: at least one alert is firing.
    Firing = 1,
    /// Bad flags or arguments.
    Usage = 2,
    /// Bad data: a value that is not a finite number, malformed input under `--strict`.
    DataErr = 65,
    /// An input file or directory does not exist.
    NoInput = 66,
    /// An output file cannot be created.
    CantCreate = 73,
    /// Other I/O error (disk full, permission).
    IoErr = 74,
    /// Temporary failure: lock timeout, remote endpoint unavailable after retries.
    TempFail = 75,
    /// Bad configuration (rules file, environment).
    Config = 78,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The one mapping of an HTTP status to an exit status (contract section 6): success
    /// 0; a redirect (never followed), 401 and 403 are configuration (78); 408, 429 and 5xx
    /// are temporary (75, after the retries); any other 4xx is data the peer refused (65).
    pub fn for_http_status(status: u16) -> Exit {
        match status {
            200..=299 => Exit::Ok,
            300..=399 | 401 | 403 => Exit::Config,
            408 | 429 | 500.. => Exit::TempFail,
            _ => Exit::DataErr,
        }
    }

    /// The man-page table of exit codes, shared by every tool's `--help`.
    pub const HELP_TABLE: &'static str = "\
EXIT STATUS:
  0   success
  1   cfn-alert only: at least one alert is firing
  2   usage error (bad flags or arguments)
  65  bad data: a value that is not a finite number, malformed input under --strict
  66  an input file or directory does not exist
  73  an output file cannot be created
  74  other I/O error (disk full, permission)
  75  temporary failure: lock timeout, remote endpoint unavailable after retries
  78  bad configuration (rules file, environment)
See docs/CONTRACT.md in the source for the data contract every tool shares.";
}

/// An error that knows which exit status it should produce.
///
/// Wrap it in `anyhow::Error` (via `?` or [`fail`]); the main helper finds it anywhere in the
/// cause chain.
#[derive(Debug)]
pub struct ExitError {
    pub exit: Exit,
    pub message: String,
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

/// Builds an `anyhow::Error` that exits with `exit`.
pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ExitError {
        exit,
        message: message.into(),
    })
}

/// Picks the exit status for an error: an [`ExitError`] anywhere in the chain wins, then the
/// kind of the first `io::Error`; anything else is 74, since every other class of failure is
/// tagged with its status where it is raised.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ExitError>() {
            return e.exit;
        }
        if let Some(e) = cause.downcast_ref::<Refused>() {
            return e.0.exit;
        }
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<io::Error>() {
            return exit_for_io(e);
        }
    }
    Exit::IoErr
}

/// Maps an I/O error kind to an exit status.
pub fn exit_for_io(e: &io::Error) -> Exit {
    match e.kind() {
        io::ErrorKind::NotFound => Exit::NoInput,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Exit::TempFail,
        io::ErrorKind::InvalidData => Exit::DataErr,
        _ => Exit::IoErr,
    }
}

/// True when the error is a broken pipe on output, which is a normal end (`cfn-cat | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// A file in a shared directory that was refused (a symlink, not a regular file, owned by
/// another user). Readers of many files skip it with a warning (`fsutil::skip_refused`) and go on;
/// a writer fails. Its exit code is that of the [`ExitError`](crate::exit::ExitError) inside.
#[derive(Debug)]
pub struct Refused(pub ExitError);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn http_statuses_map_to_one_set_of_exits() {
        for (status, exit) in [
            (200, Exit::Ok),
            (204, Exit::Ok),
            (301, Exit::Config),
            (307, Exit::Config),
            (400, Exit::DataErr),
            (401, Exit::Config),
            (403, Exit::Config),
            (404, Exit::DataErr),
            (408, Exit::TempFail),
            (413, Exit::DataErr),
            (429, Exit::TempFail),
            (500, Exit::TempFail),
            (503, Exit::TempFail),
        ] {
            assert_eq!(Exit::for_http_status(status), exit, "{status}");
        }
    }

    #[test]
    fn exit_error_deep_in_chain_decides_status() {
        let err = Err::<(), _>(fail(Exit::TempFail, "lock timeout"))
            .context("writing shard")
            .unwrap_err();
        assert_eq!(exit_for(&err), Exit::TempFail);
    }

    #[test]
    fn not_found_maps_to_no_input() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::NotFound)).context("x");
        assert_eq!(exit_for(&err), Exit::NoInput);
    }

    #[test]
    fn broken_pipe_is_detected() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&err));
    }
}
