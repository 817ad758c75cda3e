//! The topics `/v0` queues, black-box: claim, ack, nack, extend, the `/work` SSE stream,
//! dead-lettering, the `queue{ready,in_flight,dead_lettered}` counts, fencing with lease ids,
//! `wait_ms` long-polls and the coalescing window. Built from `topics-v0-api.md`,
//! `topics-README.md` and Riffle's documented decisions only, never from the implementation.

#[path = "../common/mod.rs"]
mod common;
#[macro_use]
#[path = "../topics_common/mod.rs"]
mod topics_common;

mod edges;
mod readme;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use topics_common::sse::{Frame, PROMPT, Sse, open_path};
use topics_common::*;

/// The fields of a claimed job.
const CLAIMED: &str = "$seq lease_id deadline $ts $tag deliveries data meta";
const SSE: &str = "text/event-stream";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `PUT` a new queue: `cfg` plus `"type": "queue"`.
async fn queue(s: &Server, name: &str, mut cfg: Value) -> Value {
    cfg["type"] = json!("queue");
    put_ok(s, name, cfg, 201).await
}

/// `POST /v0/topics/:q/:op` with `body`.
async fn qpost(s: &Server, q: &str, op: &str, body: Value) -> Resp {
    post(s, &format!("/v0/topics/{q}/{op}"), body).await
}

/// `POST /v0/topics/:q/:op`, asserting a 200 JSON success.
async fn op(s: &Server, q: &str, op: &str, body: Value) -> Value {
    qpost(s, q, op, body).await.ok(200)
}

async fn claim(s: &Server, q: &str, body: Value) -> Value {
    op(s, q, "claim", body).await
}

/// A body for `op` (`claim`, `ack`, `nack` or `extend`) from `node` (if any) and `seqs` (if
/// any), with the fields each one needs and no others.
fn body(op: &str, node: Option<&str>, seqs: &[u64]) -> Value {
    let mut b = json!({});
    if let Some(node) = node {
        b["node"] = json!(node);
    }
    if op != "claim" && !seqs.is_empty() {
        b["seqs"] = json!(seqs);
    }
    if op == "extend" {
        b["lease_ms"] = json!(1000);
    }
    b
}

/// The `queue` block of `GET /v0/topics/:q`.
async fn counts(s: &Server, q: &str) -> Value {
    state(s, q).await["queue"].clone()
}

fn claimed(v: &Value) -> &Vec<Value> {
    v["claimed"].as_array().expect("claimed[]")
}

/// The claimed `$seq`s.
fn cseqs(v: &Value) -> Vec<u64> {
    pairs(v).into_iter().map(|(seq, _)| seq).collect()
}

/// The claimed `($seq, deliveries)` pairs, in the answer's order.
fn pairs(v: &Value) -> Vec<(u64, u64)> {
    let n = |j: &Value, k: &str| j[k].as_u64().unwrap();
    let pair = |j: &Value| (n(j, "$seq"), n(j, "deliveries"));
    claimed(v).iter().map(pair).collect()
}

fn lease_ids(v: &Value) -> Vec<Value> {
    claimed(v).iter().map(|j| j["lease_id"].clone()).collect()
}

/// Assert a claimed job: only documented fields, `$seq`, a `lease_<16 hex>` id, `deliveries`,
/// a `$ts`, and `deadline` = the server's now (between `before` and `after`) + `lease_ms`.
#[track_caller]
fn assert_job(j: &Value, seq: u64, deliveries: u64, lease_ms: u64, (before, after): (u64, u64)) {
    let o = j.as_object().expect("a job object");
    let known = |k: &String| CLAIMED.split(' ').any(|f| f == k);
    assert!(o.keys().all(known), "undocumented field in {j}");
    assert!(o.contains_key("data"), "data is always present: {j}");
    has!(j, { "$seq": seq, "deliveries": deliveries });
    let id = j["lease_id"].as_str().expect("lease_id");
    let hex = id.strip_prefix("lease_").expect("lease_ prefix");
    let is_hex = hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(is_hex, "lease id {id:?}");
    let ts = j["$ts"].as_u64().expect("$ts");
    assert!(ts <= after + 5, "$ts: {j}");
    let deadline = j["deadline"].as_u64().expect("deadline ms");
    let (lo, hi) = (before + lease_ms, after + lease_ms);
    let near = deadline + 20 >= lo && deadline <= hi + 20;
    assert!(near, "deadline {deadline}, not in [{lo}, {hi}]: {j}");
}

