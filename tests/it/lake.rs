//! The cold lake queried in place (issue 37): cfn-archive uploads three hosts' days to a real
//! S3 (moto_server) in the Hive layout; DuckDB (PyPI duckdb 1.5.5 with its httpfs extension
//! loaded by path) reads them through contrib/duckdb, and its figures equal
//! `cfn-cat s3://… | cfn-agg`'s; a one-day query fetches only that day's objects; the local
//! archive views agree with `cfn-cat ARCHIVE | cfn-agg`; and `cfn-cat --host --since --until`
//! reads one host's day of a 30-day, 50-host bucket in a handful of requests.

use cfn_testkit::s3::{boto3, create_bucket, logging_proxy, open_moto};
use cfn_testkit::{Outcome, TestCommand, TestDir, python_modules};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NOW: &str = "2026-11-20T12:00:00Z";
const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];
const DAYS: [&str; 3] = ["2026-10-01", "2026-10-02", "2026-10-03"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn duckdb_ready() -> bool {
    python_modules(
        "import duckdb, duckdb_extension_httpfs",
        "pip install duckdb==1.5.5 duckdb-extension-httpfs==1.5.5",
    )
}

/// The S3 settings every tool of a test gets (moto's authentication is off; the keys are
/// still sent, and must never be printed).
fn with_s3<'c>(cmd: &'c mut TestCommand, endpoint: &str) -> &'c mut TestCommand {
    cmd.env("AWS_ACCESS_KEY_ID", "AKLAKETEST")
        .env("AWS_SECRET_ACCESS_KEY", "lake-secret-never-printed")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_ENDPOINT_URL", endpoint)
}

/// contrib/duckdb/cfn-duckdb with `args`, CSV out, parsed into rows of named fields.
fn duckdb(dir: &TestDir, endpoint: &str, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut cmd = TestCommand::program("python3");
    cmd.arg(root().join("contrib/duckdb/cfn-duckdb"))
        .args(args)
        .current_dir(dir.path());
    let out = with_s3(&mut cmd, endpoint).run();
    out.success();
    assert!(!out.stderr().contains("lake-secret") && !out.stdout().contains("lake-secret"));
    csv(&out)
}

fn csv(out: &Outcome) -> Vec<BTreeMap<String, String>> {
    let text = out.stdout();
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(String::from)
        .collect();
    lines
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// A host's records of the three days: integer values (so sums are exact in any order),
/// spread over five agents (five shards), each host and day its own distribution.
fn records(host_index: usize) -> String {
    let mut out = String::new();
    for (d, day) in DAYS.iter().enumerate() {
        for i in 0..240u64 {
            let v = (i * 37 + 11 * d as u64 + 97 * host_index as u64) % (500 + 300 * d as u64)
                + host_index as u64;
            out.push_str(&format!(
                "{{\"timestamp\":\"{day}T{:02}:{:02}:{:02}{}Z\",\"agent\":\"agent-{}\",\"metric\":\"coordination.time\",\"value\":{v},\"tags\":{{\"phase\":\"p{}\"}}}}\n",
                i / 60 % 24,
                i % 60,
                (i * 7) % 60,
                if i % 2 == 0 { ".123" } else { "" },
                i % 5,
                i % 3
            ));
        }
    }
    out
}

/// The three hosts' days synced, rotated and uploaded by `cfn-archive prune --upload`;
/// returns web-1's archive as it was before the prune, for the local views.
fn upload_three_hosts(endpoint: &str, bucket: &str) -> TestDir {
    let kept = TestDir::new();
    for (h, host) in HOSTS.iter().enumerate() {
        let dir = TestDir::new();
        for (n, line) in records(h).lines().enumerate() {
            let shard = n % 5;
            let path = dir.join(&format!("cfn-metrics-{shard}.jsonl"));
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(line);
            text.push('\n');
            std::fs::write(&path, text).unwrap();
        }
        dir.cmd("cfn-archive")
            .args([
                "--now",
                NOW,
                "run",
                "--hot",
                "1h",
                "--trim-grace",
                "0s",
                "--keep",
                "3650d",
            ])
            .run()
            .success();
        if h == 0 {
            for e in std::fs::read_dir(dir.join("archive")).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("cfn-metrics-") {
                    std::fs::copy(e.path(), kept.join(&name)).unwrap();
                }
            }
        }
        let url = format!("s3://{bucket}/fleet/");
        let mut prune = dir.cmd("cfn-archive");
        prune
            .args(["--now", NOW, "prune", "--keep", "30d", "--upload", &url])
            .env("CFN_HOST", host);
        with_s3(&mut prune, endpoint).run().success();
    }
    kept
}

