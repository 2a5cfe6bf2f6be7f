//! `cfn-cat`: write the records of hot shards, archives and legacy files to stdout as JSONL.
//!
//! Valid records pass through byte for byte; this crate owns input selection, the k-way merge
//! of `--sorted` and the polling of `--follow`. Reading, filtering and paths are `cfn-core`'s.

use cfn_core::exit::{Exit, fail};
use cfn_core::filter::RecordFilter;
use cfn_core::input::Input;
use cfn_core::paths::Config;
use cfn_core::pattern::NamePattern;
use cfn_core::reader::{MalformedLog, RecordReader};
use cfn_core::time::{now_ms, parse_time_arg};
use clap::Parser;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

mod follow;
mod merge;
mod open;
mod source;

const EXAMPLES: &str = "\
INPUTS:
  No PATH reads every hot shard ($CFN_METRICS_DIR/cfn-metrics-<N>.jsonl, default /dev/shm).
  A directory reads every *.jsonl and *.jsonl.gz below it (gzip files may hold several
  members); `-` reads stdin. Legacy single files, including the old library's pretty-printed
  multi-line records, are read too (those are written back compacted onto one line).

EXAMPLES:
  cfn-cat --since 30s | cfn-agg
  cfn-cat --since 2026-11-27T00:00:00Z --until 2026-11-28T00:00:00Z /var/lib/cfn-metrics/archive
  cfn-cat --metric 'coordination.*' --agent agent-42 --sorted
  cfn-cat --follow --metric memory_usage_mb
";

/// Read cfn-metrics shards and archives as JSONL.
///
/// Writes the records of its inputs to stdout, one per line. Malformed lines are skipped,
/// counted and reported on stderr as file:line: reason (--strict makes the first one fatal).
#[derive(Parser, Debug)]
#[command(
    name = "cfn-cat",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// Files or directories to read; `-` for stdin; s3://BUCKET/PREFIX/ for the archive
    /// files in cold storage (credentials as the AWS CLI reads them). Default: every hot
    /// shard.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// The S3 endpoint for s3:// inputs (MinIO, Ceph, R2, Garage; path-style addressing),
    /// instead of $AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// For s3:// inputs: add a "host" tag to each record, from the key's host=HOST segment
    /// (PREFIX/host=HOST/dt=DAY/…, as cfn-archive --upload stores them) or, in the earlier
    /// layout, the segment above the file name (PREFIX/HOST/…), so `cfn-agg --by tag:host`
    /// gives each host's figures. Records are otherwise unchanged.
    #[arg(long)]
    pub host_tag: bool,

    /// For s3:// inputs: only the objects of this host (its host=HOST segment, or its
    /// HOST segment in the earlier layout). With --since/--until, only that host's days in
    /// range are listed, not the whole prefix.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// For s3:// inputs: the longest silence from the store (connecting, awaiting a reply,
    /// or between bytes of a body) and the retries of a failed request, as cfn-archive.
    #[command(flatten)]
    pub http: cfn_core::cli::HttpFlags,

    /// Only records at or after this time: a duration back from now (30s, 5m, 24h, 7d) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Only records before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Only this metric: an exact name or a glob such as 'coordination.*'; repeatable.
    #[arg(long, value_name = "NAME")]
    pub metric: Vec<String>,

    /// Only this agent (exact or glob); repeatable.
    #[arg(long, value_name = "ID")]
    pub agent: Vec<String>,

    /// Merge the inputs in timestamp order (each shard is already in time order, so this is a
    /// k-way merge, not a sort).
    #[arg(long)]
    pub sorted: bool,

    /// Keep reading as records are appended, picking up new shards and surviving shards
    /// renamed or truncated by the archiver.
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// With --follow: how often to look for new records.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = cfn_core::cli::duration_arg)]
    pub interval: std::time::Duration,

    /// Also a hot shard that is refused (a symlink, FIFO, directory or another user's
    /// file) is an error under --strict, instead of a warning.
    #[command(flatten)]
    pub strict: cfn_core::cli::StrictFlag,

    /// With --sorted: read each input on a thread of its own when this is more than 1
    /// (0: one per core); the output is the same either way.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,

    /// Read whole files even with --since (for shards whose records are not in time order,
    /// such as replays written with cfn-emit --timestamp).
    #[arg(long)]
    pub no_seek: bool,
}

