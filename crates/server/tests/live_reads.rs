//! Live reads: long-poll (`live=long-poll`) and server-sent events (`live=sse`).

mod common;

use base64::Engine as _;
use common::{
    Event, Options, Server, SseReader, ZERO, assert_header, assert_no_header, header, offset,
};
use std::time::{Duration, Instant};

const TEXT: &str = "text/plain";
const OCTET: &str = "application/octet-stream";
const JSON: &str = "application/json";
/// Upper bound for anything that should happen "promptly".
const PROMPT: Duration = Duration::from_secs(5);

/// Append `body` to `url` after `delay`, in the background.
fn append_later(
    s: &Server,
    url: &str,
    content_type: &'static str,
    body: &'static [u8],
    close: bool,
    delay: Duration,
) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    let client = s.client.clone();
    let url = url.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut b = client.post(url);
        if !body.is_empty() {
            b = b.header("content-type", content_type).body(body);
        }
        if close {
            b = b.header("stream-closed", "true");
        }
        b.send().await.expect("delayed POST").status()
    })
}

fn cursor_of(r: &reqwest::Response) -> u64 {
    let c = header(r, "stream-cursor").expect("Stream-Cursor");
    c.parse()
        .unwrap_or_else(|_| panic!("Stream-Cursor {c:?} is not a number"))
}

async fn long_poll(s: &Server, url: &str, query: &str) -> reqwest::Response {
    s.client
        .get(format!("{url}?live=long-poll&{query}"))
        .send()
        .await
        .expect("long-poll GET")
}

// ---- long-poll ---------------------------------------------------------------------------

#[tokio::test]
async fn long_poll_returns_data_appended_during_the_wait() {
    // A long timeout, so the answer can only come from the append.
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("lp-wait");
    s.create(&url, TEXT).await;
    let tail = s.append(&url, TEXT, "before").await;

    let writer = append_later(&s, &url, TEXT, b"during", false, Duration::from_millis(200));
    let started = Instant::now();
    let r = long_poll(&s, &url, &format!("offset={tail}")).await;
    let waited = started.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        waited >= Duration::from_millis(150),
        "answered after {waited:?}, before the append"
    );
    assert!(waited < PROMPT, "answered after {waited:?}");
    assert_header(&r, "content-type", TEXT);
    assert_header(&r, "stream-next-offset", &offset(12));
    assert_header(&r, "stream-up-to-date", "true");
    cursor_of(&r);
    assert_eq!(r.text().await.unwrap(), "during");
    assert_eq!(writer.await.unwrap(), 204);
}

#[tokio::test]
async fn long_poll_with_data_available_answers_at_once() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("lp-ready");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abc").await;
    let started = Instant::now();
    let r = long_poll(&s, &url, "offset=-1").await;
    assert!(started.elapsed() < PROMPT);
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-next-offset", &offset(3));
    assert_header(&r, "stream-up-to-date", "true");
    cursor_of(&r);
    assert_eq!(r.text().await.unwrap(), "abc");

    // JSON streams answer an array.
    let j = s.stream("lp-json");
    s.create(&j, JSON).await;
    s.append(&j, JSON, "[1,2]").await;
    let r = long_poll(&s, &j, &format!("offset={ZERO}")).await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "content-type", JSON);
    assert_eq!(r.text().await.unwrap(), "[1,2]");
}

#[tokio::test]
async fn long_poll_times_out_with_204() {
    let s = Server::start_with(Options::default().long_poll_secs(1)).await;
    let url = s.stream("lp-timeout");
    s.create(&url, TEXT).await;
    let tail = s.append(&url, TEXT, "abc").await;

    for q in [format!("offset={tail}"), "offset=now".to_string()] {
        let started = Instant::now();
        let r = long_poll(&s, &url, &q).await;
        let waited = started.elapsed();
        assert_eq!(r.status(), 204, "{q}");
        assert!(
            waited >= Duration::from_millis(900),
            "{q}: 204 after {waited:?}"
        );
        assert!(waited < PROMPT, "{q}: 204 after {waited:?}");
        assert_header(&r, "stream-next-offset", &tail);
        assert_header(&r, "stream-up-to-date", "true");
        assert_no_header(&r, "stream-closed");
        cursor_of(&r);
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }
}

