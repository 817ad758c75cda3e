//! `/v0` errors: the envelope `{"error":{"code","message","detail"}}`, with `Retry-After` on
//! 429 and 503, and the engine's errors in the topics API's codes.

use crate::http::ApiError;
use crate::http::body::{self, ResponseBody};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use riffle_engine::EngineError;

/// 400 `invalid_request`.
pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message).code("invalid_request")
}

pub fn topic_not_found(topic: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("topic {topic:?} not found"))
        .code("topic_not_found")
        .detail(serde_json::json!({ "topic": topic }))
}

/// The code of a status when the error did not set one.
fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "topic_full",
        429 => "throttled",
        503 => "not_ready",
        _ => "internal",
    }
}

/// Render an error as the `/v0` envelope, for a request refused before a handler ran (its
/// `performance` time is the rendering's own).
pub fn render(e: ApiError) -> Response<ResponseBody> {
    render_timed(e, std::time::Instant::now())
}

/// Render an error as the `/v0` envelope, with the `performance` block (every JSON answer
/// carries it) timed from `started`.
pub fn render_timed(e: ApiError, started: std::time::Instant) -> Response<ResponseBody> {
    let code = e.code.unwrap_or_else(|| default_code(e.status));
    let mut err = serde_json::json!({ "code": code, "message": e.message });
    if let Some(d) = e.detail {
        err["detail"] = *d;
    }
    let ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let v = serde_json::json!({ "error": err, "performance": { "server_total_ms": ms } });
    let text = v.to_string();
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = e.status;
    if let Some(r) = e.reason {
        resp.extensions_mut()
            .insert(crate::http::metrics::Reason(r));
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (k, v) in e.headers {
        h.insert(k, v);
    }
    if matches!(e.status.as_u16(), 429 | 503) && !h.contains_key(header::RETRY_AFTER) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// An engine error on topic `topic`, in the topics API's terms.
pub fn engine(topic: &str, e: EngineError) -> ApiError {
    use EngineError as E;
    match e {
        E::NotFound | E::Gone => topic_not_found(topic),
        E::TopicIncompatible(what) => ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "topic {topic:?} exists with an incompatible configuration: {what} cannot change"
            ),
        )
        .code("topic_exists_incompatible")
        .detail(serde_json::json!({ "topic": topic, "reason": format!("{what}_change") })),
        E::NotAQueue => ApiError::new(
            StatusCode::CONFLICT,
            format!("topic {topic:?} is a log, not a queue"),
        )
        .code("not_a_queue")
        .detail(serde_json::json!({ "topic": topic })),
        E::TopicNotEmpty => ApiError::new(
            StatusCode::CONFLICT,
            format!("topic {topic:?} is not empty"),
        )
        .code("topic_not_empty"),
        E::TopicFull => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("topic {topic:?} is at its cap and discards nothing (discard: reject)"),
        )
        .code("topic_full"),
        E::RecordTooLarge => {
            ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).code("record_too_large")
        }
        E::DurabilityUnavailable(_) => invalid(e.to_string()),
        E::LimitReached { limit, max } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
                .code("throttled")
                .reason(limit)
                .detail(serde_json::json!({ "limit": limit, "max": max }))
                .with_header("retry-after", 1)
        }
        E::MemoryFull { limit } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            .code("throttled")
            .reason("max_memory_bytes")
            .detail(serde_json::json!({ "limit": "max_memory_bytes", "max": limit }))
            .with_header("retry-after", 1),
        E::Storage { .. } | E::Damaged(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).code("internal")
        }
        other => invalid(other.to_string()),
    }
}