/// `cfn-cat s3://… --host-tag | cfn-agg --by tag:host --bucket 1d`, by (host, day).
fn cfn_agg_by_host_day(
    dir: &TestDir,
    endpoint: &str,
    url: &str,
) -> BTreeMap<(String, String), serde_json::Value> {
    let mut cat = dir.cmd("cfn-cat");
    cat.args([url, "--host-tag"]);
    let records = with_s3(&mut cat, endpoint).run();
    let aggs = dir
        .cmd("cfn-agg")
        .args(["--by", "tag:host", "--bucket", "1d"])
        .stdin(records.success().stdout())
        .run()
        .success()
        .jsonl();
    aggs.into_iter()
        .map(|a| {
            let host = a["tags"]["host"].as_str().unwrap().to_string();
            let day = a["bucket_start"].as_str().unwrap()[..10].to_string();
            ((host, day), a)
        })
        .collect()
}

/// The values of each (host, day) group, sorted, from the records themselves.
fn values_by_host_day() -> BTreeMap<(String, String), Vec<f64>> {
    let mut out: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (h, host) in HOSTS.iter().enumerate() {
        for line in records(h).lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let day = r["timestamp"].as_str().unwrap()[..10].to_string();
            out.entry((host.to_string(), day))
                .or_default()
                .push(r["value"].as_f64().unwrap());
        }
    }
    for v in out.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    out
}

/// Where `x` falls among the sorted values, as a rank (1-based, the first at or above it).
fn rank(sorted: &[f64], x: f64) -> usize {
    sorted.partition_point(|v| *v < x) + 1
}

const PER_HOST_DAY: &str = "SELECT host, CAST(dt AS VARCHAR) AS day, count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max, quantile_cont(value, 0.5) AS p50, quantile_cont(value, 0.95) AS p95, quantile_cont(value, 0.99) AS p99 FROM {VIEW} GROUP BY ALL ORDER BY host, day";

/// DuckDB's count, sum, min and max per host and day equal cfn-agg's exactly; its
/// interpolated quantiles are within one rank of cfn-agg's nearest-rank ones.
fn assert_agrees(
    duck: &[BTreeMap<String, String>],
    agg: &BTreeMap<(String, String), serde_json::Value>,
    values: &BTreeMap<(String, String), Vec<f64>>,
) {
    assert_eq!(duck.len(), agg.len(), "{duck:?}");
    for row in duck {
        let key = (row["host"].clone(), row["day"].clone());
        let a = &agg[&key];
        let num = |k: &str| row[k].parse::<f64>().unwrap();
        assert_eq!(num("count"), a["count"].as_f64().unwrap(), "{key:?} count");
        for k in ["sum", "min", "max"] {
            assert_eq!(num(k), a[k].as_f64().unwrap(), "{key:?} {k}");
        }
        let sorted = &values[&key];
        for q in ["p50", "p95", "p99"] {
            let (ours, theirs) = (a[q].as_f64().unwrap(), num(q));
            let apart = rank(sorted, ours).abs_diff(rank(sorted, theirs));
            assert!(
                apart <= 1,
                "{key:?} {q}: cfn-agg {ours}, DuckDB {theirs} ({apart} ranks apart)"
            );
        }
    }
}

