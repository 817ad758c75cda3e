//! Idempotent producers (`Producer-Id/Epoch/Seq`) and stream closure (`Stream-Closed`).

mod common;

use common::{Server, assert_header, assert_no_header, header, offset};

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";

/// A producer append: `POST url` with the three producer headers.
async fn produce(
    s: &Server,
    url: &str,
    id: &str,
    epoch: &str,
    seq: &str,
    body: &str,
    close: bool,
) -> reqwest::Response {
    let mut b = s
        .client
        .post(url)
        .header("producer-id", id)
        .header("producer-epoch", epoch)
        .header("producer-seq", seq);
    if !body.is_empty() {
        b = b.header("content-type", TEXT).body(body.to_string());
    }
    if close {
        b = b.header("stream-closed", "true");
    }
    b.send().await.unwrap()
}

async fn close(s: &Server, url: &str) -> reqwest::Response {
    s.client
        .post(url)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn producer_sequencing() {
    let s = Server::start().await;
    let url = s.stream("producer");
    s.create(&url, TEXT).await;

    // An unknown producer must start at 0: a gap otherwise.
    let r = produce(&s, &url, "w", "0", "1", "x", false).await;
    assert_eq!(r.status(), 409);
    assert_header(&r, "producer-expected-seq", "0");
    assert_header(&r, "producer-received-seq", "1");

    // New data: 200 with the accepted epoch and seq.
    let r = produce(&s, &url, "w", "0", "0", "a", false).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "producer-epoch", "0");
    assert_header(&r, "producer-seq", "0");
    assert_header(&r, "stream-next-offset", &offset(1));
    assert_no_header(&r, "stream-closed");

    let r = produce(&s, &url, "w", "0", "1", "b", false).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "producer-seq", "1");
    assert_header(&r, "stream-next-offset", &offset(2));

    // Duplicates: 204, Producer-Seq is the highest accepted, nothing stored.
    for dup in ["0", "1"] {
        let r = produce(&s, &url, "w", "0", dup, "DUP", false).await;
        assert_eq!(r.status(), 204, "duplicate seq {dup}");
        assert_header(&r, "producer-epoch", "0");
        assert_header(&r, "producer-seq", "1");
        assert_header(&r, "stream-next-offset", &offset(2));
    }

    // A gap: 409 with the expected and received seqs.
    let r = produce(&s, &url, "w", "0", "5", "x", false).await;
    assert_eq!(r.status(), 409);
    assert_header(&r, "producer-expected-seq", "2");
    assert_header(&r, "producer-received-seq", "5");
    assert_no_header(&r, "stream-closed");

    // A new epoch must start at seq 0.
    let r = produce(&s, &url, "w", "1", "1", "x", false).await;
    assert_eq!(r.status(), 400);
    let r = produce(&s, &url, "w", "1", "0", "c", false).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "producer-epoch", "1");
    assert_header(&r, "producer-seq", "0");

    // The old epoch is now fenced: 403 with the current epoch.
    let r = produce(&s, &url, "w", "0", "2", "x", false).await;
    assert_eq!(r.status(), 403);
    assert_header(&r, "producer-epoch", "1");

    // Another producer has its own state.
    let r = produce(&s, &url, "other", "7", "0", "d", false).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "producer-epoch", "7");

    assert_eq!(s.read_all(&url).await, b"abcd");
}

#[tokio::test]
async fn producer_header_validation() {
    let s = Server::start().await;
    let url = s.stream("producer-headers");
    s.create(&url, TEXT).await;

    let partial: [&[(&str, &str)]; 6] = [
        &[("producer-id", "w")],
        &[("producer-epoch", "0")],
        &[("producer-seq", "0")],
        &[("producer-id", "w"), ("producer-epoch", "0")],
        &[("producer-id", "w"), ("producer-seq", "0")],
        &[("producer-epoch", "0"), ("producer-seq", "0")],
    ];
    for headers in partial {
        let mut b = s.client.post(&url).header("content-type", TEXT).body("x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        assert_eq!(b.send().await.unwrap().status(), 400, "{headers:?}");
    }

    let r = produce(&s, &url, "", "0", "0", "x", false).await;
    assert_eq!(r.status(), 400, "empty Producer-Id");

    for bad in [
        "1abc",
        "1e3",
        "-1",
        "+1",
        "1.0",
        "",
        " ",
        "9007199254740992",
        "0x1",
    ] {
        let r = produce(&s, &url, "w", bad, "0", "x", false).await;
        assert_eq!(r.status(), 400, "Producer-Epoch {bad:?}");
        let r = produce(&s, &url, "w", "0", bad, "x", false).await;
        assert_eq!(r.status(), 400, "Producer-Seq {bad:?}");
    }

    // None of that stored anything or consumed a seq.
    assert_eq!(s.read_all(&url).await, b"");
    // 2^53 - 1 is the largest epoch allowed.
    let r = produce(&s, &url, "w", "9007199254740991", "0", "x", false).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "producer-epoch", "9007199254740991");
}

