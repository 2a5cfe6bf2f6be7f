//! Prometheus Alertmanager (API v2, `POST /api/v2/alerts`): the fleet's grouping, silencing,
//! inhibition and routing, instead of one message per host.
//!
//! Alertmanager wants the alerts firing now on every evaluation, each with an `endsAt` a
//! little ahead (so an alert from a host that died ends by itself), and a resolved alert
//! with `endsAt` at the time it resolved. So every run sends every firing alert of the
//! state with `endsAt = now + --alert-valid-for`, and every alert resolved in the last 15
//! minutes (longer while a resolution has not reached every Alertmanager) with its end.
//! Each URL gets every alert on its own, as an HA pair expects.

use crate::state::{Entry, Phase, Resolved, State};
use cfn_core::exit::{Exit, fail};
use cfn_core::time::{EpochMs, format_ms};
use cfn_net::http::{Delivery, Request, RetryPolicy, post_with_retries, redact_url};
use cfn_net::redact::Secrets;
use serde_json::{Map, Value, json};

/// How long a resolved alert is sent again after it resolved.
pub const RESEND_RESOLVED_MS: i64 = 15 * 60_000;

/// Where and how to send.
#[derive(Debug)]
pub struct Alertmanagers {
    urls: Vec<String>,
    headers: Vec<(String, String)>,
    secrets: Secrets,
    valid_for_ms: i64,
    generator_url: Option<String>,
    host: String,
}

