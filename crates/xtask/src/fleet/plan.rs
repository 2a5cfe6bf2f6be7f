//! What happens to the fleet and when, drawn from the seed: which hosts carry each incident,
//! which host is cut off, rebooted, ahead of time or out of disk, and when Alertmanager dies
//! and the bucket throttles. Times are ms since the run began, incidents aligned half-way
//! between two analysis runs so every host's run sees an incident start and end alike.

use cfn_testkit::gendata::Rng;
use serde_json::{Value, json};
use std::time::Duration;

/// A threshold crossed on some hosts for a while: each of them writes `metric` above the
/// rule's threshold (`FIRING_VALUE`) from `from_ms` to `to_ms`, and below it otherwise.
#[derive(Clone, Debug)]
pub struct Incident {
    pub alertname: String,
    pub metric: String,
    pub hosts: Vec<usize>,
    pub from_ms: u64,
    pub to_ms: u64,
}

pub const FIRING_VALUE: u64 = 500;
pub const THRESHOLD: u64 = 100;
/// How far ahead the skewed host's clock runs.
pub const SKEW_MS: i64 = 120_000;

#[derive(Clone, Debug)]
pub struct Plan {
    /// The analysis interval (cfn-analyze's timer, and its window).
    pub tick: Duration,
    pub incidents: Vec<Incident>,
    /// (host, from, to): its link down.
    pub cut: (usize, u64, u64),
    /// (host, power off, power on).
    pub reboot: (usize, u64, u64),
    /// Alertmanager killed, and started again.
    pub am_down: (u64, u64),
    /// The bucket answering 503/429 to every host.
    pub throttle: (u64, u64),
    pub skewed: usize,
    /// The host whose hot and archive filesystems fill (the chaos soak's disks).
    pub disk_full: usize,
}

impl Plan {
    /// The plan of a run of `hosts` (8 or more) lasting `duration`.
    pub fn new(hosts: usize, duration: Duration, seed: u64) -> Self {
        // 24 analysis runs in a 2-minute run, one every 30 s (the package's timer) from 12
        // minutes up.
        let tick = (duration / 24).clamp(Duration::from_secs(5), Duration::from_secs(30));
        let tick_ms = tick.as_millis() as u64;
        let ticks = (duration.as_millis() as u64 / tick_ms) as f64;
        let at = |frac: f64| ((frac * ticks).round() as u64) * tick_ms + tick_ms / 2;
        let mut order: Vec<usize> = (0..hosts).collect();
        let mut rng = Rng::new(seed ^ 0xf1ee7);
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let p = |i: usize| order[i];
        let incident = |k: usize, hosts: Vec<usize>, from: u64, to: u64| Incident {
            alertname: format!("fleet_incident_{k}"),
            metric: format!("fleet.q{k}"),
            hosts,
            from_ms: from,
            to_ms: to,
        };
        let (s1, e1) = (at(0.28), at(0.58));
        let s2 = at(0.62);
        Plan {
            tick,
            incidents: vec![
                incident(0, vec![p(0), p(1), p(2)], at(0.10), at(0.24)),
                incident(1, vec![p(3), p(4), p(5)], s1, e1),
                incident(2, vec![p(0), p(1), p(7)], s2, at(0.88)),
            ],
            // Cut after the incident's first notification, back after it has ended.
            cut: (p(4), s1 + 3 * tick_ms, e1 + 3 * tick_ms),
            reboot: (p(2), at(0.40), at(0.46)),
            am_down: (s2 + 2 * tick_ms, s2 + 3 * tick_ms),
            throttle: (at(0.40), at(0.55)),
            skewed: p(6),
            disk_full: p(5),
        }
    }

    /// Whether host `h` writes incident `k`'s metric above the threshold at `ms`.
    pub fn firing(&self, k: usize, h: usize, ms: u64) -> bool {
        let i = &self.incidents[k];
        i.hosts.contains(&h) && (i.from_ms..i.to_ms).contains(&ms)
    }

    /// The rules file: one threshold rule per incident.
    pub fn rules_toml(&self) -> String {
        self.incidents
            .iter()
            .map(|i| {
                format!(
                    "[[rule]]\nname = \"{}\"\nmetric = \"{}\"\nstat = \"max\"\nop = \">\"\nthreshold = {THRESHOLD}.0\nseverity = \"critical\"\n\n",
                    i.alertname, i.metric
                )
            })
            .collect()
    }

    pub fn to_json(&self, names: &[String]) -> Value {
        let s = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
        json!({
            "analysis_every": format!("{}s", self.tick.as_secs()),
            "incidents": self.incidents.iter().map(|i| json!({
                "alertname": i.alertname, "metric": i.metric,
                "hosts": i.hosts.iter().map(|&h| &names[h]).collect::<Vec<_>>(),
                "from": s(i.from_ms), "to": s(i.to_ms),
            })).collect::<Vec<_>>(),
            "link_down": {"host": names[self.cut.0], "from": s(self.cut.1), "to": s(self.cut.2)},
            "reboot": {"host": names[self.reboot.0], "off": s(self.reboot.1), "on": s(self.reboot.2)},
            "alertmanager_down": {"from": s(self.am_down.0), "to": s(self.am_down.1)},
            "bucket_throttling": {"from": s(self.throttle.0), "to": s(self.throttle.1)},
            "clock_ahead": {"host": names[self.skewed], "by": format!("{}s", SKEW_MS / 1000)},
            "disks_full": names[self.disk_full],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alert checks lean on this order: the cut starts after the incident's first
    /// notification and ends after its resolution; Alertmanager is back before its incident
    /// ends; no host carries two roles that would blur an expectation.
    #[test]
    fn every_plan_keeps_its_faults_apart() {
        for minutes in [2u64, 5, 30, 60] {
            for seed in 0..50 {
                let p = Plan::new(8, Duration::from_secs(minutes * 60), seed);
                let t = p.tick.as_millis() as u64;
                let [i0, i1, i2] = [&p.incidents[0], &p.incidents[1], &p.incidents[2]];
                assert!(i0.to_ms < i1.from_ms && i1.to_ms < i2.from_ms);
                assert!(i1.hosts.contains(&p.cut.0));
                assert!(p.cut.1 >= i1.from_ms + 2 * t && p.cut.2 > i1.to_ms + 2 * t);
                // Long enough for the cut host's alert to end by its endsAt (3 ticks) and
                // that to be notified before the link is back.
                assert!(p.cut.2 - p.cut.1 >= 6 * t, "{minutes} min: cut too short");
                assert!(p.am_down.1 + 2 * t < i2.to_ms);
                assert!(p.reboot.1 > i0.to_ms + 2 * t && p.reboot.2 < i2.from_ms);
                for i in [i0, i1, i2] {
                    assert!(!i.hosts.contains(&p.skewed));
                    assert!(!i.hosts.contains(&p.reboot.0) || i.alertname.ends_with('0'));
                }
                assert!(i2.to_ms + 2 * t <= minutes * 60_000);
            }
        }
    }
}