#[tokio::test]
async fn failed_appends_do_not_consume_a_producer_seq() {
    let s = Server::start().await;
    let url = s.stream("producer-json");
    s.create(&url, JSON).await;
    let post = |seq: &'static str, body: &'static str| {
        let req = s
            .client
            .post(&url)
            .header("content-type", JSON)
            .header("producer-id", "j")
            .header("producer-epoch", "0")
            .header("producer-seq", seq)
            .body(body);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(post("0", "{bad").await.status(), 400);
    assert_eq!(post("0", "[]").await.status(), 400);
    let r = post("0", "[1,2]").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "producer-seq", "0");
    assert_eq!(post("1", "[]").await.status(), 400);
    let r = post("1", "3").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "producer-seq", "1");
    let v: serde_json::Value = serde_json::from_slice(&s.read_all(&url).await).unwrap();
    assert_eq!(v, serde_json::json!([1, 2, 3]));
}

#[tokio::test]
async fn producer_dedup_runs_before_stream_seq() {
    let s = Server::start().await;
    let url = s.stream("dedup-seq");
    s.create(&url, TEXT).await;
    let post = |seq: &'static str, stream_seq: &'static str| {
        let req = s
            .client
            .post(&url)
            .header("content-type", TEXT)
            .header("producer-id", "p")
            .header("producer-epoch", "0")
            .header("producer-seq", seq)
            .header("stream-seq", stream_seq)
            .body("x");
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(post("0", "5").await, 200);
    // A retry carries the same Stream-Seq: a duplicate, not a regression.
    assert_eq!(post("0", "5").await, 204);
    // A new producer seq with a regressing Stream-Seq: 409.
    assert_eq!(post("1", "4").await, 409);
    assert_eq!(post("1", "6").await, 200);
    assert_eq!(s.read_all(&url).await, b"xx");
}

#[tokio::test]
async fn close_only_is_idempotent() {
    let s = Server::start().await;
    let url = s.stream("close");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abc").await;

    for _ in 0..3 {
        let r = close(&s, &url).await;
        assert_eq!(r.status(), 204);
        assert_header(&r, "stream-closed", "true");
        assert_header(&r, "stream-next-offset", &offset(3));
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }

    // A close-only ignores Content-Type, even a mismatched one.
    let r = s
        .client
        .post(&url)
        .header("stream-closed", "true")
        .header("content-type", JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");

    // A missing stream: 404.
    assert_eq!(close(&s, &s.stream("missing")).await.status(), 404);

    // Still readable, still deletable.
    assert_eq!(s.read_all(&url).await, b"abc");
    assert_eq!(s.delete(&url).await.status(), 204);
}

#[tokio::test]
async fn close_only_ignores_content_type_on_an_open_stream() {
    let s = Server::start().await;
    let url = s.stream("close-ct");
    s.create(&url, TEXT).await;
    let r = s
        .client
        .post(&url)
        .header("stream-closed", "true")
        .header("content-type", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(0));
}

#[tokio::test]
async fn append_and_close_then_closed_conflicts() {
    let s = Server::start().await;
    let url = s.stream("append-close");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "ab").await;

    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .header("stream-closed", "true")
        .body("cd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(4));

    // Appending to a closed stream: 409 + Stream-Closed + Stream-Next-Offset.
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .body("e")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(4));

    // Append-and-close again (no producer): 409 too.
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .header("stream-closed", "true")
        .body("cd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(4));

    // Closed wins over a content-type mismatch and over Stream-Seq.
    let r = s
        .client
        .post(&url)
        .header("content-type", JSON)
        .header("stream-seq", "0")
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_header(&r, "stream-closed", "true");

    // A producer with a fresh tuple on a closed stream: 409 + Stream-Closed.
    let r = produce(&s, &url, "late", "0", "0", "x", false).await;
    assert_eq!(r.status(), 409);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(4));

    // Closed wins over a body that could not be appended anyway (invalid JSON for its declared
    // type, an empty JSON array, no body and no Content-Type).
    for (ct, body) in [
        (Some(JSON), "nope"),
        (Some(JSON), "[]"),
        (Some(JSON), "{"),
        (None, "x"),
    ] {
        let mut b = s.client.post(&url).body(body);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let r = b.send().await.unwrap();
        assert_eq!(r.status(), 409, "{ct:?} {body:?}");
        assert_header(&r, "stream-closed", "true");
        assert_header(&r, "stream-next-offset", &offset(4));
    }
    let r = s.client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 409, "an empty append");
    assert_header(&r, "stream-closed", "true");

    assert_eq!(s.read_all(&url).await, b"abcd");
    let h = s.head(&url).await;
    assert_header(&h, "stream-closed", "true");

    // On an open stream, a type other than the stream's is the 409 whatever the body, and on
    // a JSON stream an invalid body is a 400.
    let open = s.stream("open-text");
    s.create(&open, TEXT).await;
    let r = s
        .client
        .post(&open)
        .header("content-type", JSON)
        .body("more")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_no_header(&r, "stream-closed");
    let json = s.stream("open-json");
    s.create(&json, JSON).await;
    let r = s
        .client
        .post(&json)
        .header("content-type", JSON)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn producer_append_and_close_retry() {
    let s = Server::start().await;
    let url = s.stream("producer-close");
    s.create(&url, TEXT).await;
    let r = produce(&s, &url, "w", "0", "0", "first", false).await;
    assert_eq!(r.status(), 200);

    let r = produce(&s, &url, "w", "0", "1", "last", true).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "producer-epoch", "0");
    assert_header(&r, "producer-seq", "1");
    assert_header(&r, "stream-next-offset", &offset(9));

    // A retry of the same tuple, even with another body: 204 + Stream-Closed, body kept.
    let r = produce(&s, &url, "w", "0", "1", "DIFFERENT", true).await;
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "producer-seq", "1");
    assert_header(&r, "stream-next-offset", &offset(9));

    // A new tuple: 409 + Stream-Closed.
    let r = produce(&s, &url, "w", "0", "2", "more", false).await;
    assert_eq!(r.status(), 409);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(9));
    let r = produce(&s, &url, "w", "0", "2", "more", true).await;
    assert_eq!(r.status(), 409);
    assert_header(&r, "stream-closed", "true");

    // A stale epoch on a closed stream: fenced or conflict, never accepted.
    let r = produce(&s, &url, "w", "0", "7", "x", false).await;
    assert!(matches!(r.status().as_u16(), 403 | 409), "{}", r.status());

    assert_eq!(s.read_all(&url).await, b"firstlast");
}

