//! cfn-cat end to end: directories of plain, gzip and legacy files, time bounds, merge
//! order, following shards through appends, new files, renames and rewrites.

use cfn_testkit::{TestDir, jsonl};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn rec(ts: &str, metric: &str, value: u64) -> String {
    format!(
        "{{\"timestamp\":\"{ts}\",\"agent\":\"a-1\",\"metric\":\"{metric}\",\"value\":{value}}}\n"
    )
}

fn gz_member(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

#[test]
fn reads_a_directory_of_plain_multi_member_gzip_and_legacy_files() {
    let dir = TestDir::new();
    dir.write(
        "arch/cfn-metrics-20261126-0.jsonl",
        rec("2026-11-26T10:00:00.000Z", "plain", 1),
    );
    let mut gz = gz_member(&rec("2026-11-25T10:00:00.000Z", "gz", 2));
    gz.extend(gz_member(&rec("2026-11-25T11:00:00.000Z", "gz", 3)));
    dir.write("arch/sub/cfn-metrics-20261125-0.jsonl.gz", gz);
    dir.write(
        "arch/legacy.jsonl",
        "{\n  \"timestamp\": \"2026-11-24T10:00:00.000Z\",\n  \"metric\": \"legacy\",\n  \"value\": 4,\n  \"unit\": \"count\",\n  \"tags\": {}\n}\n",
    );
    dir.write("arch/ignored.txt", "not records\n");
    let out = dir.cmd("cfn-cat").arg(dir.join("arch")).run();
    let lines: Vec<String> = out.success().stdout().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    // Plain records pass through byte for byte.
    assert!(
        lines.contains(
            &rec("2026-11-26T10:00:00.000Z", "plain", 1)
                .trim_end()
                .to_string()
        )
    );
    assert!(
        lines.contains(
            &rec("2026-11-25T11:00:00.000Z", "gz", 3)
                .trim_end()
                .to_string()
        )
    );
    assert!(lines.contains(
        &r#"{"timestamp":"2026-11-24T10:00:00.000Z","metric":"legacy","value":4,"unit":"count","tags":{}}"#.to_string()
    ));
}

#[test]
fn since_is_inclusive_and_until_exclusive() {
    let dir = TestDir::new();
    let f = dir.write(
        "x.jsonl",
        [
            rec("2026-11-27T09:59:59.999Z", "m", 1),
            rec("2026-11-27T10:00:00.000Z", "m", 2),
            rec("2026-11-27T10:00:30.000Z", "m", 3),
            rec("2026-11-27T10:01:00.000Z", "m", 4),
        ]
        .concat(),
    );
    let out = dir
        .cmd("cfn-cat")
        .args([
            "--since",
            "2026-11-27T10:00:00Z",
            "--until",
            "2026-11-27T10:01:00Z",
        ])
        .arg(&f)
        .run();
    let vals: Vec<u64> = out
        .success()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    assert_eq!(vals, [2, 3]);
    // A duration back from now.
    let now_rec = rec(&cfn_core_now(), "m", 9);
    let g = dir.write(
        "now.jsonl",
        [rec("2020-01-01T00:00:00Z", "m", 0), now_rec].concat(),
    );
    let vals: Vec<u64> = dir
        .cmd("cfn-cat")
        .args(["--since", "30s"])
        .arg(&g)
        .run()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    assert_eq!(vals, [9]);
}

fn cfn_core_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000Z"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn since_seeks_correctly_in_a_large_shard() {
    let dir = TestDir::new();
    let mut s = String::new();
    for i in 0..40_000u64 {
        s.push_str(&rec(
            &format!(
                "2026-11-27T{:02}:{:02}:{:02}.000Z",
                i / 3600,
                (i / 60) % 60,
                i % 60
            ),
            "m",
            i,
        ));
    }
    let f = dir.write("cfn-metrics-0.jsonl", s);
    let out = dir
        .cmd("cfn-cat")
        .args(["--since", "2026-11-27T10:00:00Z"])
        .arg(&f)
        .run();
    let vals: Vec<u64> = out
        .success()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    assert_eq!(vals.first(), Some(&36_000));
    assert_eq!(vals.len(), 4_000);
}

