//! `cfn-archive`: hot shards (tmpfs) to disk, daily gzip rotation and retention, with
//! "nothing lost, nothing duplicated" under concurrent writers and crashes.
//!
//! `sync` copies appended records into per-day archive files and commits its progress in a
//! state file only after the data is fsynced; every operation first cuts the archive back to
//! what the state records, so a crash at any point followed by another run yields every
//! record exactly once. Reading records, paths and locking are `cfn-core`'s.

use cfn_core::cli::{duration_arg, size_arg};
use cfn_core::exit::{Exit, fail};
use cfn_core::paths::Config;
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

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

COLD STORAGE:
  --upload s3://BUCKET/PREFIX/ reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, ~/.aws/credentials and ~/.aws/config
  (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE) and AWS_ENDPOINT_URL, as the
  AWS CLI does. A file is deleted only after a HEAD shows the object with its size and
  ETag. Exit 75: S3 unavailable after retries (the file stays, run again); 78: credentials,
  signature or bucket refused; 65: an object that is not ours is in the way.

EXAMPLES:
  cfn-archive run                        # every 5 minutes from a timer
  cfn-archive sync --json
  cfn-archive trim --hot 24h --dry-run
  cfn-archive prune --keep 30d
  cfn-archive prune --keep 30d --upload s3://cold-metrics/fleet/   # verified, then deleted
  cfn-archive run --upload s3://cold-metrics/fleet/ --upload-on-rotate
  AWS_ENDPOINT_URL=http://minio:9000 cfn-archive prune --upload s3://metrics/
  cfn-archive prune --exec rclone-copy-site-script --verbose ';'
  cfn-cat s3://cold-metrics/fleet/ --since 90d | cfn-agg
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
        /// Keep the records of this last span in the hot shards (older ones go once they
        /// are archived).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration_arg)]
        hot: Duration,
        #[command(flatten)]
        grace: TrimGrace,
    },
    /// Gzip the archive files of finished UTC days.
    Rotate {
        #[command(flatten)]
        cold: ColdArgs,
    },
    /// Delete archive files whose day is older than --keep (after uploading them, with
    /// --upload or --exec).
    Prune {
        /// Keep archive files of days younger than this; older ones are deleted (uploaded
        /// first with --upload or --exec).
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = duration_arg)]
        keep: Duration,
        #[command(flatten)]
        cold: ColdArgs,
    },
    /// sync, trim, rotate and prune, in that order (one timer entry).
    Run {
        /// As trim's --hot: the span kept in the hot shards.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration_arg)]
        hot: Duration,
        #[command(flatten)]
        grace: TrimGrace,
        /// As prune's --keep: the retention of the archive on disk.
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = duration_arg)]
        keep: Duration,
        #[command(flatten)]
        cold: ColdArgs,
    },
}

/// How long a trim leaves what was just synced in the hot shards.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TrimGrace {
    /// Leave records synced less than this ago (real time, not --now) in the hot shards,
    /// however old their timestamps, so followers (cfn-serve, cfn-cat --follow, cfn-top)
    /// read a replayed record before the trim moves it to the archive. 0 trims at once.
    #[arg(long = "trim-grace", value_name = "DURATION", default_value = "60s", value_parser = duration_arg)]
    pub duration: Duration,
}

/// The cold layouts, as `--cold-layout` names them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColdLayout {
    #[default]
    Hive,
    Host,
}

