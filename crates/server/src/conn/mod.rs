//! Connections: HTTP/1.1 served by a lean loop of our own, HTTP/2 handed to hyper.
//!
//! Why not hyper for HTTP/1.1 too: appends are small requests, and per request hyper's
//! general-purpose machinery (a body channel between the connection and the handler, its
//! dispatcher's poll rounds, header encoding and write queue) cost more instructions than the
//! whole storage path. This loop does what the stream server needs and nothing else: parse a
//! head (`httparse`), read the body whole into the request (its size limit applies before a
//! byte is read), run the handler, write the response with one `write` for small answers. It
//! keeps the connection across requests (pipelined ones included), answers
//! `Expect: 100-continue`, decodes chunked bodies, streams SSE bodies chunk-encoded, and
//! refuses ambiguous framing with 400. Clients that idle, trickle a head or stop reading are
//! dropped after bounded times ([`timeouts`]).
//!
//! A connection whose first bytes are the HTTP/2 preface (cleartext prior knowledge, or TLS
//! with ALPN `h2`) is served by hyper's HTTP/2 server instead.

mod h2;
mod prefixed;
pub mod request;
pub mod response;
pub mod timeouts;
pub mod transport;

use crate::http::body::{RequestBody, ResponseBody};
use crate::http::metrics::{LiveKind, Reason, Route};
use crate::http::streams::poll::PollWait;
use crate::http::{ApiError, App};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use prefixed::Prefixed;
use request::{Chunked, Framing, Head, Refused};
use response::{Exchange, Parked, ParkedPoll, Waiting, Written};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use timeouts::{StallGuard, timeouts};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFuture;
use transport::Transport as _;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Read-buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// Room for the first read of a request into an empty buffer: most requests (a head and a
/// small body) fit, and a connection that parks as a live subscriber or idles between
/// requests has not been given a whole `READ_CHUNK` for it.
const FIRST_READ: usize = 2 * 1024;
/// Bodies declared up to this size get their whole buffer at once.
const RESERVE_WHOLE_BODY: u64 = 1024 * 1024;
/// After the server ends a connection whose client may still be sending (a refused or
/// oversized request, `Connection: close` with requests pipelined behind it), its input is
/// read and dropped for up to this long, and this much: closing with unread input would reset
/// the connection, and the client could lose the answer before reading it (RFC 9112 §9.6).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// Serve one accepted connection until the client leaves, an error ends it, or the server
/// shuts down (between requests: in-flight requests finish first).
pub async fn serve<IO>(io: IO, app: Arc<App>)
where
    IO: AsyncRead + transport::Transport + Send + 'static,
{
    let mut io = StallGuard::new(io);
    let mut buf = BytesMut::new();
    // The first request's head deadline, from its first byte.
    let mut deadline = None;
    {
        let stop = app.shutdown.cancelled();
        let timer = tokio::time::sleep(timeouts().idle);
        tokio::pin!(stop, timer);
        // Enough bytes to tell an HTTP/2 preface from an HTTP/1 request line.
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            let wait = head_wait(&buf, &mut deadline, stop.as_mut(), timer.as_mut());
            match read_more(&mut io, &mut buf, wait).await {
                Read::More => {}
                Read::Ended => return,
                // Silent from the start, or a few bytes and then silence: nothing to answer.
                Read::TimedOut => return close(&mut io, false).await,
            }
        }
    }
    if buf.starts_with(H2_PREFACE) {
        return h2::serve(Prefixed::new(buf.freeze(), io), app).await;
    }
    let ending = http1(&mut io, buf, &app, deadline).await;
    finish(io, app, ending).await;
}

