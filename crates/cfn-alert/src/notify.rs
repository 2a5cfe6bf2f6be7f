//! Notification channels: Slack incoming webhooks, PagerDuty Events API v2 and a generic
//! webhook. Secrets (webhook URLs, routing keys) come from the environment or a file and
//! appear in no message.

use crate::{AlertState, Event};
use cfn_net::http::{Delivery, Request, RetryPolicy, post_with_retries, redact_url};
use serde_json::json;

/// Where notifications go.
#[derive(Clone)]
pub enum Channel {
    Slack {
        url: String,
    },
    PagerDuty {
        url: String,
        routing_key: String,
        /// This host's identity (`CFN_HOST`), PagerDuty's `source`.
        source: String,
    },
    Webhook {
        url: String,
    },
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL or key: both are secrets.
        f.write_str(self.name())
    }
}

impl Channel {
    /// The channel's name in state files and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Slack { .. } => "slack",
            Channel::PagerDuty { .. } => "pagerduty",
            Channel::Webhook { .. } => "webhook",
        }
    }

    fn url(&self) -> &str {
        match self {
            Channel::Slack { url } | Channel::PagerDuty { url, .. } | Channel::Webhook { url } => {
                url
            }
        }
    }

    /// The request body for an event. Agent text goes only where it is text: escaped for
    /// Slack's markup; in PagerDuty's summary and details and the webhook's event as JSON
    /// strings, never in a routing or dedup field.
    pub fn body(&self, ev: &Event) -> Vec<u8> {
        match self {
            Channel::Slack { .. } => {
                let icon = if ev.state == AlertState::Resolved {
                    ":white_check_mark:"
                } else {
                    ":rotating_light:"
                };
                let text = format!(
                    "{icon} [{}] {} {}: {}",
                    ev.state.as_str().to_uppercase(),
                    slack_escape(&ev.severity.to_uppercase()),
                    slack_escape(&ev.alert),
                    slack_escape(&ev.message)
                );
                serde_json::to_vec(&json!({ "text": text })).unwrap_or_default()
            }
            Channel::PagerDuty {
                routing_key,
                source,
                ..
            } => {
                let body = if ev.state == AlertState::Resolved {
                    json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": ev.metadata.dedup_key})
                } else {
                    let summary: String = format!("{}: {}", ev.alert, ev.message)
                        .chars()
                        .take(1024)
                        .collect();
                    json!({
                        "routing_key": routing_key,
                        "event_action": "trigger",
                        "dedup_key": ev.metadata.dedup_key,
                        "payload": {
                            "summary": summary,
                            "source": source,
                            "severity": ev.severity,
                            "timestamp": ev.timestamp,
                            "component": ev.metadata.metric,
                            "group": ev.alert,
                            "class": ev.metadata.stat,
                            "custom_details": {
                                "metric": ev.metadata.metric,
                                "stat": ev.metadata.stat,
                                "value": ev.metadata.value,
                                "threshold": ev.metadata.threshold,
                                "labels": ev.metadata.labels,
                            }
                        }
                    })
                };
                serde_json::to_vec(&body).unwrap_or_default()
            }
            Channel::Webhook { .. } => ev.to_json().into_bytes(),
        }
    }

    /// Sends an event; `Err` carries a message safe to print.
    pub fn send(&self, ev: &Event, policy: &RetryPolicy) -> Result<(), String> {
        let body = self.body(ev);
        let req = Request {
            url: self.url(),
            headers: vec![("Content-Type", "application/json".to_string())],
            body: &body,
            secrets: &cfn_net::redact::url_secrets_of(self.url(), true),
        };
        match post_with_retries(&req, policy) {
            Delivery::Accepted { .. } => Ok(()),
            Delivery::Rejected { status, body, .. } => Err(format!(
                "{} ({}) rejected the {} notification for {} with HTTP {status}: {}",
                self.name(),
                redact_url(self.url()),
                ev.state.as_str(),
                ev.alert,
                body.trim()
            )),
            Delivery::GaveUp { attempts, last } => Err(format!(
                "{} ({}) did not accept the {} notification for {} after {attempts} attempts: {}",
                self.name(),
                redact_url(self.url()),
                ev.state.as_str(),
                ev.alert,
                last
            )),
        }
    }
}

/// Text for Slack's `text`: `&`, `<` and `>` escaped as Slack's formatting asks, so an
/// agent's `<!channel>` or `<https://…|label>` is shown, not obeyed.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
