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

pub(crate) mod audit;
pub(crate) mod proxy;

use anyhow::{Context, bail};
use audit::{Fate, FollowRun, Key};
use cfn_testkit::gendata::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
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
pub(crate) struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub(crate) fn add(&self, what: &str) {
        *self.0.lock().unwrap().entry(what.to_string()).or_default() += 1;
    }
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// One host under fire: its tools, directories and clock, and what its writers were told.
/// The chaos soak has one; the fleet (`xtask fleet`) one per network namespace.
pub(crate) struct Run {
    pub(crate) bin: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) hot: PathBuf,
    pub(crate) archive: PathBuf,
    /// `CFN_HOST` of every tool.
    pub(crate) host: String,
    /// The network namespace the host's processes run in (none: the harness's own).
    pub(crate) netns: Option<Arc<std::fs::File>>,
    /// The S3 endpoint (the fault proxy) and the upload URL.
    pub(crate) s3_endpoint: String,
    pub(crate) upload: String,
    /// Where cfn-serve listens: this address, on a free port or `serve_port`.
    pub(crate) serve_ip: IpAddr,
    pub(crate) serve_port: Option<u16>,
    /// The metrics' names: `<prefix>.w` (one cfn-emit per record), `<prefix>.s` (streams).
    pub(crate) metric_prefix: &'static str,
    pub(crate) started: Instant,
    pub(crate) wall_start_ms: i64,
    pub(crate) duration: Duration,
    /// How long the simulated clock runs in the run (0: the real clock), and how far this
    /// host's clock is ahead of it.
    pub(crate) sim_span_ms: i64,
    pub(crate) skew_ms: i64,
    /// How far back replayed records are stamped, at most.
    pub(crate) replay_span_ms: i64,
    /// The host's agents; the last `silent` of them stop writing half-way through.
    pub(crate) agents: Range<u32>,
    pub(crate) silent: u32,
    pub(crate) stop: AtomicBool,
    /// Powered off (a fleet host's "reboot"), or writers held while cfn-serve restarts.
    pub(crate) off: AtomicBool,
    pub(crate) held: AtomicBool,
    /// When the power last went (ms since the run began).
    pub(crate) powered_off_at: AtomicU64,
    /// The host's link is down (a fleet fault): the harness cannot reach its cfn-serve, so
    /// a restart due meanwhile waits for the link.
    pub(crate) cut_off: AtomicBool,
    /// Writes under way (a hold waits for them).
    pub(crate) inflight: AtomicU64,
    pub(crate) seqs: Vec<AtomicU64>,
    pub(crate) emitted: Mutex<HashMap<Key, Fate>>,
    /// Each cfn-serve start: ms since the run began, and whether it restored a snapshot.
    pub(crate) serve_starts: Mutex<Vec<(u64, bool)>>,
    pub(crate) faults: Tally,
    pub(crate) exits: Tally,
}

