//! Request bodies and path parts of the `__ds` APIs, validated: a bad one is a `400
//! INVALID_REQUEST` (or `WEBHOOK_URL_REJECTED`) that changes nothing.

use crate::http::ApiError;
use crate::http::path;
use crate::http::streams::offset::parse_offset;
use crate::subscriptions::ssrf;
use http::StatusCode;
use riffle_engine::ReadFrom;
use riffle_engine::subs::{STREAM_ROOT, SubKind, SubSpec, lease_ttl};
use serde_json::{Map, Value};

/// Longest subscription id and stream path or pattern.
const MAX_ID: usize = 256;
const MAX_PATH: usize = 1024;
/// Most explicit streams one request may name.
const MAX_STREAMS: usize = 10_000;
/// Longest `description` and `worker`.
const MAX_TEXT: usize = 4096;

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).code("INVALID_REQUEST")
}

/// The body as a JSON object (an empty body is `{}`, as in the reference server).
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid("the request body must be a JSON object")),
        Err(e) => Err(invalid(format!("the request body is not valid JSON: {e}"))),
    }
}

/// A subscription id from the URL (percent-decoded).
pub fn sub_id(segment: &str) -> Result<String, ApiError> {
    let id = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| invalid("the subscription id is not valid UTF-8"))?;
    if id.is_empty() || id.len() > MAX_ID || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid(format!(
            "the subscription id must be 1 to {MAX_ID} bytes, without / or control characters"
        )));
    }
    Ok(id.into_owned())
}

/// A root-relative stream path (or pattern), in the canonical form stream keys use:
/// surrounding slashes dropped, refused if it has no canonical form or names the reserved
/// `__ds` prefix.
pub fn rel_path(raw: &str, what: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() || trimmed.len() > MAX_PATH {
        return Err(invalid(format!("{what} must be 1 to {MAX_PATH} bytes")));
    }
    let full = format!("{STREAM_ROOT}{trimmed}");
    let canonical = path::canonical(&full).map_err(|e| invalid(format!("{what}: {e}")))?;
    let rel = canonical.strip_prefix(STREAM_ROOT).unwrap_or(trimmed);
    if rel == "__ds" || rel.starts_with("__ds/") {
        return Err(invalid(format!("{what} names the reserved __ds prefix")));
    }
    Ok(rel.to_string())
}

/// `streams`: a list of paths (absent: none).
pub fn streams(v: Option<&Value>, required: bool) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) if !required => return Ok(Vec::new()),
        Some(Value::Array(a)) if !(required && a.is_empty()) => a,
        _ => return Err(invalid("streams must be a non-empty array of stream paths")),
    };
    if list.len() > MAX_STREAMS {
        return Err(invalid(format!(
            "streams may name at most {MAX_STREAMS} paths"
        )));
    }
    list.iter()
        .map(|s| match s {
            Value::String(p) => rel_path(p, "a stream path"),
            _ => Err(invalid("streams must contain only strings")),
        })
        .collect()
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{key} must be a string"))),
    }
}

/// A `PUT` body: the subscription's configuration.
pub fn spec(body: &[u8], allow_localhost: bool) -> Result<SubSpec, ApiError> {
    let m = object(body)?;
    let pattern = opt_str(&m, "pattern")?
        .filter(|p| !p.is_empty())
        .map(|p| rel_path(p, "pattern"))
        .transpose()?;
    let streams = streams(m.get("streams"), false)?;
    if pattern.is_none() && streams.is_empty() {
        return Err(invalid("at least one of pattern or streams is required"));
    }
    let lease = match m.get("lease_ttl_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(lease_error)?),
    };
    let lease_ttl_ms = lease_ttl(lease).ok_or_else(lease_error)?;
    let description = opt_str(&m, "description")?.map(str::to_string);
    if description.as_ref().is_some_and(|d| d.len() > MAX_TEXT) {
        return Err(invalid(format!(
            "description must be at most {MAX_TEXT} bytes"
        )));
    }
    let kind = match opt_str(&m, "type")? {
        Some("webhook") => {
            let url = m
                .get("webhook")
                .and_then(|w| w.get("url"))
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| invalid("webhook subscriptions require webhook.url"))?;
            ssrf::check_url(url, allow_localhost).map_err(|reason| {
                ApiError::bad_request(format!("webhook.url is rejected: {reason}"))
                    .code("WEBHOOK_URL_REJECTED")
            })?;
            SubKind::Webhook {
                url: url.to_string(),
            }
        }
        Some("pull-wake") => {
            let stream = opt_str(&m, "wake_stream")?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid("pull-wake subscriptions require wake_stream"))?;
            SubKind::PullWake {
                wake_stream: rel_path(stream, "wake_stream")?,
            }
        }
        _ => return Err(invalid("type must be \"webhook\" or \"pull-wake\"")),
    };
    Ok(SubSpec {
        kind,
        pattern,
        streams,
        lease_ttl_ms,
        description,
    })
}

fn lease_error() -> ApiError {
    invalid("lease_ttl_ms must be an integer from 1000 to 600000")
}