/// Go on with a connection after `ending`: close it, or hand it to a fan-out hub.
async fn finish<IO>(mut io: StallGuard<IO>, app: Arc<App>, ending: std::io::Result<Ending>)
where
    IO: AsyncRead + transport::Transport,
{
    match ending {
        Ok(Ending::ClientLeft) => {}
        Ok(Ending::Closed { linger }) => close(&mut io, linger).await,
        Ok(Ending::Park(parked)) => match io.into_tcp() {
            Ok(tcp) => crate::fanout::park(&app, tcp, parked),
            // `park` is only set for plain TCP.
            Err(mut io) => close(&mut io, false).await,
        },
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}

/// Serve a connection again after a fan-out hub ended its live response (the chunked body's
/// end is written): the next request, or the close.
pub async fn resume(io: tokio::net::TcpStream, app: Arc<App>, keep_alive: bool) {
    let mut io = StallGuard::new(io);
    let ending = if keep_alive && !app.shutdown.is_cancelled() {
        http1(&mut io, BytesMut::new(), &app, None).await
    } else {
        Ok(Ending::Closed { linger: false })
    };
    finish(io, app, ending).await;
}

/// Take back a live response from a fan-out hub: write `pending` (framed: the rest of an
/// event its subscriber could not take at once, so a slow client holds up only itself, or
/// the body's end) on this connection's own task; then end the response (`last`) and serve
/// the connection on, or go on with it, parking again once it has caught up (unless not
/// `repark`: a request is pipelined behind it).
pub async fn unpark(
    io: tokio::net::TcpStream,
    app: Arc<App>,
    parked: Parked,
    pending: Bytes,
    last: bool,
    repark: bool,
) {
    let Parked { tail, keep_alive } = parked;
    // A subscriber that stopped reading is dropped, not written to forever.
    let mut io = StallGuard::new(io);
    // A response that ends gives its live slot back at once.
    let tail = (!last).then_some(tail);
    let ending: std::io::Result<Written> = async {
        io.write_all(&pending).await?;
        drop(pending);
        let Some(tail) = tail else {
            return Ok(Written::Done { keep_alive });
        };
        let mut out = Vec::new();
        Ok(
            match response::write_tail(&mut io, &mut out, tail, repark).await? {
                Some(tail) => Written::Park(Parked { tail, keep_alive }),
                None => Written::Done { keep_alive },
            },
        )
    }
    .await;
    match ending {
        Ok(Written::Park(parked)) => {
            crate::fanout::park(&app, io.into_inner(), Waiting::Sse(parked))
        }
        Ok(Written::Done { keep_alive }) => resume(io.into_inner(), app, keep_alive).await,
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}

/// A long-poll's answer as a fan-out hub hands it back.
pub enum Answer {
    Ready(Response<ResponseBody>),
    /// Not decided yet: the head of the placeholder answer and the wait.
    Pending {
        head: http::response::Parts,
        wait: Box<PollWait>,
    },
}

/// Answer on a connection a fan-out hub gave back (a pending answer is waited for here), then
/// go on serving the connection.
pub async fn respond(io: tokio::net::TcpStream, app: Arc<App>, answer: Answer, mut ex: Exchange) {
    let resp = match answer {
        Answer::Ready(resp) => resp,
        Answer::Pending { head, wait } => crate::http::streams::poll::resolve(head, wait).await,
    };
    ex.keep_alive &= !app.shutdown.is_cancelled();
    let mut out = Vec::new();
    let mut io = StallGuard::new(io);
    match response::write(&mut io, &mut out, resp, ex).await {
        Ok(Written::Done { keep_alive }) => resume(io.into_inner(), app, keep_alive).await,
        Ok(Written::Park(parked)) => {
            crate::fanout::park(&app, io.into_inner(), Waiting::Sse(parked))
        }
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}

/// How an HTTP/1 connection ended.
enum Ending {
    /// The client closed it (or sent half a request and left): nothing more to do.
    ClientLeft,
    /// The server ends it; `linger`: the client may still be sending.
    Closed { linger: bool },
    /// A live response caught up, or a long-poll waiting: the connection goes to its stream's
    /// fan-out hub.
    Park(Waiting),
}

/// End a connection from the server's side: shut down the write half (a TLS close_notify,
/// then FIN), and when the client may still be sending, drain its input for a bounded time.
async fn close<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, linger: bool) {
    let _ = tokio::time::timeout(LINGER_TIME, io.shutdown()).await;
    if !linger {
        return;
    }
    let drain = async {
        let mut sink = vec![0u8; 16 * 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// What a read is allowed to wait for.
enum Wait<'a, 'b> {
    /// The first byte of a request, on an idle connection: up to the idle timeout (the
    /// connection's timer), and not past the server's shutdown (its `stop` future).
    ///
    /// Both live as long as the connection: registering a fresh shutdown waiter and timer for
    /// every request (and unregistering them) would cost lock round trips per request, while
    /// pushing a registered timer's deadline later costs none.
    Idle(
        Pin<&'a mut WaitForCancellationFuture<'b>>,
        Pin<&'a mut Sleep>,
    ),
    /// The rest of a request head: until its deadline.
    Head(Instant),
    /// More of a body: up to the body-stall timeout for each read.
    Body,
}

/// How a read went.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    More,
    /// EOF, a read error, or shutdown while idle.
    Ended,
    /// What it waited for did not come in time.
    TimedOut,
}

/// How long the next read of a request head may wait: an empty buffer is an idle connection;
/// bytes started a head, whose deadline is set from then.
fn head_wait<'a, 'b>(
    buf: &BytesMut,
    deadline: &mut Option<Instant>,
    stop: Pin<&'a mut WaitForCancellationFuture<'b>>,
    timer: Pin<&'a mut Sleep>,
) -> Wait<'a, 'b> {
    if buf.is_empty() {
        Wait::Idle(stop, timer)
    } else {
        Wait::Head(*deadline.get_or_insert_with(|| Instant::now() + timeouts().head))
    }
}

/// Read more into `buf`, waiting as `wait` allows.
async fn read_more<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    wait: Wait<'_, '_>,
) -> Read {
    let body = matches!(wait, Wait::Body);
    buf.reserve(if buf.is_empty() && !body {
        FIRST_READ
    } else {
        READ_CHUNK
    });
    let read = match wait {
        Wait::Idle(stop, mut timer) => {
            timer.as_mut().reset(Instant::now() + timeouts().idle);
            tokio::select! {
                biased; // a request already waiting is read without touching the waiter or timer
                r = io.read_buf(buf) => r,
                () = stop => return Read::Ended,
                () = timer => {
                    tracing::debug!("keep-alive connection idle too long; closing it");
                    return Read::TimedOut;
                }
            }
        }
        Wait::Head(deadline) => match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!("request head not received in time; closing the connection");
                return Read::TimedOut;
            }
        },
        Wait::Body => match tokio::time::timeout(timeouts().body_stall, io.read_buf(buf)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!("client stalled mid-body; closing the connection");
                return Read::TimedOut;
            }
        },
    };
    if matches!(read, Ok(n) if n > 0) {
        Read::More
    } else {
        Read::Ended
    }
}

