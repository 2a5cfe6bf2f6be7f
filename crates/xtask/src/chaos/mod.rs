//! `xtask chaos --minutes N --seed S`: everything failing at once, then an audit of every
//! record from cfn-emit to cold storage (issue 27).
//!
//! At once, for the run: 500 agents writing numbered records (per-call and `--stdin`
//! writers, bursts, replays stamped up to 40 days back, writers killed mid-write); the
//! archiver run every few seconds with `--upload-on-rotate --upload` through a proxy that
//! resets, answers 500/503/429, stalls and drops replies, with overlapping runs and runs
//! killed at random; simulated days passing (the run's clock ends at the real now and
//! starts 3.5 days earlier, given to every tool as `--timestamp` and `--now`); the archive
//! and hot filesystems (size-limited tmpfs mounts when root) filled for a while; a
//! `cfn-cat --follow` and a cfn-serve killed and restarted. Then the audit (`audit.rs`).

mod audit;
mod proxy;

use anyhow::{Context, bail};
use audit::{Fate, FollowRun, Key};
use cfn_testkit::gendata::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AGENTS: u32 = 500;
const BUCKET: &str = "chaos";
const DAY_MS: i64 = 86_400_000;
/// The simulated span of a run: three day boundaries at least.
const SIM_SPAN_MS: i64 = 84 * 3_600_000;

/// Counters of injected faults and outcomes, by name.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, what: &str) {
        *self.0.lock().unwrap().entry(what.to_string()).or_default() += 1;
    }
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// Everything the actors share.
struct Run {
    bin: PathBuf,
    root: PathBuf,
    hot: PathBuf,
    archive: PathBuf,
    proxy_port: u16,
    started: Instant,
    wall_start_ms: i64,
    duration: Duration,
    stop: AtomicBool,
    seqs: Vec<AtomicU64>,
    emitted: Mutex<HashMap<Key, Fate>>,
    faults: Tally,
    exits: Tally,
}

impl Run {
    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The simulated time: it ends at the real end of the run and starts SIM_SPAN earlier.
    fn sim_now(&self) -> i64 {
        let dur = self.duration.as_millis() as f64;
        let frac = (self.started.elapsed().as_millis() as f64 / dur).min(1.0);
        let end = self.wall_start_ms + dur as i64;
        end - SIM_SPAN_MS + (frac * SIM_SPAN_MS as f64) as i64
    }

    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CFN_METRICS_DIR", &self.hot)
            .env("CFN_ARCHIVE_DIR", &self.archive)
            .env("CFN_HOST", "chaos-host")
            .env("CFN_LOCK_TIMEOUT_MS", "3000")
            .env("AWS_ACCESS_KEY_ID", "chaos")
            .env("AWS_SECRET_ACCESS_KEY", "chaos-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("CFN_HTTP_BACKOFF_MS", "50")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn next_seq(&self, agent: u32) -> u64 {
        self.seqs[agent as usize].fetch_add(1, Ordering::Relaxed)
    }

