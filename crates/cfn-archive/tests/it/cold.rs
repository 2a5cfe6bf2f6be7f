//! Cold storage against a real S3-compatible server: moto_server (PyPI moto[server]) on
//! loopback with its authentication on, so a bad signature fails as on AWS. Uploads are
//! verified before deletion, a killed multipart upload resumes, a failing server is retried
//! and then reported, and `cfn-cat s3://` reads the cold copies back.

use crate::FAULTS;
use cfn_testkit::s3::{proxy, read_request};
use cfn_testkit::{Outcome, TestCommand, TestDir, free_port, peer};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const DAY: &str = "2026-11-01T12:00:00Z";

struct Moto {
    /// The server, for the shared instance; its credentials, for an open one.
    _child: Option<std::process::Child>,
    port: u16,
    key: String,
    secret: String,
}

fn setup_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto_setup.py")
}

/// The moto_server most tests use (each a bucket of its own), with its authentication off:
/// moto's signature check rejects every key holding a `=` (boto3's own requests too), and
/// the default layout's keys hold `host=` and `dt=`. The credentials are still sent and
/// must never be printed.
fn moto() -> Option<&'static Moto> {
    static OPEN: OnceLock<Option<Moto>> = OnceLock::new();
    OPEN.get_or_init(|| {
        let port = cfn_testkit::s3::open_moto()?;
        Some(Moto {
            _child: None,
            port,
            key: "AKOPENTESTKEY".into(),
            secret: "open-moto-secret-never-printed".into(),
        })
    })
    .as_ref()
}

