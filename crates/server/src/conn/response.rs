//! HTTP/1.1 responses: the head encoded into one buffer, small bodies in the same write, larger
//! stored bodies gathered with the head into vectored writes (no copy), ranges of stream files
//! sent from the page cache (`sendfile`) where the transport allows, streamed bodies (SSE)
//! chunk-encoded and flushed frame by frame.

use super::transport::Transport;
use crate::http::body::{Pieces, ResponseBody};
use crate::http::streams::poll::PollWait;
use crate::http::streams::tail::{SseTail, Step};
use bytes::Bytes;
use http::{HeaderName, Response, StatusCode, Version, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use riffle_engine::Piece;
use std::cell::RefCell;
use std::io::IoSlice;
use std::time::UNIX_EPOCH;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bodies up to this size are copied behind the head and sent with it in one write.
const COALESCE_BYTES: usize = 16 * 1024;
/// Shortest run of memory-arena ranges sent with `sendfile`; shorter ones are written from
/// their mapping with the bytes around them.
const SENDFILE_MIN_BYTES: u64 = 64 * 1024;
/// Buffers per vectored write (well under every platform's `IOV_MAX`).
const MAX_IOVECS: usize = 64;

/// What the request decided about its response.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// A HEAD request: headers only.
    pub head: bool,
    pub version: Version,
    /// The connection stays open after this response.
    pub keep_alive: bool,
    /// A live response that catches up may be handed to its stream's fan-out hub (plain TCP,
    /// nothing pipelined behind the request).
    pub park: bool,
}

/// How a response ended.
pub enum Written {
    /// Written whole; whether the connection may carry another request.
    Done { keep_alive: bool },
    /// A live response, caught up, for the stream's fan-out hub to go on with.
    Park(Parked),
}

/// A live response whose connection a fan-out hub now drives.
pub struct Parked {
    pub tail: Box<SseTail>,
    pub keep_alive: bool,
}

/// What a connection parked with a fan-out hub waits for. Small (two words): a hub holds
/// one per subscriber in a vector.
pub enum Waiting {
    /// The next events of a live SSE response.
    Sse(Parked),
    /// The answer of a long-poll.
    Poll(Box<ParkedPoll>),
}

/// A long-poll waiting for its answer: the head of its placeholder answer (the common
/// headers), the wait, and how to write the answer.
pub struct ParkedPoll {
    pub head: http::response::Parts,
    pub wait: Box<PollWait>,
    pub ex: Exchange,
}

impl Waiting {
    /// The stream it waits on.
    pub fn log_id(&self) -> u64 {
        match self {
            Waiting::Sse(p) => p.tail.log_id(),
            Waiting::Poll(p) => p.wait.log_id(),
        }
    }

    /// A handle on that stream.
    pub fn handle(&self) -> riffle_engine::LogHandle {
        match self {
            Waiting::Sse(p) => p.tail.handle(),
            Waiting::Poll(p) => p.wait.handle(),
        }
    }

    /// When its clock is next due.
    pub fn deadline(&self) -> tokio::time::Instant {
        match self {
            Waiting::Sse(p) => p.tail.deadline(),
            Waiting::Poll(p) => p.wait.deadline(),
        }
    }
}

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 and a body of unknown length: delimited by closing the connection.
    UntilClose,
}