/// A claim, with the time around it (ms since the epoch).
async fn timed_claim(s: &Server, q: &str, body: Value) -> (Value, (u64, u64)) {
    let before = now_ms();
    let v = claim(s, q, body).await;
    (v, (before, now_ms()))
}

/// `GET /v0/topics/:q/work?query` as an EventSource would.
async fn work(s: &Server, q: &str, query: &str) -> Sse {
    let path = format!("/v0/topics/{q}/work?{query}");
    open_path(s, &path, SSE, None).await
}

/// The next `event: job` frame's JSON, checking `id:` = `$seq`.
async fn next_job(sse: &mut Sse) -> Value {
    let f = sse.until(PROMPT, |f: &Frame| f.name() == "job").await;
    let f = f.last().unwrap();
    let v = f.json();
    let seq = v["$seq"].to_string();
    assert_eq!(f.id.as_deref(), Some(seq.as_str()), "{f:?}");
    v
}

/// Write `records` to `q` after `delay`: the status, when it was sent and when answered.
fn write_later(s: &Server, q: &str, delay: u64, records: Value) -> tokio::task::JoinHandle<Sent> {
    let (client, url) = (s.client.clone(), s.url(&t(q)));
    let body = json!({ "records": records }).to_string();
    tokio::spawn(async move {
        tokio::time::sleep(ms(delay)).await;
        let sent = Instant::now();
        let r = client.post(url).header("content-type", JSON).body(body);
        let status = r.send().await.expect("the write").status().as_u16();
        (status, sent, Instant::now())
    })
}

type Sent = (u16, Instant, Instant);

#[tokio::test]
async fn queue_config_defaults_clamps_and_type_rules() {
    let s = start().await;
    let v = queue(&s, "q", json!({})).await;
    has!(v, { "topic": "q", "created": true });
    assert_config(&v["config"], json!({ "type": "queue" }));
    let g = state(&s, "q").await;
    has!(g, { "type": "queue", "queue": { "ready": 0, "in_flight": 0, "dead_lettered": 0 } });

    let cfg = json!({ "lease_ms": 5, "claim_jitter_ms": 99_999, "max_deliveries": 4,
                      "dead_letter": "q:dead", "leases_durable": true });
    let v = queue(&s, "c", cfg).await;
    let want = json!({ "type": "queue", "lease_ms": 100, "claim_jitter_ms": 5000,
                       "max_deliveries": 4, "dead_letter": "q:dead", "leases_durable": true });
    assert_config(&v["config"], want);
    let big = json!({ "type": "queue", "lease_ms": 999_999_999_999u64 });
    let v = put_ok(&s, "c", big, 200).await;
    has!(v["config"], { "type": "queue", "lease_ms": 86_400_000 });

    let own = json!({ "type": "queue", "dead_letter": "self" });
    put(&s, "self", own).await.err(400, "invalid_request");
    get(&s, &t("self")).await.err(404, "topic_not_found");
    let incompatible = "topic_exists_incompatible";
    let r = put(&s, "q", json!({ "type": "log" })).await;
    r.err(409, incompatible);
    put_ok(&s, "l", json!({}), 201).await;
    let r = put(&s, "l", json!({ "type": "queue" })).await;
    r.err(409, incompatible);
    let g = state(&s, "l").await;
    assert_eq!(g["type"], "log");
    assert!(g.get("queue").is_none(), "a log has no queue block: {g}");
    let bad = put(&s, "bad", json!({ "type": "stack" })).await;
    bad.err(400, "invalid_request");
}

// ---- claim ----------------------------------------------------------------------------------

#[tokio::test]
async fn claim_returns_the_documented_fields() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    let jobs = json!([
        { "data": { "clip": 1 }, "tag": "clip-1", "meta": { "k": "v" } },
        { "data": null },
        { "data": "three" },
    ]);
    write(&s, "q", json!({ "records": jobs })).await;
    has!(counts(&s, "q").await, { "ready": 3, "in_flight": 0, "dead_lettered": 0 });

    // max defaults to 1, lease_ms to the queue's (30000).
    let (v, at) = timed_claim(&s, "q", json!({ "node": "w" })).await;
    has!(v, { "count": 1, "ready": 2 });
    let j = &claimed(&v)[0];
    assert_job(j, 1, 1, 30_000, at);
    has!(j, { "$tag": "clip-1", "data": { "clip": 1 }, "meta": { "k": "v" } });

    let (v, at) = timed_claim(&s, "q", json!({ "node": "w", "max": 5 })).await;
    has!(v, { "count": 2, "ready": 0 });
    assert_eq!(cseqs(&v), [2, 3], "fresh jobs in seq order");
    let jobs = claimed(&v);
    for (j, seq) in jobs.iter().zip([2, 3]) {
        assert_job(j, seq, 1, 30_000, at);
        let bare = j.get("$tag").is_none() && j.get("meta").is_none();
        assert!(bare, "$tag and meta are omitted when absent: {j}");
    }
    has!(jobs[0], { "data": null });
    has!(jobs[1], { "data": "three" });
    let ids: BTreeSet<String> = lease_ids(&v).iter().map(Value::to_string).collect();
    assert_eq!(ids.len(), 2, "each lease has its own id");
    has!(counts(&s, "q").await, { "ready": 0, "in_flight": 3, "dead_lettered": 0 });

    // Nothing ready: an empty answer, at once.
    let started = Instant::now();
    let v = claim(&s, "q", json!({ "node": "w2", "max": 3 })).await;
    has!(v, { "claimed": [], "count": 0, "ready": 0 });
    assert!(started.elapsed() < ms(1000), "no wait without wait_ms");
    // Claims leave the jobs log as it is.
    has!(state(&s, "q").await, { "count": 3, "head_seq": 3 });
}

