//! `cfn-cat`: write the records of hot shards, archives and legacy files to stdout as JSONL.
//!
//! Valid records pass through byte for byte; this crate owns input selection, the k-way merge
//! of `--sorted` and the polling of `--follow`. Reading, filtering and paths are `cfn-core`'s.

use cfn_core::exit::{Exit, fail};
use cfn_core::filter::RecordFilter;
use cfn_core::fsutil::skip_refused;
use cfn_core::input::{Input, expand_inputs_reporting};
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

    /// For s3:// inputs: add a "host" tag to each record, from the key's HOST segment
    /// (PREFIX/HOST/cfn-metrics-….jsonl.gz, as cfn-archive --upload stores them), so
    /// `cfn-agg --by tag:host` gives each host's figures. Records are otherwise unchanged.
    #[arg(long)]
    pub host_tag: bool,

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
    let (s3_urls, local): (Vec<&PathBuf>, Vec<&PathBuf>) = cli
        .paths
        .iter()
        .partition(|p| p.to_str().is_some_and(|s| s.starts_with("s3://")));
    let local: Vec<PathBuf> = local.into_iter().cloned().collect();
    let cold = cold_objects(&cli, &s3_urls, &filter)?;
    let (inputs, missing) = if local.is_empty() && !s3_urls.is_empty() {
        (Vec::new(), None)
    } else {
        expand_inputs_reporting("cfn-cat", &local, &config)?
    };
    let mut stdin = Some(input);
    let mut opener = open::Opener::new(&inputs, &filter, !cli.no_seek);
    // Hot shards found by listing a shared directory: a stray file there is skipped with a
    // warning (a hostile neighbour must not stop the analysis); named paths stay errors.
    let open_one =
        |opener: &mut open::Opener<'_>, input: &Input| -> anyhow::Result<Option<open::Reader>> {
            match input {
                Input::File { shared: true, .. } => {
                    let opened = open_at_since(input, &filter, !cli.no_seek);
                    skip_refused("cfn-cat", strict, opened)
                }
                _ => opener.open(input),
            }
        };
    let mut open = |input: &Input| -> anyhow::Result<Option<Box<dyn BufRead + '_>>> {
        if *input == Input::Stdin {
            return Ok(stdin.take().map(|s| Box::new(s) as Box<dyn BufRead>));
        }
        Ok(open_one(&mut opener, input)?.map(|r| r as Box<dyn BufRead>))
    };
    // Cold objects are merged lazily (a day's objects open at a time), on this thread.
    let parallel = cfn_core::cli::thread_count(cli.threads) > 1
        && inputs.len() > 1
        && cold.is_empty()
        && !inputs.contains(&Input::Stdin);
    if cli.sorted && parallel {
        // Each input parsed on a thread of its own; the merge (and every report) is the
        // single-threaded one.
        let mut readers = Vec::with_capacity(inputs.len());
        let mut opener = open::Opener::new(&inputs, &filter, !cli.no_seek);
        for input in &inputs {
            if let Some(r) = open_one(&mut opener, input)? {
                readers.push(RecordReader::new(r, input.name()));
            }
        }
        merge::merge_sorted_parallel(readers, &filter, &mut log, &mut out)?;
    } else if cli.sorted {
        let mut readers = Vec::with_capacity(inputs.len());
        for input in &inputs {
            if let Some(r) = open(input)? {
                readers.push(RecordReader::new(r, input.name()));
            }
        }
        let mut later: Vec<merge::Later<'_, Box<dyn BufRead + '_>>> = cold
            .iter()
            .map(|c| merge::Later {
                starts_at: c.day_start.unwrap_or(i64::MIN),
                host: c.host_tag().map(str::to_string),
                open: Box::new(move || {
                    Ok(RecordReader::new(c.open()? as Box<dyn BufRead>, c.name()))
                }),
            })
            .collect();
        later.sort_by_key(|l| l.starts_at);
        merge::merge_sorted(readers, later, &filter, &mut log, &mut out)?;
    } else {
        for input in &inputs {
            if let Some(r) = open(input)? {
                let mut reader = RecordReader::new(r, input.name());
                copy_records(&mut reader, &filter, &mut log, &mut out, None)?;
            }
        }
        for c in &cold {
            let mut reader = RecordReader::new(c.open()?, c.name());
            copy_records(&mut reader, &filter, &mut log, &mut out, c.host_tag())?;
        }
    }
    out.flush()?;
    log.finish();
    // Like grep: every path that exists was read; a missing one (already reported) still
    // fails the run.
    Ok(missing.map_or(Exit::Ok, |e| cfn_core::exit::exit_for(&e)))
}

/// One archive file in cold storage.
struct ColdObject {
    client: std::sync::Arc<cfn_net::s3::S3Client>,
    bucket: String,
    key: String,
    /// The start of the UTC day an archive day file holds (None for other objects).
    day_start: Option<i64>,
    /// With --host-tag: the host segment of the key below the listed prefix.
    host: Option<String>,
}

impl ColdObject {
    fn name(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn host_tag(&self) -> Option<&str> {
        self.host.as_deref()
    }

    fn open(&self) -> anyhow::Result<Box<dyn BufRead + Send>> {
        let body = self.client.get(&self.bucket, &self.key)?;
        Ok(cfn_core::input::wrap_reader(
            body,
            self.key.ends_with(".gz"),
        ))
    }
}

/// The archive files under each s3:// URL whose day can hold records of the filter's range
/// (by their names; other `.jsonl[.gz]` objects are read whole), in key order.
fn cold_objects(
    cli: &Cli,
    urls: &[&PathBuf],
    filter: &RecordFilter,
) -> anyhow::Result<Vec<ColdObject>> {
    if urls.is_empty() {
        return Ok(Vec::new());
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let config = cfn_net::s3::S3Config::resolve(
        cli.endpoint.as_deref(),
        &env,
        cfn_net::http::RetryPolicy::with(
            cli.http.timeout_or(std::time::Duration::from_secs(60)),
            cli.http.retries,
        ),
    )?;
    let client = std::sync::Arc::new(cfn_net::s3::S3Client::new(config).for_tool("cfn-cat"));
    const DAY_MS: i64 = 86_400_000;
    let mut out = Vec::new();
    for url in urls {
        let loc = cfn_net::s3::S3Location::parse(&url.to_string_lossy())?;
        for (key, _) in client.list(&loc.bucket, &loc.prefix)? {
            let name = key.rsplit('/').next().unwrap_or(&key);
            if !(name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")) {
                continue;
            }
            let day_start = cfn_core::paths::parse_cold_name(name)
                .and_then(|(day, _, _)| cfn_core::time::parse_utc_day(&day));
            if let Some(start) = day_start
                && (filter.since.is_some_and(|s| start + DAY_MS <= s)
                    || filter.until.is_some_and(|u| start >= u))
            {
                continue;
            }
            // PREFIX/…/HOST/NAME: the segment just above the file name, when there is one
            // below the prefix.
            let host = cli
                .host_tag
                .then(|| {
                    key[loc.prefix.len()..]
                        .rsplit('/')
                        .nth(1)
                        .map(str::to_string)
                })
                .flatten()
                .filter(|h| !h.is_empty());
            out.push(ColdObject {
                client: client.clone(),
                bucket: loc.bucket.clone(),
                key,
                day_start,
                host,
            });
        }
    }
    Ok(out)
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
