//! Hostile and edge-case input against every `/v0` endpoint (topics-v0-api.md): no input gets
//! a 5xx or kills the server, every 4xx is the JSON envelope `{"error":{"code","message"}}`
//! with a documented code, and a rejected request changes nothing (every topic's state and
//! records, the topic list and the watch-session count are compared before and after).

mod common;

use common::{H2, Options, Server, raw_exchange};
use futures_util::StreamExt;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use std::time::Duration;

type Headers<'a> = &'a [(&'a str, &'a [u8])];
const CT: Headers = &[("content-type", b"application/json")];
/// `limits.max_request_body_bytes`'s default (crates/server/src/config.rs).
const LIMIT: usize = 10_485_760;
const INVALID: (u16, &str) = (400, "invalid_request");
const NO_TOPIC: (u16, &str) = (404, "topic_not_found");

/// A server with a data directory, as topics_api.rs starts one.
async fn start() -> Server {
    let mode = std::env::var("RIFFLE_IT_STORAGE_MODE").ok();
    let mode = mode.filter(|m| m != "memory");
    let mode = mode.as_deref().unwrap_or("file-durable");
    let opts = Options::default().env("DS_STORAGE__MODE", mode);
    Server::start_with(opts.env("DS_STORAGE__DATA_DIR", "data")).await
}

/// The documented error codes, by status (§1.1).
const CODES: &str = "400:invalid_request 400:batch_too_large 400:record_too_large \
    401:unauthorized 403:forbidden 404:topic_not_found 404:router_not_found 404:not_found \
    405:method_not_allowed 406:not_acceptable 409:router_cycle 409:topic_exists_incompatible \
    409:topic_not_empty 409:not_a_queue 413:payload_too_large 415:unsupported_media_type \
    422:topic_full 429:throttled 501:not_implemented";

/// Whitespace-separated tokens, `\xHH` made a byte (`\x20` is a space): tables of hostile
/// values, raw bytes included.
fn toks(s: &str) -> Vec<Vec<u8>> {
    let one = |t: &str| {
        let mut parts = t.split("\\x");
        let mut out = parts.next().unwrap_or_default().as_bytes().to_vec();
        for p in parts {
            out.push(u8::from_str_radix(&p[..2], 16).expect("\\xHH"));
            out.extend_from_slice(&p.as_bytes()[2..]);
        }
        out
    };
    s.split_whitespace().map(one).collect()
}

/// `pre` + `v` + `post`.
fn wrap(pre: &str, v: &[u8], post: &str) -> Vec<u8> {
    [pre.as_bytes(), v, post.as_bytes()].concat()
}

/// Rows `names | values;`: `pre"name":value post` for each value of each name.
fn fields(table: &str, pre: &str, post: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (names, values) in table.split(';').filter_map(|row| row.split_once('|')) {
        for n in names.split_whitespace() {
            let pre = format!("{pre}\"{n}\":");
            out.extend(toks(values).iter().map(|v| wrap(&pre, v, post)));
        }
    }
    out
}

#[track_caller]
fn no_failures(failures: &[String]) {
    let n = failures.len();
    assert!(n == 0, "{n} failures:\n{}", failures.join("\n"));
}

struct Resp {
    status: u16,
    text: String,
    what: String,
}

impl Resp {
    fn new(status: u16, text: String, what: &str) -> Self {
        let what = what.to_string();
        Self { status, text, what }
    }

    /// What is wrong with this answer, if anything: a 5xx; a 4xx that is not the envelope
    /// with a documented code; or not `want` (status, code).
    fn check(&self, want: Option<(u16, &str)>) -> Result<(), String> {
        let (what, text, status) = (&self.what, &self.text, self.status);
        let wrong = |why: String| Err(format!("{what}: {why}; answered {status}: {text}"));
        if status >= 500 && want.map(|w| w.0) != Some(status) {
            return wrong("a 5xx".into());
        }
        if let Some((st, _)) = want
            && st != status
        {
            return wrong(format!("expected {st}"));
        }
        if status < 400 || what.starts_with("HEAD ") {
            return Ok(());
        }
        let v: Value = serde_json::from_str(text).unwrap_or_default();
        let (e, code) = (&v["error"], v["error"]["code"].as_str().unwrap_or_default());
        let documented = CODES
            .split_whitespace()
            .any(|c| c == format!("{status}:{code}"));
        let detail = e["detail"].is_null() || e["detail"].is_object();
        if !(documented && e["message"].is_string() && detail) {
            return wrong("not the error envelope with a documented code".into());
        }
        match want {
            Some((_, c)) if !c.is_empty() && c != code => wrong(format!("expected {c:?}")),
            _ => Ok(()),
        }
    }

