//! cfn-alert end to end: rules, state, and real HTTP deliveries to a local server.

use cfn_testkit::{MockServer, TestDir, reply};
use serde_json::Value;

fn agg(metric: &str, stat: &str, value: f64) -> String {
    let mut v = serde_json::json!({"metric": metric, "count": 3, "sum": 1, "avg": 1, "min": 1, "max": 1, "p50": 1, "p95": 1, "p99": 1});
    v[stat] = serde_json::json!(value);
    format!("{v}\n")
}

fn agg_labeled(metric: &str, agent: &str, phase: &str, max: f64) -> String {
    format!(
        "{}\n",
        serde_json::json!({"metric": metric, "agent": agent, "tags": {"phase": phase}, "count": 1, "sum": max, "avg": max, "min": max, "max": max, "p50": max, "p95": max, "p99": max})
    )
}

#[test]
fn each_default_rule_fires_just_past_its_threshold_and_not_just_below() {
    let dir = TestDir::new();
    let cases = [
        (
            "coordination.time",
            "max",
            10000.5,
            9999.5,
            "coordination_time_exceeded",
            "critical",
        ),
        (
            "coordination_time",
            "max",
            10000.5,
            9999.5,
            "coordination_time_exceeded",
            "critical",
        ),
        (
            "coordination.delivery_rate",
            "min",
            89.5,
            90.5,
            "delivery_rate_low",
            "warning",
        ),
        (
            "message_delivery_rate",
            "min",
            0.895,
            0.905,
            "delivery_rate_low",
            "warning",
        ),
        (
            "memory_usage_mb",
            "max",
            1000.5,
            999.5,
            "memory_usage_high",
            "warning",
        ),
        (
            "coordination.error_rate",
            "max",
            5.01,
            4.99,
            "error_rate_high",
            "critical",
        ),
        (
            "coordination.queue_depth",
            "max",
            1000.5,
            1000.0,
            "queue_depth_high",
            "warning",
        ),
    ];
    for (metric, stat, past, below, alert, severity) in cases {
        let out = dir.cmd("cfn-alert").stdin(agg(metric, stat, past)).run();
        out.status(1);
        let evs = out.jsonl();
        assert_eq!(evs.len(), 1, "{metric}: {out:?}");
        assert_eq!(evs[0]["alert"], alert);
        assert_eq!(evs[0]["state"], "firing");
        assert_eq!(evs[0]["severity"], severity);
        assert_eq!(evs[0]["metadata"]["metric"], metric);
        assert_eq!(evs[0]["metadata"]["value"].as_f64(), Some(past));
        let quiet = dir.cmd("cfn-alert").stdin(agg(metric, stat, below)).run();
        quiet.status(0);
        assert_eq!(quiet.stdout(), "", "{metric} fired below its threshold");
    }
    let out = dir
        .cmd("cfn-alert")
        .stdin(agg("coordination.time", "max", 12034.0))
        .run();
    assert_eq!(
        out.jsonl()[0]["message"],
        "Coordination time 12034ms exceeds threshold 10000ms"
    );
}

#[test]
fn legacy_alert_environment_overrides_thresholds() {
    let dir = TestDir::new();
    for (var, val, metric, stat, fires, quiet) in [
        (
            "ALERT_COORDINATION_TIME_MS",
            "500",
            "coordination.time",
            "max",
            500.5,
            499.0,
        ),
        (
            "ALERT_DELIVERY_RATE_PCT",
            "99",
            "coordination.delivery_rate",
            "min",
            98.5,
            99.5,
        ),
        (
            "ALERT_DELIVERY_RATE_PCT",
            "99",
            "message_delivery_rate",
            "min",
            0.985,
            0.995,
        ),
        (
            "ALERT_ERROR_RATE_PCT",
            "1",
            "coordination.error_rate",
            "max",
            1.5,
            0.5,
        ),
        (
            "ALERT_QUEUE_DEPTH",
            "10",
            "coordination.queue_depth",
            "max",
            11.0,
            9.0,
        ),
    ] {
        dir.cmd("cfn-alert")
            .env(var, val)
            .stdin(agg(metric, stat, fires))
            .run()
            .status(1);
        dir.cmd("cfn-alert")
            .env(var, val)
            .stdin(agg(metric, stat, quiet))
            .run()
            .status(0);
    }
    dir.cmd("cfn-alert")
        .env("ALERT_QUEUE_DEPTH", "lots")
        .stdin("")
        .run()
        .status(78)
        .stderr_has("ALERT_QUEUE_DEPTH");
}

