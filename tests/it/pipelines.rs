//! The tools composed by pipes, as operators run them, on temp dirs of shards.

use cfn_testkit::{TestDir, jsonl};
use std::process::{Command, Stdio};

/// Runs `a | b | c ...` with the given environment and returns (stdout, exit statuses).
fn pipeline(dir: &TestDir, stages: &[&[&str]]) -> (String, Vec<i32>) {
    let mut children = Vec::new();
    let mut prev: Option<std::process::ChildStdout> = None;
    for (i, stage) in stages.iter().enumerate() {
        let mut c = Command::new(cfn_testkit::bin_path(stage[0]));
        c.args(&stage[1..])
            .env_clear()
            .env("CFN_METRICS_DIR", dir.path())
            .env("CFN_ARCHIVE_DIR", dir.join("archive"))
            .stdout(Stdio::piped())
            .stdin(match prev.take() {
                Some(out) => Stdio::from(out),
                None => Stdio::null(),
            });
        let mut child = c.spawn().unwrap();
        if i + 1 < stages.len() {
            prev = child.stdout.take();
        }
        children.push(child);
    }
    let last = children.pop().unwrap();
    let out = last.wait_with_output().unwrap();
    let mut codes: Vec<i32> = children
        .into_iter()
        .map(|mut c| c.wait().unwrap().code().unwrap_or(-1))
        .collect();
    codes.push(out.status.code().unwrap_or(-1));
    (String::from_utf8(out.stdout).unwrap(), codes)
}

fn emit(dir: &TestDir, args: &[&str]) {
    dir.cmd("cfn-emit").args(args).run().success();
}

#[test]
fn cat_since_30s_into_agg_into_alert_fires_on_a_slow_round() {
    let dir = TestDir::new();
    // Old records (outside the window) must not count.
    emit(
        &dir,
        &[
            "--timestamp",
            "2020-01-01T00:00:00Z",
            "agent-1",
            "coordination.time",
            "99999",
        ],
    );
    for a in 0..20 {
        emit(
            &dir,
            &[
                &format!("agent-{a}"),
                "coordination.time",
                &format!("{}", 100 + a),
            ],
        );
    }
    let (out, codes) = pipeline(
        &dir,
        &[&["cfn-cat", "--since", "30s"], &["cfn-agg"], &["cfn-alert"]],
    );
    assert_eq!(codes, [0, 0, 0], "nothing should fire: {out}");
    assert_eq!(out, "");
    emit(&dir, &["agent-42", "coordination.time", "12034"]);
    let (out, codes) = pipeline(
        &dir,
        &[&["cfn-cat", "--since", "30s"], &["cfn-agg"], &["cfn-alert"]],
    );
    assert_eq!(codes, [0, 0, 1]);
    let evs = jsonl(&out);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["alert"], "coordination_time_exceeded");
    assert_eq!(
        evs[0]["message"],
        "Coordination time 12034ms exceeds threshold 10000ms"
    );
    // Grouped by agent, the alert names the agent.
    let (out, _) = pipeline(
        &dir,
        &[
            &["cfn-cat", "--since", "30s"],
            &["cfn-agg", "--by", "agent"],
            &["cfn-alert"],
        ],
    );
    assert_eq!(jsonl(&out)[0]["metadata"]["labels"]["agent"], "agent-42");
}

#[test]
fn cat_into_agg_into_promtext_carries_every_group() {
    let dir = TestDir::new();
    for a in 0..5 {
        emit(
            &dir,
            &[
                "--agent",
                &format!("agent-{a}"),
                "--unit",
                "milliseconds",
                "coordination.time",
                &format!("{}", (a + 1) * 100),
            ],
        );
    }
    let (out, codes) = pipeline(
        &dir,
        &[
            &["cfn-cat", "--since", "1m"],
            &["cfn-agg", "--by", "agent"],
            &["cfn-promtext", "--base-units"],
        ],
    );
    assert_eq!(codes, [0, 0, 0]);
    for a in 0..5 {
        let line = format!(
            "cfn_coordination_time_seconds_max{{agent=\"agent-{a}\"}} {}",
            (a as f64 + 1.0) / 10.0
        );
        assert!(out.contains(&line), "missing {line} in\n{out}");
    }
}

