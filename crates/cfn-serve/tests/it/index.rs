//! The rollup index against the records: ranges that cut minutes and buckets (against
//! `cfn-cat --since --until | cfn-agg` and the exact quantiles), a writer appending while the
//! archiver trims, truncated and replaced shards, malformed lines, 10,000 agents.

use cfn_core::time::format_ms;
use cfn_testkit::TestDir;
use cfn_testkit::gendata::Rng;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

use crate::common::{get, now_ms, start};

fn record(ts: i64, agent: &str, metric: &str, value: f64, unit: &str) -> String {
    format!(
        "{{\"timestamp\":\"{}\",\"agent\":\"{agent}\",\"metric\":\"{metric}\",\"value\":{value},\"unit\":\"{unit}\"}}\n",
        format_ms(ts)
    )
}

/// Three hours of records up to `end` in four shards: a continuous metric (lognormal-ish
/// latencies with two decimals), a discrete one (queue depths) and a sparse one. Returns
/// every (ts, metric, value).
fn seed(dir: &TestDir, end: i64) -> Vec<(i64, &'static str, f64)> {
    let mut rng = Rng::new(7);
    let mut shards = vec![String::new(); 4];
    let mut all = Vec::new();
    let mut t = end - 3 * 3_600_000;
    let mut i = 0u64;
    while t < end {
        let n = (i % 4) as usize;
        let (metric, value, unit) = match i % 10 {
            0..=5 => {
                let g: f64 = (0..6).map(|_| rng.unit()).sum::<f64>() - 3.0;
                let v = ((4.0 + 1.2 * g).exp() * 100.0).round() / 100.0;
                ("latency_ms", v, "milliseconds")
            }
            6..=8 => ("queue_depth", (rng.unit() * 40.0).floor(), "count"),
            _ if i % 70 == 9 => ("rare", (rng.unit() * 1000.0).round() / 10.0, "percent"),
            _ => ("queue_depth", (rng.unit() * 40.0).floor(), "count"),
        };
        shards[n].push_str(&record(t, &format!("agent-{n}"), metric, value, unit));
        all.push((t, metric, value));
        t += 97;
        i += 1;
    }
    for (n, s) in shards.iter().enumerate() {
        dir.write(&format!("cfn-metrics-{n}.jsonl"), s);
    }
    all
}

fn shard_paths(dir: &TestDir, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            dir.join(&format!("cfn-metrics-{i}.jsonl"))
                .display()
                .to_string()
        })
        .collect()
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = get(port, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// How far, as a fraction of n, the rank of `v` is from `q` among the sorted `values`.
fn rank_error(sorted: &[f64], q: f64, v: f64) -> f64 {
    let n = sorted.len() as f64;
    let lo = sorted.partition_point(|&x| x < v) as f64;
    let hi = sorted.partition_point(|&x| x <= v) as f64;
    let want = (q * n).ceil().max(1.0);
    if want < lo + 1.0 {
        (lo + 1.0 - want) / n
    } else if want > hi {
        (want - hi) / n
    } else {
        0.0
    }
}

/// A served aggregate is cfn-agg's in its group and every exact figure.
fn assert_totals_equal(s: &Value, e: &Value, what: &str) {
    for k in [
        "metric",
        "unit",
        "agent",
        "bucket_start",
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "first",
        "last",
    ] {
        assert_eq!(s[k], e[k], "{what}: {k} of {e}");
    }
}

/// The served aggregates equal cfn-agg's on counts, sums, min, max, first, last, and their
/// quantiles are within 0.5% in rank of the exact ones (equal when cfn-agg's are exact).
fn check_against_records(
    served: &[Value],
    expected: &[Value],
    all: &[(i64, &str, f64)],
    since: i64,
    until: i64,
    bucket: Option<i64>,
    what: &str,
) {
    assert!(!expected.is_empty(), "{what}: no records in range");
    assert_eq!(served.len(), expected.len(), "{what}: groups");
    for (s, e) in served.iter().zip(expected) {
        assert_totals_equal(s, e, what);
        let count = e["count"].as_u64().unwrap();
        let bucket_start = e["bucket_start"]
            .as_str()
            .map(|b| cfn_core::time::parse_timestamp_str(b).unwrap());
        let mut values: Vec<f64> = all
            .iter()
            .filter(|(t, m, _)| {
                *m == e["metric"].as_str().unwrap()
                    && *t >= since
                    && *t < until
                    && bucket_start.is_none_or(|b| *t >= b && *t < b + bucket.unwrap())
            })
            .map(|r| r.2)
            .collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values.len() as u64, count, "{what}: test's own count");
        for q in ["p50", "p95", "p99"] {
            let qv: f64 = q[1..].parse::<f64>().unwrap() / 100.0;
            let v = s[q].as_f64().unwrap();
            if count <= 1000 {
                assert_eq!(s[q], e[q], "{what}: exact {q} of {e}");
            }
            let err = rank_error(&values, qv, v);
            assert!(err <= 0.005, "{what}: {q} {v} is {err} off in rank ({e})");
        }
    }
}

