//! S3 (and S3-compatible stores: MinIO, Ceph, R2, Garage, moto) for cold storage: the
//! configuration every S3 tool reads, SigV4 header signing with the AWS SDK's own signer
//! (`aws-sigv4`, sans-IO) over the `ureq` client the other exporters use, and the handful of
//! calls the archiver and `cfn-cat` need. Secrets never appear in messages.

use crate::http::{Attempt, RetryPolicy};
use base64::Engine as _;
use cfn_core::exit::{Exit, fail};
use md5::Digest as _;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// `s3://BUCKET/PREFIX/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`; a prefix gets a trailing `/`.
    ///
    /// # Errors
    /// Exit 2 naming what is wrong.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            fail(
                Exit::Usage,
                format!("{url:?} is not an s3://BUCKET/PREFIX/ URL"),
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(fail(
                Exit::Usage,
                format!(
                    "{url:?}: bucket {bucket:?} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)"
                ),
            ));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The URL form, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// One level of a listing: objects (key, size) and directories (common prefixes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<(String, u64)>,
    pub dirs: Vec<String>,
}

impl Listing {
    fn len(&self) -> usize {
        self.objects.len() + self.dirs.len()
    }
}

/// Adds one listing page's objects and directories below `prefix` to `out`; returns how
/// many entries it left out as outside the prefix.
///
/// # Errors
/// Exit 65 past [`MAX_LIST_KEYS`] entries.
fn add_page(text: &str, prefix: &str, what: &str, out: &mut Listing) -> anyhow::Result<u64> {
    let mut foreign = 0;
    for c in xml_values(text, "Contents") {
        let key = xml_values(&c, "Key").into_iter().next();
        let size = xml_values(&c, "Size")
            .into_iter()
            .next()
            .and_then(|s| s.parse().ok());
        match (key, size) {
            (Some(_), Some(_)) if out.len() >= MAX_LIST_KEYS => {
                return Err(fail(
                    Exit::DataErr,
                    format!(
                        "{what}: more than {MAX_LIST_KEYS} objects; nothing was read (narrow the prefix)"
                    ),
                ));
            }
            (Some(k), Some(s)) if k.starts_with(prefix) => out.objects.push((k, s)),
            (Some(_), Some(_)) => foreign += 1,
            _ => {}
        }
    }
    for c in xml_values(text, "CommonPrefixes") {
        for p in xml_values(&c, "Prefix") {
            if out.len() >= MAX_LIST_KEYS {
                return Err(fail(
                    Exit::DataErr,
                    format!(
                        "{what}: more than {MAX_LIST_KEYS} entries; nothing was read (narrow the prefix)"
                    ),
                ));
            }
            // A directory is the prefix, one more segment and its `/`.
            let below = p.strip_prefix(prefix).unwrap_or_default();
            if p.starts_with(prefix) && below.len() > 1 && below.find('/') == Some(below.len() - 1)
            {
                out.dirs.push(p);
            } else {
                foreign += 1;
            }
        }
    }
    Ok(foreign)
}

/// Access key, secret and session token.
#[derive(Clone)]
pub struct Credentials {
    pub key: String,
    secret: String,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.key)
    }
}

/// Where and how to reach the store.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// Scheme, host, port (and a path prefix, for stores behind a proxy path).
    pub endpoint: String,
    pub path_style: bool,
    pub region: String,
    pub credentials: Credentials,
    pub policy: RetryPolicy,
}

