//! HTTP/2 lets a client cancel one request (RST_STREAM) while the server is still working on
//! it. An idempotent-producer append to an `fsync`-class stream that the client resets while
//! its group fsync is pending must still end exactly once: either it committed (and a retry of
//! the same producer tuple is a 204 duplicate) or it did not (and the retry, with a different
//! body, is stored with 200). The stream must never hold both bodies for one tuple, and must
//! read the same after a kill -9 and restart.
//!
//! Before the append lock was owned by the commit, a reset dropped the appender's lock guard
//! while its record was still queued: the retry stored its body too (a debug build's WAL
//! committer then panicked on the out-of-order apply and every later write answered 503).

mod common;

use common::{H2, Options, Server, TempDir};
use std::path::Path;
use std::time::{Duration, Instant};

const ROUNDS: usize = 200;

async fn start(data: &Path) -> Server {
    Server::start_with(
        Options::default()
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data.to_str().expect("utf-8 path")),
    )
    .await
}

/// The producer headers of round `round`: a fresh producer each round, epoch 0, seq 0.
fn producer(round: usize) -> [(String, String); 4] {
    [
        ("content-type".into(), "text/plain".into()),
        ("producer-id".into(), format!("cancel-{round}")),
        ("producer-epoch".into(), "0".into()),
        ("producer-seq".into(), "0".into()),
    ]
}

fn borrowed(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Wait `micros` without yielding to the runtime, so the reset lands at a precise moment.
fn spin(micros: u64) {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_append_is_stored_once_and_its_retry_agrees() {
    let tmp = TempDir::new("h2-cancel");
    let data = tmp.path().join("data");
    let server = start(&data).await;
    let path = server.path("h2-cancel");
    let url = server.url(&path);
    let r = server
        .client
        .put(&url)
        .header("content-type", "text/plain")
        .header("stream-durability", "fsync")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);

    let mut h2 = H2::connect(server.port).await.expect("h2 connection");
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    // Per round: whether the retry said the first body had committed (204).
    let mut first_committed = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let headers = producer(round);
        let headers = borrowed(&headers);
        let (resp, mut stream) = h2
            .start("POST", &path, &headers, format!("r{round}-a\n").as_bytes())
            .await
            .expect("send the first append");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // 0 to 1 ms: before the server read it, while it waits for its fsync, or after.
        spin(rng % 1_000);
        stream.send_reset(h2::Reason::CANCEL);
        drop(resp);

        let retry = h2
            .request("POST", &path, &headers, format!("r{round}-b\n").as_bytes())
            .await
            .expect("the retry");
        assert!(
            retry.status == 200 || retry.status == 204,
            "round {round}: the retry answered {}: {}",
            retry.status,
            String::from_utf8_lossy(&retry.body)
        );
        first_committed.push(retry.status == 204);
    }

    // Exactly one body per tuple, the one the retry's status names, in round order.
    let want: String = first_committed
        .iter()
        .enumerate()
        .map(|(round, &a)| format!("r{round}-{}\n", if a { 'a' } else { 'b' }))
        .collect();
    let got = String::from_utf8(server.read_all(&url).await).expect("text");
    let twice: Vec<usize> = (0..ROUNDS)
        .filter(|r| got.contains(&format!("r{r}-a\n")) && got.contains(&format!("r{r}-b\n")))
        .collect();
    assert!(
        twice.is_empty(),
        "{} of {ROUNDS} producer tuples stored both bodies (rounds {twice:?})",
        twice.len()
    );
    assert_eq!(
        got, want,
        "the stream does not match what the retries reported"
    );
    let committed = first_committed.iter().filter(|&&a| a).count();
    eprintln!("{committed} of {ROUNDS} reset appends had committed");

    // A crash now must neither stop the server from starting nor change what is stored.
    drop(h2);
    drop(server); // SIGKILL
    let server = start(&data).await;
    let again = String::from_utf8(server.read_all(&server.url(&path)).await).expect("text");
    assert_eq!(again, got, "the stream changed across kill -9 and restart");
}
