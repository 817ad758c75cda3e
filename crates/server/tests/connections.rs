//! The connection layer over real sockets: HTTP/1.1 keep-alive, pipelining, `Expect:
//! 100-continue`, chunked bodies, HTTP/1.0, refused framing and oversized bodies, HTTP/2 (prior
//! knowledge and TLS with ALPN), and shutdown with idle connections open.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const TEXT: &str = "text/plain";

/// A raw HTTP/1 client connection that reads whole responses one at a time.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

/// One parsed HTTP/1 response.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// Lower-cased header lines.
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }
}

impl Raw {
    fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    /// Read until `f` finds what it needs in the buffer; `None` if the connection closed (or
    /// was reset) first. Panics when the server stays silent for the read timeout: silence is
    /// neither an answer nor a close, and must not pass for either.
    fn fill_until<T>(&mut self, mut f: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(t) = f(&self.buf) {
                return Some(t);
            }
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "the server neither answered nor closed within the read timeout; read so far: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                }
                Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next response (interim 1xx responses included), or `None` at end of connection.
    fn response(&mut self) -> Option<Resp> {
        let end = self.fill_until(|b| b.windows(4).position(|w| w == b"\r\n\r\n"))?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        self.buf.drain(..end + 4);
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let mut resp = Resp {
            status,
            head,
            body: Vec::new(),
        };
        if let Some(n) = resp.header("content-length") {
            let n: usize = n.parse().expect("content-length");
            self.fill_until(|b| (b.len() >= n).then_some(()))?;
            resp.body = self.buf.drain(..n).collect();
        } else if resp.header("transfer-encoding") == Some("chunked") {
            let end = self.fill_until(|b| b.windows(5).position(|w| w == b"0\r\n\r\n"))?;
            resp.body = self.buf.drain(..end + 5).collect();
        }
        Some(resp)
    }

    /// Whether the server closed the connection (and sent nothing more).
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill_until(|b| (!b.is_empty()).then_some(())).is_none()
    }
}

fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let s = Server::start().await;
    let (_, path) = s.text_stream("pipe").await;

    let mut c = Raw::connect(s.port);
    // Three requests in one write: two appends and a read.
    let mut batch = post(&path, "ab", "");
    batch.push_str(&post(&path, "cd", ""));
    batch.push_str(&format!("GET {path}?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n"));
    c.send(batch.as_bytes());
    let first = c.response().expect("first");
    let second = c.response().expect("second");
    let read = c.response().expect("read");
    assert_eq!((first.status, second.status, read.status), (204, 204, 200));
    assert_eq!(first.header("stream-next-offset"), Some(offset(2).as_str()));
    assert_eq!(
        second.header("stream-next-offset"),
        Some(offset(4).as_str())
    );
    assert_eq!(read.body, b"abcd");
    assert!(read.header("date").is_some());

    // The connection stays open for more.
    c.send(format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let head = c.response().expect("head");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // `Connection: close` is honoured.
    c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let last = c.response().expect("last");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.closed());
}

#[tokio::test]
async fn a_body_sent_in_pieces_and_chunked_bodies_are_read_whole() {
    let s = Server::start().await;
    let (url, path) = s.text_stream("pieces").await;

    let mut c = Raw::connect(s.port);
    // Head and body trickle in over several writes.
    let req = post(&path, "hello world", "");
    for piece in req.as_bytes().chunks(7) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.response().expect("append").status, 204);
    // A chunked body with an extension and a trailer.
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {TEXT}\r\nTransfer-Encoding: chunked\r\n\r\n\
             1;ext=1\r\n!\r\n3\r\n ok\r\n0\r\nX-Trailer: y\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response().expect("chunked append");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("stream-next-offset"), Some(offset(15).as_str()));
    assert_eq!(s.read_all(&url).await, b"hello world! ok");
}

