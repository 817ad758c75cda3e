//! Create (PUT), append (POST), catch-up read (GET), HEAD and DELETE against the real binary.

#[path = "../common/mod.rs"]
mod common;

use common::{Server, ZERO, assert_header, assert_no_header, header, offset};

const OCTET: &str = "application/octet-stream";
const TEXT: &str = "text/plain";
const JSON: &str = "application/json";

/// `scripts/test.sh` runs this file once per storage class through `RIFFLE_IT_STORAGE_MODE`:
/// make sure the server really runs in that mode, or those runs prove nothing.
#[tokio::test]
async fn the_server_runs_in_the_storage_mode_the_suite_asks_for() {
    let mode = std::env::var("RIFFLE_IT_STORAGE_MODE").unwrap_or_else(|_| "memory".into());
    let want = match mode.as_str() {
        "memory" => "ephemeral",
        "file-fast" => "disk",
        "file-durable" | "acid" | "redb" => "fsync",
        other => panic!("unknown RIFFLE_IT_STORAGE_MODE {other:?}"),
    };
    let s = Server::start().await;
    let url = s.stream("mode");
    s.create(&url, TEXT).await;
    assert_header(&s.head(&url).await, "stream-durability", want);
}

#[tokio::test]
async fn put_creates_with_location_and_default_content_type() {
    let s = Server::start().await;
    let path = s.path("create");
    let url = s.url(&path);

    let r = s.client.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "content-type", OCTET);
    assert_header(&r, "stream-next-offset", ZERO);
    assert_header(
        &r,
        "location",
        &format!("http://127.0.0.1:{}{path}", s.port),
    );
    assert_no_header(&r, "stream-closed");
    assert_header(&r, "x-content-type-options", "nosniff");

    // Same config again: 200, same headers, no new stream.
    let r = s.client.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_header(&r, "content-type", OCTET);
    assert_header(&r, "stream-next-offset", ZERO);
    let r = s
        .client
        .put(&url)
        .header("content-type", OCTET)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "an explicit default content type is the same config"
    );

    // A different content type is a different config.
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn put_idempotency_content_type_is_case_insensitive_and_exact_echo() {
    let s = Server::start().await;
    let url = s.stream("ct");
    let r = s
        .client
        .put(&url)
        .header("content-type", "application/JSON")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Echoed exactly, no charset added.
    assert_header(&r, "content-type", "application/JSON");

    for ct in [
        "application/json",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
    ] {
        let r = s
            .client
            .put(&url)
            .header("content-type", ct)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{ct}");
        assert_header(&r, "content-type", "application/JSON");
    }
    let r = s
        .client
        .put(&url)
        .header("content-type", "text/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    let h = s.head(&url).await;
    assert_eq!(h.status(), 200);
    assert_header(&h, "content-type", "application/JSON");
}

#[tokio::test]
async fn put_idempotency_compares_ttl_and_expires_at() {
    let s = Server::start().await;
    let url = s.stream("ttl");
    let put = |ttl: Option<&'static str>, at: Option<&'static str>| {
        let mut b = s.client.put(&url).header("content-type", TEXT);
        if let Some(t) = ttl {
            b = b.header("stream-ttl", t);
        }
        if let Some(a) = at {
            b = b.header("stream-expires-at", a);
        }
        async move { b.send().await.unwrap().status() }
    };
    assert_eq!(put(Some("3600"), None).await, 201);
    assert_eq!(put(Some("3600"), None).await, 200);
    assert_eq!(put(Some("3601"), None).await, 409);
    assert_eq!(put(None, None).await, 409);
    assert_eq!(put(None, Some("2099-01-01T00:00:00Z")).await, 409);

    let url2 = s.stream("at");
    let put2 = |at: Option<&'static str>| {
        let mut b = s.client.put(&url2).header("content-type", TEXT);
        if let Some(a) = at {
            b = b.header("stream-expires-at", a);
        }
        async move { b.send().await.unwrap().status() }
    };
    assert_eq!(put2(Some("2099-01-01T00:00:00Z")).await, 201);
    assert_eq!(put2(Some("2099-01-01T00:00:00Z")).await, 200);
    // The same instant written with another offset is the same expiry.
    assert_eq!(put2(Some("2099-01-01T02:00:00+02:00")).await, 200);
    assert_eq!(put2(Some("2099-01-01T00:00:01Z")).await, 409);
    assert_eq!(put2(None).await, 409);
}

