//! Shared harness for the black-box tests: spawns the real `riffle` binary on a free port with
//! an empty configuration directory and in-memory storage (`RIFFLE_IT_STORAGE_MODE` picks
//! another mode), waits for `/healthz`, and kills it on drop. The server's output goes to a
//! file that is printed when a test fails.
//!
//! Every test file includes this module, and each uses a different subset of it.
#![allow(dead_code)]

mod http2;
mod ws;
#[allow(unused_imports)] // Only the HTTP/2 tests use it.
pub use http2::{H2, H2Response};
#[allow(unused_imports)] // Only the WebSocket tests use it.
pub use ws::{WebSocket, ws_with_bearer};

use futures_util::StreamExt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The offset of the start of every stream (and the tail of an empty one).
pub const ZERO: &str = "0000000000000000_0000000000000000";
/// How long the server may take to answer `/healthz` after spawning.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The offset `n` bytes into a stream's stored form.
pub fn offset(n: u64) -> String {
    format!("{:016}_{n:016}", 0)
}

/// The byte position of an offset this server minted.
pub fn position(offset: &str) -> u64 {
    let (hi, lo) = offset.split_once('_').expect("an offset like 0_0");
    assert!(hi.bytes().all(|b| b == b'0'), "offset {offset}");
    lo.parse().expect("offset digits")
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "riffle-it-{tag}-{}-{}-{nanos}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&p).expect("create a temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// How to start a server.
#[derive(Clone)]
pub struct Options {
    /// `DS_SERVER__LONG_POLL_TIMEOUT_SECS`.
    pub long_poll_secs: u64,
    /// Extra `DS_*` variables (they win over the defaults above).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            long_poll_secs: 1,
            env: Vec::new(),
        }
    }
}

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn long_poll_secs(mut self, secs: u64) -> Self {
        self.long_poll_secs = secs;
        self
    }

    /// Storage `mode` on the data directory `data` (which outlives the server, for restarts).
    pub fn storage(self, mode: &str, data: &Path) -> Self {
        self.env("DS_STORAGE__MODE", mode)
            .env("DS_STORAGE__DATA_DIR", data.to_str().expect("a UTF-8 path"))
    }
}

/// A running `riffle` child process.
pub struct Server {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub client: reqwest::Client,
    stderr_path: PathBuf,
    // Dropped last: holds the config dir, the stderr file and the working directory.
    dir: TempDir,
    /// Serving HTTPS: readiness is a TCP connect.
    tls: bool,
}

