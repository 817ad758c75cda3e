//! JSON answers of the `__ds` APIs: subscriptions, stream links, wakes, and errors as
//! `{"error": {"code", "message", ...}}`.

use crate::http::ApiError;
use crate::http::body::{self, ResponseBody};
use crate::http::streams::offset::format_offset;
use http::{Response, StatusCode, header};
use riffle_engine::subs::{LinkInfo, SubInfo, SubKind, WakeInfo};
use serde_json::{Value, json};

pub const JWKS_PATH: &str = "/v1/stream/__ds/jwks.json";

/// What a path segment escapes: everything but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn json_response(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut resp = Response::new(body::full(v.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

pub fn no_content() -> Response<ResponseBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// An error as the `__ds` APIs answer it: the code (derived from the status when unset), the
/// message, and any detail fields beside them.
pub fn error_response(e: ApiError) -> Response<ResponseBody> {
    let code = e.code.unwrap_or(match e.status {
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        s if s.is_server_error() => "STORAGE_ERROR",
        _ => "INVALID_REQUEST",
    });
    let mut err = json!({ "code": code, "message": e.message });
    if let (Some(Value::Object(extra)), Value::Object(obj)) = (e.detail.map(|d| *d), &mut err) {
        obj.extend(extra);
    }
    let mut resp = json_response(e.status, &json!({ "error": err }));
    for (k, v) in e.headers {
        resp.headers_mut().insert(k, v);
    }
    if let Some(r) = e.reason {
        resp.extensions_mut()
            .insert(crate::http::metrics::Reason(r));
    }
    resp
}

fn link_type(l: &LinkInfo) -> &'static str {
    if l.explicit { "explicit" } else { "glob" }
}

/// A link as a subscription shows it.
pub fn link(l: &LinkInfo) -> Value {
    json!({
        "path": l.path,
        "link_type": link_type(l),
        "acked_offset": format_offset(l.acked),
    })
}

/// A link as a wake shows it (with its tail).
pub fn wake_link(l: &LinkInfo) -> Value {
    json!({
        "path": l.path,
        "link_type": link_type(l),
        "acked_offset": format_offset(l.acked),
        "tail_offset": format_offset(l.tail),
        "has_pending": l.has_pending(),
    })
}

/// `created_at`: RFC 3339 in UTC with milliseconds.
fn timestamp(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => String::new(),
    }
}

/// A subscription: `origin` is the base URL its JWKS URL is built from, `kid` the active
/// signing key.
pub fn subscription(info: &SubInfo, origin: &str, kid: &str) -> Value {
    let (webhook, wake_stream) = match &info.spec.kind {
        SubKind::Webhook { url } => (
            json!({
                "url": url,
                "signing": {
                    "alg": "ed25519",
                    "kid": kid,
                    "jwks_url": format!("{origin}{JWKS_PATH}"),
                },
            }),
            Value::Null,
        ),
        SubKind::PullWake { wake_stream } => (Value::Null, json!(wake_stream)),
    };
    json!({
        "id": info.name,
        "subscription_id": info.name,
        "type": match info.spec.kind {
            SubKind::Webhook { .. } => "webhook",
            SubKind::PullWake { .. } => "pull-wake",
        },
        "pattern": info.spec.pattern,
        "streams": info.links.iter().map(link).collect::<Vec<_>>(),
        "webhook": webhook,
        "wake_stream": wake_stream,
        "lease_ttl_ms": info.spec.lease_ttl_ms,
        "created_at": timestamp(info.created_ms),
        "status": if info.failed { "failed" } else { "active" },
        "description": info.spec.description,
    })
}

/// A claim's answer.
pub fn claimed(w: &WakeInfo, token: &str) -> Value {
    json!({
        "wake_id": w.wake_id,
        "generation": w.generation,
        "token": token,
        "streams": w.streams.iter().map(wake_link).collect::<Vec<_>>(),
        "lease_ttl_ms": w.lease_ttl_ms,
    })
}

/// The URL of a subscription's action (`callback`, `ack`, ...).
pub fn action_url(origin: &str, name: &str, action: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(name, SEGMENT);
    format!("{origin}/v1/stream/__ds/subscriptions/{id}/{action}")
}

/// A webhook's body.
pub fn webhook_body(w: &WakeInfo, origin: &str, token: &str) -> Value {
    json!({
        "subscription_id": w.name,
        "wake_id": w.wake_id,
        "generation": w.generation,
        "streams": w.streams.iter().map(wake_link).collect::<Vec<_>>(),
        "callback_url": action_url(origin, &w.name, "callback"),
        "callback_token": token,
    })
}
