//! `cfn-push`: aggregates (contract section 4) to Datadog's metrics API v2 or New Relic's
//! Metric API, split under each API's size limit, gzip-compressed, with bounded retries.
//!
//! This crate owns the two payload formats and batching; HTTP retries are `cfn-core`'s.

use cfn_core::aggregate::{Aggregate, quantile_key, read_aggregates};
use cfn_core::exit::{Exit, fail};
use cfn_core::http::{Delivery, Request, RetryPolicy, post_with_retries, redact_url};
use cfn_core::reader::MalformedLog;
use cfn_core::time::{now_ms, parse_duration, parse_timestamp_str};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const EXAMPLES: &str = "\
KEYS:
  Datadog: DD_API_KEY or --api-key-file; site from DD_SITE (default datadoghq.com).
  New Relic: NEW_RELIC_API_KEY or --api-key-file; --region us|eu (or NEW_RELIC_REGION).
  A key is never accepted on the command line (it would show in ps) and never printed.

WHAT IS SENT:
  Datadog (POST /api/v2/series): per aggregate, gauges <prefix>.<metric>.avg, .min, .max,
  .sum and one per quantile (.p50, .p95, .p99), and <prefix>.<metric>.count as a count with
  the --interval; tags key:value from the group keys plus --tag; the host as a resource.
  New Relic (POST /metric/v1): per aggregate a summary (count, sum, min, max) and a gauge per
  quantile, attributes from the group keys plus --tag.
  Timestamps are the aggregate's bucket_start, else its last record, else now. Non-finite
  values are left out and counted. Payloads stay under 500 KB (Datadog) or 1 MB (New Relic)
  before compression and are sent gzip-compressed.

EXAMPLES:
  cfn-cat --since 5m | cfn-agg | cfn-push datadog --interval 5m
  cfn-cat --since 1m | cfn-agg --by agent | cfn-push newrelic --region eu --tag env:prod
  cfn-agg day.jsonl | cfn-push datadog --dry-run | jq .
";

/// The destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Vendor {
    Datadog,
    Newrelic,
}

/// New Relic's data region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Region {
    Us,
    Eu,
}

/// Send aggregates to Datadog or New Relic.
///
/// Reads aggregate lines (from cfn-agg) on stdin and posts them in the vendor's current
/// metric API format. Exit 0 when everything was accepted, 75 when a batch could not be
/// delivered after retries, 78 for a missing key.
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

    /// Replace the API's scheme, host and port (the path stays), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "BASE_URL")]
    pub endpoint: Option<String>,

    /// New Relic region (default $NEW_RELIC_REGION, else us).
    #[arg(long, value_enum)]
    pub region: Option<Region>,

    /// Metric name prefix.
    #[arg(long, default_value = "cfn")]
    pub prefix: String,

    /// Extra tag key:value on every series; repeatable.
    #[arg(long = "tag", value_name = "KEY:VALUE")]
    pub tags: Vec<String>,

    /// The aggregation interval (the window cfn-agg covered), for counts.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub interval: String,

    /// Print the payloads that would be sent (without keys) instead of sending.
    #[arg(long)]
    pub dry_run: bool,

    /// Timeout of each request.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub timeout: String,

    /// Retries after a 408, 429, 5xx or network error.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// Largest payload before compression, in bytes (default: the vendor's limit).
    #[arg(long, value_name = "BYTES", hide = true)]
    pub max_payload: Option<usize>,

    /// Stop at the first malformed input line (exit 65).
    #[arg(long)]
    pub strict: bool,
}

/// Payload limits before compression.
pub const DATADOG_MAX: usize = 500 * 1000;
pub const NEWRELIC_MAX: usize = 1000 * 1000;

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

fn agg_time_ms(a: &Aggregate, now: i64) -> i64 {
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
    cfn_core::http::read_secret(file, env, "API key")?.ok_or_else(|| {
        fail(
            Exit::Config,
            format!("no API key: set {env} or use --api-key-file FILE"),
        )
    })
}

