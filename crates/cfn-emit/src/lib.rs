//! `cfn-emit`: append metric records to the hot shards (or the legacy single file).
//!
//! This crate owns the call forms and the `--stdin` batching; the record format, shard choice,
//! safe opening and locking come from `cfn-core`.

use anyhow::Context;
use cfn_core::exit::{Exit, fail};
use cfn_core::fsutil::{Access, LockFile, open_locked_append, open_safe};
use cfn_core::paths::{Config, shard_for_agent, shard_path};
use cfn_core::record::{
    NewRecord, add_tag_kv, is_value, parse_tags_json, parse_value, tags_to_json, validate_metric,
};
use cfn_core::time::{EpochMs, now_ms, parse_timestamp_str};
use clap::Parser;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::PathBuf;

mod stdin;

const EXAMPLES: &str = "\
CALL FORMS:
  The positional arguments are read by this rule: if the second argument is a number, it is
  the legacy library's form METRIC VALUE [UNIT] [TAGS_JSON] (unit defaults to \"count\", tags
  to {}); otherwise, if the third argument is a number, it is the sharded form
  AGENT_ID METRIC VALUE [UNIT] [TAGS_JSON].

WHERE RECORDS GO:
  --file FILE, else --dir DIR, else $METRICS_FILE (single-file mode, locked through
  $METRICS_LOCK_FILE when set), else the shard of the agent in $CFN_METRICS_DIR (default
  /dev/shm): cfn-metrics-<N>.jsonl with N = the agent id's trailing digits modulo
  $CFN_SHARDS (default 16).

EXAMPLES:
  cfn-emit agent-42 coordination.time 150
  cfn-emit --done agent-42          # agent-42 finished: not \"silent\" from now on
  cfn-emit 7 coordination.time 150 milliseconds '{\"phase\":\"consensus\"}'
  cfn-emit coordination_time 150 milliseconds '{\"phase\":\"consensus\"}'
  cfn-emit --agent agent-7 --unit mb --tag host=web1 memory_usage_mb 512.5
  printf 'task_duration_ms 12\\n{\"metric\":\"x\",\"value\":1,\"agent\":\"a-1\"}\\n' | cfn-emit --stdin
";

/// Append a metric record to the hot shards.
///
/// Writes one JSONL record to the shard of its agent under an exclusive lock, waiting at most
/// CFN_LOCK_TIMEOUT_MS (default 5000) for it and failing loudly (exit 75) rather than dropping
/// the metric.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-emit",
    version,
    allow_negative_numbers = true,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// METRIC VALUE [UNIT] [TAGS_JSON], or AGENT_ID METRIC VALUE [UNIT] [TAGS_JSON] (see CALL
    /// FORMS).
    #[arg(value_name = "ARGS", num_args = 0..=5)]
    pub args: Vec<String>,

    /// Say that agent ID finished: one record of metric cfn.agent.done (value 1, with any
    /// --tag), after which readers do not expect it to report (it is "done", not "silent").
    #[arg(long, value_name = "ID", conflicts_with_all = ["args", "stdin", "agent"])]
    pub done: Option<String>,

    /// The emitting agent (chooses the shard).
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,

    /// The unit, e.g. milliseconds, percent, count, mb.
    #[arg(long)]
    pub unit: Option<String>,

    /// A tag; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tag: Vec<String>,

    /// Tags as a JSON object, e.g. '{"phase":"consensus"}'.
    #[arg(long, value_name = "JSON")]
    pub tags: Option<String>,

    /// Write to the shards in DIR instead of $CFN_METRICS_DIR.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Number of shards instead of $CFN_SHARDS.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: Option<u32>,

    /// Append to this single file instead of the shards (like $METRICS_FILE).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Use this time instead of now (RFC 3339 or epoch seconds), for replaying data.
    #[arg(long, value_name = "TIME")]
    pub timestamp: Option<String>,

    /// Read many records from stdin (JSONL records or `METRIC VALUE [UNIT]` lines) and write
    /// them in as few locked writes as possible.
    #[arg(long)]
    pub stdin: bool,

    /// With --stdin.
    #[command(flatten)]
    pub strict: cfn_core::cli::StrictFlag,
}

