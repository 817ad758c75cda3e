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
