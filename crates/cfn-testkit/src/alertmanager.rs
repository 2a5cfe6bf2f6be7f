//! A real Alertmanager (Debian's prometheus-alertmanager) for the fleet-alerting tests and
//! the fleet soak: its configuration and its command line, so both start it the same way.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Grouping by alertname, `group_wait` before a group's first notification and
/// `group_interval` between a group's next ones, every notification (resolved ones too) to
/// the webhook `{receiver}/hook`.
pub fn config(
    receiver: &str,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: &str,
) -> String {
    format!(
        "route:\n  group_by: [alertname]\n  group_wait: {}ms\n  group_interval: {}ms\n  repeat_interval: {repeat_interval}\n  receiver: hook\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {receiver}/hook\n        send_resolved: true\n",
        group_wait.as_millis(),
        group_interval.as_millis()
    )
}

/// `bin` with the configuration `dir/am.yml` and storage `dir/data` (kept across restarts,
/// as a real one's is), listening on `listen` (`ADDRESS:PORT`), clustering off.
pub fn command(bin: &Path, dir: &Path, listen: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--cluster.listen-address=");
    cmd
}