/// The records of the four shards in [since, until), as cfn-cat gives them.
fn cat_range(dir: &TestDir, since: i64, until: i64) -> String {
    let cat = dir
        .cmd("cfn-cat")
        .args(["--since", &format_ms(since), "--until", &format_ms(until)])
        .args(shard_paths(dir, 4))
        .run();
    cat.success();
    cat.stdout()
}

fn agg_of_range(dir: &TestDir, since: i64, until: i64, extra: &[&str]) -> Vec<Value> {
    dir.cmd("cfn-agg")
        .args(extra)
        .stdin(cat_range(dir, since, until))
        .run()
        .jsonl()
}

#[test]
fn ranges_and_buckets_that_cut_minutes_equal_cfn_agg() {
    let dir = TestDir::new();
    // The data ends a few minutes ago, on no particular second.
    let end = now_ms() - 4 * 60_000 - 7_321;
    let all = seed(&dir, end);
    let server = start(&dir, &[]);
    // (now, window): ranges that start and end inside minutes, one inside a single minute,
    // one reaching back before the first record.
    for (now, window_ms) in [
        (
            end - 31 * 60_000 - 700,
            2 * 3_600_000 + 17 * 60_000 + 13_500,
        ),
        (end - 300, 59_900),
        (end - 12_345, 10 * 60_000 + 1),
        (end + 60_000, 4 * 3_600_000),
    ] {
        let since = now - window_ms;
        let until = now + 1;
        let served = get_json(
            server.port,
            &format!("/api/summary?window={window_ms}ms&now={}", format_ms(now)),
        );
        let expected = agg_of_range(&dir, since, until, &[]);
        check_against_records(
            served.as_array().unwrap(),
            &expected,
            &all,
            since,
            until,
            None,
            &format!("summary window {window_ms} ms at {now}"),
        );
    }
    // Buckets of 15 min (whole quarter rollups), 5 min (five minute rollups) and 1 min, on a
    // range that cuts its first and last bucket.
    let now = end - 3 * 60_000 - 2_500;
    for (bucket, bucket_ms, range_ms) in [
        ("15m", 900_000, 2 * 3_600_000 + 450_000),
        ("5m", 300_000, 3_600_000 + 1_000),
        ("1m", 60_000, 40 * 60_000 + 29_000),
    ] {
        let since = now - range_ms;
        let until = now + 1;
        for metric in ["latency_ms", "queue_depth", "rare"] {
            let served = get_json(
                server.port,
                &format!(
                    "/api/series?metric={metric}&range={range_ms}ms&bucket={bucket}&now={}",
                    format_ms(now)
                ),
            );
            let expected = agg_of_range(
                &dir,
                since,
                until,
                &["--bucket", bucket, "--metric", metric],
            );
            check_against_records(
                served.as_array().unwrap(),
                &expected,
                &all,
                since,
                until,
                Some(bucket_ms),
                &format!("{metric} by {bucket}"),
            );
        }
    }
    // The dashboard's series are the same as /api/series.
    let d = get_json(
        server.port,
        &format!("/api/dashboard?range=3h&bucket=15m&now={}", format_ms(now)),
    );
    let s = get_json(
        server.port,
        &format!(
            "/api/series?metric=latency_ms&range=3h&bucket=15m&now={}",
            format_ms(now)
        ),
    );
    assert_eq!(d["series"]["latency_ms"], s);
    assert_eq!(
        d["shown"],
        serde_json::json!(["latency_ms", "queue_depth", "rare"])
    );
    assert_eq!(d["shards"].as_array().unwrap().len(), 4);
    assert!(d["alerts"]["firing"].is_array());
}

/// `cfn-archive sync`, then `cfn-archive trim --hot HOT`, into `archive`.
fn sync_and_trim(dir: &TestDir, archive: &std::path::Path, hot: &str) {
    let arch = ["--archive-dir", archive.to_str().unwrap()];
    dir.cmd("cfn-archive")
        .args(arch)
        .arg("sync")
        .run()
        .success();
    dir.cmd("cfn-archive")
        .args(arch)
        .args(["trim", "--hot", hot, "--trim-grace", "0s"])
        .run()
        .success();
}

