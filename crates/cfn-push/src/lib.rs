//! `cfn-push`: aggregates (contract section 4) to Datadog's metrics API v2, New Relic's
//! Metric API or an OTLP/HTTP receiver, split under each receiver's size limit,
//! gzip-compressed, with bounded retries.
//!
//! Each destination is a module behind one trait (`destination::Destination`: its target
//! from the flags and environment, its payloads, reading its replies); `run` reads, sends
//! and reports. HTTP delivery and retries are `cfn-net`'s.

use cfn_core::aggregate::{Aggregate, read_aggregates};
use cfn_core::exit::{Exit, fail};
use cfn_core::reader::MalformedLog;
use cfn_core::time::{now_ms, parse_timestamp_str};
use cfn_net::http::{Delivery, Request, RetryPolicy, post_with_retries, redact_url};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub mod datadog;
pub mod destination;
pub mod newrelic;
pub mod otlp;

use destination::Destination;

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
    /// Aggregates whose state's weight is not their count (a crafted or damaged state),
    /// sent as summaries, the first few named.
    pub bad_state: Vec<String>,
}

impl Skipped {
    /// Says on stderr what was not sent as is.
    fn warn(&self) {
        if self.no_state > 0 {
            cfn_core::cli::warn(
                "cfn-push",
                format!(
                    "{} aggregates carry no state (run cfn-agg --with-digest): sent as summaries, which a backend cannot add up across hosts",
                    self.no_state
                ),
            );
        }
        if self.non_finite > 0 {
            cfn_core::cli::warn(
                "cfn-push",
                format!("left out {} non-finite values", self.non_finite),
            );
        }
        if !self.bad_state.is_empty() {
            cfn_core::cli::warn(
                "cfn-push",
                format!(
                    "{} aggregates' states do not add up to their count (as cfn-agg --merge refuses them): sent as summaries without buckets ({})",
                    self.bad_state.len(),
                    self.bad_state
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
        }
    }
}

/// The metrics whose aggregates come in more than one unit (values without a unit beside
/// values in ms, or units that do not convert: contract section 1). Every destination keeps
/// each unit's series apart for them: a `unit` tag or attribute (`none` for values without
/// one), or an OTLP metric per unit.
pub(crate) fn metrics_in_several_units(aggs: &[Aggregate]) -> std::collections::HashSet<&str> {
    let mut units: std::collections::HashMap<&str, Option<&str>> = std::collections::HashMap::new();
    let mut mixed = std::collections::HashSet::new();
    for a in aggs {
        match units.entry(&a.metric) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(a.unit.as_deref());
            }
            std::collections::hash_map::Entry::Occupied(e) if *e.get() != a.unit.as_deref() => {
                mixed.insert(a.metric.as_str());
            }
            std::collections::hash_map::Entry::Occupied(_) => {}
        }
    }
    mixed
}

/// The unit a series of a metric in several units is tagged with: its unit, or `none`.
pub(crate) fn unit_tag_value(a: &Aggregate) -> &str {
    a.unit.as_deref().unwrap_or("none")
}