    fn record_fate(&self, keys: &[Key], fate: Fate) {
        let mut e = self.emitted.lock().unwrap();
        for k in keys {
            e.insert(*k, fate);
        }
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A timestamp for a record written now: the simulated now, or for a replay up to 40 days
/// before it.
fn stamp(run: &Run, rng: &mut Rng, replay: bool) -> i64 {
    let now = run.sim_now();
    if replay {
        now - (rng.unit() * 40.0 * DAY_MS as f64) as i64 - 1000
    } else {
        now
    }
}

fn tags(agent: u32, seq: u64) -> String {
    format!("{{\"a\":\"agent-{agent}\",\"s\":\"{seq}\"}}")
}

/// Per-call writers: one cfn-emit per record, in bursts; some replays; some killed.
fn call_writer(run: &Run, seed: u64, replays: bool) {
    let mut rng = Rng::new(seed);
    while run.running() {
        let burst = if rng.unit() < 0.05 { 20 } else { 1 };
        for _ in 0..burst {
            let agent = (rng.next_u64() % u64::from(AGENTS)) as u32;
            let seq = run.next_seq(agent);
            let replay = replays && rng.unit() < 0.3;
            let ts = cfn_core::time::format_ms(stamp(run, &mut rng, replay));
            let wrote_ms = run.elapsed_ms();
            let mut cmd = run.tool("cfn-emit");
            cmd.args(["--agent", &format!("agent-{agent}"), "--timestamp", &ts])
                .args(["--tags", &tags(agent, seq), "chaos.w"])
                .arg(format!("{}", rng.next_u64() % 1000));
            let Ok(mut child) = cmd.spawn() else { continue };
            let kill = rng.unit() < 0.02;
            if kill {
                std::thread::sleep(Duration::from_micros(rng.next_u64() % 3000));
                let _ = child.kill();
                run.faults.add("writer_killed");
            }
            let status = child.wait().map(|s| s.code());
            let fate = match status {
                Ok(Some(0)) => Fate::Acked {
                    wrote_ms,
                    acked_ms: run.elapsed_ms(),
                },
                _ => Fate::Unsure,
            };
            if !kill {
                run.exits
                    .add(&format!("cfn-emit exit {:?}", status.ok().flatten()));
            }
            run.record_fate(&[(agent, seq)], fate);
        }
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 15));
    }
}

/// `cfn-emit --stdin` streams: JSON records of many agents, in bursts; acknowledged when the
/// stream closes with exit 0; some streams killed.
fn stream_writer(run: &Run, seed: u64) {
    let mut rng = Rng::new(seed);
    while run.running() {
        let Ok(mut child) = run
            .tool("cfn-emit")
            .arg("--stdin")
            .stdin(Stdio::piped())
            .spawn()
        else {
            continue;
        };
        let wrote_ms = run.elapsed_ms();
        let mut stdin = child.stdin.take().unwrap();
        let mut keys = Vec::new();
        let kill_at = if rng.unit() < 0.15 {
            rng.next_u64() % 5
        } else {
            u64::MAX
        };
        let mut killed = false;
        for burst in 0..(1 + rng.next_u64() % 6) {
            if burst == kill_at {
                let _ = child.kill();
                run.faults.add("stream_killed");
                killed = true;
                break;
            }
            for _ in 0..(1 + rng.next_u64() % 200) {
                let agent = (rng.next_u64() % u64::from(AGENTS)) as u32;
                let seq = run.next_seq(agent);
                let replay = rng.unit() < 0.1;
                let ts = cfn_core::time::format_ms(stamp(run, &mut rng, replay));
                keys.push((agent, seq));
                let line = format!(
                    "{{\"timestamp\":\"{ts}\",\"agent\":\"agent-{agent}\",\"metric\":\"chaos.s\",\"value\":{},\"tags\":{}}}\n",
                    rng.next_u64() % 1000,
                    tags(agent, seq)
                );
                if stdin.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
            let _ = stdin.flush();
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 300));
        }
        drop(stdin);
        let status = child.wait().ok().and_then(|s| s.code());
        let fate = match (killed, status) {
            (false, Some(0)) => Fate::Acked {
                wrote_ms,
                acked_ms: run.elapsed_ms(),
            },
            _ => Fate::Unsure,
        };
        if !killed {
            run.exits.add(&format!("cfn-emit --stdin exit {status:?}"));
        }
        run.record_fate(&keys, fate);
    }
}

fn archive_cmd(run: &Run) -> Command {
    let mut c = run.tool("cfn-archive");
    c.args(["--now", &cfn_core::time::format_ms(run.sim_now()), "run"])
        .args([
            "--hot",
            "2h",
            "--keep",
            "30d",
            "--upload",
            &format!("s3://{BUCKET}/cold/"),
        ])
        .args([
            "--upload-on-rotate",
            "--endpoint",
            &format!("http://127.0.0.1:{}", run.proxy_port),
        ])
        .args(["--http-timeout", "2s", "--retries", "2"]);
    c
}

