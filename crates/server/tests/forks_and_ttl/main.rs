//! Forks (`PUT` + `Stream-Forked-From`) and expiry (`Stream-TTL`, `Stream-Expires-At`).

#[path = "../common/mod.rs"]
mod common;

use common::{Server, ZERO, assert_header, assert_no_header, header, offset};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";
/// How long garbage collection and expiry get to show (the conformance suite's bound).
const EVENTUALLY: Duration = Duration::from_secs(5);

/// `PUT fork_url` forking `source_path`, with optional offset and sub-offset headers.
async fn fork(
    s: &Server,
    fork_url: &str,
    source_path: &str,
    fork_offset: Option<&str>,
    sub: Option<&str>,
) -> reqwest::Response {
    let mut b = s
        .client
        .put(fork_url)
        .header("stream-forked-from", source_path);
    if let Some(o) = fork_offset {
        b = b.header("stream-fork-offset", o);
    }
    if let Some(x) = sub {
        b = b.header("stream-fork-sub-offset", x);
    }
    b.send().await.unwrap()
}

async fn text(s: &Server, url: &str) -> String {
    String::from_utf8(s.read_all(url).await).expect("UTF-8")
}

/// Unix seconds as an RFC 3339 UTC timestamp.
fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn rfc3339_formatting() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
}

// ---- forks -------------------------------------------------------------------------------

