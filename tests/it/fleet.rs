//! Beyond one host: cfn-serve's cumulative histograms counted once per appended record, clean
//! for promtool, and three cfn-serve "hosts" scraped by a real Prometheus whose
//! `histogram_quantile` over the summed buckets lands in the bucket of the exact fleet p99.

use cfn_testkit::gendata::Rng;
use cfn_testkit::serve::{Server, get, start};
use cfn_testkit::{TestCommand, TestDir, free_port, peer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The default bounds cfn-serve uses for a metric in milliseconds.
const MS_BOUNDS: [f64; 16] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0,
];

/// Appends `lines` (`METRIC VALUE [UNIT]`) for `agent` through cfn-emit --stdin.
fn emit(dir: &TestDir, agent: &str, lines: &str) {
    dir.cmd("cfn-emit")
        .args(["--stdin", "--agent", agent])
        .stdin(lines.to_string())
        .run()
        .success();
}

/// `name{labels} value` lines of an exposition, keyed by everything before the value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn histograms_count_each_appended_record_once_and_promtool_accepts_them() {
    let dir = TestDir::new();
    let archive = dir.join("archive");
    std::fs::create_dir(&archive).unwrap();
    // Already there at start-up: the past, not counted.
    emit(&dir, "a1", &"task.latency 7 ms\n".repeat(10));
    let server = start(
        &dir,
        &[
            "--archive-dir",
            archive.to_str().unwrap(),
            "--histogram-by",
            "agent",
            "--buckets",
            "queue.*=0,5,10",
        ],
    );
    let mut rng = Rng::new(3);
    let mut expected: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut queue = Vec::new();
    for round in 0..3 {
        for agent in ["a1", "a2"] {
            let mut lines = String::new();
            for _ in 0..200 {
                let v = (rng.unit() * 3000.0 * 10.0).round() / 10.0;
                lines.push_str(&format!("task.latency {v} ms\n"));
                expected.entry(agent).or_default().push(v);
                let q = (rng.unit() * 14.0).floor();
                lines.push_str(&format!("queue.depth {q}\n"));
                queue.push(q);
            }
            emit(&dir, agent, &lines);
        }
        // Let the server read some, then archive and trim everything between rounds.
        let (status, _) = get(server.port, &format!("/metrics?round={round}"));
        assert_eq!(status, 200);
        dir.cmd("cfn-archive")
            .args([
                "--archive-dir",
                archive.to_str().unwrap(),
                "run",
                "--hot",
                "0s",
                "--trim-grace",
                "0s",
            ])
            .run()
            .success();
    }
    let (status, text) = get(server.port, "/metrics?final=1");
    assert_eq!(status, 200, "{text}");
    let s = samples(&text);
    for (agent, values) in &expected {
        let mut cumulative = 0;
        for b in MS_BOUNDS {
            cumulative = values.iter().filter(|&&v| v <= b).count();
            let le = format!("{}", b / 1000.0);
            let key =
                format!("cfn_task_latency_hist_seconds_bucket{{agent=\"{agent}\",le=\"{le}\"}}");
            assert_eq!(s.get(&key), Some(&(cumulative as f64)), "{key} in\n{text}");
        }
        assert_eq!(cumulative, values.len());
        let inf = format!("cfn_task_latency_hist_seconds_bucket{{agent=\"{agent}\",le=\"+Inf\"}}");
        assert_eq!(s[&inf], values.len() as f64);
        let count = format!("cfn_task_latency_hist_seconds_count{{agent=\"{agent}\"}}");
        assert_eq!(
            s[&count], 600.0,
            "each record once, none from before start-up"
        );
        let sum = format!("cfn_task_latency_hist_seconds_sum{{agent=\"{agent}\"}}");
        let want: f64 = values.iter().sum::<f64>() / 1000.0;
        assert!(
            (s[&sum] - want).abs() < 1e-6 * want,
            "{sum} {} vs {want}",
            s[&sum]
        );
    }
    // --buckets: counts, no unit, its own bounds; agents summed here.
    let total_at = |le: &str| -> f64 {
        ["a1", "a2"]
            .iter()
            .map(|a| s[&format!("cfn_queue_depth_hist_bucket{{agent=\"{a}\",le=\"{le}\"}}")])
            .sum()
    };
    assert_eq!(
        total_at("0"),
        queue.iter().filter(|&&q| q <= 0.0).count() as f64
    );
    assert_eq!(
        total_at("5"),
        queue.iter().filter(|&&q| q <= 5.0).count() as f64
    );
    assert_eq!(total_at("+Inf"), queue.len() as f64);
    // The summary families are still there under their own names.
    assert!(text.contains("# TYPE cfn_task_latency summary"), "{text}");
    assert!(text.contains("# TYPE cfn_task_latency_hist_seconds histogram"));
    let Some(promtool) = peer("promtool", "Debian package prometheus") else {
        return;
    };
    let check = TestCommand::program(&promtool)
        .args(["check", "metrics"])
        .stdin(text.clone())
        .run();
    check.success();
    assert_eq!(check.stdout() + &check.stderr(), "", "promtool findings");
}

