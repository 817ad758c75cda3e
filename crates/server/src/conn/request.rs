//! HTTP/1.x request heads and bodies, parsed out of a connection's read buffer.
//!
//! Heads are parsed by `httparse`; names, values and the target become `http` types that share
//! the buffer's memory (no copies). Framing follows RFC 9112 §6: `Transfer-Encoding: chunked`
//! or one `Content-Length`; anything ambiguous (both, conflicting lengths, an encoding other
//! than chunked) is refused, since a server that guesses invites request smuggling. So is a
//! request without exactly one valid `Host` (RFC 9112 §3.2), and a chunked body's trailer
//! lines must be field lines: a request smuggled in as a "trailer" is refused, not swallowed.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// Most header lines a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 128 * 1024;
/// Longest request target: the most the `http` crate's `Uri` holds. Longer ones are 414.
const MAX_TARGET_BYTES: usize = u16::MAX as usize - 1;
/// Longest request line: the target, and room for the method and version.
const MAX_REQUEST_LINE: usize = MAX_TARGET_BYTES + 1024;
/// Longest chunk-size line of a chunked body.
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

    fn head_too_large() -> Self {
        Self {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!(
                "request head is larger than {MAX_HEAD_BYTES} bytes or has more than \
                 {MAX_HEADERS} headers"
            ),
        }
    }

    fn uri_too_long() -> Self {
        Self {
            status: StatusCode::URI_TOO_LONG,
            message: format!("request target is longer than {MAX_TARGET_BYTES} bytes"),
        }
    }

    /// A head not received whole in time (the connection loop's head deadline).
    pub fn head_timeout(limit: std::time::Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "request head not received within {} ms of its first byte",
                limit.as_millis()
            ),
        }
    }

    fn trailers_too_large() -> Self {
        Self {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!(
                "a chunked body's trailer section is larger than {MAX_HEAD_BYTES} bytes or \
                 has more than {MAX_HEADERS} fields"
            ),
        }
    }
}

/// The refusal of an incomplete head in `buf` that can no longer be served: past the size
/// limit, or with a target already too long.
pub fn refuse_partial(buf: &[u8]) -> Option<Refused> {
    if buf.len() > MAX_HEAD_BYTES {
        Some(oversized(buf))
    } else if buf.len() > MAX_TARGET_BYTES && target_too_long(buf) {
        Some(Refused::uri_too_long())
    } else {
        None
    }
}

/// What to answer a head past the size limit: 414 when its target is what is too long.
fn oversized(buf: &[u8]) -> Refused {
    if target_too_long(buf) {
        Refused::uri_too_long()
    } else {
        Refused::head_too_large()
    }
}

/// Whether the request line at the front of `buf` (after the empty lines a client may send
/// first) has a target longer than we take, or goes on past any such line without ending.
fn target_too_long(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    match line.iter().position(|&b| b == b'\n') {
        Some(end) => line[..end]
            .split(|&b| b == b' ')
            .nth(1)
            .is_some_and(|t| t.len() > MAX_TARGET_BYTES),
        None => line.len() > MAX_REQUEST_LINE,
    }
}

/// What [`fix_version`] made of a version `httparse` refused.
enum VersionFix {
    /// Rewritten to HTTP/1.1: parse again.
    Rewritten,
    /// The request line has not ended yet (`httparse` refuses a version as soon as it sees it).
    Incomplete,
    Malformed,
}