#[tokio::test]
async fn producer_close_only() {
    let s = Server::start().await;
    let url = s.stream("producer-close-only");
    s.create(&url, TEXT).await;
    let r = produce(&s, &url, "w", "0", "0", "abc", false).await;
    assert_eq!(r.status(), 200);

    let r = produce(&s, &url, "w", "0", "1", "", true).await;
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(3));
    assert_header(&r, "producer-epoch", "0");
    assert_header(&r, "producer-seq", "1");

    // Retried: 204 again, still closed.
    let r = produce(&s, &url, "w", "0", "1", "", true).await;
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(3));

    // A plain close-only on the closed stream: 204.
    let r = close(&s, &url).await;
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");

    assert_eq!(s.read_all(&url).await, b"abc");
}

#[tokio::test]
async fn producer_close_only_with_a_gap_is_rejected() {
    let s = Server::start().await;
    let url = s.stream("producer-close-gap");
    s.create(&url, TEXT).await;
    let r = produce(&s, &url, "w", "0", "0", "abc", false).await;
    assert_eq!(r.status(), 200);
    // Close-only takes part in sequencing.
    let r = produce(&s, &url, "w", "0", "3", "", true).await;
    assert_eq!(r.status(), 409);
    assert_header(&r, "producer-expected-seq", "1");
    assert_header(&r, "producer-received-seq", "3");
    let h = s.head(&url).await;
    assert_no_header(&h, "stream-closed");
}

#[tokio::test]
async fn stream_closed_header_value_rules() {
    let s = Server::start().await;

    // Any case of `true` closes; the header name is case-insensitive too.
    for (name, value) in [
        ("Stream-Closed", "TRUE"),
        ("STREAM-CLOSED", "True"),
        ("stream-closed", "tRuE"),
    ] {
        let url = s.stream("closed-case");
        s.create(&url, TEXT).await;
        let r = s
            .client
            .post(&url)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{name}: {value}");
        assert_header(&r, "stream-closed", "true");
        let h = s.head(&url).await;
        assert_header(&h, "stream-closed", "true");
    }

    // Other values are ignored, not rejected.
    for value in ["false", "yes", "1", "truee", "", "no"] {
        let url = s.stream("closed-ignored");
        s.create(&url, TEXT).await;
        // With an empty body it is an empty append: 400.
        let r = s
            .client
            .post(&url)
            .header("stream-closed", value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "empty body with Stream-Closed: {value:?}");
        // With a body it is a plain append.
        let r = s
            .client
            .post(&url)
            .header("content-type", TEXT)
            .header("stream-closed", value)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "Stream-Closed: {value:?}");
        assert_no_header(&r, "stream-closed");
        let h = s.head(&url).await;
        assert_no_header(&h, "stream-closed");
        // On PUT as well: the stream is created open.
        let put_url = s.stream("put-closed-ignored");
        let r = s
            .client
            .put(&put_url)
            .header("stream-closed", value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_no_header(&r, "stream-closed");
    }

    // PUT with `TRUE` creates a closed stream.
    let url = s.stream("put-closed");
    let r = s
        .client
        .put(&url)
        .header("Stream-Closed", "TRUE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-closed", "true");
    let r = s
        .client
        .post(&url)
        .header("content-type", "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_header(&r, "stream-closed", "true");
    assert_eq!(
        header(&r, "stream-next-offset").as_deref(),
        Some(common::ZERO)
    );
}