/// Serve HTTP/1 requests on a connection. `deadline`: the first request's head deadline, if
/// its first bytes are in `buf` already.
async fn http1<IO>(
    io: &mut IO,
    mut buf: BytesMut,
    app: &App,
    mut deadline: Option<Instant>,
) -> std::io::Result<Ending>
where
    IO: AsyncRead + transport::Transport,
{
    let mut out = Vec::with_capacity(1024);
    let stop = app.shutdown.cancelled();
    let timer = tokio::time::sleep(timeouts().idle);
    tokio::pin!(stop, timer);
    loop {
        if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
            // An idle connection does not keep the buffer a large request grew.
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        // Bytes of `buf` known to hold no complete head (a head that trickles in is parsed
        // again only once its end may have arrived).
        let mut scanned = 0;
        let head = loop {
            if scanned == 0 || request::head_may_end(&buf, scanned) {
                match request::parse_head(&mut buf) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(refused) => return refuse(io, &mut out, app, refused, None).await,
                }
            } else if let Some(refused) = request::refuse_partial(&buf) {
                return refuse(io, &mut out, app, refused, None).await;
            }
            scanned = buf.len();
            let wait = head_wait(&buf, &mut deadline, stop.as_mut(), timer.as_mut());
            match read_more(io, &mut buf, wait).await {
                Read::More => {}
                // EOF (mid-head: nothing is owed), or shutdown while idle.
                Read::Ended if app.shutdown.is_cancelled() => {
                    return Ok(Ending::Closed { linger: false });
                }
                Read::Ended => return Ok(Ending::ClientLeft),
                // Idle too long: closed without a word (an answer could cross a request the
                // client sends meanwhile, and be taken for its answer).
                Read::TimedOut if buf.is_empty() => return Ok(Ending::Closed { linger: false }),
                Read::TimedOut => {
                    let refused = Refused::head_timeout(timeouts().head);
                    return refuse(io, &mut out, app, refused, None).await;
                }
            }
        };
        // The next request's deadline starts at its own first byte.
        deadline = None;
        let Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        if app.recovering.is_none()
            && let Some(key) = websocket_key(&parts)
        {
            let started = std::time::Instant::now();
            let allowed = app.authorize(&parts, "/v0/ws").and_then(|cred| {
                let slot = app.live.acquire(cred.as_ref())?;
                Ok((cred, slot.counted(app.metrics.live(LiveKind::Ws))))
            });
            let (cred, _slot) = match allowed {
                Ok(c) => c,
                Err(e) => {
                    // Refused before the upgrade: an ordinary answer, then the connection ends.
                    let resp = crate::http::topics::render_timed(e, started);
                    let reason = resp.extensions().get::<Reason>().copied();
                    let elapsed = started.elapsed();
                    app.metrics
                        .request(Route::WS, &parts.method, resp.status(), reason, elapsed);
                    let ex = Exchange {
                        head: false,
                        version: parts.version,
                        keep_alive: false,
                        park: false,
                    };
                    response::write(io, &mut out, resp, ex).await?;
                    return Ok(Ending::Closed { linger: true });
                }
            };
            // The connection becomes a WebSocket session until either side closes it.
            let (status, elapsed) = (StatusCode::SWITCHING_PROTOCOLS, started.elapsed());
            app.metrics
                .request(Route::WS, &parts.method, status, None, elapsed);
            io.write_all(crate::http::topics::ws::accept_response(&key).as_bytes())
                .await?;
            io.flush().await?;
            let part = buf.split().to_vec();
            let session = crate::http::topics::ws::serve(&mut *io, part, app);
            // Boxed: inline, the session would size every connection's task to it.
            Box::pin(crate::http::access::with(cred, session)).await;
            return Ok(Ending::ClientLeft);
        }
        let limit = app.config.limits.max_request_body_bytes;
        let body = match framing {
            None => RequestBody::Full(Bytes::new()),
            // Refused before reading; the unread body means the connection cannot continue.
            Some(Framing::Length(n)) if n > limit => RequestBody::TooLarge,
            Some(framing) => {
                if expect_continue && parts.version == Version::HTTP_11 {
                    io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                    io.flush().await?;
                }
                let read = match framing {
                    Framing::Length(n) => read_sized(io, &mut buf, n).await,
                    Framing::Chunked => read_chunked(io, &mut buf, limit).await,
                };
                match read {
                    Ok(Some(body)) => body,
                    Ok(None) => return Ok(Ending::ClientLeft), // it left mid-body
                    Err(refused) => {
                        let path = Some(parts.uri.path());
                        return refuse(io, &mut out, app, refused, path).await;
                    }
                }
            }
        };
        let complete = !matches!(body, RequestBody::TooLarge);
        let (resp, handled) = answer(app, &parts, body).await;
        let mut ex = Exchange {
            head: parts.method == Method::HEAD,
            version: parts.version,
            // At shutdown the answer says the connection closes.
            keep_alive: keep_alive
                && complete
                && handled
                && !app.shutdown.is_cancelled()
                && app.recovering.is_none(),
            park: io.can_park() && buf.is_empty(),
        };
        let resp = match resp.into_parts() {
            (head, ResponseBody::Poll(wait)) => {
                if ex.park {
                    // The hub answers when there is an answer; nothing is held here meanwhile.
                    return Ok(Ending::Park(Waiting::Poll(Box::new(ParkedPoll {
                        head,
                        wait,
                        ex,
                    }))));
                }
                let resp = crate::http::streams::poll::resolve(head, wait).await;
                ex.keep_alive &= !app.shutdown.is_cancelled();
                resp
            }
            (head, body) => Response::from_parts(head, body),
        };
        if matches!(resp.body(), ResponseBody::Stream(_) | ResponseBody::Tail(_)) {
            // A live response may wait for hours: it keeps no read buffer meanwhile. The head
            // shares the buffer's memory, so it goes too; a buffer holding pipelined bytes
            // stays.
            drop(parts);
            if buf.is_empty() {
                buf = BytesMut::new();
            }
        }
        match response::write(io, &mut out, resp, ex).await? {
            Written::Done { keep_alive: true } => {}
            Written::Done { keep_alive: false } => return Ok(Ending::Closed { linger: true }),
            Written::Park(parked) => return Ok(Ending::Park(Waiting::Sse(parked))),
        }
    }
}

