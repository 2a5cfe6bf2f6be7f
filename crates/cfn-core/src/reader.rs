//! Reading records: a JSONL reader that reuses one buffer, knows each record's file and line,
//! accepts the legacy pretty-printed stream, and counts and reports malformed lines.

use crate::exit::{Exit, fail};
use crate::time::{EpochMs, epoch_number_to_ms, parse_timestamp_str};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::io::BufRead;

/// A legacy pretty-printed record longer than this many lines is treated as malformed.
const MAX_MULTILINE_LINES: usize = 10_000;

pub use crate::record::MAX_LINE_BYTES;

/// What [`read_line_bounded`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineRead {
    /// Bytes consumed from the input, the newline included (0 at the end of input).
    pub bytes: usize,
    /// The line was longer than the bound: `buf` holds only its first bytes.
    pub too_long: bool,
}

/// Like `read_until(b'\n')`, but keeps at most `max` bytes of the line in `buf` (appended),
/// consuming and dropping the rest up to the newline. The newline itself is kept when the
/// line fits.
///
/// # Errors
/// I/O errors of the input.
pub fn read_line_bounded<R: BufRead + ?Sized>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let start = buf.len();
    let mut out = LineRead::default();
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(out);
        }
        let (chunk, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = max.saturating_sub(buf.len() - start);
        if chunk.len() > room {
            out.too_long = true;
        }
        if !out.too_long {
            buf.extend_from_slice(chunk);
        } else if done && buf.last() != Some(&b'\n') {
            // Keep the newline so callers still see a complete line.
            buf.push(b'\n');
        }
        let used = chunk.len();
        input.consume(used);
        out.bytes += used;
        if done {
            return Ok(out);
        }
    }
}

pub use crate::record::{RecordRef, raw_to_text};

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metric: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent: Option<&'a RawValue>,
    #[serde(borrow, default)]
    unit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tags: Option<&'a RawValue>,
}

/// Why a line is not a record.
#[derive(Debug)]
pub enum ParseFailure {
    /// The JSON ends early; for the legacy multi-line form, more lines may complete it.
    Incomplete(String),
    Invalid(String),
}

fn raw_str<'a>(field: &str, v: &'a RawValue) -> Result<Cow<'a, str>, String> {
    let s = v.get();
    if let Some(inner) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Ok(Cow::Borrowed(inner));
    }
    if s.starts_with('"') {
        return serde_json::from_str::<String>(s)
            .map(Cow::Owned)
            .map_err(|e| format!("{field}: {e}"));
    }
    Err(format!("{field} {s} is not a string"))
}

/// Parses one record from `bytes` (one JSON object).
///
/// # Errors
/// A [`ParseFailure`] with a reason such as `value "abc" is not a number`.
pub fn parse_record(bytes: &[u8]) -> Result<RecordRef<'_>, ParseFailure> {
    // Nearly every record is in cfn-emit's own layout: scanned byte by byte; anything else
    // (or anything doubtful) goes through the full parser.
    if let Some(rec) = crate::fastpath::parse_canonical(bytes) {
        return Ok(rec);
    }
    let (ts, rec) = parse_fields(bytes)?;
    match ts {
        Some(ts_ms) => Ok(RecordRef { ts_ms, ..rec }),
        None => Err(ParseFailure::Invalid("missing \"timestamp\"".into())),
    }
}

/// Parses a record given to a writer (`cfn-emit --stdin`): the same rules as
/// [`parse_record`], except that the timestamp may be absent (or null), since the writer
/// stamps the record itself. Returns the timestamp, if any, and the record (whose `ts_ms`
/// is then 0).
///
/// # Errors
/// As [`parse_record`].
pub fn parse_new_record(bytes: &[u8]) -> Result<(Option<EpochMs>, RecordRef<'_>), ParseFailure> {
    parse_fields(bytes)
}

/// A metric name's rules: not empty, at most `MAX_METRIC_LEN` bytes, no control character.
#[inline]
fn check_metric(metric: &str) -> Result<(), String> {
    if metric.is_empty() {
        return Err("metric is empty".into());
    }
    if metric.len() > crate::record::MAX_METRIC_LEN {
        return Err(format!(
            "metric is {} bytes (at most {})",
            metric.len(),
            crate::record::MAX_METRIC_LEN
        ));
    }
    if metric.chars().any(char::is_control) {
        return Err(format!("metric {metric:?} contains a control character"));
    }
    Ok(())
}

