//! Any number of streams within any open-files limit: the real binary in `file-durable` mode
//! runs under `ulimit -n 256` (soft and hard, so the server cannot raise it) while thousands
//! of streams are created, appended to and read over a couple dozen keep-alive connections.
//! Every request must succeed and every stream must read back exactly what was appended, also
//! after a `kill -9` and a graceful restart under the same limit. A burst of connections past
//! the limit must not stop the listener. Without the stream-file cache every stream held two
//! descriptors, and the ~120th stream answered `503 Too many open files`.
//!
//! `RIFFLE_OPEN_FILES_STREAMS` sets the number of streams (default 3000).

mod common;

use common::{TempDir, free_port, header, offset};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The open-files limit the server runs under.
const LIMIT: usize = 256;
/// Client connections (keep-alive), well inside the limit next to the stream files.
const CONNECTIONS: usize = 24;
/// Stream files the server may hold at once: the automatic `max_open_files` (half the
/// limit), plus what requests in flight hold while the cache lets go of them.
const MOST_STREAM_FILES: usize = LIMIT / 2 + 2 * CONNECTIONS;

fn streams() -> usize {
    std::env::var("RIFFLE_OPEN_FILES_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// The real binary under `ulimit -n LIMIT`, on a data directory that outlives it.
struct Limited {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Limited {
    async fn start(work: &Path, data: &Path) -> Self {
        let config = work.join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        let log = work.join("riffle.log");
        let port = free_port();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        // `ulimit -n` sets both limits, so the server's raise of the soft one to the hard one
        // changes nothing: it really runs with LIMIT descriptors.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {LIMIT} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_riffle"))
            .arg("--config-dir")
            .arg(&config)
            .arg("--port")
            .arg(port.to_string());
        for (k, _) in std::env::vars() {
            if k.starts_with("DS_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .current_dir(work)
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log file"))
            .stderr(out)
            .spawn()
            .expect("spawn sh -c 'ulimit -n … && exec riffle'");
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        // Recovery of thousands of streams syncs all their files once; leave it time.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("riffle exited during start-up: {status}\n{}", self.log());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no /readyz within 60 s\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn sigterm_and_wait(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(
                Instant::now() < deadline,
                "no exit 60 s after SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.log().contains("stopped"),
            "no clean shutdown:\n{}",
            self.log()
        );
    }

    /// The process's soft limit on open files, from `/proc`.
    fn open_files_limit(&self) -> String {
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).expect("limits");
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_string())
            .unwrap_or_default()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- riffle log ---\n{}--- end ---", self.log());
        }
    }
}

/// Samples how many of the server's descriptors name stream files, keeping the maximum.
fn watch_stream_files(pid: u32, data: PathBuf, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let peak = Arc::new(AtomicUsize::new(0));
    let out = peak.clone();
    let streams = data.join("streams");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return;
            };
            let n = fds
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.starts_with(&streams))
                .count();
            peak.fetch_max(n, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    out
}

