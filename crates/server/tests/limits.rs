//! Bounds on what one request can make the server keep: the depth of a fork chain
//! (`limits.max_fork_depth`, default 100), the length of a `Producer-Id`
//! (`limits.max_producer_id_bytes`, default 256) and of a `Stream-Seq`
//! (`limits.max_stream_seq_bytes`, default 256). Past a bound the request is a 400 and nothing
//! is stored.
//!
//! (A server from before these bounds fails every test here: it refuses the keys as unknown
//! and enforces no default.)

mod common;

use common::{Options, Server, TempDir};

const TEXT: &str = "text/plain";

/// PUT a fork of `source` (a path) at `path`; returns the status.
async fn fork(s: &Server, path: &str, source: &str) -> u16 {
    s.client
        .put(s.url(path))
        .header("content-type", TEXT)
        .header("stream-forked-from", source)
        .send()
        .await
        .expect("PUT fork")
        .status()
        .as_u16()
}

/// Build a chain: a root and `depth` forks, each of the previous one, each adding a piece.
/// Returns the paths (root first) and the content each should read as.
async fn chain(s: &Server, tag: &str, depth: usize) -> Vec<(String, String)> {
    let root = s.path(&format!("{tag}-0"));
    s.create(&s.url(&root), TEXT).await;
    s.append(&s.url(&root), TEXT, "0;").await;
    let mut out = vec![(root, "0;".to_string())];
    for d in 1..=depth {
        let (prev, content) = out.last().expect("the root").clone();
        let path = s.path(&format!("{tag}-{d}"));
        assert_eq!(fork(s, &path, &prev).await, 201, "fork at depth {d}");
        let piece = format!("{d};");
        s.append(&s.url(&path), TEXT, piece.clone()).await;
        out.push((path, content + &piece));
    }
    out
}

async fn assert_chain_reads(s: &Server, chain: &[(String, String)], when: &str) {
    for (depth, (path, content)) in chain.iter().enumerate() {
        let got = String::from_utf8(s.read_all(&s.url(path)).await).expect("text");
        assert_eq!(got, *content, "the fork at depth {depth} {when}");
    }
}

/// One fork deeper than `chain` allows: 400, and no stream.
async fn assert_one_more_refused(s: &Server, chain: &[(String, String)]) {
    let (deepest, _) = chain.last().expect("a chain");
    let path = s.path("too-deep");
    assert_eq!(
        fork(s, &path, deepest).await,
        400,
        "a fork at depth {}",
        chain.len()
    );
    assert_eq!(s.head(&s.url(&path)).await.status(), 404);
    // Forks of shallower members still work.
    let (mid, content) = &chain[chain.len() / 2];
    let side = s.path("side");
    assert_eq!(fork(s, &side, mid).await, 201);
    assert_eq!(s.read_all(&s.url(&side)).await, content.as_bytes());
}

#[tokio::test]
async fn a_configured_fork_depth_is_enforced() {
    let s = Server::start_with(Options::default().env("DS_LIMITS__MAX_FORK_DEPTH", "20")).await;
    let c = chain(&s, "d20", 20).await;
    assert_chain_reads(&s, &c, "in a chain of 20").await;
    assert_one_more_refused(&s, &c).await;
}

#[tokio::test]
async fn the_default_fork_depth_is_100_and_survives_a_restart() {
    let tmp = TempDir::new("fork-depth");
    let data = tmp.path().join("data");
    let s = Server::start_with(Options::default().storage("file-durable", &data)).await;
    let c = chain(&s, "d100", 100).await;
    assert_chain_reads(&s, &c, "in a chain of 100").await;

    // Recovery rebuilds the whole chain from the WAL (SIGKILL: no shutdown checkpoint) ...
    drop(s);
    let s = Server::start_with(Options::default().storage("file-durable", &data)).await;
    assert_chain_reads(&s, &c, "after kill -9 and restart").await;
    // ... and from the checkpoint of a clean shutdown.
    s.stop_gracefully();
    let s = Server::start_with(Options::default().storage("file-durable", &data)).await;
    assert_chain_reads(&s, &c, "after a clean restart").await;
    // The recovered chain is held to the bound.
    assert_one_more_refused(&s, &c).await;
}