/// The `Sec-WebSocket-Key` of a WebSocket upgrade of `/v0/ws` (RFC 6455 §4.2.1), if this is
/// one.
fn websocket_key(parts: &Parts) -> Option<Vec<u8>> {
    let h = &parts.headers;
    let has = |name: &str, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = parts.method == Method::GET
        && parts.uri.path() == "/v0/ws"
        && parts.version == Version::HTTP_11
        && has("upgrade", "websocket")
        && has("connection", "upgrade")
        && h.get("sec-websocket-version").is_some_and(|v| v == "13");
    upgrade
        .then(|| h.get("sec-websocket-key").map(|k| k.as_bytes().to_vec()))
        .flatten()
}

/// Run the handler. A panic in it (a bug) is answered with a 500 and `false` (the connection
/// then closes, saying so) instead of ending the connection without any answer: a client
/// must never be left to guess whether its request was served.
pub(super) async fn answer(
    app: &App,
    parts: &Parts,
    body: RequestBody,
) -> (Response<ResponseBody>, bool) {
    let started = std::time::Instant::now();
    match AssertUnwindSafe(app.handle(parts, body, started))
        .catch_unwind()
        .await
    {
        Ok(resp) => (resp, true),
        Err(panic) => {
            let resp = panicked(app, parts, panic.as_ref());
            // `handle` counts what it answers; a panic never got there.
            let route = Route::of(parts.uri.path());
            let elapsed = started.elapsed();
            app.metrics
                .request(route, &parts.method, resp.status(), None, elapsed);
            (resp, false)
        }
    }
}

