//! HTTP/1.x request heads and bodies, parsed out of a connection's read buffer.
//!
//! Heads are parsed by `httparse`; names, values and the target become `http` types that share
//! the buffer's memory (no copies). Framing follows RFC 9112 §6: `Transfer-Encoding: chunked`
//! or one `Content-Length`; anything ambiguous (both, conflicting lengths, an encoding other
//! than chunked) is refused, since a server that guesses invites request smuggling.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// Most header lines a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 128 * 1024;
/// Longest chunk-size or trailer line of a chunked body.
const MAX_LINE: usize = 4096;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub parts: http::request::Parts,
    /// `None`: no body.
    pub framing: Option<Framing>,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before sending the body.
    pub expect_continue: bool,
}

/// A request that cannot be served: answered with `status`, then the connection closes.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn head_too_large() -> Self {
        Self {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!(
                "request head is larger than {MAX_HEAD_BYTES} bytes or has more than \
                 {MAX_HEADERS} headers"
            ),
        }
    }
}

/// Offset of `part` (a slice of `buf`) within `buf`.
fn offset_in(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

/// Parse a request head from the front of `buf`, consuming it. `Ok(None)`: incomplete.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Refused> {
    // Uninitialized slots: filling 100 empty headers first would cost more than parsing.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let parse = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    );
    let head_len = match parse {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD_BYTES => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Refused::head_too_large());
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Refused::head_too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Refused::bad(format!("malformed request head: {e}"))),
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(Refused::bad("malformed request line"));
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Refused::bad(format!("invalid method {method:?}")))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target_at = offset_in(buf, target.as_bytes());
    let target_at = target_at..target_at + target.len();

    let mut names = Vec::with_capacity(parsed.headers.len());
    let mut length: Option<u64> = None;
    let mut encodings = false;
    // The only transfer coding accepted is exactly one `chunked`: anything else would be
    // stored still encoded.
    let mut chunked_only = true;
    let mut chunked_seen = false;
    let mut close = version == Version::HTTP_10;
    let mut expect_continue = false;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Refused::bad(format!("invalid header name {:?}", h.name)))?;
        let at = offset_in(buf, h.value);
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Refused::bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refused::bad("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            encodings = true;
            for coding in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if coding.eq_ignore_ascii_case(b"chunked") && !chunked_seen {
                    chunked_seen = true;
                } else if !coding.is_empty() {
                    chunked_only = false;
                }
            }
        } else if name == http::header::CONNECTION {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        } else if name == http::header::EXPECT {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        names.push((name, at..at + h.value.len()));
    }
    let framing = match (encodings, length) {
        (true, Some(_)) => {
            return Err(Refused::bad(
                "both Transfer-Encoding and Content-Length: the body's length is ambiguous",
            ));
        }
        (true, None) if !(chunked_only && chunked_seen) || version == Version::HTTP_10 => {
            return Err(Refused::bad(
                "unsupported Transfer-Encoding: only chunked (HTTP/1.1) is accepted",
            ));
        }
        (true, None) => Some(Framing::Chunked),
        (false, Some(0) | None) => None,
        (false, Some(n)) => Some(Framing::Length(n)),
    };

    // Everything borrowed from the buffer is now known by offset: take the head out of the
    // buffer and share its memory with the request's target and header values.
    let head = buf.split_to(head_len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_at))
        .map_err(|e| Refused::bad(format!("invalid request target: {e}")))?;
    let mut headers = HeaderMap::with_capacity(names.len());
    for (name, at) in names {
        let value = HeaderValue::from_maybe_shared(head.slice(at))
            .map_err(|_| Refused::bad(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(Head {
        parts: req.into_parts().0,
        framing,
        keep_alive: !close,
        expect_continue,
    }))
}

/// Whether a request head may end in `buf` past `scanned` (bytes already known to hold no
/// head end): only then is it worth parsing again, so a head sent a byte at a time is not
/// re-parsed from the start for every byte.
pub fn head_may_end(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(3).min(buf.len());
    let tail = &buf[from..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Incremental decoder of a chunked body (RFC 9112 §7.1); trailers are read and dropped.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// Decode what `buf` holds, moving data into `out`. `Ok(true)` once the body is complete.
    pub fn decode(&mut self, buf: &mut BytesMut, out: &mut BytesMut) -> Result<bool, Refused> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(false);
                    };
                    // chunk-size [BWS ";" extension]: hex digits first, then only blanks
                    // before an extension (which is ignored).
                    // At most 15 digits: the size cannot overflow.
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let digits = size.trim_ascii_end();
                    let size = (!digits.is_empty() && digits.len() <= 15)
                        .then(|| {
                            digits.iter().try_fold(0u64, |n, &b| {
                                Some(n * 16 + u64::from(char::from(b).to_digit(16)?))
                            })
                        })
                        .flatten()
                        .ok_or_else(|| Refused::bad("invalid chunk size in a chunked body"))?;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(false);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    out.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(false);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Refused::bad("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(false);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(true),
            }
        }
    }
}

