//! Shared by the `__ds` subscription tests (`subscriptions.rs`, `subscriptions_delivery.rs`):
//! requests to the control APIs, streams named relative to `/v1/stream/`, polling with a
//! deadline, and a webhook receiver that records what it is sent.
#![allow(dead_code)]

use crate::common::Server;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a test waits for something asynchronous (a delivery, a wake event) at most.
pub const WAIT: Duration = Duration::from_secs(15);

/// `/v1/stream/__ds/subscriptions/<id>` plus `tail` (`""`, `"/claim"`, ...).
pub fn sub_path(id: &str, tail: &str) -> String {
    format!("/v1/stream/__ds/subscriptions/{id}{tail}")
}

/// A finished response.
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub text: String,
    /// `METHOD path`, for messages.
    pub what: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {:?}", self.what, self.text))
    }

    /// `error.code` of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no error.code in {}", self.what, self.text))
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert the status; returns the response for more checks.
    #[track_caller]
    pub fn status(self, want: u16) -> Self {
        assert_eq!(
            self.status, want,
            "{} answered {}: {}",
            self.what, self.status, self.text
        );
        self
    }

    /// Assert the status; returns the JSON body.
    #[track_caller]
    pub fn body(self, want: u16) -> Value {
        self.status(want).json()
    }

    /// Assert an error answer: the status and `error.code`.
    #[track_caller]
    pub fn error(self, status: u16, code: &str) -> Self {
        let got = (self.status, self.code());
        assert_eq!(
            got,
            (status, code.to_string()),
            "{}: {}",
            self.what,
            self.text
        );
        self
    }
}

/// `m path` with an optional `Authorization: Bearer` and JSON body.
pub async fn call(s: &Server, m: Method, path: &str, bearer: Option<&str>, body: &str) -> Resp {
    let what = format!("{m} {path}");
    let mut r = s.client.request(m, s.url(path));
    if let Some(t) = bearer {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        r = r
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let text = resp.text().await.unwrap_or_default();
    Resp {
        status,
        headers,
        text,
        what,
    }
}

pub async fn put_sub(s: &Server, id: &str, spec: &Value) -> Resp {
    call(s, Method::PUT, &sub_path(id, ""), None, &spec.to_string()).await
}

pub async fn get_sub(s: &Server, id: &str) -> Resp {
    call(s, Method::GET, &sub_path(id, ""), None, "").await
}

pub async fn delete_sub(s: &Server, id: &str) -> Resp {
    call(s, Method::DELETE, &sub_path(id, ""), None, "").await
}

/// `POST .../<id>/<action>` (`callback`, `ack`, `release`) with a wake token.
pub async fn act(s: &Server, id: &str, action: &str, token: Option<&str>, body: &Value) -> Resp {
    let path = sub_path(id, &format!("/{action}"));
    call(s, Method::POST, &path, token, &body.to_string()).await
}

/// `POST .../<id>/<action>` for wake `w` (a claim answer or a webhook body) with its own token.
pub async fn ack(
    s: &Server,
    id: &str,
    action: &str,
    w: &Value,
    acks: &[(&str, u64)],
    done: bool,
) -> Resp {
    let token = w["token"].as_str().or(w["callback_token"].as_str());
    act(s, id, action, token, &wake_body(w, acks, done)).await
}

/// A successful callback's or ack's answer.
pub fn acked_ok(next_wake: bool) -> Value {
    serde_json::json!({ "ok": true, "next_wake": next_wake })
}

/// The generation of a wake, claim or wake event.
pub fn gen_of(w: &Value) -> u64 {
    w["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no generation in {w}"))
}

pub async fn claim(s: &Server, id: &str, worker: &str) -> Resp {
    let body = serde_json::json!({ "worker": worker }).to_string();
    call(s, Method::POST, &sub_path(id, "/claim"), None, &body).await
}

/// The body of a callback, ack or release of wake `w` (a webhook body or a claim answer).
pub fn wake_body(w: &Value, acks: &[(&str, u64)], done: bool) -> Value {
    let acks: Vec<Value> = acks
        .iter()
        .map(|(p, n)| serde_json::json!({ "stream": p, "offset": crate::common::offset(*n) }))
        .collect();
    serde_json::json!({
        "wake_id": w["wake_id"], "generation": w["generation"], "acks": acks, "done": done,
    })
}

/// Create the stream at `/v1/stream/<rel>`.
pub async fn new_stream(s: &Server, rel: &str, content_type: &str) {
    new_stream_as(s, None, rel, content_type).await;
}

/// Create the stream at `/v1/stream/<rel>` with an API key.
pub async fn new_stream_as(s: &Server, key: Option<&str>, rel: &str, content_type: &str) {
    let mut r = s.client.put(s.url(&format!("/v1/stream/{rel}")));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.header("content-type", content_type).send().await;
    assert_eq!(r.expect("PUT").status(), 201, "create {rel}");
}

/// Append text to `/v1/stream/<rel>`; returns the new tail's byte position.
pub async fn append(s: &Server, rel: &str, body: &str) -> u64 {
    append_as(s, None, rel, body).await
}

