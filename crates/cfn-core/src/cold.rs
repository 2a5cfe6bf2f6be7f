//! The cold storage layout (contract section 2): object names unique for their content, the
//! Hive-style directories new uploads go to (`host=HOST/dt=YYYY-MM-DD/`), and how a key of
//! any layout ever written is recognised. The archiver names what it uploads with it, and
//! `cfn-cat s3://` lists only the directories a query can need with it.

use crate::paths::parse_archive_name;
use crate::time::{EpochMs, parse_utc_day};

const DAY_MS: i64 = 86_400_000;

/// Where a host's objects go below the prefix given to `cfn-archive --upload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `PREFIX/host=HOST/dt=YYYY-MM-DD/NAME` (the default): query engines prune by host and
    /// day from the key alone.
    Hive,
    /// `PREFIX/HOST/NAME`, the layout of the previous version.
    Host,
}

/// How many hex digits of the content's MD5 an object name carries.
pub const NAME_HASH_DIGITS: usize = 12;

/// The name of the object holding `md5_hex`'s bytes of shard `shard`'s day file for
/// `yyyymmdd`: `cfn-metrics-YYYYMMDD-N.<12 hex digits of the MD5>.jsonl.gz`. Two different
/// contents never share a name, so an upload never replaces an object holding other records.
pub fn object_name(yyyymmdd: &str, shard: u32, md5_hex: &str) -> String {
    let tag = &md5_hex[..md5_hex.len().min(NAME_HASH_DIGITS)];
    format!("cfn-metrics-{yyyymmdd}-{shard}.{tag}.jsonl.gz")
}

/// Parses the name of a cold object into (day, shard, gzipped): an archive file's own name
/// (the layouts before content names) or an [`object_name`].
pub fn parse_object_name(name: &str) -> Option<(String, u32, bool)> {
    if let Some(p) = parse_archive_name(name) {
        return Some(p);
    }
    let stem = name.strip_suffix(".jsonl.gz")?;
    let (stem, tag) = stem.rsplit_once('.')?;
    if tag.len() != NAME_HASH_DIGITS || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    parse_archive_name(&format!("{stem}.jsonl.gz"))
}

/// Whether Hive escapes `c` in a partition value (Hive's `FileUtils.escapePathName`).
fn hive_escapes(c: char) -> bool {
    (c as u32) < 0x20 || c == '\u{7f}' || "\"#%'*/:=?\\{[]^".contains(c)
}

/// A partition value as Hive writes it in a path: the characters it escapes as `%XX`.
pub fn hive_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if hive_escapes(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of a Hive path segment (`%XX` decoded; anything else as it is).
pub fn hive_unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `20261028` as `2026-10-28`.
pub fn dt_of_day(yyyymmdd: &str) -> String {
    if yyyymmdd.len() != 8 {
        return yyyymmdd.to_string();
    }
    format!("{}-{}-{}", &yyyymmdd[..4], &yyyymmdd[4..6], &yyyymmdd[6..])
}

/// `2026-10-28` as the start of that UTC day, when it is one.
pub fn day_start_of_dt(dt: &str) -> Option<EpochMs> {
    let b = dt.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    parse_utc_day(&format!("{}{}{}", &dt[..4], &dt[5..7], &dt[8..]))
}

/// The key prefix where `layout` puts `host`'s objects of day `yyyymmdd`, below the prefix
/// given to `cfn-archive --upload` (empty or ending in `/`; a `{host}` in it stands where
/// the host's segment goes, else the segment follows it): `fleet/host=web-1/dt=2026-10-28/`
/// or `fleet/web-1/`.
pub fn day_prefix(prefix: &str, host: &str, layout: Layout, yyyymmdd: &str) -> String {
    let segment = match layout {
        Layout::Hive => hive_host_segment(host),
        Layout::Host => host.to_string(),
    };
    let with_host = if prefix.contains("{host}") {
        prefix.replace("{host}", &segment)
    } else {
        format!("{prefix}{segment}/")
    };
    match layout {
        Layout::Hive => format!("{with_host}dt={}/", dt_of_day(yyyymmdd)),
        Layout::Host => with_host,
    }
}

/// The prefix without its `{host}` segment: where the first version put every host's files.
pub fn flat_prefix(prefix: &str) -> String {
    prefix.replace("{host}/", "").replace("{host}", "")
}

/// `host=HOST`, escaped as Hive does.
pub fn hive_host_segment(host: &str) -> String {
    format!("host={}", hive_escape(host))
}

/// What a cold key says of its records, from the part of the key below the listed prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColdKey {
    /// The `host=` segment's value, else the segment just above the file name (the host
    /// layout), else none (the flat layout of the first version).
    pub host: Option<String>,
    /// The UTC day of an archive day file (`YYYYMMDD`), from its name.
    pub day: Option<String>,
}

/// Parses a key below the listed prefix (`host=web-1/dt=2026-10-28/cfn-metrics-….jsonl.gz`,
/// `web-1/cfn-metrics-….jsonl.gz` or `cfn-metrics-….jsonl.gz`).
pub fn parse_key(below_prefix: &str) -> ColdKey {
    let mut segments: Vec<&str> = below_prefix.split('/').collect();
    let name = segments.pop().unwrap_or_default();
    let day = parse_object_name(name).map(|(day, _, _)| day);
    let hive = segments
        .iter()
        .rev()
        .find_map(|s| s.strip_prefix("host="))
        .map(hive_unescape);
    let host = hive.or_else(|| {
        segments
            .last()
            .filter(|s| !s.is_empty() && !s.contains('='))
            .map(|s| s.to_string())
    });
    ColdKey { host, day }
}