/// A command running the server binary with no configuration leaking in from the
/// environment: no `DS_*` variables, in-memory storage, and a scratch working directory
/// whose `config/` (the default config dir) is empty. Arguments are up to the caller.
pub fn riffle_command(dir: &Path) -> Command {
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riffle"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .env("DS_STORAGE__MODE", "memory")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// Let writers run for a random moment (150 to 750 ms, from `seed`, which advances), then
/// `kill -9` the server mid-write, stop the writers and collect what each of them knows.
pub async fn kill_mid_write<T>(
    srv: Server,
    seed: &mut u64,
    stop: &std::sync::atomic::AtomicBool,
    writers: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    tokio::time::sleep(Duration::from_millis(150 + *seed % 600)).await;
    drop(srv); // SIGKILL, mid-write
    stop.store(true, Ordering::Relaxed);
    let mut out = Vec::with_capacity(writers.len());
    for w in writers {
        out.push(w.await.expect("writer task"));
    }
    out
}

/// A server for the `/v0` tests: with a data directory, since a topic's default class
/// (`disk`) and `fsync` need one (the harness's default `memory` mode has only `ephemeral`
/// records). `file-durable`, Riffle's own default, unless `RIFFLE_IT_STORAGE_MODE` names
/// another file mode; the relative data directory is in the server's scratch directory.
pub async fn start_topics() -> Server {
    let mode = std::env::var("RIFFLE_IT_STORAGE_MODE").ok();
    let mode = mode.filter(|m| m != "memory");
    let mode = mode.as_deref().unwrap_or("file-durable");
    let opts = Options::default().env("DS_STORAGE__MODE", mode);
    Server::start_with(opts.env("DS_STORAGE__DATA_DIR", "data")).await
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        let mut dir = TempDir::new("server");
        let stderr_path = dir.path().join("stderr.log");
        let mut last_err = String::new();
        // The port we picked may be taken by someone else before the child binds it: retry.
        for _attempt in 0..5 {
            let port = free_port();
            let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
            let mut cmd = riffle_command(dir.path());
            cmd.arg("--config-dir")
                .arg(dir.path().join("config"))
                .arg("--port")
                .arg(port.to_string())
                .env(
                    "DS_SERVER__LONG_POLL_TIMEOUT_SECS",
                    opts.long_poll_secs.to_string(),
                )
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                // The log goes to stdout; both land in one file.
                .stdout(stderr.try_clone().expect("clone the log file"))
                .stderr(stderr);
            // `RIFFLE_IT_STORAGE_MODE=file-durable cargo test` runs the suite on disk storage.
            if let Ok(mode) = std::env::var("RIFFLE_IT_STORAGE_MODE") {
                cmd.env("DS_STORAGE__MODE", mode)
                    .env("DS_STORAGE__DATA_DIR", dir.path().join("data"));
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawn riffle");
            let base = format!("http://127.0.0.1:{port}");
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client");
            let mut server = Server {
                child,
                port,
                base,
                client,
                stderr_path: stderr_path.clone(),
                tls: opts.env.iter().any(|(k, _)| k == "DS_TLS__CERT_PATH"),
                dir,
            };
            match server.wait_healthy().await {
                Ok(()) => return server,
                Err(e) => {
                    last_err = format!("{e}\n--- stderr ---\n{}", server.stderr());
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    if !last_err.contains("cannot listen") {
                        break;
                    }
                    // Keep the temp dir for the next attempt.
                    dir = std::mem::replace(&mut server.dir, TempDir::new("unused"));
                }
            }
        }
        panic!("the server did not start: {last_err}");
    }

    /// Start a server configured for TLS (`opts` names the certificate and key); it is ready
    /// once its port accepts connections, since the plain-HTTP client cannot ask `/healthz`.
    pub async fn start_tls(opts: Options) -> Self {
        Self::start_with(opts).await
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let url = format!("{}/healthz", self.base);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("riffle exited during start-up: {status}"));
            }
            // Until our child says it listens, whatever answers on the port may be another
            // process (other test runs share the machine) that took it before our child could.
            if !self.stderr().contains("riffle listening") {
                if Instant::now() > deadline {
                    return Err(format!(
                        "no \"riffle listening\" within {STARTUP_TIMEOUT:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            if self.tls
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if let Ok(r) = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status() == 200
                && matches!(self.child.try_wait(), Ok(None))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "/healthz did not answer 200 within {STARTUP_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A path `/v1/stream/<tag>-<n>` no other call returned.
    pub fn path(&self, tag: &str) -> String {
        format!("/v1/stream/{tag}-{}", unique())
    }

    /// The full URL of a fresh stream name (see [`Server::path`]).
    pub fn stream(&self, tag: &str) -> String {
        self.url(&self.path(tag))
    }

    /// Send SIGTERM to the child.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Wait for the child to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Shut down with SIGTERM and assert a clean exit (status 0 within 15 s).
    pub fn stop_gracefully(mut self) {
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(15));
        assert!(
            status.is_some_and(|s| s.success()),
            "a graceful shutdown exited with {status:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Assert the server is alive and healthy.
    pub async fn assert_healthy(&mut self) {
        assert!(
            self.is_running(),
            "the server died; stderr:\n{}",
            self.stderr()
        );
        let r = self
            .client
            .get(self.url("/healthz"))
            .send()
            .await
            .expect("GET /healthz");
        assert_eq!(r.status(), 200);
    }

    // ---- request shortcuts -------------------------------------------------------------

    /// `PUT url` with `content-type`.
    /// Create a text stream named by `tag`; returns its URL and its path on the server.
    pub async fn text_stream(&self, tag: &str) -> (String, String) {
        let url = self.stream(tag);
        self.create(&url, "text/plain").await;
        let path = url
            .strip_prefix(&self.base)
            .expect("stream URLs start with the base")
            .to_string();
        (url, path)
    }

    pub async fn create(&self, url: &str, content_type: &str) -> reqwest::Response {
        let r = self
            .client
            .put(url)
            .header("content-type", content_type)
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 201, "create {url}");
        r
    }

    /// `POST url` with `content-type` and `body`; asserts 204 and returns the next offset.
    pub async fn append(&self, url: &str, content_type: &str, body: impl Into<Vec<u8>>) -> String {
        let r = self
            .client
            .post(url)
            .header("content-type", content_type)
            .body(body.into())
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 204, "append to {url}");
        header(&r, "stream-next-offset").expect("Stream-Next-Offset")
    }

    /// `GET url?offset=OFFSET` (catch-up); returns the response.
    pub async fn read(&self, url: &str, offset: &str) -> reqwest::Response {
        self.client
            .get(format!("{url}?offset={offset}"))
            .send()
            .await
            .expect("GET")
    }

    /// Catch-up read from the start; asserts 200 and returns the body.
    pub async fn read_all(&self, url: &str) -> Vec<u8> {
        let r = self.read(url, "-1").await;
        assert_eq!(r.status(), 200, "read {url}");
        r.bytes().await.expect("body").to_vec()
    }

    pub async fn head(&self, url: &str) -> reqwest::Response {
        self.client.head(url).send().await.expect("HEAD")
    }

    pub async fn delete(&self, url: &str) -> reqwest::Response {
        self.client.delete(url).send().await.expect("DELETE")
    }

    /// Poll `HEAD url` every 100 ms until it answers `status`, at most `timeout`.
    pub async fn wait_for_head_status(&self, url: &str, status: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.head(url).await.status();
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HEAD {url} still answers {got} after {timeout:?}, expected {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- riffle stderr (port {}) ---\n{}--- end of riffle stderr ---",
                self.port,
                self.stderr()
            );
        }
    }
}

/// A response header as text.
pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_string())
}

