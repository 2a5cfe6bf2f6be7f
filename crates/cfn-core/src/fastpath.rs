//! A byte-level scanner for the records cfn-emit writes, in its exact layout:
//!
//! ```text
//! {"timestamp":"2026-11-27T10:00:00.123Z"[,"agent":"…"],"metric":"…","value":N[,"unit":"…"][,"tags":{…}]}
//! ```
//!
//! with no spaces and no escapes in the strings. Anything else (another key order, spaces,
//! escapes, a numeric agent, an extra key) is left to the full parser: the scanner answers
//! `None`, never a different result. Every value it accepts is checked by the same rules
//! (the JSON number grammar, finite values, metric length and control characters, the valid
//! time range, UTF-8), and the tags object is validated by serde_json itself. The fuzz test
//! below checks that the two agree on valid and mangled records.

use crate::record::RecordRef;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The line as text, validated once (a call per field cost more than the rest of the scan);
/// fields are slices of it, cut at quotes and number ends, which are character boundaries.
struct Scan<'a> {
    t: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline]
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + s.len())? == s {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    #[inline]
    fn peek_lit(&self, s: &[u8]) -> bool {
        self.b.get(self.i..self.i + s.len()) == Some(s)
    }

    /// A string without escapes or control characters, after its opening quote; valid UTF-8.
    #[inline]
    fn plain_str(&mut self) -> Option<&'a str> {
        let rest = &self.b[self.i..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        if rest[..end].iter().any(|&c| c < 0x20) {
            return None;
        }
        let start = self.i;
        self.i += end + 1;
        self.t.get(start..start + end)
    }

    /// A JSON number (the grammar exactly), as text.
    #[inline]
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        let b = self.b;
        let digits = |i: &mut usize| {
            let s = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            *i > s
        };
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(c) if c.is_ascii_digit() => {
                digits(&mut i);
            }
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        self.i = i;
        self.t.get(start..i)
    }
}

