//! The alert event (contract section 5): written by `cfn-alert` (stdout and the alerts log),
//! read back by `cfn-serve`. One type, so the writer and the readers cannot drift.

use crate::record::{write_json_str, write_number};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `firing` or `resolved`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// What the alert is about: the contract's keys, then cfn-alert's additions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertMetadata {
    pub metric: String,
    #[serde(default)]
    pub stat: String,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The comparison (`>`, `<`, ...).
    #[serde(default)]
    pub op: String,
    /// The group keys of the aggregate (agent, tags), when grouped.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Stable per alert instance: the same for its firing and its resolution.
    #[serde(default)]
    pub dedup_key: String,
}

/// One alert event line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub timestamp: String,
    pub alert: String,
    pub state: AlertState,
    pub severity: String,
    pub message: String,
    pub metadata: AlertMetadata,
}

impl AlertEvent {
    /// The event as one JSON line (no newline): the first five keys in the legacy log's
    /// order, then metadata with the contract's keys first.
    pub fn to_json(&self) -> String {
        let m = &self.metadata;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"timestamp\":");
        write_json_str(&mut out, &self.timestamp);
        out.extend_from_slice(b",\"alert\":");
        write_json_str(&mut out, &self.alert);
        out.extend_from_slice(b",\"state\":");
        write_json_str(&mut out, self.state.as_str());
        out.extend_from_slice(b",\"severity\":");
        write_json_str(&mut out, &self.severity);
        out.extend_from_slice(b",\"message\":");
        write_json_str(&mut out, &self.message);
        out.extend_from_slice(b",\"metadata\":{\"metric\":");
        write_json_str(&mut out, &m.metric);
        out.extend_from_slice(b",\"stat\":");
        write_json_str(&mut out, &m.stat);
        out.extend_from_slice(b",\"value\":");
        write_number(&mut out, m.value.unwrap_or(f64::NAN));
        out.extend_from_slice(b",\"threshold\":");
        write_number(&mut out, m.threshold.unwrap_or(f64::NAN));
        out.extend_from_slice(b",\"op\":");
        write_json_str(&mut out, &m.op);
        if !m.labels.is_empty() {
            out.extend_from_slice(b",\"labels\":");
            let _ = serde_json::to_writer(&mut out, &m.labels);
        }
        out.extend_from_slice(b",\"dedup_key\":");
        write_json_str(&mut out, &m.dedup_key);
        out.extend_from_slice(b"}}");
        String::from_utf8(out).unwrap_or_default()
    }

    /// Parses one line of an alerts log (this tool's, or the legacy one's, whose metadata
    /// may lack the keys cfn-alert adds).
    ///
    /// # Errors
    /// The JSON error when the line is not an alert event.
    pub fn parse(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_the_same_event() {
        let ev = AlertEvent {
            timestamp: "2026-11-27T10:00:30.000Z".into(),
            alert: "coordination_time_exceeded".into(),
            state: AlertState::Firing,
            severity: "critical".into(),
            message: "Coordination time 12034ms exceeds threshold 10000ms".into(),
            metadata: AlertMetadata {
                metric: "coordination.time".into(),
                stat: "max".into(),
                value: Some(12034.0),
                threshold: Some(10000.0),
                op: ">".into(),
                labels: BTreeMap::from([("agent".into(), "agent-42".into())]),
                dedup_key: "cfn-1".into(),
            },
        };
        let line = ev.to_json();
        assert!(line.starts_with(
            r#"{"timestamp":"2026-11-27T10:00:30.000Z","alert":"coordination_time_exceeded","state":"firing","severity":"critical","message":"#
        ));
        assert_eq!(AlertEvent::parse(line.as_bytes()).unwrap(), ev);
        let legacy = br#"{"timestamp":"t","alert":"a","state":"resolved","severity":"warning","message":"m","metadata":{"metric":"x"}}"#;
        let old = AlertEvent::parse(legacy).unwrap();
        assert_eq!(old.state, AlertState::Resolved);
        assert!(old.metadata.dedup_key.is_empty());
    }
}
