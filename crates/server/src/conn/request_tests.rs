//! Unit tests of request heads and chunked bodies.

use super::*;

fn head(raw: &str) -> Result<Option<Head>, Refused> {
    parse_head(&mut BytesMut::from(raw))
}

/// `raw` with a `Host` header after its request line.
fn with_host(raw: &str) -> String {
    let (line, rest) = raw.split_once("\r\n").expect("a request line");
    format!("{line}\r\nHost: h\r\n{rest}")
}

#[track_caller]
fn refused(raw: &str, status: StatusCode) -> String {
    let e = head(raw).expect_err(raw);
    assert_eq!(e.status, status, "{raw:?}: {}", e.message);
    e.message
}

#[test]
fn parses_a_head_and_leaves_the_body() {
    let mut buf =
        BytesMut::from("POST /v1/stream/a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
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
    let h = head("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!h.keep_alive);
    let h = head("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n");
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
        "GET /a b HTTP/1.1\r\n\r\n",
        "GET http://[::1 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    ] {
        // With a Host: refused for what the test is about, not for a missing Host.
        let message = refused(&with_host(raw), StatusCode::BAD_REQUEST);
        assert!(!message.contains("Host"), "{raw:?}: {message}");
    }
    let equal =
        head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(equal.unwrap().unwrap().framing, Some(Framing::Length(2)));
    let chunked = head("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  Chunked \r\n\r\n");
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

#[test]
fn later_minor_versions_are_http11_and_other_majors_505() {
    for v in ["1.2", "1.9"] {
        let h = head(&format!("GET / HTTP/{v}\r\nHost: h\r\n\r\n"));
        let h = h.unwrap().unwrap();
        assert_eq!(h.parts.version, Version::HTTP_11, "{v}");
        assert!(h.keep_alive, "{v}");
    }
    // Leading empty lines are skipped, as `httparse` does.
    let h = head("\r\nGET / HTTP/1.3\r\nHost: h\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.parts.version, Version::HTTP_11);
    for v in ["2.0", "2.2", "3.0"] {
        refused(
            &format!("GET / HTTP/{v}\r\nHost: h\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        );
    }
    // Not yet a whole request line: wait for it.
    assert!(head("GET / HTTP/1.2").unwrap().is_none());
    assert!(head("GET / HTTP/2.0\r").unwrap().is_none());
    // No such HTTP version: a malformed request line.
    for raw in [
        "GET / HTTP/0.9\r\nHost: h\r\n\r\n",
        "GET / HTTP/9.9\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.10\r\nHost: h\r\n\r\n",
        "GET / HTTP/x.1\r\nHost: h\r\n\r\n",
        "GET / FTP/1.1\r\nHost: h\r\n\r\n",
        "GET / http/1.1\r\nHost: h\r\n\r\n",
    ] {
        refused(raw, StatusCode::BAD_REQUEST);
    }
}

#[test]
fn a_target_too_long_is_414() {
    let at_limit = format!("/{}", "a".repeat(MAX_TARGET_BYTES - 1));
    let h = head(&format!("GET {at_limit} HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert_eq!(h.unwrap().unwrap().parts.uri.path(), at_limit);
    let over = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
    refused(
        &format!("GET {over} HTTP/1.1\r\nHost: h\r\n\r\n"),
        StatusCode::URI_TOO_LONG,
    );
    // Seen before the head ends, and before the line does.
    refused(
        &format!("GET {over} HTTP/1.1\r\n"),
        StatusCode::URI_TOO_LONG,
    );
    assert_eq!(
        refuse_partial(format!("GET {over}{over}").as_bytes()).map(|r| r.status),
        Some(StatusCode::URI_TOO_LONG)
    );
    assert!(refuse_partial(format!("GET {at_limit}").as_bytes()).is_none());
    // Past the head's size limit, a long target is still what is answered.
    let huge = format!("/{}", "a".repeat(MAX_HEAD_BYTES));
    refused(
        &format!("GET {huge} HTTP/1.1\r\nHost: h\r\n\r\n"),
        StatusCode::URI_TOO_LONG,
    );
    // Long headers behind a short target stay 431.
    let big = "v".repeat(MAX_HEAD_BYTES);
    let partial = format!("GET / HTTP/1.1\r\nX: {big}");
    assert_eq!(
        refuse_partial(partial.as_bytes()).map(|r| r.status),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
}

#[test]
fn host_is_required_once_and_valid() {
    refused("GET / HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST);
    refused(
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        StatusCode::BAD_REQUEST,
    );
    refused(
        "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
        StatusCode::BAD_REQUEST,
    );
    // HTTP/1.0 may leave it out.
    assert!(head("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    for bad in [
        "",
        " ",
        "a b",
        "evil.example/x?",
        "a@b",
        "a:b:c",
        "a:8o",
        "[::1",
        "[::g]",
        "[]",
        ":80",
        "\u{e9}",
        "a%2",
        "a%zz",
        "[v1]",
        "a\"b",
        "[::1]x",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        let message = refused(&raw, StatusCode::BAD_REQUEST);
        assert!(message.contains("Host"), "{bad:?}: {message}");
    }
    for good in [
        "example.com",
        "example.com:8080",
        "a:",
        "127.0.0.1:1",
        "[::1]",
        "[::1]:80",
        "[v7.fe:x]",
        "xn--bcher-kva.example",
        "a%20b",
        "under_score.example",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        let h = head(&raw).unwrap_or_else(|e| panic!("{good:?}: {}", e.message));
        assert_eq!(h.unwrap().parts.headers["host"], good);
    }
}

#[test]
fn an_absolute_target_s_authority_becomes_the_host() {
    let raw = "PUT http://right.example:8080/v1/stream/a1 HTTP/1.1\r\nHost: wrong.example\r\n\r\n";
    let h = head(raw).unwrap().unwrap();
    assert_eq!(h.parts.headers["host"], "right.example:8080");
    assert_eq!(h.parts.headers.get_all("host").iter().count(), 1);
    assert_eq!(h.parts.uri.path(), "/v1/stream/a1");
    // HTTP/1.0 without a Host gets one from the target.
    let h = head("GET http://h.example/x HTTP/1.0\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.parts.headers["host"], "h.example");
    // Still one valid Host required in HTTP/1.1; userinfo is refused.
    refused(
        "GET http://h.example/x HTTP/1.1\r\n\r\n",
        StatusCode::BAD_REQUEST,
    );
    refused(
        "GET http://u@h.example/x HTTP/1.1\r\nHost: h.example\r\n\r\n",
        StatusCode::BAD_REQUEST,
    );
}

fn decode_all(wire: &[u8]) -> Result<bool, Refused> {
    Chunked::default().decode(&mut BytesMut::from(wire), &mut BytesMut::new())
}

#[test]
fn trailer_lines_must_be_field_lines() {
    for good in [
        &b"0\r\n\r\n"[..],
        b"0\r\nX-T: v\r\n\r\n",
        b"0\r\nx!#$%&'*+-.^_`|~:\r\n\r\n",
        b"0\r\nX:a:b \t c\r\n\r\n",
        b"0\r\nX: \xe9\r\n\r\n",
    ] {
        assert!(decode_all(good).unwrap(), "{good:?}");
    }
    for bad in [
        &b"0\r\nDELETE /v1/stream/t HTTP/1.1\r\n\r\n"[..],
        b"0\r\nGET http://x/ HTTP/1.1\r\n\r\n",
        b"0\r\nNoColon\r\n\r\n",
        b"0\r\n: no name\r\n\r\n",
        b"0\r\nX : space before colon\r\n\r\n",
        b"0\r\n folded: line\r\n\r\n",
        b"0\r\nX(y): v\r\n\r\n",
    ] {
        let e = decode_all(bad).expect_err(&String::from_utf8_lossy(bad));
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
}

#[test]
fn trailers_and_extensions_are_bounded() {
    // Many fields, each small: refused past the field count.
    let mut wire = b"0\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        wire.extend_from_slice(format!("T{i}: v\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let e = decode_all(&wire).unwrap_err();
    assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // One huge field, refused before its end arrives.
    let mut wire = b"0\r\nT: ".to_vec();
    wire.resize(MAX_HEAD_BYTES + 16, b'v');
    let e = decode_all(&wire).unwrap_err();
    assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Up to the limit, in a few fields: fine.
    let mut wire = b"0\r\n".to_vec();
    for _ in 0..4 {
        wire.extend_from_slice(b"T: ");
        wire.resize(wire.len() + MAX_HEAD_BYTES / 4 - 64, b'v');
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    assert!(decode_all(&wire).unwrap());
    // Chunk extensions: each line is short, all of them together are bounded.
    let ext = format!(";{}", "e".repeat(4000));
    let mut wire = Vec::new();
    let mut dec = Chunked::default();
    let mut out = BytesMut::new();
    let mut refused = None;
    for _ in 0..(MAX_HEAD_BYTES / ext.len() + 2) {
        wire.extend_from_slice(format!("1{ext}\r\nx\r\n").as_bytes());
        let mut buf = BytesMut::from(&wire[..]);
        wire.clear();
        if let Err(e) = dec.decode(&mut buf, &mut out) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused.map(|e| e.status), Some(StatusCode::BAD_REQUEST));
}

#[test]
fn a_trailer_line_sent_a_byte_at_a_time_is_found() {
    let wire = b"1\r\na\r\n0\r\nX-T: trickled\r\n\r\nNEXT";
    let mut dec = Chunked::default();
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut done = false;
    for b in wire {
        buf.extend_from_slice(&[*b]);
        if dec.decode(&mut buf, &mut out).unwrap() {
            done = true;
            break;
        }
    }
    assert!(done);
    assert_eq!(&out[..], b"a");
}
