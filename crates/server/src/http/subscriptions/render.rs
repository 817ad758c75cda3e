//! JSON answers of the `__ds` APIs: subscriptions, stream links, wakes, and errors as
//! `{"error": {"code", "message", ...}}`.

use crate::http::ApiError;
use crate::http::body::{self, ResponseBody};
use crate::http::streams::offset::format_offset;
use http::{Response, StatusCode, header};
use riffle_engine::subs::{LinkInfo, SubInfo, SubKind, WakeInfo};
use serde::Serialize;
use serde_json::{Value, json};

pub const JWKS_PATH: &str = "/v1/stream/__ds/jwks.json";

/// What a path segment escapes: everything but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response<ResponseBody> {
    // Plain structs, strings and numbers: serializing cannot fail.
    let mut resp = Response::new(body::full(serde_json::to_vec(v).unwrap_or_default()));
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

/// A link as an answer shows it: with its tail in a wake or a claim. Serialized straight from
/// this struct: a subscription may link a million streams.
#[derive(Serialize)]
pub struct LinkOut<'a> {
    path: &'a str,
    link_type: &'static str,
    acked_offset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tail_offset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_pending: Option<bool>,
}

pub fn link(l: &LinkInfo, with_tail: bool) -> LinkOut<'_> {
    LinkOut {
        path: &l.path,
        link_type: if l.explicit { "explicit" } else { "glob" },
        acked_offset: format_offset(l.acked),
        tail_offset: with_tail.then(|| format_offset(l.tail)),
        has_pending: with_tail.then(|| l.has_pending()),
    }
}

fn links(list: &[LinkInfo], with_tail: bool) -> Vec<LinkOut<'_>> {
    list.iter().map(|l| link(l, with_tail)).collect()
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

/// A subscription as `PUT` and `GET` answer it.
#[derive(Serialize)]
pub struct SubOut<'a> {
    id: &'a str,
    subscription_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    pattern: Option<&'a str>,
    streams: Vec<LinkOut<'a>>,
    webhook: Value,
    wake_stream: Option<&'a str>,
    lease_ttl_ms: u64,
    created_at: String,
    status: &'static str,
    description: Option<&'a str>,
}

/// A subscription: `origin` is the base URL its JWKS URL is built from, `kid` the active
/// signing key.
pub fn subscription<'a>(info: &'a SubInfo, origin: &str, kid: &str) -> SubOut<'a> {
    let (kind, webhook, wake_stream) = match &info.spec.kind {
        SubKind::Webhook { url } => (
            "webhook",
            json!({
                "url": url,
                "signing": {
                    "alg": "ed25519",
                    "kid": kid,
                    "jwks_url": format!("{origin}{JWKS_PATH}"),
                },
            }),
            None,
        ),
        SubKind::PullWake { wake_stream } => ("pull-wake", Value::Null, Some(wake_stream.as_str())),
    };
    SubOut {
        id: &info.name,
        subscription_id: &info.name,
        kind,
        pattern: info.spec.pattern.as_deref(),
        streams: links(&info.links, false),
        webhook,
        wake_stream,
        lease_ttl_ms: info.spec.lease_ttl_ms,
        created_at: timestamp(info.created_ms),
        status: if info.failed { "failed" } else { "active" },
        description: info.spec.description.as_deref(),
    }
}

/// A claim's answer.
pub fn claimed(w: &WakeInfo, token: &str) -> Value {
    json!({
        "wake_id": w.wake_id,
        "generation": w.generation,
        "token": token,
        "streams": links(&w.streams, true),
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
        "streams": links(&w.streams, true),
        "callback_url": action_url(origin, &w.name, "callback"),
        "callback_token": token,
    })
}
