//! The record (contract section 1): validation of what users type and the compact writer.

use crate::exit::{Exit, fail};
use crate::time::{EpochMs, format_ms};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Longest metric name the contract allows, in bytes.
pub const MAX_METRIC_LEN: usize = 200;

/// A record to be written. Borrowed so a long-lived emitter can build one per line without
/// allocating.
#[derive(Clone, Debug, Default)]
pub struct NewRecord<'a> {
    pub agent: Option<&'a str>,
    pub metric: &'a str,
    pub value: f64,
    pub unit: Option<&'a str>,
    /// Tags as a validated, compact JSON object (see [`parse_tags_json`]).
    pub tags: Option<&'a str>,
}

impl NewRecord<'_> {
    /// Appends the record as one compact JSONL line (with `\n`) stamped `timestamp`.
    ///
    /// Keys come in the contract's order: timestamp, agent, metric, value, unit, tags.
    pub fn write_line(&self, timestamp: EpochMs, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(format_ms(timestamp).as_bytes());
        out.push(b'"');
        if let Some(agent) = self.agent {
            out.extend_from_slice(b",\"agent\":");
            write_json_str(out, agent);
        }
        out.extend_from_slice(b",\"metric\":");
        write_json_str(out, self.metric);
        out.extend_from_slice(b",\"value\":");
        write_number(out, self.value);
        if let Some(unit) = self.unit {
            out.extend_from_slice(b",\"unit\":");
            write_json_str(out, unit);
        }
        if let Some(tags) = self.tags {
            out.extend_from_slice(b",\"tags\":");
            out.extend_from_slice(tags.as_bytes());
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Writes a JSON string literal with escapes.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaper is the reference; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes a finite number as canonical JSON: integers without a fraction (`1234`, not
/// `1234.0`), others in the shortest form that reads back to the same `f64`.
pub fn write_number(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        let i = v as i64;
        if i == 0 {
            // Also turns -0 into 0.
            out.push(b'0');
        } else {
            out.extend_from_slice(i.to_string().as_bytes());
        }
    } else if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        // Never produced for records (values are validated); aggregates of nothing use null.
        out.extend_from_slice(b"null");
    }
}

/// The canonical text of a number, as [`write_number`] writes it.
pub fn number_text(v: f64) -> String {
    let mut out = Vec::with_capacity(24);
    write_number(&mut out, v);
    String::from_utf8(out).unwrap_or_default()
}

/// Parses a value as people type it (`42`, `-5`, `1.50`, `1.`, `007`, `1e3`, `+1`, `.5`).
///
/// # Errors
/// Exit 65 with the value quoted when it is empty, not a number, or not finite
/// (`nan`, `inf`, `1e999`).
pub fn parse_value(text: &str) -> anyhow::Result<f64> {
    match number(text) {
        Some(v) if v.is_finite() => Ok(v),
        Some(_) => Err(fail(
            Exit::DataErr,
            format!("value {text:?} is not a finite number"),
        )),
        None => Err(fail(
            Exit::DataErr,
            format!("value {text:?} is not a number"),
        )),
    }
}

/// `text` as a number when it is written as one (digits, sign, point, exponent; no words
/// such as `inf` or `nan`), finite or not.
fn number(text: &str) -> Option<f64> {
    let t = text.trim();
    let looks_numeric = !t.is_empty()
        && t.bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'))
        && t.bytes().any(|c| c.is_ascii_digit());
    if looks_numeric {
        t.parse::<f64>().ok()
    } else {
        None
    }
}

/// True when `text` is a value [`parse_value`] accepts; used to tell the call forms apart.
pub fn is_value(text: &str) -> bool {
    // Without building an error: the call forms ask this of several words of every call.
    number(text).is_some_and(f64::is_finite)
}

/// Checks a metric name: 1..=200 bytes, no control characters.
///
/// # Errors
/// Exit 65 naming the metric.
pub fn validate_metric(metric: &str) -> anyhow::Result<()> {
    if metric.is_empty() {
        return Err(fail(Exit::DataErr, "metric name is empty"));
    }
    if metric.len() > MAX_METRIC_LEN {
        return Err(fail(
            Exit::DataErr,
            format!(
                "metric name {:?}... is {} bytes (at most {MAX_METRIC_LEN})",
                &metric[..metric.floor_char_boundary(40)],
                metric.len()
            ),
        ));
    }
    if metric.chars().any(char::is_control) {
        return Err(fail(
            Exit::DataErr,
            format!("metric name {metric:?} contains a control character"),
        ));
    }
    Ok(())
}

/// Validates a tags JSON text: a flat object of string, number or boolean values.
/// Returns its compact form.
///
/// # Errors
/// Exit 65 quoting the text when it is not such an object.
pub fn parse_tags_json(text: &str) -> anyhow::Result<Map<String, Value>> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        fail(
            Exit::DataErr,
            format!("tags {text:?} are not valid JSON: {e}"),
        )
    })?;
    let Value::Object(map) = v else {
        return Err(fail(
            Exit::DataErr,
            format!("tags {text:?} must be a JSON object such as {{\"phase\":\"consensus\"}}"),
        ));
    };
    for (k, v) in &map {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(fail(
                Exit::DataErr,
                format!("tag {k:?} in {text:?} must be a string, number or boolean"),
            ));
        }
    }
    Ok(map)
}

