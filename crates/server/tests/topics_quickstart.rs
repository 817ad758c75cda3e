//! The topics README's Quickstart (steps 1-6) run verbatim against Riffle's `/v0`, and its
//! delete and config recipes. The request bodies are the README's, byte for byte; the
//! assertions are the documented responses, limited to what `topics-README.md` and
//! `topics-v0-api.md` agree on (comments mark where they differ).

mod common;

use base64::Engine as _;
use common::Server;
use common::start_topics as start;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const JSON: &str = "application/json";
/// What `curl -d` sends when no content type is given.
const CURL_FORM: &str = "application/x-www-form-urlencoded";
const PROMPT: Duration = Duration::from_secs(5);

/// `method path` with `body` as `content_type`; the status and the parsed body.
async fn call(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    ct: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut b = s.client.request(method.clone(), s.url(path));
    if let Some(ct) = ct {
        b = b.header("content-type", ct).body(body.to_string());
    }
    let r = b.send().await.expect("a response");
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text:?}"));
    (status, v)
}

/// Assert a JSON success: `status`, no `error`, and `performance.server_total_ms`.
#[track_caller]
fn ok(got: (u16, Value), status: u16) -> Value {
    let (got_status, v) = got;
    assert_eq!(got_status, status, "{v}");
    assert!(v.get("error").is_none(), "{v}");
    assert!(
        v["performance"]["server_total_ms"].is_number(),
        "performance: {v}"
    );
    v
}

/// Assert the error envelope with `status` and `code`.
#[track_caller]
fn err(got: (u16, Value), status: u16, code: &str) {
    let (got_status, v) = got;
    assert_eq!(got_status, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

/// Assert that `v` has every member of `want`, with that value.
#[track_caller]
fn assert_has(v: &Value, want: Value) {
    for (k, w) in want.as_object().expect("an object") {
        assert_eq!(v.get(k), Some(w), "member {k:?} of {v}");
    }
}

// ---- a small SSE reader (keeps id, retry and comments) ------------------------------------

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

    fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.data.join("\n")).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

struct Sse {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    cur: Frame,
}

impl Sse {
    /// The next frame or lone comment, or `None` after `timeout`.
    async fn try_next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = String::from_utf8(raw).expect("SSE is UTF-8");
                let line = line.trim_end_matches('\n').trim_end_matches('\r');
                if line.is_empty() {
                    let f = std::mem::take(&mut self.cur);
                    if f.has_fields() {
                        return Some(f);
                    }
                } else if let Some(c) = line.strip_prefix(':') {
                    let c = c.trim_start().to_string();
                    if !self.cur.has_fields() {
                        return Some(Frame {
                            comments: vec![c],
                            ..Frame::default()
                        });
                    }
                    self.cur.comments.push(c);
                } else {
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
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the SSE stream ended"),
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("the SSE stream failed: {e}"),
            }
        }
    }
}

#[track_caller]
fn decode_id(id: &str) -> Map<String, Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT
        .decode(id)
        .unwrap_or_else(|e| panic!("id {id:?} is not base64url: {e}"));
    let v: Value = serde_json::from_slice(&bytes).expect("the id holds JSON");
    v.as_object().expect("the id holds a JSON object").clone()
}

/// The id map may only name watched topics, and must put `orders` at `seq`.
#[track_caller]
fn assert_orders_cursor(id: &str, seq: u64) {
    let map = decode_id(id);
    assert_eq!(map.get("orders"), Some(&json!(seq)), "id {id} = {map:?}");
    assert!(
        map.keys().all(|k| k == "orders" || k == "notifications"),
        "{map:?}"
    );
}

// ---- the Quickstart -----------------------------------------------------------------------

