//! Malformed and hostile requests: never a 5xx, never a dead server. Plus the headers every
//! response carries (CORS, security), limits (413), and a seeded random-request loop.

mod common;

use common::{
    Options, RawEnd, Server, SseReader, assert_header, assert_no_header, header, raw_exchange,
};
use futures_util::StreamExt;
use std::time::Duration;

const TEXT: &str = "text/plain";
const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// Send `request` raw; assert that one complete, well-framed response arrives and that it is
/// not a 5xx (silence, a reset or a truncated answer fail too). Returns the status.
#[track_caller]
fn raw_not_5xx(s: &Server, request: &[u8]) -> u16 {
    let resp = raw_exchange(s.port, request, RAW_TIMEOUT, false);
    let shown = || String::from_utf8_lossy(&request[..request.len().min(200)]).into_owned();
    let Some(code) = resp.complete_status(request.starts_with(b"HEAD ")) else {
        panic!(
            "no complete response ({:?}) for {:?}:\n{}",
            resp.end,
            shown(),
            resp.text()
        );
    };
    assert!(code < 500, "{code} for {:?}:\n{}", shown(), resp.text());
    code
}

/// Send `request` raw and half-close, as a client that gives up would. No answer is owed,
/// but the server must end the connection (not hang on it), and an HTTP/1 answer must be one
/// complete response that is not a 5xx.
#[track_caller]
fn raw_abandoned(s: &Server, request: &[u8]) {
    let resp = raw_exchange(s.port, request, RAW_TIMEOUT, true);
    assert_ne!(
        resp.end,
        RawEnd::TimedOut,
        "the server kept an abandoned connection open: {request:?}"
    );
    // Nothing, or HTTP/2 frames answering a connection preface (not HTTP/1 text).
    if resp.bytes.is_empty() || request.starts_with(b"PRI * HTTP/2.0") {
        return;
    }
    let code = resp
        .complete_status(request.starts_with(b"HEAD "))
        .unwrap_or_else(|| panic!("a partial answer to {request:?}: {}", resp.text()));
    assert!(code < 500, "{code} for {request:?}");
}