/// The archiver every few seconds; runs overlap now and then and are killed: at random
/// moments from outside, or at a named point of a phase (sync, trim, rotate, upload, state
/// save) chosen at random, where the process SIGKILLs itself.
fn archiver(run: &Run, seed: u64) {
    let mut rng = Rng::new(seed);
    let points = cfn_archive::hooks::CRASH_POINTS;
    while run.running() {
        std::thread::sleep(Duration::from_millis(500 + rng.next_u64() % 2500));
        let overlap = rng.unit() < 0.15;
        let mut children: Vec<(Child, Option<(&str, &str)>)> = Vec::new();
        for _ in 0..if overlap { 2 } else { 1 } {
            let mut cmd = archive_cmd(run);
            let aimed = (rng.unit() < 0.3).then(|| points[rng.next_u64() as usize % points.len()]);
            if let Some((_, point)) = aimed {
                cmd.env("CFN_ARCHIVE_CRASH_AT", point);
            }
            if let Ok(c) = cmd.spawn() {
                children.push((c, aimed));
            }
        }
        if overlap {
            run.faults.add("archiver_overlapping_runs");
        }
        let mut killed_from_outside = false;
        if rng.unit() < 0.35 {
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 2500));
            for (c, _) in &mut children {
                if c.try_wait().ok().flatten().is_none() {
                    let _ = c.kill();
                    run.faults.add("archiver_killed");
                    killed_from_outside = true;
                }
            }
        }
        for (mut c, aimed) in children {
            let status = c.wait().ok();
            let code = status.and_then(|s| s.code());
            run.exits.add(&format!("cfn-archive exit {code:?}"));
            let by_sigkill = status.and_then(|s| s.signal()) == Some(libc::SIGKILL);
            if let (Some((phase, point)), true, false) = (aimed, by_sigkill, killed_from_outside) {
                run.faults
                    .add(&format!("archiver_killed_at {phase}:{point}"));
            }
        }
    }
}

/// Fills the filesystem of `dir` for `hold`, then frees it.
fn fill_for(run: &Run, dir: &Path, hold: Duration, what: &str) {
    let filler = dir.join(".chaos-filler");
    let mut f = match std::fs::File::create(&filler) {
        Ok(f) => f,
        Err(_) => return,
    };
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    let _ = f.flush();
    run.faults.add(what);
    let until = Instant::now() + hold;
    while Instant::now() < until && run.running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(f);
    let _ = std::fs::remove_file(&filler);
}

/// The disks: the archive full from 35% of the run for 15% of it, the hot directory full
/// for 4 s at 60%.
fn disks(run: &Run, mounted: bool) {
    if !mounted {
        return;
    }
    let at = |frac: f64| run.duration.mul_f64(frac);
    while run.started.elapsed() < at(0.35) && run.running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    fill_for(run, &run.archive, at(0.15), "archive_disk_full");
    while run.started.elapsed() < at(0.6) && run.running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    fill_for(run, &run.hot, Duration::from_secs(4), "hot_disk_full");
}

/// `cfn-cat --follow`, killed and restarted every 10 to 30 s; each run's output kept.
fn follower(run: &Run, seed: u64, runs: &Mutex<Vec<FollowRun>>) {
    let mut rng = Rng::new(seed);
    let mut n = 0;
    while run.running() {
        let output = run.root.join(format!("follow-{n}.jsonl"));
        let Ok(out) = std::fs::File::create(&output) else {
            return;
        };
        let started_ms = run.elapsed_ms();
        let Ok(mut child) = run
            .tool("cfn-cat")
            .args(["--follow", "--interval", "100ms"])
            .stdout(out)
            .spawn()
        else {
            return;
        };
        // About 25 lives a run (each rereads the hot shards), 10 s at least.
        let mean_ms = (run.duration.as_millis() as u64 / 25).max(20_000);
        let life = Duration::from_millis(mean_ms / 2 + rng.next_u64() % mean_ms);
        let until = Instant::now() + life;
        while Instant::now() < until && run.running() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !run.running() {
            // Time to read what the last writes appended.
            std::thread::sleep(Duration::from_secs(2));
        }
        let ended_ms = run.elapsed_ms();
        let _ = child.kill();
        let _ = child.wait();
        if run.running() {
            run.faults.add("follower_killed");
        }
        runs.lock().unwrap().push(FollowRun {
            output,
            started_ms,
            ended_ms,
        });
        n += 1;
    }
}

