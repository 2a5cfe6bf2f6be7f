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

/// How deep below a listed prefix the directory walk goes before listing the rest whole:
/// the Hive layout is two levels (`host=`, `dt=`), an operator's own prefix a few more.
const MAX_WALK_DEPTH: usize = 8;

/// The most directories one walk lists (a lying store must not make it list for ever).
const MAX_WALK_DIRS: usize = 10_000;

/// The archive files under each s3:// URL whose host and day can hold records of the
/// filter's range and `--host` (by their keys; other `.jsonl[.gz]` objects are read whole),
/// in key order. The prefix is walked a level at a time, so a `host=` or `dt=` directory
/// that cannot hold such records is never listed: one host's day of a month of a fleet
/// costs a listing per level, not a listing of the bucket.
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
    let keys = cfn_core::cold::KeyFilter {
        host: cli.host.clone(),
        since: filter.since,
        until: filter.until,
    };
    let mut out = Vec::new();
    for url in urls {
        let loc = cfn_net::s3::S3Location::parse(&url.to_string_lossy())?;
        for key in walk(&client, &loc, &keys)? {
            let below = &key[loc.prefix.len()..];
            let name = below.rsplit('/').next().unwrap_or(below);
            if !(name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")) {
                continue;
            }
            let parsed = cfn_core::cold::parse_key(below);
            if !keys.wants(&parsed) {
                continue;
            }
            out.push(ColdObject {
                client: client.clone(),
                bucket: loc.bucket.clone(),
                day_start: parsed
                    .day
                    .as_deref()
                    .and_then(cfn_core::time::parse_utc_day),
                host: parsed.host.filter(|_| cli.host_tag),
                key,
            });
        }
    }
    Ok(out)
}

/// Every key below `loc` in a directory `keys` may want, in key order. Without a host or a
/// time range the prefix is listed whole (a page per 1,000 keys). With one, it is walked a
/// level at a time: a `host=` or `dt=` directory that cannot hold wanted records is never
/// listed, and one that can is listed whole (a host's month is one page), as is any
/// directory deeper than [`MAX_WALK_DEPTH`].
///
/// # Errors
/// The listings' errors; exit 65 past [`MAX_WALK_DIRS`] directories.
fn walk(
    client: &cfn_net::s3::S3Client,
    loc: &cfn_net::s3::S3Location,
    keys: &cfn_core::cold::KeyFilter,
) -> anyhow::Result<Vec<String>> {
    let whole = |dir: &str| -> anyhow::Result<Vec<String>> {
        Ok(client
            .list(&loc.bucket, dir)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    };
    if keys.host.is_none() && keys.since.is_none() && keys.until.is_none() {
        return whole(&loc.prefix);
    }
    let mut found = Vec::new();
    let mut level = vec![loc.prefix.clone()];
    let mut listed = 0;
    for depth in 0..=MAX_WALK_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            listed += 1;
            if listed > MAX_WALK_DIRS {
                return Err(cfn_core::exit::fail(
                    cfn_core::exit::Exit::DataErr,
                    format!(
                        "listing s3://{}/{}: more than {MAX_WALK_DIRS} directories; nothing was read (narrow the prefix)",
                        loc.bucket, loc.prefix
                    ),
                ));
            }
            let segment = dir[loc.prefix.len()..].trim_end_matches('/');
            let segment = segment.rsplit('/').next().unwrap_or(segment);
            let partition = segment.starts_with("host=") || segment.starts_with("dt=");
            if partition || depth == MAX_WALK_DEPTH {
                found.extend(whole(&dir)?);
                continue;
            }
            let listing = client.list_dir(&loc.bucket, &dir)?;
            found.extend(listing.objects.into_iter().map(|(k, _)| k));
            next.extend(listing.dirs.into_iter().filter(|d| {
                let segment = d[dir.len()..].trim_end_matches('/');
                keys.may_descend(segment)
            }));
        }
        level = next;
    }
    found.sort();
    Ok(found)
}
