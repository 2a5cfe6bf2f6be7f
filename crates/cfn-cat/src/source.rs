//! What cfn-cat reads: local inputs (files, directories, hot shards, stdin) and archive
//! files in cold storage (`s3://`), one list of [`Source`]s read in one loop. Cold objects
//! are listed with the same `--endpoint`, `--retries` and `--http-timeout` as cfn-archive's
//! and, in `--sorted` merges, opened only when the merge reaches their day.

use crate::{Cli, copy_records, merge, open, open_at_since};
use cfn_core::filter::RecordFilter;
use cfn_core::fsutil::skip_refused;
use cfn_core::input::{Input, expand_inputs_reporting};
use cfn_core::paths::Config;
use cfn_core::reader::{MalformedLog, RecordReader};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// One thing to read.
pub enum Source {
    /// A file (a hot shard when `shared`) or stdin.
    Local(Input),
    /// An archive file in cold storage.
    Cold(ColdObject),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Local(i) => i.name(),
            Source::Cold(c) => c.name(),
        }
    }

    /// The `host` tag its records get (`--host-tag`, cold objects only).
    fn host_tag(&self) -> Option<&str> {
        match self {
            Source::Local(_) => None,
            Source::Cold(c) => c.host.as_deref(),
        }
    }
}

/// The sources the command line names, locals first, and the first missing path (already
/// reported on stderr) for the exit status.
///
/// # Errors
/// Errors other than a missing path; listing cold storage.
pub fn sources_of(
    cli: &Cli,
    config: &Config,
    filter: &RecordFilter,
) -> anyhow::Result<(Vec<Source>, Option<anyhow::Error>)> {
    let is_s3 = |p: &&PathBuf| p.to_str().is_some_and(|s| s.starts_with("s3://"));
    let s3_urls: Vec<&PathBuf> = cli.paths.iter().filter(is_s3).collect();
    let local: Vec<PathBuf> = cli.paths.iter().filter(|p| !is_s3(p)).cloned().collect();
    let cold = cold_objects(cli, &s3_urls, filter)?;
    let (inputs, missing) = if local.is_empty() && !s3_urls.is_empty() {
        (Vec::new(), None)
    } else {
        expand_inputs_reporting("cfn-cat", &local, config)?
    };
    let sources = inputs
        .into_iter()
        .map(Source::Local)
        .chain(cold.into_iter().map(Source::Cold))
        .collect();
    Ok((sources, missing))
}

/// Opens local sources for one run.
struct LocalOpener<'a, R> {
    stdin: Option<R>,
    opener: open::Opener<'a>,
    filter: &'a RecordFilter,
    seek: bool,
    strict: bool,
}

impl<'a, R: BufRead + 'a> LocalOpener<'a, R> {
    /// A file input (`None`: a stray hot shard skipped with a warning, or a day file whose
    /// records its `.gz` holds).
    fn open_file(&mut self, input: &Input) -> anyhow::Result<Option<open::Reader>> {
        match input {
            // Hot shards found by listing a shared directory: a stray file there is skipped
            // with a warning (a hostile neighbour must not stop the analysis); named paths
            // stay errors.
            Input::File { shared: true, .. } => {
                let opened = open_at_since(input, self.filter, self.seek);
                skip_refused("cfn-cat", self.strict, opened)
            }
            _ => self.opener.open(input),
        }
    }

    fn open(&mut self, input: &Input) -> anyhow::Result<Option<Box<dyn BufRead + 'a>>> {
        if *input == Input::Stdin {
            return Ok(self.stdin.take().map(|s| Box::new(s) as Box<dyn BufRead>));
        }
        Ok(self.open_file(input)?.map(|r| r as Box<dyn BufRead>))
    }
}

/// Writes the selected records of every source to `out`: in order, or merged by time with
/// `--sorted` (each file on a thread of its own when there are threads, several files and
/// neither stdin nor cold storage).
///
/// # Errors
/// I/O errors, a source that cannot be opened.
pub fn read_sources<R: BufRead>(
    cli: &Cli,
    sources: &[Source],
    stdin: R,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let locals: Vec<Input> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Local(i) => Some(i.clone()),
            Source::Cold(_) => None,
        })
        .collect();
    let mut opener = LocalOpener {
        stdin: Some(stdin),
        opener: open::Opener::new(&locals, filter, !cli.no_seek),
        filter,
        seek: !cli.no_seek,
        strict: cli.strict.strict,
    };
    if !cli.sorted {
        for s in sources {
            let reader = match s {
                Source::Local(i) => opener.open(i)?,
                Source::Cold(c) => Some(c.open()? as Box<dyn BufRead>),
            };
            if let Some(r) = reader {
                let mut reader = RecordReader::new(r, s.name());
                copy_records(&mut reader, filter, log, out, s.host_tag())?;
            }
        }
        return Ok(());
    }
    let parallel = cfn_core::cli::thread_count(cli.threads) > 1
        && locals.len() > 1
        && locals.len() == sources.len()
        && !locals.contains(&Input::Stdin);
    if parallel {
        // Each input parsed on a thread of its own; the merge (and every report) is the
        // single-threaded one.
        let mut readers = Vec::with_capacity(locals.len());
        for input in &locals {
            if let Some(r) = opener.open_file(input)? {
                readers.push(RecordReader::new(r, input.name()));
            }
        }
        return merge::merge_sorted_parallel(readers, filter, log, out);
    }
    let mut readers = Vec::with_capacity(locals.len());
    let mut later: Vec<merge::Later<'_, Box<dyn BufRead + '_>>> = Vec::new();
    for s in sources {
        match s {
            Source::Local(input) => {
                if let Some(r) = opener.open(input)? {
                    readers.push(RecordReader::new(r, input.name()));
                }
            }
            // Merged lazily: a day's objects open at a time, on this thread.
            Source::Cold(c) => later.push(merge::Later {
                starts_at: c.day_start.unwrap_or(i64::MIN),
                host: c.host.clone(),
                open: Box::new(move || {
                    Ok(RecordReader::new(c.open()? as Box<dyn BufRead>, c.name()))
                }),
            }),
        }
    }
    later.sort_by_key(|l| l.starts_at);
    merge::merge_sorted(readers, later, filter, log, out)
}

/// One archive file in cold storage.
pub struct ColdObject {
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