#[test]
fn glob_rule_label_matchers_and_message_template() {
    let dir = TestDir::new();
    let input = [
        agg_labeled("coordination.time", "agent-42", "consensus", 600.0),
        agg_labeled("coordination.latency", "agent-7", "consensus", 700.0),
        agg_labeled("coordination.time", "agent-9", "planning", 900.0),
        agg_labeled("memory_usage_mb", "agent-42", "consensus", 5000.0),
    ]
    .concat();
    let out = dir
        .cmd("cfn-alert")
        .args(["--rule", r#"coordination.* max > 500 error "{metric} at {value} on {agent} in {phase}" phase=consensus"#])
        .stdin(input)
        .run();
    out.status(1);
    let mut msgs: Vec<String> = out
        .jsonl()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    msgs.sort();
    assert_eq!(
        msgs,
        [
            "coordination.latency at 700 on agent-7 in consensus",
            "coordination.time at 600 on agent-42 in consensus"
        ]
    );
    let evs = out.jsonl();
    assert_eq!(evs[0]["severity"], "error");
    assert_eq!(evs[0]["metadata"]["labels"]["phase"], "consensus");
}

#[test]
fn for_duration_is_pending_first_then_fires() {
    let dir = TestDir::new();
    let state = dir.join("state.json");
    let input = agg("coordination.time", "max", 20000.0);
    let run = |now: &str| {
        dir.cmd("cfn-alert")
            .args([
                "--rule",
                "coordination.time max > 10000 critical for 1m",
                "--state",
            ])
            .arg(&state)
            .args(["--now", now])
            .stdin(input.clone())
            .run()
    };
    let first = run("2026-11-27T10:00:00Z");
    first.status(0);
    assert_eq!(first.stdout(), "");
    let held = run("2026-11-27T10:00:30Z");
    held.status(0);
    assert_eq!(held.stdout(), "");
    let fired = run("2026-11-27T10:01:00Z");
    fired.status(1);
    assert_eq!(fired.jsonl().len(), 1);
    assert_eq!(fired.jsonl()[0]["timestamp"], "2026-11-27T10:01:00.000Z");
}

#[test]
fn state_notifies_once_repeats_and_resolves_once() {
    let server = MockServer::start(|_, _| reply(200, "ok"));
    let dir = TestDir::new();
    let state = dir.join("state.json");
    let hot = agg("coordination.time", "max", 20000.0);
    let run = |now: &str, input: &str| {
        dir.cmd("cfn-alert")
            .env("CFN_WEBHOOK_URL", format!("{}/hook", server.url()))
            .arg("--state")
            .arg(&state)
            .args(["--repeat", "1h", "--now", now, "--log"])
            .arg(dir.join("alerts.jsonl"))
            .stdin(input.to_string())
            .run()
    };
    let a = run("2026-11-27T10:00:00Z", &hot);
    a.status(1);
    assert_eq!(a.jsonl().len(), 1);
    let b = run("2026-11-27T10:00:30Z", &hot);
    b.status(1);
    assert_eq!(b.stdout(), "", "the same input notified twice");
    assert_eq!(server.requests().len(), 1);
    let c = run("2026-11-27T11:00:00Z", &hot);
    assert_eq!(c.status(1).jsonl()[0]["state"], "firing");
    assert_eq!(server.requests().len(), 2, "no repeat after --repeat");
    let d = run(
        "2026-11-27T11:00:30Z",
        &agg("coordination.time", "max", 10.0),
    );
    d.status(0);
    let evs = d.jsonl();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["state"], "resolved");
    let e = run(
        "2026-11-27T11:01:00Z",
        &agg("coordination.time", "max", 10.0),
    );
    assert_eq!(e.status(0).stdout(), "");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].json()["state"], "resolved");
    let log = cfn_testkit::jsonl(&dir.read("alerts.jsonl"));
    let states: Vec<&str> = log.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["firing", "firing", "resolved"]);
}

#[test]
fn corrupt_state_file_is_a_clear_error() {
    let dir = TestDir::new();
    let state = dir.write("state.json", "{\"version\":1,\"alerts\":{\"x\":");
    let out = dir
        .cmd("cfn-alert")
        .arg("--state")
        .arg(&state)
        .stdin(agg("coordination.time", "max", 20000.0))
        .run();
    out.status(78).stderr_has("corrupt");
    assert_eq!(dir.read("state.json"), "{\"version\":1,\"alerts\":{\"x\":");
}

