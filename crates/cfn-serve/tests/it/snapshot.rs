//! Snapshots of the index: a restart from one answers byte for byte as a fresh build does,
//! after a clean stop or a SIGKILL, after appends, trims, rotations and a replaced shard
//! between stop and start; a damaged or foreign snapshot is named, counted and ignored.

use cfn_core::time::format_ms;
use cfn_testkit::TestDir;
use cfn_testkit::serve::Server;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{get, now_ms, start};

fn record(ts: i64, agent: &str, metric: &str, value: f64, phase: &str) -> String {
    format!(
        "{{\"timestamp\":\"{}\",\"agent\":\"{agent}\",\"metric\":\"{metric}\",\"value\":{value},\"unit\":\"ms\",\"tags\":{{\"phase\":\"{phase}\"}}}}\n",
        format_ms(ts)
    )
}

/// Records from `from` on, one every `step` ms, `n` of them, for shard `shard`.
fn records(shard: usize, from: i64, step: i64, n: usize, salt: usize) -> String {
    (0..n)
        .map(|i| {
            let k = i + salt;
            record(
                from + i as i64 * step,
                &format!("agent-{shard}-{}", k % 3),
                ["latency", "tokens", "queue"][k % 3],
                ((k * 7919) % 1000) as f64 / 10.0,
                ["plan", "build", "test"][k % 3],
            )
        })
        .collect()
}

/// Four shards: records from 30 hours ago (yesterday's day file once archived) to a minute
/// ago.
fn seed(dir: &TestDir, now: i64) {
    for n in 0..4 {
        let old = records(n, now - 30 * 3_600_000, 1_000, 50, n);
        let recent = records(n, now - 3 * 3_600_000, 2_000 + n as i64, 4_000, n);
        dir.write(&format!("cfn-metrics-{n}.jsonl"), old + &recent);
    }
}

fn append(dir: &TestDir, shard: usize, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(&format!("cfn-metrics-{shard}.jsonl")))
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

struct Setup {
    dir: TestDir,
    archive: PathBuf,
    snapshots: PathBuf,
    /// The moment every query asks about.
    now: i64,
}

impl Setup {
    fn new() -> Self {
        let dir = TestDir::new();
        let archive = dir.join("archive");
        std::fs::create_dir(&archive).unwrap();
        let now = now_ms() - 60_000;
        seed(&dir, now);
        Self {
            snapshots: dir.join("state/snapshots"),
            archive,
            dir,
            now,
        }
    }

    fn args(&self, with_snapshots: bool) -> Vec<String> {
        let mut a: Vec<String> = [
            "--archive-dir",
            self.archive.to_str().unwrap(),
            "--index-span",
            "48h",
            "--index-tags",
            "phase",
        ]
        .map(String::from)
        .to_vec();
        if with_snapshots {
            a.extend([
                "--snapshot-dir".into(),
                self.snapshots.display().to_string(),
            ]);
        }
        a
    }

    fn serve(&self, with_snapshots: bool) -> Server {
        let args = self.args(with_snapshots);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        start(&self.dir, &args)
    }

    /// The answers compared: the dashboard over every range, filtered by agent and by tag,
    /// summaries by agent, a series.
    fn answers(&self, server: &Server) -> Vec<(String, String)> {
        let at = format_ms(self.now);
        [
            "/api/dashboard?range=24h",
            "/api/dashboard?range=48h",
            "/api/dashboard?range=1h",
            "/api/dashboard?range=24h&agent=agent-1-*",
            "/api/dashboard?range=24h&tag=phase=build",
            "/api/summary?window=24h&by=agent",
            "/api/series?metric=latency&range=4h&bucket=15m",
        ]
        .iter()
        .map(|p| {
            let path = format!("{p}&now={at}");
            let (status, body) = get(server.port, &path);
            assert_eq!(status, 200, "{path}: {body}");
            (path, body)
        })
        .collect()
    }

    fn sync_trim(&self, hot: &str) {
        self.sync_trim_with_grace(hot, "0s");
    }

    /// sync, trim with `--trim-grace GRACE`, rotate.
    fn sync_trim_with_grace(&self, hot: &str, grace: &str) {
        let arch = ["--archive-dir", self.archive.to_str().unwrap()];
        let trim = vec!["trim", "--hot", hot, "--trim-grace", grace];
        for sub in [vec!["sync"], trim, vec!["rotate"]] {
            self.dir
                .cmd("cfn-archive")
                .args(arch)
                .args(sub)
                .run()
                .success();
        }
    }
}

