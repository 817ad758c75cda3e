//! The topics `/v0` JSON API, black-box: writes, diff reads (tombstones, node filter,
//! long-poll), cap/TTL eviction, record deletes and the probes. Built from `topics-v0-api.md`
//! and `topics-README.md` only, never from the implementation.

mod common;
#[macro_use]
mod topics_common;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use topics_common::*;

#[tokio::test]
async fn first_write_creates_then_seqs_are_contiguous() {
    let s = start().await;
    let v = post(&s, &t("w"), json!({ "records": recs(3) })).await;
    let v = v.ok(201);
    has!(v, { "topic": "w", "first_seq": 1, "last_seq": 3, "seqs": [1, 2, 3],
                       "head_seq": 3, "count": 3, "created": true, "deduped": false });
    assert_config(&state(&s, "w").await["config"], json!({}));

    let v = write_n(&s, "w", 2).await;
    has!(v, { "first_seq": 4, "last_seq": 5, "seqs": [4, 5], "head_seq": 5,
                       "count": 2, "created": false, "deduped": false });

    let body = json!({ "records": recs(2) });
    let v = post(&s, "/v0/topics/w?return_seqs=false", body).await;
    let v = v.ok(200);
    assert!(v.get("seqs").is_none(), "return_seqs=false omits seqs: {v}");
    has!(v, { "first_seq": 6, "last_seq": 7 });
}

#[tokio::test]
async fn create_false_does_not_create() {
    let s = start().await;
    let body = json!({ "records": recs(1), "create": false });
    let r = post(&s, &t("cf"), body.clone()).await;
    r.err(404, "topic_not_found");
    get(&s, &t("cf")).await.err(404, "topic_not_found");
    put_ok(&s, "cf", json!({}), 201).await;
    let v = post(&s, &t("cf"), body).await.ok(200);
    assert_eq!(v["seqs"], json!([1]));
}

#[tokio::test]
async fn batches_hold_1_to_10000_records() {
    let s = start().await;
    put_ok(&s, "b", json!({}), 201).await;
    let r = post(&s, &t("b"), json!({ "records": [] })).await;
    r.err_in(400, &["invalid_request", "batch_too_large"]);
    let r = post(&s, &t("b"), json!({})).await;
    r.err(400, "invalid_request");
    let r = post(&s, &t("b"), json!({ "records": recs(10_001) })).await;
    r.err(400, "batch_too_large");
    assert_eq!(state(&s, "b").await["head_seq"], 0, "nothing appended");
    let v = write_n(&s, "b", 10_000).await;
    has!(v, { "count": 10_000, "last_seq": 10_000 });
}

/// A body may be up to 64 MiB (`TOPICS_MAX_BODY_BYTES`, §2): eleven ~1 MB records (11 MB) are
/// one write, and so is a batch of 1 MiB records filling the whole 64 MiB (its WAL record is
/// larger than the body: every record gets a header and the batch's node).
#[tokio::test]
async fn bodies_up_to_64_mib_are_accepted() {
    let s = start().await;
    let mb = "x".repeat(1_000_000);
    let records: Vec<Value> = (0..11).map(|_| json!({ "data": mb })).collect();
    let v = write(&s, "big", json!({ "records": records })).await;
    has!(v, { "count": 11, "last_seq": 11 });

    let (limit, n) = (64 << 20, 64);
    let frame = |data: &str| json!({ "records": vec![json!({ "data": data }); n], "node": "n".repeat(128) });
    let overhead = frame("").to_string().len();
    let data = "y".repeat((limit - overhead) / n);
    let body = frame(&data).to_string();
    assert!(
        body.len() <= limit && body.len() > limit - n,
        "{}",
        body.len()
    );
    let v = post_text(&s, &t("big"), &body).await.ok(200);
    has!(v, { "count": n, "last_seq": 11 + n });
    let v = diff(&s, "big", json!({ "from_seq": 11 + n - 1 })).await;
    assert_eq!(
        v["records"][0]["data"].as_str().map(str::len),
        Some(data.len())
    );
}