#[tokio::test]
async fn long_poll_on_a_closed_stream_at_the_tail_answers_at_once() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("lp-closed");
    s.create(&url, TEXT).await;
    let tail = s.append(&url, TEXT, "abc").await;
    let r = s
        .client
        .post(&url)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    for q in [format!("offset={tail}"), "offset=now".to_string()] {
        let started = Instant::now();
        let r = long_poll(&s, &url, &q).await;
        assert!(started.elapsed() < PROMPT, "{q} waited");
        assert_eq!(r.status(), 204, "{q}");
        assert_header(&r, "stream-closed", "true");
        assert_header(&r, "stream-up-to-date", "true");
        assert_header(&r, "stream-next-offset", &tail);
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }

    // Behind the tail: the data, then the closure.
    let r = long_poll(&s, &url, "offset=-1").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-closed", "true");
    assert_eq!(r.text().await.unwrap(), "abc");
}

#[tokio::test]
async fn long_poll_is_woken_by_a_close() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("lp-close-wakes");
    s.create(&url, TEXT).await;
    let closer = append_later(&s, &url, TEXT, b"", true, Duration::from_millis(200));
    let started = Instant::now();
    let r = long_poll(&s, &url, &format!("offset={ZERO}")).await;
    assert!(started.elapsed() < PROMPT);
    assert_eq!(r.status(), 204);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", ZERO);
    assert_eq!(closer.await.unwrap(), 204);

    // Append-and-close during the wait: the data arrives with the closure.
    let url = s.stream("lp-append-close");
    s.create(&url, TEXT).await;
    let closer = append_later(&s, &url, TEXT, b"bye", true, Duration::from_millis(200));
    let r = long_poll(&s, &url, "offset=now").await;
    assert_eq!(r.status(), 200);
    assert_header(&r, "stream-closed", "true");
    assert_header(&r, "stream-next-offset", &offset(3));
    assert_eq!(r.text().await.unwrap(), "bye");
    assert_eq!(closer.await.unwrap(), 204);
}

#[tokio::test]
async fn long_poll_cursor_moves_past_the_client_cursor() {
    let s = Server::start_with(Options::default().long_poll_secs(1)).await;
    let url = s.stream("lp-cursor");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abc").await;

    let r = long_poll(&s, &url, "offset=-1").await;
    let c1 = cursor_of(&r);
    assert!(c1 > 0);

    // Echoing the server's cursor: strictly greater back.
    let r = long_poll(&s, &url, &format!("offset=-1&cursor={c1}")).await;
    assert_eq!(r.status(), 200);
    let c2 = cursor_of(&r);
    assert!(c2 > c1, "{c2} > {c1}");

    // A client cursor from the future: still strictly greater.
    let far = c1 + 1_000_000;
    let r = long_poll(&s, &url, &format!("offset=-1&cursor={far}")).await;
    assert!(cursor_of(&r) > far);

    // On a 204 timeout as well.
    let r = long_poll(&s, &url, &format!("offset=now&cursor={far}")).await;
    assert_eq!(r.status(), 204);
    assert!(cursor_of(&r) > far);

    // Junk cursors are ignored.
    let r = long_poll(&s, &url, "offset=-1&cursor=junk").await;
    assert_eq!(r.status(), 200);
    cursor_of(&r);
}

