//! Benchmarks that need code rather than a shell: the JSON parser choice for the aggregation
//! hot loop (serde_json vs simd-json) and cfn-serve's latency under polling clients.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[derive(serde::Deserialize)]
struct SimdWire<'a> {
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metric: Option<Cow<'a, str>>,
    value: Option<f64>,
    #[serde(borrow)]
    agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    unit: Option<Cow<'a, str>>,
}

/// Parses every line of `path` with the production parser (serde_json, borrowed, in
/// cfn-core) and with simd-json's serde API on the same fields; prints lines/s of each.
pub fn parse(path: &str) -> anyhow::Result<()> {
    let data = std::fs::read(path)?;
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let n = lines.len() as f64;
    let mut best = [f64::MAX; 2];
    for _ in 0..3 {
        let t = Instant::now();
        let mut sum = 0.0;
        for l in &lines {
            if let Ok(r) = cfn_core::reader::parse_record(l) {
                sum += r.value + r.ts_ms as f64 * 0.0;
            }
        }
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        std::hint::black_box(sum);
        let t = Instant::now();
        let mut buf = Vec::with_capacity(512);
        let mut sum = 0.0;
        for l in &lines {
            buf.clear();
            buf.extend_from_slice(l);
            if let Ok(r) = simd_json::serde::from_slice::<SimdWire<'_>>(&mut buf) {
                let ts = r
                    .timestamp
                    .as_deref()
                    .and_then(cfn_core::time::parse_timestamp_str)
                    .unwrap_or(0);
                sum += r.value.unwrap_or(0.0) + ts as f64 * 0.0;
                std::hint::black_box((&r.metric, &r.agent, &r.unit));
            }
        }
        best[1] = best[1].min(t.elapsed().as_secs_f64());
        std::hint::black_box(sum);
    }
    println!("parser\tlines/s (best of 3, {} lines)", lines.len());
    println!(
        "cfn-core::reader::parse_record (byte-level fast path, serde_json for the rest)\t{:.0}",
        n / best[0]
    );
    println!(
        "simd-json serde::from_slice (same fields)\t{:.0}",
        n / best[1]
    );
    Ok(())
}

fn get(port: u16, path: &str) -> std::io::Result<(u16, usize)> {
    get_body(port, path).map(|(status, body)| (status, body.len()))
}

/// A GET's status and its whole answer (headers included).
fn get_body(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let status = std::str::from_utf8(&body[..body.len().min(16)])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body))
}

/// A cfn-serve for the day bench (rollups by agent and by the phase tag: the day's 10,000
/// agent-metric series and the tag's take 34 MB, inside the default budget), snapshots in
/// `snapshots`; returns it once listening, its port and how long that took (ms).
fn spawn_day_server(
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
    snapshots: &std::path::Path,
) -> anyhow::Result<(std::process::Child, u16, f64)> {
    use std::io::BufRead;
    let started = Instant::now();
    let mut server = std::process::Command::new(bin_dir.join("cfn-serve"))
        .args(["--listen", "127.0.0.1:0", "--index-tags", "phase", "--dir"])
        .arg(dir)
        .arg("--snapshot-dir")
        .arg(snapshots)
        .env("CFN_ARCHIVE_DIR", dir.join("no-archive"))
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stderr = std::io::BufReader::new(server.stderr.take().expect("piped"));
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        anyhow::ensure!(stderr.read_line(&mut line)? > 0, "cfn-serve exited");
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let port = cfn_testkit::serve::listening_port(&line)
        .ok_or_else(|| anyhow::anyhow!("no port in {line:?}"))?;
    Ok((server, port, ms))
}