#[tokio::test]
async fn claim_max_and_lease_ms_are_clamped() {
    let s = start().await;
    queue(&s, "q", json!({ "lease_ms": 60_000 })).await;
    write_n(&s, "q", 1200).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 5000 })).await;
    has!(v, { "count": 1000, "ready": 200 });
    assert_eq!(cseqs(&v), (1..=1000).collect::<Vec<_>>());
    let v = claim(&s, "q", json!({ "node": "w", "max": 1000 })).await;
    has!(v, { "count": 200, "ready": 0 });
    has!(counts(&s, "q").await, { "ready": 0, "in_flight": 1200 });

    // lease_ms: the queue's by default, else clamped (the 100 ms lease goes last: once it
    // ends, its job would come first).
    write_n(&s, "q", 4).await;
    let asks = [Some(7000), None, Some(10_000_000_000u64), Some(5)];
    let leases = [7000, 60_000, 86_400_000, 100];
    for (seq, (asked, lease)) in (1201..).zip(asks.into_iter().zip(leases)) {
        let mut body = json!({ "node": "w" });
        if let Some(ms) = asked {
            body["lease_ms"] = json!(ms);
        }
        let (v, at) = timed_claim(&s, "q", body).await;
        assert_job(&claimed(&v)[0], seq, 1, lease, at);
    }
}

#[tokio::test]
async fn an_expired_lease_is_redelivered_and_fenced() {
    let s = start().await;
    queue(&s, "q", json!({ "lease_ms": 500 })).await;
    write_n(&s, "q", 1).await;
    let (v, at) = timed_claim(&s, "q", json!({ "node": "w1" })).await;
    assert_job(&claimed(&v)[0], 1, 1, 500, at);
    let old = lease_ids(&v);
    let v = claim(&s, "q", json!({ "node": "w2" })).await;
    has!(v, { "count": 0, "ready": 0 });
    has!(counts(&s, "q").await, { "ready": 0, "in_flight": 1 });
    write_n(&s, "q", 1).await;

    tokio::time::sleep(ms(800)).await;
    let (v, at) = timed_claim(&s, "q", json!({ "node": "w2" })).await;
    assert_job(&claimed(&v)[0], 1, 2, 500, at); // before the fresh seq 2
    let new = lease_ids(&v);
    assert_ne!(old, new, "a new lease, a new id");
    has!(counts(&s, "q").await, { "ready": 1, "in_flight": 1 });

    // The first worker is late: its lease is gone, whether it names it or not.
    let stale = json!({ "node": "w1", "seqs": [1], "lease_ids": old });
    has!(op(&s, "q", "ack", stale).await, { "acked": 0, "skipped": [1] });
    let unnamed = json!({ "node": "w1", "seqs": [1] });
    has!(op(&s, "q", "ack", unnamed).await, { "acked": 0, "skipped": [1] });
    assert_eq!(state(&s, "q").await["count"], 2);
    let ok = json!({ "node": "w2", "seqs": [1], "lease_ids": new });
    let v = op(&s, "q", "ack", ok).await;
    has!(v, { "acked": 1, "skipped": [], "ready": 1, "in_flight": 0 });
}

// ---- ack, nack, extend --------------------------------------------------------------------