/// Total count of `metric` over the last hour, as the server says.
fn served_count(port: u16, metric: &str, salt: u64) -> u64 {
    // A parameter that changes each time, so no cached answer is reused.
    let v = get_json(
        port,
        &format!("/api/summary?window=1h&metric={metric}&exact=1&salt={salt}"),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_writer_appending_while_the_archiver_trims_is_counted_once() {
    let dir = TestDir::new();
    let archive = dir.join("archive");
    std::fs::create_dir(&archive).unwrap();
    let server = start(&dir, &["--archive-dir", archive.to_str().unwrap()]);
    let total = 4_000u64;
    let writer = {
        let mut cmd = dir.cmd("cfn-emit");
        let mut child = cmd
            .args(["--stdin", "--agent", "agent-7"])
            .command()
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            for i in 0..total {
                writeln!(stdin, "w.count 1 count {{\"i\":\"{i}\"}}").unwrap();
                if i % 100 == 0 {
                    stdin.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(70));
                }
            }
            drop(stdin);
            child.wait().unwrap()
        })
    };
    // Trim (keeping one second hot), rotate and prune over and over while it writes, and
    // ask the server in between.
    let mut runs = 0;
    let mut salt = 0;
    while !writer.is_finished() {
        let out = dir
            .cmd("cfn-archive")
            .args([
                "--archive-dir",
                archive.to_str().unwrap(),
                "run",
                "--hot",
                "1s",
                "--trim-grace",
                "0s",
            ])
            .run();
        assert!(
            out.code() == 0 || out.code() == 75,
            "archive run: {}",
            out.stderr()
        );
        runs += 1;
        salt += 1;
        served_count(server.port, "w.count", salt);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(writer.join().unwrap().success());
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
    assert!(runs > 5, "the archiver ran {runs} times");
    // Everything is in the archive now, and the index saw each record once.
    let files: Vec<_> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("cfn-metrics-"))
        .collect();
    let archived = dir.cmd("cfn-cat").args(&files).run();
    let lines = archived
        .stdout()
        .lines()
        .filter(|l| l.contains("w.count"))
        .count();
    assert_eq!(lines as u64, total, "archive holds every record once");
    salt += 1;
    assert_eq!(served_count(server.port, "w.count", salt), total);
    let sum = get_json(
        server.port,
        "/api/summary?window=1h&metric=w.count&salt=sum",
    );
    assert_eq!(sum[0]["sum"], serde_json::json!(total));
}

#[test]
fn replayed_records_trimmed_away_do_not_make_the_index_count_twice() {
    // A replay (stamped days back) is archived in an old day file: after a trim took it,
    // the index must not look for what follows it there.
    let dir = TestDir::new();
    let archive = dir.join("archive");
    let t0 = now_ms() - 600_000;
    let old = t0 - 40 * 86_400_000;
    dir.write(
        "cfn-metrics-1.jsonl",
        [
            record(t0, "agent-1", "m", 1.0, "count"),
            record(old, "agent-1", "m", 2.0, "count"),
            record(t0 + 1000, "agent-1", "m", 3.0, "count"),
            record(old + 1000, "agent-1", "m", 4.0, "count"),
        ]
        .concat(),
    );
    let server = start(&dir, &["--archive-dir", archive.to_str().unwrap()]);
    assert_eq!(served_count(server.port, "m", 1), 2);
    sync_and_trim(&dir, &archive, "1m");
    assert_eq!(
        std::fs::metadata(dir.join("cfn-metrics-1.jsonl"))
            .unwrap()
            .len(),
        0,
        "the whole shard was trimmed"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("cfn-metrics-1.jsonl"))
        .unwrap();
    f.write_all(record(t0 + 2000, "agent-1", "m", 5.0, "count").as_bytes())
        .unwrap();
    assert_eq!(served_count(server.port, "m", 2), 3);
}

