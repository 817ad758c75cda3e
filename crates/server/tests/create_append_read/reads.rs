//! Catch-up reads, ETags, offsets, HEAD, DELETE, and the size limit.

use super::*;

#[tokio::test]
async fn catch_up_reads() {
    let s = Server::start().await;
    let url = s.stream("read");
    s.create(&url, TEXT).await;

    // Empty stream: 200, empty body, up to date, tail is the zero offset (never -1).
    for q in ["?offset=-1", "", "?offset=-1&unknown=param"] {
        let r = s.client.get(format!("{url}{q}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{q}");
        assert_header(&r, "stream-next-offset", ZERO);
        assert_header(&r, "stream-up-to-date", "true");
        assert_header(&r, "content-type", TEXT);
        assert!(header(&r, "etag").is_some());
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }

    let o1 = s.append(&url, TEXT, "hello ").await;
    let o2 = s.append(&url, TEXT, "world").await;
    assert_eq!(o1, offset(6));
    assert_eq!(o2, offset(11));

    // No offset means -1.
    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-next-offset", &o2);
    assert_header(&r, "stream-up-to-date", "true");
    assert_eq!(r.text().await.unwrap(), "hello world");

    // From the zero offset.
    let r = s.read(&url, ZERO).await;
    assert_eq!(r.text().await.unwrap(), "hello world");

    // Mid-stream.
    let r = s.read(&url, &o1).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-next-offset", &o2);
    assert_header(&r, "stream-up-to-date", "true");
    assert_eq!(r.text().await.unwrap(), "world");

    // At the tail: empty, up to date, the same offset back.
    let r = s.read(&url, &o2).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-next-offset", &o2);
    assert_header(&r, "stream-up-to-date", "true");
    assert_no_header(&r, "stream-closed");
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // `now`: the tail, no data, no ETag, never cached.
    let r = s.read(&url, "now").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-next-offset", &o2);
    assert_header(&r, "stream-up-to-date", "true");
    assert_header(&r, "cache-control", "no-store");
    assert_no_header(&r, "etag");
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // `now` on JSON: `[]`.
    let j = s.stream("read-json");
    s.create(&j, JSON).await;
    s.append(&j, JSON, "[1,2]").await;
    let r = s.read(&j, "now").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "content-type", JSON);
    assert_eq!(r.text().await.unwrap(), "[]");

    // Missing streams: 404, with `now` too.
    let missing = s.stream("nope");
    assert_eq!(s.read(&missing, "-1").await.status(), 404);
    assert_eq!(s.read(&missing, "now").await.status(), 404);
}

#[tokio::test]
async fn catch_up_at_tail_of_closed_stream_says_closed() {
    let s = Server::start().await;
    let url = s.stream("closed-read");
    s.create(&url, TEXT).await;
    let o = s.append(&url, TEXT, "abc").await;
    let r = s
        .client
        .post(&url)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Reading everything of a closed stream reaches EOF.
    let r = s.read(&url, "-1").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-up-to-date", "true");
    assert_eq!(r.text().await.unwrap(), "abc");

    let r = s.read(&url, &o).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-up-to-date", "true");
    assert_header(&r, "stream-next-offset", &o);
    assert_eq!(r.bytes().await.unwrap().len(), 0);
}

