//! The HTTP/1.1 front: just enough of the protocol for a read-only GET server, with the
//! limits a server on a shared host needs.
//!
//! Written here rather than taken from a crate: tiny_http (used before) has no socket
//! timeouts and no bound on the request line, so four connections announcing a body they
//! never send held every worker, and a 300 MB URL was read into memory; the servers that
//! have those limits (hyper and its kin) bring an async runtime this tool does not otherwise
//! need. What is here: a thread per connection up to `max_connections` (beyond that a
//! plain 503), a read timeout and an overall deadline for the request head, at most
//! [`MAX_HEAD_BYTES`] of head, no request bodies (a GET has none: 413), a `Host` check
//! against DNS rebinding, security headers, one request per connection (`Connection:
//! close`), and at most `compute_slots` requests computed at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Most bytes of request line and headers together.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a client may take to send its request head, in all.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long one read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server answers with.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    /// The Accept header (the scrape format Prometheus asks for).
    pub accept: Option<String>,
}

/// What the server asks of the application for a request: its target and Accept header.
pub type Handler = dyn Fn(&str, Option<&str>) -> Reply + Send + Sync;

/// Why a request head was not accepted, as the status to answer.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The client went quiet or closed: nothing to answer.
    Gone,
    Status(u16, &'static str),
}

/// Reads one request head within the limits.
///
/// # Errors
/// [`HeadError`] with the status to answer (400, 408, 413, 431, 505).
pub fn read_head(stream: impl Read, deadline: Instant) -> Result<Head, HeadError> {
    let lines = read_head_lines(stream, deadline)?;
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Status(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Status(505, "only HTTP/1.x"));
    }
    let mut host = None;
    let mut accept = None;
    for h in &lines[1..] {
        let Some((name, value)) = h.split_once(':') else {
            return Err(HeadError::Status(400, "malformed header"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => host = Some(value.to_string()),
            "accept" => accept = Some(value.to_string()),
            "content-length" if value != "0" => {
                return Err(HeadError::Status(413, "requests have no body here"));
            }
            "transfer-encoding" => {
                return Err(HeadError::Status(413, "requests have no body here"));
            }
            _ => {}
        }
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        host,
        accept,
    })
}

/// The lines of one request head (at least the request line), without their line ends.
fn read_head_lines(stream: impl Read, deadline: Instant) -> Result<Vec<String>, HeadError> {
    const LATE: HeadError = HeadError::Status(408, "request head not received in time");
    // The deadline is checked before every read, not per line: a client trickling one byte
    // at a time inside a line must not hold its connection for hours.
    let timed = Deadline {
        inner: stream,
        deadline,
    };
    let mut reader = BufReader::with_capacity(4096, timed.take(MAX_HEAD_BYTES as u64 + 1));
    let mut total = 0usize;
    let mut line = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    loop {
        line.clear();
        let n = match reader.read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(LATE);
            }
            Err(_) => return Err(HeadError::Gone),
        };
        total += n;
        if total > MAX_HEAD_BYTES {
            return Err(HeadError::Status(431, "request head too large"));
        }
        if Instant::now() > deadline {
            return Err(LATE);
        }
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(if lines.is_empty() && n == 0 {
                HeadError::Gone
            } else {
                HeadError::Status(400, "incomplete request head")
            });
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| HeadError::Status(400, "request head is not UTF-8"))?
            .trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if lines.is_empty() {
                continue; // Stray CRLF before the request line is allowed.
            }
            return Ok(lines);
        }
        lines.push(text.to_string());
    }
}

/// A reader that fails with `TimedOut` once its deadline has passed.
struct Deadline<R> {
    inner: R,
    deadline: Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.inner.read(buf)
    }
}

/// Which `Host` values are served: loopback names, the listen address, and `extra`.
#[derive(Clone, Debug)]
pub struct HostCheck {
    allowed: Vec<String>,
}

impl HostCheck {
    /// Loopback names, the listen address's host, and the hosts given by the operator.
    pub fn new(listen: SocketAddr, extra: &[String]) -> Self {
        let mut allowed: Vec<String> = ["localhost", "127.0.0.1", "[::1]", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        allowed.push(match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
        allowed.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        Self { allowed }
    }

    /// True when `host` (with or without a port) is an IP address or one of the allowed
    /// names. DNS rebinding needs a name the attacker controls, so an IP literal (how
    /// Prometheus usually addresses a target) is always fine, and so is a missing Host
    /// (HTTP/1.0): a browser always sends one.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        let host = host.to_ascii_lowercase();
        let name = if host.starts_with('[') {
            host.split_once(']').map_or(host.as_str(), |(h, _)| h)
        } else {
            host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h)
        };
        let name = name.trim_start_matches('[');
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        self.allowed
            .iter()
            .any(|a| a.trim_start_matches('[').trim_end_matches(']') == name)
    }
}