#[tokio::test]
async fn expect_continue_gets_a_go_ahead_before_the_body() {
    let s = Server::start().await;
    let (url, path) = s.text_stream("expect").await;

    let mut c = Raw::connect(s.port);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {TEXT}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    );
    let interim = c.response().expect("100");
    assert_eq!(interim.status, 100);
    c.send(b"later");
    assert_eq!(c.response().expect("final").status, 204);
    assert_eq!(s.read_all(&url).await, b"later");

    // Too large for the limit: refused at once, without a go-ahead, and the body never read.
    let limited =
        Server::start_with(Options::default().env("DS_LIMITS__MAX_REQUEST_BODY_BYTES", "10")).await;
    let (_, path) = limited.text_stream("expect").await;
    let mut c = Raw::connect(limited.port);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {TEXT}\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response().expect("413");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[tokio::test]
async fn oversized_and_ambiguous_bodies_are_refused_and_the_connection_closed() {
    let s =
        Server::start_with(Options::default().env("DS_LIMITS__MAX_REQUEST_BODY_BYTES", "10")).await;
    let (url, path) = s.text_stream("limits").await;

    // Declared too large: 413, and the unread body is not taken for a next request.
    let mut c = Raw::connect(s.port);
    c.send(post(&path, "GET /healthz HTTP/1.1\r\n\r\n", "").as_bytes());
    let r = c.response().expect("413");
    assert_eq!(r.status, 413);
    assert!(c.closed());

    // Chunked past the limit: 413.
    let mut c = Raw::connect(s.port);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {TEXT}\r\nTransfer-Encoding: chunked\r\n\r\n\
             8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.response().expect("413").status, 413);
    assert!(c.closed());

    // Both Transfer-Encoding and Content-Length: 400, connection closed.
    let mut c = Raw::connect(s.port);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {TEXT}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response().expect("400");
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("ambiguous"));
    assert!(c.closed());

    // Nothing of the refused requests was stored.
    assert_eq!(s.read_all(&url).await, b"");
}

/// A client that sends a whole oversized body before reading still gets its 413: the server
/// reads and drops the rest for a while instead of resetting the connection under it.
#[tokio::test]
async fn a_refused_upload_is_answered_even_when_the_client_sends_it_all_first() {
    let s =
        Server::start_with(Options::default().env("DS_LIMITS__MAX_REQUEST_BODY_BYTES", "10")).await;
    let (url, path) = s.text_stream("upload").await;
    // More than the socket buffers hold, less than the server drains (4 MiB).
    let body = vec![b'x'; 3 << 20];
    let mut c = Raw::connect(s.port);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let mut writer = c.s.try_clone().expect("clone");
    let sent = std::thread::spawn(move || writer.write_all(&body).is_ok());
    let r = c.response().expect("413");
    assert!(sent.join().expect("writer"), "the upload was not reset");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(s.read_all(&url).await, b"");
}

