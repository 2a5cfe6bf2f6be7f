//! OTLP/HTTP metrics export: each aggregate as an ExponentialHistogram data point (delta
//! temporality over the window, built from its mergeable state: exact states give exact
//! bucket counts, so a backend adds hosts up bucket by bucket) and/or a Summary data point
//! (count, sum, quantiles, min and max as quantiles 0 and 1), in protobuf (the official
//! OpenTelemetry messages from `opentelemetry-proto`) or JSON, configured as every
//! OpenTelemetry exporter is (`OTEL_EXPORTER_OTLP_*`).

use crate::Shape;
use cfn_core::aggregate::Aggregate;
use cfn_core::exit::{Exit, fail};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint, exponential_histogram_data_point,
    metric, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::BTreeMap;

/// Which OTLP point types each aggregate becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Points {
    Histogram,
    Summary,
    Both,
}

/// The point types and the exponential histograms' resolution.
#[derive(Clone, Copy, Debug)]
pub struct PointOptions {
    pub points: Points,
    pub scale: i32,
    pub max_buckets: usize,
}

impl PointOptions {
    /// Checks the scale and bucket limit.
    ///
    /// # Errors
    /// Exit 2 naming a scale outside -4..=8 or a bucket limit of 0.
    pub fn new(points: Points, scale: i32, max_buckets: usize) -> anyhow::Result<Self> {
        cfn_stats::exponential::check_limits(
            ("--otlp-scale", scale),
            ("--otlp-max-buckets", max_buckets),
        )?;
        Ok(Self {
            points,
            scale,
            max_buckets,
        })
    }
}

/// The exponential histogram of an aggregate's state (`cfn-agg --with-digest`): exact for
/// values and tables; a digest's centroids are counted at their means, their weights
/// rounded so the counts still add up to the count. `None` without a state, or with one
/// whose weight is not the aggregate's count (as `cfn-agg --merge` refuses it).
pub fn exponential_of(
    a: &Aggregate,
    opts: &PointOptions,
) -> Option<cfn_stats::exponential::ExpHistogram> {
    let (state, _) = cfn_stats::stats::MergeState::parse(a.state.as_ref()?).ok()?;
    if state.weight() != a.count {
        return None;
    }
    let mut h = cfn_stats::exponential::ExpHistogram::new(opts.scale, opts.max_buckets);
    match state {
        cfn_stats::stats::MergeState::Values(vs) => vs.iter().for_each(|v| h.record(*v)),
        cfn_stats::stats::MergeState::Table(t) => t.iter().for_each(|(v, c)| h.record_n(*v, *c)),
        cfn_stats::stats::MergeState::Centroids(cs) => {
            let mut weight = 0.0;
            let mut counted = 0u64;
            for [mean, w] in cs {
                weight += w;
                let upto = weight.round() as u64;
                h.record_n(mean, upto.saturating_sub(counted));
                counted = counted.max(upto);
            }
        }
    }
    Some(h)
}

fn otlp_buckets(
    b: &cfn_stats::exponential::Buckets,
) -> Option<exponential_histogram_data_point::Buckets> {
    // OTLP numbers the bucket (base^i, base^(i+1)] as i; Prometheus (and ExpHistogram) as i+1.
    (!b.counts.is_empty()).then(|| exponential_histogram_data_point::Buckets {
        offset: b.offset - 1,
        bucket_counts: b.counts.clone(),
    })
}

/// The OTLP/HTTP encodings (`--otlp-protocol`, parsed by clap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    #[value(name = "http/protobuf", alias = "protobuf")]
    Protobuf,
    #[value(name = "http/json", alias = "json")]
    Json,
}