#[tokio::test]
async fn quickstart_steps_1_to_6_work_verbatim() {
    let s = start().await;

    // 1. Create a topic.
    let body = r#"{ "durable": true, "cap_records": 0, "ttl_ms": 0 }"#;
    let v = ok(
        call(&s, Method::PUT, "/v0/topics/orders", Some(JSON), body).await,
        201,
    );
    assert_eq!(v["topic"], "orders");
    assert_eq!(v["created"], true);
    // The README's config shows these fields; the reference adds `type` and the queue fields
    // ("full config, queue fields included"), which topics_api.rs checks.
    let want = json!({
        "ttl_ms": 0, "cap_records": 0, "cap_bytes": 0, "discard": "old", "durable": true,
        "durability": "fsync", "priority": null, "auto_priority": true, "auto_create": true,
        "idempotency_window_ms": 120000, "dedupe_node": true,
    });
    assert_has(&v["config"], want);

    // 2. Write records.
    let body = r#"{ "records": [
          { "data": { "sku": "AEROPRESS-GO", "qty": 1, "total": 3499 }, "tag": "order-7731" },
          { "data": { "sku": "FELLOW-KETTLE", "qty": 1, "total": 16500 }, "tag": "order-7732" }
        ] }"#;
    let v = ok(
        call(&s, Method::POST, "/v0/topics/orders", Some(JSON), body).await,
        200,
    );
    assert_eq!(v["topic"], "orders");
    assert_eq!(v["first_seq"], 1);
    assert_eq!(v["last_seq"], 2);
    assert_eq!(v["seqs"], json!([1, 2]));
    assert_eq!(v["head_seq"], 2);
    assert_eq!(v["count"], 2);
    assert_eq!(v["created"], false);
    assert_eq!(v["deduped"], false);

    // 3. Read current state.
    let v = ok(
        call(&s, Method::GET, "/v0/topics/orders", None, "").await,
        200,
    );
    assert_eq!(v["topic"], "orders");
    assert_eq!(v["head_seq"], 2);
    assert_eq!(v["earliest_seq"], 1);
    assert_eq!(v["next_seq"], 3);
    assert_eq!(v["count"], 2);
    // The README shows bytes 184 (its own storage accounting) and effective_priority 500.
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    let p = v["effective_priority"]
        .as_f64()
        .expect("effective_priority");
    assert!(
        (400.0..=500.0).contains(&p),
        "about 500 right after a write: {p}"
    );
    assert!(v["config"].is_object());

    // 4. Read the difference from a cursor.
    let body = r#"{ "from_seq": 0, "limit": 500 }"#;
    let v = ok(
        call(&s, Method::POST, "/v0/topics/orders/diff", Some(JSON), body).await,
        200,
    );
    assert_eq!(v["topic"], "orders");
    let records = v["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{v}");
    let datas = [
        json!({ "sku": "AEROPRESS-GO", "qty": 1, "total": 3499 }),
        json!({ "sku": "FELLOW-KETTLE", "qty": 1, "total": 16500 }),
    ];
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["$seq"], i as u64 + 1);
        assert!(r["$ts"].is_u64(), "{r}");
        assert_eq!(r["data"], datas[i]);
        // The README's example shows "$tag" here although this request does not pass
        // include_tags, while the reference says include_tags defaults to false (and the
        // README's own SSE example omits $tag). Either way, a $tag present must be right.
        if let Some(tag) = r.get("$tag") {
            assert_eq!(tag, &json!(format!("order-{}", 7731 + i)));
        }
    }
    assert_eq!(v["next_from_seq"], 2);
    assert_eq!(v["head_seq"], 2);
    assert_eq!(v["earliest_seq"], 1);
    assert_eq!(v["caught_up"], true);
    assert_eq!(v.get("tombstone"), Some(&Value::Null));
    assert_eq!(v["lag"], 0);

    // 5. Watch many topics over one SSE stream.
    // Nothing in steps 1-4 creates "notifications", and the reference answers 404 for an
    // unknown topic unless ?lenient=true. The README shows this very call succeeding, and
    // its SSE ids carry only "orders" although the reference says ids are always the full
    // cursor map: consistent with "notifications" being left out. The Quickstart must work
    // verbatim, so this asserts 200 and allows "notifications" to be present or absent.
    let body =
        r#"{ "topics": { "orders": { "from_seq": 0 }, "notifications": { "tail": true } } }"#;
    let v = ok(
        call(&s, Method::POST, "/v0/watch", Some(JSON), body).await,
        200,
    );
    let wid = v["wid"].as_str().expect("wid").to_string();
    let rand = wid.strip_prefix("wid_").expect("wid_ prefix");
    assert_eq!(rand.len(), 22, "{wid}");
    assert!(
        rand.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{wid}"
    );
    assert_eq!(v["stream_url"], format!("/v0/watch/{wid}"));
    assert_has(
        &v["topics"]["orders"],
        json!({ "from_seq": 0, "head_seq": 2, "earliest_seq": 1 }),
    );

    // `curl -N` sends `Accept: */*`, which must open the stream (406 is only for an Accept
    // that excludes text/event-stream).
    let client = reqwest::Client::new();
    let r = client
        .get(s.url(v["stream_url"].as_str().unwrap()))
        .header("accept", "*/*");
    let r = r.send().await.expect("GET the stream");
    assert_eq!(r.status(), 200);
    let ct = common::header(&r, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut sse = Sse {
        body: r.bytes_stream().boxed(),
        buf: Vec::new(),
        cur: Frame::default(),
    };

    let first = sse.try_next(PROMPT).await.expect("a first frame");
    assert_eq!(first.retry.as_deref(), Some("2000"), "{first:?}");
    let mut pending = first.event.is_some().then_some(first);
    let mut delivered = Vec::new();
    let mut cursor = 0;
    let deadline = Instant::now() + PROMPT;
    let caught_up = loop {
        let f = match pending.take() {
            Some(f) => f,
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                sse.try_next(left)
                    .await
                    .expect("orders' records then caught-up")
            }
        };
        if f.event.is_none() {
            continue; // a comment (heartbeat)
        }
        let v = f.json();
        if v["topic"] != "orders" {
            assert_eq!(
                f.name(),
                "caught-up",
                "only a caught-up for notifications: {f:?}"
            );
            continue;
        }
        match f.name() {
            "record" => {
                // The README shows one frame for seq 1 (from_seq 0, to_seq 1) and elides the
                // frame for seq 2; frames of one or two records are both accepted.
                assert_eq!(v["from_seq"], cursor, "{v}");
                assert_eq!(v["head_seq"], 2);
                let to = v["to_seq"].as_u64().expect("to_seq");
                for r in v["records"].as_array().unwrap() {
                    let seq = r["$seq"].as_u64().unwrap();
                    assert_eq!(r["data"], datas[seq as usize - 1]);
                    assert!(r["$ts"].is_u64());
                    assert!(r.get("$tag").is_none(), "the SSE example has no $tag: {r}");
                    delivered.push(seq);
                }
                let id = f.id.as_deref().expect("record frames carry an id");
                assert_orders_cursor(id, to);
                if to == 1 && decode_id(id).len() == 1 {
                    assert_eq!(id, "eyJvcmRlcnMiOjF9", "base64url of {{\"orders\":1}}");
                }
                cursor = to;
            }
            "caught-up" => break f,
            other => panic!("unexpected event {other}: {f:?}"),
        }
    };
    assert_eq!(delivered, [1, 2]);
    assert_eq!(
        caught_up.json(),
        json!({ "topic": "orders", "head_seq": 2 })
    );
    // The README shows an id on caught-up too: {"orders":2}.
    assert_orders_cursor(
        caught_up
            .id
            .as_deref()
            .expect("caught-up id, as in the README"),
        2,
    );

    // 6. Delete records.
    let body = r#"{ "match": ["tag", "Eq", "order-7731"] }"#;
    let v = ok(
        call(
            &s,
            Method::POST,
            "/v0/topics/orders/delete",
            Some(JSON),
            body,
        )
        .await,
        200,
    );
    assert_eq!(v["topic"], "orders");
    assert_eq!(v["deleted"], 1);
    assert_eq!(v["earliest_seq"], 2);
    assert_eq!(v["head_seq"], 2);
    assert_eq!(v["count"], 1);

    // Silent: the open stream sees no tombstone or record for it.
    let quiet = Instant::now() + Duration::from_millis(500);
    while let Some(f) = sse
        .try_next(quiet.saturating_duration_since(Instant::now()))
        .await
    {
        assert!(
            f.event.is_none() || f.name() == "caught-up",
            "a delete is silent: {f:?}"
        );
    }
    let body = r#"{ "from_seq": 0, "limit": 500 }"#;
    let v = ok(
        call(&s, Method::POST, "/v0/topics/orders/diff", Some(JSON), body).await,
        200,
    );
    let seqs: Vec<&Value> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["$seq"])
        .collect();
    assert_eq!(seqs, [&json!(2)]);
    assert_eq!(v["tombstone"], Value::Null);
}

