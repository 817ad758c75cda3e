//! Readiness while the data directory is recovered: the listener is up at once, `/v0/ready`
//! and `/readyz` answer `503` (`not_ready`, with the replay progress) until recovery is done,
//! probes of liveness answer `200` (their uptime counting from start-up, through recovery),
//! and every other request is a `503` with `Retry-After`.

mod common;

use common::{Options, Server, TempDir, free_port, riffle_command};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reports_recovery_progress_then_ready() {
    let tmp = TempDir::new("topics-ready");
    let data = tmp.path().join("data");
    // A WAL long enough that replaying it takes a while.
    let srv = Server::start_with(Options::default().storage("file-durable", &data)).await;
    let put = srv
        .client
        .put(srv.url("/v0/topics/big"))
        .header("content-type", "application/json")
        .body(json!({ "durability": "disk" }).to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(put.status(), 201);
    let batch: Vec<Value> = (0..1000).map(|i| json!({ "data": i })).collect();
    let body = json!({ "records": batch }).to_string();
    const BATCHES: u64 = 300;
    for _ in 0..BATCHES {
        let r = srv
            .client
            .post(srv.url("/v0/topics/big"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("write");
        assert_eq!(r.status(), 200);
    }
    drop(srv); // kill -9: nothing checkpointed, all of it is replayed

    let dir = TempDir::new("topics-ready-run");
    let log = dir.path().join("log");
    let port = free_port();
    let mut child = riffle_command(dir.path())
        .arg("--port")
        .arg(port.to_string())
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", &data)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn riffle");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut not_ready, mut last_progress) = (0, 0);
    // The highest `uptime_ms` a probe saw during recovery.
    let mut uptime = 0;
    loop {
        assert!(Instant::now() < deadline, "not ready within 60 s");
        let Ok(r) = client.get(format!("{base}/v0/ready")).send().await else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue; // not listening yet
        };
        let status = r.status().as_u16();
        let retry_after = r.headers().contains_key("retry-after");
        let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
        if status == 200 {
            assert_eq!(v["status"], "ready");
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(retry_after);
        assert_eq!(v["error"]["code"], "not_ready", "{v}");
        // Every JSON answer has its `performance` block (§1.1), this 503 too.
        assert!(v["performance"]["server_total_ms"].is_f64(), "{v}");
        let p = v["error"]["detail"]["replay_progress"]["wal_records_replayed"]
            .as_u64()
            .expect("replay progress");
        assert!(p >= last_progress, "progress only grows");
        last_progress = p;
        not_ready += 1;
        // `/readyz` is the same probe (§1.3), unless recovery ended in between.
        let (status, readyz) = get_json(&client, &format!("{base}/readyz"), None).await;
        if status == 503 {
            assert_eq!(readyz["error"]["code"], "not_ready", "{readyz}");
            assert!(readyz["error"]["detail"]["replay_progress"].is_object());
            assert!(readyz["performance"].is_object(), "{readyz}");
        } else {
            assert_eq!((status, &readyz["status"]), (200, &json!("ready")));
        }
        // The rest answers too, without touching storage.
        for health in ["/v0/health", "/healthz"] {
            let (status, h) = get_json(&client, &format!("{base}{health}"), None).await;
            assert_eq!((status, &h["status"]), (200, &json!("ok")), "{health}: {h}");
            let up = h["uptime_ms"].as_u64().expect("uptime_ms");
            assert!(up >= uptime, "uptime went back from {uptime} to {up} ms");
            uptime = up;
        }
        // Metrics answer during recovery, the JSON snapshot with `performance` and progress.
        let (status, m) = get_json(
            &client,
            &format!("{base}/v0/metrics"),
            Some("application/json"),
        )
        .await;
        assert_eq!(status, 200, "{m}");
        assert!(m["performance"].is_object(), "{m}");
        assert!(m["replay_progress"]["wal_records_replayed"].is_u64(), "{m}");
        assert!(m["ready"].is_boolean(), "{m}");
        let other = client
            .get(format!("{base}/v0/topics/big"))
            .send()
            .await
            .expect("topic");
        assert!(other.status() == 503 || other.status() == 200);
    }
    // Recovery took long enough that a poll must have seen it: the server logs how long.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let elapsed = text
        .split("elapsed_ms=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse::<u64>().ok())
        .expect("the recovery log line");
    eprintln!("recovery took {elapsed} ms; {not_ready} probes saw it (progress {last_progress})");
    if elapsed >= 100 {
        assert!(
            not_ready > 0,
            "recovery took {elapsed} ms and no probe saw it"
        );
    }
    // Uptime counts from the server's start, not from the end of recovery: on across the
    // transition, and at least as long as the recovery it includes.
    let (_, h) = get_json(&client, &format!("{base}/v0/health"), None).await;
    let up = h["uptime_ms"].as_u64().expect("uptime_ms");
    assert!(
        up >= uptime,
        "uptime restarted at readiness: {uptime} then {up} ms"
    );
    assert!(
        up >= elapsed,
        "uptime {up} ms, though recovery alone took {elapsed} ms"
    );
    let (_, m) = get_json(
        &client,
        &format!("{base}/v0/metrics"),
        Some("application/json"),
    )
    .await;
    let up_metrics = m["uptime_ms"].as_u64().expect("uptime_ms");
    assert!(
        up_metrics >= up,
        "metrics' uptime {up_metrics} ms, health's {up} ms"
    );
    let r = client
        .get(format!("{base}/v0/topics/big"))
        .send()
        .await
        .expect("topic");
    let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
    assert_eq!(v["head_seq"], BATCHES * 1000, "{v}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `GET url` (with `accept`): the status and the JSON body.
async fn get_json(client: &reqwest::Client, url: &str, accept: Option<&str>) -> (u16, Value) {
    let mut r = client.get(url);
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let r = r.send().await.expect(url);
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    (status, v)
}
