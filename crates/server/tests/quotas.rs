//! The stream-count cap and the quota on retained bytes, over both APIs: one more is a 429
//! with `Retry-After` at exactly the limit, an update of what exists never counts, deleting
//! frees the room, and the retained count survives a restart.

mod common;

use common::{Options, Server, TempDir};
use serde_json::{Value, json};

async fn put(s: &Server, path: &str) -> reqwest::Response {
    s.client
        .put(s.url(path))
        .header("content-type", "text/plain")
        .send()
        .await
        .expect("answer")
}

async fn append(s: &Server, path: &str, body: &str) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .expect("answer")
}

async fn write_topic(s: &Server, topic: &str, data: Value) -> (u16, Value) {
    let r = s
        .client
        .post(s.url(&format!("/v0/topics/{topic}")))
        .header("content-type", "application/json")
        .body(json!({ "records": [{ "data": data }] }).to_string())
        .send()
        .await
        .expect("answer");
    let st = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_stream_cap_answers_429_at_exactly_its_limit() {
    let s = Server::start_with(Options::default().env("DS_LIMITS__MAX_STREAMS", "3")).await;
    for i in 0..3 {
        assert_eq!(put(&s, &format!("/v1/stream/s{i}")).await.status(), 201);
    }
    let r = put(&s, "/v1/stream/s3").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        s.head(&s.url("/v1/stream/s3")).await.status(),
        404,
        "nothing made"
    );
    // Re-confirming an existing stream is not a new one.
    assert_eq!(put(&s, "/v1/stream/s0").await.status(), 200);
    assert_eq!(s.delete(&s.url("/v1/stream/s1")).await.status(), 204);
    assert_eq!(put(&s, "/v1/stream/s3").await.status(), 201);
}

#[tokio::test]
async fn the_retained_bytes_quota_covers_streams_and_topics_and_survives_a_restart() {
    let data = TempDir::new("quota");
    let opts = || {
        Options::default()
            .storage("file-durable", data.path())
            .env("DS_LIMITS__MAX_TOTAL_BYTES", "100")
    };
    let s = Server::start_with(opts()).await;
    let a = "/v1/stream/a";
    assert_eq!(put(&s, a).await.status(), 201);
    assert_eq!(append(&s, a, &"x".repeat(60)).await.status(), 204);
    assert_eq!(
        append(&s, a, &"y".repeat(40)).await.status(),
        204,
        "exactly at the quota"
    );
    let r = append(&s, a, "z").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        s.read_all(&s.url(a)).await.len(),
        100,
        "the refused append stored nothing"
    );
    // Topics count against the same quota, with the /v0 envelope.
    let (st, v) = write_topic(&s, "t", json!("hi")).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["code"], "throttled");
    assert_eq!(v["error"]["detail"]["limit"], "max_total_bytes");
    assert_eq!(v["error"]["detail"]["max"], 100);
    let r = s
        .client
        .get(s.url("/v0/topics/t"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        r.status(),
        404,
        "the refused write did not create its topic"
    );
    // An empty append (a close) adds nothing and is not refused.
    let close = s
        .client
        .post(s.url("/v1/stream/a"))
        .header("stream-closed", "true")
        .send()
        .await
        .expect("answer");
    assert_eq!(close.status(), 204);

    // After a restart the count is rebuilt from what is stored.
    drop(s);
    let s = Server::start_with(opts()).await;
    assert_eq!(put(&s, "/v1/stream/b").await.status(), 201);
    assert_eq!(append(&s, "/v1/stream/b", "z").await.status(), 429);
    // Deleting frees the room.
    assert_eq!(s.delete(&s.url(a)).await.status(), 204);
    let (st, v) = write_topic(&s, "t", json!("hi")).await;
    assert!(st == 200 || st == 201, "{st} {v}");
    assert_eq!(append(&s, "/v1/stream/b", "z").await.status(), 204);
}
