//! SSE fan-out through the hubs: subscribers that have caught up are parked with their
//! stream's hub, which writes each append to all of them; a subscriber that cannot keep up
//! goes back to a task of its own without holding up the others; a response the hub ends
//! leaves its connection serving requests.

mod common;

use common::{Options, Server, SseReader, ZERO, offset};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROMPT: Duration = Duration::from_secs(10);
const TEXT: &str = "text/plain";

/// A fresh text stream: its path (for raw requests) and URL.
async fn text_stream(s: &Server, tag: &str) -> (String, String) {
    let path = s.path(tag);
    let url = s.url(&path);
    s.create(&url, TEXT).await;
    (path, url)
}

/// An SSE subscriber of `url` from its start, on a connection of its own (reqwest would share
/// one for sequential requests), after its first (control) event at offset zero.
async fn subscribe(url: &str) -> (reqwest::Client, SseReader) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = client
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut sse = SseReader::new(r);
    let first = sse.expect(PROMPT).await;
    assert_eq!(first.event, "control");
    assert_eq!(first.json()["streamNextOffset"], ZERO);
    (client, sse)
}

/// The data of every `data` event until `want` bytes have come, checking that each data
/// event is followed by a control event whose offset is where the data ends (the reader
/// has had `base` bytes before).
async fn read_data(sse: &mut SseReader, base: usize, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let ev = sse.expect(PROMPT).await;
        if ev.event == "control" {
            continue;
        }
        assert_eq!(ev.event, "data");
        got.extend_from_slice(ev.data().as_bytes());
        let control = sse.expect(PROMPT).await;
        assert_eq!(control.event, "control");
        assert_eq!(
            control.json()["streamNextOffset"],
            offset((base + got.len()) as u64),
            "control offset after {} bytes",
            got.len()
        );
    }
    got
}

#[tokio::test]
async fn every_parked_subscriber_gets_every_append_in_order() {
    let s = Server::start().await;
    let (_, url) = text_stream(&s, "many").await;
    // More subscribers than one hub holds, so the stream has several hubs.
    const K: usize = 600;
    let mut readers = Vec::new();
    for _ in 0..K {
        readers.push(subscribe(&url).await);
    }
    let mut want = Vec::new();
    for i in 0..20 {
        let record = format!("record {i:02};");
        want.extend_from_slice(record.as_bytes());
        s.append(&url, TEXT, record).await;
    }
    let checks = readers.into_iter().map(|(_client, mut sse)| {
        let want = want.clone();
        tokio::spawn(async move {
            let got = read_data(&mut sse, 0, want.len()).await;
            assert_eq!(got, want);
        })
    });
    for c in checks {
        c.await.unwrap();
    }
}

/// A raw HTTP/1.1 SSE request for `path` on `conn`; returns after the response head.
async fn raw_sse(conn: &mut TcpStream, path: &str) -> Vec<u8> {
    let req = format!("GET {path}?offset=-1&live=sse HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    buf
}

/// The data of the complete chunks of a raw chunked response so far (after its head), and,
/// once its last chunk has come, where the response ends.
fn dechunk(raw: &[u8]) -> (Vec<u8>, Option<usize>) {
    let mut at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let mut body = Vec::new();
    while let Some(p) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let line_end = at + p;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[at..line_end]).unwrap(), 16)
            .expect("a chunk size");
        let data = line_end + 2;
        if raw.len() < data + size + 2 {
            break;
        }
        assert_eq!(
            &raw[data + size..data + size + 2],
            b"\r\n",
            "chunk ends in CRLF"
        );
        if size == 0 {
            return (body, Some(data + 2));
        }
        body.extend_from_slice(&raw[data..data + size]);
        at = data + size + 2;
    }
    (body, None)
}

#[tokio::test]
async fn a_slow_subscriber_holds_up_only_itself() {
    let s = Server::start().await;
    let (path, url) = text_stream(&s, "slow").await;
    // The slow one: subscribed, then reads nothing while much more than a socket holds is
    // appended.
    // A small receive buffer, so the server's socket fills within a few events.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s.port));
    let mut slow = socket.connect(addr).await.unwrap();
    let mut slow_raw = raw_sse(&mut slow, &path).await;
    let fast = s
        .client
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .unwrap();
    let mut fast = SseReader::new(fast);
    assert_eq!(fast.expect(PROMPT).await.event, "control");
    let mut want = Vec::new();
    let mut fast_got = Vec::new();
    for i in 0..64u8 {
        let record = vec![b'a' + (i % 26); 64 * 1024];
        want.extend_from_slice(&record);
        s.append(&url, TEXT, record).await;
        // The fast subscriber keeps up while the slow one's socket is full.
        let base = fast_got.len();
        fast_got.extend(read_data(&mut fast, base, want.len() - base).await);
    }
    assert_eq!(fast_got, want);
    // The slow one then gets everything, in order, none of it lost.
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + PROMPT;
    let data = loop {
        let n = tokio::time::timeout_at(deadline, slow.read(&mut chunk))
            .await
            .expect("the slow subscriber's events come")
            .unwrap();
        assert!(n > 0);
        slow_raw.extend_from_slice(&chunk[..n]);
        // Parsing all of it is linear: only once the data may all be there.
        if slow_raw.len() < want.len() {
            continue;
        }
        let text = partial_events(&slow_raw);
        if text.len() >= want.len() {
            break text;
        }
    };
    assert_eq!(data, want);
}

