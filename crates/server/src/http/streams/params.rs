//! Parsing and validation of the protocol's request headers and query parameters. Every
//! malformed value is a 400 with a message that names it.

use super::super::ApiError;
use super::headers::{Field, ReqHeaders};
use super::offset::parse_offset;
use riffle_engine::{Expiry, ProducerClaim, ReadFrom};

/// JavaScript's largest exact integer: producer numbers must survive a JSON round trip.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// `Stream-Closed` counts only when it is `true`, in any case; other values are ignored.
pub fn closed_flag(h: &ReqHeaders) -> bool {
    h.get(Field::StreamClosed)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A 400 unless `ct` is a media type: `type/subtype` of tokens, then `; name=value`
/// parameters (RFC 9110 §8.3.1). A malformed one would be stored and echoed as the stream's.
pub fn check_media_type(ct: &str) -> Result<(), ApiError> {
    fn token(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(crate::conn::request::is_tchar)
    }
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let media = essence
        .split_once('/')
        .is_some_and(|(t, sub)| token(t) && token(sub));
    let params = parts.all(|p| {
        let p = p.trim();
        p.is_empty()
            || p.split_once('=')
                .is_some_and(|(k, v)| token(k.trim()) && !v.trim().is_empty())
    });
    if media && params {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Content-Type {ct:?} is not a media type (type/subtype, then ; name=value parameters)"
        )))
    }
}

/// A non-negative decimal integer without sign, leading zeros, point or exponent.
fn canonical_uint(s: &str) -> Option<u64> {
    let ok =
        s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()));
    if ok { s.parse().ok() } else { None }
}

/// `Stream-TTL` / `Stream-Expires-At` (at most one of them).
pub fn expiry(h: &ReqHeaders) -> Result<Option<Expiry>, ApiError> {
    let ttl = h.text(Field::StreamTtl)?;
    let at = h.text(Field::StreamExpiresAt)?;
    match (ttl, at) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "Stream-TTL and Stream-Expires-At cannot both be set",
        )),
        (Some(t), None) => canonical_uint(t)
            .map(|secs| Some(Expiry::Ttl { secs }))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Stream-TTL {t:?} is not a whole number of seconds (no sign, leading zeros or decimals)"
                ))
            }),
        (None, Some(a)) => {
            let t = time::OffsetDateTime::parse(a, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::bad_request(format!("Stream-Expires-At {a:?} is not an RFC 3339 timestamp"))
                })?;
            let unix_ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| {
                ApiError::bad_request("Stream-Expires-At is out of range")
            })?;
            Ok(Some(Expiry::At {
                unix_ms,
                text: a.to_string(),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// `Producer-Id`, `Producer-Epoch`, `Producer-Seq`: all three or none.
pub fn producer(h: &ReqHeaders) -> Result<Option<ProducerClaim>, ApiError> {
    let id = h.text(Field::ProducerId)?;
    let epoch = h.text(Field::ProducerEpoch)?;
    let seq = h.text(Field::ProducerSeq)?;
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(i), Some(e), Some(s)) => (i, e, s),
        _ => {
            return Err(ApiError::bad_request(
                "Producer-Id, Producer-Epoch and Producer-Seq must be sent together",
            ));
        }
    };
    if id.is_empty() {
        return Err(ApiError::bad_request("Producer-Id must not be empty"));
    }
    let number = |name: &str, v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|n| v.bytes().all(|b| b.is_ascii_digit()) && *n <= MAX_SAFE_INTEGER)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} {v:?} must be a non-negative integer no greater than 2^53-1"
                ))
            })
    };
    Ok(Some(ProducerClaim {
        id: id.to_string(),
        epoch: number("Producer-Epoch", epoch)?,
        seq: number("Producer-Seq", seq)?,
    }))
}

/// `Stream-Fork-Sub-Offset`.
pub fn sub_offset(v: &str) -> Result<u64, ApiError> {
    canonical_uint(v).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Stream-Fork-Sub-Offset {v:?} must be a non-negative integer without sign or leading zeros"
        ))
    })
}

/// How a GET reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    No,
    LongPoll,
    Sse,
}

/// The query of a GET.
#[derive(Debug)]
pub struct ReadQuery {
    /// `None` when the client sent no offset.
    pub offset: Option<ReadFrom>,
    pub live: Live,
    pub cursor: Option<String>,
}