/// The peak RSS of process `pid` as /proc says it.
fn peak_rss(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Appends `n` records stamped now (after the bench's fixed `now`, so the dashboard asked
/// about it is unchanged, but a restart must read them).
fn append_now(bin_dir: &std::path::Path, dir: &std::path::Path, n: u64) -> anyhow::Result<()> {
    let mut child = std::process::Command::new(bin_dir.join("cfn-emit"))
        .args(["--stdin", "--agent", "bench-late"])
        .env("CFN_METRICS_DIR", dir)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
    for i in 0..n {
        writeln!(stdin, "bench.late {i}")?;
    }
    drop(stdin);
    anyhow::ensure!(child.wait()?.success(), "cfn-emit --stdin failed");
    Ok(())
}

/// How two answers differ: the fields other than quantiles that differ, and the largest
/// relative difference of a quantile (digests compressed in another order give other
/// estimates within their error; counts, sums and extremes never differ).
fn json_difference(a: &[u8], b: &[u8]) -> String {
    fn body(raw: &[u8]) -> Option<serde_json::Value> {
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        serde_json::from_slice(&raw[at + 4..]).ok()
    }
    fn walk(a: &serde_json::Value, b: &serde_json::Value, key: &str, out: &mut (u64, f64)) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
                for (k, v) in x {
                    match y.get(k) {
                        Some(w) => walk(v, w, k, out),
                        None => out.0 += 1,
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                x.iter().zip(y).for_each(|(v, w)| walk(v, w, key, out));
            }
            (Value::Number(x), Value::Number(y)) if key.starts_with('p') => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                if x != y {
                    out.1 = out.1.max((x - y).abs() / y.abs().max(f64::MIN_POSITIVE));
                }
            }
            _ if a == b => {}
            _ => out.0 += 1,
        }
    }
    let (Some(a), Some(b)) = (body(a), body(b)) else {
        return "DIFFERENT (not JSON)".into();
    };
    let mut out = (0, 0.0);
    walk(&a, &b, "", &mut out);
    format!(
        "{} other fields differ; quantiles within {:.2}%",
        out.0,
        out.1 * 100.0
    )
}