/// `[section]` key = value pairs of an AWS shared file (credentials or config); indented
/// sub-keys (`s3 =\n  addressing_style = path`) are skipped.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside
            && !line.starts_with([' ', '\t'])
            && let Some((k, v)) = trimmed.split_once('=')
        {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

impl S3Config {
    /// The configuration as the AWS CLI reads it: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, else the shared credentials file
    /// (`AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`) at `AWS_PROFILE`; region from
    /// `AWS_REGION`, `AWS_DEFAULT_REGION` or the config file (`AWS_CONFIG_FILE`,
    /// `~/.aws/config`); endpoint from `endpoint` (`--endpoint`), `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL` (path-style addressing), else AWS itself (virtual-hosted style).
    ///
    /// # Errors
    /// Exit 78 without credentials or with an unreadable shared file.
    pub fn resolve(
        endpoint: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let credentials = credentials(env, &profile)?;
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| {
                let (_, text) = shared_file(env, "AWS_CONFIG_FILE", "config")?;
                let section = if profile == "default" {
                    "default".to_string()
                } else {
                    format!("profile {profile}")
                };
                ini_section(&text, &section)
                    .into_iter()
                    .find(|(k, _)| k == "region")
                    .map(|(_, v)| v)
            })
            .unwrap_or_else(|| "us-east-1".into());
        let custom = endpoint
            .map(str::to_string)
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let (endpoint, path_style) = match custom {
            Some(e) => {
                let e = e.trim().trim_end_matches('/').to_string();
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(fail(
                        Exit::Config,
                        format!("S3 endpoint {e:?} must start with http:// or https://"),
                    ));
                }
                (e, true)
            }
            None => (format!("https://s3.{region}.amazonaws.com"), false),
        };
        Ok(Self {
            endpoint,
            path_style,
            region,
            credentials,
            policy,
        })
    }
}

/// A shared AWS file (`var`, else `~/.aws/default`) and its text, when it can be read.
fn shared_file(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    default: &str,
) -> Option<(PathBuf, String)> {
    let path = env(var)
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws").join(default)))?;
    let text = std::fs::read_to_string(&path).ok()?;
    Some((path, text))
}

/// The credentials from the environment, else from the shared credentials file at
/// `profile`.
fn credentials(env: &dyn Fn(&str) -> Option<String>, profile: &str) -> anyhow::Result<Credentials> {
    if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            key,
            secret,
            token: env("AWS_SESSION_TOKEN"),
        });
    }
    let (path, text) = shared_file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .ok_or_else(|| {
            fail(
                Exit::Config,
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in ~/.aws/credentials",
            )
        })?;
    let kv = ini_section(&text, profile);
    let get = |k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key), Some(secret)) => Ok(Credentials {
            key,
            secret,
            token: get("aws_session_token"),
        }),
        _ => Err(fail(
            Exit::Config,
            format!(
                "{} has no aws_access_key_id and aws_secret_access_key in profile [{profile}]",
                path.display()
            ),
        )),
    }
}

/// Percent-encodes an object key for a URL path, one segment at a time (`/` kept between
/// them), as S3 signs it. A `.` or `..` segment is encoded whole (`%2E%2E`), so no client,
/// proxy or server on the way can resolve it into another key.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for (i, segment) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if segment == "." || segment == ".." {
            out.push_str(&"%2E".repeat(segment.len()));
            continue;
        }
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn encode_query(v: &str) -> String {
    encode_key(v).replace('/', "%2F")
}

/// The values of every `<tag>` element in `xml`, entities decoded. S3's replies are flat
/// enough that this is all the XML the calls here need.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&#34;", "\"")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

/// The largest reply body read (S3's listing pages are about 300 KB).
pub const MAX_REPLY: u64 = 16 << 20;
/// Most listing pages followed: past them a listing is refused rather than grown without
/// end by a server that never stops (nor are its continuation tokens kept past it).
pub const MAX_LIST_PAGES: usize = 10_000;
/// Most keys a listing holds (about 160 MB of memory at most): a year of 16 shards on 300
/// hosts fits; past it the listing is refused (narrow the prefix).
pub const MAX_LIST_KEYS: usize = 2_000_000;

/// A reply: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct S3Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl S3Reply {
    /// Reads a response: headers, and up to [`MAX_REPLY`] of body (none for HEAD).
    ///
    /// # Errors
    /// Exit 75 when the body is cut short (a reset, a timeout), 74 when it is larger than
    /// [`MAX_REPLY`]: a reply read in part is never taken for the whole (a listing page
    /// cut short would silently drop every object after the cut).
    fn read(
        method: &str,
        what: &str,
        status: u16,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<Self> {
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(MAX_REPLY)
                .read_to_vec()
                .map_err(|e| {
                    let exit = match e {
                        ureq::Error::BodyExceedsLimit(_) => Exit::IoErr,
                        _ => Exit::TempFail,
                    };
                    fail(
                        exit,
                        format!("{what}: HTTP {status}: the reply could not be read whole: {e}"),
                    )
                })?
        };
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// S3's error code and message, from the XML body.
    pub fn error(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let code = xml_values(&text, "Code").into_iter().next();
        let msg = xml_values(&text, "Message").into_iter().next();
        match (code, msg) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c,
            _ => format!("HTTP {}", self.status),
        }
    }
}

