//! cfn-serve over HTTP: every endpoint against cfn-agg on the same records, bad requests,
//! path traversal, and the dashboard in a real headless Chromium.

use cfn_testkit::browser::Browser;
use cfn_testkit::{TestDir, peer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{get, now_ms, request, start, ts};

/// Known data: 3 metrics, 4 agents, one record every 7 s over the last 40 minutes, in 4 shards.
fn seed(dir: &TestDir, end_ms: i64) -> Vec<String> {
    let metrics = ["coordination.time", "memory_usage_mb", "task_duration_ms"];
    let mut shards = vec![String::new(); 4];
    let mut i = 0u64;
    let mut t = end_ms - 40 * 60_000;
    while t < end_ms - 1000 {
        let agent = i % 4;
        let metric = metrics[(i % 3) as usize];
        let value = ((i * 37) % 1000) as f64 / 4.0;
        shards[agent as usize].push_str(&format!(
            "{{\"timestamp\":\"{}\",\"agent\":\"agent-{agent}\",\"metric\":\"{metric}\",\"value\":{value},\"unit\":\"milliseconds\"}}\n",
            ts(t)
        ));
        i += 1;
        t += 7_000;
    }
    shards[1].push_str("this line is malformed\n");
    for (n, s) in shards.iter().enumerate() {
        dir.write(&format!("cfn-metrics-{n}.jsonl"), s);
    }
    metrics.iter().map(|m| m.to_string()).collect()
}

fn shard_paths(dir: &TestDir) -> Vec<String> {
    (0..4)
        .map(|n| {
            dir.join(&format!("cfn-metrics-{n}.jsonl"))
                .display()
                .to_string()
        })
        .collect()
}

#[test]
fn summary_and_series_equal_cfn_agg_on_the_same_records() {
    let dir = TestDir::new();
    let end = 1_795_773_600_000; // 2026-11-27T10:00:00Z
    seed(&dir, end);
    let server = start(&dir, &[]);
    let now = "2026-11-27T10:00:00Z";
    for (query, agg_args) in [
        ("window=30s", vec!["--window", "30s"]),
        (
            "window=10m&by=agent",
            vec!["--window", "10m", "--by", "agent"],
        ),
        (
            "window=1h&metric=memory_usage_mb",
            vec!["--window", "1h", "--metric", "memory_usage_mb"],
        ),
    ] {
        let (status, body) = get(server.port, &format!("/api/summary?{query}&now={now}"));
        assert_eq!(status, 200, "{body}");
        let served: Vec<Value> = serde_json::from_str(&body).unwrap();
        let expected = dir
            .cmd("cfn-agg")
            .args(&agg_args)
            .args(["--now", now])
            .args(shard_paths(&dir))
            .run()
            .jsonl();
        assert!(!expected.is_empty());
        assert_eq!(served, expected, "{query}");
    }
    let (status, body) = get(
        server.port,
        &format!("/api/series?metric=coordination.time&range=1h&bucket=1m&now={now}"),
    );
    assert_eq!(status, 200, "{body}");
    let served: Vec<Value> = serde_json::from_str(&body).unwrap();
    let expected = dir
        .cmd("cfn-agg")
        .args([
            "--window",
            "1h",
            "--bucket",
            "1m",
            "--metric",
            "coordination.time",
            "--now",
            now,
        ])
        .args(shard_paths(&dir))
        .run()
        .jsonl();
    assert_eq!(served.len(), 40);
    assert_eq!(served, expected);
    let (_, body) = get(
        server.port,
        &format!("/api/series?metric=coordination.time&range=1h&bucket=1m&agent=agent-1&now={now}"),
    );
    let by_agent: Vec<Value> = serde_json::from_str(&body).unwrap();
    let total: u64 = by_agent.iter().map(|a| a["count"].as_u64().unwrap()).sum();
    let agent_total = expected
        .iter()
        .map(|a| a["count"].as_u64().unwrap())
        .sum::<u64>();
    assert!(total > 0 && total < agent_total);
    let (_, body) = get(server.port, &format!("/api/metrics?range=1h&now={now}"));
    let names: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        names["metrics"],
        serde_json::json!(["coordination.time", "memory_usage_mb", "task_duration_ms"])
    );
    assert_eq!(names["agents"].as_array().unwrap().len(), 4);
}

