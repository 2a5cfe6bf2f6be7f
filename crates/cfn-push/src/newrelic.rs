//! New Relic's Metric API (`POST /metric/v1`): per aggregate a summary and a gauge per
//! quantile, attributes from the group keys, the host and `--tag` in the common block.

use crate::destination::{Destination, api_key, api_url};
use crate::{Cli, Region, Shape, Skipped, agg_time_ms, split_payloads};
use cfn_core::aggregate::{Aggregate, quantile_key};
use serde_json::{Value, json};

/// The API's payload limit before compression.
pub const NEWRELIC_MAX: usize = 1000 * 1000;

/// New Relic, in the US or EU region.
pub struct NewRelic {
    url: String,
    key: Option<String>,
}

impl NewRelic {
    /// The API at `--endpoint` or the region's (`--region`, else `NEW_RELIC_REGION`), with
    /// the key from `--api-key-file` or `NEW_RELIC_API_KEY`.
    ///
    /// # Errors
    /// Exit 78 without a key.
    pub fn new(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let eu = cli.region.map_or_else(
            || env("NEW_RELIC_REGION").is_some_and(|r| r.trim().eq_ignore_ascii_case("eu")),
            |r| r == Region::Eu,
        );
        let base = if eu {
            "https://metric-api.eu.newrelic.com"
        } else {
            "https://metric-api.newrelic.com"
        };
        Ok(Self {
            url: api_url(cli, base, "/metric/v1"),
            key: api_key(cli, "NEW_RELIC_API_KEY")?,
        })
    }
}

impl Destination for NewRelic {
    fn url(&self) -> &str {
        &self.url
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.key
            .iter()
            .map(|k| ("Api-Key".to_string(), k.clone()))
            .collect()
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn max_payload(&self) -> usize {
        NEWRELIC_MAX
    }

    fn payloads(
        &self,
        aggs: &[Aggregate],
        shape: &Shape,
        max: usize,
        skipped: &mut Skipped,
    ) -> Vec<Vec<u8>> {
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

/// A New Relic name or attribute key: no control characters, at most 255 characters.
pub fn newrelic_name(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    if out.len() > 255 {
        out.truncate(out.floor_char_boundary(255));
    }
    out
}

/// New Relic metrics for the aggregates.
pub fn newrelic_metrics(aggs: &[Aggregate], shape: &Shape, skipped: &mut Skipped) -> Vec<Value> {
    let mut out = Vec::new();
    let several = crate::metrics_in_several_units(aggs);
    for a in aggs {
        let ts = agg_time_ms(a, shape.now_ms);
        let name = newrelic_name(&format!("{}.{}", shape.prefix, a.metric));
        let mut attrs = serde_json::Map::new();
        for (k, v) in a.labels() {
            attrs.insert(newrelic_name(&k), json!(v));
        }
        if let Some(u) = &a.unit {
            attrs.insert("unit".into(), json!(u));
        } else if several.contains(a.metric.as_str()) {
            // Beside series in a unit, the unitless one says so (else it would read as one).
            attrs.insert("unit".into(), json!(crate::unit_tag_value(a)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_control_characters() {
        assert_eq!(newrelic_name("a\nb"), "ab");
        assert_eq!(newrelic_name(&"é".repeat(200)).len(), 254);
    }
}