#[tokio::test]
async fn record_size_tag_and_node_limits() {
    let s = start().await;
    put_ok(&s, "lim", json!({}), 201).await;
    let big = "x".repeat((1 << 20) + 1024);
    let r = post(&s, &t("lim"), json!({ "records": [{ "data": big }] })).await;
    r.err(400, "record_too_large");
    let fine = "x".repeat(512 * 1024);
    write(&s, "lim", json!({ "records": [{ "data": fine }] })).await;

    // The spec does not say which 400 code these get.
    let codes = ["invalid_request", "record_too_large"];
    let rec = |k: &str, n: usize| json!({ "records": [{ "data": 1, k: "t".repeat(n) }] });
    write(&s, "lim", rec("tag", 256)).await;
    let r = post(&s, &t("lim"), rec("tag", 257)).await;
    r.err_in(400, &codes);
    write(&s, "lim", rec("node", 128)).await;
    let r = post(&s, &t("lim"), rec("node", 129)).await;
    r.err_in(400, &codes);
    let batch_node = json!({ "node": "n".repeat(129), "records": recs(1) });
    post(&s, &t("lim"), batch_node).await.err_in(400, &codes);
    assert_eq!(state(&s, "lim").await["head_seq"], 3);
}

#[tokio::test]
async fn idempotency_key_retries_return_the_original_seqs() {
    let s = start().await;
    put_ok(&s, "idem", json!({}), 201).await;
    let body = json!({ "records": recs(2), "idempotency_key": "k1" });
    let v = post(&s, &t("idem"), body.clone()).await.ok(200);
    has!(v, { "seqs": [1, 2], "deduped": false });
    let v = post(&s, &t("idem"), body).await.ok(200);
    has!(v, { "seqs": [1, 2], "first_seq": 1, "last_seq": 2, "deduped": true,
                       "head_seq": 2 });
    // The retry appended nothing.
    assert_eq!(state(&s, "idem").await["count"], 2);

    let other = json!({ "records": recs(2), "idempotency_key": "k2" });
    let v = post(&s, &t("idem"), other).await.ok(200);
    assert_eq!(v["seqs"], json!([3, 4]));
    let long = json!({ "records": recs(1), "idempotency_key": "k".repeat(257) });
    post(&s, &t("idem"), long).await.err(400, "invalid_request");
    let longest = json!({ "records": recs(1), "idempotency_key": "k".repeat(256) });
    post(&s, &t("idem"), longest).await.ok(200);
}

#[tokio::test]
async fn idempotency_key_header_is_a_fallback() {
    let s = start().await;
    put_ok(&s, "hdr", json!({}), 201).await;
    let send = || async {
        let r = s.client.post(s.url(&t("hdr"))).header("content-type", JSON);
        let r = r.header("idempotency-key", "hk-1");
        let r = r.body(json!({ "records": recs(1) }).to_string());
        let r = r.send().await.unwrap();
        finish("POST hdr".into(), r).await.ok(200)
    };
    has!(send().await, { "seqs": [1], "deduped": false });
    has!(send().await, { "seqs": [1], "deduped": true });
    assert_eq!(state(&s, "hdr").await["head_seq"], 1);
}

#[tokio::test]
async fn inline_config_applies_only_when_the_write_creates_the_topic() {
    let s = start().await;
    let body = json!({ "records": recs(5), "config": { "cap_records": 3 } });
    let v = post(&s, &t("ic"), body).await.ok(201);
    assert_eq!(v["created"], true);
    let v = state(&s, "ic").await;
    assert_config(&v["config"], json!({ "cap_records": 3 }));
    has!(v, { "earliest_seq": 3, "count": 3 });

    let body = json!({ "records": recs(1), "config": { "cap_records": 100 } });
    post(&s, &t("ic"), body).await.ok(200);
    let v = state(&s, "ic").await;
    // Ignored on a write that does not create.
    assert_eq!(v["config"]["cap_records"], 3);
    assert_eq!(v["earliest_seq"], 4);
}

