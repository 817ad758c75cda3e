//! HTTP/2 connections, served by hyper. Timeouts as HTTP/1.1's where they apply: a connection
//! with no open stream for the idle timeout is closed with GOAWAY, and a peer that stops
//! answering PINGs is dropped (a dead peer of a quiet live stream would otherwise be held
//! forever). Writes that make no progress are the transport's [`StallGuard`] timeout; a
//! client that keeps a stream's flow-control window shut makes no write block, so a response
//! body whose next frame hyper has not asked for within the write-stall timeout drops the
//! connection too (else one connection could hold 200 live slots, and their events, forever).
//!
//! [`StallGuard`]: super::timeouts::StallGuard

use super::timeouts::timeouts;
use crate::http::App;
use crate::http::body::{RequestBody, ResponseBody};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// With no frame from the peer for this long, a PING is sent...
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// ... and a peer that does not acknowledge it within this long is gone.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serve an HTTP/2 connection until it ends, idles out, or the server shuts down.
pub(super) async fn serve<IO>(io: IO, app: Arc<App>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let token = app.shutdown.clone();
    // How many streams are open: from a request's arrival to the end of its response body.
    let (open, mut open_rx) = watch::channel(0usize);
    let open = Arc::new(open);
    let bodies = Arc::new(Bodies::default());
    let registry = bodies.clone();
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = app.clone();
        let bodies = registry.clone();
        let stream = OpenStream::new(open.clone());
        async move {
            let (parts, body) = req.into_parts();
            let (resp, _) = super::answer(&app, &parts, RequestBody::Streamed(body)).await;
            // A waiting long-poll is waited for on this stream's task.
            let resp = crate::http::streams::poll::resolve_answer(resp).await;
            let resp = if parts.method == Method::HEAD {
                without_body(resp)
            } else {
                resp
            };
            Ok::<_, Infallible>(resp.map(|body| Tracked {
                body,
                rest: Bytes::new(),
                stalled_since: bodies.register(),
                _stream: stream,
            }))
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = idle(&mut open_rx, timeouts().idle);
    tokio::pin!(idle);
    let stall = timeouts().write_stall;
    let mut check = tokio::time::interval(stall / 4);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
                }
                return;
            }
            () = token.cancelled() => break,
            () = &mut idle => break,
            _ = check.tick() => if bodies.stalled_for(stall) {
                tracing::debug!("HTTP/2 connection dropped: a response made no progress");
                return;
            },
        }
    }
    // GOAWAY; streams already open finish first.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Resolves once no stream has been open for `timeout`.
async fn idle(open: &mut watch::Receiver<usize>, timeout: Duration) {
    loop {
        if *open.borrow_and_update() == 0 {
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                r = open.changed() => if r.is_err() { return },
            }
        } else if open.changed().await.is_err() {
            return;
        }
    }
}

/// Counts one open stream while it lives.
struct OpenStream(Arc<watch::Sender<usize>>);