#[tokio::test]
async fn live_read_request_errors() {
    let s = Server::start().await;
    let url = s.stream("live-errors");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abc").await;
    for q in [
        "live=long-poll",
        "live=sse",
        "live=long-poll&offset=",
        "live=sse&offset=garbage",
        "live=long-poll&offset=9999999999999999_9999999999999999",
        "live=sse&offset=9999999999999999_9999999999999999",
        "live=forever&offset=-1",
        "live=&offset=-1",
        "live=sse&live=sse&offset=-1",
    ] {
        let r = s.client.get(format!("{url}?{q}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "?{q}");
    }
    let missing = s.stream("missing");
    for q in [
        "live=long-poll&offset=-1",
        "live=sse&offset=-1",
        "live=sse&offset=now",
    ] {
        let r = s.client.get(format!("{missing}?{q}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "?{q}");
    }
}

// ---- SSE ---------------------------------------------------------------------------------

/// Open an SSE response, check its headers, and return a reader over its events.
async fn open_sse(s: &Server, url: &str, query: &str, binary: bool) -> SseReader {
    let r = s
        .client
        .get(format!("{url}?live=sse&{query}"))
        .send()
        .await
        .expect("SSE GET");
    assert_eq!(r.status(), 200, "SSE {url}?{query}");
    assert_header(&r, "content-type", "text/event-stream");
    let cc = header(&r, "cache-control").expect("Cache-Control");
    assert!(cc.contains("no-cache"), "Cache-Control: {cc}");
    assert_no_header(&r, "content-length");
    assert_header(&r, "x-content-type-options", "nosniff");
    assert!(header(&r, "cross-origin-resource-policy").is_some());
    if binary {
        assert_header(&r, "stream-sse-data-encoding", "base64");
    } else {
        assert_no_header(&r, "stream-sse-data-encoding");
    }
    SseReader::new(r)
}

#[track_caller]
fn assert_data(e: &Event) {
    assert_eq!(e.event, "data", "expected a data event, got {e:?}");
}

/// Assert `e` is a control event that is not a closure; returns its JSON.
#[track_caller]
fn assert_control(e: &Event, next: &str, up_to_date: bool) -> serde_json::Value {
    assert_eq!(e.event, "control", "expected a control event, got {e:?}");
    assert_eq!(e.data_lines.len(), 1, "control events are one line: {e:?}");
    let v = e.json();
    assert_eq!(v["streamNextOffset"], next, "{v}");
    let cursor = v["streamCursor"].as_str().expect("streamCursor");
    assert!(
        !cursor.is_empty() && cursor.bytes().all(|b| b.is_ascii_digit()),
        "streamCursor {cursor:?}"
    );
    if up_to_date {
        assert_eq!(v["upToDate"], true, "{v}");
    } else {
        assert!(v.get("upToDate").is_none(), "{v}");
    }
    assert!(v.get("streamClosed").is_none(), "{v}");
    v
}

#[track_caller]
fn assert_closed_control(e: &Event, next: &str) {
    assert_eq!(e.event, "control", "expected a control event, got {e:?}");
    let v = e.json();
    assert_eq!(v["streamNextOffset"], next, "{v}");
    assert_eq!(v["streamClosed"], true, "{v}");
    assert!(
        v.get("streamCursor").is_none(),
        "no cursor on the final control: {v}"
    );
}

#[tokio::test]
async fn sse_catch_up_then_live_text() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("sse-text");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "hello ").await;
    s.append(&url, TEXT, "world").await;

    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    // Catch-up over several appends is one data event, then one control event.
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data(), "hello world");
    assert_control(&ev.expect(PROMPT).await, &offset(11), true);

    // Live: each append is a data event followed by a control event.
    s.append(&url, TEXT, "!").await;
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data_lines, vec!["!"]);
    assert_control(&ev.expect(PROMPT).await, &offset(12), true);

    s.append(&url, TEXT, "line1\nline2").await;
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data_lines, vec!["line1", "line2"]);
    assert_control(&ev.expect(PROMPT).await, &offset(23), true);
}