#[tokio::test]
async fn http10_requests_get_an_answer_and_a_close() {
    let s = Server::start().await;
    let mut c = Raw::connect(s.port);
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.response().expect("answer");
    assert_eq!(r.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(
        health["status"], "ok",
        "/healthz answers as /v0/health does"
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[tokio::test]
async fn an_sse_response_is_chunked_and_streams_events_as_they_happen() {
    let s = Server::start().await;
    let (url, path) = s.text_stream("sse").await;
    let mut c = Raw::connect(s.port);
    c.send(format!("GET {path}?offset=-1&live=sse HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let end = c
        .fill_until(|b| b.windows(4).position(|w| w == b"\r\n\r\n"))
        .expect("head");
    let head = String::from_utf8_lossy(&c.buf[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    s.append(&url, TEXT, "streamed-now").await;
    let seen = c.fill_until(|b| {
        String::from_utf8_lossy(b)
            .contains("streamed-now")
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "the event arrived while the response stays open"
    );
}

/// HTTP/2, with prior knowledge in cleartext and over TLS with ALPN, through Node's client.
#[tokio::test]
async fn http2_with_prior_knowledge_and_over_tls() {
    let script = r#"
        const http2 = require("http2");
        const [base, tls] = [process.argv[1], process.argv[2] === "tls"];
        const session = http2.connect(base, tls ? { rejectUnauthorized: false } : {});
        const call = (method, path, body) => new Promise((ok, fail) => {
          const req = session.request({ ":method": method, ":path": path,
            "content-type": "text/plain" });
          let status = 0, data = "", next = "";
          req.on("response", (h) => { status = h[":status"]; next = h["stream-next-offset"] || ""; });
          req.on("data", (c) => (data += c));
          req.on("end", () => ok([status, next, data]));
          req.on("error", fail);
          req.end(body);
        });
        (async () => {
          const put = await call("PUT", "/v1/stream/h2", "he");
          const post = await call("POST", "/v1/stream/h2", "llo");
          const get = await call("GET", "/v1/stream/h2?offset=-1");
          console.log(JSON.stringify([put, post, get, session.alpnProtocol || ""]));
          session.close();
        })().catch((e) => { console.error(e); process.exit(1); });
    "#;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert = fixtures.join("test-cert.pem");
    let key = fixtures.join("test-key.pem");
    let plain = Server::start().await;
    let tls = Server::start_tls(
        Options::default()
            .env("DS_TLS__CERT_PATH", cert.to_str().expect("utf-8 path"))
            .env("DS_TLS__KEY_PATH", key.to_str().expect("utf-8 path")),
    )
    .await;
    for (base, mode) in [
        (format!("http://127.0.0.1:{}", plain.port), "plain"),
        (format!("https://127.0.0.1:{}", tls.port), "tls"),
    ] {
        let v = node_json(script, &[&base, mode]).await;
        assert_eq!(v[0][0], 201, "{mode}: {v}");
        assert_eq!(v[1][0], 204, "{mode}: {v}");
        assert_eq!(v[1][1], offset(5), "{mode}: {v}");
        assert_eq!(v[2][0], 200, "{mode}: {v}");
        assert_eq!(v[2][2], "hello", "{mode}: {v}");
        if mode == "tls" {
            assert_eq!(v[3], "h2", "ALPN chose HTTP/2");
        }
    }
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let mut s = Server::start().await;
    let mut idle = Raw::connect(s.port);
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.response().expect("answer").status, 200);
    let started = Instant::now();
    s.sigterm();
    let status = s
        .wait_exit(Duration::from_secs(8))
        .expect("exits while a keep-alive connection is idle");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for the idle connection's drain timeout"
    );
    assert!(idle.closed());
}

// ---- timeouts ------------------------------------------------------------------------------

/// The connection timeouts, shortened for a test through the server's test-only variables
/// (by default 60 s idle, 30 s per head, 60 s of writes without progress).
const QUICK: Duration = Duration::from_millis(800);

fn quick_timeouts() -> Options {
    let ms = QUICK.as_millis().to_string();
    Options::default()
        .env("RIFFLE_TEST_IDLE_TIMEOUT_MS", &ms)
        .env("RIFFLE_TEST_HEAD_TIMEOUT_MS", &ms)
        .env("RIFFLE_TEST_WRITE_STALL_TIMEOUT_MS", &ms)
}

/// Assert the server closes `c` (sending nothing more) about `QUICK` after `since`.
#[track_caller]
fn closed_after_timeout(c: &mut Raw, since: Instant, what: &str) {
    assert!(c.closed(), "{what}: the server sent something");
    let took = since.elapsed();
    assert!(
        took >= QUICK * 3 / 4 && took < Duration::from_secs(5),
        "{what}: closed after {took:?}"
    );
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_after_the_idle_timeout() {
    let s = Server::start_with(quick_timeouts()).await;
    // Not a byte sent, ever.
    let started = Instant::now();
    let mut silent = Raw::connect(s.port);
    closed_after_timeout(&mut silent, started, "a silent connection");

    // Requests spaced under the timeout keep the connection; idle past it, it is closed.
    let mut c = Raw::connect(s.port);
    for _ in 0..3 {
        std::thread::sleep(QUICK / 2);
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response().expect("answer");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), None);
    }
    let answered = Instant::now();
    closed_after_timeout(&mut c, answered, "an idle keep-alive connection");
}

#[tokio::test]
async fn a_head_must_arrive_whole_within_the_head_timeout() {
    let s = Server::start_with(quick_timeouts()).await;
    // Heads that take half the timeout each are served: the deadline runs from each
    // request's first byte, not from the connection's.
    let mut c = Raw::connect(s.port);
    for _ in 0..3 {
        let (first, rest) = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".split_at(10);
        c.send(first);
        std::thread::sleep(QUICK / 2);
        c.send(rest);
        assert_eq!(c.response().expect("answer").status, 200);
    }

    // A slowloris: every read brings a byte, but the head never ends. Each read used to
    // restart a 30 s timer; now the head's deadline ends it with a 408.
    let mut c = Raw::connect(s.port);
    let started = Instant::now();
    c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let mut trickle = c.s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(50));
            if trickle.write_all(b"X").is_err() {
                return;
            }
        }
    });
    let r = c.response().expect("a 408 answer");
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        took >= QUICK * 3 / 4 && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    assert!(c.closed());
    writer.join().expect("writer");
}

/// Connections waiting on a live response (parked with the stream's fan-out hub, or writing
/// SSE events) are not idle: the idle timeout does not touch them.
#[tokio::test]
async fn live_responses_and_long_polls_outlive_the_idle_timeout() {
    let s = Server::start_with(quick_timeouts().long_poll_secs(10)).await;
    let (url, path) = s.text_stream("live-idle").await;
    let mut sse = Raw::connect(s.port);
    sse.send(format!("GET {path}?offset=-1&live=sse HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    sse.fill_until(|b| b.windows(4).position(|w| w == b"\r\n\r\n"))
        .expect("the SSE head");
    let mut poll = Raw::connect(s.port);
    poll.send(
        format!("GET {path}?offset={ZERO}&live=long-poll HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );

    tokio::time::sleep(QUICK * 2).await;
    s.append(&url, TEXT, "late-event").await;
    let seen = sse.fill_until(|b| {
        String::from_utf8_lossy(b)
            .contains("late-event")
            .then_some(())
    });
    assert!(seen.is_some(), "the SSE response was still open");
    let r = poll.response().expect("the long-poll's answer");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"late-event"[..]));
}

/// A client that asks for responses and never reads them is dropped once the server's writes
/// make no progress for the write-stall timeout, from memory and from files (`sendfile`).
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let data = TempDir::new("write-stall");
    let modes = [
        ("memory", quick_timeouts()),
        (
            "file",
            quick_timeouts().storage("file-durable", data.path()),
        ),
    ];
    for (mode, opts) in modes {
        let mut s = Server::start_with(opts).await;
        let (url, path) = s.text_stream("stall").await;
        const LEN: usize = 16 << 20;
        s.append(&url, TEXT, vec![b'x'; LEN]).await;
        let mut c = Raw::connect(s.port);
        // Four whole copies, pipelined: more than any socket buffers hold.
        let get = format!("GET {path}?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n");
        c.send(get.repeat(4).as_bytes());
        tokio::time::sleep(QUICK * 3).await;
        // What the buffers held, then the end: a read that times out means it is still open.
        let mut got = 0;
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            match c.s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("{mode}: the connection stayed open ({got} bytes read)")
                }
                Err(_) => break, // reset: ended too
            }
        }
        assert!(got < 4 * LEN, "{mode}: all {got} bytes arrived");
        s.assert_healthy().await;
    }
}