#[tokio::test]
async fn etag_and_if_none_match() {
    let s = Server::start().await;
    let url = s.stream("etag");
    s.create(&url, TEXT).await;
    let o = s.append(&url, TEXT, "abc").await;

    let r = s.read(&url, "-1").await;
    assert_eq!(r.status(), 200);
    let etag = header(&r, "etag").expect("ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    // A matching If-None-Match: 304, empty body.
    let r = s
        .client
        .get(format!("{url}?offset=-1"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_header(&r, "etag", &etag);
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // In a list, too.
    let r = s
        .client
        .get(format!("{url}?offset=-1"))
        .header("if-none-match", format!("\"other\", {etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // A wrong one: 200 with the data.
    let r = s
        .client
        .get(format!("{url}?offset=-1"))
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "abc");

    // Another range has another ETag.
    let r = s.read(&url, &o).await;
    let tail_etag = header(&r, "etag").expect("ETag");
    assert_ne!(tail_etag, etag);

    // New data changes the ETag of the same request.
    s.append(&url, TEXT, "d").await;
    let r = s
        .client
        .get(format!("{url}?offset=-1"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag2 = header(&r, "etag").unwrap();
    assert_ne!(etag2, etag);
    assert_eq!(r.text().await.unwrap(), "abcd");

    // Closing changes it again, although the data did not change.
    let r = s
        .client
        .post(&url)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .get(format!("{url}?offset=-1"))
        .header("if-none-match", &etag2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the ETag must change when the stream closes"
    );
    assert_header(&r, "stream-closed", "true");
    let etag3 = header(&r, "etag").unwrap();
    assert_ne!(etag3, etag2);
    assert_eq!(r.text().await.unwrap(), "abcd");

    // A deleted and re-created stream does not reuse ETags.
    assert_eq!(s.delete(&url).await.status(), 204);
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abcd").await;
    let r = s
        .client
        .get(format!("{url}?offset=-1"))
        .header("if-none-match", &etag2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a new incarnation must not match an old ETag"
    );
}

#[tokio::test]
async fn offset_validation() {
    let s = Server::start().await;
    let url = s.stream("offsets");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abc").await;

    for bad in [
        "abc",
        "1",
        "1,2",
        "..%2Fx",
        "%2F",
        "a_1",
        "1_",
        "_1",
        "_",
        "1_2_3",
        "-2",
        "NOW",
        "Now",
        "%00",
        "0_0%00",
        "1%20_2",
        "0000000000000000_000000000000000%0D%0A",
        "0x10_0",
        "+1_1",
        "1.5_0",
    ] {
        let r = s
            .client
            .get(format!("{url}?offset={bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "offset={bad}");
        // Never data, and the error is plain text.
        assert_header(&r, "content-type", "text/plain; charset=utf-8");
    }

    // Beyond the tail.
    for beyond in [
        "9999999999999999_9999999999999999".to_string(),
        offset(4),
        format!("{:016}_{:016}", 1, 0),
    ] {
        let r = s.read(&url, &beyond).await;
        assert_eq!(r.status(), 400, "offset={beyond}");
    }

    // Empty, or given twice.
    for q in ["offset=", "offset=-1&offset=-1", "offset=-1&offset=now"] {
        let r = s.client.get(format!("{url}?{q}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "?{q}");
    }

    // The valid forms still work.
    for ok in ["-1", "now", ZERO, &offset(3), "0_0", "00_3"] {
        let r = s.read(&url, ok).await;
        assert_eq!(r.status(), 200, "offset={ok}");
    }
}

#[tokio::test]
async fn head_reports_metadata() {
    let s = Server::start().await;

    let url = s.stream("head-ttl");
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .header("stream-ttl", "3600")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let h = s.head(&url).await;
    assert_eq!(h.status(), 200);
    assert_header(&h, "content-type", TEXT);
    assert_header(&h, "stream-next-offset", &offset(3));
    assert_header(&h, "stream-ttl", "3600");
    assert_no_header(&h, "stream-expires-at");
    assert_header(&h, "cache-control", "no-store");
    assert_no_header(&h, "stream-closed");
    assert_no_header(&h, "etag");
    assert_eq!(h.bytes().await.unwrap().len(), 0);

    let at = "2099-06-01T12:00:00Z";
    let url = s.stream("head-at");
    let r = s
        .client
        .put(&url)
        .header("content-type", JSON)
        .header("stream-expires-at", at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let h = s.head(&url).await;
    assert_eq!(h.status(), 200);
    assert_header(&h, "content-type", JSON);
    assert_header(&h, "stream-next-offset", ZERO);
    assert_header(&h, "stream-expires-at", at);
    assert_no_header(&h, "stream-ttl");
    assert_header(&h, "cache-control", "no-store");

    // Closed shows up only when closed.
    let url = s.stream("head-closed");
    s.create(&url, TEXT).await;
    let h = s.head(&url).await;
    assert_no_header(&h, "stream-ttl");
    assert_no_header(&h, "stream-expires-at");
    assert_no_header(&h, "stream-closed");
    let r = s
        .client
        .post(&url)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = s.head(&url).await;
    assert_eq!(h.status(), 200);
    assert_header(&h, "stream-closed", "true");
    assert_header(&h, "cache-control", "no-store");

    // Missing: 404.
    assert_eq!(s.head(&s.stream("missing")).await.status(), 404);
}

#[tokio::test]
async fn delete_and_recreate() {
    let s = Server::start().await;
    let url = s.stream("delete");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "old data").await;

    let r = s.delete(&url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    assert_eq!(s.delete(&url).await.status(), 404);
    assert_eq!(s.head(&url).await.status(), 404);
    assert_eq!(s.read(&url, "-1").await.status(), 404);
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Re-create: 201 and a fresh, empty stream, even with another content type.
    let r = s
        .client
        .put(&url)
        .header("content-type", JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-next-offset", ZERO);
    let r = s.read(&url, "-1").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "content-type", JSON);
    assert_header(&r, "stream-next-offset", ZERO);
    assert_eq!(r.text().await.unwrap(), "[]");

    // A missing stream: 404.
    assert_eq!(s.delete(&s.stream("never")).await.status(), 404);
}

/// Reading a JSON stream from an offset inside a message must not produce malformed JSON.
#[tokio::test]
async fn json_read_from_inside_a_message() {
    let s = Server::start().await;
    let url = s.stream("json-mid");
    s.create(&url, JSON).await;
    s.append(&url, JSON, "[[1,2],3]").await;
    let r = s.read(&url, &offset(1)).await;
    if r.status() == 200 {
        let body = r.bytes().await.unwrap();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
            "200 with malformed JSON: {:?}",
            String::from_utf8_lossy(&body)
        );
    } else {
        assert_eq!(r.status(), 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_serialized_with_read_your_writes() {
    let s = Server::start().await;
    let url = s.stream("concurrent");
    s.create(&url, TEXT).await;
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = s.client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let r = client
                        .post(&url)
                        .header("content-type", TEXT)
                        .body(format!("w{w}.{i};"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 204);
                    let next = common::position(&header(&r, "stream-next-offset").unwrap());
                    // Read-your-writes: the acknowledged append is visible at once.
                    let r = client.get(format!("{url}?offset=-1")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let tail = common::position(&header(&r, "stream-next-offset").unwrap());
                    assert!(tail >= next, "read tail {tail} behind acknowledged {next}");
                    let body = r.text().await.unwrap();
                    assert!(body.contains(&format!("w{w}.{i};")));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let body = String::from_utf8(s.read_all(&url).await).unwrap();
    let mut next = [0usize; WRITERS];
    let mut count = 0;
    for item in body.split(';').filter(|x| !x.is_empty()) {
        let (w, i) = item
            .strip_prefix('w')
            .and_then(|x| x.split_once('.'))
            .unwrap_or_else(|| panic!("torn record {item:?}"));
        let (w, i): (usize, usize) = (w.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[w], "writer {w}'s appends out of order");
        next[w] += 1;
        count += 1;
    }
    assert_eq!(count, WRITERS * EACH);
    let h = s.head(&url).await;
    assert_header(&h, "stream-next-offset", &offset(body.len() as u64));
}

#[tokio::test]
async fn stream_size_limit_is_413() {
    let s =
        Server::start_with(common::Options::default().env("DS_LIMITS__MAX_STREAM_BYTES", "100"))
            .await;
    let url = s.stream("limit");
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .body(vec![b'a'; 60])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .body(vec![b'b'; 41])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(s.append(&url, TEXT, vec![b'c'; 40]).await, offset(100));
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .body("d")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A create over the limit.
    let r = s
        .client
        .put(s.stream("limit-create"))
        .header("content-type", TEXT)
        .body(vec![b'e'; 101])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(s.read_all(&url).await.len(), 100);
}