#[test]
fn sorted_merges_shards_in_timestamp_order() {
    let dir = TestDir::new();
    dir.write(
        "cfn-metrics-0.jsonl",
        [
            rec("2026-11-27T10:00:01Z", "m", 1),
            rec("2026-11-27T10:00:04Z", "m", 4),
        ]
        .concat(),
    );
    dir.write(
        "cfn-metrics-1.jsonl",
        [
            rec("2026-11-27T10:00:02Z", "m", 2),
            rec("2026-11-27T10:00:03Z", "m", 3),
            rec("2026-11-27T10:00:05Z", "m", 5),
        ]
        .concat(),
    );
    let out = dir.cmd("cfn-cat").arg("--sorted").run();
    let vals: Vec<u64> = out
        .success()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    assert_eq!(vals, [1, 2, 3, 4, 5]);
    let unsorted: Vec<u64> = dir
        .cmd("cfn-cat")
        .run()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    assert_eq!(unsorted, [1, 4, 2, 3, 5]);
}

#[test]
fn metric_glob_and_agent_filters() {
    let dir = TestDir::new();
    dir.write(
        "cfn-metrics-0.jsonl",
        [
            rec("2026-11-27T10:00:01Z", "coordination.time", 1),
            rec("2026-11-27T10:00:02Z", "memory_usage_mb", 2),
        ]
        .concat(),
    );
    let vals = dir
        .cmd("cfn-cat")
        .args(["--metric", "coordination.*"])
        .run()
        .jsonl();
    assert_eq!(vals.len(), 1);
    assert!(
        dir.cmd("cfn-cat")
            .args(["--agent", "b-*"])
            .run()
            .jsonl()
            .is_empty()
    );
}

#[test]
fn malformed_lines_are_reported_and_strict_fails() {
    let dir = TestDir::new();
    dir.write(
        "cfn-metrics-0.jsonl",
        format!(
            "{}garbage\n{}",
            rec("2026-11-27T10:00:01Z", "m", 1),
            rec("2026-11-27T10:00:02Z", "m", 2)
        ),
    );
    let out = dir.cmd("cfn-cat").run();
    assert_eq!(out.success().jsonl().len(), 2);
    out.stderr_has("cfn-metrics-0.jsonl:2: invalid JSON");
    dir.cmd("cfn-cat").arg("--strict").run().status(65);
}

#[test]
fn missing_path_exits_66() {
    let dir = TestDir::new();
    dir.cmd("cfn-cat")
        .arg(dir.join("nope"))
        .run()
        .status(66)
        .stderr_has("nope");
}

#[test]
fn head_closing_the_pipe_is_a_normal_end() {
    let dir = TestDir::new();
    let mut s = String::new();
    for i in 0..200_000 {
        s.push_str(&rec("2026-11-27T10:00:01.000Z", "m", i));
    }
    dir.write("cfn-metrics-0.jsonl", s);
    let bin = cfn_testkit::bin_path("cfn-cat");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; '{}' | head -1", bin.display()))
        .env("CFN_METRICS_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads lines from a following cfn-cat until `n` have arrived or the deadline passes.
fn read_n(lines: &mut impl Iterator<Item = std::io::Result<String>>, n: usize, got: &mut Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) => got.push(
                serde_json::from_str::<serde_json::Value>(&l).unwrap()["value"]
                    .as_u64()
                    .unwrap(),
            ),
            _ => break,
        }
    }
}

