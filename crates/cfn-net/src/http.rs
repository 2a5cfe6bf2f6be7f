//! HTTP delivery with bounded retries, shared by `cfn-alert` and `cfn-push`.
//!
//! Every request has a timeout; 408, 429 and 5xx are retried with exponential backoff that
//! honours `Retry-After`, a bounded number of times; other 4xx are not retried and their body
//! is reported. Secrets (API keys, tokens, the webhook URL's path) are never part of any
//! message: [`crate::redact`] says how.

use crate::redact::Secrets;
use std::time::Duration;

/// How to deliver.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub timeout: Duration,
    /// Attempts in all, including the first.
    pub attempts: u32,
    pub base_backoff: Duration,
    /// Longest wait between attempts, also the cap on `Retry-After`.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy with this timeout and number of retries; the first backoff is 500 ms, or
    /// `CFN_HTTP_BACKOFF_MS` (tests shorten it).
    pub fn with(timeout: Duration, retries: u32) -> Self {
        let base = std::env::var("CFN_HTTP_BACKOFF_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        Self {
            timeout,
            attempts: retries + 1,
            base_backoff: Duration::from_millis(base),
            ..Default::default()
        }
    }
}

/// The text of a file of secrets: a regular file (no link, FIFO or device) that only its
/// owner can read. On a shared host every agent is in the service's group, so a file its
/// group can read is a secret every agent can read: refused, naming the file.
///
/// # Errors
/// Exit 78 naming the file (never its contents) when it cannot be opened or read, is not a
/// regular file, or its group or others may read it.
pub fn read_secret_file(f: &std::path::Path, what: &str) -> anyhow::Result<String> {
    use cfn_core::exit::{Exit, fail};
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let cannot = |e: &dyn std::fmt::Display| {
        fail(
            Exit::Config,
            format!("cannot read the {what} from {}: {e:#}", f.display()),
        )
    };
    // As every file in a shared place: no link, FIFO or device, and ours or root's.
    let file =
        cfn_core::fsutil::open_safe(f, cfn_core::fsutil::Access::Read).map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        return Err(fail(
            Exit::Config,
            format!(
                "{} holds the {what} but its group or others may read it (mode {mode:o}); make it readable by the service user only (chmod 600), or pass it with systemd's LoadCredential=",
                f.display()
            ),
        ));
    }
    let mut text = String::new();
    (&file)
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| cannot(&e))?;
    Ok(text)
}

/// Reads a secret (API key, routing key, webhook URL) from `file` when given (as
/// [`read_secret_file`]), else from the environment variable `env`; `None` when neither is
/// set.
///
/// # Errors
/// Exit 78 when the file cannot be read, may be read by others, or is empty. The secret
/// itself is never in a message.
pub fn read_secret(
    file: Option<&std::path::Path>,
    env: &str,
    what: &str,
) -> anyhow::Result<Option<String>> {
    use cfn_core::exit::{Exit, fail};
    if let Some(f) = file {
        let s = read_secret_file(f, what)?;
        let s = s.trim().to_string();
        if s.is_empty() {
            return Err(fail(
                Exit::Config,
                format!("{} holds no {what}", f.display()),
            ));
        }
        return Ok(Some(s));
    }
    Ok(std::env::var(env)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// The result of a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted with this status and body (at most 64 KiB: OTLP's partial success is in it).
    Accepted { status: u16, body: Vec<u8> },
    /// Rejected with a 4xx that retrying would not fix; the body says why (as text, secrets
    /// replaced; `raw` as received, for receivers that answer in protobuf).
    Rejected {
        status: u16,
        body: String,
        raw: Vec<u8>,
    },
    /// Still failing after every attempt (5xx, 408, 429 or a network error).
    GaveUp { attempts: u32, last: String },
}

/// A request to send: URL, headers, body, and the secrets (header values the user gave)
/// that must stay out of every message about it.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: &'a [u8],
    pub secrets: &'a Secrets,
}

/// Strips credentials and query strings from a URL before it appears in a message: a Slack
/// webhook URL is itself a secret, so only scheme and host are shown.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    if scheme.is_empty() {
        format!("{host}/…")
    } else {
        format!("{scheme}://{host}/…")
    }
}

/// Makes a response body or client error safe to print: the URL is shown as its host and
/// no run of a secret (the request's, or the URL's path) survives; cut to 500 bytes.
fn redact_text(text: &str, req: &Request<'_>) -> String {
    let text = text.trim().replace(req.url, &redact_url(req.url));
    let mut out = crate::redact::url_secrets_of(req.url, false)
        .with(req.secrets)
        .redact(&text);
    if out.len() > 500 {
        out.truncate(out.floor_char_boundary(500));
        out.push('…');
    }
    out
}

/// The host (and port) of a `Location` header, for the message about a refused redirect.
fn location_host(location: &str) -> String {
    match location.split_once("://") {
        Some(_) => redact_url(location),
        None => "the same host (a relative location)".into(),
    }
}

