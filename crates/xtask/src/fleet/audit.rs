//! The fleet's audit, by the harness and not by the tools under test: the stores (the chaos
//! soak's audit over every host at once), the bucket's prefixes, Prometheus' fleet
//! quantiles against the exact ones, every notification against the plan's incidents, a
//! cut-off host seen down. The report's schema is in docs/DESIGN.md.

use super::{Fleet, plan::Plan};
use crate::chaos::{
    Serve, archive_cmd,
    audit::{self, Fate, Found, Key},
};
use flate2::read::MultiGzDecoder;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The host a record's key belongs to (agents are numbered `host * 1000 + n`).
fn host_of(k: &Key) -> usize {
    (k.0 / 1000) as usize
}

/// After the run: the faults undone, one archiver run per host finishing its work, the
/// last notifications and scrapes waited for; then every check.
pub fn settle_and_audit(fleet: &Fleet, serves: &mut [Serve]) -> anyhow::Result<Value> {
    fleet.proxy.faulty.store(false, Ordering::SeqCst);
    fleet.proxy.throttle.store(false, Ordering::SeqCst);
    let mut finals = Vec::new();
    for h in &fleet.hosts {
        fleet.net.set_link(h.index, true)?;
        finals.push((h, archive_cmd(&h.run).spawn()?));
    }
    for (h, mut child) in finals {
        let status = child.wait()?;
        h.run
            .exits
            .add(&format!("cfn-archive final exit {:?}", status.code()));
    }
    // The last incident's resolution: one analysis run after it ends, and a group interval.
    let p = &fleet.plan;
    let tick = p.tick.as_millis() as u64;
    let last_end = p.incidents.iter().map(|i| i.to_ms).max().unwrap_or(0);
    let clock = fleet.clock();
    while clock.elapsed_ms() < last_end + 4 * tick {
        std::thread::sleep(Duration::from_millis(200));
    }
    fleet
        .timeline
        .add(clock, "settled: reading every store".into());
    let mut emitted: HashMap<Key, Fate> = HashMap::new();
    for h in &fleet.hosts {
        emitted.extend(h.run.emitted.lock().unwrap().iter());
    }
    let mut found = Found::default();
    let mut leftovers = Vec::new();
    let mut twins = HashMap::new();
    for h in &fleet.hosts {
        leftovers.extend(audit::read_local(&h.run.hot, &h.run.archive, &mut found)?);
        twins.extend(audit::cold_twins(&h.run.archive)?);
    }
    let scratch = fleet.root.join("cold-copy");
    let cold = audit::read_cold(fleet.moto_port, super::BUCKET, &scratch, &twins, &mut found)?;
    let prefixes = check_prefixes(fleet, &scratch)?;
    // Lost to the reboot: written on the rebooted host in the minute before its power went or
    // until it came back (no write starts while it is off, and the first after waits for its
    // cfn-serve), acknowledged, and found nowhere: in its emptied tmpfs only, not yet synced
    // to the archive (every few seconds). Counted apart, never silently; an older record
    // missing is missing.
    let rebooted = p.reboot.0;
    let off_ms = fleet.hosts[rebooted]
        .run
        .powered_off_at
        .load(Ordering::SeqCst);
    let back_ms = fleet.hosts[rebooted]
        .run
        .serve_starts
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.0 >= off_ms)
        .map_or(u64::MAX, |s| s.0);
    let lost: Vec<Key> = emitted
        .iter()
        .filter(|(k, f)| {
            host_of(k) == rebooted
                && matches!(f, Fate::Acked { wrote_ms, .. }
                    if *wrote_ms < back_ms && *wrote_ms + 60_000 >= off_ms)
                && !found.counts.contains_key(k)
        })
        .map(|(k, _)| *k)
        .collect();
    let emitted_all = emitted.clone();
    for k in &lost {
        emitted.remove(k);
    }
    let stores = audit::check_stores(&emitted, &found);
    fleet
        .timeline
        .add(clock, "stores read: Prometheus and the alerts next".into());
    let histograms = check_histograms(fleet, serves, &emitted, &found)?;
    let alerts = check_alerts(fleet);
    let down = check_down(fleet)?;
    let textfile = check_textfiles(fleet)?;
    let ok = stores["ok"] == json!(true)
        && cold.replaced.is_empty()
        && prefixes["ok"] == json!(true)
        && histograms["ok"] == json!(true)
        && alerts["ok"] == json!(true)
        && down["ok"] == json!(true)
        && textfile["ok"] == json!(true)
        && leftovers.is_empty();
    let names: Vec<String> = fleet.hosts.iter().map(|h| h.run.host.clone()).collect();
    let mut faults = BTreeMap::new();
    let mut exits = BTreeMap::new();
    for h in &fleet.hosts {
        for (k, v) in h.run.faults.snapshot() {
            *faults.entry(k).or_insert(0u64) += v;
        }
        for (k, v) in h.run.exits.snapshot() {
            *exits.entry(k).or_insert(0u64) += v;
        }
    }
    for (k, v) in fleet.proxy.counts.lock().unwrap().iter() {
        faults.insert(format!("s3_{k}"), *v);
    }
    Ok(json!({
        "ok": ok,
        "hosts": names,
        "plan": p.to_json(&names),
        "timeline": fleet.timeline.0.lock().unwrap().iter()
            .map(|(ms, what)| format!("{:.1}s {what}", *ms as f64 / 1000.0)).collect::<Vec<_>>(),
        "faults": faults,
        "exits": exits,
        "checks": {
            "stores": stores,
            "lost_to_reboot": {
                "host": names[rebooted],
                "acknowledged_records": lost.len(),
                "power_off_ms": off_ms,
                "written_from_ms": lost.iter().filter_map(|k| match emitted_all.get(k) { Some(Fate::Acked { wrote_ms, .. }) => Some(*wrote_ms), _ => None }).min(),
                "sample": lost.iter().take(5).map(|(a, s)| format!("agent-{a}#{s}")).collect::<Vec<_>>(),
            },
            "cold_objects": cold.objects,
            "cold_objects_replaced": cold.replaced.len(),
            "cold_objects_replaced_sample": cold.replaced.iter().take(5).collect::<Vec<_>>(),
            "cold_prefixes": prefixes,
            "histograms": histograms,
            "alerts": alerts,
            "cut_off_host_down": down,
            "textfile": textfile,
            "leftover_files": leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        },
    }))
}