#[test]
fn dry_run_neither_notifies_nor_touches_state() {
    let server = MockServer::start(|_, _| reply(200, "ok"));
    let dir = TestDir::new();
    let state = dir.join("state.json");
    let out = dir
        .cmd("cfn-alert")
        .env("CFN_WEBHOOK_URL", server.url())
        .arg("--dry-run")
        .arg("--state")
        .arg(&state)
        .stdin(agg("coordination.time", "max", 20000.0))
        .run();
    out.status(1);
    assert_eq!(out.jsonl().len(), 1);
    assert!(server.requests().is_empty());
    assert!(!state.exists());
    assert!(
        !dir.join("state.json.lock").exists(),
        "--dry-run left a lock file behind"
    );
}

#[test]
fn slack_pagerduty_and_webhook_payloads_field_by_field() {
    let server = MockServer::start(|_, _| reply(202, "{\"status\":\"success\"}"));
    let dir = TestDir::new();
    let state = dir.join("state.json");
    let secret_key = "R0UT1NGK3YSECRET";
    let slack_path = "/services/T000/B000/SLACKSECRET";
    let key_file = dir.write_private("pd.key", format!("{secret_key}\n"));
    let run = |input: String| {
        dir.cmd("cfn-alert")
            .env(
                "CFN_SLACK_WEBHOOK_URL",
                format!("{}{slack_path}", server.url()),
            )
            .env("CFN_WEBHOOK_URL", format!("{}/generic", server.url()))
            .arg("--pagerduty-routing-key-file")
            .arg(&key_file)
            .args(["--pagerduty-url", &format!("{}/v2/enqueue", server.url())])
            .arg("--state")
            .arg(&state)
            .stdin(input)
            .run()
    };
    let fired = run(agg_labeled(
        "coordination.time",
        "agent-42",
        "consensus",
        12034.0,
    ));
    fired.status(1);
    for text in [fired.stdout(), fired.stderr()] {
        assert!(
            !text.contains(secret_key) && !text.contains("SLACKSECRET"),
            "secret leaked: {text}"
        );
    }
    let resolved = run(agg_labeled(
        "coordination.time",
        "agent-42",
        "consensus",
        10.0,
    ));
    resolved.status(0);
    let reqs = server.requests();
    let by = |p: &str| {
        reqs.iter()
            .filter(|r| r.path == p)
            .map(|r| r.json())
            .collect::<Vec<Value>>()
    };
    let slack = by(slack_path);
    assert_eq!(slack.len(), 2);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(text.contains("[FIRING] CRITICAL coordination_time_exceeded: Coordination time 12034ms exceeds threshold 10000ms (agent=agent-42, phase=consensus)"), "{text}");
    assert!(slack[1]["text"].as_str().unwrap().contains("[RESOLVED]"));
    let pd = by("/v2/enqueue");
    assert_eq!(pd.len(), 2);
    assert_eq!(pd[0]["routing_key"], secret_key);
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    assert_eq!(pd[0]["payload"]["component"], "coordination.time");
    assert_eq!(
        pd[0]["payload"]["custom_details"]["value"].as_f64(),
        Some(12034.0)
    );
    assert_eq!(
        pd[0]["payload"]["custom_details"]["labels"]["agent"],
        "agent-42"
    );
    assert!(
        pd[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("coordination_time_exceeded: ")
    );
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], pd[0]["dedup_key"]);
    assert!(pd[0]["dedup_key"].as_str().unwrap().starts_with("cfn-"));
    let generic = by("/generic");
    assert_eq!(generic.len(), 2);
    assert_eq!(generic[0], fired.jsonl()[0]);
    assert_eq!(generic[1], resolved.jsonl()[0]);
    assert!(
        reqs.iter()
            .all(|r| r.header("content-type") == Some("application/json"))
    );
}

#[test]
fn retry_after_429_is_honoured_and_delivered_once() {
    let server = MockServer::start(|_, n| {
        if n == 0 {
            (
                429,
                vec![("Retry-After".into(), "1".into())],
                "slow down".into(),
            )
        } else {
            reply(200, "ok")
        }
    });
    let dir = TestDir::new();
    let start = std::time::Instant::now();
    let out = dir
        .cmd("cfn-alert")
        .env("CFN_WEBHOOK_URL", format!("{}/hook", server.url()))
        .env("CFN_HTTP_BACKOFF_MS", "10")
        .stdin(agg("coordination.time", "max", 20000.0))
        .run();
    out.status(1);
    assert_eq!(server.requests().len(), 2);
    assert!(
        start.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After: 1 was not waited for"
    );
    assert!(!out.stderr().contains("did not accept"), "{out:?}");
}

