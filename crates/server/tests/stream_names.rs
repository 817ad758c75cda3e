//! Stream names are canonical paths: spellings a normalizing proxy or URL library would turn
//! into one another name one stream, and spellings that cannot be told apart safely (dot and
//! empty segments, encoded slashes, backslashes, encoded control characters, broken escapes)
//! are refused with 400 and create nothing. `Stream-Forked-From` follows the same rules.
//! Requests go over a raw socket so the paths reach the server exactly as written.

mod common;
mod raw;

use common::Server;
use raw::Conn;

const TEXT: &[(&str, &str)] = &[("Content-Type", "text/plain")];

fn read(c: &mut Conn, path: &str) -> (u16, String) {
    let r = c.request("GET", &format!("{path}?offset=-1"), &[], b"");
    (r.status, r.text())
}

#[tokio::test]
async fn equivalent_spellings_name_one_stream() {
    let s = Server::start().await;
    let mut c = Conn::open(s.port);
    // Unreserved characters, escaped or not, are one name; the Location says the canonical one.
    let r = c.request("PUT", "/v1/stream/n%61me-%7E%2e1", TEXT, b"a");
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("Location").to_string();
    assert!(location.ends_with("/v1/stream/name-~.1"), "{location}");
    for spelling in [
        "/v1/stream/name-~.1",
        "/v1/stream/%6eame-~.1",
        "/v1/stream/%6Eame%2D%7e%2E%31",
        "/v1/%73tream/name-~.1",
    ] {
        assert_eq!(read(&mut c, spelling), (200, "a".into()), "{spelling}");
    }
    // A PUT by another spelling is the idempotent re-create of the same stream.
    assert_eq!(
        c.request("PUT", "/v1/stream/name-%7e.1", TEXT, b"").status,
        200
    );
    assert_eq!(
        c.request("POST", "/v1/stream/%6e%61%6d%65-~.1", TEXT, b"b")
            .status,
        204
    );
    assert_eq!(read(&mut c, "/v1/stream/name-~.1"), (200, "ab".into()));

    // Other escapes keep their meaning, whatever the case of their hex digits; raw bytes that
    // need escaping are the same name as their escapes.
    assert_eq!(
        c.request("PUT", "/v1/stream/caf%c3%a9%20x", TEXT, b"e")
            .status,
        201
    );
    assert_eq!(read(&mut c, "/v1/stream/caf%C3%A9%20x"), (200, "e".into()));
    assert_eq!(read(&mut c, "/v1/stream/caf%C3%a9%20x"), (200, "e".into()));
    // An escaped reserved character is not the character (RFC 3986 §2.2).
    assert_eq!(c.request("PUT", "/v1/stream/a%3Ab", TEXT, b"1").status, 201);
    assert_eq!(c.request("PUT", "/v1/stream/a:b", TEXT, b"2").status, 201);
    assert_eq!(read(&mut c, "/v1/stream/a%3ab"), (200, "1".into()));
    assert_eq!(read(&mut c, "/v1/stream/a:b"), (200, "2".into()));
    // Nested names stay nested names.
    assert_eq!(
        c.request("PUT", "/v1/stream/dir/leaf", TEXT, b"n").status,
        201
    );
    assert_eq!(read(&mut c, "/v1/stream/dir/le%61f"), (200, "n".into()));
    // The reserved prefix cannot be reached around by escaping it: no stream by that name.
    assert_eq!(
        c.request("GET", "/v1/stream/%5F_ds/x", &[], b"").status,
        404
    );
    assert_eq!(
        c.request("PUT", "/v1/stream/%5F_ds/x", TEXT, b"1").status,
        404
    );
}