/// Adds a `key=value` tag to `map`; the value is kept as a string.
///
/// # Errors
/// Exit 65 when there is no `=` or the key is empty.
pub fn add_tag_kv(map: &mut Map<String, Value>, kv: &str) -> anyhow::Result<()> {
    let (k, v) = parse_tag_kv(kv)?;
    map.insert(k, Value::String(v));
    Ok(())
}

/// Splits a `--tag` value: `KEY=VALUE`, the spelling every tool takes, or the older
/// `KEY:VALUE` cfn-push took (only when there is no `=`).
///
/// # Errors
/// Exit 65 quoting the text when it has no key.
pub fn parse_tag_kv(kv: &str) -> anyhow::Result<(String, String)> {
    match kv.split_once('=').or_else(|| kv.split_once(':')) {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(fail(Exit::DataErr, format!("tag {kv:?} must be KEY=VALUE"))),
    }
}

/// The compact JSON text of a tags map.
pub fn tags_to_json(map: &Map<String, Value>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

/// Writes `rec`'s bytes to `out` with the tag `name` set to `value` (added to its tags, or
/// replacing a tag of that name); everything else is kept as it was written.
pub fn write_with_tag(rec: &RecordRef<'_>, name: &str, value: &str, out: &mut Vec<u8>) {
    let raw = rec.raw;
    let span = rec.tags.and_then(|t| {
        // The tags are a slice of the record's own bytes: find where.
        let start = (t.get().as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
        (start + t.get().len() <= raw.len()).then_some((start, start + t.get().len()))
    });
    match span.and_then(|(a, b)| {
        Some((
            a,
            b,
            serde_json::from_str::<Map<String, Value>>(rec.tags?.get()).ok()?,
        ))
    }) {
        Some((a, b, mut tags)) => {
            tags.insert(name.to_string(), Value::String(value.to_string()));
            out.extend_from_slice(&raw[..a]);
            out.extend_from_slice(tags_to_json(&tags).as_bytes());
            out.extend_from_slice(&raw[b..]);
        }
        None => {
            // No tags (or tags that are not an object, which a reader already refused).
            let end = raw.iter().rposition(|&c| c == b'}').unwrap_or(raw.len());
            out.extend_from_slice(&raw[..end]);
            out.extend_from_slice(b",\"tags\":{");
            write_json_str(out, name);
            out.push(b':');
            write_json_str(out, value);
            out.push(b'}');
            out.extend_from_slice(&raw[end..]);
        }
    }
}

/// The longest line any reader keeps in memory. A record is a few hundred bytes; a longer
/// line (a file of zeros, a stream with no newline at all) is malformed, and only its first
/// bytes are held while the rest is skipped, so memory stays bounded whatever the input.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One parsed record, borrowing from the reader's buffer.
#[derive(Debug)]
pub struct RecordRef<'a> {
    /// The record's compact bytes without the newline: the line itself for JSONL, a
    /// whitespace-stripped copy for a legacy multi-line record.
    pub raw: &'a [u8],
    /// The line the record starts on (1-based).
    pub line: u64,
    pub ts_ms: EpochMs,
    pub metric: Cow<'a, str>,
    pub value: f64,
    pub agent: Option<Cow<'a, str>>,
    pub unit: Option<Cow<'a, str>>,
    pub tags: Option<&'a RawValue>,
}

impl<'a> RecordRef<'a> {
    /// Every tag as (name, value as text), a name once (a later duplicate replaces the
    /// earlier, as in a parse): in the order written when all are plain strings, else by
    /// name; empty without tags.
    pub fn tag_list(&self) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        let Some(tags) = self.tags else {
            return Vec::new();
        };
        if let Some(list) = plain_tags(tags.get()) {
            return list;
        }
        // Escapes or values that are not strings: parsed (then in name order).
        let parsed: std::collections::BTreeMap<Cow<'a, str>, &'a RawValue> =
            serde_json::from_str(tags.get()).unwrap_or_default();
        parsed
            .into_iter()
            .map(|(k, v)| (k, Cow::Owned(raw_to_text(v))))
            .collect()
    }
}