/// SIGTERM, and the exit status.
fn stop(mut server: Server) -> std::process::ExitStatus {
    let pid = server.child.id() as i32;
    assert_eq!(send_signal(pid, "TERM"), 0);
    for _ in 0..200 {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "cfn-serve did not stop within 10 s of SIGTERM: {}",
        server.said()
    );
}

fn send_signal(pid: i32, sig: &str) -> i32 {
    std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_same(restored: &[(String, String)], fresh: &[(String, String)], when: &str) {
    for ((path, a), (_, b)) in restored.iter().zip(fresh) {
        assert!(
            a == b,
            "{when}: {path} differs from a fresh build's answer:\n restored {a:.600}\n fresh    {b:.600}"
        );
    }
}

/// Starts from the snapshot (it must be used), and checks its answers are a fresh build's;
/// returns the restored server.
fn restored_as_fresh(s: &Setup, when: &str) -> Server {
    let restored = s.serve(true);
    assert!(
        restored.said().contains("restored the index from"),
        "{when}: {}",
        restored.said()
    );
    let answers = s.answers(&restored);
    let fresh = s.serve(false);
    assert_same(&answers, &s.answers(&fresh), when);
    restored
}

fn metric_line(server: &Server, name: &str) -> String {
    let (_, body) = get(server.port, "/metrics");
    body.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .to_string()
}

#[test]
fn a_restart_from_a_snapshot_answers_as_a_fresh_build_through_appends_trims_and_kills() {
    let s = Setup::new();
    // First start: no snapshot yet, so a build; a clean stop writes one.
    let first = s.serve(true);
    let built = s.answers(&first);
    assert!(!first.said().contains("restored"), "{}", first.said());
    assert!(stop(first).success(), "SIGTERM: exit 0");
    let files = snapshot_files(&s.snapshots);
    assert_eq!(files.len(), 1, "{files:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the snapshot is the service's alone");

    // Unchanged: the restart is the build's answer.
    let second = s.serve(true);
    assert!(
        second.said().contains("restored the index from"),
        "{}",
        second.said()
    );
    assert_eq!(
        metric_line(&second, "cfn_serve_snapshot_restored"),
        "cfn_serve_snapshot_restored 1"
    );
    assert_same(&s.answers(&second), &built, "unchanged");

    // Appended while it runs, then killed: the next start reads the appends after the
    // snapshot of the clean stop.
    append(&s.dir, 1, &records(1, s.now - 1_800_000, 3_000, 300, 11));
    std::thread::sleep(Duration::from_millis(1_500));
    drop(second); // SIGKILL
    append(&s.dir, 2, &records(2, s.now - 900_000, 1_000, 200, 12));
    // Between stop and start: archived, trimmed to the last hour, yesterday gzipped.
    s.sync_trim("1h");
    assert!(
        std::fs::read_dir(&s.archive).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".jsonl.gz")),
        "yesterday's day file was rotated"
    );
    let third = restored_as_fresh(&s, "after a SIGKILL, appends, a trim and a rotation");

    // A clean stop after all that, more appends and another trim, then a start.
    assert!(stop(third).success());
    append(&s.dir, 0, &records(0, s.now - 600_000, 500, 400, 13));
    s.sync_trim("30m");
    let fourth = restored_as_fresh(&s, "after a clean stop, appends and a trim");
    // Records the snapshot counts that are never archived...
    append(&s.dir, 3, &records(3, s.now - 2_400_000, 1_000, 60, 15));
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(stop(fourth).success());
    assert!(snapshot_files(&s.snapshots).len() <= 2, "at most two kept");

    // ...then the shard replaced by a file with none of them: the snapshot cannot be caught
    // up exactly (it counted records no file holds now), so the start builds, and says why.
    let tmp = s
        .dir
        .write("replacement", records(3, s.now - 1_200_000, 1_000, 100, 14));
    std::fs::rename(&tmp, s.dir.join("cfn-metrics-3.jsonl")).unwrap();
    let fifth = s.serve(true);
    assert!(
        fifth.said().contains("not using snapshot") && !fifth.said().contains("restored the index"),
        "{}",
        fifth.said()
    );
    assert_eq!(
        metric_line(
            &fifth,
            "cfn_serve_snapshots_refused_total{reason=\"stale\"}"
        ),
        "cfn_serve_snapshots_refused_total{reason=\"stale\"} 1"
    );
    let rebuilt = s.answers(&fifth);
    let fresh = s.serve(false);
    assert_same(&rebuilt, &s.answers(&fresh), "after a replaced shard");
}

