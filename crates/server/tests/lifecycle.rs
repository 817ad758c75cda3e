//! Process lifecycle: graceful shutdown on SIGTERM, refusal of bad configuration, `--help`.

mod common;

use common::{Options, Server, SseReader, TempDir, ZERO, node_json, run_to_exit};
use std::time::{Duration, Instant};

const TEXT: &str = "text/plain";
/// How long a refused configuration may take to exit.
const QUICK: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_live_reads_and_exits_cleanly() {
    // Long timeouts: only the shutdown can end these reads.
    let mut s = Server::start_with(
        Options::default()
            .long_poll_secs(60)
            .env("DS_SERVER__SSE_RECONNECT_INTERVAL_SECS", "600"),
    )
    .await;
    let url = s.stream("shutdown");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abc").await;

    let poll = tokio::spawn({
        let client = s.client.clone();
        let url = format!("{url}?offset=now&live=long-poll");
        async move {
            let r = client.get(url).send().await.expect("long-poll");
            let status = r.status().as_u16();
            let next = common::header(&r, "stream-next-offset");
            let body = r.bytes().await.expect("long-poll body");
            (status, next, body.len())
        }
    });

    let r = s
        .client
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut ev = SseReader::new(r);
    assert_eq!(ev.expect(Duration::from_secs(5)).await.event, "data");
    assert_eq!(ev.expect(Duration::from_secs(5)).await.event, "control");

    // A generous bound for the long-poll to reach the server (it cannot finish on its own).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !poll.is_finished(),
        "the long-poll answered before the shutdown"
    );

    let signalled = Instant::now();
    s.sigterm();

    // The long-poll is answered as if it had timed out.
    let (status, next, len) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long-poll ended within 5 s of SIGTERM")
        .expect("long-poll task");
    assert_eq!(status, 204);
    assert_eq!(next.as_deref(), Some(common::offset(3).as_str()));
    assert_eq!(len, 0);

    // The SSE response ends cleanly (no torn event, no transport error).
    ev.expect_end(Duration::from_secs(5)).await;

    let exit = tokio::task::spawn_blocking(move || {
        let status = s.wait_exit(Duration::from_secs(5));
        (status, s)
    })
    .await
    .unwrap();
    let (status, s) = exit;
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM"));
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        s.stderr()
    );
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert!(s.stderr().contains("stopped"), "log:\n{}", s.stderr());
}

