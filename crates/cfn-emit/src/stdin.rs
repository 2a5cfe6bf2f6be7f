//! `cfn-emit --stdin`: a long-lived emitter. Lines are parsed as they arrive and written in
//! batches: everything already buffered on stdin is grouped by shard and appended with one
//! locked write per shard, each write holding whole lines only.

use super::{CallFlags, Writer, parse_words};
use cfn_core::exit::{Exit, fail};
use cfn_core::fsutil::AppendHandle;
use cfn_core::reader::{MAX_LINE_BYTES, read_line_bounded};
use cfn_core::reader::{MalformedLog, ParseFailure};
use cfn_core::record::{NewRecord, is_value, parse_tags_json, tags_to_json};
use cfn_core::time::{EpochMs, now_ms};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::path::PathBuf;

/// Most bytes of records written under one lock, so other writers never wait long.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Values from the flags that apply to every line that does not set its own.
#[derive(Debug, Default)]
pub struct Defaults {
    pub agent: Option<String>,
    pub unit: Option<String>,
    pub tags: Option<Map<String, Value>>,
    pub timestamp: Option<EpochMs>,
}

/// A record waiting to be written; the timestamp is taken under the lock unless the line
/// carried one.
#[derive(Debug)]
struct Pending {
    agent: Option<String>,
    metric: String,
    value: f64,
    unit: Option<String>,
    tags: Option<String>,
    timestamp: Option<EpochMs>,
}

/// Parses one input line: a JSON record, or the command line's call forms.
fn parse_line(line: &str, d: &Defaults) -> anyhow::Result<Pending> {
    let t = line.trim();
    if t.starts_with('{') {
        parse_json_record(t, d)
    } else {
        parse_call_words(t, d)
    }
}

/// A JSON record, checked by the same rules every reader applies (cfn-core's), except that
/// the timestamp may be left out for cfn-emit to take.
fn parse_json_record(t: &str, d: &Defaults) -> anyhow::Result<Pending> {
    let bad = |reason: String| fail(Exit::DataErr, reason);
    let (timestamp, rec) = cfn_core::reader::parse_new_record(t.as_bytes()).map_err(|e| {
        bad(match e {
            ParseFailure::Incomplete(r) | ParseFailure::Invalid(r) => r,
        })
    })?;
    let tags = match rec.tags {
        None => d.tags.clone(),
        Some(t) => {
            let mut merged = d.tags.clone().unwrap_or_default();
            merged.extend(parse_tags_json(t.get())?);
            Some(merged)
        }
    };
    Ok(Pending {
        agent: rec
            .agent
            .map(|a| a.into_owned())
            .or_else(|| d.agent.clone()),
        metric: rec.metric.into_owned(),
        value: rec.value,
        unit: rec.unit.map(|u| u.into_owned()).or_else(|| d.unit.clone()),
        tags: tags.as_ref().map(tags_to_json),
        timestamp: timestamp.or(d.timestamp),
    })
}

/// The command line's call forms, as words or (from the shell shim, unambiguous whatever
/// the arguments hold) as a JSON array of the arguments.
fn parse_call_words(t: &str, d: &Defaults) -> anyhow::Result<Pending> {
    let words: Vec<String> = if t.starts_with('[') {
        let v: Vec<Value> = serde_json::from_str(t)
            .map_err(|e| fail(Exit::DataErr, format!("invalid JSON argument list: {e}")))?;
        v.into_iter()
            .map(|w| match w {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(fail(
                    Exit::DataErr,
                    format!("argument {other} is not a string or number"),
                )),
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        let mut w: Vec<String> = t.split_ascii_whitespace().map(str::to_string).collect();
        // [AGENT_ID] METRIC VALUE UNIT TAGS_JSON: the tags may hold spaces.
        let tags_at = if is_value(&w[1]) { 3 } else { 4 };
        if w.len() > tags_at + 1 && (tags_at == 3 || is_value(&w[2])) {
            let tags = w[tags_at..].join(" ");
            w.truncate(tags_at);
            w.push(tags);
        }
        w
    };
    let flags = CallFlags {
        agent: d.agent.as_deref(),
        unit: d.unit.as_deref(),
        tags: d.tags.as_ref(),
        defaults_only: true,
    };
    let call = parse_words(&words, &flags)?;
    if let Some(unit) = call.unit.as_deref() {
        warn_unit_once(unit);
    }
    Ok(Pending {
        agent: call.agent,
        metric: call.metric,
        value: call.value,
        unit: call.unit,
        tags: call.tags,
        timestamp: d.timestamp,
    })
}

/// At most this many distinct units are checked for misspellings in one stream (a flood of
/// unit words costs no more).
const MAX_UNITS_CHECKED: usize = 64;

/// [`crate::unit_warning`] once per unit a stream uses.
fn warn_unit_once(unit: &str) {
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::HashSet<String>> = Default::default();
    }
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() >= MAX_UNITS_CHECKED || seen.contains(unit) {
            return;
        }
        seen.insert(unit.to_string());
        if let Some(w) = crate::unit_warning(unit) {
            cfn_core::cli::warn("cfn-emit", w);
        }
    });
}

