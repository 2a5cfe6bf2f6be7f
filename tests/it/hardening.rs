//! A hostile neighbour and an unlucky operator against the real binaries: stray files in the
//! shared hot directory, out-of-range times and durations, bad bytes on stdin.

use cfn_testkit::TestDir;
use std::os::unix::fs::PermissionsExt;

fn emit(dir: &TestDir, args: &[&str]) {
    dir.cmd("cfn-emit").args(args).run().success();
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Plants every kind of stray file under shard-like names; returns their names.
fn plant_strays(dir: &TestDir) -> Vec<String> {
    let mut names = Vec::new();
    let target = dir.write("victim.txt", "not yours\n");
    std::os::unix::fs::symlink(&target, dir.join("cfn-metrics-997.jsonl")).unwrap();
    names.push("cfn-metrics-997.jsonl".to_string());
    std::fs::create_dir(dir.join("cfn-metrics-998.jsonl")).unwrap();
    names.push("cfn-metrics-998.jsonl".to_string());
    let fifo = dir.join("cfn-metrics-996.jsonl");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    names.push("cfn-metrics-996.jsonl".to_string());
    if is_root() {
        let p = dir.write(
            "cfn-metrics-999.jsonl",
            "{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"evil\",\"value\":1}\n",
        );
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        names.push("cfn-metrics-999.jsonl".to_string());
    } else {
        eprintln!("note: not root, so no file owned by another user is planted");
    }
    names
}

#[test]
fn stray_files_in_the_hot_directory_are_skipped_with_a_warning_naming_each() {
    let dir = TestDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    emit(&dir, &["agent-1", "m", "1"]);
    emit(&dir, &["agent-2", "m", "2"]);
    let strays = plant_strays(&dir);

    let out = dir.cmd("cfn-cat").run();
    out.success();
    assert_eq!(out.jsonl().len(), 2, "{}", out.stderr());
    for name in &strays {
        out.stderr_has(name);
    }
    let out = dir.cmd("cfn-cat").arg("--sorted").run();
    out.success();
    assert_eq!(out.jsonl().len(), 2);
    // --strict makes a refused shard an error again.
    assert_ne!(dir.cmd("cfn-cat").arg("--strict").run().code(), 0);

    let out = dir
        .cmd("cfn-archive")
        .args(["run", "--hot", "0s", "--trim-grace", "0s"])
        .run();
    out.success();
    for name in &strays {
        out.stderr_has(name);
    }
    let archived = dir.cmd("cfn-cat").arg(dir.join("archive")).run();
    archived.success();
    assert_eq!(archived.jsonl().len(), 2, "{}", archived.stderr());
    // Trimmed: the hot shards hold nothing the archive has.
    assert_eq!(dir.cmd("cfn-cat").run().jsonl().len(), 0);
    assert_eq!(dir.read("victim.txt"), "not yours\n");
    dir.cmd("cfn-archive")
        .args(["sync", "--rebuild-state"])
        .run()
        .success();
}

#[test]
fn emit_stdin_rejects_a_line_of_invalid_utf8_by_number_and_writes_the_rest() {
    let dir = TestDir::new();
    let out = dir
        .cmd("cfn-emit")
        .args(["--stdin", "--agent", "agent-1"])
        .stdin(&b"good.a 1\ngood.b 2\nbad\xff 4\ngood.d 5\n"[..])
        .run();
    out.status(65).stderr_has("<stdin>:3:");
    let got: Vec<String> = dir
        .cmd("cfn-cat")
        .run()
        .jsonl()
        .iter()
        .map(|r| r["metric"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["good.a", "good.b", "good.d"]);
}

#[test]
fn durations_out_of_range_are_usage_errors_not_wrapped() {
    let dir = TestDir::new();
    emit(&dir, &["agent-1", "m", "1"]);
    dir.cmd("cfn-archive").arg("sync").run().success();
    for args in [
        &["prune", "--dry-run", "--keep", "1000000000000d"][..],
        &["trim", "--hot", "1000000000000d", "--trim-grace", "0s"][..],
        &["trim", "--hot", "18446744073709551617ms"][..],
    ] {
        dir.cmd("cfn-archive")
            .args(args)
            .run()
            .status(2)
            .stderr_has("out of range");
    }
    dir.cmd("cfn-cat")
        .args(["--since", "1000000000000d"])
        .run()
        .status(2)
        .stderr_has("out of range");
    // Nothing was trimmed or pruned.
    assert_eq!(dir.cmd("cfn-cat").run().jsonl().len(), 1);
}

#[test]
fn timestamps_outside_years_1970_to_9999_are_refused_by_writers_and_readers() {
    let dir = TestDir::new();
    for ts in [
        "1e15",
        "1e17",
        "-1e15",
        "1969-12-31T23:59:59Z",
        "10000-01-01T00:00:00Z",
    ] {
        dir.cmd("cfn-emit")
            .args(["--timestamp", ts, "agent-1", "m", "1"])
            .run()
            .status(2);
    }
    let out = dir
        .cmd("cfn-emit")
        .args(["--stdin", "--agent", "agent-1"])
        .stdin("{\"metric\":\"m\",\"value\":1,\"timestamp\":1e17}\n")
        .run();
    out.status(65).stderr_has("<stdin>:1:");
    assert!(dir.cmd("cfn-cat").run().jsonl().is_empty());
    // Readers: such a record is malformed, so the archiver never makes a day file for it.
    dir.write(
        "cfn-metrics-1.jsonl",
        "{\"timestamp\":1e17,\"metric\":\"m\",\"value\":1}\n{\"timestamp\":-1e15,\"metric\":\"m\",\"value\":1}\n{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":2}\n",
    );
    let out = dir.cmd("cfn-cat").run();
    out.success().stderr_has("skipped 2 malformed lines");
    assert_eq!(out.jsonl().len(), 1);
    dir.cmd("cfn-archive")
        .args(["sync", "--now", "2026-11-27T12:00:00Z"])
        .run()
        .success();
    let mut names: Vec<String> = std::fs::read_dir(dir.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, ["cfn-metrics-20261127-1.jsonl"]);
}

#[test]
fn a_gzip_bomb_without_newlines_is_read_in_bounded_memory() {
    let dir = TestDir::new();
    let bomb = dir.join("bomb.jsonl.gz");
    // 512 MiB of zeros in about 500 KB, then one valid record.
    let made = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{{ head -c 536870912 /dev/zero; printf '\\n{{\"timestamp\":\"2026-11-27T10:00:00Z\",\"metric\":\"m\",\"value\":1}}\\n'; }} | gzip -1 > '{}'",
            bomb.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    // Under a 256 MiB address-space limit: a reader that held the line whole would abort.
    let out = cfn_testkit::TestCommand::program("prlimit")
        .arg("--as=268435456")
        .arg(cfn_testkit::bin_path("cfn-cat"))
        .arg(&bomb)
        .run();
    out.success().stderr_has("longer than");
    assert_eq!(out.jsonl().len(), 1);
}

#[test]
fn follow_skips_a_stray_shard_and_keeps_following_the_rest() {
    use std::io::BufRead;
    let dir = TestDir::new();
    emit(&dir, &["agent-1", "m", "1"]);
    let strays = plant_strays(&dir);
    let mut cmd = dir.cmd("cfn-cat");
    cmd.args(["--follow", "--interval", "50ms"]);
    let mut child = cmd
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("\"value\":1"));
    emit(&dir, &["agent-2", "m", "2"]);
    assert!(lines.next().unwrap().unwrap().contains("\"value\":2"));
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    for name in &strays {
        assert_eq!(err.matches(name.as_str()).count(), 1, "{err}");
    }
}

