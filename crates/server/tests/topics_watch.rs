//! The topics `/v0` multiplexed watch: `POST /v0/watch` sessions and their SSE stream
//! (`GET /v0/watch/:wid`): frames, composite cursors, resume, node filter, heartbeats,
//! deleted topics, tombstones, and prompt wake-ups. Built from `topics-v0-api.md` and
//! `topics-README.md` only.

mod common;
#[macro_use]
mod topics_common;

use base64::Engine as _;
use common::Server;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use topics_common::sse::{Frame, PROMPT, assert_wid, decode_id, open};
use topics_common::*;

// ---- helpers ------------------------------------------------------------------------------

/// `n` records with `data: {"i": 1..=n}` and `tag: "t1".."tn"`, for the `$tag` checks.
fn tagged_recs(n: usize) -> Value {
    (1..=n)
        .map(|i| json!({ "data": { "i": i }, "tag": format!("t{i}") }))
        .collect()
}

/// Create a watch session; asserts a JSON success with 200 and returns the response.
async fn watch(s: &Server, body: Value) -> Value {
    post(s, "/v0/watch", body).await.ok(200)
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

/// Check a `record` event's shape, and that its `id:` is the full cursor map with the
/// event's topic at `to_seq`. Returns (topic, seqs, id map).
#[track_caller]
fn record_event(f: &Frame, topics: &[&str]) -> (String, Vec<u64>, Map<String, Value>) {
    assert_eq!(f.name(), "record", "{f:?}");
    let v = f.json();
    let topic = v["topic"].as_str().expect("topic").to_string();
    let got = seqs(&v);
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
    let v = post(&s, "/v0/watch", json!({ "topics": {} })).await;
    v.err(400, "invalid_request");

    let names: Vec<String> = (0..257).map(|i| format!("w{i:03}")).collect();
    let writes = names.iter().map(|n| write_n(&s, n, 1));
    futures_util::future::join_all(writes).await;
    let map = |n: usize| -> Value {
        names[..n]
            .iter()
            .map(|t| (t.clone(), json!({ "from_seq": 0 })))
            .collect::<Map<_, _>>()
            .into()
    };
    let v = post(&s, "/v0/watch", json!({ "topics": map(257) })).await;
    v.err_in(400, &["invalid_request", "batch_too_large"]);
    let v = watch(&s, json!({ "topics": map(256) })).await;
    assert_eq!(v["topics"].as_object().unwrap().len(), 256);
}

#[tokio::test]
async fn an_unknown_topic_is_404_unless_lenient() {
    let s = start().await;
    write_n(&s, "known", 2).await;
    let body = json!({ "topics": { "known": { "from_seq": 0 }, "ghost": { "from_seq": 0 } } });
    let v = post(&s, "/v0/watch", body.clone()).await;
    v.err(404, "topic_not_found");

    let v = post(&s, "/v0/watch?lenient=true", body).await.ok(200);
    let topics = v["topics"].as_object().unwrap();
    assert!(
        topics.contains_key("known") && !topics.contains_key("ghost"),
        "{v}"
    );
    let v = post(&s, "/v0/topics/ghost/diff", json!({})).await;
    v.err(404, "topic_not_found");
}

#[tokio::test]
async fn the_session_reports_wid_url_ttl_and_cursors() {
    let s = start().await;
    write_n(&s, "a", 3).await;
    write_n(&s, "b", 2).await;
    let body = json!({ "topics": { "a": { "from_seq": 1 }, "b": { "tail": true } } });
    let v = watch(&s, body).await;
    assert_wid(&v);
    assert_eq!(v["session_ttl_ms"], 300_000);
    has!(v["topics"]["a"], { "from_seq": 1, "head_seq": 3, "earliest_seq": 1 });
    has!(v["topics"]["b"], { "from_seq": 2, "head_seq": 2, "earliest_seq": 1 });

    let other = watch(&s, json!({ "topics": { "a": {} } })).await;
    assert_ne!(other["wid"], v["wid"], "every session gets a fresh wid");
}

#[tokio::test]
async fn the_stream_needs_sse_accept_and_a_known_wid() {
    let s = start().await;
    write_n(&s, "a", 1).await;
    let v = watch(&s, json!({ "topics": { "a": { "from_seq": 0 } } })).await;
    let url = s.url(v["stream_url"].as_str().unwrap());
    let r = s.client.get(&url).header("accept", JSON).send().await;
    let what = format!("GET {url} (accept {JSON})");
    finish(what, r.unwrap()).await.err(406, "not_acceptable");

    let url = s.url("/v0/watch/wid_AAAAAAAAAAAAAAAAAAAAAA");
    let accept = "text/event-stream";
    let r = s.client.get(&url).header("accept", accept).send().await;
    let what = format!("GET {url} (accept {accept})");
    finish(what, r.unwrap()).await.err(404, "not_found");
}

// ---- the SSE stream -----------------------------------------------------------------------

#[tokio::test]
async fn backlog_frames_then_caught_up_then_live_records() {
    let s = start().await;
    // Tagged, so that the default (no include_tags) visibly leaves the tags out.
    write(&s, "aaa", json!({ "records": tagged_recs(5) })).await;
    write(&s, "bbb", json!({ "records": tagged_recs(3) })).await;
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
    write_n(&s, "bbb", 1).await;
    let f = sse.record().await;
    let (topic, seqs, id) = record_event(&f, &["aaa", "bbb"]);
    assert_eq!((topic.as_str(), seqs), ("bbb", vec![4]));
    assert_eq!(id["aaa"], 5);
}

#[tokio::test]
async fn include_tags_adds_tags_to_watched_records() {
    let s = start().await;
    write(&s, "tg", json!({ "records": tagged_recs(2) })).await;
    let body = json!({ "include_tags": true, "topics": { "tg": { "from_seq": 0 } } });
    let v = watch(&s, body).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let f = sse.record().await;
    assert_eq!(f.json()["records"][0]["$tag"], "t1", "{f:?}");
}

#[tokio::test]
async fn tail_starts_at_the_head() {
    let s = start().await;
    write_n(&s, "tl", 3).await;
    let v = watch(&s, json!({ "topics": { "tl": { "tail": true } } })).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let early = sse.drain(Duration::from_millis(300)).await;
    assert!(
        early.iter().all(|f| f.name() != "record"),
        "no backlog with tail: {early:?}"
    );
    write_n(&s, "tl", 1).await;
    let f = sse.record().await;
    let (_, seqs, _) = record_event(&f, &["tl"]);
    assert_eq!(seqs, [4]);
}

#[tokio::test]
async fn reconnect_resumes_from_the_server_cursor_and_last_event_id_rewinds() {
    let s = start().await;
    write_n(&s, "rs", 3).await;
    let body = json!({ "limit": 1, "topics": { "rs": { "from_seq": 0 } } });
    let v = watch(&s, body).await;
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
    write_n(&s, "rs", 1).await;
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
    write_n(&s, "f", 2).await;
    let v = watch(&s, json!({ "topics": { "f": { "from_seq": 0 } } })).await;
    let wid = v["wid"].as_str().unwrap().to_string();
    let mut sse = open(&s, &wid, None).await;
    sse.until(PROMPT, |f| f.name() == "caught-up").await;
    drop(sse);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ahead = b64url_json(&json!({ "f": 100 }));
    let mut sse = open(&s, &wid, Some(&ahead)).await;
    write_n(&s, "f", 1).await;
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
    let body = json!({ "node": "me", "topics": { "nf": { "from_seq": 0 } } });
    let v = watch(&s, body).await;
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
    write_n(&s, "nf", 1).await;
    let f = sse.record().await;
    let (_, seqs, id) = record_event(&f, &["nf"]);
    assert_eq!(seqs, [5], "own record 4 is skipped");
    assert_eq!(id["nf"], 5);
}

#[tokio::test]
async fn heartbeats_are_comments_at_the_requested_interval() {
    let s = start().await;
    write_n(&s, "hb", 1).await;
    let body = json!({ "heartbeat_ms": 1000, "topics": { "hb": { "tail": true } } });
    let v = watch(&s, body).await;
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
    write_n(&s, "gone", 1).await;
    write_n(&s, "kept", 1).await;
    let body = json!({ "topics": { "gone": { "tail": true }, "kept": { "tail": true } } });
    let v = watch(&s, body).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    sse.drain(Duration::from_millis(300)).await;

    delete(&s, &t("gone")).await.ok(200);
    let f = sse
        .until(PROMPT, |f| f.name() == "topic-deleted")
        .await
        .pop()
        .unwrap();
    let v = f.json();
    if let Some(topic) = v.get("topic") {
        assert_eq!(topic, "gone", "{f:?}");
    }
    // A data frame carries the composite cursor (§1.4): the session's map, which no longer
    // follows the deleted topic.
    let id = decode_id(f.id.as_deref().expect("a topic-deleted event has an id"));
    assert_eq!(Value::Object(id), json!({ "kept": 1 }), "{f:?}");
    write_n(&s, "kept", 1).await;
    let f = sse.record().await;
    let v = f.json();
    assert_eq!((v["topic"].clone(), seqs(&v)), (json!("kept"), vec![2]));
    assert_eq!(
        Value::Object(decode_id(f.id.as_deref().unwrap())),
        json!({ "kept": 2 })
    );
}

/// An open watch stream counts in `/v0/metrics`' JSON snapshot (§1.4: SSE connections, watch
/// sessions), and stops counting once it is closed.
#[tokio::test]
async fn an_open_stream_counts_as_an_sse_connection() {
    let s = start().await;
    write_n(&s, "m", 1).await;
    let v = watch(&s, json!({ "topics": { "m": { "tail": true } } })).await;
    let metrics = || async {
        let r = s.client.get(s.url("/v0/metrics")).header("accept", JSON);
        finish("GET metrics".into(), r.send().await.unwrap())
            .await
            .ok(200)
    };
    has!(metrics().await, { "sse_connections": 0, "watch_sessions": 1 });
    let sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let m = metrics().await;
    has!(m, { "sse_connections": 1, "watch_sessions": 1 });
    assert_eq!(m["live_connections"]["watch"], 1, "{m}");
    drop(sse);
    let deadline = Instant::now() + PROMPT;
    while metrics().await["sse_connections"] != 0 {
        assert!(Instant::now() < deadline, "the closed stream still counts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session cursor past the head (the topic was deleted and re-created since) gets the
/// `recreated` tombstone of §1.4 (`gap_from` = from_seq + 1, `gap_to` = earliest_seq - 1),
/// then the new topic's records in a frame whose `from_seq` is the cursor they follow (the
/// tombstone's `gap_to`), not the stale one.
#[tokio::test]
async fn a_cursor_past_the_head_gets_a_recreated_tombstone() {
    let s = start().await;
    write_n(&s, "rc", 2).await;
    let v = watch(&s, json!({ "topics": { "rc": { "from_seq": 5 } } })).await;
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    let frames = sse.until(PROMPT, |f| f.name() == "caught-up").await;
    assert_eq!(frames[0].name(), "tombstone", "{frames:?}");
    let ts = frames[0].json();
    has!(ts, { "topic": "rc", "gap_from": 6, "gap_to": 0, "reason": "recreated",
               "missed_estimate": 0, "earliest_seq": 1, "head_seq": 2 });
    let (_, got, id) = record_event(&frames[1], &["rc"]);
    assert_eq!(got, [1, 2], "{frames:?}");
    has!(frames[1].json(), { "topic": "rc", "from_seq": 0, "to_seq": 2, "head_seq": 2 });
    assert_eq!(Value::Object(id), json!({ "rc": 2 }));
    // The next frame chains from the first one's to_seq.
    write_n(&s, "rc", 1).await;
    let frames = sse.until(PROMPT, |f| f.name() == "record").await;
    let last = frames.last().expect("a record frame");
    has!(last.json(), { "topic": "rc", "from_seq": 2, "to_seq": 3 });
}

#[tokio::test]
async fn evicted_backlog_arrives_as_a_tombstone_before_the_records() {
    let s = start().await;
    put_ok(&s, "ev", json!({ "cap_records": 2 }), 201).await;
    write_n(&s, "ev", 4).await;
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
    // The stream's first read found the gap: the documented SSE reason.
    assert_eq!(ts["reason"], "from_seq_too_old", "{ts}");
    let mut delivered = Vec::new();
    for f in &frames[1..frames.len() - 1] {
        delivered.extend(record_event(f, &["ev"]).1);
    }
    assert_eq!(delivered, [3, 4]);
    // A gap that opens while the stream is live is the eviction's own reason: three records
    // in one write to a topic capped at two evict seq 5 before the watcher can read it.
    write_n(&s, "ev", 3).await;
    let frames = sse.until(PROMPT, |f| f.name() == "record").await;
    assert_eq!(frames[0].name(), "tombstone", "{frames:?}");
    let ts = frames[0].json();
    assert_eq!(
        (
            ts["gap_from"].clone(),
            ts["gap_to"].clone(),
            ts["reason"].clone()
        ),
        (json!(5), json!(5), json!("cap")),
        "{ts}"
    );
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
        put_ok(&s, n, json!({}), 201).await;
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
            assert_eq!(seqs(&v), [heads[k]], "write {i}");
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

/// Riffle's addition: `prefixes` follow every topic whose name starts with one, existing ones
/// from their head, ones created after the watch began from their start.
#[tokio::test]
async fn prefixes_follow_existing_topics_and_ones_created_later() {
    let s = start().await;
    write_n(&s, "px:old", 2).await;
    let v = watch(&s, json!({ "prefixes": ["px:"] })).await;
    assert_eq!(v["topics"]["px:old"]["from_seq"], 2, "{v}");
    let mut sse = open(&s, v["wid"].as_str().unwrap(), None).await;
    write_n(&s, "px:new", 1).await;
    write_n(&s, "px:old", 1).await;
    write_n(&s, "elsewhere", 1).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = sse.record().await;
        let topic = f.json()["topic"].as_str().unwrap_or_default().to_string();
        assert_ne!(topic, "elsewhere");
        for r in f.json()["records"].as_array().expect("records") {
            got.push((topic.clone(), r["$seq"].as_u64().unwrap_or(0)));
        }
    }
    got.sort();
    assert_eq!(got, vec![("px:new".into(), 1), ("px:old".into(), 3)]);
    // Neither topics nor prefixes: 400.
    post(&s, "/v0/watch", json!({}))
        .await
        .err(400, "invalid_request");
}