/// Text events carry whole characters (a character split across appends waits for its
/// rest) and keep a line's leading spaces through a parser that drops the one after `data:`.
#[tokio::test]
async fn sse_text_events_carry_whole_characters_and_leading_spaces() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("sse-utf8");
    s.create(&url, TEXT).await;
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    assert_control(&ev.expect(PROMPT).await, &offset(0), true);
    let party = "🎉".as_bytes();
    // The first two bytes alone: no event can carry them (the parser would panic on them).
    s.append(&url, TEXT, party[..2].to_vec()).await;
    let mut rest = party[2..].to_vec();
    rest.extend_from_slice(b"!\n  indented");
    s.append(&url, TEXT, rest).await;
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data(), "🎉!\n  indented");
    assert_control(&ev.expect(PROMPT).await, &offset(16), true);

    // Read from the start again: the same text, in one event.
    let mut again = open_sse(&s, &url, "offset=-1", false).await;
    assert_eq!(again.expect(PROMPT).await.data(), "🎉!\n  indented");
}

/// A record larger than an SSE event's bound goes out as several events, each followed by a
/// control event at an offset inside the record: a slow client holds one bounded event in
/// the server, never the whole record.
#[tokio::test]
async fn sse_splits_a_large_record_into_bounded_events() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("sse-big");
    s.create(&url, TEXT).await;
    // 200,000 bytes of text, with a 3-byte character across every 64 KiB boundary somewhere.
    let record: String = (0..40_000)
        .map(|i| if i % 7 == 0 { "€ab" } else { "xyzwv" })
        .collect();
    let record = &record[..record.floor_char_boundary(200_000)];
    s.append(&url, TEXT, record.to_string()).await;
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    let mut got = String::new();
    let mut events = 0;
    loop {
        let e = ev.expect(PROMPT).await;
        assert_data(&e);
        let data = e.data();
        assert!(data.len() <= 64 * 1024, "an event of {} bytes", data.len());
        got.push_str(&data);
        events += 1;
        let c = ev.expect(PROMPT).await;
        if c.json().get("upToDate").is_some() {
            assert_control(&c, &offset(record.len() as u64), true);
            break;
        }
    }
    assert!(events >= 4, "{events} events");
    assert_eq!(got, record);
}

#[tokio::test]
async fn sse_binary_is_base64() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    for ct in [OCTET, "application/x-protobuf", "image/png"] {
        let url = s.stream("sse-bin");
        s.create(&url, ct).await;
        let bytes: Vec<u8> = (0..=255u8)
            .rev()
            .chain(b"\r\n\n\r".iter().copied())
            .collect();
        s.append(&url, ct, bytes.clone()).await;

        let mut ev = open_sse(&s, &url, "offset=-1", true).await;
        let e = ev.expect(PROMPT).await;
        assert_data(&e);
        let decoded = b64.decode(e.data_lines.concat()).expect("standard base64");
        assert_eq!(decoded, bytes, "{ct}");
        assert_control(&ev.expect(PROMPT).await, &offset(bytes.len() as u64), true);

        // Live binary data too.
        s.append(&url, ct, vec![0u8, 1, 2]).await;
        let e = ev.expect(PROMPT).await;
        assert_data(&e);
        assert_eq!(b64.decode(e.data_lines.concat()).unwrap(), vec![0u8, 1, 2]);
        assert_control(
            &ev.expect(PROMPT).await,
            &offset(bytes.len() as u64 + 3),
            true,
        );
    }
}

#[tokio::test]
async fn sse_text_and_json_are_not_base64() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    for ct in [TEXT, "text/csv", "TEXT/Plain; charset=utf-8"] {
        let url = s.stream("sse-text-types");
        s.create(&url, ct).await;
        s.append(&url, ct, "a,b").await;
        let mut ev = open_sse(&s, &url, "offset=-1", false).await;
        assert_eq!(ev.expect(PROMPT).await.data(), "a,b", "{ct}");
    }

    let url = s.stream("sse-json");
    s.create(&url, JSON).await;
    s.append(&url, JSON, "[1,{\"a\":2}]").await;
    s.append(&url, JSON, "3").await;
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    let v: serde_json::Value = serde_json::from_str(&e.data()).unwrap();
    assert_eq!(
        v,
        serde_json::json!([1, {"a": 2}, 3]),
        "one array for the batch"
    );
    assert_control(&ev.expect(PROMPT).await, &offset(12), true);
    s.append(&url, JSON, "[4,5]").await;
    let e = ev.expect(PROMPT).await;
    let v: serde_json::Value = serde_json::from_str(&e.data()).unwrap();
    assert_eq!(v, serde_json::json!([4, 5]));
    ev.expect(PROMPT).await;
}