/// Stops a following cfn-cat and adds the values of whatever it wrote before it stopped.
fn stop_and_collect(
    mut child: std::process::Child,
    lines: impl Iterator<Item = std::io::Result<String>>,
    got: &mut Vec<u64>,
) {
    let _ = child.kill();
    let _ = child.wait();
    for l in lines.map_while(Result::ok) {
        got.push(
            serde_json::from_str::<serde_json::Value>(&l).unwrap()["value"]
                .as_u64()
                .unwrap(),
        );
    }
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn follow_sees_appends_new_shards_renames_and_rewrites_exactly_once() {
    let dir = TestDir::new();
    let s0 = dir.join("cfn-metrics-0.jsonl");
    append(&s0, &rec("2026-11-27T10:00:01Z", "m", 1));
    let mut cmd = dir.cmd("cfn-cat");
    cmd.args(["--follow", "--interval", "50ms"]);
    let mut child = cmd
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    read_n(&mut lines, 1, &mut got);

    // An append, including a line written in two parts.
    append(&s0, &rec("2026-11-27T10:00:02Z", "m", 2));
    let half = rec("2026-11-27T10:00:03Z", "m", 3);
    append(&s0, &half[..20]);
    std::thread::sleep(Duration::from_millis(200));
    append(&s0, &half[20..]);
    read_n(&mut lines, 3, &mut got);

    // A new shard appears.
    append(
        &dir.join("cfn-metrics-5.jsonl"),
        &rec("2026-11-27T10:00:04Z", "m", 4),
    );
    read_n(&mut lines, 4, &mut got);

    // Renamed away (after a last append) and recreated.
    append(&s0, &rec("2026-11-27T10:00:05Z", "m", 5));
    std::fs::rename(&s0, dir.join("moved.jsonl")).unwrap();
    append(&s0, &rec("2026-11-27T10:00:06Z", "m", 6));
    read_n(&mut lines, 6, &mut got);

    // Rewritten as the archiver's trim does: the newest records kept, renamed into place.
    append(&s0, &rec("2026-11-27T10:00:07Z", "m", 7));
    read_n(&mut lines, 7, &mut got);
    let tmp = dir.join(".trim.tmp");
    std::fs::write(
        &tmp,
        [
            rec("2026-11-27T10:00:06Z", "m", 6),
            rec("2026-11-27T10:00:07Z", "m", 7),
        ]
        .concat(),
    )
    .unwrap();
    std::fs::rename(&tmp, &s0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&s0, &rec("2026-11-27T10:00:08Z", "m", 8));
    read_n(&mut lines, 8, &mut got);

    // Truncated in place, then appended.
    std::fs::write(&s0, "").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&s0, &rec("2026-11-27T10:00:09Z", "m", 9));
    read_n(&mut lines, 9, &mut got);

    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    // Nothing more arrives after the last record (no duplicates from the rewrite).
    while let Some(Ok(l)) = lines.next() {
        got.push(
            serde_json::from_str::<serde_json::Value>(&l).unwrap()["value"]
                .as_u64()
                .unwrap(),
        );
    }
    child.wait().unwrap();
    got.sort();
    assert_eq!(got, (1..=9).collect::<Vec<u64>>());
}

#[test]
fn gzip_input_given_by_name_and_stdin_dash() {
    let dir = TestDir::new();
    let f = dir.write(
        "a.jsonl.gz",
        gz_member(&rec("2026-11-27T10:00:01Z", "m", 1)),
    );
    let out = dir
        .cmd("cfn-cat")
        .arg(&f)
        .arg("-")
        .stdin(rec("2026-11-27T10:00:02Z", "m", 2))
        .run();
    assert_eq!(jsonl(&out.success().stdout()).len(), 2);
}