#[tokio::test]
async fn ack_is_a_permanent_delete() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    write_n(&s, "q", 3).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 2 })).await;
    let ack = json!({ "node": "w", "seqs": [1, 2], "lease_ids": lease_ids(&v) });
    let v = op(&s, "q", "ack", ack.clone()).await;
    has!(v, { "acked": 2, "skipped": [], "ready": 1, "in_flight": 0 });
    let g = state(&s, "q").await;
    has!(g, { "count": 1, "head_seq": 3, "earliest_seq": 3 });
    has!(g["queue"], { "ready": 1, "in_flight": 0, "dead_lettered": 0 });
    let d = diff(&s, "q", json!({ "from_seq": 0 })).await;
    assert_eq!(seqs(&d), [3], "acked jobs are gone from reads");
    assert_eq!(d["tombstone"], Value::Null, "an ack is a silent delete");

    let v = op(&s, "q", "ack", ack).await;
    has!(v, { "acked": 0, "skipped": [1, 2] });
    // A ready (unleased) job is not acked either.
    let v = op(&s, "q", "ack", json!({ "node": "w", "seqs": [3] })).await;
    has!(v, { "acked": 0, "skipped": [3], "ready": 1 });
    let v = claim(&s, "q", json!({ "node": "w", "max": 10 })).await;
    assert_eq!(cseqs(&v), [3], "acked jobs are never claimed again");
}

#[tokio::test]
async fn nack_makes_a_job_ready_again_before_fresh_ones() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    write_n(&s, "q", 3).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 2 })).await;
    let ids = lease_ids(&v);
    let v = op(&s, "q", "nack", json!({ "node": "w", "seqs": [2] })).await;
    has!(v, { "nacked": 1, "skipped": [], "ready": 2, "in_flight": 1 });
    has!(counts(&s, "q").await, { "ready": 2, "in_flight": 1 });
    // Fencing: seq 1 named with seq 2's lease id; another node.
    let fenced = json!({ "node": "w", "seqs": [1], "lease_ids": [ids[1]] });
    has!(op(&s, "q", "nack", fenced).await, { "nacked": 0, "skipped": [1] });
    let other = json!({ "node": "x", "seqs": [1] });
    has!(op(&s, "q", "nack", other).await, { "nacked": 0, "skipped": [1] });

    let (v, at) = timed_claim(&s, "q", json!({ "node": "w" })).await;
    assert_job(&claimed(&v)[0], 2, 2, 30_000, at);
    let (v, at) = timed_claim(&s, "q", json!({ "node": "w" })).await;
    assert_job(&claimed(&v)[0], 3, 1, 30_000, at);
    // max_deliveries 0 (the default): no limit.
    for n in 3..=7 {
        op(&s, "q", "nack", json!({ "node": "w", "seqs": [2] })).await;
        let v = claim(&s, "q", json!({ "node": "w" })).await;
        assert_eq!(pairs(&v), [(2, n)]);
    }
    has!(counts(&s, "q").await, { "in_flight": 3, "dead_lettered": 0 });
}

#[tokio::test]
async fn nack_delay_keeps_the_job_out_until_it_ends_then_it_goes_first() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    write_n(&s, "q", 2).await;
    let v = claim(&s, "q", json!({ "node": "w" })).await;
    let nack = json!({ "node": "w", "seqs": [1], "delay_ms": 1000, "lease_ids": lease_ids(&v) });
    let nacked = Instant::now();
    has!(op(&s, "q", "nack", nack).await, { "nacked": 1, "skipped": [], "in_flight": 0 });
    let v = claim(&s, "q", json!({ "node": "w", "max": 5 })).await;
    assert_eq!(cseqs(&v), [2], "the delayed job is not claimable yet");
    while nacked.elapsed() < ms(500) {
        let v = claim(&s, "q", json!({ "node": "w", "max": 5 })).await;
        has!(v, { "claimed": [], "count": 0 });
        tokio::time::sleep(ms(50)).await;
    }
    tokio::time::sleep(ms(700)).await;
    write_n(&s, "q", 1).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 1 })).await;
    assert_eq!(cseqs(&v), [1], "the job whose delay ended goes first: {v}");
    assert_eq!(claimed(&v)[0]["deliveries"], 2);
}