fn get(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn bad_header_bytes() {
    let mut s = Server::start().await;
    let url = s.stream("hdr");
    s.create(&url, TEXT).await;
    let path = url.strip_prefix(&s.base).unwrap().to_string();

    // Control bytes and obs-text in header values: rejected by the parser or the server.
    for value in [
        &b"\x01\x02"[..],
        b"\x7f",
        b"\xff\xfe",
        b"caf\xc3\xa9",
        b"\x00",
        b"a\rb",
    ] {
        for name in [
            "X-Junk",
            "Content-Type",
            "Producer-Id",
            "Stream-TTL",
            "Stream-Seq",
            "Stream-Closed",
            "If-None-Match",
            "Host",
        ] {
            for method in ["GET", "POST", "PUT", "HEAD"] {
                let mut req = format!(
                    "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 1\r\n{name}: "
                )
                .into_bytes();
                req.extend_from_slice(value);
                req.extend_from_slice(b"\r\n\r\nx");
                raw_not_5xx(&s, &req);
            }
        }
    }

    // A Producer-Id that is not visible ASCII: a clean 400, and nothing stored.
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .header(
            "producer-id",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .header("producer-epoch", "0")
        .header("producer-seq", "0")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Malformed request lines and framing.
    for req in [
        &b"GET\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/stream/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/stream/a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHeader\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n : empty name\r\n\r\n",
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ] {
        raw_not_5xx(&s, req);
    }

    // Clients that stop half-way and hang up: no answer is owed, the server must just cope.
    for req in [
        &b"\r\n\r\n"[..],
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
        b"POST /v1/stream/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"GET /v1/stream/a HTTP/1.1\r\nHost: x\r\nX-Unfinished: ",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00garbage",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        raw_abandoned(&s, req);
    }

    s.assert_healthy().await;
    // The stream is intact.
    assert_eq!(s.read_all(&url).await, b"");
}

#[tokio::test]
async fn huge_headers_and_many_headers() {
    let mut s = Server::start().await;
    for size in [8 * 1024, 64 * 1024, 1024 * 1024] {
        let value = "v".repeat(size);
        raw_not_5xx(&s, &get("/healthz", &format!("X-Big: {value}\r\n")));
        raw_not_5xx(
            &s,
            &get("/v1/stream/a", &format!("Stream-Seq: {value}\r\n")),
        );
        raw_not_5xx(
            &s,
            &get("/v1/stream/a", &format!("Producer-Id: {value}\r\n")),
        );
    }
    let many: String = (0..500).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    raw_not_5xx(&s, &get("/healthz", &many));

    // A Stream-Seq and a Producer-Id at their limits (256 bytes by default) work end to end;
    // longer ones are refused (tests/limits.rs).
    let url = s.stream("big-ids");
    s.create(&url, TEXT).await;
    let long = "z".repeat(256);
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .header("stream-seq", &long)
        .header("producer-id", &long)
        .header("producer-epoch", "0")
        .header("producer-seq", "0")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    s.assert_healthy().await;
}

#[tokio::test]
async fn garbage_paths_and_queries() {
    let mut s = Server::start().await;
    let url = s.stream("q");
    s.create(&url, TEXT).await;
    s.append(&url, TEXT, "abc").await;
    let path = url.strip_prefix(&s.base).unwrap().to_string();
    let long = "a".repeat(5000);
    let very_long = "b".repeat(70_000);

    let paths = [
        "/".to_string(),
        "//".to_string(),
        "/v1".to_string(),
        "/v1/stream".to_string(),
        "/v1/stream/".to_string(),
        "/v1/stream//".to_string(),
        "/v1/stream/%00".to_string(),
        "/v1/stream/%ff%fe%fd".to_string(),
        "/v1/stream/%".to_string(),
        "/v1/stream/%zz".to_string(),
        "/v1/stream/../../etc/passwd".to_string(),
        "/v1/stream/a/./b/../c".to_string(),
        "/v1/stream/%2e%2e/%2e%2e".to_string(),
        format!("/v1/stream/{long}"),
        format!("/v1/stream/{very_long}"),
        "/v1/stream/\u{1F600}".to_string(),
        "*".to_string(),
        "/healthz/extra".to_string(),
    ];
    let queries = [
        String::new(),
        "?".to_string(),
        "?offset".to_string(),
        "?offset=%00".to_string(),
        "?offset=%ff".to_string(),
        "?offset=%".to_string(),
        "?offset=%%%%".to_string(),
        "?offset=-1&live=%00".to_string(),
        "?offset=-1&cursor=%ff%00".to_string(),
        "?&&&==&=".to_string(),
        format!("?offset={long}"),
        format!("?x={very_long}"),
        "?offset=0000000000000000_0000000000000000%2C1".to_string(),
        "?offset=-1#fragment".to_string(),
    ];
    for p in &paths {
        for q in &queries {
            for method in ["GET", "HEAD", "DELETE", "OPTIONS"] {
                let req =
                    format!("{method} {p}{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                raw_not_5xx(&s, req.as_bytes());
            }
            let req = format!(
                "POST {p}{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"
            );
            raw_not_5xx(&s, req.as_bytes());
        }
    }

    // Specific answers.
    assert_eq!(
        raw_not_5xx(&s, &get(&format!("/v1/stream/{long}"), "")),
        400,
        "paths over the limit"
    );
    assert_eq!(raw_not_5xx(&s, &get("/v1/stream/", "")), 400);
    assert_eq!(raw_not_5xx(&s, &get("/nothing-here", "")), 404);
    assert_eq!(
        raw_not_5xx(&s, &get(&format!("{path}?offset=%00"), "")),
        400
    );
    assert_eq!(
        raw_not_5xx(&s, &get(&format!("{path}?offset=-1&junk=%ff"), "")),
        200,
        "unknown parameters are ignored"
    );

    // None of that touched the stream.
    assert_eq!(s.read_all(&url).await, b"abc");
    s.assert_healthy().await;
}

#[tokio::test]
async fn invalid_utf8_in_json_bodies() {
    let mut s = Server::start().await;
    let url = s.stream("json-utf8");
    s.create(&url, "application/json").await;
    for body in [
        &b"\"\xff\xfe\""[..],
        b"[\"\xc3\x28\"]",
        b"{\"a\":\"\xed\xa0\x80\"}",
        b"\xef\xbb\xbf[1]",
        b"\x00",
        b"[1]\x00",
    ] {
        let r = s
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        assert!(code == 400 || code == 204, "{code} for {body:?}");
        if body.starts_with(b"\"\xff") || body.starts_with(b"[\"\xc3\x28") {
            assert_eq!(code, 400, "invalid UTF-8 is not JSON: {body:?}");
        }
    }
    // Whatever was accepted, the stream still reads as one valid JSON array.
    let body = s.read_all(&url).await;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&body)));
    assert!(v.is_array());
    s.assert_healthy().await;
}