impl OpenStream {
    fn new(open: Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        OpenStream(open)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The response bodies of a connection, each with the moment (ms after `start`, plus one; 0:
/// none) since which it has waited for hyper to ask for its next frame.
struct Bodies {
    start: std::time::Instant,
    list: parking_lot::Mutex<Vec<Weak<AtomicU64>>>,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies {
            start: std::time::Instant::now(),
            list: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

impl Bodies {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A new body, waiting for its first poll.
    fn register(self: &Arc<Self>) -> Stalled {
        let since = Arc::new(AtomicU64::new(self.now()));
        let mut list = self.list.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&since));
        Stalled {
            since,
            bodies: self.clone(),
        }
    }

    /// Whether a body has waited for hyper longer than `limit`.
    fn stalled_for(&self, limit: Duration) -> bool {
        let now = self.now();
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let mut list = self.list.lock();
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).any(|since| {
            let t = since.load(Ordering::Relaxed);
            t != 0 && now.saturating_sub(t) > limit
        })
    }
}

/// One body's entry in [`Bodies`].
struct Stalled {
    since: Arc<AtomicU64>,
    bodies: Arc<Bodies>,
}

/// Largest DATA handed to hyper at once: hyper's HTTP/2 buffers a frame whole whatever the
/// client's window, and asks for the next once the client took some; so a stream holds at
/// most this much beyond h2's own buffer, and a client that is slow but reading is asked
/// again well within the stall timeout (it would have to read under 1 KiB/s not to be).
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// A response body that keeps its stream counted as open until hyper is done with it, hands
/// it data in frames of at most [`MAX_FRAME_BYTES`], and says when hyper holds a frame of it
/// without asking for the next.
struct Tracked {
    body: ResponseBody,
    /// The rest of a large frame of `body`, handed over first.
    rest: Bytes,
    stalled_since: Stalled,
    _stream: OpenStream,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Asked: not stalled while the body looks for its next frame (a live response may
        // wait long for data; that is not the client's doing).
        self.stalled_since.since.store(0, Ordering::Relaxed);
        let frame = if self.rest.is_empty() {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(mut data) if data.len() > MAX_FRAME_BYTES => {
                        self.rest = data.split_off(MAX_FRAME_BYTES);
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(f) => Poll::Ready(Some(Ok(f))),
                },
                other => other,
            }
        } else {
            let n = self.rest.len().min(MAX_FRAME_BYTES);
            Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n)))))
        };
        if let Poll::Ready(Some(_)) = &frame {
            // Handed over: hyper asks for the next once the client's window lets it send.
            let now = self.stalled_since.bodies.now();
            self.stalled_since.since.store(now, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        let inner = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// A HEAD answer over HTTP/2: hyper sends whatever body it is given, and DATA on a HEAD
/// stream is a protocol error to the client (RFC 9113 §8.1.1). The body is dropped; its
/// length stays in `Content-Length`, as the GET's would be (RFC 9110 §9.3.2).
fn without_body(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    let (mut head, body) = resp.into_parts();
    if !body.is_end_stream()
        && !head.headers.contains_key(http::header::CONTENT_LENGTH)
        && let Some(n) = body.size_hint().exact()
    {
        head.headers
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
    }
    Response::from_parts(head, crate::http::body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_answer_over_http2_keeps_the_length_and_drops_the_body() {
        let resp = without_body(Response::new(crate::http::body::full("hello")));
        assert_eq!(resp.headers()["content-length"], "5");
        assert!(resp.body().is_end_stream());
        // A length the handler set is kept as it is.
        let mut resp = Response::new(crate::http::body::empty());
        resp.headers_mut()
            .insert("content-length", http::HeaderValue::from(9u64));
        assert_eq!(without_body(resp).headers()["content-length"], "9");
    }

    #[tokio::test]
    async fn large_frames_go_to_hyper_in_pieces() {
        use http_body_util::BodyExt;
        let bodies = Arc::new(Bodies::default());
        let (open, _rx) = watch::channel(0usize);
        let data = vec![7u8; 3 * MAX_FRAME_BYTES + 5];
        let mut body = Tracked {
            body: crate::http::body::full(data.clone()),
            rest: Bytes::new(),
            stalled_since: bodies.register(),
            _stream: OpenStream::new(Arc::new(open)),
        };
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= MAX_FRAME_BYTES);
            got.extend_from_slice(&chunk);
            // Handed over: stalled until hyper asks again.
            assert!(body.stalled_since.since.load(Ordering::Relaxed) != 0);
        }
        assert_eq!(got, data);
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_only_time_with_no_open_stream() {
        let (tx, mut rx) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let timeout = Duration::from_secs(60);
        let started = tokio::time::Instant::now();
        let stream = OpenStream::new(tx.clone());
        let ended = tokio::spawn(async move {
            idle(&mut rx, timeout).await;
            tokio::time::Instant::now()
        });
        // Open for 100 s: not idle however long that is.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!ended.is_finished());
        drop(stream);
        let at = ended.await.unwrap();
        assert_eq!(at - started, Duration::from_secs(160));
    }
}
