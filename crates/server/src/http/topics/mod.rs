//! The topics `/v0` JSON API face (reference: topics-v0-api.md). Each endpoint parses and
//! validates its request, makes one engine call, and renders; every error is the JSON
//! envelope. WebSocket is not served yet.

mod error;
mod handlers;
mod probes;
mod queues;
mod render;
mod request;
mod routers;
mod watch;
pub mod ws;

use super::body::{RequestBody, ResponseBody};
use super::{ApiError, App};
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode, header};
use std::time::Instant;
pub use watch::Watches;

/// State of the `/v0` face beyond the engine.
pub struct TopicsState {
    pub watches: Watches,
    /// When the server started: `uptime_ms` counts from it.
    pub started: Instant,
}

impl TopicsState {
    /// `started` is the server's start, not this state's: the state answering during
    /// recovery and the one after it share it, so uptime does not restart at readiness.
    pub fn new(started: Instant) -> Self {
        Self {
            watches: Watches::default(),
            started,
        }
    }
}

pub use error::{render as render_error, render_timed};
pub use probes::{health, metrics};

/// Whether a request path belongs to this face: `/v0/...`, and `/healthz` and `/readyz`, the
/// aliases of `/v0/health` and `/v0/ready` (reference §1.3), which answer the same (JSON,
/// statuses, errors).
pub fn owns(path: &str) -> bool {
    path == "/v0" || path.starts_with("/v0/") || matches!(path, "/healthz" | "/readyz")
}

/// Serve a `/v0` request; errors become the JSON envelope.
pub async fn handle(app: &App, req: &Parts, body: RequestBody) -> Response<ResponseBody> {
    let started = Instant::now();
    route(app, req, body)
        .await
        .unwrap_or_else(|e| error::render_timed(e, started))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such /v0 endpoint").code("not_found")
}

/// Percent-decode one path segment (topic names never need it, but clients may escape `:`).
fn decode(segment: &str) -> Result<String, ApiError> {
    let bytes: Vec<u8> = percent_decode(segment.as_bytes())
        .ok_or_else(|| error::invalid("invalid percent-escape in the path"))?;
    String::from_utf8(bytes).map_err(|_| error::invalid("the path is not UTF-8"))
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The body of a POST or PUT: JSON content type (415 otherwise), under the size limit (413
/// before parsing).
async fn json_body(app: &App, req: &Parts, body: RequestBody) -> Result<Bytes, ApiError> {
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    // A missing type, and curl's `-d` default, are taken as JSON when the body parses as
    // JSON: the topics README's own recipes send bodies that way.
    let lenient = matches!(
        ct.as_deref(),
        None | Some("application/x-www-form-urlencoded")
    );
    let json = ct
        .as_deref()
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
    if !json && !lenient {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request bodies must be Content-Type: application/json",
        )
        .code("unsupported_media_type"));
    }
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = super::body::read_limited(declared, body, app.config.limits.max_request_body_bytes)
        .await
        .map_err(|e| e.code("payload_too_large"))?;
    if lenient
        && !bytes.is_empty()
        && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err()
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request bodies must be Content-Type: application/json",
        )
        .code("unsupported_media_type"));
    }
    Ok(bytes)
}

async fn route(
    app: &App,
    req: &Parts,
    body: RequestBody,
) -> Result<Response<ResponseBody>, ApiError> {
    let path = req.uri.path();
    let query = req.uri.query();
    let rest = match path {
        "/healthz" => "/health",
        "/readyz" => "/ready",
        p => p.strip_prefix("/v0").unwrap_or(""),
    };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let m = &req.method;
    match segs.as_slice() {
        ["health"] => match *m {
            Method::GET | Method::HEAD => Ok(probes::health(app)),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        ["ready"] => match *m {
            Method::GET | Method::HEAD => probes::ready(app),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        ["metrics"] => match *m {
            Method::GET => Ok(probes::metrics(app, req)),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        ["topics"] => match *m {
            Method::GET => handlers::list(app, query),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        ["topics", t] => {
            let t = decode(t)?;
            request::check_name(&t)?;
            match *m {
                Method::GET => handlers::get(app, &t, query),
                Method::PUT => {
                    let b = json_body(app, req, body).await?;
                    handlers::put(app, &t, b).await
                }
                Method::POST => {
                    let b = json_body(app, req, body).await?;
                    let key = req
                        .headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    handlers::write(app, &t, query, key, b).await
                }
                Method::DELETE => handlers::delete_topic(app, &t, query).await,
                _ => Err(ApiError::method_not_allowed("GET, PUT, POST, DELETE")),
            }
        }
        ["topics", t, op] => {
            let t = decode(t)?;
            request::check_name(&t)?;
            match (*op, m) {
                ("diff", &Method::POST) => {
                    let b = json_body(app, req, body).await?;
                    handlers::diff(app, &t, b).await
                }
                ("delete", &Method::POST) => {
                    let b = json_body(app, req, body).await?;
                    handlers::delete_records(app, &t, b).await
                }
                ("claim", &Method::POST) => {
                    let b = json_body(app, req, body).await?;
                    queues::claim(app, &t, b).await
                }
                ("ack" | "nack" | "extend", &Method::POST) => {
                    let b = json_body(app, req, body).await?;
                    queues::lease_op(app, &t, op, b).await
                }
                ("work", &Method::GET) => queues::work(app, &t, query, req),
                ("diff" | "delete" | "claim" | "ack" | "nack" | "extend", _) => {
                    Err(ApiError::method_not_allowed("POST"))
                }
                ("work", _) => Err(ApiError::method_not_allowed("GET")),
                _ => Err(not_found()),
            }
        }
        ["routers"] => match *m {
            Method::GET => routers::list(app, query),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        ["routers", r] => {
            let r = decode(r)?;
            routers::check_router_name(&r)?;
            match *m {
                Method::GET => routers::get(app, &r),
                Method::PUT => {
                    let b = json_body(app, req, body).await?;
                    routers::put(app, &r, b).await
                }
                Method::DELETE => routers::delete(app, &r).await,
                _ => Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
            }
        }
        ["ws"] => Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "/v0/ws is a WebSocket endpoint: send GET with Upgrade: websocket",
        )
        .code("upgrade_required")
        .with_header("upgrade", "websocket")),
        ["watch"] => match *m {
            Method::POST => {
                let b = json_body(app, req, body).await?;
                watch::create(app, query, &b)
            }
            _ => Err(ApiError::method_not_allowed("POST")),
        },
        ["watch", wid] => match *m {
            Method::GET => watch::stream(app, wid, req),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        _ => Err(not_found()),
    }
}