#[test]
fn metrics_endpoint_is_cfn_promtext_output() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let server = start(&dir, &["--window", "10m"]);
    let (status, body) = get(server.port, "/metrics");
    assert_eq!(status, 200);
    let aggs = dir
        .cmd("cfn-agg")
        .args(["--window", "10m"])
        .args(shard_paths(&dir))
        .run()
        .success()
        .stdout();
    let expected = dir.cmd("cfn-promtext").stdin(aggs).run().success().stdout();
    assert!(expected.contains("cfn_coordination_time_count"));
    // cfn-promtext's text, then what cfn-serve left out (nothing here).
    let rest = body
        .strip_prefix(&expected)
        .unwrap_or_else(|| panic!("{body}"));
    let samples: Vec<&str> = rest.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples[..3],
        [
            "cfn_serve_window_dropped_records 0",
            "cfn_serve_series_limit_dropped_records_total 0",
            "cfn_serve_unit_mismatch_dropped_records_total 0"
        ]
    );
    // And what the rollups by agent hold (this data's agents), having answered nothing yet.
    let bytes: u64 = samples[3]
        .strip_prefix("cfn_serve_filtered_rollup_bytes ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{rest}"));
    assert!(bytes > 0 && bytes < 44 << 20, "{bytes}");
    assert_eq!(samples[4], "cfn_serve_filtered_rollup_answers_total 0");
    // Then who reported (contract section 10): the seed's four agents, all active.
    let last_seen = samples[5..]
        .iter()
        .filter(|l| l.starts_with("cfn_agent_last_seen_timestamp_seconds{agent=\"agent-"))
        .count();
    assert_eq!(last_seen, 4, "{rest}");
    assert_eq!(
        samples[9..15],
        [
            "cfn_agents{state=\"active\"} 4",
            "cfn_agents{state=\"done\"} 0",
            "cfn_agents{state=\"gone\"} 0",
            "cfn_agents{state=\"silent\"} 0",
            "cfn_agent_last_seen_not_exported 0",
            "cfn_presence_untracked_records 0"
        ]
    );
    // Then the index's snapshots: none here (no --snapshot-dir), so built.
    assert_eq!(
        samples[15..],
        [
            "cfn_serve_snapshot_restored 0",
            "cfn_serve_snapshots_refused_total{reason=\"corrupt\"} 0",
            "cfn_serve_snapshots_refused_total{reason=\"version\"} 0",
            "cfn_serve_snapshots_refused_total{reason=\"config\"} 0",
            "cfn_serve_snapshots_refused_total{reason=\"untrusted\"} 0",
            "cfn_serve_snapshots_refused_total{reason=\"stale\"} 0",
            "cfn_serve_snapshots_written_total 0",
            "cfn_serve_snapshot_write_errors_total 0",
            "cfn_serve_snapshot_bytes 0"
        ]
    );
}

#[test]
fn shards_and_alerts_endpoints() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let state = dir.write(
        "alert-state.json",
        r#"{"version":1,"alerts":{"k":{"alert":"coordination_time_exceeded","metric":"coordination.time","labels":{},"state":"firing","since":1795773600000,"severity":"critical","stat":"max","op":">","value":12034,"threshold":10000,"message":"Coordination time 12034ms exceeds threshold 10000ms"},"p":{"alert":"queue_depth_high","metric":"q","labels":{},"state":"pending","since":1795773600000,"severity":"warning","stat":"max","op":">","value":2000,"threshold":1000,"message":"pending one"}}}"#,
    );
    let server = start(&dir, &["--alert-state", state.to_str().unwrap()]);
    let (status, body) = get(server.port, "/api/shards");
    assert_eq!(status, 200);
    let shards: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(shards.len(), 4);
    let total: u64 = shards.iter().map(|s| s["records"].as_u64().unwrap()).sum();
    let lines: usize = shard_paths(&dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(total as usize, lines - 1);
    assert_eq!(shards[1]["malformed"], 1);
    assert_eq!(
        shards[0]["bytes"].as_u64().unwrap(),
        std::fs::metadata(&shard_paths(&dir)[0]).unwrap().len()
    );
    assert!(shards[0]["newest_age_s"].as_f64().unwrap() < 60.0);
    // Appends are picked up (incrementally).
    std::fs::OpenOptions::new()
        .append(true)
        .open(&shard_paths(&dir)[0])
        .unwrap()
        .write_all(b"garbage\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let (_, body) = get(server.port, "/api/shards");
    let shards: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(shards[0]["malformed"], 1);
    let (status, body) = get(server.port, "/api/alerts");
    assert_eq!(status, 200);
    let alerts: Value = serde_json::from_str(&body).unwrap();
    let firing = alerts["firing"].as_array().unwrap();
    assert_eq!(firing.len(), 1, "{alerts}");
    assert_eq!(firing[0]["alert"], "coordination_time_exceeded");
}

#[test]
fn alerts_fall_back_to_the_log() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let log = dir.write(
        "alerts.jsonl",
        concat!(
            r#"{"timestamp":"2026-11-27T10:00:00.000Z","alert":"a1","state":"firing","severity":"critical","message":"m1","metadata":{"metric":"x","dedup_key":"k1"}}"#, "\n",
            r#"{"timestamp":"2026-11-27T10:00:00.000Z","alert":"a2","state":"firing","severity":"warning","message":"m2","metadata":{"metric":"y","dedup_key":"k2"}}"#, "\n",
            r#"{"timestamp":"2026-11-27T10:01:00.000Z","alert":"a1","state":"resolved","severity":"critical","message":"m1","metadata":{"metric":"x","dedup_key":"k1"}}"#, "\n",
        ),
    );
    let server = start(&dir, &["--alerts-log", log.to_str().unwrap()]);
    let (_, body) = get(server.port, "/api/alerts");
    let alerts: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = alerts["firing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a2"]);
    assert_eq!(alerts["recent"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_requests_get_400_with_a_json_error_and_traversal_gets_404() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let server = start(&dir, &[]);
    for path in [
        "/api/series?metric=no.such.metric&range=1h",
        "/api/series?range=1h",
        "/api/series?metric=coordination.time&range=forever",
        "/api/series?metric=coordination.time&range=1h&bucket=1ms",
        "/api/summary?window=-5m",
        "/api/summary?window=30s&by=host",
        "/api/summary?window=%zz",
        "/api/summary?now=yesterday-ish",
        "/api/metrics?range=400d",
        "/api/summary?window=18446744073709551617ms",
        "/api/summary?window=1000000000000d",
        "/api/summary?now=1000000000000d",
    ] {
        let (status, body) = get(server.port, path);
        assert_eq!(status, 400, "{path}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}");
    }
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/../../../etc/passwd",
        "/cfn-metrics-0.jsonl",
        "/static/../../x",
    ] {
        let (status, body) = get(server.port, path);
        assert_eq!(status, 404, "{path}");
        assert!(!body.contains("root:"), "{path} leaked a file");
    }
    assert_eq!(request(server.port, "POST", "/api/summary").0, 405);
    // The server is still up.
    assert_eq!(get(server.port, "/api/summary?window=30s").0, 200);
}