/// What a listing is after: one host (or all), and a time range.
#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
    pub host: Option<String>,
    pub since: Option<EpochMs>,
    pub until: Option<EpochMs>,
}

impl KeyFilter {
    /// Whether the UTC day starting at `start` can hold records of the range.
    pub fn day_in_range(&self, start: EpochMs) -> bool {
        !(self.since.is_some_and(|s| start + DAY_MS <= s) || self.until.is_some_and(|u| start >= u))
    }

    /// Whether a directory segment (`host=X`, `dt=D`, anything else) can lead to wanted
    /// keys: a `host=` of another host or a `dt=` day out of range cannot; any other segment
    /// (a prefix of the operator's, a host of the host layout) may.
    pub fn may_descend(&self, segment: &str) -> bool {
        if let Some(h) = segment.strip_prefix("host=") {
            return self
                .host
                .as_ref()
                .is_none_or(|want| hive_unescape(h) == *want);
        }
        if let Some(dt) = segment.strip_prefix("dt=")
            && let Some(start) = day_start_of_dt(&hive_unescape(dt))
        {
            return self.day_in_range(start);
        }
        true
    }

    /// Whether an object, by its key below the prefix, can hold wanted records.
    pub fn wants(&self, key: &ColdKey) -> bool {
        if let Some(want) = &self.host
            && key.host.as_deref() != Some(want.as_str())
        {
            return false;
        }
        key.day
            .as_deref()
            .and_then(parse_utc_day)
            .is_none_or(|start| self.day_in_range(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_names_parse_back_and_never_take_a_day_files_name() {
        let n = object_name("20261101", 3, "0123456789abcdef0123");
        assert_eq!(n, "cfn-metrics-20261101-3.0123456789ab.jsonl.gz");
        assert_eq!(parse_object_name(&n), Some(("20261101".into(), 3, true)));
        assert_eq!(
            parse_object_name("cfn-metrics-20261101-3.jsonl.gz"),
            Some(("20261101".into(), 3, true))
        );
        assert_eq!(
            parse_object_name("cfn-metrics-20261101-3.xyz.jsonl.gz"),
            None
        );
        assert_eq!(parse_archive_name(&n), None, "never a local archive name");
    }

    #[test]
    fn hive_segments_escape_as_hive_does_and_read_back() {
        assert_eq!(hive_escape("web-1.example"), "web-1.example");
        assert_eq!(hive_escape("a=b/c:d%"), "a%3Db%2Fc%3Ad%25");
        assert_eq!(hive_unescape("a%3Db%2Fc%3Ad%25"), "a=b/c:d%");
        assert_eq!(hive_unescape("100%"), "100%");
        assert_eq!(hive_unescape("%zz"), "%zz");
        let day = "20261028";
        assert_eq!(
            day_prefix("fleet/", "web-1", Layout::Hive, day),
            "fleet/host=web-1/dt=2026-10-28/"
        );
        assert_eq!(
            day_prefix("", "web-1", Layout::Hive, day),
            "host=web-1/dt=2026-10-28/"
        );
        assert_eq!(
            day_prefix("fleet/", "web-1", Layout::Host, day),
            "fleet/web-1/"
        );
        assert_eq!(
            day_prefix("{host}/metrics/", "web-1", Layout::Hive, day),
            "host=web-1/metrics/dt=2026-10-28/"
        );
        assert_eq!(
            day_prefix("{host}/metrics/", "web-1", Layout::Host, day),
            "web-1/metrics/"
        );
        assert_eq!(flat_prefix("{host}/metrics/"), "metrics/");
        assert_eq!(flat_prefix("fleet/"), "fleet/");
        assert_eq!(day_start_of_dt("2026-10-28"), parse_utc_day("20261028"));
        assert_eq!(day_start_of_dt("2026-1-28"), None);
    }

    #[test]
    fn every_layout_is_recognised() {
        let hive =
            parse_key("host=web%3D1/dt=2026-10-28/cfn-metrics-20261028-2.0123456789ab.jsonl.gz");
        assert_eq!(hive.host.as_deref(), Some("web=1"));
        assert_eq!(hive.day.as_deref(), Some("20261028"));
        let host = parse_key("web-2/cfn-metrics-20261028-2.jsonl.gz");
        assert_eq!(host.host.as_deref(), Some("web-2"));
        let flat = parse_key("cfn-metrics-20261028-2.jsonl.gz");
        assert_eq!(
            flat,
            ColdKey {
                host: None,
                day: Some("20261028".into())
            }
        );
        assert_eq!(parse_key("other/notes.jsonl").day, None);
    }

    #[test]
    fn a_filter_prunes_other_hosts_and_days_out_of_range() {
        let start = parse_utc_day("20261028").unwrap();
        let f = KeyFilter {
            host: Some("web-1".into()),
            since: Some(start + 3_600_000),
            until: Some(start + DAY_MS),
        };
        assert!(f.may_descend("host=web-1"));
        assert!(!f.may_descend("host=web-2"));
        assert!(f.may_descend("dt=2026-10-28"));
        assert!(!f.may_descend("dt=2026-10-27"));
        assert!(!f.may_descend("dt=2026-10-29"));
        assert!(f.may_descend("fleet"), "an operator's own segment");
        assert!(f.wants(&parse_key("web-1/cfn-metrics-20261028-0.jsonl.gz")));
        assert!(!f.wants(&parse_key("web-2/cfn-metrics-20261028-0.jsonl.gz")));
        assert!(
            !f.wants(&parse_key("cfn-metrics-20261028-0.jsonl.gz")),
            "no host"
        );
        let any = KeyFilter::default();
        assert!(any.wants(&parse_key("cfn-metrics-20261028-0.jsonl.gz")));
    }
}