#[tokio::test]
async fn extend_moves_the_deadline() {
    let s = start().await;
    queue(&s, "q", json!({ "lease_ms": 1000 })).await;
    write_n(&s, "q", 2).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 2 })).await;
    let ids = lease_ids(&v);
    let r = qpost(&s, "q", "extend", json!({ "node": "w", "seqs": [1, 2] })).await;
    r.err(400, "invalid_request");

    let before = now_ms();
    let ext = json!({ "node": "w", "seqs": [1, 2], "lease_ms": 3000, "lease_ids": ids });
    let v = op(&s, "q", "extend", ext).await;
    let after = now_ms();
    has!(v, { "extended": 2, "skipped": [] });
    let deadlines = v["deadlines"].as_object().expect("deadlines{seq: ms}");
    assert_eq!(deadlines.len(), 2, "{v}");
    for seq in ["1", "2"] {
        let d = deadlines[seq].as_u64().expect("a deadline per seq");
        assert!(d + 20 >= before + 3000 && d <= after + 3020, "{seq}: {d}");
    }
    // Another node, or a wrong lease id, extends nothing.
    let other = json!({ "node": "x", "seqs": [1], "lease_ms": 3000 });
    has!(op(&s, "q", "extend", other).await, { "extended": 0, "skipped": [1] });
    let fenced = json!({ "node": "w", "seqs": [1], "lease_ms": 9000, "lease_ids": ["lease_0"] });
    let v = op(&s, "q", "extend", fenced).await;
    has!(v, { "extended": 0, "skipped": [1] });
    assert!(v["deadlines"].get("1").is_none(), "{v}");

    tokio::time::sleep(ms(1400)).await;
    let v = claim(&s, "q", json!({ "node": "x", "max": 2 })).await;
    has!(v, { "count": 0 });
    has!(counts(&s, "q").await, { "ready": 0, "in_flight": 2 });
    let ack = json!({ "node": "w", "seqs": [1, 2], "lease_ids": ids });
    has!(op(&s, "q", "ack", ack).await, { "acked": 2, "skipped": [] });
}

#[tokio::test]
async fn request_errors() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    write_n(&s, "q", 1).await;
    let r = qpost(&s, "q", "claim", json!({ "max": 1 })).await;
    r.err(400, "invalid_request");
    for o in ["ack", "nack", "extend"] {
        let r = qpost(&s, "q", o, body(o, None, &[1])).await;
        r.err(400, "invalid_request");
        let r = qpost(&s, "q", o, body(o, Some("w"), &[])).await;
        r.err(400, "invalid_request");
        let many: Vec<u64> = (1..=1001).collect();
        let r = qpost(&s, "q", o, body(o, Some("w"), &many)).await;
        r.err(400, "batch_too_large");
        let v = op(&s, "q", o, body(o, Some("w"), &many[..1000])).await;
        let skipped = v["skipped"].as_array().map(Vec::len);
        assert_eq!(skipped, Some(1000), "{o}: nothing is leased");
    }
    let (path, text) = ("/v0/topics/q/claim", Some("text/plain"));
    let r = raw(&s, Method::POST, path, text, br#"{"node":"w"}"#).await;
    r.err(415, "unsupported_media_type");
    let misaligned = json!({ "node": "w", "seqs": [1, 2], "lease_ids": ["lease_0"] });
    let r = qpost(&s, "q", "ack", misaligned).await;
    r.err(400, "invalid_request");
    let r = post_text(&s, path, "{nope").await;
    r.err(400, "invalid_request");
    let r = raw(&s, Method::GET, path, None, b"").await;
    r.err(405, "method_not_allowed");
    let get_work = async |topic: &str, query: &str, accept: &str| {
        let path = format!("/v0/topics/{topic}/work?{query}");
        let r = s.client.get(s.url(&path)).header("accept", accept);
        finish(path, r.send().await.unwrap()).await
    };
    let r = get_work("q", "node=w", JSON).await;
    r.err(406, "not_acceptable");
    let r = get_work("q", "max=2", SSE).await;
    r.err(400, "invalid_request");
    has!(counts(&s, "q").await, { "ready": 1, "in_flight": 0 });

    // Only on an existing queue.
    write_n(&s, "log", 1).await;
    for o in ["claim", "ack", "nack", "extend"] {
        let b = body(o, Some("w"), &[1]);
        qpost(&s, "log", o, b.clone()).await.err(409, "not_a_queue");
        qpost(&s, "missing", o, b).await.err(404, "topic_not_found");
    }
    get_work("log", "node=w", SSE).await.err(409, "not_a_queue");
    let r = get_work("missing", "node=w", SSE).await;
    r.err(404, "topic_not_found");
    get(&s, &t("missing")).await.err(404, "topic_not_found");
    assert_eq!(state(&s, "log").await["count"], 1);
}