/// `DIR/hot`, owned by `uid`:`gid` with `mode`, in a directory every user can enter.
fn shared_hot_dir(dir: &TestDir, uid: u32, gid: u32, mode: u32) -> std::path::PathBuf {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hot = dir.join("hot");
    std::fs::create_dir(&hot).unwrap();
    std::os::unix::fs::chown(&hot, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&hot, std::fs::Permissions::from_mode(mode)).unwrap();
    hot
}

/// Runs `tool ARGS` as uid `uid` with primary group `gid` and only those supplementary
/// groups (setpriv, util-linux), hot shards in `hot`.
fn as_user(
    uid: u32,
    gid: u32,
    hot: &std::path::Path,
    tool: &str,
    args: &[&str],
) -> cfn_testkit::Outcome {
    let mut cmd = cfn_testkit::TestCommand::program("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(format!("--groups={gid}"))
        .arg("--")
        .arg(cfn_testkit::bin_path(tool))
        .args(args)
        .env("CFN_METRICS_DIR", hot)
        .env("CFN_LOCK_TIMEOUT_MS", "2000");
    cmd.run()
}

#[test]
fn agents_of_the_group_share_a_setgid_hot_directory_and_outsiders_cannot_get_in() {
    if !is_root() || cfn_testkit::peer("setpriv", "Debian package util-linux").is_none() {
        cfn_testkit::skip("needs root (to act as other users with setpriv)");
        return;
    }
    const GROUP: u32 = 4100;
    let (alice, bob, mallory) = (4101, 4102, 4103);
    let dir = TestDir::new();
    // A group-shared hot directory: root:GROUP, 2770.
    let hot = shared_hot_dir(&dir, 0, GROUP, 0o2770);
    // Two members write to one shard (agent-1's): the second appends to the first's file.
    as_user(alice, GROUP, &hot, "cfn-emit", &["agent-1", "m", "1"]).success();
    as_user(bob, GROUP, &hot, "cfn-emit", &["agent-1", "m", "2"]).success();
    let shard = hot.join("cfn-metrics-1.jsonl");
    let meta = std::fs::metadata(&shard).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (alice, GROUP, 0o660)
    );
    // Every tool of either member reads both records.
    for who in [alice, bob] {
        let out = as_user(who, GROUP, &hot, "cfn-cat", &[]);
        assert_eq!(out.success().stdout().lines().count(), 2, "{out:?}");
    }
    let aggs = as_user(bob, GROUP, &hot, "cfn-agg", &[hot.to_str().unwrap()])
        .success()
        .jsonl();
    assert_eq!(aggs[0]["count"], 2);
    // The archiver, a member too, syncs and trims it; the trimmed shard stays the group's,
    // so the agents go on appending.
    let archive = dir.join("archive");
    std::fs::create_dir(&archive).unwrap();
    std::os::unix::fs::chown(&archive, Some(bob), Some(GROUP)).unwrap();
    as_user(
        bob,
        GROUP,
        &hot,
        "cfn-archive",
        &[
            "--archive-dir",
            archive.to_str().unwrap(),
            "run",
            "--hot",
            "0s",
            "--trim-grace",
            "0s",
        ],
    )
    .success();
    as_user(alice, GROUP, &hot, "cfn-emit", &["agent-1", "m", "3"]).success();
    // (The archive is the archiver's own, 0600.)
    let out = as_user(
        bob,
        GROUP,
        &hot,
        "cfn-cat",
        &[archive.to_str().unwrap(), hot.to_str().unwrap()],
    );
    assert_eq!(out.success().stdout().lines().count(), 3, "{out:?}");
    // An outsider can neither write a shard nor put any file there.
    let out = as_user(mallory, 4199, &hot, "cfn-emit", &["agent-1", "m", "666"]);
    assert_eq!(out.code(), 73, "{out:?}");
    let out = as_user(mallory, 4199, &hot, "cfn-emit", &["agent-5", "m", "666"]);
    assert_eq!(out.code(), 73, "{out:?}");
    assert!(!hot.join("cfn-metrics-5.jsonl").exists());

    // In a world-writable directory (/dev/shm's mode), only one's own or root's files count:
    // a member's shard is refused by the other member, for writing and for reading.
    let shm = dir.join("shm");
    std::fs::create_dir(&shm).unwrap();
    std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o1777)).unwrap();
    as_user(alice, GROUP, &shm, "cfn-emit", &["agent-2", "m", "1"]).success();
    // Even when its mode lets the group in.
    std::fs::set_permissions(
        shm.join("cfn-metrics-2.jsonl"),
        std::fs::Permissions::from_mode(0o660),
    )
    .unwrap();
    let out = as_user(bob, GROUP, &shm, "cfn-emit", &["agent-2", "m", "2"]);
    assert_eq!(out.code(), 73, "{out:?}");
    out.stderr_has("owned by uid 4101");
    let out = as_user(bob, GROUP, &shm, "cfn-cat", &[]);
    out.success().stderr_has("skipping");
    assert_eq!(out.stdout(), "");
}