fn record(stream: usize, n: usize) -> String {
    // Varying lengths, so a misplaced or torn record cannot hide.
    format!("{stream}/{n}/{}\n", "x".repeat((stream * 7 + n * 13) % 97))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

fn url(base: &str, stream: usize) -> String {
    format!("{base}/v1/stream/of-{stream}")
}

async fn append(client: &reqwest::Client, base: &str, stream: usize, body: String, end: usize) {
    let r = client
        .post(url(base, stream))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST to stream {stream}: {e}"));
    assert_eq!(r.status(), 204, "append to stream {stream}");
    assert_eq!(
        header(&r, "stream-next-offset"),
        Some(offset(end as u64)),
        "stream {stream}"
    );
}

async fn read(client: &reqwest::Client, base: &str, stream: usize) -> Vec<u8> {
    let r = client
        .get(format!("{}?offset=-1", url(base, stream)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET stream {stream}: {e}"));
    assert_eq!(r.status(), 200, "read stream {stream}");
    r.bytes().await.expect("body").to_vec()
}

/// Run `work(stream)` for every stream, from CONNECTIONS tasks sharing one client.
async fn for_every_stream<F, Fut>(n: usize, work: F)
where
    F: Fn(reqwest::Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let client = client();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|t| {
            let (client, work) = (client.clone(), work.clone());
            tokio::spawn(async move {
                for stream in (t..n).step_by(CONNECTIONS) {
                    work(client.clone(), stream).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a worker panicked");
    }
}

/// Every stream reads back exactly `rounds` records.
async fn verify(base: &str, n: usize, rounds: usize) {
    let base = base.to_string();
    for_every_stream(n, move |client, stream| {
        let base = base.clone();
        async move {
            let want: String = (0..rounds).map(|r| record(stream, r)).collect();
            let got = read(&client, &base, stream).await;
            assert!(got == want.as_bytes(), "stream {stream} reads back wrong");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_durable_streams_under_256_open_files() {
    let n = streams();
    let work = TempDir::new("open-files");
    let data = work.path().join("data");
    let started = Instant::now();
    let mut server = Limited::start(work.path(), &data).await;
    assert_eq!(server.open_files_limit(), LIMIT.to_string());
    assert!(
        server.log().contains("max_open_files=128"),
        "{}",
        server.log()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let peak = watch_stream_files(server.pid(), data.clone(), stop.clone());

    // 1. Create every stream, append twice, read it back, and read a neighbour created
    //    earlier (whose files the cache has long let go).
    let base = server.base.clone();
    for_every_stream(n, move |client, stream| {
        let base = base.clone();
        async move {
            let r = client
                .put(url(&base, stream))
                .header("content-type", "text/plain")
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT stream {stream}: {e}"));
            assert_eq!(r.status(), 201, "create stream {stream}");
            let mut end = 0;
            for round in 0..2 {
                let body = record(stream, round);
                end += body.len();
                append(&client, &base, stream, body, end).await;
            }
            let want = format!("{}{}", record(stream, 0), record(stream, 1));
            assert!(read(&client, &base, stream).await == want.as_bytes());
            if stream >= CONNECTIONS {
                let old = stream - CONNECTIONS;
                let want = format!("{}{}", record(old, 0), record(old, 1));
                assert!(read(&client, &base, old).await == want.as_bytes());
            }
        }
    })
    .await;
    let phase1 = started.elapsed();

    // 2. A burst of connections past the limit: accept fails with EMFILE, the listener pauses
    //    and goes on; once they are gone, everything works again.
    //    With the cache full, about LIMIT / 2 - 15 descriptors are free: 200 connections pass
    //    that and still fit the listen backlog (128), so no connect waits for SYN retries (the
    //    timeout guards against a smaller backlog).
    let addr: std::net::SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let burst: Vec<_> = (0..200)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("out of file descriptors") {
        assert!(
            Instant::now() < deadline,
            "no EMFILE from accept?\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(burst);
    // New connections are accepted again: a fresh client reads a sample of the streams.
    let fresh = client();
    for stream in (0..n).step_by(n / 50 + 1) {
        let want = format!("{}{}", record(stream, 0), record(stream, 1));
        assert!(read(&fresh, &server.base, stream).await == want.as_bytes());
    }
    drop(fresh);

    // 3. kill -9, restart under the same limit: the WAL is replayed into thousands of files.
    stop.store(true, Ordering::Relaxed);
    server.kill9();
    let mut server = Limited::start(work.path(), &data).await;
    let stop = Arc::new(AtomicBool::new(false));
    let peak_after = watch_stream_files(server.pid(), data.clone(), stop.clone());
    verify(&server.base, n, 2).await;
    // One more record each, in an order unlike creation's.
    let base = server.base.clone();
    for_every_stream(n, move |client, i| {
        let base = base.clone();
        async move {
            let stream = (i * 7919) % n;
            let end: usize = (0..3).map(|r| record(stream, r).len()).sum();
            append(&client, &base, stream, record(stream, 2), end).await;
        }
    })
    .await;
    verify(&server.base, n, 3).await;

    // 4. A graceful restart (the final checkpoint syncs every stream's files) and a last check.
    stop.store(true, Ordering::Relaxed);
    server.sigterm_and_wait();
    let server = Limited::start(work.path(), &data).await;
    verify(&server.base, n, 3).await;

    let (peak, peak_after) = (
        peak.load(Ordering::Relaxed),
        peak_after.load(Ordering::Relaxed),
    );
    eprintln!(
        "{n} streams: phase 1 {phase1:?}, total {:?}; at most {peak} then {peak_after} stream \
         files open at once",
        started.elapsed()
    );
    assert!(
        peak.max(peak_after) <= MOST_STREAM_FILES,
        "{peak} / {peak_after} stream files open at once"
    );
}