/// An object's size and ETag (quotes removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: String,
}

/// MD5 of `bytes`, as (hex, base64).
pub fn md5_of(bytes: &[u8]) -> ([u8; 16], String) {
    let d: [u8; 16] = md5::Md5::digest(bytes).into();
    (d, base64::engine::general_purpose::STANDARD.encode(d))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ETag S3 gives an object uploaded in parts with these MD5s.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut all = Vec::with_capacity(part_md5s.len() * 16);
    for m in part_md5s {
        all.extend_from_slice(m);
    }
    format!("{}-{}", hex(&md5_of(&all).0), part_md5s.len())
}

/// A client for one store.
pub struct S3Client {
    cfg: S3Config,
    agent: ureq::Agent,
    /// The secret key and session token, kept out of every message.
    secrets: crate::redact::Secrets,
    /// The tool's name, for warnings.
    tool: &'static str,
}

impl S3Client {
    pub fn new(cfg: S3Config) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // On silence, not on length: a 10 MB object read by a slow consumer (`cfn-cat
            // s3://… | slow`) takes as long as the consumer does, and is fine while bytes
            // keep coming; a stalled server is cut off after one timeout of nothing.
            .timeout_connect(Some(cfg.policy.timeout))
            .timeout_recv_response(Some(cfg.policy.timeout))
            .timeout_per_read(Some(cfg.policy.timeout))
            .timeout_per_write(Some(cfg.policy.timeout.max(Duration::from_secs(30))))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut secrets = crate::redact::Secrets::new();
        secrets.add(&cfg.credentials.secret);
        if let Some(t) = &cfg.credentials.token {
            secrets.add(t);
        }
        Self {
            cfg,
            agent,
            secrets,
            tool: "cfn",
        }
    }

    /// Names the tool in warnings.
    pub fn for_tool(mut self, tool: &'static str) -> Self {
        self.tool = tool;
        self
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    fn url(&self, bucket: &str, key: &str, query: &[(&str, String)]) -> String {
        let mut url = if self.cfg.path_style {
            // The bucket itself has no trailing slash: that is the path S3 clients sign.
            if key.is_empty() {
                format!("{}/{bucket}", self.cfg.endpoint)
            } else {
                format!("{}/{bucket}/{}", self.cfg.endpoint, encode_key(key))
            }
        } else {
            let (scheme, host) = self
                .cfg
                .endpoint
                .split_once("://")
                .unwrap_or(("https", &self.cfg.endpoint));
            format!("{scheme}://{bucket}.{host}/{}", encode_key(key))
        };
        if !query.is_empty() {
            url.push('?');
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() && !matches!(*k, "prefix" | "continuation-token") {
                        k.to_string()
                    } else {
                        format!("{k}={}", encode_query(v))
                    }
                })
                .collect();
            url.push_str(&q.join("&"));
        }
        url
    }

    /// The signed headers for a request (Authorization, x-amz-date, x-amz-content-sha256,
    /// the session token).
    fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<Vec<(String, String)>> {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode, sign,
        };
        let c = &self.cfg.credentials;
        let identity = aws_credential_types::Credentials::new(
            c.key.clone(),
            c.secret.clone(),
            c.token.clone(),
            None,
            "cfn-metrics",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.cfg.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| fail(Exit::Config, format!("S3 signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            // A body sent with Content-MD5 is checked by the store against that; hashing it
            // again for the signature (SHA-256 of every byte) would double the CPU per part.
            if headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-md5"))
            {
                SignableBody::UnsignedPayload
            } else {
                SignableBody::Bytes(body)
            },
        )
        .map_err(|e| {
            fail(
                Exit::Usage,
                format!("S3 request {}: {e}", crate::http::redact_url(url)),
            )
        })?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| fail(Exit::Config, format!("S3 signing: {e}")))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// One signed request, retried on 5xx, 408, 429 and network errors with backoff
    /// (honouring Retry-After); `done` turns a response that is not retried into the result
    /// (a 200 may be kept streaming).
    fn exchange<T>(
        &self,
        method: &str,
        url: &str,
        what: &str,
        headers: &[(&str, String)],
        body: &[u8],
        mut done: impl FnMut(u16, ureq::http::Response<ureq::Body>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let policy = &self.cfg.policy;
        let outcome = crate::http::with_retries(policy, || {
            let signed = match self.sign(method, url, headers, body) {
                Ok(s) => s,
                Err(e) => return Attempt::Done(Err(e)),
            };
            let mut req = http_request(method, url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            for (k, v) in &signed {
                req = req.header(k.as_str(), v);
            }
            let result = if matches!(method, "PUT" | "POST") {
                req.body(body.to_vec()).map(|r| self.agent.run(r))
            } else {
                req.body(()).map(|r| self.agent.run(r))
            };
            match result {
                Err(e) => Attempt::Done(Err(e.into())),
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    if !crate::http::is_retryable(status) {
                        return Attempt::Done(done(status, resp));
                    }
                    let retry_after = crate::http::retry_after(&resp);
                    let why = match S3Reply::read(method, what, status, resp) {
                        Ok(reply) => format!("HTTP {status} {}", self.redact(&reply.error())),
                        Err(_) => format!("HTTP {status}"),
                    };
                    Attempt::Retry { why, retry_after }
                }
                Ok(Err(e)) => Attempt::Retry {
                    why: self.redact(&e.to_string()),
                    retry_after: None,
                },
            }
        });
        outcome.unwrap_or_else(|last| {
            Err(fail(
                Exit::TempFail,
                format!(
                    "{what} failed after {} attempts: {last}",
                    policy.attempts.max(1)
                ),
            ))
        })
    }

    /// Sends one request (retried as [`S3Client::exchange`] says) and reads the reply.
    ///
    /// # Errors
    /// Exit 75 once the retries are spent.
    pub fn send(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<S3Reply> {
        let url = self.url(bucket, key, query);
        let what = format!("{method} s3://{bucket}/{key}");
        self.exchange(method, &url, &what, headers, body, |status, resp| {
            S3Reply::read(method, &what, status, resp)
        })
    }

    fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// The error for a reply that is not what a call expects: 403 and a missing bucket are
    /// configuration (78), other 4xx data (65).
    pub fn refused(&self, what: &str, reply: &S3Reply) -> anyhow::Error {
        let mut detail = self.redact(&reply.error());
        if reply.body.is_empty() && matches!(reply.status, 401 | 403) {
            // HEAD replies carry no error code.
            detail = "access denied: wrong credentials, a signature that does not match, or no permission (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the profile)".into();
        }
        let exit = match reply.status {
            404 if detail.starts_with("NoSuchBucket") => Exit::Config,
            status => Exit::for_http_status(status),
        };
        fail(exit, format!("{what}: HTTP {}: {detail}", reply.status))
    }

    /// Size and ETag of an object, `None` when there is none.
    ///
    /// # Errors
    /// As [`S3Client::send`] and [`S3Client::refused`].
    pub fn head(&self, bucket: &str, key: &str) -> anyhow::Result<Option<ObjectInfo>> {
        let r = self.send("HEAD", bucket, key, &[], &[], &[])?;
        match r.status {
            200 => Ok(Some(ObjectInfo {
                size: r
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                etag: r.header("etag").unwrap_or("").trim_matches('"').to_string(),
            })),
            404 => {
                // HEAD has no body: tell a missing bucket from a missing key.
                let b = self.send("HEAD", bucket, "", &[], &[], &[])?;
                if b.status == 404 {
                    return Err(fail(
                        Exit::Config,
                        format!("bucket s3://{bucket}/ does not exist"),
                    ));
                }
                Ok(None)
            }
            _ => Err(self.refused(&format!("HEAD s3://{bucket}/{key}"), &r)),
        }
    }

    /// Uploads `body` in one PUT, with Content-MD5 so the store checks it; with `if_absent`,
    /// as a conditional write (`If-None-Match: *`) that fails if the key appeared meanwhile.
    /// Returns the ETag.
    ///
    /// # Errors
    /// As [`S3Client::send`] and [`S3Client::refused`]; 65 when the condition failed.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        if_absent: bool,
    ) -> anyhow::Result<String> {
        let (_, md5) = md5_of(body);
        let mut headers = vec![
            ("content-md5", md5),
            ("content-type", "application/gzip".into()),
        ];
        if if_absent {
            headers.push(("if-none-match", "*".into()));
        }
        let r = self.send("PUT", bucket, key, &[], &headers, body)?;
        if r.status == 412 {
            return Err(appeared(bucket, key));
        }
        if r.status != 200 {
            return Err(self.refused(&format!("PUT s3://{bucket}/{key}"), &r));
        }
        Ok(r.header("etag").unwrap_or("").trim_matches('"').to_string())
    }

    /// Starts a multipart upload; returns its id.
    ///
    /// # Errors
    /// As [`S3Client::send`] and [`S3Client::refused`].
    pub fn create_multipart(&self, bucket: &str, key: &str) -> anyhow::Result<String> {
        let r = self.send(
            "POST",
            bucket,
            key,
            &[("uploads", String::new())],
            &[("content-type", "application/gzip".into())],
            &[],
        )?;
        let id = xml_values(&String::from_utf8_lossy(&r.body), "UploadId")
            .into_iter()
            .next();
        match (r.status, id) {
            (200, Some(id)) => Ok(id),
            _ => Err(self.refused(
                &format!("starting a multipart upload of s3://{bucket}/{key}"),
                &r,
            )),
        }
    }

    /// Uploads part `n` (from 1) with its MD5 (base64, as [`md5_of`] gives it, so the caller
    /// hashes each part once); returns its ETag, or `None` when the upload is gone (aborted
    /// or expired: start over).
    ///
    /// # Errors
    /// As [`S3Client::send`] and [`S3Client::refused`].
    pub fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        n: u32,
        body: &[u8],
        content_md5: &str,
    ) -> anyhow::Result<Option<String>> {
        let r = self.send(
            "PUT",
            bucket,
            key,
            &[
                ("partNumber", n.to_string()),
                ("uploadId", upload_id.to_string()),
            ],
            &[("content-md5", content_md5.to_string())],
            body,
        )?;
        match r.status {
            200 => Ok(Some(
                r.header("etag").unwrap_or("").trim_matches('"').to_string(),
            )),
            404 => Ok(None),
            _ => Err(self.refused(&format!("uploading part {n} of s3://{bucket}/{key}"), &r)),
        }
    }

    /// Completes a multipart upload from its parts' (number, ETag); `None` when the upload is
    /// gone.
    ///
    /// # Errors
    /// As [`S3Client::send`] and [`S3Client::refused`].
    pub fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        if_absent: bool,
    ) -> anyhow::Result<Option<()>> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>\"{etag}\"</ETag></Part>"
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let mut headers = vec![("content-type", "application/xml".into())];
        if if_absent {
            headers.push(("if-none-match", "*".into()));
        }
        let r = self.send(
            "POST",
            bucket,
            key,
            &[("uploadId", upload_id.to_string())],
            &headers,
            xml.as_bytes(),
        )?;
        let text = String::from_utf8_lossy(&r.body);
        match r.status {
            412 => Err(appeared(bucket, key)),
            // A 200 can still carry an error in its body.
            200 if !text.contains("<Error>") => Ok(Some(())),
            404 => Ok(None),
            _ => Err(self.refused(&format!("completing the upload of s3://{bucket}/{key}"), &r)),
        }
    }

    /// Aborts a multipart upload (its parts are deleted); errors are ignored.
    pub fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) {
        let _ = self.send(
            "DELETE",
            bucket,
            key,
            &[("uploadId", upload_id.to_string())],
            &[],
            &[],
        );
    }

    /// Every object under `prefix`: (key, size), in key order. Keys the store lists that do
    /// not start with `prefix` are left out with a warning (a lying or broken server must
    /// not point a reader elsewhere in the bucket).
    ///
    /// # Errors
    /// As [`S3Client::list_dir`].
    pub fn list(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<(String, u64)>> {
        Ok(self.listing(bucket, prefix, false)?.objects)
    }

    /// One level below `prefix` (delimiter `/`): the objects there and the directories
    /// (common prefixes, each ending in `/`), in key order; what lies outside the prefix is
    /// left out with a warning, as [`S3Client::list`] does.
    ///
    /// # Errors
    /// As [`S3Client::send`] and [`S3Client::refused`]; exit 65 when the store hands back a
    /// continuation token it gave before (it would loop for ever) or more than
    /// [`MAX_LIST_PAGES`] pages.
    pub fn list_dir(&self, bucket: &str, prefix: &str) -> anyhow::Result<Listing> {
        self.listing(bucket, prefix, true)
    }

    fn listing(&self, bucket: &str, prefix: &str, one_level: bool) -> anyhow::Result<Listing> {
        let mut out = Listing::default();
        let mut token: Option<String> = None;
        let mut seen_tokens = std::collections::HashSet::new();
        let mut foreign = 0u64;
        let what = format!("listing s3://{bucket}/{prefix}");
        for page in 1.. {
            if page > MAX_LIST_PAGES {
                return Err(fail(
                    Exit::DataErr,
                    format!("{what}: more than {MAX_LIST_PAGES} pages; nothing was read"),
                ));
            }
            let mut q = vec![
                ("list-type", "2".to_string()),
                ("prefix", prefix.to_string()),
            ];
            if one_level {
                q.push(("delimiter", "/".to_string()));
            }
            if let Some(t) = &token {
                q.push(("continuation-token", t.clone()));
            }
            q.sort();
            let r = self
                .send("GET", bucket, "", &q, &[], &[])
                .map_err(|e| e.context(format!("{what} (page {page})")))?;
            if r.status != 200 {
                return Err(self.refused(&what, &r));
            }
            let text = String::from_utf8_lossy(&r.body);
            foreign += add_page(&text, prefix, &what, &mut out)?;
            token = xml_values(&text, "NextContinuationToken")
                .into_iter()
                .next();
            if token.is_none()
                || xml_values(&text, "IsTruncated").first().map(String::as_str) != Some("true")
            {
                break;
            }
            if let Some(t) = &token
                && !seen_tokens.insert(t.clone())
            {
                return Err(fail(
                    Exit::DataErr,
                    format!(
                        "{what}: the store gave the same continuation token twice (page {page}); nothing was read"
                    ),
                ));
            }
        }
        if foreign > 0 {
            cfn_core::cli::warn(
                self.tool,
                format!("{what}: left out {foreign} listed keys outside the prefix"),
            );
        }
        out.objects.sort();
        out.dirs.sort();
        out.dirs.dedup();
        Ok(out)
    }

    /// A streaming reader of an object's bytes.
    ///
    /// # Errors
    /// As [`S3Client::send`] and [`S3Client::refused`].
    pub fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Box<dyn Read + Send>> {
        let url = self.url(bucket, key, &[]);
        let what = format!("GET s3://{bucket}/{key}");
        self.exchange("GET", &url, &what, &[], &[], |status, resp| {
            if status == 200 {
                return Ok(Box::new(ObjectBody {
                    inner: Box::new(resp.into_body().into_reader()),
                    url: format!("s3://{bucket}/{key}"),
                }) as Box<dyn Read + Send>);
            }
            Err(self.refused(&what, &S3Reply::read("GET", &what, status, resp)?))
        })
    }
}