/// The answer to a request whose handler panicked.
fn panicked(app: &App, parts: &Parts, panic: &(dyn Any + Send)) -> Response<ResponseBody> {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(method = %parts.method, path = parts.uri.path(), panic = what, "request handler panicked");
    app.error_response(
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the request failed; it may or may not have taken effect",
        ),
        Some(parts.uri.path()),
    )
}

/// Read a body of `n` bytes. `None`: the connection ended first.
async fn read_sized<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    n: u64,
) -> Result<Option<RequestBody>, Refused> {
    let want = usize::try_from(n).unwrap_or(usize::MAX);
    if n <= RESERVE_WHOLE_BODY {
        buf.reserve(want.saturating_sub(buf.len()));
    }
    while buf.len() < want {
        if read_more(io, buf, Wait::Body).await != Read::More {
            return Ok(None);
        }
    }
    Ok(Some(RequestBody::Full(buf.split_to(want).freeze())))
}

/// Read and decode a chunked body, up to `limit` bytes of data.
async fn read_chunked<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    limit: u64,
) -> Result<Option<RequestBody>, Refused> {
    let mut decoder = Chunked::default();
    let mut data = BytesMut::new();
    loop {
        let done = decoder.decode(buf, &mut data)?;
        if data.len() as u64 > limit {
            // The handler answers 413; the rest of the body stays unread.
            return Ok(Some(RequestBody::TooLarge));
        }
        if done {
            return Ok(Some(RequestBody::Full(data.freeze())));
        }
        if read_more(io, buf, Wait::Body).await != Read::More {
            return Ok(None);
        }
    }
}

