//! The unit vocabulary of the contract (section 1, `unit`): each spelling the tools know, what
//! it measures, its factor to the base unit (seconds, bytes, percent) and whether its prefix
//! is SI (powers of 1,000) or IEC (powers of 1,024). Every tool takes units from here:
//! cfn-agg converts convertible units within a group, cfn-promtext's `--base-units` and
//! cfn-serve's histograms scale to base units, cfn-push's OTLP names them in UCUM, and the
//! views format them, so one metric carries the same value in every export. Byte multiples
//! are IEC: `mb` is what `free -m` and /proc/meminfo report, 1,048,576 bytes.

use serde::Serialize;

/// What a unit measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    /// Base: seconds.
    Time,
    /// Base: bytes.
    Bytes,
    /// Base: percent (a ratio of 1 is 100 %).
    Percent,
}

impl Dimension {
    /// Its name: `time`, `bytes`, `percent`.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Time => "time",
            Dimension::Bytes => "bytes",
            Dimension::Percent => "percent",
        }
    }

    /// The Prometheus base unit a `--base-units` family is named with (`None`: kept as is).
    pub fn prometheus_base(self) -> Option<&'static str> {
        match self {
            Dimension::Time => Some("seconds"),
            Dimension::Bytes => Some("bytes"),
            Dimension::Percent => None,
        }
    }
}

/// How a unit's multiple is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefix {
    /// The base unit itself, or a unit of time (60 s a minute).
    None,
    /// Powers of 1,000 (`ms`, `us`, `ns`).
    Si,
    /// Powers of 1,024 (`kb`, `mb`, `gb`).
    Iec,
}

/// A known unit: its dimension, the factor from it to the base unit, and its names.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Unit {
    pub dimension: Dimension,
    pub to_base: f64,
    #[serde(skip)]
    pub prefix: Prefix,
    /// The UCUM code (OTLP's unit field).
    #[serde(skip)]
    pub ucum: &'static str,
    /// Every spelling, lower case; the first is the canonical one.
    #[serde(skip)]
    pub spellings: &'static [&'static str],
}

const fn unit(
    dimension: Dimension,
    to_base: f64,
    prefix: Prefix,
    ucum: &'static str,
    spellings: &'static [&'static str],
) -> Unit {
    Unit {
        dimension,
        to_base,
        prefix,
        ucum,
        spellings,
    }
}

/// The vocabulary (CONTRACT.md section 1 prints it).
pub const UNITS: &[Unit] = {
    use Dimension::{Bytes, Percent, Time};
    &[
        unit(
            Time,
            1e-9,
            Prefix::Si,
            "ns",
            &["ns", "nanosecond", "nanoseconds"],
        ),
        unit(
            Time,
            1e-6,
            Prefix::Si,
            "us",
            &["us", "µs", "microsecond", "microseconds"],
        ),
        unit(
            Time,
            1e-3,
            Prefix::Si,
            "ms",
            &["ms", "millisecond", "milliseconds"],
        ),
        unit(
            Time,
            1.0,
            Prefix::None,
            "s",
            &["s", "sec", "second", "seconds"],
        ),
        unit(
            Time,
            60.0,
            Prefix::None,
            "min",
            &["min", "minute", "minutes"],
        ),
        unit(Bytes, 1.0, Prefix::None, "By", &["b", "byte", "bytes"]),
        unit(
            Bytes,
            1024.0,
            Prefix::Iec,
            "KiBy",
            &["kb", "kib", "kilobytes"],
        ),
        unit(
            Bytes,
            1_048_576.0,
            Prefix::Iec,
            "MiBy",
            &["mb", "mib", "megabytes"],
        ),
        unit(
            Bytes,
            1_073_741_824.0,
            Prefix::Iec,
            "GiBy",
            &["gb", "gib", "gigabytes"],
        ),
        unit(Percent, 1.0, Prefix::None, "%", &["percent", "%", "pct"]),
        unit(Percent, 100.0, Prefix::None, "1", &["ratio", "fraction"]),
    ]
};

/// The unit a `unit` field names (case-insensitive), `None` for counts and unknown words.
pub fn parse_unit(spelling: &str) -> Option<Unit> {
    let mut buf = [0u8; 16];
    let lower = spelling.as_bytes();
    if lower.len() > buf.len() {
        return None;
    }
    let buf = &mut buf[..lower.len()];
    buf.copy_from_slice(lower);
    buf.make_ascii_lowercase();
    UNITS
        .iter()
        .find(|u| u.spellings.iter().any(|s| s.as_bytes() == buf))
        .copied()
}

