//! Server-sent events, for both faces: the response head, and events whose data is split into
//! `data:` lines on CR, LF or CRLF, so no payload can inject an event or field of its own.

use bytes::{BufMut, BytesMut};
use http::{StatusCode, header};

/// The head of an SSE response.
pub fn response() -> http::response::Builder {
    http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
}

/// Append an event: `event:` (if named), `id:` (if any), the data lines, and the blank line.
pub fn event(out: &mut BytesMut, name: Option<&str>, id: Option<&str>, data: &[u8]) {
    out.reserve(data.len() + 32);
    if let Some(n) = name {
        out.put_slice(b"event: ");
        out.put_slice(n.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let cut = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        let (line, next) = match cut {
            None => (rest, None),
            Some(i) => {
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                (&rest[..i], Some(&rest[i + skip..]))
            }
        };
        // `data:<line>`, but a line that starts with a space gets one more: every SSE parser
        // (WHATWG's, the official clients') drops one space after the colon.
        if line.first() == Some(&b' ') {
            out.put_slice(b"data: ");
        } else {
            out.put_slice(b"data:");
        }
        out.put_slice(line);
        out.put_u8(b'\n');
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    out.put_u8(b'\n');
}

/// Append the `error` event a live response ends with: `{"code", "message"}`.
pub fn error_event(out: &mut BytesMut, code: &str, message: &str) {
    let data = serde_json::json!({ "code": code, "message": message }).to_string();
    event(out, Some("error"), None, data.as_bytes());
}

/// The last event of a live response whose credential expired.
pub fn credential_expired(out: &mut BytesMut) {
    error_event(out, "credential_expired", super::access::EXPIRED_MESSAGE);
}

/// The last event of a live response ended by the server's shutdown.
pub fn shutting_down(out: &mut BytesMut) {
    error_event(out, "server_shutting_down", "the server is shutting down");
}

/// Append a comment line (a heartbeat), which clients ignore.
pub fn comment(out: &mut BytesMut, text: &str) {
    out.put_slice(b": ");
    out.put_slice(text.as_bytes());
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_lines_cannot_inject_fields() {
        let mut out = BytesMut::new();
        event(&mut out, Some("data"), Some("7"), b"a\r\nevent: x\rb\nc");
        assert_eq!(
            &out[..],
            b"event: data\nid: 7\ndata:a\ndata:event: x\ndata:b\ndata:c\n\n"
        );
    }

    #[test]
    fn a_leading_space_survives_the_parsers_strip() {
        let mut out = BytesMut::new();
        event(&mut out, None, None, b" one\n  two\nthree ");
        assert_eq!(&out[..], b"data:  one\ndata:   two\ndata:three \n\n");
    }
}