/// A value: a finite JSON number (`s` is its raw JSON).
#[inline]
fn parse_value(s: &str) -> Result<f64, String> {
    if s.starts_with('"') {
        return Err(format!("value {s} is not a number"));
    }
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(format!("value {s} is not finite")),
        Err(_) => Err(format!("value {s} is not a number")),
    }
}

/// A timestamp: an RFC 3339 string or epoch seconds or milliseconds (`s` is its raw JSON).
#[inline]
fn parse_timestamp_field(s: &str) -> Result<EpochMs, String> {
    let parsed = if let Some(inner) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        parse_timestamp_str(inner)
    } else {
        s.parse::<f64>().ok().and_then(epoch_number_to_ms)
    };
    parsed.ok_or_else(|| format!("timestamp {s} is not a time in years 1970-9999"))
}

/// The one set of rules for a record's fields, shared by readers and writers.
fn parse_fields(bytes: &[u8]) -> Result<(Option<EpochMs>, RecordRef<'_>), ParseFailure> {
    let wire: Wire<'_> = match serde_json::from_slice(bytes) {
        Ok(w) => w,
        Err(e) if e.is_eof() => {
            return Err(ParseFailure::Incomplete(format!("incomplete JSON: {e}")));
        }
        Err(e) => return Err(ParseFailure::Invalid(format!("invalid JSON: {e}"))),
    };
    let bad = ParseFailure::Invalid;
    let metric = match wire.metric {
        Some(m) => raw_str("metric", m).map_err(bad)?,
        None => return Err(bad("missing \"metric\"".into())),
    };
    check_metric(&metric).map_err(bad)?;
    let value = match wire.value {
        None => return Err(bad("missing \"value\"".into())),
        Some(v) => parse_value(v.get()).map_err(bad)?,
    };
    let ts_ms = match wire.timestamp {
        None => None,
        Some(t) if t.get() == "null" => None,
        Some(t) => Some(parse_timestamp_field(t.get()).map_err(bad)?),
    };
    let agent = match wire.agent {
        None => None,
        Some(a) if a.get() == "null" => None,
        Some(a) if a.get().starts_with('"') => Some(raw_str("agent", a).map_err(bad)?),
        // Some emitters wrote numeric agent ids.
        Some(a) if a.get().parse::<f64>().is_ok() => Some(Cow::Borrowed(a.get())),
        Some(a) => return Err(bad(format!("agent {} is not a string", a.get()))),
    };
    let unit = match wire.unit {
        None => None,
        Some(u) if u.get() == "null" => None,
        Some(u) => Some(raw_str("unit", u).map_err(bad)?),
    };
    let tags = match wire.tags {
        Some(t) if t.get().starts_with('{') => Some(t),
        Some(t) if t.get() == "null" => None,
        Some(t) => return Err(bad(format!("tags {} is not an object", t.get()))),
        None => None,
    };
    Ok((
        ts_ms,
        RecordRef {
            raw: bytes,
            line: 0,
            ts_ms: 0,
            metric,
            value,
            agent,
            unit,
            tags,
        },
    ))
}

/// Counts malformed lines, shows the first few on stderr, and under `--strict` turns the
/// first one into an error (exit 65).
#[derive(Debug)]
pub struct MalformedLog {
    tool: String,
    strict: bool,
    quiet: bool,
    pub count: u64,
    shown: u64,
    max_shown: u64,
    /// The first few `file:line: reason` lines, kept for callers that report elsewhere.
    pub first: Vec<String>,
}

impl MalformedLog {
    /// A log for `tool` that prints the first 5 malformed lines.
    pub fn new(tool: &str, strict: bool) -> Self {
        Self {
            tool: tool.to_string(),
            strict,
            quiet: false,
            count: 0,
            shown: 0,
            max_shown: 5,
            first: Vec::new(),
        }
    }

    /// A log that prints nothing (servers report counts in their own way).
    pub fn quiet() -> Self {
        Self {
            quiet: true,
            ..Self::new("", false)
        }
    }

    /// Records one malformed line.
    ///
    /// # Errors
    /// Exit 65 naming `source:line: reason` when strict.
    pub fn report(&mut self, source: &str, line: u64, reason: &str) -> anyhow::Result<()> {
        self.count += 1;
        let where_ = format!("{source}:{line}: {reason}");
        if self.strict {
            return Err(fail(Exit::DataErr, format!("malformed record at {where_}")));
        }
        if self.shown < self.max_shown {
            self.shown += 1;
            if !self.quiet {
                eprintln!("{}: {where_}", self.tool);
            }
            self.first.push(where_);
        }
        Ok(())
    }

