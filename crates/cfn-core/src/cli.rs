//! What every binary shares on the command line: the main helper (prints `tool: error: ...`
//! with the cause chain, picks the exit status, treats a broken pipe as success) and the
//! flags several tools take, as structs each tool flattens into its own `Cli`, so a flag is
//! spelled and documented once.

use crate::exit::{Exit, exit_for, fail, is_broken_pipe};
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
            let mut msg = format!("{tool}: error: {}", printable(&err.to_string()));
            for cause in err.chain().skip(1) {
                msg.push_str(": ");
                msg.push_str(&printable(&cause.to_string()));
            }
            msg.push('\n');
            let _ = std::io::stderr().write_all(msg.as_bytes());
            ExitCode::from(exit_for(&err).code())
        }
    }
}

/// The whole `main` of a cfn tool: parses `C`, runs `run` with stdin and stdout, and turns
/// the outcome into the exit status (see [`main_with`]). Tools take their input and output
/// as arguments, so tests can run them in-process.
pub fn tool_main<C: clap::Parser>(
    tool: &str,
    run: impl FnOnce(
        C,
        std::io::StdinLock<'static>,
        std::io::StdoutLock<'static>,
    ) -> anyhow::Result<Exit>,
) -> ExitCode {
    let cli = match parse_args::<C>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    main_with(tool, || {
        run(cli, std::io::stdin().lock(), std::io::stdout().lock())
    })
}

/// `--strict`, for tools that read records or aggregates.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StrictFlag {
    /// Stop at the first malformed input line (exit 65) instead of skipping it.
    #[arg(long)]
    pub strict: bool,
}

/// `--now`, for tools that work relative to the current time.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NowFlag {
    /// The time to act as of (default: now): a duration back from now (1h) or RFC 3339.
    #[arg(long, value_name = "TIME", global = true)]
    pub now: Option<String>,
}

impl HttpFlags {
    /// The request timeout: `--http-timeout`, else this tool's default.
    pub fn timeout_or(&self, default: std::time::Duration) -> std::time::Duration {
        self.http_timeout.unwrap_or(default)
    }
}

impl NowFlag {
    /// The time `--now` gives, or the current time.
    ///
    /// # Errors
    /// A usage error (exit 2) naming the text.
    pub fn resolve(&self) -> anyhow::Result<crate::time::EpochMs> {
        crate::time::now_or(self.now.as_deref())
    }
}

/// clap's value parser for DURATION flags (`30s`, `24h`, `7d`, `2 hours`): the flag's value
/// is a `Duration`, and a bad one is a usage error (exit 2) naming the flag and the text.
///
/// # Errors
/// Why the text is not a duration, or is out of range.
pub fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::time::parse_duration(text).map_err(|e| format!("{e:#}"))
}

/// clap's value parser for SIZE flags (bytes; `K`, `M`, `G` are powers of 1,000, `KiB`,
/// `MiB`, `GiB` of 1,024).
///
/// # Errors
/// Why the text is not a size.
pub fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| format!("{e:#}"))
}

/// HTTP flags, for tools that talk to remote APIs (cfn-alert, cfn-push, and S3 for
/// cfn-archive and cfn-cat).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct HttpFlags {
    /// Timeout of each HTTP request (default: 10s for cfn-alert, 15s for cfn-push, 60s for
    /// S3 in cfn-archive and cfn-cat, where it is the longest silence: a long body that
    /// keeps coming is never cut).
    #[arg(long, value_name = "DURATION", alias = "timeout", value_parser = duration_arg)]
    pub http_timeout: Option<std::time::Duration>,

    /// Retries after a 408, 429, 5xx or network error.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
}

/// Most malloc arenas (glibc) a long-lived, many-threaded tool keeps: by default glibc gives
/// each thread that allocates its own arena (up to 8 per core) and memory freed in one is not
/// reused by another, so the peak grows with how requests happen to land on threads, not
/// with what the tool holds (cfn-serve's 100,000-agent bound test: 147 MB with six
/// concurrent clients, 100 MB with two arenas). Set before the first thread starts.
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] (elsewhere, nothing to do).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive
        // count and it is called before this process starts a thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// How many threads a `--threads N` asks for: N, or one per core for 0.
pub fn thread_count(asked: usize) -> usize {
    match asked {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
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
    let msg = msg.to_string();
    let _ = writeln!(std::io::stderr(), "{tool}: warning: {}", printable(&msg));
}

/// Whether `c` must not reach a terminal as it is: a control character (C0, DEL, C1: escape
/// sequences, OSC 52 clipboard writes, screen clears) or a bidirectional override or
/// isolate (text that reads in another order than it is).
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}' | '\u{200e}' | '\u{200f}')
}

/// Text an agent or a peer controls, made safe for a terminal: every control character and
/// bidi override is written as a Rust escape (`\u{1b}`), everything else as it is. Every
/// tool's human output (warnings, errors, tables, summaries, reply bodies) goes through it;
/// JSON output stays JSON (its encoder escapes control characters already).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unprintable(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A size in bytes with an optional unit (K, M, G: powers of 1000; KiB, MiB, GiB: of 1024).
///
/// # Errors
/// Exit 2 for an unknown unit or a size that is not positive.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(fail(
                Exit::Usage,
                format!("size {text:?}: unknown unit {unit:?}"),
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&n| n > 0)
        .ok_or_else(|| fail(Exit::Usage, format!("size {text:?} is not a positive size")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_and_bidi_overrides_and_nothing_else() {
        let hostile = "agent\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2J\u{202e}evil\u{9b}";
        let safe = printable(hostile);
        assert_eq!(
            safe,
            "agent\\u{1b}]52;c;cHduZWQ=\\u{7}\\u{1b}[2J\\u{202e}evil\\u{9b}"
        );
        assert!(!safe.chars().any(is_unprintable));
        assert!(matches!(
            printable("agent-42 µs é 漢"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