impl Run {
    /// A host named `host` with its directories under `root` and the given agents.
    pub(crate) fn new(bin: PathBuf, root: PathBuf, host: &str, agents: Range<u32>) -> Self {
        Run {
            bin,
            hot: root.join("hot"),
            archive: root.join("archive"),
            root,
            host: host.to_string(),
            netns: None,
            s3_endpoint: String::new(),
            upload: format!("s3://{BUCKET}/cold/"),
            serve_ip: IpAddr::from([127, 0, 0, 1]),
            serve_port: None,
            metric_prefix: "chaos",
            started: Instant::now(),
            wall_start_ms: cfn_core::time::now_ms(),
            duration: Duration::ZERO,
            sim_span_ms: SIM_SPAN_MS,
            skew_ms: 0,
            replay_span_ms: 40 * DAY_MS,
            seqs: agents.clone().map(|_| AtomicU64::new(0)).collect(),
            agents,
            silent: 0,
            stop: AtomicBool::new(false),
            off: AtomicBool::new(false),
            held: AtomicBool::new(false),
            powered_off_at: AtomicU64::new(0),
            cut_off: AtomicBool::new(false),
            inflight: AtomicU64::new(0),
            emitted: Mutex::default(),
            serve_starts: Mutex::default(),
            faults: Tally::default(),
            exits: Tally::default(),
        }
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The host's clock: the simulated time (it ends at the real end of the run and starts
    /// `sim_span_ms` earlier), plus the host's skew.
    pub(crate) fn sim_now(&self) -> i64 {
        if self.sim_span_ms == 0 {
            return self.wall_start_ms + self.elapsed_ms() as i64 + self.skew_ms;
        }
        let dur = self.duration.as_millis() as f64;
        let frac = (self.started.elapsed().as_millis() as f64 / dur).min(1.0);
        let end = self.wall_start_ms + dur as i64;
        end - self.sim_span_ms + (frac * self.sim_span_ms as f64) as i64 + self.skew_ms
    }

    /// A process of the host: in its network namespace, with its environment.
    pub(crate) fn process(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(ns) = &self.netns {
            let fd = ns.as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe and touches nothing of the parent's.
            #[allow(unsafe_code)]
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        c
    }

    pub(crate) fn tool(&self, name: &str) -> Command {
        let mut c = self.process(self.bin.join(name));
        c.env("PATH", path_with(&self.bin))
            .env("CFN_METRICS_DIR", &self.hot)
            .env("CFN_ARCHIVE_DIR", &self.archive)
            .env("CFN_HOST", &self.host)
            .env("CFN_LOCK_TIMEOUT_MS", "3000")
            .env("AWS_ACCESS_KEY_ID", "chaos")
            .env("AWS_SECRET_ACCESS_KEY", "chaos-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("CFN_HTTP_BACKOFF_MS", "50");
        c
    }

    /// An agent to write for: any of the host's, but the silent ones after half the run.
    fn pick_agent(&self, rng: &mut Rng) -> u32 {
        let n = self.agents.len() as u64;
        let quiet = self.started.elapsed() > self.duration / 2;
        let speaking = if quiet { n - u64::from(self.silent) } else { n };
        self.agents.start + (rng.next_u64() % speaking.max(1)) as u32
    }

    pub(crate) fn next_seq(&self, agent: u32) -> u64 {
        self.seqs[(agent - self.agents.start) as usize].fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record_fate(&self, keys: &[Key], fate: Fate) {
        let mut e = self.emitted.lock().unwrap();
        for k in keys {
            e.insert(*k, fate);
        }
    }

    pub(crate) fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn powered(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }

    /// Starts a write unless the host is off or its writers are held; `None` then (the
    /// caller waits a little and asks again).
    pub(crate) fn begin_write(&self) -> Option<WriteGuard<'_>> {
        if self.off.load(Ordering::Relaxed) || self.held.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            return None;
        }
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if self.held.load(Ordering::SeqCst) {
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(WriteGuard(self))
    }

    /// Holds the writers and waits for the writes under way: what is written before and
    /// after `f` is then known exactly.
    pub(crate) fn with_writers_held<T>(&self, f: impl FnOnce() -> T) -> T {
        self.held.store(true, Ordering::SeqCst);
        while self.inflight.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = f();
        self.held.store(false, Ordering::SeqCst);
        out
    }
}

/// A write under way (see [`Run::with_writers_held`]).
pub(crate) struct WriteGuard<'a>(&'a Run);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP client that gives up after `secs`: a host cut off mid-request (the fleet's) never
/// answers, and its packets are dropped, not refused.
pub(crate) fn http_client(secs: u64) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(secs)))
        .build()
        .into()
}

/// `PATH` with `bin` first (the host's scripts find its tools there).
fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut p = bin.as_os_str().to_os_string();
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

/// A record's value: a latency in whole milliseconds, lognormal around 2 s (whole, so sums
/// are exact in any order; large, so whole numbers cost the quantiles nothing).
fn latency_ms(rng: &mut Rng) -> u64 {
    rng.lognormal(7.6, 0.9).round().clamp(1.0, 1e7) as u64
}

/// A timestamp for a record written now: the host's now, or for a replay up to
/// `replay_span_ms` (40 days in the chaos soak) before it.
fn stamp(run: &Run, rng: &mut Rng, replay: bool) -> i64 {
    let now = run.sim_now();
    if replay {
        now - (rng.unit() * run.replay_span_ms as f64) as i64 - 1000
    } else {
        now
    }
}

pub(crate) fn tags(agent: u32, seq: u64) -> String {
    format!("{{\"a\":\"agent-{agent}\",\"s\":\"{seq}\"}}")
}

