//! `cfn-push`: aggregates (contract section 4) to Datadog's metrics API v2 or New Relic's
//! Metric API, split under each API's size limit, gzip-compressed, with bounded retries.
//!
//! This crate owns the two payload formats and batching; HTTP retries are `cfn-core`'s.

use cfn_core::aggregate::{Aggregate, quantile_key, read_aggregates};
use cfn_core::exit::{Exit, fail};
use cfn_core::reader::MalformedLog;
use cfn_core::time::{now_ms, parse_timestamp_str};
use cfn_net::http::{Delivery, Request, RetryPolicy, post_with_retries, redact_url};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub mod otlp;

const EXAMPLES: &str = "\
KEYS:
  Datadog: DD_API_KEY or --api-key-file; site from DD_SITE (default datadoghq.com).
  New Relic: NEW_RELIC_API_KEY or --api-key-file; --region us|eu (or NEW_RELIC_REGION).
  A key is never accepted on the command line (it would show in ps) and never printed.
  OTLP: no key of its own; headers (an API key for a SaaS receiver) from
  OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_METRICS_HEADERS (key=value,key2=value2,
  values percent-encoded), never printed. Endpoint: --endpoint or OTEL_EXPORTER_OTLP_ENDPOINT
  (base URL, /v1/metrics appended), OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (full URL), default
  http://localhost:4318/v1/metrics.

WHAT IS SENT:
  Datadog (POST /api/v2/series): per aggregate, gauges <prefix>.<metric>.avg, .min, .max,
  .sum and one per quantile (.p50, .p95, .p99), and <prefix>.<metric>.count as a count with
  the --window; tags key:value from the group keys plus --tag; the host as a resource.
  New Relic (POST /metric/v1): per aggregate a summary (count, sum, min, max) and a gauge per
  quantile, attributes from the group keys plus --tag.
  OTLP (POST /v1/metrics, protobuf or JSON): per aggregate a Summary data point (count, sum,
  the quantiles, min and max as quantiles 0 and 1) of metric <prefix>.<metric> with its unit,
  the group keys and --tag as attributes; host.name and service.name on the resource.
  A 400 from the receiver is exit 65 with its message; a partial success is reported.
  Timestamps are the aggregate's bucket_start, else its last record, else now. Non-finite
  values are left out and counted. Payloads stay under 500 KB (Datadog) or 1 MB (New Relic)
  before compression and are sent gzip-compressed.

EXAMPLES:
  cfn-cat --since 5m | cfn-agg | cfn-push datadog --window 5m
  cfn-cat --since 1m | cfn-agg --by agent | cfn-push newrelic --region eu --tag env=prod
  cfn-agg day.jsonl | cfn-push datadog --dry-run | jq .
  cfn-cat --since 1m | cfn-agg | OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 cfn-push otlp
";

/// The destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Vendor {
    Datadog,
    Newrelic,
    /// OTLP/HTTP to an OpenTelemetry Collector or any OTLP receiver.
    Otlp,
}

/// New Relic's data region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Region {
    Us,
    Eu,
}

