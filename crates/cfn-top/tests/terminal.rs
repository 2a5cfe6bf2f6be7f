//! cfn-top end to end in a pseudo-terminal: the real binary draws on a pty whose output a
//! VT100 parser turns into a screen; keys are written to the pty like a person types them.

use cfn_testkit::{TestCommand, TestDir, bin_path};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{LocalModes, Winsize, tcgetattr, tcsetwinsize};
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Pty {
    master: File,
    slave: OwnedFd,
    /// Every byte the program wrote.
    output: Arc<Mutex<Vec<u8>>>,
    child: Child,
    /// The pty's line discipline before the program started.
    before: LocalModes,
}

fn now_text(back_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    cfn_core::time::format_ms(now - back_ms)
}

impl Pty {
    fn spawn(dir: &TestDir, (cols, rows): (u16, u16), env: &[(&str, &str)]) -> Self {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave: OwnedFd = File::options()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap()
            .into();
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(&slave, size).unwrap();
        let before = tcgetattr(&slave).unwrap().local_modes;
        assert!(before.contains(LocalModes::ICANON | LocalModes::ECHO));
        let mut cmd = Command::new(bin_path("cfn-top"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TERM", "xterm-256color")
            .env("TZ", "UTC")
            .env("CFN_METRICS_DIR", dir.path())
            .env("CFN_ARCHIVE_DIR", dir.join("archive"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()))
            .spawn()
            .unwrap();
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), Arc::clone(&output));
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends with EIO once every slave descriptor is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            master,
            slave,
            output,
            child,
            before,
        }
    }

    fn screen(&self, (cols, rows): (u16, u16)) -> String {
        let mut p = vt100::Parser::new(rows.try_into().unwrap(), cols.try_into().unwrap(), 0);
        p.process(&self.output.lock().unwrap());
        p.screen().contents()
    }

    /// Waits until the screen satisfies `ok`, returning it and how long that took.
    fn wait_for(
        &self,
        size: (u16, u16),
        limit: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let s = self.screen(size);
            if ok(&s) {
                return (s, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "screen not as expected after {limit:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Waits for the program to end; its exit code.
    fn wait_exit(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "cfn-top did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pty is back in cooked mode with echo (as before the program) and the program's
    /// last words to the terminal leave the alternate screen and show the cursor.
    fn assert_restored(&self) {
        let before = self.before;
        let now = tcgetattr(&self.slave).unwrap().local_modes;
        assert!(
            now.contains(LocalModes::ICANON | LocalModes::ECHO),
            "raw mode left on: {now:?}"
        );
        assert_eq!(now, before);
        std::thread::sleep(Duration::from_millis(100));
        let out = self.output.lock().unwrap().clone();
        let entered = find(&out, b"\x1b[?1049h").expect("never entered the alternate screen");
        let left = rfind(&out, b"\x1b[?1049l").expect("never left the alternate screen");
        let shown = rfind(&out, b"\x1b[?25h").expect("cursor never shown again");
        assert!(left > entered && shown > entered);
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Records from a few seconds ago: whole numbers, so every figure shows exactly.
fn seed(dir: &TestDir) {
    let mut shards = [String::new(), String::new(), String::new()];
    for i in 0..90 {
        let (metric, value) = match i % 3 {
            0 => ("queue.depth", (i * 7) % 50),
            1 => ("tasks.done", 1 + i % 4),
            _ => ("retries", (i * i) % 13),
        };
        shards[i % 3].push_str(&format!(
            "{{\"timestamp\":\"{}\",\"agent\":\"agent-{}\",\"metric\":\"{metric}\",\"value\":{value}}}\n",
            now_text(8_000 - i as i64 * 50),
            i % 5
        ));
    }
    for (n, s) in shards.iter().enumerate() {
        dir.write(&format!("cfn-metrics-{n}.jsonl"), s);
    }
}

/// The figures `cfn-cat --since 30s | cfn-agg` gives, per metric.
fn agg_figures(dir: &TestDir) -> Vec<(String, Vec<String>)> {
    let records = dir
        .cmd("cfn-cat")
        .args(["--since", "30s"])
        .run()
        .success()
        .stdout();
    let aggs = dir.cmd("cfn-agg").stdin(records).run().success().jsonl();
    aggs.iter()
        .map(|a: &Value| {
            let f = |k: &str| a[k].as_f64().unwrap();
            let figures = [f("count"), f("p50"), f("p95"), f("p99"), f("min"), f("max")]
                .iter()
                .map(|v| format!("{v}"))
                .collect();
            (a["metric"].as_str().unwrap().to_string(), figures)
        })
        .collect()
}

/// The same figures read off the screen (count, then the five figures after the rate).
fn screen_figures(screen: &str, metric: &str) -> Vec<String> {
    let line = screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(metric))
        .unwrap_or_else(|| panic!("{metric} not on screen:\n{screen}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    [w[1], w[3], w[4], w[5], w[6], w[7]]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn live_figures_equal_cfn_agg_new_records_show_within_2_s_and_q_restores_the_terminal() {
    let dir = TestDir::new();
    seed(&dir);
    let size = (100, 30);
    let mut pty = Pty::spawn(&dir, size, &[]);
    let (screen, _) = pty.wait_for(size, Duration::from_secs(15), |s| {
        s.contains("3 metrics, 90 records")
    });
    let expected = agg_figures(&dir);
    assert_eq!(expected.len(), 3);
    for (metric, figures) in &expected {
        assert_eq!(
            &screen_figures(&screen, metric),
            figures,
            "{metric}:\n{screen}"
        );
    }
    assert!(screen.contains("cfn-metrics-2.jsonl") && screen.contains("nothing is firing"));

    // A record appended now is on screen within 2 s of its writer returning.
    dir.cmd("cfn-emit")
        .env("CFN_METRICS_DIR", dir.path())
        .args(["agent-9", "fresh.metric", "42"])
        .run()
        .success();
    let (screen, took) = pty.wait_for(size, Duration::from_secs(2), |s| s.contains("fresh.metric"));
    assert_eq!(
        screen_figures(&screen, "fresh.metric")[..2],
        ["1".to_string(), "42".to_string()]
    );
    eprintln!("a new record was on screen {took:?} after cfn-emit returned");

    // Sorting and filtering from the keyboard.
    pty.send(b"1");
    pty.wait_for(size, Duration::from_secs(5), |s| s.contains("metric▲"));
    pty.send(b"/tasks*\r");
    pty.wait_for(size, Duration::from_secs(5), |s| {
        s.contains("metric=tasks*")
            && s.contains("1 metric, 30 records")
            && !s.contains("queue.depth")
    });

    pty.send(b"q");
    assert_eq!(pty.wait_exit(), 0);
    pty.assert_restored();
}

#[test]
fn ctrl_c_and_a_panic_restore_the_terminal_and_no_color_draws_no_colour() {
    let dir = TestDir::new();
    seed(&dir);
    let size = (80, 24);
    let mut pty = Pty::spawn(&dir, size, &[("NO_COLOR", "1")]);
    pty.wait_for(size, Duration::from_secs(15), |s| s.contains("queue.depth"));
    pty.send(b"\x03");
    assert_eq!(pty.wait_exit(), 0);
    pty.assert_restored();
    let out = pty.output.lock().unwrap().clone();
    for colour in [
        &b"\x1b[38;"[..],
        b"\x1b[31m",
        b"\x1b[33m",
        b"\x1b[36m",
        b"\x1b[91m",
        b"\x1b[94m",
    ] {
        assert!(
            find(&out, colour).is_none(),
            "NO_COLOR set, yet {colour:?} was sent"
        );
    }

    let mut pty = Pty::spawn(&dir, size, &[("CFN_TOP_PANIC_ON_BANG", "1")]);
    pty.wait_for(size, Duration::from_secs(15), |s| s.contains("queue.depth"));
    let out = pty.output.lock().unwrap().clone();
    assert!(
        find(&out, b"\x1b[38;5;").is_some(),
        "colour is on without NO_COLOR"
    );
    pty.send(b"!");
    assert_eq!(pty.wait_exit(), 101, "a panic exits 101");
    pty.assert_restored();
    let (screen, _) = pty.wait_for(size, Duration::from_secs(5), |s| s.contains("panicked"));
    assert!(screen.contains("CFN_TOP_PANIC_ON_BANG"), "{screen}");
}

#[test]
fn without_a_terminal_it_says_to_use_once_and_once_prints_plain_text() {
    let dir = TestDir::new();
    seed(&dir);
    let out = TestCommand::new("cfn-top")
        .env("CFN_METRICS_DIR", dir.path())
        .run();
    assert_eq!(out.code(), 2);
    out.stderr_has("use --once");
    let out = TestCommand::new("cfn-top")
        .env("CFN_METRICS_DIR", dir.path())
        .args(["--once", "--width", "90"])
        .run();
    let text = out.success().stdout();
    assert!(!text.contains('\x1b'), "{text}");
    for (metric, figures) in agg_figures(&dir) {
        assert_eq!(screen_figures(&text, &metric), figures);
    }
    let bad = TestCommand::new("cfn-top")
        .args(["--once", "--window", "7m"])
        .run();
    assert_eq!(bad.code(), 2);
    bad.stderr_has("not one of 10s, 30s, 1m, 5m, 15m, 1h");
}
