//! `xtask fleet --hosts 8 --minutes N --seed S`: a fleet under fire, then an audit of it all
//! (issue 41).
//!
//! Each host is a network namespace on a bridge, with its own size-limited tmpfs for hot
//! shards and its own archive filesystem, running what the package runs: agents writing
//! numbered records (the chaos soak's writers: per-call and `--stdin`, replays, kills, some
//! agents going silent), `cfn-analyze` every analysis interval with `--alertmanager`,
//! cfn-archive every few seconds uploading to the shared bucket (the chaos soak's archiver,
//! killed at its crash points), cfn-serve (killed and restarted, keeping snapshots) and
//! node_exporter's textfile collector. The peers are real and in the harness's namespace:
//! Prometheus with native histograms, Alertmanager and its webhook receiver, moto_server
//! behind the chaos soak's fault proxy. The faults, by seed (`plan.rs`): a host cut off,
//! a host rebooted (every process killed, its tmpfs emptied), Alertmanager killed mid-incident,
//! the bucket throttling everyone, a host's clock two minutes ahead, disks filling. Then the
//! audit (`audit.rs`), whose report's schema is in docs/DESIGN.md.

mod audit;
mod net;
mod peers;
mod plan;

use crate::chaos::{self, Run, proxy};
use anyhow::Context;
use cfn_testkit::gendata::Rng;
use net::Network;
use plan::Plan;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUCKET: &str = "fleet";
/// Agents per host; agent numbers are `host * 1000 + n`, so a record's key names its host.
const AGENTS_PER_HOST: u32 = 40;
const SILENT_PER_HOST: u32 = 4;
const HOT_MB: u64 = 256;
const ARCHIVE_MB: u64 = 512;

/// Options of a fleet run.
pub struct Options {
    pub hosts: usize,
    pub minutes: f64,
    pub seed: u64,
    pub report: PathBuf,
    pub keep: bool,
}

/// One host: its `Run` (the chaos soak's, in this host's namespace) and its node_exporter.
pub struct Host {
    pub run: Arc<Run>,
    pub index: usize,
    pub ip: std::net::Ipv4Addr,
    pub state: PathBuf,
    node: Mutex<Vec<Child>>,
}

impl Host {
    fn name(&self) -> &str {
        &self.run.host
    }

    fn start_node_exporter(&self) -> anyhow::Result<()> {
        let child = self
            .run
            .process("prometheus-node-exporter")
            .arg(format!(
                "--web.listen-address={}:{}",
                self.ip,
                peers::NODE_PORT
            ))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!(
                "--collector.textfile.directory={}",
                self.state.join("textfile").display()
            ))
            .spawn()
            .context("prometheus-node-exporter (Debian package prometheus-node-exporter)")?;
        self.node.lock().unwrap().push(child);
        Ok(())
    }
}

/// What the faults did, and when (ms since the run began).
#[derive(Default)]
pub struct Timeline(Mutex<Vec<(u64, String)>>);

impl Timeline {
    fn add(&self, run: &Run, what: String) {
        eprintln!("fleet: {:>7.1}s {what}", run.elapsed_ms() as f64 / 1000.0);
        self.0.lock().unwrap().push((run.elapsed_ms(), what));
    }
}

/// Everything shared by the fleet's threads.
pub struct Fleet {
    pub hosts: Vec<Host>,
    pub plan: Plan,
    pub net: Network,
    pub proxy: proxy::Proxy,
    pub am: Mutex<peers::Alertmanager>,
    /// Alertmanager's lives: (started, killed) in ms since the run began.
    pub am_lives: Mutex<Vec<(u64, Option<u64>)>>,
    pub receiver: cfn_testkit::MockServer,
    pub prometheus: peers::Prometheus,
    pub moto_port: u16,
    pub root: PathBuf,
    pub timeline: Timeline,
}

impl Fleet {
    fn clock(&self) -> &Run {
        &self.hosts[0].run
    }

    fn running(&self) -> bool {
        self.clock().running()
    }
}