/// A request line whose version `httparse` refused: HTTP/1.x with x > 1 is rewritten in place
/// to HTTP/1.1, the highest minor version we implement, and served as such (RFC 9110 §2.5).
/// HTTP/2 and HTTP/3, real versions this syntax cannot carry, are 505. Majors that name no
/// HTTP version (0: HTTP/0.9 had no version token; 4 to 9) are a malformed request line, 400.
fn fix_version(buf: &mut [u8]) -> Result<VersionFix, Refused> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let Some(len) = buf[start..].iter().position(|&b| b == b'\n') else {
        return Ok(VersionFix::Incomplete);
    };
    let mut end = start + len;
    if end > start && buf[end - 1] == b'\r' {
        end -= 1;
    }
    let Some(space) = buf[start..end].iter().rposition(|&b| b == b' ') else {
        return Ok(VersionFix::Malformed);
    };
    let at = start + space + 1;
    match buf[at..end] {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if major != b'1' && major != b'2' && major != b'3' {
                return Ok(VersionFix::Malformed);
            }
            if major != b'1' {
                return Err(Refused {
                    status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                    message: format!(
                        "HTTP/{}.{} is not supported: this server speaks HTTP/1.1 (and HTTP/2 \
                         with prior knowledge or ALPN)",
                        char::from(major),
                        char::from(minor)
                    ),
                });
            }
            if minor <= b'1' {
                // `httparse` refused something else where it wanted the version (a space in
                // the target, say): rewriting would change nothing.
                return Ok(VersionFix::Malformed);
            }
            buf[at + 7] = b'1';
            Ok(VersionFix::Rewritten)
        }
        _ => Ok(VersionFix::Malformed),
    }
}

/// Whether `v` is a valid `Host` value: `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2).
/// An empty host is refused too: nothing here has a target URI without an authority.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        // A colon past an IP literal's `]` (a reg-name or IPv4 address holds none) starts the port.
        Some(i) if !v[i..].contains(&b']') => (&v[..i], &v[i + 1..]),
        _ => (v, &[][..]),
    };
    let host_ok = match host {
        [] => false,
        [b'[', literal @ .., b']'] => ip_literal(literal),
        name => pct_encoded_ok(name, |b| is_unreserved(b) || is_sub_delim(b)),
    };
    host_ok && port.iter().all(u8::is_ascii_digit)
}

/// An IP-literal's inside: an IPv6 address or an IPvFuture (`v` HEXDIG+ "." ...).
fn ip_literal(lit: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = lit {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':');
    }
    std::str::from_utf8(lit).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

/// All of `s` is `allowed` bytes or `%` HEXDIG HEXDIG.
fn pct_encoded_ok(s: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if !s
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else if allowed(s[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// A `tchar` of a token such as a field name or a media type (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
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
            return Err(oversized(buf));
        }
        // A target too long is refused as soon as it is seen, not once the head is complete.
        Ok(httparse::Status::Partial) => return refuse_partial(buf).map_or(Ok(None), Err),
        // `httparse` knows only 1.0 and 1.1; the (rare) others are looked at only then, so
        // the common path scans nothing twice.
        Err(httparse::Error::Version) => {
            return match fix_version(buf)? {
                VersionFix::Rewritten => parse_head(buf),
                VersionFix::Incomplete => Ok(None),
                VersionFix::Malformed => {
                    Err(Refused::bad("malformed request head: invalid HTTP version"))
                }
            };
        }
        Err(e) => return Err(Refused::bad(format!("malformed request head: {e}"))),
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(Refused::bad("malformed request line"));
    };
    if target.len() > MAX_TARGET_BYTES {
        return Err(Refused::uri_too_long());
    }
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
    let mut hosts = 0;
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
        } else if name == http::header::HOST {
            hosts += 1;
            if hosts > 1 {
                return Err(Refused::bad("more than one Host header"));
            }
            if !valid_host(h.value) {
                return Err(Refused::bad("invalid Host header: not a host[:port]"));
            }
        }
        names.push((name, at..at + h.value.len()));
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(Refused::bad("an HTTP/1.1 request needs a Host header"));
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
    if let Some(authority) = uri.authority() {
        // An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2), and code
        // that reads `Host` (a create's `Location`) must see it, not what `Host` said.
        if !valid_host(authority.as_str().as_bytes()) {
            return Err(Refused::bad(
                "invalid authority in the request target: not a host[:port]",
            ));
        }
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| Refused::bad("invalid authority in the request target"))?;
        headers.insert(http::header::HOST, value);
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

