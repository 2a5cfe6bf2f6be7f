//! Time handling: durations (`30s`, `5m`, `24h`, `7d`), timestamps in the forms the contract
//! accepts, and the canonical millisecond UTC form writers use.
//!
//! Parsing goes through jiff, except for a byte-level fast path for the canonical form
//! `YYYY-MM-DDTHH:MM:SS[.fff]Z`, which is what nearly every record carries and which the
//! aggregator parses once per record (see the README's benchmark of `cfn-agg`).

use crate::exit::{Exit, fail};
use std::time::Duration;

/// Milliseconds since the Unix epoch, UTC.
pub type EpochMs = i64;

/// The earliest valid record time: 1970-01-01T00:00:00.000Z.
pub const MIN_TIMESTAMP_MS: EpochMs = 0;
/// The latest valid record time: 9999-12-31T23:59:59.999Z. Every valid time has a 4-digit
/// year, so an archive day name is always 8 digits (contract section 1).
pub const MAX_TIMESTAMP_MS: EpochMs = 253_402_300_799_999;
/// The longest duration any flag or query accepts: the whole valid time range. Longer ones
/// are refused rather than wrapped (`--keep 1000000000000d` must not mean "a few days").
pub const MAX_DURATION_MS: u64 = MAX_TIMESTAMP_MS as u64 + 1;

/// True when `ms` is inside the contract's valid time range (years 1970-9999 UTC).
pub fn in_valid_range(ms: EpochMs) -> bool {
    (MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms)
}

/// The current time in epoch milliseconds.
pub fn now_ms() -> EpochMs {
    jiff::Timestamp::now().as_millisecond()
}

/// Parses a duration such as `30s`, `5m`, `24h`, `7d`, `500ms`, `1h30m` or a friendly form
/// jiff understands (`2 hours`).
///
/// # Errors
/// A usage error (exit 2) naming the text when it is not a positive duration, or
/// "duration out of range" when it is longer than the valid time range (about 8,000 years).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let out_of_range = || {
        fail(
            Exit::Usage,
            format!(
                "duration {text:?} is out of range (at most {} days)",
                MAX_DURATION_MS / 86_400_000
            ),
        )
    };
    match parse_compact_duration(t) {
        Some(Some(d)) => return Ok(d),
        Some(None) => return Err(out_of_range()),
        None => {}
    }
    let span: jiff::SignedDuration = t.parse().map_err(|e| {
        fail(
            Exit::Usage,
            format!("invalid duration {text:?} (expected e.g. 30s, 5m, 24h, 7d): {e}"),
        )
    })?;
    if span.is_negative() {
        return Err(fail(Exit::Usage, format!("duration {text:?} is negative")));
    }
    let d = span.unsigned_abs();
    if d.as_millis() > MAX_DURATION_MS as u128 {
        return Err(out_of_range());
    }
    Ok(d)
}

/// `7d`, `1h30m`, `500ms`: jiff's friendly format has no bare `d` for days in a
/// `SignedDuration` (days are calendar units there), so the compact forms operators type are
/// read here. `Some(None)` is a duration of that form that is out of range.
fn parse_compact_duration(t: &str) -> Option<Option<Duration>> {
    if t.is_empty() {
        return None;
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return None;
        }
        let num: f64 = t[start..i].parse().ok()?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: f64 = match &t[ustart..i] {
            "ms" => 1.0,
            "s" | "sec" | "secs" => 1_000.0,
            "m" | "min" | "mins" => 60_000.0,
            "h" | "hr" | "hrs" => 3_600_000.0,
            "d" | "day" | "days" => 86_400_000.0,
            "w" => 7.0 * 86_400_000.0,
            _ => return None,
        };
        // In f64 first: `as u128` saturates, so a huge number cannot wrap into a small one.
        let part = (num * unit_ms).round();
        if !part.is_finite() || part > MAX_DURATION_MS as f64 {
            return Some(None);
        }
        total_ms += part as u128;
    }
    if total_ms > MAX_DURATION_MS as u128 {
        return Some(None);
    }
    Some(Some(Duration::from_millis(total_ms as u64)))
}