/// Where records are written.
#[derive(Clone, Debug)]
pub enum Target {
    Shards {
        dir: PathBuf,
        shards: u32,
    },
    /// Single-file mode, optionally locked through a separate lock file.
    File {
        path: PathBuf,
        lock: Option<PathBuf>,
    },
}

/// Settings for writing.
#[derive(Clone, Debug)]
pub struct Writer {
    pub target: Target,
    pub timeout: std::time::Duration,
}

impl Writer {
    /// The file a record of `agent` goes to.
    pub fn path_for(&self, agent: Option<&str>) -> PathBuf {
        match &self.target {
            Target::Shards { dir, shards } => shard_path(dir, shard_for_agent(agent, *shards)),
            Target::File { path, .. } => path.clone(),
        }
    }

    /// True when writes are locked through a separate lock file (`METRICS_LOCK_FILE`), not
    /// on the file itself.
    pub fn separate_lock(&self) -> bool {
        matches!(self.target, Target::File { lock: Some(_), .. })
    }

    /// Locks the file at `path` and appends what `fill` puts in the buffer, as one write.
    ///
    /// `fill` runs with the lock held, so timestamps it takes are in file order.
    ///
    /// # Errors
    /// Exit 75 on lock timeout, 73 when the file cannot be opened, 74 on write errors.
    pub fn append_locked(
        &self,
        path: &std::path::Path,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(256);
        let (file, _lock_guard) = match &self.target {
            Target::File {
                lock: Some(lock), ..
            } => {
                let guard = LockFile::acquire(lock, self.timeout)?;
                let append = Access::Append {
                    create: true,
                    mode: 0o600,
                };
                (open_safe(path, append)?, Some(guard))
            }
            _ => (open_locked_append(path, 0o600, self.timeout)?, None),
        };
        fill(&mut buf);
        // One write(2) of whole lines with O_APPEND, under the lock; all or nothing.
        cfn_core::fsutil::append_whole(&file, &buf).map_err(|e| {
            let exit = cfn_core::exit::exit_for_io(&e);
            fail(exit, format!("cannot write to {}: {e}", path.display()))
        })?;
        Ok(())
    }
}

/// Resolves where records go from the flags and the environment.
///
/// # Errors
/// Exit 78 for bad environment values.
pub fn writer_from(
    cli_dir: Option<PathBuf>,
    cli_shards: Option<u32>,
    cli_file: Option<PathBuf>,
) -> anyhow::Result<Writer> {
    let config = Config::from_env()?;
    let target = if let Some(path) = cli_file {
        Target::File {
            path,
            lock: config.metrics_lock_file.clone(),
        }
    } else if let Some(dir) = cli_dir {
        Target::Shards {
            dir,
            shards: cli_shards.unwrap_or(config.shards),
        }
    } else if let Some(path) = config.metrics_file.clone() {
        Target::File {
            path,
            lock: config.metrics_lock_file.clone(),
        }
    } else {
        Target::Shards {
            dir: config.metrics_dir.clone(),
            shards: cli_shards.unwrap_or(config.shards),
        }
    };
    Ok(Writer {
        target,
        timeout: config.lock_timeout,
    })
}

/// A record as parsed from the command line, owning its strings.
#[derive(Debug, PartialEq)]
pub struct ParsedCall {
    pub agent: Option<String>,
    pub metric: String,
    pub value: f64,
    pub unit: Option<String>,
    pub tags: Option<String>,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    fail(Exit::Usage, msg)
}