#[test]
fn contrib_prometheus_configs_pass_promtool() {
    let Some(promtool) = peer("promtool", "Debian package prometheus") else {
        return;
    };
    for f in ["prometheus.yml", "agent-remote-write.yml"] {
        let out = TestCommand::program(&promtool)
            .args(["check", "config"])
            .arg(root().join("contrib/prometheus").join(f))
            .run();
        out.success();
        assert!(out.stdout().contains("SUCCESS"), "{f}: {out:?}");
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A PromQL instant query; the result vector's samples (labels as JSON text, value).
fn query(port: u16, promql: &str) -> Result<Vec<(String, f64)>, String> {
    let (status, body) = get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    );
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{promql}: {body}"));
    }
    Ok(v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["metric"].to_string(),
                r["value"][1]
                    .as_str()
                    .unwrap_or("NaN")
                    .parse()
                    .unwrap_or(f64::NAN),
            )
        })
        .collect())
}

pub(crate) struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(bin: &Path, dir: &TestDir, targets: &[u16]) -> Prometheus {
    start_prometheus_with(bin, dir, targets, &[])
}

/// [`start_prometheus`] with `extra` flags (a feature).
fn start_prometheus_with(bin: &Path, dir: &TestDir, targets: &[u16], extra: &[&str]) -> Prometheus {
    let list = targets
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.write(
        "prometheus.yml",
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: cfn-serve\n    static_configs:\n      - targets: [{list}]\n"
        ),
    );
    run_prometheus(bin, dir, &config, extra)
}