/// Send aggregates to Datadog, New Relic or an OTLP receiver.
///
/// Reads aggregate lines (from cfn-agg) on stdin and posts them in the destination's current
/// metric API format (OTLP/HTTP: exponential histograms from `--with-digest` states, or
/// summaries). Exit 0 when everything was accepted, 75 when a batch could not be delivered
/// after retries, 65 for data a receiver refused, 78 for a missing key or a redirect.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-push",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// Where to send.
    #[arg(value_enum)]
    pub vendor: Vendor,

    /// Read the API key from FILE (else DD_API_KEY / NEW_RELIC_API_KEY).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Replace the API's scheme, host and port (the path stays), e.g. http://127.0.0.1:8080;
    /// for otlp the base URL that /v1/metrics is appended to.
    #[arg(long, value_name = "BASE_URL")]
    pub endpoint: Option<String>,

    /// OTLP encoding: http/protobuf (default) or http/json (else
    /// $OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<otlp::Protocol>,

    /// OTLP resource attribute service.name (default $OTEL_SERVICE_NAME, else cfn-metrics).
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,

    /// OTLP point types: exponential histograms (which a backend adds up across hosts;
    /// built from cfn-agg --with-digest states), summaries, or both (the summaries then
    /// named METRIC.summary). Aggregates without a state are sent as summaries.
    #[arg(long, value_enum, default_value_t = otlp::Points::Histogram)]
    pub otlp_points: otlp::Points,

    /// The exponential histograms' scale (Prometheus' schema): bucket bounds grow by
    /// 2^(2^-N), -4 to 8; 6 gives buckets 1.09% wide.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 6,
        allow_negative_numbers = true
    )]
    pub otlp_scale: i32,

    /// Most buckets of each sign per exponential histogram; past it the scale drops (counts
    /// are never lost).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub otlp_max_buckets: usize,

    /// New Relic region (default $NEW_RELIC_REGION, else us).
    #[arg(long, value_enum)]
    pub region: Option<Region>,

    /// Metric name prefix.
    #[arg(long, default_value = "cfn")]
    pub prefix: String,

    /// Extra tag on every series; repeatable (KEY:VALUE is read too).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,

    /// The window the aggregates cover (cfn-agg --window), sent as the interval of counts.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        alias = "interval",
        value_parser = cfn_core::cli::duration_arg
    )]
    pub window: std::time::Duration,

    /// Print the payloads that would be sent (without keys) instead of sending.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub http: cfn_core::cli::HttpFlags,

    /// Largest payload before compression, in bytes (default: the vendor's limit).
    #[arg(long, value_name = "BYTES", hide = true)]
    pub max_payload: Option<usize>,

    #[command(flatten)]
    pub strict: cfn_core::cli::StrictFlag,
}

/// Payload limits before compression.
pub const DATADOG_MAX: usize = 500 * 1000;
pub const NEWRELIC_MAX: usize = 1000 * 1000;
/// OTLP receivers take 4 MiB by default (the Collector's HTTP receiver); stay well under.
pub const OTLP_MAX: usize = 1000 * 1000;

/// Settings for building payloads.
#[derive(Clone, Debug)]
pub struct Shape {
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    pub interval: Duration,
    pub host: String,
    pub now_ms: i64,
}

/// Counts of what could not be sent as is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub non_finite: u64,
    /// Aggregates an exponential histogram was asked of that had no state.
    pub no_state: u64,
}

/// A Datadog metric name: ASCII alphanumerics, `_` and `.`, starting with a letter, at most
/// 200 characters.
pub fn datadog_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "m_");
    }
    out.truncate(200);
    out
}

/// A Datadog tag `key:value`, characters outside `[A-Za-z0-9_.:/-]` replaced by `_`.
pub fn datadog_tag(k: &str, v: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-.:/".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut t = format!("{}:{}", clean(k), clean(v));
    t.truncate(200);
    t
}

/// A New Relic name or attribute key: no control characters, at most 255 characters.
pub fn newrelic_name(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    if out.len() > 255 {
        out.truncate(out.floor_char_boundary(255));
    }
    out
}

pub(crate) fn agg_time_ms(a: &Aggregate, now: i64) -> i64 {
    a.bucket_start
        .as_deref()
        .or(a.last.as_deref())
        .and_then(parse_timestamp_str)
        .unwrap_or(now)
}

fn stats(a: &Aggregate) -> Vec<(String, f64)> {
    let mut v = vec![
        ("avg".to_string(), a.avg),
        ("min".to_string(), a.min),
        ("max".to_string(), a.max),
        ("sum".to_string(), a.sum),
    ];
    v.extend(a.quantiles.iter().map(|(q, x)| (quantile_key(*q), *x)));
    v
}

