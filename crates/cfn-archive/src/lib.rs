//! `cfn-archive`: hot shards (tmpfs) to disk, daily gzip rotation and retention, with
//! "nothing lost, nothing duplicated" under concurrent writers and crashes.
//!
//! `sync` copies appended records into per-day archive files and commits its progress in a
//! state file only after the data is fsynced; every operation first cuts the archive back to
//! what the state records, so a crash at any point followed by another run yields every
//! record exactly once. Reading records, paths and locking are `cfn-core`'s.

use cfn_core::exit::{Exit, fail};
use cfn_core::paths::Config;
use cfn_core::time::parse_duration;
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub mod hooks;
pub mod ops;
pub mod rebuild;
pub mod state;

use ops::{Ctx, Summary};

const EXAMPLES: &str = "\
FILES:
  Hot shards: $CFN_METRICS_DIR/cfn-metrics-<N>.jsonl (default /dev/shm).
  Archive: $CFN_ARCHIVE_DIR/cfn-metrics-YYYYMMDD-<N>.jsonl for each record's UTC day,
  ....jsonl.gz once rotated; progress in $CFN_ARCHIVE_DIR/.cfn-archive-state.json.
  Malformed lines are carried into the archive unchanged, next to the records around them.

EXAMPLES:
  cfn-archive run                        # every 5 minutes from a timer
  cfn-archive sync --json
  cfn-archive trim --hot 24h --dry-run
  cfn-archive prune --keep 30d
  cfn-archive sync --rebuild-state       # after a lost or corrupt state file
  cfn-cat $CFN_ARCHIVE_DIR | cfn-agg     # archives read like shards
";

/// Move hot shards to disk, gzip finished days, apply retention.
///
/// Every subcommand is safe to run from cron or a systemd timer at any moment: they hold a
/// lock on the archive directory (a second one exits 75 at once) and never lose or duplicate
/// a record, even when killed.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-archive",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Hot shard directory instead of $CFN_METRICS_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Archive directory instead of $CFN_ARCHIVE_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,

    /// Say what would be done; change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Print the summary as JSON.
    #[arg(long, global = true)]
    pub json: bool,

    /// The current time (for tests and replays).
    #[command(flatten)]
    pub now: cfn_core::cli::NowFlag,
}

/// The operations.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Copy records appended to the hot shards since the last sync into the archive.
    Sync {
        /// Rebuild a lost or corrupt state file from the archive and the hot shards.
        #[arg(long)]
        rebuild_state: bool,
    },
    /// Remove from the hot shards records older than --hot that are already archived.
    Trim {
        /// Keep this much hot.
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        hot: String,
    },
    /// Gzip the archive files of finished UTC days.
    Rotate,
    /// Delete archive files whose day is older than --keep.
    Prune {
        /// Retention.
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        keep: String,
    },
    /// sync, trim, rotate and prune, in that order (one timer entry).
    Run {
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        hot: String,
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        keep: String,
    },
}

/// Runs `cfn-archive`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli, _input: impl std::io::BufRead, mut out: impl Write) -> anyhow::Result<Exit> {
    let config = Config::from_env()?;
    let ctx = Ctx {
        metrics_dir: cli.dir.clone().unwrap_or(config.metrics_dir.clone()),
        archive_dir: cli
            .archive_dir
            .clone()
            .unwrap_or(config.archive_dir.clone()),
        dry_run: cli.dry_run,
        lock_timeout: config.lock_timeout,
        progress: std::io::stderr().is_terminal(),
        now: cli.now.resolve()?,
    };
    let _lock = lock_archive_dir(&ctx)?;
    if !ctx.dry_run {
        ops::clean_stale_temp_files(&ctx);
    }
    let rebuild = matches!(
        cli.command,
        Command::Sync {
            rebuild_state: true
        }
    );
    let mut st = recovered_state(&ctx, rebuild)?;
    let mut summary = Summary {
        dry_run: ctx.dry_run,
        ..Default::default()
    };
    let parts = execute(&cli.command, &ctx, &mut st, &mut summary)?;
    if cli.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        writeln!(out, "{}", summary.line(parts))?;
    }
    Ok(Exit::Ok)
}

/// Creates and checks the archive directory and takes its lock (a second cfn-archive on the
/// same directory exits 75 at once rather than wait).
fn lock_archive_dir(ctx: &Ctx) -> anyhow::Result<cfn_core::fsutil::LockFile> {
    std::fs::create_dir_all(&ctx.archive_dir).map_err(|e| {
        fail(
            Exit::CantCreate,
            format!(
                "cannot create archive directory {}: {e}",
                ctx.archive_dir.display()
            ),
        )
    })?;
    cfn_core::fsutil::check_shared_dir(&ctx.archive_dir)?;
    let lock_path = ctx.archive_dir.join(state::LOCK_FILE);
    cfn_core::fsutil::LockFile::try_acquire(&lock_path)?.ok_or_else(|| {
        fail(
            Exit::TempFail,
            format!(
                "another cfn-archive is running on {} (it holds {}); not starting a second one",
                ctx.archive_dir.display(),
                lock_path.display()
            ),
        )
    })
}

/// The state to work from: loaded (or rebuilt, or new), with the archive brought back to
/// what it records.
fn recovered_state(ctx: &Ctx, rebuild: bool) -> anyhow::Result<state::ArchiveState> {
    let (mut st, had_state) = if rebuild {
        (rebuild::rebuild_state(ctx)?, true)
    } else {
        match state::load(&ctx.archive_dir)? {
            Some(s) => (s, true),
            None => {
                let fresh = state::ArchiveState {
                    version: 1,
                    ..Default::default()
                };
                // A new archive: commit an empty state before writing anything, so a first
                // sync that crashes is recovered like any other rather than mistaken for a
                // lost state.
                let empty = ops::archive_file_count(&ctx.archive_dir)? == 0;
                if empty && !ctx.dry_run {
                    state::save(&ctx.archive_dir, &fresh)?;
                }
                (fresh, empty)
            }
        }
    };
    let changed = ops::recover(ctx, &mut st, had_state)?;
    if (changed || rebuild) && !ctx.dry_run {
        state::save(&ctx.archive_dir, &st)?;
    }
    Ok(st)
}

/// Runs the subcommand's operations; returns their names for the summary line.
fn execute(
    command: &Command,
    ctx: &Ctx,
    st: &mut state::ArchiveState,
    summary: &mut Summary,
) -> anyhow::Result<&'static [&'static str]> {
    Ok(match command {
        Command::Sync { .. } => {
            ops::sync(ctx, st, summary)?;
            &["sync"]
        }
        Command::Trim { hot } => {
            ops::trim(ctx, st, parse_duration(hot)?, summary)?;
            &["trim"]
        }
        Command::Rotate => {
            ops::rotate(ctx, st, summary)?;
            &["rotate"]
        }
        Command::Prune { keep } => {
            ops::prune(ctx, st, parse_duration(keep)?, summary)?;
            &["prune"]
        }
        Command::Run { hot, keep } => {
            let (hot, keep) = (parse_duration(hot)?, parse_duration(keep)?);
            ops::sync(ctx, st, summary)?;
            ops::trim(ctx, st, hot, summary)?;
            ops::rotate(ctx, st, summary)?;
            ops::prune(ctx, st, keep, summary)?;
            &["sync", "trim", "rotate", "prune"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