/// Restarts of the day's server from its snapshot: after a clean stop (SIGTERM, which
/// writes it) and after a SIGKILL with records appended since. Each time: start-up until
/// listening, until the 24 h dashboard is answered, and whether that answer is byte for
/// byte the built server's (asked at one fixed `now`).
fn restarts(
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
    snapshots: &std::path::Path,
    (server, port): (&mut std::process::Child, u16),
) -> anyhow::Result<()> {
    let now = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()?;
    let now = String::from_utf8_lossy(&now.stdout).trim().to_string();
    let path = format!("/api/dashboard?range=24h&now={now}");
    let (_, built) = get_body(port, &path)?;
    let t = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()?
        .success();
    anyhow::ensure!(
        ok && server.wait()?.success(),
        "cfn-serve did not stop cleanly"
    );
    println!(
        "clean stop (SIGTERM, snapshot written): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "restart\tlistening ms\tdashboard 24h answered ms\tbytes as a fresh build's\tpeak RSS"
    );
    for how in [
        "after SIGTERM",
        "after SIGKILL, 100,000 records appended since",
    ] {
        if how != "after SIGTERM" {
            append_now(bin_dir, dir, 100_000)?;
        }
        let t = Instant::now();
        let (mut again, port, up) = spawn_day_server(bin_dir, dir, snapshots)?;
        let (status, body) = get_body(port, &path)?;
        let answered = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(status == 200, "{path}: {status}");
        let rss = peak_rss(again.id());
        let _ = again.kill();
        let _ = again.wait();
        // The answer of a build from the records as they are now (none the first time: the
        // records are the built server's).
        let fresh = if how == "after SIGTERM" {
            built.clone()
        } else {
            let empty = tempfile::tempdir()?;
            let (mut fresh, port, _) = spawn_day_server(bin_dir, dir, empty.path())?;
            let (_, body) = get_body(port, &path)?;
            let _ = fresh.kill();
            let _ = fresh.wait();
            body
        };
        let same = if body == fresh {
            "identical".to_string()
        } else {
            json_difference(&body, &fresh)
        };
        println!("{how}\t{up:.0}\t{answered:.0}\t{same}\t{rss}");
    }
    Ok(())
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Starts cfn-serve on `dir`, then 20 clients poll for `secs` while a writer appends;
/// prints request latency p50/p99 per endpoint and the error count.
pub fn serve(
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
    secs: u64,
    clients: usize,
) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = std::process::Command::new(bin_dir.join("cfn-serve"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "cfn-serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, emit, dir) = (stop.clone(), bin_dir.join("cfn-emit"), dir.to_path_buf());
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut child = std::process::Command::new(emit)
                .args(["--stdin", "--dir"])
                .arg(&dir)
                .stdin(std::process::Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().expect("piped");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..50 {
                    writeln!(
                        stdin,
                        "{{\"agent\":\"agent-{}\",\"metric\":\"coordination.time\",\"value\":{}}}",
                        i % 500,
                        (n + i) % 997
                    )?;
                }
                n += 50;
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(stdin);
            child.wait()?;
            Ok(n)
        })
    };
    let paths = [
        "/api/summary?window=30s",
        "/api/series?metric=coordination.time&range=1h&bucket=1m",
        "/api/shards",
        "/metrics",
        "/api/alerts",
    ];
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut lat: Vec<(usize, f64)> = Vec::new();
                let mut errors = 0u64;
                let mut i = c;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let p = i % paths.len();
                    let t = Instant::now();
                    match get(port, paths[p]) {
                        Ok((200, _)) => lat.push((p, t.elapsed().as_secs_f64() * 1000.0)),
                        _ => errors += 1,
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                (lat, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut errors = 0;
    for h in handles {
        let (lat, e) = h.join().map_err(|_| anyhow::anyhow!("client panicked"))?;
        errors += e;
        for (p, ms) in lat {
            all[p].push(ms);
        }
    }
    let appended = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let _ = server.kill();
    let _ = server.wait();
    println!("endpoint\trequests\tp50 ms\tp99 ms\tmax ms");
    for (p, mut l) in all.into_iter().enumerate() {
        l.sort_by(f64::total_cmp);
        println!(
            "{}\t{}\t{:.1}\t{:.1}\t{:.1}",
            paths[p],
            l.len(),
            pct(&l, 0.5),
            pct(&l, 0.99),
            l.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!("errors\t{errors}\t(records appended meanwhile: {appended})");
    Ok(())
}

/// The dashboard over a full day of shards: the floor (`cat shards | wc -l`, reading them
/// once), the index build at start-up, each page and endpoint (median of 5, the one-second
/// cache expired between), the views filtered by agent or tag and grouped by agent (from the
/// rollups by agent and tag), how soon an appended record shows, and the peak RSS. Every time
/// is also given as a ratio to the floor.
pub fn serve_big(bin_dir: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    let shards: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".jsonl"))
        .collect();
    let bytes: u64 = shards
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut floor = Vec::new();
    let mut lines = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("cat \"$@\" | wc -l")
            .arg("sh")
            .args(&shards)
            .output()?;
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
        lines = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
    }
    floor.sort_by(f64::total_cmp);
    let floor = floor[1];
    println!(
        "shards: {:.0} MB, {lines} lines in {}; floor `cat shards | wc -l`: {floor:.0} ms (median of 3)",
        bytes as f64 / 1e6,
        dir.display()
    );
    let snapshots = tempfile::tempdir()?;
    let (mut server, port, build_ms) = spawn_day_server(bin_dir, dir, snapshots.path())?;
    println!(
        "index build (start-up until listening, no snapshot): {build_ms:.0} ms = {:.2}x the floor (target: 3x)",
        build_ms / floor
    );
    println!("request\tms (median of 5)\tx floor\tbytes\tstatus");
    for p in [
        "/api/dashboard?range=24h",
        "/api/dashboard?range=1h",
        "/api/dashboard?range=5m",
        "/api/summary?window=24h",
        "/api/series?metric=coordination.time&range=24h&bucket=15m",
        "/api/metrics?range=24h",
        "/api/summary?window=30s",
        "/metrics",
        "/api/dashboard?range=1h&agent=agent-42",
        "/api/dashboard?range=24h&agent=agent-42",
        "/api/dashboard?range=24h&tag=phase=consensus",
        "/api/summary?window=24h&by=agent",
        "/api/summary?window=24h&agent=*",
        "/api/summary?window=24h&tag=host=web3",
    ] {
        let mut times = Vec::new();
        let (mut status, mut size) = (0, 0);
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1100));
            let t = Instant::now();
            (status, size) = get(port, p)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{p}\t{:.1}\t{:.3}\t{size}\t{status}",
            times[2],
            times[2] / floor
        );
    }
    // Freshness: a record appended now, asked for at once and then every 10 ms.
    let t = Instant::now();
    let ok = std::process::Command::new(bin_dir.join("cfn-emit"))
        .args(["--agent", "bench", "bench.fresh", "1"])
        .env("CFN_METRICS_DIR", dir)
        .status()?
        .success();
    anyhow::ensure!(ok, "cfn-emit failed");
    let mut seen_after = None;
    for i in 0..300 {
        let (_, size) = get(
            port,
            &format!("/api/summary?window=1m&metric=bench.fresh&i={i}"),
        )?;
        // An empty answer is the headers and `[]`; one aggregate is far longer.
        if size > 400 {
            seen_after = Some(t.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "appended record visible after: {}",
        seen_after.map_or("not within 3 s".to_string(), |ms| format!("{ms:.1} ms"))
    );
    println!("peak RSS: {} (target: under 160 MB)", peak_rss(server.id()));
    restarts(bin_dir, dir, snapshots.path(), (&mut server, port))
}

/// CPU time (user + system) of all waited-for children so far, in microseconds.
fn children_cpu_us() -> u64 {
    // SAFETY: getrusage only writes the struct it is given, which is zeroed and ours.
    #[allow(unsafe_code)]
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// One `cfn-emit --stdin` fed `rate` records a second for `secs`; returns (records, CPU us).
fn stream_once(
    bin: &std::path::Path,
    dir: &std::path::Path,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(u64, u64)> {
    use std::io::Write;
    let before = children_cpu_us();
    let mut child = std::process::Command::new(bin.join("cfn-emit"))
        .args(["--stdin", "--agent", "agent-1"])
        .env("CFN_METRICS_DIR", dir)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let start = Instant::now();
    let total = rate * secs;
    let mut sent = 0u64;
    while sent < total {
        // Send what is due by now, then sleep a millisecond (or until the next record).
        let due = ((start.elapsed().as_micros() as u64 * rate) / 1_000_000 + 1).min(total);
        while sent < due {
            writeln!(stdin, "stream.seq {sent}")?;
            sent += 1;
        }
        stdin.flush()?;
        let next_in = Duration::from_micros(1_000_000 / rate.max(1)).min(Duration::from_millis(1));
        std::thread::sleep(next_in);
    }
    drop(stdin);
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "cfn-emit --stdin failed: {status}");
    Ok((total, children_cpu_us() - before))
}

/// `xtask bench-stream`: CPU per record of one long-lived `cfn-emit --stdin` at several
/// rates (the start-up cost, measured with no records, is subtracted).
pub fn stream(bin: &std::path::Path, rates: &[(u64, u64)]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, start_us) = stream_once(bin, dir.path(), 1, 0)?;
    println!("rate/s\trecords\tCPU ms\tus per record (start-up {start_us} us subtracted)");
    for &(rate, secs) in rates {
        let (n, us) = stream_once(bin, dir.path(), rate, secs)?;
        println!(
            "{rate}\t{n}\t{:.1}\t{:.1}",
            us as f64 / 1000.0,
            us.saturating_sub(start_us) as f64 / n as f64
        );
    }
    Ok(())
}
