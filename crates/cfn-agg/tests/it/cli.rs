//! cfn-agg end to end: the real binary, checked against independent computations.

use cfn_testkit::TestDir;
use serde_json::Value;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn unit(&mut self) -> f64 {
        (self.next() as f64 + 0.5) / (1u64 << 31) as f64
    }
}

fn rec(ts: &str, agent: &str, metric: &str, value: f64, tags: Option<&str>) -> String {
    let tags = tags.map(|t| format!(",\"tags\":{t}")).unwrap_or_default();
    format!(
        "{{\"timestamp\":\"{ts}\",\"agent\":\"{agent}\",\"metric\":\"{metric}\",\"value\":{value}{tags}}}\n"
    )
}

fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn by_metric(out: &[Value]) -> std::collections::HashMap<String, Value> {
    out.iter()
        .map(|a| (a["metric"].as_str().unwrap().to_string(), a.clone()))
        .collect()
}

#[test]
fn exact_mode_matches_an_independent_nearest_rank_computation() {
    let dir = TestDir::new();
    let mut rng = Lcg(3);
    let mut input = String::new();
    let mut expected = Vec::new();
    for (gi, n) in [1usize, 2, 10, 100, 1001].into_iter().enumerate() {
        for sign in ["pos", "neg"] {
            let metric = format!("g{gi}.{sign}.n{n}");
            // Multiples of 1/8: fractional, and sums stay exact in f64.
            let vals: Vec<f64> = (0..n)
                .map(|_| {
                    let v = (rng.next() % 80_000) as f64 / 8.0;
                    if sign == "neg" { v - 5000.0 } else { v }
                })
                .collect();
            for v in &vals {
                input.push_str(&rec("2026-11-27T10:00:00.000Z", "a-1", &metric, *v, None));
            }
            expected.push((metric, vals));
        }
    }
    let f = dir.write("in.jsonl", &input);
    let out = dir
        .cmd("cfn-agg")
        .args(["--exact-limit", "5000"])
        .arg(&f)
        .run();
    out.success();
    let got = by_metric(&out.jsonl());
    assert_eq!(got.len(), expected.len());
    for (metric, mut vals) in expected {
        let a = &got[&metric];
        vals.sort_by(f64::total_cmp);
        let n = vals.len() as f64;
        let sum: f64 = vals.iter().sum();
        assert_eq!(
            a["count"].as_u64().unwrap() as usize,
            vals.len(),
            "{metric}"
        );
        assert_eq!(a["sum"].as_f64().unwrap(), sum, "{metric}");
        assert_eq!(a["min"].as_f64().unwrap(), vals[0], "{metric}");
        assert_eq!(
            a["max"].as_f64().unwrap(),
            *vals.last().unwrap(),
            "{metric}"
        );
        assert!(
            (a["avg"].as_f64().unwrap() - sum / n).abs() <= 1e-9 * (sum / n).abs().max(1.0),
            "{metric}"
        );
        for (k, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
            assert_eq!(
                a[k].as_f64().unwrap(),
                nearest_rank(&vals, q),
                "{metric} {k}"
            );
        }
    }
}

#[test]
fn tdigest_mode_is_within_half_a_percent_rank_on_a_million_skewed_values() {
    let dir = TestDir::new();
    let mut rng = Lcg(11);
    let mut input = String::with_capacity(70_000_000);
    let mut vals = Vec::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        // Lognormal (Box-Muller), heavy right tail.
        let (u1, u2) = (rng.unit(), rng.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let v = ((3.0 + 1.5 * z).exp() * 1000.0).round() / 1000.0;
        vals.push(v);
        input.push_str("{\"timestamp\":\"2026-11-27T10:00:00.000Z\",\"metric\":\"lat\",\"value\":");
        input.push_str(&v.to_string());
        input.push_str("}\n");
    }
    let f = dir.write("big.jsonl", &input);
    drop(input);
    let out = dir.cmd("cfn-agg").arg(&f).run();
    out.success();
    let a = &out.jsonl()[0];
    assert_eq!(a["count"], 1_000_000);
    vals.sort_by(f64::total_cmp);
    let n = vals.len() as f64;
    for (k, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        let est = a[k].as_f64().unwrap();
        // The rank range the estimate occupies in the exact data.
        let lo = vals.partition_point(|v| *v < est) as f64 / n;
        let hi = vals.partition_point(|v| *v <= est) as f64 / n;
        let err = if q < lo {
            lo - q
        } else if q > hi {
            q - hi
        } else {
            0.0
        };
        assert!(
            err <= 0.005,
            "{k}: estimate {est} has rank error {err} (rank {lo}..{hi})"
        );
    }
}