    /// Not a 5xx; a 4xx is the envelope with a documented code.
    #[track_caller]
    fn sane(&self) {
        self.check(None).unwrap_or_else(|e| panic!("{e}"));
    }

    #[track_caller]
    fn expect(&self, want: (u16, &str)) {
        self.check(Some(want)).unwrap_or_else(|e| panic!("{e}"));
    }

    #[track_caller]
    fn ok(&self, status: u16) -> Value {
        self.expect((status, ""));
        let v = serde_json::from_str(&self.text);
        v.unwrap_or_else(|e| panic!("{}: {e}", self.what))
    }
}

fn shown(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    let more = (body.len() > 120).then(|| format!("...({} bytes)", body.len()));
    s + &more.unwrap_or_default()
}

async fn send(s: &Server, m: &Method, path: &str, headers: Headers<'_>, body: &[u8]) -> Resp {
    let hs: Vec<_> = headers.iter().map(|(k, v)| (k, shown(v))).collect();
    let (p, b) = (shown(path.as_bytes()), shown(body));
    let what = format!("{m} {p} {hs:?} body {b:?}");
    let mut req = s.client.request(m.clone(), s.url(path));
    for (k, v) in headers {
        req = req.header(*k, HeaderValue::from_bytes(v).expect("a header value"));
    }
    let r = req.body(body.to_vec()).send().await;
    let r = r.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    Resp::new(status, text, &what)
}

async fn get(s: &Server, path: &str) -> Resp {
    send(s, &Method::GET, path, &[], b"").await
}

async fn post(s: &Server, path: &str, body: impl AsRef<[u8]>) -> Resp {
    send(s, &Method::POST, path, CT, body.as_ref()).await
}

