//! Test helpers shared by every cfn crate's CLI tests and the cross-tool tests: temp dirs,
//! running the real binaries with a clean environment (dumping command, status and both
//! streams on failure), decoding JSONL, and finding outside programs, which tests skip with a
//! printed reason when absent unless `CFN_REQUIRE_PEERS=1`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

pub mod accuracy;
pub mod alertmanager;
pub mod browser;
pub mod gendata;
pub mod s3;
pub mod serve;

/// A temporary directory that is removed when dropped.
pub struct TestDir {
    tmp: tempfile::TempDir,
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDir {
    /// A new empty directory.
    pub fn new() -> Self {
        Self {
            tmp: tempfile::Builder::new()
                .prefix("cfn-test-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes a file (creating parent directories).
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    /// Reads a file as text ("" when missing).
    /// Writes a file only its owner may read (mode 0600), as secret files must be.
    pub fn write_private(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = self.write(name, contents);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.join(name)).unwrap_or_default()
    }

    /// A command for `tool` with the metrics and archive directories inside this dir.
    pub fn cmd(&self, tool: &str) -> TestCommand {
        let mut c = TestCommand::new(tool);
        c.env("CFN_METRICS_DIR", self.path())
            .env("CFN_ARCHIVE_DIR", self.join("archive"));
        c
    }
}

fn target_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

static BUILD: Once = Once::new();

/// The path of a workspace binary, building the workspace's binaries first if it is missing
/// (so a single crate's tests can run on a fresh clone).
pub fn bin_path(tool: &str) -> PathBuf {
    let p = target_dir().join(tool);
    if !p.exists() {
        BUILD.call_once(|| {
            let profile_release = target_dir().ends_with("release");
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.args(["build", "--workspace", "--bins"]);
            if profile_release {
                c.arg("--release");
            }
            let status = c.status().expect("run cargo build");
            assert!(status.success(), "cargo build --workspace --bins failed");
        });
    }
    assert!(p.exists(), "binary {} not found", p.display());
    p
}

/// A command under test, with a clean environment (only PATH and HOME kept).
pub struct TestCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    display: String,
}

impl TestCommand {
    /// A command that runs the workspace binary `tool`.
    pub fn new(tool: &str) -> Self {
        Self::program(bin_path(tool))
    }

    /// A command that runs any program with the same clean environment.
    pub fn program(path: impl AsRef<Path>) -> Self {
        let mut cmd = Command::new(path.as_ref());
        cmd.env_clear();
        for k in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("NO_COLOR", "1");
        Self {
            cmd,
            stdin: None,
            display: path.as_ref().display().to_string(),
        }
    }

    pub fn arg(&mut self, a: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.display.push(' ');
        self.display.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    pub fn env(
        &mut self,
        k: impl AsRef<std::ffi::OsStr>,
        v: impl AsRef<std::ffi::OsStr>,
    ) -> &mut Self {
        self.cmd.env(k, v);
        self
    }

    pub fn current_dir(&mut self, d: impl AsRef<Path>) -> &mut Self {
        self.cmd.current_dir(d);
        self
    }

    /// Feeds `bytes` on stdin.
    pub fn stdin(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// The underlying command, for spawning by hand.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs to completion.
    pub fn run(&mut self) -> Outcome {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.display));
        if let Some(bytes) = self.stdin.take() {
            let mut si = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                let _ = si.write_all(&bytes);
            });
        }
        let output = child.wait_with_output().expect("wait");
        Outcome {
            display: self.display.clone(),
            output,
        }
    }
}

/// What a finished command did.
pub struct Outcome {
    pub display: String,
    pub output: Output,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\ncommand: {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.display,
            self.output.status.code(),
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

impl Outcome {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(self.code(), 0, "expected success{self:?}");
        self
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn status(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "unexpected status{self:?}");
        self
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr().contains(needle),
            "stderr lacks {needle:?}{self:?}"
        );
        self
    }

    /// Stdout decoded as JSONL.
    #[track_caller]
    pub fn jsonl(&self) -> Vec<serde_json::Value> {
        jsonl(&self.stdout())
    }
}