#[tokio::test]
async fn dead_letter_after_max_deliveries() {
    let s = start().await;
    let cfg = json!({ "lease_ms": 1000, "max_deliveries": 2, "dead_letter": "q:dead" });
    queue(&s, "q", cfg).await;
    let jobs = json!([
        { "data": { "clip": 7 }, "tag": "clip-7", "meta": { "by": "p" } },
        { "data": [1, 2] },
    ]);
    write(&s, "q", json!({ "records": jobs })).await;
    // Delivery 1 expires, delivery 2 is nacked.
    let v = claim(&s, "q", json!({ "node": "w", "max": 2 })).await;
    assert_eq!(cseqs(&v), [1, 2]);
    tokio::time::sleep(ms(1300)).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 2 })).await;
    let twice: Vec<&Value> = claimed(&v).iter().map(|j| &j["deliveries"]).collect();
    assert_eq!(twice, [&json!(2), &json!(2)], "{v}");
    has!(counts(&s, "q").await, { "ready": 0, "in_flight": 2, "dead_lettered": 0 });
    op(&s, "q", "nack", json!({ "node": "w", "seqs": [1, 2] })).await;

    // The third attempt moves both to q:dead (created) instead of delivering them.
    let v = claim(&s, "q", json!({ "node": "w", "max": 2 })).await;
    has!(v, { "claimed": [], "count": 0, "ready": 0 });
    let g = state(&s, "q").await;
    has!(g, { "count": 0, "head_seq": 2 });
    has!(g["queue"], { "ready": 0, "in_flight": 0, "dead_lettered": 2 });
    assert_eq!(seqs(&diff(&s, "q", json!({})).await), Vec::<u64>::new());
    let d = diff(&s, "q:dead", json!({ "include_tags": true })).await;
    let dead = d["records"].as_array().unwrap();
    assert_eq!(dead.len(), 2, "{d}");
    let m = |src: u64| {
        json!({ "$dead_letter_from": "q", "$dead_letter_deliveries": 2,
                               "$dead_letter_src_seq": src })
    };
    let mut first = m(1);
    first["by"] = json!("p");
    has!(dead[0], { "data": { "clip": 7 }, "$tag": "clip-7", "meta": first });
    has!(dead[1], { "data": [1, 2], "meta": m(2) });
    assert!(dead[1].get("$tag").is_none(), "{}", dead[1]);
    let v = claim(&s, "q", json!({ "node": "w", "max": 5 })).await;
    assert_eq!(v["count"], 0, "dead-lettered jobs never come back");
}

/// A claim that dead-letters one job and delivers another answers the counts as of after the
/// dead job left (it was counted ready).
#[tokio::test]
async fn a_claim_that_dead_letters_answers_the_counts_after_it() {
    let s = start().await;
    let cfg = json!({ "lease_ms": 1000, "max_deliveries": 1, "dead_letter": "q:dead" });
    queue(&s, "q", cfg).await;
    write(
        &s,
        "q",
        json!({ "records": [{ "data": 1 }, { "data": 2 }] }),
    )
    .await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 1 })).await;
    assert_eq!(cseqs(&v), [1]);
    op(&s, "q", "nack", json!({ "node": "w", "seqs": [1] })).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 2 })).await;
    assert_eq!(cseqs(&v), [2], "job 1 went to q:dead: {v}");
    has!(v, { "count": 1, "ready": 0 });
    has!(counts(&s, "q").await, { "ready": 0, "in_flight": 1, "dead_lettered": 1 });
}