/// Everything a request could change: each topic's state (minus read times and priority,
/// which reads move) and records (a diff's text), and the number of watch sessions.
async fn world(s: &Server) -> Value {
    let list = get(s, "/v0/topics?page_size=1000").await.ok(200);
    let mut topics = serde_json::Map::new();
    for t in list["topics"].as_array().expect("topics[]") {
        let name = t["topic"].as_str().expect("a topic name");
        let info = get(s, &format!("/v0/topics/{name}?touch=false")).await;
        let mut info = info.ok(200);
        for k in ["last_read_ts", "effective_priority", "performance"] {
            info.as_object_mut().expect("an object").remove(k);
        }
        let path = format!("/v0/topics/{name}/diff");
        let d = post(s, &path, r#"{"limit":1000,"include_tags":true}"#).await;
        assert_eq!(d.status, 200, "{}", d.text);
        let cut = d.text.rfind(",\"performance\":").unwrap_or(d.text.len());
        let diff = &d.text[..cut];
        topics.insert(name.into(), json!({ "info": info, "diff": diff }));
    }
    let h: Headers = &[("accept", b"application/json")];
    let m = send(s, &Method::GET, "/v0/metrics", h, b"").await.ok(200);
    json!({ "topics": topics, "watch_sessions": m["watch_sessions"] })
}

/// A request (method, path, headers, body) that must be refused with a (status, code).
type Case = (
    Method,
    String,
    Vec<(&'static str, Vec<u8>)>,
    Vec<u8>,
    (u16, &'static str),
);

fn case(method: Method, path: &str, body: impl Into<Vec<u8>>, want: (u16, &'static str)) -> Case {
    let headers = vec![("content-type", b"application/json".to_vec())];
    (method, path.to_string(), headers, body.into(), want)
}

fn bad(path: &str, body: impl Into<Vec<u8>>) -> Case {
    case(Method::POST, path, body, INVALID)
}

/// `case` with other headers.
fn with(mut c: Case, headers: &[(&'static str, &[u8])]) -> Case {
    c.2 = headers.iter().map(|(k, v)| (*k, v.to_vec())).collect();
    c
}

/// Send each case: each must be refused as it says and leave the world as it was. Lists
/// every failing case.
async fn refuse_all(s: &Server, cases: Vec<Case>) {
    let mut before = world(s).await;
    let mut failures = Vec::new();
    for (method, path, headers, body, want) in cases {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, &v[..])).collect();
        let r = send(s, &method, &path, &headers, &body).await;
        failures.extend(r.check(Some(want)).err());
        let after = world(s).await;
        if after != before {
            failures.push(format!("{}: changed state ({})", r.what, r.status));
            before = after; // later cases compare against the state now
        }
    }
    no_failures(&failures);
}

/// Send; a 4xx must change nothing.
async fn clean(s: &Server, m: &Method, path: &str, h: Headers<'_>, body: &[u8]) -> Resp {
    let before = world(s).await;
    let r = send(s, m, path, h, body).await;
    r.sane();
    let same = r.status < 400 || world(s).await == before;
    assert!(same, "{}: refused, yet changed state", r.what);
    r
}

/// The server runs, `/v0/health` answers 200, and no handler panicked.
async fn alive(s: &mut Server) {
    assert!(s.is_running(), "the server died; log:\n{}", s.stderr());
    let h = get(s, "/v0/health").await.ok(200);
    assert_eq!(h["status"], "ok", "{h}");
    let log = s.stderr();
    assert!(!log.contains("panicked"), "a handler panicked:\n{log}");
}

/// Three records in `topic`, tagged `a`, `ab` and `b`, from node `n1`.
async fn seed(s: &Server, topic: &str) {
    let body = json!({ "node": "n1", "records": [
        { "data": { "i": 1 }, "tag": "a", "meta": { "k": 1 } },
        { "data": [1, "two", null], "tag": "ab" },
        { "data": "three", "tag": "b" },
    ]});
    let r = post(s, &format!("/v0/topics/{topic}"), body.to_string()).await;
    assert!(matches!(r.status, 200 | 201), "{}: {}", r.what, r.text);
}

fn nested(depth: usize) -> Vec<u8> {
    [b"[".repeat(depth), b"]".repeat(depth)].concat()
}

/// `"k0":{},"k1":{},...`: `n` members.
fn keys(n: usize) -> String {
    let k: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{{}}")).collect();
    k.join(",")
}

// ---- PUT /v0/topics/:t and inline config --------------------------------------------------

#[tokio::test]
async fn config_fields_of_wrong_types_are_400_and_change_nothing() {
    let mut s = start().await;
    let r = post(&s, "/v0/topics/cfg", r#"{"records":[{}]}"#).await;
    r.ok(201);
    let table = r#"ttl_ms cap_records cap_bytes idempotency_window_ms lease_ms claim_jitter_ms
            max_deliveries | "5" -1 1.5 1e400 18446744073709551616 true [] {} "";
        durable auto_priority auto_create dedupe_node leases_durable | "true" 1 0 [] {} "";
        type discard durability | 1 true [] {} "" "LOG" "log\u0000" "\ud800" "x";
        priority | "1" 1.5 1e400 9223372036854775808 -9223372036854775809 true [] {};
        dead_letter | 1 true [] {} "" "-bad" "a/b" "\ud800" "\xff""#;
    let mut bodies = fields(table, "{", "}");
    let long = format!(r#"{{"dead_letter":"{}"}}"#, "d".repeat(256));
    bodies.extend([long.into_bytes(), nested(10_000)]);
    bodies.extend(toks(
        r#"{"durable":true,"durability":"disk"} {"durable":false,"durability":"fsync"}
        {"no_such_field":1} {"ttl_ms":1,"ttl_ms":2} {"type":"log"}\x20trailing {"ttl_ms":1
        [] "str" 5 true {"ttl_ms":"\xff"}"#,
    ));
    let mut cases = Vec::new();
    for b in &bodies {
        cases.push(case(Method::PUT, "/v0/topics/cfg", b.clone(), INVALID));
        cases.push(case(Method::PUT, "/v0/topics/fresh", b.clone(), INVALID));
        let inline = wrap(r#"{"records":[{}],"config":"#, b, "}");
        cases.push(bad("/v0/topics/fresh", inline));
    }
    let put = |body: &str, want| case(Method::PUT, "/v0/topics/cfg", body, want);
    cases.push(put("null", INVALID));
    cases.push(put(r#"{"dead_letter":"cfg"}"#, INVALID));
    let conflict = (409, "topic_exists_incompatible");
    cases.push(put(r#"{"type":"queue"}"#, conflict));
    refuse_all(&s, cases).await;

    // Extreme but valid values: taken (clamped where documented), and the topic works.
    let max = u64::MAX;
    let body = json!({
        "ttl_ms": max, "cap_records": max, "cap_bytes": max, "idempotency_window_ms": max,
        "priority": i64::MIN, "lease_ms": max, "claim_jitter_ms": max, "max_deliveries": max,
    });
    let body = body.to_string().into_bytes();
    let r = send(&s, &Method::PUT, "/v0/topics/cfg", CT, &body).await;
    let c = r.ok(200)["config"].clone();
    let clamped = [&c["priority"], &c["lease_ms"], &c["claim_jitter_ms"]];
    assert_eq!(clamped, [-1000, 86_400_000, 5000], "{c}");
    let w = r#"{"records":[{},{}],"idempotency_key":"k"}"#;
    let first = post(&s, "/v0/topics/cfg", w).await.ok(200);
    let again = post(&s, "/v0/topics/cfg", w).await.ok(200);
    let got = [&first["seqs"], &again["seqs"], &again["deduped"]];
    assert_eq!(got, [&json!([2, 3]), &json!([2, 3]), &json!(true)]);
    let d = post(&s, "/v0/topics/cfg/diff", "{}").await.ok(200);
    assert_eq!(d["records"].as_array().map(Vec::len), Some(3), "{d}");
    let del = json!({ "before_seq": max }).to_string();
    let d = post(&s, "/v0/topics/cfg/delete", del).await.ok(200);
    assert_eq!([&d["count"], &d["earliest_seq"]], [0, 4], "{d}");
    let w = post(&s, "/v0/topics/cfg", r#"{"records":[{}]}"#).await;
    assert_eq!(w.ok(200)["seqs"], json!([4]));
    alive(&mut s).await;
}

// ---- POST /v0/topics/:t ---------------------------------------------------------------------

#[tokio::test]
async fn write_bodies_refused_whole_or_kept_verbatim() {
    let mut s = start().await;
    seed(&s, "v").await;
    let p = "/v0/topics/v";
    let mut cases = Vec::new();
    let records = r#"5 "x" {} null [] [null] [1] ["x"] [true] [[]] [{"data":1},5]"#;
    for r in toks(records) {
        cases.push(bad(p, wrap(r#"{"records":"#, &r, "}")));
    }
    let table = r#"tag | 1 true ["a"] {} "\ud800" "\xc3"; node | 1 [] {};
        data | } "a "a\x00b" "\xff\xfe" 2; meta | "x" 1 [] true "{}" {"\ud800":1} {"a":"\xff"}"#;
    let mut bad_records = fields(table, r#"{"data":1,"#, "}");
    bad_records.extend([
        format!(r#"{{"tag":"{}"}}"#, "t".repeat(257)).into_bytes(),
        format!(r#"{{"node":"{}"}}"#, "n".repeat(129)).into_bytes(),
        format!(r#"{{"meta":{{{}}}}}"#, keys(65)).into_bytes(),
        format!(r#"{{"meta":{{"x":"{}"}}}}"#, "m".repeat(17 << 10)).into_bytes(),
    ]);
    for r in &bad_records {
        cases.push(bad(p, wrap(r#"{"records":["#, r, "]}")));
        // All or nothing: a bad record after good ones writes none of them.
        let pre = r#"{"records":[{"data":"ok"},{"data":2},"#;
        cases.push(bad(p, wrap(pre, r, "]}")));
    }
    let key257 = "k".repeat(257);
    let top = format!(
        r#"idempotency_key | 1 [] {{}} true "{key257}"; node | 5 ["a"] "{}";
        create | "yes" 1; disable_backpressure | "no"; config | 5 "x""#,
        "n".repeat(129)
    );
    for b in fields(&top, r#"{"records":[{}],"#, "}") {
        cases.push(bad(p, b));
    }
    let wholes = r#"\x20\x0a\x09 null [] "str" 0 { \xef\xbb\xbf{"records":[{"data":1}]}"#;
    let wholes = toks(wholes).into_iter().chain([vec![], nested(10_000)]);
    cases.extend(wholes.map(|b| bad(p, b)));
    let one = r#"{"records":[{"data":1}]}"#;
    cases.push(bad(&format!("{p}?return_seqs=maybe"), one));
    cases.push(with(bad(p, one), &[("idempotency-key", key257.as_bytes())]));
    let many = format!(r#"{{"records":[{}]}}"#, vec!["{}"; 10_001].join(","));
    cases.push(case(Method::POST, p, many, (400, "batch_too_large")));
    let x = "x".repeat(1 << 20);
    let huge = format!(r#"{{"records":[{{}},{{"data":"{x}"}}]}}"#);
    cases.push(case(Method::POST, p, huge, (400, "record_too_large")));
    let absent = r#"{"records":[{"data":1}],"create":false}"#;
    let nope = "/v0/topics/nope";
    cases.push(case(Method::POST, nope, absent, NO_TOPIC));
    refuse_all(&s, cases).await;

    // Odd but valid records: written (in one batch, with a 256-character key), read verbatim.
    let odd = r#"{"data":1e400} {"data":-1} {"data":18446744073709551616} {"data":"nul\u0000"}
        {"data":[[[[[[[[[[1]]]]]]]]]]} {"data":5,"tag":"a\u0000b","meta":null}"#;
    let mut odd: Vec<String> = odd.split_whitespace().map(String::from).collect();
    let (tag, node) = ("t".repeat(256), "n".repeat(128));
    let meta = keys(64);
    odd.push(format!(
        r#"{{"tag":"{tag}","node":"{node}","meta":{{{meta}}}}}"#
    ));
    let (key, recs) = ("k".repeat(256), odd.join(","));
    let body = format!(r#"{{"records":[{recs}],"idempotency_key":"{key}"}}"#);
    let w = post(&s, p, body).await.ok(200);
    assert_eq!(w["seqs"], json!([4, 5, 6, 7, 8, 9, 10]), "{w}");
    let d = post(&s, &format!("{p}/diff"), r#"{"from_seq":3}"#).await;
    for r in &odd[..5] {
        let verbatim = d.text.contains(&r[1..r.len() - 1]);
        assert!(verbatim, "{r} not returned verbatim: {}", d.text);
    }
    // Deeply nested or lone-surrogate data: stored verbatim, or refused cleanly.
    let deep = wrap(r#"{"records":[{"data":"#, &nested(10_000), "}]}");
    let lone = br#"{"records":[{"data":"\ud800"}]}"#;
    for body in [&deep[..], lone] {
        clean(&s, &Method::POST, p, CT, body).await;
    }
    alive(&mut s).await;
}

/// Bodies are JSON objects (§1.3): not an array of the fields in declaration order (which
/// serde's derived `Deserialize` takes), and not bytes that are not UTF-8, even in a member
/// the server ignores (RFC 8259 §8.1).
#[tokio::test]
async fn bodies_must_be_strict_json_objects() {
    let mut s = start().await;
    seed(&s, "a").await;
    let nulls = |n| vec!["null"; n].join(",");
    let watch = format!(r#"[null,{{"a":{{}}}},{}]"#, nulls(7));
    let config = format!("[null,5,{}]", nulls(15));
    let cases = vec![
        bad("/v0/topics/a", r#"{"records":[[1,null,null,null]]}"#),
        bad("/v0/topics/a", r#"[[{"data":1}],null,null,null,null]"#),
        bad("/v0/topics/a", r#"{"records":[{}],"config":[]}"#),
        bad("/v0/topics/a/delete", "[2,null]"),
        bad("/v0/topics/a/diff", "[0,1,null,false,null,0,null]"),
        bad("/v0/watch", r#"{"topics":{"a":[]}}"#),
        bad("/v0/watch", watch),
        case(Method::PUT, "/v0/topics/a", config, INVALID),
        bad(
            "/v0/topics/a",
            b"{\"records\":[{}],\"junk\":\"\xff\"}".to_vec(),
        ),
        bad(
            "/v0/topics/a",
            b"{\"records\":[{\"junk\":\"\xe9t\xe9\"}]}".to_vec(),
        ),
    ];
    refuse_all(&s, cases).await;
    alive(&mut s).await;
}

// ---- diff and record deletes ----------------------------------------------------------------

#[tokio::test]
async fn hostile_diff_bodies() {
    let mut s = start().await;
    seed(&s, "d").await;
    let p = "/v0/topics/d/diff";
    let mut cases = Vec::new();
    let table = r#"from_seq | -1 "1" 1.5 1e400 18446744073709551616 null;
        limit | -1 "5" 1.5 1e400 18446744073709551616; wait_ms | -1 "5" 1e400 1e19 9e19;
        node | 5 [1] {} true [null] ["a",2] "\ud800"; max_batch_bytes | -1 "x" 1.5;
        include_tags | "yes" 1 null; include_meta | "no" 0"#;
    cases.extend(fields(table, "{", "}").into_iter().map(|b| bad(p, b)));
    let wholes = toks(r#"null [] "str" 5 { {"from_seq":"\xff"}"#);
    cases.extend(wholes.into_iter().map(|b| bad(p, b)));
    cases.push(bad(p, nested(10_000)));
    let missing = "/v0/topics/missing/diff";
    cases.push(case(Method::POST, missing, "{}", NO_TOPIC));
    refuse_all(&s, cases).await;

    // Extreme but valid values answer 200 at once (a huge wait_ms returns: records exist).
    let max = u64::MAX;
    for (body, n) in [
        (json!({}), 3),
        (json!({ "limit": 0 }), 1),
        (json!({ "limit": max, "wait_ms": max }), 3),
        (json!({ "max_batch_bytes": 0 }), 1),
        (json!({ "max_batch_bytes": max }), 3),
        (json!({ "node": [] }), 3),
        (json!({ "node": ["", "n".repeat(10_000)] }), 3),
        (json!({ "node": "n1" }), 0),
        (json!({ "from_seq": 1u64 << 53 }), 3),
        (json!({ "from_seq": max, "include_tags": true }), 3),
    ] {
        let d = post(&s, p, body.to_string()).await.ok(200);
        let got = d["records"].as_array().map(Vec::len);
        assert_eq!(got, Some(n), "{body}: {d}");
        let past = body.get("from_seq").is_some();
        assert!(!past || d["tombstone"]["reason"] == "recreated", "{d}");
    }
    // A short long-poll ends caught up; a huge one outlives a client that gives up.
    let d = post(&s, p, r#"{"from_seq":3,"wait_ms":50}"#).await.ok(200);
    assert_eq!(d["caught_up"], true, "{d}");
    let url = s.url(p);
    let r = s
        .client
        .post(url)
        .header("content-type", "application/json");
    let r = r.body(json!({ "from_seq": 3, "wait_ms": max }).to_string());
    let gave_up = r.timeout(Duration::from_millis(300)).send().await;
    let timed_out = gave_up.as_ref().is_err_and(|e| e.is_timeout());
    assert!(timed_out, "{gave_up:?}");
    alive(&mut s).await;
}

#[tokio::test]
async fn hostile_delete_bodies_delete_nothing() {
    let mut s = start().await;
    seed(&s, "x").await;
    let p = "/v0/topics/x/delete";
    let mut cases = Vec::new();
    let matches = toks(
        r#"["tag"] ["tag","Eq"] ["tag","Glob","a*b*"] ["tag","Glob","*a"] ["tag","Glob","a*b"]
        ["tag","Regex","x"] [1,2,3] {} {"tag":"a"} 5 true [] ["TAG","Eq","a"] ["tag","Eq",5]
        ["tag","Eq","a","more"] ["tag","eq","a"] "\ud800" "\xff""#,
    );
    for m in &matches {
        cases.push(bad(p, wrap(r#"{"match":"#, m, "}")));
        // A bad match refuses the whole delete, before_seq included.
        cases.push(bad(p, wrap(r#"{"before_seq":3,"match":"#, m, "}")));
    }
    for b in toks(r#""3" -1 1.5 1e400 18446744073709551616 true []"#) {
        cases.push(bad(p, wrap(r#"{"before_seq":"#, &b, "}")));
    }
    let wholes = r#"{} {"match":null} {"before_seq":null,"match":null} null [] "str" 5 {"#;
    let wholes = toks(wholes).into_iter().chain([vec![], nested(10_000)]);
    cases.extend(wholes.map(|b| bad(p, b)));
    let missing = "/v0/topics/missing/delete";
    let before2 = r#"{"before_seq":2}"#;
    cases.push(case(Method::POST, missing, before2, NO_TOPIC));
    refuse_all(&s, cases).await;

    // Matches of nothing delete nothing; a huge before_seq empties the topic, and writes go on.
    let nothing = r#"{"match":"zzz"} {"match":["tag","Glob","zz*"]} {"before_seq":0}"#;
    for body in toks(nothing) {
        let d = post(&s, p, body).await.ok(200);
        assert_eq!([&d["deleted"], &d["count"]], [0, 3], "{d}");
    }
    let all = json!({ "before_seq": u64::MAX }).to_string();
    let d = post(&s, p, all).await.ok(200);
    assert_eq!([&d["deleted"], &d["earliest_seq"]], [3, 4], "{d}");
    seed(&s, "x").await;
    let st = get(&s, "/v0/topics/x").await.ok(200);
    assert_eq!([&st["head_seq"], &st["count"]], [6, 3], "{st}");
    alive(&mut s).await;
}

/// Read an SSE stream until its `caught-up` event (at most 5 s).
async fn caught_up(r: reqwest::Response) {
    let (mut body, mut seen) = (r.bytes_stream(), String::new());
    while !seen.contains("event: caught-up") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await;
        let chunk = chunk.unwrap_or_else(|_| panic!("no caught-up event: {seen}"));
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
    }
}

// ---- watch ----------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_watch_bodies_and_stream_paths() {
    let mut s = start().await;
    seed(&s, "w").await;
    let p = "/v0/watch";
    let mut cases = Vec::new();
    let mut topics = toks(
        r#"[] "w" 5 null {} {"w":5} {"w":null} {"w":{"from_seq":-1}} {"w":{"from_seq":"1"}}
        {"w":{"from_seq":1e400}} {"w":{"tail":"yes"}} {"-x":{}} {"":{}} {"a/b":{}} {"é":{}}
        {"a\u0000":{}} {"w":{},"w\x20":{}} {"\ud800":{}}"#,
    );
    topics.push(format!(r#"{{"{}":{{}}}}"#, "a".repeat(256)).into_bytes());
    topics.push(format!("{{{}}}", keys(257)).into_bytes());
    for t in &topics {
        cases.push(bad(p, wrap(r#"{"topics":"#, t, "}")));
    }
    let opts = toks(
        r#""heartbeat_ms":-1 "heartbeat_ms":"x" "limit":-1 "node":5 "node":[1] "node":{}
        "consistency":"weird" "consistency":5 "include_data":"no" "max_batch_bytes":1e400
        "include_tags":null"#,
    );
    for o in &opts {
        cases.push(bad(p, wrap(r#"{"topics":{"w":{}},"#, o, "}")));
    }
    let wholes = toks(r#"null [] "str" { {"topics":{"\xff":{}}}"#);
    cases.extend(wholes.into_iter().chain([vec![]]).map(|b| bad(p, b)));
    let w = r#"{"topics":{"w":{}}}"#;
    cases.push(bad(&format!("{p}?lenient=maybe"), w));
    let nope = r#"{"topics":{"nope":{}}}"#;
    cases.push(bad(&format!("{p}?lenient=true"), nope));
    let all = format!(r#"{{"topics":{{{}}}}}"#, keys(256));
    let some = r#"{"topics":{"w":{},"nope":{}}}"#.to_string();
    for b in [nope.to_string(), some, all] {
        cases.push(case(Method::POST, p, b, NO_TOPIC));
    }
    // Stream paths: unknown or weird wids, other methods, and an Accept that is not SSE.
    let sse: &[(&str, &[u8])] = &[("accept", b"text/event-stream")];
    let long_wid = format!("wid_{}", "A".repeat(10_000));
    let wids = "wid_x wid_%00 wid_%zz %2e%2e wid_%2F..%2F %F0%9F%98%80 ... wid_\u{e9}";
    for wid in wids.split_whitespace().chain([long_wid.as_str()]) {
        let c = case(Method::GET, &format!("{p}/{wid}"), "", (404, "not_found"));
        cases.push(with(c, sse));
    }
    let c = case(Method::GET, "/v0/watch/wid_x", "", (406, "not_acceptable"));
    cases.push(with(c, &[("accept", b"text/html")]));
    let not_allowed = (405, "method_not_allowed");
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        cases.push(case(m, "/v0/watch/wid_x", "{}", not_allowed));
    }
    cases.push(case(Method::GET, p, "", not_allowed));
    refuse_all(&s, cases).await;

    // Extreme but valid sessions are made, and their streams serve whatever Last-Event-ID.
    let max = u64::MAX;
    let from_max = json!({ "topics": { "w": { "from_seq": max } }, "heartbeat_ms": 0 });
    let edge = json!({ "topics": { "w": {}, "later": { "tail": true } }, "heartbeat_ms": max,
        "limit": 0, "max_batch_bytes": 0, "node": [] });
    let lenient = json!({ "topics": { "w": {}, "nope": {} } });
    let mut ids = toks(r#"!!! e30 eyJ3IjotMX0 \xff"#);
    ids.push(vec![b'A'; 8000]);
    let lenient_path = "/v0/watch?lenient=true";
    for (body, path) in [(from_max, p), (edge, p), (lenient, lenient_path)] {
        let v = post(&s, path, body.to_string()).await.ok(200);
        let url = s.url(v["stream_url"].as_str().expect("stream_url"));
        for id in &ids {
            let r = s.client.get(&url).header("accept", "text/event-stream");
            let id_value = HeaderValue::from_bytes(id).unwrap();
            let r = r.header("last-event-id", id_value).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url} with Last-Event-ID {:?}", shown(id));
            caught_up(r).await;
        }
    }
    alive(&mut s).await;
}

// ---- paths, methods, content types, degenerate bodies -----------------------------------

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
        /v0/topics/a/b/c /v0/topics/ok/ /v0/routers/r /v0/ws /v0/health/x";
    for path in unknown.split_whitespace() {
        cases.push(case(Method::GET, path, "", (404, "not_found")));
        cases.push(case(Method::POST, path, write, (404, "not_found")));
    }
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

/// Queues are documented (§1.3); until they are served, their endpoints must still not 5xx.
#[tokio::test]
/// Queue operations are issue 10: until then a log topic answers `409 not_a_queue` as
/// documented, and a queue topic says plainly that they are not implemented (501, the one 5xx
/// allowed here), never a crash or a 500.
async fn queue_endpoints_never_answer_5xx() {
    let mut s = start().await;
    let queue = br#"{"type":"queue"}"#;
    let r = send(&s, &Method::PUT, "/v0/topics/q", CT, queue).await;
    r.ok(201);
    let r = send(&s, &Method::PUT, "/v0/topics/l", CT, b"{}").await;
    r.ok(201);
    let mut failures = Vec::new();
    for (m, op, body) in [
        (Method::POST, "claim", r#"{"node":"w"}"#),
        (Method::POST, "ack", r#"{"node":"w","seqs":[1]}"#),
        (Method::POST, "nack", r#"{"node":"w","seqs":[1]}"#),
        (Method::POST, "extend", r#"{"node":"w","seqs":[1]}"#),
        (Method::GET, "work?node=w", ""),
    ] {
        let r = send(&s, &m, &format!("/v0/topics/l/{op}"), CT, body.as_bytes()).await;
        failures.extend(r.check(Some((409, "not_a_queue"))).err());
        let r = send(&s, &m, &format!("/v0/topics/q/{op}"), CT, body.as_bytes()).await;
        failures.extend(r.check(Some((501, "not_implemented"))).err());
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
    for _ in 0..10 {
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
