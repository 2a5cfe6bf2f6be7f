//! The main helper every binary calls: prints `tool: error: ...` with the cause chain, picks
//! the exit status, and treats a broken pipe as success.

use crate::exit::{Exit, exit_for, is_broken_pipe};
use std::io::Write;
use std::process::ExitCode;

/// Runs `body` and turns its outcome into the process exit status.
///
/// A broken pipe on stdout exits 0 (so `cfn-cat | head` ends quietly); any other error is
/// printed once on stderr as `tool: error: outer: cause: root` and mapped with
/// [`exit_for`].
pub fn main_with(tool: &str, body: impl FnOnce() -> anyhow::Result<Exit>) -> ExitCode {
    match body() {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let mut msg = format!("{tool}: error: {err}");
            for cause in err.chain().skip(1) {
                msg.push_str(": ");
                msg.push_str(&cause.to_string());
            }
            msg.push('\n');
            let _ = std::io::stderr().write_all(msg.as_bytes());
            ExitCode::from(exit_for(&err).code())
        }
    }
}

/// Parses the command line with clap, mapping clap's own errors to the contract: `--help`
/// and `--version` print and exit 0, usage errors exit 2.
pub fn parse_args<T: clap::Parser>() -> Result<T, ExitCode> {
    match T::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let _ = e.print();
            Err(if e.use_stderr() {
                ExitCode::from(Exit::Usage.code())
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Prints a warning line `tool: warning: msg` on stderr.
pub fn warn(tool: &str, msg: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{tool}: warning: {msg}");
}