fn window_fixture(dir: &TestDir) -> std::path::PathBuf {
    let mut s = String::new();
    s.push_str(&rec("2026-11-27T09:59:29.999Z", "a-1", "m", 1000.0, None)); // outside 30s window
    s.push_str(&rec(
        "2026-11-27T09:59:30.000Z",
        "a-1",
        "m",
        1.0,
        Some(r#"{"phase":"x"}"#),
    ));
    s.push_str(&rec(
        "2026-11-27T09:59:45.500Z",
        "a-2",
        "m",
        2.0,
        Some(r#"{"phase":"y"}"#),
    ));
    s.push_str(&rec(
        "2026-11-27T10:00:00.000Z",
        "a-2",
        "m",
        3.0,
        Some(r#"{"phase":"x"}"#),
    ));
    s.push_str(&rec("2026-11-27T10:00:00.001Z", "a-1", "m", 2000.0, None)); // after --now
    dir.write("w.jsonl", s)
}

#[test]
fn window_keeps_only_the_last_duration_before_now() {
    let dir = TestDir::new();
    let f = window_fixture(&dir);
    let out = dir
        .cmd("cfn-agg")
        .args(["--window", "30s", "--now", "2026-11-27T10:00:00Z"])
        .arg(&f)
        .run();
    let a = &out.success().jsonl()[0];
    assert_eq!(
        (a["count"].as_u64(), a["sum"].as_f64(), a["max"].as_f64()),
        (Some(3), Some(6.0), Some(3.0))
    );
    assert_eq!(a["first"], "2026-11-27T09:59:30.000Z");
    assert_eq!(a["last"], "2026-11-27T10:00:00.000Z");
}

#[test]
fn bucket_by_agent_and_tag_split_groups() {
    let dir = TestDir::new();
    let f = window_fixture(&dir);
    let out = dir.cmd("cfn-agg").args(["--bucket", "1m"]).arg(&f).run();
    let aggs = out.success().jsonl();
    let buckets: Vec<(&str, u64)> = aggs
        .iter()
        .map(|a| {
            (
                a["bucket_start"].as_str().unwrap(),
                a["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            ("2026-11-27T09:59:00.000Z", 3),
            ("2026-11-27T10:00:00.000Z", 2)
        ]
    );

    let aggs = dir
        .cmd("cfn-agg")
        .args(["--by", "agent"])
        .arg(&f)
        .run()
        .jsonl();
    let per_agent: Vec<(&str, u64)> = aggs
        .iter()
        .map(|a| (a["agent"].as_str().unwrap(), a["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(per_agent, [("a-1", 3), ("a-2", 2)]);

    let aggs = dir
        .cmd("cfn-agg")
        .args(["--by", "tag:phase"])
        .arg(&f)
        .run()
        .jsonl();
    let per_tag: Vec<(Value, u64)> = aggs
        .iter()
        .map(|a| (a["tags"].clone(), a["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        per_tag,
        [
            (Value::Null, 2),
            (serde_json::json!({"phase":"x"}), 2),
            (serde_json::json!({"phase":"y"}), 1)
        ]
    );
}

#[test]
fn merge_of_split_inputs_equals_the_whole() {
    let dir = TestDir::new();
    let mut rng = Lcg(5);
    let (mut a, mut b, mut whole) = (String::new(), String::new(), String::new());
    for i in 0..6000 {
        let metric = if i % 3 == 0 { "small" } else { "big" };
        let v = (rng.next() % 100_000) as f64 / 4.0;
        let line = rec(
            &format!("2026-11-27T10:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
            &format!("a-{}", i % 4),
            metric,
            v,
            None,
        );
        if metric == "small" && i > 300 {
            continue; // keep "small" under the exact limit: 101 values
        }
        whole.push_str(&line);
        if i % 2 == 0 {
            a.push_str(&line)
        } else {
            b.push_str(&line)
        }
    }
    let (fa, fb, fw) = (
        dir.write("a.jsonl", a),
        dir.write("b.jsonl", b),
        dir.write("w.jsonl", whole),
    );
    let pa = dir
        .cmd("cfn-agg")
        .args(["--with-digest", "--by", "agent"])
        .arg(&fa)
        .run();
    let pb = dir
        .cmd("cfn-agg")
        .args(["--with-digest", "--by", "agent"])
        .arg(&fb)
        .run();
    let merged_in = format!("{}{}", pa.success().stdout(), pb.success().stdout());
    let merged = dir.cmd("cfn-agg").args(["--merge"]).stdin(merged_in).run();
    let merged = merged.success().jsonl();
    let full = dir
        .cmd("cfn-agg")
        .args(["--by", "agent"])
        .arg(&fw)
        .run()
        .jsonl();
    assert_eq!(merged.len(), full.len());
    for (m, f) in merged.iter().zip(&full) {
        for k in [
            "metric", "agent", "count", "sum", "min", "max", "first", "last",
        ] {
            assert_eq!(m[k], f[k], "{k} of {}", f["metric"]);
        }
        let exact = f["count"].as_u64().unwrap() <= 1000;
        for k in ["p50", "p95", "p99"] {
            let (mv, fv) = (m[k].as_f64().unwrap(), f[k].as_f64().unwrap());
            if exact {
                assert_eq!(mv, fv, "{k} of {} {}", f["metric"], f["agent"]);
            } else {
                // Digest-merged: close to the single-run estimate (values span 0..25000).
                assert!((mv - fv).abs() < 250.0, "{k}: merged {mv} vs whole {fv}");
            }
        }
    }
}

#[test]
fn malformed_lines_are_counted_with_line_numbers_and_the_rest_aggregated() {
    let dir = TestDir::new();
    let input = [
        rec("2026-11-27T10:00:00Z", "a", "m", 1.0, None),
        "{not json\n".into(),
        "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\"}\n".into(),
        "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":\"12\"}\n".into(),
        "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":NaN}\n".into(),
        rec("2026-11-27T10:00:00Z", "a", "m", 2.0, None),
        "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"va".into(),
    ]
    .concat();
    let f = dir.write("bad.jsonl", &input);
    let out = dir.cmd("cfn-agg").arg(&f).run();
    out.success();
    for line in [2, 3, 4, 5, 7] {
        out.stderr_has(&format!("bad.jsonl:{line}:"));
    }
    out.stderr_has("skipped 5 malformed lines");
    out.stderr_has("value \"12\" is not a number");
    assert_eq!(out.jsonl()[0]["count"], 2);
    let strict = dir.cmd("cfn-agg").arg("--strict").arg(&f).run();
    strict.status(65).stderr_has("bad.jsonl:2:");
}

#[test]
fn table_format_is_aligned() {
    let dir = TestDir::new();
    let f = window_fixture(&dir);
    let out = dir
        .cmd("cfn-agg")
        .args(["--format", "table", "--by", "agent"])
        .arg(&f)
        .run();
    let text = out.success().stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("METRIC  AGENT  COUNT"), "{text}");
    assert_eq!(lines.len(), 3);
    // Right-aligned counts end in the same column.
    let col = lines[0].find("COUNT").unwrap() + "COUNT".len();
    assert_eq!(&lines[1][col - 1..col], "3");
    assert_eq!(&lines[2][col - 1..col], "2");
}

#[test]
fn merge_reports_lines_without_state_by_number() {
    let dir = TestDir::new();
    let with = dir
        .cmd("cfn-agg")
        .arg("--with-digest")
        .stdin(rec("2026-11-27T10:00:00Z", "a", "m", 1.0, None))
        .run()
        .success()
        .stdout();
    let without = r#"{"metric":"m","count":1,"sum":1,"avg":1,"min":1,"max":1}"#;
    let out = dir
        .cmd("cfn-agg")
        .arg("--merge")
        .stdin(format!("{with}{without}\n"))
        .run();
    out.success()
        .stderr_has("<stdin>:2: metric \"m\": no \"state\"");
    assert_eq!(out.jsonl()[0]["count"], 1);
}

#[test]
fn merging_parts_without_first_and_last_writes_no_made_up_times() {
    let dir = TestDir::new();
    let with = dir
        .cmd("cfn-agg")
        .arg("--with-digest")
        .stdin(rec("2026-11-27T10:00:00Z", "a", "m", 1.0, None))
        .run()
        .success()
        .stdout();
    let mut part: serde_json::Value = serde_json::from_str(with.trim()).unwrap();
    let obj = part.as_object_mut().unwrap();
    obj.remove("first");
    obj.remove("last");
    let out = dir
        .cmd("cfn-agg")
        .arg("--merge")
        .stdin(format!("{part}\n{part}\n"))
        .run();
    out.success();
    let merged = &out.jsonl()[0];
    assert_eq!(merged["count"], 2);
    assert!(merged.get("first").is_none(), "{merged}");
    assert!(merged.get("last").is_none(), "{merged}");
}

#[test]
fn many_shards_fold_in_blocks_with_the_same_output_for_any_threads_and_any_reads() {
    // Sixteen shards of about 5 MB (five blocks each, so block merges and the hand-over
    // from one input to the next are both exercised), digests in every group.
    let dir = TestDir::new();
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    for i in 0..16u64 {
        let mut data = Vec::new();
        cfn_testkit::gendata::write_records(&mut data, 40_000, 1_795_773_600_000, 7_200_000, i)
            .unwrap();
        assert!(data.len() > 4 << 20, "{} bytes", data.len());
        std::fs::write(shards.join(format!("cfn-metrics-{i}.jsonl")), &data).unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(&shards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for args in [&[][..], &["--by", "agent", "--with-digest"][..]] {
        let one = dir
            .cmd("cfn-agg")
            .args(args)
            .args(["--threads", "1"])
            .arg(&shards)
            .run();
        one.success();
        let aggs: Vec<Value> = one.jsonl();
        let total: u64 = aggs.iter().map(|a| a["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 16 * 40_000);
        for threads in ["2", "8"] {
            let many = dir
                .cmd("cfn-agg")
                .args(args)
                .args(["--threads", threads])
                .arg(&shards)
                .run();
            assert_eq!(one.stdout(), many.stdout(), "{args:?} {threads} threads");
        }
        // Read through a pipe (reads return what the pipe holds), a file gives what it gives
        // read from disk: blocks fall where the bytes put them.
        let file = dir.cmd("cfn-agg").args(args).arg(&names[3]).run();
        let piped = dir
            .cmd("cfn-agg")
            .args(args)
            .stdin(std::fs::read(&names[3]).unwrap())
            .run();
        assert_eq!(file.stdout(), piped.stdout(), "{args:?} file against stdin");
    }
}

#[test]
fn any_number_of_threads_gives_the_single_threaded_output_byte_for_byte() {
    let dir = TestDir::new();
    let mut data = Vec::new();
    cfn_testkit::gendata::write_records(&mut data, 300_000, 1_795_773_600_000, 7_200_000, 9)
        .unwrap();
    // Malformed lines, a legacy multi-line record and an overlong line in the middle, and a
    // last line without its newline.
    let mid = data.len() / 2;
    let cut = mid + data[mid..].iter().position(|&c| c == b'\n').unwrap() + 1;
    let mut text = data[..cut].to_vec();
    text.extend_from_slice(
        b"not json\n{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":\"12\"}\n",
    );
    text.extend(std::iter::repeat_n(b'x', 3 << 20));
    text.extend_from_slice(b"\n{\n  \"timestamp\": \"2026-11-27T10:00:00Z\",\n  \"metric\": \"legacy\",\n  \"value\": 7\n}\n");
    text.extend_from_slice(&data[cut..]);
    text.extend_from_slice(
        b"{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":3}",
    );
    let input = dir.write("mixed.jsonl", &text);
    for args in [
        &["--by", "agent"][..],
        &["--by", "tag:phase", "--bucket", "10m", "--with-digest"][..],
        &["--quantiles", "0.5,0.999", "--metric", "tokens_*"][..],
    ] {
        let one = dir
            .cmd("cfn-agg")
            .args(args)
            .args(["--threads", "1"])
            .arg(&input)
            .run();
        one.success();
        for threads in ["2", "3", "8"] {
            let many = dir
                .cmd("cfn-agg")
                .args(args)
                .args(["--threads", threads])
                .arg(&input)
                .run();
            many.success();
            assert_eq!(
                one.stdout(),
                many.stdout(),
                "{args:?} with {threads} threads"
            );
            assert_eq!(
                one.stderr(),
                many.stderr(),
                "{args:?} with {threads} threads"
            );
        }
    }
    let one = dir
        .cmd("cfn-agg")
        .args(["--threads", "1"])
        .arg(&input)
        .run();
    one.stderr_has("invalid JSON").stderr_has("longer than");
    assert!(one.stdout().contains("\"metric\":\"legacy\""));
    // --strict stops at the same line either way.
    let a = dir
        .cmd("cfn-agg")
        .args(["--strict", "--threads", "1"])
        .arg(&input)
        .run();
    let b = dir
        .cmd("cfn-agg")
        .args(["--strict", "--threads", "4"])
        .arg(&input)
        .run();
    a.status(65);
    b.status(65);
    assert_eq!(a.stderr(), b.stderr());
}

#[test]
fn a_sum_past_the_f64_range_stays_finite_where_it_is_and_saturates_where_it_is_not() {
    let dir = TestDir::new();
    let rec = |m: &str, v: &str| {
        format!("{{\"timestamp\":\"2026-11-01T00:00:00Z\",\"metric\":\"{m}\",\"value\":{v}}}\n")
    };
    let input = [
        rec("back", "1e308"),
        rec("back", "1e308"),
        rec("back", "-1e308"),
        rec("huge", "1.7976931348623157e308"),
        rec("huge", "1.7976931348623157e308"),
    ]
    .concat();
    let out = dir.cmd("cfn-agg").stdin(input).run();
    out.success()
        .stderr_has("the sum of huge is beyond the range of a 64-bit float");
    let aggs: Vec<Value> = out.jsonl();
    let back = aggs.iter().find(|a| a["metric"] == "back").unwrap();
    assert_eq!(back["sum"].as_f64(), Some(1e308), "{back}");
    assert_eq!(back["count"], 3);
    let huge = aggs.iter().find(|a| a["metric"] == "huge").unwrap();
    assert_eq!(huge["sum"].as_f64(), Some(f64::MAX), "{huge}");
    assert_eq!(huge["avg"].as_f64(), Some(f64::MAX), "{huge}");
    // Prometheus gets numbers, not NaN, and a rule on the sum still fires.
    let text = dir
        .cmd("cfn-promtext")
        .stdin(out.stdout())
        .run()
        .success()
        .stdout();
    assert!(!text.contains("NaN"), "{text}");
    assert!(
        text.contains("cfn_huge_sum 1.7976931348623157e+308"),
        "{text}"
    );
}

/// Contract section 1: values are never added across units. `gb` and `mb` convert (IEC, into
/// the group's first unit); milliseconds, no unit and an unknown word stay apart; each is
/// named in a warning. Block-parallel reading and `--merge` give the same groups.
#[test]
fn values_in_different_units_are_converted_or_kept_apart_never_added() {
    let dir = TestDir::new();
    let line = |metric: &str, value: f64, unit: Option<&str>| {
        let unit = unit
            .map(|u| format!(",\"unit\":\"{u}\""))
            .unwrap_or_default();
        format!(
            "{{\"timestamp\":\"2026-11-27T10:00:00.000Z\",\"metric\":\"{metric}\",\"value\":{value}{unit}}}\n"
        )
    };
    let input = [
        line("mem", 1.0, Some("gb")),
        line("mem", 512.0, Some("mb")),
        line("mem", 2.0, Some("GB")),
        line("lat", 5.0, Some("ms")),
        line("lat", 3.0, None),
        line("lat", 2.0, Some("widgets")),
        line("lat", 0.25, Some("s")),
    ]
    .concat();
    let file = dir.write("in.jsonl", &input);
    let out = dir.cmd("cfn-agg").arg(&file).run();
    let groups = out.success().jsonl();
    let summary: Vec<(String, Option<String>, u64, f64, f64, f64)> = groups
        .iter()
        .map(|g| {
            (
                g["metric"].as_str().unwrap().to_string(),
                g["unit"].as_str().map(str::to_string),
                g["count"].as_u64().unwrap(),
                g["sum"].as_f64().unwrap(),
                g["min"].as_f64().unwrap(),
                g["max"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("lat".into(), None, 1, 3.0, 3.0, 3.0),
            ("lat".into(), Some("ms".into()), 2, 255.0, 5.0, 250.0),
            ("lat".into(), Some("widgets".into()), 1, 2.0, 2.0, 2.0),
            ("mem".into(), Some("gb".into()), 3, 3.5, 0.5, 2.0),
        ],
        "{}",
        out.stdout()
    );
    let err = out.stderr();
    assert!(
        err.contains(
            r#"metric "mem": values in "GB" converted to "gb"; values in "mb" converted to "gb""#
        ),
        "{err}"
    );
    assert!(err.contains(r#"metric "lat": values in "s" converted to "ms"; values without a unit, values in units of time and values in "widgets" do not convert into each other: kept apart, one aggregate each"#), "{err}");
    // The same through the block-parallel reader, and split, digested and merged.
    let parallel = dir.cmd("cfn-agg").args(["--threads", "2"]).arg(&file).run();
    assert_eq!(parallel.success().stdout(), out.stdout());
    // Part one starts with gb, part two with mb: the merge converts a whole part.
    let lines: Vec<&str> = input.split_inclusive('\n').collect();
    let (a, b) = (lines[..1].concat(), lines[1..].concat());
    let pa = dir.cmd("cfn-agg").arg("--with-digest").stdin(a).run();
    let pb = dir.cmd("cfn-agg").arg("--with-digest").stdin(b).run();
    let merged = dir
        .cmd("cfn-agg")
        .arg("--merge")
        .stdin(format!(
            "{}{}",
            pa.success().stdout(),
            pb.success().stdout()
        ))
        .run();
    assert_eq!(merged.success().stdout(), out.stdout());
}