#[tokio::test]
async fn ambiguous_spellings_are_refused_and_create_nothing() {
    let s = Server::start().await;
    let mut c = Conn::open(s.port);
    // Streams the refused spellings could have been meant for, or normalized to.
    for p in [
        "/v1/stream/y",
        "/v1/stream/a",
        "/v1/stream/a/b",
        "/v1/stream/x",
    ] {
        assert_eq!(c.request("PUT", p, TEXT, b"orig").status, 201, "{p}");
    }
    let refused = [
        "/v1/stream/x/../y",
        "/v1/stream/x/%2e%2E/y",
        "/v1/stream/x/.%2e/y",
        "/v1/stream/./y",
        "/v1/stream/%2E/y",
        "/v1/stream/..",
        "/v1/stream/a%2Fb",
        "/v1/stream/a%2fb",
        "/v1/stream/a//b",
        "/v1/stream//a",
        "/v1/stream/a/",
        "/v1/stream/a\\b",
        "/v1/stream/a%5Cb",
        "/v1/stream/a%00",
        "/v1/stream/a%0d%0aX:%20y",
        "/v1/stream/a%7f",
        "/v1/stream/a%",
        "/v1/stream/a%4",
        "/v1/stream/a%zz",
        "/v1/%73tream/x/../y",
    ];
    for p in refused {
        for (method, body) in [
            ("PUT", &b"new"[..]),
            ("POST", b"more"),
            ("GET", b""),
            ("HEAD", b""),
            ("DELETE", b""),
        ] {
            let r = c.request(method, p, TEXT, body);
            assert_eq!(r.status, 400, "{method} {p}: {}", r.text());
            assert!(
                !r.closes(),
                "{method} {p}: a refused path keeps the connection"
            );
            if method != "HEAD" {
                assert!(r.text().contains("path"), "{method} {p}: {}", r.text());
            }
        }
    }
    // Nothing was created, appended or deleted.
    for p in [
        "/v1/stream/y",
        "/v1/stream/a",
        "/v1/stream/a/b",
        "/v1/stream/x",
    ] {
        assert_eq!(read(&mut c, p), (200, "orig".into()), "{p}");
    }
    let m = c.request("GET", "/metrics", &[], b"");
    assert!(m.text().contains("riffle_streams 4\n"), "{}", m.text());
}

#[tokio::test]
async fn fork_sources_follow_the_same_rules() {
    let s = Server::start().await;
    let mut c = Conn::open(s.port);
    assert_eq!(
        c.request("PUT", "/v1/stream/src", TEXT, b"hello").status,
        201
    );
    assert_eq!(c.request("PUT", "/v1/stream/y", TEXT, b"other").status, 201);
    // Every spelling of the source, as a path, a relative name or a URL, forks it.
    for (i, from) in [
        "/v1/stream/src",
        "/v1/stream/%73rc",
        "/v1/%73tream/src",
        "%73rc",
        "src",
        "http://example.com/v1/stream/s%72c?x=1",
    ]
    .iter()
    .enumerate()
    {
        let fork = format!("/v1/stream/fork-{i}");
        let r = c.request("PUT", &fork, &[("Stream-Forked-From", from)], b"");
        assert_eq!(r.status, 201, "fork from {from:?}: {}", r.text());
        assert_eq!(
            read(&mut c, &fork),
            (200, "hello".into()),
            "fork from {from:?}"
        );
    }
    // A fork source with an escape that keeps its meaning is the stream created by it.
    assert_eq!(
        c.request("PUT", "/v1/stream/sp%20ace", TEXT, b"s").status,
        201
    );
    let r = c.request(
        "PUT",
        "/v1/stream/fork-sp",
        &[("Stream-Forked-From", "/v1/stream/sp%20ace")],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = c.request(
        "PUT",
        "/v1/stream/fork-sp2",
        &[("Stream-Forked-From", "/v1/stream/sp ace")],
        b"",
    );
    assert_eq!(
        r.status,
        201,
        "a raw space names the escaped stream: {}",
        r.text()
    );
    assert_eq!(read(&mut c, "/v1/stream/fork-sp2"), (200, "s".into()));

    // Refused source spellings: 400, and the fork is not created.
    for (i, from) in [
        "/v1/stream/x/../y",
        "/v1/stream/%2e%2e/y",
        "../y",
        "/v1/stream/s%2Frc",
        "/v1/stream//src",
        "/v1/stream/src/",
        "/v1/stream/src%00",
        "/v1/stream/s\\rc",
        "http://example.com/v1/stream/./src",
        "/v1/stream/src%",
    ]
    .iter()
    .enumerate()
    {
        let fork = format!("/v1/stream/bad-fork-{i}");
        let r = c.request("PUT", &fork, &[("Stream-Forked-From", from)], b"");
        assert_eq!(r.status, 400, "fork from {from:?}: {}", r.text());
        assert!(r.text().contains("Stream-Forked-From"), "{}", r.text());
        assert_eq!(read(&mut c, &fork).0, 404, "fork from {from:?} was created");
    }
}
