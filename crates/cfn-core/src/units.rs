//! The unit spellings the views understand (contract section 1, `unit`): what a value is
//! measured in, and the factor to its base unit (seconds, bytes), so a chart axis or a table
//! can show 1,500 ms as 1.5 s and 2,048 kb as 2 MB. Byte multiples are IEC (1 kb = 1,024
//! bytes), as cfn-promtext's and cfn-serve's base-unit conversions are.

use serde::Serialize;

/// What a unit measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    /// Base: seconds.
    Time,
    /// Base: bytes.
    Bytes,
    /// Base: percent (a ratio of 1 is 100 %).
    Percent,
}

/// A known unit: its dimension and the factor from it to the base unit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Unit {
    pub dimension: Dimension,
    pub to_base: f64,
}

/// The unit a `unit` field names (case-insensitive), `None` for counts and unknown words.
pub fn parse_unit(spelling: &str) -> Option<Unit> {
    use Dimension::{Bytes, Percent, Time};
    let (dimension, to_base) = match spelling.to_ascii_lowercase().as_str() {
        "ns" | "nanosecond" | "nanoseconds" => (Time, 1e-9),
        "us" | "µs" | "microsecond" | "microseconds" => (Time, 1e-6),
        "ms" | "millisecond" | "milliseconds" => (Time, 1e-3),
        "s" | "sec" | "second" | "seconds" => (Time, 1.0),
        "min" | "minute" | "minutes" => (Time, 60.0),
        "b" | "byte" | "bytes" => (Bytes, 1.0),
        "kb" | "kib" | "kilobytes" => (Bytes, 1024.0),
        "mb" | "mib" | "megabytes" => (Bytes, 1_048_576.0),
        "gb" | "gib" | "gigabytes" => (Bytes, 1_073_741_824.0),
        "percent" | "%" | "pct" => (Percent, 1.0),
        "ratio" | "fraction" => (Percent, 100.0),
        _ => return None,
    };
    Some(Unit { dimension, to_base })
}

/// `v` (in `unit`) as short text with the unit a reader expects: `850 ms`, `1.5 s`,
/// `2 MB`, `12 %`; plain numbers for counts and unknown units (`unit` is then shown apart).
pub fn format_value(v: f64, unit: Option<&str>) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let Some(u) = unit.and_then(parse_unit) else {
        return format_number(v);
    };
    let base = v * u.to_base;
    let a = base.abs();
    let (scaled, suffix) = match u.dimension {
        Dimension::Time if a == 0.0 => (0.0, "s"),
        Dimension::Time if a < 1e-3 => (base * 1e6, "µs"),
        Dimension::Time if a < 1.0 => (base * 1e3, "ms"),
        Dimension::Time if a < 120.0 => (base, "s"),
        Dimension::Time if a < 7200.0 => (base / 60.0, "min"),
        Dimension::Time => (base / 3600.0, "h"),
        Dimension::Bytes if a < 1024.0 => (base, "B"),
        Dimension::Bytes if a < 1_048_576.0 => (base / 1024.0, "KB"),
        Dimension::Bytes if a < 1_073_741_824.0 => (base / 1_048_576.0, "MB"),
        Dimension::Bytes => (base / 1_073_741_824.0, "GB"),
        Dimension::Percent => (base, "%"),
    };
    format!("{} {suffix}", format_number(scaled))
}

/// A number in at most about six characters: integers as they are (up to 999,999), others
/// with three significant decimals trimmed, large ones with k/M/G.
pub fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let a = v.abs();
    if a >= 1e9 {
        return format!("{}G", trim(v / 1e9, 2));
    }
    if a >= 1e6 {
        return format!("{}M", trim(v / 1e6, 2));
    }
    if v.fract() == 0.0 {
        return format!("{v:.0}");
    }
    let decimals = if a >= 100.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    trim(v, decimals)
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_in_the_unit_a_person_expects() {
        assert_eq!(format_value(850.0, Some("milliseconds")), "850 ms");
        assert_eq!(format_value(1500.0, Some("ms")), "1.5 s");
        assert_eq!(format_value(0.25, Some("ms")), "250 µs");
        assert_eq!(format_value(2048.0, Some("kb")), "2 MB");
        assert_eq!(format_value(512.0, Some("MB")), "512 MB");
        assert_eq!(format_value(3.5, Some("gb")), "3.5 GB");
        assert_eq!(format_value(0.12, Some("ratio")), "12 %");
        assert_eq!(format_value(7.0, Some("count")), "7");
        assert_eq!(format_value(12345.0, None), "12345");
        assert_eq!(format_value(2_500_000.0, None), "2.5M");
        assert_eq!(format_value(f64::NAN, Some("ms")), "-");
        assert_eq!(format_number(-0.0001), "0");
        assert_eq!(format_number(1.23456), "1.23");
    }
}
