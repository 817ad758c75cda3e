//! Robustness of the `/v0` API at the HTTP level: hostile paths and queries, broken framing,
//! every method on every endpoint, content types, bodies over the size limit, concurrent
//! writers sharing an idempotency key, and a seeded fuzz of mutated bodies. No input may
//! produce a 5xx (queue operations aside, which are not built yet), and a refusal changes
//! nothing.

mod common;
mod topics_hostile;

use common::{H2, Server, raw_exchange};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use topics_hostile::*;

/// Send raw bytes on a fresh connection (off the async runtime) and read one whole answer.
async fn raw(s: &Server, what: &str, req: Vec<u8>) -> Resp {
    let port = s.port;
    let wait = Duration::from_secs(10);
    let r = tokio::task::spawn_blocking(move || raw_exchange(port, &req, wait, false));
    let r = r.await.expect("the raw exchange");
    let status = r.complete_status(false);
    let status = status.unwrap_or_else(|| panic!("{what}: no answer: {}", r.text()));
    let text = r.text();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Resp::new(status, body.to_string(), what)
}

#[tokio::test]
async fn hostile_paths_and_queries() {
    let mut s = start().await;
    seed(&s, "ok").await;
    let mut cases = Vec::new();
    let write = r#"{"records":[{"data":1}]}"#;
    let names = "%00 %2F a%2Fb %zz % a% %e9 %C3%A9 a%20b \u{fc} %F0%9F%98%80 -x a%00b %+1 _a";
    let long = "a".repeat(256);
    for name in names.split_whitespace().chain(["", &long]) {
        let path = format!("/v0/topics/{name}");
        cases.push(case(Method::GET, &path, "", INVALID));
        cases.push(case(Method::PUT, &path, "{}", INVALID));
        cases.push(case(Method::DELETE, &path, "", INVALID));
        cases.push(bad(&path, write));
        cases.push(bad(&format!("{path}/diff"), "{}"));
        cases.push(bad(&format!("{path}/delete"), r#"{"before_seq":9}"#));
    }
    let unknown = "/v0 /v0/ /v0/nope /v0/topics/ok/nope /v0/topics/ok/diff/x \
        /v0/topics/a/b/c /v0/topics/ok/ /v0/health/x";
    for path in unknown.split_whitespace() {
        cases.push(case(Method::GET, path, "", (404, "not_found")));
        cases.push(case(Method::POST, path, write, (404, "not_found")));
    }
    cases.push(case(
        Method::GET,
        "/v0/routers/r",
        "",
        (404, "router_not_found"),
    ));
    cases.push(case(
        Method::POST,
        "/v0/routers/r",
        write,
        (405, "method_not_allowed"),
    ));
    // A WebSocket endpoint answers a request without the upgrade with 426.
    cases.push(case(Method::GET, "/v0/ws", "", (426, "upgrade_required")));
    cases.push(case(
        Method::POST,
        "/v0/ws",
        write,
        (426, "upgrade_required"),
    ));
    let queries = "/v0/topics/ok?touch=maybe /v0/topics/ok?touch=%ff /v0/topics?page_size=0 \
        /v0/topics?page_size=-1 /v0/topics?page_size=abc /v0/topics?page_size=1e3 \
        /v0/topics?page_size=18446744073709551616 /v0/topics?cursor=!!! \
        /v0/topics?cursor=bm90IGpzb24 /v0/topics?cursor=eyJhZnRlciI6NX0";
    for path in queries.split_whitespace() {
        cases.push(case(Method::GET, path, "", INVALID));
    }
    let del = |q, want| case(Method::DELETE, &format!("/v0/topics/ok?{q}"), "", want);
    cases.push(del("if_empty=maybe", INVALID));
    cases.push(del("if_empty=true", (409, "topic_not_empty")));
    refuse_all(&s, cases).await;
    let name255 = format!("/v0/topics/{}", "a".repeat(255));
    get(&s, &name255).await.expect(NO_TOPIC);
    let fine = "?page_size=1001 ?prefix=%00 ?prefix=%ff%fe ?cursor=eyJhZnRlciI6IiJ9 ?touch=1";
    for q in fine.split_whitespace() {
        get(&s, &format!("/v0/topics{q}")).await.ok(200);
    }
    // Raw HTTP/1.1: odd paths a client library would normalize reach /v0 and are refused
    // with the envelope; heads no parser takes get a whole answer, never a 5xx.
    let routed = r"/v0/topics/.. /v0/topics/./diff /v0/topics/%2e%2e/delete /v0/topics/\xc3\xa9";
    let mut malformed =
        toks(r"/v0/topics/\xff /v0/topics/a\x00b /v0/topics/a\x20b v0/topics/ok * /v0/\x7f");
    malformed.push([b"/v0/topics/".as_slice(), &[b'a'; 65_536]].concat());
    let end = " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (target, envelope) in toks(routed)
        .into_iter()
        .map(|t| (t, true))
        .chain(malformed.into_iter().map(|t| (t, false)))
    {
        let what = format!("GET {}", shown(&target));
        let r = raw(&s, &what, wrap("GET ", &target, end)).await;
        assert!(r.status < 500, "{what}: {} {}", r.status, r.text);
        if envelope {
            r.expect(INVALID);
        }
    }
    alive(&mut s).await;
}

/// A /v0 request whose head parsed but whose chunked framing is broken is still a /v0
/// error: the envelope (§1.1: every non-2xx response), not the HTTP layer's plain text.
#[tokio::test]
async fn broken_chunked_framing_on_v0_is_the_envelope() {
    let mut s = start().await;
    let req = "POST /v0/topics/ok HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let r = raw(&s, "a bad chunk size", req.into()).await;
    r.expect(INVALID);
    get(&s, "/v0/topics/ok").await.expect(NO_TOPIC);
    alive(&mut s).await;
}

#[tokio::test]
async fn every_endpoint_under_every_method() {
    let mut s = start().await;
    seed(&s, "m").await;
    let paths = "/v0/health /v0/ready /v0/metrics /v0/topics /v0/topics/m /v0/topics/m/diff \
        /v0/topics/m/delete /v0/topics/m/claim /v0/topics/m/ack /v0/topics/m/nack \
        /v0/topics/m/extend /v0/topics/m/work /v0/watch /v0/watch/wid_x /v0/topics/missing \
        /v0/topics/missing/diff /v0/routers";
    let methods = "GET POST PUT DELETE PATCH HEAD OPTIONS PURGE TRACE";
    let mut failures = Vec::new();
    for path in paths.split_whitespace() {
        for m in methods.split_whitespace() {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            // A body every endpoint refuses (DELETE /v0/topics/m ignores it, and deletes m).
            let r = send(&s, &m, path, CT, br#"{"records":5}"#).await;
            let odd = ["PATCH", "PURGE"].contains(&m.as_str()) && path != "/v0/routers";
            let want = odd.then_some((405, "method_not_allowed"));
            failures.extend(r.check(want).err());
        }
    }
    no_failures(&failures);
    alive(&mut s).await;
}

/// Queue operations: a log topic answers `409 not_a_queue` as documented; a queue topic
/// answers, never a crash or a 5xx.
#[tokio::test]
async fn queue_endpoints_never_answer_5xx() {
    let mut s = start().await;
    let queue = br#"{"type":"queue"}"#;
    let r = send(&s, &Method::PUT, "/v0/topics/q", CT, queue).await;
    r.ok(201);
    let r = send(&s, &Method::PUT, "/v0/topics/l", CT, b"{}").await;
    r.ok(201);
    let mut failures = Vec::new();
    for (m, op, body, on_queue) in [
        (Method::POST, "claim", r#"{"node":"w"}"#, None),
        (Method::POST, "ack", r#"{"node":"w","seqs":[1]}"#, None),
        (Method::POST, "nack", r#"{"node":"w","seqs":[1]}"#, None),
        (
            Method::POST,
            "extend",
            r#"{"node":"w","seqs":[1],"lease_ms":500}"#,
            None,
        ),
        (Method::GET, "work?node=w", "", Some((0, ""))),
    ] {
        let r = send(&s, &m, &format!("/v0/topics/l/{op}"), CT, body.as_bytes()).await;
        failures.extend(r.check(Some((409, "not_a_queue"))).err());
        if on_queue == Some((0, "")) {
            continue; // an event stream, open until the client goes: `topics_queues.rs`
        }
        let r = send(&s, &m, &format!("/v0/topics/q/{op}"), CT, body.as_bytes()).await;
        failures.extend(r.check(on_queue).err());
    }
    no_failures(&failures);
    alive(&mut s).await;
}

#[tokio::test]
async fn content_types_and_degenerate_bodies() {
    let mut s = start().await;
    seed(&s, "c").await;
    let endpoints = [
        (Method::PUT, "/v0/topics/c", r#"{"ttl_ms":5}"#),
        (Method::POST, "/v0/topics/c", r#"{"records":[{"data":1}]}"#),
        (Method::POST, "/v0/topics/c/diff", "{}"),
        (Method::POST, "/v0/topics/c/delete", r#"{"before_seq":3}"#),
        (Method::POST, "/v0/watch", r#"{"topics":{"c":{}}}"#),
    ];
    let mut cases = Vec::new();
    let types = r#"text/plain multipart/form-data;\x20boundary=x application/xml json ;
        text/json application/jsonx"#;
    let unsupported = (415, "unsupported_media_type");
    let form = b"application/x-www-form-urlencoded".as_slice();
    for (m, path, body) in &endpoints {
        for ct in toks(types).iter().chain([&vec![]]) {
            let c = case(m.clone(), path, *body, unsupported);
            cases.push(with(c, &[("content-type", ct)]));
        }
        // No type, or curl's form default, is taken as JSON only when the body is JSON.
        let c = case(m.clone(), path, "a=b", unsupported);
        cases.push(with(c, &[]));
        let c = case(m.clone(), path, "a=b", unsupported);
        cases.push(with(c, &[("content-type", form)]));
    }
    refuse_all(&s, cases).await;
    // Degenerate bodies everywhere: refused cleanly (or, for a PUT or a diff, taken as `{}`).
    let bodies = toks(r#"\x20\x0d\x0a\x09 null [] "str" 0 true }"#);
    let types = toks(r#"APPLICATION/JSON application/vnd.x+json \xff\xfe/json"#);
    for (m, path, _) in &endpoints {
        for body in bodies.iter().chain([&vec![]]) {
            let r = clean(&s, m, path, CT, body).await;
            let empty = body.iter().all(u8::is_ascii_whitespace);
            let lenient = *m == Method::PUT || path.ends_with("/diff");
            let fine = (empty && lenient) || r.status == 400;
            assert!(fine, "{}: {} {}", r.what, r.status, r.text);
        }
        for ct in &types {
            clean(&s, m, path, &[("content-type", ct)], b"{}").await;
        }
    }
    alive(&mut s).await;
}

// ---- sizes ----------------------------------------------------------------------------------

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_change_nothing() {
    let mut s = start().await;
    seed(&s, "b").await;
    let before = world(&s).await;
    let too_large = (413, "payload_too_large");
    let paths = "PUT:/v0/topics/b POST:/v0/topics/b POST:/v0/topics/b/diff \
        POST:/v0/topics/b/delete POST:/v0/watch PUT:/v0/topics/new";
    for target in paths.split_whitespace() {
        let (m, path) = target.split_once(':').unwrap();
        // Declared one byte over: refused before the body is read.
        let req = format!(
            "{m} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{{\"records\":[",
            LIMIT + 1
        );
        let what = format!("{m} {path} with Content-Length {}", LIMIT + 1);
        raw(&s, &what, req.into()).await.expect(too_large);
    }
    // Chunked, found over the limit while reading.
    let mut req = b"POST /v0/topics/b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for _ in 0..LIMIT >> 20 {
        req.extend_from_slice(b"100000\r\n");
        req.extend_from_slice(&[b' '; 1 << 20]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"1\r\n \r\n0\r\n\r\n");
    let chunked = raw(&s, "a chunked POST over the limit", req).await;
    chunked.expect(too_large);
    // HTTP/2 streams the body: the limit holds there too.
    let mut h2 = H2::connect(s.port).await.expect("h2c");
    let big = vec![b' '; LIMIT + 1];
    let json = [("content-type", "application/json")];
    let r = h2.request("POST", "/v0/topics/b", &json, &big).await;
    let r = r.expect("an h2 answer");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    Resp::new(r.status, text, "an h2 POST over the limit").expect(too_large);
    // Exactly at the limit is read and judged on its content (a record over 1 MiB).
    let frame = r#"{"records":[{"data":""}]}"#;
    let pad = format!("\"{}\"", "x".repeat(LIMIT - frame.len()));
    let exact = frame.replace(r#""""#, &pad);
    assert_eq!(exact.len(), LIMIT);
    let r = post(&s, "/v0/topics/b", exact).await;
    r.expect((400, "record_too_large"));
    assert_eq!(world(&s).await, before, "an oversized body changed state");
    alive(&mut s).await;
}

// ---- concurrency and a seeded fuzz --------------------------------------------------------

#[tokio::test]
async fn concurrent_writers_with_one_idempotency_key_write_once() {
    let mut s = start().await;
    // The first round also races the topic's creation.
    for (round, want) in [(0, [1, 2, 3]), (1, [4, 5, 6])] {
        let key = format!("k{round}");
        let good = json!({ "records": [{}, {}, {}], "idempotency_key": key }).to_string();
        let junk = json!({ "records": 5, "idempotency_key": key }).to_string();
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let (client, url) = (s.client.clone(), s.url("/v0/topics/conc"));
                // One racer in three sends a refused body with the same key.
                let body = [&good, &junk][usize::from(i % 3 == 2)].clone();
                let r = client.post(url).header("content-type", "application/json");
                tokio::spawn(async move {
                    let r = r.body(body).send().await.expect("an answer");
                    (i, r.status().as_u16(), r.text().await.expect("a body"))
                })
            })
            .collect();
        let (mut fresh, mut created) = (0, 0);
        for t in tasks {
            let (i, status, text) = t.await.expect("a racer");
            if i % 3 == 2 {
                assert_eq!(status, 400, "{text}");
                continue;
            }
            assert!(matches!(status, 200 | 201), "{status}: {text}");
            let v: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(v["seqs"], json!(want), "{v}");
            assert!(v["deduped"].is_boolean(), "{v}");
            fresh += usize::from(v["deduped"] == false);
            created += usize::from(status == 201);
        }
        assert_eq!(fresh, 1, "round {round}: {fresh} writes were not deduped");
        let once = usize::from(round == 0);
        assert_eq!(created, once, "round {round}: {created} creations");
        let st = get(&s, "/v0/topics/conc").await.ok(200);
        assert_eq!([&st["head_seq"], &st["count"]], [want[2], want[2]]);
    }
    alive(&mut s).await;
}

#[tokio::test]
async fn seeded_fuzz_never_5xx_and_refusals_write_nothing() {
    let mut s = start().await;
    seed(&s, "fz").await;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let tokens = toks(
        r#"" \ \u0000 { [ ] } , : 1e400 -1 "\ud800" null \xff 18446744073709551616 \x00 \x20"#,
    );
    // `METHOD path body`, one a line.
    let bases = r#"
        POST /v0/topics/fz {"records":[{"data":{"a":[1]},"tag":"t","node":"n","meta":{"m":1}}]}
        POST /v0/topics/fz/diff {"from_seq":1,"limit":2,"node":["n"],"include_tags":true}
        PUT /v0/topics/fzc {"ttl_ms":0,"cap_records":9,"priority":3,"durable":false}
        POST /v0/topics/fzd/delete {"before_seq":1,"match":["tag","Glob","t*"]}
        POST /v0/watch {"topics":{"fz":{"from_seq":2}},"limit":5}"#;
    let bases: Vec<Vec<&str>> = bases
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let head = get(&s, "/v0/topics/fz").await.ok(200)["head_seq"].clone();
    let mut head = head.as_u64().expect("head_seq");
    let mut failures = Vec::new();
    for _ in 0..600 {
        let base = &bases[(next() as usize) % bases.len()];
        let (m, path) = (Method::from_bytes(base[0].as_bytes()).unwrap(), base[1]);
        let mut body = base[2].as_bytes().to_vec();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % (body.len() + 1);
            match next() % 4 {
                0 => body.truncate(at),
                1 if at < body.len() => body[at] = (next() % 256) as u8,
                _ => {
                    let t = &tokens[(next() as usize) % tokens.len()];
                    body.splice(at..at, t.iter().copied());
                }
            }
        }
        let r = send(&s, &m, path, CT, &body).await;
        failures.extend(r.check(None).err());
        if path == "/v0/topics/fz" && r.status < 300 {
            let v: Value = serde_json::from_str(&r.text).expect("JSON");
            head += v["count"].as_u64().expect("count");
        }
    }
    no_failures(&failures);
    let st = get(&s, "/v0/topics/fz").await.ok(200);
    assert_eq!(st["head_seq"], head, "refused fuzzed writes wrote: {st}");
    alive(&mut s).await;
}