/// One moto_server with authentication on after the three requests that create the test's
/// IAM user, for the tests of credentials and signatures (keys without `=` only).
fn moto_authed() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    let moto = MOTO.get_or_init(|| {
        let server = cfn_testkit::find_program("moto_server")?;
        let port = free_port();
        let child = std::process::Command::new(server)
            .args(["-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = std::process::Command::new("python3")
            .arg(setup_script())
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (key, secret) = text.trim().split_once(' ').unwrap();
        Some(Moto {
            _child: Some(child),
            port,
            key: key.into(),
            secret: secret.into(),
        })
    });
    if moto.is_none() {
        // Every test that goes without says so, not only the first.
        peer("moto_server", "PyPI package moto[server]");
    }
    moto.as_ref()
}

impl Moto {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Puts the bytes of `path` at `key`, with boto3.
    fn put_file(&self, bucket: &str, key: &str, path: &Path) {
        let out = std::process::Command::new("python3")
            .arg(setup_script())
            .args([
                &self.port.to_string(),
                &self.key,
                &self.secret,
                bucket,
                key,
                "putfile",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    fn bucket(&self, name: &str) {
        let out = std::process::Command::new("python3")
            .arg(setup_script())
            .args([&self.port.to_string(), &self.key, &self.secret, name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// MD5 and size of an object, read with boto3.
    fn object(&self, bucket: &str, key: &str) -> (String, u64) {
        let out = std::process::Command::new("python3")
            .arg(setup_script())
            .args([&self.port.to_string(), &self.key, &self.secret, bucket, key])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (md5, size) = text.trim().split_once(' ').unwrap();
        (md5.into(), size.parse().unwrap())
    }
}

/// Records `from..to` of metric `m` on `day` (`YYYY-MM-DD`), from 10:00:00 a second apart,
/// the value the record's number, by `agent` when given.
fn day_records(day: &str, agent: Option<&str>, from: usize, to: usize) -> String {
    let agent = agent.map_or(String::new(), |a| format!("\"agent\":\"{a}\","));
    (from..to)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"{day}T10:{:02}:{:02}.000Z\",{agent}\"metric\":\"m\",\"value\":{i}}}\n",
                i / 60,
                i % 60
            )
        })
        .collect()
}

/// The `value` of every record a successful read printed, sorted.
fn sorted_values(out: &Outcome) -> Vec<u64> {
    let mut values: Vec<u64> = out
        .success()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    values.sort();
    values
}

/// The host identity every test's cfn-archive has: its cold copies go under `HOST/`.
const HOST: &str = "test-host";

/// A cfn-archive (or cfn-cat) with the test's credentials and nothing from the machine's.
fn with_aws(cmd: &mut TestCommand, m: &Moto, secret: &str) {
    cmd.env("CFN_HOST", HOST)
        .env("AWS_ACCESS_KEY_ID", &m.key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("CFN_HTTP_BACKOFF_MS", "20");
}

fn archive(dir: &TestDir, m: &Moto, args: &[&str]) -> Outcome {
    archive_as(dir, m, HOST, args)
}

/// [`archive`] on host `host` (`CFN_HOST`).
fn archive_as(dir: &TestDir, m: &Moto, host: &str, args: &[&str]) -> Outcome {
    let mut cmd = dir.cmd("cfn-archive");
    cmd.args(["--now", DAY]).args(args);
    with_aws(&mut cmd, m, &m.secret);
    cmd.env("CFN_HOST", host).run()
}

/// `prune --keep 30d --upload URL --endpoint ENDPOINT` and `extra`.
fn prune_to(dir: &TestDir, m: &Moto, url: &str, endpoint: &str, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "prune",
        "--keep",
        "30d",
        "--upload",
        url,
        "--endpoint",
        endpoint,
    ];
    args.extend_from_slice(extra);
    archive(dir, m, &args)
}

/// `cfn-cat ARGS` with the test's credentials (or `secret`).
fn cold_cat(dir: &TestDir, m: &Moto, secret: &str, args: &[&str]) -> Outcome {
    let mut cat = dir.cmd("cfn-cat");
    cat.args(args);
    with_aws(&mut cat, m, secret);
    cat.run()
}

/// Hot records on three September days, synced and rotated: the archive holds three
/// `.jsonl.gz` day files, all due for deletion with --keep 30d. Returns the records.
fn september(dir: &TestDir) -> String {
    let mut text = String::new();
    for day in 1..=3 {
        for i in 0..50 {
            text.push_str(&format!(
                "{{\"timestamp\":\"2026-09-0{day}T10:00:{:02}.000Z\",\"agent\":\"a1\",\"metric\":\"m\",\"value\":{i}}}\n",
                i
            ));
        }
    }
    dir.write("cfn-metrics-1.jsonl", &text);
    dir.cmd("cfn-archive")
        .args([
            "--now",
            DAY,
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
    text
}

fn archive_files(dir: &TestDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cfn-metrics-"))
        .collect();
    v.sort();
    v
}

#[test]
fn prune_uploads_verifies_then_deletes_and_cfn_cat_reads_the_cold_copies() {
    let Some(m) = moto() else { return };
    m.bucket("cold-one");
    let dir = TestDir::new();
    let records = september(&dir);
    assert_eq!(archive_files(&dir).len(), 3);
    let out = prune_to(&dir, m, "s3://cold-one/", &m.endpoint(), &[]);
    out.success();
    assert!(
        out.stdout().contains("pruned 3 files; uploaded 3 files"),
        "{out:?}"
    );
    assert!(!out.stderr().contains(&m.secret) && !out.stdout().contains(&m.secret));
    assert_eq!(archive_files(&dir), Vec::<String>::new());
    // The objects are the files: read back, records equal, day by day.
    let cat = cold_cat(
        &dir,
        m,
        &m.secret,
        &["s3://cold-one/", "--endpoint", &m.endpoint()],
    );
    assert_eq!(cat.success().stdout(), records);
    // --since and --until skip whole files by their day; the endpoint from AWS_ENDPOINT_URL.
    let mut cat = dir.cmd("cfn-cat");
    cat.args([
        "s3://cold-one/",
        "--since",
        "2026-09-02T00:00:00Z",
        "--until",
        "2026-09-03T00:00:00Z",
    ])
    .env("AWS_ENDPOINT_URL", m.endpoint());
    with_aws(&mut cat, m, &m.secret);
    let out = cat.run();
    out.success();
    assert_eq!(out.stdout().lines().count(), 50);
    assert!(out.stdout().lines().all(|l| l.contains("2026-09-02")));
    // A second run has nothing to upload.
    let again = prune_to(&dir, m, "s3://cold-one/", &m.endpoint(), &[]);
    again.success();
    assert_eq!(again.stdout().trim(), "cfn-archive: pruned 0 files");
}

#[test]
fn a_bad_signature_or_a_missing_bucket_is_78_and_the_files_stay() {
    let (Some(m), Some(open)) = (moto_authed(), moto()) else {
        return;
    };
    m.bucket("cold-two");
    let dir = TestDir::new();
    september(&dir);
    let mut cmd = dir.cmd("cfn-archive");
    cmd.args([
        "--now",
        DAY,
        "prune",
        "--keep",
        "30d",
        "--upload",
        "s3://cold-two/x/",
    ])
    .args(["--endpoint", &m.endpoint()]);
    with_aws(&mut cmd, m, "not-the-secret-at-all");
    let out = cmd.run();
    out.status(78).stderr_has("HTTP 403");
    assert!(!out.stderr().contains("not-the-secret-at-all"));
    assert_eq!(archive_files(&dir).len(), 3);
    let out = prune_to(&dir, open, "s3://no-such-bucket/", &open.endpoint(), &[]);
    out.status(78).stderr_has("no-such-bucket");
    assert_eq!(archive_files(&dir).len(), 3);
    // No credentials at all: 78 before anything is read.
    let out = dir
        .cmd("cfn-archive")
        .args([
            "--now",
            DAY,
            "prune",
            "--keep",
            "30d",
            "--upload",
            "s3://cold-two/",
        ])
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .run();
    out.status(78).stderr_has("no AWS credentials");
}

/// The key of the object holding all of day file `name` whose MD5 is `md5`, below `prefix`
/// in the default layout, for the test's host.
fn content_key(prefix: &str, day: &str, name: &str, md5: &str) -> String {
    let stem = name.strip_suffix(".jsonl.gz").unwrap();
    let dt = format!("{}-{}-{}", &day[..4], &day[4..6], &day[6..]);
    format!("{prefix}host={HOST}/dt={dt}/{stem}.{}.jsonl.gz", &md5[..12])
}

/// Writes an old, incompressible `.jsonl.gz` of `size` bytes into the archive; returns its
/// name and MD5.
fn big_old_file(dir: &TestDir, day: &str, size: usize) -> (String, String) {
    // The archive needs a state first (sync on an empty hot dir commits one).
    dir.cmd("cfn-archive").args(["sync"]).run().success();
    let mut bytes = vec![0u8; size];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let name = format!("cfn-metrics-{day}-4.jsonl.gz");
    std::fs::write(dir.join("archive").join(&name), &bytes).unwrap();
    let md5 = md5sum(&dir.join("archive").join(&name));
    (name, md5)
}

/// The MD5 of a file, as md5sum gives it.
fn md5sum(path: &Path) -> String {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_multipart_upload_killed_after_two_parts_resumes_and_verifies() {
    let Some(m) = moto() else { return };
    m.bucket("cold-three");
    let dir = TestDir::new();
    let (name, md5) = big_old_file(&dir, "20260905", 13 << 20);
    let args = [
        "prune",
        "--keep",
        "30d",
        "--upload",
        "s3://cold-three/fleet/",
        "--multipart-threshold",
        "6MiB",
        "--part-size",
        "5MiB",
    ];
    let mut cmd = dir.cmd(FAULTS);
    cmd.args(["--now", DAY])
        .args(args)
        .args(["--endpoint", &m.endpoint()]);
    with_aws(&mut cmd, m, &m.secret);
    cmd.env("CFN_ARCHIVE_CRASH_AT", "after_part_2");
    let killed = cmd.run();
    assert_ne!(killed.code(), 0, "{killed:?}");
    assert_eq!(archive_files(&dir), vec![name.clone()], "the file stays");
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("archive/.cfn-archive-state.json")).unwrap();
    assert_eq!(
        state["uploading"][&name]["parts"].as_array().unwrap().len(),
        2,
        "{state}"
    );
    // Resumed: only the third part is sent, then completed and verified.
    let mut args2: Vec<&str> = args.to_vec();
    let ep = m.endpoint();
    args2.extend(["--endpoint", &ep]);
    let out = archive(&dir, m, &args2);
    out.success();
    assert!(out.stderr().contains("(verified)"), "{out:?}");
    assert_eq!(archive_files(&dir), Vec::<String>::new());
    assert_eq!(
        m.object(
            "cold-three",
            &content_key("fleet/", "20260905", &name, &md5)
        ),
        (md5, 13 << 20)
    );
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("archive/.cfn-archive-state.json")).unwrap();
    assert!(
        state.get("uploading").is_none() && state.get("cold").is_none(),
        "{state}"
    );
}

#[test]
fn a_multipart_upload_reads_the_file_once_and_a_resume_checks_the_parts_against_the_file() {
    let Some(m) = moto() else { return };
    m.bucket("cold-once");
    let dir = TestDir::new();
    let size = 21 << 20;
    let (name, _) = big_old_file(&dir, "20260906", size);
    let ep = m.endpoint();
    let args = [
        "--now",
        DAY,
        "prune",
        "--keep",
        "30d",
        "--upload",
        "s3://cold-once/fleet/",
        "--multipart-threshold",
        "6MiB",
        "--part-size",
        "5MiB",
        "--endpoint",
        &ep,
    ];
    // Killed after two parts; then the file changes under the parts the store has (same
    // size, other bytes, as a restored backup would): its content, so its object's name,
    // is another; the upload in flight is aborted, never completed with two generations.
    let mut cmd = dir.cmd(FAULTS);
    cmd.args(args).env("CFN_ARCHIVE_CRASH_AT", "after_part_2");
    with_aws(&mut cmd, m, &m.secret);
    assert_ne!(cmd.run().code(), 0);
    let path = dir.join("archive").join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[..6 << 20] {
        *b = b.wrapping_add(1);
    }
    std::fs::write(&path, &bytes).unwrap();
    let md5 = md5sum(&path);
    let mut cmd = dir.cmd(FAULTS);
    cmd.args(args).env("CFN_ARCHIVE_REPORT_READS", "1");
    with_aws(&mut cmd, m, &m.secret);
    let out = cmd.run();
    out.success().stderr_has("(verified)");
    assert_eq!(
        m.object("cold-once", &content_key("fleet/", "20260906", &name, &md5)),
        (md5.clone(), size as u64)
    );
    // An object's name is its content's MD5, so an upload reads the file twice: once for
    // the name, once for the parts (each part hashed for Content-MD5 on the way).
    let read = |out: &Outcome| -> u64 {
        let e = out.stderr();
        let n = e
            .split("test-hooks: read ")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"));
        n.split_whitespace().next().unwrap().parse().unwrap()
    };
    let resumed = read(&out);
    assert!(
        resumed < 2 * size as u64 + (1 << 20),
        "{resumed} bytes read"
    );

    // A fresh upload reads the file twice, no more: its MD5 (the name), then the parts.
    let dir = TestDir::new();
    let (name, md5) = big_old_file(&dir, "20260907", size);
    let mut cmd = dir.cmd(FAULTS);
    cmd.args(args).env("CFN_ARCHIVE_REPORT_READS", "1");
    with_aws(&mut cmd, m, &m.secret);
    let out = cmd.run();
    out.success().stderr_has("(verified)");
    let twice = read(&out);
    assert!(
        twice >= 2 * size as u64 && twice < 2 * size as u64 + (2 << 20),
        "{twice} bytes read"
    );
    assert_eq!(
        m.object("cold-once", &content_key("fleet/", "20260907", &name, &md5)),
        (md5, size as u64)
    );
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("archive/.cfn-archive-state.json")).unwrap();
    assert!(state.get("uploading").is_none(), "{state}");
}

/// An HTTP proxy in front of moto that answers the first `fail` requests with 503 (all of
/// them when `fail` is usize::MAX) and forwards the others.
fn flaky_proxy(upstream: u16, fail: usize) -> (u16, Arc<AtomicUsize>) {
    proxy(upstream, fail, |_| {})
}

#[test]
fn a_failing_server_is_retried_and_one_that_stays_down_is_75() {
    let Some(m) = moto() else { return };
    m.bucket("cold-four");
    let dir = TestDir::new();
    september(&dir);
    // Down for good: every attempt of the first file gets 503; nothing is deleted.
    let (down, _) = flaky_proxy(m.port, usize::MAX);
    let ep = format!("http://127.0.0.1:{down}");
    let out = prune_to(&dir, m, "s3://cold-four/", &ep, &["--retries", "2"]);
    out.status(75).stderr_has("after 3 attempts");
    assert_eq!(archive_files(&dir).len(), 3);
    // Failing, then recovering within the retries: everything goes through.
    let (flaky, seen) = flaky_proxy(m.port, 3);
    let ep = format!("http://127.0.0.1:{flaky}");
    let out = prune_to(&dir, m, "s3://cold-four/", &ep, &["--retries", "3"]);
    out.success();
    assert!(seen.load(Ordering::SeqCst) > 3);
    assert_eq!(archive_files(&dir), Vec::<String>::new());
    // A server that never answers: the timeout, then 75.
    let dir = TestDir::new();
    september(&dir);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let started = Instant::now();
    let out = prune_to(
        &dir,
        m,
        "s3://cold-four/",
        &ep,
        &["--retries", "0", "--http-timeout", "1s"],
    );
    out.status(75);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(archive_files(&dir).len(), 3);
    drop(silent);
}

#[test]
fn upload_on_rotate_sends_each_day_once_and_prune_only_deletes() {
    let Some(m) = moto() else { return };
    m.bucket("cold-five");
    let dir = TestDir::new();
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!(
            "{{\"timestamp\":\"2026-10-20T10:00:{i:02}.000Z\",\"metric\":\"m\",\"value\":{i}}}\n"
        ));
    }
    dir.write("cfn-metrics-2.jsonl", &text);
    let ep = m.endpoint();
    let out = archive(
        &dir,
        m,
        &[
            "run",
            "--hot",
            "1h",
            "--trim-grace",
            "0s",
            "--keep",
            "30d",
            "--upload",
            "s3://cold-five/",
            "--upload-on-rotate",
            "--endpoint",
            &ep,
        ],
    );
    out.success();
    assert!(out.stdout().contains("rotated 1 files"), "{out:?}");
    assert!(out.stdout().contains("uploaded 1 files"), "{out:?}");
    assert_eq!(archive_files(&dir), vec!["cfn-metrics-20261020-2.jsonl.gz"]);
    // Thirty days later it is pruned without being sent again.
    let mut cmd = dir.cmd("cfn-archive");
    cmd.args([
        "--now",
        "2026-11-25T00:00:00Z",
        "prune",
        "--keep",
        "30d",
        "--upload",
        "s3://cold-five/",
        "--endpoint",
        &ep,
    ]);
    with_aws(&mut cmd, m, &m.secret);
    let out = cmd.run();
    out.success();
    assert_eq!(
        out.stdout().trim(),
        "cfn-archive: pruned 1 files",
        "{out:?}"
    );
    assert_eq!(archive_files(&dir), Vec::<String>::new());
}

#[test]
fn a_plain_file_is_rotated_before_its_upload_and_a_full_disk_keeps_it() {
    let Some(m) = moto() else { return };
    m.bucket("cold-six");
    let dir = TestDir::new();
    dir.write(
        "cfn-metrics-3.jsonl",
        "{\"timestamp\":\"2026-10-01T10:00:00.000Z\",\"metric\":\"m\",\"value\":1}\n",
    );
    dir.cmd("cfn-archive")
        .args(["--now", DAY, "sync"])
        .run()
        .success();
    assert_eq!(archive_files(&dir), vec!["cfn-metrics-20261001-3.jsonl"]);
    let ep = m.endpoint();
    let args = [
        "prune",
        "--keep",
        "30d",
        "--upload",
        "s3://cold-six/",
        "--endpoint",
        &ep,
    ];
    let mut cmd = dir.cmd(FAULTS);
    cmd.args(["--now", DAY])
        .args(args)
        .env("CFN_ARCHIVE_FAIL_WRITE_AFTER", "8");
    with_aws(&mut cmd, m, &m.secret);
    let out = cmd.run();
    out.status(74).stderr_has("disk full");
    assert_eq!(archive_files(&dir), vec!["cfn-metrics-20261001-3.jsonl"]);
    archive(&dir, m, &args).success();
    assert_eq!(archive_files(&dir), Vec::<String>::new());
    let cat = cold_cat(&dir, m, &m.secret, &["s3://cold-six/", "--endpoint", &ep]);
    assert!(cat.success().stdout().contains("2026-10-01T10:00:00.000Z"));
}

#[test]
fn exec_hands_files_to_a_program_without_a_shell() {
    let dir = TestDir::new();
    september(&dir);
    let dest = dir.join("elsewhere");
    std::fs::create_dir(&dest).unwrap();
    // A failing program keeps every file: 75.
    let out = dir
        .cmd("cfn-archive")
        .args([
            "--now", DAY, "prune", "--keep", "30d", "--exec", "false", ";",
        ])
        .run();
    out.status(75).stderr_has("is kept");
    assert_eq!(archive_files(&dir).len(), 3);
    // cp -t DEST FILE: the path comes last, as one argument.
    let out = dir
        .cmd("cfn-archive")
        .args(["--now", DAY, "prune", "--keep", "30d", "--exec", "cp", "-t"])
        .arg(&dest)
        .arg(";")
        .run();
    out.success();
    assert_eq!(archive_files(&dir), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 3);
    let out = dir
        .cmd("cfn-archive")
        .args(["--now", DAY, "prune", "--exec", "/no/such/program", ";"])
        .run();
    out.success(); // nothing due any more, so nothing runs
    let _ = Path::new("/");
}

/// The profile's credentials sign the requests: with them an object is read, with the
/// default profile's (wrong) ones the store refuses (78). Read from a key without `=`, which
/// moto's signature check cannot take.
#[test]
fn a_profile_in_the_shared_credentials_file_is_used() {
    let Some(m) = moto_authed() else { return };
    m.bucket("cold-seven");
    let dir = TestDir::new();
    let records = record_lines(20);
    let gz = dir.write("day.jsonl.gz", gzip(records.as_bytes()));
    m.put_file("cold-seven", "cfn-metrics-20260901-1.jsonl.gz", &gz);
    let creds = dir.write(
        "aws-credentials",
        format!(
            "[default]\naws_access_key_id = AKWRONG\naws_secret_access_key = wrong\n\n[cold]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            m.key, m.secret
        ),
    );
    let config = dir.write("aws-config", "[profile cold]\nregion = us-east-1\n");
    let read = |profile: &str| {
        dir.cmd("cfn-cat")
            .arg("s3://cold-seven/")
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_PROFILE", profile)
            .env("AWS_ENDPOINT_URL", m.endpoint())
            .run()
    };
    let out = read("cold");
    assert_eq!(out.success().stdout(), records);
    assert!(!out.stderr().contains(&m.secret));
    read("default").status(78).stderr_has("HTTP 403");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn cfn_cat_lists_a_prefix_and_skips_days_outside_the_range() {
    let Some(port) = cfn_testkit::s3::open_moto() else {
        return;
    };
    let open = Moto {
        _child: None,
        port,
        key: "open".into(),
        secret: "open".into(),
    };
    open.bucket("cold-open");
    let dir = TestDir::new();
    let records = september(&dir);
    // Something else under the prefix, and an object outside it: neither is read.
    let ep = open.endpoint();
    prune_to(&dir, &open, "s3://cold-open/fleet/a/", &ep, &[]).success();
    let cat = cold_cat(
        &dir,
        &open,
        "open",
        &["s3://cold-open/fleet/a/", "--endpoint", &ep],
    );
    assert_eq!(cat.success().stdout(), records);
    let out = cold_cat(
        &dir,
        &open,
        "open",
        &[
            "s3://cold-open/fleet/a",
            "--since",
            "2026-09-03T00:00:00Z",
            "--endpoint",
            &ep,
        ],
    );
    out.success();
    assert_eq!(out.stdout().lines().count(), 50);
    let cat = cold_cat(
        &dir,
        &open,
        "open",
        &["s3://cold-open/fleet/b/", "--endpoint", &ep],
    );
    assert_eq!(cat.success().stdout(), "");
}

#[test]
fn follow_refuses_cold_storage() {
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-cat")
        .args(["--follow", "s3://cold-anything/x/"])
        .run();
    out.status(2).stderr_has("does not grow");
}

#[test]
fn an_object_that_appears_during_the_upload_is_not_overwritten() {
    let Some(m) = moto() else { return };
    m.bucket("cold-eight");
    let dir = TestDir::new();
    september(&dir);
    // Another writer puts an object under the first file's key (its content's name) just
    // before our PUT arrives.
    let first = dir.join("archive/cfn-metrics-20260901-1.jsonl.gz");
    let first_key = format!(
        "host={HOST}/dt=2026-09-01/cfn-metrics-20260901-1.{}.jsonl.gz",
        &md5sum(&first)[..12]
    );
    let (port, key, secret) = (m.port, m.key.clone(), m.secret.clone());
    let racer_key = first_key.clone();
    let raced = Arc::new(AtomicUsize::new(0));
    let done = raced.clone();
    let (proxy_port, _) = proxy(m.port, 0, move |request| {
        if request.starts_with(b"PUT ") && done.fetch_add(1, Ordering::SeqCst) == 0 {
            let out = std::process::Command::new("python3")
                .arg(setup_script())
                .args([
                    &port.to_string(),
                    &key,
                    &secret,
                    "cold-eight",
                    &racer_key,
                    "put",
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    });
    let ep = format!("http://127.0.0.1:{proxy_port}");
    let out = prune_to(&dir, m, "s3://cold-eight/", &ep, &[]);
    out.status(65)
        .stderr_has("appeared while it was being uploaded");
    assert_eq!(
        raced.load(Ordering::SeqCst),
        3,
        "a PUT per day file (the first one raced)"
    );
    // That file is kept; the other days, whose keys were free, still go.
    assert_eq!(
        archive_files(&dir),
        ["cfn-metrics-20260901-1.jsonl.gz"],
        "only the file whose object is in the way is kept"
    );
    assert_eq!(
        m.object("cold-eight", &first_key).1,
        8,
        "the other writer's object stays"
    );
}

// ---- Lying and broken stores: a scripted S3 on loopback that answers as the test says
// (cut replies, endless listings, foreign keys, stalls, echoed secrets). No moto needed.

/// A request as the scripted store saw it: its request line and headers.
struct SeenRequest {
    line: String,
    head: String,
}

/// Starts a store whose `answer` writes the whole reply for each request (it may stall,
/// cut the reply short or close); returns its endpoint and the requests seen.
fn scripted_store(
    answer: impl Fn(&SeenRequest, &mut TcpStream) + Send + Sync + 'static,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let (answer, log) = (answer.clone(), log.clone());
            std::thread::spawn(move || {
                // One request per connection (the replies say Connection: close).
                let Some(req) = read_request(&mut s) else {
                    return;
                };
                let text = String::from_utf8_lossy(&req).to_string();
                let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line.clone());
                answer(&SeenRequest { line, head }, &mut s);
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), seen)
}

fn reply_with(s: &mut TcpStream, status: &str, body: &[u8]) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
}

fn listing(keys: &[&str], next: Option<&str>) -> String {
    let mut xml = String::from("<ListBucketResult>");
    for k in keys {
        xml.push_str(&format!(
            "<Contents><Key>{k}</Key><Size>10</Size></Contents>"
        ));
    }
    match next {
        Some(t) => xml.push_str(&format!(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>{t}</NextContinuationToken>"
        )),
        None => xml.push_str("<IsTruncated>false</IsTruncated>"),
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// `cfn-cat ARGS` against a scripted store, with made-up credentials.
fn cat_from(endpoint: &str, args: &[&str], token: Option<&str>) -> Outcome {
    let dir = TestDir::new();
    let mut cmd = dir.cmd("cfn-cat");
    cmd.args(["--endpoint", endpoint])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDSCRIPTED")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSCRIPTEDKEY",
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("CFN_HTTP_BACKOFF_MS", "20");
    if let Some(t) = token {
        cmd.env("AWS_SESSION_TOKEN", t);
    }
    cmd.run()
}

fn record_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2026-11-01T10:00:00.000Z\",\"agent\":\"a1\",\"metric\":\"m\",\"value\":{i}}}\n"
            )
        })
        .collect()
}

#[test]
fn a_listing_cut_short_or_too_big_is_an_error_never_a_partial_read() {
    let (ep, _) = scripted_store(|req, s| {
        if req.line.contains("continuation-token=t1") {
            // Page two: promised 5,000 bytes, sends 100, resets.
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}",
                "<".repeat(100)
            );
        } else if req.line.contains("list-type=2") {
            let page = listing(&["p/cfn-metrics-20261101-1.jsonl"], Some("t1"));
            reply_with(s, "200 OK", page.as_bytes());
        } else {
            reply_with(s, "200 OK", record_lines(3).as_bytes());
        }
    });
    let out = cat_from(&ep, &["s3://cold/p/", "--retries", "0"], None);
    out.status(75)
        .stderr_has("listing s3://cold/p/")
        .stderr_has("could not be read whole");
    assert_eq!(out.stdout(), "", "nothing from a listing read in part");

    let (ep, _) = scripted_store(|_, s| {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            17 << 20
        );
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..17 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    cat_from(&ep, &["s3://cold/p/", "--retries", "0"], None)
        .status(74)
        .stderr_has("listing s3://cold/p/");
}

#[test]
fn a_store_repeating_its_continuation_token_is_refused_not_followed_for_ever() {
    let (ep, seen) = scripted_store(|_, s| {
        let page = listing(&["p/cfn-metrics-20261101-1.jsonl"], Some("again"));
        reply_with(s, "200 OK", page.as_bytes());
    });
    cat_from(&ep, &["s3://cold/p/"], None)
        .status(65)
        .stderr_has("same continuation token twice");
    assert!(
        seen.lock().unwrap().len() <= 3,
        "{:?}",
        seen.lock().unwrap()
    );
}

#[test]
fn keys_outside_the_prefix_are_not_read_and_dot_segments_are_sent_encoded() {
    let (ep, seen) = scripted_store(|req, s| {
        if req.line.contains("list-type=2") {
            let page = listing(
                &[
                    "p/cfn-metrics-20261101-1.jsonl",
                    "other/cfn-metrics-20261101-2.jsonl",
                    "p/../other/cfn-metrics-20261101-3.jsonl",
                ],
                None,
            );
            reply_with(s, "200 OK", page.as_bytes());
        } else {
            reply_with(s, "200 OK", record_lines(2).as_bytes());
        }
    });
    let out = cat_from(&ep, &["s3://cold/p/"], None);
    out.success()
        .stderr_has("left out 1 listed keys outside the prefix");
    assert_eq!(out.stdout().lines().count(), 4);
    let gets: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !l.contains("list-type"))
        .cloned()
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets.iter().all(|l| !l.contains("/cold/other/")), "{gets:?}");
    assert!(
        gets.iter()
            .any(|l| l.contains("/cold/p/%2E%2E/other/cfn-metrics-20261101-3.jsonl")),
        "{gets:?}"
    );
}