#[tokio::test]
async fn request_body_limits() {
    let mut s =
        Server::start_with(Options::default().env("DS_LIMITS__MAX_REQUEST_BODY_BYTES", "1024"))
            .await;
    let url = s.stream("limit");
    s.create(&url, TEXT).await;
    let path = url.strip_prefix(&s.base).unwrap().to_string();

    // A chunked body that grows past the limit: 413.
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'x'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw_not_5xx(&s, &req), 413);

    // A declared Content-Length over the limit: 413 without sending the body.
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_not_5xx(&s, req.as_bytes()), 413);

    // Through the client as well, on POST and PUT.
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .body(vec![b'y'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = s
        .client
        .put(s.stream("limit-put"))
        .header("content-type", TEXT)
        .body(vec![b'y'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Exactly at the limit is fine, and a streamed (chunked) body under it works.
    s.append(&url, TEXT, vec![b'a'; 1024]).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"chunk1-".to_vec()),
        Ok(b"chunk2-".to_vec()),
        Ok(b"end".to_vec()),
    ];
    let r = s
        .client
        .post(&url)
        .header("content-type", TEXT)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut want = vec![b'a'; 1024];
    want.extend_from_slice(b"chunk1-chunk2-end");
    assert_eq!(
        s.read_all(&url).await,
        want,
        "nothing of the rejected bodies stored"
    );
    s.assert_healthy().await;
}

#[tokio::test]
async fn methods_cors_and_security_headers() {
    let mut s = Server::start().await;
    let url = s.stream("cors");
    s.create(&url, TEXT).await;

    // Unknown methods: 405 with Allow.
    for m in ["PATCH", "FOO", "TRACE", "CONNECTX"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = s.client.request(method, &url).send().await.unwrap();
        assert_eq!(r.status(), 405, "{m}");
        let allow = header(&r, "allow").expect("Allow");
        for needed in ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"] {
            assert!(allow.contains(needed), "Allow: {allow}");
        }
    }

    // OPTIONS (a preflight): 204 with CORS headers, anywhere.
    for target in [
        url.clone(),
        s.url("/v1/stream/missing"),
        s.url("/elsewhere"),
    ] {
        let r = s
            .client
            .request(reqwest::Method::OPTIONS, &target)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "if-none-match, producer-id",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{target}");
        assert_header(&r, "access-control-allow-origin", "*");
        let methods = header(&r, "access-control-allow-methods").unwrap();
        for m in ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"] {
            assert!(methods.contains(m), "Allow-Methods: {methods}");
        }
        let allowed = header(&r, "access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        for h in [
            "content-type",
            "authorization",
            "if-none-match",
            "stream-seq",
            "stream-ttl",
            "stream-expires-at",
            "stream-closed",
            "producer-id",
            "producer-epoch",
            "producer-seq",
            "stream-forked-from",
            "stream-fork-offset",
            "stream-fork-sub-offset",
        ] {
            assert!(allowed.contains(h), "Allow-Headers lacks {h}: {allowed}");
        }
        let exposed = header(&r, "access-control-expose-headers")
            .unwrap()
            .to_ascii_lowercase();
        for h in [
            "stream-next-offset",
            "stream-cursor",
            "stream-up-to-date",
            "stream-closed",
            "etag",
            "location",
            "producer-epoch",
            "producer-seq",
            "producer-expected-seq",
            "producer-received-seq",
        ] {
            assert!(exposed.contains(h), "Expose-Headers lacks {h}: {exposed}");
        }
        assert_header(&r, "x-content-type-options", "nosniff");
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }

    // Security headers on errors, reads and SSE; CORS headers only where a browser asks
    // (a request with an Origin), so plain clients do not pay for them.
    let check = |r: &reqwest::Response| {
        assert_header(r, "x-content-type-options", "nosniff");
        let corp = header(r, "cross-origin-resource-policy").expect("CORP");
        assert!(
            ["cross-origin", "same-origin", "same-site"].contains(&corp.as_str()),
            "{corp}"
        );
        assert_no_header(r, "access-control-allow-origin");
    };
    for target in [s.stream("missing"), url.clone()] {
        let r = s
            .client
            .get(format!("{target}?offset=-1"))
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        assert_header(&r, "access-control-allow-origin", "*");
        let exposed = header(&r, "access-control-expose-headers").expect("Expose-Headers");
        assert!(exposed.to_ascii_lowercase().contains("stream-next-offset"));
    }
    let r = s.read(&s.stream("missing"), "-1").await;
    assert_eq!(r.status(), 404);
    check(&r);
    let r = s.client.get(s.url("/not/a/stream")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    check(&r);
    let r = s.read(&url, "-1").await;
    assert_eq!(r.status(), 200);
    check(&r);
    let r = s.read(&url, "garbage").await;
    assert_eq!(r.status(), 400);
    check(&r);
    let r = s
        .client
        .get(format!("{url}?offset=now&live=long-poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    check(&r);
    let r = s
        .client
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    check(&r);
    let mut ev = SseReader::new(r);
    assert_eq!(ev.expect(RAW_TIMEOUT).await.event, "control");
    drop(ev);

    // The reserved control namespace: its own answers (JSON errors), never a stream's.
    for (m, p, status) in [
        (reqwest::Method::GET, "/v1/stream/__ds/subscriptions/x", 404),
        (reqwest::Method::PUT, "/v1/stream/__ds/subscriptions/x", 400),
        (
            reqwest::Method::DELETE,
            "/v1/stream/__ds/subscriptions/x",
            204,
        ),
        (reqwest::Method::GET, "/v1/stream/__ds", 404),
        (reqwest::Method::PUT, "/v1/stream/__ds", 404),
        (reqwest::Method::GET, "/v1/stream/__ds/jwks.json", 200),
        (reqwest::Method::PUT, "/v1/stream/__ds/jwks.json", 405),
        (reqwest::Method::DELETE, "/v1/stream/__ds/jwks.json", 405),
    ] {
        let r = s.client.request(m.clone(), s.url(p)).send().await.unwrap();
        assert_eq!(r.status(), status, "{m} {p}");
        check(&r);
        if status != 204 {
            let ct = header(&r, "content-type").unwrap_or_default();
            assert!(ct.contains("json"), "{m} {p}: {ct}");
        }
    }

    // Health endpoints.
    for p in ["/healthz", "/readyz"] {
        let r = s.client.get(s.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        let r = s.client.head(s.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD {p}");
    }
    s.assert_healthy().await;
}

// ---- seeded random requests --------------------------------------------------------------

/// xorshift64*: small, deterministic, good enough to pick test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct RandomRequest {
    method: reqwest::Method,
    url: String,
    headers: Vec<(&'static str, reqwest::header::HeaderValue)>,
    body: Vec<u8>,
    describe: String,
}

fn random_request(rng: &mut Rng, base: &str) -> RandomRequest {
    let method = match rng.below(10) {
        0 | 1 => reqwest::Method::PUT,
        2..=4 => reqwest::Method::POST,
        5 | 6 => reqwest::Method::GET,
        7 => reqwest::Method::HEAD,
        8 => reqwest::Method::DELETE,
        _ => {
            reqwest::Method::from_bytes(rng.pick(&["OPTIONS", "PATCH", "XYZ"]).as_bytes()).unwrap()
        }
    };
    // A few names, so requests build on each other's state.
    let name = rng.pick(&[
        "r0", "r1", "r2", "j0", "j1", "f0", "f1", "x%20y", "__ds/s", "",
    ]);
    let mut url = format!("{base}/v1/stream/{name}");
    if rng.chance(50) {
        let offset = match rng.below(7) {
            0 => "-1".to_string(),
            1 => "now".to_string(),
            2 => "0000000000000000_0000000000000000".to_string(),
            3 => format!("{:016}_{:016}", 0, rng.below(64)),
            4 => format!("{}_{}", rng.next(), rng.next()),
            5 => String::new(),
            _ => rng.pick(&["abc", "%00", "1,2", "..%2F", "%ff"]).to_string(),
        };
        url.push_str(&format!("?offset={offset}"));
        if rng.chance(15) {
            url.push_str(rng.pick(&["&live=long-poll", "&live=sse", "&live=bogus"]));
        }
        if rng.chance(20) {
            url.push_str(&format!("&cursor={}", rng.next() % 100_000_000));
        }
    }

    let mut headers = Vec::new();
    let hv = |s: &str| reqwest::header::HeaderValue::from_str(s).unwrap();
    if rng.chance(70) {
        let ct = rng.pick(&[
            "text/plain",
            "application/json",
            "application/octet-stream",
            "APPLICATION/JSON; charset=utf-8",
            "garbage",
            "",
        ]);
        headers.push(("content-type", hv(ct)));
    }
    let optional: [(&'static str, &[&str]); 11] = [
        ("stream-closed", &["true", "TRUE", "false", "1"]),
        ("stream-seq", &["1", "2", "10", "a", ""]),
        ("stream-ttl", &["1", "60", "0", "-1", "1e3", "00060"]),
        (
            "stream-expires-at",
            &["2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "nope"],
        ),
        (
            "stream-forked-from",
            &[
                "/v1/stream/r0",
                "/v1/stream/j0",
                "r1",
                "http://x/v1/stream/f0",
                "",
            ],
        ),
        (
            "stream-fork-offset",
            &["-1", "now", "0000000000000000_0000000000000003", "zz"],
        ),
        ("stream-fork-sub-offset", &["0", "1", "3", "05", "-1"]),
        ("producer-id", &["p", "q", ""]),
        ("producer-epoch", &["0", "1", "2", "9007199254740992", "x"]),
        ("producer-seq", &["0", "1", "2", "3", "-1"]),
        ("if-none-match", &["*", "\"x\"", "W/\"y\""]),
    ];
    for (name, values) in optional {
        if rng.chance(12) {
            headers.push((name, hv(rng.pick(values))));
        }
    }
    if rng.chance(5) {
        // Bytes that are not visible ASCII.
        let raw: Vec<u8> = (0..rng.below(8) + 1)
            .map(|_| 0x80 | rng.next() as u8)
            .collect();
        let name = rng.pick(&["content-type", "producer-id", "stream-seq", "stream-ttl"]);
        headers.push((
            name,
            reqwest::header::HeaderValue::from_bytes(&raw).unwrap(),
        ));
    }

    let body = match rng.below(8) {
        0 | 1 => Vec::new(),
        2 => b"[]".to_vec(),
        3 => b"[1,{\"a\":[2,3]},\"x\"]".to_vec(),
        4 => b"{\"broken\":".to_vec(),
        5 => b"hello\r\nevent: control\r\n".to_vec(),
        _ => rng.bytes(300),
    };
    let describe = format!(
        "{method} {url} {:?} body={:?}",
        headers
            .iter()
            .map(|(k, v)| format!("{k}: {v:?}"))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&body[..body.len().min(40)])
    );
    RandomRequest {
        method,
        url,
        headers,
        body,
        describe,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_5xx() {
    let mut s = Server::start().await;
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let requests: Vec<RandomRequest> = (0..300)
        .map(|_| random_request(&mut rng, &s.base))
        .collect();
    let client = s.client.clone();
    let results: Vec<(String, u16)> = futures_util::stream::iter(requests)
        .map(|req| {
            let client = client.clone();
            async move {
                let mut b = client
                    .request(req.method, &req.url)
                    .timeout(Duration::from_secs(10));
                for (k, v) in req.headers {
                    b = b.header(k, v);
                }
                if !req.body.is_empty() {
                    b = b.body(req.body);
                }
                let r = b
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", req.describe));
                let code = r.status().as_u16();
                // SSE responses stay open: the status is enough. Others: read the body.
                if header(&r, "content-type").as_deref() != Some("text/event-stream") {
                    let _ = r.bytes().await;
                }
                (req.describe, code)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut seen = std::collections::BTreeMap::new();
    for (describe, code) in &results {
        assert!(*code < 500, "{code} for {describe}");
        *seen.entry(*code).or_insert(0) += 1;
    }
    assert_eq!(results.len(), 300);
    // The mix exercised successes and errors alike.
    assert!(seen.keys().any(|c| (200..300).contains(c)), "{seen:?}");
    assert!(seen.keys().any(|c| (400..500).contains(c)), "{seen:?}");
    s.assert_healthy().await;
}

/// A PUT whose `Host` header is not visible ASCII must not create the stream and then
/// report failure (the `Location` header is built from it).
#[tokio::test]
async fn put_with_a_non_ascii_host_has_no_hidden_side_effect() {
    let s = Server::start().await;
    let path = s.path("bad-host");
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: \u{e9}\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    // An answer is owed either way: silence would hide whether the PUT took effect.
    let status = Some(raw_not_5xx(&s, req.as_bytes()));
    let created = s.head(&s.url(&path)).await.status() == 200;
    assert!(
        (status == Some(201) && created) || (status != Some(201) && !created),
        "PUT answered {status:?}, but the stream exists: {created}"
    );
}

/// The raw helpers' own rule, against a fake server: silence, a bare close and a truncated
/// body are not answers; one whole response is, even on a connection left open.
#[test]
fn raw_answers_count_only_when_complete() {
    let cases: [(&[u8], bool, Option<u16>); 4] = [
        (b"", true, None),
        (b"", false, None),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            true,
            None,
        ),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc",
            false,
            Some(404),
        ),
    ];
    for (reply, close, want) in cases {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            std::io::Write::write_all(&mut s, reply).unwrap();
            if !close {
                std::thread::sleep(Duration::from_millis(700));
            }
        });
        let resp = raw_exchange(port, &get("/", ""), Duration::from_millis(300), false);
        assert_eq!(resp.complete_status(false), want, "{reply:?} close={close}");
        fake.join().unwrap();
    }
}
