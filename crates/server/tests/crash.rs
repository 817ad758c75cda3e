//! Kill -9 harness: the real binary in `file-durable` mode under concurrent producer writes,
//! killed with SIGKILL at random moments and restarted on the same directory. After every
//! restart the oracle must hold: every acknowledged append is present byte-exact and in order,
//! nothing else is, and retrying the append that was in flight with the same producer seq is
//! answered 200 (it had not committed) or 204 (it had).
//!
//! `RIFFLE_CRASH_ROUNDS` sets the number of kills (default 4).

mod common;

use common::{Options, Server, TempDir};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const STREAMS: usize = 8;

/// A server in `file-durable` mode on `data`.
async fn start(data: &Path) -> Server {
    Server::start_with(
        Options::default()
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data.to_str().expect("utf-8 path")),
    )
    .await
}

/// What one writer knows: the payloads acknowledged, and the one in flight when the server died.
#[derive(Default, Clone)]
struct Oracle {
    acked: Vec<Vec<u8>>,
    next_seq: u64,
    in_flight: Option<Vec<u8>>,
}

fn payload(stream: usize, seq: u64) -> Vec<u8> {
    // Varying lengths, so a torn or misplaced record cannot hide.
    let pad = "x".repeat((seq as usize * 7 + stream) % 300);
    format!("s{stream}-{seq:08}-{pad}\n").into_bytes()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    stream: usize,
    seq: u64,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::StatusCode> {
    Ok(client
        .post(url)
        .header("content-type", "text/plain")
        .header("producer-id", format!("writer-{stream}"))
        .header("producer-epoch", "0")
        .header("producer-seq", seq.to_string())
        .body(body)
        .send()
        .await?
        .status())
}

async fn writer(
    client: reqwest::Client,
    url: String,
    stream: usize,
    mut oracle: Oracle,
    stop: Arc<AtomicBool>,
) -> Oracle {
    while !stop.load(Ordering::Relaxed) {
        let seq = oracle.next_seq;
        let body = payload(stream, seq);
        oracle.in_flight = Some(body.clone());
        match post(&client, &url, stream, seq, body.clone()).await {
            Ok(s) if s == reqwest::StatusCode::OK => {
                oracle.acked.push(body);
                oracle.next_seq += 1;
                oracle.in_flight = None;
            }
            Ok(s) => panic!("append {seq} to stream {stream} answered {s}"),
            Err(_) => return oracle, // the server died under us
        }
    }
    oracle
}

fn stream_url(base: &str, i: usize) -> String {
    format!("{base}/v1/stream/crash-{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("RIFFLE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let tmp = TempDir::new("crash");
    let data = tmp.path().join("data");
    let client = reqwest::Client::new();
    let mut oracles = vec![Oracle::default(); STREAMS];

    let server = start(&data).await;
    for i in 0..STREAMS {
        let r = client
            .put(stream_url(&server.base, i))
            .header("content-type", "text/plain")
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
    }
    let mut server = Some(server);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..rounds {
        let srv = server.take().expect("a running server");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..STREAMS)
            .map(|i| {
                tokio::spawn(writer(
                    client.clone(),
                    stream_url(&srv.base, i),
                    i,
                    oracles[i].clone(),
                    stop.clone(),
                ))
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 600)).await;
        drop(srv); // SIGKILL, mid-write
        stop.store(true, Ordering::Relaxed);
        for (i, t) in tasks.into_iter().enumerate() {
            oracles[i] = t.await.expect("writer task");
        }

        let srv = start(&data).await;
        for (i, oracle) in oracles.iter_mut().enumerate() {
            let url = stream_url(&srv.base, i);
            if let Some(body) = oracle.in_flight.take() {
                let status = post(&client, &url, i, oracle.next_seq, body.clone())
                    .await
                    .expect("retry");
                assert!(
                    status == 200 || status == 204,
                    "round {round}: retry of in-flight seq {} on stream {i} answered {status}",
                    oracle.next_seq
                );
                oracle.acked.push(body);
                oracle.next_seq += 1;
            }
            let r = client
                .get(format!("{url}?offset=-1"))
                .send()
                .await
                .expect("read");
            assert_eq!(r.status(), 200);
            let got = r.bytes().await.expect("body");
            let want = oracle.acked.concat();
            assert!(
                got == want,
                "round {round}, stream {i}: {} bytes stored, {} acknowledged (first difference at {:?})",
                got.len(),
                want.len(),
                got.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
        server = Some(srv);
    }
    let total: usize = oracles.iter().map(|o| o.acked.len()).sum();
    assert!(
        total > STREAMS * rounds,
        "the writers made progress ({total} appends)"
    );
    drop(server);
}
