//! cfn-archive end to end: concurrent writers, crashes at every step, day boundaries,
//! rotation, retention, a full disk, and the run lock.

use crate::FAULTS;
use cfn_testkit::{TestDir, jsonl};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn rec(ts: &str, agent: &str, v: u64) -> String {
    format!("{{\"timestamp\":\"{ts}\",\"agent\":\"{agent}\",\"metric\":\"m\",\"value\":{v}}}\n")
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// Every record in the archive as (agent, value), with multiplicity.
fn archived(dir: &TestDir) -> BTreeMap<(String, u64), u32> {
    let out = dir.cmd("cfn-cat").arg(dir.join("archive")).run();
    out.success();
    let mut m = BTreeMap::new();
    for r in out.jsonl() {
        *m.entry((
            r["agent"].as_str().unwrap().to_string(),
            r["value"].as_u64().unwrap(),
        ))
        .or_insert(0) += 1;
    }
    m
}

fn hot(dir: &TestDir) -> Vec<(String, u64)> {
    dir.cmd("cfn-cat")
        .run()
        .jsonl()
        .iter()
        .map(|r| {
            (
                r["agent"].as_str().unwrap().to_string(),
                r["value"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn assert_exactly_once(dir: &TestDir, expected: &HashSet<(String, u64)>) {
    let got = archived(dir);
    let dups: Vec<_> = got.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicated in the archive: {dups:?}");
    let keys: HashSet<(String, u64)> = got.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&keys).take(5).collect();
    assert!(
        missing.is_empty(),
        "missing from the archive: {missing:?} ({} of {})",
        expected.len() - keys.len().min(expected.len()),
        expected.len()
    );
    let extra: Vec<_> = keys.difference(expected).take(5).collect();
    assert!(
        extra.is_empty(),
        "unexpected records in the archive: {extra:?}"
    );
}

#[test]
fn concurrent_writers_with_sync_and_trim_looping_lose_and_duplicate_nothing() {
    let dir = TestDir::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let archiver = {
        let stop = stop.clone();
        let mut sync = dir.cmd("cfn-archive");
        sync.arg("sync");
        let mut trim = dir.cmd("cfn-archive");
        trim.args(["trim", "--hot", "1s", "--trim-grace", "0s"]);
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sync.run().success();
                trim.run().success();
                runs += 1;
            }
            runs
        })
    };
    let writers: Vec<_> = (0..20)
        .map(|w| {
            let mut cmd = dir.cmd("cfn-emit");
            cmd.args(["--stdin", "--agent", &format!("w{w}")]);
            let c = cmd.command();
            c.stdin(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                for chunk in 0..100 {
                    let mut s = String::new();
                    for i in 0..5 {
                        s.push_str(&format!("m {}\n", chunk * 5 + i));
                    }
                    stdin.write_all(s.as_bytes()).unwrap();
                    std::thread::sleep(Duration::from_millis(25));
                }
                drop(stdin);
                assert!(child.wait().unwrap().success());
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = archiver.join().unwrap();
    assert!(runs >= 2, "the archiver ran only {runs} times");
    dir.cmd("cfn-archive").arg("sync").run().success();
    let expected: HashSet<(String, u64)> = (0..20)
        .flat_map(|w| (0..500).map(move |i| (format!("w{w}"), i)))
        .collect();
    assert_exactly_once(&dir, &expected);
    let still_hot = hot(&dir);
    assert!(still_hot.len() < 10_000, "trim removed nothing");
    let archive: HashSet<_> = archived(&dir).into_keys().collect();
    assert!(
        still_hot.iter().all(|r| archive.contains(r)),
        "a hot record is not archived"
    );
}

fn seed(dir: &TestDir, from: u64, to: u64) -> HashSet<(String, u64)> {
    let mut s = String::new();
    let mut set = HashSet::new();
    for i in from..to {
        s.push_str(&rec(
            &format!("2026-11-27T10:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
            &format!("a-{}", i % 3),
            i,
        ));
        set.insert((format!("a-{}", i % 3), i));
    }
    append(&dir.join(&format!("cfn-metrics-{}.jsonl", from % 4)), &s);
    set
}

/// The `cfn-archive` an operator runs never arms the fault injection: the variables that make
/// `cfn-archive-faults` die or fail its writes change nothing in it.
#[test]
fn the_operators_cfn_archive_ignores_the_fault_injection_variables() {
    let run = |tool: &str| {
        let dir = TestDir::new();
        seed(&dir, 0, 50);
        let out = dir
            .cmd(tool)
            .args(["--now", "2026-11-29T12:00:00Z", "run", "--keep", "3650d"])
            .env("CFN_ARCHIVE_CRASH_AT", "after_gz_rename")
            .env("CFN_ARCHIVE_FAIL_WRITE_AFTER", "10")
            .run();
        let archived = dir.join("archive/cfn-metrics-20261127-0.jsonl.gz").exists()
            || dir.join("archive/cfn-metrics-20261127-1.jsonl.gz").exists();
        (out.code(), archived)
    };
    assert_eq!(run("cfn-archive"), (0, true));
    // The same variables do arm the faults binary: the check above can fail.
    assert_ne!(run(FAULTS).0, 0);
}

#[test]
fn crash_at_every_step_then_rerun_archives_exactly_once() {
    for point in ["after_writes", "after_fsync", "before_state_save"] {
        let dir = TestDir::new();
        let mut expected = seed(&dir, 0, 200);
        dir.cmd("cfn-archive").arg("sync").run().success();
        expected.extend(seed(&dir, 1000, 1200));
        let crashed = dir
            .cmd(FAULTS)
            .arg("sync")
            .env("CFN_ARCHIVE_CRASH_AT", point)
            .run();
        assert_ne!(crashed.code(), 0, "{point}: did not crash");
        expected.extend(seed(&dir, 2001, 2100));
        dir.cmd("cfn-archive").arg("sync").run().success();
        assert_exactly_once(&dir, &expected);
    }
}

#[test]
fn crash_during_trim_and_rotate_loses_and_duplicates_nothing() {
    // Before a rename the state already names the new file; after it the old one is gone.
    for (trim_point, rotate_point) in [
        ("before_trim_rename", "before_gz_rename"),
        ("after_trim_rename", "after_gz_rename"),
    ] {
        let dir = TestDir::new();
        let old = "2026-11-25T10:00:00.000Z";
        let mut expected = HashSet::new();
        for i in 0..50 {
            append(&dir.join("cfn-metrics-1.jsonl"), &rec(old, "a-1", i));
            expected.insert(("a-1".to_string(), i));
        }
        let now = ["--now", "2026-11-27T12:00:00Z"];
        dir.cmd("cfn-archive").arg("sync").args(now).run().success();
        let c = dir
            .cmd(FAULTS)
            .args(["trim", "--hot", "1h", "--trim-grace", "0s"])
            .args(now)
            .env("CFN_ARCHIVE_CRASH_AT", trim_point)
            .run();
        assert_ne!(c.code(), 0, "{trim_point}");
        append(
            &dir.join("cfn-metrics-1.jsonl"),
            &rec("2026-11-27T11:59:00.000Z", "a-1", 999),
        );
        expected.insert(("a-1".to_string(), 999));
        dir.cmd("cfn-archive").arg("sync").args(now).run().success();
        let c = dir
            .cmd(FAULTS)
            .arg("rotate")
            .args(now)
            .env("CFN_ARCHIVE_CRASH_AT", rotate_point)
            .run();
        assert_ne!(c.code(), 0, "{rotate_point}");
        dir.cmd("cfn-archive").arg("run").args(now).run().success();
        assert_exactly_once(&dir, &expected);
        assert!(dir.join("archive/cfn-metrics-20261125-1.jsonl.gz").exists());
        assert!(!dir.join("archive/cfn-metrics-20261125-1.jsonl").exists());
        let mut leftovers: Vec<String> = std::fs::read_dir(dir.join("archive"))
            .unwrap()
            .chain(std::fs::read_dir(dir.path()).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with('.')
                    && n != ".cfn-archive.lock"
                    && !n.starts_with(".cfn-archive-state")
            })
            .collect();
        leftovers.sort();
        assert_eq!(
            leftovers,
            Vec::<String>::new(),
            "{trim_point}, {rotate_point}"
        );
    }
}

#[test]
fn sigkill_at_random_moments_then_rerun_archives_exactly_once() {
    let dir = TestDir::new();
    let mut s = String::new();
    let mut expected = HashSet::new();
    for i in 0..300_000u64 {
        s.push_str(&rec(
            &format!(
                "2026-11-27T10:{:02}:{:02}.{:03}Z",
                (i / 60_000) % 60,
                (i / 1000) % 60,
                i % 1000
            ),
            "a-1",
            i,
        ));
        expected.insert(("a-1".to_string(), i));
    }
    append(&dir.join("cfn-metrics-1.jsonl"), &s);
    let bin = cfn_testkit::bin_path("cfn-archive");
    let mut killed = 0;
    for delay_ms in [1u64, 5, 10, 20, 40, 80] {
        let mut child = std::process::Command::new(&bin)
            .arg("sync")
            .env("CFN_METRICS_DIR", dir.path())
            .env("CFN_ARCHIVE_DIR", dir.join("archive"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        append(
            &dir.join("cfn-metrics-1.jsonl"),
            &rec("2026-11-27T11:00:00.000Z", "b-1", delay_ms),
        );
        expected.insert(("b-1".to_string(), delay_ms));
    }
    eprintln!("killed {killed} of 6 syncs mid-way");
    dir.cmd("cfn-archive").arg("sync").run().success();
    assert_exactly_once(&dir, &expected);
}

#[test]
fn corrupt_state_is_an_error_and_rebuild_state_recovers_without_duplicates() {
    let dir = TestDir::new();
    let mut expected = seed(&dir, 0, 100);
    dir.cmd("cfn-archive").arg("sync").run().success();
    let state = dir.join("archive/.cfn-archive-state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, &text[..text.len() / 2]).unwrap();
    expected.extend(seed(&dir, 1000, 1050));
    let out = dir.cmd("cfn-archive").arg("sync").run();
    out.status(78)
        .stderr_has("corrupt")
        .stderr_has("--rebuild-state");
    dir.cmd("cfn-archive")
        .args(["sync", "--rebuild-state"])
        .run()
        .success();
    assert_exactly_once(&dir, &expected);
    // A missing state with archives present is refused too, not silently restarted.
    std::fs::remove_file(&state).unwrap();
    dir.cmd("cfn-archive")
        .arg("sync")
        .run()
        .status(78)
        .stderr_has("--rebuild-state");
}

#[test]
fn records_either_side_of_midnight_land_in_different_days() {
    let dir = TestDir::new();
    append(
        &dir.join("cfn-metrics-2.jsonl"),
        &[
            rec("2026-11-26T23:59:59.999Z", "a-2", 1),
            rec("2026-11-27T00:00:00.000Z", "a-2", 2),
        ]
        .concat(),
    );
    dir.cmd("cfn-archive").arg("sync").run().success();
    let a = jsonl(&dir.read("archive/cfn-metrics-20261126-2.jsonl"));
    let b = jsonl(&dir.read("archive/cfn-metrics-20261127-2.jsonl"));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0]["value"], 1);
    assert_eq!(b[0]["value"], 2);
}

#[test]
fn rotate_gzips_finished_days_only_and_keeps_the_bytes() {
    let dir = TestDir::new();
    let yesterday = [
        rec("2026-11-26T10:00:00.000Z", "a-1", 1),
        rec("2026-11-26T11:00:00.000Z", "a-1", 2),
    ]
    .concat();
    append(
        &dir.join("cfn-metrics-1.jsonl"),
        &(yesterday.clone() + &rec("2026-11-27T10:00:00.000Z", "a-1", 3)),
    );
    let now = ["--now", "2026-11-27T12:00:00Z"];
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    let out = dir
        .cmd("cfn-archive")
        .args(["rotate", "--json"])
        .args(now)
        .run();
    let summary: serde_json::Value = serde_json::from_str(out.success().stdout().trim()).unwrap();
    assert_eq!(summary["rotated_files"], 1);
    assert!(
        dir.join("archive/cfn-metrics-20261127-1.jsonl").exists(),
        "today's file was rotated"
    );
    assert!(!dir.join("archive/cfn-metrics-20261126-1.jsonl").exists());
    let gz = std::fs::read(dir.join("archive/cfn-metrics-20261126-1.jsonl.gz")).unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut plain)
        .unwrap();
    assert_eq!(plain, yesterday);
    // A late record for the rotated day becomes a second gzip member.
    append(
        &dir.join("cfn-metrics-1.jsonl"),
        &rec("2026-11-26T12:00:00.000Z", "a-1", 4),
    );
    dir.cmd("cfn-archive").arg("run").args(now).run().success();
    let vals: Vec<u64> = dir
        .cmd("cfn-cat")
        .arg("--sorted")
        .arg(dir.join("archive"))
        .run()
        .jsonl()
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    assert_eq!(vals, [1, 2, 4, 3]);
}

#[test]
fn prune_keeps_thirty_days_by_file_name() {
    let dir = TestDir::new();
    let arch = dir.join("archive");
    std::fs::create_dir_all(&arch).unwrap();
    for day in ["20261018", "20261027", "20261028", "20261126"] {
        std::fs::write(arch.join(format!("cfn-metrics-{day}-0.jsonl.gz")), b"").unwrap();
    }
    // 2026-11-27 minus 40, 31, 30 and 1 days.
    let out = dir
        .cmd("cfn-archive")
        .args(["prune", "--keep", "30d", "--now", "2026-11-27T08:00:00Z"])
        .run();
    out.success()
        .stderr_has("pruned")
        .stderr_has("cfn-metrics-20261018-0.jsonl.gz")
        .stderr_has("cfn-metrics-20261027-0.jsonl.gz");
    let mut left: Vec<String> = std::fs::read_dir(&arch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "cfn-metrics-20261028-0.jsonl.gz",
            "cfn-metrics-20261126-0.jsonl.gz"
        ]
    );
    assert!(out.stdout().contains("pruned 2 files"));
}

#[test]
fn dry_run_changes_nothing() {
    let dir = TestDir::new();
    seed(&dir, 0, 10);
    let out = dir
        .cmd("cfn-archive")
        .args(["run", "--dry-run", "--hot", "0s"])
        .run();
    out.success();
    assert!(
        out.stdout().contains("would have synced 10 records"),
        "{out:?}"
    );
    assert!(!dir.join("archive/.cfn-archive-state.json").exists());
    assert_eq!(hot(&dir).len(), 10);
}

#[test]
fn full_disk_exits_74_and_leaves_shards_and_state_untouched() {
    let dir = TestDir::new();
    seed(&dir, 0, 50);
    // A real full filesystem when the test may mount one (root), else the write-error hook.
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let archive = if mounted {
        small.clone()
    } else {
        dir.join("archive")
    };
    let run = |extra_env: Option<(&str, &str)>| {
        let mut c = dir.cmd(FAULTS);
        c.arg("sync").env("CFN_ARCHIVE_DIR", &archive);
        if let Some((k, v)) = extra_env {
            c.env(k, v);
        }
        c.run()
    };
    run(None).success(); // the first 50 records fit
    let state_before = std::fs::read_to_string(archive.join(".cfn-archive-state.json")).unwrap();
    let mut big = String::new();
    for i in 0..20_000u64 {
        big.push_str(&rec("2026-11-27T11:00:00.000Z", "a-1", 10_000 + i));
    }
    append(&dir.join("cfn-metrics-0.jsonl"), &big);
    let shard_before = std::fs::read(dir.join("cfn-metrics-0.jsonl")).unwrap();
    let out = if mounted {
        run(None)
    } else {
        eprintln!("cannot mount a small tmpfs here; simulating ENOSPC");
        run(Some(("CFN_ARCHIVE_FAIL_WRITE_AFTER", "100000")))
    };
    out.status(74)
        .stderr_has("No space left on device")
        .stderr_has("disk full");
    assert_eq!(
        std::fs::read(dir.join("cfn-metrics-0.jsonl")).unwrap(),
        shard_before
    );
    assert_eq!(
        std::fs::read_to_string(archive.join(".cfn-archive-state.json")).unwrap(),
        state_before
    );
    if mounted {
        // Move the archive to a roomy disk and carry on from the same state.
        let roomy = dir.join("archive");
        std::fs::create_dir_all(&roomy).unwrap();
        for e in std::fs::read_dir(&small).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), roomy.join(e.file_name())).unwrap();
        }
        let _ = std::process::Command::new("umount").arg(&small).status();
    }
    // Once there is room again, everything arrives exactly once.
    dir.cmd("cfn-archive").arg("sync").run().success();
    assert_eq!(archived(&dir).len(), 50 + 20_000);
}

#[test]
fn a_second_run_while_one_is_active_exits_at_once() {
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.join("archive")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("archive/.cfn-archive.lock"))
        .unwrap();
    lock.lock().unwrap();
    let start = Instant::now();
    let out = dir.cmd("cfn-archive").arg("run").run();
    out.status(75).stderr_has("another cfn-archive is running");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn trim_never_removes_what_is_not_archived() {
    let dir = TestDir::new();
    seed(&dir, 0, 20);
    let out = dir
        .cmd("cfn-archive")
        .args(["trim", "--hot", "0s", "--trim-grace", "0s"])
        .run();
    out.success();
    assert_eq!(
        hot(&dir).len(),
        20,
        "trimmed records that were never synced"
    );
    dir.cmd("cfn-archive").arg("sync").run().success();
    seed(&dir, 20, 30);
    dir.cmd("cfn-archive")
        .args(["trim", "--hot", "0s", "--trim-grace", "0s"])
        .run()
        .success();
    let left: Vec<u64> = hot(&dir).iter().map(|r| r.1).collect();
    assert_eq!(left, (20..30).collect::<Vec<u64>>());
}

#[test]
fn an_archive_file_the_state_does_not_know_is_left_alone() {
    let dir = TestDir::new();
    let expected = seed(&dir, 0, 10);
    dir.cmd("cfn-archive").arg("sync").run().success();
    // An operator restores an old day from a backup.
    let restored = rec("2026-10-01T10:00:00.000Z", "z-1", 7);
    dir.write("archive/cfn-metrics-20261001-0.jsonl", &restored);
    dir.cmd("cfn-archive").arg("sync").run().success();
    assert_eq!(dir.read("archive/cfn-metrics-20261001-0.jsonl"), restored);
    let mut all = expected.clone();
    all.insert(("z-1".to_string(), 7));
    assert_exactly_once(&dir, &all);
}

#[test]
fn progress_shows_on_a_terminal_only() {
    let Some(script) = cfn_testkit::peer(
        "script",
        "util-linux, to run cfn-archive on a pseudo-terminal",
    ) else {
        return;
    };
    let dir = TestDir::new();
    for day in 20..25 {
        append(
            &dir.join("cfn-metrics-1.jsonl"),
            &rec(&format!("2026-11-{day}T10:00:00.000Z"), "a-1", day),
        );
    }
    let now = "2026-11-27T12:00:00Z";
    dir.cmd("cfn-archive")
        .args(["sync", "--now", now])
        .run()
        .success();
    // In a pipe: quiet apart from the summary.
    let piped = dir
        .cmd("cfn-archive")
        .args(["rotate", "--dry-run", "--now", now])
        .run();
    assert!(!piped.stderr().contains("rotating"), "{piped:?}");
    // On a terminal: progress on stderr.
    let bin = cfn_testkit::bin_path("cfn-archive");
    let tty = cfn_testkit::TestCommand::program(script)
        .env("CFN_METRICS_DIR", dir.path())
        .env("CFN_ARCHIVE_DIR", dir.join("archive"))
        .args([
            "-qec",
            &format!("{} rotate --now {now}", bin.display()),
            "/dev/null",
        ])
        .run();
    tty.success();
    assert!(
        tty.stdout()
            .contains("rotating 5/5 cfn-metrics-20261124-1.jsonl"),
        "{tty:?}"
    );
    assert!(tty.stdout().contains("rotated 5 files"), "{tty:?}");
}

#[test]
fn rebuild_state_resumes_after_the_last_record_even_when_a_malformed_line_follows_it() {
    let dir = TestDir::new();
    let mut expected = seed(&dir, 0, 30);
    append(&dir.join("cfn-metrics-0.jsonl"), "not a record\n");
    dir.cmd("cfn-archive").arg("sync").run().success();
    std::fs::write(dir.join("archive/.cfn-archive-state.json"), "{").unwrap();
    expected.extend(seed(&dir, 1000, 1010));
    dir.cmd("cfn-archive")
        .args(["sync", "--rebuild-state"])
        .run()
        .success();
    assert_exactly_once(&dir, &expected);
}

/// Every archived line, with multiplicity, exactly as written.
fn archived_lines(dir: &TestDir) -> BTreeMap<String, u32> {
    let out = dir.cmd("cfn-cat").arg(dir.join("archive")).run();
    out.success();
    let mut m = BTreeMap::new();
    for l in out.stdout().lines() {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn an_identical_record_after_the_anchor_survives_a_crash_between_trim_rename_and_save() {
    let dir = TestDir::new();
    let shard = dir.join("cfn-metrics-1.jsonl");
    let now = ["--now", "2026-11-27T12:00:00Z"];
    for i in 0..20 {
        append(&shard, &rec("2026-11-27T09:00:00.000Z", "a-1", i));
    }
    let same = rec("2026-11-27T09:30:00.000Z", "a-1", 777);
    append(&shard, &same);
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    // The identical record, not yet archived, then a newer one.
    append(&shard, &same);
    append(&shard, &rec("2026-11-27T11:59:00.000Z", "a-1", 999));
    let c = dir
        .cmd(FAULTS)
        .args(["trim", "--hot", "1h", "--trim-grace", "0s"])
        .args(now)
        .env("CFN_ARCHIVE_CRASH_AT", "after_trim_rename")
        .run();
    assert_ne!(c.code(), 0);
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    let got = archived_lines(&dir);
    assert_eq!(got.get(same.trim_end()), Some(&2), "{got:?}");
    assert_eq!(got.values().sum::<u32>(), 23);
    assert!(got.values().all(|&n| n <= 2));
}

#[test]
fn replayed_out_of_order_records_are_archived_once_after_a_trim_crash_and_a_rebuild() {
    for rebuild in [false, true] {
        let dir = TestDir::new();
        let shard = dir.join("cfn-metrics-2.jsonl");
        let now = ["--now", "2026-11-27T12:00:00Z"];
        let mut expected = HashSet::new();
        // A replay: later records first, then older ones, across two days.
        let order = [
            ("2026-11-27T08:00:00.000Z", 1),
            ("2026-11-26T08:00:00.000Z", 2),
            ("2026-11-27T07:00:00.000Z", 3),
            ("2026-11-26T23:59:59.999Z", 4),
            ("2026-11-27T06:00:00.000Z", 5),
        ];
        for (ts, v) in order {
            append(&shard, &rec(ts, "a-2", v));
            expected.insert(("a-2".to_string(), v));
        }
        dir.cmd("cfn-archive").arg("sync").args(now).run().success();
        for (ts, v) in [
            ("2026-11-27T05:00:00.000Z", 6),
            ("2026-11-26T05:00:00.000Z", 7),
            ("2026-11-27T11:30:00.000Z", 8),
        ] {
            append(&shard, &rec(ts, "a-2", v));
            expected.insert(("a-2".to_string(), v));
        }
        if rebuild {
            std::fs::remove_file(dir.join("archive/.cfn-archive-state.json")).unwrap();
            dir.cmd("cfn-archive")
                .args(["sync", "--rebuild-state"])
                .args(now)
                .run()
                .success();
        } else {
            let c = dir
                .cmd(FAULTS)
                .args(["trim", "--hot", "1h", "--trim-grace", "0s"])
                .args(now)
                .env("CFN_ARCHIVE_CRASH_AT", "after_trim_rename")
                .run();
            assert_ne!(c.code(), 0);
            dir.cmd("cfn-archive").arg("sync").args(now).run().success();
        }
        assert_exactly_once(&dir, &expected);
    }
}

#[test]
fn rebuild_state_keeps_an_identical_record_that_follows_the_last_archived_one() {
    let dir = TestDir::new();
    let shard = dir.join("cfn-metrics-3.jsonl");
    let now = ["--now", "2026-11-27T12:00:00Z"];
    let same = rec("2026-11-27T10:00:00.000Z", "a-3", 5);
    append(&shard, &rec("2026-11-27T09:00:00.000Z", "a-3", 1));
    append(&shard, &same);
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    append(&shard, &same);
    append(&shard, &same);
    std::fs::remove_file(dir.join("archive/.cfn-archive-state.json")).unwrap();
    dir.cmd("cfn-archive")
        .args(["sync", "--rebuild-state"])
        .args(now)
        .run()
        .success();
    let got = archived_lines(&dir);
    assert_eq!(got.get(same.trim_end()), Some(&3), "{got:?}");
    assert_eq!(got.values().sum::<u32>(), 4);
}

#[test]
fn recovery_never_truncates_through_a_symlink_and_a_foreign_777_dir_is_refused() {
    let dir = TestDir::new();
    let shard = dir.join("cfn-metrics-1.jsonl");
    let now = ["--now", "2026-11-27T12:00:00Z"];
    append(&shard, &rec("2026-11-27T09:00:00.000Z", "a-1", 1));
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    append(&shard, &rec("2026-11-27T09:00:01.000Z", "a-1", 2));
    // A sync that wrote past the committed length, then crashed...
    let c = dir
        .cmd(FAULTS)
        .arg("sync")
        .args(now)
        .env("CFN_ARCHIVE_CRASH_AT", "after_fsync")
        .run();
    assert_ne!(c.code(), 0);
    // ...and a neighbour swaps the day file for a link to a victim file.
    let victim = dir.write("victim.txt", "x".repeat(4096));
    let day = dir.join("archive/cfn-metrics-20261127-1.jsonl");
    std::fs::remove_file(&day).unwrap();
    std::os::unix::fs::symlink(&victim, &day).unwrap();
    let out = dir.cmd("cfn-archive").arg("sync").args(now).run();
    assert_ne!(out.code(), 0);
    out.stderr_has("symlink");
    assert_eq!(
        dir.read("victim.txt").len(),
        4096,
        "the victim was truncated"
    );

    if std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        let other = TestDir::new();
        let adir = other.join("archive");
        std::fs::create_dir(&adir).unwrap();
        std::os::unix::fs::chown(&adir, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&adir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        append(
            &other.join("cfn-metrics-1.jsonl"),
            &rec("2026-11-27T09:00:00.000Z", "a-1", 1),
        );
        other
            .cmd("cfn-archive")
            .arg("sync")
            .run()
            .status(78)
            .stderr_has("writable by others");
        // Sticky, like /tmp: allowed, the files inside are checked one by one.
        std::fs::set_permissions(&adir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .unwrap();
        other.cmd("cfn-archive").arg("sync").run().success();
    } else {
        eprintln!("note: not root, so the foreign-directory half is not run");
    }
}

#[test]
fn temp_files_left_by_a_killed_run_are_cleaned_by_the_next() {
    let dir = TestDir::new();
    let now = ["--now", "2026-11-27T12:00:00Z"];
    append(
        &dir.join("cfn-metrics-1.jsonl"),
        &rec("2026-11-25T09:00:00.000Z", "a-1", 1),
    );
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    let c = dir
        .cmd(FAULTS)
        .arg("rotate")
        .args(now)
        .env("CFN_ARCHIVE_CRASH_AT", "after_gz_rename")
        .run();
    assert_ne!(c.code(), 0);
    // What a SIGKILL in the middle of each step leaves behind.
    dir.write("archive/.cfn-metrics-20261125-1.jsonl.gz.Ab12Cd", "partial");
    dir.write("archive/..cfn-archive-state.json.Xy34Zw.tmp", "{");
    dir.write(".cfn-metrics-1.trim.Qw56Er", "partial");
    dir.cmd("cfn-archive").arg("run").args(now).run().success();
    let left: Vec<String> = std::fs::read_dir(dir.join("archive"))
        .unwrap()
        .chain(std::fs::read_dir(dir.path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.contains(".trim.") || n.contains(".gz."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_planted_or_foreign_day_file_is_skipped_and_every_other_day_still_rotates_and_prunes() {
    let dir = TestDir::new();
    append(
        &dir.join("cfn-metrics-1.jsonl"),
        &rec("2026-11-26T10:00:00.000Z", "a-1", 1),
    );
    let now = ["--now", "2026-11-27T12:00:00Z"];
    dir.cmd("cfn-archive").arg("sync").args(now).run().success();
    let arch = dir.join("archive");
    std::fs::write(arch.join("cfn-metrics-20261001-0.jsonl.gz"), b"").unwrap();
    // A hostile neighbour's link to a file of ours, named like an old plain day and an old
    // gzipped one, and (as root) files of another user.
    let victim = dir.write("victim", "do not touch\n");
    std::os::unix::fs::symlink(&victim, arch.join("cfn-metrics-20200101-0.jsonl")).unwrap();
    std::os::unix::fs::symlink(&victim, arch.join("cfn-metrics-20200101-1.jsonl.gz")).unwrap();
    let root = cfn_core::fsutil::effective_uid() == 0;
    if root {
        for name in [
            "cfn-metrics-20200102-0.jsonl",
            "cfn-metrics-20200103-0.jsonl.gz",
        ] {
            let p = dir.write(&format!("archive/{name}"), "foreign\n");
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
    } else {
        eprintln!("not root: the other user's files are left out of this test");
    }
    for _ in 0..2 {
        dir.cmd("cfn-archive")
            .arg("rotate")
            .args(now)
            .run()
            .success()
            .stderr_has("skipping")
            .stderr_has("cfn-metrics-20200101-0.jsonl");
    }
    assert!(
        arch.join("cfn-metrics-20261126-1.jsonl.gz").exists(),
        "rotated"
    );
    let out = dir
        .cmd("cfn-archive")
        .args(["prune", "--keep", "30d"])
        .args(now)
        .run();
    out.success()
        .stderr_has("pruned")
        .stderr_has("cfn-metrics-20261001-0.jsonl.gz")
        .stderr_has("skipping");
    assert!(!arch.join("cfn-metrics-20261001-0.jsonl.gz").exists());
    assert!(
        arch.join("cfn-metrics-20200101-1.jsonl.gz").is_symlink(),
        "left alone"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch\n");
    if root {
        assert!(arch.join("cfn-metrics-20200102-0.jsonl").exists());
        assert!(arch.join("cfn-metrics-20200103-0.jsonl.gz").exists());
    }
}

/// Durations and sizes are parsed by clap: a bad one is a usage error (2) naming the flag
/// and the text, before anything is touched.
#[test]
fn a_bad_duration_or_size_is_a_usage_error_naming_the_flag() {
    let dir = TestDir::new();
    for (args, flag, text) in [
        (vec!["trim", "--hot", "5x"], "--hot", "5x"),
        (vec!["run", "--keep", "soon"], "--keep", "soon"),
        (vec!["prune", "--part-size", "lots"], "--part-size", "lots"),
        (
            vec!["prune", "--http-timeout", "1 fortnight"],
            "--http-timeout",
            "1 fortnight",
        ),
    ] {
        let out = dir.cmd("cfn-archive").args(&args).run();
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        let err = out.stderr();
        assert!(err.contains(flag) && err.contains(text), "{args:?}: {err}");
    }
    assert!(!dir.join("archive").exists(), "nothing was created");
}

/// Issue 36: a member of the group can hold its own shard's lock for ever. That shard is
/// not trimmed (a warning names it, the run ends 75), but the other shards are trimmed and
/// rotation and retention go on: one agent cannot stop the archiver's work on the rest.
#[test]
fn a_shard_locked_for_ever_is_skipped_and_the_rest_of_the_run_goes_on() {
    let dir = TestDir::new();
    for (agent, shard) in [("a-1", 1), ("a-2", 2), ("a-3", 3)] {
        append(
            &dir.join(&format!("cfn-metrics-{shard}.jsonl")),
            &rec("2026-11-25T10:00:00.000Z", agent, shard),
        );
    }
    // Held by another process the whole run, as `flock SHARD sleep` would.
    let holder = std::fs::File::open(dir.join("cfn-metrics-2.jsonl")).unwrap();
    holder.lock().unwrap();
    let out = dir
        .cmd("cfn-archive")
        .env("CFN_LOCK_TIMEOUT_MS", "300")
        .args([
            "--now",
            "2026-11-27T12:00:00Z",
            "run",
            "--hot",
            "1h",
            "--trim-grace",
            "0s",
            "--keep",
            "3650d",
        ])
        .run();
    out.status(75).stderr_has("cfn-metrics-2.jsonl");
    // Shards 1 and 3 trimmed; 2 kept whole; every record archived, the day rotated.
    let size = |n: u32| {
        std::fs::metadata(dir.join(&format!("cfn-metrics-{n}.jsonl")))
            .unwrap()
            .len()
    };
    assert_eq!((size(1), size(3)), (0, 0));
    assert!(size(2) > 0);
    assert!(
        dir.join("archive/cfn-metrics-20261125-2.jsonl.gz").exists(),
        "rotated"
    );
    assert_eq!(archived(&dir).len(), 3);
    drop(holder);
    dir.cmd("cfn-archive")
        .args([
            "--now",
            "2026-11-27T12:00:00Z",
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
    assert_eq!(size(2), 0, "trimmed once the lock is free");
}
