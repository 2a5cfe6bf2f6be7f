//! cfn-promtext end to end: golden output, escaping, promtool and node_exporter.

use cfn_testkit::{TestCommand, TestDir, free_port, peer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn known_aggregates_render_byte_for_byte() {
    let dir = TestDir::new();
    let input = std::fs::read(fixture("known.aggs.jsonl")).unwrap();
    let out = dir.cmd("cfn-promtext").stdin(input.clone()).run();
    assert_eq!(
        out.success().stdout(),
        std::fs::read_to_string(fixture("known.prom")).unwrap()
    );
    let out = dir
        .cmd("cfn-promtext")
        .arg("--base-units")
        .stdin(input)
        .run();
    assert_eq!(
        out.success().stdout(),
        std::fs::read_to_string(fixture("known.base-units.prom")).unwrap()
    );
}

#[test]
fn label_values_and_names_are_escaped_and_sanitized() {
    let dir = TestDir::new();
    let agg = r#"{"metric":"9lives.p-99 ms","tags":{"path":"C:\\dir \"x\"\nnext","__name__":"n","quantile":"q"},"count":1,"sum":1,"avg":1,"min":1,"max":1,"p50":1}"#;
    let out = dir.cmd("cfn-promtext").stdin(format!("{agg}\n")).run();
    let text = out.success().stdout();
    assert!(
        text.contains("# TYPE cfn__9lives_p_99_ms summary\n"),
        "{text}"
    );
    assert!(
        text.contains(r#"cfn__9lives_p_99_ms{path="C:\\dir \"x\"\nnext",tag__name__="n",tagquantile="q",quantile="0.5"} 1"#),
        "{text}"
    );
    assert!(text.ends_with('\n'));
}

#[test]
fn help_text_escapes_backslash_and_newline() {
    let dir = TestDir::new();
    let agg = r#"{"metric":"a\\b","unit":"x\ny","count":1,"sum":1,"avg":1,"min":1,"max":1}"#;
    let text = dir
        .cmd("cfn-promtext")
        .stdin(format!("{agg}\n"))
        .run()
        .stdout();
    assert!(
        text.contains("# HELP cfn_a_b Distribution of a\\\\b (unit: x\\ny), from cfn-agg\n"),
        "{text}"
    );
}

#[test]
fn empty_input_writes_an_empty_valid_exposition() {
    let dir = TestDir::new();
    let target = dir.join("cfn.prom");
    dir.cmd("cfn-promtext")
        .arg("-o")
        .arg(&target)
        .stdin("")
        .run()
        .success();
    assert_eq!(std::fs::read(&target).unwrap(), b"");
}

#[test]
fn output_file_is_replaced_atomically_with_no_temp_left() {
    let dir = TestDir::new();
    let target = dir.join("cfn.prom");
    std::fs::write(&target, "old\n").unwrap();
    let input = std::fs::read(fixture("known.aggs.jsonl")).unwrap();
    dir.cmd("cfn-promtext")
        .arg("-o")
        .arg(&target)
        .stdin(input)
        .run()
        .success();
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        std::fs::read_to_string(fixture("known.prom")).unwrap()
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

fn benchmark_aggregates(dir: &TestDir, by_agent: bool) -> String {
    let mut data = Vec::new();
    cfn_testkit::gendata::write_records(&mut data, 200_000, 1_795_773_600_000, 86_400_000, 42)
        .unwrap();
    let f = dir.write("bench.jsonl", data);
    let mut cmd = dir.cmd("cfn-agg");
    if by_agent {
        cmd.args(["--by", "agent", "--by", "tag:phase"]);
    }
    cmd.arg(&f).run().success().stdout()
}

#[test]
fn promtool_accepts_the_benchmark_data_set() {
    let Some(promtool) = peer("promtool", "Debian package prometheus") else {
        return;
    };
    let dir = TestDir::new();
    for by_agent in [false, true] {
        let aggs = benchmark_aggregates(&dir, by_agent);
        let plain = dir
            .cmd("cfn-promtext")
            .stdin(aggs.clone())
            .run()
            .success()
            .stdout();
        let check = TestCommand::program(&promtool)
            .args(["check", "metrics"])
            .stdin(plain)
            .run();
        // Exit 3 is lint findings (abbreviated units without --base-units); 1 is a parse error.
        assert!(check.code() == 0 || check.code() == 3, "{check:?}");
        assert!(
            !check.stdout().contains("error") && !check.stderr().contains("error"),
            "{check:?}"
        );
        let base = dir
            .cmd("cfn-promtext")
            .arg("--base-units")
            .stdin(aggs)
            .run()
            .success()
            .stdout();
        let check = TestCommand::program(&promtool)
            .args(["check", "metrics"])
            .stdin(base)
            .run();
        check.success();
        assert_eq!(
            check.stdout() + &check.stderr(),
            "",
            "lint problems with --base-units"
        );
    }
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn node_exporter_serves_every_series_and_never_sees_a_partial_file() {
    let Some(exporter) = peer(
        "prometheus-node-exporter",
        "Debian package prometheus-node-exporter",
    ) else {
        return;
    };
    let dir = TestDir::new();
    let textdir = dir.join("textfile");
    std::fs::create_dir_all(&textdir).unwrap();
    let port = free_port();
    let _guard = KillOnDrop(
        std::process::Command::new(exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                textdir.display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(port, "/metrics").is_err() {
        assert!(Instant::now() < deadline, "node_exporter did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The pipeline: records in hot shards -> cfn-cat -> cfn-agg -> cfn-promtext -o.
    let mut data = Vec::new();
    cfn_testkit::gendata::write_records(&mut data, 5_000, cfn_core_now_ms(), 20_000, 9).unwrap();
    dir.write("cfn-metrics-0.jsonl", data);
    let cat = dir
        .cmd("cfn-cat")
        .args(["--since", "30s"])
        .run()
        .success()
        .stdout();
    let aggs = dir
        .cmd("cfn-agg")
        .args(["--by", "agent"])
        .stdin(cat)
        .run()
        .success()
        .stdout();
    let target = textdir.join("cfn.prom");
    dir.cmd("cfn-promtext")
        .arg("-o")
        .arg(&target)
        .stdin(aggs.clone())
        .run()
        .success();
    let written = std::fs::read_to_string(&target).unwrap();
    let scraped = http_get(port, "/metrics").unwrap();
    assert!(
        scraped.contains("node_textfile_scrape_error 0"),
        "{scraped}"
    );
    let scraped_lines: std::collections::HashSet<&str> = scraped.lines().collect();
    let mut series = 0;
    for line in written.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            scraped_lines.contains(line),
            "series missing from the scrape: {line}"
        );
        series += 1;
    }
    assert!(series > 1000, "only {series} series");

    // Rewrite 1,000 times while another thread scrapes in a loop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut scrapes, mut errors) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = http_get(port, "/metrics").unwrap();
                scrapes += 1;
                if !body.contains("node_textfile_scrape_error 0") {
                    errors.push(body);
                }
                // Leave the second core to the writers.
                std::thread::sleep(Duration::from_millis(5));
            }
            (scrapes, errors)
        })
    };
    // Two different contents, so every rewrite really changes the file.
    let small = aggs.lines().take(20).collect::<Vec<_>>().join("\n") + "\n";
    let larger = aggs.lines().take(200).collect::<Vec<_>>().join("\n") + "\n";
    let bin = cfn_testkit::bin_path("cfn-promtext");
    let t0 = Instant::now();
    for i in 0..1000 {
        let input = if i % 2 == 0 { &small } else { &larger };
        let mut child = std::process::Command::new(&bin)
            .arg("-o")
            .arg(&target)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (scrapes, errors) = scraper.join().unwrap();
    eprintln!("1000 rewrites and {scrapes} scrapes in {:?}", t0.elapsed());
    assert!(scrapes > 10, "only {scrapes} scrapes happened");
    assert!(
        errors.is_empty(),
        "{} of {scrapes} scrapes reported an error; first:\n{}",
        errors.len(),
        errors[0]
    );
}

fn cfn_core_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