/// The tags of a tags object's text when every key and value is a plain string (no escapes),
/// in the order written, a later duplicate replacing the earlier; `None` otherwise.
fn plain_tags(raw: &str) -> Option<Vec<(Cow<'_, str>, Cow<'_, str>)>> {
    if raw.contains('\\') {
        return None;
    }
    let mut out: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    let mut rest = raw.trim().strip_prefix('{')?.trim_start();
    if let Some(end) = rest.strip_prefix('}') {
        return end.trim().is_empty().then_some(out);
    }
    loop {
        let body = rest.strip_prefix('"')?;
        let close = body.find('"')?;
        let key = &body[..close];
        let after = body[close + 1..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start();
        let vbody = after.strip_prefix('"')?;
        let vclose = vbody.find('"')?;
        let value = &vbody[..vclose];
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = Cow::Borrowed(value),
            None => out.push((Cow::Borrowed(key), Cow::Borrowed(value))),
        }
        rest = vbody[vclose + 1..].trim_start();
        if let Some(end) = rest.strip_prefix('}') {
            return end.trim().is_empty().then_some(out);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

impl RecordRef<'_> {
    /// The value of tag `name` as text (strings unquoted, numbers and booleans as written).
    pub fn tag(&self, name: &str) -> Option<String> {
        let tags = self.tags?;
        match plain_tag(tags.get(), name) {
            PlainTag::Absent => return None,
            PlainTag::Found(v) => return Some(v.to_string()),
            PlainTag::Unsure => {}
        }
        let map: std::collections::HashMap<Cow<'_, str>, &RawValue> =
            serde_json::from_str(tags.get()).ok()?;
        map.get(name).map(|v| raw_to_text(v))
    }
}

/// What a look at a tags object's text, without parsing it, tells of one tag.
#[derive(Debug, PartialEq, Eq)]
enum PlainTag<'a> {
    Absent,
    Found(&'a str),
    /// Escapes, or a value that is not a plain string: parse it.
    Unsure,
}

/// Tag `name` in the text of a (valid) tags object, for the common case of no escapes:
/// without a backslash, a quote only ever opens or closes a string, so `"name"` followed by
/// a colon is the key (a later duplicate wins, as in a parse), and its value runs to the
/// next quote.
fn plain_tag<'a>(raw: &'a str, name: &str) -> PlainTag<'a> {
    if raw.contains('\\') || name.is_empty() || name.contains('"') {
        return PlainTag::Unsure;
    }
    let mut found = PlainTag::Absent;
    for (at, _) in raw.match_indices(name) {
        let (before, after) = (&raw[..at], &raw[at + name.len()..]);
        let Some(rest) = after.strip_prefix('"').filter(|_| before.ends_with('"')) else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let value = value.trim_start();
        found = match value
            .strip_prefix('"')
            .and_then(|v| v.find('"').map(|end| &v[..end]))
        {
            Some(v) => PlainTag::Found(v),
            None => return PlainTag::Unsure,
        };
    }
    found
}