/// Runs `cfn-push`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let (key_env, key_header, default_base, path, max) = match cli.vendor {
        Vendor::Datadog => {
            let site = std::env::var("DD_SITE")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "datadoghq.com".into());
            (
                "DD_API_KEY",
                "DD-API-KEY",
                format!("https://api.{}", site.trim()),
                "/api/v2/series",
                DATADOG_MAX,
            )
        }
        Vendor::Newrelic => {
            let region = cli.region.or_else(|| {
                match std::env::var("NEW_RELIC_REGION")
                    .ok()
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    Some("eu") => Some(Region::Eu),
                    _ => None,
                }
            });
            let base = match region {
                Some(Region::Eu) => "https://metric-api.eu.newrelic.com",
                _ => "https://metric-api.newrelic.com",
            };
            (
                "NEW_RELIC_API_KEY",
                "Api-Key",
                base.to_string(),
                "/metric/v1",
                NEWRELIC_MAX,
            )
        }
    };
    let key = if cli.dry_run {
        None
    } else {
        Some(read_key(cli.api_key_file.as_deref(), key_env)?)
    };
    let base = cli.endpoint.clone().unwrap_or(default_base);
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut tags = Vec::new();
    for t in &cli.tags {
        match t.split_once(':') {
            Some((k, v)) if !k.is_empty() => tags.push((k.to_string(), v.to_string())),
            _ => return Err(fail(Exit::Usage, format!("--tag {t:?} must be KEY:VALUE"))),
        }
    }
    let shape = Shape {
        prefix: cli.prefix.clone(),
        tags,
        interval: parse_duration(&cli.interval)?,
        host: cfn_core::http::hostname(),
        now_ms: now_ms(),
    };
    let mut log = MalformedLog::new("cfn-push", cli.strict);
    let aggs = read_aggregates(std::io::stdin().lock(), "<stdin>", &mut log)?;
    log.finish();
    let mut skipped = Skipped::default();
    let max = cli.max_payload.unwrap_or(max);
    let payloads = match cli.vendor {
        Vendor::Datadog => split_payloads(
            datadog_series(&aggs, &shape, &mut skipped),
            max,
            |b| json!({ "series": b }),
        ),
        Vendor::Newrelic => {
            let common = json!({ "interval.ms": shape.interval.as_millis() as u64, "timestamp": shape.now_ms, "attributes": { "host": shape.host, "source": "cfn-metrics" } });
            let mut extra = serde_json::Map::new();
            for (k, v) in &shape.tags {
                extra.insert(newrelic_name(k), json!(v));
            }
            let mut common = common;
            if let Some(attrs) = common["attributes"].as_object_mut() {
                attrs.extend(extra);
            }
            split_payloads(
                newrelic_metrics(&aggs, &shape, &mut skipped),
                max,
                |b| json!([{ "common": common, "metrics": b }]),
            )
        }
    };
    if skipped.non_finite > 0 {
        cfn_core::cli::warn(
            "cfn-push",
            format!("left out {} non-finite values", skipped.non_finite),
        );
    }
    if cli.dry_run {
        eprintln!(
            "cfn-push: dry run: {} payload(s) for POST {url}",
            payloads.len()
        );
        let mut out = std::io::stdout().lock();
        for p in &payloads {
            out.write_all(p)?;
            out.write_all(b"\n")?;
        }
        return Ok(Exit::Ok);
    }
    let key = key.expect("a key unless dry run");
    let policy = RetryPolicy::with(parse_duration(&cli.timeout)?, cli.retries);
    let mut worst = Exit::Ok;
    let (mut sent, mut failed) = (0usize, 0usize);
    for (i, p) in payloads.iter().enumerate() {
        let body = gzip(p)?;
        let req = Request {
            url: &url,
            headers: vec![
                (key_header, key.clone()),
                ("Content-Type", "application/json".into()),
                ("Content-Encoding", "gzip".into()),
            ],
            body: &body,
        };
        match post_with_retries(&req, &policy) {
            Delivery::Accepted(_) => sent += 1,
            Delivery::Rejected { status, body } => {
                failed += 1;
                cfn_core::cli::warn(
                    "cfn-push",
                    format!(
                        "{} rejected batch {} of {} with HTTP {status}: {}",
                        redact_url(&url),
                        i + 1,
                        payloads.len(),
                        body.trim()
                    ),
                );
                // A redirect means the endpoint is configured wrong: it is never followed.
                let exit = if status == 401 || status == 403 || (300..400).contains(&status) {
                    Exit::Config
                } else {
                    Exit::DataErr
                };
                if worst == Exit::Ok {
                    worst = exit;
                }
            }
            Delivery::GaveUp { attempts, last } => {
                failed += 1;
                cfn_core::cli::warn(
                    "cfn-push",
                    format!(
                        "batch {} of {} was not delivered to {} after {attempts} attempts: {}",
                        i + 1,
                        payloads.len(),
                        redact_url(&url),
                        last.replace(&key, "***")
                    ),
                );
                worst = Exit::TempFail;
            }
        }
    }
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