impl Protocol {
    /// The protocol named by `--otlp-protocol` or the environment
    /// (`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`).
    ///
    /// # Errors
    /// Exit 78 for gRPC or anything else unknown.
    pub fn resolve(
        flag: Option<Protocol>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let (text, from) = match flag {
            Some(p) => return Ok(p),
            None => match [
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ]
            .iter()
            .find_map(|k| env(k).map(|v| (v, k.to_string())))
            {
                Some(found) => found,
                None => return Ok(Self::Protobuf),
            },
        };
        match text.trim() {
            "http/protobuf" | "protobuf" => Ok(Self::Protobuf),
            "http/json" | "json" => Ok(Self::Json),
            other => Err(fail(
                Exit::Config,
                format!(
                    "{from} {other:?}: cfn-push speaks OTLP over HTTP (http/protobuf or http/json), not gRPC; point it at the collector's HTTP port (4318)"
                ),
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// OTLP receivers take 4 MiB by default (the Collector's HTTP receiver); stay well under.
pub const OTLP_MAX: usize = 1000 * 1000;

/// An OTLP/HTTP receiver, configured as every OpenTelemetry exporter is.
pub struct Otlp {
    url: String,
    headers: Vec<(String, String)>,
    protocol: Protocol,
    service: String,
    points: PointOptions,
}

impl Otlp {
    /// The receiver from `--endpoint` and the `OTEL_EXPORTER_OTLP_*` variables in `env`.
    ///
    /// # Errors
    /// Exit 78 for a bad protocol, header list or point option.
    pub fn new(cli: &crate::Cli, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            protocol: Protocol::resolve(cli.otlp_protocol, env)?,
            url: endpoint(cli.endpoint.as_deref(), env),
            headers: headers(env)?,
            service: cli
                .service_name
                .clone()
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| "cfn-metrics".into()),
            points: PointOptions::new(cli.otlp_points, cli.otlp_scale, cli.otlp_max_buckets)?,
        })
    }
}

impl crate::destination::Destination for Otlp {
    fn url(&self) -> &str {
        &self.url
    }

    fn shown_url(&self) -> String {
        cfn_net::http::redact_url(&self.url)
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }

    fn content_type(&self) -> &'static str {
        self.protocol.content_type()
    }

    fn max_payload(&self) -> usize {
        OTLP_MAX
    }

    fn payloads(
        &self,
        aggs: &[Aggregate],
        shape: &Shape,
        max: usize,
        skipped: &mut crate::Skipped,
    ) -> Vec<Vec<u8>> {
        payloads(
            aggs,
            shape,
            &self.service,
            &self.points,
            self.protocol,
            max,
            skipped,
        )
    }

    fn partial_rejection(&self, body: &[u8]) -> Option<(i64, String)> {
        partial_success(body, self.protocol)
    }

    fn rejection_message(&self, raw: &[u8], text: &str) -> String {
        rejection_message(raw, text)
    }

    fn dry_run_line(&self, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match self.protocol {
            // Binary: shown as the JSON form of the same request.
            Protocol::Protobuf => {
                serde_json::to_vec(&ExportMetricsServiceRequest::decode(payload)?)?
            }
            Protocol::Json => payload.to_vec(),
        })
    }
}

/// Where to send: `--endpoint` (a base URL), else `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (the
/// full URL), else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL), else localhost:4318; base
/// URLs get `/v1/metrics` appended to their path.
pub fn endpoint(flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> String {
    let base = |b: &str| format!("{}/v1/metrics", b.trim().trim_end_matches('/'));
    if let Some(f) = flag {
        return base(f);
    }
    if let Some(full) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        return full.trim().to_string();
    }
    env("OTEL_EXPORTER_OTLP_ENDPOINT").map_or_else(|| base("http://localhost:4318"), |b| base(&b))
}

/// Headers from `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_METRICS_HEADERS` (the
/// latter wins for a key): `key=value` pairs separated by commas, values percent-decoded.
///
/// # Errors
/// Exit 78 naming the variable and the pair (not its value: it is usually a secret).
pub fn headers(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ] {
        let Some(text) = env(var) else { continue };
        for (i, pair) in text
            .split(',')
            .enumerate()
            .filter(|(_, p)| !p.trim().is_empty())
        {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                fail(
                    Exit::Config,
                    format!(
                        "{var}: pair {} has no '=' (expected key=value,key2=value2)",
                        i + 1
                    ),
                )
            })?;
            let k = cfn_net::redact::percent_decoded(k.trim());
            let v = cfn_net::redact::percent_decoded(v.trim());
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(fail(
                    Exit::Config,
                    format!("{var}: pair {} has no valid header name", i + 1),
                ));
            }
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err(fail(
                    Exit::Config,
                    format!("{var}: the value of {k} holds a control character"),
                ));
            }
            out.insert(k.to_ascii_lowercase(), (k, v));
        }
    }
    Ok(out.into_values().collect())
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// One metric's points of each kind.
#[derive(Default)]
struct Pending {
    unit: Option<String>,
    summaries: Vec<SummaryDataPoint>,
    histograms: Vec<ExponentialHistogramDataPoint>,
}

fn summary_point(
    a: &Aggregate,
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
) -> SummaryDataPoint {
    let mut quantile_values = vec![ValueAtQuantile {
        quantile: 0.0,
        value: a.min,
    }];
    quantile_values.extend(a.quantiles.iter().map(|&(q, v)| ValueAtQuantile {
        quantile: q,
        value: v,
    }));
    quantile_values.push(ValueAtQuantile {
        quantile: 1.0,
        value: a.max,
    });
    SummaryDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: a.count,
        sum: a.sum,
        quantile_values,
        flags: 0,
    }
}