// ---- diff ---------------------------------------------------------------------------------

#[tokio::test]
async fn diff_returns_records_and_cursor_fields() {
    let s = start().await;
    let before = now_ms();
    let records = json!([
        { "data": { "a": 1 }, "tag": "t1", "meta": { "k": "v" } },
        { "data": null, "node": "n1" },
        { "data": "s" },
    ]);
    write(&s, "d", json!({ "records": records })).await;
    let after = now_ms();

    let v = diff(&s, "d", json!({})).await;
    assert_eq!(seqs(&v), [1, 2, 3]);
    has!(v, { "topic": "d", "next_from_seq": 3, "head_seq": 3, "earliest_seq": 1,
                       "caught_up": true, "lag": 0, "tombstone": null });
    let allowed = ["$seq", "$ts", "$node", "$tag", "data", "meta"];
    for r in v["records"].as_array().unwrap() {
        let o = r.as_object().unwrap();
        assert!(o.keys().all(|k| allowed.contains(&k.as_str())), "{r}");
        assert!(o.contains_key("data"), "data is always present: {r}");
        let ts = r["$ts"].as_u64().expect("$ts ms");
        assert!(ts + 1000 >= before && ts <= after + 1000, "$ts {ts}");
    }
    let r = &v["records"];
    has!(r[0], { "data": { "a": 1 }, "meta": { "k": "v" } });
    assert!(r[0].get("$tag").is_none(), "include_tags defaults to false");
    assert!(r[0].get("$node").is_none(), "{}", r[0]);
    has!(r[1], { "data": null, "$node": "n1" });
    assert!(r[1].get("meta").is_none(), "meta is omitted when absent");
    assert_eq!(r[2]["data"], "s");

    let flags = json!({ "include_tags": true, "include_meta": false });
    let v = diff(&s, "d", flags).await;
    assert_eq!(v["records"][0]["$tag"], "t1");
    assert!(v["records"][0].get("meta").is_none(), "include_meta:false");
    assert!(v["records"][1].get("$tag").is_none(), "untagged");

    let v = diff(&s, "d", json!({ "from_seq": 1 })).await;
    assert_eq!(seqs(&v), [2, 3], "from_seq is exclusive");
}

#[tokio::test]
async fn diff_limit_defaults_to_256_and_clamps_to_1000() {
    let s = start().await;
    write_n(&s, "l", 1200).await;
    let v = diff(&s, "l", json!({})).await;
    assert_eq!(seqs(&v), (1..=256).collect::<Vec<_>>());
    has!(v, { "next_from_seq": 256, "caught_up": false, "lag": 944 });

    let v = diff(&s, "l", json!({ "limit": 5000 })).await;
    assert_eq!(seqs(&v).len(), 1000);
    has!(v, { "next_from_seq": 1000, "lag": 200 });
    let v = diff(&s, "l", json!({ "from_seq": 1000, "limit": 5000 })).await;
    assert_eq!(seqs(&v), (1001..=1200).collect::<Vec<_>>());
    assert_eq!(v["caught_up"], true);
}