/// Counts down free slots; `acquire` waits for one.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub compute_slots: usize,
}

fn write_reply(stream: &mut TcpStream, reply: &Reply, head_only: bool) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&reply.body)?;
    }
    stream.flush()
}

fn error_reply(status: u16, message: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default(),
    }
}

fn handle_connection(mut stream: TcpStream, hosts: &HostCheck, slots: &Slots, handle: &Handler) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let head = match read_head(&stream, Instant::now() + HEAD_DEADLINE) {
        Ok(h) => h,
        Err(HeadError::Gone) => return,
        Err(HeadError::Status(status, msg)) => {
            let _ = write_reply(&mut stream, &error_reply(status, msg), false);
            return;
        }
    };
    let head_only = head.method == "HEAD";
    let reply = if head.method != "GET" && !head_only {
        error_reply(405, "read-only: only GET")
    } else if !hosts.allows(head.host.as_deref()) {
        error_reply(
            421,
            "this Host is not served (see cfn-serve --allowed-host)",
        )
    } else {
        let _slot = slots.acquire();
        // A bug must cost one request, not the server.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(&head.target, head.accept.as_deref())
        }))
        .unwrap_or_else(|_| error_reply(500, "internal error"))
    };
    let _ = write_reply(&mut stream, &reply, head_only);
}

/// Accepts connections on `listener` until the process ends, answering each with `handle`.
pub fn run(listener: TcpListener, hosts: HostCheck, limits: &Limits, handle: Arc<Handler>) {
    let open = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(Slots {
        free: Mutex::new(limits.compute_slots.max(1)),
        cv: Condvar::new(),
    });
    let hosts = Arc::new(hosts);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if open.load(Ordering::Acquire) >= limits.max_connections.max(1) {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = write_reply(
                &mut stream,
                &error_reply(503, "too many connections"),
                false,
            );
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let open_count = &open;
        let (open, slots, hosts, handle) =
            (open.clone(), slots.clone(), hosts.clone(), handle.clone());
        let spawned = std::thread::Builder::new()
            .name("cfn-serve-conn".into())
            .spawn(move || {
                handle_connection(stream, &hosts, &slots, &*handle);
                open.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // No thread was started (the connection is dropped), so count it closed here.
            open_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, HeadError> {
        read_head(text.as_bytes(), Instant::now() + Duration::from_secs(5))
    }

    #[test]
    fn parses_a_get_with_its_host() {
        let h = head(
            "GET /api/summary?window=5m HTTP/1.1\r\nHost: 127.0.0.1:3001\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/api/summary?window=5m");
        assert_eq!(h.host.as_deref(), Some("127.0.0.1:3001"));
    }

    #[test]
    fn refuses_bodies_huge_heads_and_garbage() {
        assert_eq!(
            head("GET / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"),
            Err(HeadError::Status(413, "requests have no body here"))
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            head(&long),
            Err(HeadError::Status(431, "request head too large"))
        );
        assert!(matches!(
            head("GET /\r\n\r\n"),
            Err(HeadError::Status(400, _))
        ));
        assert!(matches!(
            head("GET / HTTP/2\r\n\r\n"),
            Err(HeadError::Status(505, _))
        ));
        assert_eq!(head(""), Err(HeadError::Gone));
        assert!(matches!(
            head("GET / HTTP/1.1\r\nHost: x"),
            Err(HeadError::Status(400, _))
        ));
    }

    #[test]
    fn a_head_trickled_a_byte_at_a_time_hits_the_deadline_mid_line() {
        struct Trickle(usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(5));
                self.0 += 1;
                buf[0] = if self.0 == 1 { b'G' } else { b'a' };
                Ok(1)
            }
        }
        let t = Instant::now();
        let got = read_head(Trickle(0), Instant::now() + Duration::from_millis(100));
        assert_eq!(
            got,
            Err(HeadError::Status(408, "request head not received in time"))
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn host_check_takes_loopback_the_listen_address_and_extras() {
        let c = HostCheck::new(
            "127.0.0.1:3001".parse().unwrap(),
            &["metrics.example".to_string()],
        );
        for ok in [
            "localhost:3001",
            "127.0.0.1",
            "[::1]:3001",
            "METRICS.example:80",
        ] {
            assert!(c.allows(Some(ok)), "{ok}");
        }
        assert!(c.allows(None));
        for bad in [
            "evil.example",
            "evil.example:3001",
            "127.0.0.1.evil.example",
        ] {
            assert!(!c.allows(Some(bad)), "{bad}");
        }
        let any = HostCheck::new("0.0.0.0:3001".parse().unwrap(), &[]);
        assert!(!any.allows(Some("evil.example")));
    }
}
