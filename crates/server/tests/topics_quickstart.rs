//! The topics README's Quickstart (steps 1-6) run verbatim against Riffle's `/v0`, and its
//! delete and config recipes. The request bodies are the README's, byte for byte; the
//! assertions are the documented responses, limited to what `topics-README.md` and
//! `topics-v0-api.md` agree on (comments mark where they differ).

mod common;
#[macro_use]
mod topics_common;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use topics_common::sse::{PROMPT, assert_wid, decode_id, open_path};
use topics_common::*;

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
    let v = raw(&s, Method::PUT, &t("orders"), Some(JSON), body.as_bytes()).await;
    let v = v.ok(201);
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
    let v = post_text(&s, "/v0/topics/orders", body).await.ok(200);
    assert_eq!(v["topic"], "orders");
    assert_eq!(v["first_seq"], 1);
    assert_eq!(v["last_seq"], 2);
    assert_eq!(v["seqs"], json!([1, 2]));
    assert_eq!(v["head_seq"], 2);
    assert_eq!(v["count"], 2);
    assert_eq!(v["created"], false);
    assert_eq!(v["deduped"], false);

    // 3. Read current state.
    let v = get(&s, "/v0/topics/orders").await.ok(200);
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
    let v = post_text(&s, "/v0/topics/orders/diff", body).await.ok(200);
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
    let v = post_text(&s, "/v0/watch", body).await.ok(200);
    assert_wid(&v);
    has!(v["topics"]["orders"], { "from_seq": 0, "head_seq": 2, "earliest_seq": 1 });

    // `curl -N` sends `Accept: */*`, which must open the stream (406 is only for an Accept
    // that excludes text/event-stream).
    // Opening asserts 200, text/event-stream and a first `retry: 2000`.
    let stream_url = v["stream_url"].as_str().unwrap();
    let mut sse = open_path(&s, stream_url, "*/*", None).await;
    let mut delivered = Vec::new();
    let mut cursor = 0;
    let deadline = Instant::now() + PROMPT;
    let caught_up = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = sse.try_next(left).await;
        let f = f.expect("orders' records then caught-up");
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
    let v = post_text(&s, "/v0/topics/orders/delete", body)
        .await
        .ok(200);
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
    let v = post_text(&s, "/v0/topics/orders/diff", body).await.ok(200);
    assert_eq!(seqs(&v), [2]);
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
    post_text(&s, "/v0/topics/orders", &orders).await.ok(201);
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
    let v = post_text(&s, "/v0/topics/chat:general", &chat)
        .await
        .ok(201);
    assert_eq!(v["last_seq"], 5014);

    let snapshot = r#"{ "before_seq": 480000 }"#;
    let update = r#"{ "match": ["tag", "Eq", "user-1042:msg-5"], "before_seq": 5012 }"#;
    let revoke = r#"{ "match": ["tag", "Glob", "user-1042:*"] }"#;
    let recipes = [
        ("/v0/topics/orders/delete", snapshot),
        ("/v0/topics/chat:general/delete", update),
        ("/v0/topics/chat:general/delete", revoke),
    ];
    let count = async |topic: &str| state(&s, topic).await["count"].as_u64().unwrap();
    assert_eq!(
        (count("orders").await, count("chat:general").await),
        (2, 5014)
    );

    // Sent exactly as the recipes' curl sends them (`-d`: the form content type, FORM).
    let curl_d = async |(path, body): (&str, &str)| {
        raw(&s, Method::POST, path, Some(FORM), body.as_bytes()).await
    };
    // Snapshot / compaction: everything before the seq.
    let v = curl_d(recipes[0]).await.ok(200);
    assert_eq!(
        (v["deleted"].clone(), v["count"].clone()),
        (json!(2), json!(0))
    );
    // Message update: v1 goes, v2 stays.
    let v = curl_d(recipes[1]).await.ok(200);
    assert_eq!(v["deleted"], 1);
    // Chat revoke: the rest of user-1042's records, not user-7's nor the untagged fillers.
    let v = curl_d(recipes[2]).await.ok(200);
    assert_eq!(v["deleted"], 2);
    assert_eq!(v["count"], 5011);
    let body = r#"{ "from_seq": 5010, "include_tags": true }"#;
    let path = "/v0/topics/chat:general/diff";
    let v = post_text(&s, path, body).await.ok(200);
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
        get(&s, &path).await.err(404, "topic_not_found");
        let v = raw(&s, Method::PUT, &path, Some(FORM), body.as_bytes())
            .await
            .ok(201);
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