/// Assert a response header's exact value.
#[track_caller]
pub fn assert_header(r: &reqwest::Response, name: &str, want: &str) {
    assert_eq!(
        header(r, name).as_deref(),
        Some(want),
        "header {name} of {} {}",
        r.status(),
        r.url()
    );
}

/// Assert a response header is absent.
#[track_caller]
pub fn assert_no_header(r: &reqwest::Response, name: &str) {
    assert_eq!(
        header(r, name),
        None,
        "header {name} of {} {} should be absent",
        r.status(),
        r.url()
    );
}

/// Run the binary with `args` and `env` until it exits (at most `timeout`); returns the exit
/// status and stderr. Panics if it is still running after the timeout.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (ExitStatus, String) {
    let dir = TempDir::new("run");
    let stderr_path = dir.path().join("stderr.log");
    let stdout_path = dir.path().join("stdout.log");
    let mut cmd = riffle_command(dir.path());
    cmd.args(args)
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn riffle");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "riffle {args:?} with {env:?} still running after {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    if args.contains(&"--help") {
        out.push_str(&std::fs::read_to_string(&stdout_path).unwrap_or_default());
    }
    (status, out)
}

/// Run a Node script (`node -e script args...`) that prints one JSON value; return it.
pub async fn node_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "node {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// Send raw bytes on a fresh connection and read the answer until the server closes the
/// connection or `timeout` passes. Returns what was read (possibly partial).
pub fn raw_request(port: u16, request: &[u8], timeout: Duration) -> Vec<u8> {
    raw_exchange(port, request, timeout, false).bytes
}

/// Like [`raw_request`], but half-closes the connection after sending, as a client that
/// gives up would: the server sees end-of-file instead of waiting for more bytes.
pub fn raw_request_then_eof(port: u16, request: &[u8], timeout: Duration) -> Vec<u8> {
    raw_exchange(port, request, timeout, true).bytes
}

/// How a raw exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEnd {
    /// One complete response arrived (the server may keep the connection open).
    Complete,
    /// The server closed the connection (end of file).
    Closed,
    /// A read failed (typically a reset).
    Failed,
    /// Nothing ended the exchange within the timeout.
    TimedOut,
}

/// What a raw exchange read, and how it ended.
#[derive(Debug)]
pub struct RawResponse {
    pub bytes: Vec<u8>,
    pub end: RawEnd,
}