struct Serve {
    child: Child,
    port: u16,
}

/// A cfn-serve over the run's shards and archive; with `snapshots`, keeping snapshots of its
/// index every second (so each restart of the watching server starts from one, or builds
/// where it cannot be caught up exactly, and the audit checks its counts either way).
fn start_serve(run: &Run, snapshots: bool) -> anyhow::Result<Serve> {
    let port = cfn_testkit::free_port();
    let mut cmd = run.tool("cfn-serve");
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--index-span",
        "5d",
    ])
    .arg("--archive-dir")
    .arg(&run.archive);
    if snapshots {
        cmd.arg("--snapshot-dir")
            .arg(run.root.join("serve-snapshots"))
            .args(["--snapshot-every", "1s"]);
    }
    let child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "cfn-serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Serve { child, port })
}

/// cfn-serve, asked every second, killed and restarted three times during the run.
fn server(run: &Run) -> anyhow::Result<Serve> {
    let mut serve = start_serve(run, true)?;
    let agent = ureq::Agent::new_with_defaults();
    let mut restarts = 0;
    while run.running() {
        std::thread::sleep(Duration::from_secs(1));
        let url = format!(
            "http://127.0.0.1:{}/api/summary?window=1h&exact=1",
            serve.port
        );
        match agent.get(&url).call() {
            Ok(_) => run.exits.add("cfn-serve answered"),
            Err(_) => run.exits.add("cfn-serve did not answer"),
        }
        let due = run.duration.mul_f64(0.25 * f64::from(restarts + 1));
        if restarts < 3 && run.started.elapsed() > due {
            let _ = serve.child.kill();
            let _ = serve.child.wait();
            run.faults.add("serve_killed");
            serve = start_serve(run, true)?;
            restarts += 1;
            // How it started: from a snapshot, or a build (the report's exits say which).
            let metrics = agent
                .get(&format!("http://127.0.0.1:{}/metrics", serve.port))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            run.exits
                .add(if metrics.contains("\ncfn_serve_snapshot_restored 1") {
                    "cfn-serve restarted from a snapshot"
                } else {
                    "cfn-serve restarted with a build"
                });
        }
    }
    Ok(serve)
}

/// Options of a chaos run.
pub struct Options {
    pub minutes: f64,
    pub seed: u64,
    pub report: Option<PathBuf>,
    pub keep: bool,
    /// Sizes of the hot and archive tmpfs mounts, MiB.
    pub disks_mb: (u64, u64),
}

const MAKE_BUCKET: &str = r#"
import boto3, sys
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
             aws_access_key_id="chaos", aws_secret_access_key="chaos-secret").create_bucket(Bucket=sys.argv[2])
"#;

fn start_moto() -> anyhow::Result<(Child, u16)> {
    let port = cfn_testkit::free_port();
    let child = Command::new("moto_server")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("moto_server (pip install 'moto[server]')")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let made = Command::new("python3")
        .args(["-c", MAKE_BUCKET, &port.to_string(), BUCKET])
        .status()?;
    anyhow::ensure!(made.success(), "could not create the bucket");
    Ok((child, port))
}