/// Issue 36 (medium 1): an agent id that writes to the operator's clipboard (OSC 52) and
/// clears the screen, and a bidi override, reach no terminal raw: not from cfn-agg's table,
/// nor its sum-overflow warning, nor cfn-alert's stderr summary, nor a peer's reply body in
/// an error. JSON output stays JSON (its encoder escapes them).
#[test]
fn terminal_escapes_in_agent_text_and_reply_bodies_never_reach_a_terminal_raw() {
    let hostile = "\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2J\u{202e}x";
    let raw =
        |text: &str| text.contains('\u{1b}') || text.contains('\u{7}') || text.contains('\u{202e}');
    let dir = TestDir::new();
    let records = format!(
        "{}\n{}\n",
        serde_json::json!({"timestamp": "2026-11-27T10:00:00Z", "agent": hostile, "metric": "coordination.time", "value": 1.7e308, "unit": hostile, "tags": {hostile: hostile}}),
        serde_json::json!({"timestamp": "2026-11-27T10:00:01Z", "agent": hostile, "metric": "coordination.time", "value": 1.7e308, "unit": hostile, "tags": {hostile: hostile}}),
    );
    let table = dir
        .cmd("cfn-agg")
        .args([
            "--format",
            "table",
            "--by",
            "agent",
            "--by",
            &format!("tag:{hostile}"),
        ])
        .stdin(records.clone())
        .run();
    table.success();
    assert!(!raw(&table.stdout()), "table: {:?}", table.stdout());
    assert!(
        table.stdout().contains("\\u{1b}]52"),
        "shown escaped: {}",
        table.stdout()
    );
    // The sum past the largest double names the group in a warning.
    assert!(table.stderr().contains("warning"), "{:?}", table.stderr());
    assert!(!raw(&table.stderr()), "warning: {:?}", table.stderr());
    // JSON stays JSON: control characters as JSON escapes (a bidi override is data there).
    let aggs = dir
        .cmd("cfn-agg")
        .args(["--by", "agent"])
        .stdin(records)
        .run();
    assert!(!aggs.success().stdout().contains(['\u{1b}', '\u{7}']));
    assert_eq!(aggs.jsonl()[0]["agent"], hostile);
    // cfn-alert's summary line carries the labels in its default message.
    let alert = dir
        .cmd("cfn-alert")
        .args([
            "--rule",
            "coordination.time max > 10 critical \"{labels} slow\"",
        ])
        .stdin(aggs.stdout())
        .run();
    alert.status(1);
    assert!(alert.stderr().contains("FIRING"), "{}", alert.stderr());
    assert!(!raw(&alert.stderr()), "summary: {:?}", alert.stderr());
    // A webhook that answers with escapes in its body: the error shows them escaped.
    let server = cfn_testkit::MockServer::start(move |_, _| {
        cfn_testkit::reply(400, &format!("bad {hostile}"))
    });
    let sent = dir
        .cmd("cfn-alert")
        .env("CFN_WEBHOOK_URL", format!("{}/hook", server.url()))
        .args(["--rule", "coordination.time max > 10 critical \"slow\""])
        .stdin(aggs.stdout())
        .run();
    assert_ne!(sent.code(), 0);
    assert!(sent.stderr().contains("bad "), "{}", sent.stderr());
    assert!(!raw(&sent.stderr()), "reply body: {:?}", sent.stderr());
}

