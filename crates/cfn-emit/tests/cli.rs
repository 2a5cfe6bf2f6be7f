//! cfn-emit end to end: the real binary on temp dirs.

use cfn_testkit::{TestCommand, TestDir, jsonl, peer};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn shard_lines(dir: &Path) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("cfn-metrics-") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{name} ends mid-line"
            );
            out.insert(name, text.lines().map(str::to_string).collect());
        }
    }
    out
}

/// The shell shim's path and the directory of the built binaries (for PATH).
fn shim_and_bin_dir() -> (std::path::PathBuf, std::path::PathBuf) {
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/emit_metric.sh");
    let bin_dir = cfn_testkit::bin_path("cfn-emit")
        .parent()
        .unwrap()
        .to_path_buf();
    (shim, bin_dir)
}

#[test]
fn five_hundred_concurrent_emitters_lose_nothing_and_use_the_contract_shard() {
    let dir = TestDir::new();
    let bin = cfn_testkit::bin_path("cfn-emit");
    let threads: Vec<_> = (0..500)
        .map(|agent| {
            let bin = bin.clone();
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let st = std::process::Command::new(&bin)
                        .env_clear()
                        .env("CFN_METRICS_DIR", &d)
                        .env("CFN_LOCK_TIMEOUT_MS", "60000")
                        .args([format!("agent-{agent}"), "burst.seq".into(), format!("{i}")])
                        .status()
                        .unwrap();
                    assert!(st.success(), "agent {agent} emit {i}: {st:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let shards = shard_lines(dir.path());
    let mut seen = HashSet::new();
    for (name, lines) in &shards {
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("torn line in {name}: {line:?}: {e}"));
            let agent = v["agent"].as_str().unwrap();
            let n: u32 = agent.trim_start_matches("agent-").parse().unwrap();
            assert_eq!(
                name,
                &format!("cfn-metrics-{}.jsonl", n % 16),
                "{agent} in wrong shard"
            );
            assert!(
                seen.insert((agent.to_string(), v["value"].as_u64().unwrap())),
                "duplicate {line}"
            );
        }
    }
    assert_eq!(seen.len(), 10_000);
    assert!(
        shards["cfn-metrics-10.jsonl"]
            .iter()
            .any(|l| l.contains("\"agent-42\""))
    );
}

#[test]
fn legacy_form_with_metrics_file_writes_fields_and_defaults() {
    let dir = TestDir::new();
    let file = dir.join("legacy.jsonl");
    dir.cmd("cfn-emit")
        .env("METRICS_FILE", &file)
        .args(["coordination_time", "150.50"])
        .run()
        .success();
    dir.cmd("cfn-emit")
        .env("METRICS_FILE", &file)
        .args([
            "coordination.time",
            "1e3",
            "milliseconds",
            r#"{"phase":"consensus","n":3}"#,
        ])
        .run()
        .success();
    let recs = jsonl(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["metric"], "coordination_time");
    assert_eq!(recs[0]["value"], 150.5);
    assert_eq!(recs[0]["unit"], "count");
    assert_eq!(recs[0]["tags"], serde_json::json!({}));
    assert!(recs[0].get("agent").is_none());
    assert_eq!(recs[1]["value"], 1000);
    assert_eq!(recs[1]["unit"], "milliseconds");
    assert_eq!(
        recs[1]["tags"],
        serde_json::json!({"phase":"consensus","n":3})
    );
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(
        raw.lines().nth(1).unwrap().contains("\"value\":1000,"),
        "integers have no fraction: {raw}"
    );
    let ts = recs[0]["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z'));
    // No shard was touched.
    assert!(shard_lines(dir.path()).is_empty());
}

#[test]
fn symlinked_shard_is_refused_and_target_untouched() {
    let dir = TestDir::new();
    let target = dir.write("target.txt", "precious\n");
    std::os::unix::fs::symlink(&target, dir.join("cfn-metrics-10.jsonl")).unwrap();
    let out = dir.cmd("cfn-emit").args(["agent-42", "m", "1"]).run();
    assert_ne!(out.code(), 0);
    out.stderr_has("symlink");
    assert_eq!(dir.read("target.txt"), "precious\n");
}

#[test]
fn a_fifo_shard_with_no_reader_is_refused_with_73() {
    let dir = TestDir::new();
    let fifo = dir.join("cfn-metrics-10.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = dir.cmd("cfn-emit").args(["agent-42", "m", "1"]).run();
    assert_eq!(out.code(), 73, "{out:?}");
    out.stderr_has("cfn-metrics-10.jsonl")
        .stderr_has("not a regular file");
}

#[test]
fn shard_owned_by_another_user_is_refused() {
    if cfn_core_euid() != 0 {
        cfn_testkit::skip("needs root to chown a file to another user");
        return;
    }
    let dir = TestDir::new();
    let p = dir.write("cfn-metrics-10.jsonl", "");
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    let out = dir.cmd("cfn-emit").args(["agent-42", "m", "1"]).run();
    assert_eq!(out.code(), 73, "{out:?}");
    out.stderr_has("owned by uid 65534");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
}

fn cfn_core_euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file we just created is our effective uid.
    let t = tempfile::NamedTempFile::new().unwrap();
    t.as_file().metadata().unwrap().uid()
}

/// Holds an flock on `path` with the flock(1) program, as a bash user would.
fn hold_lock_with_flock(path: &Path) -> Option<std::process::Child> {
    let flock = peer("flock", "util-linux, to hold a lock as bash users do")?;
    let child = std::process::Command::new(flock)
        .arg("-o")
        .arg(path)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // -o: the lock belongs to flock itself, not to `sleep`, so killing flock releases it.
    // Wait until the lock is really held.
    let f = std::fs::OpenOptions::new().read(true).open(path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.try_lock().is_ok() {
        f.unlock().unwrap();
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(child)
}

#[test]
fn lock_timeout_exits_75_writes_nothing_then_recovers() {
    let dir = TestDir::new();
    let shard = dir.write("cfn-metrics-10.jsonl", "");
    let Some(mut holder) = hold_lock_with_flock(&shard) else {
        return;
    };
    let start = Instant::now();
    let out = dir
        .cmd("cfn-emit")
        .env("CFN_LOCK_TIMEOUT_MS", "200")
        .args(["agent-42", "m", "1"])
        .run();
    let took = start.elapsed();
    out.status(75).stderr_has("timed out");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(std::fs::metadata(&shard).unwrap().len(), 0);
    holder.kill().unwrap();
    holder.wait().unwrap();
    dir.cmd("cfn-emit")
        .env("CFN_LOCK_TIMEOUT_MS", "2000")
        .args(["agent-42", "m", "2"])
        .run()
        .success();
    assert_eq!(jsonl(&dir.read("cfn-metrics-10.jsonl")).len(), 1);
}

#[test]
fn shard_renamed_while_waiting_gets_record_in_new_file() {
    let dir = TestDir::new();
    let shard = dir.write("cfn-metrics-10.jsonl", "");
    let held = std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .unwrap();
    held.lock().unwrap();
    let mut cmd = dir.cmd("cfn-emit");
    cmd.env("CFN_LOCK_TIMEOUT_MS", "10000")
        .args(["agent-42", "m", "7"]);
    let child = std::thread::spawn(move || cmd.run());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&shard, dir.join("renamed.jsonl")).unwrap();
    held.unlock().unwrap();
    drop(held);
    child.join().unwrap().success();
    assert_eq!(
        dir.read("renamed.jsonl"),
        "",
        "record went to the renamed file"
    );
    let recs = jsonl(&dir.read("cfn-metrics-10.jsonl"));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["value"], 7);
}

#[test]
fn stdin_from_four_processes_lands_every_record_as_whole_lines() {
    let dir = TestDir::new();
    let handles: Vec<_> = (0..4)
        .map(|p| {
            let mut input = String::new();
            for i in 0..25_000 {
                // Mix both line forms; spread over shards by agent.
                if i % 2 == 0 {
                    input.push_str(&format!("{{\"agent\":\"p{p}-{}\",\"metric\":\"seq\",\"value\":{i},\"tags\":{{\"p\":{p}}}}}\n", i % 37));
                } else {
                    input.push_str(&format!("seq {i} count\n"));
                }
            }
            let mut cmd = dir.cmd("cfn-emit");
            cmd.args(["--stdin", "--agent", &format!("proc-{p}"), "--tag", &format!("proc={p}")]).stdin(input);
            std::thread::spawn(move || cmd.run())
        })
        .collect();
    for h in handles {
        h.join().unwrap().success();
    }
    let mut seen = HashSet::new();
    for (name, lines) in shard_lines(dir.path()) {
        for line in lines {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("torn line in {name}: {e}"));
            let proc_ = v["tags"]["proc"].as_str().unwrap().to_string();
            assert!(
                seen.insert((proc_, v["value"].as_u64().unwrap())),
                "duplicate {line}"
            );
        }
    }
    assert_eq!(seen.len(), 100_000);
}

#[test]
fn bad_values_and_tags_exit_65_naming_them_and_write_nothing() {
    let dir = TestDir::new();
    for (args, needle) in [
        (vec!["agent-1", "m", "nan"], "\"nan\""),
        (vec!["m", "inf"], "\"inf\""),
        (vec!["m", ""], "\"\""),
        (vec!["agent-1", "m", "12abc"], "\"12abc\""),
        (vec!["m", "1", "count", "[1,2]"], "[1,2]"),
        (vec!["m", "1", "count", "{bad"], "{bad"),
        (vec!["--tags", "\"x\"", "m", "1"], "must be a JSON object"),
    ] {
        dir.cmd("cfn-emit")
            .args(&args)
            .run()
            .status(65)
            .stderr_has(needle);
    }
    assert!(shard_lines(dir.path()).is_empty());
}

#[test]
fn stdin_rejects_bad_lines_with_numbers_and_keeps_the_rest() {
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-emit")
        .args(["--stdin", "--agent", "a-1"])
        .stdin("good 1\nbad nan\n{\"metric\":\"j\",\"value\":2}\n")
        .run();
    out.status(65)
        .stderr_has("<stdin>:2:")
        .stderr_has("\"nan\"");
    let recs = jsonl(&dir.read("cfn-metrics-1.jsonl"));
    assert_eq!(recs.len(), 2);
}

#[test]
fn timestamp_flag_replays_a_time() {
    let dir = TestDir::new();
    dir.cmd("cfn-emit")
        .args(["--timestamp", "2026-01-02T03:04:05.6Z", "agent-3", "m", "1"])
        .run()
        .success();
    let recs = jsonl(&dir.read("cfn-metrics-3.jsonl"));
    assert_eq!(recs[0]["timestamp"], "2026-01-02T03:04:05.600Z");
}

#[test]
fn shell_shim_wrappers_write_valid_json_and_leave_shell_options_alone() {
    let Some(bash) = peer("bash", "to source contrib/emit_metric.sh") else {
        return;
    };
    let dir = TestDir::new();
    let (shim, bin_dir) = shim_and_bin_dir();
    let file = dir.join("legacy.jsonl");
    let script = format!(
        r#"
before="$(set -o; shopt)"
source "{shim}"
emit_coordination_time 125 3 'say "hi" \ there'
emit_agent_count 5 active
emit_delivery_rate 92.5 100 92
emit_message_count 10 sent 'agent-1'
emit_consensus_score 94 4 validation
emit_confidence_score 85 'agent-"1"' 2
emit_metric agent-42 sharded.metric 3 || exit 9
METRICS_FILE= emit_metric agent-42 sharded.metric 4 || exit 9
emit_metric bad nan; rc=$?
after="$(set -o; shopt)"
[ "$before" = "$after" ] || {{ echo "shell options changed"; diff <(echo "$before") <(echo "$after"); exit 3; }}
echo "rc=$rc"
"#,
        shim = shim.display()
    );
    let out = TestCommand::program(bash)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("METRICS_FILE", &file)
        .env("CFN_METRICS_DIR", dir.path())
        .args(["-c", &script])
        .run();
    out.success();
    assert!(out.stdout().contains("rc=65"), "{out:?}");
    let recs = jsonl(&std::fs::read_to_string(&file).unwrap());
    let names: Vec<_> = recs
        .iter()
        .map(|r| r["metric"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "coordination.time",
            "coordination.agents",
            "coordination.delivery_rate",
            "coordination.messages",
            "consensus.score",
            "agent.confidence",
            "sharded.metric"
        ]
    );
    assert_eq!(
        recs[0]["tags"],
        serde_json::json!({"phase": "say \"hi\" \\ there", "agent_count": 3})
    );
    assert_eq!(recs[0]["unit"], "milliseconds");
    assert_eq!(recs[2]["value"], 92.5);
    assert_eq!(
        recs[2]["tags"],
        serde_json::json!({"total":100,"delivered":92,"target":90})
    );
    assert_eq!(recs[5]["tags"]["agent"], "agent-\"1\"");
    assert_eq!(recs[6]["agent"], "agent-42");
    // With METRICS_FILE empty the sharded form goes to the shard.
    assert_eq!(jsonl(&dir.read("cfn-metrics-10.jsonl")).len(), 1);
}

#[test]
fn stdin_writes_each_line_promptly_while_the_producer_stays_open() {
    let dir = TestDir::new();
    let mut cmd = dir.cmd("cfn-emit");
    cmd.args(["--stdin", "--agent", "agent-3"]);
    let c = cmd.command();
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    for i in 1..=3 {
        writeln!(stdin, "slow.metric {i}").unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while jsonl(&dir.read("cfn-metrics-3.jsonl")).len() < i {
            assert!(
                Instant::now() < deadline,
                "record {i} was held back while stdin stayed open"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn shell_shim_stream_mode_writes_through_one_cfn_emit() {
    let Some(bash) = peer("bash", "to source contrib/emit_metric.sh") else {
        return;
    };
    let dir = TestDir::new();
    let (shim, bin_dir) = shim_and_bin_dir();
    let script = format!(
        r#"
source "{shim}"
before="$(set -o; shopt)"
cfn_emit_open || exit 9
for i in $(seq 1 500); do emit_metric "agent-$i" stream.seq "$i" || exit 8; done
emit_coordination_time 125 3 'say "hi" \ there'
emit_metric 'my metric' 2 ms '{{"k": "a b"}}'
emit_metric '42; rm -rf /tmp/x' m 1
cfn_emit_close; echo "rc=$?"
cfn_emit_open
emit_metric bad nan
cfn_emit_close; echo "rc=$?"
after="$(set -o; shopt)"
[ "$before" = "$after" ] || {{ echo "shell options changed"; exit 3; }}
[ -z "${{_CFN_EMIT_PID:-}}" ] || exit 4
"#,
        shim = shim.display()
    );
    let out = TestCommand::program(bash)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("CFN_METRICS_DIR", dir.path())
        .args(["-c", &script])
        .run();
    out.success();
    assert!(out.stdout().contains("rc=0\nrc=65\n"), "{out:?}");
    out.stderr_has("\"nan\"");
    let mut recs = Vec::new();
    for (_, lines) in shard_lines(dir.path()) {
        recs.extend(
            lines
                .iter()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    assert_eq!(
        recs.iter().filter(|r| r["metric"] == "stream.seq").count(),
        500
    );
    let r42 = recs
        .iter()
        .find(|r| r["value"] == 42 && r["metric"] == "stream.seq")
        .unwrap();
    assert_eq!(r42["agent"], "agent-42");
    let ct = recs
        .iter()
        .find(|r| r["metric"] == "coordination.time")
        .unwrap();
    assert_eq!(
        ct["tags"],
        serde_json::json!({"phase": "say \"hi\" \\ there", "agent_count": 3})
    );
    let mm = recs.iter().find(|r| r["metric"] == "my metric").unwrap();
    assert_eq!(
        (mm["unit"].as_str(), mm["tags"]["k"].as_str()),
        (Some("ms"), Some("a b"))
    );
    assert!(recs.iter().any(|r| r["agent"] == "42; rm -rf /tmp/x"));
}

#[test]
fn shell_shim_stream_mode_reports_a_dead_cfn_emit_and_keeps_the_agent() {
    let Some(bash) = peer("bash", "to source contrib/emit_metric.sh") else {
        return;
    };
    let Some(flock) = peer("flock", "to hold a shard's lock") else {
        return;
    };
    let dir = TestDir::new();
    let (shim, bin_dir) = shim_and_bin_dir();
    let shard = dir.join("cfn-metrics-7.jsonl");
    let script = format!(
        r#"
source "{shim}"
cfn_emit_open --agent agent-7 || exit 9
emit_metric m.one 1 || exit 8
sleep 0.3
"{flock}" "{shard}" sleep 2 &
holder=$!
# Until the holder has the lock (the shard exists, so flock -n tells).
until ! "{flock}" -n "{shard}" true; do sleep 0.02; done
emit_metric m.two 2; echo "second=$?"
wait "$holder"
sleep 0.3
emit_metric m.three 3; echo "third=$?"
emit_metric m.four 4; echo "fourth=$?"
cfn_emit_close; echo "close=$?"
cfn_emit_open --no-such-flag
sleep 0.5
emit_metric agent-8 m.five 5; echo "fifth=$?"
cfn_emit_close; echo "close2=$?"
emit_metric 007 m.six 6; echo "sixth=$?"
"#,
        shim = shim.display(),
        flock = flock.display(),
        shard = shard.display()
    );
    let out = TestCommand::program(bash)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("CFN_METRICS_DIR", dir.path())
        .env("CFN_LOCK_TIMEOUT_MS", "300")
        .args(["-c", &script])
        .run();
    out.success();
    let text = out.stdout();
    for want in [
        "second=0", "third=75", "fourth=0", "close=75", "fifth=2", "close2=2", "sixth=0",
    ] {
        assert!(text.contains(want), "missing {want}: {out:?}");
    }
    let recs = jsonl(&dir.read("cfn-metrics-7.jsonl"));
    let metrics: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["metric"].as_str().unwrap(), r["agent"].as_str().unwrap()))
        .collect();
    // m.two died with the cfn-emit that timed out (and was reported); the rest kept the
    // agent given at open; after close, calls are direct again (agent 007 -> shard 7).
    assert_eq!(
        metrics,
        [
            ("m.one", "agent-7"),
            ("m.three", "agent-7"),
            ("m.four", "agent-7"),
            ("m.six", "007")
        ]
    );
}

#[test]
fn shell_shim_writes_valid_json_for_leading_zeros_and_control_characters() {
    let Some(bash) = peer("bash", "to source contrib/emit_metric.sh") else {
        return;
    };
    let dir = TestDir::new();
    let (shim, bin_dir) = shim_and_bin_dir();
    let script = format!(
        r#"source "{shim}"
emit_coordination_time 5 007 $'ph\x01a\x1bse' || exit 7
emit_delivery_rate 90 -0.5 12 || exit 8
"#,
        shim = shim.display()
    );
    TestCommand::program(bash)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("CFN_METRICS_DIR", dir.path())
        .env("METRICS_FILE", dir.join("legacy.jsonl"))
        .args(["-c", &script])
        .run()
        .success();
    let recs = jsonl(&dir.read("legacy.jsonl"));
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0]["tags"],
        serde_json::json!({"phase": "ph\u{1}a\u{1b}se", "agent_count": "007"})
    );
    assert_eq!(recs[1]["tags"]["total"], -0.5);
    assert_eq!(recs[1]["tags"]["delivered"], 12);
}

#[test]
fn stdin_applies_the_readers_rules_to_json_records() {
    let dir = TestDir::new();
    let input = concat!(
        "{\"metric\":\"ok\",\"value\":1}\n",
        "{\"metric\":\"quoted\",\"value\":\"12\"}\n",
        "{\"metric\":\"a\\u0007b\",\"value\":1}\n",
        "{\"metric\":\"late\",\"value\":2,\"timestamp\":\"2026-11-27T10:00:00Z\"}\n",
    );
    let out = dir
        .cmd("cfn-emit")
        .args(["--stdin", "--agent", "agent-1"])
        .stdin(input)
        .run();
    out.status(65)
        .stderr_has("<stdin>:2: value \"12\" is not a number")
        .stderr_has("<stdin>:3:")
        .stderr_has("skipped 2 malformed lines");
    let metrics: Vec<String> = jsonl(&dir.read("cfn-metrics-1.jsonl"))
        .iter()
        .map(|r| r["metric"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(metrics, ["ok", "late"]);
    // What cfn-emit accepts, every reader reads back whole.
    let back = dir.cmd("cfn-cat").arg("--strict").run();
    back.success();
    assert_eq!(back.jsonl().len(), 2);
}

#[test]
fn stdin_strict_still_writes_what_came_before_the_bad_line() {
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-emit")
        .args(["--stdin", "--strict", "--agent", "agent-1"])
        .stdin("a 1\nb 2\nc nope\nd 4\n")
        .run();
    out.status(65).stderr_has("<stdin>:3:");
    let metrics: Vec<String> = jsonl(&dir.read("cfn-metrics-1.jsonl"))
        .iter()
        .map(|r| r["metric"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(metrics, ["a", "b"]);
}

#[test]
fn the_sharded_form_takes_a_unit_and_tags_and_errors_name_the_form_and_word() {
    let dir = TestDir::new();
    dir.cmd("cfn-emit")
        .args([
            "7",
            "coordination.time",
            "150",
            "milliseconds",
            r#"{"phase":"consensus"}"#,
        ])
        .run()
        .success();
    dir.cmd("cfn-emit")
        .args(["agent-7", "queue_depth", "3", "count"])
        .run()
        .success();
    let recs = jsonl(&dir.read("cfn-metrics-7.jsonl"));
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["agent"], "7");
    assert_eq!(recs[0]["metric"], "coordination.time");
    assert_eq!(recs[0]["unit"], "milliseconds");
    assert_eq!(recs[0]["tags"]["phase"], "consensus");
    assert_eq!(recs[1]["unit"], "count");
    assert!(recs[1].get("tags").is_none());
    // Through --stdin too, with spaces inside the tags.
    dir.cmd("cfn-emit")
        .arg("--stdin")
        .stdin("agent-7 m.s 2 ms {\"k\": \"a b\"}\n")
        .run()
        .success();
    let recs = jsonl(&dir.read("cfn-metrics-7.jsonl"));
    assert_eq!(recs[2]["tags"]["k"], "a b");
    // Words that fit no form: both forms are named with the word that broke each.
    let out = dir
        .cmd("cfn-emit")
        .args(["agent-7", "coordination.time", "fast", "ms"])
        .run();
    out.status(65)
        .stderr_has(
            "as METRIC VALUE [UNIT] [TAGS_JSON], VALUE \"coordination.time\" (the 2nd word)",
        )
        .stderr_has("as AGENT_ID METRIC VALUE [UNIT] [TAGS_JSON], VALUE \"fast\" (the 3rd word)");
    let out = dir
        .cmd("cfn-emit")
        .args(["a", "b", "c", "d", "e", "f"])
        .run();
    assert_ne!(out.code(), 0);
}

#[test]
fn a_partial_line_left_by_a_killed_writer_is_cut_before_the_next_record() {
    let dir = TestDir::new();
    // A writer killed mid-write left half a record, never acknowledged.
    let shard = dir.write(
        "cfn-metrics-3.jsonl",
        "{\"timestamp\":\"2026-11-27T10:00:00.000Z\",\"agent\":\"agent-3\",\"metric\":\"m\",\"value\":1}\n{\"timestamp\":\"2026-11-27T10:00:01.0",
    );
    dir.cmd("cfn-emit")
        .args(["agent-3", "m", "2"])
        .run()
        .success();
    let text = std::fs::read_to_string(&shard).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(text.ends_with('\n'));
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["agent"], "agent-3");
    }
    // The same through a stream writer.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .unwrap()
        .write_all(b"{\"timestamp\":\"2026-11-2")
        .unwrap();
    dir.cmd("cfn-emit")
        .arg("--stdin")
        .stdin("agent-3 m 3\n")
        .run()
        .success();
    let text = std::fs::read_to_string(&shard).unwrap();
    assert_eq!(jsonl(&text).len(), 3, "{text}");
}

#[test]
fn a_full_disk_leaves_no_torn_line_and_exits_74() {
    if cfn_core::fsutil::effective_uid() != 0 {
        assert!(
            std::env::var("CFN_REQUIRE_PEERS").as_deref() != Ok("1"),
            "CFN_REQUIRE_PEERS=1 but not root: a small tmpfs cannot be mounted"
        );
        cfn_testkit::skip("not root, so no small tmpfs can be mounted for a full disk");
        return;
    }
    let dir = TestDir::new();
    let hot = dir.join("hot");
    std::fs::create_dir(&hot).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&hot)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(hot.clone());
    let emit = |stdin: String| {
        let mut c = TestCommand::new("cfn-emit");
        c.env("CFN_METRICS_DIR", &hot).arg("--stdin").stdin(stdin);
        c.run()
    };
    emit("agent-0 m 1\n".into()).success();
    // Fill what is left but a little, then write far more than fits, in one batch.
    let filler = hot.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[b'x'; 512]).is_ok() {}
    drop(f);
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len.saturating_sub(1500))
        .unwrap();
    let batch: String = (0..200).map(|i| format!("agent-0 m {i}\n")).collect();
    let out = emit(batch);
    out.status(74);
    out.stderr_has("cfn-metrics-0.jsonl");
    let shard = hot.join("cfn-metrics-0.jsonl");
    let text = std::fs::read_to_string(&shard).unwrap();
    assert!(text.ends_with('\n'), "a torn line was left: {text:?}");
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    // With room again, the next record lands whole after the others.
    std::fs::remove_file(&filler).unwrap();
    emit("agent-0 m 999\n".into()).success();
    let text = std::fs::read_to_string(&shard).unwrap();
    assert!(jsonl(&text).iter().any(|r| r["value"] == 999));
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}

/// Issue 38: the common slips are caught. Swapped agent and metric, a value before the
/// metric (the metric taken for a unit) and a number as the metric are refused (exit 2, with
/// what was probably meant) before anything is written; a misspelt unit is a warning with a
/// suggestion (a unit is free text: a legacy caller's spelling keeps working).
#[test]
fn common_slips_are_refused_or_warned_with_what_was_meant() {
    let dir = TestDir::new();
    let emit = |args: &[&str]| {
        dir.cmd("cfn-emit")
            .env("CFN_METRICS_DIR", dir.path())
            .args(args)
            .run()
    };
    let out = emit(&["task.latency", "agent-1", "150"]);
    out.status(2)
        .stderr_has("did you mean `cfn-emit agent-1 task.latency 150`?");
    let out = emit(&["agent-1", "150", "task.latency"]);
    out.status(2)
        .stderr_has("did you mean `cfn-emit agent-1 task.latency 150`?");
    emit(&["150", "12"])
        .status(2)
        .stderr_has("metric \"150\" is a number");
    assert!(shard_lines(dir.path()).is_empty(), "nothing written");
    for (unit, meant) in [("milisecond", "millisecond"), ("msec", "ms")] {
        let out = emit(&["--unit", unit, "task.latency", "5"]);
        out.success().stderr_has(&format!(
            "unit \"{unit}\" is not in the unit vocabulary (did you mean \"{meant}\"?)"
        ));
    }
    // What is right is quiet, a word of one's own too.
    for args in [
        &["agent-1", "task.latency", "150"][..],
        &["--unit", "widgets", "queue", "3"],
        &["task.latency", "150", "ms"],
    ] {
        let out = emit(args);
        assert_eq!((out.code(), out.stderr()), (0, String::new()), "{args:?}");
    }
    assert_eq!(
        shard_lines(dir.path())
            .values()
            .map(Vec::len)
            .sum::<usize>(),
        5
    );
}

/// `--done AGENT` writes the one record readers recognise (contract section 10), in the
/// agent's own shard, with the given tags; it takes no other call form.
#[test]
fn done_writes_the_done_record_in_the_agents_shard() {
    let dir = TestDir::new();
    dir.cmd("cfn-emit")
        .args([
            "--timestamp",
            "2026-11-27T10:00:00Z",
            "--tag",
            "job=build-7",
        ])
        .args(["--done", "agent-42"])
        .run()
        .success();
    let shards = shard_lines(dir.path());
    assert_eq!(
        shards,
        HashMap::from([(
            "cfn-metrics-10.jsonl".to_string(),
            vec![
                r#"{"timestamp":"2026-11-27T10:00:00.000Z","agent":"agent-42","metric":"cfn.agent.done","value":1,"tags":{"job":"build-7"}}"#
                    .to_string()
            ]
        )])
    );
    for bad in [
        vec!["--done", "agent-1", "m", "1"],
        vec!["--done", "agent-1", "--stdin"],
        vec!["--done", "agent-1", "--agent", "agent-2"],
        vec!["--done", " "],
    ] {
        let out = dir.cmd("cfn-emit").args(&bad).run();
        assert_eq!(out.code(), 2, "{bad:?}: {}", out.stderr());
    }
}