// ---- HTTP/2 HEAD ---------------------------------------------------------------------------

/// A HEAD answer over HTTP/2 has no DATA (the client's h2 library resets a HEAD stream that
/// gets some, with PROTOCOL_ERROR), and keeps the length the GET's body has.
#[tokio::test]
async fn http2_head_answers_carry_no_body() {
    let s = Server::start().await;
    let (url, path) = s.text_stream("h2-head").await;
    s.append(&url, TEXT, "hello").await;
    let mut h2 = H2::connect(s.port).await.expect("HTTP/2 connection");
    for (p, status) in [
        ("/healthz", 200),
        ("/v1/stream/no-such-stream", 404),
        (path.as_str(), 200),
    ] {
        let get = h2.request("GET", p, &[], b"").await.expect("GET");
        let head = h2
            .request("HEAD", p, &[], b"")
            .await
            .unwrap_or_else(|e| panic!("HEAD {p}: {e}"));
        assert_eq!((get.status, head.status), (status, status), "{p}");
        assert!(head.body.is_empty(), "{p}");
        let length = head.header("content-length").map(str::parse::<usize>);
        match p {
            // Its body says the uptime, whose length changes: a length is all to check.
            "/healthz" => assert!(matches!(length, Some(Ok(n)) if n > 0), "{p}: {length:?}"),
            // A stream's HEAD is headers only, GET or not.
            p if p == path => {}
            _ => assert_eq!(length, Some(Ok(get.body.len())), "{p}"),
        }
    }
    // The connection is still good after them.
    let get = h2
        .request("GET", &format!("{path}?offset=-1"), &[], b"")
        .await;
    assert_eq!(get.expect("GET").body, b"hello");
}

