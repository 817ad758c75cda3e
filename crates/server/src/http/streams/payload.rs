//! Request bodies: read under the size limit, then turned into the stored form of the
//! stream's framing (JSON validated and flattened one level, without re-encoding).

use super::super::ApiError;
use super::headers::{Field, ReqHeaders};
use crate::http::body::RequestBody;
use bytes::{Bytes, BytesMut};
use riffle_engine::{Framing, Payload};
use serde_json::value::RawValue;

/// Read the whole body under `limit` (413 as soon as it passes, declared or streamed).
pub async fn read_body(
    headers: &ReqHeaders<'_>,
    body: RequestBody,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(Field::ContentLength)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    crate::http::body::read_limited(declared, body, limit).await
}

/// Which framing a content type selects.
pub fn framing_of(content_type: &str) -> Framing {
    if riffle_engine::has_media_key(content_type, "application/json") {
        Framing::JsonMessages
    } else {
        Framing::Bytes
    }
}

/// Whether empty JSON arrays are allowed (a create may start empty; an append may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyArray {
    Allowed,
    Rejected,
}

/// Turn a body into the stored payload of `framing`.
pub fn to_payload(body: Bytes, framing: Framing, empty: EmptyArray) -> Result<Payload, ApiError> {
    match framing {
        // Topics are never reached through stream paths; as bytes they would be opaque.
        Framing::Bytes | Framing::TopicRecords => Ok(Payload {
            messages: u32::from(!body.is_empty()),
            data: body,
        }),
        Framing::JsonMessages if body.is_empty() => Ok(Payload::default()),
        Framing::JsonMessages => json_payload(&body, empty),
    }
}

fn json_payload(body: &[u8], empty: EmptyArray) -> Result<Payload, ApiError> {
    let invalid =
        |e: serde_json::Error| ApiError::bad_request(format!("body is not valid JSON: {e}"));
    let value: &RawValue = serde_json::from_slice(body).map_err(invalid)?;
    let text = value.get();
    let mut out = BytesMut::with_capacity(text.len() + 1);
    let mut messages = 0u32;
    if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(invalid)?;
        if items.is_empty() {
            return match empty {
                EmptyArray::Allowed => Ok(Payload::default()),
                EmptyArray::Rejected => Err(ApiError::bad_request(
                    "an empty JSON array appends nothing; send at least one message",
                )),
            };
        }
        for item in items {
            out.extend_from_slice(item.get().as_bytes());
            out.extend_from_slice(b",");
            messages += 1;
        }
    } else {
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b",");
        messages = 1;
    }
    Ok(Payload {
        data: out.freeze(),
        messages,
    })
}

/// Render stored JSON chunks (messages each followed by `,`) as one JSON array.
pub fn json_array(chunks: Vec<Bytes>) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(chunks.len() + 2);
    out.push(Bytes::from_static(b"["));
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        if i + 1 == n {
            out.push(c.slice(..c.len().saturating_sub(1)));
        } else {
            out.push(c);
        }
    }
    out.push(Bytes::from_static(b"]"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str, empty: EmptyArray) -> Result<(String, u32), ApiError> {
        let p = to_payload(Bytes::from(body.to_string()), Framing::JsonMessages, empty)?;
        Ok((String::from_utf8(p.data.to_vec()).unwrap(), p.messages))
    }

    #[test]
    fn flattens_one_level() {
        assert_eq!(
            json(r#"{"a": 1}"#, EmptyArray::Rejected).unwrap(),
            (r#"{"a": 1},"#.into(), 1)
        );
        assert_eq!(
            json(" [1, {\"b\":2}] ", EmptyArray::Rejected).unwrap(),
            (r#"1,{"b":2},"#.into(), 2)
        );
        assert_eq!(
            json("[[1,2],[3,4]]", EmptyArray::Rejected).unwrap(),
            ("[1,2],[3,4],".into(), 2)
        );
        assert_eq!(
            json("[[[1,2,3]]]", EmptyArray::Rejected).unwrap(),
            ("[[1,2,3]],".into(), 1)
        );
    }

    #[test]
    fn empty_arrays_and_garbage() {
        assert!(json("[]", EmptyArray::Rejected).is_err());
        assert_eq!(json("[]", EmptyArray::Allowed).unwrap(), (String::new(), 0));
        assert!(json("{nope", EmptyArray::Allowed).is_err());
        assert!(json("[1,]", EmptyArray::Allowed).is_err());
        assert!(json("1 2", EmptyArray::Allowed).is_err());
    }

    #[test]
    fn renders_arrays() {
        let chunks = vec![
            Bytes::from_static(b"1,{\"a\":2},"),
            Bytes::from_static(b"3,"),
        ];
        assert_eq!(json_array(chunks).concat(), b"[1,{\"a\":2},3]");
        assert_eq!(json_array(vec![]).concat(), b"[]");
    }
}
