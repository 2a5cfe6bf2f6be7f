//! cfn-push end to end against a local HTTP server standing in for Datadog and New Relic.

use cfn_testkit::{MockServer, TestDir, reply};
use serde_json::Value;

const KEY: &str = "0123456789abcdefSECRETKEY";

fn aggs() -> String {
    [
        r#"{"metric":"coordination.time","unit":"milliseconds","agent":"agent-42","tags":{"phase":"consensus"},"count":1200,"sum":181234,"avg":151.03,"min":3,"max":10234,"p50":120,"p95":410,"p99":1900,"first":"2026-11-27T10:00:00.001Z","last":"2026-11-27T10:00:29.998Z"}"#,
        r#"{"metric":"tasks_done","count":0,"sum":0,"avg":null,"min":null,"max":null,"p50":null,"p95":null,"p99":null}"#,
    ]
    .join("\n")
        + "\n"
}

#[test]
fn datadog_request_headers_and_series_field_by_field() {
    let server = MockServer::start(|_, _| reply(202, "{\"errors\":[]}"));
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-push")
        .env("DD_API_KEY", KEY)
        .args([
            "datadog",
            "--endpoint",
            &server.url(),
            "--tag",
            "env:test",
            "--interval",
            "30s",
        ])
        .stdin(aggs())
        .run();
    out.success().stderr_has("left out 6 non-finite values");
    assert!(!out.stdout().contains(KEY) && !out.stderr().contains(KEY));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/v2/series")
    );
    assert_eq!(r.header("DD-API-KEY"), Some(KEY));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let body = r.json();
    let series = body["series"].as_array().unwrap();
    let by_name = |n: &str| {
        series
            .iter()
            .find(|s| s["metric"] == n)
            .unwrap_or_else(|| panic!("no {n} in {body}"))
    };
    let count = by_name("cfn.coordination.time.count");
    assert_eq!(count["type"], 1);
    assert_eq!(count["interval"], 30);
    assert_eq!(count["points"][0]["value"].as_f64(), Some(1200.0));
    assert_eq!(count["points"][0]["timestamp"], 1_795_773_629);
    let mut tags: Vec<&str> = count["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["agent:agent-42", "env:test", "phase:consensus"]);
    assert_eq!(count["resources"][0]["type"], "host");
    for (name, v) in [
        ("avg", 151.03),
        ("min", 3.0),
        ("max", 10234.0),
        ("sum", 181234.0),
        ("p50", 120.0),
        ("p95", 410.0),
        ("p99", 1900.0),
    ] {
        let s = by_name(&format!("cfn.coordination.time.{name}"));
        assert_eq!(s["type"], 3, "{name}");
        assert_eq!(s["points"][0]["value"].as_f64(), Some(v), "{name}");
        assert_eq!(s["unit"], "milliseconds");
    }
    // tasks_done keeps its count and sum (0); its null statistics were left out.
    let mut done: Vec<&str> = series
        .iter()
        .filter_map(|s| s["metric"].as_str())
        .filter(|m| m.starts_with("cfn.tasks_done"))
        .collect();
    done.sort();
    assert_eq!(done, ["cfn.tasks_done.count", "cfn.tasks_done.sum"]);
    assert_eq!(series.len(), 8 + 2);
}