/// An HTTP/2 connection with no open stream is closed after the idle timeout, as an HTTP/1.1
/// one is; one with a live response open is not idle.
#[tokio::test]
async fn idle_http2_connections_are_closed_and_live_ones_kept() {
    let s = Server::start_with(quick_timeouts()).await;
    let mut h2 = H2::connect(s.port).await.expect("HTTP/2 connection");
    for _ in 0..3 {
        tokio::time::sleep(QUICK / 2).await;
        let r = h2.request("GET", "/healthz", &[], b"").await.expect("GET");
        assert_eq!(r.status, 200);
    }
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), h2.ended())
        .await
        .expect("the idle connection was closed");
    let took = answered.elapsed();
    assert!(took >= QUICK * 3 / 4, "closed after {took:?}");

    let (url, path) = s.text_stream("h2-live").await;
    let mut h2 = H2::connect(s.port).await.expect("HTTP/2 connection");
    let (resp, _stream) = h2
        .start("GET", &format!("{path}?offset=-1&live=sse"), &[], b"")
        .await
        .expect("SSE request");
    let resp = resp.await.expect("SSE head");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    tokio::time::sleep(QUICK * 2).await;
    assert!(
        !h2.has_ended(),
        "a connection with an open SSE stream is not idle"
    );
    s.append(&url, TEXT, "late-event").await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("late-event") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.data())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        seen.extend_from_slice(&chunk);
    }
    // Once the live stream ends, the idle timer starts.
    drop(body);
    drop(_stream);
    tokio::time::timeout(Duration::from_secs(5), h2.ended())
        .await
        .expect("closed once idle");
}

/// A client that keeps a stream's flow-control window shut blocks no write, yet its responses
/// go nowhere: like an HTTP/1.1 client that stops reading, its connection is dropped after the
/// write-stall timeout, and the live slots it held are free again.
#[tokio::test]
async fn an_http2_client_that_never_opens_its_window_is_dropped() {
    let s = Server::start_with(quick_timeouts().env("DS_LIMITS__MAX_LIVE_CONNECTIONS", "3")).await;
    let (url, path) = s.text_stream("h2-shut").await;
    s.append(&url, TEXT, "x".repeat(1000)).await;
    let mut settings = h2::client::Builder::new();
    settings.initial_window_size(0);
    let mut h2 = H2::connect_with(s.port, settings)
        .await
        .expect("HTTP/2 connection");
    let mut held = Vec::new();
    for _ in 0..3 {
        let (resp, stream) = h2
            .start("GET", &format!("{path}?offset=-1&live=sse"), &[], b"")
            .await
            .expect("SSE request");
        let resp = resp.await.expect("SSE head");
        assert_eq!(resp.status(), 200);
        held.push((resp, stream));
    }
    // Every live slot is taken.
    let sse = format!("{}?offset=-1&live=sse", url);
    assert_eq!(s.client.get(&sse).send().await.unwrap().status(), 429);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), h2.ended())
        .await
        .expect("the stalled connection was dropped");
    let took = started.elapsed();
    assert!(took >= QUICK * 3 / 4, "dropped after {took:?}");
    drop(held);
    // The slots came back.
    let mut free = false;
    for _ in 0..50 {
        let r = s.client.get(&sse).send().await.unwrap();
        if r.status() == 200 {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(free, "the live slots were given back");
}
