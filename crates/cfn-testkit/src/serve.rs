//! A `cfn-serve` started by a test on a port the kernel picks, and raw HTTP requests to it.

use crate::TestDir;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Server {
    pub child: std::process::Child,
    pub port: u16,
    /// What the server said on stderr (but its "listening on" line).
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// The server's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc status")
            * 1024
    }

    /// What the server said on stderr so far.
    pub fn said(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts cfn-serve on a port the kernel picks (`--listen 127.0.0.1:0`) and reads the port
/// from its "listening on" line: asking for a free port first raced with the other tests'
/// servers, which could take it between the ask and the bind.
pub fn start(dir: &TestDir, extra: &[&str]) -> Server {
    use std::io::BufRead;
    let mut cmd = dir.cmd("cfn-serve");
    cmd.args(["--listen", "127.0.0.1:0"]).args(extra);
    let mut child = cmd
        .command()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    // Index progress (and warnings) may come first on a big directory.
    let mut line = String::new();
    let mut before = String::new();
    while !line.contains("listening on") {
        before.push_str(&line);
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("cfn-serve exited before listening: {before}");
        }
    }
    let port = listening_port(&line)
        .unwrap_or_else(|| panic!("cfn-serve did not say where it listens: {line:?}"));
    // Keep reading what it says, so a full pipe never blocks it.
    let said = std::sync::Arc::new(std::sync::Mutex::new(before));
    let keep = said.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
            keep.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    Server {
        child,
        port,
        stderr: said,
    }
}

/// The port of cfn-serve's `listening on http://ADDR:PORT/` line.
pub fn listening_port(line: &str) -> Option<u16> {
    line.trim()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
}

/// A raw GET (the path is sent as is, so traversal attempts reach the server unnormalised).
pub fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path)
}

pub fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