#[tokio::test]
async fn put_idempotency_compares_closed_state() {
    let s = Server::start().await;

    // Created closed, with its whole content in the body.
    let closed = s.stream("closed");
    let r = s
        .client
        .put(&closed)
        .header("content-type", TEXT)
        .header("stream-closed", "true")
        .body("final")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(5));
    let r = s
        .client
        .put(&closed)
        .header("content-type", TEXT)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-closed", "true");
    let r = s
        .client
        .put(&closed)
        .header("content-type", TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        409,
        "a closed stream re-PUT without Stream-Closed"
    );
    assert_eq!(s.read_all(&closed).await, b"final");

    // An open stream re-PUT with Stream-Closed: true.
    let open = s.stream("open");
    s.create(&open, TEXT).await;
    let r = s
        .client
        .put(&open)
        .header("content-type", TEXT)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let h = s.head(&open).await;
    assert_no_header(&h, "stream-closed");
}

#[tokio::test]
async fn put_with_initial_body() {
    let s = Server::start().await;
    let url = s.stream("initial");
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-next-offset", &offset(5));
    assert_eq!(s.read_all(&url).await, b"hello");
    let next = s.append(&url, TEXT, " world").await;
    assert_eq!(next, offset(11));
    assert_eq!(s.read_all(&url).await, b"hello world");
}

#[tokio::test]
async fn json_mode_flattens_one_level() {
    let s = Server::start().await;
    let url = s.stream("json");

    // `[]` on create: an empty stream.
    let r = s
        .client
        .put(&url)
        .header("content-type", JSON)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-next-offset", ZERO);
    let r = s.read(&url, "-1").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "content-type", JSON);
    assert_header(&r, "stream-up-to-date", "true");
    assert_eq!(r.text().await.unwrap(), "[]");

    // `[]` on append: 400, nothing stored.
    let r = s
        .client
        .post(&url)
        .header("content-type", JSON)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Invalid JSON: 400.
    for bad in ["{nope", "[1,]", "1 2", "", "[1", "\"unterminated"] {
        let r = s
            .client
            .post(&url)
            .header("content-type", JSON)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "body {bad:?}");
    }

    s.append(&url, JSON, r#"{"a":1}"#).await;
    s.append(&url, JSON, "[[1,2],[3,4]]").await; // two messages
    s.append(&url, JSON, "[[[5,6,7]]]").await; // one message: [[5,6,7]]
    s.append(&url, JSON, r#"["x", null, true]"#).await; // three messages
    let body = s.read_all(&url).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("one JSON array");
    assert_eq!(
        v,
        serde_json::json!([{"a":1}, [1,2], [3,4], [[5,6,7]], "x", null, true])
    );
    assert_eq!(v.as_array().unwrap().len(), 7);

    // Still nothing from the rejected requests.
    let r = s.read(&url, "-1").await;
    assert_header(&r, "content-type", JSON);
}

#[tokio::test]
async fn json_mode_validates_create_body_and_charset_variant() {
    let s = Server::start().await;
    let url = s.stream("json-create");
    let r = s
        .client
        .put(&url)
        .header("content-type", JSON)
        .body("{bad")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        s.head(&url).await.status(),
        404,
        "a rejected create creates nothing"
    );

    // `application/json; charset=utf-8` is JSON mode too, and its content type is echoed.
    let ct = "application/json; charset=utf-8";
    let r = s
        .client
        .put(&url)
        .header("content-type", ct)
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    s.append(&url, JSON, "3").await;
    let r = s.read(&url, "-1").await;
    assert_header(&r, "content-type", ct);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v, serde_json::json!([1, 2, 3]));
}

#[tokio::test]
async fn binary_round_trip_is_byte_exact() {
    let s = Server::start().await;
    let url = s.stream("bin");
    s.create(&url, OCTET).await;
    let all: Vec<u8> = (0..=255u8).cycle().take(256 * 7 + 13).collect();
    let parts = [&all[..1], &all[1..300], &all[300..]];
    let mut offsets = vec![ZERO.to_string()];
    for p in parts {
        offsets.push(s.append(&url, OCTET, p.to_vec()).await);
    }
    assert_eq!(offsets.last().unwrap(), &offset(all.len() as u64));
    assert_eq!(s.read_all(&url).await, all);

    // Reading from each returned offset gives exactly the rest.
    let mut start = 0;
    for (i, o) in offsets.iter().enumerate() {
        let r = s.read(&url, o).await;
        assert_eq!(r.status(), 200);
        assert_header(&r, "content-type", OCTET);
        assert_header(&r, "stream-next-offset", &offset(all.len() as u64));
        assert_eq!(r.bytes().await.unwrap().as_ref(), &all[start..], "from {o}");
        if i < parts.len() {
            start += parts[i].len();
        }
    }

    // NUL, CR/LF and invalid UTF-8 in a text stream are bytes too.
    let t = s.stream("text-bytes");
    s.create(&t, TEXT).await;
    let weird = b"\0\r\n\xff\xfe line\r\n".to_vec();
    s.append(&t, TEXT, weird.clone()).await;
    assert_eq!(s.read_all(&t).await, weird);
}