/// The factor that turns a value in `from` into one in `to`: 1 for the same spelling, the
/// ratio of their factors when both are known units of one dimension, `None` otherwise (no
/// unit and a unit, two unknown words, time and bytes).
pub fn conversion(from: Option<&str>, to: Option<&str>) -> Option<f64> {
    match (from, to) {
        (None, None) => Some(1.0),
        (Some(a), Some(b)) if a == b => Some(1.0),
        (Some(a), Some(b)) => {
            let (a, b) = (parse_unit(a)?, parse_unit(b)?);
            (a.dimension == b.dimension).then(|| a.to_base / b.to_base)
        }
        _ => None,
    }
}

/// What values may be added together under: a known unit's dimension, else the spelling
/// as written, else nothing. Two units with one kind convert into each other.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitKind {
    None,
    Known(Dimension),
    Other(String),
}

/// The kind of a `unit` field.
pub fn unit_kind(spelling: Option<&str>) -> UnitKind {
    match spelling {
        None => UnitKind::None,
        Some(s) => match parse_unit(s) {
            Some(u) => UnitKind::Known(u.dimension),
            None => UnitKind::Other(s.to_string()),
        },
    }
}

/// The UCUM code for a unit (OTLP): the vocabulary's, `1` for `count`, others as written.
pub fn ucum(spelling: &str) -> String {
    match parse_unit(spelling) {
        Some(u) => u.ucum.to_string(),
        None if spelling.eq_ignore_ascii_case("count") => "1".to_string(),
        None => spelling.to_string(),
    }
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

/// The vocabulary's spelling a unit outside it was probably meant to be (`milisecond` ->
/// `millisecond`, `msec` -> `ms`): one at most two edits away (one for spellings of up to
/// four letters), or a common abbreviation; `None` for a unit in the vocabulary, `count`, or
/// a word of its own (`widgets`), which stays free text.
pub fn likely_misspelling(unit: &str) -> Option<&'static str> {
    let lower = unit.to_lowercase();
    if lower == "count" || UNITS.iter().any(|u| u.spellings.contains(&lower.as_str())) {
        return None;
    }
    let abbreviation = match lower.as_str() {
        "msec" | "msecs" | "millis" => Some("ms"),
        "usec" | "usecs" | "micros" => Some("us"),
        "nsec" | "nsecs" | "nanos" => Some("ns"),
        "secs" => Some("s"),
        "mins" => Some("min"),
        _ => None,
    };
    if abbreviation.is_some() {
        return abbreviation;
    }
    crate::spelling::closest(
        &lower,
        UNITS
            .iter()
            .flat_map(|u| u.spellings.iter().copied())
            .filter(|s| s.chars().count() > 2),
    )
}

#[cfg(test)]
mod tests {
    use super::likely_misspelling;

    #[test]
    fn misspelt_units_get_a_suggestion_and_words_of_their_own_do_not() {
        assert_eq!(likely_misspelling("milisecond"), Some("millisecond"));
        assert_eq!(likely_misspelling("msec"), Some("ms"));
        assert_eq!(likely_misspelling("Secnods"), Some("seconds"));
        assert_eq!(likely_misspelling("megabyte"), Some("megabytes"));
        for fine in [
            "ms",
            "MB",
            "count",
            "widgets",
            "requests",
            "task.latency",
            "percent",
        ] {
            assert_eq!(likely_misspelling(fine), None, "{fine}");
        }
    }

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

    #[test]
    fn every_spelling_is_one_unit_and_conversions_stay_in_a_dimension() {
        let mut seen = std::collections::HashSet::new();
        for u in UNITS {
            for s in u.spellings {
                assert!(seen.insert(*s), "{s} twice");
                assert_eq!(parse_unit(&s.to_ascii_uppercase()), Some(*u), "{s}");
            }
        }
        assert_eq!(conversion(Some("gb"), Some("mb")), Some(1024.0));
        assert_eq!(conversion(Some("MB"), Some("kb")), Some(1024.0));
        assert_eq!(conversion(Some("ms"), Some("s")), Some(1e-3));
        assert_eq!(conversion(Some("ratio"), Some("percent")), Some(100.0));
        assert_eq!(conversion(Some("ms"), Some("mb")), None);
        assert_eq!(conversion(Some("ms"), None), None);
        assert_eq!(conversion(Some("widgets"), Some("widgets")), Some(1.0));
        assert_eq!(conversion(Some("widgets"), Some("Widgets")), None);
        assert_eq!(unit_kind(Some("KiB")), UnitKind::Known(Dimension::Bytes));
        assert_eq!(
            unit_kind(Some("a-very-long-unit-name")),
            UnitKind::Other("a-very-long-unit-name".into())
        );
        assert_eq!(ucum("mb"), "MiBy");
        assert_eq!(ucum("kb"), "KiBy");
        assert_eq!(ucum("count"), "1");
        assert_eq!(ucum("widgets"), "widgets");
    }
}
