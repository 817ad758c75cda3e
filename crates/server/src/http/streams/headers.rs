//! The request headers the protocol reads, found in one pass over the request's header map.
//!
//! A `HeaderMap` lookup hashes the name it is given; an append asks for eight names, most of
//! them absent. One pass over the few headers a request carries, comparing short strings, costs
//! a fraction of that, and it is on every request.

use super::super::ApiError;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Declares [`Field`] from one list: variant, the name as it arrives (lower case), the name as
/// error messages spell it.
macro_rules! fields {
    ($($variant:ident = $wire:literal, $shown:literal;)*) => {
        /// A request header the protocol reads.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Field {
            $($variant,)*
        }

        impl Field {
            /// Every field, in declaration order.
            pub const ALL: &[Field] = &[$(Field::$variant,)*];

            /// The header's name as the error messages spell it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $shown,)*
                }
            }

            /// The field a header name is, if the protocol reads it (names arrive lower-cased).
            fn of(name: &HeaderName) -> Option<Field> {
                match name.as_str() {
                    $($wire => Some(Field::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

fields! {
    ContentType = "content-type", "Content-Type";
    ContentLength = "content-length", "Content-Length";
    Host = "host", "Host";
    StreamClosed = "stream-closed", "Stream-Closed";
    StreamSeq = "stream-seq", "Stream-Seq";
    StreamTtl = "stream-ttl", "Stream-TTL";
    StreamExpiresAt = "stream-expires-at", "Stream-Expires-At";
    StreamDurability = "stream-durability", "Stream-Durability";
    StreamForkedFrom = "stream-forked-from", "Stream-Forked-From";
    StreamForkOffset = "stream-fork-offset", "Stream-Fork-Offset";
    StreamForkSubOffset = "stream-fork-sub-offset", "Stream-Fork-Sub-Offset";
    ProducerId = "producer-id", "Producer-Id";
    ProducerEpoch = "producer-epoch", "Producer-Epoch";
    ProducerSeq = "producer-seq", "Producer-Seq";
}

const FIELDS: usize = Field::ALL.len();

/// The protocol's request headers, each the first value the request sent (as
/// [`HeaderMap::get`] would answer), and the first that was sent again with another value.
#[derive(Debug, Default)]
pub struct ReqHeaders<'a>([Option<&'a HeaderValue>; FIELDS], Option<Field>);

impl<'a> ReqHeaders<'a> {
    pub fn scan(map: &'a HeaderMap) -> Self {
        let mut found = Self::default();
        for (name, value) in map {
            if let Some(f) = Field::of(name) {
                match found.0[f as usize] {
                    None => found.0[f as usize] = Some(value),
                    // Only a repeat is compared: the common request pays nothing for it.
                    Some(first) if first != value && found.1.is_none() => found.1 = Some(f),
                    Some(_) => {}
                }
            }
        }
        found
    }

    /// A 400 if a protocol header came twice with different values (which to obey would be
    /// a guess; Host and Content-Length are the connection layer's to judge).
    pub fn no_conflicts(&self) -> Result<(), ApiError> {
        match self.1 {
            Some(f) if !matches!(f, Field::Host | Field::ContentLength) => {
                Err(ApiError::bad_request(format!(
                    "header {} is sent twice with different values",
                    f.name()
                )))
            }
            _ => Ok(()),
        }
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
        let all = Field::ALL;
        // The fourteen request headers of the protocol that the server reads.
        assert_eq!(all.len(), 14);
        let mut map = HeaderMap::new();
        for &f in all {
            let name = HeaderName::from_bytes(f.name().as_bytes()).unwrap();
            map.append(name.clone(), HeaderValue::from_static("first"));
            map.append(name, HeaderValue::from_static("second"));
        }
        map.insert("x-other", HeaderValue::from_static("ignored"));
        let h = ReqHeaders::scan(&map);
        for &f in all {
            assert_eq!(h.text(f).unwrap(), Some("first"), "{}", f.name());
        }
        let err = h.no_conflicts().unwrap_err();
        assert!(err.message.contains("Content-Type"), "{}", err.message);
    }

    #[test]
    fn the_same_value_twice_is_no_conflict() {
        let mut map = HeaderMap::new();
        map.append("stream-ttl", HeaderValue::from_static("60"));
        map.append("stream-ttl", HeaderValue::from_static("60"));
        map.append("host", HeaderValue::from_static("a"));
        map.append("host", HeaderValue::from_static("b"));
        assert!(ReqHeaders::scan(&map).no_conflicts().is_ok());
        map.append("stream-ttl", HeaderValue::from_static("70"));
        assert!(ReqHeaders::scan(&map).no_conflicts().is_err());
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