#[test]
fn a_slow_reader_is_never_cut_off_but_a_silent_store_is() {
    let body = record_lines(40_000);
    let (ep, _) = scripted_store(move |req, s| {
        if req.line.contains("list-type=2") {
            reply_with(
                s,
                "200 OK",
                listing(&["p/cfn-metrics-20261101-1.jsonl"], None).as_bytes(),
            );
        } else {
            reply_with(s, "200 OK", body.as_bytes());
        }
    });
    // The consumer reads nothing for 3 s, three times the timeout: the store is not silent,
    // the reader is slow.
    let dir = TestDir::new();
    let mut cmd = dir.cmd("cfn-cat");
    cmd.args(["--endpoint", &ep, "s3://cold/p/", "--http-timeout", "1s"])
        .env("AWS_ACCESS_KEY_ID", "AKIDSCRIPTED")
        .env("AWS_SECRET_ACCESS_KEY", "secret-scripted")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent");
    let mut child = cmd
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(out.lines().count(), 40_000);

    // A store that sends half an object and then nothing.
    let (ep, _) = scripted_store(|req, s| {
        if req.line.contains("list-type=2") {
            reply_with(
                s,
                "200 OK",
                listing(&["p/cfn-metrics-20261101-1.jsonl"], None).as_bytes(),
            );
        } else {
            let body = record_lines(100);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                &body[..body.len() / 2]
            );
            std::thread::sleep(Duration::from_secs(20));
        }
    });
    let started = Instant::now();
    let out = cat_from(&ep, &["s3://cold/p/", "--http-timeout", "1s"], None);
    out.status(75)
        .stderr_has("s3://cold/p/cfn-metrics-20261101-1.jsonl: cut short");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_store_echoing_the_session_token_and_secret_never_gets_them_printed() {
    let token = "FwoGZXIvYXdzEJr//////////wEaDNotARealSessionToken+42==";
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSCRIPTEDKEY";
    let (ep, _) = scripted_store(move |req, s| {
        // Echo every header back, the way a misconfigured proxy's error page does, cut at
        // odd places too.
        let echoed = req.head.replace('\r', "");
        let body = format!(
            "<Error><Code>SlowDown</Code><Message>{echoed} / {} / {} / {secret}</Message></Error>",
            &token[5..30],
            &token[20..],
        );
        reply_with(s, "503 Slow Down", body.as_bytes());
    });
    let out = cat_from(&ep, &["s3://cold/p/", "--retries", "1"], Some(token));
    out.status(75);
    let said = format!("{}{}", out.stdout(), out.stderr());
    for secret in [token, secret] {
        for w in secret.as_bytes().windows(4) {
            assert!(
                !said.as_bytes().windows(4).any(|x| x == w),
                "{:?} of a secret printed: {said}",
                String::from_utf8_lossy(w)
            );
        }
    }
    assert!(said.contains("SlowDown"), "{said}");
}