#[tokio::test]
async fn diff_node_filter_skips_own_records_but_advances() {
    let s = start().await;
    let batch = json!({ "node": "a", "records": [
        { "data": 1 }, { "data": 2, "node": "b" }, { "data": 3 },
    ] });
    write(&s, "n", batch).await;
    write_n(&s, "n", 1).await;
    let v = diff(&s, "n", json!({})).await;
    let records = v["records"].as_array().unwrap();
    let nodes: Vec<&Value> = records.iter().map(|r| &r["$node"]).collect();
    assert_eq!(nodes, [&json!("a"), &json!("b"), &json!("a"), &Value::Null]);

    let v = diff(&s, "n", json!({ "node": "a" })).await;
    assert_eq!(seqs(&v), [2, 4]);
    let v = diff(&s, "n", json!({ "node": ["a", "b"] })).await;
    assert_eq!(seqs(&v), [4]);
    has!(v, { "next_from_seq": 4, "caught_up": true });
    let v = diff(&s, "n", json!({ "node": "c" })).await;
    assert_eq!(seqs(&v), [1, 2, 3, 4]);

    // Only own records left: nothing returned, the cursor still moves, no tombstone.
    write(&s, "n", json!({ "node": "a", "records": recs(2) })).await;
    let v = diff(&s, "n", json!({ "from_seq": 4, "node": "a" })).await;
    assert_eq!(seqs(&v), Vec::<u64>::new());
    has!(v, { "next_from_seq": 6, "caught_up": true, "tombstone": null });

    // dedupe_node:false turns the filter off.
    put_ok(&s, "nd", json!({ "dedupe_node": false }), 201).await;
    write(&s, "nd", json!({ "node": "a", "records": recs(1) })).await;
    assert_eq!(seqs(&diff(&s, "nd", json!({ "node": "a" })).await), [1]);
}

#[tokio::test]
async fn diff_wait_ms_returns_as_soon_as_a_record_arrives() {
    let s = start().await;
    write_n(&s, "lp", 1).await;

    // Data already there: no wait.
    let started = Instant::now();
    let v = diff(&s, "lp", json!({ "wait_ms": 5000 })).await;
    assert_eq!(seqs(&v), [1]);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "{waited:?}");

    let (client, url) = (s.client.clone(), s.url(&t("lp")));
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = json!({ "records": [{ "data": "late" }] }).to_string();
        let r = client.post(url).header("content-type", JSON).body(body);
        r.send().await.expect("the delayed write").status().as_u16()
    });
    let started = Instant::now();
    let v = diff(&s, "lp", json!({ "from_seq": 1, "wait_ms": 5000 })).await;
    let waited = started.elapsed();
    assert_eq!(seqs(&v), [2]);
    assert_eq!(v["records"][0]["data"], "late");
    let early = Duration::from_millis(150);
    assert!(waited >= early, "answered before the write: {waited:?}");
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    assert_eq!(writer.await.unwrap(), 200);
}

#[tokio::test]
async fn diff_wait_ms_ends_caught_up_when_nothing_arrives() {
    let s = start().await;
    write_n(&s, "idle", 2).await;
    let started = Instant::now();
    let v = diff(&s, "idle", json!({ "from_seq": 2, "wait_ms": 300 })).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(seqs(&v), Vec::<u64>::new());
    has!(v, { "caught_up": true, "next_from_seq": 2, "tombstone": null });
}

// ---- eviction, TTL, tombstones ------------------------------------------------------------

#[tokio::test]
async fn cap_eviction_yields_a_tombstone() {
    let s = start().await;
    put_ok(&s, "cap", json!({ "cap_records": 3 }), 201).await;
    write_n(&s, "cap", 3).await;
    write_n(&s, "cap", 2).await;
    let g = state(&s, "cap").await;
    has!(g, { "head_seq": 5, "earliest_seq": 3, "count": 3 });

    let v = diff(&s, "cap", json!({ "from_seq": 0 })).await;
    let ts = &v["tombstone"];
    has!(ts, { "gap_from": 1, "gap_to": 2, "reason": "cap", "earliest_seq": 3,
                       "head_seq": 5 });
    assert!(ts["missed_estimate"].is_u64(), "missed_estimate: {ts}");
    assert_eq!(seqs(&v), [3, 4, 5]);
    has!(v, { "earliest_seq": 3, "next_from_seq": 5, "caught_up": true });

    let v = diff(&s, "cap", json!({ "from_seq": 1 })).await;
    has!(v["tombstone"], { "gap_from": 2, "gap_to": 2 });
    let v = diff(&s, "cap", json!({ "from_seq": 2 })).await;
    assert_eq!(v["tombstone"], Value::Null, "nothing missed from 2");
    assert_eq!(seqs(&v), [3, 4, 5]);
}