#[test]
fn a_damaged_or_foreign_snapshot_is_named_counted_and_a_build_gives_the_same_answers() {
    let s = Setup::new();
    let first = s.serve(true);
    let built = s.answers(&first);
    assert!(stop(first).success());
    let file = snapshot_files(&s.snapshots).pop().unwrap();
    let good = std::fs::read(&file).unwrap();
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let at = good
        .windows(version.len())
        .position(|w| w == version)
        .expect("the version in the header");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("corrupt", good[..good.len() * 3 / 4].to_vec()),
        ("corrupt", {
            let mut b = good.clone();
            let i = b.len() / 2;
            b[i] ^= 0x04;
            b
        }),
        ("version", {
            let mut b = good.clone();
            b[at] = b'9';
            b
        }),
    ];
    for (reason, bytes) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let server = s.serve(true);
        let said = server.said();
        assert!(
            said.contains(&format!("ignoring snapshot {}", file.display()))
                && !said.contains("restored the index"),
            "{reason}: {said}"
        );
        assert_eq!(
            metric_line(
                &server,
                &format!("cfn_serve_snapshots_refused_total{{reason=\"{reason}\"}}")
            ),
            format!("cfn_serve_snapshots_refused_total{{reason=\"{reason}\"}} 1")
        );
        assert_eq!(
            metric_line(&server, "cfn_serve_snapshot_restored"),
            "cfn_serve_snapshot_restored 0"
        );
        assert_same(&s.answers(&server), &built, reason);
        // Killed, so it writes no snapshot over the damaged one.
        drop(server);
        assert_eq!(snapshot_files(&s.snapshots), std::slice::from_ref(&file));
    }
    // Other settings (another tag indexed) are not this snapshot's: built, counted.
    std::fs::write(&file, &good).unwrap();
    let mut args = s.args(true);
    args[5] = "phase,host".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let other = start(&s.dir, &args);
    assert_eq!(
        metric_line(
            &other,
            "cfn_serve_snapshots_refused_total{reason=\"config\"}"
        ),
        "cfn_serve_snapshots_refused_total{reason=\"config\"} 1"
    );
    // The intact one still loads.
    drop(other);
    let again = s.serve(true);
    assert!(
        again.said().contains("restored the index"),
        "{}",
        again.said()
    );
    assert_same(&s.answers(&again), &built, "intact");
}

#[test]
fn snapshots_are_written_while_serving_and_a_sigkill_restarts_from_the_last() {
    let s = Setup::new();
    let mut args = s.args(true);
    args.extend(["--snapshot-every".into(), "1s".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start(&s.dir, &args);
    let mut written = 0.0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let line = metric_line(&server, "cfn_serve_snapshots_written_total");
        written = line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        if written >= 2.0 {
            break;
        }
    }
    assert!(written >= 2.0, "no snapshot within 10 s: {}", server.said());
    assert!(!snapshot_files(&s.snapshots).is_empty());
    assert!(snapshot_files(&s.snapshots).len() <= 2, "at most two kept");
    // Appended after the last periodic snapshot, then killed: the restart reads them.
    std::thread::sleep(Duration::from_millis(1_500));
    drop(server);
    append(&s.dir, 2, &records(2, s.now - 300_000, 1_000, 120, 21));
    restored_as_fresh(&s, "after a SIGKILL past periodic snapshots");
}

#[test]
fn a_trim_past_what_the_snapshot_read_makes_the_start_build_instead() {
    let s = Setup::new();
    let first = s.serve(true);
    assert!(stop(first).success());
    // Appended after the stop: replays stamped yesterday, then archived and trimmed with
    // everything else older than 30 min. The trim cuts past what the snapshot read, and
    // the replays sit in yesterday's day file, where following the shard through the
    // archive (by day) would never look: only a build counts them.
    append(
        &s.dir,
        2,
        &records(2, s.now - 30 * 3_600_000 + 60_000, 1_000, 50, 31),
    );
    s.sync_trim("30m");
    let second = s.serve(true);
    let said = second.said();
    assert!(
        said.contains("not using snapshot")
            && said.contains("trimmed past what the snapshot had read"),
        "{said}"
    );
    let rebuilt = s.answers(&second);
    let fresh = s.serve(false);
    assert_same(
        &rebuilt,
        &s.answers(&fresh),
        "after a trim past the snapshot",
    );
    // And the server counts the replays: 50 more records than the seed's.
    let path = format!("/api/summary?window=48h&now={}", format_ms(s.now));
    let (_, body) = get(second.port, &path);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let count: u64 = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, 4 * (50 + 4_000) + 50, "{body:.400}");
}

