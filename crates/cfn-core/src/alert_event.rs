//! The alert event (contract section 5): written by `cfn-alert` (stdout and the alerts log),
//! read back by `cfn-serve`. One type, so the writer and the readers cannot drift.

use crate::record::{write_json_str, write_number};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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

/// An alert firing now, as the views show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FiringAlert {
    pub alert: String,
    pub severity: String,
    pub message: String,
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// When it started firing (RFC 3339), when known.
    pub since: Option<String>,
}

/// The alerts firing now and the most recent events (newest first, at most 20).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AlertsNow {
    pub firing: Vec<FiringAlert>,
    pub recent: Vec<AlertEvent>,
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The firing alerts in `cfn-alert --state`'s file, `None` when it cannot be read.
fn firing_in_state(path: &Path) -> Option<Vec<FiringAlert>> {
    let (bytes, _) = crate::fsutil::read_tail(path, 16 << 20).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let map = v["alerts"].as_object()?;
    let firing = map
        .values()
        .filter(|e| e["state"] == "firing")
        .map(|e| FiringAlert {
            alert: text(&e["alert"]),
            severity: text(&e["severity"]),
            message: text(&e["message"]),
            metric: text(&e["metric"]),
            labels: e["labels"]
                .as_object()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default(),
            value: e["value"].as_f64(),
            threshold: e["threshold"].as_f64(),
            since: e["since"].as_i64().map(crate::time::format_ms),
        });
    Some(firing.collect())
}

/// Why an alerts log cannot be trusted, if it cannot: its directory lets others than its
/// owner write (group or world), so any member could forge a `resolved` line, or remove
/// and replace the log. Such a log is never read: the firing alerts come from the state.
pub fn untrusted_log(log: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = std::fs::metadata(dir).ok()?.permissions().mode();
    (mode & 0o022 != 0).then(|| {
        format!(
            "not reading the alerts log {}: its directory {} is writable by others (mode {:o}), where any agent could forge or hide an alert; keep it where only cfn-alert writes (the state directory) and give the alert state",
            log.display(),
            dir.display(),
            mode & 0o7777
        )
    })
}

/// The alerts firing now: from `cfn-alert --state`'s file when given and readable, else
/// the last event of each alert in the alerts log; and the log's most recent events. Both
/// files are opened as shards are (no symlink, FIFO or foreign file) and only the end of
/// the log is read, since it grows forever. A log that [`untrusted_log`] refuses is not
/// read at all.
pub fn alerts_now(state: Option<&Path>, log: Option<&Path>) -> AlertsNow {
    let from_state = state.and_then(firing_in_state);
    let mut recent: Vec<AlertEvent> = Vec::new();
    // Lines are cut as bytes, so a cut inside a multi-byte character costs that one
    // (partial) line, not the whole tail.
    if let Some(p) = log.filter(|p| untrusted_log(p).is_none())
        && let Ok((tail, cut)) = crate::fsutil::read_tail(p, 256 * 1024)
    {
        recent = tail
            .split(|&c| c == b'\n')
            .skip(usize::from(cut))
            .filter_map(|l| AlertEvent::parse(l).ok())
            .collect();
    }
    let firing = from_state.unwrap_or_else(|| {
        let mut last: BTreeMap<String, &AlertEvent> = BTreeMap::new();
        for e in &recent {
            let key = if e.metadata.dedup_key.is_empty() {
                format!("{}|{:?}", e.alert, e.metadata)
            } else {
                e.metadata.dedup_key.clone()
            };
            last.insert(key, e);
        }
        last.values()
            .filter(|e| e.state == AlertState::Firing)
            .map(|e| FiringAlert {
                alert: e.alert.clone(),
                severity: e.severity.clone(),
                message: e.message.clone(),
                metric: e.metadata.metric.clone(),
                labels: e.metadata.labels.clone(),
                value: e.metadata.value,
                threshold: e.metadata.threshold,
                since: Some(e.timestamp.clone()),
            })
            .collect()
    });
    let recent = recent.into_iter().rev().take(20).collect();
    AlertsNow { firing, recent }
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

    /// Issue 36: an agent appending a forged `resolved` line to a log in a directory it can
    /// write must not hide a firing alert; a log where only its owner writes is read.
    #[test]
    fn a_log_in_a_directory_others_can_write_is_never_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cfn-alerts.jsonl");
        let firing = r#"{"timestamp":"2026-11-27T10:00:30.000Z","alert":"a","state":"firing","severity":"critical","message":"m","metadata":{"metric":"m","stat":"max","value":2,"threshold":1,"dedup_key":"k"}}"#;
        std::fs::write(&log, format!("{firing}\n")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(untrusted_log(&log).is_none());
        assert_eq!(alerts_now(None, Some(&log)).firing.len(), 1);
        let forged = firing.replace("\"firing\"", "\"resolved\"");
        std::fs::write(&log, format!("{firing}\n{forged}\n")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2770)).unwrap();
        let why = untrusted_log(&log).expect("a group-writable directory");
        assert!(
            why.contains("cfn-alerts.jsonl") && why.contains("2770"),
            "{why}"
        );
        let now = alerts_now(None, Some(&log));
        assert!(now.recent.is_empty(), "nothing is read from it");
    }
}