#[test]
fn exec_gets_a_private_copy_and_never_a_planted_link() {
    let dir = TestDir::new();
    september(&dir);
    let victim = dir.write("victim", "private: not for the cold store\n");
    std::os::unix::fs::symlink(&victim, dir.join("archive/cfn-metrics-20260801-5.jsonl.gz"))
        .unwrap();
    let dest = dir.join("elsewhere");
    std::fs::create_dir(&dest).unwrap();
    let log = dir.join("exec.log");
    // The program notes each path it is given, then copies the file.
    let script = format!(
        "printf '%s\\n' \"$1\" >> '{}' && cp \"$1\" '{}'",
        log.display(),
        dest.display()
    );
    let out = dir
        .cmd("cfn-archive")
        .args(["--now", DAY, "prune", "--keep", "30d", "--exec", "sh", "-c"])
        .arg(&script)
        .args(["sh", ";"])
        .run();
    out.success()
        .stderr_has("skipping")
        .stderr_has("cfn-metrics-20260801-5.jsonl.gz");
    let given = std::fs::read_to_string(&log).unwrap();
    assert_eq!(given.lines().count(), 3, "{given}");
    for line in given.lines() {
        assert!(
            line.contains("/.cfn-metrics-exec."),
            "not a private copy: {line}"
        );
        assert!(line.ends_with(".jsonl.gz"), "{line}");
    }
    let mut copied: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    copied.sort();
    assert_eq!(
        copied,
        [
            "cfn-metrics-20260901-1.jsonl.gz",
            "cfn-metrics-20260902-1.jsonl.gz",
            "cfn-metrics-20260903-1.jsonl.gz"
        ]
    );
    for name in &copied {
        assert!(
            !std::fs::read(dest.join(name))
                .unwrap()
                .starts_with(b"private")
        );
    }
    // The link is still there, and no private directory is left behind.
    let left: Vec<String> = std::fs::read_dir(dir.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cfn-metrics-exec.") || n.starts_with("cfn-metrics-"))
        .collect();
    assert_eq!(left, ["cfn-metrics-20260801-5.jsonl.gz"]);
}

#[test]
fn a_day_in_both_forms_reaches_cold_storage_whole_under_two_names() {
    let Some(m) = moto() else { return };
    m.bucket("cold-nine");
    let dir = TestDir::new();
    let text = september(&dir);
    // Late records for a rotated day: a plain file beside its .gz (rotate not run again).
    let late: String = (0..5)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2026-09-01T23:00:0{i}.000Z\",\"agent\":\"a1\",\"metric\":\"m\",\"value\":{}}}\n",
                1000 + i
            )
        })
        .collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("cfn-metrics-1.jsonl"))
        .and_then(|mut f| f.write_all(late.as_bytes()))
        .unwrap();
    archive(&dir, m, &["sync"]).success();
    assert!(dir.join("archive/cfn-metrics-20260901-1.jsonl").exists());
    assert!(dir.join("archive/cfn-metrics-20260901-1.jsonl.gz").exists());
    let ep = m.endpoint();
    prune_to(&dir, m, "s3://cold-nine/", &ep, &[]).success();
    assert_eq!(
        archive_files(&dir),
        Vec::<String>::new(),
        "all verified, all gone"
    );
    let back = cold_cat(&dir, m, &m.secret, &["--endpoint", &ep, "s3://cold-nine/"]);
    let mut got: Vec<String> = back.success().stdout().lines().map(String::from).collect();
    let mut want: Vec<String> = text.lines().chain(late.lines()).map(String::from).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every record once");
    // And read back in time order, a day at a time.
    let sorted = cold_cat(
        &dir,
        m,
        &m.secret,
        &["--endpoint", &ep, "--sorted", "s3://cold-nine/"],
    );
    assert_eq!(sorted.success().stdout().lines().count(), 155);
}