/// A claim's `worker`.
pub fn worker(body: &[u8]) -> Result<String, ApiError> {
    let m = object(body)?;
    match opt_str(&m, "worker")? {
        Some(w) if !w.is_empty() && w.len() <= MAX_TEXT => Ok(w.to_string()),
        _ => Err(invalid(format!(
            "worker must be a non-empty string of at most {MAX_TEXT} bytes"
        ))),
    }
}

/// A callback, ack or release body.
#[derive(Debug)]
pub struct WakeRequest {
    pub wake_id: String,
    pub generation: u64,
    pub acks: Vec<(String, u64)>,
    pub done: bool,
}

pub fn wake_request(body: &[u8]) -> Result<WakeRequest, ApiError> {
    let m = object(body)?;
    let wake_id = opt_str(&m, "wake_id")?
        .ok_or_else(|| invalid("wake_id is required"))?
        .to_string();
    let generation = m
        .get("generation")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("generation must be a non-negative integer"))?;
    let done = match m.get("done") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("done must be a boolean")),
    };
    let acks = match m.get("acks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_STREAMS => {
            list.iter().map(ack).collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(invalid(format!(
                "acks must be an array of at most {MAX_STREAMS} {{stream, offset}} objects"
            )));
        }
    };
    Ok(WakeRequest {
        wake_id,
        generation,
        acks,
        done,
    })
}

fn ack(v: &Value) -> Result<(String, u64), ApiError> {
    let stream = v
        .get("stream")
        .or_else(|| v.get("path"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("each ack needs a stream path and an offset"))?;
    let offset = v
        .get("offset")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("each ack needs a stream path and an offset"))?;
    let conflict = |m: &str| {
        ApiError::new(StatusCode::CONFLICT, format!("ack of {stream:?}: {m}"))
            .code("INVALID_OFFSET")
    };
    let pos = match parse_offset(offset) {
        Ok(ReadFrom::At(pos)) => pos,
        Ok(_) => return Err(conflict("the offset must be a position (not -1 or now)")),
        Err(_) => {
            return Err(invalid(format!(
                "ack of {stream:?}: malformed offset {offset:?}"
            )));
        }
    };
    Ok((rel_path(stream, "an ack's stream")?, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_validated_and_normalized() {
        let ok = br#"{"type":"pull-wake","pattern":"/events/*/","streams":["b","a","a"],"wake_stream":"wake/pool"}"#;
        let s = spec(ok, false).unwrap();
        assert_eq!(s.pattern.as_deref(), Some("events/*"));
        assert_eq!(s.lease_ttl_ms, 30_000);
        assert_eq!(s.normalized().streams, vec!["a", "b"]);
        for (body, code) in [
            (
                &br#"{"type":"pull-wake","wake_stream":"w"}"#[..],
                "INVALID_REQUEST",
            ),
            (br#"{"type":"x","pattern":"a"}"#, "INVALID_REQUEST"),
            (br#"{"type":"webhook","pattern":"a"}"#, "INVALID_REQUEST"),
            (br#"{"type":"pull-wake","pattern":"a"}"#, "INVALID_REQUEST"),
            (
                br#"{"type":"pull-wake","pattern":"a","wake_stream":"w","lease_ttl_ms":999}"#,
                "INVALID_REQUEST",
            ),
            (
                br#"{"type":"pull-wake","pattern":"a","wake_stream":"w","lease_ttl_ms":1.5}"#,
                "INVALID_REQUEST",
            ),
            (
                br#"{"type":"pull-wake","pattern":"__ds/x","wake_stream":"w"}"#,
                "INVALID_REQUEST",
            ),
            (
                br#"{"type":"pull-wake","streams":[1],"wake_stream":"w"}"#,
                "INVALID_REQUEST",
            ),
            (
                br#"{"type":"webhook","pattern":"a","webhook":{"url":"http://10.0.0.1/h"}}"#,
                "WEBHOOK_URL_REJECTED",
            ),
            (br#"[1]"#, "INVALID_REQUEST"),
            (br#"{"#, "INVALID_REQUEST"),
        ] {
            let e = spec(body, false).unwrap_err();
            assert_eq!(e.code, Some(code), "{}", String::from_utf8_lossy(body));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        let local = br#"{"type":"webhook","pattern":"a","webhook":{"url":"http://127.0.0.1:9/h"}}"#;
        assert!(spec(local, false).is_err());
        assert!(spec(local, true).is_ok());
    }

    #[test]
    fn wake_requests_take_positions() {
        let r = wake_request(
            br#"{"wake_id":"w","generation":3,"acks":[{"stream":"a/b","offset":"0000000000000000_0000000000000042"}],"done":true}"#,
        )
        .unwrap();
        assert_eq!((r.generation, r.done), (3, true));
        assert_eq!(r.acks, vec![("a/b".to_string(), 42)]);
        let minus = wake_request(
            br#"{"wake_id":"w","generation":3,"acks":[{"stream":"a","offset":"-1"}]}"#,
        );
        assert_eq!(minus.unwrap_err().code, Some("INVALID_OFFSET"));
        assert!(wake_request(br#"{"generation":3}"#).is_err());
    }
}