/// A JS expression's value in the page, as text.
fn text(b: &mut Browser, expr: &str) -> String {
    match b.eval(expr) {
        Value::String(s) => s,
        v => v.to_string(),
    }
}

const READY: &str = "document.body.dataset.ready === '1'";

fn chromium() -> Option<std::path::PathBuf> {
    peer(
        "chromium",
        "Debian package chromium, for the dashboard test",
    )
}

#[test]
fn dashboard_in_chromium_axes_units_every_bucket_alerts_tooltip_and_one_clock() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = TestDir::new();
    let end = now_ms();
    let metrics = seed(&dir, end);
    // A metric with one bucket only: drawn as a point.
    let shard0 = dir.read("cfn-metrics-0.jsonl");
    dir.write(
        "cfn-metrics-0.jsonl",
        format!(
            "{shard0}{{\"timestamp\":\"{}\",\"metric\":\"deploys\",\"value\":1}}\n",
            ts(end - 1500)
        ),
    );
    let state = dir.write(
        "alert-state.json",
        r#"{"version":1,"alerts":{"k":{"alert":"coordination_time_exceeded","metric":"coordination.time","labels":{"agent":"agent-42"},"state":"firing","since":1795773600000,"severity":"critical","stat":"max","op":">","value":12034,"threshold":10000,"message":"Coordination time 12034ms exceeds threshold 10000ms"}}}"#,
    );
    let server = start(&dir, &["--alert-state", state.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{}/", server.port);
    let mut b = Browser::launch(&chromium, (1400, 1000), "Europe/Paris");
    b.open(&url, READY);

    // 40 minutes of data: "auto" picks the smallest preset that holds them.
    assert_eq!(text(&mut b, "document.getElementById('range').value"), "");
    assert_eq!(text(&mut b, "document.body.dataset.range"), "1h");
    assert!(
        text(&mut b, "document.getElementById('range-label').textContent").starts_with("auto: 1 h")
    );

    // Every bucket with data is drawn: 1-minute buckets over the 1 h range, computed here.
    let records: Vec<Value> = (0..4)
        .flat_map(|n| jsonl_lenient(&dir.read(&format!("cfn-metrics-{n}.jsonl"))))
        .collect();
    for m in &metrics {
        let buckets: std::collections::BTreeSet<i64> = records
            .iter()
            .filter(|r| r["metric"] == m.as_str())
            .map(|r| parse_ms(r["timestamp"].as_str().unwrap()).div_euclid(60_000))
            .collect();
        let sel = format!("svg.chart[data-metric='{m}']");
        assert_eq!(
            text(
                &mut b,
                &format!("document.querySelector(\"{sel}\").dataset.points")
            ),
            buckets.len().to_string(),
            "{m}"
        );
        for key in ["p50", "p95", "p99"] {
            let drawn = b.eval(&format!(
                "[...document.querySelectorAll(\"{sel} polyline.{key}\")].reduce((n, p) => n + p.points.numberOfItems, 0) + document.querySelectorAll(\"{sel} circle.{key}\").length"
            ));
            assert_eq!(drawn, json!(buckets.len()), "{m} {key}");
        }
        // Axes: 4 to 8 labelled times, 3 to 5 values in the metric's unit (milliseconds).
        let xt = b
            .eval(&format!(
                "document.querySelectorAll(\"{sel} .tick-x\").length"
            ))
            .as_u64()
            .unwrap();
        assert!((4..=8).contains(&xt), "{m}: {xt} time ticks");
        let yt: Vec<String> = serde_json::from_value(b.eval(&format!(
            "[...document.querySelectorAll(\"{sel} .tick-y\")].map(t => t.textContent)"
        )))
        .unwrap();
        assert!((3..=5).contains(&yt.len()), "{m}: {yt:?}");
        assert!(
            yt.iter().all(|t| t.ends_with(" ms") || t.ends_with(" s")),
            "{m}: {yt:?}"
        );
        assert_eq!(
            b.eval(&format!(
                "document.querySelectorAll(\"{sel} .tick-count\").length"
            )),
            json!(2),
            "counts have their own scale"
        );
        let legend = text(
            &mut b,
            &format!(
                "document.querySelector(\"{sel}\").parentNode.querySelector('.legend').textContent"
            ),
        );
        assert!(
            legend.contains("p50")
                && legend.contains("p95")
                && legend.contains("p99")
                && legend.contains("records per bucket"),
            "{legend}"
        );
    }
    let one = "svg.chart[data-metric='deploys']";
    assert_eq!(
        b.eval(&format!(
            "document.querySelectorAll(\"{one} circle.p99\").length"
        )),
        json!(1),
        "a lone bucket is a point"
    );
    assert!(
        text(
            &mut b,
            &format!(
                "document.querySelector(\"{one}\").parentNode.querySelector('.legend').textContent"
            )
        )
        .contains("1 bucket, 1 record")
    );

    // The firing alert, and one clock: local time with its zone everywhere, UTC on request.
    assert!(
        text(
            &mut b,
            "document.querySelector('[data-alert=coordination_time_exceeded]').textContent"
        )
        .contains("Coordination time 12034ms exceeds threshold 10000ms")
    );
    let status = text(&mut b, "document.getElementById('status').textContent");
    assert!(status.ends_with("GMT+1"), "{status}");
    let since = text(&mut b, "document.querySelector('.alert').textContent");
    assert!(since.contains("since 2026-11-27 11:00:00 GMT+1"), "{since}");
    b.eval("document.getElementById('utc').click()");
    assert!(text(&mut b, "location.search").contains("tz=utc"));
    assert!(
        text(&mut b, "document.querySelector('.alert').textContent")
            .contains("since 2026-11-27 10:00:00 UTC")
    );
    assert!(text(&mut b, "document.getElementById('status').textContent").ends_with("UTC"));

    // The tooltip, by keyboard: focus a chart, step back a bucket.
    let sel = "svg.chart[data-metric='coordination.time']";
    b.eval(&format!("document.querySelector(\"{sel}\").focus()"));
    let tip = text(
        &mut b,
        "document.getElementById('tooltip').hidden ? '' : document.getElementById('tooltip').textContent",
    );
    assert!(tip.contains("p99") && tip.contains("records"), "{tip}");
    b.press("ArrowLeft", false);
    let tip2 = text(&mut b, "document.getElementById('tooltip').textContent");
    assert_ne!(tip, tip2, "the arrow keys move between buckets");

    // Log scale: still 3 to 5 ticks, in the unit.
    b.eval("document.getElementById('log').click()");
    b.wait_for(&format!(
        "document.querySelector(\"{sel}\").dataset.scale === 'log'"
    ));
    let yt = b
        .eval(&format!(
            "document.querySelectorAll(\"{sel} .tick-y\").length"
        ))
        .as_u64()
        .unwrap();
    assert!((3..=5).contains(&yt), "{yt} log ticks");
    assert!(text(&mut b, "location.search").contains("scale=log"));
}

#[test]
fn dashboard_in_chromium_keeps_its_view_in_the_url_and_reads_at_1400_and_720_px() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let server = start(&dir, &[]);
    let url = format!("http://127.0.0.1:{}/", server.port);
    let mut b = Browser::launch(&chromium, (1400, 1000), "UTC");
    b.open(&url, READY);

    // The controls write the URL; a reload (a shared link) brings the same view back.
    b.eval("(() => { const r = document.getElementById('range'); r.value = '24h'; r.dispatchEvent(new Event('change')); })()");
    b.wait_for("document.body.dataset.range === '24h'");
    b.eval("(() => { const m = document.getElementById('metric'); m.value = 'memory_usage_mb'; m.dispatchEvent(new Event('change')); })()");
    b.wait_for("document.querySelectorAll('svg.chart').length === 1");
    assert_eq!(
        text(&mut b, "location.search"),
        "?range=24h&metric=memory_usage_mb"
    );
    b.call("Page.reload", json!({}));
    b.wait_for(READY);
    b.wait_for("document.querySelectorAll('svg.chart').length === 1");
    assert_eq!(
        text(&mut b, "document.getElementById('range').value"),
        "24h"
    );
    assert_eq!(
        text(&mut b, "document.getElementById('metric').value"),
        "memory_usage_mb"
    );
    assert_eq!(
        text(&mut b, "document.querySelector('svg.chart').dataset.metric"),
        "memory_usage_mb"
    );
    // Back and forward walk the views.
    b.eval("history.back()");
    b.wait_for(
        "location.search === '?range=24h' && document.querySelectorAll('svg.chart').length === 3",
    );
    assert_eq!(text(&mut b, "document.getElementById('metric').value"), "");
    b.eval("history.back()");
    b.wait_for("location.search === '' && document.body.dataset.range === '1h'");
    b.eval("history.forward()");
    b.wait_for("document.getElementById('range').value === '24h'");

    // A bad URL says what was wrong and shows the default view.
    b.open(&format!("{url}?range=3d&metric=no.such.metric"), READY);
    b.wait_for("!document.getElementById('notice').hidden && document.getElementById('notice').textContent.includes('no.such.metric')");
    let notice = text(&mut b, "document.getElementById('notice').textContent");
    assert!(notice.contains("Unknown range \"3d\""), "{notice}");
    assert_eq!(text(&mut b, "document.getElementById('range').value"), "");
    assert_eq!(
        b.eval("document.querySelectorAll('svg.chart').length"),
        json!(3)
    );
    assert_eq!(
        text(&mut b, "location.search"),
        "",
        "the URL is corrected to the view shown"
    );

    // Every control is reachable with Tab, the charts too (their tooltips follow the keys).
    b.open(&url, READY);
    let mut reached = std::collections::BTreeSet::new();
    for _ in 0..12 {
        b.press("Tab", false);
        reached.insert(text(
            &mut b,
            "document.activeElement.id || document.activeElement.tagName",
        ));
    }
    for id in ["range", "metric", "agent", "tag", "log", "utc", "svg"] {
        assert!(reached.contains(id), "{id} not reached by Tab: {reached:?}");
    }

    // Both widths: nothing wider than the window, labels at least 12 px, screenshots kept.
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    for width in [1400u32, 720] {
        b.resize(width, 1000);
        b.wait_for(&format!("[...document.querySelectorAll('svg.chart')].every(s => s.getBoundingClientRect().right <= {width})"));
        let wide = b
            .eval("document.documentElement.scrollWidth")
            .as_u64()
            .unwrap();
        let culprits = b.eval(&format!(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > {width} && !e.closest('.scroll')).slice(0, 8).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ')"
        ));
        assert!(
            wide <= u64::from(width),
            "the page is {wide} px wide in a {width} px window: {culprits}"
        );
        // Every column of the summary in view, none behind a horizontal scroll.
        let hidden = b.eval("(() => { const s = document.querySelector('#summary').parentElement; return s.scrollWidth - s.clientWidth; })()");
        assert!(
            hidden.as_i64().unwrap() <= 0,
            "the summary table hides {hidden} px at {width}"
        );
        let smallest = b.eval("Math.min(...[...document.querySelectorAll('svg.chart .tick')].map(t => parseFloat(getComputedStyle(t).fontSize) * t.ownerSVGElement.getBoundingClientRect().width / t.ownerSVGElement.viewBox.baseVal.width))");
        assert!(
            smallest.as_f64().unwrap() >= 11.5,
            "axis labels {smallest} px at {width}"
        );
        let shot = shots.join(format!("cfn-serve-dashboard-{width}.png"));
        b.screenshot(&shot);
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{}",
            shot.display()
        );
    }

    // A tag filter that matches nothing: no chart with made-up axes, a line saying so.
    b.resize(1400, 1000);
    b.open(&format!("{url}?tag=phase=nothing-matches"), READY);
    assert_eq!(
        b.eval("document.querySelectorAll('svg.chart').length"),
        json!(0)
    );
    assert!(
        text(
            &mut b,
            "document.querySelector('#charts p.empty').textContent"
        )
        .starts_with("No records matching this view in the last"),
        "{}",
        text(&mut b, "document.getElementById('charts').textContent")
    );

    // Empty states: records only older than 30 s; then no shards at all.
    let old = TestDir::new();
    seed(&old, now_ms() - 10 * 60_000);
    let server = start(&old, &[]);
    b.open(&format!("http://127.0.0.1:{}/", server.port), READY);
    assert_eq!(
        text(
            &mut b,
            "document.querySelector('#summary td.empty').textContent"
        ),
        "No records in the last 30 s."
    );
    let empty = TestDir::new();
    let server = start(&empty, &[]);
    b.open(&format!("http://127.0.0.1:{}/", server.port), READY);
    assert_eq!(
        text(
            &mut b,
            "document.querySelector('#charts .empty').textContent"
        ),
        "No records in the last 1 h."
    );
    assert_eq!(
        text(
            &mut b,
            "document.querySelector('#shards td.empty').textContent"
        ),
        "No hot shards."
    );
}

