//! The request headers the protocol reads, found in one pass over the request's header map.
//!
//! A `HeaderMap` lookup hashes the name it is given; an append asks for eight names, most of
//! them absent. One pass over the few headers a request carries, comparing short strings, costs
//! a fraction of that, and it is on every request.

use super::super::ApiError;
use http::{HeaderMap, HeaderName, HeaderValue};

/// A request header the protocol reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    ContentType,
    ContentLength,
    Host,
    StreamClosed,
    StreamSeq,
    StreamTtl,
    StreamExpiresAt,
    StreamDurability,
    StreamForkedFrom,
    StreamForkOffset,
    StreamForkSubOffset,
    ProducerId,
    ProducerEpoch,
    ProducerSeq,
}

const FIELDS: usize = 14;

impl Field {
    /// The header's name as the error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            Field::ContentType => "Content-Type",
            Field::ContentLength => "Content-Length",
            Field::Host => "Host",
            Field::StreamClosed => "Stream-Closed",
            Field::StreamSeq => "Stream-Seq",
            Field::StreamTtl => "Stream-TTL",
            Field::StreamExpiresAt => "Stream-Expires-At",
            Field::StreamDurability => "Stream-Durability",
            Field::StreamForkedFrom => "Stream-Forked-From",
            Field::StreamForkOffset => "Stream-Fork-Offset",
            Field::StreamForkSubOffset => "Stream-Fork-Sub-Offset",
            Field::ProducerId => "Producer-Id",
            Field::ProducerEpoch => "Producer-Epoch",
            Field::ProducerSeq => "Producer-Seq",
        }
    }

    /// The field a header name is, if the protocol reads it (names arrive lower-cased).
    fn of(name: &HeaderName) -> Option<Field> {
        Some(match name.as_str() {
            "content-type" => Field::ContentType,
            "content-length" => Field::ContentLength,
            "host" => Field::Host,
            "stream-closed" => Field::StreamClosed,
            "stream-seq" => Field::StreamSeq,
            "stream-ttl" => Field::StreamTtl,
            "stream-expires-at" => Field::StreamExpiresAt,
            "stream-durability" => Field::StreamDurability,
            "stream-forked-from" => Field::StreamForkedFrom,
            "stream-fork-offset" => Field::StreamForkOffset,
            "stream-fork-sub-offset" => Field::StreamForkSubOffset,
            "producer-id" => Field::ProducerId,
            "producer-epoch" => Field::ProducerEpoch,
            "producer-seq" => Field::ProducerSeq,
            _ => return None,
        })
    }
}

/// The protocol's request headers, each the first value the request sent (as
/// [`HeaderMap::get`] would answer).
#[derive(Debug, Default)]
pub struct ReqHeaders<'a>([Option<&'a HeaderValue>; FIELDS]);

impl<'a> ReqHeaders<'a> {
    pub fn scan(map: &'a HeaderMap) -> Self {
        let mut found = Self::default();
        for (name, value) in map {
            if let Some(f) = Field::of(name) {
                found.0[f as usize].get_or_insert(value);
            }
        }
        found
    }

    pub fn get(&self, f: Field) -> Option<&'a HeaderValue> {
        self.0[f as usize]
    }

    /// A header's value as trimmed text; a value that is not visible ASCII is a 400.
    pub fn text(&self, f: Field) -> Result<Option<&'a str>, ApiError> {
        match self.get(f) {
            None => Ok(None),
            Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
                ApiError::bad_request(format!("header {} is not valid text", f.name()))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_field_by_its_lower_case_name_and_keeps_the_first_value() {
        let all = [
            Field::ContentType,
            Field::ContentLength,
            Field::Host,
            Field::StreamClosed,
            Field::StreamSeq,
            Field::StreamTtl,
            Field::StreamExpiresAt,
            Field::StreamDurability,
            Field::StreamForkedFrom,
            Field::StreamForkOffset,
            Field::StreamForkSubOffset,
            Field::ProducerId,
            Field::ProducerEpoch,
            Field::ProducerSeq,
        ];
        assert_eq!(all.len(), FIELDS);
        let mut map = HeaderMap::new();
        for f in all {
            let name = HeaderName::from_bytes(f.name().as_bytes()).unwrap();
            map.append(name.clone(), HeaderValue::from_static("first"));
            map.append(name, HeaderValue::from_static("second"));
        }
        map.insert("x-other", HeaderValue::from_static("ignored"));
        let h = ReqHeaders::scan(&map);
        for f in all {
            assert_eq!(h.text(f).unwrap(), Some("first"), "{}", f.name());
        }
    }

    #[test]
    fn absent_and_invalid_values() {
        let mut map = HeaderMap::new();
        map.insert(
            "stream-seq",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        let h = ReqHeaders::scan(&map);
        assert_eq!(h.text(Field::ProducerId).unwrap(), None);
        let err = h.text(Field::StreamSeq).unwrap_err();
        assert!(err.message.contains("Stream-Seq"), "{}", err.message);
    }
}