/// An object's bytes as they stream in; an error names the object and says it was cut
/// short, so a reader never takes part of an object for all of it.
struct ObjectBody {
    inner: Box<dyn Read + Send>,
    url: String,
}

impl Read for ObjectBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            // A body cut short is worth another try later: 75, not 74.
            let kind = match e.kind() {
                std::io::ErrorKind::Other | std::io::ErrorKind::UnexpectedEof => {
                    std::io::ErrorKind::TimedOut
                }
                k => k,
            };
            std::io::Error::new(
                kind,
                format!("{}: cut short while reading it: {e}", self.url),
            )
        })
    }
}

/// A conditional write that found the key taken: someone else wrote it meanwhile.
fn appeared(bucket: &str, key: &str) -> anyhow::Error {
    fail(
        Exit::DataErr,
        format!(
            "s3://{bucket}/{key} appeared while it was being uploaded (another writer?); it was not overwritten"
        ),
    )
}

fn http_request(method: &str, url: &str) -> ureq::http::request::Builder {
    ureq::http::Request::builder().method(method).uri(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn locations_parse_and_bad_buckets_are_named() {
        let l = S3Location::parse("s3://cold-metrics/fleet/a").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("cold-metrics", "fleet/a/")
        );
        assert_eq!(S3Location::parse("s3://cold-metrics").unwrap().prefix, "");
        for bad in ["cold", "s3://UP", "s3://a", "s3://a_b/x"] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment_or_the_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\n[cold]\naws_access_key_id=AKCOLD\naws_secret_access_key=s2\naws_session_token = tok\n",
        )
        .unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[profile cold]\nregion = eu-west-3\ns3 =\n  addressing_style = path\n",
        )
        .unwrap();
        let files = vec![
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
        ];
        let p = RetryPolicy::default();
        let c = S3Config::resolve(None, &env_of(&files), p.clone()).unwrap();
        assert_eq!(
            (c.credentials.key.as_str(), c.region.as_str()),
            ("AKDEFAULT", "us-east-1")
        );
        assert_eq!(
            (c.endpoint.as_str(), c.path_style),
            ("https://s3.us-east-1.amazonaws.com", false)
        );
        let mut cold = files.clone();
        cold.push(("AWS_PROFILE", "cold".into()));
        let c =
            S3Config::resolve(Some("http://127.0.0.1:9000/"), &env_of(&cold), p.clone()).unwrap();
        assert_eq!(c.credentials.key, "AKCOLD");
        assert_eq!(c.credentials.token.as_deref(), Some("tok"));
        assert_eq!(c.region, "eu-west-3");
        assert_eq!(
            (c.endpoint.as_str(), c.path_style),
            ("http://127.0.0.1:9000", true)
        );
        assert!(
            !format!("{c:?}").contains("s2"),
            "secrets stay out of Debug"
        );
        let mut envs = cold.clone();
        envs.extend([
            ("AWS_ACCESS_KEY_ID", "AKENV".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t".to_string()),
            ("AWS_REGION", "ap-south-1".to_string()),
            ("AWS_ENDPOINT_URL", "http://minio:9000".to_string()),
        ]);
        let c = S3Config::resolve(None, &env_of(&envs), p.clone()).unwrap();
        assert_eq!(
            (c.credentials.key.as_str(), c.region.as_str()),
            ("AKENV", "ap-south-1")
        );
        assert_eq!(c.endpoint, "http://minio:9000");
        let e = S3Config::resolve(None, &env_of(&[]), p).unwrap_err();
        assert_eq!(cfn_core::exit::exit_for(&e), Exit::Config);
    }

    #[test]
    fn xml_values_and_etags() {
        let xml = "<R><Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>4</Size></Contents></R>";
        assert_eq!(xml_values(xml, "Contents").len(), 2);
        assert_eq!(xml_values(xml, "Key"), ["a&b", "c"]);
        // md5("") is d41d8cd98f00b204e9800998ecf8427e; two parts of "" give this ETag.
        let e = md5_of(b"").0;
        assert_eq!(hex(&e), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(multipart_etag(&[e, e]).ends_with("-2"));
        assert_eq!(encode_key("p/cfn metrics+1.gz"), "p/cfn%20metrics%2B1.gz");
        assert_eq!(encode_key("p/../x/./y..z"), "p/%2E%2E/x/%2E/y..z");
    }
}