/// Write `resp`.
pub async fn write<W: Transport>(
    io: &mut W,
    out: &mut Vec<u8>,
    resp: Response<ResponseBody>,
    ex: Exchange,
) -> std::io::Result<Written> {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let wire = match body.size_hint().exact() {
        _ if no_body || ex.head => Wire::None,
        Some(n) => Wire::Length(n),
        None if ex.version == Version::HTTP_11 => Wire::Chunked,
        None => Wire::UntilClose,
    };
    let keep_alive = ex.keep_alive && wire != Wire::UntilClose;
    let events = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if is_framing(name) {
            continue; // framing is this layer's to decide
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match wire {
        Wire::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Wire::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Wire::None | Wire::UntilClose => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if ex.version == Version::HTTP_10 {
        // An HTTP/1.0 client that asked to keep the connection learns that it may.
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"date: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");

    match wire {
        Wire::None => io.write_all(out).await?,
        Wire::Length(_) => match body {
            ResponseBody::Pieces(p) => write_pieces(io, out, p).await?,
            // A stream that knows its length: its frames as they come, unframed.
            body => write_streamed(io, out, body, false, events).await?,
        },
        Wire::Chunked => match body {
            ResponseBody::Tail(tail) => {
                if let Some(tail) = write_tail(io, out, tail, ex.park).await? {
                    return Ok(Written::Park(Parked { tail, keep_alive }));
                }
            }
            body => write_streamed(io, out, body, true, events).await?,
        },
        Wire::UntilClose => write_streamed(io, out, body, false, events).await?,
    }
    io.flush().await?;
    Ok(Written::Done { keep_alive })
}

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The size line of a chunk of `len` bytes: hex digits and CRLF.
fn chunk_head(len: usize) -> ([u8; 18], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut head = [0u8; 18];
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        head[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    head[digits..digits + 2].copy_from_slice(b"\r\n");
    (head, digits + 2)
}

/// Append `data` as one chunk (nothing for no data: an empty chunk would end the body).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let (head, n) = chunk_head(data.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A live response on this connection's task, after its head in `out`: its events as they
/// come, chunk-encoded. With `park`, it stops once it is caught up and returns the response
/// for the stream's fan-out hub; otherwise it waits here until the response ends.
pub async fn write_tail<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    mut tail: Box<SseTail>,
    park: bool,
) -> std::io::Result<Option<Box<SseTail>>> {
    loop {
        let step = match tail.poll_data() {
            Step::Idle => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    io.flush().await?;
                    out.clear();
                }
                if park {
                    return Ok(Some(tail));
                }
                tail.wait().await
            }
            step => step,
        };
        match step {
            Step::Idle => {}
            Step::Events(b) => send_frame(io, out, &b, true).await?,
            Step::Last(b) => {
                push_chunk(out, &b);
                out.extend_from_slice(LAST_CHUNK);
                io.write_all(out).await?;
                out.clear();
                return Ok(None);
            }
        }
    }
}

/// The data of each frame of `body`, as it comes (trailers are not sent over HTTP/1.1).
async fn next_data(body: &mut ResponseBody) -> Option<Bytes> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap_or_else(|e| match e {}).into_data() {
            return Some(data);
        }
    }
    None
}

/// Stored bytes: a small body goes with the head in one write (its file ranges read); in a
/// larger one the memory chunks are gathered with the head into vectored writes (no copy) and
/// each file range is sent from the page cache (`sendfile`) after what precedes it, or read
/// and written where the transport cannot.
async fn write_pieces<W: Transport>(
    io: &mut W,
    out: &mut Vec<u8>,
    pieces: Pieces,
) -> std::io::Result<()> {
    let pieces = pieces.into_pieces();
    let total: u64 = pieces.iter().map(Piece::len).sum();
    if out.len() as u64 + total <= COALESCE_BYTES as u64 {
        for p in pieces {
            match p {
                Piece::Mem(b) => out.extend_from_slice(&b),
                Piece::File(f) => out.extend_from_slice(&f.read()?),
            }
        }
        return io.write_all(out).await;
    }
    let mut before: Vec<Bytes> = Vec::new();
    let mut rest = pieces.into_iter().peekable();
    while let Some(p) = rest.next() {
        match p {
            Piece::Mem(b) => before.push(b),
            Piece::File(f) => {
                // Ranges that continue one another in one file (RAM-held chunks side by side
                // in the memory arena) go in one `sendfile`; `run` keeps them all alive.
                let mut run = vec![f];
                while let Some(Piece::File(next)) = rest.next_if(|p| {
                    matches!((p, run.last()), (Piece::File(n), Some(last)) if last.continues_in(n))
                }) {
                    run.push(next);
                }
                let len: u64 = run.iter().map(|r| r.len).sum();
                // A short run of memory chunks (a read's last few KiB, or chunks split by the
                // end of a log's extent) costs less gathered into the next vectored write
                // than in a `sendfile` of its own.
                if len < SENDFILE_MIN_BYTES
                    && let Some(mapped) = run
                        .iter()
                        .map(|r| r.mapped().cloned())
                        .collect::<Option<Vec<_>>>()
                {
                    before.extend(mapped);
                    continue;
                }
                write_all_vectored(io, out, &before).await?;
                out.clear();
                before.clear();
                let whole = run[0].widened(len);
                if !io.send_file(&whole).await? {
                    for r in run {
                        io.write_all(&r.read()?).await?;
                    }
                }
            }
        }
    }
    write_all_vectored(io, out, &before).await
}