pub fn read_query(query: Option<&str>) -> Result<ReadQuery, ApiError> {
    let mut offset = None;
    let mut live = None;
    let mut cursor = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "offset" => {
                if offset.is_some() {
                    return Err(ApiError::bad_request("offset given more than once"));
                }
                if v.is_empty() {
                    return Err(ApiError::bad_request("offset is empty"));
                }
                offset = Some(parse_offset(&v)?);
            }
            "live" => {
                if live.is_some() {
                    return Err(ApiError::bad_request("live given more than once"));
                }
                live = Some(match v.as_ref() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "live={other:?} is not a read mode: use long-poll or sse"
                        )));
                    }
                });
            }
            "cursor" => cursor = Some(v.into_owned()),
            _ => {}
        }
    }
    let live = live.unwrap_or(Live::No);
    if live != Live::No && offset.is_none() {
        return Err(ApiError::bad_request("live reads need an offset"));
    }
    Ok(ReadQuery {
        offset,
        live,
        cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_type_slash_subtype_with_parameters() {
        for ok in [
            "text/plain",
            "application/json; charset=utf-8",
            "a/b;x=1;y=\"2\"",
            "Text/Plain ;",
        ] {
            assert!(check_media_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "garbage",
            "text/pla in",
            "a/b/c",
            "text/",
            "/plain",
            "text/plain; x",
            "t(x)/y",
        ] {
            assert!(check_media_type(bad).is_err(), "{bad}");
        }
    }
    use http::{HeaderMap, HeaderValue};

    /// `f` applied to a request that sent `pairs`.
    fn with<T>(f: fn(&ReqHeaders) -> T, pairs: &[(&'static str, &str)]) -> T {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        f(&ReqHeaders::scan(&h))
    }

    #[test]
    fn ttl_must_be_canonical() {
        assert!(matches!(
            with(expiry, &[("stream-ttl", "60")]).unwrap(),
            Some(Expiry::Ttl { secs: 60 })
        ));
        assert!(with(expiry, &[("stream-ttl", "0")]).is_ok());
        for bad in ["00060", "+60", "60.5", "1e3", "-1", "", "abc"] {
            assert!(with(expiry, &[("stream-ttl", bad)]).is_err(), "{bad}");
        }
        assert!(
            with(
                expiry,
                &[
                    ("stream-ttl", "5"),
                    ("stream-expires-at", "2030-01-01T00:00:00Z")
                ]
            )
            .is_err()
        );
    }

    #[test]
    fn expires_at_is_rfc3339() {
        assert!(with(expiry, &[("stream-expires-at", "2030-01-01T00:00:00Z")]).is_ok());
        assert!(
            with(
                expiry,
                &[("stream-expires-at", "2030-01-01T00:00:00+02:00")]
            )
            .is_ok()
        );
        assert!(with(expiry, &[("stream-expires-at", "tomorrow")]).is_err());
    }

    #[test]
    fn producer_headers() {
        let p = with(
            producer,
            &[
                ("producer-id", "p"),
                ("producer-epoch", "1"),
                ("producer-seq", "2"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!((p.epoch, p.seq), (1, 2));
        assert!(with(producer, &[("producer-id", "p")]).is_err());
        for bad in ["1abc", "1e3", "-1", "9007199254740992", ""] {
            let h = [
                ("producer-id", "p"),
                ("producer-epoch", bad),
                ("producer-seq", "0"),
            ];
            assert!(with(producer, &h).is_err(), "{bad}");
        }
        let h = [
            ("producer-id", ""),
            ("producer-epoch", "0"),
            ("producer-seq", "0"),
        ];
        assert!(with(producer, &h).is_err());
    }

    #[test]
    fn query() {
        let q = read_query(Some("offset=-1&live=sse&cursor=5&x=y")).unwrap();
        assert_eq!(q.offset, Some(ReadFrom::Start));
        assert_eq!(q.live, Live::Sse);
        assert_eq!(q.cursor.as_deref(), Some("5"));
        assert!(read_query(Some("offset=")).is_err());
        assert!(read_query(Some("offset=-1&offset=-1")).is_err());
        assert!(read_query(Some("live=long-poll")).is_err());
        assert!(read_query(Some("offset=-1&live=forever")).is_err());
        assert_eq!(read_query(None).unwrap().offset, None);
    }
}
