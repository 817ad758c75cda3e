//! Expiry: `Stream-TTL` (sliding) and `Stream-Expires-At` (fixed), their validation, and what
//! forks inherit.

use super::*;

#[tokio::test]
async fn ttl_expires_an_idle_stream() {
    let s = Server::start().await;
    let url = s.stream("ttl1");
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .header("stream-ttl", "1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let h = s.head(&url).await;
    assert_eq!(h.status(), 200);
    assert_header(&h, "stream-ttl", "1");

    s.wait_for_head_status(&url, 404, EVENTUALLY).await;
    // Expired means missing everywhere.
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
    assert_eq!(s.delete(&url).await.status(), 404);
    // And PUT creates a fresh stream.
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .header("stream-ttl", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-next-offset", ZERO);
}

#[tokio::test]
async fn reads_and_writes_slide_the_ttl_but_head_does_not() {
    let s = Server::start().await;
    // TTL 3 s, touched every 0.5 s for 5 s: 2.5 s of margin on every step.
    let read = s.stream("slide-read");
    let write = s.stream("slide-write");
    let now_read = s.stream("slide-now");
    let close_only = s.stream("slide-close");
    for url in [&read, &write, &now_read, &close_only] {
        let r = s
            .client
            .put(url.as_str())
            .header("content-type", TEXT)
            .header("stream-ttl", "3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert_eq!(s.read(&read, "-1").await.status(), 200, "catch-up read");
        assert_eq!(
            s.read(&now_read, "now").await.status(),
            200,
            "offset=now read"
        );
        s.append(&write, TEXT, "x").await;
        let r = s
            .client
            .post(&close_only)
            .header("stream-closed", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "close-only POST");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Outlived their TTL: kept alive by the accesses.
    for url in [&read, &write, &now_read, &close_only] {
        assert_eq!(s.head(url).await.status(), 200, "{url}");
    }
    // Left alone (HEAD does not count), each expires.
    for url in [&read, &write, &now_read, &close_only] {
        s.wait_for_head_status(url, 404, EVENTUALLY).await;
    }

    // HEAD alone does not keep a stream alive: polled every 100 ms, it still expires.
    let head_only = s.stream("slide-head");
    let r = s
        .client
        .put(&head_only)
        .header("stream-ttl", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created = Instant::now();
    s.wait_for_head_status(&head_only, 404, EVENTUALLY).await;
    assert!(
        created.elapsed() >= Duration::from_millis(1500),
        "expired after {:?}, before its TTL",
        created.elapsed()
    );
}

#[tokio::test]
async fn live_reads_slide_the_ttl() {
    let s = Server::start_with(common::Options::default().long_poll_secs(1)).await;
    let url = s.stream("slide-live");
    let r = s
        .client
        .put(&url)
        .header("stream-ttl", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Back-to-back 1 s long-polls for 5 s: each start renews the 3 s window.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let r = s
            .client
            .get(format!("{url}?offset=now&live=long-poll"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    assert_eq!(s.head(&url).await.status(), 200);
}

#[tokio::test]
async fn expires_at_is_fixed() {
    let s = Server::start().await;
    let url = s.stream("expires-at");
    let at = rfc3339(unix_now() + 3);
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .header("stream-expires-at", &at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let h = s.head(&url).await;
    assert_eq!(h.status(), 200);
    assert_header(&h, "stream-expires-at", &at);
    // Reads do not move it: still gone within a few seconds of the deadline.
    let deadline = Instant::now() + Duration::from_secs(3) + EVENTUALLY;
    loop {
        let status = s.read(&url, "-1").await.status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "still readable after Expires-At");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.head(&url).await.status(), 404);
}

#[tokio::test]
async fn expires_at_in_the_past() {
    // The server accepts a past Expires-At (201) and the stream is expired at once: every
    // later access finds nothing, and a PUT creates it again.
    let s = Server::start().await;
    let url = s.stream("past");
    let past = "2020-01-01T00:00:00Z";
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .header("stream-expires-at", past)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.head(&url).await.status(), 404);
    assert_eq!(s.read(&url, "-1").await.status(), 404);
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .header("stream-expires-at", past)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "an expired stream is re-created");
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.head(&url).await.status(), 200);
}

#[tokio::test]
async fn bad_expiry_headers_are_400() {
    let s = Server::start().await;
    let url = s.stream("bad-ttl");
    for ttl in [
        "00060",
        "+60",
        "60.5",
        "1e3",
        "-1",
        "",
        "abc",
        " 5x",
        "99999999999999999999999",
        "0x10",
    ] {
        let r = s
            .client
            .put(&url)
            .header("stream-ttl", ttl)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "Stream-TTL {ttl:?}");
    }
    for at in [
        "tomorrow",
        "2030-01-01",
        "2030-01-01T00:00:00",
        "1700000000",
        "",
        "2030-13-01T00:00:00Z",
    ] {
        let r = s
            .client
            .put(&url)
            .header("stream-expires-at", at)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "Stream-Expires-At {at:?}");
    }
    let r = s
        .client
        .put(&url)
        .header("stream-ttl", "60")
        .header("stream-expires-at", "2099-01-01T00:00:00Z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "both TTL and Expires-At");
    assert_eq!(s.head(&url).await.status(), 404, "nothing was created");

    // Offsets other than Z are fine.
    let r = s
        .client
        .put(&url)
        .header("stream-expires-at", "2099-01-01T00:00:00+05:30")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn fork_ttl_inheritance_and_expired_sources() {
    let s = Server::start().await;
    let src_path = s.path("src-ttl");
    let src = s.url(&src_path);
    let r = s
        .client
        .put(&src)
        .header("content-type", TEXT)
        .header("stream-ttl", "2")
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Without expiry headers a fork takes the source's TTL value; its own otherwise.
    let inherits = s.stream("fork-inherits");
    assert_eq!(
        fork(&s, &inherits, &src_path, None, None).await.status(),
        201
    );
    assert_header(&s.head(&inherits).await, "stream-ttl", "2");
    let own = s.stream("fork-own");
    let r = s
        .client
        .put(&own)
        .header("stream-forked-from", &src_path)
        .header("stream-ttl", "3600")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&s.head(&own).await, "stream-ttl", "3600");

    // Reading the fork does not refresh the source: the source expires, and having forks
    // it is soft-deleted (410), while the long-lived fork keeps reading.
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        assert_eq!(text(&s, &own).await, "data");
        let status = s.head(&src).await.status();
        if status == 410 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the source never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.read(&src, "-1").await.status(), 410);
    assert_eq!(text(&s, &own).await, "data");
    // Forking an expired source fails.
    let late = s.stream("late");
    let status = fork(&s, &late, &src_path, None, None).await.status();
    assert!(matches!(status.as_u16(), 404 | 409), "{status}");
}
