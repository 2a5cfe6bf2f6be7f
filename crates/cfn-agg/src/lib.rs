//! `cfn-agg`: group records and compute count, sum, avg, min, max and percentiles
//! (contract section 4).
//!
//! The [`Aggregator`] is a library so `cfn-serve` computes exactly what the command line
//! does. Records come from `cfn-core`'s reader; this crate owns grouping, statistics,
//! merging and the table format.

use cfn_core::aggregate::Aggregate;
use cfn_core::aggregate::for_each_aggregate;
use cfn_core::exit::{Exit, fail};
use cfn_core::filter::RecordFilter;
use cfn_core::input::{Input, expand_inputs_reporting};
use cfn_core::paths::Config;
use cfn_core::reader::{MalformedLog, RecordReader};
use cfn_core::time::EpochMs;
use clap::{Parser, ValueEnum};
use std::io::{BufRead, Write};
use std::path::PathBuf;

mod parallel;
mod table;

use cfn_stats::group::{Aggregator, GroupBy, Options};

const EXAMPLES: &str = "\
EXAMPLES:
  cfn-cat --since 30s | cfn-agg
  cfn-agg --by agent --by tag:phase /var/lib/cfn-metrics/archive
  cfn-agg --window 5m --format table < records.jsonl
  cfn-agg --bucket 1m --quantiles 0.5,0.9,0.99,0.999 day.jsonl
  cfn-cat --since 30s | cfn-agg --presence | cfn-alert --rule 'silent agent-* 5m critical' 
  # Scale out: aggregate per host, then combine the partial results.
  cfn-agg --with-digest host1.jsonl > a.jsonl; cfn-agg --with-digest host2.jsonl > b.jsonl
  cat a.jsonl b.jsonl | cfn-agg --merge

OUTPUT:
  One JSON object per group: metric, unit, the group keys (agent, tags, bucket_start),
  count, sum, avg, min, max, p50, p95, p99 (per --quantiles), first, last. count, sum, min,
  max and avg are exact. Percentiles are exact nearest-rank (the ceil(q*n)-th smallest) while
  a group holds at most --exact-limit values, and while it has at most 1,024 distinct values
  (counts, queue depths, percentages with one decimal) at any volume; beyond, t-digest
  estimates within 0.1% in rank (0.25% after --merge of ten parts), inside [min, max] and
  rounded to the values' own decimals. Memory stays bounded: a budget of exact bytes across
  all groups moves the largest groups to a digest first.

  --with-digest adds \"state\": {\"values\":[...]}, {\"table\":[[value,count],...]} or
  {\"centroids\":[[mean,weight],...]}, with \"decimals\"; --merge combines any mix.
";

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One aggregate per line (contract section 4).
    Jsonl,
    /// An aligned table for a terminal.
    Table,
}

/// Group records and compute count/avg/min/max and percentiles.
///
/// Reads records (stdin, or the PATHs) and writes one aggregate per group. Memory stays
/// bounded whatever the input size: a group keeps at most --exact-limit values, then an
/// exact value table (up to 1,024 distinct values), then a t-digest.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-agg",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// Files or directories of records; `-` or nothing for stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Group also by `agent` or `tag:NAME`; repeatable. Records always group by metric.
    #[arg(long = "by", value_name = "KEY")]
    pub by: Vec<String>,

    /// Quantiles to compute, comma-separated, each in [0, 1].
    #[arg(
        long,
        value_name = "Q,...",
        default_value = "0.5,0.95,0.99",
        value_delimiter = ','
    )]
    pub quantiles: Vec<f64>,

    /// Most values a group keeps as they are; past it, a table of counts while it has at most
    /// 1,024 distinct values (still exact), else a t-digest.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub exact_limit: usize,

    /// Only records within this duration before --now.
    #[arg(long, value_name = "DURATION", value_parser = cfn_core::cli::duration_arg)]
    pub window: Option<std::time::Duration>,

    /// The end of --window.
    #[command(flatten)]
    pub now: cfn_core::cli::NowFlag,

    /// One aggregate per group per time bucket of this size, with bucket_start.
    #[arg(long, value_name = "DURATION", value_parser = cfn_core::cli::duration_arg)]
    pub bucket: Option<std::time::Duration>,

    /// Only these metrics (exact or glob); repeatable.
    #[arg(long, value_name = "NAME")]
    pub metric: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,

    /// Add each group's mergeable state (`state`) so --merge can combine runs.
    #[arg(long)]
    pub with_digest: bool,

    /// Input is aggregate lines written with --with-digest: combine them.
    #[arg(long)]
    pub merge: bool,

    #[command(flatten)]
    pub strict: cfn_core::cli::StrictFlag,

    /// After the aggregates, one presence line per agent seen (contract section 10): first
    /// and last record, count, whether it said it was done, the gaps between its records.
    /// cfn-alert's silence rules need them (cfn-analyze passes it).
    #[arg(long)]
    pub presence: bool,

    /// With --presence, also a line per value of tag KEY (a job or task id); repeatable, at
    /// most 8 (implies --presence).
    #[arg(long, value_name = "KEY")]
    pub presence_tag: Vec<String>,

    /// Threads that parse and fold records (0: one per core). The input is folded in blocks
    /// of 1 MiB merged in input order, so the output is the same for any number.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// Reads every record of `reader` that passes `filter` into `agg`.