/// Every object under `cold/host=<name>/` of its own host, and holding only that host's
/// records.
fn check_prefixes(fleet: &Fleet, scratch: &std::path::Path) -> anyhow::Result<Value> {
    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    let mut misplaced = Vec::new();
    for (key, path) in audit::downloaded_objects(scratch)? {
        let owner = key
            .strip_prefix("cold/host=")
            .and_then(|rest| rest.split('/').next())
            .and_then(|name| fleet.hosts.iter().position(|h| h.run.host == name));
        let Some(owner) = owner else {
            misplaced.push(format!("{key}: not under a host's prefix"));
            continue;
        };
        *per_host
            .entry(fleet.hosts[owner].run.host.clone())
            .or_default() += 1;
        let mut text = String::new();
        MultiGzDecoder::new(std::fs::File::open(&path)?).read_to_string(&mut text)?;
        let strangers = text
            .lines()
            .filter_map(audit::key_of)
            .filter(|k| host_of(k) != owner)
            .count();
        if strangers > 0 {
            misplaced.push(format!("{key}: {strangers} records of other hosts"));
        }
    }
    let every_host = per_host.len() == fleet.hosts.len();
    Ok(json!({
        "objects_per_host": per_host,
        "misplaced": misplaced,
        "ok": misplaced.is_empty() && every_host,
    }))
}

/// The exact nearest-rank quantile of sorted values.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1]
}

