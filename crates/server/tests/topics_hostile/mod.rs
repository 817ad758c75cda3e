//! Shared by the `/v0` robustness tests: hostile-input tables, a request helper that records
//! every answer, and the checks every refusal must pass (no 5xx, the envelope with a documented
//! code, nothing changed, the server alive).
#![allow(dead_code)]

use crate::common::Server;
pub use crate::common::start_topics as start;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

pub type Headers<'a> = &'a [(&'a str, &'a [u8])];
pub const CT: Headers = &[("content-type", b"application/json")];
/// `limits.max_request_body_bytes`'s default (crates/server/src/config.rs).
pub const LIMIT: usize = 64 << 20;
pub const INVALID: (u16, &str) = (400, "invalid_request");
pub const NO_TOPIC: (u16, &str) = (404, "topic_not_found");

/// The documented error codes, by status (§1.1), and Riffle's 426 for `/v0/ws` without the
/// upgrade.
pub const CODES: &str = "400:invalid_request 400:batch_too_large 400:record_too_large \
    401:unauthorized 403:forbidden 404:topic_not_found 404:router_not_found 404:not_found \
    405:method_not_allowed 406:not_acceptable 409:router_cycle 409:topic_exists_incompatible \
    409:topic_not_empty 409:not_a_queue 413:payload_too_large 415:unsupported_media_type \
    422:topic_full 429:throttled 501:not_implemented \
    426:upgrade_required";

/// Whitespace-separated tokens, `\xHH` made a byte (`\x20` is a space): tables of hostile
/// values, raw bytes included.
pub fn toks(s: &str) -> Vec<Vec<u8>> {
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
pub fn wrap(pre: &str, v: &[u8], post: &str) -> Vec<u8> {
    [pre.as_bytes(), v, post.as_bytes()].concat()
}

/// Rows `names | values;`: `pre"name":value post` for each value of each name.
pub fn fields(table: &str, pre: &str, post: &str) -> Vec<Vec<u8>> {
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
pub fn no_failures(failures: &[String]) {
    let n = failures.len();
    assert!(n == 0, "{n} failures:\n{}", failures.join("\n"));
}

pub struct Resp {
    pub status: u16,
    pub text: String,
    pub what: String,
}

impl Resp {
    pub fn new(status: u16, text: String, what: &str) -> Self {
        let what = what.to_string();
        Self { status, text, what }
    }

    /// What is wrong with this answer, if anything: a 5xx; a 4xx that is not the envelope
    /// with a documented code; or not `want` (status, code).
    pub fn check(&self, want: Option<(u16, &str)>) -> Result<(), String> {
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
    pub fn sane(&self) {
        self.check(None).unwrap_or_else(|e| panic!("{e}"));
    }

    #[track_caller]
    pub fn expect(&self, want: (u16, &str)) {
        self.check(Some(want)).unwrap_or_else(|e| panic!("{e}"));
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        self.expect((status, ""));
        let v = serde_json::from_str(&self.text);
        v.unwrap_or_else(|e| panic!("{}: {e}", self.what))
    }
}

pub fn shown(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    let more = (body.len() > 120).then(|| format!("...({} bytes)", body.len()));
    s + &more.unwrap_or_default()
}

pub async fn send(s: &Server, m: &Method, path: &str, headers: Headers<'_>, body: &[u8]) -> Resp {
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

pub async fn get(s: &Server, path: &str) -> Resp {
    send(s, &Method::GET, path, &[], b"").await
}

pub async fn post(s: &Server, path: &str, body: impl AsRef<[u8]>) -> Resp {
    send(s, &Method::POST, path, CT, body.as_ref()).await
}

/// Everything a request could change: each topic's state (minus read times and priority,
/// which reads move) and records (a diff's text), and the number of watch sessions.
pub async fn world(s: &Server) -> Value {
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
pub type Case = (
    Method,
    String,
    Vec<(&'static str, Vec<u8>)>,
    Vec<u8>,
    (u16, &'static str),
);

pub fn case(
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
    want: (u16, &'static str),
) -> Case {
    let headers = vec![("content-type", b"application/json".to_vec())];
    (method, path.to_string(), headers, body.into(), want)
}

pub fn bad(path: &str, body: impl Into<Vec<u8>>) -> Case {
    case(Method::POST, path, body, INVALID)
}

/// `case` with other headers.
pub fn with(mut c: Case, headers: &[(&'static str, &[u8])]) -> Case {
    c.2 = headers.iter().map(|(k, v)| (*k, v.to_vec())).collect();
    c
}

/// Send each case: each must be refused as it says and leave the world as it was. Lists
/// every failing case.
pub async fn refuse_all(s: &Server, cases: Vec<Case>) {
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
pub async fn clean(s: &Server, m: &Method, path: &str, h: Headers<'_>, body: &[u8]) -> Resp {
    let before = world(s).await;
    let r = send(s, m, path, h, body).await;
    r.sane();
    let same = r.status < 400 || world(s).await == before;
    assert!(same, "{}: refused, yet changed state", r.what);
    r
}

/// The server runs, `/v0/health` answers 200, and no handler panicked.
pub async fn alive(s: &mut Server) {
    assert!(s.is_running(), "the server died; log:\n{}", s.stderr());
    let h = get(s, "/v0/health").await.ok(200);
    assert_eq!(h["status"], "ok", "{h}");
    let log = s.stderr();
    assert!(!log.contains("panicked"), "a handler panicked:\n{log}");
}

/// Three records in `topic`, tagged `a`, `ab` and `b`, from node `n1`.
pub async fn seed(s: &Server, topic: &str) {
    let body = json!({ "node": "n1", "records": [
        { "data": { "i": 1 }, "tag": "a", "meta": { "k": 1 } },
        { "data": [1, "two", null], "tag": "ab" },
        { "data": "three", "tag": "b" },
    ]});
    let r = post(s, &format!("/v0/topics/{topic}"), body.to_string()).await;
    assert!(matches!(r.status, 200 | 201), "{}: {}", r.what, r.text);
}

pub fn nested(depth: usize) -> Vec<u8> {
    [b"[".repeat(depth), b"]".repeat(depth)].concat()
}

/// `"k0":{},"k1":{},...`: `n` members.
pub fn keys(n: usize) -> String {
    let k: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{{}}")).collect();
    k.join(",")
}

// ---- PUT /v0/topics/:t and inline config --------------------------------------------------