/// Prometheus on a free port with `config` and `extra` flags (a feature), storage in `dir`.
pub(crate) fn run_prometheus(
    bin: &Path,
    dir: &TestDir,
    config: &Path,
    extra: &[&str],
) -> Prometheus {
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    for _ in 0..5 {
        let port = free_port();
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .unwrap();
        let mut p = Prometheus { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                break; // the port was taken after all: try another
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && get(port, "/-/ready").0 == 200
            {
                return p;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = p.child.kill();
    }
    panic!(
        "prometheus did not start:\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
}

#[test]
fn three_hosts_through_a_real_prometheus_give_the_fleet_p99() {
    let Some(prometheus) = peer("prometheus", "Debian package prometheus") else {
        return;
    };
    let hosts: Vec<TestDir> = (0..3).map(|_| TestDir::new()).collect();
    let servers: Vec<Server> = hosts.iter().map(|d| start(d, &[])).collect();
    let prom_dir = TestDir::new();
    let prom = start_prometheus(
        &prometheus,
        &prom_dir,
        &servers.iter().map(|s| s.port).collect::<Vec<_>>(),
    );
    // Three different distributions, so no host's p99 is the fleet's. Sent in two halves
    // with a scrape between, so rate() over the histograms has an increase to see (a series
    // is born with its first record, so its first scrape is not an increase).
    let mut rng = Rng::new(11);
    let mut all = Vec::new();
    let wait_for = |want: f64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = query(prom.port, "sum(cfn_task_latency_hist_seconds_count)").unwrap();
            if got.first().map(|g| g.1) == Some(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus has {got:?}, want {want}; targets: {}",
                get(prom.port, "/api/v1/targets").1
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    for half in 0..2 {
        for (i, host) in hosts.iter().enumerate() {
            let mut lines = String::new();
            for _ in 0..(500 + 350 * i) {
                let v: f64 = match i {
                    0 => 1.0 + rng.unit() * 200.0,
                    1 => 150.0 + rng.unit() * 1800.0,
                    _ => (3.0 + 2.0 * (rng.unit() + rng.unit() - 1.0)).exp(),
                };
                let v = (v * 10.0).round() / 10.0;
                all.push(v);
                lines.push_str(&format!("task.latency {v} ms\n"));
            }
            emit(host, &format!("host{i}-agent{half}"), &lines);
        }
        wait_for(all.len() as f64);
    }
    let total = all.len() as f64;
    all.sort_by(f64::total_cmp);
    let exact = all[((0.99 * total).ceil() as usize) - 1] / 1000.0;
    let upper_i = MS_BOUNDS.iter().position(|&b| b / 1000.0 >= exact).unwrap();
    let (lower, upper) = (
        if upper_i == 0 {
            0.0
        } else {
            MS_BOUNDS[upper_i - 1] / 1000.0
        },
        MS_BOUNDS[upper_i] / 1000.0,
    );
    let got = query(
        prom.port,
        "histogram_quantile(0.99, sum by (le) (cfn_task_latency_hist_seconds_bucket))",
    )
    .unwrap();
    let p99 = got[0].1;
    assert!(
        lower <= p99 && p99 <= upper,
        "fleet p99 {p99} s is outside the bucket ({lower}, {upper}] of the exact {exact} s"
    );
    // The dashboard's fleet panel queries the native histograms (a Prometheus with them
    // on): every_grafana_panel_returns_data_from_a_real_prometheus runs it.
}

// ---- Fleet alerting: cfn-alert on several "hosts" (CFN_HOST) through a real Alertmanager
// (Debian's prometheus-alertmanager) to a webhook receiver of the test's.

/// An Alertmanager started by the test on loopback, clustering off, grouping by alertname
/// with a short group_wait, notifying `receiver`.
pub(crate) struct Alertmanager {
    child: Option<std::process::Child>,
    bin: PathBuf,
    pub(crate) port: u16,
    dir: TestDir,
    receiver: String,
}

impl Alertmanager {
    fn start(receiver: &str) -> Option<Self> {
        let bin = peer(
            "prometheus-alertmanager",
            "Debian package prometheus-alertmanager",
        )?;
        Some(Self::start_with(&bin, receiver, Duration::from_secs(2)))
    }

    /// Alertmanager `bin` grouping by alertname, waiting `group_wait` before a group's first
    /// notification.
    pub(crate) fn start_with(bin: &Path, receiver: &str, group_wait: Duration) -> Self {
        let mut am = Self {
            child: None,
            bin: bin.to_path_buf(),
            port: free_port(),
            dir: TestDir::new(),
            receiver: receiver.to_string(),
        };
        am.dir.write(
            "am.yml",
            cfn_testkit::alertmanager::config(
                &am.receiver,
                group_wait,
                Duration::from_secs(1),
                "1h",
            ),
        );
        am.run();
        am
    }

    /// Starts (again) on the same port and storage.
    fn run(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let child = cfn_testkit::alertmanager::command(&self.bin, self.dir.path(), &listen)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while get_status(self.port, "/-/ready") != Some(200) {
            assert!(Instant::now() < deadline, "alertmanager did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The alerts Alertmanager holds for `alertname`: (host, state).
    fn alerts(&self, alertname: &str) -> BTreeMap<String, String> {
        let (_, body) = get(self.port, "/api/v2/alerts");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .map(|a| {
                (
                    a["labels"]["host"].as_str().unwrap().to_string(),
                    a["status"]["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
    }
}

fn get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn post_json(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// One evaluation on host `host`: coordination.time's max is `value` (the rule fires over
/// 100), state kept per host in `dir`.
fn alert_run(dir: &TestDir, host: &str, value: u32, rule: &str, ams: &[String]) -> i32 {
    let agg = format!(
        "{{\"metric\":\"coordination.time\",\"agent\":\"agent-1\",\"count\":1,\"sum\":{value},\"avg\":{value},\"min\":{value},\"max\":{value},\"p50\":{value},\"p95\":{value},\"p99\":{value}}}\n"
    );
    let mut cmd = dir.cmd("cfn-alert");
    cmd.env("CFN_HOST", host)
        .env("CFN_HTTP_BACKOFF_MS", "20")
        .args([
            "--state",
            dir.join(&format!("state-{host}.json")).to_str().unwrap(),
        ])
        .args([
            "--rule",
            &format!("coordination.time max > 100 critical name={rule}"),
            "--retries",
            "1",
            "--http-timeout",
            "2s",
        ])
        .stdin(agg);
    for am in ams {
        cmd.args(["--alertmanager", am]);
    }
    cmd.run().code()
}

/// Waits until `server` has received at least `n` notifications; returns them.
fn notifications(
    server: &cfn_testkit::MockServer,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let got: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()).collect();
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hosts_of(notification: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = notification["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["host"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn three_hosts_firing_one_rule_reach_the_receiver_as_one_grouped_notification() {
    let receiver = cfn_testkit::MockServer::start(|_, _| cfn_testkit::reply(200, "ok"));
    let Some(am) = Alertmanager::start(&receiver.url()) else {
        return;
    };
    let dir = TestDir::new();
    let ams = [am.url()];
    for host in ["h1", "h2", "h3"] {
        assert_eq!(alert_run(&dir, host, 500, "slow_coordination", &ams), 1);
    }
    let got = notifications(&receiver, 1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "one grouped notification: {got:?}");
    assert_eq!(got[0]["groupLabels"]["alertname"], "slow_coordination");
    assert_eq!(
        hosts_of(&got[0]),
        [("h1", "firing"), ("h2", "firing"), ("h3", "firing")]
            .map(|(h, s)| (h.to_string(), s.to_string()))
    );
    let a = &got[0]["alerts"][0];
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["metric"], "coordination.time");
    assert_eq!(a["labels"]["agent"], "agent-1");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("500")
    );

    // h2 resolves; h1 and h3 keep firing, run after run: no flapping between hosts.
    assert_eq!(alert_run(&dir, "h2", 5, "slow_coordination", &ams), 0);
    for host in ["h1", "h3"] {
        assert_eq!(alert_run(&dir, host, 500, "slow_coordination", &ams), 1);
    }
    let held = am.alerts("slow_coordination");
    assert_eq!(
        held.keys().cloned().collect::<Vec<_>>(),
        ["h1", "h3"],
        "h2 resolved: {held:?}"
    );
    let got = notifications(&receiver, 2, Duration::from_secs(10));
    let last = got.last().unwrap();
    assert_eq!(
        hosts_of(last),
        [("h1", "firing"), ("h2", "resolved"), ("h3", "firing")]
            .map(|(h, s)| (h.to_string(), s.to_string()))
    );
    // The resolution is sent again on the next run, and the state remembers it until then.
    let state = std::fs::read_to_string(dir.join("state-h2.json")).unwrap();
    assert!(state.contains("\"resolved\""), "{state}");
}

#[test]
fn alertmanager_down_is_75_and_the_alert_arrives_after_the_next_run() {
    let receiver = cfn_testkit::MockServer::start(|_, _| cfn_testkit::reply(200, "ok"));
    let Some(mut am) = Alertmanager::start(&receiver.url()) else {
        return;
    };
    am.stop();
    let dir = TestDir::new();
    let ams = [am.url()];
    assert_eq!(alert_run(&dir, "h1", 500, "outage_rule", &ams), 75);
    am.run();
    assert!(am.alerts("outage_rule").is_empty());
    assert_eq!(alert_run(&dir, "h1", 500, "outage_rule", &ams), 1);
    assert_eq!(am.alerts("outage_rule").len(), 1);
    let got = notifications(&receiver, 1, Duration::from_secs(15));
    assert_eq!(
        hosts_of(&got[0]),
        [("h1".to_string(), "firing".to_string())]
    );
}

#[test]
fn an_ha_pair_both_hold_the_alert_and_a_silence_keeps_it_from_the_receiver() {
    let silenced_rx = cfn_testkit::MockServer::start(|_, _| cfn_testkit::reply(200, "ok"));
    let open_rx = cfn_testkit::MockServer::start(|_, _| cfn_testkit::reply(200, "ok"));
    let Some(am1) = Alertmanager::start(&silenced_rx.url()) else {
        return;
    };
    let Some(am2) = Alertmanager::start(&open_rx.url()) else {
        return;
    };
    // A silence on the first, made through Alertmanager's API.
    let now = cfn_core::time::now_ms();
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "quiet_rule", "isRegex": false, "isEqual": true}],
        "startsAt": cfn_core::time::format_ms(now - 60_000),
        "endsAt": cfn_core::time::format_ms(now + 3_600_000),
        "createdBy": "cfn-metrics tests",
        "comment": "maintenance",
    });
    let (status, body) = post_json(am1.port, "/api/v2/silences", &silence.to_string());
    assert_eq!(status, 200, "{body}");
    let dir = TestDir::new();
    let ams = [am1.url(), am2.url()];
    assert_eq!(alert_run(&dir, "h7", 500, "quiet_rule", &ams), 1);
    assert_eq!(am1.alerts("quiet_rule")["h7"], "suppressed");
    assert_eq!(am2.alerts("quiet_rule")["h7"], "active");
    // The open one notifies; the silenced one does not.
    assert_eq!(notifications(&open_rx, 1, Duration::from_secs(15)).len(), 1);
    std::thread::sleep(Duration::from_secs(3));
    assert!(silenced_rx.requests().is_empty(), "the silence held");
}

#[test]
fn contrib_alertmanager_config_passes_amtool() {
    let Some(amtool) = peer("amtool", "Debian package prometheus-alertmanager") else {
        return;
    };
    let out = TestCommand::program(amtool)
        .arg("check-config")
        .arg(root().join("contrib/alertmanager/alertmanager.yml"))
        .run();
    out.success();
    assert!(out.stdout().contains("SUCCESS"), "{}", out.stdout());
}

// ---- Fleet percentiles from native histograms: three hosts with a lognormal, a bimodal and
// a Pareto distribution, scraped in protobuf by a Prometheus with native histograms on.

/// A standard normal value (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let (u, v) = (rng.unit().max(1e-12), rng.unit());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// The three hosts' values in ms: lognormal around 40 ms, bimodal (fast cache hits and slow
/// misses), Pareto with a long tail.
fn fleet_values(rng: &mut Rng, host: usize, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let v = match host {
                0 => (40f64.ln() + 0.8 * normal(rng)).exp(),
                1 if rng.unit() < 0.7 => (5f64.ln() + 0.3 * normal(rng)).exp(),
                1 => (900f64.ln() + 0.25 * normal(rng)).exp(),
                _ => 20.0 / rng.unit().max(1e-9).powf(1.0 / 1.5),
            };
            (v * 1000.0).round() / 1000.0
        })
        .collect()
}

/// What `histogram_quantile` answers from the default classic buckets for sorted values in
/// ms (in seconds): the bucket holding the rank, interpolated linearly inside it.
fn classic_estimate(sorted_ms: &[f64], q: f64) -> f64 {
    let rank = q * sorted_ms.len() as f64;
    let mut lower = 0.0;
    let mut below = 0usize;
    for b in MS_BOUNDS {
        let upto = sorted_ms.partition_point(|&v| v <= b);
        if upto as f64 >= rank {
            let inside = (upto - below) as f64;
            return (lower + (b - lower) * ((rank - below as f64) / inside)) / 1000.0;
        }
        (lower, below) = (b, upto);
    }
    lower / 1000.0
}

/// The exact nearest-rank `q` quantile of sorted values.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1]
}

#[test]
fn native_histograms_give_fleet_quantiles_within_two_percent_through_a_real_prometheus() {
    let Some(prometheus) = peer("prometheus", "Debian package prometheus") else {
        return;
    };
    let hosts: Vec<TestDir> = (0..3).map(|_| TestDir::new()).collect();
    let servers: Vec<Server> = hosts.iter().map(|d| start(d, &[])).collect();
    let dir = TestDir::new();
    let prom = start_prometheus_with(
        &prometheus,
        &dir,
        &servers.iter().map(|s| s.port).collect::<Vec<_>>(),
        &["--enable-feature=native-histograms"],
    );
    let mut rng = Rng::new(24);
    let mut all = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let values = fleet_values(&mut rng, i, 1500 + 500 * i);
        let lines: String = values
            .iter()
            .map(|v| format!("coordination.time {v} ms\n"))
            .collect();
        all.extend(values);
        emit(host, &format!("host{i}-agent"), &lines);
    }
    let total = all.len() as f64;
    let count_query = "histogram_count(sum(cfn_coordination_time_hist_seconds))";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = query(prom.port, count_query).unwrap();
        if got.first().map(|g| g.1) == Some(total) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus counts {got:?}, want {total}; targets: {}",
            get(prom.port, "/api/v1/targets").1
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    all.sort_by(f64::total_cmp);
    let mut report = String::new();
    for q in [0.5, 0.9, 0.99, 0.999] {
        let exact = exact_quantile(&all, q) / 1000.0;
        let got = query(
            prom.port,
            &format!("histogram_quantile({q}, sum(cfn_coordination_time_hist_seconds))"),
        )
        .unwrap()[0]
            .1;
        let error = (got - exact) / exact;
        let classic = (classic_estimate(&all, q) - exact) / exact;
        report.push_str(&format!(
            "q{q}: exact {exact:.6} s, native {got:.6} s ({:+.3}%), classic buckets would give {:+.1}%\n",
            error * 100.0,
            classic * 100.0
        ));
        assert!(error.abs() < 0.02, "{report}");
    }
    eprintln!("native histogram fleet quantiles (3 hosts, {total} records):\n{report}");
}

#[test]
fn prometheus_agent_mode_as_shipped_remote_writes_three_hosts_into_victoria_metrics() {
    let Some(prometheus) = peer("prometheus", "Debian package prometheus") else {
        return;
    };
    let Some(victoria) = peer("victoria-metrics", "Debian package victoria-metrics") else {
        return;
    };
    let hosts: Vec<TestDir> = (0..3).map(|_| TestDir::new()).collect();
    let servers: Vec<Server> = hosts.iter().map(|d| start(d, &[])).collect();
    // VictoriaMetrics on loopback.
    let vm_dir = TestDir::new();
    let vm_port = free_port();
    let mut vm = std::process::Command::new(victoria)
        .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
        .arg(format!(
            "-storageDataPath={}",
            vm_dir.join("data").display()
        ))
        .arg("-search.latencyOffset=0s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_status(vm_port, "/health") != Some(200) {
        assert!(Instant::now() < deadline, "victoria-metrics did not start");
        if let Ok(Some(s)) = vm.try_wait() {
            panic!("victoria-metrics exited: {s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _vm = Kill(vm);
    // The shipped agent configuration: only the targets, the URL and the interval change.
    let shipped =
        std::fs::read_to_string(root().join("contrib/prometheus/agent-remote-write.yml")).unwrap();
    let targets = servers
        .iter()
        .map(|s| format!("'127.0.0.1:{}'", s.port))
        .collect::<Vec<_>>()
        .join(", ");
    let config_text = shipped
        .replace("['127.0.0.1:3001']", &format!("[{targets}]"))
        .replace(
            "http://victoria.example.internal:8428/api/v1/write",
            &format!("http://127.0.0.1:{vm_port}/api/v1/write"),
        )
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    assert_ne!(config_text, shipped);
    let agent_dir = TestDir::new();
    let config = agent_dir.write("agent.yml", config_text);
    // The same hosts scraped by an ordinary Prometheus too, to compare with.
    let prom_dir = TestDir::new();
    let prom = start_prometheus(
        &prometheus,
        &prom_dir,
        &servers.iter().map(|s| s.port).collect::<Vec<_>>(),
    );
    let agent_log = std::fs::File::create(agent_dir.join("agent.log")).unwrap();
    let agent_port = free_port();
    let agent = std::process::Command::new(&prometheus)
        .arg("--enable-feature=agent")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.agent.path={}",
            agent_dir.join("wal").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{agent_port}"))
        .stdout(agent_log.try_clone().unwrap())
        .stderr(agent_log)
        .spawn()
        .unwrap();
    let _agent = Kill(agent);
    let mut rng = Rng::new(7);
    let mut total = 0usize;
    for (i, host) in hosts.iter().enumerate() {
        let values = fleet_values(&mut rng, i, 400 + 100 * i);
        total += values.len();
        let lines: String = values
            .iter()
            .map(|v| format!("coordination.time {v} ms\n"))
            .collect();
        emit(host, &format!("host{i}-agent"), &lines);
    }
    let count = "sum(cfn_coordination_time_hist_seconds_count)";
    let p99 = "histogram_quantile(0.99, sum by (le) (cfn_coordination_time_hist_seconds_bucket))";
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let in_vm = query(vm_port, count).unwrap_or_default();
        let in_prom = query(prom.port, count).unwrap_or_default();
        if in_vm.first().map(|g| g.1) == Some(total as f64)
            && in_prom.first().map(|g| g.1) == Some(total as f64)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "VictoriaMetrics has {in_vm:?}, Prometheus {in_prom:?}, want {total}; agent log:\n{}",
            std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let from_vm = query(vm_port, p99).unwrap()[0].1;
    let from_prom = query(prom.port, p99).unwrap()[0].1;
    assert!(
        (from_vm - from_prom).abs() <= 1e-9 * from_prom.abs(),
        "classic p99: VictoriaMetrics {from_vm}, Prometheus {from_prom}"
    );
}

/// Issue 38: every panel of the shipped Grafana dashboard, its variables filled in as Grafana
/// would, returns data from a real Prometheus (native histograms on) scraping a cfn-serve and
/// node_exporter's textfile collector over cfn-analyze's textfiles; the fleet panel queries
/// the native histograms, not classic buckets.
#[test]
fn every_grafana_panel_returns_data_from_a_real_prometheus() {
    let (Some(prometheus), Some(exporter)) = (
        peer("prometheus", "Debian package prometheus"),
        peer(
            "prometheus-node-exporter",
            "Debian package prometheus-node-exporter",
        ),
    ) else {
        return;
    };
    let host = TestDir::new();
    let server = start(&host, &[]);
    let textdir = host.join("textfile");
    std::fs::create_dir_all(&textdir).unwrap();
    let exporter_port = free_port();
    let mut exporter = std::process::Command::new(exporter)
        .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
        .args(["--collector.disable-defaults", "--collector.textfile"])
        .arg(format!(
            "--collector.textfile.directory={}",
            textdir.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = TestDir::new();
    let config = dir.write(
        "prometheus.yml",
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: cfn-serve\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n",
            server.port
        ),
    );
    let prom = run_prometheus(
        &prometheus,
        &dir,
        &config,
        &["--enable-feature=native-histograms"],
    );
    // Records in two halves with scrapes between (rate() needs an increase), then the
    // analysis as the package runs it: the textfile and the firing alerts' textfile.
    let analyze = || {
        let aggs = host
            .cmd("cfn-cat")
            .env("CFN_METRICS_DIR", host.path())
            .args(["--since", "1h"])
            .run();
        let aggs = host
            .cmd("cfn-agg")
            .args(["--by", "agent"])
            .stdin(aggs.success().stdout())
            .run();
        let aggs = aggs.success().stdout();
        host.cmd("cfn-promtext")
            .arg("--base-units")
            .arg("-o")
            .arg(textdir.join("cfn.prom"))
            .stdin(aggs.clone())
            .run()
            .success();
        host.cmd("cfn-alert")
            .arg("--firing-prom")
            .arg(textdir.join("cfn-alerts.prom"))
            .stdin(aggs)
            .run();
    };
    let wait_for = |promql: &str, want: f64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = query(prom.port, promql).unwrap();
            if got.first().is_some_and(|g| g.1 >= want) {
                return;
            }
            assert!(Instant::now() < deadline, "{promql}: {got:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    for (half, n) in [(0, 200), (1, 200)] {
        let lines: String = (0..n)
            .map(|i| {
                format!(
                    "coordination.time {} ms\n",
                    100 + (i * 37 + half * 11) % 900
                )
            })
            .collect();
        emit(&host, "agent-7", &lines);
        emit(&host, "agent-8", "coordination.time 15000 ms\n");
        analyze();
        wait_for(
            "histogram_count(sum(cfn_coordination_time_hist_seconds))",
            f64::from((half + 1) * (n + 1)),
        );
        std::thread::sleep(Duration::from_millis(2500));
    }
    wait_for("count(cfn_alert_firing == 1)", 1.0);
    // Each panel's query, with the variables as Grafana fills them for this host.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("contrib/grafana/cfn-metrics-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let promql = expr
                .replace("${fleet_metric}", "coordination_time_hist_seconds")
                .replace("$fleet_metric", "coordination_time_hist_seconds")
                .replace("${metric}", "coordination_time_seconds")
                .replace("$metric", "coordination_time_seconds")
                .replace("$agent", ".*")
                .replace("$__rate_interval", "1m");
            let got = query(prom.port, &promql).unwrap();
            assert!(
                got.iter().any(|(_, v)| v.is_finite()),
                "panel {:?}: {promql} returned {got:?}",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 11, "every target of every panel");
    let _ = exporter.kill();
    let _ = exporter.wait();
}