/// Cold storage for the files prune deletes (and, with --upload-on-rotate, the days rotate
/// gzips).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ColdArgs {
    /// Cold storage at s3://BUCKET/PREFIX/host=HOST/dt=YYYY-MM-DD/ (HOST is $CFN_HOST, else
    /// the host name; a {host} in the URL puts host=HOST there instead). prune uploads each
    /// file it is about to delete (rotating a plain one first), verifies and records the
    /// copy, and only then deletes the file; rotate uploads only with --upload-on-rotate.
    /// Each object is named for its content, so late records for a day already uploaded go
    /// up as another object beside the first, never over it. Credentials and region as the
    /// AWS CLI reads them.
    #[arg(long, value_name = "S3_URL")]
    pub upload: Option<String>,

    /// Where below the prefix each host's objects go: hive (host=HOST/dt=YYYY-MM-DD/, which
    /// DuckDB, Athena, Trino and Spark prune by) or host (HOST/, the previous layout).
    /// Objects of either layout are recognised, so no day goes up twice across a change.
    #[arg(
        long,
        value_enum,
        value_name = "LAYOUT",
        default_value = "hive",
        requires = "upload"
    )]
    pub cold_layout: ColdLayout,

    /// Also upload each day's .gz as soon as rotate makes it (the cold copy is a day behind).
    #[arg(long, requires = "upload")]
    pub upload_on_rotate: bool,

    /// Instead of S3: run PROGRAM [ARG]... with the file's path as the last argument (no
    /// shell); exit 0 means it is safe to delete. End the arguments with ';'.
    #[arg(
        long,
        num_args = 1..,
        value_terminator = ";",
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARG]...",
        conflicts_with = "upload"
    )]
    pub exec: Vec<String>,

    /// The S3 endpoint for this run (MinIO, Ceph, R2, Garage; path-style addressing),
    /// instead of $AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL", requires = "upload")]
    pub endpoint: Option<String>,

    /// Files larger than this are uploaded in parts (bytes; K, M, G, KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = size_arg)]
    pub multipart_threshold: u64,

    /// Size of each part of a multipart upload (at least 5MiB, as S3 requires).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = size_arg)]
    pub part_size: u64,

    /// Parts of a multipart upload in flight at once (memory: about two parts more than
    /// this). 0: as many as a sixteenth of the available memory holds, from 2 to 8.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub upload_threads: usize,

    #[command(flatten)]
    pub http: cfn_core::cli::HttpFlags,
}

impl ColdArgs {
    /// The target these flags describe, if any.
    ///
    /// # Errors
    /// Exit 2 for bad sizes or URLs, 78 for missing credentials.
    pub fn target(&self) -> anyhow::Result<Option<ops::cold::ColdTarget>> {
        if !self.exec.is_empty() {
            return Ok(Some(ops::cold::ColdTarget::Exec(self.exec.clone())));
        }
        let Some(url) = &self.upload else {
            return Ok(None);
        };
        let location = cfn_net::s3::S3Location::parse(url)?;
        let part_size = self.part_size;
        if part_size < 5 << 20 {
            return Err(fail(
                Exit::Usage,
                format!(
                    "--part-size of {} bytes: S3 takes parts of at least 5MiB (5242880 bytes)",
                    self.part_size
                ),
            ));
        }
        let timeout = self.http.timeout_or(std::time::Duration::from_secs(60));
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let config = cfn_net::s3::S3Config::resolve(
            self.endpoint.as_deref(),
            &env,
            cfn_net::http::RetryPolicy::with(timeout, self.http.retries),
        )?;
        Ok(Some(ops::cold::ColdTarget::S3(ops::cold::S3Target {
            client: Box::new(cfn_net::s3::S3Client::new(config).for_tool("cfn-archive")),
            bucket: location.bucket,
            prefix: location.prefix,
            host: cfn_core::paths::host_identity()?,
            layout: match self.cold_layout {
                ColdLayout::Hive => cfn_core::cold::Layout::Hive,
                ColdLayout::Host => cfn_core::cold::Layout::Host,
            },
            threshold: self.multipart_threshold,
            part_size,
            threads: match self.upload_threads {
                0 => ops::cold::default_upload_threads(part_size),
                n => n,
            },
        })))
    }
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
    hooks::report_reads();
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
        Command::Trim { hot, grace } => {
            ops::trim(ctx, st, (*hot, grace.duration), summary)?;
            &["trim"]
        }
        Command::Rotate { cold } => {
            let target = cold.target()?;
            let on_rotate = target.as_ref().filter(|_| cold.upload_on_rotate);
            ops::rotate(ctx, st, on_rotate, summary)?;
            &["rotate", "upload"]
        }
        Command::Prune { keep, cold } => {
            let target = cold.target()?;
            ops::prune(ctx, st, *keep, target.as_ref(), summary)?;
            &["prune", "upload"]
        }
        Command::Run {
            hot,
            grace,
            keep,
            cold,
        } => {
            let (hot, keep) = (*hot, *keep);
            let target = cold.target()?;
            let on_rotate = target.as_ref().filter(|_| cold.upload_on_rotate);
            ops::sync(ctx, st, summary)?;
            // A shard whose lock someone holds is not trimmed; rotation and retention go on
            // all the same (and the run still ends 75).
            let trimmed = ops::trim(ctx, st, (hot, grace.duration), summary);
            ops::rotate(ctx, st, on_rotate, summary)?;
            ops::prune(ctx, st, keep, target.as_ref(), summary)?;
            trimmed?;
            &["sync", "trim", "rotate", "prune", "upload"]
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
