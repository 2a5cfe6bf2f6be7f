//! `cfn-promtext`: aggregates (contract section 4) as Prometheus text exposition.
//!
//! [`render`] is shared with `cfn-serve`'s `/metrics`, so both always agree. This crate owns
//! naming, escaping and unit conversion; reading aggregates and atomic writes are
//! `cfn-core`'s.

use cfn_core::aggregate::read_aggregates;
use cfn_core::exit::Exit;
use cfn_core::reader::MalformedLog;
use cfn_prom::{Options, render};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

const EXAMPLES: &str = "\
OUTPUT:
  Per metric a summary family <prefix><name> with quantile=\"0.5\"|\"0.95\"|\"0.99\" series,
  <name>_sum and <name>_count, plus gauge families <name>_min and <name>_max. Group keys
  (agent, tags) become labels. Every family has # HELP (with the unit) and # TYPE; families and
  series are sorted; there are no timestamps. Names are made valid ([a-zA-Z0-9_], no leading
  digit); two metrics whose names collide after that are reported on stderr and kept apart
  with a stable suffix, never merged.

EXAMPLES:
  cfn-cat --since 30s | cfn-agg | cfn-promtext -o /var/lib/prometheus/node-exporter/cfn.prom
  cfn-cat --since 30s | cfn-agg --by agent | cfn-promtext --base-units --prefix agents_
";

/// Write aggregates as Prometheus text exposition.
///
/// Reads aggregate lines (from cfn-agg) on stdin and writes the text format that
/// node_exporter's textfile collector and Prometheus accept. With -o the file is replaced
/// atomically, so a scrape never sees a partial file.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-promtext",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// Aggregate files to read; default stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Write to FILE atomically (temp file in the same directory, fsync, rename).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Prefix of every metric name.
    #[arg(long, default_value = "cfn_")]
    pub prefix: String,

    /// Convert milliseconds to seconds and kb/mb to bytes, with the _seconds/_bytes suffix.
    #[arg(long)]
    pub base_units: bool,

    /// File mode of the -o file (octal); node_exporter usually runs as another user.
    #[arg(long, value_name = "OCTAL", default_value = "644")]
    pub mode: String,

    #[command(flatten)]
    pub strict: cfn_core::cli::StrictFlag,
}

/// Runs `cfn-promtext`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli, input: impl std::io::BufRead, mut out: impl Write) -> anyhow::Result<Exit> {
    let mode = u32::from_str_radix(&cli.mode, 8).map_err(|_| {
        cfn_core::fail(
            Exit::Usage,
            format!("--mode {:?} is not an octal mode", cli.mode),
        )
    })?;
    let mut log = MalformedLog::new("cfn-promtext", cli.strict.strict);
    let mut aggs = Vec::new();
    if cli.paths.is_empty() {
        aggs = read_aggregates(input, "<stdin>", &mut log)?;
    } else {
        for p in &cli.paths {
            let input = cfn_core::input::Input::File {
                path: p.clone(),
                shared: false,
            };
            aggs.extend(read_aggregates(input.open()?, &input.name(), &mut log)?);
        }
    }
    let (text, warnings) = render(
        &aggs,
        &Options {
            prefix: cli.prefix.clone(),
            base_units: cli.base_units,
        },
    );
    for w in &warnings {
        cfn_core::cli::warn("cfn-promtext", w);
    }
    match &cli.output {
        Some(path) => cfn_core::fsutil::write_atomic(path, mode, text.as_bytes())?,
        None => {
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    log.finish();
    Ok(Exit::Ok)
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