/// Parses a `--since`/`--until`/`--now` argument: a duration back from `now`, an RFC 3339
/// time, or `now`.
///
/// # Errors
/// A usage error (exit 2) naming the text.
pub fn parse_time_arg(text: &str, now: EpochMs) -> anyhow::Result<EpochMs> {
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(ms) = parse_timestamp_str(t) {
        return Ok(ms);
    }
    match parse_duration(t) {
        // Bounded by MAX_DURATION_MS, so this cannot overflow.
        Ok(d) => Ok(now.saturating_sub(d.as_millis() as i64)),
        Err(e) if e.to_string().contains("out of range") => Err(e),
        Err(_) => Err(fail(
            Exit::Usage,
            format!(
                "invalid time {text:?} (expected a duration such as 30s or 24h, or an RFC 3339 time such as 2026-11-27T10:00:00Z)"
            ),
        )),
    }
}

/// The time a `--now` flag gives (a duration back from now, RFC 3339, `now`), or the
/// current time when the flag is absent.
///
/// # Errors
/// A usage error (exit 2) naming the text.
pub fn now_or(arg: Option<&str>) -> anyhow::Result<EpochMs> {
    match arg {
        Some(t) => parse_time_arg(t, now_ms()),
        None => Ok(now_ms()),
    }
}

/// Parses a record timestamp string: canonical fast path, else any RFC 3339 / ISO 8601 time
/// with an offset via jiff. Returns `None` when it is not a time or falls outside years
/// 1970-9999 UTC.
pub fn parse_timestamp_str(s: &str) -> Option<EpochMs> {
    if let Some(ms) = parse_canonical_utc(s.as_bytes()) {
        return Some(ms);
    }
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
        .filter(|&ms| in_valid_range(ms))
}

/// Converts a numeric epoch timestamp (seconds, or milliseconds when it is too large to be
/// seconds) to epoch milliseconds; `None` outside years 1970-9999 UTC.
pub fn epoch_number_to_ms(n: f64) -> Option<EpochMs> {
    if !n.is_finite() {
        return None;
    }
    // 1e11 seconds is the year 5138; anything larger is milliseconds.
    let ms = (if n.abs() >= 1e11 { n } else { n * 1000.0 }).round();
    // Compare as f64 before the cast: `as i64` saturates, and 1e300 must not become a time.
    if ms < MIN_TIMESTAMP_MS as f64 || ms > MAX_TIMESTAMP_MS as f64 {
        return None;
    }
    Some(ms as i64)
}