#[test]
fn two_hosts_pruning_to_one_prefix_both_upload_and_the_fleet_read_splits_by_host() {
    let Some(m) = moto() else { return };
    m.bucket("cold-ten");
    let ep = m.endpoint();
    let mut own = BTreeMap::new();
    for (host, scale) in [("web-1", 1u32), ("web-2", 7)] {
        let dir = TestDir::new();
        // The same file names on both hosts, different values.
        let text: String = (0..60)
            .map(|i| {
                format!(
                    "{{\"timestamp\":\"2026-09-0{}T10:00:{:02}.000Z\",\"agent\":\"agent-1\",\"metric\":\"m\",\"value\":{}}}\n",
                    1 + i % 3,
                    i,
                    i * scale
                )
            })
            .collect();
        dir.write("cfn-metrics-1.jsonl", &text);
        dir.cmd("cfn-archive")
            .args([
                "--now",
                DAY,
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
        let mine = dir
            .cmd("cfn-cat")
            .arg(dir.join("archive"))
            .run()
            .success()
            .stdout();
        own.insert(host, dir.cmd("cfn-agg").stdin(mine).run().success().jsonl());
        let upload = [
            "prune",
            "--keep",
            "30d",
            "--upload",
            "s3://cold-ten/fleet/",
            "--endpoint",
            &ep,
        ];
        archive_as(&dir, m, host, &upload)
            .success()
            .stderr_has(&format!("fleet/host={host}/dt=2026-09-0"));
        assert_eq!(
            archive_files(&dir),
            Vec::<String>::new(),
            "{host}: verified, deleted"
        );
    }
    let dir = TestDir::new();
    // Read from the bucket's root: moto with authentication on rejects the signature of a
    // listing whose prefix holds a slash (see cfn_cat_lists_a_prefix_…). The host is still
    // the segment above each file name.
    let fleet = cold_cat(
        &dir,
        m,
        &m.secret,
        &["--endpoint", &ep, "--host-tag", "s3://cold-ten/"],
    );
    let by_host = dir
        .cmd("cfn-agg")
        .args(["--by", "tag:host"])
        .stdin(fleet.success().stdout())
        .run()
        .success()
        .jsonl();
    assert_eq!(by_host.len(), 2);
    for a in &by_host {
        let host = a["tags"]["host"].as_str().unwrap();
        let mine = &own[host][0];
        for k in [
            "count", "sum", "min", "max", "avg", "p50", "p95", "p99", "first", "last",
        ] {
            assert_eq!(a[k], mine[k], "{host} {k}");
        }
    }
}

/// A proxy that forwards everything, but for the first PUT drops the store's reply after
/// the store has taken the object.
fn reply_dropping_proxy(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dropped = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let dropped = dropped.clone();
            std::thread::spawn(move || {
                let Some(request) = read_request(&mut client) else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let _ = up.write_all(&request);
                let mut reply = Vec::new();
                let _ = up.read_to_end(&mut reply);
                if request.starts_with(b"PUT ") && dropped.fetch_add(1, Ordering::SeqCst) == 0 {
                    return;
                }
                let _ = client.write_all(&reply);
            });
        }
    });
    port
}