/// Incremental decoder of a chunked body (RFC 9112 §7.1). Trailer fields are checked to be
/// field lines and dropped. Chunk extensions and the trailer section are bounded like a
/// request head (`MAX_HEAD_BYTES` of each, `MAX_HEADERS` trailer fields): the body's size
/// limit counts data only, and endless metadata around a small body must not pass.
#[derive(Debug)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes of chunk extensions still allowed.
    extensions_left: usize,
    /// Bytes of trailer section still allowed, and fields.
    trailers_left: usize,
    fields_left: usize,
    /// Bytes at the front of the buffer known to hold no line end: a line that trickles in
    /// is not searched again from its start for every byte.
    scanned: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
            extensions_left: MAX_HEAD_BYTES,
            trailers_left: MAX_HEAD_BYTES,
            fields_left: MAX_HEADERS,
            scanned: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ChunkState {
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
                    let too_long = || Refused::bad("line too long in a chunked body");
                    let Some(line) = self.take_line(buf, MAX_LINE, too_long)? else {
                        return Ok(false);
                    };
                    // chunk-size [BWS ";" extension]: hex digits first, then only blanks
                    // before an extension (which is ignored, but counted).
                    // At most 15 digits: the size cannot overflow.
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    self.extensions_left = self
                        .extensions_left
                        .checked_sub(line.len() - size.len())
                        .ok_or_else(|| {
                            Refused::bad(format!(
                                "a chunked body's chunk extensions are larger than \
                                 {MAX_HEAD_BYTES} bytes in all"
                            ))
                        })?;
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
                    let max = self.trailers_left.saturating_sub(2);
                    let Some(line) = self.take_line(buf, max, Refused::trailers_too_large)? else {
                        return Ok(false);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                        continue;
                    }
                    self.trailers_left -= line.len() + 2;
                    self.fields_left = self
                        .fields_left
                        .checked_sub(1)
                        .ok_or_else(Refused::trailers_too_large)?;
                    check_field_line(&line)?;
                }
                ChunkState::Done => return Ok(true),
            }
        }
    }

    /// Take one CRLF-terminated line of at most `max` bytes off the front of `buf` (without
    /// the CRLF); `too_long` refuses a longer one. A line holding a control character (a bare
    /// CR or LF included) is refused: an intermediary that reads it differently must not be
    /// able to disagree with us about where the body ends.
    fn take_line(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        too_long: impl FnOnce() -> Refused,
    ) -> Result<Option<Bytes>, Refused> {
        // Back one byte: a CR at the end of what was scanned may begin the CRLF.
        let from = self.scanned.saturating_sub(1).min(buf.len());
        match buf[from..].windows(2).position(|w| w == b"\r\n") {
            Some(i) if from + i <= max => {
                self.scanned = 0;
                let line = buf.split_to(from + i).freeze();
                buf.advance(2);
                if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    return Err(Refused::bad("control character in a chunked body's line"));
                }
                Ok(Some(line))
            }
            Some(_) => Err(too_long()),
            // `max` bytes and the CR of the line end may be here, and still be a line.
            None if buf.len() > max + 1 => Err(too_long()),
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }
}

/// A trailer line must be a field line, `name ":" value` with a token name and no blank
/// before the colon (RFC 9112 §5): anything else, a request line above all, is refused rather
/// than dropped as if it were a field.
fn check_field_line(line: &[u8]) -> Result<(), Refused> {
    let name = line.split(|&b| b == b':').next().unwrap_or_default();
    if name.len() == line.len() || name.is_empty() || !name.iter().copied().all(is_tchar) {
        let shown = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
        return Err(Refused::bad(format!(
            "malformed trailer field in a chunked body: {shown:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