#[tokio::test]
async fn stream_seq_is_compared_lexicographically() {
    let s = Server::start().await;
    let url = s.stream("seq");
    s.create(&url, TEXT).await;
    let post = |seq: &'static str, body: &'static str| {
        let req = s
            .client
            .post(&url)
            .header("content-type", TEXT)
            .header("stream-seq", seq)
            .body(body);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(post("2", "a").await.status(), 204);
    // "10" < "2" bytewise.
    assert_eq!(post("10", "b").await.status(), 409);
    // Equal is a regression too.
    assert_eq!(post("2", "c").await.status(), 409);
    assert_eq!(post("3", "d").await.status(), 204);
    assert_eq!(s.read_all(&url).await, b"ad");

    let url = s.stream("seq2");
    s.create(&url, TEXT).await;
    let post = |seq: &'static str| {
        let req = s
            .client
            .post(&url)
            .header("content-type", TEXT)
            .header("stream-seq", seq)
            .body("x");
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(post("09").await, 204);
    assert_eq!(post("10").await, 204);
    assert_eq!(post("a").await, 204);
    assert_eq!(post("B").await, 409, "'B' < 'a' bytewise");
    assert_eq!(post("b").await, 204);
    assert_eq!(s.read_all(&url).await, b"xxxx");
}

#[tokio::test]
async fn append_content_type_rules() {
    let s = Server::start().await;
    let url = s.stream("ct-append");
    s.create(&url, TEXT).await;

    // Mismatch: 409, nothing stored.
    let r = s
        .client
        .post(&url)
        .header("content-type", JSON)
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // Case and parameters do not matter.
    for ct in [
        "TEXT/PLAIN",
        "text/plain; charset=utf-8",
        "Text/Plain;charset=UTF-8",
    ] {
        let r = s
            .client
            .post(&url)
            .header("content-type", ct)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{ct}");
    }

    // A body without a content type: 400.
    let r = s.client.post(&url).body("x").send().await.unwrap();
    assert_eq!(r.status(), 400);

    // An empty body without Stream-Closed: 400.
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s.client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 400);

    assert_eq!(s.read_all(&url).await, b"xxx");

    // A missing stream: 404.
    let r = s
        .client
        .post(s.stream("missing"))
        .header("content-type", TEXT)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn append_answers_204_with_next_offset() {
    let s = Server::start().await;
    let url = s.stream("append");
    s.create(&url, TEXT).await;
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-next-offset", &offset(3));
    assert_no_header(&r, "stream-closed");
    assert_no_header(&r, "producer-epoch");
    assert_eq!(r.bytes().await.unwrap().len(), 0);
}

mod reads;

/// A `Content-Type` that is not a media type is a 400 on create and append, and a protocol
/// header sent twice with different values is a 400 (which to obey would be a guess); neither
/// changes anything.
#[tokio::test]
async fn malformed_media_types_and_conflicting_headers_are_400() {
    let s = Server::start().await;
    for ct in ["garbage", "text/pla in", "a/b/c", "text/", "/plain"] {
        let url = s.stream("bad-ct");
        let r = s
            .client
            .put(&url)
            .header("content-type", ct)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{ct}");
        assert_eq!(s.head(&url).await.status(), 404, "{ct}: nothing created");
    }
    let url = s.stream("ct-ok");
    s.create(&url, TEXT).await;
    let r = s
        .client
        .post(&url)
        .header("content-type", "garbage")
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let ttl = s.stream("two-ttls");
    let put = s.client.put(&ttl).header("content-type", TEXT);
    let r = put
        .header("stream-ttl", "60")
        .header("stream-ttl", "70")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(s.head(&ttl).await.status(), 404);
    let post = s.client.post(&url).header("content-type", TEXT);
    let post = post
        .header("producer-id", "p")
        .header("producer-epoch", "0");
    let r = post
        .header("producer-seq", "0")
        .header("producer-seq", "5")
        .body("z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let post = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .header("content-type", JSON);
    assert_eq!(post.body("z").send().await.unwrap().status(), 400);
    assert!(s.read_all(&url).await.is_empty(), "nothing appended");
}