/// Answer a request that cannot be served; the connection then ends.
async fn refuse<IO: transport::Transport>(
    io: &mut IO,
    out: &mut Vec<u8>,
    app: &App,
    refused: Refused,
    path: Option<&str>,
) -> std::io::Result<Ending> {
    let resp = app.error_response(ApiError::new(refused.status, refused.message), path);
    let ex = Exchange {
        head: false,
        version: Version::HTTP_11,
        keep_alive: false,
        park: false,
    };
    response::write(io, out, resp, ex).await?;
    Ok(Ending::Closed { linger: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_is_dropped() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut buf = BytesMut::from(&b"ab"[..]);
        let started = Instant::now();
        assert_eq!(
            read_more(&mut server, &mut buf, Wait::Body).await,
            Read::TimedOut
        );
        assert!(started.elapsed() >= timeouts().body_stall);
        // A read that makes progress returns at once.
        client.write_all(b"cd").await.unwrap();
        assert_eq!(
            read_more(&mut server, &mut buf, Wait::Body).await,
            Read::More
        );
        assert!(buf.ends_with(b"abcd"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_arrive_whole_by_its_deadline_however_it_trickles() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let token = tokio_util::sync::CancellationToken::new();
        let stop = token.cancelled();
        let timer = tokio::time::sleep(timeouts().idle);
        tokio::pin!(stop, timer);
        let started = Instant::now();
        let step = timeouts().head / 10;
        let trickle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(step).await;
                if client.write_all(b"X").await.is_err() {
                    return;
                }
            }
        });
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let mut deadline = None;
        let ended = loop {
            let wait = head_wait(&buf, &mut deadline, stop.as_mut(), timer.as_mut());
            match read_more(&mut server, &mut buf, wait).await {
                Read::More => {}
                other => break other,
            }
        };
        assert_eq!(ended, Read::TimedOut);
        // Every read made progress, yet the head's time ran out.
        assert!(buf.len() > 20, "{buf:?}");
        let took = started.elapsed();
        assert!(
            took >= timeouts().head && took < timeouts().head + step,
            "{took:?}"
        );
        drop(server);
        trickle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_times_out_or_ends_at_shutdown() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let token = tokio_util::sync::CancellationToken::new();
        let stop = token.cancelled();
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(stop, timer);
        let mut buf = BytesMut::new();
        // The timer, run out by an earlier wait, is set again for each.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..2 {
            let started = Instant::now();
            let wait = Wait::Idle(stop.as_mut(), timer.as_mut());
            assert_eq!(read_more(&mut server, &mut buf, wait).await, Read::TimedOut);
            assert!(started.elapsed() >= timeouts().idle);
        }
        token.cancel();
        let wait = Wait::Idle(stop.as_mut(), timer.as_mut());
        assert_eq!(read_more(&mut server, &mut buf, wait).await, Read::Ended);
    }
}