/// Decodes JSONL text, panicking on a bad line (tests want to know).
#[track_caller]
pub fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The file every skipped test is listed in (`target/cfn-skipped.txt`), which
/// `cargo run -p xtask -- test` prints at the end of the run.
pub fn skipped_list() -> PathBuf {
    let dir = target_dir();
    dir.parent()
        .map_or(dir.clone(), Path::to_path_buf)
        .join("cfn-skipped.txt")
}

/// Says that the running test skips its check, and why: on the process's stderr at once
/// (past the test harness's capture, so every run shows it) and in [`skipped_list`], so the
/// test command ends with the list and "N passed" never hides a test that did not run.
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let line = format!("SKIPPED: {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skipped_list())
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// True when `CFN_REQUIRE_PEERS=1`: missing outside programs fail tests instead of skipping.
pub fn peers_required() -> bool {
    std::env::var("CFN_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// An outside program (by name on PATH or by absolute path), if it is there; says nothing.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| p.exists())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    }
}

/// Finds an outside program (by name on PATH or by absolute path). When it is missing, says
/// why the test is skipped ([`skip`]) and returns `None`, or panics under
/// `CFN_REQUIRE_PEERS=1`.
#[track_caller]
pub fn peer(program: &str, why: &str) -> Option<PathBuf> {
    let found = find_program(program);
    if found.is_none() {
        let msg = format!("{program} not found ({why})");
        if peers_required() {
            panic!("CFN_REQUIRE_PEERS=1 but {msg}");
        }
        skip(&format!("{msg}; install it to run this test"));
    }
    found
}

/// Whether python3 can run `imports` (`import duckdb, duckdb_extension_httpfs`). When it
/// cannot, prints why the test is skipped and returns false, or panics under
/// `CFN_REQUIRE_PEERS=1`.
#[track_caller]
pub fn python_modules(imports: &str, install: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", imports])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = format!("python3 cannot `{imports}` ({install})");
        if peers_required() {
            panic!("CFN_REQUIRE_PEERS=1 but {msg}");
        }
        skip(&format!("{msg}; install it to run this test"));
    }
    ok
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A request received by a [`MockServer`].
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when `Content-Encoding: gzip`.
    pub fn decoded_body(&self) -> Vec<u8> {
        if self.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(&self.body[..]),
                &mut out,
            )
            .expect("gzip body");
            out
        } else {
            self.body.clone()
        }
    }

    /// The (decoded) body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.decoded_body()).expect("JSON body")
    }
}

/// A canned response: status, headers, body.
pub type Reply = (u16, Vec<(String, String)>, String);

/// A local HTTP server for tests: records every request and answers with `respond(request,
/// n)`, where `n` counts earlier requests to the same path.
pub struct MockServer {
    pub port: u16,
    server: std::sync::Arc<tiny_http::Server>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Starts on a free loopback port.
    pub fn start(respond: impl Fn(&Recorded, usize) -> Reply + Send + 'static) -> Self {
        let server =
            std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind mock server"));
        let port = server.server_addr().to_ip().expect("ip").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Recorded>::new()));
        let (s, r) = (server.clone(), requests.clone());
        let handle = std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut body = Vec::new();
                let _ = std::io::Read::read_to_end(req.as_reader(), &mut body);
                let rec = Recorded {
                    method: req.method().to_string(),
                    path: req.url().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                    at: std::time::Instant::now(),
                };
                let n = r
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|x| x.path == rec.path)
                    .count();
                let (status, headers, text) = respond(&rec, n);
                r.lock().unwrap().push(rec);
                let mut resp = tiny_http::Response::from_string(text).with_status_code(status);
                for (k, v) in headers {
                    resp.add_header(
                        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("header"),
                    );
                }
                let _ = req.respond(resp);
            }
        });
        Self {
            port,
            server,
            requests,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A reply with a status and body and no extra headers.
pub fn reply(status: u16, body: &str) -> Reply {
    (status, Vec::new(), body.to_string())
}