#[tokio::test]
async fn sse_payloads_cannot_inject_events() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    for (payload, lines) in [
        (
            "a\r\nevent: control\r\ndata: x",
            vec!["a", "event: control", "data: x"],
        ),
        (
            "a\nevent: control\ndata: {\"streamClosed\":true}\n\nb",
            vec![
                "a",
                "event: control",
                "data: {\"streamClosed\":true}",
                "",
                "b",
            ],
        ),
        (
            "a\revent: control\rdata: x\r\r",
            vec!["a", "event: control", "data: x", "", ""],
        ),
    ] {
        let url = s.stream("sse-inject");
        s.create(&url, TEXT).await;
        let next = s.append(&url, TEXT, payload).await;
        let mut ev = open_sse(&s, &url, "offset=-1", false).await;
        let e = ev.expect(PROMPT).await;
        assert_data(&e);
        assert_eq!(e.data_lines, lines, "payload {payload:?}");
        // The next event is the server's real control event.
        assert_control(&ev.expect(PROMPT).await, &next, true);
    }
}

#[tokio::test]
async fn sse_empty_stream_and_now() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("sse-empty");
    s.create(&url, TEXT).await;
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    // Always an initial control event, even with nothing to send.
    assert_control(&ev.expect(PROMPT).await, ZERO, true);
    drop(ev);

    s.append(&url, TEXT, "history").await;
    let mut ev = open_sse(&s, &url, "offset=now", false).await;
    assert_control(&ev.expect(PROMPT).await, &offset(7), true);
    s.append(&url, TEXT, "new").await;
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data(), "new", "offset=now sends no history");
    assert_control(&ev.expect(PROMPT).await, &offset(10), true);
}

#[tokio::test]
async fn sse_close_delivers_data_then_stream_closed_and_ends() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("sse-close");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "a").await;
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    assert_data(&ev.expect(PROMPT).await);
    assert_control(&ev.expect(PROMPT).await, &offset(1), true);

    // Append-and-close while live: the data first, then the closure, then the end.
    let closer = append_later(&s, &url, TEXT, b"bye", true, Duration::from_millis(100));
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data(), "bye");
    let e = ev.expect(PROMPT).await;
    assert_closed_control(&e, &offset(4));
    ev.expect_end(PROMPT).await;
    assert_eq!(closer.await.unwrap(), 204);

    // A close-only while live.
    let url = s.stream("sse-close-only");
    s.create(&url, TEXT).await;
    let mut ev = open_sse(&s, &url, "offset=now", false).await;
    assert_control(&ev.expect(PROMPT).await, ZERO, true);
    let closer = append_later(&s, &url, TEXT, b"", true, Duration::from_millis(100));
    assert_closed_control(&ev.expect(PROMPT).await, ZERO);
    ev.expect_end(PROMPT).await;
    assert_eq!(closer.await.unwrap(), 204);
}

#[tokio::test]
async fn sse_on_a_closed_stream() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("sse-closed");
    let r = s
        .client
        .put(&url)
        .header("content-type", TEXT)
        .header("stream-closed", "true")
        .body("all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // From the start: the data, then the closure, then the end.
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data(), "all");
    assert_closed_control(&ev.expect(PROMPT).await, &offset(3));
    ev.expect_end(PROMPT).await;

    // At the tail (or `now`): one closure control, then the end.
    for q in [format!("offset={}", offset(3)), "offset=now".to_string()] {
        let mut ev = open_sse(&s, &url, &q, false).await;
        assert_closed_control(&ev.expect(PROMPT).await, &offset(3));
        ev.expect_end(PROMPT).await;
    }
}