#[test]
fn server_errors_are_retried_a_bounded_number_of_times() {
    // /flaky accepts the first notification and fails forever after; /down always fails.
    let server = MockServer::start(|r, n| {
        if r.path == "/flaky" && n == 0 {
            reply(200, "ok")
        } else {
            reply(500, "boom")
        }
    });
    let dir = TestDir::new();
    let run = |path: &str, state: &str, input: String| {
        dir.cmd("cfn-alert")
            .env("CFN_WEBHOOK_URL", format!("{}{path}", server.url()))
            .env("CFN_HTTP_BACKOFF_MS", "10")
            .args(["--retries", "2", "--state"])
            .arg(dir.join(state))
            .stdin(input)
            .run()
    };
    let count = |p: &str| server.requests().iter().filter(|r| r.path == p).count();
    // Firing while the endpoint is down: the event is still on stdout; exit 75 (not
    // delivered wins over firing).
    let out = run("/down", "a.json", agg("coordination.time", "max", 20000.0));
    out.status(75).stderr_has("after 3 attempts");
    assert_eq!(out.jsonl().len(), 1);
    assert_eq!(count("/down"), 3);
    // The failed channel is tried again next run, without printing the event again.
    let again = run("/down", "a.json", agg("coordination.time", "max", 20000.0));
    again.status(75);
    assert_eq!(again.stdout(), "");
    assert_eq!(count("/down"), 6);

    // Told it fired, then the endpoint fails: the resolved notice is retried a bounded
    // number of times, stays on stdout, and the exit status says so (75).
    run("/flaky", "b.json", agg("coordination.time", "max", 20000.0)).status(1);
    assert_eq!(count("/flaky"), 1);
    let resolved = run("/flaky", "b.json", agg("coordination.time", "max", 1.0));
    resolved.status(75).stderr_has("after 3 attempts");
    assert_eq!(resolved.jsonl()[0]["state"], "resolved");
    assert_eq!(count("/flaky"), 4);
}