/// Fast path for `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`.
pub fn parse_canonical_utc(b: &[u8]) -> Option<EpochMs> {
    if b.len() < 20 || *b.last()? != b'Z' {
        return None;
    }
    let d = |i: usize| -> Option<i64> {
        let c = b[i];
        if c.is_ascii_digit() {
            Some((c - b'0') as i64)
        } else {
            None
        }
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = d(0)? * 1000 + d(1)? * 100 + d(2)? * 10 + d(3)?;
    if year < 1970 {
        return None;
    }
    let month = d(5)? * 10 + d(6)?;
    let day = d(8)? * 10 + d(9)?;
    let hour = d(11)? * 10 + d(12)?;
    let min = d(14)? * 10 + d(15)?;
    let sec = d(17)? * 10 + d(18)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let mut ms = 0i64;
    let rest = &b[19..b.len() - 1];
    if !rest.is_empty() {
        if rest[0] != b'.' || rest.len() < 2 || rest.len() > 10 {
            return None;
        }
        let mut scale = 100;
        for &c in &rest[1..] {
            if !c.is_ascii_digit() {
                return None;
            }
            ms += (c - b'0') as i64 * scale;
            scale /= 10;
        }
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + min) * 60_000 + sec * 1000 + ms)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats epoch milliseconds as the canonical record timestamp
/// `2026-11-27T10:00:00.123Z`.
pub fn format_ms(ms: EpochMs) -> String {
    // By hand rather than through jiff: jiff's range ends a day before 9999-12-31 (so that
    // any offset fits), and every valid record time must format.
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// The UTC day of a timestamp as `YYYYMMDD`, used for archive file names.
pub fn utc_day(ms: EpochMs) -> String {
    let days = ms.div_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

/// Parses a `YYYYMMDD` day into the epoch milliseconds of its midnight UTC.
pub fn parse_utc_day(s: &str) -> Option<EpochMs> {
    if s.len() != 8 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[4..6].parse().ok()?;
    let d: i64 = s[6..8].parse().ok()?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400_000)
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_durations_are_read() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("2 hours").unwrap(),
            Duration::from_secs(7_200)
        );
    }

    #[test]
    fn bad_duration_is_a_usage_error_naming_the_text() {
        let err = parse_duration("soon").unwrap_err();
        assert!(err.to_string().contains("\"soon\""));
        assert_eq!(crate::exit::exit_for(&err), Exit::Usage);
    }

    #[test]
    fn fast_path_agrees_with_jiff() {
        for s in [
            "2026-11-27T10:00:00.123Z",
            "2026-11-27T10:00:00Z",
            "2024-02-29T23:59:59.999Z",
            "1970-01-01T00:00:00.000Z",
            "2000-03-01T00:00:00.5Z",
            "9999-12-30T21:59:59.999Z",
        ] {
            let slow = s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
            assert_eq!(parse_canonical_utc(s.as_bytes()), Some(slow), "{s}");
        }
        assert_eq!(parse_canonical_utc(b"2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_canonical_utc(b"2026-11-27T10:00:00+01:00"), None);
    }

    #[test]
    fn times_outside_years_1970_to_9999_are_not_times() {
        assert_eq!(parse_canonical_utc(b"1969-12-31T23:59:59.999Z"), None);
        assert_eq!(parse_timestamp_str("1969-12-31T23:59:59.999Z"), None);
        assert_eq!(parse_timestamp_str("1970-01-01T00:59:59+01:00"), None);
        assert_eq!(parse_timestamp_str("+010000-01-01T00:00:00Z"), None);
        assert_eq!(
            parse_timestamp_str("9999-12-31T23:59:59.999Z"),
            Some(MAX_TIMESTAMP_MS)
        );
        for n in [1e17, -1e15, -1.0, 1e300, f64::MAX] {
            assert_eq!(epoch_number_to_ms(n), None, "{n}");
        }
        assert_eq!(epoch_number_to_ms(0.0), Some(0));
        assert_eq!(utc_day(MAX_TIMESTAMP_MS), "99991231");
    }

    #[test]
    fn durations_past_the_valid_range_are_refused_not_wrapped() {
        for t in [
            "1000000000000d",
            "18446744073709551617ms",
            "3000000d",
            "106751991167300d",
        ] {
            let err = parse_duration(t).unwrap_err();
            assert_eq!(crate::exit::exit_for(&err), Exit::Usage, "{t}");
            assert!(err.to_string().contains("out of range"), "{t}: {err}");
        }
        assert!(parse_duration("2900000d").is_ok());
        let err = parse_time_arg("1000000000000d", 0).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn offsets_and_epochs_are_accepted() {
        assert_eq!(
            parse_timestamp_str("2026-11-27T11:00:00+01:00"),
            parse_timestamp_str("2026-11-27T10:00:00Z")
        );
        assert_eq!(epoch_number_to_ms(1_795_773_600.0), Some(1_795_773_600_000));
        assert_eq!(
            epoch_number_to_ms(1_795_773_600_123.0),
            Some(1_795_773_600_123)
        );
    }

    #[test]
    fn formats_canonical_millisecond_utc() {
        let ms = parse_timestamp_str("2026-11-27T10:00:00.1Z").unwrap();
        assert_eq!(format_ms(ms), "2026-11-27T10:00:00.100Z");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(MAX_TIMESTAMP_MS), "9999-12-31T23:59:59.999Z");
        for ms in [1, 951_782_400_000, 1_795_773_600_123, 4_102_444_799_999] {
            let by_jiff = format!("{:.3}", jiff::Timestamp::from_millisecond(ms).unwrap());
            assert_eq!(format_ms(ms), by_jiff);
        }
    }

    #[test]
    fn utc_day_splits_at_midnight() {
        let a = parse_timestamp_str("2026-11-27T23:59:59.999Z").unwrap();
        let b = parse_timestamp_str("2026-11-28T00:00:00.000Z").unwrap();
        assert_eq!(utc_day(a), "20261127");
        assert_eq!(utc_day(b), "20261128");
        assert_eq!(parse_utc_day("20261128"), Some(b));
    }

    #[test]
    fn time_args_take_durations_or_times() {
        let now = 1_000_000_000;
        assert_eq!(parse_time_arg("30s", now).unwrap(), now - 30_000);
        assert_eq!(parse_time_arg("now", now).unwrap(), now);
        assert_eq!(parse_time_arg("1970-01-01T00:00:01Z", now).unwrap(), 1000);
        assert!(parse_time_arg("yesterday-ish", now).is_err());
    }
}