#[tokio::test]
async fn sse_cursor_and_keepalive() {
    // Keep-alive control events come every long-poll interval.
    let s = Server::start_with(Options::default().long_poll_secs(1)).await;
    let url = s.stream("sse-cursor");
    s.create(&url, TEXT).await;
    let far = 50_000_000u64;
    let mut ev = open_sse(&s, &url, &format!("offset=now&cursor={far}"), false).await;
    let v = assert_control(&ev.expect(PROMPT).await, ZERO, true);
    let c: u64 = v["streamCursor"].as_str().unwrap().parse().unwrap();
    assert!(c > far, "cursor {c} > client cursor {far}");

    let started = Instant::now();
    let v = assert_control(&ev.expect(PROMPT).await, ZERO, true);
    assert!(started.elapsed() >= Duration::from_millis(500));
    let c: u64 = v["streamCursor"].as_str().unwrap().parse().unwrap();
    assert!(c > far);
}

#[tokio::test]
async fn sse_offsets_increase_and_resume_without_duplicates() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("sse-resume");
    s.create(&url, TEXT).await;
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    assert_control(&ev.expect(PROMPT).await, ZERO, true);
    let mut last = ZERO.to_string();
    let mut seen = String::new();
    for i in 0..5 {
        s.append(&url, TEXT, format!("m{i};")).await;
        let e = ev.expect(PROMPT).await;
        assert_data(&e);
        seen.push_str(&e.data());
        let c = ev.expect(PROMPT).await;
        let v = c.json();
        let next = v["streamNextOffset"].as_str().unwrap().to_string();
        assert!(next > last, "{next} > {last}");
        last = next;
    }
    drop(ev);
    assert_eq!(seen, "m0;m1;m2;m3;m4;");

    // Resume from the last control's offset: only new data.
    s.append(&url, TEXT, "m5;").await;
    let mut ev = open_sse(&s, &url, &format!("offset={last}"), false).await;
    let e = ev.expect(PROMPT).await;
    assert_data(&e);
    assert_eq!(e.data(), "m5;");
}

#[tokio::test]
async fn live_reads_end_when_the_stream_is_deleted() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let url = s.stream("lp-delete");
    s.create(&url, TEXT).await;
    let client = s.client.clone();
    let deleter = {
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            client.delete(url).send().await.unwrap().status()
        })
    };
    let started = Instant::now();
    let r = long_poll(&s, &url, "offset=now").await;
    assert!(
        started.elapsed() < PROMPT,
        "the long-poll waited for its timeout"
    );
    assert_eq!(r.status(), 404);
    assert_eq!(deleter.await.unwrap(), 204);

    let url = s.stream("sse-delete");
    s.create(&url, TEXT).await;
    let mut ev = open_sse(&s, &url, "offset=now", false).await;
    assert_control(&ev.expect(PROMPT).await, ZERO, true);
    assert_eq!(s.delete(&url).await.status(), 204);
    ev.expect_end(PROMPT).await;
}

#[tokio::test]
async fn sse_ends_after_the_reconnect_interval() {
    let s = Server::start_with(
        Options::default()
            .long_poll_secs(30)
            .env("DS_SERVER__SSE_RECONNECT_INTERVAL_SECS", "1"),
    )
    .await;
    let url = s.stream("sse-reconnect");
    s.create(&url, TEXT).await;
    let started = Instant::now();
    let mut ev = open_sse(&s, &url, "offset=-1", false).await;
    let v = assert_control(&ev.expect(PROMPT).await, ZERO, true);
    ev.expect_end(PROMPT).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The client resumes from the last control's offset.
    s.append(&url, TEXT, "next").await;
    let next = v["streamNextOffset"].as_str().unwrap().to_string();
    let mut ev = open_sse(&s, &url, &format!("offset={next}"), false).await;
    assert_eq!(ev.expect(PROMPT).await.data(), "next");
}