#[test]
fn records_appended_then_trimmed_between_two_looks_are_counted_once() {
    // The index read a shard to its end; then records came, were archived and trimmed away
    // before it looked again. Stamps are not in file order (a writer stamps before it takes
    // the lock): `a`, read first, is stamped after midnight, `b` before. The archive keeps
    // day files, so looking for what followed `b` there finds `a` again in the next day's
    // file; the records missed are in the old file, which the index must still hold.
    let dir = TestDir::new();
    let archive = dir.join("archive");
    let now = now_ms();
    let midnight = now - now.rem_euclid(86_400_000);
    let rec = |ts, v| record(ts, "agent-3", "m", v, "count");
    let shard = dir.write(
        "cfn-metrics-3.jsonl",
        rec(midnight + 500, 1.0) + &rec(midnight - 100, 2.0),
    );
    let server = start(&dir, &["--archive-dir", archive.to_str().unwrap()]);
    let count = |salt: u32| -> u64 {
        let v = get_json(
            server.port,
            &format!("/api/summary?window=1d&metric=m&exact=1&salt={salt}"),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count(1), 2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .unwrap();
    f.write_all((rec(midnight + 2000, 3.0) + &rec(now - 1000, 4.0)).as_bytes())
        .unwrap();
    drop(f);
    sync_and_trim(&dir, &archive, "1m");
    let left = std::fs::read_to_string(&shard).unwrap();
    assert_eq!(
        left,
        rec(now - 1000, 4.0),
        "the trim left only the newest record"
    );
    assert_eq!(count(2), 4);
}

#[test]
fn a_replay_synced_while_the_index_is_built_is_counted_once() {
    // The build reads the archive state, then the hot shards, then the archive. A replay
    // (stamped before the last trim's threshold) past the state's offset is read from the
    // shard; the archiver may sync it into its day file before the archive pass gets
    // there. Here that sync's day-file write is made by hand, as a sync killed before it
    // saved its state leaves it.
    let dir = TestDir::new();
    let archive = dir.join("archive");
    let now = now_ms();
    let rec = |ts, v| record(ts, "agent-4", "m", v, "count");
    let shard = dir.write(
        "cfn-metrics-4.jsonl",
        rec(now - 1_800_000, 1.0) + &rec(now - 1_799_000, 2.0),
    );
    sync_and_trim(&dir, &archive, "1m");
    assert_eq!(std::fs::metadata(&shard).unwrap().len(), 0);
    let replay = rec(now - 3 * 3_600_000, 3.0);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .unwrap();
    f.write_all((replay.clone() + &rec(now - 10_000, 4.0)).as_bytes())
        .unwrap();
    drop(f);
    let day = format_ms(now - 3 * 3_600_000)[..10].replace('-', "");
    let day_file = archive.join(format!("cfn-metrics-{day}-4.jsonl"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&day_file)
        .unwrap();
    f.write_all(replay.as_bytes()).unwrap();
    drop(f);
    let server = start(&dir, &["--archive-dir", archive.to_str().unwrap()]);
    let v = get_json(server.port, "/api/summary?window=1d&metric=m&exact=1");
    assert_eq!(v[0]["count"], 4, "{v}");
    assert_eq!(v[0]["sum"], 10.0, "{v}");
}

#[test]
fn replays_split_between_the_archive_and_the_shard_are_counted_once_at_build_and_per_query() {
    // Records stamped hours before their neighbours, on both sides of a trim and of the
    // archived offset: the time order the old split relied on does not hold.
    let dir = TestDir::new();
    let archive = dir.join("archive");
    let now = now_ms();
    let mut stamps: Vec<i64> = Vec::new();
    let mut lines = String::new();
    let mut add = |lines: &mut String, i: u64, ts: i64| {
        lines.push_str(&record(ts, "agent-2", "m", i as f64, "count"));
        stamps.push(ts);
    };
    for i in 0..150u64 {
        let ts = now - 3 * 3_600_000 + i as i64 * 60_000;
        add(&mut lines, i, ts);
        if i % 10 == 5 {
            add(&mut lines, 1000 + i, ts - 2 * 3_600_000 + 600_000);
        }
    }
    dir.write("cfn-metrics-2.jsonl", &lines);
    sync_and_trim(&dir, &archive, "1h");
    // Appended after the trim and not archived: new records and replays again.
    let mut tail = String::new();
    for i in 0..20u64 {
        add(&mut tail, 2000 + i, now - 10 * 60_000 + i as i64 * 1000);
        add(&mut tail, 3000 + i, now - 2 * 3_600_000 - i as i64 * 60_000);
    }
    let shard = dir.join("cfn-metrics-2.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .unwrap();
    f.write_all(tail.as_bytes()).unwrap();
    drop(f);
    let server = start(&dir, &["--archive-dir", archive.to_str().unwrap()]);
    // Whole minutes from the rollups the build made, edges from the records (the
    // windows' starts are 50 s away from any record).
    for (salt, window_s) in [(1, 5 * 3600), (2, 5710), (3, 2410)] {
        let expected = stamps
            .iter()
            .filter(|&&t| t >= now - window_s * 1000)
            .count();
        let v = get_json(
            server.port,
            &format!("/api/summary?window={window_s}s&metric=m&exact=1&salt={salt}"),
        );
        assert_eq!(
            v[0]["count"],
            serde_json::json!(expected),
            "{window_s}s: {v}"
        );
    }
}

#[test]
fn truncated_and_replaced_shards_are_followed() {
    let dir = TestDir::new();
    let t0 = now_ms() - 600_000;
    let lines = |from: usize, n: usize| -> String {
        (from..from + n)
            .map(|i| record(t0 + i as i64 * 1000, "agent-0", "m", i as f64, "count"))
            .collect()
    };
    let shard = dir.write("cfn-metrics-0.jsonl", lines(0, 100));
    let server = start(&dir, &[]);
    assert_eq!(served_count(server.port, "m", 1), 100);
    // Truncated in place and written again: the new records count, the old ones stay counted.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .unwrap()
        .write_all(lines(100, 10).as_bytes())
        .unwrap();
    assert_eq!(served_count(server.port, "m", 2), 110);
    // Replaced by a file that starts with the last record read (a trim): only what follows
    // it is new.
    let tmp = dir.write("tmp", lines(105, 5) + &lines(110, 3));
    std::fs::rename(&tmp, &shard).unwrap();
    assert_eq!(served_count(server.port, "m", 3), 113);
    // Replaced by a file without it: all of it is new.
    let tmp = dir.write("tmp", lines(200, 7));
    std::fs::rename(&tmp, &shard).unwrap();
    assert_eq!(served_count(server.port, "m", 4), 120);
    let health = get_json(server.port, "/api/shards");
    assert_eq!(health[0]["records"], 7, "{health}");
    // A new shard appears.
    dir.write("cfn-metrics-5.jsonl", lines(300, 4));
    assert_eq!(served_count(server.port, "m", 5), 124);
}

#[test]
fn malformed_lines_are_counted_in_health_and_records_around_them_indexed() {
    let dir = TestDir::new();
    let t0 = now_ms() - 600_000;
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&record(t0 + i * 1000, "agent-1", "m", 1.0, "count"));
        if i == 20 {
            text.push_str("{\"timestamp\":\"not a time\",\"metric\":\"m\",\"value\":1}\n");
        }
    }
    let shard = dir.write("cfn-metrics-1.jsonl", &text);
    let server = start(&dir, &[]);
    assert_eq!(served_count(server.port, "m", 1), 50);
    // One more malformed line and records after it, appended while it runs; the last
    // record is written without its newline first (a writer mid-line).
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .unwrap();
    f.write_all(b"garbage\n").unwrap();
    let tail = record(t0 + 60_000, "agent-1", "m", 1.0, "count");
    f.write_all(tail.as_bytes()).unwrap();
    let partial = record(t0 + 61_000, "agent-1", "m", 1.0, "count");
    f.write_all(&partial.as_bytes()[..30]).unwrap();
    assert_eq!(served_count(server.port, "m", 2), 51);
    f.write_all(&partial.as_bytes()[30..]).unwrap();
    assert_eq!(served_count(server.port, "m", 3), 52);
    let health = get_json(server.port, "/api/shards");
    assert_eq!(health[0]["records"], 52, "{health}");
    assert_eq!(health[0]["malformed"], 2, "{health}");
}

#[test]
fn an_appended_record_shows_within_a_second() {
    let dir = TestDir::new();
    let server = start(&dir, &[]);
    let url = "/api/summary?window=1h&metric=fresh";
    assert_eq!(get_json(server.port, url), serde_json::json!([]));
    dir.cmd("cfn-emit")
        .args(["--agent", "a1", "fresh", "5"])
        .run()
        .success();
    // A new question sees it at once; the same one may be answered from the one-second cache.
    assert_eq!(served_count(server.port, "fresh", 1), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get_json(server.port, url)[0]["count"], 1);
}

/// The peak resident memory of a process, from /proc.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_agents_stay_small_and_filter_by_agent() {
    let dir = TestDir::new();
    let now = now_ms();
    let mut shards = vec![String::new(); 16];
    for i in 0..200_000u64 {
        let agent = i % 10_000;
        let t = now - 3_000_000 + (i as i64) * 15;
        shards[(agent % 16) as usize].push_str(&record(
            t,
            &format!("agent-{agent}"),
            ["task_ms", "tokens", "retries"][(i % 3) as usize],
            (i % 977) as f64,
            "count",
        ));
    }
    for (n, s) in shards.iter().enumerate() {
        dir.write(&format!("cfn-metrics-{n}.jsonl"), s);
    }
    let server = start(&dir, &[]);
    let names = get_json(server.port, "/api/metrics?range=1h");
    assert_eq!(names["agents"].as_array().unwrap().len(), 10_000);
    let d = get_json(
        server.port,
        "/api/dashboard?range=1h&agent=agent-1234&exact=1",
    );
    let count: u64 = d["series"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s.as_array().unwrap())
        .map(|a| a["count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, 20, "agent-1234 wrote 20 records");
    let d = get_json(server.port, "/api/dashboard?range=24h");
    assert_eq!(d["series"].as_object().unwrap().len(), 3);
    let rss = peak_rss_kb(server.child.id());
    assert!(rss < 160 * 1024, "peak RSS {rss} kB");
}

#[test]
fn metrics_past_the_index_limit_are_read_from_the_records() {
    let dir = TestDir::new();
    let end = now_ms() - 120_000;
    let all = seed(&dir, end);
    // Three metrics, rollups for two: whatever touches the third reads the records.
    let server = start(&dir, &["--index-max-metrics", "2"]);
    let now = end - 61_500;
    let (since, until) = (now - 3_600_000, now + 1);
    let served = get_json(
        server.port,
        &format!("/api/summary?window=1h&now={}", format_ms(now)),
    );
    let expected = agg_of_range(&dir, since, until, &[]);
    assert_eq!(expected.len(), 3);
    check_against_records(
        served.as_array().unwrap(),
        &expected,
        &all,
        since,
        until,
        None,
        "with a metric past the limit",
    );
    let names = get_json(server.port, "/api/metrics?range=24h");
    assert_eq!(names["metrics"].as_array().unwrap().len(), 3, "{names}");
}

/// Three hours in four shards, agents spread over every shard (7 agents, one of them no
/// agent at all), a phase tag on two thirds of the records, and one record in 400 written 40 s
/// late (within the order slack range reads allow; across quarter hours now and then). Read
/// one shard after another at start-up, each series gets several runs per quarter hour.
fn seed_dims(dir: &TestDir, end: i64) {
    let mut rng = Rng::new(11);
    let mut shards = vec![String::new(); 4];
    let start = end - 3 * 3_600_000;
    for i in 0..(3 * 3_600_000 / 97) as u64 {
        let mut t = start + i as i64 * 97;
        if i % 400 == 399 {
            t -= 40_000;
        }
        let agent = (i % 7 != 6).then(|| format!("agent-{}", i % 7));
        let (metric, value) = if i % 10 < 6 {
            let g: f64 = (0..6).map(|_| rng.unit()).sum::<f64>() - 3.0;
            (
                "latency_ms",
                ((4.0 + 1.2 * g).exp() * 100.0).round() / 100.0,
            )
        } else {
            ("queue_depth", (rng.unit() * 40.0).floor())
        };
        let phase = [Some("plan"), Some("act"), None][(i % 3) as usize];
        let mut line = format!("{{\"timestamp\":\"{}\"", format_ms(t));
        if let Some(a) = &agent {
            line.push_str(&format!(",\"agent\":\"{a}\""));
        }
        line.push_str(&format!(
            ",\"metric\":\"{metric}\",\"value\":{value},\"unit\":\"count\""
        ));
        if let Some(p) = phase {
            line.push_str(&format!(
                ",\"tags\":{{\"host\":\"h{}\",\"phase\":\"{p}\"}}",
                i % 2
            ));
        }
        line.push_str("}\n");
        shards[(i % 4) as usize].push_str(&line);
    }
    for (n, s) in shards.iter().enumerate() {
        dir.write(&format!("cfn-metrics-{n}.jsonl"), s);
    }
}

/// cfn-agg's answer for the records `keep` selects in [since, until), and those records.
fn agg_of(
    dir: &TestDir,
    since: i64,
    until: i64,
    keep: impl Fn(&Value) -> bool,
    extra: &[&str],
) -> (Vec<Value>, Vec<Value>) {
    let records: Vec<Value> = cat_range(dir, since, until)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| keep(v))
        .collect();
    let text: String = records.iter().map(|v| format!("{v}\n")).collect();
    (
        dir.cmd("cfn-agg").args(extra).stdin(text).run().jsonl(),
        records,
    )
}

fn answers_from_filtered_rollups(port: u16) -> u64 {
    let (_, text) = get(port, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("cfn_serve_filtered_rollup_answers_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}

#[test]
fn agent_and_tag_filtered_views_from_their_rollups_equal_cfn_agg() {
    let dir = TestDir::new();
    let end = now_ms() - 4 * 60_000 - 7_321;
    seed_dims(&dir, end);
    let now = end - 2 * 60_000 - 1_234;
    let at = format_ms(now);
    let tag_is = |v: &Value, p: &str| v["tags"]["phase"] == p;
    // (query, range ms, cfn-agg's records, cfn-agg's flags)
    type Keep = Box<dyn Fn(&Value) -> bool>;
    let cases: Vec<(String, i64, Keep, Vec<&str>)> = vec![
        (
            format!("/api/summary?window=2h13m&by=agent&now={at}"),
            (2 * 60 + 13) * 60_000,
            Box::new(|_| true),
            vec!["--by", "agent"],
        ),
        (
            format!("/api/series?metric=latency_ms&range=2h&bucket=15m&agent=agent-3&now={at}"),
            2 * 3_600_000,
            Box::new(|v| v["agent"] == "agent-3"),
            vec!["--bucket", "15m", "--metric", "latency_ms"],
        ),
        (
            format!("/api/series?metric=queue_depth&range=150m&bucket=30m&tag=phase=act&now={at}"),
            150 * 60_000,
            Box::new(move |v| tag_is(v, "act")),
            vec!["--bucket", "30m", "--metric", "queue_depth"],
        ),
        (
            format!("/api/summary?window=3h&agent=agent-*&now={at}"),
            3 * 3_600_000,
            Box::new(|v| v["agent"].is_string()),
            vec![],
        ),
        (
            format!("/api/summary?window=20m&tag=phase=plan&now={at}"),
            20 * 60_000,
            Box::new(move |v| tag_is(v, "plan")),
            vec![],
        ),
        // A tag key nobody named (`host`) gets rollups too.
        (
            format!("/api/summary?window=2h&tag=host=h1&now={at}"),
            2 * 3_600_000,
            Box::new(|v| v["tags"]["host"] == "h1"),
            vec![],
        ),
    ];
    let check = |port: u16, path: &str, (expected, records): &(Vec<Value>, Vec<Value>)| {
        let served = get_json(port, path);
        let served = served.as_array().unwrap();
        assert!(!expected.is_empty(), "{path}");
        assert_eq!(served.len(), expected.len(), "{path}");
        for (s, e) in served.iter().zip(expected) {
            assert_totals_equal(s, e, path);
            // Exact where cfn-agg's answer is; else (whole-range groups) within 1% in rank
            // of the records'.
            let bucketed = e.get("bucket_start").is_some();
            let by_agent = path.contains("by=agent");
            let mut values: Vec<f64> = records
                .iter()
                .filter(|r| r["metric"] == e["metric"])
                .filter(|r| !by_agent || r.get("agent") == e.get("agent"))
                .map(|r| r["value"].as_f64().unwrap())
                .collect();
            values.sort_by(f64::total_cmp);
            for q in ["p50", "p95", "p99"] {
                if e["count"].as_u64().unwrap() <= 1000 {
                    assert_eq!(s[q], e[q], "{path}: {q} of {e}");
                } else if !bucketed {
                    assert_eq!(values.len() as u64, e["count"].as_u64().unwrap());
                    let qv = q[1..].parse::<f64>().unwrap() / 100.0;
                    let err = rank_error(&values, qv, s[q].as_f64().unwrap());
                    assert!(err <= 0.01, "{path}: {q} is {err} off in rank ({s})");
                }
            }
        }
    };
    let server = start(&dir, &["--index-tags", "phase"]);
    let before = answers_from_filtered_rollups(server.port);
    for (path, range, keep, flags) in &cases {
        let expected = agg_of(&dir, now - range, now + 1, keep, flags);
        check(server.port, path, &expected);
    }
    assert_eq!(
        answers_from_filtered_rollups(server.port) - before,
        cases.len() as u64,
        "every case answered from the rollups by agent and tag"
    );
    // Without keys nobody named, the host filter is read from the records: same answers.
    let named_only = start(&dir, &["--index-tags", "phase", "--index-auto-tags", "0"]);
    for (path, range, keep, flags) in &cases {
        let expected = agg_of(&dir, now - range, now + 1, keep, flags);
        check(named_only.port, path, &expected);
    }
    assert_eq!(
        answers_from_filtered_rollups(named_only.port),
        cases.len() as u64 - 1,
        "all but the host filter from the rollups"
    );
    // Past a tiny budget the agent rollups are dropped with a warning, the tag's too, and
    // the same queries read the records, with the same answers.
    let small = start(
        &dir,
        &["--index-tags", "phase", "--index-dims-budget", "4KiB"],
    );
    for (path, range, keep, flags) in &cases {
        let expected = agg_of(&dir, now - range, now + 1, keep, flags);
        check(small.port, path, &expected);
    }
    assert_eq!(answers_from_filtered_rollups(small.port), 0);
    let said = small.said();
    assert!(said.contains("the agent rollups passed 4 KiB"), "{said}");
    assert!(
        said.contains("the rollups of tag \"phase\" passed"),
        "{said}"
    );
}

/// A metric whose records come in several units is answered from the records, as cfn-agg
/// answers it: convertible units converted into the first, the others kept apart; the
/// histograms count the convertible values in the first unit.
#[test]
fn a_metric_in_several_units_gets_cfn_aggs_groups() {
    let dir = TestDir::new();
    let end = now_ms() - 120_000;
    let mut shards = vec![String::new(); 4];
    for i in 0..600i64 {
        let t = end - 3_000_000 + i * 5_000;
        let (v, unit) = match i % 4 {
            0 => (1.0 + (i % 7) as f64, "gb"),
            1 => (256.0 * (i % 5) as f64, "mb"),
            2 => (2.5, "GB"),
            _ => (40.0, "widgets"),
        };
        let shard = &mut shards[(i / 150) as usize];
        shard.push_str(&record(t, "a-1", "mem", v, unit));
        shard.push_str(&record(t, "a-1", "steady", 1.0, "ms"));
    }
    for (n, text) in shards.iter().enumerate() {
        dir.write(&format!("cfn-metrics-{n}.jsonl"), text);
    }
    let server = start(&dir, &[]);
    let now = end;
    let (since, until) = (now - 3_600_000, now + 1);
    let served = get_json(
        server.port,
        &format!("/api/summary?window=1h&exact=1&now={}", format_ms(now)),
    );
    let expected = agg_of_range(&dir, since, until, &[]);
    let units: Vec<(&str, &str)> = expected
        .iter()
        .map(|e| (e["metric"].as_str().unwrap(), e["unit"].as_str().unwrap()))
        .collect();
    assert_eq!(units, [("mem", "gb"), ("mem", "widgets"), ("steady", "ms")]);
    let served = served.as_array().unwrap();
    assert_eq!(served.len(), expected.len(), "{served:?}");
    for (s, e) in served.iter().zip(&expected) {
        assert_totals_equal(s, e, "mixed units");
    }
    // The histograms count what is appended from now on: gb and mb in one (bytes), the
    // widgets apart in a family of their own, none refused (contract section 1).
    let t = now_ms();
    let appended = [
        record(t, "a-1", "heap", 1.0, "gb"),
        record(t, "a-1", "heap", 512.0, "mb"),
        record(t, "a-1", "heap", 3.0, "widgets"),
    ]
    .concat();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("cfn-metrics-0.jsonl"))
        .unwrap();
    f.write_all(appended.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = get(server.port, "/metrics");
        assert_eq!(status, 200);
        if metrics.contains("cfn_heap_hist_bytes_count") || std::time::Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.contains("cfn_heap_hist_bytes_count 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cfn_heap_hist_bytes_sum 1610612736\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cfn_heap_hist_count 1\n"),
        "the widgets in their own family: {metrics}"
    );
    assert!(
        metrics.contains("cfn_serve_unit_mismatch_dropped_records_total 0\n"),
        "{metrics}"
    );
}

fn gzip_member(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

/// The chaos soak's find: a rotation appends a day file to its .gz as one more member, then
/// removes the day file. Killed in between (or caught between a reader's two opens), both
/// hold the day's newest records; the archive state records the .gz's length before. The
/// index counts those records once, as cfn-cat | cfn-agg does once the archiver has
/// recovered.
#[test]
fn a_day_file_already_appended_to_its_gz_is_counted_once() {
    let dir = TestDir::new();
    let day_ms = (now_ms() - 40 * 3_600_000) / 86_400_000 * 86_400_000;
    let day = format_ms(day_ms)[..10].replace('-', "");
    let recs = |from: i64, to: i64| -> String {
        (from..to)
            .map(|i| record(day_ms + 3_600_000 + i * 1000, "a-3", "rot", i as f64, "ms"))
            .collect()
    };
    let older = gzip_member(&recs(0, 5));
    let newest = recs(5, 8);
    let plain = format!("cfn-metrics-{day}-3.jsonl");
    dir.write(&format!("archive/{plain}"), &newest);
    let mut gz = older.clone();
    gz.extend(gzip_member(&newest));
    std::fs::write(dir.join(&format!("archive/{plain}.gz")), &gz).unwrap();
    dir.write(
        "archive/.cfn-archive-state.json",
        format!(
            "{{\"version\":1,\"rotating\":{{\"{plain}\":{}}}}}",
            older.len()
        ),
    );
    dir.write("cfn-metrics-3.jsonl", "");
    let server = start(&dir, &["--index-span", "3d"]);
    let served = get_json(
        server.port,
        &format!(
            "/api/summary?window=3d&exact=1&metric=rot&now={}",
            format_ms(now_ms())
        ),
    );
    assert_eq!(served[0]["count"], 8, "{served}");
    assert_eq!(served[0]["sum"], 28.0, "{served}");
    // Before the rotation (the .gz as it was): both files are read.
    std::fs::write(dir.join(&format!("archive/{plain}.gz")), &older).unwrap();
    let fresh = start(&dir, &["--index-span", "3d"]);
    let served = get_json(
        fresh.port,
        &format!(
            "/api/summary?window=3d&exact=1&metric=rot&now={}",
            format_ms(now_ms())
        ),
    );
    assert_eq!(served[0]["count"], 8, "{served}");
}