    /// Prints the total on stderr when anything was skipped.
    pub fn finish(&self) {
        if self.count > 0 && !self.quiet {
            let more = if self.count > self.shown {
                format!(" (first {} shown above)", self.shown)
            } else {
                String::new()
            };
            eprintln!(
                "{}: skipped {} malformed line{}{more}",
                self.tool,
                self.count,
                if self.count == 1 { "" } else { "s" }
            );
        }
    }
}

/// Where a reader stopped, for callers that resume (`--follow`, the archiver).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Bytes consumed up to the end of the last complete line.
    pub offset: u64,
    pub line: u64,
}

/// Reads records from one input, reusing its buffers.
///
/// Records are handed to a closure ([`RecordReader::next_with`]) rather than returned, so the
/// parsed record can borrow the reader's buffer without a copy per line.
pub struct RecordReader<R> {
    inner: R,
    source: String,
    pos: Position,
    buf: Vec<u8>,
    compact: Vec<u8>,
    /// A line read ahead that belongs to the next item (see `fill_multiline`).
    pushback: Vec<u8>,
    multiline: bool,
    /// At EOF, a last line without `\n` is left unread (for `--follow` and the archiver).
    pub leave_partial_tail: bool,
    /// Set when the input ended inside a line that was left unread.
    pub partial_tail: bool,
}

/// One item from [`RecordReader::next_item_with`]: a record or a malformed line.
#[derive(Debug)]
pub enum Item<'a> {
    Record(RecordRef<'a>),
    Malformed {
        line: u64,
        reason: String,
        /// The line(s) as read, without the final newline.
        raw: &'a [u8],
    },
}

struct Filled {
    line: u64,
    complete: bool,
    /// Malformed whatever it holds: too long, or a legacy record cut short by the next one.
    broken: Option<String>,
}

impl<R: BufRead> RecordReader<R> {
    /// A reader over `inner`; `source` names it in messages (a path, or `<stdin>`).
    pub fn new(inner: R, source: impl Into<String>) -> Self {
        Self {
            inner,
            source: source.into(),
            pos: Position::default(),
            buf: Vec::with_capacity(4096),
            compact: Vec::new(),
            pushback: Vec::new(),
            multiline: false,
            leave_partial_tail: false,
            partial_tail: false,
        }
    }

    /// Starts counting from `pos` (when the underlying reader was positioned there).
    pub fn with_position(mut self, pos: Position) -> Self {
        self.pos = pos;
        self
    }

    /// The name used in messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Bytes and lines consumed so far.
    pub fn position(&self) -> Position {
        self.pos
    }