#[tokio::test]
async fn discard_reject_at_the_cap_is_422_and_appends_nothing() {
    let s = start().await;
    let config = json!({ "cap_records": 2, "discard": "reject" });
    put_ok(&s, "rj", config, 201).await;
    write_n(&s, "rj", 1).await;
    let r = post(&s, &t("rj"), json!({ "records": recs(2) })).await;
    r.err(422, "topic_full");
    assert_eq!(state(&s, "rj").await["head_seq"], 1, "all or nothing");
    write_n(&s, "rj", 1).await;
    let r = post(&s, &t("rj"), json!({ "records": recs(1) })).await;
    r.err(422, "topic_full");
    has!(state(&s, "rj").await, { "head_seq": 2, "earliest_seq": 1 });
    let v = diff(&s, "rj", json!({})).await;
    assert_eq!(seqs(&v), [1, 2]);
    assert_eq!(v["tombstone"], Value::Null);
}

#[tokio::test]
async fn ttl_expiry_yields_a_ttl_tombstone() {
    let s = start().await;
    put_ok(&s, "ttl", json!({ "ttl_ms": 500 }), 201).await;
    write_n(&s, "ttl", 2).await;
    let v = diff(&s, "ttl", json!({})).await;
    assert_eq!(seqs(&v), [1, 2], "still live");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let v = diff(&s, "ttl", json!({ "from_seq": 0 })).await;
    assert_eq!(seqs(&v), Vec::<u64>::new(), "{v}");
    has!(v["tombstone"], { "reason": "ttl", "gap_from": 1, "gap_to": 2 });
    assert_eq!(v["caught_up"], true);

    write_n(&s, "ttl", 1).await;
    let v = diff(&s, "ttl", json!({ "from_seq": 0 })).await;
    assert_eq!(v["tombstone"]["reason"], "ttl", "{v}");
    assert_eq!(seqs(&v), [3]);
}

/// §1.4: a cursor past the head means the topic was deleted and re-created; the tombstone has
/// the general shape, `gap_from` = from_seq + 1 and `gap_to` = earliest_seq - 1 (an empty
/// range: what the old topic held past the cursor is not known, so nothing counts as missed),
/// and the read goes on from the new topic's earliest record.
#[tokio::test]
async fn a_cursor_past_the_head_gets_a_recreated_tombstone() {
    let s = start().await;
    write_n(&s, "rc", 5).await;
    delete(&s, &t("rc")).await.ok(200);
    let v = post(&s, &t("rc"), json!({ "records": recs(2) })).await;
    let v = v.ok(201);
    has!(v, { "created": true, "first_seq": 1 });
    for from in [5, 3, 100] {
        let v = diff(&s, "rc", json!({ "from_seq": from })).await;
        let tomb = json!({ "gap_from": from + 1, "gap_to": 0, "reason": "recreated",
                           "missed_estimate": 0, "earliest_seq": 1, "head_seq": 2 });
        assert_eq!(v["tombstone"], tomb, "from_seq {from}: {v}");
        assert_eq!(seqs(&v), [1, 2], "from_seq {from}: {v}");
        has!(v, { "next_from_seq": 2, "caught_up": true, "lag": 0 });
    }
}

// ---- record deletes -----------------------------------------------------------------------

#[tokio::test]
async fn delete_before_seq_is_silent_and_point_in_time() {
    let s = start().await;
    write_n(&s, "del", 5).await;
    let v = del_records(&s, "del", json!({ "before_seq": 3 })).await;
    has!(v, { "topic": "del", "deleted": 2, "earliest_seq": 3, "head_seq": 5,
                       "count": 3 });
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    let v = diff(&s, "del", json!({ "from_seq": 0 })).await;
    assert_eq!(v["tombstone"], Value::Null, "deletes never tombstone");
    assert_eq!(seqs(&v), [3, 4, 5]);

    // Everything, then a later write: the delete does not reach future records.
    let v = del_records(&s, "del", json!({ "before_seq": 100 })).await;
    // earliest_seq is head_seq + 1 once empty.
    has!(v, { "deleted": 3, "count": 0, "earliest_seq": 6, "head_seq": 5 });
    let v = diff(&s, "del", json!({})).await;
    assert_eq!(seqs(&v), Vec::<u64>::new());
    has!(v, { "tombstone": null, "caught_up": true, "next_from_seq": 5 });
    write_n(&s, "del", 1).await;
    assert_eq!(seqs(&diff(&s, "del", json!({})).await), [6]);
}