fn histogram_point(
    a: &Aggregate,
    h: &cfn_stats::exponential::ExpHistogram,
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: h.count,
        sum: Some(a.sum),
        scale: h.schema,
        zero_count: h.zero_count,
        positive: otlp_buckets(&h.positive),
        negative: otlp_buckets(&h.negative),
        flags: 0,
        exemplars: Vec::new(),
        min: Some(a.min),
        max: Some(a.max),
        zero_threshold: 0.0,
    }
}

/// The data points of the aggregates, per metric name, in order; non-finite ones are left
/// out and counted, and so are (as summaries instead) histograms asked of aggregates
/// without a state.
fn metrics(
    aggs: &[Aggregate],
    shape: &Shape,
    opts: &PointOptions,
    skipped: &mut crate::Skipped,
) -> Vec<Metric> {
    // By name and unit: a metric in several units is a metric per unit (each with its own
    // `unit`), never one holding values of another unit (contract section 1).
    let mut by_name: BTreeMap<(String, Option<String>), Pending> = BTreeMap::new();
    let window_ns = shape.interval.as_nanos() as u64;
    for a in aggs {
        if ![a.sum, a.min, a.max].iter().all(|v| v.is_finite())
            || a.quantiles.iter().any(|(_, v)| !v.is_finite())
        {
            skipped.non_finite += 1;
            continue;
        }
        let end_ms = crate::agg_time_ms(a, shape.now_ms);
        // A bucket's point covers its bucket; others the --window up to their time.
        let time_ns = (end_ms.max(0) as u64) * 1_000_000;
        let start_ns = time_ns.saturating_sub(window_ns);
        let mut attributes: Vec<KeyValue> = a.labels().iter().map(|(k, v)| attr(k, v)).collect();
        attributes.extend(shape.tags.iter().map(|(k, v)| attr(k, v)));
        let entry = by_name
            .entry((format!("{}.{}", shape.prefix, a.metric), a.unit.clone()))
            .or_default();
        entry.unit = a.unit.clone();
        let histogram = match opts.points {
            Points::Summary => None,
            _ => exponential_of(a, opts),
        };
        if opts.points != Points::Summary && histogram.is_none() {
            if a.state.is_some() {
                // A state that does not add up to the count is refused as --merge does.
                skipped
                    .bad_state
                    .push(format!("{}{:?}", a.metric, a.labels()));
            } else {
                skipped.no_state += 1;
            }
        }
        if let Some(h) = &histogram {
            entry
                .histograms
                .push(histogram_point(a, h, attributes.clone(), start_ns, time_ns));
        }
        if opts.points != Points::Histogram || histogram.is_none() {
            entry
                .summaries
                .push(summary_point(a, attributes, start_ns, time_ns));
        }
    }
    by_name
        .into_iter()
        .flat_map(|((name, _), p)| p.into_metrics(name))
        .collect()
}

impl Pending {
    /// The metric `name`'s histogram and summary metrics (the summaries named
    /// `NAME.summary` when there are both: one name, one type).
    fn into_metrics(self, name: String) -> Vec<Metric> {
        let unit = self
            .unit
            .as_deref()
            .map(cfn_core::units::ucum)
            .unwrap_or_default();
        let both = !self.histograms.is_empty() && !self.summaries.is_empty();
        let metric = |name: String, data| Metric {
            name,
            description: String::new(),
            unit: unit.clone(),
            metadata: Vec::new(),
            data: Some(data),
        };
        let mut out = Vec::new();
        if !self.histograms.is_empty() {
            out.push(metric(
                name.clone(),
                metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: self.histograms,
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            ));
        }
        if !self.summaries.is_empty() {
            let name = if both {
                format!("{name}.summary")
            } else {
                name
            };
            out.push(metric(
                name,
                metric::Data::Summary(Summary {
                    data_points: self.summaries,
                }),
            ));
        }
        out
    }
}

/// `m` as metrics of one data point each (so a request can be cut between any two).
fn single_points(m: Metric) -> Vec<Metric> {
    let with = |data| Metric {
        data: Some(data),
        ..m.clone()
    };
    match &m.data {
        Some(metric::Data::Summary(s)) => s
            .data_points
            .iter()
            .map(|p| {
                with(metric::Data::Summary(Summary {
                    data_points: vec![p.clone()],
                }))
            })
            .collect(),
        Some(metric::Data::ExponentialHistogram(h)) => h
            .data_points
            .iter()
            .map(|p| {
                with(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![p.clone()],
                    aggregation_temporality: h.aggregation_temporality,
                }))
            })
            .collect(),
        _ => vec![m],
    }
}