/// Per-call writers: one cfn-emit per record, in bursts; some replays; some killed.
pub(crate) fn call_writer(run: &Run, seed: u64, replays: bool) {
    let mut rng = Rng::new(seed);
    let metric = format!("{}.w", run.metric_prefix);
    while run.running() {
        let burst = if rng.unit() < 0.05 { 20 } else { 1 };
        for _ in 0..burst {
            let Some(_writing) = run.begin_write() else {
                continue;
            };
            let agent = run.pick_agent(&mut rng);
            let seq = run.next_seq(agent);
            let replay = replays && rng.unit() < 0.3;
            let ts = cfn_core::time::format_ms(stamp(run, &mut rng, replay));
            let wrote_ms = run.elapsed_ms();
            let mut cmd = run.tool("cfn-emit");
            cmd.args(["--agent", &format!("agent-{agent}"), "--timestamp", &ts])
                .args(["--tags", &tags(agent, seq), &metric])
                .arg(latency_ms(&mut rng).to_string())
                .arg("ms");
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
                _ => Fate::Unsure { wrote_ms },
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
pub(crate) fn stream_writer(run: &Run, seed: u64) {
    let mut rng = Rng::new(seed);
    while run.running() {
        let Some(_writing) = run.begin_write() else {
            continue;
        };
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
                let agent = run.pick_agent(&mut rng);
                let seq = run.next_seq(agent);
                let replay = rng.unit() < 0.1;
                let ts = cfn_core::time::format_ms(stamp(run, &mut rng, replay));
                keys.push((agent, seq));
                let line = format!(
                    "{{\"timestamp\":\"{ts}\",\"agent\":\"agent-{agent}\",\"metric\":\"{}.s\",\"value\":{},\"unit\":\"ms\",\"tags\":{}}}\n",
                    run.metric_prefix,
                    latency_ms(&mut rng),
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
            _ => Fate::Unsure { wrote_ms },
        };
        if !killed {
            run.exits.add(&format!("cfn-emit --stdin exit {status:?}"));
        }
        run.record_fate(&keys, fate);
    }
}

pub(crate) fn archive_cmd(run: &Run) -> Command {
    let mut c = run.tool("cfn-archive");
    c.args(["--now", &cfn_core::time::format_ms(run.sim_now()), "run"])
        .args(["--hot", "2h", "--keep", "30d", "--upload", &run.upload])
        .args(["--upload-on-rotate", "--endpoint", &run.s3_endpoint])
        .args(["--http-timeout", "2s", "--retries", "2"]);
    c
}

/// The archiver every few seconds; runs overlap now and then and are killed: at random
/// moments from outside, or at a named point of a phase (sync, trim, rotate, upload, state
/// save) chosen at random, where the process SIGKILLs itself.
pub(crate) fn archiver(run: &Run, seed: u64) {
    let mut rng = Rng::new(seed);
    let points = cfn_archive::hooks::CRASH_POINTS;
    while run.running() {
        std::thread::sleep(Duration::from_millis(500 + rng.next_u64() % 2500));
        if !run.powered() {
            continue;
        }
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
pub(crate) fn disks(run: &Run, mounted: bool) {
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

pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) addr: std::net::SocketAddr,
}

impl Serve {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Its `/metrics` text (empty when it does not answer).
    pub(crate) fn metrics_text(&self) -> String {
        http_client(10)
            .get(&self.url("/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }
}

/// A cfn-serve over the host's shards and archive; with `snapshots`, keeping snapshots of
/// its index every second (so each restart of the watching server starts from one, or
/// builds where it cannot be caught up exactly, and the audit checks its counts either way).
pub(crate) fn start_serve(run: &Run, snapshots: bool) -> anyhow::Result<Serve> {
    let port = run.serve_port.unwrap_or_else(cfn_testkit::free_port);
    let addr = std::net::SocketAddr::new(run.serve_ip, port);
    let mut cmd = run.tool("cfn-serve");
    cmd.args(["--listen", &addr.to_string(), "--index-span", "5d"])
        .arg("--archive-dir")
        .arg(&run.archive);
    if snapshots {
        cmd.arg("--snapshot-dir")
            .arg(run.root.join("serve-snapshots"))
            .args(["--snapshot-every", "1s"]);
    }
    let child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "cfn-serve did not start on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let serve = Serve { child, addr };
    // How it started: from a snapshot (its histograms go on counting), or a build.
    let restored = serve
        .metrics_text()
        .contains("\ncfn_serve_snapshot_restored 1");
    run.serve_starts
        .lock()
        .unwrap()
        .push((run.elapsed_ms(), restored));
    Ok(serve)
}

/// cfn-serve, asked every second, killed and restarted three times during the run (the
/// writers held meanwhile, so which records each life counted is known); after a power
/// cut, started again when the power is back.
pub(crate) fn server(run: &Run) -> anyhow::Result<Serve> {
    let mut serve = start_serve(run, true)?;
    let agent = http_client(10);
    let mut restarts = 0;
    while run.running() {
        std::thread::sleep(Duration::from_secs(1));
        if !run.powered() {
            let _ = serve.child.kill();
            let _ = serve.child.wait();
            while !run.powered() {
                std::thread::sleep(Duration::from_millis(100));
            }
            // The power cut left the writers held: they write again once this one counts.
            serve = start_serve(run, true)?;
            run.held.store(false, Ordering::SeqCst);
            continue;
        }
        match agent
            .get(&serve.url("/api/summary?window=1h&exact=1"))
            .call()
        {
            Ok(_) => run.exits.add("cfn-serve answered"),
            Err(_) => run.exits.add("cfn-serve did not answer"),
        }
        let due = run.duration.mul_f64(0.25 * f64::from(restarts + 1));
        // A restart while the harness cannot reach the host would wait for the link, past
        // start_serve's deadline when a cut outlasts it (the 30-minute fleet run's 540 s).
        if restarts < 3 && run.started.elapsed() > due && !run.cut_off.load(Ordering::SeqCst) {
            serve = run.with_writers_held(|| -> anyhow::Result<Serve> {
                let _ = serve.child.kill();
                let _ = serve.child.wait();
                run.faults.add("serve_killed");
                start_serve(run, true)
            })?;
            restarts += 1;
            let restored = run.serve_starts.lock().unwrap().last().is_some_and(|s| s.1);
            run.exits.add(if restored {
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

/// moto_server on a free loopback port, with `bucket` made.
pub(crate) fn start_moto(bucket: &str) -> anyhow::Result<(Child, u16)> {
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
        .args(["-c", MAKE_BUCKET, &port.to_string(), bucket])
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
    if mount_tmpfs(hot, hot_mb) && mount_tmpfs(archive, archive_mb) {
        return true;
    }
    unmount(hot, archive);
    false
}

/// A tmpfs of `mb` MiB on `dir` (root only).
pub(crate) fn mount_tmpfs(dir: &Path, mb: u64) -> bool {
    Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mb}m,mode=0755"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn unmount(hot: &Path, archive: &Path) {
    for d in [hot, archive] {
        let _ = Command::new("umount").arg(d).stderr(Stdio::null()).status();
    }
}

/// Copies the tools of the same build as this harness into `bin`: a build during a long run
/// does not change its tools halfway. contrib/build-release.sh --with-xtask puts the harness
/// and cfn-archive-faults in target/dist/dev, the tools one level up; cfn-archive-faults takes
/// cfn-archive's place: its kills land at named points of each phase
/// (`CFN_ARCHIVE_CRASH_AT`), and without the variable it is cfn-archive.
pub(crate) fn copy_tools(task: &str, tools: &[&str], bin: &Path) -> anyhow::Result<()> {
    let here = std::env::current_exe()?
        .parent()
        .context("the harness's own directory")?
        .to_path_buf();
    std::fs::create_dir_all(bin)?;
    for &tool in tools {
        let found = [here.join(tool), here.join("..").join(tool)]
            .into_iter()
            .find(|p| p.is_file());
        let Some(path) = found else {
            bail!(
                "{task}: {tool} is not beside this xtask ({}): run it from the release build, \
                 `bash contrib/build-release.sh --with-xtask && target/dist/dev/xtask {task} ...`",
                here.display()
            );
        };
        let name = if tool == "cfn-archive-faults" {
            "cfn-archive"
        } else {
            tool
        };
        std::fs::copy(path, bin.join(name))?;
    }
    Ok(())
}

/// Runs the chaos soak and its audit; the report goes to `opts.report` (JSON) and a summary
/// to stderr. Fails when any check fails.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("cfn-chaos.").tempdir()?;
    let root = tmp.path().to_path_buf();
    let bin = root.join("bin");
    let tools = [
        "cfn-emit",
        "cfn-cat",
        "cfn-agg",
        "cfn-archive-faults",
        "cfn-serve",
    ];
    copy_tools("chaos", &tools, &bin)?;
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
    let (mut moto, moto_port) = start_moto(BUCKET)?;
    let proxy = proxy::start(
        IpAddr::from([127, 0, 0, 1]),
        moto_port,
        opts.seed ^ 0x5eed,
        0.3,
        Duration::from_secs(3),
    )?;
    let mut host = Run::new(bin, root.clone(), "chaos-host", 0..AGENTS);
    host.s3_endpoint = format!("http://127.0.0.1:{}", proxy.port);
    host.duration = Duration::from_secs_f64(opts.minutes * 60.0);
    let run = Arc::new(host);
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
    for (name, server) in [("watching", &*serve), ("fresh", &fresh)] {
        let url = server.url(&format!(
            "/api/summary?exact=1&window={}s&now={}",
            (end - since) / 1000,
            end_s
        ));
        let body = http_client(300)
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
pub(crate) fn stray_processes(root: &Path) -> Vec<String> {
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