#[tokio::test]
async fn queue_counts_through_the_lifecycle_without_a_dead_letter_topic() {
    let s = start().await;
    queue(&s, "q", json!({ "lease_ms": 1000, "max_deliveries": 1 })).await;
    let c = |r: u64, f: u64, d: u64| json!({ "ready": r, "in_flight": f, "dead_lettered": d });
    write_n(&s, "q", 5).await;
    assert_eq!(counts(&s, "q").await, c(5, 0, 0));
    let v = claim(&s, "q", json!({ "node": "w", "max": 4 })).await;
    has!(v, { "count": 4, "ready": 1 });
    assert_eq!(counts(&s, "q").await, c(1, 4, 0));
    let v = op(&s, "q", "ack", json!({ "node": "w", "seqs": [1] })).await;
    has!(v, { "ready": 1, "in_flight": 3 });
    assert_eq!(counts(&s, "q").await, c(1, 3, 0));
    let v = op(&s, "q", "nack", json!({ "node": "w", "seqs": [2] })).await;
    has!(v, { "ready": 2, "in_flight": 2 });
    assert_eq!(counts(&s, "q").await, c(2, 2, 0));
    // 2 was nacked, 3 and 4 expire: the next attempt dead-letters them: no dead_letter
    // topic, so they are dropped, and counted.
    tokio::time::sleep(ms(1300)).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 5 })).await;
    assert_eq!(cseqs(&v), [5], "{v}");
    assert_eq!(counts(&s, "q").await, c(0, 1, 3));
    op(&s, "q", "ack", json!({ "node": "w", "seqs": [5] })).await;
    assert_eq!(counts(&s, "q").await, c(0, 0, 3));
    assert_eq!(state(&s, "q").await["count"], 0);
    assert_eq!(seqs(&diff(&s, "q", json!({})).await), Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_wait_ms_returns_as_soon_as_a_job_is_written() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    // Repeated: a waiting claim must never miss the wake-up of a write.
    for round in 0..30 {
        let delay = if round == 0 { 500 } else { 20 + round * 3 };
        let writer = write_later(&s, "q", delay, json!([{ "data": round }]));
        let v = claim(&s, "q", json!({ "node": "w", "wait_ms": 5000 })).await;
        let answered = Instant::now();
        let (status, sent, acked) = writer.await.unwrap();
        assert_eq!(status, 200);
        has!(v, { "count": 1 });
        assert_eq!(claimed(&v)[0]["data"], round);
        assert!(answered >= sent, "round {round}: answered before the write");
        let late = answered.saturating_duration_since(acked);
        assert!(
            late < ms(100),
            "round {round}: answered {late:?} after the write"
        );
    }

    // Longer waits are clamped (to 30 s), not refused.
    let writer = write_later(&s, "q", 300, json!([{ "data": 2 }]));
    let v = claim(&s, "q", json!({ "node": "w", "wait_ms": 999_999_999 })).await;
    assert_eq!(cseqs(&v), [31]);
    assert_eq!(writer.await.unwrap().0, 200);
}

