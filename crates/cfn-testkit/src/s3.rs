//! A real S3 server for tests (moto_server, PyPI moto[server], on loopback, authentication
//! off: moto's signature check rejects every key holding `=`, boto3's own requests too) and
//! a proxy in front of it that can fail, watch or log requests.

use crate::{find_program, free_port, peer};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Runs the program in its arguments until its own stdin closes, then kills it.
const MOTO_WATCHER: &str = "import subprocess, sys\n\
server = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)\n\
sys.stdin.buffer.read()\n\
server.kill()\n\
server.wait()\n";

/// The port of one moto_server for the whole test binary (each test a bucket of its own),
/// authentication off; `None` (with the reason printed) when moto_server is missing.
pub fn open_moto() -> Option<u16> {
    static OPEN: OnceLock<Option<(std::process::Child, u16)>> = OnceLock::new();
    let port = OPEN
        .get_or_init(|| {
            let server = find_program("moto_server")?;
            let port = free_port();
            // A static is never dropped, so the server is started by a watcher that kills
            // it when its stdin, this process's end of a pipe, closes: when the test binary
            // exits, however it exits, no moto_server is left running.
            let child = std::process::Command::new("python3")
                .args(["-c", MOTO_WATCHER])
                .arg(server)
                .args(["-p", &port.to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start moto_server");
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto_server did not start");
                std::thread::sleep(Duration::from_millis(100));
            }
            Some((child, port))
        })
        .as_ref()
        .map(|(_, port)| *port);
    if port.is_none() {
        // Every test that goes without says so, not only the first.
        peer("moto_server", "PyPI package moto[server]");
    }
    port
}

/// Runs a boto3 script against the server on `port` (`s3` is its client), with `args` as
/// `sys.argv[1:]`; returns its stdout.
pub fn boto3(port: u16, script: &str, args: &[&str]) -> String {
    let prelude = format!(
        "import boto3, sys\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test-secret')\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .args(args)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "boto3 script failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates `bucket` on the server on `port`.
pub fn create_bucket(port: u16, bucket: &str) {
    boto3(port, "s3.create_bucket(Bucket=sys.argv[1])", &[bucket]);
}

/// A proxy in front of `upstream` on 127.0.0.1: answers the first `fail` requests with 503
/// (all of them when `fail` is `usize::MAX`), calls `before` with each request it forwards,
/// then forwards it. Returns its port and the number of connections it took.
pub fn proxy(
    upstream: u16,
    fail: usize,
    before: impl Fn(&[u8]) + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>) {
    let before = Arc::new(before);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let before = before.clone();
            std::thread::spawn(move || {
                let Some(request) = read_request(&mut client) else {
                    return;
                };
                if n < fail {
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
                    );
                    return;
                }
                before(&request);
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let _ = up.write_all(&request);
                let mut reply = Vec::new();
                let _ = up.read_to_end(&mut reply);
                let _ = client.write_all(&reply);
            });
        }
    });
    (port, seen)
}

/// A proxy in front of `upstream` that logs each request's line (`GET /bucket/key?query`).
pub fn logging_proxy(upstream: u16) -> (u16, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    let (port, _) = proxy(upstream, 0, move |request| {
        let head = String::from_utf8_lossy(request);
        let line = head.lines().next().unwrap_or_default();
        let line = line.strip_suffix(" HTTP/1.1").unwrap_or(line);
        lines.lock().unwrap().push(line.to_string());
    });
    (port, log)
}

/// One whole request (head and Content-Length body), with `Connection: close` so the
/// upstream ends its reply by closing.
pub fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut out: Vec<u8> = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect();
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&buf[head_end..]);
    Some(out)
}