#[test]
fn client_errors_are_not_retried_and_the_body_is_shown() {
    let server = MockServer::start(|_, _| reply(400, "{\"message\":\"invalid_payload\"}"));
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-alert")
        .env(
            "CFN_SLACK_WEBHOOK_URL",
            format!("{}/services/SECRET", server.url()),
        )
        .stdin(agg("coordination.time", "max", 20000.0))
        .run();
    out.status(75)
        .stderr_has("HTTP 400")
        .stderr_has("invalid_payload");
    assert!(!out.stderr().contains("SECRET"), "{out:?}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn rules_file_errors_exit_78_naming_the_line() {
    let dir = TestDir::new();
    for (text, line, what) in [
        (
            "[[rule]]\nmetric = \"x\"\nstat = \"max\"\nthreshold = = 1\n",
            ":4:",
            "extra `=`",
        ),
        (
            "[[rule]]\nmetric = \"x\"\nstat = \"median\"\nthreshold = 1\n",
            ":3:",
            "unknown statistic \"median\"",
        ),
        (
            "[[rule]]\nmetric = \"x\"\nstat = \"p95\"\nthreshold = 1\nseverity = \"urgent\"\n",
            ":5:",
            "unknown severity \"urgent\"",
        ),
    ] {
        let f = dir.write("rules.toml", text);
        let out = dir.cmd("cfn-alert").arg("--rules").arg(&f).stdin("").run();
        out.status(78)
            .stderr_has(&format!("rules.toml{line}"))
            .stderr_has(what);
    }
}

#[test]
fn print_rules_is_a_usable_rules_file() {
    let dir = TestDir::new();
    let printed = dir
        .cmd("cfn-alert")
        .arg("--print-rules")
        .env("ALERT_QUEUE_DEPTH", "7")
        .run()
        .success()
        .stdout();
    assert!(printed.contains("threshold = 7.0"), "{printed}");
    let f = dir.write("rules.toml", printed);
    let out = dir
        .cmd("cfn-alert")
        .arg("--rules")
        .arg(&f)
        .stdin(agg("coordination.queue_depth", "max", 8.0))
        .run();
    assert_eq!(out.status(1).jsonl()[0]["alert"], "queue_depth_high");
}

#[test]
fn a_redirecting_webhook_is_not_followed_and_the_secret_url_is_not_shown() {
    let elsewhere = MockServer::start(|_, _| reply(200, "ok"));
    let target = format!("{}/steal", elsewhere.url());
    let server = MockServer::start(move |_, _| {
        (
            302,
            vec![("Location".into(), target.clone())],
            String::new(),
        )
    });
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-alert")
        .env(
            "CFN_SLACK_WEBHOOK_URL",
            format!("{}/services/SECRET", server.url()),
        )
        .env("CFN_HTTP_BACKOFF_MS", "10")
        .stdin(agg("coordination.time", "max", 20000.0))
        .run();
    out.status(75)
        .stderr_has("HTTP 302")
        .stderr_has(&format!("127.0.0.1:{}", elsewhere.port));
    assert!(!out.stderr().contains("SECRET"), "{out:?}");
    assert_eq!(elsewhere.requests().len(), 0, "a redirect was followed");
}

#[test]
fn alertmanager_urls_must_be_http_and_a_rejection_is_65_with_its_first_bytes_and_no_header() {
    let dir = TestDir::new();
    let agg = r#"{"metric":"coordination.time","count":1,"sum":500,"avg":500,"min":500,"max":500}"#;
    let out = dir
        .cmd("cfn-alert")
        .args([
            "--alertmanager",
            "ftp://am.example:9093",
            "--rule",
            "coordination.time max > 100",
        ])
        .stdin(agg)
        .run();
    out.status(2).stderr_has("ftp://am.example:9093");
    // An Alertmanager (or a proxy in front of it) answering HTML that echoes the request.
    let server = MockServer::start(|r, _| {
        let auth = r.header("authorization").unwrap_or("").to_string();
        reply(400, &format!("<html>bad request from {auth}</html>"))
    });
    let out = dir
        .cmd("cfn-alert")
        .args([
            "--alertmanager",
            &server.url(),
            "--rule",
            "coordination.time max > 100",
        ])
        .args(["--header", "Authorization: Bearer am-token-Zq81xVw"])
        .stdin(agg)
        .run();
    out.status(65)
        .stderr_has("rejected 1 alerts with HTTP 400")
        .stderr_has("not JSON: \"<html>bad request from");
    assert!(!out.stderr().contains("Zq81"), "{}", out.stderr());
    let sent = server.requests();
    assert_eq!(sent[0].path, "/api/v2/alerts");
    let alerts = sent[0].json();
    assert_eq!(alerts[0]["labels"]["metric"], "coordination.time");
    assert!(
        alerts[0]["labels"]["host"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    assert!(alerts[0]["endsAt"].as_str() > alerts[0]["startsAt"].as_str());
}

/// Issue 36 (high): an agent that locks the alerts log, or puts a FIFO in its place, used to
/// stop every notification and every state save (exit 75, then 73). The log now comes
/// last: the receiver is told, the state is saved, the log's failure is a warning naming it.
#[test]
fn a_locked_or_fifo_alerts_log_never_stops_a_notification_or_the_state() {
    let server = MockServer::start(|_, _| reply(200, "ok"));
    let dir = TestDir::new();
    let log = dir.join("alerts.jsonl");
    let state = dir.join("state.json");
    let run = |now: &str| {
        dir.cmd("cfn-alert")
            .env("CFN_WEBHOOK_URL", format!("{}/hook", server.url()))
            .env("CFN_LOCK_TIMEOUT_MS", "200")
            .arg("--state")
            .arg(&state)
            .args(["--repeat", "1m", "--now", now, "--log"])
            .arg(&log)
            .stdin(agg("coordination.time", "max", 20000.0))
            .run()
    };
    // Held by another process (as `flock LOG sleep` would).
    std::fs::write(&log, "").unwrap();
    let holder = std::fs::File::open(&log).unwrap();
    holder.lock().unwrap();
    let out = run("2026-11-27T10:00:00Z");
    out.status(1).stderr_has("alerts.jsonl");
    assert_eq!(server.requests().len(), 1, "the receiver was told");
    assert!(
        dir.read("state.json").contains("coordination_time"),
        "the state was saved"
    );
    drop(holder);
    // A FIFO in its place.
    std::fs::remove_file(&log).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&log)
        .status()
        .unwrap();
    assert!(made.success());
    let out = run("2026-11-27T10:05:00Z");
    out.status(1).stderr_has("alerts.jsonl");
    assert_eq!(server.requests().len(), 2, "told again after --repeat");
}

/// Issue 36 (medium 5): a peer that echoes a header's secret inside its JSON `message`,
/// spelled with JSON escapes, used to get it printed once cfn-alert decoded the message.
/// Redaction runs on what is printed, after decoding.
#[test]
fn an_alertmanager_echoing_a_secret_with_json_escapes_never_gets_it_printed() {
    let dir = TestDir::new();
    let agg = r#"{"metric":"coordination.time","count":1,"sum":500,"avg":500,"min":500,"max":500}"#;
    let server = MockServer::start(|r, _| {
        let auth = r.header("authorization").unwrap_or("").to_string();
        let escaped: String = auth
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        reply(
            400,
            &format!("{{\"code\":400,\"message\":\"refused {escaped}\"}}"),
        )
    });
    let out = dir
        .cmd("cfn-alert")
        .args([
            "--alertmanager",
            &server.url(),
            "--rule",
            "coordination.time max > 100",
        ])
        .args(["--header", "Authorization: Bearer am-token-Zq81xVw"])
        .stdin(agg)
        .run();
    out.status(65).stderr_has("refused ***");
    assert!(!out.stderr().contains("Zq81"), "{}", out.stderr());
    assert!(!out.stderr().contains("am-token"), "{}", out.stderr());
}

/// Issue 36 (medium 6): Slack reads `<!channel>` and `<URL|label>` in a message's text as a
/// mention and a link; an agent's id must not page a channel or plant a link, so `&`, `<`
/// and `>` are escaped as Slack asks.
#[test]
fn slack_text_escapes_an_agents_mention_and_link() {
    let server = MockServer::start(|_, _| reply(200, "ok"));
    let dir = TestDir::new();
    let agent = "<!channel> <https://evil.example/login|Acknowledge alert> & co";
    let agg = serde_json::json!({"metric":"coordination.time","agent":agent,"count":1,"sum":500,"avg":500,"min":500,"max":500}).to_string();
    dir.cmd("cfn-alert")
        .env("CFN_SLACK_WEBHOOK_URL", format!("{}/slack", server.url()))
        .args([
            "--rule",
            "coordination.time max > 100 critical \"{labels} slow\"",
        ])
        .stdin(agg)
        .run()
        .status(1);
    let text = server.requests()[0].json()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    assert!(
        text.contains(
            "&lt;!channel&gt; &lt;https://evil.example/login|Acknowledge alert&gt; &amp; co"
        ),
        "{text}"
    );
}

/// Issue 36 (medium 4): secrets come from files only their owner can read (every agent is
/// in the service's group), and headers have a file of their own, off the command line.
#[test]
fn secret_files_readable_by_the_group_are_refused_and_a_header_file_is_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = MockServer::start(|_, _| reply(200, "{}"));
    let dir = TestDir::new();
    let agg = r#"{"metric":"coordination.time","count":1,"sum":500,"avg":500,"min":500,"max":500}"#;
    let headers = dir.write_private(
        "am-headers",
        "# for the fleet's Alertmanager\nAuthorization: Bearer hdr-file-Kq2z9\n",
    );
    let hook = dir.write_private(
        "slack-url",
        format!("{}/slack/T0/B0/SLACKSECRETPATH\n", server.url()),
    );
    let run = |extra: &[&std::ffi::OsStr]| {
        dir.cmd("cfn-alert")
            .args([
                "--alertmanager",
                &server.url(),
                "--rule",
                "coordination.time max > 100",
            ])
            .args(extra)
            .stdin(agg)
            .run()
    };
    for (file, flag) in [(&headers, "--header-file"), (&hook, "--slack-webhook-file")] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let out = run(&[flag.as_ref(), file.as_os_str()]);
        out.status(78)
            .stderr_has(&file.display().to_string())
            .stderr_has("mode 640");
        assert!(!out.stderr().contains("Kq2z9") && !out.stderr().contains("SLACKSECRET"));
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(
        server.requests().is_empty(),
        "nothing sent with a refused secret"
    );
    run(&["--header-file".as_ref(), headers.as_os_str()]).status(1);
    let sent = server.requests();
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer hdr-file-Kq2z9")
    );
}

/// Issue 38: a misspelt severity in a rule is named as such, with what was meant, instead of
/// "unexpected" the next word.
#[test]
fn a_misspelt_severity_is_named_with_what_was_meant() {
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-alert")
        .args(["--rule", "task.latency p96 > 5 warnig \"x\""])
        .stdin("")
        .run();
    // A bad rule is a configuration error, as a bad rules file is (78).
    out.status(78)
        .stderr_has("unknown severity \"warnig\" (did you mean \"warning\"?");
}
