//! An SSE reader for the `/v0/watch/:wid` stream that keeps ids, `retry:` and comments, and
//! the composite cursor carried by its `id:` lines. Built from `topics-v0-api.md` and
//! `topics-README.md` only.

use crate::common::{self, Server};
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Upper bound for anything that should happen promptly.
pub const PROMPT: Duration = Duration::from_secs(5);

/// One SSE frame, or a lone comment line (`comments` only).
#[derive(Debug, Default, Clone)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Vec<String>,
    pub retry: Option<String>,
    pub comments: Vec<String>,
}

impl Frame {
    pub fn has_fields(&self) -> bool {
        self.id.is_some() || self.event.is_some() || !self.data.is_empty() || self.retry.is_some()
    }

    pub fn is_event(&self) -> bool {
        self.event.is_some() || !self.data.is_empty()
    }

    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    pub fn json(&self) -> Value {
        let text = self.data.join("\n");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {self:?}"))
    }
}

pub struct Sse {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    cur: Frame,
    pending: VecDeque<Frame>,
}

impl Sse {
    /// The next frame or lone comment, or `None` if nothing came within `timeout`.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = String::from_utf8(raw).expect("SSE is UTF-8");
                let line = line.trim_end_matches('\n').trim_end_matches('\r');
                if line.is_empty() {
                    let f = std::mem::take(&mut self.cur);
                    if f.has_fields() {
                        return Some(f);
                    }
                    continue;
                }
                if let Some(c) = line.strip_prefix(':') {
                    let c = c.trim_start().to_string();
                    if !self.cur.has_fields() {
                        return Some(Frame {
                            comments: vec![c],
                            ..Frame::default()
                        });
                    }
                    self.cur.comments.push(c);
                    continue;
                }
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                match name {
                    "id" => self.cur.id = Some(value),
                    "event" => self.cur.event = Some(value),
                    "data" => self.cur.data.push(value),
                    "retry" => self.cur.retry = Some(value),
                    _ => panic!("unknown SSE field in {line:?}"),
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the SSE stream ended; unparsed {:?}", self.cur),
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("the SSE stream failed: {e}"),
            }
        }
    }

    /// The next event (skipping lone comments), which must come within `timeout`.
    pub async fn event(&mut self, timeout: Duration) -> Frame {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next(left).await {
                Some(f) if f.is_event() => return f,
                Some(_) => {}
                None => panic!("no SSE event within {timeout:?}"),
            }
        }
    }

    /// Events until `pred` holds for one (returned last); fails after `timeout`.
    pub async fn until(&mut self, timeout: Duration, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.try_next(left).await;
            let f = f.unwrap_or_else(|| panic!("timed out after {timeout:?}; saw {seen:#?}"));
            if !f.is_event() {
                continue;
            }
            let done = pred(&f);
            seen.push(f);
            if done {
                return seen;
            }
        }
    }

    /// The next `record` event (skipping others), which must come within [`PROMPT`].
    pub async fn record(&mut self) -> Frame {
        let mut seen = self.until(PROMPT, |f| f.name() == "record").await;
        seen.pop().unwrap()
    }

    /// Read events until none comes for `quiet` (at most 10 s), returning them.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Frame> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && let Some(f) = self.try_next(quiet).await
        {
            if f.is_event() {
                seen.push(f);
            }
        }
        seen
    }
}

/// `GET /v0/watch/:wid` as an EventSource would; see [`open_path`].
pub async fn open(s: &Server, wid: &str, last_event_id: Option<&str>) -> Sse {
    let path = format!("/v0/watch/{wid}");
    open_path(s, &path, "text/event-stream", last_event_id).await
}

/// `GET path` with `accept` (and `last-event-id` if given); asserts 200, `text/event-stream`
/// and that the stream opens with `retry: 2000`. A first frame that is also an event is kept
/// (without its `retry`) for the first read.
pub async fn open_path(s: &Server, path: &str, accept: &str, last_event_id: Option<&str>) -> Sse {
    // No overall timeout: streams outlive the harness client's 30 s.
    let client = reqwest::Client::new();
    let mut b = client.get(s.url(path)).header("accept", accept);
    if let Some(id) = last_event_id {
        b = b.header("last-event-id", id);
    }
    let r = b.send().await.expect("GET the watch stream");
    assert_eq!(r.status(), 200, "GET {path} (accept {accept})");
    let ct = common::header(&r, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct:?}");
    let mut sse = Sse {
        body: r.bytes_stream().boxed(),
        buf: Vec::new(),
        cur: Frame::default(),
        pending: VecDeque::new(),
    };
    let first = sse.try_next(PROMPT).await.expect("a first frame");
    assert_eq!(
        first.retry.as_deref(),
        Some("2000"),
        "the stream opens with retry: 2000: {first:?}"
    );
    if first.is_event() {
        sse.pending.push_back(Frame {
            retry: None,
            ..first
        });
    }
    sse
}

/// The cursor map an `id:` carries: base64url of a JSON object `{topic: seq}`.
#[track_caller]
pub fn decode_id(id: &str) -> Map<String, Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT
        .decode(id)
        .unwrap_or_else(|e| panic!("id {id:?} is not base64url: {e}"));
    let v: Value = serde_json::from_slice(&bytes).expect("the id holds JSON");
    v.as_object().expect("the id holds a JSON object").clone()
}

/// Assert a `POST /v0/watch` answer's `wid` (`wid_` and 128 random bits in base64url) and
/// its `stream_url` (`/v0/watch/:wid`).
#[track_caller]
pub fn assert_wid(v: &Value) {
    let wid = v["wid"].as_str().expect("wid");
    let rand = wid.strip_prefix("wid_").expect("wid_ prefix");
    assert_eq!(rand.len(), 22, "128 bits in base64url: {wid}");
    assert!(
        rand.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{wid}"
    );
    assert_eq!(v["stream_url"], format!("/v0/watch/{wid}"));
}