/// A body produced over time (SSE): each frame is sent at once (the first with the head), as
/// a chunk, or raw (HTTP/1.0, or a known length).
///
/// An event stream (`events`) may wait long for its next frame: a client that hangs up
/// meanwhile is noticed at once (where the transport can tell) and the body dropped, so what
/// it holds (a `/work` stream's leases, a live slot) goes then, not at its next write.
async fn write_streamed<W: Transport>(
    io: &mut W,
    out: &mut Vec<u8>,
    mut body: ResponseBody,
    chunked: bool,
    events: bool,
) -> std::io::Result<()> {
    let mut watch = events;
    loop {
        let data = if watch {
            tokio::select! {
                biased;
                data = next_data(&mut body) => data,
                gone = std::future::poll_fn(|cx| io.poll_hung_up(cx)) => {
                    if gone {
                        let e = std::io::ErrorKind::ConnectionAborted;
                        return Err(std::io::Error::new(e, "the client hung up"));
                    }
                    // A pipelined request: it waits, unread, for this response's end.
                    watch = false;
                    continue;
                }
            }
        } else {
            next_data(&mut body).await
        };
        let Some(data) = data else { break };
        if data.is_empty() {
            continue; // as a chunk, it would end the body
        }
        send_frame(io, out, &data, chunked).await?;
    }
    if chunked {
        out.extend_from_slice(LAST_CHUNK);
    }
    io.write_all(out).await
}

/// Send `data` now, as a chunk or raw, after what `out` holds (the head, before the first
/// frame); `out` is left empty.
async fn send_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    data: &[u8],
    chunked: bool,
) -> std::io::Result<()> {
    if chunked {
        push_chunk(out, data);
    } else {
        out.extend_from_slice(data);
    }
    io.write_all(out).await?;
    io.flush().await?;
    out.clear();
    if out.capacity() > COALESCE_BYTES * 4 {
        // A large catch-up event must not stay allocated for the life of a live response.
        *out = Vec::new();
    }
    Ok(())
}

