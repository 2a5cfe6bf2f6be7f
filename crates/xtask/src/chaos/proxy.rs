//! A fault-injecting HTTP proxy in front of moto_server: one request per connection, and
//! per request a fault drawn at random: a reset before any reply, a 500, 503 or 429 answered
//! without forwarding, a stall past the client's timeout, or the store's reply dropped after
//! it has taken the request (the hardest case: the object exists, the client thinks not).
//! While `throttle` is set every request is refused with 503 SlowDown or 429, as a store
//! throttling every client at once does.

use cfn_testkit::gendata::Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy did, by kind (`forwarded`, `reset`, `status_500`, ...).
pub type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

pub struct Proxy {
    pub port: u16,
    pub counts: Counts,
    pub faulty: Arc<AtomicBool>,
    pub throttle: Arc<AtomicBool>,
}

fn bump(counts: &Counts, what: &str) {
    *counts.lock().unwrap().entry(what.to_string()).or_default() += 1;
}

/// Starts the proxy on `bind` to `upstream` (a port on 127.0.0.1); `fault_rate` of
/// requests get a fault while `faulty` is set; `stall` is longer than the clients' timeout.
pub fn start(
    bind: std::net::IpAddr,
    upstream: u16,
    seed: u64,
    fault_rate: f64,
    stall: Duration,
) -> anyhow::Result<Proxy> {
    let listener = TcpListener::bind((bind, 0))?;
    let port = listener.local_addr()?.port();
    let counts: Counts = Arc::default();
    let faulty = Arc::new(AtomicBool::new(true));
    let throttle = Arc::new(AtomicBool::new(false));
    let (c, f, t) = (
        Arc::clone(&counts),
        Arc::clone(&faulty),
        Arc::clone(&throttle),
    );
    std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        for conn in listener.incoming().map_while(Result::ok) {
            let roll = rng.unit();
            let fault = if t.load(Ordering::Relaxed) {
                // 503 or 429, half each.
                Some(if roll < 0.5 { 2 } else { 3 })
            } else if f.load(Ordering::Relaxed) && roll < fault_rate {
                Some((roll / fault_rate * 6.0) as u32)
            } else {
                None
            };
            let counts = Arc::clone(&c);
            std::thread::spawn(move || {
                let _ = serve(conn, upstream, fault, stall, &counts);
            });
        }
    });
    Ok(Proxy {
        port,
        counts,
        faulty,
        throttle,
    })
}

/// Reads one request: head and body (Content-Length; the tools never send chunked bodies).
fn read_request(conn: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            anyhow::bail!("closed");
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse()?;
        }
        // One request per connection: the client is told so, and opens another.
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    head.extend_from_slice(&body);
    Ok(head)
}

fn serve(
    conn: TcpStream,
    upstream: u16,
    fault: Option<u32>,
    stall: Duration,
    counts: &Counts,
) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let request = read_request(&mut reader)?;
    let mut conn = conn;
    let answer = |conn: &mut TcpStream, status: u16, reason: &str| -> std::io::Result<()> {
        let body = format!(
            "<?xml version=\"1.0\"?><Error><Code>{reason}</Code><Message>chaos</Message></Error>"
        );
        write!(
            conn,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match fault {
        Some(0) => {
            bump(counts, "reset");
            return Ok(());
        }
        Some(1) => {
            bump(counts, "status_500");
            return Ok(answer(&mut conn, 500, "InternalError")?);
        }
        Some(2) => {
            bump(counts, "status_503");
            return Ok(answer(&mut conn, 503, "SlowDown")?);
        }
        Some(3) => {
            bump(counts, "status_429");
            return Ok(answer(&mut conn, 429, "TooManyRequests")?);
        }
        Some(4) => {
            bump(counts, "stall");
            std::thread::sleep(stall);
            return Ok(());
        }
        _ => {}
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(&request)?;
    let mut reply = Vec::new();
    up.read_to_end(&mut reply)?;
    if fault == Some(5) {
        // The store has done it; the client never hears.
        bump(counts, "reply_dropped");
        return Ok(());
    }
    bump(counts, "forwarded");
    conn.write_all(&reply)?;
    Ok(())
}
