//! A long-poll that found nothing to return yet, as state rather than as a waiting task.
//!
//! The handler answers with a placeholder response whose body is the wait
//! ([`ResponseBody::Poll`]): `App::handle` adds the common headers to it as to any answer. A
//! plain HTTP/1.1 connection then parks it with the stream's fan-out hub
//! ([`crate::fanout`]), which resolves it when data arrives, the stream closes or goes, the
//! timeout or the credential's expiry passes, or the server shuts down; any other
//! connection waits for it itself ([`resolve`]). Either way the answer is the one the
//! long-poll would have given, and its request is measured when it is answered.

use super::read::{MAX_READ_BYTES, long_poll_answer, timeout_answer};
use crate::http::ApiError;
use crate::http::body::ResponseBody;
use crate::http::metrics::{Metrics, Reason, Route};
use crate::http::slots::Slot;
use http::{Method, Response};
use riffle_engine::{LogHandle, ReadFrom};
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct PollWait {
    handle: LogHandle,
    pos: u64,
    /// The `Stream-Cursor` of the answer (decided when the request came).
    cursor: String,
    /// The request's `If-None-Match` values, if it had any.
    if_none_match: Option<String>,
    /// When the long-poll times out (or, earlier, the credential expires).
    deadline: Instant,
    expires: Option<Instant>,
    stop: CancellationToken,
    /// The request, measured when it is answered.
    measure: Option<(Arc<Metrics>, Route, Method, std::time::Instant)>,
    /// The live connection's, given back with the answer.
    _slot: Slot,
    /// The request's in-flight slot of its credential, if counted.
    inflight: Option<Slot>,
}

/// How a long-poll waits.
pub struct PollSetup {
    pub pos: u64,
    pub cursor: String,
    pub if_none_match: Option<String>,
    pub timeout: std::time::Duration,
    pub expires: Option<Instant>,
    pub stop: CancellationToken,
    pub slot: Slot,
}

impl PollWait {
    pub fn new(handle: LogHandle, s: PollSetup) -> Self {
        let deadline = Instant::now() + s.timeout;
        PollWait {
            handle,
            pos: s.pos,
            cursor: s.cursor,
            if_none_match: s.if_none_match,
            deadline: s.expires.map_or(deadline, |e| deadline.min(e)),
            expires: s.expires,
            stop: s.stop,
            measure: None,
            _slot: s.slot,
            inflight: None,
        }
    }

    /// The stream's incarnation.
    pub fn log_id(&self) -> u64 {
        self.handle.id()
    }

    /// A handle on the stream, for a hub to wait on.
    pub fn handle(&self) -> LogHandle {
        self.handle.clone()
    }

    /// Measure the request in `metrics` when it is answered (its head is not written before).
    pub fn measure(
        &mut self,
        metrics: Arc<Metrics>,
        route: Route,
        method: Method,
        started: std::time::Instant,
    ) {
        self.measure = Some((metrics, route, method, started));
    }

    /// Hold the request's in-flight slot until it is answered.
    pub fn hold(&mut self, inflight: Slot) {
        self.inflight = Some(inflight);
    }

    /// When [`Self::ready`] answers even without data.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The answer, if there is one at `now`: data past the position, the stream closed or
    /// gone, the deadline passed, or shutdown.
    pub fn ready(&self, now: Instant) -> Option<Result<Response<ResponseBody>, ApiError>> {
        // A credential that expired while the request waited gets nothing more.
        if self.expires.is_some_and(|e| now >= e) {
            return Some(Err(crate::http::access::expired_error()));
        }
        let batch = match self.handle.read(ReadFrom::At(self.pos), MAX_READ_BYTES) {
            Ok(b) => b,
            Err(e) => return Some(Err(e.into())),
        };
        if !batch.is_empty() || batch.closed {
            let inm = self.if_none_match.as_deref();
            return Some(Ok(long_poll_answer(batch, &self.cursor, inm)));
        }
        if now < self.deadline && !self.stop.is_cancelled() {
            return None;
        }
        // Timed out (or shutting down): tell the client where to poll next.
        Some(Ok(timeout_answer(batch, &self.cursor)))
    }

    /// Wait on this request's own task until there is an answer.
    async fn wait(mut self: Box<Self>) -> (Result<Response<ResponseBody>, ApiError>, Box<Self>) {
        loop {
            if let Some(r) = self.ready(Instant::now()) {
                return (r, self);
            }
            let deadline = self.deadline;
            tokio::select! {
                () = self.handle.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.stop.cancelled() => {}
            }
        }
    }

    /// The answer as sent: with the placeholder's headers (the common ones `App::handle`
    /// added), measured.
    fn finish(
        &self,
        answer: Result<Response<ResponseBody>, ApiError>,
        placeholder: &http::HeaderMap,
    ) -> Response<ResponseBody> {
        let mut resp = answer.unwrap_or_else(ApiError::into_response);
        for (name, value) in placeholder {
            resp.headers_mut().insert(name, value.clone());
        }
        if let Some((metrics, route, method, started)) = &self.measure {
            let reason = resp.extensions().get::<Reason>().copied();
            metrics.request(*route, method, resp.status(), reason, started.elapsed());
        }
        resp
    }
}

/// A placeholder answer whose long-poll is waiting (the body is the wait).
pub fn placeholder(wait: PollWait) -> Response<ResponseBody> {
    Response::new(ResponseBody::Poll(Box::new(wait)))
}

/// The answer of a waiting long-poll once there is one (waiting on this task), with the
/// placeholder's `head`ers.
pub async fn resolve(head: http::response::Parts, wait: Box<PollWait>) -> Response<ResponseBody> {
    let (answer, wait) = wait.wait().await;
    wait.finish(answer, &head.headers)
}

/// `resp` itself, or, if it is a waiting long-poll's placeholder, its answer once there is
/// one.
pub async fn resolve_answer(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    let (head, body) = resp.into_parts();
    match body {
        ResponseBody::Poll(wait) => resolve(head, wait).await,
        body => Response::from_parts(head, body),
    }
}

/// The answer of a waiting long-poll, if it has one at `now`.
pub fn try_resolve(
    head: &http::response::Parts,
    wait: &PollWait,
    now: Instant,
) -> Option<Response<ResponseBody>> {
    let answer = wait.ready(now)?;
    Some(wait.finish(answer, &head.headers))
}