/// Take one CRLF-terminated line off the front of `buf` (without the CRLF). A line holding
/// a control character (a bare CR or LF included) is refused: an intermediary that reads it
/// differently must not be able to disagree with us about where the body ends.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, Refused> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= MAX_LINE => {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(Refused::bad("control character in a chunked body's line"));
            }
            Ok(Some(line))
        }
        Some(_) => Err(Refused::bad("line too long in a chunked body")),
        None if buf.len() > MAX_LINE => Err(Refused::bad("line too long in a chunked body")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, Refused> {
        parse_head(&mut BytesMut::from(raw))
    }

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            "POST /v1/stream/a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        );
        let h = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.parts.method, Method::POST);
        assert_eq!(h.parts.uri.path(), "/v1/stream/a");
        assert_eq!(h.parts.uri.query(), Some("x=1"));
        assert_eq!(h.parts.headers["host"], "h");
        assert_eq!(h.framing, Some(Framing::Length(3)));
        assert!(h.keep_alive && !h.expect_continue);
        assert_eq!(&buf[..], b"abc");
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert!(head("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
        assert!(head("GE").unwrap().is_none());
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n");
        assert!(h.unwrap().unwrap().expect_continue);
    }

    #[test]
    fn ambiguous_or_unsupported_framing_is_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/9.9\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET http://[::1 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        ] {
            let e = head(raw).expect_err(raw);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{raw}");
        }
        let equal = head("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(equal.unwrap().unwrap().framing, Some(Framing::Length(2)));
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n");
        assert_eq!(chunked.unwrap().unwrap().framing, Some(Framing::Chunked));
    }

    #[test]
    fn a_head_end_is_looked_for_only_in_new_bytes() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!head_may_end(&head[..20], 0));
        assert!(head_may_end(head, 20));
        assert!(head_may_end(head, head.len() - 1));
        assert!(head_may_end(b"GET / HTTP/1.0\n\n", 15));
        assert!(!head_may_end(head, head.len() + 10));
    }

    #[test]
    fn oversized_heads_are_431() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let e = head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let big = "v".repeat(MAX_HEAD_BYTES);
        let e = head(&format!("GET / HTTP/1.1\r\nX: {big}")).unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        // Fed one byte at a time, the decoder gives the same body and stops at its end.
        let mut dec = Chunked::default();
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut done_at = None;
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            if dec.decode(&mut buf, &mut out).unwrap() {
                done_at = Some(i);
                break;
            }
        }
        assert_eq!(&out[..], b"hello world");
        assert_eq!(done_at, Some(wire.len() - 5));
        for bad in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b" 5\r\nhello\r\n",
            b"\n5\r\nhello\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"0\r\nX: y\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                Chunked::default()
                    .decode(&mut buf, &mut BytesMut::new())
                    .is_err()
            );
        }
    }
}
