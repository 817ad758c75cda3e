//! Caps on live connections (server-wide and per API key) and on requests in flight per key:
//! one more is a 429 with `Retry-After` at exactly the cap, and a slot comes back when its
//! holder goes.

mod common;

use common::{Options, Server};
use std::time::{Duration, Instant};

async fn status(s: &Server, path: &str, key: Option<&str>) -> u16 {
    let mut r = s.client.get(s.url(path));
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    r.send().await.expect("answer").status().as_u16()
}

/// Open a live SSE read of `path`; the response (held open) once its head arrives.
async fn open_sse(s: &Server, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut r = s.client.get(s.url(&format!("{path}?offset=-1&live=sse")));
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    r.send().await.expect("answer")
}

#[tokio::test]
async fn live_connections_are_capped_and_given_back() {
    let s =
        Server::start_with(Options::default().env("DS_LIMITS__MAX_LIVE_CONNECTIONS", "2")).await;
    let path = s.path("live");
    s.create(&s.url(&path), "text/plain").await;
    let a = open_sse(&s, &path, None).await;
    let b = open_sse(&s, &path, None).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let third = open_sse(&s, &path, None).await;
    assert_eq!(third.status().as_u16(), 429);
    assert!(third.headers().contains_key("retry-after"));
    // A long-poll counts too; a catch-up read does not.
    let lp = format!("{path}?offset=-1&live=long-poll");
    assert_eq!(status(&s, &lp, None).await, 429);
    assert_eq!(status(&s, &format!("{path}?offset=-1"), None).await, 200);
    drop(a);
    // The slot comes back once the server notices the stream is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let c = open_sse(&s, &path, None).await;
        if c.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test]
async fn per_key_caps_apply_with_auth() {
    // The long-poll below must still be waiting when the test looks (a loaded CI machine
    // took longer than the 1 s default once).
    let opts = Options::default()
        .long_poll_secs(60)
        .env("DS_AUTH__API_KEYS", "one, two, three")
        .env("DS_LIMITS__MAX_LIVE_CONNECTIONS_PER_KEY", "1")
        .env("DS_LIMITS__MAX_INFLIGHT_PER_KEY", "1");
    let s = Server::start_with(opts).await;
    let path = s.path("k");
    let created = s
        .client
        .put(s.url(&path))
        .header("authorization", "Bearer one")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let held = open_sse(&s, &path, Some("one")).await;
    assert_eq!(held.status().as_u16(), 200);
    // Key one has its live connection; key two does not.
    let second = open_sse(&s, &path, Some("one")).await;
    assert_eq!(second.status().as_u16(), 429);
    let other = open_sse(&s, &path, Some("two")).await;
    assert_eq!(other.status().as_u16(), 200);
    drop((second, other));
    // In flight: a long-poll of key three holds its one request; another request of three
    // waits its turn (429), one of key one does not.
    let lp = s
        .client
        .get(s.url(&format!("{path}?offset=-1&live=long-poll")))
        .header("authorization", "Bearer three");
    let mut waiting = tokio::spawn(lp.try_clone().expect("no body").send());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = status(&s, &format!("{path}?offset=-1"), Some("three")).await;
        if probe == 429 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the long-poll never held its slot"
        );
        if waiting.is_finished() {
            // The probe held the slot when the long-poll arrived, which got the 429 itself.
            let lost = waiting.await.expect("joined").expect("answer").status();
            assert_eq!(lost.as_u16(), 429, "a long-poll answered early");
            waiting = tokio::spawn(lp.try_clone().expect("no body").send());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status(&s, &format!("{path}?offset=-1"), Some("one")).await,
        200
    );
    waiting.abort();
    drop(held);
}