/// Datadog series for the aggregates.
pub fn datadog_series(aggs: &[Aggregate], shape: &Shape, skipped: &mut Skipped) -> Vec<Value> {
    let mut out = Vec::new();
    for a in aggs {
        let ts = agg_time_ms(a, shape.now_ms) / 1000;
        let base = datadog_name(&format!("{}.{}", shape.prefix, a.metric));
        let mut tags: Vec<String> = a.labels().iter().map(|(k, v)| datadog_tag(k, v)).collect();
        tags.extend(shape.tags.iter().map(|(k, v)| datadog_tag(k, v)));
        let resources = json!([{ "name": shape.host, "type": "host" }]);
        let mut series = |name: String, kind: u8, value: f64, interval: Option<u64>| {
            if !value.is_finite() {
                skipped.non_finite += 1;
                return;
            }
            let mut s = json!({
                "metric": name,
                "type": kind,
                "points": [{ "timestamp": ts, "value": value }],
                "tags": tags,
                "resources": resources,
            });
            if let Some(i) = interval {
                s["interval"] = json!(i);
            }
            if let Some(u) = &a.unit {
                s["unit"] = json!(u);
            }
            out.push(s);
        };
        series(
            format!("{base}.count"),
            1,
            a.count as f64,
            Some(shape.interval.as_secs().max(1)),
        );
        for (stat, v) in stats(a) {
            series(datadog_name(&format!("{base}.{stat}")), 3, v, None);
        }
    }
    out
}

/// New Relic metrics for the aggregates.
pub fn newrelic_metrics(aggs: &[Aggregate], shape: &Shape, skipped: &mut Skipped) -> Vec<Value> {
    let mut out = Vec::new();
    for a in aggs {
        let ts = agg_time_ms(a, shape.now_ms);
        let name = newrelic_name(&format!("{}.{}", shape.prefix, a.metric));
        let mut attrs = serde_json::Map::new();
        for (k, v) in a.labels() {
            attrs.insert(newrelic_name(&k), json!(v));
        }
        if let Some(u) = &a.unit {
            attrs.insert("unit".into(), json!(u));
        }
        let interval_ms = shape.interval.as_millis() as u64;
        if [a.sum, a.min, a.max].iter().all(|v| v.is_finite()) {
            out.push(json!({
                "name": name,
                "type": "summary",
                "value": { "count": a.count, "sum": a.sum, "min": a.min, "max": a.max },
                "timestamp": ts,
                "interval.ms": interval_ms,
                "attributes": attrs,
            }));
        } else {
            skipped.non_finite += 1;
        }
        for (q, v) in &a.quantiles {
            if !v.is_finite() {
                skipped.non_finite += 1;
                continue;
            }
            out.push(json!({
                "name": newrelic_name(&format!("{name}.{}", quantile_key(*q))),
                "type": "gauge",
                "value": v,
                "timestamp": ts,
                "attributes": attrs,
            }));
        }
    }
    out
}

/// Splits items into payloads whose serialized size stays under `max` bytes; `wrap` builds a
/// payload from a batch. An item too large for any payload is sent alone.
pub fn split_payloads(
    items: Vec<Value>,
    max: usize,
    wrap: impl Fn(Vec<Value>) -> Value,
) -> Vec<Vec<u8>> {
    let overhead = serde_json::to_vec(&wrap(Vec::new()))
        .map(|v| v.len())
        .unwrap_or(64);
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut size = overhead;
    for item in items {
        let n = serde_json::to_vec(&item).map(|v| v.len()).unwrap_or(0) + 1;
        if !batch.is_empty() && size + n > max {
            out.push(serde_json::to_vec(&wrap(std::mem::take(&mut batch))).unwrap_or_default());
            size = overhead;
        }
        size += n;
        batch.push(item);
    }
    if !batch.is_empty() {
        out.push(serde_json::to_vec(&wrap(batch)).unwrap_or_default());
    }
    out
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes)?;
    e.finish()
}