/// Append text to `/v1/stream/<rel>` with an API key.
pub async fn append_as(s: &Server, key: Option<&str>, rel: &str, body: &str) -> u64 {
    let mut r = s.client.post(s.url(&format!("/v1/stream/{rel}")));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r
        .header("content-type", "text/plain")
        .body(body.to_string());
    let r = r.send().await.expect("POST");
    assert_eq!(r.status(), 204, "append to {rel}");
    let next = crate::common::header(&r, "stream-next-offset").expect("Stream-Next-Offset");
    crate::common::position(&next)
}

/// The link of `path` in a subscription or wake (its `streams`).
#[track_caller]
pub fn link<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["streams"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["path"] == path))
        .unwrap_or_else(|| panic!("no link {path} in {v}"))
}

/// The paths and link types of a subscription's links, in order.
pub fn links(v: &Value) -> Vec<(String, String)> {
    v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (s("path"), s("link_type"))
        })
        .collect()
}

/// The `acked_offset` of `path` in subscription `id`, as a byte position.
pub async fn acked(s: &Server, id: &str, path: &str) -> u64 {
    let sub = get_sub(s, id).await.status(200).json();
    let off = link(&sub, path)["acked_offset"]
        .as_str()
        .expect("acked_offset");
    crate::common::position(off)
}

/// The wake events in the JSON wake stream `/v1/stream/<rel>` so far.
pub async fn wake_events(s: &Server, rel: &str) -> Vec<Value> {
    let body = s.read_all(&s.url(&format!("/v1/stream/{rel}"))).await;
    match serde_json::from_slice(&body) {
        Ok(Value::Array(events)) => events,
        other => panic!("wake stream {rel}: {other:?}"),
    }
}

/// Wait for a wake event of subscription `id` with a generation above `above`; returns it.
pub async fn wake_event_above(s: &Server, rel: &str, id: &str, above: u64) -> Value {
    eventually(
        &format!("a wake event of {id} above {above}"),
        WAIT,
        async || {
            wake_events(s, rel).await.into_iter().find(|e| {
                e["subscription_id"] == id && e["generation"].as_u64().is_some_and(|g| g > above)
            })
        },
    )
    .await
}

/// Poll `f` every 50 ms until it gives a value; panics after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /v1/stream/__ds/jwks.json`, checked for its media type and caching.
pub async fn jwks(s: &Server) -> Value {
    let r = call(s, Method::GET, "/v1/stream/__ds/jwks.json", None, "")
        .await
        .status(200);
    assert_eq!(r.header("content-type"), Some("application/jwk-set+json"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    r.json()
}

/// The kids of a JWKS, in order.
pub fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

/// Whether a `Webhook-Signature` verifies against `jwks` (the server's own receiver check).
pub fn verify(jwks: &Value, header: &str, body: &[u8]) -> bool {
    riffle_server::subscriptions::signing::verify(jwks, header, body)
}

// ---- webhook receiver ----------------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON webhook body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// The `Webhook-Signature` header's parameters: `t`, `kid`, `ed25519`.
    pub fn signature(&self) -> (u64, String, String) {
        let h = self.header("webhook-signature");
        let parts: Vec<(&str, &str)> = h.split(',').filter_map(|p| p.split_once('=')).collect();
        let get = |k: &str| {
            let found = parts.iter().find(|(n, _)| *n == k);
            found.map(|(_, v)| v.to_string()).unwrap_or_default()
        };
        let t = get("t").parse().unwrap_or_else(|_| panic!("t in {h}"));
        (t, get("kid"), get("ed25519"))
    }
}

struct HookState {
    seen: Mutex<Vec<Seen>>,
    replies: Mutex<VecDeque<(u16, String)>>,
    default: (u16, String),
}

/// A plain-HTTP webhook receiver on 127.0.0.1: records every request and answers from a
/// list of `(status, body)` replies, then with a default one.
pub struct Hook {
    pub url: String,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    pub async fn start(replies: &[(u16, &str)], default: (u16, &str)) -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(HookState {
            seen: Mutex::new(Vec::new()),
            replies: Mutex::new(replies.iter().map(|(s, b)| (*s, b.to_string())).collect()),
            default: (default.0, default.1.to_string()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = shared.clone();
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let state = state.clone();
                    async move {
                        let (parts, body): (_, hyper::body::Incoming) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let (status, reply) = {
                            // Record and pick the reply together: a retry sees the next one.
                            let mut seen = state.seen.lock().unwrap();
                            seen.push(Seen {
                                at: Instant::now(),
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            let next = state.replies.lock().unwrap().pop_front();
                            next.unwrap_or_else(|| state.default.clone())
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(reply)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::spawn(conn);
            }
        });
        Hook {
            url: format!("http://{addr}/hook"),
            state,
            task,
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        eventually(&format!("{n} webhook deliveries"), WAIT, async || {
            let seen = self.seen();
            (seen.len() >= n).then_some(seen)
        })
        .await
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}