// ---- recipes ------------------------------------------------------------------------------

/// The README's three delete patterns. Its curls pass `-d` without `-H content-type`, which
/// curl sends as `application/x-www-form-urlencoded`; the API reference requires JSON (415
/// otherwise), and Riffle takes a form-typed body that is JSON so that the recipes work
/// verbatim. Sent that way, the bodies do what the README says.
#[tokio::test]
async fn readme_delete_recipes() {
    let s = start().await;
    let orders = json!({ "records": [{ "data": 1, "tag": "a" }, { "data": 2 }] }).to_string();
    ok(
        call(&s, Method::POST, "/v0/topics/orders", Some(JSON), &orders).await,
        201,
    );
    // chat:general: 5010 fillers, then v1 and v2 of user-1042:msg-5 (seqs 5011 and 5012, so
    // the README's before_seq 5012 is v2's seq), another of user-1042's messages and another
    // user's.
    let mut records: Vec<Value> = (0..5010).map(|i| json!({ "data": i })).collect();
    for tag in [
        "user-1042:msg-5",
        "user-1042:msg-5",
        "user-1042:msg-6",
        "user-7:msg-1",
    ] {
        records.push(json!({ "data": tag, "tag": tag }));
    }
    let chat = json!({ "records": records }).to_string();
    let v = ok(
        call(
            &s,
            Method::POST,
            "/v0/topics/chat:general",
            Some(JSON),
            &chat,
        )
        .await,
        201,
    );
    assert_eq!(v["last_seq"], 5014);

    let snapshot = r#"{ "before_seq": 480000 }"#;
    let update = r#"{ "match": ["tag", "Eq", "user-1042:msg-5"], "before_seq": 5012 }"#;
    let revoke = r#"{ "match": ["tag", "Glob", "user-1042:*"] }"#;
    let recipes = [
        ("/v0/topics/orders/delete", snapshot),
        ("/v0/topics/chat:general/delete", update),
        ("/v0/topics/chat:general/delete", revoke),
    ];
    let count = async |topic: &str| {
        let v = ok(
            call(&s, Method::GET, &format!("/v0/topics/{topic}"), None, "").await,
            200,
        );
        v["count"].as_u64().unwrap()
    };
    assert_eq!(
        (count("orders").await, count("chat:general").await),
        (2, 5014)
    );

    // Sent exactly as the recipes' curl sends them (`-d`: the form content type).
    // Snapshot / compaction: everything before the seq.
    let v = ok(
        call(&s, Method::POST, recipes[0].0, Some(CURL_FORM), snapshot).await,
        200,
    );
    assert_eq!(
        (v["deleted"].clone(), v["count"].clone()),
        (json!(2), json!(0))
    );
    // Message update: v1 goes, v2 stays.
    let v = ok(
        call(&s, Method::POST, recipes[1].0, Some(CURL_FORM), update).await,
        200,
    );
    assert_eq!(v["deleted"], 1);
    // Chat revoke: the rest of user-1042's records, not user-7's nor the untagged fillers.
    let v = ok(
        call(&s, Method::POST, recipes[2].0, Some(CURL_FORM), revoke).await,
        200,
    );
    assert_eq!(v["deleted"], 2);
    assert_eq!(v["count"], 5011);
    let body = r#"{ "from_seq": 5010, "include_tags": true }"#;
    let path = "/v0/topics/chat:general/diff";
    let v = ok(call(&s, Method::POST, path, Some(JSON), body).await, 200);
    let tags: Vec<&Value> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["$tag"])
        .collect();
    assert_eq!(tags, [&json!("user-7:msg-1")]);
    assert_eq!(v["records"][0]["$seq"], 5014);
}

/// The README's config recipes (job queue, pub/sub, ledger) also use `-d` without a content
/// type: sent as curl sends them, they create the documented configuration.
#[tokio::test]
async fn readme_config_recipes() {
    let s = start().await;
    let recipes = [
        ("transcode", r#"{ "durable": true, "cap_records": 0 }"#),
        (
            "notifications",
            r#"{ "ttl_ms": 5000, "cap_records": 10000, "discard": "old", "durable": false }"#,
        ),
        (
            "ledger",
            r#"{ "durable": true, "cap_records": 0, "ttl_ms": 0, "discard": "reject" }"#,
        ),
    ];
    for (topic, body) in recipes {
        let path = format!("/v0/topics/{topic}");
        err(
            call(&s, Method::GET, &path, None, "").await,
            404,
            "topic_not_found",
        );
        let v = ok(
            call(&s, Method::PUT, &path, Some(CURL_FORM), body).await,
            201,
        );
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_has(&v["config"], sent.clone());
        let durability = if sent["durable"] == true {
            "fsync"
        } else {
            "disk"
        };
        assert_eq!(v["config"]["durability"], durability, "{topic}");
    }
}