#[test]
fn newrelic_request_headers_and_metrics_field_by_field() {
    let server = MockServer::start(|_, _| reply(202, "{\"requestId\":\"x\"}"));
    let dir = TestDir::new();
    let key_file = dir.write_private("nr.key", format!("{KEY}\n"));
    let out = dir
        .cmd("cfn-push")
        .args(["newrelic", "--endpoint", &server.url(), "--api-key-file"])
        .arg(&key_file)
        .args(["--interval", "1m", "--tag", "env:test"])
        .stdin(aggs())
        .run();
    out.success();
    let r = &server.requests()[0];
    assert_eq!(r.path, "/metric/v1");
    assert_eq!(r.header("Api-Key"), Some(KEY));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    let body = r.json();
    let block = &body[0];
    assert_eq!(block["common"]["interval.ms"], 60_000);
    assert_eq!(block["common"]["attributes"]["env"], "test");
    assert!(block["common"]["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    let metrics = block["metrics"].as_array().unwrap();
    let summary = metrics.iter().find(|m| m["type"] == "summary").unwrap();
    assert_eq!(summary["name"], "cfn.coordination.time");
    assert_eq!(
        summary["value"],
        serde_json::json!({"count": 1200, "sum": 181234.0, "min": 3.0, "max": 10234.0})
    );
    assert_eq!(summary["timestamp"], 1_795_773_629_998i64);
    assert_eq!(summary["attributes"]["agent"], "agent-42");
    assert_eq!(summary["attributes"]["phase"], "consensus");
    assert_eq!(summary["attributes"]["unit"], "milliseconds");
    let p95 = metrics
        .iter()
        .find(|m| m["name"] == "cfn.coordination.time.p95")
        .unwrap();
    assert_eq!(
        (p95["type"].as_str(), p95["value"].as_f64()),
        (Some("gauge"), Some(410.0))
    );
    assert_eq!(
        metrics.len(),
        4,
        "tasks_done's null statistics are left out"
    );
}

fn many_aggs(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"metric\":\"m{}\",\"agent\":\"agent-{i}\",\"count\":{i},\"sum\":1,\"avg\":1,\"min\":1,\"max\":1,\"p50\":1,\"p95\":1,\"p99\":1}}\n", i % 17))
        .collect()
}

#[test]
fn large_inputs_are_split_under_the_limit_with_every_series_once() {
    for (vendor, limit) in [("datadog", 500_000usize), ("newrelic", 1_000_000)] {
        let server = MockServer::start(|_, _| reply(202, "{}"));
        let dir = TestDir::new();
        dir.cmd("cfn-push")
            .env("DD_API_KEY", KEY)
            .env("NEW_RELIC_API_KEY", KEY)
            .args([vendor, "--endpoint", &server.url()])
            .stdin(many_aggs(6000))
            .run()
            .success();
        let reqs = server.requests();
        assert!(reqs.len() >= 2, "{vendor}: {} request(s)", reqs.len());
        let mut seen = std::collections::HashMap::<(String, String), u32>::new();
        for r in &reqs {
            let plain = r.decoded_body();
            assert!(
                plain.len() <= limit,
                "{vendor}: payload of {} bytes",
                plain.len()
            );
            let v: Value = serde_json::from_slice(&plain).unwrap();
            let items = if vendor == "datadog" {
                v["series"].clone()
            } else {
                v[0]["metrics"].clone()
            };
            for s in items.as_array().unwrap() {
                let name = s
                    .get("metric")
                    .or(s.get("name"))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string();
                let agent = if vendor == "datadog" {
                    s["tags"][0].as_str().unwrap().to_string()
                } else {
                    s["attributes"]["agent"].as_str().unwrap().to_string()
                };
                *seen.entry((name, agent)).or_default() += 1;
            }
        }
        let per_agg = if vendor == "datadog" { 8 } else { 4 };
        assert_eq!(seen.len(), 6000 * per_agg, "{vendor}");
        assert!(
            seen.values().all(|&n| n == 1),
            "{vendor}: a series was sent twice"
        );
    }
}