/// Runs the fleet and its audit; the report goes to `opts.report` and a summary to stderr.
/// Exits 2 without root (namespaces, veth pairs and mounts need it).
pub fn run(opts: Options) -> anyhow::Result<()> {
    if cfn_core::fsutil::effective_uid() != 0 {
        eprintln!(
            "fleet: needs root: each host is a network namespace with a veth pair and tmpfs \
             mounts of its own (run it with sudo)"
        );
        std::process::exit(2);
    }
    anyhow::ensure!(opts.hosts >= 8, "fleet: --hosts must be 8 or more");
    anyhow::ensure!(opts.hosts <= 200, "fleet: --hosts must be 200 or fewer");
    net::remove_stale();
    let tmp = tempfile::Builder::new().prefix("cfn-fleet.").tempdir()?;
    let root = tmp.path().to_path_buf();
    let bin = root.join("bin");
    let tools = [
        "cfn-emit",
        "cfn-cat",
        "cfn-agg",
        "cfn-alert",
        "cfn-promtext",
        "cfn-archive-faults",
        "cfn-serve",
    ];
    chaos::copy_tools("fleet", &tools, &bin)?;
    // The package's analysis job, as it ships.
    let analyze = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/cfn-analyze");
    std::fs::copy(&analyze, bin.join("cfn-analyze"))
        .with_context(|| format!("fleet: {}", analyze.display()))?;
    let result = fleet_run(&opts, &bin, &root);
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            unmount_all(&root);
            return Err(e);
        }
    };
    // Everything of the run is gone by now (the network dropped, the mounts undone): what is
    // still there was left behind.
    let mounts = unmount_all(&root);
    let leftovers = json!({
        "processes": chaos::stray_processes(&root),
        "mounts": mounts,
        "network": Network::leftovers(report["network_tag"].as_str().unwrap_or("none")),
    });
    let clean = ["processes", "mounts", "network"]
        .iter()
        .all(|k| leftovers[k].as_array().is_some_and(|a| a.is_empty()));
    report["checks"]["left_behind"] = leftovers;
    if !clean {
        report["ok"] = json!(false);
    }
    report["seed"] = json!(opts.seed);
    report["minutes"] = json!(opts.minutes);
    report["dir"] = json!(root.display().to_string());
    if opts.keep {
        let _ = tmp.keep();
    }
    std::fs::write(
        &opts.report,
        format!("{}\n", serde_json::to_string_pretty(&report)?),
    )?;
    audit::summarize(&report);
    if report["ok"] != json!(true) {
        anyhow::bail!("fleet: a check failed (report: {})", opts.report.display());
    }
    Ok(())
}

/// Unmounts every mount under `root` (innermost first); the ones that would not go.
fn unmount_all(root: &Path) -> Vec<String> {
    let mounted = || -> Vec<String> {
        let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let needle = root.to_string_lossy().into_owned();
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&needle))
            .map(str::to_string)
            .collect()
    };
    let mut points = mounted();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = std::process::Command::new("umount")
            .arg(&p)
            .stderr(Stdio::null())
            .status();
    }
    mounted()
}

fn fleet_run(opts: &Options, bin: &Path, root: &Path) -> anyhow::Result<Value> {
    let duration = Duration::from_secs_f64(opts.minutes * 60.0);
    let plan = Plan::new(opts.hosts, duration, opts.seed);
    let net = Network::create(opts.hosts)?;
    let network_tag = net.tag.clone();
    let (mut moto, moto_port) = chaos::start_moto(BUCKET)?;
    let result = (|| {
        let proxy = proxy::start(
            net::bridge_ip().into(),
            moto_port,
            opts.seed ^ 0x5eed,
            0.2,
            Duration::from_secs(3),
        )?;
        let receiver = cfn_testkit::MockServer::start(|_, _| cfn_testkit::reply(200, "ok"));
        let am = peers::Alertmanager::start(
            &root.join("alertmanager"),
            &receiver.url(),
            plan.tick.mul_f64(0.7),
            plan.tick,
        )?;
        let targets: Vec<(String, std::net::Ipv4Addr)> = net
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("h{i}"), h.ip))
            .collect();
        let prometheus = peers::Prometheus::start(&root.join("prometheus"), &targets, "2s")?;
        std::fs::write(root.join("rules.toml"), plan.rules_toml())?;
        // Every host's clock starts here: the plan's times count from now.
        let hosts = make_hosts(bin, root, &net, &plan, proxy.port, duration)?;
        let fleet = Arc::new(Fleet {
            hosts,
            plan,
            net,
            proxy,
            am: Mutex::new(am),
            am_lives: Mutex::new(vec![(0, None)]),
            receiver,
            prometheus,
            moto_port,
            root: root.to_path_buf(),
            timeline: Timeline::default(),
        });
        let report = under_fire(&fleet, opts);
        // The network goes with the last reference (its drop kills what is left in the
        // namespaces and deletes them).
        let fleet = Arc::try_unwrap(fleet)
            .map_err(|_| anyhow::anyhow!("fleet: a thread still holds the fleet"))?;
        for h in &fleet.hosts {
            for mut c in h.node.lock().unwrap().drain(..) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        drop(fleet);
        report
    })();
    let _ = moto.kill();
    let _ = moto.wait();
    let mut report = result?;
    report["network_tag"] = json!(network_tag);
    Ok(report)
}