///
/// # Errors
/// I/O errors; the first malformed line under `--strict`.
pub fn add_all<R: BufRead>(
    agg: &mut Aggregator,
    reader: &mut RecordReader<R>,
    filter: &RecordFilter,
    log: &mut MalformedLog,
) -> anyhow::Result<()> {
    let check = !filter.is_empty();
    while reader
        .next_with(log, |rec| {
            if !check || filter.matches(&rec) {
                agg.add(&rec);
            }
        })?
        .is_some()
    {}
    Ok(())
}

/// Folds aggregate lines written with `--with-digest` (`--merge`) into `agg`.
///
/// # Errors
/// I/O errors; a line without a usable state under `--strict`.
fn merge_aggregates(
    agg: &mut Aggregator,
    r: impl BufRead,
    source: &str,
    filter: &RecordFilter,
    log: &mut MalformedLog,
) -> anyhow::Result<()> {
    for_each_aggregate(r, source, log, |a| {
        if filter.metrics.is_empty() || filter.metrics.iter().any(|p| p.matches(&a.metric)) {
            agg.merge_line(&a)
                .map_err(|reason| format!("metric {:?}: {reason}", a.metric))
        } else {
            Ok(())
        }
    })
}

/// Parses `--quantiles`.
///
/// # Errors
/// Exit 2 for a value outside [0, 1].
pub fn check_quantiles(qs: &[f64]) -> anyhow::Result<()> {
    for &q in qs {
        if !(0.0..=1.0).contains(&q) {
            return Err(fail(
                Exit::Usage,
                format!("--quantiles: {q} is not in [0, 1]"),
            ));
        }
    }
    Ok(())
}

/// Writes aggregates in the chosen format.
///
/// # Errors
/// I/O errors.
pub fn write_aggregates(
    aggs: &[Aggregate],
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match format {
        Format::Jsonl => {
            let mut buf = Vec::with_capacity(aggs.len() * 256);
            for a in aggs {
                a.write_json(&mut buf);
            }
            out.write_all(&buf)
        }
        Format::Table => table::write_table(aggs, out),
    }
}

/// Runs `cfn-agg`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli, input: impl BufRead, out: impl Write) -> anyhow::Result<Exit> {
    check_quantiles(&cli.quantiles)?;
    let (filter, opts) = filter_and_options(&cli)?;
    let config = Config::from_env()?;
    let (inputs, missing) = if cli.paths.is_empty() {
        (vec![Input::Stdin], None)
    } else {
        expand_inputs_reporting("cfn-agg", &cli.paths, &config)?
    };
    let mut log = MalformedLog::new("cfn-agg", cli.strict.strict);
    let threads = cfn_core::cli::thread_count(cli.threads);
    let mut agg = Aggregator::new(opts);
    let mut stdin = Some(input);
    let name_of = |i: &Input| i.name();
    if cli.merge {
        for input in &inputs {
            let r: Box<dyn BufRead + '_> = match input {
                Input::Stdin => match stdin.take() {
                    Some(s) => Box::new(s),
                    None => continue,
                },
                file => file.open()?,
            };
            merge_aggregates(&mut agg, r, &name_of(input), &filter, &mut log)?;
        }
    } else {
        let sources =
            inputs
                .iter()
                .filter_map(|input| -> Option<anyhow::Result<parallel::Source<'_>>> {
                    match input {
                        Input::Stdin => stdin
                            .take()
                            .map(|s| Ok((name_of(input), Box::new(s) as Box<dyn std::io::Read>))),
                        file => Some(
                            file.open()
                                .map(|r| (name_of(input), Box::new(r) as Box<dyn std::io::Read>)),
                        ),
                    }
                });
        parallel::aggregate_sources(&mut agg, sources, &filter, &mut log, threads)?;
    }
    let presence = agg.take_presence();
    let aggs = finish_with_warnings(agg);
    let mut out = std::io::BufWriter::new(out);
    write_aggregates(&aggs, cli.format, &mut out)?;
    if let Some(table) = presence {
        write_presence(&table, cli.format, &mut out)?;
    }
    out.flush()?;
    log.finish();
    // A missing path was reported when it was found missing; the others were read.
    Ok(missing.map_or(Exit::Ok, |e| cfn_core::exit::exit_for(&e)))
}