#[tokio::test]
async fn fork_at_tail_offset_and_sub_offset() {
    let s = Server::start().await;
    let src_path = s.path("src");
    let src = s.url(&src_path);
    s.create(&src, TEXT).await;
    let o1 = s.append(&src, TEXT, "hello").await;
    let o2 = s.append(&src, TEXT, "world").await;

    // At the tail (no offset): everything so far, with the source's content type.
    let at_tail = s.stream("fork-tail");
    let r = fork(&s, &at_tail, &src_path, None, None).await;
    assert_eq!(r.status(), 201);
    assert_header(&r, "content-type", TEXT);
    assert_header(&r, "stream-next-offset", &o2);
    assert!(header(&r, "location").is_some());
    assert_eq!(text(&s, &at_tail).await, "helloworld");

    // At an offset.
    let at_o1 = s.stream("fork-o1");
    let r = fork(&s, &at_o1, &src_path, Some(&o1), None).await;
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-next-offset", &o1);
    assert_eq!(text(&s, &at_o1).await, "hello");

    // At the zero offset: empty.
    let at_zero = s.stream("fork-zero");
    let r = fork(&s, &at_zero, &src_path, Some(ZERO), None).await;
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-next-offset", ZERO);
    assert_eq!(text(&s, &at_zero).await, "");

    // With a sub-offset into the next record: "wor".
    let sub = s.stream("fork-sub");
    let r = fork(&s, &sub, &src_path, Some(&o1), Some("3")).await;
    assert_eq!(r.status(), 201);
    let next = header(&r, "stream-next-offset").unwrap();
    assert_eq!(next, offset(8));
    assert_eq!(text(&s, &sub).await, "hellowor");
    // The returned offset is readable.
    let r = s.read(&sub, &next).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-up-to-date", "true");
    // A sub-offset equal to the record's length is allowed.
    let sub_full = s.stream("fork-sub-full");
    let r = fork(&s, &sub_full, &src_path, Some(ZERO), Some("5")).await;
    assert_eq!(r.status(), 201);
    assert_eq!(text(&s, &sub_full).await, "hello");
    // Sub-offset 0 is the same as none.
    let sub0 = s.stream("fork-sub0");
    let r = fork(&s, &sub0, &src_path, Some(&o1), Some("0")).await;
    assert_eq!(r.status(), 201);
    assert_eq!(text(&s, &sub0).await, "hello");

    // A full URL names the source too.
    let by_url = s.stream("fork-by-url");
    let r = fork(&s, &by_url, &src, Some(&o1), None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(text(&s, &by_url).await, "hello");

    // Reads of a fork carry no fork headers.
    let r = s.read(&sub, "-1").await;
    assert_no_header(&r, "stream-forked-from");
    assert_no_header(&r, "stream-fork-offset");
    let h = s.head(&sub).await;
    assert_eq!(h.status(), 200);
    assert_header(&h, "content-type", TEXT);
    assert_header(&h, "stream-next-offset", &offset(8));
    assert_no_header(&h, "stream-forked-from");
}

#[tokio::test]
async fn fork_with_initial_body_and_idempotent_reput() {
    let s = Server::start().await;
    let src_path = s.path("src");
    let src = s.url(&src_path);
    s.create(&src, TEXT).await;
    s.append(&src, TEXT, "hello").await;

    let f = s.stream("fork-body");
    let r = s
        .client
        .put(&f)
        .header("stream-forked-from", &src_path)
        .header("stream-fork-offset", ZERO)
        .header("stream-fork-sub-offset", "2")
        .header("content-type", TEXT)
        .body("y!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_header(&r, "stream-next-offset", &offset(4));
    assert_eq!(text(&s, &f).await, "hey!");

    // The same fork again: 200. Different anchors or no fork: 409.
    let r = fork(&s, &f, &src_path, Some(ZERO), Some("2")).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-next-offset", &offset(4));
    assert_eq!(
        fork(&s, &f, &src_path, Some(ZERO), Some("3"))
            .await
            .status(),
        409
    );
    assert_eq!(fork(&s, &f, &src_path, None, None).await.status(), 409);
    let r = s
        .client
        .put(&f)
        .header("content-type", TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "an existing fork re-PUT as a plain stream");
}

#[tokio::test]
async fn fork_json_with_sub_offset_counts_messages() {
    let s = Server::start().await;
    let src_path = s.path("src-json");
    let src = s.url(&src_path);
    s.create(&src, JSON).await;
    let o1 = s.append(&src, JSON, r#"[{"a":1},{"b":2},{"c":3}]"#).await;
    s.append(&src, JSON, "[4,5]").await;

    let f = s.stream("fork-json");
    let r = fork(&s, &f, &src_path, Some(ZERO), Some("2")).await;
    assert_eq!(r.status(), 201);
    assert_header(&r, "content-type", JSON);
    let v: serde_json::Value = serde_json::from_slice(&s.read_all(&f).await).unwrap();
    assert_eq!(v, serde_json::json!([{"a":1},{"b":2}]));

    let f2 = s.stream("fork-json-2");
    let r = fork(&s, &f2, &src_path, Some(&o1), Some("1")).await;
    assert_eq!(r.status(), 201);
    s.append(&f2, JSON, r#"["own"]"#).await;
    let v: serde_json::Value = serde_json::from_slice(&s.read_all(&f2).await).unwrap();
    assert_eq!(v, serde_json::json!([{"a":1},{"b":2},{"c":3},4,"own"]));

    // Past the record's 3 messages: 400.
    let f3 = s.stream("fork-json-3");
    assert_eq!(
        fork(&s, &f3, &src_path, Some(ZERO), Some("4"))
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn forks_and_sources_diverge() {
    let s = Server::start().await;
    let src_path = s.path("src");
    let src = s.url(&src_path);
    s.create(&src, TEXT).await;
    let o1 = s.append(&src, TEXT, "base").await;

    let f = s.stream("fork");
    assert_eq!(fork(&s, &f, &src_path, None, None).await.status(), 201);

    // Fork appends do not reach the source.
    let fo = s.append(&f, TEXT, "+fork").await;
    assert_eq!(fo, offset(9));
    assert_eq!(text(&s, &src).await, "base");

    // Source appends do not reach the fork.
    s.append(&src, TEXT, "+source").await;
    assert_eq!(text(&s, &f).await, "base+fork");
    assert_eq!(text(&s, &src).await, "base+source");

    // Reads from an inherited offset: inherited tail then own data.
    let r = s.read(&f, &offset(2)).await;
    assert_eq!(r.text().await.unwrap(), "se+fork");
    let r = s.read(&f, &o1).await;
    assert_eq!(r.text().await.unwrap(), "+fork");

    // A fork of a fork (three levels).
    let f_path = f.strip_prefix(&s.base).unwrap().to_string();
    let ff = s.stream("fork-of-fork");
    assert_eq!(
        fork(&s, &ff, &f_path, Some(&offset(4)), Some("5"))
            .await
            .status(),
        201
    );
    assert_eq!(text(&s, &ff).await, "base+fork");
    s.append(&ff, TEXT, "!").await;
    assert_eq!(text(&s, &ff).await, "base+fork!");
    assert_eq!(text(&s, &f).await, "base+fork");

    // Closing the source does not close the fork; a closed source can be forked.
    let r = s
        .client
        .post(&src)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_no_header(&s.head(&f).await, "stream-closed");
    s.append(&f, TEXT, "?").await;
    let fc = s.stream("fork-of-closed");
    let r = fork(&s, &fc, &src_path, None, None).await;
    assert_eq!(r.status(), 201);
    assert_no_header(&r, "stream-closed");
    s.append(&fc, TEXT, "more").await;
    assert_eq!(text(&s, &fc).await, "base+sourcemore");

    // Forks do not inherit producer state.
    let p = |url: String| {
        let req = s
            .client
            .post(url)
            .header("content-type", TEXT)
            .header("producer-id", "p")
            .header("producer-epoch", "0")
            .header("producer-seq", "0")
            .body("p");
        async move { req.send().await.unwrap().status() }
    };
    let src2_path = s.path("src-producer");
    let src2 = s.url(&src2_path);
    s.create(&src2, TEXT).await;
    assert_eq!(p(src2.clone()).await, 200);
    let f2 = s.stream("fork-producer");
    assert_eq!(fork(&s, &f2, &src2_path, None, None).await.status(), 201);
    assert_eq!(p(f2.clone()).await, 200, "seq 0 is new on the fork");
    assert_eq!(text(&s, &f2).await, "pp");
}

#[tokio::test]
async fn deleting_a_source_with_forks_soft_deletes_it() {
    let s = Server::start().await;
    let src_path = s.path("src");
    let src = s.url(&src_path);
    s.create(&src, TEXT).await;
    s.append(&src, TEXT, "shared").await;
    let f1 = s.stream("fork1");
    let f2 = s.stream("fork2");
    assert_eq!(fork(&s, &f1, &src_path, None, None).await.status(), 201);
    assert_eq!(fork(&s, &f2, &src_path, None, None).await.status(), 201);

    assert_eq!(s.delete(&src).await.status(), 204);

    // GET, HEAD, POST and DELETE: 410.
    assert_eq!(s.read(&src, "-1").await.status(), 410);
    assert_eq!(s.read(&src, "now").await.status(), 410);
    let r = s
        .client
        .get(format!("{src}?offset=-1&live=long-poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(s.head(&src).await.status(), 410);
    let r = s
        .client
        .post(&src)
        .header("content-type", TEXT)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(s.delete(&src).await.status(), 410);
    // PUT to the name, or a new fork of it: 409.
    let r = s
        .client
        .put(&src)
        .header("content-type", TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        fork(&s, &s.stream("late-fork"), &src_path, None, None)
            .await
            .status(),
        409
    );

    // A retried fork PUT (the same request) still answers 200: the fork exists.
    assert_eq!(fork(&s, &f1, &src_path, None, None).await.status(), 200);

    // The forks still read the inherited data.
    assert_eq!(text(&s, &f1).await, "shared");
    assert_eq!(text(&s, &f2).await, "shared");

    // Deleting one fork keeps the source retained for the other.
    assert_eq!(s.delete(&f1).await.status(), 204);
    assert_eq!(s.head(&src).await.status(), 410);
    assert_eq!(text(&s, &f2).await, "shared");

    // Deleting the last fork collects the source.
    assert_eq!(s.delete(&f2).await.status(), 204);
    s.wait_for_head_status(&src, 404, EVENTUALLY).await;
    let r = s
        .client
        .put(&src)
        .header("content-type", TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(text(&s, &src).await, "");
}

#[tokio::test]
async fn deleting_the_last_fork_cascades_up_a_chain() {
    let s = Server::start().await;
    let a_path = s.path("a");
    let a = s.url(&a_path);
    s.create(&a, TEXT).await;
    s.append(&a, TEXT, "a").await;
    let b_path = s.path("b");
    let b = s.url(&b_path);
    assert_eq!(fork(&s, &b, &a_path, None, None).await.status(), 201);
    s.append(&b, TEXT, "b").await;
    let c = s.stream("c");
    assert_eq!(fork(&s, &c, &b_path, None, None).await.status(), 201);

    assert_eq!(s.delete(&a).await.status(), 204);
    assert_eq!(s.delete(&b).await.status(), 204);
    assert_eq!(s.head(&a).await.status(), 410);
    assert_eq!(s.head(&b).await.status(), 410);
    assert_eq!(text(&s, &c).await, "ab");

    assert_eq!(s.delete(&c).await.status(), 204);
    s.wait_for_head_status(&b, 404, EVENTUALLY).await;
    s.wait_for_head_status(&a, 404, EVENTUALLY).await;
}

#[tokio::test]
async fn fork_errors() {
    let s = Server::start().await;
    let src_path = s.path("src");
    let src = s.url(&src_path);
    s.create(&src, TEXT).await;
    s.append(&src, TEXT, "hello").await;
    let empty_path = s.path("empty");
    s.create(&s.url(&empty_path), TEXT).await;

    // Missing source: 404.
    let missing = s.path("missing");
    assert_eq!(
        fork(&s, &s.stream("f"), &missing, None, None)
            .await
            .status(),
        404
    );

    // Content type differs from the source: 409, and it leaves no reference behind.
    let f = s.stream("f-ct");
    let r = s
        .client
        .put(&f)
        .header("stream-forked-from", &src_path)
        .header("content-type", JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(s.head(&f).await.status(), 404);
    // The same media type in another case is fine.
    let r = s
        .client
        .put(&f)
        .header("stream-forked-from", &src_path)
        .header("content-type", "TEXT/PLAIN")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Offsets beyond the source's tail, or malformed: 400.
    for o in [
        offset(6),
        "9999999999999999_9999999999999999".to_string(),
        "garbage".to_string(),
        "1,2".to_string(),
        String::new(),
    ] {
        let r = fork(&s, &s.stream("f-off"), &src_path, Some(&o), None).await;
        assert_eq!(r.status(), 400, "Stream-Fork-Offset {o:?}");
    }

    // Sub-offsets: malformed, past the record, or with no record after the anchor: 400.
    for sub in ["-1", "abc", "1.5", "05", "+1", ""] {
        let r = fork(&s, &s.stream("f-sub"), &src_path, Some(ZERO), Some(sub)).await;
        assert_eq!(r.status(), 400, "Stream-Fork-Sub-Offset {sub:?}");
    }
    let r = fork(&s, &s.stream("f-sub"), &src_path, Some(ZERO), Some("6")).await;
    assert_eq!(r.status(), 400, "past the 5-byte record");
    let r = fork(&s, &s.stream("f-sub"), &src_path, None, Some("1")).await;
    assert_eq!(r.status(), 400, "sub-offset with the anchor at the tail");
    let r = fork(&s, &s.stream("f-sub"), &empty_path, None, Some("1")).await;
    assert_eq!(r.status(), 400, "sub-offset on an empty source");

    // Fork headers without Stream-Forked-From: 400, even sub-offset 0.
    for (k, v) in [
        ("stream-fork-sub-offset", "0"),
        ("stream-fork-sub-offset", "2"),
        ("stream-fork-offset", ZERO),
    ] {
        let r = s
            .client
            .put(s.stream("f-orphan"))
            .header("content-type", TEXT)
            .header(k, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{k}: {v}");
    }

    // The source is untouched and deletable (no leaked references): gone at once.
    assert_eq!(s.delete(&f).await.status(), 204);
    assert_eq!(s.delete(&src).await.status(), 204);
    s.wait_for_head_status(&src, 404, EVENTUALLY).await;
}

/// A JSON fork anchored inside a message must be refused (or aligned), never store a torn
/// message.
#[tokio::test]
async fn json_fork_at_an_offset_inside_a_message() {
    let s = Server::start().await;
    let src_path = s.path("src-json-mid");
    let src = s.url(&src_path);
    s.create(&src, JSON).await;
    s.append(&src, JSON, "[[1,2],3]").await;
    let f = s.stream("fork-json-mid");
    let r = fork(&s, &f, &src_path, Some(&offset(3)), None).await;
    if r.status() == 201 {
        let body = s.read_all(&f).await;
        assert!(
            serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
            "the fork reads as malformed JSON: {:?}",
            String::from_utf8_lossy(&body)
        );
    } else {
        assert_eq!(r.status(), 400);
    }
}

mod expiry;