/// Write `head` and then `chunks`, gathered into as few writes as the socket takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: &[u8],
    chunks: &[Bytes],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = std::iter::once(head)
        .chain(chunks.iter().map(|c| &c[..]))
        .filter(|s| !s.is_empty())
        .map(IoSlice::new)
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let batch = rest.len().min(MAX_IOVECS);
        let n = io.write_vectored(&rest[..batch]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

fn is_framing(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == header::DATE
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn push_date(out: &mut Vec<u8>) {
    // A second's resolution is all `Date` needs: the coarse clock is a plain read, no TSC.
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body;
    use bytes::Bytes;
    use http_body::Frame;
    use std::convert::Infallible;

    async fn wire(resp: Response<ResponseBody>, ex: Exchange) -> (String, bool) {
        let mut io = Vec::new();
        let Written::Done { keep_alive } = write(&mut io, &mut Vec::new(), resp, ex).await.unwrap()
        else {
            panic!("only live responses park")
        };
        (String::from_utf8(io).unwrap(), keep_alive)
    }

    const GET11: Exchange = Exchange {
        head: false,
        version: Version::HTTP_11,
        keep_alive: true,
        park: false,
    };

    #[test]
    fn chunk_heads_are_hex() {
        for (len, want) in [(1, "1"), (15, "f"), (16, "10"), (255, "ff"), (4096, "1000")] {
            let (head, n) = chunk_head(len);
            assert_eq!(
                std::str::from_utf8(&head[..n]).unwrap(),
                format!("{want}\r\n")
            );
        }
        let (head, n) = chunk_head(usize::MAX);
        assert_eq!(n, 18);
        assert!(head[..16].iter().all(|&b| b == b'f'));
    }

    fn without_date(s: &str) -> String {
        s.lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn stored_bodies_have_a_length() {
        let resp = Response::builder()
            .header("x-a", "1")
            .header("content-length", "999")
            .body(body::chunks([Bytes::from("ab"), Bytes::from("cd")]))
            .unwrap();
        let (s, keep) = wire(resp, GET11).await;
        assert!(keep);
        assert!(s.contains("\r\ndate: "));
        assert_eq!(
            without_date(&s),
            "HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 4\n\nabcd"
        );
    }

    #[tokio::test]
    async fn large_chunks_are_written_whole() {
        let big = Bytes::from(vec![b'x'; COALESCE_BYTES * 2]);
        let resp = Response::new(body::chunks([Bytes::from("a"), big.clone()]));
        let (s, _) = wire(resp, GET11).await;
        assert!(s.ends_with(&format!("\r\n\r\na{}", "x".repeat(big.len()))));
        assert!(s.contains(&format!("content-length: {}\r\n", big.len() + 1)));
    }

    #[tokio::test]
    async fn no_body_statuses_and_head_send_headers_only() {
        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            let mut resp = Response::new(body::full("ignored"));
            *resp.status_mut() = status;
            let (s, _) = wire(resp, GET11).await;
            assert!(
                !s.contains("content-length") && s.ends_with("\r\n\r\n"),
                "{s}"
            );
        }
        let head = Exchange {
            head: true,
            ..GET11
        };
        let (s, _) = wire(Response::new(body::full("x")), head).await;
        assert!(
            !s.contains("content-length") && s.ends_with("\r\n\r\n"),
            "{s}"
        );
    }

    fn streamed() -> ResponseBody {
        let frames = futures_util::stream::iter(
            ["ev1", "event-2"].map(|f| Ok::<_, Infallible>(Frame::data(Bytes::from(f)))),
        );
        body::stream(http_body_util::StreamBody::new(frames))
    }

    #[tokio::test]
    async fn streams_are_chunked_over_http11_and_close_delimited_over_http10() {
        let (s, keep) = wire(Response::new(streamed()), GET11).await;
        assert!(keep);
        assert!(s.contains("transfer-encoding: chunked\r\n"));
        assert!(
            s.ends_with("\r\n\r\n3\r\nev1\r\n7\r\nevent-2\r\n0\r\n\r\n"),
            "{s}"
        );

        let v10 = Exchange {
            version: Version::HTTP_10,
            ..GET11
        };
        let (s, keep) = wire(Response::new(streamed()), v10).await;
        assert!(!keep);
        assert!(s.contains("connection: close\r\n") && s.ends_with("\r\n\r\nev1event-2"));
        // A stored body keeps an HTTP/1.0 keep-alive connection open, and says so.
        let (s, keep) = wire(Response::new(body::full("x")), v10).await;
        assert!(keep);
        assert!(s.contains("connection: keep-alive\r\n") && s.ends_with("\r\n\r\nx"));
    }
}