#[test]
fn an_upload_whose_reply_was_lost_is_kept_and_the_late_member_goes_up_beside_it() {
    let Some(m) = moto() else { return };
    m.bucket("cold-lost");
    let dir = TestDir::new();
    let day = |from, to| day_records("2026-10-20", None, from, to);
    dir.write("cfn-metrics-2.jsonl", day(0, 10));
    let ep = format!("http://127.0.0.1:{}", reply_dropping_proxy(m.port));
    let run = |dir: &TestDir| {
        archive(
            dir,
            m,
            &[
                "run",
                "--hot",
                "1h",
                "--trim-grace",
                "0s",
                "--keep",
                "3650d",
                "--upload",
                "s3://cold-lost/",
                "--upload-on-rotate",
                "--endpoint",
                &ep,
                "--retries",
                "0",
            ],
        )
    };
    // The store takes the day's .gz but its reply is lost: the run cannot tell it is there.
    let first = run(&dir);
    assert_ne!(first.code(), 0, "{first:?}");
    // A replayed record for that day arrives: rotate appends a member to the .gz.
    let hot = dir.read("cfn-metrics-2.jsonl");
    dir.write("cfn-metrics-2.jsonl", format!("{hot}{}", day(10, 12)));
    let second = run(&dir);
    second.success();
    // The first object stays; the late member is an object of its own beside it: each
    // record once.
    let out = cold_cat(
        &dir,
        m,
        &m.secret,
        &["--endpoint", &m.endpoint(), "s3://cold-lost/"],
    );
    let values = sorted_values(&out);
    assert_eq!(values, (0..12).collect::<Vec<u64>>());
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("archive/.cfn-archive-state.json")).unwrap();
    assert!(state.get("uploading").is_none(), "{state}");
    let copies = state["cold"]["cfn-metrics-20261020-2.jsonl.gz"]
        .as_array()
        .unwrap_or_else(|| panic!("{state}"));
    assert_eq!(copies.len(), 2, "{state}");
    assert_eq!(copies[1]["offset"], copies[0]["size"], "{state}");
}