fn read_key(file: Option<&std::path::Path>, env: &str) -> anyhow::Result<String> {
    cfn_net::http::read_secret(file, env, "API key")?.ok_or_else(|| {
        fail(
            Exit::Config,
            format!("no API key: set {env} or use --api-key-file FILE"),
        )
    })
}

/// Where and how a vendor's API is reached.
#[derive(Clone, Debug)]
pub struct VendorApi {
    /// The environment variable holding the API key.
    pub key_env: &'static str,
    /// The header that carries the key.
    pub key_header: &'static str,
    /// Scheme, host and port (replaced by --endpoint).
    pub base: String,
    pub path: &'static str,
    /// Largest payload before compression.
    pub max_payload: usize,
}

impl VendorApi {
    /// The API of `vendor`, with its region or site from the flags and environment.
    pub fn of(vendor: Vendor, region: Option<Region>) -> Self {
        match vendor {
            Vendor::Datadog => {
                let site = std::env::var("DD_SITE")
                    .ok()
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| "datadoghq.com".into());
                Self {
                    key_env: "DD_API_KEY",
                    key_header: "DD-API-KEY",
                    base: format!("https://api.{}", site.trim()),
                    path: "/api/v2/series",
                    max_payload: DATADOG_MAX,
                }
            }
            Vendor::Otlp => Self {
                key_env: "",
                key_header: "",
                base: String::new(),
                path: "/v1/metrics",
                max_payload: OTLP_MAX,
            },
            Vendor::Newrelic => {
                let eu = region.map_or_else(
                    || {
                        std::env::var("NEW_RELIC_REGION")
                            .is_ok_and(|r| r.eq_ignore_ascii_case("eu"))
                    },
                    |r| r == Region::Eu,
                );
                Self {
                    key_env: "NEW_RELIC_API_KEY",
                    key_header: "Api-Key",
                    base: if eu {
                        "https://metric-api.eu.newrelic.com".into()
                    } else {
                        "https://metric-api.newrelic.com".into()
                    },
                    path: "/metric/v1",
                    max_payload: NEWRELIC_MAX,
                }
            }
        }
    }
}

/// The payloads for `vendor`, each at most `max` bytes before compression.
fn build_payloads(
    vendor: Vendor,
    aggs: &[cfn_core::aggregate::Aggregate],
    shape: &Shape,
    max: usize,
    skipped: &mut Skipped,
) -> Vec<Vec<u8>> {
    match vendor {
        // Built by run(), which knows the protocol and service.
        Vendor::Otlp => Vec::new(),
        Vendor::Datadog => split_payloads(
            datadog_series(aggs, shape, skipped),
            max,
            |b| json!({ "series": b }),
        ),
        Vendor::Newrelic => {
            let mut attributes = serde_json::Map::new();
            attributes.insert("host".into(), json!(shape.host));
            attributes.insert("source".into(), json!("cfn-metrics"));
            for (k, v) in &shape.tags {
                attributes.insert(newrelic_name(k), json!(v));
            }
            let common = json!({
                "interval.ms": shape.interval.as_millis() as u64,
                "timestamp": shape.now_ms,
                "attributes": attributes,
            });
            split_payloads(
                newrelic_metrics(aggs, shape, skipped),
                max,
                |b| json!([{ "common": common, "metrics": b }]),
            )
        }
    }
}

/// How payloads are sent: where, with which headers (they may hold secrets: their values
/// never appear in messages), as what.
struct Target<'a> {
    url: &'a str,
    headers: Vec<(String, String)>,
    content_type: &'static str,
    /// OTLP replies carry a partial success or a protobuf Status.
    otlp: Option<otlp::Protocol>,
    /// Every header value (and a short one with its name, as a receiver may echo it), kept
    /// out of messages.
    secrets: cfn_net::redact::Secrets,
}

