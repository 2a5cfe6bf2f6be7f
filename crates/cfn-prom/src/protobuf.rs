//! The Prometheus protobuf exposition (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`): the only form in which
//! Prometheus scrapes native histograms.
//!
//! Built from the text exposition of the same scrape (one source of names, labels and
//! values: the two forms never disagree), each histogram series given its native buckets
//! beside its classic ones. The messages are those of `io.prometheus.client`'s
//! metrics.proto, declared here with prost (no code generation step).

use crate::Exposition;
use cfn_stats::exponential::ExpHistogram;
use prost::Message;
use std::collections::BTreeMap;

/// The media type of the delimited protobuf exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Quantile {
    #[prost(double, tag = "1")]
    pub quantile: f64,
    #[prost(double, tag = "2")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Untyped {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "10")]
    pub negative_delta: Vec<i64>,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Untyped>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Summary = 2,
    Untyped = 3,
    Histogram = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    #[prost(enumeration = "MetricType", tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// One sample line of a text exposition: name, labels (unescaped), value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses a sample line written by this crate (`name{k="v",…} value`).
fn parse_sample(line: &str) -> Option<Sample> {
    let (name_end, mut rest) = match line.find(['{', ' ']) {
        Some(i) => (i, &line[i..]),
        None => return None,
    };
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '}' {
                end = Some(i);
                break;
            }
            if c == ',' {
                continue;
            }
            // key="value"
            let key_start = i;
            let mut key_end = i;
            for (j, c) in chars.by_ref() {
                if c == '=' {
                    key_end = j;
                    break;
                }
            }
            let key = inner[key_start..key_end].to_string();
            chars.next(); // the opening quote
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => {}
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        }
        rest = &inner[end? + 1..];
    }
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

fn unescape_help(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\\\", "\\")
}

/// The label text a histogram series is keyed by in [`Exposition::natives`].
fn label_key(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", crate::names::escape_label_value(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn label_pairs(labels: &[(String, String)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| LabelPair {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Native buckets into a histogram message.
fn add_native(h: &mut Histogram, n: &ExpHistogram) {
    h.schema = n.schema;
    h.zero_threshold = 0.0;
    h.zero_count = n.zero_count;
    let span = |(offset, length): (i32, u32)| BucketSpan { offset, length };
    let (pos, pos_delta) = n.positive.spans_and_deltas();
    let (neg, neg_delta) = n.negative.spans_and_deltas();
    h.positive_span = pos.into_iter().map(span).collect();
    h.positive_delta = pos_delta;
    h.negative_span = neg.into_iter().map(span).collect();
    h.negative_delta = neg_delta;
    if h.positive_span.is_empty() && h.negative_span.is_empty() {
        // An empty native histogram is told from a classic one by a no-op span.
        h.positive_span.push(BucketSpan {
            offset: 0,
            length: 0,
        });
    }
}

/// A family being read from the text: its metrics by label key, in the order first seen.
struct FamilyBuilder {
    family: MetricFamily,
    kind: MetricType,
    metrics: BTreeMap<String, Metric>,
    order: Vec<String>,
}

impl FamilyBuilder {
    fn new(name: &str, kind: &str, help: String) -> Self {
        let kind = match kind {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "summary" => MetricType::Summary,
            "histogram" => MetricType::Histogram,
            _ => MetricType::Untyped,
        };
        Self {
            family: MetricFamily {
                name: name.to_string(),
                help,
                r#type: kind as i32,
                metric: Vec::new(),
            },
            kind,
            metrics: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// Adds one sample line's value (a histogram's native buckets from `natives` when its
    /// metric is first seen).
    fn add(&mut self, (name, mut labels, value): Sample, natives: &Natives<'_>) {
        let suffix = name.strip_prefix(self.family.name.as_str()).unwrap_or("");
        let special = match self.kind {
            MetricType::Histogram => "le",
            MetricType::Summary => "quantile",
            _ => "",
        };
        let special_value = labels
            .iter()
            .position(|(k, _)| k == special)
            .map(|i| labels.remove(i).1);
        let key = label_key(&labels);
        let metric = self.metrics.entry(key.clone()).or_insert_with(|| {
            self.order.push(key.clone());
            Metric {
                label: label_pairs(&labels),
                ..Default::default()
            }
        });
        match self.kind {
            MetricType::Gauge => metric.gauge = Some(Gauge { value }),
            MetricType::Counter => metric.counter = Some(Counter { value }),
            MetricType::Untyped => metric.untyped = Some(Untyped { value }),
            MetricType::Summary => {
                let s = metric.summary.get_or_insert_with(Summary::default);
                match (suffix, special_value) {
                    ("_sum", _) => s.sample_sum = value,
                    ("_count", _) => s.sample_count = value as u64,
                    (_, Some(q)) => s.quantile.push(Quantile {
                        quantile: q.parse().unwrap_or(f64::NAN),
                        value,
                    }),
                    _ => {}
                }
            }
            MetricType::Histogram => {
                let h = metric.histogram.get_or_insert_with(|| {
                    let mut h = Histogram::default();
                    if let Some(n) = natives.get(&(self.family.name.clone(), key.clone())) {
                        add_native(&mut h, n);
                    }
                    h
                });
                match (suffix, special_value) {
                    ("_sum", _) => h.sample_sum = value,
                    ("_count", _) => h.sample_count = value as u64,
                    ("_bucket", Some(le)) => h.bucket.push(Bucket {
                        cumulative_count: value as u64,
                        upper_bound: if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::NAN)
                        },
                    }),
                    _ => {}
                }
            }
        }
    }

    fn finish(mut self) -> MetricFamily {
        self.family.metric = self
            .order
            .iter()
            .filter_map(|k| self.metrics.remove(k))
            .collect();
        self.family
    }
}

type Natives<'h> = BTreeMap<(String, String), &'h cfn_stats::exponential::ExpHistogram>;

/// The families of one text exposition, native buckets added from `e.natives`.
pub fn families(e: &Exposition) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = Vec::new();
    let mut current: Option<FamilyBuilder> = None;
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    for line in e.text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_string(), unescape_help(text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            out.extend(current.take().map(FamilyBuilder::finish));
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let text = help.remove(name).unwrap_or_default();
            current = Some(FamilyBuilder::new(name, kind, text));
        } else if !line.starts_with('#')
            && let (Some(fam), Some(sample)) = (current.as_mut(), parse_sample(line))
        {
            fam.add(sample, &e.natives);
        }
    }
    out.extend(current.take().map(FamilyBuilder::finish));
    out
}