/// Killed at each named point of a single PUT (the intent recorded, the object taken, the
/// copy recorded), then a replayed record for the day: the next run leaves one object with
/// every record once, no intent and no temp file behind.
#[test]
fn an_upload_killed_at_each_point_of_a_put_ends_with_one_whole_copy() {
    let Some(m) = moto() else { return };
    for point in ["before_put", "after_put", "after_cold_record"] {
        let bucket = format!("cold-{}", point.replace('_', "-"));
        m.bucket(&bucket);
        let dir = TestDir::new();
        let day = |from, to| day_records("2026-10-20", None, from, to);
        dir.write("cfn-metrics-2.jsonl", day(0, 10));
        let url = format!("s3://{bucket}/");
        let ep = m.endpoint();
        let args = [
            "run",
            "--hot",
            "1h",
            "--trim-grace",
            "0s",
            "--keep",
            "3650d",
            "--upload",
            &url,
            "--upload-on-rotate",
            "--endpoint",
            &ep,
        ];
        let mut cmd = dir.cmd(FAULTS);
        cmd.args(["--now", DAY]).args(args);
        with_aws(&mut cmd, m, &m.secret);
        cmd.env("CFN_ARCHIVE_CRASH_AT", point);
        let killed = cmd.run();
        assert_ne!(killed.code(), 0, "{point}: {killed:?}");
        let hot = dir.read("cfn-metrics-2.jsonl");
        dir.write("cfn-metrics-2.jsonl", format!("{hot}{}", day(10, 12)));
        archive(&dir, m, &args).success();
        let out = cold_cat(&dir, m, &m.secret, &["--endpoint", &ep, &url]);
        let values = sorted_values(&out);
        assert_eq!(values, (0..12).collect::<Vec<u64>>(), "{point}");
        let state: serde_json::Value =
            serde_json::from_str(&dir.read("archive/.cfn-archive-state.json")).unwrap();
        assert!(state.get("uploading").is_none(), "{point}: {state}");
        assert_eq!(
            archive_files(&dir),
            vec!["cfn-metrics-20261020-2.jsonl.gz".to_string()],
            "{point}"
        );
    }
}

/// What happens between a day's upload and prune and the arrival of late records for it.
#[derive(Clone, Copy, Debug)]
enum BeforeTheLateRecords {
    Nothing,
    /// Killed after deleting the day file, before saving the state: the state still
    /// records the first upload under that file's name.
    KilledAfterDelete,
    /// The state lost and rebuilt (`sync --rebuild-state`).
    StateLost,
    /// The first upload's reply dropped after the store took the object.
    ReplyDropped,
}

