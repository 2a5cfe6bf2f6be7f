//! Who went silent (contract section 10): agents that stop reporting are seen by the analysis
//! job without a second pass (cfn-agg --presence, cfn-alert's state), alerted on once each,
//! told apart from those that said they were done, and shown the same way by cfn-serve,
//! cfn-top and the textfile; a host whose analysis stopped is Prometheus' to see.

use cfn_testkit::serve::{get, start};
use cfn_testkit::{TestCommand, TestDir, peer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const T0: &str = "2026-11-27T10:00:00Z";

fn at(secs: i64) -> String {
    let ms = cfn_core::time::parse_timestamp_str(T0).unwrap() + secs * 1000;
    cfn_core::time::format_ms(ms)
}

/// One record of `agent` at T0 + `secs` (through cfn-emit, as an agent writes it).
fn emit_at(dir: &TestDir, agent: &str, secs: i64) {
    dir.cmd("cfn-emit")
        .args(["--timestamp", &at(secs), "--agent", agent, "work", "1"])
        .run()
        .success();
}

/// One analysis run at T0 + `secs`, as cfn-analyze runs it (a 60 s window here):
/// `cfn-agg --presence | cfn-alert --state ... --firing-prom ...`. Returns cfn-alert's events
/// and the run.
fn analyze(dir: &TestDir, secs: i64, rule: &str) -> (Vec<Value>, cfn_testkit::Outcome) {
    let now = at(secs);
    let aggs = dir
        .cmd("cfn-agg")
        .args(["--presence", "--window", "60s", "--now", &now])
        .arg(dir.path())
        .run();
    aggs.success();
    let out = dir
        .cmd("cfn-alert")
        .args(["--now", &now, "--rule", rule])
        .arg("--state")
        .arg(dir.join("state/alert-state.json"))
        .arg("--firing-prom")
        .arg(dir.join("state/cfn-alerts.prom"))
        .stdin(aggs.stdout())
        .run();
    let events = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (events, out)
}

fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap().to_string(),
                e["metadata"]["labels"]["agent"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_silent_agent_fires_once_and_resolves_when_it_speaks_done_and_gone_never_fire() {
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let rule = r#"silent a-* 2m critical "{agent} silent for {silence}""#;
    for a in ["a-talker", "a-stopped", "a-finished", "b-stopped"] {
        emit_at(&dir, a, 0);
    }
    dir.cmd("cfn-emit")
        .args(["--timestamp", &at(10), "--done", "a-finished"])
        .run()
        .success();
    let (events, out) = analyze(&dir, 30, rule);
    assert_eq!(summary(&events), vec![], "{}", out.stderr());
    assert_eq!(out.code(), 0);

    // Three minutes on: a-talker spoke within its two minutes, a-stopped did not; a-finished
    // said it was done; b-stopped is not watched by the rule.
    emit_at(&dir, "a-talker", 170);
    let (events, out) = analyze(&dir, 180, rule);
    assert_eq!(
        summary(&events),
        vec![(
            "firing".to_string(),
            "a-stopped".to_string(),
            "a-stopped silent for 3m 0s".to_string()
        )],
        "{}",
        out.stderr()
    );
    assert_eq!(out.code(), 1, "firing");
    let e = &events[0];
    assert_eq!(
        (
            e["alert"].as_str(),
            e["severity"].as_str(),
            e["metadata"]["stat"].as_str(),
            e["metadata"]["value"].as_f64(),
            e["metadata"]["threshold"].as_f64()
        ),
        (
            Some("agent_silent"),
            Some("critical"),
            Some("silence"),
            Some(180.0),
            Some(120.0)
        )
    );
    let prom = std::fs::read_to_string(dir.join("state/cfn-alerts.prom")).unwrap();
    for line in [
        "cfn_alert_firing{alert=\"agent_silent\",severity=\"critical\",agent=\"a-stopped\"} 1\n",
        // a-talker, and b-stopped: no rule watches it, so its learned default holds (5m
        // until it has gaps).
        "cfn_agents{state=\"active\"} 2\n",
        "cfn_agents{state=\"silent\"} 1\n",
        "cfn_agents{state=\"done\"} 1\n",
        "cfn_agents{state=\"gone\"} 0\n",
        &format!(
            "cfn_agent_last_seen_timestamp_seconds{{agent=\"a-stopped\"}} {}\n",
            cfn_core::time::parse_timestamp_str(T0).unwrap() / 1000
        ),
        "cfn_presence_untracked_records 0\n",
    ] {
        assert!(prom.contains(line), "{line:?} not in:\n{prom}");
    }

    // Once: the next run, still silent, says nothing new.
    let (events, out) = analyze(&dir, 210, rule);
    assert_eq!(summary(&events), vec![], "{}", out.stderr());
    assert_eq!(out.code(), 1, "still firing");

    // It speaks again: resolved, once.
    emit_at(&dir, "a-stopped", 230);
    emit_at(&dir, "a-talker", 230);
    let (events, _) = analyze(&dir, 240, rule);
    assert_eq!(
        summary(&events),
        vec![(
            "resolved".to_string(),
            "a-stopped".to_string(),
            "Resolved: a-stopped silent for 3m 30s".to_string()
        )]
    );
    // Past the horizon (--expect-within, 1h) nobody is expected: nothing fires.
    let (events, out) = analyze(&dir, 4 * 3600, rule);
    assert_eq!(summary(&events), vec![], "{}", out.stderr());
    assert_eq!(out.code(), 0);
    let prom = std::fs::read_to_string(dir.join("state/cfn-alerts.prom")).unwrap();
    assert!(prom.contains("cfn_agents{state=\"gone\"} 3\n"), "{prom}");
}

#[test]
fn the_analysis_job_warns_when_silence_rules_get_no_presence_lines() {
    let dir = TestDir::new();
    let agg = r#"{"metric":"m","count":1,"sum":1,"avg":1,"min":1,"max":1,"p50":1,"p95":1,"p99":1}"#;
    dir.cmd("cfn-alert")
        .args(["--rule", "silent * 5m"])
        .stdin(format!("{agg}\n"))
        .run()
        .success()
        .stderr_has("run cfn-agg with --presence");
}

/// `prlimit --data=BYTES`: the program's heap and anonymous mappings cannot pass BYTES (an
/// allocation past it fails, and the program with it). A bound the code must keep, whatever
/// the machine's load.
fn limited(dir: &TestDir, bytes: u64, tool: &str) -> TestCommand {
    let prlimit = peer("prlimit", "util-linux").expect("prlimit");
    let mut c = TestCommand::program(prlimit);
    c.arg(format!("--data={bytes}"))
        .arg(cfn_testkit::bin_path(tool))
        .env("CFN_METRICS_DIR", dir.path())
        .env("CFN_ARCHIVE_DIR", dir.join("archive"));
    c
}

#[test]
fn a_hundred_thousand_agents_are_held_in_bounded_memory_and_the_rest_counted() {
    let dir = TestDir::new();
    let extra = 500;
    let n = cfn_core::presence::MAX_TRACKED + extra;
    // The records of n agents (one each, the last `extra` also with an id over 256 bytes).
    let mut records = String::with_capacity(n * 90);
    for i in 0..n {
        records.push_str(&format!(
            "{{\"timestamp\":\"{}\",\"agent\":\"agent-{i:06}\",\"metric\":\"m\",\"value\":1}}\n",
            at((i % 50) as i64)
        ));
    }
    records.push_str(&format!(
        "{{\"timestamp\":\"{}\",\"agent\":\"{}\",\"metric\":\"m\",\"value\":1}}\n",
        at(1),
        "x".repeat(300)
    ));
    let input = dir.write("records.jsonl", &records);
    // cfn-agg keeps 100,000 agents within 160 MB of heap, and says how many records it left.
    let aggs = limited(&dir, 160 << 20, "cfn-agg")
        .args(["--presence", "--threads", "2"])
        .arg(&input)
        .run();
    aggs.success()
        .stderr_has("--presence keeps at most 100000 agents and tag values; 501 records");
    let text = aggs.stdout();
    let presence: Vec<&str> = text
        .lines()
        .filter(|l| cfn_core::presence::is_presence_line(l))
        .collect();
    assert_eq!(presence.len(), cfn_core::presence::MAX_TRACKED + 1);
    assert_eq!(
        presence.last().unwrap(),
        &r#"{"presence":"overflow","count":501,"cap":100000}"#
    );
    // cfn-alert folds them into its state within 200 MB, and counts the rest.
    let state = dir.join("state.json");
    let prom = dir.join("alerts.prom");
    let out = limited(&dir, 200 << 20, "cfn-alert")
        .args(["--now", &at(60), "--rule", "silent agent-* 5m"])
        .arg("--state")
        .arg(&state)
        .arg("--firing-prom")
        .arg(&prom)
        .stdin(text.clone())
        .run();
    out.success()
        .stderr_has("501 records of agents or tag values not tracked");
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved["presence"]["seen"].as_object().unwrap().len(),
        cfn_core::presence::MAX_TRACKED
    );
    assert_eq!(saved["presence"]["overflow"], 501);
    let prom = std::fs::read_to_string(&prom).unwrap();
    assert!(prom.contains("cfn_presence_untracked_records 501\n"));
    assert!(
        prom.contains("cfn_agents{state=\"active\"} 100000\n"),
        "{prom:.300}"
    );
    // A second run with the same agents: the state does not grow past the bound.
    let again = limited(&dir, 200 << 20, "cfn-alert")
        .args(["--now", &at(90), "--rule", "silent agent-* 5m"])
        .arg("--state")
        .arg(&state)
        .stdin(text)
        .run();
    again.success();
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved["presence"]["seen"].as_object().unwrap().len(),
        cfn_core::presence::MAX_TRACKED
    );
    assert_eq!(saved["presence"]["overflow"], 1002);
}