#[tokio::test]
async fn delete_by_tag_match() {
    let s = start().await;
    let tags = [
        "order-1",
        "order-2",
        "user-1042:msg-5",
        "user-1042:msg-6",
        "",
        "user-10",
        "x",
    ];
    let record = |tag: &&str| match *tag {
        "" => json!({ "data": "untagged" }),
        tag => json!({ "data": tag, "tag": tag }),
    };
    let records: Vec<Value> = tags.iter().map(record).collect();
    write(&s, "tags", json!({ "records": records })).await;

    let v = del_records(&s, "tags", json!({ "match": ["tag", "Eq", "order-1"] })).await;
    has!(v, { "deleted": 1, "earliest_seq": 2, "head_seq": 7, "count": 6 });
    let v = del_records(&s, "tags", json!({ "match": "order-2" })).await;
    has!(v, { "deleted": 1, "earliest_seq": 3 });
    let glob = json!({ "match": ["tag", "Glob", "user-1042:*"] });
    let v = del_records(&s, "tags", glob).await;
    has!(v, { "deleted": 2, "count": 3 });
    let v = del_records(&s, "tags", json!({ "match": ["tag", "Eq", "nope"] })).await;
    assert_eq!(v["deleted"], 0);
    let v = diff(&s, "tags", json!({})).await;
    // Untagged and non-matching records stay.
    assert_eq!(seqs(&v), [5, 6, 7]);
    assert_eq!(v["tombstone"], Value::Null);

    // Point in time: a matching record written after the delete stays.
    del_records(&s, "tags", json!({ "match": ["tag", "Glob", "x*"] })).await;
    let x = json!({ "records": [{ "data": 8, "tag": "x" }] });
    write(&s, "tags", x).await;
    let v = diff(&s, "tags", json!({ "from_seq": 6, "include_tags": true })).await;
    assert_eq!(seqs(&v), [8]);
    assert_eq!(v["records"][0]["$tag"], "x");
}

#[tokio::test]
async fn delete_with_match_and_before_seq_needs_both() {
    let s = start().await;
    let records = json!([
        { "data": "v1", "tag": "m" }, { "data": "o", "tag": "other" }, { "data": "v2", "tag": "m" },
    ]);
    write(&s, "both", json!({ "records": records })).await;
    let both = json!({ "match": ["tag", "Eq", "m"], "before_seq": 3 });
    assert_eq!(del_records(&s, "both", both).await["deleted"], 1);
    assert_eq!(seqs(&diff(&s, "both", json!({})).await), [2, 3]);

    let r = post(&s, "/v0/topics/both/delete", json!({})).await;
    r.err(400, "invalid_request");
    assert_eq!(state(&s, "both").await["count"], 2);
}

// ---- errors and probes --------------------------------------------------------------------