/// The defect of issue 37: a day uploaded and pruned, then late records for it (replays),
/// made a day file of the same name whose upload replaced the first object (its records
/// lost) or, where the state had forgotten it, was refused for ever and kept on disk. Now
/// the late file goes up as an object of its own: every record in the bucket once, no
/// archive file left.
#[test]
fn late_records_for_a_day_uploaded_and_pruned_go_up_beside_it_never_over_it() {
    let Some(m) = moto() else { return };
    use BeforeTheLateRecords::*;
    for (i, case) in [Nothing, KilledAfterDelete, StateLost, ReplyDropped]
        .into_iter()
        .enumerate()
    {
        let bucket = format!("cold-late-{i}");
        m.bucket(&bucket);
        let dir = TestDir::new();
        let day = |from, to| day_records("2026-09-20", Some("agent-11"), from, to);
        dir.write("cfn-metrics-11.jsonl", day(0, 40));
        let url = format!("s3://{bucket}/cold/");
        let ep = match case {
            ReplyDropped => format!("http://127.0.0.1:{}", reply_dropping_proxy(m.port)),
            _ => m.endpoint(),
        };
        let args = [
            "run",
            "--hot",
            "1h",
            "--trim-grace",
            "0s",
            "--keep",
            "30d",
            "--upload",
            &url,
            "--endpoint",
            &ep,
            "--retries",
            "0",
        ];
        let mut first = dir.cmd(FAULTS);
        first.args(["--now", DAY]).args(args);
        with_aws(&mut first, m, &m.secret);
        if let KilledAfterDelete = case {
            first.env("CFN_ARCHIVE_CRASH_AT", "after_prune_delete");
        }
        let first = first.run();
        match case {
            Nothing | StateLost => {
                first.success();
            }
            KilledAfterDelete | ReplyDropped => assert_ne!(first.code(), 0, "{case:?}: {first:?}"),
        }
        if let StateLost = case {
            std::fs::remove_file(dir.join("archive/.cfn-archive-state.json")).unwrap();
            dir.cmd("cfn-archive")
                .args(["--now", DAY, "sync", "--rebuild-state"])
                .run()
                .success();
        }
        // Late records for that day: a replay, stamped weeks back.
        let hot = dir.read("cfn-metrics-11.jsonl");
        dir.write("cfn-metrics-11.jsonl", format!("{hot}{}", day(40, 45)));
        archive(&dir, m, &args[..args.len() - 2]).success();
        assert_eq!(
            archive_files(&dir),
            Vec::<String>::new(),
            "{case:?}: nothing kept"
        );
        let out = cold_cat(&dir, m, &m.secret, &["--endpoint", &m.endpoint(), &url]);
        let values = sorted_values(&out);
        assert_eq!(
            values,
            (0..45).collect::<Vec<u64>>(),
            "{case:?}: each record once"
        );
        // Two objects of the day, side by side in its directory.
        let listed = cold_cat(
            &dir,
            m,
            &m.secret,
            &["--endpoint", &m.endpoint(), "--host-tag", &url],
        );
        assert!(listed.success().stdout().contains(r#""host":"test-host""#));
    }
}

/// Objects of the earlier layouts stay valid: `cfn-cat` reads the first version's flat
/// `PREFIX/NAME` and the previous `PREFIX/HOST/NAME` beside the Hive layout (the host from
/// each key), and a day the previous version uploaded whole is never uploaded again after
/// the switch to the Hive layout, even with the state lost: it is found by its content.
#[test]
fn earlier_layouts_are_read_and_a_day_is_never_uploaded_twice_across_the_change() {
    let Some(m) = moto() else { return };
    m.bucket("cold-layouts");
    let dir = TestDir::new();
    let text = september(&dir);
    // The previous version's upload of 1 September: PREFIX/HOST/NAME, the file's own bytes;
    // and an object of the first version's flat layout from another host's day.
    let name = "cfn-metrics-20260901-1.jsonl.gz";
    m.put_file(
        "cold-layouts",
        &format!("fleet/{HOST}/{name}"),
        &dir.join(&format!("archive/{name}")),
    );
    let flat_records =
        "{\"timestamp\":\"2026-08-01T10:00:00.000Z\",\"metric\":\"m\",\"value\":7}\n";
    let flat = dir.write("flat.jsonl.gz", gzip(flat_records.as_bytes()));
    m.put_file(
        "cold-layouts",
        "fleet/cfn-metrics-20260801-0.jsonl.gz",
        &flat,
    );
    // The state lost: nothing says the first day is in the store.
    std::fs::remove_file(dir.join("archive/.cfn-archive-state.json")).unwrap();
    archive(&dir, m, &["sync", "--rebuild-state"]).success();
    let out = prune_to(&dir, m, "s3://cold-layouts/fleet/", &m.endpoint(), &[]);
    out.success();
    assert!(
        out.stdout().contains("uploaded 2 files"),
        "the other two days only: {out:?}"
    );
    assert_eq!(archive_files(&dir), Vec::<String>::new());
    // Every record once, each layout's host as its key says.
    let back = cold_cat(
        &dir,
        m,
        &m.secret,
        &[
            "--endpoint",
            &m.endpoint(),
            "--host-tag",
            "s3://cold-layouts/fleet/",
        ],
    );
    let mut got: Vec<String> = back.success().stdout().lines().map(String::from).collect();
    got.sort();
    let hosts: std::collections::BTreeSet<String> = back
        .jsonl()
        .iter()
        .map(|r| r["tags"]["host"].as_str().unwrap_or("(none)").to_string())
        .collect();
    assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["(none)", HOST]);
    assert_eq!(
        got.len(),
        text.lines().count() + 1,
        "each record once: {got:?}"
    );
    let plain = cold_cat(
        &dir,
        m,
        &m.secret,
        &["--endpoint", &m.endpoint(), "s3://cold-layouts/fleet/"],
    );
    let mut want: Vec<&str> = text.lines().chain(flat_records.lines()).collect();
    want.sort();
    let mut plain_lines: Vec<String> = plain.success().stdout().lines().map(String::from).collect();
    plain_lines.sort();
    assert_eq!(plain_lines, want);
}

/// An object uploaded in parts of one size, then the state lost, then a run with another
/// --part-size: the object's multipart ETag is of the old part size; it is still known as
/// the file's copy (by its part count's possible sizes), recorded, and the file pruned,
/// never uploaded twice nor refused as "in the way" for ever.
#[test]
fn an_object_sent_in_parts_of_another_size_is_still_recognised_after_the_state_is_lost() {
    let Some(m) = moto() else { return };
    m.bucket("cold-parts");
    let dir = TestDir::new();
    let (name, md5) = big_old_file(&dir, "20260905", 13 << 20);
    let ep = m.endpoint();
    let prune = |part: &str, crash: Option<&str>| {
        let mut cmd = dir.cmd(FAULTS);
        cmd.args([
            "--now",
            DAY,
            "prune",
            "--keep",
            "30d",
            "--upload",
            "s3://cold-parts/",
        ])
        .args([
            "--multipart-threshold",
            "6MiB",
            "--part-size",
            part,
            "--endpoint",
            &ep,
        ]);
        with_aws(&mut cmd, m, &m.secret);
        if let Some(point) = crash {
            cmd.env("CFN_ARCHIVE_CRASH_AT", point);
        }
        cmd.run()
    };
    // Uploaded in 5 MiB parts and recorded; killed before the file was deleted.
    assert_ne!(prune("5MiB", Some("after_cold_record")).code(), 0);
    assert_eq!(archive_files(&dir), vec![name.clone()]);
    std::fs::remove_file(dir.join("archive/.cfn-archive-state.json")).unwrap();
    archive(&dir, m, &["sync", "--rebuild-state"]).success();
    let out = prune("6MiB", None);
    out.success();
    assert!(
        !out.stdout().contains("uploaded"),
        "nothing sent again: {out:?}"
    );
    assert_eq!(archive_files(&dir), Vec::<String>::new());
    assert_eq!(
        m.object("cold-parts", &content_key("", "20260905", &name, &md5)),
        (md5, 13 << 20)
    );
}