/// POST `body` with a producer `id` (seq 0) and optionally a `Stream-Seq`; returns the status.
async fn post(s: &Server, url: &str, id: &str, stream_seq: Option<&str>, body: &str) -> u16 {
    let mut req = s
        .client
        .post(url)
        .header("content-type", TEXT)
        .header("producer-id", id)
        .header("producer-epoch", "0")
        .header("producer-seq", "0");
    if let Some(seq) = stream_seq {
        req = req.header("stream-seq", seq);
    }
    req.body(body.to_string())
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

/// With bounds of `id_max` and `seq_max` bytes: one byte more is a 400 storing nothing, the
/// bound itself is accepted.
async fn check_producer_bounds(s: &Server, id_max: usize, seq_max: usize) {
    let (url, _) = s.text_stream("ids").await;
    let long_id = "i".repeat(id_max + 1);
    assert_eq!(post(s, &url, &long_id, None, "a").await, 400, "Producer-Id");
    let long_seq = "5".repeat(seq_max + 1);
    assert_eq!(
        post(s, &url, "p", Some(&long_seq), "b").await,
        400,
        "Stream-Seq"
    );
    // Also without a producer: Stream-Seq alone.
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .header("stream-seq", &long_seq)
        .body("c")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400, "Stream-Seq without a producer");
    assert_eq!(
        s.read_all(&url).await,
        b"",
        "a refused append stored something"
    );

    // At the bounds: accepted; the refused producer tuple did not consume seq 0.
    let id = "i".repeat(id_max);
    assert_eq!(post(s, &url, &id, None, "d").await, 200);
    assert_eq!(post(s, &url, &id, None, "d").await, 204, "a duplicate");
    let seq = "5".repeat(seq_max);
    assert_eq!(post(s, &url, "p", Some(&seq), "e").await, 200);
    assert_eq!(s.read_all(&url).await, b"de");
}

#[tokio::test]
async fn producer_ids_and_stream_seqs_have_default_bounds() {
    let s = Server::start().await;
    check_producer_bounds(&s, 256, 256).await;
}

#[tokio::test]
async fn producer_id_and_stream_seq_bounds_are_configurable() {
    let s = Server::start_with(
        Options::default()
            .env("DS_LIMITS__MAX_PRODUCER_ID_BYTES", "16")
            .env("DS_LIMITS__MAX_STREAM_SEQ_BYTES", "8"),
    )
    .await;
    check_producer_bounds(&s, 16, 8).await;
}

/// `limits.max_stream_bytes` is unset by default: a file-backed stream grows past the 10 MiB
/// the key once defaulted to (the 11th 1 MiB append used to be a 413 for good); set, it caps
/// every stream.
#[tokio::test]
async fn file_backed_streams_have_no_default_cap() {
    let opts = Options::default()
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", "data");
    let s = Server::start_with(opts).await;
    let url = s.url(&s.path("big"));
    s.create(&url, TEXT).await;
    let mib = "x".repeat(1 << 20);
    for i in 0..12 {
        let r = s
            .client
            .post(&url)
            .header("content-type", TEXT)
            .body(mib.clone())
            .send()
            .await
            .expect("append");
        assert_eq!(r.status().as_u16(), 204, "append {i} of 1 MiB");
    }
    let capped = Options::default()
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", "data")
        .env("DS_LIMITS__MAX_STREAM_BYTES", "1500000");
    let s = Server::start_with(capped).await;
    let url = s.url(&s.path("capped"));
    s.create(&url, TEXT).await;
    let post = |body: String| {
        s.client
            .post(&url)
            .header("content-type", TEXT)
            .body(body)
            .send()
    };
    assert_eq!(post(mib.clone()).await.unwrap().status().as_u16(), 204);
    assert_eq!(
        post(mib.clone()).await.unwrap().status().as_u16(),
        413,
        "set, it caps"
    );
}
