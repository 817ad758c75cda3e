//! A lean HTTP/1.1 client: one keep-alive connection per worker, one request in flight on it.
//!
//! Built directly on `hyper::client::conn::http1` so the load generator adds no pooling,
//! no redirects and no retries of its own. A connection that fails is dropped and reopened
//! on the next request.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the streams live: `http://host:port/v1/stream` (the path is the stream prefix).
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` to connect to.
    pub addr: String,
    /// The stream prefix, without a trailing slash, e.g. `/v1/stream`.
    pub base: String,
    /// `Authorization` of every request (`Bearer <token>`), for a server with auth on.
    pub authorization: Option<String>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self> {
        let uri: http::Uri = url.parse().with_context(|| format!("bad --url {url}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url must be http://host:port/prefix (TLS is not supported): {url}");
        }
        let auth = uri
            .authority()
            .ok_or_else(|| anyhow!("--url has no host: {url}"))?;
        let addr = match auth.port_u16() {
            Some(_) => auth.as_str().to_string(),
            None => format!("{}:80", auth.host()),
        };
        let base = uri.path().trim_end_matches('/').to_string();
        Ok(Self {
            addr,
            base,
            authorization: None,
        })
    }

    /// The path of stream `name`.
    pub fn stream(&self, name: &str) -> String {
        format!("{}/{}", self.base, name)
    }
}

/// The error key of a [`Failure::Bad`] answer.
pub const BAD_ANSWER: &str = "bad-answer";

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    addr: String,
    authorization: Option<String>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// How many times this connection was (re)opened.
    pub connects: u64,
}

/// A failed request: either the server answered with an unexpected status, or the transport
/// failed (connect, reset, timeout).
#[derive(Debug)]
pub enum Failure {
    Status(StatusCode),
    Transport(String),
    Timeout,
    /// A success status whose body is wrong (unparseable, or not what the request asked for).
    Bad(String),
}

impl Failure {
    /// The key under which the failure is counted: the status code, `io` or `timeout`.
    pub fn key(&self) -> String {
        match self {
            Failure::Status(s) => s.as_u16().to_string(),
            Failure::Transport(_) => "io".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Bad(_) => BAD_ANSWER.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "HTTP {s}"),
            Failure::Transport(e) => write!(f, "transport: {e}"),
            Failure::Timeout => write!(f, "timeout"),
            Failure::Bad(e) => write!(f, "bad answer: {e}"),
        }
    }
}

impl Conn {
    pub fn new(target: &Target) -> Self {
        Self {
            addr: target.addr.clone(),
            authorization: target.authorization.clone(),
            sender: None,
            connects: 0,
        }
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        let open = matches!(&self.sender, Some(s) if !s.is_closed());
        if !open {
            let tcp = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| Failure::Transport(format!("connect {}: {e}", self.addr)))?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
            self.connects += 1;
        }
        let sender = self.sender.as_mut().expect("connected above");
        if let Err(e) = sender.ready().await {
            self.sender = None;
            return Err(Failure::Transport(e.to_string()));
        }
        Ok(self.sender.as_mut().expect("connected above"))
    }

    /// Sends one request and returns the response head with its body still unread.
    /// `timeout` bounds the time to the response head.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, a.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let fut = async {
            let sender = self.ready().await?;
            sender
                .send_request(req)
                .await
                .map_err(|e| Failure::Transport(e.to_string()))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    /// Sends a request and reads the whole (small) body; any status outside `ok` is a failure.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        ok: &[u16],
        timeout: Duration,
    ) -> Result<(HeaderMap, Bytes), Failure> {
        let resp = self.send(method, path, headers, body, timeout).await?;
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let bytes = match tokio::time::timeout(timeout, body.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                self.sender = None;
                return Err(Failure::Transport(e.to_string()));
            }
            Err(_) => {
                self.sender = None;
                return Err(Failure::Timeout);
            }
        };
        if !ok.contains(&status.as_u16()) {
            return Err(Failure::Status(status));
        }
        Ok((parts.headers, bytes))
    }

    /// Forgets the connection (after a body was abandoned half-read).
    pub fn reset(&mut self) {
        self.sender = None;
    }
}

/// A header's value as text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The default timeout of ordinary requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates a stream (201, or 200 if it already exists with the same configuration) and
/// returns its tail offset.
pub async fn create_stream(conn: &mut Conn, path: &str, content_type: &str) -> Result<String> {
    create_stream_in(conn, path, content_type, None).await
}

/// [`create_stream`], in a durability class (`Stream-Durability`) when `class` is given.
pub async fn create_stream_in(
    conn: &mut Conn,
    path: &str,
    content_type: &str,
    class: Option<&str>,
) -> Result<String> {
    let mut headers = vec![("content-type", content_type)];
    if let Some(c) = class {
        headers.push(("stream-durability", c));
    }
    let (headers, _) = conn
        .call(
            Method::PUT,
            path,
            &headers,
            Bytes::new(),
            &[200, 201],
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| anyhow!("create {path}: {e}"))?;
    Ok(header(&headers, "stream-next-offset")
        .unwrap_or("-1")
        .to_string())
}

/// The tail offset a `HEAD` reports.
pub async fn head_tail(conn: &mut Conn, path: &str) -> Result<String> {
    let (headers, _) = conn
        .call(
            Method::HEAD,
            path,
            &[],
            Bytes::new(),
            &[200],
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| anyhow!("HEAD {path}: {e}"))?;
    header(&headers, "stream-next-offset")
        .map(str::to_string)
        .ok_or_else(|| anyhow!("HEAD {path}: no Stream-Next-Offset"))
}

/// Percent-encodes a query value (offsets and cursors are opaque).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