/// Each host's directories, mounts and `Run`.
fn make_hosts(
    bin: &Path,
    root: &Path,
    net: &Network,
    plan: &Plan,
    proxy_port: u16,
    duration: Duration,
) -> anyhow::Result<Vec<Host>> {
    let mut hosts = Vec::new();
    let (started, wall) = (Instant::now(), cfn_core::time::now_ms());
    for (i, nh) in net.hosts.iter().enumerate() {
        let name = format!("h{i}");
        let dir = root.join("hosts").join(&name);
        let first = i as u32 * 1000;
        let mut run = Run::new(
            bin.to_path_buf(),
            dir.clone(),
            &name,
            first..first + AGENTS_PER_HOST,
        );
        for d in [&run.hot, &run.archive] {
            std::fs::create_dir_all(d)?;
        }
        anyhow::ensure!(
            chaos::mount_tmpfs(&run.hot, HOT_MB) && chaos::mount_tmpfs(&run.archive, ARCHIVE_MB),
            "fleet: could not mount a tmpfs for {name}"
        );
        run.netns = Some(Arc::clone(&nh.ns));
        run.s3_endpoint = format!("http://{}:{proxy_port}", net::bridge_ip());
        run.upload = format!("s3://{BUCKET}/cold/");
        run.serve_ip = nh.ip.into();
        run.serve_port = Some(peers::SERVE_PORT);
        run.metric_prefix = "fleet";
        run.duration = duration;
        run.started = started;
        run.wall_start_ms = wall;
        run.sim_span_ms = 0;
        // Replays a few days back: every host's late records reach days already uploaded,
        // without 40 days of objects per host for one moto_server to take.
        run.replay_span_ms = 3 * 86_400_000;
        run.silent = SILENT_PER_HOST;
        if i == plan.skewed {
            run.skew_ms = plan::SKEW_MS;
        }
        let state = dir.join("state");
        std::fs::create_dir_all(state.join("textfile"))?;
        hosts.push(Host {
            run: Arc::new(run),
            index: i,
            ip: nh.ip,
            state,
            node: Mutex::default(),
        });
    }
    Ok(hosts)
}

fn seed_of(opts: &Options, host: usize, i: u64) -> u64 {
    opts.seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add((host as u64) << 16 | i)
}