/// Adds `m`'s point to `last` when both are the same metric; gives `m` back otherwise.
fn absorb(last: &mut Metric, m: Metric) -> Option<Metric> {
    // A metric is its name and its unit: one in another unit is another metric.
    if last.name != m.name || last.unit != m.unit {
        return Some(m);
    }
    match (&mut last.data, m.data) {
        (Some(metric::Data::Summary(a)), Some(metric::Data::Summary(b))) => {
            a.data_points.extend(b.data_points);
            None
        }
        (
            Some(metric::Data::ExponentialHistogram(a)),
            Some(metric::Data::ExponentialHistogram(b)),
        ) => {
            a.data_points.extend(b.data_points);
            None
        }
        (_, data) => Some(Metric { data, ..m }),
    }
}

fn request(shape: &Shape, service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    attr("host.name", &shape.host),
                    attr("service.name", service),
                ],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "cfn-metrics".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn encode(req: &ExportMetricsServiceRequest, protocol: Protocol) -> Vec<u8> {
    match protocol {
        Protocol::Protobuf => req.encode_to_vec(),
        Protocol::Json => serde_json::to_vec(req).unwrap_or_default(),
    }
}

/// The request bodies for the aggregates, each at most about `max` bytes: metrics are split
/// by data points when one request would be bigger.
pub fn payloads(
    aggs: &[Aggregate],
    shape: &Shape,
    service: &str,
    points: &PointOptions,
    protocol: Protocol,
    max: usize,
    skipped: &mut crate::Skipped,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch: Vec<Metric> = Vec::new();
    let mut size = 0;
    for m in metrics(aggs, shape, points, skipped)
        .into_iter()
        .flat_map(single_points)
    {
        let n = m.encoded_len() * if protocol == Protocol::Json { 4 } else { 1 } + 16;
        if size + n > max && !batch.is_empty() {
            out.push(encode(
                &request(shape, service, std::mem::take(&mut batch)),
                protocol,
            ));
            size = 0;
        }
        size += n;
        let rest = match batch.last_mut() {
            Some(last) => absorb(last, m),
            None => Some(m),
        };
        if let Some(m) = rest {
            batch.push(m);
        }
    }
    if !batch.is_empty() {
        out.push(encode(&request(shape, service, batch), protocol));
    }
    out
}

/// What a receiver's reply to an accepted request says when it took only part of it.
pub fn partial_success(body: &[u8], protocol: Protocol) -> Option<(i64, String)> {
    let resp: ExportMetricsServiceResponse = match protocol {
        Protocol::Protobuf => ExportMetricsServiceResponse::decode(body).ok()?,
        Protocol::Json => serde_json::from_slice(body).ok()?,
    };
    let p = resp.partial_success?;
    (p.rejected_data_points > 0 || !p.error_message.is_empty())
        .then_some((p.rejected_data_points, p.error_message))
}

/// `google.rpc.Status`, what an OTLP receiver sends with a 4xx (only the fields shown).
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The message of a rejection: the Status's message when the body is one, else the text.
pub fn rejection_message(raw: &[u8], text: &str) -> String {
    match RpcStatus::decode(raw) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => text.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn endpoints_follow_the_otel_variables() {
        let none = env_of(&[]);
        assert_eq!(endpoint(None, &none), "http://localhost:4318/v1/metrics");
        let base = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/otlp/")]);
        assert_eq!(endpoint(None, &base), "http://c:4318/otlp/v1/metrics");
        let both = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/custom"),
        ]);
        assert_eq!(endpoint(None, &both), "http://m:9/custom");
        assert_eq!(endpoint(Some("http://x:1"), &both), "http://x:1/v1/metrics");
    }

    #[test]
    fn headers_are_decoded_and_bad_ones_named_without_their_value() {
        let env = env_of(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=se%3Dcret, x-team = a b",
            ),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "X-Team=metrics"),
        ]);
        assert_eq!(
            headers(&env).unwrap(),
            vec![
                ("api-key".to_string(), "se=cret".to_string()),
                ("X-Team".to_string(), "metrics".to_string())
            ]
        );
        let bad = env_of(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key:topsecret")]);
        let e = format!("{:#}", headers(&bad).unwrap_err());
        assert!(e.contains("pair 1") && !e.contains("topsecret"), "{e}");
        let grpc = env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        let e = Protocol::resolve(None, &grpc).unwrap_err();
        assert_eq!(cfn_core::exit::exit_for(&e), Exit::Config);
        assert_eq!(
            Protocol::resolve(Some(Protocol::Json), &grpc).unwrap(),
            Protocol::Json
        );
    }
}