/// Runs `program ARGS` as uid `uid` with group `gid` (setpriv).
fn as_user_run(
    uid: u32,
    gid: u32,
    program: &str,
    args: &[&std::ffi::OsStr],
) -> cfn_testkit::Outcome {
    cfn_testkit::TestCommand::program("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(format!("--groups={gid}"))
        .arg("--")
        .arg(program)
        .args(args)
        .run()
}

/// Issue 36 (low 4, medium 3), as real users: in the package's hot directory (3770, owned by
/// the service user: setgid and sticky) a member cannot delete or replace another member's
/// shard, while the archiver, the directory's owner, still trims every shard; and a shard
/// its owner made setuid and setgid (6750) comes out of the trim with neither bit.
#[test]
fn a_sticky_hot_directory_keeps_members_off_each_others_shards_and_a_trim_drops_setuid() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() || cfn_testkit::peer("setpriv", "Debian package util-linux").is_none() {
        cfn_testkit::skip("needs root (to act as other users with setpriv)");
        return;
    }
    const GROUP: u32 = 4200;
    let (service, alice, carol) = (4201, 4202, 4203);
    let dir = TestDir::new();
    // The package's hot directory: the service's, GROUP's, 3770.
    let hot = shared_hot_dir(&dir, service, GROUP, 0o3770);
    as_user(alice, GROUP, &hot, "cfn-emit", &["agent-1", "m", "1"]).success();
    as_user(carol, GROUP, &hot, "cfn-emit", &["agent-2", "m", "2"]).success();
    let shard = hot.join("cfn-metrics-1.jsonl");
    // Carol appends to Alice's shard (the group's), but can neither delete nor replace it.
    as_user(carol, GROUP, &hot, "cfn-emit", &["agent-1", "m", "3"]).success();
    let rm = as_user_run(carol, GROUP, "rm", &["-f".as_ref(), shard.as_os_str()]);
    assert_ne!(rm.code(), 0, "{rm:?}");
    let decoy = hot.join("cfn-metrics-2.jsonl");
    let mv = as_user_run(
        carol,
        GROUP,
        "mv",
        &["-f".as_ref(), decoy.as_os_str(), shard.as_os_str()],
    );
    assert_ne!(mv.code(), 0, "{mv:?}");
    assert!(
        std::fs::read_to_string(&shard)
            .unwrap()
            .contains("\"value\":3")
    );
    // Alice makes her shard setuid and setgid; the archiver trims every shard all the same.
    let chmod = as_user_run(alice, GROUP, "chmod", &["6750".as_ref(), shard.as_os_str()]);
    chmod.success();
    let archive = dir.join("archive");
    std::fs::create_dir(&archive).unwrap();
    std::os::unix::fs::chown(&archive, Some(service), Some(GROUP)).unwrap();
    let trim = as_user(
        service,
        GROUP,
        &hot,
        "cfn-archive",
        &[
            "--archive-dir",
            archive.to_str().unwrap(),
            "run",
            "--hot",
            "0s",
            "--trim-grace",
            "0s",
        ],
    );
    trim.success();
    let meta = std::fs::metadata(&shard).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o640,
        "rw bits kept, setuid, setgid and x dropped"
    );
    assert_eq!(meta.uid(), service, "the trimmed file is the archiver's");
    let both = as_user(
        service,
        GROUP,
        &hot,
        "cfn-cat",
        &[archive.to_str().unwrap()],
    );
    assert_eq!(both.success().stdout().lines().count(), 3);
}