pub(crate) fn agg_time_ms(a: &Aggregate, now: i64) -> i64 {
    a.bucket_start
        .as_deref()
        .or(a.last.as_deref())
        .and_then(parse_timestamp_str)
        .unwrap_or(now)
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

/// The destination `cli` names, with its target from the flags and `env`.
///
/// # Errors
/// Exit 78 for a missing key or bad OTLP settings.
pub fn for_cli(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Box<dyn Destination>> {
    Ok(match cli.vendor {
        Vendor::Datadog => Box::new(datadog::Datadog::new(cli, env)?),
        Vendor::Newrelic => Box::new(newrelic::NewRelic::new(cli, env)?),
        Vendor::Otlp => Box::new(otlp::Otlp::new(cli, env)?),
    })
}

/// The secrets of a send: every header value (and a short one with its name, as a receiver
/// may echo it) and the URL's credentials, kept out of messages.
fn secrets_of(url: &str, headers: &[(String, String)]) -> cfn_net::redact::Secrets {
    let mut secrets = cfn_net::redact::url_secrets_of(url, false);
    for (k, v) in headers {
        secrets.add(v);
        // A value too short to be hidden alone is hidden with its name, as given in
        // OTEL_EXPORTER_OTLP_HEADERS or as sent.
        if v.len() < cfn_net::redact::MIN_RUN {
            secrets.add(&format!("{k}={v}"));
            secrets.add(&format!("{k}: {v}"));
            secrets.add(&format!("{k}:{v}"));
        }
    }
    secrets
}

/// Sends each payload (gzipped) to `dest` with retries; returns how many were accepted and
/// the exit status the failures call for (the first rejection's, or 75 when one was not
/// delivered).
fn send_payloads(
    payloads: &[Vec<u8>],
    dest: &dyn Destination,
    policy: &RetryPolicy,
) -> anyhow::Result<(usize, Exit)> {
    let mut worst = Exit::Ok;
    let mut sent = 0;
    let url = dest.url();
    let shown = redact_url(url);
    let fixed = dest.headers();
    let secrets = secrets_of(url, &fixed);
    for (i, p) in payloads.iter().enumerate() {
        let body = gzip(p)?;
        let mut headers: Vec<(&str, String)> =
            fixed.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        headers.push(("Content-Type", dest.content_type().into()));
        headers.push(("Content-Encoding", "gzip".into()));
        let req = Request {
            url,
            headers,
            body: &body,
            secrets: &secrets,
        };
        let batch = format!("batch {} of {}", i + 1, payloads.len());
        let (problem, exit) = match post_with_retries(&req, policy) {
            Delivery::Accepted { body, .. } => {
                sent += 1;
                match dest.partial_rejection(&body) {
                    Some((rejected, msg)) => (
                        format!(
                            "{shown} took {batch} in part: {rejected} data points rejected: {msg}"
                        ),
                        if rejected > 0 {
                            Exit::DataErr
                        } else {
                            Exit::Ok
                        },
                    ),
                    None => continue,
                }
            }
            Delivery::Rejected { status, body, raw } => (
                format!(
                    "{shown} rejected {batch} with HTTP {status}: {}",
                    dest.rejection_message(&raw, &body)
                ),
                // A redirect means the endpoint is configured wrong: it is never followed.
                Exit::for_http_status(status),
            ),
            Delivery::GaveUp { attempts, last } => (
                format!("{batch} was not delivered to {shown} after {attempts} attempts: {last}"),
                Exit::TempFail,
            ),
        };
        cfn_core::cli::warn("cfn-push", secrets.redact(&problem));
        if exit == Exit::TempFail || worst == Exit::Ok {
            worst = exit;
        }
    }
    Ok((sent, worst))
}

/// Runs `cfn-push`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli, input: impl std::io::BufRead, mut out: impl Write) -> anyhow::Result<Exit> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let dest = for_cli(&cli, &env)?;
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
    let max = cli.max_payload.unwrap_or(dest.max_payload());
    let payloads = dest.payloads(&aggs, &shape, max, &mut skipped);
    skipped.warn();
    if cli.dry_run {
        eprintln!(
            "cfn-push: dry run: {} payload(s) for POST {}",
            payloads.len(),
            dest.shown_url()
        );
        for p in &payloads {
            out.write_all(&dest.dry_run_line(p)?)?;
            out.write_all(b"\n")?;
        }
        return Ok(Exit::Ok);
    }
    let timeout = cli.http.timeout_or(std::time::Duration::from_secs(15));
    let policy = RetryPolicy::with(timeout, cli.http.retries);
    let (sent, worst) = send_payloads(&payloads, dest.as_ref(), &policy)?;
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
    use serde_json::json;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
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