fn jsonl_lenient(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn parse_ms(ts: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", ts, "+%s%3N"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn twenty_clients_polling_while_writers_append_get_no_errors() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let server = start(&dir, &["--threads", "8"]);
    let port = server.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut emit = dir.cmd("cfn-emit");
        emit.args(["agent-1", "coordination.time", "5"]);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                emit.run().success();
            }
        })
    };
    let clients: Vec<_> = (0..20)
        .map(|c| {
            std::thread::spawn(move || {
                let paths = [
                    "/api/summary?window=30s",
                    "/api/series?metric=coordination.time&range=5m&bucket=10s",
                    "/api/shards",
                    "/metrics",
                    "/",
                ];
                for i in 0..10 {
                    let (status, _) = get(port, paths[(c + i) % paths.len()]);
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

/// Sends raw bytes and reads the reply (status, whole text) within `wait`.
fn raw(port: u16, bytes: &[u8], wait: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).ok()?;
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

#[test]
fn stalled_clients_never_starve_the_page_and_heads_are_bounded() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let server = start(&dir, &["--threads", "2"]);
    // Twenty connections that announce a body and send nothing, and twenty that send half a
    // request line and stall: more than there are workers.
    let mut stalled = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        if i % 2 == 0 {
            s.write_all(
                b"GET /api/summary HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n",
            )
            .unwrap();
        } else {
            s.write_all(b"GET /api/sum").unwrap();
        }
        stalled.push(s);
    }
    let t = Instant::now();
    let (status, body) = get(server.port, "/");
    assert_eq!(status, 200);
    assert!(body.contains("cfn-metrics"));
    let (status, _) = get(server.port, "/api/summary?window=5m");
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the page waited behind stalled clients"
    );
    // The body-announcing ones were answered 413 without waiting for the body.
    let mut first = stalled.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut text = String::new();
    let _ = first.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // A request line past the bound is refused (431) after 16 KiB, not read for ever.
    let mut huge = b"GET /".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    let (status, _) = raw(server.port, &huge, Duration::from_secs(10)).unwrap();
    assert_eq!(status, 431);
    drop(stalled);
}

#[test]
fn foreign_hosts_get_421_and_every_reply_has_security_headers() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let server = start(&dir, &["--allowed-host", "metrics.example"]);
    let ask = |host: &str| {
        raw(
            server.port,
            format!("GET /api/shards HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    assert_eq!(ask("evil.example").0, 421);
    assert_eq!(ask("evil.example:3001").0, 421);
    assert_eq!(ask("metrics.example").0, 200);
    assert_eq!(ask("localhost:1").0, 200);
    let (status, text) = ask(&format!("127.0.0.1:{}", server.port));
    assert_eq!(status, 200);
    for h in [
        "X-Content-Type-Options: nosniff",
        "X-Frame-Options: DENY",
        "Content-Security-Policy: default-src 'self'; script-src 'self'",
    ] {
        assert!(text.contains(h), "missing {h}: {text}");
    }
    // The page loads its script and style from the server, not inline.
    let (_, page) = get(server.port, "/");
    assert!(!page.contains("<script>") && page.contains("src=\"/app.js\""));
    assert_eq!(get(server.port, "/app.js").0, 200);
    assert_eq!(get(server.port, "/app.css").0, 200);
}

#[test]
fn a_fifo_or_symlink_alerts_log_is_refused_and_a_cut_character_costs_one_line() {
    let dir = TestDir::new();
    seed(&dir, now_ms());
    let fifo = dir.join("fifo.jsonl");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let server = start(&dir, &["--alerts-log", fifo.to_str().unwrap()]);
    let (status, _) = get(server.port, "/api/alerts");
    assert_eq!(status, 200, "a FIFO alerts log must not hang the request");
    drop(server);

    let secret = dir.write(
        "secret.txt",
        "{\"alert\":\"leaked\",\"state\":\"firing\"}\n",
    );
    let link = dir.join("link.jsonl");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let server = start(&dir, &["--alerts-log", link.to_str().unwrap()]);
    let (_, body) = get(server.port, "/api/alerts");
    assert!(!body.contains("leaked"), "{body}");
    drop(server);

    // A log longer than the 256 KiB tail, cut in the middle of a multi-byte character.
    let mut log = String::new();
    let line = |i: usize| {
        format!(
            "{{\"timestamp\":\"2026-11-27T10:00:00.000Z\",\"alert\":\"a{i}\",\"state\":\"firing\",\"severity\":\"warning\",\"message\":\"ééééé\",\"metadata\":{{\"metric\":\"x\",\"dedup_key\":\"k{i}\"}}}}\n"
        )
    };
    let mut i = 0;
    while log.len() < 300 * 1024 {
        log.push_str(&line(i));
        i += 1;
    }
    // Make the 256 KiB boundary fall inside an `é` (2 bytes).
    let mut bytes = log.into_bytes();
    let boundary = bytes.len() - 256 * 1024;
    let mut pad = 0;
    while bytes[boundary + pad] != 0xa9 {
        pad += 1;
    }
    bytes.truncate(bytes.len() - pad);
    while bytes.last() != Some(&b'\n') {
        bytes.pop();
    }
    let p = dir.write("long.jsonl", &bytes);
    let server = start(&dir, &["--alerts-log", p.to_str().unwrap()]);
    let (_, body) = get(server.port, "/api/alerts");
    let alerts: Value = serde_json::from_str(&body).unwrap();
    assert!(
        !alerts["firing"].as_array().unwrap().is_empty(),
        "the tail was dropped: {body}"
    );
}

#[test]
fn a_metric_named_like_a_broken_glob_is_served_with_exact() {
    let dir = TestDir::new();
    let now = now_ms();
    dir.write(
        "cfn-metrics-0.jsonl",
        format!(
            "{{\"timestamp\":\"{}\",\"metric\":\"x[\",\"value\":3}}\n",
            ts(now - 5_000)
        ),
    );
    let server = start(&dir, &[]);
    let (status, _) = get(server.port, "/api/summary?window=5m&metric=x%5B");
    assert_eq!(
        status, 400,
        "without exact=1 the name is a glob, and a bad one"
    );
    let (status, body) = get(server.port, "/api/summary?window=5m&metric=x%5B&exact=1");
    assert_eq!(status, 200);
    let aggs: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(aggs.len(), 1);
    assert_eq!(aggs[0]["count"], 1);
}

/// A GET with an Accept header; status, Content-Type and raw body.
fn get_accepting(port: u16, path: &str, accept: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, ctype, raw[end + 4..].to_vec())
}

#[test]
fn metrics_speak_protobuf_with_native_buckets_to_a_scraper_that_asks_and_text_to_others() {
    use cfn_prom::protobuf::{MetricFamily, MetricType};
    use prost::Message;
    let dir = TestDir::new();
    dir.write("cfn-metrics-1.jsonl", "");
    let server = start(&dir, &[]);
    let now = ts(now_ms());
    let mut text = String::new();
    for v in [0.4, 3.0, 3.0, 250.0] {
        text.push_str(&format!(
            "{{\"timestamp\":\"{now}\",\"agent\":\"agent-1\",\"metric\":\"task.latency\",\"value\":{v},\"unit\":\"ms\"}}\n"
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("cfn-metrics-1.jsonl"))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    let prometheus = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let (status, ctype, body) = get_accepting(server.port, "/metrics", prometheus);
    assert_eq!(status, 200);
    assert!(
        ctype.starts_with("application/vnd.google.protobuf"),
        "{ctype}"
    );
    let mut rest = &body[..];
    let mut families = Vec::new();
    while !rest.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut rest).unwrap());
    }
    let hist = families
        .iter()
        .find(|f| f.name == "cfn_task_latency_hist_seconds")
        .unwrap_or_else(|| panic!("{families:?}"));
    assert_eq!(hist.r#type, MetricType::Histogram as i32);
    let h = hist.metric[0].histogram.as_ref().unwrap();
    assert_eq!(h.sample_count, 4);
    assert_eq!(h.schema, 6, "the default --native-schema");
    assert!(!h.bucket.is_empty(), "the classic buckets are there too");
    let native: i64 = h
        .positive_delta
        .iter()
        .scan(0, |c, d| {
            *c += d;
            Some(*c)
        })
        .sum();
    assert_eq!(native, 4, "every record in a native bucket");
    assert!(
        families
            .iter()
            .any(|f| f.name == "cfn_task_latency" && f.r#type == MetricType::Summary as i32)
    );
    // Any other scraper (OpenMetrics, a browser, none) gets the text format.
    for accept in [
        "application/openmetrics-text;version=1.0.0",
        "text/html",
        "*/*",
    ] {
        let (status, ctype, body) = get_accepting(server.port, "/metrics", accept);
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain"), "{accept}: {ctype}");
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("# TYPE cfn_task_latency_hist_seconds histogram")
        );
    }
}

#[test]
fn a_native_schema_outside_prometheus_range_or_no_buckets_is_a_usage_error() {
    let dir = TestDir::new();
    for (flag, value, says) in [
        ("--native-schema", "9", "--native-schema 9"),
        ("--native-schema", "-5", "--native-schema -5"),
        ("--native-max-buckets", "0", "--native-max-buckets 0"),
    ] {
        dir.cmd("cfn-serve")
            .args(["--listen", "127.0.0.1:0", flag, value])
            .run()
            .status(2)
            .stderr_has(says);
    }
}

#[test]
fn the_dashboard_answer_says_where_the_data_starts_and_how_each_unit_scales() {
    let dir = TestDir::new();
    let end = now_ms();
    seed(&dir, end);
    let server = start(&dir, &[]);
    let (status, body) = get(server.port, "/api/dashboard?range=1h");
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    // The first record is 40 minutes before the end: the start of its minute (the index
    // covers the last --index-span, so older data is not "where the data starts").
    let first_minute = (end - 40 * 60_000).div_euclid(60_000) * 60_000;
    assert_eq!(d["data_since"], json!(ts(first_minute)));
    assert_eq!(
        d["units"]["coordination.time"],
        json!({"unit": "milliseconds", "scaled": {"dimension": "time", "to_base": 0.001}})
    );
    let empty = TestDir::new();
    let server = start(&empty, &[]);
    let (_, body) = get(server.port, "/api/dashboard?range=1h");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["data_since"], Value::Null);
    assert_eq!(d["units"], json!({}));
}

/// Issue 36 (medium 2): one record of 1.7976931348623157e308, or of 1e308 GB on the log
/// scale, hung the tab for 35-46 s on every refresh and ended in "Invalid array length" (the
/// tick loops ran to Infinity). The page draws any finite value: ticks bounded, values
/// clamped for drawing, the number itself shown as it was recorded.
#[test]
fn dashboard_in_chromium_draws_extreme_values_without_hanging() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = TestDir::new();
    let end = now_ms();
    let mut shard = String::new();
    for (i, (metric, value, unit)) in [
        ("huge", "1.7976931348623157e308", None),
        ("huge", "12", None),
        ("heap", "1e308", Some("gb")),
        ("heap", "-1e308", Some("gb")),
        ("heap", "3", Some("gb")),
    ]
    .iter()
    .enumerate()
    {
        let unit = unit.map_or(String::new(), |u| format!(",\"unit\":\"{u}\""));
        shard.push_str(&format!(
            "{{\"timestamp\":\"{}\",\"metric\":\"{metric}\",\"value\":{value}{unit}}}\n",
            ts(end - 20_000 + i as i64 * 1000)
        ));
    }
    dir.write("cfn-metrics-0.jsonl", shard);
    let server = start(&dir, &[]);
    let mut b = Browser::launch(&chromium, (1400, 1000), "UTC");
    for query in ["", "?scale=log"] {
        b.open(&format!("http://127.0.0.1:{}/{query}", server.port), READY);
        for metric in ["huge", "heap"] {
            let sel = format!("svg.chart[data-metric='{metric}']");
            let labels = text(
                &mut b,
                &format!(
                    "[...document.querySelectorAll(\"{sel} text.tick-y\")].map(t => t.textContent).join('|')"
                ),
            );
            assert!(!labels.is_empty(), "{query} {metric}: no y ticks");
            assert!(labels.split('|').count() <= 6, "{query} {metric}: {labels}");
            assert!(
                !labels.contains("Infinity") && !labels.contains("NaN"),
                "{query} {metric}: {labels}"
            );
            let drawn = text(
                &mut b,
                &format!(
                    "[...document.querySelectorAll(\"{sel} polyline, {sel} circle\")].map(e => e.getAttribute('points') || e.getAttribute('cy')).join(' ')"
                ),
            );
            assert!(
                !drawn.contains("NaN") && !drawn.contains("Infinity"),
                "{query} {metric}: {drawn}"
            );
        }
        let table = text(&mut b, "document.querySelector('#summary').innerText");
        assert!(
            table.contains("1.798e308"),
            "{query}: the value as recorded: {table}"
        );
    }
}
