//! The HTTP side: routing, headers every response carries, and the protocol faces.
//!
//! - `/v1/stream/__ds/...`: the Durable Streams control APIs: subscriptions ([`subscriptions`])
//! - `/v1/stream/...`: the Durable Streams protocol ([`streams`])
//! - `/healthz`, `/readyz`: liveness and readiness (aliases of `/v0/health`, `/v0/ready`)
//! - `/metrics`: Prometheus text format ([`metrics`])

pub mod access;
pub mod auth;
pub mod body;
mod cursor;
mod error;
pub mod jwt;
pub mod metrics;
pub mod path;
pub mod slots;
mod sse;
pub mod streams;
pub mod subscriptions;
pub mod topics;

use crate::config::{Config, Cors};
use body::{RequestBody, ResponseBody};
pub use error::ApiError;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use riffle_engine::Engine;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

pub const STREAM_PREFIX: &str = "/v1/stream/";

/// Everything a request handler needs.
pub struct App {
    pub engine: Engine,
    pub config: Config,
    /// Cancelled when the server shuts down: live reads end at once.
    pub shutdown: CancellationToken,
    /// `https` when serving TLS, for absolute `Location` URLs.
    pub scheme: &'static str,
    /// The `/v0` face's own state (watch sessions, start time).
    pub topics: topics::TopicsState,
    /// Set while storage is still being recovered: this `App` only answers probes (ready:
    /// 503 with the progress) and 503 to everything else, and closes each connection after
    /// its answer, so clients reconnect to the server that recovery produces.
    pub recovering: Option<Arc<AtomicU64>>,
    /// Live connections (SSE, long-poll, WebSocket), server-wide and per credential.
    pub live: Arc<slots::Slots>,
    /// Requests in flight per credential.
    pub inflight: Arc<slots::Slots>,
    /// The Prometheus registry, shared with the `App` that answered during recovery.
    pub metrics: Arc<metrics::Metrics>,
    /// Live SSE responses parked while they wait, by stream.
    pub fanout: crate::fanout::Fanout,
    /// Subscriptions' signing keys, webhook client and settings.
    pub subs: Arc<crate::subscriptions::Subscriptions>,
}

impl App {
    /// The holder caps of `config`.
    pub fn slots(config: &Config) -> (Arc<slots::Slots>, Arc<slots::Slots>) {
        let l = &config.limits;
        (
            slots::Slots::new(
                "max_live_connections",
                l.max_live_connections,
                "max_live_connections_per_key",
                l.max_live_connections_per_key,
            ),
            slots::Slots::new("", 0, "max_inflight_per_key", l.max_inflight_per_key),
        )
    }

    /// A live connection's slot for the request being served, counted in the live
    /// connections gauge of `kind` while held.
    pub fn live_slot(&self, kind: metrics::LiveKind) -> Result<slots::Slot, ApiError> {
        let slot = self.live.acquire(access::current().as_ref())?;
        Ok(slot.counted(self.metrics.live(kind)))
    }
}

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, HEAD, OPTIONS";
const ALLOW_HEADERS: &str = "Content-Type, Authorization, If-None-Match, Stream-Seq, Stream-TTL, \
    Stream-Expires-At, Stream-Closed, Producer-Id, Producer-Epoch, Producer-Seq, \
    Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, Stream-Durability";
const EXPOSE_HEADERS: &str = "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, \
    Stream-Closed, Stream-SSE-Data-Encoding, Stream-TTL, Stream-Expires-At, Stream-Durability, \
    ETag, Location, WWW-Authenticate, \
    Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq";

impl App {
    /// Serve one request. Never fails: every problem is an HTTP answer.
    ///
    /// The head is borrowed and only the body moves: requests pass through several layers of
    /// handlers, and moving a whole `Request` at each would copy it each time.
    /// `started` is when the request was taken up (its latency is measured from there).
    pub async fn handle(
        &self,
        req: &Parts,
        body: RequestBody,
        started: std::time::Instant,
    ) -> Response<ResponseBody> {
        let mut resp = self
            .route(req, body, started)
            .await
            .unwrap_or_else(ApiError::into_response);
        let route = metrics::Route::of(req.uri.path());
        if let body::ResponseBody::Poll(wait) = resp.body_mut() {
            // A waiting long-poll is measured when it is answered.
            wait.measure(self.metrics.clone(), route, req.method.clone(), started);
        } else {
            // The response head is ready: a live response's body streams on, unmeasured.
            self.metrics.request(
                route,
                &req.method,
                resp.status(),
                resp.extensions().get::<metrics::Reason>().copied(),
                started.elapsed(),
            );
        }
        let origin = req.headers.get(header::ORIGIN);
        self.common_headers(resp.headers_mut(), origin, req.method == Method::OPTIONS);
        resp
    }

    /// The answer to a request refused before it reached a handler (malformed, too large), in
    /// the form of the face its path belongs to, if it is known.
    pub fn error_response(&self, e: ApiError, path: Option<&str>) -> Response<ResponseBody> {
        let mut resp = match path {
            Some(p) if topics::owns(p) => topics::render_error(e),
            Some(p) if subscriptions::owns(p) => subscriptions::render::error_response(e),
            _ => e.into_response(),
        };
        self.common_headers(resp.headers_mut(), None, false);
        resp
    }