/// The whole exposition, length-delimited MetricFamily messages.
pub fn encode(e: &Exposition) -> Vec<u8> {
    let mut buf = Vec::with_capacity(e.text.len());
    for f in families(e) {
        // Writing to a Vec cannot fail.
        let _ = f.encode_length_delimited(&mut buf);
    }
    buf
}

/// True when an HTTP `Accept` header asks for the delimited protobuf exposition at least
/// as much as for text (q values compared; a missing q is 1). Anything else gets text.
pub fn wanted(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut proto_q, mut text_q) = (0.0f64, 0.0f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                )
            })
            .collect();
        let q = params
            .iter()
            .find(|(k, _)| k == "q")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1.0);
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if media == "application/vnd.google.protobuf"
            && param("proto") == Some("io.prometheus.client.MetricFamily")
            && param("encoding") == Some("delimited")
        {
            proto_q = proto_q.max(q);
        } else if media == "text/plain" || media == "*/*" || media == "text/*" {
            text_q = text_q.max(q);
        }
    }
    proto_q > 0.0 && proto_q >= text_q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_accept_headers_are_negotiated() {
        assert!(wanted(Some(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        )));
        assert!(!wanted(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")));
        assert!(!wanted(Some(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        )));
        assert!(!wanted(Some("application/openmetrics-text;version=1.0.0")));
        assert!(!wanted(None));
    }

    #[test]
    fn the_text_exposition_round_trips_with_native_buckets() {
        let mut native = ExpHistogram::new(6, 1000);
        for v in [0.0, 0.25, 0.5, 0.5, 3.0] {
            native.record(v);
        }
        let mut e = Exposition {
            text: "# HELP cfn_m Distribution of m\n# TYPE cfn_m summary\ncfn_m{quantile=\"0.5\"} 2\ncfn_m_sum 10\ncfn_m_count 4\n\
                   # HELP cfn_m_hist_seconds Values of m\n# TYPE cfn_m_hist_seconds histogram\n\
                   cfn_m_hist_seconds_bucket{agent=\"a \\\"1\\\"\",le=\"1\"} 4\ncfn_m_hist_seconds_bucket{agent=\"a \\\"1\\\"\",le=\"+Inf\"} 5\n\
                   cfn_m_hist_seconds_sum{agent=\"a \\\"1\\\"\"} 4.25\ncfn_m_hist_seconds_count{agent=\"a \\\"1\\\"\"} 5\n"
                .into(),
            ..Default::default()
        };
        e.natives.insert(
            ("cfn_m_hist_seconds".into(), "agent=\"a \\\"1\\\"\"".into()),
            &native,
        );
        let bytes = encode(&e);
        let mut rest = &bytes[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            got.push(MetricFamily::decode_length_delimited(&mut rest).unwrap());
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].r#type, MetricType::Summary as i32);
        let s = got[0].metric[0].summary.as_ref().unwrap();
        assert_eq!(
            (s.sample_count, s.sample_sum, s.quantile.len()),
            (4, 10.0, 1)
        );
        let m = &got[1].metric[0];
        assert_eq!(m.label[0].value, "a \"1\"");
        let h = m.histogram.as_ref().unwrap();
        assert_eq!(
            (h.sample_count, h.bucket.len(), h.schema, h.zero_count),
            (5, 2, 6, 1)
        );
        assert_eq!(h.bucket[1].upper_bound, f64::INFINITY);
        // 0.25 and 0.5 are powers of two (indices -128 and -64), 3.0 is in bucket 102.
        let mut counts = Vec::new();
        let mut index = 0;
        let mut c = 0;
        let mut d = h.positive_delta.iter();
        for (k, span) in h.positive_span.iter().enumerate() {
            index += span.offset;
            for _ in 0..span.length {
                c += d.next().unwrap();
                counts.push((index, c));
                index += 1;
            }
            let _ = k;
        }
        let held: Vec<(i32, i64)> = counts.into_iter().filter(|(_, c)| *c > 0).collect();
        assert_eq!(held, [(-128, 1), (-64, 2), (102, 1)]);
    }
}