#[test]
fn presence_lines_are_the_same_for_any_thread_count_and_do_not_disturb_other_readers() {
    let dir = TestDir::new();
    let mut records = String::new();
    for i in 0..60_000u64 {
        let agent = format!("agent-{}", i % 300);
        let job = format!("job-{}", i % 7);
        let metric = if i == 59_999 {
            "cfn.agent.done"
        } else {
            "work"
        };
        records.push_str(&format!(
            "{{\"timestamp\":\"{}\",\"agent\":\"{agent}\",\"metric\":\"{metric}\",\"value\":{},\"tags\":{{\"job\":\"{job}\"}}}}\n",
            at((i / 10) as i64),
            i % 97
        ));
    }
    let input = dir.write("records.jsonl", &records);
    let run = |threads: &str| {
        dir.cmd("cfn-agg")
            .args(["--presence-tag", "job", "--threads", threads])
            .arg(&input)
            .run()
            .stdout()
    };
    let one = run("1");
    assert_eq!(one, run("2"));
    assert_eq!(one, run("8"));
    let lines: Vec<Value> = one
        .lines()
        .filter(|l| cfn_core::presence::is_presence_line(l))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300 + 7);
    let a0 = lines.iter().find(|l| l["agent"] == "agent-0").unwrap();
    // agent-0 writes every 300th record, one every 30 s: 200 records, 199 gaps of 30 s
    // (bucket 14: 16.4 s to 32.8 s).
    assert_eq!(
        (
            a0["first"].as_str(),
            a0["last"].as_str(),
            a0["count"].as_u64()
        ),
        (Some(at(0).as_str()), Some(at(5970).as_str()), Some(200))
    );
    assert_eq!(a0["gaps"], serde_json::json!({"14": 199}));
    let done = lines.iter().find(|l| l["agent"] == "agent-299").unwrap();
    assert_eq!(done["done"].as_str(), Some(at(5999).as_str()));
    assert!(
        lines
            .iter()
            .any(|l| l["tag"] == "job" && l["value"] == "job-3")
    );
    // The aggregates are those of a run without --presence, and cfn-promtext reads past the
    // presence lines without a word.
    let plain = dir.cmd("cfn-agg").arg(&input).run().stdout();
    assert!(one.starts_with(&plain));
    let prom = dir.cmd("cfn-promtext").stdin(one).run();
    prom.success();
    assert_eq!(prom.stderr(), "");
}