/// Writes the pending records, one locked write per shard (more when a shard's batch is
/// large), and clears them.
fn flush(
    writer: &Writer,
    handles: &mut HashMap<PathBuf, AppendHandle>,
    pending: &mut Vec<Pending>,
) -> anyhow::Result<()> {
    let mut by_path: BTreeMap<PathBuf, Vec<&Pending>> = BTreeMap::new();
    for p in pending.iter() {
        by_path
            .entry(writer.path_for(p.agent.as_deref()))
            .or_default()
            .push(p);
    }
    for (path, recs) in by_path {
        let mut rest = &recs[..];
        while !rest.is_empty() {
            let mut taken = 0;
            let fill = |buf: &mut Vec<u8>| {
                let now = now_ms();
                for p in rest {
                    if buf.len() >= MAX_BATCH_BYTES {
                        break;
                    }
                    NewRecord {
                        agent: p.agent.as_deref(),
                        metric: &p.metric,
                        value: p.value,
                        unit: p.unit.as_deref(),
                        tags: p.tags.as_deref(),
                    }
                    .write_line(p.timestamp.unwrap_or(now), buf);
                    taken += 1;
                }
            };
            if writer.separate_lock() {
                writer.append_locked(&path, fill)?;
            } else {
                // The shard stays open between flushes: lock, one lstat, write, unlock.
                let handle = handles
                    .entry(path.clone())
                    .or_insert_with(|| AppendHandle::new(&path, 0o600));
                let mut buf = Vec::new();
                handle.append_locked(writer.timeout, &mut buf, fill)?;
            }
            rest = &rest[taken..];
        }
    }
    pending.clear();
    Ok(())
}

/// Runs the stdin loop until end of input.
///
/// # Errors
/// Lock timeouts and write errors stop at once (exit 75/74: nothing is dropped silently,
/// the caller sees the failure); bad lines are reported with their line numbers and make
/// the final status 65, or stop at once with `--strict`.
pub fn run_stdin<R: Read>(
    input: &mut BufReader<R>,
    writer: &Writer,
    d: &Defaults,
    strict: bool,
) -> anyhow::Result<Exit> {
    let mut pending: Vec<Pending> = Vec::new();
    let mut handles: HashMap<PathBuf, AppendHandle> = HashMap::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    // The same report every reader gives: file:line: reason, the first few, then a count.
    let mut log = MalformedLog::new("cfn-emit", strict);
    loop {
        buf.clear();
        let read = read_line_bounded(input, &mut buf, MAX_LINE_BYTES)?;
        if read.bytes == 0 {
            break;
        }
        line_no += 1;
        // A bad line is one rejected line: it never stops the lines after it.
        let parsed = if read.too_long {
            Some(Err(format!("line is longer than {MAX_LINE_BYTES} bytes")))
        } else {
            match std::str::from_utf8(&buf) {
                Ok(line) if line.trim().is_empty() => None,
                Ok(line) => Some(parse_line(line, d).map_err(|e| format!("{e:#}"))),
                Err(e) => Some(Err(format!(
                    "not valid UTF-8 (byte {})",
                    e.valid_up_to() + 1
                ))),
            }
        };
        match parsed {
            Some(Ok(p)) => pending.push(p),
            Some(Err(reason)) => {
                if let Err(stop) = log.report("<stdin>", line_no, &reason) {
                    // --strict: what was read before the bad line is still written.
                    flush(writer, &mut handles, &mut pending)?;
                    return Err(stop);
                }
            }
            None => {}
        }
        // Batch what is already buffered; write as soon as no complete line is waiting, so a
        // slow producer's records are never held back (looking at the buffer costs no read).
        let more_buffered = input.buffer().contains(&b'\n');
        if !more_buffered || pending.len() >= 100_000 {
            flush(writer, &mut handles, &mut pending)?;
        }
    }
    flush(writer, &mut handles, &mut pending)?;
    log.finish();
    Ok(if log.count > 0 {
        Exit::DataErr
    } else {
        Exit::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_line_forms() {
        let d = Defaults {
            agent: Some("a-1".into()),
            ..Default::default()
        };
        let p = parse_line("task_duration_ms 12 ms", &d).unwrap();
        assert_eq!(
            (p.metric.as_str(), p.value, p.unit.as_deref()),
            ("task_duration_ms", 12.0, Some("ms"))
        );
        assert_eq!(p.agent.as_deref(), Some("a-1"));
        let p = parse_line(
            r#"{"metric":"x","value":1.5,"agent":"b-2","tags":{"k":"v"}}"#,
            &d,
        )
        .unwrap();
        assert_eq!(
            (p.agent.as_deref(), p.value, p.tags.as_deref()),
            (Some("b-2"), 1.5, Some(r#"{"k":"v"}"#))
        );
        assert!(parse_line("x nan", &d).is_err());
        assert!(parse_line(r#"{"metric":"x"}"#, &d).is_err());
    }
}