/// Values from flags (or, in `--stdin`, the defaults for every line) that a call merges in.
#[derive(Debug, Default)]
pub struct CallFlags<'a> {
    pub agent: Option<&'a str>,
    pub unit: Option<&'a str>,
    /// `--tags` and `--tag`, already merged.
    pub tags: Option<&'a Map<String, Value>>,
    /// When true (`--stdin`), a positional agent or unit overrides the flag instead of
    /// being an error.
    pub defaults_only: bool,
}

/// Applies the call-form rule to the positional arguments and merges the flags.
///
/// # Errors
/// Exit 2 when the arguments fit no form; exit 65 for bad values or tags.
pub fn parse_call(cli: &Cli) -> anyhow::Result<ParsedCall> {
    let flag_tags = flag_tags(cli.tags.as_deref(), &cli.tag)?;
    let flags = CallFlags {
        agent: cli.agent.as_deref(),
        unit: cli.unit.as_deref(),
        tags: flag_tags.as_ref(),
        defaults_only: false,
    };
    let call = parse_words(&cli.args, &flags)?;
    if let Some(w) = call.unit.as_deref().and_then(unit_warning) {
        cfn_core::cli::warn("cfn-emit", w);
    }
    Ok(call)
}

/// Merges `--tags JSON` and `--tag k=v` flags.
///
/// # Errors
/// Exit 65 for tags that are not a flat JSON object or not `KEY=VALUE`.
pub fn flag_tags(json: Option<&str>, kvs: &[String]) -> anyhow::Result<Option<Map<String, Value>>> {
    let mut tags: Option<Map<String, Value>> = None;
    if let Some(j) = json {
        tags.get_or_insert_default().extend(parse_tags_json(j)?);
    }
    for kv in kvs {
        add_tag_kv(tags.get_or_insert_default(), kv)?;
    }
    Ok(tags)
}