/// `--header 'Name: value'`, checked.
fn parse_header(h: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = h
        .split_once(':')
        .map(|(n, v)| (n.trim(), v.trim()))
        .filter(|(n, _)| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        })
        .ok_or_else(|| {
            // The value may be a secret: only a name before a colon is ever shown.
            let shown = match h.split_once(':') {
                Some((name, _)) => format!("{:?}", name.chars().take(40).collect::<String>()),
                None => format!("of {} characters without a colon", h.chars().count()),
            };
            fail(
                Exit::Usage,
                format!("--header {shown}: expected 'Name: value'"),
            )
        })?;
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(fail(
            Exit::Usage,
            format!("--header {name}: the value holds a control character"),
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

impl Alertmanagers {
    /// Checks the URLs (http or https, without a path beyond `/`: the API path is added) and
    /// headers.
    ///
    /// # Errors
    /// Exit 2 naming a URL that is not http(s) or a header that is not `Name: value`.
    pub fn new(
        urls: &[String],
        headers: &[String],
        valid_for_ms: i64,
        generator_url: Option<String>,
        host: String,
    ) -> anyhow::Result<Self> {
        let mut checked = Vec::new();
        for u in urls {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
                .filter(|r| !r.is_empty() && !r.starts_with('/'));
            if rest.is_none() {
                return Err(fail(
                    Exit::Usage,
                    format!(
                        "--alertmanager {}: not an http:// or https:// URL",
                        redact_url(u)
                    ),
                ));
            }
            checked.push(format!("{}/api/v2/alerts", u.trim_end_matches('/')));
        }
        let headers = headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut secrets = Secrets::new();
        for (k, v) in &headers {
            secrets.add(v);
            if v.len() < cfn_net::redact::MIN_RUN {
                secrets.add(&format!("{k}: {v}"));
            }
        }
        Ok(Self {
            urls: checked,
            headers,
            secrets,
            valid_for_ms,
            generator_url,
            host,
        })
    }

    /// The alert of `entry` as Alertmanager takes it, ending at `ends`.
    fn alert(&self, entry: &Entry, ends: EpochMs) -> Value {
        let mut labels = Map::new();
        // Group keys (agent, tags) first, so the fixed labels win a clash of names.
        for (k, v) in &entry.labels {
            labels.insert(cfn_prom::names::sanitize_label(k), json!(v));
        }
        labels.insert("alertname".into(), json!(entry.alert));
        labels.insert("severity".into(), json!(entry.severity));
        if !entry.metric.is_empty() {
            labels.insert("metric".into(), json!(entry.metric));
        }
        labels.insert("host".into(), json!(self.host));
        let description = if entry.stat == "silence" {
            format!(
                "{} silent for {}s (threshold {}s) on {}",
                entry
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                cfn_core::record::number_text(entry.value.round()),
                cfn_core::record::number_text(entry.threshold.round()),
                self.host
            )
        } else {
            format!(
                "{} {} is {} ({} {}) on {}",
                entry.metric,
                entry.stat,
                cfn_core::record::number_text(entry.value),
                entry.op,
                cfn_core::record::number_text(entry.threshold),
                self.host
            )
        };
        let mut a = json!({
            "labels": labels,
            "annotations": { "summary": entry.message, "description": description },
            "startsAt": format_ms(entry.since),
            "endsAt": format_ms(ends),
        });
        if let Some(g) = &self.generator_url {
            a["generatorURL"] = json!(g);
        }
        a
    }

    /// What this run sends: every firing alert, ending `--alert-valid-for` from now, and every
    /// alert resolved recently, ending when it resolved.
    pub fn payload(&self, state: &State, now: EpochMs) -> Vec<Value> {
        let firing = state
            .alerts
            .values()
            .filter(|e| e.state == Phase::Firing)
            .map(|e| self.alert(e, now + self.valid_for_ms));
        let resolved = state
            .resolved
            .iter()
            .filter(|(k, _)| !state.alerts.contains_key(*k))
            .map(|(_, r)| self.alert(&r.entry, r.ended));
        firing.chain(resolved).collect()
    }

    /// Sends `alerts` to every Alertmanager. Returns the exit the run should end with (0,
    /// 65 for a rejection, 75 when one was unreachable after the retries), each failure
    /// printed naming the URL's host, never a header.
    pub fn send(&self, alerts: &[Value], policy: &RetryPolicy) -> Exit {
        if alerts.is_empty() {
            return Exit::Ok;
        }
        let body = serde_json::to_vec(alerts).unwrap_or_default();
        let mut worst = Exit::Ok;
        for url in &self.urls {
            let mut headers: Vec<(&str, String)> = self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            headers.push(("Content-Type", "application/json".into()));
            let req = Request {
                url,
                headers,
                body: &body,
                secrets: &self.secrets,
            };
            let failed = match post_with_retries(&req, policy) {
                Delivery::Accepted { .. } => continue,
                Delivery::Rejected { status, body, .. } => (
                    Exit::for_http_status(status),
                    format!(
                        "Alertmanager {} rejected {} alerts with HTTP {status}: {}",
                        redact_url(url),
                        alerts.len(),
                        reason(&body)
                    ),
                ),
                Delivery::GaveUp { attempts, last } => (
                    Exit::TempFail,
                    format!(
                        "Alertmanager {} did not take {} alerts after {attempts} attempts: {last}; they are sent again on the next run",
                        redact_url(url),
                        alerts.len()
                    ),
                ),
            };
            // Redacted again after decoding: the JSON `message` may spell a secret with
            // escapes (`\u0042e…`) that the raw body's redaction could not see.
            cfn_core::cli::warn("cfn-alert", self.secrets.redact(&failed.1));
            if failed.0 == Exit::TempFail || worst == Exit::Ok {
                worst = failed.0;
            }
        }
        worst
    }
}

/// Alertmanager's reason for a rejection: the `message` of its JSON error, else the status
/// line's text and the first bytes of what it said (already redacted and cut).
fn reason(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => v
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| body.to_string(), str::to_string),
        Err(_) if body.is_empty() => "(no body)".into(),
        Err(_) => format!("not JSON: {body:?}"),
    }
}

/// Keeps the alerts that resolved this run (`ended`) to be sent as resolved, and forgets a
/// resolution whose alert fires again. Called before [`Alertmanagers::payload`].
pub fn remember_resolved(state: &mut State, ended: Vec<(String, Entry)>, now: EpochMs) {
    for (key, entry) in ended {
        state.resolved.insert(
            key,
            Resolved {
                entry,
                ended: now,
                undelivered: true,
            },
        );
    }
    let State {
        alerts, resolved, ..
    } = state;
    resolved.retain(|k, _| !alerts.contains_key(k));
}