#[test]
fn legacy_single_file_feeds_the_same_pipeline() {
    let dir = TestDir::new();
    let legacy = dir.join("legacy.jsonl");
    for v in ["1", "2", "3"] {
        dir.cmd("cfn-emit")
            .env("METRICS_FILE", &legacy)
            .args(["coordination_time", v, "milliseconds"])
            .run()
            .success();
    }
    // The old library's pretty-printed records mixed in.
    std::fs::write(
        dir.join("old.jsonl"),
        "{\n  \"timestamp\": \"2026-11-27T10:00:00.000Z\",\n  \"metric\": \"coordination_time\",\n  \"value\": 4,\n  \"unit\": \"milliseconds\",\n  \"tags\": {}\n}\n",
    )
    .unwrap();
    let (out, codes) = pipeline(
        &dir,
        &[
            &[
                "cfn-cat",
                legacy.to_str().unwrap(),
                dir.join("old.jsonl").to_str().unwrap(),
            ],
            &["cfn-agg"],
        ],
    );
    assert_eq!(codes, [0, 0]);
    let a = &jsonl(&out)[0];
    assert_eq!(
        (a["count"].as_u64(), a["sum"].as_f64(), a["unit"].as_str()),
        (Some(4), Some(10.0), Some("milliseconds"))
    );
}

#[test]
fn archived_records_aggregate_the_same_as_the_hot_ones() {
    let dir = TestDir::new();
    for a in 0..30 {
        emit(
            &dir,
            &[
                &format!("agent-{a}"),
                "task_duration_ms",
                &format!("{}", a * 3),
            ],
        );
    }
    let (hot, _) = pipeline(&dir, &[&["cfn-cat"], &["cfn-agg", "--by", "agent"]]);
    dir.cmd("cfn-archive")
        .args(["run", "--hot", "0s", "--trim-grace", "0s"])
        .run()
        .success();
    // Everything was archived, then trimmed from the hot shards.
    let (left, _) = pipeline(&dir, &[&["cfn-cat"]]);
    assert_eq!(left, "");
    let archive = dir.join("archive");
    let (cold, codes) = pipeline(
        &dir,
        &[
            &["cfn-cat", archive.to_str().unwrap()],
            &["cfn-agg", "--by", "agent"],
        ],
    );
    assert_eq!(codes, [0, 0]);
    assert_eq!(jsonl(&cold), jsonl(&hot));
    assert_eq!(jsonl(&cold).len(), 30);
}

/// Issue 38: the README's own demo. Two legacy calls without a unit and one in ms for one
/// metric: cfn-agg keeps them apart, and cfn-promtext used to keep "the first" of the two
/// series (the ms record that fires the alert was lost) and, with --base-units, wrote the
/// unitless values as seconds. Every record is in the textfile now, nothing under a unit it
/// does not have.
#[test]
fn the_readme_demo_keeps_every_record_in_the_textfile_in_its_own_unit() {
    let dir = TestDir::new();
    for args in [
        &["agent-1", "coordination.time", "150"][..],
        &["agent-2", "coordination.time", "250"],
        &[
            "--agent",
            "agent-42",
            "--unit",
            "milliseconds",
            "coordination.time",
            "12034",
        ],
    ] {
        dir.cmd("cfn-emit")
            .env("CFN_METRICS_DIR", dir.path())
            .args(args)
            .run()
            .success();
    }
    let count = |text: &str, series: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(series))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let (plain, status) = pipeline(
        &dir,
        &[
            &["cfn-cat", "--since", "1h"],
            &["cfn-agg"],
            &["cfn-promtext"],
        ],
    );
    assert_eq!(status, [0, 0, 0]);
    assert_eq!(count(&plain, "cfn_coordination_time_count"), 3.0, "{plain}");
    assert!(
        plain.contains("cfn_coordination_time_count{unit=\"\"} 2"),
        "{plain}"
    );
    assert!(
        plain.contains("cfn_coordination_time_max{unit=\"milliseconds\"} 12034"),
        "{plain}"
    );
    let (base, status) = pipeline(
        &dir,
        &[
            &["cfn-cat", "--since", "1h"],
            &["cfn-agg"],
            &["cfn-promtext", "--base-units"],
        ],
    );
    assert_eq!(status, [0, 0, 0]);
    assert!(
        base.contains("cfn_coordination_time_count 2\n"),
        "unitless, unscaled: {base}"
    );
    assert!(base.contains("cfn_coordination_time_max 250\n"), "{base}");
    assert!(
        base.contains("cfn_coordination_time_seconds_max 12.034\n"),
        "{base}"
    );
    assert_eq!(
        count(&base, "cfn_coordination_time_seconds_count"),
        1.0,
        "{base}"
    );
}