#[test]
fn follow_gets_every_record_once_when_two_trims_pass_between_polls() {
    let dir = TestDir::new();
    let s3 = dir.join("cfn-metrics-3.jsonl");
    let batch = |from: u64, to: u64| {
        let mut text = String::new();
        for v in from..=to {
            text.push_str(&rec(
                &format!("2026-11-27T10:{:02}:{:02}Z", v / 60, v % 60),
                "m",
                v,
            ));
        }
        text
    };
    append(&s3, &batch(1, 10));
    let mut cmd = dir.cmd("cfn-cat");
    cmd.args(["--follow", "--interval", "2s"]);
    let mut child = cmd
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    read_n(&mut lines, 10, &mut got);
    assert_eq!(got.len(), 10);
    // Before the next poll: two rounds of sync + trim, each archiving and removing records
    // the reader has not seen, then more appends.
    let now = ["--now", "2026-11-27T12:00:00Z"];
    for (from, to) in [(11, 20), (21, 30)] {
        append(&s3, &batch(from, to));
        dir.cmd("cfn-archive").arg("sync").args(now).run().success();
        dir.cmd("cfn-archive")
            .args(["trim", "--hot", "1m", "--trim-grace", "0s"])
            .args(now)
            .run()
            .success();
    }
    append(&s3, &batch(31, 40));
    read_n(&mut lines, 40, &mut got);
    std::thread::sleep(Duration::from_millis(2500));
    stop_and_collect(child, lines, &mut got);
    assert_eq!(got, (1..=40).collect::<Vec<u64>>());
}

#[test]
fn follow_gets_replayed_records_once_across_a_trim() {
    // Replays (cfn-emit --timestamp days back) go to old day files in the archive: a
    // follower resuming after a trim must not take what follows them there for unseen.
    let dir = TestDir::new();
    let s2 = dir.join("cfn-metrics-2.jsonl");
    append(
        &s2,
        &[
            rec("2026-11-27T10:00:01Z", "m", 1),
            rec("2026-10-18T10:00:00Z", "m", 2),
            rec("2026-11-27T10:00:03Z", "m", 3),
            rec("2026-10-18T10:00:05Z", "m", 4),
        ]
        .concat(),
    );
    let mut cmd = dir.cmd("cfn-cat");
    cmd.args(["--follow", "--interval", "50ms"]);
    let mut child = cmd
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    read_n(&mut lines, 4, &mut got);
    let now = ["--now", "2026-11-27T12:00:00Z"];
    // Everything is archived and old: the whole shard is trimmed away.
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    dir.cmd("cfn-archive")
        .args(["trim", "--hot", "1m", "--trim-grace", "0s"])
        .args(now)
        .run()
        .success();
    std::thread::sleep(Duration::from_millis(300));
    append(&s2, &rec("2026-10-18T11:00:00Z", "m", 5));
    append(&s2, &rec("2026-11-27T12:00:00Z", "m", 6));
    read_n(&mut lines, 6, &mut got);
    // A trim that keeps the newest record: the follower resumes after it.
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    dir.cmd("cfn-archive")
        .args(["trim", "--hot", "1m", "--trim-grace", "0s"])
        .args(now)
        .run()
        .success();
    std::thread::sleep(Duration::from_millis(300));
    append(&s2, &rec("2026-10-18T12:00:00Z", "m", 7));
    read_n(&mut lines, 7, &mut got);
    std::thread::sleep(Duration::from_millis(500));
    stop_and_collect(child, lines, &mut got);
    assert_eq!(got, (1..=7).collect::<Vec<u64>>());
}

#[test]
fn a_missing_path_is_reported_and_the_others_are_still_read() {
    let dir = TestDir::new();
    let good = dir.write("good.jsonl", rec("2026-11-27T10:00:00Z", "m", 1));
    let out = dir
        .cmd("cfn-cat")
        .arg(dir.join("missing.jsonl"))
        .arg(&good)
        .run();
    out.status(66).stderr_has("missing.jsonl");
    assert_eq!(out.jsonl().len(), 1, "the existing path was not read");
    assert_eq!(out.stderr().matches("missing.jsonl").count(), 1);
    let out = dir
        .cmd("cfn-agg")
        .arg(&good)
        .arg(dir.join("missing.jsonl"))
        .run();
    out.status(66);
    assert_eq!(out.jsonl()[0]["count"], 1);
}