/// The analysis job as the package runs it (contrib/cfn-analyze), on a fleet host.
fn cfn_analyze(dir: &std::path::Path, am: &str) -> TestCommand {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = cfn_testkit::bin_path("cfn-emit");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = TestCommand::program("bash");
    c.arg(root.join("contrib/cfn-analyze"))
        .env("PATH", path)
        .env("CFN_METRICS_DIR", dir)
        .env("CFN_STATE_DIR", dir.join("state"))
        .env("CFN_TEXTFILE", dir.join("state/textfile/cfn.prom"))
        .env("CFN_ANALYZE_WINDOW", "5s")
        .env("CFN_SILENCE_RULES", "silent agent-* 6s critical")
        .env("CFN_HOST", "host-a")
        .env(
            "CFN_ALERT_ARGS",
            format!("--alertmanager {am} --alert-valid-for 20s --retries 1 --http-timeout 2s"),
        );
    c
}

/// An agent: a shell loop calling cfn-emit every 0.3 s, as bash agents do.
fn agent_loop(dir: &TestDir, agent: &str) -> std::process::Child {
    let bin = cfn_testkit::bin_path("cfn-emit");
    std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "while :; do {} --agent {agent} work 1 || exit 1; sleep 0.3; done",
                bin.display()
            ),
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CFN_METRICS_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, sig: &str) {
    std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
}