#[tokio::test]
async fn sigterm_on_an_idle_server_exits_zero() {
    let mut s = Server::start().await;
    // A keep-alive connection sits idle in the client's pool.
    s.assert_healthy().await;
    s.sigterm();
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("exited within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn graceful_restart_keeps_file_durable_data() {
    let data = TempDir::new("data");
    let opts = Options::default()
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", data.path().to_str().unwrap());
    let path;
    {
        let mut s = Server::start_with(opts.clone()).await;
        path = s.path("durable");
        let url = s.url(&path);
        s.create(&url, TEXT).await;
        s.append(&url, TEXT, "kept ").await;
        let r = s
            .client
            .post(&url)
            .header("content-type", TEXT)
            .header("stream-closed", "true")
            .body("forever")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        s.sigterm();
        let status = s.wait_exit(Duration::from_secs(5)).expect("exited");
        assert!(status.success(), "exit status {status}");
    }
    let s = Server::start_with(opts).await;
    let url = s.url(&path);
    let r = s.read(&url, "-1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(common::header(&r, "stream-closed").as_deref(), Some("true"));
    assert_eq!(r.text().await.unwrap(), "kept forever");
}

/// `server.worker_threads = 1` runs a single-threaded runtime: durable appends (acknowledged
/// from the WAL's committer thread), concurrent writers and a live long-poll must all work on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_worker_thread_serves_durable_appends_and_live_reads() {
    let data = TempDir::new("data");
    let opts = Options::default()
        .env("DS_SERVER__WORKER_THREADS", "1")
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", data.path().to_str().unwrap())
        .long_poll_secs(10);
    let mut s = Server::start_with(opts).await;
    let url = s.stream("one-thread");
    s.create(&url, TEXT).await;

    // A long-poll at the tail, answered by an append made while it waits.
    let poll = {
        let (client, url) = (s.client.clone(), url.clone());
        tokio::spawn(async move {
            let r = client
                .get(format!("{url}?offset={}&live=long-poll", common::offset(0)))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.append(&url, TEXT, "first").await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long-poll answered")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "first"));

    // Concurrent writers share group commits; every append is acknowledged and stored.
    let urls: Vec<String> = (0..16).map(|w| s.stream(&format!("w{w}"))).collect();
    for url in &urls {
        s.create(url, TEXT).await;
    }
    let writers: Vec<_> = urls
        .iter()
        .map(|url| {
            let (client, url) = (s.client.clone(), url.clone());
            tokio::spawn(async move {
                for i in 0..20 {
                    let r = client
                        .post(&url)
                        .header("content-type", TEXT)
                        .body(format!("{i},"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 204);
                }
                url
            })
        })
        .collect();
    let want: String = (0..20).map(|i| format!("{i},")).collect();
    for w in writers {
        let url = w.await.unwrap();
        assert_eq!(String::from_utf8(s.read_all(&url).await).unwrap(), want);
    }
    s.sigterm();
    let status = s.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status}");
}

/// Run the binary with `env`; it must exit non-zero quickly with one stderr line containing
/// every one of `mentions`.
#[track_caller]
fn refused(env: &[(&str, &str)], args: &[&str], mentions: &[&str]) {
    let started = Instant::now();
    let (status, stderr) = run_to_exit(args, env, QUICK);
    assert_eq!(status.code(), Some(2), "{env:?} {args:?}: {stderr}");
    assert!(started.elapsed() < QUICK);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{env:?}: expected one line, got:\n{stderr}");
    for m in mentions {
        assert!(lines[0].contains(m), "{env:?}: {m:?} not in {:?}", lines[0]);
    }
}

#[test]
fn bad_configuration_is_refused_with_one_line_naming_the_key() {
    refused(&[("DS_SERVER__PORT", "abc")], &[], &["server.port"]);
    refused(&[("DS_BOGUS__KEY", "1")], &[], &["bogus"]);
    refused(&[("DS_SERVER__BOGUS", "1")], &[], &["bogus"]);
    refused(&[("DS_STORAGE__MODE", "floppy")], &[], &["storage.mode"]);
    refused(
        &[("DS_TLS__CERT_PATH", "/nonexistent/cert.pem")],
        &[],
        &["tls.cert_path", "tls.key_path"],
    );
    refused(
        &[("DS_TLS__KEY_PATH", "/nonexistent/key.pem")],
        &[],
        &["tls.key_path", "tls.cert_path"],
    );
    refused(
        &[("DS_SERVER__LONG_POLL_TIMEOUT_SECS", "0")],
        &[],
        &["long_poll_timeout_secs"],
    );
    refused(&[("DS_SERVER__HOST", "not-an-ip")], &[], &["server.host"]);
    refused(
        &[("DS_SERVER__WORKER_THREADS", "5000")],
        &[],
        &["server.worker_threads"],
    );
    refused(
        &[("DS_SERVER__WORKER_THREADS", "-1")],
        &[],
        &["server.worker_threads"],
    );
    refused(
        &[("DS_HTTP__CORS_ORIGINS", "ftp://x")],
        &[],
        &["cors_origins"],
    );
    refused(
        &[("DS_LIMITS__MAX_REQUEST_BODY_BYTES", "0")],
        &[],
        &["max_request_body_bytes"],
    );
    refused(
        &[],
        &["--config", "/nonexistent/riffle.toml"],
        &["--config"],
    );
    // Settings found unusable only when the server starts: the same exit status, and a line
    // that names the setting.
    let dir = TempDir::new("bad-settings");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    let tls = [
        ("DS_TLS__CERT_PATH", "/nonexistent/cert.pem"),
        ("DS_TLS__KEY_PATH", file),
    ];
    refused(&tls, &[], &["tls.cert_path", "/nonexistent/cert.pem"]);
    let tls = [("DS_TLS__CERT_PATH", file), ("DS_TLS__KEY_PATH", file)];
    refused(&tls, &[], &["tls.cert_path"]);
    let data = [
        ("DS_STORAGE__MODE", "file-durable"),
        ("DS_STORAGE__DATA_DIR", file),
    ];
    refused(&data, &[], &["storage.data_dir", "not a directory"]);
}

#[test]
fn a_bad_config_file_is_refused() {
    let dir = TempDir::new("cfg");
    let file = dir.path().join("bad.toml");
    let file_arg = file.to_str().unwrap();
    std::fs::write(&file, "[server]\nport = \"eighty\"\n").unwrap();
    refused(&[], &["--config", file_arg], &["port"]);
    std::fs::write(&file, "[limits]\nmax_stream_bytes = 1\nbogus = 2\n").unwrap();
    refused(&[], &["--config", file_arg], &["bogus"]);
    // A TOML syntax error is refused too; its message (from the TOML parser) spans several
    // lines, so only the exit status and the file name are checked.
    std::fs::write(&file, "[server\n").unwrap();
    let (status, stderr) = run_to_exit(&["--config", file_arg], &[], QUICK);
    assert!(!status.success());
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

#[test]
fn local_config_files_are_read_from_the_config_dir() {
    // A profile file with a bad value proves `--profile` reads CONFIG_DIR/<profile>.toml.
    let dir = TempDir::new("profile");
    std::fs::write(
        dir.path().join("staging.toml"),
        "[server]\nhost = \"nowhere\"\n",
    )
    .unwrap();
    let config_dir = dir.path().to_str().unwrap();
    refused(
        &[],
        &["serve", "--config-dir", config_dir, "--profile", "staging"],
        &["server.host"],
    );
}

#[tokio::test]
async fn file_durable_is_a_valid_storage_mode() {
    // `file-durable` is the default mode, not a refusal: it serves from its data directory.
    let data = TempDir::new("data");
    let s = Server::start_with(
        Options::default()
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data.path().to_str().unwrap()),
    )
    .await;
    let url = s.stream("fd");
    let r = s.create(&url, TEXT).await;
    assert_eq!(
        common::header(&r, "stream-next-offset").as_deref(),
        Some(ZERO)
    );
    s.append(&url, TEXT, "x").await;
    assert_eq!(s.read_all(&url).await, b"x");
    assert!(data.path().join("LOCK").exists());
}

#[test]
fn help_mentions_config_and_profile() {
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let (status, out) = run_to_exit(args, &[], QUICK);
        assert!(status.success(), "riffle {args:?}: {status}\n{out}");
        for flag in ["--config", "--profile", "--port", "--host"] {
            assert!(
                out.contains(flag),
                "riffle {args:?} does not mention {flag}:\n{out}"
            );
        }
    }
    let (status, _) = run_to_exit(&["--version"], &[], QUICK);
    assert!(status.success());
}

/// `/metrics` reports the engine's gauges and the WAL's counters in the Prometheus format.
#[tokio::test]
async fn metrics_report_streams_and_wal_activity() {
    let dir = TempDir::new("metrics");
    let data = dir.path().join("data");
    let s = Server::start_with(
        Options::default()
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data.to_str().expect("utf-8 path")),
    )
    .await;
    let url = s.stream("metered");
    s.create(&url, "text/plain").await;
    s.append(&url, "text/plain", "hello").await;
    let r = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    assert_eq!(value("riffle_streams"), 1);
    // The stream's own structures are counted; its durable data is not held in RAM.
    let held = value("riffle_memory_bytes");
    assert!(held > 0 && held < 4096, "riffle_memory_bytes {held}");
    assert!(value("riffle_wal_bytes_total") > 5);
    assert!(
        value("riffle_wal_syncs_total") >= 2,
        "the create and the append were synced"
    );
}

/// With `tls.cert_path` and `tls.key_path` the server speaks HTTPS (checked with Node's client,
/// which every machine that runs the tests has). The key pair is a test fixture.
#[tokio::test]
async fn serves_https_when_given_a_certificate() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert = fixtures.join("test-cert.pem");
    let key = fixtures.join("test-key.pem");
    let s = Server::start_tls(
        Options::default()
            .env("DS_TLS__CERT_PATH", cert.to_str().expect("utf-8 path"))
            .env("DS_TLS__KEY_PATH", key.to_str().expect("utf-8 path")),
    )
    .await;
    let script = r#"
        const https = require("https");
        const base = process.argv[1];
        const call = (method, path, body) => new Promise((ok, fail) => {
          const r = https.request(base + path, { method, rejectUnauthorized: false,
            headers: { "content-type": "text/plain" } }, (res) => {
            let data = "";
            res.on("data", (c) => (data += c));
            res.on("end", () => ok([res.statusCode, res.headers.location || "", data]));
          });
          r.on("error", fail);
          r.end(body);
        });
        (async () => {
          const put = await call("PUT", "/v1/stream/tls", "hello");
          const get = await call("GET", "/v1/stream/tls?offset=-1");
          console.log(JSON.stringify([put, get]));
        })().catch((e) => { console.error(e); process.exit(1); });
    "#;
    let v = node_json(script, &[&format!("https://127.0.0.1:{}", s.port)]).await;
    assert_eq!(v[0][0], 201);
    assert_eq!(
        v[0][1],
        format!("https://127.0.0.1:{}/v1/stream/tls", s.port)
    );
    assert_eq!(v[1][0], 200);
    assert_eq!(v[1][2], "hello");
}

/// A topics deployment's test harness way of starting a server: `TOPICS_PORT=0` lets the
/// system pick the port, and `TOPICS_PORT_FILE` says where to read which one it picked.
#[tokio::test]
async fn the_port_file_names_the_port_the_system_picked() {
    let dir = TempDir::new("port-file");
    let file = dir.path().join("port");
    let mut child = common::riffle_command(dir.path())
        .env("TOPICS_PORT", "0")
        .env("TOPICS_PORT_FILE", &file)
        .spawn()
        .expect("start riffle");
    let deadline = Instant::now() + Duration::from_secs(20);
    let port: u16 = loop {
        if let Some(p) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no port file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(port, 0);
    let health = reqwest::get(format!("http://127.0.0.1:{port}/v0/health"))
        .await
        .expect("the server answers on that port");
    assert_eq!(health.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}