/// Starts every host's servers, then its writers and jobs and the faults; after the run's
/// minutes, stops them and audits.
fn under_fire(fleet: &Arc<Fleet>, opts: &Options) -> anyhow::Result<Value> {
    let servers: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| {
            h.start_node_exporter()?;
            let run = Arc::clone(&h.run);
            Ok(std::thread::spawn(move || chaos::server(&run)))
        })
        .collect::<anyhow::Result<_>>()?;
    // The writers start once every cfn-serve counts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet
        .hosts
        .iter()
        .any(|h| h.run.serve_starts.lock().unwrap().is_empty())
    {
        anyhow::ensure!(Instant::now() < deadline, "fleet: cfn-serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut threads = Vec::new();
    for h in &fleet.hosts {
        let r = Arc::clone(&h.run);
        let (s1, s2, s3) = (
            seed_of(opts, h.index, 1),
            seed_of(opts, h.index, 2),
            seed_of(opts, h.index, 3),
        );
        let r2 = Arc::clone(&r);
        threads.push(std::thread::spawn(move || {
            chaos::call_writer(&r2, s1, true)
        }));
        let r2 = Arc::clone(&r);
        threads.push(std::thread::spawn(move || chaos::stream_writer(&r2, s2)));
        let r2 = Arc::clone(&r);
        threads.push(std::thread::spawn(move || chaos::archiver(&r2, s3)));
        let (f, i) = (Arc::clone(fleet), h.index);
        threads.push(std::thread::spawn(move || incident_writer(&f, i)));
        let (f, i) = (Arc::clone(fleet), h.index);
        threads.push(std::thread::spawn(move || analyzer(&f, i)));
        if h.index == fleet.plan.disk_full {
            let r2 = Arc::clone(&r);
            threads.push(std::thread::spawn(move || chaos::disks(&r2, true)));
        }
    }
    let f = Arc::clone(fleet);
    threads.push(std::thread::spawn(move || faults(&f)));
    let end = fleet.clock().started + fleet.clock().duration;
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    for h in &fleet.hosts {
        h.run.stop.store(true, Ordering::SeqCst);
    }
    fleet.timeline.add(
        fleet.clock(),
        "the run is over: stopping the writers and jobs".into(),
    );
    for t in threads {
        let _ = t.join();
    }
    fleet
        .timeline
        .add(fleet.clock(), "stopped; settling, then the audit".into());
    let mut serves = Vec::new();
    for s in servers {
        serves.push(
            s.join()
                .map_err(|_| anyhow::anyhow!("fleet: a server thread panicked"))??,
        );
    }
    let report = audit::settle_and_audit(fleet, &mut serves);
    for mut s in serves {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    report
}

/// Each second, the host's incident metrics: above the threshold while an incident of its
/// is on, below otherwise; numbered records like the other writers', audited with them.
fn incident_writer(fleet: &Fleet, h: usize) {
    let run = &fleet.hosts[h].run;
    let mut rng = Rng::new(seed_of_fleet(fleet, h));
    let agent = run.agents.start;
    while run.running() {
        std::thread::sleep(Duration::from_millis(1000));
        let Some(_writing) = run.begin_write() else {
            continue;
        };
        let now = run.elapsed_ms();
        let ts = cfn_core::time::format_ms(run.sim_now());
        let mut lines = String::new();
        let mut keys = Vec::new();
        for (k, inc) in fleet.plan.incidents.iter().enumerate() {
            let value = if fleet.plan.firing(k, h, now) {
                plan::FIRING_VALUE
            } else {
                rng.next_u64() % (plan::THRESHOLD / 2)
            };
            let seq = run.next_seq(agent);
            keys.push((agent, seq));
            lines.push_str(&format!(
                "{{\"timestamp\":\"{ts}\",\"agent\":\"agent-{agent}\",\"metric\":\"{}\",\"value\":{value},\"tags\":{}}}\n",
                inc.metric,
                chaos::tags(agent, seq)
            ));
        }
        let Ok(mut child) = run
            .tool("cfn-emit")
            .arg("--stdin")
            .stdin(Stdio::piped())
            .spawn()
        else {
            continue;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(lines.as_bytes());
        }
        let status = child.wait().ok().and_then(|s| s.code());
        let fate = if status == Some(0) {
            chaos::audit::Fate::Acked {
                wrote_ms: now,
                acked_ms: run.elapsed_ms(),
            }
        } else {
            chaos::audit::Fate::Unsure { wrote_ms: now }
        };
        run.exits.add(&format!("incident cfn-emit exit {status:?}"));
        run.record_fate(&keys, fate);
    }
}

fn seed_of_fleet(fleet: &Fleet, h: usize) -> u64 {
    (h as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ fleet.plan.tick.as_millis() as u64
}

/// The package's analysis job on its timer: cfn-analyze (cfn-cat | cfn-agg -> cfn-promtext,
/// cfn-alert --alertmanager) at every tick of the plan, as the host's systemd timer would.
fn analyzer(fleet: &Fleet, h: usize) {
    let host = &fleet.hosts[h];
    let run = &host.run;
    let tick = fleet.plan.tick;
    let rules = fleet.root.join("rules.toml");
    let am = fleet.am.lock().unwrap().url();
    let args = format!(
        "--alertmanager {am} --alert-valid-for {}s --http-timeout 2s --retries 1",
        3 * tick.as_secs()
    );
    let mut n = 1u32;
    while run.running() {
        let due = run.started + tick * n;
        n += 1;
        while Instant::now() < due && run.running() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !run.running() || !run.powered() {
            continue;
        }
        let status = run
            .tool("cfn-analyze")
            .env("CFN_STATE_DIR", &host.state)
            .env("CFN_ANALYZE_WINDOW", format!("{}s", tick.as_secs()))
            .env("CFN_ALERT_RULES", &rules)
            .env("CFN_ALERT_ARGS", &args)
            .env("TMPDIR", &host.state)
            .status();
        run.exits.add(&format!(
            "cfn-analyze exit {:?}",
            status.ok().and_then(|s| s.code())
        ));
    }
}

/// The plan's faults, each at its time.
fn faults(fleet: &Fleet) {
    let p = &fleet.plan;
    let mut events: Vec<(u64, &str)> = vec![
        (p.cut.1, "link_down"),
        (p.cut.2, "link_up"),
        (p.reboot.1, "power_off"),
        (p.reboot.2, "power_on"),
        (p.am_down.0, "alertmanager_kill"),
        (p.am_down.1, "alertmanager_start"),
        (p.throttle.0, "throttle_on"),
        (p.throttle.1, "throttle_off"),
    ];
    events.sort();
    let clock = fleet.clock();
    for (at, what) in events {
        while clock.elapsed_ms() < at {
            if !fleet.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = fault(fleet, what) {
            fleet.timeline.add(clock, format!("{what} FAILED: {e:#}"));
        }
    }
}

fn fault(fleet: &Fleet, what: &str) -> anyhow::Result<()> {
    let p = &fleet.plan;
    let clock = fleet.clock();
    let name = |h: usize| fleet.hosts[h].name().to_string();
    match what {
        "link_down" | "link_up" => {
            let cut = &fleet.hosts[p.cut.0].run.cut_off;
            if what == "link_down" {
                cut.store(true, Ordering::SeqCst);
            }
            fleet.net.set_link(p.cut.0, what == "link_up")?;
            if what == "link_up" {
                cut.store(false, Ordering::SeqCst);
            }
            fleet
                .timeline
                .add(clock, format!("{what} {}", name(p.cut.0)));
        }
        "power_off" => {
            let host = &fleet.hosts[p.reboot.0];
            let run = &host.run;
            run.held.store(true, Ordering::SeqCst);
            run.powered_off_at.store(run.elapsed_ms(), Ordering::SeqCst);
            run.off.store(true, Ordering::SeqCst);
            let killed = fleet.net.kill_all_in(p.reboot.0);
            // The tmpfs emptied: unmounted (once its processes are gone) and mounted anew.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let gone = std::process::Command::new("umount")
                    .arg(&run.hot)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if gone || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            anyhow::ensure!(
                chaos::mount_tmpfs(&run.hot, HOT_MB),
                "could not mount {}",
                run.hot.display()
            );
            run.faults.add("rebooted");
            fleet.timeline.add(
                clock,
                format!(
                    "power_off {}: {killed} processes killed, hot tmpfs emptied",
                    name(p.reboot.0)
                ),
            );
        }
        "power_on" => {
            let host = &fleet.hosts[p.reboot.0];
            host.start_node_exporter()?;
            // cfn-serve starts first (its thread sees the power back) and lets the writers go.
            host.run.off.store(false, Ordering::SeqCst);
            fleet
                .timeline
                .add(clock, format!("power_on {}", name(p.reboot.0)));
        }
        "alertmanager_kill" => {
            fleet.am.lock().unwrap().kill();
            if let Some(life) = fleet.am_lives.lock().unwrap().last_mut() {
                life.1 = Some(clock.elapsed_ms());
            }
            fleet.timeline.add(clock, "alertmanager killed".into());
        }
        "alertmanager_start" => {
            fleet.am.lock().unwrap().run()?;
            fleet
                .am_lives
                .lock()
                .unwrap()
                .push((clock.elapsed_ms(), None));
            fleet.timeline.add(clock, "alertmanager started".into());
        }
        "throttle_on" | "throttle_off" => {
            fleet
                .proxy
                .throttle
                .store(what == "throttle_on", Ordering::SeqCst);
            fleet.timeline.add(clock, format!("bucket {what}"));
        }
        _ => unreachable!("{what}"),
    }
    Ok(())
}