#[test]
fn retry_after_429_then_accepted() {
    let server = MockServer::start(|_, n| {
        if n == 0 {
            (429, vec![("Retry-After".into(), "1".into())], "slow".into())
        } else {
            reply(202, "{}")
        }
    });
    let dir = TestDir::new();
    let start = std::time::Instant::now();
    dir.cmd("cfn-push")
        .env("DD_API_KEY", KEY)
        .env("CFN_HTTP_BACKOFF_MS", "10")
        .args(["datadog", "--endpoint", &server.url()])
        .stdin(aggs())
        .run()
        .success();
    assert_eq!(server.requests().len(), 2);
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn server_errors_forever_are_bounded_and_exit_75() {
    let server = MockServer::start(|_, _| reply(500, "oops"));
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-push")
        .env("NEW_RELIC_API_KEY", KEY)
        .env("CFN_HTTP_BACKOFF_MS", "10")
        .args(["newrelic", "--retries", "2", "--endpoint", &server.url()])
        .stdin(aggs())
        .run();
    out.status(75).stderr_has("after 3 attempts");
    assert_eq!(server.requests().len(), 3);
    assert!(!out.stderr().contains(KEY));
}

#[test]
fn client_error_is_not_retried_and_its_body_is_shown() {
    let server = MockServer::start(|_, _| {
        reply(
            400,
            "{\"errors\":[\"Payload is not in the expected format\"]}",
        )
    });
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-push")
        .env("DD_API_KEY", KEY)
        .args(["datadog", "--endpoint", &server.url()])
        .stdin(aggs())
        .run();
    out.status(65)
        .stderr_has("HTTP 400")
        .stderr_has("Payload is not in the expected format");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn missing_key_exits_78_and_sends_nothing() {
    let server = MockServer::start(|_, _| reply(202, "{}"));
    let dir = TestDir::new();
    for vendor in ["datadog", "newrelic"] {
        dir.cmd("cfn-push")
            .args([vendor, "--endpoint", &server.url()])
            .stdin(aggs())
            .run()
            .status(78)
            .stderr_has("no API key");
    }
    assert!(server.requests().is_empty());
}

#[test]
fn dry_run_prints_payloads_without_the_key() {
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-push")
        .env("DD_API_KEY", KEY)
        .args(["datadog", "--dry-run"])
        .stdin(aggs())
        .run();
    out.success();
    let payloads = out.jsonl();
    assert_eq!(payloads.len(), 1);
    assert_eq!(payloads[0]["series"].as_array().unwrap().len(), 10);
    assert!(!out.stdout().contains(KEY) && !out.stderr().contains(KEY));
    out.stderr_has("https://api.datadoghq.com/api/v2/series");
}

#[test]
fn redirects_are_not_followed_and_the_key_goes_nowhere_else() {
    let elsewhere = MockServer::start(|_, _| reply(200, "ok"));
    let target = format!("{}/steal", elsewhere.url());
    let server = MockServer::start(move |_, _| {
        (
            307,
            vec![("Location".into(), target.clone())],
            String::new(),
        )
    });
    let dir = TestDir::new();
    for vendor in ["datadog", "newrelic"] {
        let out = dir
            .cmd("cfn-push")
            .env("DD_API_KEY", KEY)
            .env("NEW_RELIC_API_KEY", KEY)
            .env("CFN_HTTP_BACKOFF_MS", "10")
            .args([vendor, "--endpoint", &server.url()])
            .stdin(aggs())
            .run();
        out.status(78)
            .stderr_has("HTTP 307")
            .stderr_has(&format!("127.0.0.1:{}", elsewhere.port))
            .stderr_has("not followed");
        assert!(!out.stderr().contains(KEY) && !out.stdout().contains(KEY));
    }
    assert_eq!(elsewhere.requests().len(), 0, "a redirect was followed");
    assert_eq!(server.requests().len(), 2, "a 3xx must not be retried");
}

#[test]
fn a_4xx_body_that_echoes_the_key_is_printed_without_it() {
    let server = MockServer::start(|r, _| {
        let key = r.header("DD-API-KEY").unwrap_or("").to_string();
        reply(400, &format!("{{\"errors\":[\"bad key {key}\"]}}"))
    });
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-push")
        .env("DD_API_KEY", KEY)
        .args(["datadog", "--endpoint", &server.url()])
        .stdin(aggs())
        .run();
    out.status(65).stderr_has("bad key ***");
    assert!(!out.stderr().contains(KEY), "{out:?}");
}

#[test]
fn one_spelling_per_flag_across_tools_with_the_old_ones_kept() {
    let dir = TestDir::new();
    for args in [
        &[
            "--window",
            "1m",
            "--tag",
            "env=test",
            "--http-timeout",
            "5s",
        ][..],
        &["--interval", "1m", "--tag", "env:test", "--timeout", "5s"][..],
    ] {
        let out = dir
            .cmd("cfn-push")
            .args(["newrelic", "--dry-run"])
            .args(args)
            .stdin(aggs())
            .run();
        out.success();
        let block = &out.jsonl()[0][0];
        assert_eq!(block["common"]["interval.ms"], 60_000, "{args:?}");
        assert_eq!(block["common"]["attributes"]["env"], "test", "{args:?}");
    }
    let help = dir.cmd("cfn-push").arg("--help").run().stdout();
    assert!(help.contains("--window") && help.contains("--http-timeout"));
    assert!(!help.contains("--interval") && !help.contains("--timeout <"));
}

/// Issue 36 (low 2): a crafted `--with-digest` state whose weight is 2^64-1 wrapped the OTLP
/// count (count 4, buckets adding up to 2^64+4). A state that does not add up to its count
/// is refused as `cfn-agg --merge` refuses it: sent as a summary, named in a warning.
#[test]
fn an_otlp_state_whose_weight_is_not_its_count_is_sent_as_a_summary_only() {
    let server = MockServer::start(|_, _| reply(200, "{}"));
    let dir = TestDir::new();
    let crafted = r#"{"metric":"m","count":4,"sum":10,"avg":2.5,"min":1,"max":4,"p50":2,"p95":4,"p99":4,"state":{"table":[[1,18446744073709551615],[2,1],[3,1],[4,1]]}}"#;
    let honest = r#"{"metric":"h","count":2,"sum":3,"avg":1.5,"min":1,"max":2,"p50":1,"p95":2,"p99":2,"state":{"values":[1,2]}}"#;
    let out = dir
        .cmd("cfn-push")
        .args([
            "otlp",
            "--endpoint",
            &server.url(),
            "--otlp-protocol",
            "http/json",
        ])
        .stdin(format!("{crafted}\n{honest}\n"))
        .run();
    out.success()
        .stderr_has("states do not add up to their count");
    let body: Value = serde_json::from_slice(&server.requests()[0].decoded_body()).unwrap();
    let metrics = body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<(String, bool)> = metrics
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m.get("exponentialHistogram").is_some(),
            )
        })
        .collect();
    assert!(kinds.contains(&("cfn.h".to_string(), true)), "{kinds:?}");
    assert!(!kinds.contains(&("cfn.m".to_string(), true)), "{kinds:?}");
    assert!(
        metrics
            .iter()
            .any(|m| m["name"] == "cfn.m" && m.get("summary").is_some()),
        "{metrics:?}"
    );
}