/// What one attempt of a request came to.
pub enum Attempt<T> {
    /// An answer to keep (a success, or a failure retrying would not fix).
    Done(T),
    /// Worth another try: why it failed (already safe to print), and the server's
    /// `Retry-After` in seconds.
    Retry {
        why: String,
        retry_after: Option<u64>,
    },
}

/// True for the statuses worth retrying: 408, 429 and 5xx.
pub fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// The `Retry-After` of a response, in whole seconds.
pub fn retry_after<B>(resp: &ureq::http::Response<B>) -> Option<u64> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// The one retry loop (delivery here, and S3): runs `attempt` until it is done
/// or the policy's attempts are spent, waiting between tries with a doubling backoff (or the
/// server's `Retry-After`), both capped at `max_backoff`. The last failure's reason when it
/// gives up.
///
/// # Errors
/// The last attempt's reason, once every attempt asked for a retry.
pub fn with_retries<T>(
    policy: &RetryPolicy,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> Result<T, String> {
    let mut backoff = policy.base_backoff;
    let mut last = String::new();
    for n in 1..=policy.attempts.max(1) {
        match attempt() {
            Attempt::Done(t) => return Ok(t),
            Attempt::Retry { why, retry_after } => {
                last = why;
                if n < policy.attempts {
                    let wait = retry_after.map_or(backoff, Duration::from_secs);
                    std::thread::sleep(wait.min(policy.max_backoff));
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
            }
        }
    }
    Err(last)
}

/// POSTs `req`, retrying as the policy says.
///
/// Redirects are never followed: a client that follows one re-sends the request (and its
/// API-key header) to whatever host the response names, and a 2xx there would count as
/// delivered. A 3xx is a rejection naming the location's host.
pub fn post_with_retries(req: &Request<'_>, policy: &RetryPolicy) -> Delivery {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(policy.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let outcome = with_retries(policy, || {
        let mut r = agent.post(req.url);
        for (k, v) in &req.headers {
            r = r.header(*k, v);
        }
        match r.send(req.body) {
            Ok(resp) => judge(resp, req),
            Err(e) => Attempt::Retry {
                why: redact_text(&e.to_string(), req),
                retry_after: None,
            },
        }
    });
    outcome.unwrap_or_else(|last| Delivery::GaveUp {
        attempts: policy.attempts.max(1),
        last,
    })
}

/// One reply to a delivery: accepted, rejected for good (a redirect, a 4xx) or worth
/// another try.
fn judge(mut resp: ureq::http::Response<ureq::Body>, req: &Request<'_>) -> Attempt<Delivery> {
    let status = resp.status().as_u16();
    let read = |resp: &mut ureq::http::Response<ureq::Body>| {
        resp.body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .unwrap_or_default()
    };
    if (200..300).contains(&status) {
        let body = read(&mut resp);
        return Attempt::Done(Delivery::Accepted { status, body });
    }
    if (300..400).contains(&status) {
        let to = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "nowhere (no Location)".into(), location_host);
        return Attempt::Done(Delivery::Rejected {
            status,
            body: format!("redirect to {to} not followed (check the endpoint URL)"),
            raw: Vec::new(),
        });
    }
    let wait = retry_after(&resp);
    let raw = read(&mut resp);
    let body = redact_text(&String::from_utf8_lossy(&raw), req);
    if !is_retryable(status) {
        return Attempt::Done(Delivery::Rejected { status, body, raw });
    }
    Attempt::Retry {
        why: format!("HTTP {status} {body}"),
        retry_after: wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_webhook_paths_and_credentials() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:9/x?k=1"),
            "http://127.0.0.1:9/…"
        );
        assert_eq!(
            redact_url("https://hooks.example?token=SECRET"),
            "https://hooks.example/…"
        );
        assert_eq!(
            redact_url("https://h.example#SECRET"),
            "https://h.example/…"
        );
    }

    #[test]
    fn response_bodies_lose_the_url_and_keys_before_printing() {
        let mut secrets =
            crate::redact::url_secrets_of("https://hooks.example/services/SECRETPATH", true);
        secrets.add("abcdef0123456789");
        let req = Request {
            url: "https://hooks.example/services/SECRETPATH",
            headers: vec![("DD-API-KEY", "abcdef0123456789".into())],
            body: b"",
            secrets: &secrets,
        };
        let got = redact_text(
            "bad key abcdef0123456789 for https://hooks.example/services/SECRETPATH",
            &req,
        );
        assert_eq!(got, "bad key *** for https://hooks.example/…");
        // Part of the key, or of the webhook's path, echoed on its own.
        let got = redact_text("key abcdef01 path SECRETPATH", &req);
        assert_eq!(got, "key *** path ***");
        assert!(redact_text(&"x".repeat(2000), &req).len() < 510);
    }
}