/// The call-form rule: if the second word is a number, `METRIC VALUE [UNIT] [TAGS_JSON]`
/// (unit defaults to `count`, tags to `{}`); else if the third is, `AGENT_ID METRIC VALUE`.
///
/// # Errors
/// Exit 2 when the words fit no form; exit 65 for bad values or tags.
pub fn parse_words(a: &[String], flags: &CallFlags<'_>) -> anyhow::Result<ParsedCall> {
    let (agent, metric, value_text, unit, tags_text, legacy) = match a.len() {
        0 | 1 => {
            return Err(usage(
                "expected METRIC VALUE [UNIT] [TAGS_JSON] or AGENT_ID METRIC VALUE [UNIT] [TAGS_JSON] (see --help)",
            ));
        }
        // The rule: the second word a number -> the legacy form; else the third a number ->
        // the sharded form. The two cannot both fit.
        2..=4 if is_value(&a[1]) => (None, &a[0], &a[1], a.get(2), a.get(3), true),
        3..=5 if is_value(&a[2]) => (Some(&a[0]), &a[1], &a[2], a.get(3), a.get(4), false),
        n => return Err(no_call_form(a, n)),
    };
    validate_metric(metric)?;
    check_slips(agent, metric, value_text, unit, legacy)?;
    let value = parse_value(value_text)?;
    let agent = match (agent, flags.agent) {
        (Some(_), Some(_)) if !flags.defaults_only => {
            return Err(usage("the agent is given twice (positional and --agent)"));
        }
        (Some(p), _) => Some(p.clone()),
        (None, f) => f.map(str::to_string),
    };
    let unit = match (unit, flags.unit) {
        (Some(_), Some(_)) if !flags.defaults_only => {
            return Err(usage("the unit is given twice (positional and --unit)"));
        }
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(f.to_string()),
        (None, None) if legacy => Some("count".to_string()),
        (None, None) => None,
    };
    let mut tags: Option<Map<String, Value>> = match tags_text {
        Some(text) => Some(parse_tags_json(text)?),
        None => None,
    };
    if let Some(f) = flags.tags {
        tags.get_or_insert_default()
            .extend(f.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if tags.is_none() && legacy {
        tags = Some(Map::new());
    }
    Ok(ParsedCall {
        agent,
        metric: metric.clone(),
        value,
        unit,
        tags: tags.as_ref().map(tags_to_json),
    })
}

/// Whether a word looks like an agent id: letters, then `-` and digits (`agent-1`,
/// `coder_b-12`).
fn looks_like_agent(word: &str) -> bool {
    word.rsplit_once('-').is_some_and(|(name, n)| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Whether a word looks like a metric name: dotted (`task.latency`), not an agent id.
fn looks_like_metric(word: &str) -> bool {
    word.contains('.') && !is_value(word) && !looks_like_agent(word)
}

/// The common slips of a call (contract section 9), refused before anything is written: a
/// number as the metric, an agent id and a metric swapped, a metric in the unit's place.
///
/// # Errors
/// Exit 2 saying what was probably meant.
fn check_slips(
    agent: Option<&String>,
    metric: &str,
    value: &str,
    unit: Option<&String>,
    legacy: bool,
) -> anyhow::Result<()> {
    if is_value(metric) {
        return Err(usage(format!(
            "metric {metric:?} is a number: expected METRIC VALUE or AGENT_ID METRIC VALUE (see --help)"
        )));
    }
    if let Some(agent) = agent
        && looks_like_metric(agent)
        && looks_like_agent(metric)
    {
        return Err(usage(format!(
            "agent {agent:?} looks like a metric and metric {metric:?} like an agent id: did you mean `cfn-emit {metric} {agent} {value}`?"
        )));
    }
    if legacy
        && looks_like_agent(metric)
        && let Some(unit) = unit.filter(|u| looks_like_metric(u))
    {
        return Err(usage(format!(
            "unit {unit:?} looks like a metric and metric {metric:?} like an agent id: did you mean `cfn-emit {metric} {unit} {value}`?"
        )));
    }
    Ok(())
}

/// A warning for a unit outside the vocabulary that is probably a misspelling of one in it
/// (`milisecond`, `msec`). Not refused: a unit is free text, and a legacy caller's own
/// spelling must keep working; its values are kept apart from the metric's other units.
pub fn unit_warning(unit: &str) -> Option<String> {
    cfn_core::units::likely_misspelling(unit).map(|meant| {
        format!(
            "unit {unit:?} is not in the unit vocabulary (did you mean {meant:?}?): written as given, and its values are kept apart from the metric's values in other units"
        )
    })
}

/// The error for words that fit no call form: each form that was tried, and the word that
/// broke it.
fn no_call_form(a: &[String], n: usize) -> anyhow::Error {
    if n > 5 {
        return usage(format!(
            "{n} arguments: at most 5 (AGENT_ID METRIC VALUE UNIT TAGS_JSON); quote a value that holds spaces"
        ));
    }
    let mut tried = Vec::new();
    if n <= 4 {
        tried.push(format!(
            "as METRIC VALUE [UNIT] [TAGS_JSON], VALUE {:?} (the 2nd word) is not a number",
            a[1]
        ));
    }
    if n >= 3 {
        tried.push(format!(
            "as AGENT_ID METRIC VALUE [UNIT] [TAGS_JSON], VALUE {:?} (the 3rd word) is not a number",
            a[2]
        ));
    }
    fail(
        Exit::DataErr,
        format!("the arguments fit no call form: {}", tried.join("; ")),
    )
}

/// Parses `--timestamp`.
///
/// # Errors
/// Exit 2 naming the text.
pub fn parse_timestamp_arg(text: &str) -> anyhow::Result<EpochMs> {
    if let Some(ms) = parse_timestamp_str(text) {
        return Ok(ms);
    }
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(cfn_core::time::epoch_number_to_ms)
        .ok_or_else(|| usage(format!("invalid --timestamp {text:?} (expected RFC 3339, e.g. 2026-11-27T10:00:00.123Z, or epoch seconds)")))
}

/// Runs `cfn-emit`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli, input: impl std::io::BufRead, _out: impl Write) -> anyhow::Result<Exit> {
    let fixed_ts = cli
        .timestamp
        .as_deref()
        .map(parse_timestamp_arg)
        .transpose()?;
    let writer = writer_from(cli.dir.clone(), cli.shards, cli.file.clone())?;
    if cli.stdin {
        if !cli.args.is_empty() {
            return Err(usage("--stdin takes no positional arguments"));
        }
        let mut stdin = std::io::BufReader::with_capacity(256 * 1024, input);
        let defaults = stdin::Defaults {
            agent: cli.agent.clone(),
            unit: cli.unit.clone(),
            tags: flag_tags(cli.tags.as_deref(), &cli.tag)?,
            timestamp: fixed_ts,
        };
        return stdin::run_stdin(&mut stdin, &writer, &defaults, cli.strict.strict);
    }
    let call = match &cli.done {
        Some(agent) => done_call(agent, &cli)?,
        None => parse_call(&cli)?,
    };
    let path = writer.path_for(call.agent.as_deref());
    let rec = NewRecord {
        agent: call.agent.as_deref(),
        metric: &call.metric,
        value: call.value,
        unit: call.unit.as_deref(),
        tags: call.tags.as_deref(),
    };
    writer
        .append_locked(&path, |buf| {
            rec.write_line(fixed_ts.unwrap_or_else(now_ms), buf)
        })
        .with_context(|| format!("metric {:?} was not written", call.metric))?;
    Ok(Exit::Ok)
}

/// The record of `--done AGENT` (contract section 10).
fn done_call(agent: &str, cli: &Cli) -> anyhow::Result<ParsedCall> {
    if agent.trim().is_empty() {
        return Err(usage("--done needs the agent id that finished"));
    }
    Ok(ParsedCall {
        agent: Some(agent.to_string()),
        metric: cfn_core::presence::DONE_METRIC.to_string(),
        value: 1.0,
        unit: None,
        tags: flag_tags(cli.tags.as_deref(), &cli.tag)?
            .as_ref()
            .map(tags_to_json),
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

    fn call(args: &[&str]) -> anyhow::Result<ParsedCall> {
        let mut argv = vec!["cfn-emit"];
        argv.extend_from_slice(args);
        parse_call(&Cli::try_parse_from(argv)?)
    }

    #[test]
    fn second_argument_number_means_legacy_form() {
        let c = call(&["coordination_time", "150"]).unwrap();
        assert_eq!(c.metric, "coordination_time");
        assert_eq!(c.unit.as_deref(), Some("count"));
        assert_eq!(c.tags.as_deref(), Some("{}"));
        assert_eq!(c.agent, None);
    }

    #[test]
    fn third_argument_number_means_sharded_form() {
        let c = call(&["agent-42", "coordination.time", "-5"]).unwrap();
        assert_eq!(c.agent.as_deref(), Some("agent-42"));
        assert_eq!(c.value, -5.0);
        assert_eq!(c.unit, None);
        assert_eq!(c.tags, None);
    }

    #[test]
    fn flags_merge_with_positional_tags() {
        let c = call(&["--tag", "b=2", "m", "1", "ms", r#"{"a":"x"}"#]).unwrap();
        assert_eq!(c.tags.as_deref(), Some(r#"{"a":"x","b":"2"}"#));
    }

    #[test]
    fn bad_value_names_it() {
        let err = call(&["agent-1", "m", "nan"]).unwrap_err();
        assert_eq!(cfn_core::exit::exit_for(&err), Exit::DataErr);
        assert!(err.to_string().contains("\"nan\""));
        let err = call(&["m", "abc"]).unwrap_err();
        assert!(err.to_string().contains("\"abc\""));
    }

    #[test]
    fn bad_tags_are_data_errors() {
        let err = call(&["m", "1", "count", "[1]"]).unwrap_err();
        assert_eq!(cfn_core::exit::exit_for(&err), Exit::DataErr);
    }
}