impl<'a> Target<'a> {
    fn new(
        url: &'a str,
        headers: Vec<(String, String)>,
        content_type: &'static str,
        otlp: Option<otlp::Protocol>,
    ) -> Self {
        let mut secrets = cfn_net::redact::url_secrets_of(url, false);
        for (k, v) in &headers {
            secrets.add(v);
            // A value too short to be hidden alone is hidden with its name, as given in
            // OTEL_EXPORTER_OTLP_HEADERS or as sent.
            if v.len() < cfn_net::redact::MIN_RUN {
                secrets.add(&format!("{k}={v}"));
                secrets.add(&format!("{k}: {v}"));
                secrets.add(&format!("{k}:{v}"));
            }
        }
        Self {
            url,
            headers,
            content_type,
            otlp,
            secrets,
        }
    }

    fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }
}

/// Sends each payload (gzipped) with retries; returns how many were accepted and the exit
/// status the failures call for (the first rejection's, or 75 when one was not delivered).
fn send_payloads(
    payloads: &[Vec<u8>],
    target: &Target<'_>,
    policy: &RetryPolicy,
) -> anyhow::Result<(usize, Exit)> {
    let mut worst = Exit::Ok;
    let mut sent = 0;
    let url = target.url;
    for (i, p) in payloads.iter().enumerate() {
        let body = gzip(p)?;
        let mut headers: Vec<(&str, String)> = target
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        headers.push(("Content-Type", target.content_type.into()));
        headers.push(("Content-Encoding", "gzip".into()));
        let req = Request {
            url,
            headers,
            body: &body,
            secrets: &target.secrets,
        };
        let batch = format!("batch {} of {}", i + 1, payloads.len());
        match post_with_retries(&req, policy) {
            Delivery::Accepted { body, .. } => {
                sent += 1;
                if let Some(proto) = target.otlp
                    && let Some((rejected, msg)) = otlp::partial_success(&body, proto)
                {
                    cfn_core::cli::warn(
                        "cfn-push",
                        format!(
                            "{} took {batch} in part: {rejected} data points rejected: {}",
                            redact_url(url),
                            target.redact(&msg)
                        ),
                    );
                    if rejected > 0 && worst == Exit::Ok {
                        worst = Exit::DataErr;
                    }
                }
            }
            Delivery::Rejected { status, body, raw } => {
                let msg = match target.otlp {
                    Some(_) => otlp::rejection_message(&raw, &body),
                    None => body.trim().to_string(),
                };
                cfn_core::cli::warn(
                    "cfn-push",
                    format!(
                        "{} rejected {batch} with HTTP {status}: {}",
                        redact_url(url),
                        target.redact(&msg)
                    ),
                );
                // A redirect means the endpoint is configured wrong: it is never followed.
                let exit = Exit::for_http_status(status);
                if worst == Exit::Ok {
                    worst = exit;
                }
            }
            Delivery::GaveUp { attempts, last } => {
                cfn_core::cli::warn(
                    "cfn-push",
                    format!(
                        "{batch} was not delivered to {} after {attempts} attempts: {}",
                        redact_url(url),
                        target.redact(&last)
                    ),
                );
                worst = Exit::TempFail;
            }
        }
    }
    Ok((sent, worst))
}