/// Size-limited tmpfs mounts for the hot and archive directories when root; `false` (and
/// plain directories) otherwise.
fn mount_small(hot: &Path, archive: &Path, (hot_mb, archive_mb): (u64, u64)) -> bool {
    if cfn_core::fsutil::effective_uid() != 0 {
        return false;
    }
    let mount = |dir: &Path, size: &str| {
        Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if mount(hot, &format!("{hot_mb}m")) && mount(archive, &format!("{archive_mb}m")) {
        return true;
    }
    unmount(hot, archive);
    false
}

fn unmount(hot: &Path, archive: &Path) {
    for d in [hot, archive] {
        let _ = Command::new("umount").arg(d).stderr(Stdio::null()).status();
    }
}

/// Runs the chaos soak and its audit; the report goes to `opts.report` (JSON) and a summary
/// to stderr. Fails when any check fails.
pub fn run(opts: Options) -> anyhow::Result<()> {
    // The tools of the same build as this harness (contrib/build-release.sh --with-xtask puts
    // it and cfn-archive-faults in target/dist/dev, the tools one level up), with
    // cfn-archive-faults in cfn-archive's place: its kills land at named points of each phase
    // (`CFN_ARCHIVE_CRASH_AT`); without the variable it is cfn-archive.
    let here = std::env::current_exe()?
        .parent()
        .context("the harness's own directory")?
        .to_path_buf();
    let tools = [
        "cfn-emit",
        "cfn-cat",
        "cfn-agg",
        "cfn-archive-faults",
        "cfn-serve",
    ];
    let mut built = Vec::new();
    for tool in tools {
        let found = [here.join(tool), here.join("..").join(tool)]
            .into_iter()
            .find(|p| p.is_file());
        let Some(path) = found else {
            bail!(
                "chaos: {tool} is not beside this xtask ({}): run it from the release build, \
                 `bash contrib/build-release.sh --with-xtask && target/dist/dev/xtask chaos ...`",
                here.display()
            );
        };
        built.push((tool, path));
    }
    let tmp = tempfile::Builder::new().prefix("cfn-chaos.").tempdir()?;
    let root = tmp.path().to_path_buf();
    // The run's own copies: a build during a long run does not change its tools halfway.
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    for (tool, path) in built {
        let name = if tool == "cfn-archive-faults" {
            "cfn-archive"
        } else {
            tool
        };
        std::fs::copy(path, bin.join(name))?;
    }
    // --keep leaves the run's directory for a look (its path is in the report).
    let _tmp = if opts.keep {
        let _ = tmp.keep();
        None
    } else {
        Some(tmp)
    };
    let (hot, archive) = (root.join("hot"), root.join("archive"));
    std::fs::create_dir_all(&hot)?;
    std::fs::create_dir_all(&archive)?;
    let mounted = mount_small(&hot, &archive, opts.disks_mb);
    let result = soak(&opts, bin, root.clone(), mounted);
    if mounted && !opts.keep {
        unmount(&hot, &archive);
    } else if mounted {
        eprintln!(
            "chaos: kept {} (umount {} {} when done)",
            root.display(),
            hot.display(),
            archive.display()
        );
    }
    let report = result?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &opts.report {
        std::fs::write(p, format!("{text}\n"))?;
    }
    summarize(&report);
    if report["ok"] != json!(true) {
        bail!(
            "chaos: a check failed (report: {})",
            opts.report
                .as_ref()
                .map_or("stdout".into(), |p| p.display().to_string())
        );
    }
    Ok(())
}

fn soak(opts: &Options, bin: PathBuf, root: PathBuf, mounted: bool) -> anyhow::Result<Value> {
    let (mut moto, moto_port) = start_moto()?;
    let proxy = proxy::start(moto_port, opts.seed ^ 0x5eed, 0.3, Duration::from_secs(3))?;
    let run = Arc::new(Run {
        bin,
        hot: root.join("hot"),
        archive: root.join("archive"),
        root: root.clone(),
        proxy_port: proxy.port,
        started: Instant::now(),
        wall_start_ms: cfn_core::time::now_ms(),
        duration: Duration::from_secs_f64(opts.minutes * 60.0),
        stop: AtomicBool::new(false),
        seqs: (0..AGENTS).map(|_| AtomicU64::new(0)).collect(),
        emitted: Mutex::default(),
        faults: Tally::default(),
        exits: Tally::default(),
    });
    let follow_runs: Arc<Mutex<Vec<FollowRun>>> = Arc::default();
    let mut threads = Vec::new();
    let spawn = |f: Box<dyn FnOnce() + Send>| std::thread::spawn(f);
    for i in 0..6u64 {
        let (r, seed) = (Arc::clone(&run), opts_seed(opts, i));
        threads.push(spawn(Box::new(move || call_writer(&r, seed, i < 2))));
    }
    for i in 0..3u64 {
        let (r, seed) = (Arc::clone(&run), opts_seed(opts, 10 + i));
        threads.push(spawn(Box::new(move || stream_writer(&r, seed))));
    }
    for i in 0..2u64 {
        let (r, seed) = (Arc::clone(&run), opts_seed(opts, 20 + i));
        threads.push(spawn(Box::new(move || archiver(&r, seed))));
    }
    let r = Arc::clone(&run);
    threads.push(spawn(Box::new(move || disks(&r, mounted))));
    let (r, fr) = (Arc::clone(&run), Arc::clone(&follow_runs));
    let seed = opts_seed(opts, 30);
    threads.push(spawn(Box::new(move || follower(&r, seed, &fr))));
    let r = Arc::clone(&run);
    let serve_thread = std::thread::spawn(move || server(&r));

    std::thread::sleep(run.duration);
    run.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let mut serve = serve_thread
        .join()
        .map_err(|_| anyhow::anyhow!("server thread"))??;
    let report = settle_and_audit(&run, &proxy, &mut serve, moto_port, &follow_runs);
    let _ = serve.child.kill();
    let _ = serve.child.wait();
    let _ = moto.kill();
    let _ = moto.wait();
    let mut report = report?;
    // Every process the run started has been waited for: none may be left.
    let stray = stray_processes(&root);
    if !stray.is_empty() {
        report["ok"] = json!(false);
    }
    report["checks"]["processes_left"] = json!(stray);
    report["disks"] = json!(if mounted {
        format!(
            "hot: tmpfs of {} MiB, archive: tmpfs of {} MiB, both filled during the run",
            opts.disks_mb.0, opts.disks_mb.1
        )
    } else {
        "plain directories (not root, so no size-limited tmpfs could be mounted): no disk-full faults".to_string()
    });
    report["seed"] = json!(opts.seed);
    report["dir"] = json!(root.display().to_string());
    report["minutes"] = json!(opts.minutes);
    Ok(report)
}

fn opts_seed(opts: &Options, i: u64) -> u64 {
    opts.seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(i + 1)
}

/// After the run: the faults stop, one archiver run finishes the day's work, and the audit
/// reads everything.
fn settle_and_audit(
    run: &Run,
    proxy: &proxy::Proxy,
    serve: &mut Serve,
    moto_port: u16,
    follow_runs: &Mutex<Vec<FollowRun>>,
) -> anyhow::Result<Value> {
    proxy.faulty.store(false, Ordering::Relaxed);
    let last = archive_cmd(run).status()?;
    run.exits
        .add(&format!("cfn-archive final exit {:?}", last.code()));
    let emitted = run.emitted.lock().unwrap().clone();
    let mut found = audit::Found::default();
    let leftovers = audit::read_local(&run.hot, &run.archive, &mut found)?;
    let twins = audit::cold_twins(&run.archive)?;
    let cold = audit::read_cold(
        moto_port,
        BUCKET,
        &run.root.join("cold-copy"),
        &twins,
        &mut found,
    )?;
    let stores = audit::check_stores(&emitted, &found);
    let follow = audit::check_follow(&emitted, &follow_runs.lock().unwrap())?;
    let serve_check = check_serve(run, serve, &found)?;
    let ok = stores["ok"] == json!(true)
        && cold.replaced.is_empty()
        && follow["ok"] == json!(true)
        && serve_check["ok"] == json!(true)
        && leftovers.is_empty();
    let mut faults = run.faults.snapshot();
    for (k, v) in proxy.counts.lock().unwrap().iter() {
        faults.insert(format!("s3_{k}"), *v);
    }
    Ok(json!({
        "ok": ok,
        "faults": faults,
        "exits": run.exits.snapshot(),
        "checks": {
            "stores": stores,
            "follow": follow,
            "serve": serve_check,
            "cold_objects": cold.objects,
            "cold_objects_that_copy_archive_files": cold.copies,
            "cold_objects_replaced": cold.replaced.len(),
            "cold_objects_replaced_sample": cold.replaced.iter().take(5).collect::<Vec<_>>(),
            "leftover_files": leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        },
    }))
}

/// cfn-serve's count and sum of the run's records against `cfn-cat | cfn-agg` over the same
/// records (each record found, once, written to a file).
fn check_serve(run: &Run, serve: &mut Serve, found: &audit::Found) -> anyhow::Result<Value> {
    let end = cfn_core::time::now_ms() + 1000;
    let since = end - SIM_SPAN_MS - 3_600_000;
    let all = run.root.join("audit-records.jsonl");
    let mut text = String::new();
    for line in found.lines.values() {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&all, text)?;
    let (since_s, end_s) = (
        cfn_core::time::format_ms(since),
        cfn_core::time::format_ms(end),
    );
    let cat = run
        .tool("cfn-cat")
        .args(["--no-seek", "--since", &since_s, "--until", &end_s])
        .arg(&all)
        .stdout(Stdio::piped())
        .spawn()?;
    let agg = run
        .tool("cfn-agg")
        .stdin(cat.stdout.context("cfn-cat stdout")?)
        .stdout(Stdio::piped())
        .output()?;
    let expected: Vec<Value> = String::from_utf8(agg.stdout)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // A fresh server over what is left, and the one that watched the run.
    let mut answers = BTreeMap::new();
    let fresh = start_serve(run, false)?;
    for (name, port) in [("watching", serve.port), ("fresh", fresh.port)] {
        let url = format!(
            "http://127.0.0.1:{port}/api/summary?exact=1&window={}s&now={}",
            (end - since) / 1000,
            end_s
        );
        let body = ureq::Agent::new_with_defaults()
            .get(&url)
            .call()?
            .body_mut()
            .read_to_string()?;
        answers.insert(name, serde_json::from_str::<Vec<Value>>(&body)?);
    }
    let mut fresh = fresh;
    let _ = fresh.child.kill();
    let _ = fresh.child.wait();
    let totals = |aggs: &[Value]| -> BTreeMap<String, (u64, f64)> {
        aggs.iter()
            .map(|a| {
                let m = a["metric"].as_str().unwrap_or_default().to_string();
                (
                    m,
                    (
                        a["count"].as_u64().unwrap_or(0),
                        a["sum"].as_f64().unwrap_or(0.0),
                    ),
                )
            })
            .collect()
    };
    let want = totals(&expected);
    let got: BTreeMap<&str, _> = answers.iter().map(|(k, v)| (*k, totals(v))).collect();
    let ok = got.values().all(|g| *g == want);
    Ok(json!({ "cfn_cat_cfn_agg": want, "cfn_serve": got, "ok": ok }))
}

/// Processes still running whose command line names the run's directory.
fn stray_processes(root: &Path) -> Vec<String> {
    let needle = root.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

fn summarize(r: &Value) {
    let s = &r["checks"]["stores"];
    let f = &r["checks"]["follow"];
    eprintln!(
        "chaos: seed {} for {} min; {}",
        r["seed"], r["minutes"], r["disks"]
    );
    eprintln!("chaos: faults injected: {}", r["faults"]);
    eprintln!(
        "chaos: stores: {} acknowledged, {} stored once, {} missing, {} duplicated; {} unsure ({} stored, {} twice); {} never emitted; {} torn lines",
        s["acknowledged"],
        s["stored_once"],
        s["missing"],
        s["duplicated"],
        s["unsure"],
        s["unsure_stored"],
        s["unsure_duplicated"],
        s["never_emitted"],
        s["torn_lines"]
    );
    eprintln!(
        "chaos: follow: {} runs, {} delivered, {} twice, {} of {} appended while running missed",
        f["runs"], f["delivered"], f["delivered_twice"], f["missed"], f["appended_while_running"]
    );
    eprintln!("chaos: serve: {}", r["checks"]["serve"]);
    eprintln!(
        "chaos: leftover files {}, processes left {}; {}",
        r["checks"]["leftover_files"],
        r["checks"]["processes_left"],
        if r["ok"] == json!(true) {
            "every check passed"
        } else {
            "CHECKS FAILED"
        }
    );
}
