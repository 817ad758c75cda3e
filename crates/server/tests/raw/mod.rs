//! A strict HTTP/1.1 client over one raw keep-alive `TcpStream`, for tests of what happens on
//! a connection across requests. Every read of a response fails the test when no complete
//! answer arrives: a connection closed without an answer is a failure, never a pass.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long a test waits for an answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The server says it closes the connection after this answer.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

impl Conn {
    pub fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(ANSWER_TIMEOUT))
            .expect("write timeout");
        Self {
            stream,
            buf: Vec::new(),
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("sending a request failed: {e}"));
    }

    /// Send a request with `Content-Length` framing (none when `body` is empty and the method
    /// usually has no body) and read its answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(&encode(method, path, headers, body));
        self.response(method == "HEAD")
    }

    /// Read more bytes. False on a clean EOF; panics on a timeout or an error (a reset).
    fn fill(&mut self, deadline: Instant, waiting_for: &str) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    assert!(
                        Instant::now() < deadline,
                        "no {waiting_for} within {ANSWER_TIMEOUT:?}; have {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "the connection failed ({e}) while waiting for {waiting_for}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Read exactly one response (an interim 100 is one too). `head`: the request was HEAD.
    /// Panics when the connection ends or stalls before the whole answer arrived.
    pub fn response(&mut self, head: bool) -> Response {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(
                self.fill(deadline, "response head"),
                "the server closed the connection without an answer (got {:?})",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let text = String::from_utf8(self.buf[..end].to_vec()).expect("an ASCII response head");
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header {l:?}"));
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let no_body = head || status < 200 || status == 204 || status == 304;
        let length = resp.header("content-length").map(|v| {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("bad Content-Length {v:?}"))
        });
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if no_body {
            return resp;
        }
        if let Some(n) = length {
            while self.buf.len() < n {
                assert!(
                    self.fill(deadline, "response body"),
                    "the connection ended inside a {status} body ({} of {n} bytes)",
                    self.buf.len()
                );
            }
            resp.body = self.buf.drain(..n).collect();
        } else if chunked {
            resp.body = self.read_chunked(deadline);
        } else {
            assert!(
                resp.closes(),
                "a {status} answer with neither a length nor chunks on a keep-alive connection"
            );
            while self.fill(deadline, "close-delimited body") {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    fn read_chunked(&mut self, deadline: Instant) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(
                    self.fill(deadline, "chunk size"),
                    "the connection ended in a chunked body"
                );
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                assert!(
                    self.fill(deadline, "chunk data"),
                    "the connection ended in a chunk"
                );
            }
            body.extend_from_slice(&self.buf[..size]);
            assert_eq!(
                &self.buf[size..size + 2],
                b"\r\n",
                "chunk not followed by CRLF"
            );
            self.buf.drain(..size + 2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Assert the server ends the connection (EOF or reset) with nothing more sent.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    assert!(
                        Instant::now() < deadline,
                        "the server kept the connection open"
                    );
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break, // a reset after the answer also ends it
            }
        }
        assert!(
            self.buf.is_empty(),
            "bytes after the last answer: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

/// The bytes of a request with `Content-Length` framing.
pub fn encode(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The bytes of a request whose body is sent chunk-encoded, in `pieces`.
pub fn encode_chunked(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    pieces: &[&[u8]],
) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    for p in pieces {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