/// Runs `cfn-push`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli, input: impl std::io::BufRead, mut out: impl Write) -> anyhow::Result<Exit> {
    let api = VendorApi::of(cli.vendor, cli.region);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let otlp_protocol = match cli.vendor {
        Vendor::Otlp => Some(otlp::Protocol::resolve(cli.otlp_protocol, &env)?),
        _ => None,
    };
    let (url, headers) = match cli.vendor {
        Vendor::Otlp => (
            otlp::endpoint(cli.endpoint.as_deref(), &env),
            otlp::headers(&env)?,
        ),
        _ => {
            let base = cli.endpoint.clone().unwrap_or_else(|| api.base.clone());
            let key = if cli.dry_run {
                Vec::new()
            } else {
                vec![(
                    api.key_header.to_string(),
                    read_key(cli.api_key_file.as_deref(), api.key_env)?,
                )]
            };
            (format!("{}{}", base.trim_end_matches('/'), api.path), key)
        }
    };
    let tags = cli
        .tags
        .iter()
        .map(|t| cfn_core::record::parse_tag_kv(t).map_err(|e| fail(Exit::Usage, e.to_string())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shape = Shape {
        prefix: cli.prefix.clone(),
        tags,
        interval: cli.window,
        host: cfn_core::paths::host_identity()?,
        now_ms: now_ms(),
    };
    let mut log = MalformedLog::new("cfn-push", cli.strict.strict);
    let aggs = read_aggregates(input, "<stdin>", &mut log)?;
    log.finish();
    let mut skipped = Skipped::default();
    let max = cli.max_payload.unwrap_or(api.max_payload);
    let payloads = match otlp_protocol {
        Some(proto) => {
            let service = cli
                .service_name
                .clone()
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| "cfn-metrics".into());
            let points =
                otlp::PointOptions::new(cli.otlp_points, cli.otlp_scale, cli.otlp_max_buckets)?;
            otlp::payloads(&aggs, &shape, &service, &points, proto, max, &mut skipped)
        }
        None => build_payloads(cli.vendor, &aggs, &shape, max, &mut skipped),
    };
    if skipped.no_state > 0 {
        cfn_core::cli::warn(
            "cfn-push",
            format!(
                "{} aggregates carry no state (run cfn-agg --with-digest): sent as summaries, which a backend cannot add up across hosts",
                skipped.no_state
            ),
        );
    }
    if skipped.non_finite > 0 {
        cfn_core::cli::warn(
            "cfn-push",
            format!("left out {} non-finite values", skipped.non_finite),
        );
    }
    if cli.dry_run {
        // An OTLP URL comes from the environment and may carry credentials; the vendors' do not.
        let shown = match otlp_protocol {
            Some(_) => redact_url(&url),
            None => url.clone(),
        };
        eprintln!(
            "cfn-push: dry run: {} payload(s) for POST {shown}",
            payloads.len()
        );
        for p in &payloads {
            if otlp_protocol == Some(otlp::Protocol::Protobuf) {
                // Binary: shown as the JSON form of the same request.
                let req = <opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as prost::Message>::decode(&p[..])?;
                out.write_all(&serde_json::to_vec(&req)?)?;
            } else {
                out.write_all(p)?;
            }
            out.write_all(b"\n")?;
        }
        return Ok(Exit::Ok);
    }
    let timeout = cli.http.timeout_or(std::time::Duration::from_secs(15));
    let policy = RetryPolicy::with(timeout, cli.http.retries);
    let target = Target::new(
        &url,
        headers,
        otlp_protocol.map_or("application/json", |p| p.content_type()),
        otlp_protocol,
    );
    let (sent, worst) = send_payloads(&payloads, &target, &policy)?;
    let failed = payloads.len() - sent;
    eprintln!(
        "cfn-push: sent {sent} of {} payload(s) ({} aggregates){}",
        payloads.len(),
        aggs.len(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn names_and_tags_are_made_valid() {
        assert_eq!(datadog_name("cfn.9lives.p-99 ms"), "cfn.9lives.p_99_ms");
        assert_eq!(datadog_name("9x"), "m_9x");
        assert_eq!(datadog_tag("phase name", "a b"), "phase_name:a_b");
        assert_eq!(newrelic_name("a\nb"), "ab");
    }

    #[test]
    fn split_keeps_every_item_once_under_the_limit() {
        let items: Vec<Value> = (0..1000)
            .map(|i| json!({ "i": i, "pad": "x".repeat(50) }))
            .collect();
        let payloads = split_payloads(items, 5000, |b| json!({ "series": b }));
        assert!(payloads.len() > 10);
        let mut seen = Vec::new();
        for p in &payloads {
            assert!(p.len() <= 5000, "{}", p.len());
            let v: Value = serde_json::from_slice(p).unwrap();
            seen.extend(
                v["series"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["i"].as_u64().unwrap()),
            );
        }
        assert_eq!(seen, (0..1000).collect::<Vec<u64>>());
    }
}