#[tokio::test]
async fn claim_wait_ms_ends_empty_or_wakes_on_an_expired_lease_or_an_ended_delay() {
    let s = start().await;
    queue(&s, "q", json!({ "lease_ms": 400 })).await;
    let started = Instant::now();
    let v = claim(&s, "q", json!({ "node": "w", "wait_ms": 300 })).await;
    let waited = started.elapsed();
    has!(v, { "claimed": [], "count": 0, "ready": 0 });
    assert!((ms(300)..ms(3000)).contains(&waited), "{waited:?}");

    write_n(&s, "q", 2).await;
    let v = claim(&s, "q", json!({ "node": "a", "max": 2 })).await;
    assert_eq!(cseqs(&v), [1, 2]);
    let nack = json!({ "node": "a", "seqs": [2], "delay_ms": 1500 });
    op(&s, "q", "nack", nack).await;
    let started = Instant::now();
    let b = json!({ "node": "b", "wait_ms": 5000, "lease_ms": 60_000 });
    let v = claim(&s, "q", b.clone()).await;
    let waited = started.elapsed();
    assert_eq!(pairs(&v), [(1, 2)], "the expired lease");
    assert!((ms(350)..ms(1400)).contains(&waited), "{waited:?}");
    let v = claim(&s, "q", b).await;
    let waited = started.elapsed();
    assert_eq!(pairs(&v), [(2, 2)], "the ended delay");
    assert!((ms(1400)..ms(3000)).contains(&waited), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_jitter_splits_the_jobs_evenly() {
    let s = start().await;
    queue(&s, "q", json!({ "claim_jitter_ms": 500 })).await;
    write_n(&s, "q", 6).await;
    let c = |n: &'static str| claim(&s, "q", json!({ "node": n, "max": 5 }));
    let (a, b) = tokio::join!(c("a"), c("b"));
    let (a, b) = (cseqs(&a), cseqs(&b));
    assert_eq!((a.len(), b.len()), (3, 3), "{a:?} {b:?}");
    let all: BTreeSet<u64> = a.iter().chain(&b).copied().collect();
    assert_eq!(all, (1..=6).collect(), "disjoint, and every job");

    write_n(&s, "q", 7).await;
    let (a, b, c) = tokio::join!(c("a"), c("b"), c("c"));
    let mut sizes = [a, b, c].map(|v| v["count"].as_u64().unwrap());
    sizes.sort();
    assert_eq!(sizes, [2, 2, 3], "7 jobs over 3 claimers");

    // A /work stream joins the cohort too.
    write_n(&s, "q", 4).await;
    let late = async {
        tokio::time::sleep(ms(50)).await;
        claim(&s, "q", json!({ "node": "d", "max": 4 })).await
    };
    let (mut sse, v) = tokio::join!(work(&s, "q", "node=w&max=4"), late);
    let mut got = cseqs(&v);
    assert_eq!(got.len(), 2, "half for the claim: {v}");
    for _ in 0..2 {
        got.push(next_job(&mut sse).await["$seq"].as_u64().unwrap());
    }
    got.sort();
    assert_eq!(got, [14, 15, 16, 17]);
    has!(counts(&s, "q").await, { "ready": 0, "in_flight": 17 });
}

// ---- /work ----------------------------------------------------------------------------------

#[tokio::test]
async fn work_streams_jobs_and_refills_on_ack() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    let jobs = json!([{ "data": "a", "tag": "t", "meta": { "m": 1 } }, { "data": "b" },
                      { "data": "c" }]);
    write(&s, "q", json!({ "records": jobs })).await;
    let before = now_ms();
    let mut sse = work(&s, "q", "node=w&max=2&lease_ms=20000").await;
    let a = next_job(&mut sse).await;
    let b = next_job(&mut sse).await;
    let at = (before, now_ms());
    assert_job(&a, 1, 1, 20_000, at);
    assert_job(&b, 2, 1, 20_000, at);
    has!(a, { "data": "a", "$tag": "t", "meta": { "m": 1 } });
    has!(counts(&s, "q").await, { "ready": 1, "in_flight": 2 });
    let more = sse.drain(ms(600)).await;
    assert!(more.is_empty(), "at most max jobs held: {more:?}");
    // Held jobs are not handed to claimers.
    let v = claim(&s, "q", json!({ "node": "x", "max": 5 })).await;
    assert_eq!(cseqs(&v), [3]);
    op(&s, "q", "nack", json!({ "node": "x", "seqs": [3] })).await;

    let ack = json!({ "node": "w", "seqs": [1], "lease_ids": [a["lease_id"]] });
    has!(op(&s, "q", "ack", ack).await, { "acked": 1 });
    let c = next_job(&mut sse).await;
    has!(c, { "$seq": 3, "deliveries": 2, "data": "c" });
    // New jobs wait for room.
    write(&s, "q", json!({ "records": [{ "data": "d" }] })).await;
    assert!(sse.drain(ms(600)).await.is_empty());
    let ack = json!({ "node": "w", "seqs": [2, 3], "lease_ids": [b["lease_id"], c["lease_id"]] });
    has!(op(&s, "q", "ack", ack).await, { "acked": 2 });
    has!(next_job(&mut sse).await, { "$seq": 4, "data": "d", "deliveries": 1 });
}

#[tokio::test]
async fn work_heartbeats_while_idle_and_holds_1_job_by_default() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    let mut sse = work(&s, "q", "node=w").await;
    let mut last = Instant::now();
    let mut beats = 0;
    let end = Instant::now() + ms(3500);
    while Instant::now() < end {
        let f = sse.try_next(ms(1600)).await;
        let f = f.expect("a heartbeat at least every second");
        assert!(!f.is_event(), "no job on an empty queue: {f:?}");
        if let Some(hb) = f.comments.iter().find_map(|c| c.strip_prefix("hb ")) {
            // The watch's format: `: hb <ms>`, the server's clock.
            let at: u64 = hb.parse().unwrap_or_else(|_| panic!("hb {hb:?}"));
            assert!(at.abs_diff(now_ms()) < 60_000, "hb {at} at {}", now_ms());
            let gap = last.elapsed();
            assert!(gap < ms(1500), "{gap:?} without a heartbeat");
            last = Instant::now();
            beats += 1;
        }
    }
    assert!(beats >= 3, "{beats} heartbeats in 3.5 s");
    // max defaults to 1.
    write_n(&s, "q", 2).await;
    assert_eq!(next_job(&mut sse).await["$seq"], 1);
    assert!(sse.drain(ms(600)).await.is_empty(), "one job at a time");
}

#[tokio::test]
async fn work_disconnect_releases_its_leases() {
    let s = start().await;
    queue(&s, "q", json!({})).await;
    write_n(&s, "q", 3).await;
    let mut sse = work(&s, "q", "node=w&max=2&lease_ms=60000").await;
    next_job(&mut sse).await;
    next_job(&mut sse).await;
    has!(counts(&s, "q").await, { "ready": 1, "in_flight": 2 });
    // Idle (no job to send, heartbeats 1 s apart), the stream notices the hang-up at once.
    drop(sse);
    let gone = Instant::now();
    loop {
        let c = counts(&s, "q").await;
        if c["in_flight"] == 0 {
            has!(c, { "ready": 3 });
            break;
        }
        assert!(gone.elapsed() < ms(500), "leases still held: {c}");
        tokio::time::sleep(ms(20)).await;
    }
    let v = claim(&s, "q", json!({ "node": "x", "max": 3 })).await;
    assert_eq!(pairs(&v), [(1, 2), (2, 2), (3, 1)], "reclaimed first");
}