#[test]
fn duckdb_reads_the_hive_layout_in_place_and_agrees_with_cfn_agg() {
    let Some(moto) = open_moto() else { return };
    if !duckdb_ready() {
        return;
    }
    let endpoint = format!("http://127.0.0.1:{moto}");
    create_bucket(moto, "lake-three");
    let archive = upload_three_hosts(&endpoint, "lake-three");
    let dir = TestDir::new();
    let url = "s3://lake-three/fleet/";
    let agg = cfn_agg_by_host_day(&dir, &endpoint, url);
    let values = values_by_host_day();
    assert_eq!(agg.len(), 9, "three hosts, three days");
    let query = PER_HOST_DAY.replace("{VIEW}", "cfn_records");
    let duck = duckdb(&dir, &endpoint, &["--cold", url, "-c", &query]);
    assert_agrees(&duck, &agg, &values);

    // Tags as a MAP, timestamps as TIMESTAMPTZ (the …Z and …123Z forms both).
    let tagged = duckdb(
        &dir,
        &endpoint,
        &[
            "--cold",
            url,
            "-c",
            "SELECT tags['phase'] AS phase, count(*) AS n, min(epoch_ms(timestamp)) AS first FROM cfn_records_tags WHERE host = 'web-2' GROUP BY ALL ORDER BY phase",
        ],
    );
    let phases: Vec<(&str, &str)> = tagged
        .iter()
        .map(|r| (r["phase"].as_str(), r["n"].as_str()))
        .collect();
    assert_eq!(phases, [("p0", "240"), ("p1", "240"), ("p2", "240")]);
    assert_eq!(
        tagged[0]["first"], "1790812800123",
        "2026-10-01T00:00:00.123Z"
    );

    // One day: only that day's objects are fetched (the proxy's log), every host's.
    let (proxy, log) = logging_proxy(moto);
    let day = duckdb(
        &dir,
        &format!("http://127.0.0.1:{proxy}"),
        &[
            "--cold",
            url,
            "-c",
            "SELECT count(*) AS n FROM cfn_records WHERE dt = DATE '2026-10-02'",
        ],
    );
    assert_eq!(day[0]["n"], "720");
    let fetched: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(".jsonl.gz") && (l.starts_with("GET ") || l.starts_with("HEAD ")))
        .cloned()
        .collect();
    assert!(!fetched.is_empty(), "{:?}", log.lock().unwrap());
    eprintln!(
        "one day of 9 host-days: DuckDB sent {} requests, {} for objects (all of that day)",
        log.lock().unwrap().len(),
        fetched.len()
    );
    for l in &fetched {
        assert!(
            l.contains("dt=2026-10-02") || l.contains("dt%3D2026-10-02"),
            "fetched another day: {l}"
        );
    }
    for host in HOSTS {
        assert!(
            fetched
                .iter()
                .any(|l| l.contains(&format!("host={host}"))
                    || l.contains(&format!("host%3D{host}"))),
            "{host}: {fetched:?}"
        );
    }

    // The local archive views: the same numbers as cfn-cat ARCHIVE | cfn-agg.
    let records = dir.cmd("cfn-cat").arg(archive.path()).run();
    let local: BTreeMap<String, serde_json::Value> = dir
        .cmd("cfn-agg")
        .args(["--bucket", "1d"])
        .stdin(records.success().stdout())
        .run()
        .success()
        .jsonl()
        .into_iter()
        .map(|a| (a["bucket_start"].as_str().unwrap()[..10].to_string(), a))
        .collect();
    let local_agg: BTreeMap<(String, String), serde_json::Value> = local
        .into_iter()
        .map(|(day, a)| (("web-1".to_string(), day), a))
        .collect();
    let query = PER_HOST_DAY.replace("{VIEW}", "cfn_archive_records");
    let duck_local = duckdb(
        &dir,
        &endpoint,
        &[
            "--archive",
            archive.path().to_str().unwrap(),
            "--host",
            "web-1",
            "-c",
            &query,
        ],
    );
    let web1: BTreeMap<_, _> = values
        .into_iter()
        .filter(|((h, _), _)| h == "web-1")
        .collect();
    assert_agrees(&duck_local, &local_agg, &web1);
}

/// One host's day of a 30-day, 50-host bucket: `cfn-cat --host --since --until` lists the
/// top level and that host's directory, then fetches the day's objects: 4 requests here,
/// where a listing of the whole prefix takes a page per 1,000 keys before any object.
#[test]
fn cfn_cat_reads_one_host_day_of_a_month_of_a_fleet_in_a_handful_of_requests() {
    let Some(moto) = open_moto() else { return };
    if !python_modules("import boto3", "pip install 'moto[server]'") {
        return;
    }
    create_bucket(moto, "lake-fleet");
    // 50 hosts x 30 days, one small object a day (two for the day read), put with boto3.
    boto3(
        moto,
        r#"
import gzip, io
for h in range(50):
    for d in range(1, 31):
        day = f"2026-10-{d:02d}"
        shards = [1, 2] if (h, d) == (7, 15) else [1]
        for n in shards:
            line = '{"timestamp":"%sT10:00:00.000Z","agent":"agent-%d","metric":"m","value":%d}\n' % (day, n, h * 100 + d)
            key = f"fleet/host=web-{h}/dt={day}/cfn-metrics-{day.replace('-', '')}-{n}.{h:06d}{d:06d}.jsonl.gz"
            s3.put_object(Bucket=sys.argv[1], Key=key, Body=gzip.compress(line.encode(), mtime=0))
"#,
        &["lake-fleet"],
    );
    let (proxy, log) = logging_proxy(moto);
    let dir = TestDir::new();
    let mut cat = dir.cmd("cfn-cat");
    cat.args([
        "s3://lake-fleet/fleet/",
        "--host",
        "web-7",
        "--since",
        "2026-10-15T00:00:00Z",
        "--until",
        "2026-10-16T00:00:00Z",
    ]);
    let out = with_s3(&mut cat, &format!("http://127.0.0.1:{proxy}")).run();
    let values: Vec<i64> = out
        .success()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(
        values,
        [715, 715],
        "both objects of web-7's 15 October, nothing else"
    );
    let requests = log.lock().unwrap().clone();
    let listings = requests
        .iter()
        .filter(|l| l.contains("list-type=2"))
        .count();
    let gets = requests.len() - listings;
    assert_eq!((listings, gets), (2, 2), "{requests:#?}");
    assert!(requests.len() < 10);
    // The walk is for a narrowed read: without --host or a range the prefix is listed whole
    // (1,501 keys: two pages).
    let (proxy, log) = logging_proxy(moto);
    let mut all = dir.cmd("cfn-cat");
    all.args(["s3://lake-fleet/fleet/"]);
    let out = with_s3(&mut all, &format!("http://127.0.0.1:{proxy}")).run();
    assert_eq!(out.success().stdout().lines().count(), 1501);
    let listings = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("list-type=2"))
        .count();
    assert_eq!(listings, 2);
}
