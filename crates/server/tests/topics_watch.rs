//! The topics `/v0` multiplexed watch: `POST /v0/watch` sessions and their SSE stream
//! (`GET /v0/watch/:wid`): frames, composite cursors, resume, node filter, heartbeats,
//! deleted topics, tombstones, and prompt wake-ups. Built from `topics-v0-api.md` and
//! `topics-README.md` only.

mod common;

use base64::Engine as _;
use common::Server;
use common::start_topics as start;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

const JSON: &str = "application/json";
/// Upper bound for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(5);

// ---- JSON helpers -------------------------------------------------------------------------

/// `POST path` with a JSON body; the status and the parsed body.
async fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = s.client.post(s.url(path)).header("content-type", JSON);
    let r = r.body(body.to_string()).send().await.expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text:?}"));
    (status, v)
}

/// Assert the error envelope `{"error":{"code","message"}}` with `want_status` and `code`.
#[track_caller]
fn assert_error(status: u16, v: &Value, want_status: u16, code: &str) {
    assert_error_in(status, v, want_status, &[code]);
}

/// Like [`assert_error`], where the spec names the status but not which of its codes.
#[track_caller]
fn assert_error_in(status: u16, v: &Value, want_status: u16, codes: &[&str]) {
    assert_eq!(status, want_status, "{v}");
    let code = v["error"]["code"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "error.code {code:?} not in {codes:?}: {v}"
    );
    assert!(v["error"]["message"].is_string(), "{v}");
}

/// Assert that `v` has every member of `want`, with that value.
#[track_caller]
fn assert_has(v: &Value, want: Value) {
    for (k, w) in want.as_object().expect("an object") {
        assert_eq!(v.get(k), Some(w), "member {k:?} of {v}");
    }
}

/// A write to `topic` (created on the first write); returns the body.
async fn write(s: &Server, topic: &str, body: Value) -> Value {
    let (status, v) = post(s, &format!("/v0/topics/{topic}"), &body).await;
    assert!(
        status == 200 || status == 201,
        "write {topic}: {status} {v}"
    );
    v
}

fn recs(n: usize) -> Value {
    (1..=n)
        .map(|i| json!({ "data": { "i": i }, "tag": format!("t{i}") }))
        .collect()
}

/// Create a watch session; asserts 200 and returns the response.
async fn watch(s: &Server, body: Value) -> Value {
    let (status, v) = post(s, "/v0/watch", &body).await;
    assert_eq!(status, 200, "POST /v0/watch: {v}");
    assert!(v["performance"]["server_total_ms"].is_number(), "{v}");
    v
}

/// base64url (no padding) of a JSON value whose text is a multiple of 3 bytes long, so that
/// padding questions do not arise.
fn b64url_json(v: &Value) -> String {
    let text = v.to_string();
    assert_eq!(
        text.len() % 3,
        0,
        "pick names so that {text} needs no padding"
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The cursor map an `id:` carries: base64url of a JSON object `{topic: seq}`.
#[track_caller]
fn decode_id(id: &str) -> Map<String, Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT
        .decode(id)
        .unwrap_or_else(|e| panic!("id {id:?} is not base64url: {e}"));
    let v: Value = serde_json::from_slice(&bytes).expect("the id holds JSON");
    v.as_object().expect("the id holds a JSON object").clone()
}

fn seqs(records: &Value) -> Vec<u64> {
    let a = records.as_array().expect("records[]");
    a.iter()
        .map(|r| r["$seq"].as_u64().expect("$seq"))
        .collect()
}

// ---- an SSE reader that keeps ids, retry and comments --------------------------------------

/// One SSE frame, or a lone comment line (`comments` only).
#[derive(Debug, Default, Clone)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
    retry: Option<String>,
    comments: Vec<String>,
}

impl Frame {
    fn has_fields(&self) -> bool {
        self.id.is_some() || self.event.is_some() || !self.data.is_empty() || self.retry.is_some()
    }

    fn is_event(&self) -> bool {
        self.event.is_some() || !self.data.is_empty()
    }

    fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    fn json(&self) -> Value {
        let text = self.data.join("\n");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {self:?}"))
    }
}

struct Sse {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    cur: Frame,
    pending: VecDeque<Frame>,
}

impl Sse {
    /// The next frame or lone comment, or `None` if nothing came within `timeout`.
    async fn try_next(&mut self, timeout: Duration) -> Option<Frame> {
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
    async fn event(&mut self, timeout: Duration) -> Frame {
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
    async fn until(&mut self, timeout: Duration, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
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
    async fn record(&mut self) -> Frame {
        let mut seen = self.until(PROMPT, |f| f.name() == "record").await;
        seen.pop().unwrap()
    }

    /// Read events until none comes for `quiet` (at most 10 s), returning them.
    async fn drain(&mut self, quiet: Duration) -> Vec<Frame> {
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

/// `GET /v0/watch/:wid` as an EventSource would; asserts 200, `text/event-stream` and that
/// the stream opens with `retry: 2000`.
async fn open(s: &Server, wid: &str, last_event_id: Option<&str>) -> Sse {
    // No overall timeout: streams outlive the harness client's 30 s.
    let client = reqwest::Client::new();
    let mut b = client.get(s.url(&format!("/v0/watch/{wid}")));
    b = b.header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        b = b.header("last-event-id", id);
    }
    let r = b.send().await.expect("GET the watch stream");
    assert_eq!(r.status(), 200, "GET /v0/watch/{wid}");
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

/// Check a `record` event's shape, and that its `id:` is the full cursor map with the
/// event's topic at `to_seq`. Returns (topic, seqs, id map).
#[track_caller]
fn record_event(f: &Frame, topics: &[&str]) -> (String, Vec<u64>, Map<String, Value>) {
    assert_eq!(f.name(), "record", "{f:?}");
    let v = f.json();
    let topic = v["topic"].as_str().expect("topic").to_string();
    let got = seqs(&v["records"]);
    let from = v["from_seq"].as_u64().expect("from_seq");
    let to = v["to_seq"].as_u64().expect("to_seq");
    assert!(v["head_seq"].as_u64().is_some_and(|h| h >= to), "{v}");
    assert!(!got.is_empty(), "{v}");
    assert!(from < got[0] && *got.last().unwrap() <= to, "{v}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{v}");
    for r in v["records"].as_array().unwrap() {
        assert!(r["$ts"].is_u64() && r.get("data").is_some(), "{r}");
        assert!(r.get("$type").is_none(), "{r}");
    }
    let id = decode_id(f.id.as_deref().expect("a record event has an id"));
    let mut keys: Vec<&str> = id.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = topics.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "the id is the full cursor map: {id:?}");
    assert_eq!(id[&topic], to, "the id carries the new cursor of {topic}");
    (topic, got, id)
}

// ---- POST /v0/watch -----------------------------------------------------------------------

#[tokio::test]
async fn a_watch_has_1_to_256_topics() {
    let s = start().await;
    let (status, v) = post(&s, "/v0/watch", &json!({ "topics": {} })).await;
    assert_error(status, &v, 400, "invalid_request");

    let names: Vec<String> = (0..257).map(|i| format!("w{i:03}")).collect();
    let writes = names
        .iter()
        .map(|n| write(&s, n, json!({ "records": recs(1) })));
    futures_util::future::join_all(writes).await;
    let map = |n: usize| -> Value {
        names[..n]
            .iter()
            .map(|t| (t.clone(), json!({ "from_seq": 0 })))
            .collect::<Map<_, _>>()
            .into()
    };
    let (status, v) = post(&s, "/v0/watch", &json!({ "topics": map(257) })).await;
    assert_error_in(status, &v, 400, &["invalid_request", "batch_too_large"]);
    let v = watch(&s, json!({ "topics": map(256) })).await;
    assert_eq!(v["topics"].as_object().unwrap().len(), 256);
}

#[tokio::test]
async fn an_unknown_topic_is_404_unless_lenient() {
    let s = start().await;
    write(&s, "known", json!({ "records": recs(2) })).await;
    let body = json!({ "topics": { "known": { "from_seq": 0 }, "ghost": { "from_seq": 0 } } });
    let (status, v) = post(&s, "/v0/watch", &body).await;
    assert_error(status, &v, 404, "topic_not_found");

    let (status, v) = post(&s, "/v0/watch?lenient=true", &body).await;
    assert_eq!(status, 200, "{v}");
    let topics = v["topics"].as_object().unwrap();
    assert!(
        topics.contains_key("known") && !topics.contains_key("ghost"),
        "{v}"
    );
    let (status, v) = post(&s, "/v0/topics/ghost/diff", &json!({})).await;
    assert_error(status, &v, 404, "topic_not_found");
}

#[tokio::test]
async fn the_session_reports_wid_url_ttl_and_cursors() {
    let s = start().await;
    write(&s, "a", json!({ "records": recs(3) })).await;
    write(&s, "b", json!({ "records": recs(2) })).await;
    let v = watch(
        &s,
        json!({ "topics": { "a": { "from_seq": 1 }, "b": { "tail": true } } }),
    )
    .await;
    let wid = v["wid"].as_str().expect("wid");
    let rand = wid.strip_prefix("wid_").expect("wid_ prefix");
    assert_eq!(rand.len(), 22, "128 bits in base64url: {wid}");
    assert!(
        rand.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{wid}"
    );
    assert_eq!(v["stream_url"], format!("/v0/watch/{wid}"));
    assert_eq!(v["session_ttl_ms"], 300_000);
    assert_has(
        &v["topics"]["a"],
        json!({ "from_seq": 1, "head_seq": 3, "earliest_seq": 1 }),
    );
    assert_has(
        &v["topics"]["b"],
        json!({ "from_seq": 2, "head_seq": 2, "earliest_seq": 1 }),
    );

    let other = watch(&s, json!({ "topics": { "a": {} } })).await;
    assert_ne!(other["wid"], v["wid"], "every session gets a fresh wid");
}

#[tokio::test]
async fn the_stream_needs_sse_accept_and_a_known_wid() {
    let s = start().await;
    write(&s, "a", json!({ "records": recs(1) })).await;
    let v = watch(&s, json!({ "topics": { "a": { "from_seq": 0 } } })).await;
    let url = s.url(v["stream_url"].as_str().unwrap());
    let r = s
        .client
        .get(&url)
        .header("accept", JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    let e: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_error(406, &e, 406, "not_acceptable");

    let r = s.client.get(s.url("/v0/watch/wid_AAAAAAAAAAAAAAAAAAAAAA"));
    let r = r
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_error(404, &e, 404, "not_found");
}

// ---- the SSE stream -----------------------------------------------------------------------

#[tokio::test]
async fn backlog_frames_then_caught_up_then_live_records() {
    let s = start().await;
    write(&s, "aaa", json!({ "records": recs(5) })).await;
    write(&s, "bbb", json!({ "records": recs(3) })).await;
    let body =
        json!({ "limit": 2, "topics": { "aaa": { "from_seq": 0 }, "bbb": { "from_seq": 1 } } });
    let v = watch(&s, body).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;

    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    // Each topic's cursor: a frame's from_seq is the previous frame's to_seq.
    let mut cursors = HashMap::from([("aaa".to_string(), 0), ("bbb".to_string(), 1)]);
    let mut caught_up: HashMap<String, u64> = HashMap::new();
    while caught_up.len() < 2 {
        let f = sse.event(PROMPT).await;
        match f.name() {
            "record" => {
                let (topic, seqs, _) = record_event(&f, &["aaa", "bbb"]);
                assert!(seqs.len() <= 2, "limit 2 per frame: {f:?}");
                assert!(
                    !caught_up.contains_key(&topic),
                    "record after caught-up: {f:?}"
                );
                let v = f.json();
                assert_eq!(v["from_seq"], cursors[&topic], "frames chain: {f:?}");
                cursors.insert(topic.clone(), v["to_seq"].as_u64().unwrap());
                for r in v["records"].as_array().unwrap() {
                    assert!(
                        r.get("$tag").is_none(),
                        "include_tags defaults to false: {r}"
                    );
                }
                got.entry(topic).or_default().extend(seqs);
            }
            "caught-up" => {
                let v = f.json();
                let topic = v["topic"].as_str().unwrap().to_string();
                caught_up.insert(topic, v["head_seq"].as_u64().expect("head_seq"));
            }
            other => panic!("unexpected event {other}: {f:?}"),
        }
    }
    assert_eq!(got["aaa"], [1, 2, 3, 4, 5]);
    assert_eq!(got["bbb"], [2, 3]);
    assert_eq!(
        caught_up,
        HashMap::from([("aaa".into(), 5), ("bbb".into(), 3)])
    );

    // Tailing: a new write arrives promptly, with the whole map in its id.
    write(&s, "bbb", json!({ "records": recs(1) })).await;
    let f = sse.record().await;
    let (topic, seqs, id) = record_event(&f, &["aaa", "bbb"]);
    assert_eq!((topic.as_str(), seqs), ("bbb", vec![4]));
    assert_eq!(id["aaa"], 5);
}

#[tokio::test]
async fn include_tags_adds_tags_to_watched_records() {
    let s = start().await;
    write(&s, "tg", json!({ "records": recs(2) })).await;
    let body = json!({ "include_tags": true, "topics": { "tg": { "from_seq": 0 } } });
    let v = watch(&s, body).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let f = sse.record().await;
    assert_eq!(f.json()["records"][0]["$tag"], "t1", "{f:?}");
}

#[tokio::test]
async fn tail_starts_at_the_head() {
    let s = start().await;
    write(&s, "tl", json!({ "records": recs(3) })).await;
    let v = watch(&s, json!({ "topics": { "tl": { "tail": true } } })).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let early = sse.drain(Duration::from_millis(300)).await;
    assert!(
        early.iter().all(|f| f.name() != "record"),
        "no backlog with tail: {early:?}"
    );
    write(&s, "tl", json!({ "records": recs(1) })).await;
    let f = sse.record().await;
    let (_, seqs, _) = record_event(&f, &["tl"]);
    assert_eq!(seqs, [4]);
}

#[tokio::test]
async fn reconnect_resumes_from_the_server_cursor_and_last_event_id_rewinds() {
    let s = start().await;
    write(&s, "rs", json!({ "records": recs(3) })).await;
    let v = watch(
        &s,
        json!({ "limit": 1, "topics": { "rs": { "from_seq": 0 } } }),
    )
    .await;
    let wid = v["wid"].as_str().unwrap().to_string();

    let mut sse = open(&s, &wid, None).await;
    let mut ids = Vec::new();
    for want in 1..=3u64 {
        let f = sse.record().await;
        let (_, seqs, _) = record_event(&f, &["rs"]);
        assert_eq!(seqs, [want]);
        ids.push(f.id.clone().unwrap());
    }
    drop(sse);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // No Last-Event-ID: the server's cursor (3) holds, nothing is replayed. (The write comes
    // after the reopen, so the closed stream cannot have taken it.)
    let mut sse = open(&s, &wid, None).await;
    let replayed = sse.drain(Duration::from_millis(300)).await;
    let replayed: Vec<&Frame> = replayed.iter().filter(|f| f.name() == "record").collect();
    assert!(
        replayed.is_empty(),
        "a plain reconnect replays nothing: {replayed:?}"
    );
    write(&s, "rs", json!({ "records": recs(1) })).await;
    let f = sse.record().await;
    assert_eq!(record_event(&f, &["rs"]).1, [4]);
    drop(sse);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Last-Event-ID rewinds to seq 1: 2, 3 and 4 again.
    let mut sse = open(&s, &wid, Some(&ids[0])).await;
    let mut again = Vec::new();
    while again.len() < 3 {
        let f = sse.record().await;
        again.extend(record_event(&f, &["rs"]).1);
    }
    assert_eq!(again, [2, 3, 4]);
}

#[tokio::test]
async fn last_event_id_cannot_skip_ahead() {
    let s = start().await;
    write(&s, "f", json!({ "records": recs(2) })).await;
    let v = watch(&s, json!({ "topics": { "f": { "from_seq": 0 } } })).await;
    let wid = v["wid"].as_str().unwrap().to_string();
    let mut sse = open(&s, &wid, None).await;
    sse.until(PROMPT, |f| f.name() == "caught-up").await;
    drop(sse);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ahead = b64url_json(&json!({ "f": 100 }));
    let mut sse = open(&s, &wid, Some(&ahead)).await;
    write(&s, "f", json!({ "records": recs(1) })).await;
    let f = sse.record().await;
    // Last-Event-ID can only rewind: the cursor stays at 2, so seq 3 arrives.
    assert_eq!(record_event(&f, &["f"]).1, [3]);
}

#[tokio::test]
async fn the_node_filter_drops_own_records_but_advances_the_cursor() {
    let s = start().await;
    write(&s, "nf", json!({ "node": "me", "records": recs(1) })).await;
    write(&s, "nf", json!({ "node": "other", "records": recs(1) })).await;
    write(&s, "nf", json!({ "node": "me", "records": recs(1) })).await;
    let v = watch(
        &s,
        json!({ "node": "me", "topics": { "nf": { "from_seq": 0 } } }),
    )
    .await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let frames = sse.until(PROMPT, |f| f.name() == "caught-up").await;
    let mut delivered = Vec::new();
    for f in &frames[..frames.len() - 1] {
        let (_, seqs, _) = record_event(f, &["nf"]);
        delivered.extend(seqs);
        assert!(
            f.json()["records"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["$node"] == "other")
        );
    }
    assert_eq!(delivered, [2]);
    assert_eq!(frames.last().unwrap().json()["head_seq"], 3);

    write(&s, "nf", json!({ "node": "me", "records": recs(1) })).await;
    write(&s, "nf", json!({ "records": recs(1) })).await;
    let f = sse.record().await;
    let (_, seqs, id) = record_event(&f, &["nf"]);
    assert_eq!(seqs, [5], "own record 4 is skipped");
    assert_eq!(id["nf"], 5);
}

#[tokio::test]
async fn heartbeats_are_comments_at_the_requested_interval() {
    let s = start().await;
    write(&s, "hb", json!({ "records": recs(1) })).await;
    let v = watch(
        &s,
        json!({ "heartbeat_ms": 1000, "topics": { "hb": { "tail": true } } }),
    )
    .await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let mut beats = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    while beats.len() < 2 && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(f) = sse.try_next(left).await else {
            break;
        };
        for c in &f.comments {
            let ms = c
                .strip_prefix("hb ")
                .unwrap_or_else(|| panic!("comment {c:?}"));
            assert!(ms.parse::<u64>().is_ok(), "`: hb <ms>`, got {c:?}");
            beats.push(Instant::now());
        }
    }
    assert_eq!(
        beats.len(),
        2,
        "two heartbeats within 6 s at heartbeat_ms 1000"
    );
    let gap = beats[1] - beats[0];
    assert!(
        gap >= Duration::from_millis(500) && gap < Duration::from_millis(2500),
        "{gap:?}"
    );
}

#[tokio::test]
async fn a_deleted_topic_ends_only_that_topic() {
    let s = start().await;
    write(&s, "gone", json!({ "records": recs(1) })).await;
    write(&s, "kept", json!({ "records": recs(1) })).await;
    let body = json!({ "topics": { "gone": { "tail": true }, "kept": { "tail": true } } });
    let v = watch(&s, body).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    sse.drain(Duration::from_millis(300)).await;

    let r = s
        .client
        .delete(s.url("/v0/topics/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let f = sse
        .until(PROMPT, |f| f.name() == "topic-deleted")
        .await
        .pop()
        .unwrap();
    let v = f.json();
    if let Some(topic) = v.get("topic") {
        assert_eq!(topic, "gone", "{f:?}");
    }
    write(&s, "kept", json!({ "records": recs(1) })).await;
    let f = sse.record().await;
    let v = f.json();
    assert_eq!(
        (v["topic"].clone(), seqs(&v["records"])),
        (json!("kept"), vec![2])
    );
}

#[tokio::test]
async fn evicted_backlog_arrives_as_a_tombstone_before_the_records() {
    let s = start().await;
    let r = s
        .client
        .put(s.url("/v0/topics/ev"))
        .header("content-type", JSON);
    assert_eq!(
        r.body(r#"{"cap_records":2}"#)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    write(&s, "ev", json!({ "records": recs(4) })).await;
    let v = watch(&s, json!({ "topics": { "ev": { "from_seq": 0 } } })).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let frames = sse.until(PROMPT, |f| f.name() == "caught-up").await;
    assert_eq!(frames[0].name(), "tombstone", "{frames:?}");
    let ts = frames[0].json();
    assert_eq!(
        (ts["gap_from"].clone(), ts["gap_to"].clone()),
        (json!(1), json!(2)),
        "{ts}"
    );
    let reason = ts["reason"].as_str().unwrap_or_default();
    assert!(["cap", "from_seq_too_old"].contains(&reason), "{ts}");
    let mut delivered = Vec::new();
    for f in &frames[1..frames.len() - 1] {
        delivered.extend(record_event(f, &["ev"]).1);
    }
    assert_eq!(delivered, [3, 4]);
}

/// The missed-wake-up check: one watcher on 20 topics, 200 single-record writes to random
/// topics; every record must reach the watcher within 100 ms of the write being sent.
#[tokio::test]
async fn every_write_wakes_the_watcher_within_100ms() {
    const TOPICS: usize = 20;
    const WRITES: usize = 200;
    let bound = Duration::from_millis(100);
    let s = start().await;
    let names: Vec<String> = (0..TOPICS).map(|i| format!("mw{i:02}")).collect();
    let mut map = Map::new();
    for n in &names {
        let r = s
            .client
            .put(s.url(&format!("/v0/topics/{n}")))
            .header("content-type", JSON);
        assert_eq!(r.body("{}").send().await.unwrap().status(), 201);
        map.insert(n.clone(), json!({ "from_seq": 0 }));
    }
    let v = watch(&s, json!({ "topics": map })).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    sse.drain(Duration::from_millis(300)).await;

    let mut rng = fastrand::Rng::with_seed(20);
    let mut heads = [0u64; TOPICS];
    let mut latencies = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let k = rng.usize(..TOPICS);
        heads[k] += 1;
        let started = Instant::now();
        let w = write(&s, &names[k], json!({ "records": [{ "data": i }] })).await;
        assert_eq!(w["seqs"], json!([heads[k]]));
        loop {
            let f = sse
                .try_next(Duration::from_secs(2))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "write {i} to {} (seq {}) never reached the watcher",
                        names[k], heads[k]
                    )
                });
            if f.name() != "record" {
                continue;
            }
            let v = f.json();
            assert_eq!(v["topic"], names[k].as_str(), "write {i}: {v}");
            assert_eq!(seqs(&v["records"]), [heads[k]], "write {i}");
            break;
        }
        latencies.push(started.elapsed());
    }
    let mut sorted = latencies.clone();
    sorted.sort();
    let slow: Vec<(usize, Duration)> = latencies
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, d)| *d > bound)
        .collect();
    assert!(
        slow.is_empty(),
        "{} of {WRITES} deliveries took over {bound:?} (p50 {:?}, p99 {:?}, max {:?}); \
         the first (write, latency) pairs: {:?}",
        slow.len(),
        sorted[WRITES / 2],
        sorted[WRITES * 99 / 100],
        sorted[WRITES - 1],
        &slow[..slow.len().min(20)],
    );
}