/// Builds the record filter from the flags.
///
/// # Errors
/// Exit 2 for bad times or patterns.
pub fn filter_from(cli: &Cli) -> anyhow::Result<RecordFilter> {
    let now = now_ms();
    Ok(RecordFilter {
        since: cli
            .since
            .as_deref()
            .map(|t| parse_time_arg(t, now))
            .transpose()?,
        until: cli
            .until
            .as_deref()
            .map(|t| parse_time_arg(t, now))
            .transpose()?,
        metrics: cli
            .metric
            .iter()
            .map(|m| NamePattern::new(m))
            .collect::<Result<_, _>>()?,
        agents: cli
            .agent
            .iter()
            .map(|a| NamePattern::new(a))
            .collect::<Result<_, _>>()?,
    })
}

/// Opens an input, seeking past records older than the filter's `since` when that is safe.
///
/// # Errors
/// As [`Input::open`].
pub fn open_at_since(
    input: &Input,
    filter: &RecordFilter,
    seek: bool,
) -> anyhow::Result<Box<dyn std::io::BufRead + Send>> {
    use std::io::{Seek, SeekFrom};
    match (input, filter.since) {
        (Input::File { path, .. }, Some(since)) if seek && !cfn_core::input::is_gzip_name(path) => {
            let mut file = input.open_file()?;
            let off = cfn_core::input::seek_offset_for_time(&mut file, since)?;
            file.seek(SeekFrom::Start(off))?;
            Ok(cfn_core::input::wrap_reader(file, false))
        }
        _ => input.open(),
    }
}

/// Runs `cfn-cat`.
///
/// # Errors
/// As the contract's exit codes say; a broken pipe is a normal end.
pub fn run(cli: Cli, input: impl BufRead, out: impl Write) -> anyhow::Result<Exit> {
    let config = Config::from_env()?;
    let filter = filter_from(&cli)?;
    let strict = cli.strict.strict;
    let mut log = MalformedLog::new("cfn-cat", strict);
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    if cli.follow {
        if let Some(url) = cli
            .paths
            .iter()
            .find(|p| p.to_str().is_some_and(|s| s.starts_with("s3://")))
        {
            return Err(fail(
                Exit::Usage,
                format!(
                    "--follow reads hot shards; {} is cold storage, which does not grow",
                    url.display()
                ),
            ));
        }
        let interval = cli.interval;
        follow::follow(
            &cli.paths, &config, &filter, &mut log, &mut out, interval, strict,
        )?;
        return Ok(Exit::Ok);
    }
    let (sources, missing) = source::sources_of(&cli, &config, &filter)?;
    source::read_sources(&cli, &sources, input, &filter, &mut log, &mut out)?;
    out.flush()?;
    log.finish();
    // Like grep: every path that exists was read; a missing one (already reported) still
    // fails the run.
    Ok(missing.map_or(Exit::Ok, |e| cfn_core::exit::exit_for(&e)))
}

/// Copies the selected records of one reader to `out`, byte for byte (with a `host` tag
/// added when `host` is given).
///
/// # Errors
/// I/O errors (a broken pipe included: the caller treats it as the end).
pub fn copy_records<R: std::io::BufRead>(
    reader: &mut RecordReader<R>,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
    host: Option<&str>,
) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut tagged = Vec::new();
    loop {
        let res = reader.next_with(log, |rec| {
            if filter.matches(&rec) {
                match host {
                    Some(h) => {
                        tagged.clear();
                        cfn_core::record::write_with_tag(&rec, "host", h, &mut tagged);
                        out.write_all(&tagged)?;
                    }
                    None => out.write_all(rec.raw)?,
                }
                out.write_all(b"\n")?;
                return Ok::<_, std::io::Error>(1);
            }
            Ok(0)
        })?;
        match res {
            None => return Ok(n),
            Some(r) => n += r?,
        }
    }
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