    fn parse_filled(&self, filled: &Filled) -> Result<RecordRef<'_>, String> {
        if let Some(reason) = &filled.broken {
            return Err(reason.clone());
        }
        let bytes = if self.multiline {
            &self.compact[..]
        } else {
            trim_line(&self.buf)
        };
        match parse_record(bytes) {
            Ok(mut rec) => {
                rec.line = filled.line;
                Ok(rec)
            }
            Err(e) => Err(failure_reason(e, filled.complete)),
        }
    }

    /// Passes the next valid record to `f` and returns what it returns; malformed lines are
    /// given to `log` and skipped. `None` at the end of input.
    ///
    /// # Errors
    /// I/O errors, and the first malformed line when `log` is strict.
    pub fn next_with<T>(
        &mut self,
        log: &mut MalformedLog,
        f: impl FnOnce(RecordRef<'_>) -> T,
    ) -> anyhow::Result<Option<T>> {
        loop {
            let Some(filled) = self.fill()? else {
                return Ok(None);
            };
            match self.parse_filled(&filled) {
                Ok(rec) => return Ok(Some(f(rec))),
                Err(reason) => log.report(&self.source, filled.line, &reason)?,
            }
        }
    }

    /// Passes the next line to `f` as a record or a malformed line (for tools that carry
    /// malformed lines along, like the archiver). `None` at the end of input.
    ///
    /// # Errors
    /// I/O errors.
    pub fn next_item_with<T>(
        &mut self,
        f: impl FnOnce(Item<'_>) -> T,
    ) -> anyhow::Result<Option<T>> {
        let Some(filled) = self.fill()? else {
            return Ok(None);
        };
        let item = match self.parse_filled(&filled) {
            Ok(rec) => Item::Record(rec),
            Err(reason) => Item::Malformed {
                line: filled.line,
                reason,
                raw: trim_line(&self.buf),
            },
        };
        Ok(Some(f(item)))
    }

    /// Appends the next line to `buf` (the line given back by a broken legacy record first);
    /// returns the bytes consumed and whether the line was cut at [`MAX_LINE_BYTES`].
    fn read_line(&mut self) -> anyhow::Result<LineRead> {
        if !self.pushback.is_empty() {
            let bytes = self.pushback.len();
            self.buf.append(&mut self.pushback);
            return Ok(LineRead {
                bytes,
                too_long: false,
            });
        }
        read_line_bounded(&mut self.inner, &mut self.buf, MAX_LINE_BYTES)
            .map_err(|e| anyhow::Error::new(e).context(format!("reading {}", self.source)))
    }

    /// Reads the next non-blank line (or legacy multi-line object) into the buffers.
    fn fill(&mut self) -> anyhow::Result<Option<Filled>> {
        loop {
            self.buf.clear();
            self.multiline = false;
            let read = self.read_line()?;
            let n = read.bytes;
            if n == 0 {
                return Ok(None);
            }
            let complete = self.buf.last() == Some(&b'\n');
            if !complete && self.leave_partial_tail {
                self.partial_tail = true;
                return Ok(None);
            }
            self.pos.offset += n as u64;
            self.pos.line += 1;
            let start_line = self.pos.line;
            if read.too_long {
                return Ok(Some(Filled {
                    line: start_line,
                    complete,
                    broken: Some(format!("line is longer than {MAX_LINE_BYTES} bytes")),
                }));
            }
            let line = trim_line(&self.buf);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // jq pretty-prints a record as `{` alone on a line, indented fields, and `}` in
            // column 0; only that shape starts a multi-line record, so a line truncated in
            // the middle never swallows the lines after it.
            if complete && line.trim_ascii() == b"{" {
                return self.fill_multiline(start_line);
            }
            return Ok(Some(Filled {
                line: start_line,
                complete,
                broken: None,
            }));
        }
    }

    fn fill_multiline(&mut self, start_line: u64) -> anyhow::Result<Option<Filled>> {
        let start_offset = self.pos.offset - self.buf.len() as u64;
        let mut lines = 1;
        loop {
            let before = self.buf.len();
            let read = self.read_line()?;
            let n = read.bytes;
            let complete = n > 0 && self.buf.last() == Some(&b'\n');
            if n == 0 || !complete {
                if self.leave_partial_tail {
                    // Not yet complete: give the whole object back to the next read.
                    self.partial_tail = true;
                    self.pos = Position {
                        offset: start_offset,
                        line: start_line - 1,
                    };
                    return Ok(None);
                }
                self.pos.offset += n as u64;
                self.multiline = true;
                self.compact.clear();
                compact_json(&self.buf, &mut self.compact);
                return Ok(Some(Filled {
                    line: start_line,
                    complete: false,
                    broken: None,
                }));
            }
            // Only a new record starts in column 0 with `{` (a jq writer killed mid-record
            // leaves its `{` behind): this object is broken, and the new one starts over.
            if self.buf[before] == b'{' {
                self.pushback.extend_from_slice(&self.buf[before..]);
                self.buf.truncate(before);
                return Ok(Some(Filled {
                    line: start_line,
                    complete: true,
                    broken: Some(format!(
                        "record starting here is cut short by the record on line {}",
                        self.pos.line + 1
                    )),
                }));
            }
            self.pos.offset += n as u64;
            self.pos.line += 1;
            lines += 1;
            let closed = self.buf[before] == b'}';
            if closed
                || read.too_long
                || self.buf.len() > MAX_LINE_BYTES
                || lines >= MAX_MULTILINE_LINES
            {
                self.multiline = true;
                self.compact.clear();
                compact_json(&self.buf, &mut self.compact);
                return Ok(Some(Filled {
                    line: start_line,
                    complete: true,
                    broken: (!closed).then(|| {
                        format!("multi-line record longer than {MAX_MULTILINE_LINES} lines or {MAX_LINE_BYTES} bytes a line")
                    }),
                }));
            }
        }
    }
}

/// The reason given for a line that failed to parse; `complete` is false for a last line
/// without its newline.
pub fn failure_reason(e: ParseFailure, complete: bool) -> String {
    match e {
        ParseFailure::Incomplete(_) if !complete => {
            "incomplete last line (no newline at end of input)".into()
        }
        ParseFailure::Incomplete(r) | ParseFailure::Invalid(r) => r,
    }
}

/// A line without its `\n` (or `\r\n`).
pub fn trim_line(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Removes whitespace outside strings: turns a pretty-printed object into compact JSON.
pub fn compact_json(src: &[u8], out: &mut Vec<u8>) {
    let mut in_str = false;
    let mut escaped = false;
    for &c in src {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
}

/// Where to resume reading a file that was rewritten (trimmed) or replaced, given the last
/// record read before: the position just after the last record that `is_last` recognises, or
/// the start when it is no longer there (trimming removes the oldest records, so then
/// everything left is new). The whole file is searched: replays written with
/// `cfn-emit --timestamp` are not in time order, so no timestamp can end the search early.
///
/// # Errors
/// I/O errors.
pub fn resume_position<R: BufRead>(
    input: R,
    name: &str,
    is_last: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Position> {
    let mut reader = RecordReader::new(input, name);
    reader.leave_partial_tail = true;
    let mut quiet = MalformedLog::quiet();
    let mut found = Position::default();
    while let Some(hit) = reader.next_with(&mut quiet, |rec| is_last(rec.raw))? {
        if hit {
            found = reader.position();
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &str, strict: bool) -> (Vec<(u64, String, f64)>, MalformedLog) {
        let mut r = RecordReader::new(input.as_bytes(), "t.jsonl");
        let mut log = MalformedLog::quiet();
        log.strict = strict;
        let mut out = Vec::new();
        while let Some(item) = r
            .next_with(&mut log, |rec| {
                (rec.line, rec.metric.to_string(), rec.value)
            })
            .unwrap()
        {
            out.push(item);
        }
        (out, log)
    }

    #[test]
    fn reads_jsonl_with_line_numbers() {
        let input = "{\"timestamp\":\"2026-11-27T10:00:00.000Z\",\"metric\":\"a\",\"value\":1}\n\n{\"timestamp\":\"2026-11-27T10:00:01Z\",\"metric\":\"b\",\"value\":2.5}\n";
        let (recs, log) = collect(input, false);
        assert_eq!(recs, vec![(1, "a".into(), 1.0), (3, "b".into(), 2.5)]);
        assert_eq!(log.count, 0);
    }

    #[test]
    fn skips_malformed_line_and_reports_its_number() {
        let input = concat!(
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"a\",\"value\":1}\n",
            "not json\n",
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"a\"}\n",
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"a\",\"value\":\"abc\"}\n",
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"a\",\"value\":NaN}\n",
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"a\",\"value\":2}\n",
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"a\",\"val",
        );
        let (recs, log) = collect(input, false);
        assert_eq!(recs.len(), 2);
        assert_eq!(log.count, 5);
        assert!(
            log.first[0].starts_with("t.jsonl:2: invalid JSON"),
            "{:?}",
            log.first
        );
        assert!(log.first[1].contains(":3: missing \"value\""));
        assert!(log.first[2].contains(":4: value \"abc\" is not a number"));
        assert!(log.first[3].starts_with("t.jsonl:5:"));
        assert!(log.first[4].starts_with("t.jsonl:7: incomplete last line"));
    }

    #[test]
    fn strict_makes_first_malformed_fatal() {
        let mut r = RecordReader::new("x\n".as_bytes(), "t");
        let mut log = MalformedLog::new("test", true);
        let err = r.next_with(&mut log, |_| ()).unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), Exit::DataErr);
        assert!(err.to_string().contains("t:1:"));
    }

    #[test]
    fn reads_legacy_pretty_printed_stream() {
        let input = "{\n  \"timestamp\": \"2026-11-27T10:00:00Z\",\n  \"metric\": \"coordination_time\",\n  \"value\": 150,\n  \"unit\": \"milliseconds\",\n  \"tags\": {\n    \"phase\": \"a b\"\n  }\n}\n{\n  \"timestamp\": \"2026-11-27T10:00:01Z\",\n  \"metric\": \"x\",\n  \"value\": 2\n}\n";
        let mut r = RecordReader::new(input.as_bytes(), "legacy");
        let mut log = MalformedLog::quiet();
        r.next_with(&mut log, |rec| {
            assert_eq!(rec.line, 1);
            assert_eq!(rec.metric, "coordination_time");
            assert_eq!(rec.tag("phase").as_deref(), Some("a b"));
            assert_eq!(
                std::str::from_utf8(rec.raw).unwrap(),
                r#"{"timestamp":"2026-11-27T10:00:00Z","metric":"coordination_time","value":150,"unit":"milliseconds","tags":{"phase":"a b"}}"#
            );
        })
        .unwrap()
        .unwrap();
        let got = r.next_with(&mut log, |rec| (rec.line, rec.value)).unwrap();
        assert_eq!(got, Some((10, 2.0)));
        assert!(r.next_with(&mut log, |_| ()).unwrap().is_none());
        assert_eq!(log.count, 0);
    }

    #[test]
    fn a_lone_brace_from_a_killed_writer_swallows_nothing() {
        let mut input = String::from("{\n");
        for i in 0..50 {
            input.push_str(&format!(
                "{{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":{i}}}\n"
            ));
        }
        // A broken pretty-printed record followed by a whole one.
        input.push_str("{\n  \"timestamp\": \"2026-11-27T10:00:00Z\",\n{\n  \"timestamp\": \"2026-11-27T10:00:01Z\",\n  \"metric\": \"p\",\n  \"value\": 7\n}\n");
        let (recs, log) = collect(&input, false);
        assert_eq!(recs.len(), 51, "{:?}", log.first);
        assert_eq!(recs[0], (2, "m".into(), 0.0));
        assert_eq!(recs[49], (51, "m".into(), 49.0));
        assert_eq!(recs[50], (54, "p".into(), 7.0));
        assert_eq!(log.count, 2);
        assert!(
            log.first[0].starts_with(
                "t.jsonl:1: record starting here is cut short by the record on line 2"
            ),
            "{:?}",
            log.first
        );
        assert!(log.first[1].starts_with("t.jsonl:52:"), "{:?}", log.first);
    }

    #[test]
    fn positions_stay_exact_around_a_broken_legacy_record() {
        let input = "{\n{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":1}\n";
        let mut r = RecordReader::new(input.as_bytes(), "t");
        let mut items = Vec::new();
        while let Some(x) = r.next_item_with(|i| matches!(i, Item::Record(_))).unwrap() {
            items.push((x, r.position()));
        }
        assert_eq!(
            items,
            vec![
                (false, Position { offset: 2, line: 1 }),
                (
                    true,
                    Position {
                        offset: input.len() as u64,
                        line: 2
                    }
                )
            ]
        );
    }

    #[test]
    fn overlong_lines_are_malformed_and_memory_stays_bounded() {
        let mut input = vec![b'x'; 3 * MAX_LINE_BYTES];
        input.extend_from_slice(
            b"\n{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":1}\n",
        );
        let mut r = RecordReader::new(&input[..], "t");
        let mut log = MalformedLog::quiet();
        let got = r.next_with(&mut log, |rec| rec.line).unwrap();
        assert_eq!(got, Some(2));
        assert_eq!(log.count, 1);
        assert!(log.first[0].contains("longer than"), "{:?}", log.first);
        assert!(r.buf.capacity() < 2 * MAX_LINE_BYTES);
    }

    #[test]
    fn metric_names_break_no_contract_rule() {
        let long = format!(
            r#"{{"timestamp":"2026-11-27T10:00:00Z","metric":"{}","value":1}}"#,
            "m".repeat(201)
        );
        assert!(parse_record(long.as_bytes()).is_err());
        let ctrl = r#"{"timestamp":"2026-11-27T10:00:00Z","metric":"a\u0007b","value":1}"#;
        assert!(parse_record(ctrl.as_bytes()).is_err());
        let epoch = br#"{"timestamp":1e17,"metric":"a","value":1}"#;
        assert!(parse_record(epoch).is_err());
    }

    #[test]
    fn partial_tail_is_left_for_the_next_read_when_asked() {
        let input = "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"a\",\"value\":1}\n{\"timestamp\":";
        let mut r = RecordReader::new(input.as_bytes(), "t");
        r.leave_partial_tail = true;
        let mut log = MalformedLog::quiet();
        assert!(r.next_with(&mut log, |_| ()).unwrap().is_some());
        assert!(r.next_with(&mut log, |_| ()).unwrap().is_none());
        assert!(r.partial_tail);
        assert_eq!(r.position().offset, 60);
        assert_eq!(log.count, 0);
    }

    #[test]
    fn accepts_other_offsets_and_epoch_numbers() {
        let rec = parse_record(br#"{"metric":"a","value":1,"timestamp":1795773600}"#).unwrap();
        assert_eq!(rec.ts_ms, 1_795_773_600_000);
        let rec = parse_record(
            br#"{"metric":"a","value":1,"timestamp":"2026-11-27T11:00:00+01:00","extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(rec.ts_ms, 1_795_773_600_000);
    }
}