#[test]
fn sorted_on_several_threads_is_the_single_threaded_merge() {
    let dir = TestDir::new();
    let mut data = Vec::new();
    cfn_testkit::gendata::write_records(&mut data, 60_000, 1_795_773_600_000, 3_600_000, 4)
        .unwrap();
    // Spread over 5 shards (each in time order), with malformed lines here and there.
    let mut shards: Vec<Vec<u8>> = vec![Vec::new(); 5];
    for (i, line) in data.split_inclusive(|&c| c == b'\n').enumerate() {
        shards[i % 5].extend_from_slice(line);
        if i % 9_999 == 0 {
            shards[i % 5].extend_from_slice(b"garbage\n");
        }
    }
    for (n, s) in shards.iter().enumerate() {
        dir.write(&format!("cfn-metrics-{n}.jsonl"), s);
    }
    let one = dir
        .cmd("cfn-cat")
        .args(["--sorted", "--threads", "1"])
        .run();
    one.success();
    let many = dir
        .cmd("cfn-cat")
        .args(["--sorted", "--threads", "4"])
        .run();
    many.success();
    assert_eq!(one.stdout().lines().count(), 60_000);
    assert_eq!(one.stdout(), many.stdout());
    assert_eq!(one.stderr(), many.stderr());
    assert!(one.stderr().contains("garbage") || one.stderr().contains("invalid JSON"));
    let strict_one = dir
        .cmd("cfn-cat")
        .args(["--sorted", "--strict", "--threads", "1"])
        .run();
    let strict_many = dir
        .cmd("cfn-cat")
        .args(["--sorted", "--strict", "--threads", "4"])
        .run();
    strict_one.status(65);
    strict_many.status(65);
    assert_eq!(strict_one.stderr(), strict_many.stderr());
    assert_eq!(strict_one.stdout(), strict_many.stdout());
}

/// A rotation appends a day file to its .gz as one more member, then removes the day file.
/// Caught between the two (killed, or between a reader's two opens), both hold the day's
/// newest records, and the archive state records the .gz's length before the rotation.
/// Reading the archive directory gives each record once.
#[test]
fn an_archive_directory_caught_mid_rotation_gives_each_record_once() {
    let dir = TestDir::new();
    let recs = |from: u64, to: u64| -> String {
        (from..to)
            .map(|i| rec(&format!("2026-11-01T10:00:{i:02}Z"), "rot", i))
            .collect()
    };
    let plain = "cfn-metrics-20261101-3.jsonl";
    let older = gz_member(&recs(0, 5));
    let newest = recs(5, 8);
    dir.write(&format!("archive/{plain}"), &newest);
    let mut gz = older.clone();
    gz.extend(gz_member(&newest));
    std::fs::write(dir.join(&format!("archive/{plain}.gz")), &gz).unwrap();
    dir.write(
        "archive/.cfn-archive-state.json",
        format!(
            "{{\"version\":1,\"rotating\":{{\"{plain}\":{}}}}}",
            older.len()
        ),
    );
    let values = |out: &cfn_testkit::Outcome| -> Vec<u64> {
        let mut v: Vec<u64> = out
            .jsonl()
            .iter()
            .map(|r| r["value"].as_u64().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    let out = dir.cmd("cfn-cat").arg(dir.join("archive")).run();
    out.success();
    assert_eq!(values(&out), (0..8).collect::<Vec<_>>(), "{}", out.stdout());
    // Before the rotation (the .gz as it was): both files are read.
    std::fs::write(dir.join(&format!("archive/{plain}.gz")), &older).unwrap();
    let out = dir.cmd("cfn-cat").arg(dir.join("archive")).run();
    assert_eq!(values(&out), (0..8).collect::<Vec<_>>());
}