/// The agent names of a webhook notification's alerts with `status`.
fn agents_in(n: &Value, status: &str) -> BTreeSet<String> {
    n["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == status)
        .map(|a| a["labels"]["agent"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn five_hundred_agents_ten_stopped_or_killed_one_grouped_notification_every_view_agrees() {
    let Some(am_bin) = peer(
        "prometheus-alertmanager",
        "Debian package prometheus-alertmanager",
    ) else {
        return;
    };
    let chromium = peer("chromium", "Debian package chromium");
    let receiver = cfn_testkit::MockServer::start(|_, _| cfn_testkit::reply(200, "ok"));
    let am =
        crate::fleet::Alertmanager::start_with(&am_bin, &receiver.url(), Duration::from_secs(5));
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.join("state/textfile")).unwrap();

    // 485 agents through one cfn-emit --stdin, a record each every second.
    let steady: Vec<String> = (0..485).map(|i| format!("agent-s{i:03}")).collect();
    let mut stream = dir
        .cmd("cfn-emit")
        .arg("--stdin")
        .command()
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = stream.stdin.take().unwrap();
    let stop_stream = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (steady, stop) = (steady.clone(), stop_stream.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut batch = String::new();
                for a in &steady {
                    batch.push_str(&format!(
                        "{{\"agent\":\"{a}\",\"metric\":\"work\",\"value\":1}}\n"
                    ));
                }
                if pipe.write_all(batch.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // 15 agents of their own: 5 will be stopped, 5 killed, 5 will finish.
    let own = |kind: &str| -> Vec<String> { (0..5).map(|i| format!("agent-{kind}{i}")).collect() };
    let (stopped, killed, finished) = (own("stop"), own("kill"), own("done"));
    let mut loops: BTreeMap<String, std::process::Child> = stopped
        .iter()
        .chain(&killed)
        .chain(&finished)
        .map(|a| (a.clone(), agent_loop(&dir, a)))
        .collect();

    // The analysis every 2 s, in the background, as its timer runs it.
    let stop_analysis = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let analysis = {
        let (stop, d, url) = (stop_analysis.clone(), dir.path().to_path_buf(), am.url());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = cfn_analyze(&d, &url).run();
                assert!(
                    [0, 1].contains(&out.code()),
                    "cfn-analyze: {}",
                    out.stderr()
                );
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    let server = start(
        &dir,
        &[
            "--silent-after",
            "6s",
            "--alert-state",
            dir.join("state/alert-state.json").to_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_secs(4));

    // Five say they are done and stop; then five are stopped and five killed at once.
    for a in &finished {
        let mut l = loops.remove(a).unwrap();
        let _ = l.kill();
        let _ = l.wait();
        dir.cmd("cfn-emit").args(["--done", a]).run().success();
    }
    std::thread::sleep(Duration::from_secs(1));
    let went_silent = Instant::now();
    for a in &stopped {
        signal(&loops[a], "STOP");
    }
    for a in &killed {
        let mut l = loops.remove(a).unwrap();
        signal(&l, "KILL");
        let _ = l.wait();
    }
    let silent: BTreeSet<String> = stopped.iter().chain(&killed).cloned().collect();

    // One grouped notification holding exactly the ten, within threshold + one interval
    // (+ Alertmanager's group_wait of 5 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    let first = loop {
        let got: Vec<Value> = receiver.requests().iter().map(|r| r.json()).collect();
        if let Some(n) = got.iter().find(|n| n["status"] == "firing") {
            break n.clone();
        }
        assert!(Instant::now() < deadline, "no notification: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(first["groupLabels"]["alertname"], "agent_silent");
    assert_eq!(agents_in(&first, "firing"), silent, "{first}");
    for a in first["alerts"].as_array().unwrap() {
        assert_eq!(a["labels"]["host"], "host-a");
        let starts = cfn_core::time::parse_timestamp_str(a["startsAt"].as_str().unwrap()).unwrap();
        let stopped_at = cfn_core::time::now_ms() - went_silent.elapsed().as_millis() as i64;
        assert!(
            starts - stopped_at <= 6_000 + 2_000 + 1_500,
            "{} fired {} ms after it stopped",
            a["labels"]["agent"],
            starts - stopped_at
        );
    }

    // Every view names the same ten.
    let (_, agents) = get(server.port, "/api/agents?state=silent");
    let agents: Value = serde_json::from_str(&agents).unwrap();
    let served: BTreeSet<String> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(served, silent, "{agents}");
    assert_eq!(agents["counts"]["done"], 5);
    assert_eq!(agents["counts"]["active"], 485);
    let (_, metrics) = get(server.port, "/metrics");
    assert!(
        metrics.contains("cfn_agents{state=\"silent\"} 10\n"),
        "{metrics:.2000}"
    );
    let textfile = std::fs::read_to_string(dir.join("state/textfile/cfn-alerts.prom")).unwrap();
    assert!(
        textfile.contains("cfn_agents{state=\"silent\"} 10\n"),
        "{textfile:.2000}"
    );
    let firing: BTreeSet<String> = textfile
        .lines()
        .filter(|l| l.starts_with("cfn_alert_firing{alert=\"agent_silent\""))
        .filter_map(|l| {
            l.split("agent=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .collect();
    assert_eq!(firing, silent);
    let top = dir
        .cmd("cfn-top")
        .args([
            "--once",
            "--agents",
            "--silent-after",
            "6s",
            "--width",
            "120",
        ])
        .run();
    top.success();
    let top_silent: BTreeSet<String> = top
        .stdout()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("silent"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(top_silent, silent, "{}", top.stdout());
    if let Some(chromium) = chromium {
        let mut b = cfn_testkit::browser::Browser::launch(&chromium, (1280, 900), "UTC");
        b.open(
            &format!("http://127.0.0.1:{}/?agents=silent", server.port),
            "document.body.dataset.ready === '1'",
        );
        let shown = b.eval(
            "Array.from(document.querySelectorAll('#agents tbody tr[data-state=silent]')).map(r => r.dataset.agent).sort()",
        );
        let shown: BTreeSet<String> = shown
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(shown, silent);
        // Each name links to that agent's charts (the page's own URL state).
        let href = b.eval("document.querySelector('#agents tbody tr a').getAttribute('href')");
        assert!(href.as_str().unwrap().contains("agent=agent-"), "{href}");
    }

    // Back: the stopped continue, the killed restart; all ten resolve, and the finished
    // never appeared in any notification.
    for a in &stopped {
        signal(&loops[a], "CONT");
    }
    for a in &killed {
        loops.insert(a.clone(), agent_loop(&dir, a));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got: Vec<Value> = receiver.requests().iter().map(|r| r.json()).collect();
        let resolved: BTreeSet<String> =
            got.iter().flat_map(|n| agents_in(n, "resolved")).collect();
        if resolved == silent {
            let mentioned: BTreeSet<String> = got
                .iter()
                .flat_map(|n| {
                    agents_in(n, "firing")
                        .into_iter()
                        .chain(agents_in(n, "resolved"))
                })
                .collect();
            assert_eq!(mentioned, silent, "only the ten were ever notified");
            let firing_notes = got
                .iter()
                .filter(|n| !agents_in(n, "firing").is_empty())
                .count();
            assert_eq!(firing_notes, 1, "one grouped notification: {got:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not all resolved: {resolved:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    stop_analysis.store(true, std::sync::atomic::Ordering::Relaxed);
    stop_stream.store(true, std::sync::atomic::Ordering::Relaxed);
    analysis.join().unwrap();
    feeder.join().unwrap();
    let _ = stream.wait();
    for (_, mut l) in loops {
        let _ = l.kill();
        let _ = l.wait();
    }
}

#[test]
fn a_host_whose_analysis_stopped_fires_through_a_real_prometheus_and_alertmanager() {
    let (Some(prometheus), Some(promtool), Some(node_exporter), Some(am_bin)) = (
        peer("prometheus", "Debian package prometheus"),
        peer("promtool", "Debian package prometheus"),
        peer(
            "prometheus-node-exporter",
            "Debian package prometheus-node-exporter",
        ),
        peer(
            "prometheus-alertmanager",
            "Debian package prometheus-alertmanager",
        ),
    ) else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = root.join("contrib/prometheus/cfn-rules.yml");
    let check = TestCommand::program(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .run();
    check.success();
    assert!(
        check.stdout().contains("SUCCESS: 4 rules found"),
        "{}",
        check.stdout()
    );

    let receiver = cfn_testkit::MockServer::start(|_, _| cfn_testkit::reply(200, "ok"));
    let am =
        crate::fleet::Alertmanager::start_with(&am_bin, &receiver.url(), Duration::from_secs(1));
    let dir = TestDir::new();
    // The textfile as cfn-analyze left it an hour ago: the analysis stopped.
    let textfile = dir.write("textfile/cfn.prom", "cfn_agents{state=\"active\"} 3\n");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&textfile)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let node_port = cfn_testkit::free_port();
    let mut node = std::process::Command::new(node_exporter)
        .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            dir.join("textfile").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let config = dir.write(
        "prometheus.yml",
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{}']\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n",
            rules.display(),
            am.port
        ),
    );
    let _prom = crate::fleet::run_prometheus(&prometheus, &dir, &config, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let fired = loop {
        let got: Vec<Value> = receiver.requests().iter().map(|r| r.json()).collect();
        if let Some(n) = got.iter().find(|n| {
            n["groupLabels"]["alertname"] == "CfnAnalysisStale" && n["status"] == "firing"
        }) {
            break n.clone();
        }
        assert!(
            Instant::now() < deadline,
            "CfnAnalysisStale did not fire: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let alert = &fired["alerts"][0];
    assert_eq!(
        alert["labels"]["instance"],
        format!("127.0.0.1:{node_port}")
    );
    assert_eq!(alert["labels"]["severity"], "critical");
    // The analysis runs again (the file rewritten): the alert resolves.
    std::fs::write(&textfile, "cfn_agents{state=\"active\"} 3\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<Value> = receiver.requests().iter().map(|r| r.json()).collect();
        if got.iter().any(|n| {
            n["groupLabels"]["alertname"] == "CfnAnalysisStale" && n["status"] == "resolved"
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CfnAnalysisStale did not resolve: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = node.kill();
    let _ = node.wait();
}