/// Issue 38: a metric whose records come with and without a unit (a legacy caller beside a
/// new one) is one metric in two units; every destination keeps the two apart and writes
/// neither under the other's unit: Datadog and New Relic with a `unit` tag or attribute
/// (`none` for values without one), OTLP with a metric per unit.
#[test]
fn a_metric_in_two_units_stays_two_series_at_every_destination() {
    let dir = TestDir::new();
    let aggs = concat!(
        r#"{"metric":"coordination.time","count":2,"sum":400,"avg":200,"min":150,"max":250,"p50":150,"p95":250,"p99":250}"#,
        "\n",
        r#"{"metric":"coordination.time","unit":"milliseconds","count":1,"sum":12034,"avg":12034,"min":12034,"max":12034,"p50":12034,"p95":12034,"p99":12034}"#,
        "\n"
    );
    let server = MockServer::start(|_, _| reply(202, "{}"));
    for vendor in ["datadog", "newrelic"] {
        dir.cmd("cfn-push")
            .env("DD_API_KEY", KEY)
            .env("NEW_RELIC_API_KEY", KEY)
            .args([vendor, "--endpoint", &server.url()])
            .stdin(aggs)
            .run()
            .success();
    }
    dir.cmd("cfn-push")
        .args([
            "otlp",
            "--endpoint",
            &server.url(),
            "--otlp-protocol",
            "http/json",
        ])
        .stdin(aggs)
        .run()
        .success();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    let dd: Value = serde_json::from_slice(&reqs[0].decoded_body()).unwrap();
    let maxes: Vec<(String, f64)> = dd["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metric"] == "cfn.coordination.time.max")
        .map(|s| {
            let tags: Vec<&str> = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            (tags.join(","), s["points"][0]["value"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(
        maxes,
        [
            ("unit:none".to_string(), 250.0),
            ("unit:milliseconds".to_string(), 12034.0)
        ]
    );
    let nr: Value = serde_json::from_slice(&reqs[1].decoded_body()).unwrap();
    let units: Vec<&str> = nr[0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "summary")
        .map(|m| m["attributes"]["unit"].as_str().unwrap())
        .collect();
    assert_eq!(units, ["none", "milliseconds"]);
    let otlp: Value = serde_json::from_slice(&reqs[2].decoded_body()).unwrap();
    let metrics: Vec<(String, String, f64)> =
        otlp["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let point = &m["summary"]["dataPoints"][0];
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["unit"].as_str().unwrap_or("").to_string(),
                    point["sum"].as_f64().unwrap(),
                )
            })
            .collect();
    assert_eq!(
        metrics,
        [
            ("cfn.coordination.time".to_string(), String::new(), 400.0),
            (
                "cfn.coordination.time".to_string(),
                "ms".to_string(),
                12034.0
            )
        ]
    );
}