#[tokio::test]
async fn unsupported_methods_are_405() {
    let s = start().await;
    put_ok(&s, "x", json!({}), 201).await;
    let r = raw(&s, Method::PATCH, &t("x"), Some(JSON), b"{}").await;
    r.err(405, "method_not_allowed");
    let r = raw(&s, Method::GET, "/v0/topics/x/diff", None, b"").await;
    r.err(405, "method_not_allowed");
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let s = start().await;
    let h = get(&s, "/v0/health").await;
    assert_eq!(h.status, 200, "{}", h.text);
    let h = h.json();
    assert_eq!(h["status"], "ok");
    let version = h["version"].as_str().is_some_and(|v| !v.is_empty());
    assert!(version && h["uptime_ms"].is_u64(), "{h}");

    let r = get(&s, "/v0/ready").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = r.json();
    has!(r, { "status": "ready", "wal_replay_complete": true });
    assert!(r.get("topics").is_some(), "{r}");

    // `/healthz` and `/readyz` are the same probes (§1.3): the same JSON, every JSON answer
    // with its `performance` block, and the same refusal of other methods.
    for (alias, probe) in [("/healthz", "/v0/health"), ("/readyz", "/v0/ready")] {
        let (a, p) = (get(&s, alias).await.ok(200), get(&s, probe).await.ok(200));
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(&a), keys(&p), "{alias}: {a} vs {probe}: {p}");
        assert_eq!(a["status"], p["status"], "{alias}");
        let r = s.client.head(s.url(alias)).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD {alias}");
        raw(&s, Method::POST, alias, None, b"")
            .await
            .err(405, "method_not_allowed");
    }

    write_n(&s, "m", 1).await;
    put_ok(&s, "jobs", json!({ "type": "queue" }), 201).await;
    write_n(&s, "jobs", 3).await;
    post(
        &s,
        "/v0/topics/jobs/claim",
        json!({ "node": "w", "max": 2 }),
    )
    .await
    .ok(200);
    let r = json!({ "source": "m", "dest": "m:copy" });
    let put = s
        .client
        .put(s.url("/v0/routers/r"))
        .header("content-type", JSON);
    assert_eq!(put.body(r.to_string()).send().await.unwrap().status(), 201);
    let m = get(&s, "/v0/metrics").await;
    for want in [
        "topics_routers 1",
        "topics_queue_topics 1",
        "topics_leases_in_flight 2",
        "topic_queue_ready{topic=\"jobs\"} 1",
        "topic_queue_in_flight{topic=\"jobs\"} 2",
    ] {
        assert!(
            m.text.lines().any(|l| l == want),
            "no {want:?} in {}",
            m.text
        );
    }
    assert_eq!(m.status, 200);
    let ct = &m.content_type;
    assert!(ct.starts_with("text/plain"), "{ct}");
    let sample = |l: &&str| !l.is_empty() && !l.starts_with('#');
    let samples: Vec<&str> = m.text.lines().filter(sample).collect();
    assert!(!samples.is_empty(), "no samples: {}", m.text);
    for line in samples {
        let (name, value) = line.rsplit_once(' ').expect("`name value`");
        let first = name.chars().next().unwrap();
        let named = first.is_ascii_alphabetic() || first == '_' || first == ':';
        let v = value.trim();
        let valued = v.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&v);
        assert!(named && valued, "not a Prometheus sample: {line:?}");
    }

    // The JSON snapshot (§1.1: with `performance`; §1.4: live connections, recovery, WAL).
    let r = s.client.get(s.url("/v0/metrics")).header("accept", JSON);
    let m = finish("GET metrics".into(), r.send().await.unwrap()).await;
    let m = m.ok(200);
    has!(m, { "ready": true, "topics": 3, "routers": 1, "queue_topics": 1,
              "leases_in_flight": 2, "sse_connections": 0 });
    let replayed = &m["replay_progress"]["wal_records_replayed"];
    assert!(replayed.is_u64(), "{m}");
    for kind in ["sse", "long_poll", "watch", "work", "ws"] {
        assert!(m["live_connections"][kind].is_i64(), "{kind}: {m}");
    }
    // A data directory (the `/v0` tests' default): the WAL's counters.
    let wal = &m["wal"];
    let frames = wal["frames"].as_u64().expect("wal.frames");
    assert!(frames >= 4, "every write and create is a WAL frame: {m}");
    for k in ["batches", "fsyncs", "bytes_written", "failures"] {
        assert!(wal[k].is_u64(), "wal.{k}: {m}");
    }
}