impl RawResponse {
    /// The status of the one complete, well-framed response this holds, if it holds one:
    /// a status line, a whole head and a whole body (by `Content-Length`, chunked framing,
    /// or up to the server's close; none for HEAD, 1xx, 204 and 304).
    pub fn complete_status(&self, head_request: bool) -> Option<u16> {
        let status = raw_status(&self.bytes)?;
        let end = self.bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let bodyless = head_request || status < 200 || status == 204 || status == 304;
        if bodyless || response_complete(&self.bytes) {
            let framed =
                head_length(&self.bytes[..end]).is_some() || is_chunked(&self.bytes[..end]);
            // A body delimited by the close is complete only if the close happened.
            return (bodyless || framed || self.end == RawEnd::Closed).then_some(status);
        }
        None
    }

    /// The bytes as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Send `request` on a fresh connection (half-closing it after if `eof`) and read until one
/// complete response, the server's close, a read error or `timeout`.
pub fn raw_exchange(port: u16, request: &[u8], timeout: Duration, eof: bool) -> RawResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    s.set_write_timeout(Some(timeout)).expect("write timeout");
    // The server may answer (and close) before reading everything: ignore write errors.
    let _ = s.write_all(request);
    let _ = s.flush();
    if eof {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break RawEnd::Closed,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One complete response is enough when the server keeps the connection open.
                if response_complete(&out) {
                    break RawEnd::Complete;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break RawEnd::TimedOut;
            }
            Err(_) => break RawEnd::Failed,
        }
        if Instant::now() > deadline {
            break RawEnd::TimedOut;
        }
    };
    RawResponse { bytes: out, end }
}

/// The `Content-Length` of a response head, if it declares one.
fn head_length(head: &[u8]) -> Option<usize> {
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
}

fn is_chunked(head: &[u8]) -> bool {
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
}

/// Whether `buf` holds a full response head and, when it declares one, its whole body.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    match head_length(&buf[..end]) {
        Some(n) => buf.len() >= end + 4 + n,
        None => !is_chunked(&buf[..end]) || buf.ends_with(b"0\r\n\r\n"),
    }
}

/// The status code of a raw HTTP/1.1 response, if there is a status line.
pub fn raw_status(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

// ---- SSE ---------------------------------------------------------------------------------

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    /// The `data:` lines, in order, without the `data:` prefix.
    pub data_lines: Vec<String>,
}

impl Event {
    /// The data lines joined with `\n`, as an EventSource would deliver them.
    pub fn data(&self) -> String {
        self.data_lines.join("\n")
    }

    /// A control event's JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data()).expect("control event JSON")
    }
}

/// Reads a streaming `text/event-stream` body incrementally.
pub struct SseReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    ended: bool,
}

impl SseReader {
    pub fn new(r: reqwest::Response) -> Self {
        Self {
            body: r.bytes_stream().boxed(),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The next event; `None` when the response ended cleanly. Panics on a transport error,
    /// a malformed ending, or no event within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(parse_event(&block[..end]));
            }
            if self.ended {
                assert!(
                    self.buf.is_empty(),
                    "SSE body ended inside an event: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("no SSE event within {timeout:?}"),
                Ok(None) => self.ended = true,
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("SSE body failed: {e}"),
            }
        }
    }

    /// The next event, which must exist.
    pub async fn expect(&mut self, timeout: Duration) -> Event {
        self.next(timeout)
            .await
            .expect("an SSE event, but the response ended")
    }

    /// Assert the response ends (cleanly) within `timeout`, with no further events.
    pub async fn expect_end(&mut self, timeout: Duration) {
        if let Some(e) = self.next(timeout).await {
            panic!("expected the SSE response to end, got {e:?}");
        }
    }
}

fn parse_event(block: &[u8]) -> Event {
    let text = std::str::from_utf8(block).expect("SSE is UTF-8");
    let mut event = String::new();
    let mut data_lines = Vec::new();
    for line in text.split('\n') {
        assert!(
            !line.contains('\r'),
            "SSE lines end in LF only and carry no CR: {line:?}"
        );
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim_start().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            // As every SSE parser does (WHATWG's, the official clients'): one space goes.
            data_lines.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        } else if line.starts_with(':') || line.is_empty() {
            // comment
        } else {
            panic!("unexpected SSE line {line:?}");
        }
    }
    Event { event, data_lines }
}