/// The presence lines after the aggregates (JSONL), or in the table format a line saying
/// how many agents were seen; a full table is named on stderr.
fn write_presence(
    table: &cfn_core::presence::Table,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if table.overflow > 0 {
        cfn_core::cli::warn(
            "cfn-agg",
            format!(
                "--presence keeps at most {} agents and tag values; {} records of others are counted, not kept",
                table.cap, table.overflow
            ),
        );
    }
    match format {
        Format::Jsonl => {
            let mut buf = Vec::new();
            table.write_lines(&mut buf);
            out.write_all(&buf)
        }
        Format::Table => writeln!(out, "presence: {} agents and tag values seen", table.len()),
    }
}

/// The aggregates, after naming on stderr the metrics that mix units and the sums past
/// the range of a float.
fn finish_with_warnings(agg: Aggregator) -> Vec<Aggregate> {
    for w in agg.unit_warnings() {
        cfn_core::cli::warn("cfn-agg", w);
    }
    let aggs = agg.finish();
    for a in aggs
        .iter()
        .filter(|a| a.sum.abs() == f64::MAX && a.avg.is_finite())
    {
        // Saturated by aggregate_line, or (never in practice) a true f64::MAX sum.
        cfn_core::cli::warn(
            "cfn-agg",
            format!(
                "the sum of {}{} is beyond the range of a 64-bit float; written as {:e} (avg is exact)",
                a.metric,
                a.agent
                    .as_ref()
                    .map_or(String::new(), |ag| format!(" (agent {ag})")),
                a.sum
            ),
        );
    }
    aggs
}

/// The record filter (`--metric`, `--window`) and the grouping options of `cli`.
fn filter_and_options(cli: &Cli) -> anyhow::Result<(RecordFilter, Options)> {
    let now: EpochMs = cli.now.resolve()?;
    let mut filter = RecordFilter {
        metrics: cli
            .metric
            .iter()
            .map(|m| cfn_core::pattern::NamePattern::new(m))
            .collect::<Result<_, _>>()?,
        ..Default::default()
    };
    if let Some(w) = &cli.window {
        let w = w.as_millis() as i64;
        filter.since = Some(now - w);
        filter.until = Some(now + 1);
    }
    let bucket_ms = match &cli.bucket {
        Some(b) => {
            let ms = b.as_millis() as i64;
            if ms <= 0 {
                return Err(fail(
                    Exit::Usage,
                    format!("--bucket must be positive, not {b:?}"),
                ));
            }
            Some(ms)
        }
        None => None,
    };
    let opts = Options {
        by: GroupBy::parse(&cli.by)?,
        quantiles: cli.quantiles.clone(),
        exact_limit: cli.exact_limit,
        bucket_ms,
        with_digest: cli.with_digest,
        presence: (cli.presence || !cli.presence_tag.is_empty()).then(|| cli.presence_tag.clone()),
        ..Options::default()
    };
    if cli.presence_tag.len() > 8 {
        return Err(fail(
            Exit::Usage,
            format!(
                "--presence-tag: at most 8 tags, not {}",
                cli.presence_tag.len()
            ),
        ));
    }
    Ok((filter, opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn runs_in_process_on_any_reader_and_writer() {
        let cli = Cli::try_parse_from(["cfn-agg", "--quantiles", "0.5"]).unwrap();
        let input = b"{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":1}\n{\"timestamp\":\"2026-11-27T10:00:01Z\",\"metric\":\"m\",\"value\":3}\n";
        let mut out = Vec::new();
        assert_eq!(run(cli, &input[..], &mut out).unwrap(), Exit::Ok);
        let agg: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (agg["count"].as_u64(), agg["p50"].as_f64()),
            (Some(2), Some(1.0))
        );
    }

    #[test]
    fn group_by_parses_agent_and_tags() {
        let g = GroupBy::parse(&["agent".into(), "tag:phase".into()]).unwrap();
        assert!(g.agent);
        assert_eq!(g.tags, vec!["phase".to_string()]);
        assert!(GroupBy::parse(&["host".into()]).is_err());
    }
}