/// `NAME_count` of a text exposition (the sum over its series).
fn exposition_count(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}_count");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits until every cfn-serve has counted what it will and Prometheus has scraped that;
/// then Prometheus' `histogram_count` and `histogram_quantile` over the fleet's summed native
/// histograms against the exact count and quantiles of the records each cfn-serve's present
/// life counted (the writers were held around each restart, so that set is known: the
/// records written after its last start that built rather than restored a snapshot).
fn check_histograms(
    fleet: &Fleet,
    serves: &mut [Serve],
    emitted: &HashMap<Key, Fate>,
    found: &Found,
) -> anyhow::Result<Value> {
    let metrics = ["fleet.s", "fleet.w"];
    let prom_name = |m: &str| format!("cfn_{}_hist_seconds", m.replace('.', "_"));
    let counts_now = || -> Vec<f64> {
        serves
            .iter()
            .map(|s| {
                let text = s.metrics_text();
                metrics
                    .iter()
                    .map(|m| exposition_count(&text, &prom_name(m)))
                    .sum()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = counts_now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = counts_now();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let served_total: f64 = last.iter().sum();
    let prom = &fleet.prometheus;
    let fleet_count = |m: &str| {
        prom.scalar(&format!("histogram_count(sum({}))", prom_name(m)), None)
            .unwrap_or(f64::NAN)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.iter().map(|m| fleet_count(m)).sum::<f64>() != served_total
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each host's present life: from its last start that did not restore.
    let boundary: Vec<u64> = fleet
        .hosts
        .iter()
        .map(|h| {
            let starts = h.run.serve_starts.lock().unwrap();
            starts.iter().rev().find(|s| !s.1).map_or(0, |s| s.0)
        })
        .collect();
    let wrote = |k: &Key| match emitted.get(k) {
        Some(Fate::Acked { wrote_ms, .. } | Fate::Unsure { wrote_ms }) => Some(*wrote_ms),
        None => None,
    };
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut per_host_exact: BTreeMap<(&str, usize), u64> = BTreeMap::new();
    for (k, line) in &found.lines {
        let Some(w) = wrote(k) else { continue };
        if w < boundary[host_of(k)] {
            continue;
        }
        let v: Value = serde_json::from_str(line)?;
        let m = v["metric"].as_str().unwrap_or_default();
        if let (Some(slot), Some(x)) = (metrics.iter().find(|&&x| x == m), v["value"].as_f64()) {
            values.entry(slot).or_default().push(x / 1000.0);
            *per_host_exact.entry((slot, host_of(k))).or_default() += 1;
        }
    }
    let mut ok = true;
    let mut out = BTreeMap::new();
    for m in metrics {
        let mut exact = values.remove(m).unwrap_or_default();
        exact.sort_by(f64::total_cmp);
        let count = fleet_count(m);
        let count_ok = count == exact.len() as f64;
        let mut quantiles = BTreeMap::new();
        for q in [0.5, 0.99] {
            let want = if exact.is_empty() {
                f64::NAN
            } else {
                exact_quantile(&exact, q)
            };
            let got = prom
                .scalar(
                    &format!("histogram_quantile({q}, sum({}))", prom_name(m)),
                    None,
                )
                .unwrap_or(f64::NAN);
            let error = (got - want) / want;
            let q_ok = error.abs() <= 0.02;
            ok &= q_ok;
            quantiles.insert(
                format!("p{}", (q * 100.0) as u32),
                json!({"exact_s": want, "prometheus_s": got, "error_percent": (error * 1e4).round() / 100.0, "ok": q_ok}),
            );
        }
        ok &= count_ok && !exact.is_empty();
        // Where a count differs, by host: the exact count, what Prometheus scraped last,
        // what cfn-serve says now.
        let scraped: BTreeMap<String, f64> = prom
            .query(
                &format!("histogram_count(sum by (host) ({}))", prom_name(m)),
                None,
            )?
            .into_iter()
            .filter_map(|(l, v)| Some((l["host"].as_str()?.to_string(), v)))
            .collect();
        let by_host: BTreeMap<&str, Value> = fleet
            .hosts
            .iter()
            .zip(serves.iter())
            .map(|(h, s)| {
                let text = s.metrics_text();
                let exact = per_host_exact.get(&(m, h.index)).copied().unwrap_or(0);
                let got = scraped.get(&h.run.host).copied().unwrap_or(f64::NAN);
                (
                    h.run.host.as_str(),
                    json!({"exact": exact, "prometheus": got, "cfn_serve": exposition_count(&text, &prom_name(m))}),
                )
            })
            .collect();
        out.insert(
            prom_name(m),
            json!({
                "records_counted": exact.len(),
                "histogram_count": count,
                "count_ok": count_ok,
                "quantiles": quantiles,
                "by_host": by_host,
            }),
        );
    }
    let per_host: BTreeMap<String, Value> = fleet
        .hosts
        .iter()
        .zip(&boundary)
        .map(|(h, b)| {
            let starts = h.run.serve_starts.lock().unwrap().clone();
            (
                h.run.host.clone(),
                json!({"life_from_ms": b, "starts": starts.iter().map(|(ms, restored)| json!({"ms": ms, "restored": restored})).collect::<Vec<_>>()}),
            )
        })
        .collect();
    Ok(json!({"metrics": out, "cfn_serve_lives": per_host, "ok": ok}))
}

/// One notification as the webhook received it.
struct Note {
    ms: u64,
    alertname: String,
    status: String,
    /// (host, status, endsAt) of each alert.
    alerts: Vec<(String, String, String)>,
}

fn notes(fleet: &Fleet) -> Vec<Note> {
    let started = fleet.clock().started;
    let mut out: Vec<Note> = fleet
        .receiver
        .requests()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            Note {
                ms: r.at.saturating_duration_since(started).as_millis() as u64,
                alertname: v["groupLabels"]["alertname"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
                status: v["status"].as_str().unwrap_or("?").to_string(),
                alerts: v["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let s = |x: &Value| x.as_str().unwrap_or("?").to_string();
                        (s(&a["labels"]["host"]), s(&a["status"]), s(&a["endsAt"]))
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by_key(|n| n.ms);
    out
}

/// Every notification against the plan: per incident, one grouped notification naming all
/// its hosts in each Alertmanager life it spanned, a resolution after it ended, none
/// before it began or naming another host; the cut-off host's alert ended by its endsAt
/// while it was cut off; no notification of anything else.
fn check_alerts(fleet: &Fleet) -> Value {
    let p: &Plan = &fleet.plan;
    let all = notes(fleet);
    let names: Vec<&str> = fleet.hosts.iter().map(|h| h.run.host.as_str()).collect();
    let lives = fleet.am_lives.lock().unwrap().clone();
    let tick = p.tick.as_millis() as u64;
    let mut problems = Vec::new();
    let mut incidents = Vec::new();
    for inc in &p.incidents {
        let want: BTreeSet<&str> = inc.hosts.iter().map(|&h| names[h]).collect();
        let mine: Vec<&Note> = all
            .iter()
            .filter(|n| n.alertname == inc.alertname)
            .collect();
        for n in &mine {
            if n.ms < inc.from_ms {
                problems.push(format!(
                    "{}: a notification at {} ms, before it began",
                    inc.alertname, n.ms
                ));
            }
            for (host, _, _) in &n.alerts {
                if !want.contains(host.as_str()) {
                    problems.push(format!(
                        "{}: names {host}, not one of its hosts",
                        inc.alertname
                    ));
                }
            }
        }
        let cut_here = inc.hosts.contains(&p.cut.0);
        let mut per_life = Vec::new();
        for &(from, to) in &lives {
            let to = to.unwrap_or(u64::MAX);
            if to < inc.from_ms || from > inc.to_ms {
                continue;
            }
            let in_life: Vec<&&Note> = mine.iter().filter(|n| (from..to).contains(&n.ms)).collect();
            let firing = in_life.iter().filter(|n| n.status == "firing").count();
            // A life that began before the incident gets it as one notification naming
            // every host. One that began during it (a restart) gets the hosts' re-sent alerts
            // with their first startsAt, older than group_wait, and Alertmanager flushes a
            // group at once when its first alert's wait is already over (dispatch.go,
            // aggrGroup.insert): the first host to re-send is notified alone and the others
            // one group_interval later. So there, every host named firing within a group
            // interval (and a tick for the hosts' runs) of the first, and no more.
            let restarted = from > inc.from_ms;
            let window = if restarted { 2 * tick + 1000 } else { 0 };
            let first_ms = in_life.first().map_or(0, |n| n.ms);
            let named: BTreeSet<&str> = in_life
                .iter()
                .filter(|n| n.ms <= first_ms + window)
                .flat_map(|n| {
                    n.alerts
                        .iter()
                        .filter(|a| a.1 == "firing")
                        .map(|a| a.0.as_str())
                })
                .collect();
            let grouped = in_life.first().is_some_and(|n| n.status == "firing") && named == want;
            // Paged once: no host named firing again after a notification of this life
            // named it resolved (updates that only resolve some hosts are not pages).
            let mut resolved_once: BTreeSet<&str> = BTreeSet::new();
            for n in &in_life {
                for (host, status, _) in &n.alerts {
                    if status == "resolved" {
                        resolved_once.insert(host);
                    } else if resolved_once.contains(host.as_str()) {
                        problems.push(format!(
                            "{}: {host} paged again at {} ms after it was resolved",
                            inc.alertname, n.ms
                        ));
                    }
                }
            }
            if !grouped {
                problems.push(format!(
                    "{}: Alertmanager's life from {from} ms named {named:?} firing at first, not all of {want:?}{}",
                    inc.alertname,
                    if restarted { " within a group interval" } else { " in one notification" }
                ));
            }
            per_life.push(json!({"alertmanager_from_ms": from, "began_during_incident": restarted, "first_ms": in_life.first().map(|n| n.ms), "first_names": named, "firing_notifications": firing}));
        }
        let resolved = mine.last().is_some_and(|n| {
            n.status == "resolved" && n.ms > inc.to_ms && n.alerts.iter().all(|a| a.1 == "resolved")
        });
        if !resolved {
            problems.push(format!("{}: no resolution after it ended", inc.alertname));
        }
        let mut cut = Value::Null;
        if cut_here {
            // Ended by endsAt while cut off: resolved before the link came back, its endsAt
            // within --alert-valid-for (3 ticks) and a tick of the cut.
            let host = names[p.cut.0];
            let ended = mine
                .iter()
                .find(|n| n.alerts.iter().any(|a| a.0 == host && a.1 == "resolved"));
            let ok = ended.is_some_and(|n| n.ms < p.cut.2 && n.ms <= p.cut.1 + 5 * tick);
            if !ok {
                problems.push(format!(
                    "{}: {host}'s alert did not end by its endsAt while it was cut off",
                    inc.alertname
                ));
            }
            cut = json!({"host": host, "resolved_notification_ms": ended.map(|n| n.ms), "its_ends_at": ended.and_then(|n| n.alerts.iter().find(|a| a.0 == host).map(|a| a.2.clone())), "ok": ok});
        }
        incidents.push(json!({
            "alertname": inc.alertname,
            "hosts": want,
            "notifications": mine.len(),
            "per_alertmanager_life": per_life,
            "resolved_after_end": resolved,
            "cut_off_host": cut,
            "last_ms": mine.last().map(|n| n.ms),
        }));
    }
    let phantom: Vec<String> = all
        .iter()
        .filter(|n| !p.incidents.iter().any(|i| i.alertname == n.alertname))
        .map(|n| format!("{} at {} ms", n.alertname, n.ms))
        .collect();
    if !phantom.is_empty() {
        problems.push(format!(
            "notifications of incidents that did not happen: {phantom:?}"
        ));
    }
    json!({
        "notifications": all.len(),
        "received": all.iter().map(|n| format!(
            "{:.1}s {} {}: {}",
            n.ms as f64 / 1000.0,
            n.alertname,
            n.status,
            n.alerts.iter().map(|a| format!("{}={}", a.0, a.1)).collect::<Vec<_>>().join(" ")
        )).collect::<Vec<_>>(),
        "alertmanager_lives": lives.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "incidents": incidents,
        "problems": problems,
        "ok": problems.is_empty(),
    })
}

/// The cut-off host (and the rebooted one) seen down by Prometheus while they were, and up
/// again at the end.
fn check_down(fleet: &Fleet) -> anyhow::Result<Value> {
    let p = &fleet.plan;
    let wall = |ms: u64| (fleet.clock().wall_start_ms + ms as i64) as f64 / 1000.0;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (what, (h, from, to)) in [("cut_off", p.cut), ("rebooted", p.reboot)] {
        let host = &fleet.hosts[h].run.host;
        let span = ((to - from) / 1000).saturating_sub(2).max(1);
        let during = fleet.prometheus.scalar(
            &format!("min_over_time(up{{job=\"cfn-serve\",host=\"{host}\"}}[{span}s])"),
            Some(wall(to) - 1.0),
        )?;
        let now = fleet
            .prometheus
            .scalar(&format!("up{{job=\"cfn-serve\",host=\"{host}\"}}"), None)?;
        let this_ok = during == 0.0 && now == 1.0;
        ok &= this_ok;
        out.insert(
            what,
            json!({"host": host, "up_min_while_down": during, "up_at_end": now, "ok": this_ok}),
        );
    }
    Ok(json!({"hosts": out, "ok": ok}))
}

/// Every host's textfile (cfn-analyze's cfn-promtext output) scraped through its
/// node_exporter.
fn check_textfiles(fleet: &Fleet) -> anyhow::Result<Value> {
    let got = fleet.prometheus.query(
        "count by (host) ({job=\"node\",__name__=~\"cfn_.+\"})",
        None,
    )?;
    let hosts: BTreeSet<String> = got
        .iter()
        .filter(|(_, v)| *v > 0.0)
        .filter_map(|(l, _)| l["host"].as_str().map(str::to_string))
        .collect();
    let ok = hosts.len() == fleet.hosts.len();
    Ok(json!({"hosts_with_cfn_series": hosts, "ok": ok}))
}

pub fn summarize(r: &Value) {
    let c = &r["checks"];
    let s = &c["stores"];
    eprintln!(
        "fleet: seed {} for {} min, {} hosts",
        r["seed"],
        r["minutes"],
        r["hosts"].as_array().map_or(0, |a| a.len())
    );
    eprintln!("fleet: faults: {}", r["faults"]);
    eprintln!(
        "fleet: stores: {} acknowledged, {} stored once, {} missing, {} duplicated, {} torn; {} acknowledged lost to the reboot of {}",
        s["acknowledged"],
        s["stored_once"],
        s["missing"],
        s["duplicated"],
        s["torn_lines"],
        c["lost_to_reboot"]["acknowledged_records"],
        c["lost_to_reboot"]["host"]
    );
    eprintln!(
        "fleet: cold: {} objects, {} replaced; prefixes {}",
        c["cold_objects"], c["cold_objects_replaced"], c["cold_prefixes"]["ok"]
    );
    eprintln!("fleet: histograms: {}", c["histograms"]["metrics"]);
    eprintln!(
        "fleet: alerts: {} notifications; problems {}",
        c["alerts"]["notifications"], c["alerts"]["problems"]
    );
    eprintln!(
        "fleet: down: {}; textfile: {}",
        c["cut_off_host_down"]["hosts"], c["textfile"]["ok"]
    );
    eprintln!(
        "fleet: left behind: {}; {}",
        c["left_behind"],
        if r["ok"] == json!(true) {
            "every check passed"
        } else {
            "CHECKS FAILED"
        }
    );
}