/// A raw JSON scalar as text: strings unquoted, anything else as written.
pub fn raw_to_text(v: &RawValue) -> String {
    let s = v.get();
    if s.starts_with('"') {
        serde_json::from_str::<String>(s).unwrap_or_else(|_| s.to_string())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_list_is_what_a_parse_finds() {
        let parse = |raw: &str| -> Vec<(String, String)> {
            let map: std::collections::BTreeMap<String, &RawValue> =
                serde_json::from_str(raw).unwrap();
            map.into_iter().map(|(k, v)| (k, raw_to_text(v))).collect()
        };
        for raw in [
            r#"{"phase":"consensus","host":"web7"}"#,
            r#"{ "host" : "phase", "phase" : "x y" }"#,
            r#"{"a":"phase","b":1}"#,
            r#"{"phase":"one","phase":"two"}"#,
            r#"{"phase":"\u0041","k":"v"}"#,
            r#"{"t":true,"n":null,"x":[1]}"#,
            r#"{}"#,
            r#" { } "#,
        ] {
            let line = format!(
                r#"{{"timestamp":"2026-01-01T00:00:00.000Z","metric":"m","value":1,"tags":{raw}}}"#
            );
            let rec = crate::reader::parse_record(line.as_bytes()).unwrap();
            let mut got: Vec<(String, String)> = rec
                .tag_list()
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            got.sort();
            assert_eq!(got, parse(raw), "{raw}");
        }
        assert_eq!(
            plain_tags(r#"{"b":"1","a":"2"}"#).unwrap(),
            [("b".into(), "1".into()), ("a".into(), "2".into())],
            "plain tags keep the order written"
        );
    }

    #[test]
    fn a_plain_tag_is_found_as_a_parse_finds_it() {
        let full = |raw: &str, name: &str| -> Option<String> {
            let map: std::collections::HashMap<String, &RawValue> =
                serde_json::from_str(raw).unwrap();
            map.get(name).map(|v| raw_to_text(v))
        };
        for raw in [
            r#"{"phase":"consensus","host":"web7"}"#,
            r#"{ "host" : "phase", "phase" : "x y" }"#,
            r#"{"a":"phase","b":1}"#,
            r#"{"phase":"one","phase":"two"}"#,
            r#"{"phase":3}"#,
            r#"{"phase":"\u0041"}"#,
            r#"{"\u0070hase":"hidden"}"#,
            r#"{}"#,
        ] {
            let want = full(raw, "phase");
            match plain_tag(raw, "phase") {
                PlainTag::Found(v) => assert_eq!(Some(v.to_string()), want, "{raw}"),
                PlainTag::Absent => assert_eq!(None, want, "{raw}"),
                PlainTag::Unsure => {}
            }
        }
        assert_eq!(plain_tag(r#"{"phase":"a"}"#, "phase"), PlainTag::Found("a"));
        assert_eq!(plain_tag(r#"{"host":"phase"}"#, "phase"), PlainTag::Absent);
        assert_eq!(
            plain_tag(r#"{"\u0070hase":"x"}"#, "phase"),
            PlainTag::Unsure
        );
    }

    #[test]
    fn a_tag_is_added_or_replaced_and_the_rest_kept_byte_for_byte() {
        let cases = [
            (
                r#"{"timestamp":"2026-11-01T00:00:00.000Z","metric":"m","value":1.50}"#,
                r#"{"timestamp":"2026-11-01T00:00:00.000Z","metric":"m","value":1.50,"tags":{"host":"web-1"}}"#,
            ),
            (
                r#"{"timestamp":"2026-11-01T00:00:00.000Z","metric":"m","value":1,"tags":{"phase":"x","host":"old"}}"#,
                r#"{"timestamp":"2026-11-01T00:00:00.000Z","metric":"m","value":1,"tags":{"host":"web-1","phase":"x"}}"#,
            ),
        ];
        for (line, want) in cases {
            let rec = crate::reader::parse_record(line.as_bytes()).unwrap();
            let mut out = Vec::new();
            write_with_tag(&rec, "host", "web-1", &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn accepts_what_people_type() {
        for (t, v) in [
            ("42", 42.0),
            ("-5", -5.0),
            ("1.50", 1.5),
            ("1.", 1.0),
            ("007", 7.0),
            ("1e3", 1000.0),
            ("+1", 1.0),
            (".5", 0.5),
        ] {
            assert_eq!(parse_value(t).unwrap(), v, "{t}");
        }
    }

    #[test]
    fn rejects_non_numbers_quoting_them() {
        for t in [
            "nan", "inf", "-inf", "", "abc", "1e999", "Infinity", "0x10", "1,5",
        ] {
            let err = parse_value(t).unwrap_err();
            assert!(err.to_string().contains(&format!("{t:?}")), "{err}");
            assert_eq!(crate::exit::exit_for(&err), Exit::DataErr);
        }
    }

    #[test]
    fn writes_canonical_numbers() {
        for (v, s) in [
            (1234.0, "1234"),
            (-0.0, "0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (-7.0, "-7"),
        ] {
            assert_eq!(number_text(v), s);
        }
    }

    #[test]
    fn writes_keys_in_contract_order() {
        let rec = NewRecord {
            agent: Some("agent-42"),
            metric: "coordination.time",
            value: 150.0,
            unit: Some("milliseconds"),
            tags: Some(r#"{"phase":"consensus"}"#),
        };
        let mut out = Vec::new();
        rec.write_line(
            crate::time::parse_timestamp_str("2026-11-27T10:00:00.123Z").unwrap(),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"timestamp\":\"2026-11-27T10:00:00.123Z\",\"agent\":\"agent-42\",\"metric\":\"coordination.time\",\"value\":150,\"unit\":\"milliseconds\",\"tags\":{\"phase\":\"consensus\"}}\n"
        );
    }

    #[test]
    fn tags_must_be_a_flat_object() {
        assert!(parse_tags_json(r#"{"a":"x","b":2,"c":true}"#).is_ok());
        for bad in ["[]", "\"x\"", "{", r#"{"a":{"b":1}}"#, "null"] {
            let err = parse_tags_json(bad).unwrap_err();
            assert_eq!(crate::exit::exit_for(&err), Exit::DataErr, "{bad}");
        }
    }

    #[test]
    fn metric_names_are_checked() {
        assert!(validate_metric("coordination.time").is_ok());
        assert!(validate_metric("").is_err());
        assert!(validate_metric("a\nb").is_err());
        assert!(validate_metric(&"x".repeat(201)).is_err());
    }
}
