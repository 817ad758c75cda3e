//! Shared by the `/v0` black-box tests: a server with a data directory, and request and
//! assertion helpers. Built from `topics-v0-api.md` and `topics-README.md` only.
#![allow(dead_code)]

pub mod sse;

pub use crate::common::start_topics as start;
use crate::common::{self, Server};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

pub const JSON: &str = "application/json";
pub const FORM: &str = "application/x-www-form-urlencoded";

// ---- helpers -----------------------------------------------------------------------------

/// A finished response: status, content type and body text.
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    /// `METHOD path`, for messages.
    what: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        let v = serde_json::from_str(&self.text);
        v.unwrap_or_else(|e| panic!("{}: not JSON ({e}): {:?}", self.what, self.text))
    }

    /// Assert a JSON success with `status`, bare data (no `error`) and a `performance` block.
    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text);
        let ct = &self.content_type;
        assert!(ct.starts_with(JSON), "{}: content-type {ct:?}", self.what);
        let v = self.json();
        assert!(v.get("error").is_none(), "{}: {v}", self.what);
        let ms = v["performance"]["server_total_ms"].as_f64();
        let has_ms = ms.is_some_and(|ms| ms >= 0.0);
        assert!(has_ms, "{}: no performance.server_total_ms: {v}", self.what);
        v
    }

    /// Assert the error envelope `{"error":{"code","message","detail"?}}` with `status`/`code`.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) -> Value {
        self.err_in(status, &[code])
    }

    /// Like [`Resp::err`], for when the spec names the status but not which of its codes.
    #[track_caller]
    pub fn err_in(&self, status: u16, codes: &[&str]) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text);
        let v = self.json();
        let e = v["error"].as_object();
        let e = e.unwrap_or_else(|| panic!("{}: no error object in {v}", self.what));
        let code = e.get("code").and_then(Value::as_str).unwrap_or_default();
        let what = &self.what;
        assert!(
            codes.contains(&code),
            "{what}: code {code:?} not in {codes:?}"
        );
        let message = e.get("message").is_some_and(Value::is_string);
        assert!(message, "{what}: error.message must be a string: {v}");
        let detail = e.get("detail").is_none_or(Value::is_object);
        assert!(detail, "{what}: error.detail must be an object: {v}");
        v
    }
}

pub async fn finish(what: String, r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let content_type = common::header(&r, "content-type").unwrap_or_default();
    let text = r.text().await.expect("a response body");
    Resp {
        status,
        content_type,
        text,
        what,
    }
}

/// `method path` with an optional body of `content_type`.
pub async fn raw(s: &Server, method: Method, path: &str, ct: Option<&str>, body: &[u8]) -> Resp {
    let what = format!("{method} {path} (content-type {ct:?})");
    let mut b = s.client.request(method, s.url(path));
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    if !body.is_empty() {
        b = b.body(body.to_vec());
    }
    finish(what, b.send().await.expect("a response")).await
}

/// `PUT /v0/topics/:topic` with a JSON body.
pub async fn put(s: &Server, topic: &str, body: Value) -> Resp {
    let body = body.to_string();
    raw(s, Method::PUT, &t(topic), Some(JSON), body.as_bytes()).await
}

/// `PUT /v0/topics/:topic`, asserting a JSON success with `status`.
pub async fn put_ok(s: &Server, topic: &str, body: Value, status: u16) -> Value {
    put(s, topic, body).await.ok(status)
}

/// `POST path` with a JSON body.
pub async fn post(s: &Server, path: &str, body: Value) -> Resp {
    post_text(s, path, &body.to_string()).await
}

/// `POST path` with a JSON text sent as is (`application/json`).
pub async fn post_text(s: &Server, path: &str, body: &str) -> Resp {
    raw(s, Method::POST, path, Some(JSON), body.as_bytes()).await
}

pub async fn get(s: &Server, path: &str) -> Resp {
    raw(s, Method::GET, path, None, b"").await
}

pub async fn delete(s: &Server, path: &str) -> Resp {
    raw(s, Method::DELETE, path, None, b"").await
}

pub fn t(topic: &str) -> String {
    format!("/v0/topics/{topic}")
}

/// `n` records with `data: {"i": 1..=n}`.
pub fn recs(n: usize) -> Value {
    (1..=n).map(|i| json!({ "data": { "i": i } })).collect()
}

/// A successful write (200, or 201 when it created the topic).
pub async fn write(s: &Server, topic: &str, body: Value) -> Value {
    let r = post(s, &t(topic), body).await;
    r.ok(if r.status == 201 { 201 } else { 200 })
}

/// `{"records": recs(n)}` written to `topic`.
pub async fn write_n(s: &Server, topic: &str, n: usize) -> Value {
    write(s, topic, json!({ "records": recs(n) })).await
}

pub async fn diff(s: &Server, topic: &str, body: Value) -> Value {
    let path = format!("/v0/topics/{topic}/diff");
    post(s, &path, body).await.ok(200)
}

pub async fn del_records(s: &Server, topic: &str, body: Value) -> Value {
    let path = format!("/v0/topics/{topic}/delete");
    post(s, &path, body).await.ok(200)
}

pub async fn state(s: &Server, topic: &str) -> Value {
    get(s, &t(topic)).await.ok(200)
}

/// `has!(v, { "member": value, ... })`: `v` has each member, with that value (a `null` must
/// be present).
macro_rules! has {
    ($v:expr, $($want:tt)+) => {
        assert_has(&$v, json!($($want)+))
    };
}

/// Assert that `v` has every member of `want`, with that value (`null` must be present).
#[track_caller]
pub fn assert_has(v: &Value, want: Value) {
    for (k, w) in want.as_object().expect("an object of expected members") {
        assert_eq!(v.get(k), Some(w), "member {k:?} of {v}");
    }
}

/// The `$seq`s of a diff's records.
pub fn seqs(v: &Value) -> Vec<u64> {
    let records = v["records"].as_array().expect("records[]");
    let seq = |r: &Value| r["$seq"].as_u64().expect("$seq");
    records.iter().map(seq).collect()
}

pub fn now_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    now.as_millis() as u64
}

pub fn default_config() -> Value {
    json!({
        "type": "log", "ttl_ms": 0, "cap_records": 0, "cap_bytes": 0, "discard": "old",
        "durable": false, "durability": "disk", "priority": null, "auto_priority": true,
        "auto_create": true, "idempotency_window_ms": 120000, "dedupe_node": true,
        "lease_ms": 30000, "claim_jitter_ms": 0, "max_deliveries": 0, "dead_letter": null,
        "leases_durable": false,
    })
}

/// Assert a full config: every documented default, except `changes`.
#[track_caller]
pub fn assert_config(config: &Value, changes: Value) {
    let mut want = default_config();
    for (k, v) in changes.as_object().expect("changes object") {
        want[k] = v.clone();
    }
    assert_has(config, want);
}

// ---- PUT /v0/topics/:t ------------------------------------------------------------------