    /// The answer while storage is recovering.
    fn recovering(&self, progress: &AtomicU64, req: &Parts) -> Response<ResponseBody> {
        let started = std::time::Instant::now();
        let replayed = progress.load(Ordering::Relaxed);
        let path = req.uri.path();
        // Metrics answer even before the server is ready: that is when they matter (the
        // registry's `riffle_recovery_wal_records_replayed` shows the progress).
        if req.method == Method::GET && path == "/metrics" {
            return self.metrics_response(req, "");
        }
        if req.method == Method::GET && path == "/v0/metrics" {
            return topics::metrics(self, req);
        }
        if matches!(path, "/healthz" | "/v0/health") {
            return topics::health(self);
        }
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("recovering storage: {replayed} WAL records replayed so far"),
        )
        .code("not_ready")
        .detail(serde_json::json!({ "replay_progress": { "wal_records_replayed": replayed } }))
        .with_header("retry-after", 1);
        if topics::owns(path) {
            // `/readyz` answers as `/v0/ready` does; every `/v0` answer has its `performance`.
            topics::render_timed(e, started)
        } else {
            e.into_response()
        }
    }

    async fn route(
        &self,
        req: &Parts,
        body: RequestBody,
        started: std::time::Instant,
    ) -> Result<Response<ResponseBody>, ApiError> {
        if let Some(progress) = &self.recovering {
            return Ok(self.recovering(progress, req));
        }
        if req.method == Method::OPTIONS {
            return Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
                .body(body::empty())
                .expect("static response"));
        }
        if topics::owns(req.uri.path()) {
            let (cred, _inflight) = match self.admit(req, req.uri.path()) {
                Ok(c) => c,
                Err(e) => return Ok(topics::render_timed(e, started)),
            };
            // Boxed: the topics face's future is large, and inline it would size every
            // connection's task (an idle SSE subscriber's included) to it.
            let face = Box::pin(topics::handle(self, req, body));
            return Ok(access::with(cred, face).await);
        }
        if subscriptions::owns(req.uri.path()) {
            // Routed on the raw path: a stream path inside it is percent-encoded (`%2F`),
            // which the canonical form of stream paths refuses.
            let (cred, _inflight) = match self.admit(req, req.uri.path()) {
                Ok(c) => c,
                Err(e) => return Ok(subscriptions::render::error_response(e)),
            };
            let face = Box::pin(subscriptions::handle(self, req, body));
            return Ok(access::with(cred, face).await);
        }
        if req.uri.path() == STREAM_PREFIX {
            return Err(ApiError::bad_request(
                "missing stream name after /v1/stream/",
            ));
        }
        // Routing and stream names use the canonical path, so that a path a proxy would
        // normalize reaches what it would reach after normalizing (or is refused).
        let path = match path::canonical(req.uri.path()) {
            Ok(p) => p,
            Err(path::PathError::NotAbsolute) => return Err(not_found()),
            Err(e) => return Err(ApiError::bad_request(format!("invalid path: {e}"))),
        };
        let path = &*path;
        let (cred, inflight) = self.admit(req, path)?;
        if subscriptions::owns(path) {
            // A spelling that only canonicalizes into the reserved prefix.
            return Err(not_found());
        }
        if path.starts_with(STREAM_PREFIX) {
            let mut resp = access::with(cred, streams::handle(self, path, req, body)).await;
            if let (Ok(r), Some(slot)) = (&mut resp, inflight)
                && let body::ResponseBody::Poll(wait) = r.body_mut()
            {
                // A long-poll still waiting is still a request in flight.
                wait.hold(slot);
            }
            return resp;
        }
        match path {
            "/metrics" if matches!(req.method, Method::GET | Method::HEAD) => {
                Ok(self.metrics_response(req, ""))
            }
            "/metrics" => Err(ApiError::method_not_allowed("GET, HEAD")),
            _ => Err(not_found()),
        }
    }

    /// Authorize a request for `path` and take its credential's in-flight slot.
    fn admit(
        &self,
        req: &Parts,
        path: &str,
    ) -> Result<(Option<auth::Credential>, Option<slots::Slot>), ApiError> {
        let cred = self.authorize(req, path)?;
        let slot = cred
            .as_ref()
            .map(|c| self.inflight.acquire(Some(c)))
            .transpose()?;
        Ok((cred, slot))
    }

    /// The metrics registry in the text format the request accepts, with `extra` families.
    pub fn metrics_response(&self, req: &Parts, extra: &str) -> Response<ResponseBody> {
        let (content_type, text) = self.metrics.render(req.headers.get(header::ACCEPT), extra);
        let mut resp = Response::new(body::full(text));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    }

    /// Security headers on every response; CORS headers where a browser needs them (a request
    /// with an `Origin`, or a preflight), so plain clients do not pay for them on every append.
    fn common_headers(&self, h: &mut HeaderMap, origin: Option<&HeaderValue>, preflight: bool) {
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            streams::names::CROSS_ORIGIN_RESOURCE_POLICY.clone(),
            HeaderValue::from_static("cross-origin"),
        );
        if origin.is_none() && !preflight {
            return;
        }
        match &self.config.cors {
            Cors::Any => {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            Cors::Origins(list) => {
                h.append(header::VARY, HeaderValue::from_static("Origin"));
                if let Some(o) = origin
                    && list.iter().any(|l| l.as_bytes() == o.as_bytes())
                {
                    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
                    // A listed origin may send its cookie (the token of an EventSource); a
                    // wildcard never may, as browsers require.
                    if self.config.auth.enabled() {
                        h.insert(
                            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                            HeaderValue::from_static("true"),
                        );
                    }
                }
            }
        }
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
        }
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found: streams live under /v1/stream/",
    )
}