/// The data of the complete `data` events in a raw chunked SSE response so far.
fn partial_events(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(dechunk(raw).0).unwrap();
    let mut data = Vec::new();
    for block in text.split("\n\n") {
        if let Some(rest) = block.strip_prefix("event: data\n") {
            for line in rest.split('\n') {
                data.extend_from_slice(line.strip_prefix("data:").unwrap().as_bytes());
            }
        }
    }
    data
}

#[tokio::test]
async fn a_connection_serves_requests_after_the_hub_ends_its_response() {
    let s =
        Server::start_with(Options::default().env("DS_SERVER__SSE_RECONNECT_INTERVAL_SECS", "1"))
            .await;
    let (path, url) = text_stream(&s, "again").await;
    s.append(&url, TEXT, "hello").await;
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let mut raw = raw_sse(&mut conn, &path).await;
    // Parked after the first event; the hub ends the response at the reconnect interval.
    let mut chunk = [0u8; 4096];
    let (body, used) = loop {
        if let (body, Some(used)) = dechunk(&raw) {
            break (body, used);
        }
        let n = tokio::time::timeout(PROMPT, conn.read(&mut chunk))
            .await
            .expect("the response ends at the reconnect interval")
            .unwrap();
        assert!(n > 0, "the connection stays open");
        raw.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with("event: data\ndata:hello\n\nevent: control\n"),
        "{text}"
    );
    assert_eq!(used, raw.len(), "nothing after the last chunk");
    // The same connection serves the next request.
    let again = format!("GET {path}?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.write_all(again.as_bytes()).await.unwrap();
    let mut next = Vec::new();
    while !next.ends_with(b"hello") {
        let n = tokio::time::timeout(PROMPT, conn.read(&mut chunk))
            .await
            .expect("an answer on the same connection")
            .unwrap();
        assert!(n > 0, "the connection stays open");
        next.extend_from_slice(&chunk[..n]);
    }
    assert!(next.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn deleting_the_stream_ends_parked_responses() {
    let s = Server::start().await;
    let (_, url) = text_stream(&s, "gone").await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(subscribe(&url).await);
    }
    let r = s.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    for (_c, mut sse) in readers {
        sse.expect_end(PROMPT).await;
    }
}

#[tokio::test]
async fn a_parked_subscriber_that_hangs_up_frees_its_slot_at_once() {
    // One live connection allowed, a keep-alive far away: only noticing the hang-up itself
    // can free the slot in time.
    let s = Server::start_with(
        Options::default()
            .long_poll_secs(60)
            .env("DS_LIMITS__MAX_LIVE_CONNECTIONS", "1"),
    )
    .await;
    let (path, _) = text_stream(&s, "hangup").await;
    let sse = format!("GET {path}?offset=-1&live=sse HTTP/1.1\r\nHost: x\r\n\r\n");
    let poll = format!("GET {path}?offset=now&live=long-poll HTTP/1.1\r\nHost: x\r\n\r\n");
    for round in 0..6 {
        // SSE and long-poll in turn: a waiting long-poll is parked too.
        let is_poll = round % 2 == 1;
        let req = if is_poll { &poll } else { &sse };
        // Subscribe (retrying while the previous subscriber's slot is still held), wait for
        // the first event (the response is then parked), and hang up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut conn = loop {
            let mut conn = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
            conn.write_all(req.as_bytes()).await.unwrap();
            let mut head = [0u8; 12];
            if is_poll {
                // A waiting long-poll has no answer yet; a refused one gets its 429 at once.
                let read = conn.read_exact(&mut head);
                if tokio::time::timeout(Duration::from_millis(500), read)
                    .await
                    .is_err()
                {
                    break conn;
                }
            } else {
                conn.read_exact(&mut head).await.unwrap();
                if &head == b"HTTP/1.1 200" {
                    break conn;
                }
            }
            assert_eq!(&head, b"HTTP/1.1 429", "round {round}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the hung-up subscriber's slot was not freed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !is_poll {
            let mut raw = Vec::new();
            let mut chunk = [0u8; 4096];
            while !raw.windows(2).any(|w| w == b"\n\n") {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                raw.extend_from_slice(&chunk[..n]);
            }
        }
        drop(conn);
    }
}

#[tokio::test]
async fn parked_long_polls_are_answered_and_their_connections_go_on() {
    let s = Server::start_with(Options::default().long_poll_secs(30)).await;
    let (_, url) = text_stream(&s, "polls").await;
    const K: usize = 200;
    let clients: Vec<reqwest::Client> = (0..K)
        .map(|_| reqwest::Client::builder().build().unwrap())
        .collect();
    let mut next = ZERO.to_string();
    for round in 0..3 {
        let waits: Vec<_> = clients
            .iter()
            .map(|c| {
                let req = c.get(format!("{url}?offset={next}&live=long-poll"));
                tokio::spawn(async move { req.send().await })
            })
            .collect();
        // Let them all wait (parked), then append once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let record = format!("round {round};");
        s.append(&url, TEXT, record.clone()).await;
        let mut offsets = Vec::new();
        for w in waits {
            let r = tokio::time::timeout(PROMPT, w)
                .await
                .expect("answered promptly")
                .unwrap()
                .unwrap();
            assert_eq!(r.status(), 200);
            let offset = r.headers()["stream-next-offset"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(r.headers().contains_key("stream-cursor"));
            assert_eq!(r.text().await.unwrap(), record);
            offsets.push(offset);
        }
        assert!(offsets.iter().all(|o| *o == offsets[0]));
        next = offsets[0].clone();
    }
}