/// The record in `bytes` when it is in cfn-emit's exact layout and valid; `None` to let the
/// full parser decide (it may still be valid, or malformed).
pub fn parse_canonical(bytes: &[u8]) -> Option<RecordRef<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut s = Scan {
        t: text,
        b: bytes,
        i: 0,
    };
    s.lit(b"{\"timestamp\":\"")?;
    let ts = s.plain_str()?;
    let ts_ms = crate::time::parse_canonical_utc(ts.as_bytes())?;
    let agent = if s.peek_lit(b",\"agent\":\"") {
        s.lit(b",\"agent\":\"")?;
        Some(Cow::Borrowed(s.plain_str()?))
    } else {
        None
    };
    s.lit(b",\"metric\":\"")?;
    let metric = s.plain_str()?;
    if metric.is_empty()
        || metric.len() > crate::record::MAX_METRIC_LEN
        || metric.chars().any(char::is_control)
    {
        return None;
    }
    s.lit(b",\"value\":")?;
    let value: f64 = s.number()?.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let unit = if s.peek_lit(b",\"unit\":\"") {
        s.lit(b",\"unit\":\"")?;
        Some(Cow::Borrowed(s.plain_str()?))
    } else {
        None
    };
    let tags = if s.peek_lit(b",\"tags\":{") {
        s.lit(b",\"tags\":")?;
        // The object runs to the record's closing brace: flat tags hold no `}` outside
        // strings, and serde_json validates the whole object (or we fall back).
        let body = bytes.get(s.i..bytes.len().checked_sub(1)?)?;
        let raw: &RawValue = serde_json::from_slice(body).ok()?;
        if !raw.get().starts_with('{') {
            return None;
        }
        s.i = bytes.len() - 1;
        Some(raw)
    } else {
        None
    };
    s.lit(b"}")?;
    if s.i != bytes.len() {
        return None;
    }
    Some(RecordRef {
        raw: bytes,
        line: 0,
        ts_ms,
        metric: Cow::Borrowed(metric),
        value,
        agent,
        unit,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::parse_record;

    fn same(a: &RecordRef<'_>, b: &RecordRef<'_>) -> bool {
        a.raw == b.raw
            && a.ts_ms == b.ts_ms
            && a.metric == b.metric
            && a.value.to_bits() == b.value.to_bits()
            && a.agent == b.agent
            && a.unit == b.unit
            && a.tags.map(|t| t.get()) == b.tags.map(|t| t.get())
    }

    #[test]
    fn reads_what_cfn_emit_writes() {
        let mut out = Vec::new();
        crate::record::NewRecord {
            agent: Some("agent-42"),
            metric: "coordination.time",
            value: 150.5,
            unit: Some("milliseconds"),
            tags: Some(r#"{"phase":"consensus","n":3,"ok":true}"#),
        }
        .write_line(1_795_773_600_123, &mut out);
        out.pop();
        let fast = parse_canonical(&out).expect("canonical");
        assert!(same(&fast, &parse_record(&out).unwrap()));
        assert_eq!(fast.tag("phase").as_deref(), Some("consensus"));
        let bare = br#"{"timestamp":"2026-11-27T10:00:00.000Z","metric":"m","value":-0.5e3}"#;
        assert!(same(
            &parse_canonical(bare).unwrap(),
            &parse_record(bare).unwrap()
        ));
    }

    /// xorshift64*, so the fuzz test is the same every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    /// Valid and mangled records: the fast path either agrees with the full parser or
    /// declines; it never accepts what the full parser rejects.
    #[test]
    fn agrees_with_the_full_parser_on_valid_and_mangled_records() {
        let mut rng = Rng(0x5eed);
        let timestamps = [
            "2026-11-27T10:00:00.123Z",
            "2026-11-27T10:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "2026-02-30T10:00:00.000Z",
            "2026-11-27T10:00:00.123+01:00",
            "9999-12-31T23:59:59.999Z",
        ];
        let names = [
            "m",
            "coordination.time",
            "a\\\"b",
            "\\u0041",
            "é",
            "",
            "x\u{7}",
            "value",
        ];
        let values = [
            "1",
            "-0",
            "0.5",
            "1e3",
            "1E+3",
            "-1.5e-7",
            "01",
            "1.",
            ".5",
            "+1",
            "1e999",
            "NaN",
            "\"12\"",
            "true",
            "null",
            "{\"value\":1}",
        ];
        let tags = [
            "{}",
            "{\"k\":\"v\"}",
            "{\"k\":1,\"b\":false}",
            "{\"value\":{\"value\":2}}",
            "{\"k\":\"}\"}",
            "[1]",
            "{\"k\":",
            "{\"k\":\"v\"}}",
        ];
        let mut accepted = 0;
        for _ in 0..100_000 {
            let mut line = format!("{{\"timestamp\":\"{}\"", rng.pick(&timestamps));
            if rng.next().is_multiple_of(2) {
                line.push_str(&format!(",\"agent\":\"{}\"", rng.pick(&names)));
            }
            line.push_str(&format!(
                ",\"metric\":\"{}\",\"value\":{}",
                rng.pick(&names),
                rng.pick(&values)
            ));
            if rng.next().is_multiple_of(2) {
                line.push_str(&format!(",\"unit\":\"{}\"", rng.pick(&names)));
            }
            if rng.next().is_multiple_of(2) {
                line.push_str(&format!(",\"tags\":{}", rng.pick(&tags)));
            }
            line.push('}');
            let mut bytes = line.into_bytes();
            // Mangle: spaces, a swapped key order, truncation, invalid UTF-8, a duplicate key.
            match rng.next() % 8 {
                0 => {
                    let at = (rng.next() % bytes.len() as u64) as usize;
                    bytes.insert(at, b' ');
                }
                1 => {
                    let cut = (rng.next() % bytes.len() as u64) as usize;
                    bytes.truncate(cut);
                }
                2 => {
                    let at = (rng.next() % bytes.len() as u64) as usize;
                    bytes[at] = 0xff;
                }
                3 => {
                    let s = String::from_utf8_lossy(&bytes).replacen("\"metric\"", "\"metrik\"", 1);
                    bytes = s.into_bytes();
                }
                4 => {
                    bytes.pop();
                    bytes.extend_from_slice(b",\"metric\":\"again\"}");
                }
                _ => {}
            }
            let full = parse_record(&bytes);
            if let Some(fast) = parse_canonical(&bytes) {
                accepted += 1;
                let full = full.unwrap_or_else(|e| {
                    panic!(
                        "fast path accepted what the parser rejects ({e:?}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                assert!(same(&fast, &full), "{}", String::from_utf8_lossy(&bytes));
            }
        }
        assert!(
            accepted > 1_000,
            "the fast path took only {accepted} records"
        );
    }
}