/// After a run's sending: resolutions sent to every Alertmanager (`delivered`) are kept
/// for [`RESEND_RESOLVED_MS`] after they resolved, the others until they are delivered.
pub fn settle_resolved(state: &mut State, now: EpochMs, delivered: bool) {
    state.resolved.retain(|_, r| {
        r.undelivered &= !delivered;
        r.undelivered || now - r.ended < RESEND_RESOLVED_MS
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(alert: &str) -> Entry {
        Entry {
            alert: alert.into(),
            metric: "coordination.time".into(),
            labels: [("agent".to_string(), "agent-7".to_string())].into(),
            state: Phase::Firing,
            since: 1_795_773_600_000,
            last_notified: None,
            notified: Default::default(),
            severity: "critical".into(),
            stat: "max".into(),
            op: ">".into(),
            value: 12034.0,
            threshold: 10000.0,
            message: "Coordination time 12034ms exceeds threshold 10000ms".into(),
        }
    }

    #[test]
    fn urls_and_headers_are_checked_and_named() {
        for bad in ["ftp://am:9093", "am:9093", "http://", "http:///x"] {
            let e = Alertmanagers::new(&[bad.into()], &[], 1, None, "h".into()).unwrap_err();
            assert_eq!(cfn_core::exit::exit_for(&e), Exit::Usage, "{bad}");
        }
        let e = Alertmanagers::new(
            &["http://am:9093".into()],
            &["Bearer s3cr3t".into()],
            1,
            None,
            "h".into(),
        )
        .unwrap_err();
        assert!(!format!("{e:#}").contains("s3cr3t"), "{e:#}");
        let am = Alertmanagers::new(
            &["http://am:9093/".into()],
            &["Authorization: Bearer s3cr3t".into()],
            1,
            None,
            "h".into(),
        )
        .unwrap();
        assert_eq!(am.urls, ["http://am:9093/api/v2/alerts"]);
    }

    #[test]
    fn firing_alerts_end_ahead_and_resolved_ones_at_their_end() {
        let am = Alertmanagers::new(
            &["http://am:9093".into()],
            &[],
            120_000,
            Some("http://dash:3001/".into()),
            "host-a".into(),
        )
        .unwrap();
        let now = 1_795_773_700_000;
        let mut state = State {
            version: 1,
            ..Default::default()
        };
        state
            .alerts
            .insert("k1".into(), entry("coordination_time_exceeded"));
        let mut pending = entry("pending_one");
        pending.state = Phase::Pending;
        state.alerts.insert("k2".into(), pending);
        remember_resolved(
            &mut state,
            vec![("k3".into(), entry("memory_usage_high"))],
            now,
        );
        let p = am.payload(&state, now);
        assert_eq!(
            p.len(),
            2,
            "the firing one and the resolved one, not the pending one"
        );
        assert_eq!(p[0]["labels"]["alertname"], "coordination_time_exceeded");
        assert_eq!(p[0]["labels"]["host"], "host-a");
        assert_eq!(p[0]["labels"]["agent"], "agent-7");
        assert_eq!(p[0]["startsAt"], format_ms(1_795_773_600_000));
        assert_eq!(p[0]["endsAt"], format_ms(now + 120_000));
        assert_eq!(p[0]["generatorURL"], "http://dash:3001/");
        assert_eq!(p[1]["endsAt"], format_ms(now));
        // Kept while undelivered, then for 15 minutes after a delivery.
        settle_resolved(&mut state, now + RESEND_RESOLVED_MS + 1, false);
        assert_eq!(state.resolved.len(), 1);
        settle_resolved(&mut state, now + RESEND_RESOLVED_MS + 2, true);
        assert_eq!(state.resolved.len(), 0);
        // A resolution whose alert fires again is not sent as resolved.
        remember_resolved(&mut state, vec![("k1".into(), entry("x"))], now);
        assert!(state.resolved.is_empty());
    }
}
