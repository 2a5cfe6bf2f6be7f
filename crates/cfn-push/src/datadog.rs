//! Datadog's metrics API v2 (`POST /api/v2/series`): per aggregate a count and a gauge per
//! statistic, tags `key:value`, the host as a resource.

use crate::destination::{Destination, api_key, api_url};
use crate::{Cli, Shape, Skipped, agg_time_ms, split_payloads};
use cfn_core::aggregate::{Aggregate, quantile_key};
use serde_json::{Value, json};

/// The API's payload limit before compression.
pub const DATADOG_MAX: usize = 500 * 1000;

/// Datadog, at the site `DD_SITE` names (default datadoghq.com).
pub struct Datadog {
    url: String,
    key: Option<String>,
}

impl Datadog {
    /// The API at `--endpoint` or the site, with the key from `--api-key-file` or
    /// `DD_API_KEY`.
    ///
    /// # Errors
    /// Exit 78 without a key.
    pub fn new(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let site = env("DD_SITE").unwrap_or_else(|| "datadoghq.com".into());
        Ok(Self {
            url: api_url(
                cli,
                &format!("https://api.{}", site.trim()),
                "/api/v2/series",
            ),
            key: api_key(cli, "DD_API_KEY")?,
        })
    }
}

impl Destination for Datadog {
    fn url(&self) -> &str {
        &self.url
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.key
            .iter()
            .map(|k| ("DD-API-KEY".to_string(), k.clone()))
            .collect()
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn max_payload(&self) -> usize {
        DATADOG_MAX
    }

    fn payloads(
        &self,
        aggs: &[Aggregate],
        shape: &Shape,
        max: usize,
        skipped: &mut Skipped,
    ) -> Vec<Vec<u8>> {
        split_payloads(
            datadog_series(aggs, shape, skipped),
            max,
            |b| json!({ "series": b }),
        )
    }
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
    let several = crate::metrics_in_several_units(aggs);
    for a in aggs {
        let ts = agg_time_ms(a, shape.now_ms) / 1000;
        let base = datadog_name(&format!("{}.{}", shape.prefix, a.metric));
        let mut tags: Vec<String> = a.labels().iter().map(|(k, v)| datadog_tag(k, v)).collect();
        tags.extend(shape.tags.iter().map(|(k, v)| datadog_tag(k, v)));
        if several.contains(a.metric.as_str()) {
            // Each unit's series apart: the same name and tags would be one series.
            tags.push(datadog_tag("unit", crate::unit_tag_value(a)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags_are_made_valid() {
        assert_eq!(datadog_name("cfn.9lives.p-99 ms"), "cfn.9lives.p_99_ms");
        assert_eq!(datadog_name("9x"), "m_9x");
        assert_eq!(datadog_tag("phase name", "a b"), "phase_name:a_b");
    }
}