/// Found by the fleet soak (issue 41): a shard the snapshot never read, written, archived and
/// trimmed whole before the restart, is a file of the trim's with nothing archived of it, so
/// reading it from its start looked exact; the records the trim took (replays, in an old day
/// file) were never counted, and the histograms went on from the snapshot short of them.
#[test]
fn a_shard_born_and_trimmed_since_the_snapshot_makes_the_start_build_instead() {
    let s = Setup::new();
    let first = s.serve(true);
    assert!(stop(first).success());
    s.dir.write(
        "cfn-metrics-7.jsonl",
        records(7, s.now - 30 * 3_600_000 + 60_000, 1_000, 50, 41),
    );
    s.sync_trim("30m");
    let second = s.serve(true);
    let said = second.said();
    assert!(
        said.contains("not using snapshot") && said.contains("cfn-metrics-7.jsonl"),
        "{said}"
    );
    assert_same(
        &s.answers(&second),
        &s.answers(&s.serve(false)),
        "after a shard born and trimmed since the snapshot",
    );
}

/// Found by the fleet soak (issue 41): a shard first seen in a file a trim made (replays
/// written, archived and trimmed before the server looked) lost what the trim took without a
/// word. The server cannot find those records (the archive holds them by day), so it says so.
/// The records the server's histograms counted (`_count` of every histogram family).
fn histogram_records(server: &Server) -> f64 {
    let (status, text) = get(server.port, "/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| !l.starts_with("cfn_serve_") && !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name.contains("_hist") && name.ends_with("_count")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Polls the server's histograms until they have counted `want` records (15 s at most).
fn wait_for_histogram_records(server: &Server, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = histogram_records(server);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counted {got}, want {want}: {}",
            server.said()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With the server stopped (SIGSTOP), a new shard of 5 records from 30 hours ago and 5 from
/// a minute ago is synced, trimmed (`--hot 30m`, `--trim-grace GRACE`) and rotated; then
/// the server goes on.
fn born_and_archived_while_paused(s: &Setup, server: &Server, grace: &str) {
    let pid = server.child.id() as i32;
    assert_eq!(send_signal(pid, "STOP"), 0);
    s.dir.write(
        "cfn-metrics-9.jsonl",
        records(9, s.now - 30 * 3_600_000, 1_000, 5, 51)
            + &records(9, s.now - 60_000, 1_000, 5, 52),
    );
    s.sync_trim_with_grace("30m", grace);
    assert_eq!(send_signal(pid, "CONT"), 0);
}

#[test]
fn a_replayed_shard_synced_before_the_server_looked_stays_until_it_has_read_it() {
    // Found by the fleet soak: a replaying agent's new shard, synced and trimmed (its
    // records older than --hot) before cfn-serve's next look, went to the archive without
    // the histograms ever counting it. The trim's grace keeps it in the shard.
    let s = Setup::new();
    let server = s.serve(false);
    let before = histogram_records(&server);
    born_and_archived_while_paused(&s, &server, "60s");
    let lines = |s: &Setup| s.dir.read("cfn-metrics-9.jsonl").lines().count();
    assert_eq!(lines(&s), 10, "a trim took records synced a moment ago");
    wait_for_histogram_records(&server, before + 10.0);
    // Once read, the trim may take them, and the server follows it.
    s.sync_trim_with_grace("30m", "0s");
    assert_eq!(lines(&s), 5);
    append(&s.dir, 9, &records(9, s.now - 1_000, 1, 1, 53));
    wait_for_histogram_records(&server, before + 11.0);
    assert!(
        !server
            .said()
            .contains("was trimmed before it was first read"),
        "{}",
        server.said()
    );
}

#[test]
fn a_shard_trimmed_before_it_was_first_read_is_said_not_silently_dropped() {
    let s = Setup::new();
    let server = s.serve(false);
    born_and_archived_while_paused(&s, &server, "0s");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !server
        .said()
        .contains("was trimmed before it was first read")
    {
        assert!(std::time::Instant::now() < deadline, "{}", server.said());
        let _ = get(server.port, "/metrics");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server.said().contains("cfn-metrics-9.jsonl"),
        "{}",
        server.said()
    );
}
