//! The topics `/v0` JSON API, black-box: topic configuration (PUT), state (GET), listing,
//! topic DELETE, names, content types and malformed bodies. Built from `topics-v0-api.md` and
//! `topics-README.md` only, never from the implementation.

mod common;
#[macro_use]
mod topics_common;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use topics_common::*;

#[tokio::test]
async fn put_empty_config_creates_with_every_default_then_200() {
    let s = start().await;
    let v = put_ok(&s, "defaults", json!({}), 201).await;
    has!(v, { "topic": "defaults", "created": true });
    assert_config(&v["config"], json!({}));

    let v = put_ok(&s, "defaults", json!({}), 200).await;
    assert_eq!(v["created"], false);
    assert_config(&v["config"], json!({}));
}

#[tokio::test]
async fn put_updates_in_place_and_durable_is_an_alias_of_durability() {
    let s = start().await;
    let v = put_ok(&s, "d", json!({ "durable": true }), 201).await;
    let fsync = json!({ "durable": true, "durability": "fsync" });
    assert_config(&v["config"], fsync);

    // An update answers 200 with the new config, which GET reports too.
    let update = json!({ "cap_records": 10, "ttl_ms": 5000 });
    let v = put_ok(&s, "d", update.clone(), 200).await;
    assert_eq!(v["created"], false);
    assert_has(&v["config"], update.clone());
    assert_has(&state(&s, "d").await["config"], update);

    // `durability` changes in place among the WAL classes; `durable` is normalized to
    // `durability == "fsync"`.
    for (class, durable) in [("memory", false), ("fsync", true)] {
        let v = put_ok(&s, "d", json!({ "durability": class }), 200).await;
        has!(v["config"], { "durability": class, "durable": durable });
    }
    let v = put_ok(&s, "d", json!({ "durable": false }), 200).await;
    has!(v["config"], { "durability": "disk", "durable": false });
    // And across `ephemeral`, both ways, keeping the records (what a restart keeps of them:
    // `topics_crash.rs`).
    write_n(&s, "d", 2).await;
    let v = put_ok(&s, "d", json!({ "durability": "ephemeral" }), 200).await;
    has!(v["config"], { "durability": "ephemeral", "durable": false });
    write_n(&s, "d", 1).await;
    let v = put_ok(&s, "d", json!({ "durable": true }), 200).await;
    has!(v["config"], { "durability": "fsync", "durable": true });
    let d = diff(&s, "d", json!({ "from_seq": 0 })).await;
    assert_eq!(seqs(&d), vec![1, 2, 3]);
}

#[tokio::test]
async fn put_clamps_priority_and_queue_settings() {
    let s = start().await;
    let v = put_ok(&s, "hi", json!({ "priority": 5000 }), 201).await;
    assert_eq!(v["config"]["priority"], 1000);
    let v = put_ok(&s, "lo", json!({ "priority": -5000 }), 201).await;
    assert_eq!(v["config"]["priority"], -1000);

    let body = json!({ "type": "queue", "lease_ms": 5, "claim_jitter_ms": 10000 });
    let v = put_ok(&s, "q1", body, 201).await;
    has!(v["config"], { "type": "queue", "lease_ms": 100, "claim_jitter_ms": 5000 });
    let body = json!({ "type": "queue", "lease_ms": 100_000_000_000u64 });
    let v = put_ok(&s, "q2", body, 201).await;
    assert_eq!(v["config"]["lease_ms"], 86_400_000);

    // A queue's dead_letter must differ from the queue itself.
    let body = json!({ "type": "queue", "dead_letter": "q3" });
    put(&s, "q3", body).await.err(400, "invalid_request");
}

#[tokio::test]
async fn put_cannot_change_the_type() {
    let s = start().await;
    put_ok(&s, "typed", json!({}), 201).await;
    let r = put(&s, "typed", json!({ "type": "queue" })).await;
    r.err(409, "topic_exists_incompatible");
    assert_eq!(state(&s, "typed").await["type"], "log");
    // The same type again is fine.
    put_ok(&s, "typed", json!({ "type": "log" }), 200).await;
}

#[tokio::test]
async fn names_follow_the_documented_pattern() {
    let s = start().await;
    let longest = "a".repeat(255);
    for ok in ["chat:general", "A.b_c-9", "0", longest.as_str()] {
        put_ok(&s, ok, json!({}), 201).await;
    }
    let too_long = "a".repeat(256);
    for bad in ["-bad", "_x", ".x", ":x", too_long.as_str()] {
        put(&s, bad, json!({})).await.err(400, "invalid_request");
        let r = post(&s, &t(bad), json!({ "records": recs(1) })).await;
        r.err(400, "invalid_request");
    }
}

/// Bodies must be JSON: a non-JSON content type is 415 and changes nothing. Riffle also takes a
/// body sent without a content type, or with curl's `-d` default (form-urlencoded), when the
/// body is JSON: the topics README's own recipes send bodies that way and must work verbatim.
#[tokio::test]
async fn put_and_post_require_a_json_content_type() {
    let s = start().await;
    let unsupported = "unsupported_media_type";
    for ct in [Some("text/plain"), Some("application/xml")] {
        let r = raw(&s, Method::PUT, &t("ct"), ct, b"{}").await;
        r.err(415, unsupported);
    }
    // A form body that is not JSON is what the form type says it is: not JSON.
    raw(&s, Method::PUT, &t("ct"), Some(FORM), b"ttl_ms=5")
        .await
        .err(415, unsupported);
    // Nothing was created by those.
    get(&s, &t("ct")).await.err(404, "topic_not_found");

    let rec = json!({ "records": recs(1) }).to_string();
    for ct in [Some("text/plain"), Some("application/xml")] {
        let r = raw(&s, Method::POST, &t("ct"), ct, rec.as_bytes()).await;
        r.err(415, unsupported);
    }
    get(&s, &t("ct")).await.err(404, "topic_not_found");
    // A charset parameter is still application/json.
    let ct = Some("application/json; charset=utf-8");
    raw(&s, Method::PUT, &t("ct"), ct, b"{}").await.ok(200 + 1);
    for sub in ["diff", "delete"] {
        let path = format!("/v0/topics/ct/{sub}");
        let r = raw(
            &s,
            Method::POST,
            &path,
            Some("text/plain"),
            br#"{"before_seq":1}"#,
        );
        r.await.err(415, unsupported);
    }
    // The recipes' way: JSON with curl's default type, or with none.
    for ct in [Some(FORM), None] {
        raw(&s, Method::POST, &t("ct"), ct, rec.as_bytes())
            .await
            .ok(200);
    }
    assert_eq!(state(&s, "ct").await["head_seq"], 2);
}

#[tokio::test]
async fn malformed_json_and_bad_values_are_400_invalid_request() {
    let s = start().await;
    put_ok(&s, "m", json!({}), 201).await;
    for (method, path, body) in [
        (Method::PUT, "/v0/topics/m", "{\"ttl_ms\":"),
        (Method::POST, "/v0/topics/m", "not json"),
        (Method::POST, "/v0/topics/m/diff", "[1,2"),
        (Method::POST, "/v0/topics/m/delete", "{"),
    ] {
        let r = raw(&s, method, path, Some(JSON), body.as_bytes()).await;
        r.err(400, "invalid_request");
    }
    for config in [
        json!({ "durability": "tape" }),
        json!({ "type": "stream" }),
        json!({ "discard": "newest" }),
        json!({ "ttl_ms": "soon" }),
    ] {
        put(&s, "m2", config).await.err(400, "invalid_request");
    }
    get(&s, &t("m2")).await.err(404, "topic_not_found");
    let r = post(&s, &t("m"), json!({ "records": 5 })).await;
    r.err(400, "invalid_request");
}

// ---- GET / list / DELETE topics ----------------------------------------------------------

#[tokio::test]
async fn get_reports_the_topic_state() {
    let s = start().await;
    put_ok(&s, "st", json!({}), 201).await;
    let v = state(&s, "st").await;
    for key in ["effective_priority", "last_write_ts", "last_read_ts"] {
        assert!(v.get(key).is_some(), "GET has {key}: {v}");
    }
    // earliest_seq is head_seq + 1 when the topic is empty.
    has!(v, { "topic": "st", "type": "log", "head_seq": 0, "earliest_seq": 1,
                       "next_seq": 1, "count": 0, "bytes": 0 });
    assert_config(&v["config"], json!({}));

    let before = now_ms();
    write_n(&s, "st", 2).await;
    let after = now_ms();
    let v = state(&s, "st").await;
    has!(v, { "head_seq": 2, "earliest_seq": 1, "next_seq": 3, "count": 2 });
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "bytes: {v}");
    let ts = v["last_write_ts"].as_u64().expect("last_write_ts is ms");
    assert!(ts + 1000 >= before && ts <= after + 1000, "{ts}");
    // Auto priority is 500 x 2^(-idle/30 s): about 500 right after a write.
    let p = v["effective_priority"].as_f64().expect("a number");
    assert!((400.0..=500.0).contains(&p), "effective_priority {p}");
}

#[tokio::test]
async fn reads_of_a_missing_topic_are_404_and_never_create_it() {
    let s = start().await;
    let missing = "topic_not_found";
    get(&s, &t("nope")).await.err(404, missing);
    let r = post(&s, "/v0/topics/nope/diff", json!({})).await;
    r.err(404, missing);
    let r = post(&s, "/v0/topics/nope/delete", json!({ "before_seq": 5 })).await;
    r.err(404, missing);
    get(&s, &t("nope")).await.err(404, missing);
    let list = get(&s, "/v0/topics").await.ok(200);
    assert_eq!(list["topics"], json!([]), "{list}");
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The topic names of a listing page.
fn names(v: &Value) -> Vec<String> {
    let topics = v["topics"].as_array().expect("topics[]");
    let name = |x: &Value| x["topic"].as_str().expect("topic").to_string();
    topics.iter().map(name).collect()
}

#[tokio::test]
async fn list_filters_by_prefix_and_pages_with_a_cursor() {
    let s = start().await;
    for name in ["ls-c", "ls-a", "ls-e", "ls-b", "ls-d", "other"] {
        put_ok(&s, name, json!({}), 201).await;
    }
    write_n(&s, "ls-b", 2).await;

    let v = get(&s, "/v0/topics").await.ok(200);
    assert_eq!(names(&v).len(), 6);
    assert!(v.get("next_cursor").is_none(), "one page only: {v}");

    let v = get(&s, "/v0/topics?prefix=ls-").await.ok(200);
    assert_eq!(names(&v), ["ls-a", "ls-b", "ls-c", "ls-d", "ls-e"]);
    let b = &v["topics"][1];
    for key in ["effective_priority", "bytes"] {
        assert!(b.get(key).is_some(), "a list entry has {key}: {b}");
    }
    has!(b, { "head_seq": 2, "earliest_seq": 1, "count": 2, "durable": false });

    // Pages of 2: a b | c d | e, with next_cursor only while there are more.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..3 {
        let mut path = "/v0/topics?prefix=ls-&page_size=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let v = get(&s, &path).await.ok(200);
        seen.extend(names(&v));
        let next = v.get("next_cursor").map(|c| c.as_str().expect("a string"));
        cursor = next.map(str::to_string);
        assert_eq!(cursor.is_some(), page < 2, "page {page}: {v}");
    }
    assert_eq!(seen, ["ls-a", "ls-b", "ls-c", "ls-d", "ls-e"]);

    // The cursor is base64 of {"after": name}.
    let v = get(&s, "/v0/topics?prefix=ls-&page_size=2").await.ok(200);
    let c = v["next_cursor"].as_str().expect("next_cursor");
    let engines = [
        base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT,
        base64::engine::general_purpose::URL_SAFE_PAD_INDIFFERENT,
    ];
    let bytes = engines.iter().find_map(|e| e.decode(c).ok());
    let bytes = bytes.unwrap_or_else(|| panic!("cursor {c:?} is not base64"));
    let after: Value = serde_json::from_slice(&bytes).expect("a JSON cursor");
    assert_eq!(after, json!({ "after": "ls-b" }));
}

/// §1.3: the listing's `touch` (default false) bumps the read recency of the topics it lists,
/// as a single-topic GET does: their `last_read_ts` and auto `effective_priority`.
#[tokio::test]
async fn list_with_touch_bumps_the_listed_topics_read_recency() {
    let s = start().await;
    for name in ["tc-a", "tc-b"] {
        put_ok(&s, name, json!({}), 201).await;
    }
    let untouched = |name: &'static str| {
        let s = &s;
        async move { get(s, &format!("{}?touch=false", t(name))).await.ok(200) }
    };
    let fresh = untouched("tc-a").await;
    has!(fresh, { "last_read_ts": null, "effective_priority": 0 });

    let v = get(&s, "/v0/topics?prefix=tc-").await.ok(200);
    assert_eq!(v["topics"][0]["effective_priority"], 0, "{v}");
    has!(untouched("tc-a").await, { "last_read_ts": null, "effective_priority": 0 });
    get(&s, "/v0/topics?prefix=tc-&touch=false").await.ok(200);
    has!(untouched("tc-a").await, { "last_read_ts": null });

    // Only the listed topics: a page of one touches tc-a, not tc-b.
    let before = now_ms();
    let v = get(&s, "/v0/topics?prefix=tc-&page_size=1&touch=true")
        .await
        .ok(200);
    assert_eq!(names(&v), ["tc-a"]);
    let a = untouched("tc-a").await;
    let ts = a["last_read_ts"]
        .as_u64()
        .expect("last_read_ts after a touch");
    assert!(ts + 1000 >= before && ts <= now_ms() + 1000, "{a}");
    let p = a["effective_priority"].as_f64().expect("a number");
    assert!((400.0..=500.0).contains(&p), "effective_priority {p}: {a}");
    has!(untouched("tc-b").await, { "last_read_ts": null, "effective_priority": 0 });
    let v = get(&s, "/v0/topics?prefix=tc-").await.ok(200);
    assert!(
        v["topics"][0]["effective_priority"].as_i64() > Some(400),
        "{v}"
    );

    let r = get(&s, "/v0/topics?touch=maybe").await;
    r.err(400, "invalid_request");
}

#[tokio::test]
async fn list_rejects_a_bad_cursor() {
    let s = start().await;
    put_ok(&s, "x", json!({}), 201).await;
    for cursor in ["not-a-cursor!", "aGVsbG8="] {
        let r = get(&s, &format!("/v0/topics?cursor={}", urlencode(cursor))).await;
        r.err(400, "invalid_request");
    }
}

#[tokio::test]
async fn delete_topic_reports_deleted_and_honours_if_empty() {
    let s = start().await;
    write_n(&s, "full", 1).await;
    let r = delete(&s, "/v0/topics/full?if_empty=true").await;
    r.err(409, "topic_not_empty");
    assert_eq!(state(&s, "full").await["count"], 1);

    let v = delete(&s, "/v0/topics/full").await.ok(200);
    has!(v, { "topic": "full", "deleted": true, "routers_removed": [] });
    get(&s, &t("full")).await.err(404, "topic_not_found");
    let v = delete(&s, "/v0/topics/full").await.ok(200);
    assert_eq!(v["deleted"], false);

    put_ok(&s, "empty", json!({}), 201).await;
    let v = delete(&s, "/v0/topics/empty?if_empty=true").await.ok(200);
    assert_eq!(v["deleted"], true);
}

// ---- writes -------------------------------------------------------------------------------

/// The topic, router and watch-session caps: one more is a 429 `throttled` naming the limit,
/// with `Retry-After`; updating what exists never counts; deleting frees the slot.
#[tokio::test]
async fn caps_answer_429_at_their_limit_and_free_their_slots() {
    let opts = common::Options::default()
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", "data")
        .env("DS_LIMITS__MAX_TOPICS", "3")
        .env("DS_LIMITS__MAX_ROUTERS", "1")
        .env("DS_LIMITS__MAX_WATCH_SESSIONS", "1");
    let s = common::Server::start_with(opts).await;
    put_ok(&s, "a", json!({}), 201).await;
    put_ok(&s, "b", json!({}), 201).await;
    put_ok(&s, "x", json!({}), 201).await;
    let v = put(&s, "c", json!({})).await.err(429, "throttled");
    has!(v["error"]["detail"], { "limit": "max_topics", "max": 3 });
    // A write that would create a topic is refused the same way; updates still work.
    post(&s, "/v0/topics/d", json!({ "records": recs(1) }))
        .await
        .err(429, "throttled");
    put_ok(&s, "a", json!({ "ttl_ms": 5 }), 200).await;
    delete(&s, "/v0/topics/x").await.ok(200);
    put_ok(&s, "c", json!({}), 201).await;

    let router = |dest: &str| json!({ "source": "a", "dest": dest });
    let r = |name: &str, body: Value| {
        let put = s.client.put(s.url(&format!("/v0/routers/{name}")));
        put.header("content-type", JSON)
            .body(body.to_string())
            .send()
    };
    assert_eq!(r("r1", router("b")).await.unwrap().status(), 201);
    let refused = r("r2", router("c")).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let v: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    has!(v["error"]["detail"], { "limit": "max_routers", "max": 1 });
    let mut update = router("b");
    update["preserve_tag"] = json!(false);
    assert_eq!(
        r("r1", update).await.unwrap().status(),
        200,
        "an update never counts"
    );

    let w = json!({ "topics": { "a": { "tail": true } } });
    post(&s, "/v0/watch", w.clone()).await.ok(200);
    let v = post(&s, "/v0/watch", w).await.err(429, "throttled");
    has!(v["error"]["detail"], { "limit": "max_watch_sessions", "max": 1 });
}

/// A server without storage (`storage.mode = memory`) has only the `ephemeral` class: topics
/// it creates on its own (a write's, a router's dest, a queue's dead-letter topic) are
/// ephemeral too, never a class it cannot keep.
#[tokio::test]
async fn without_storage_implicit_topics_are_ephemeral() {
    let opts = common::Options::default().env("DS_STORAGE__MODE", "memory");
    let s = common::Server::start_with(opts).await;
    write(&s, "w", json!({ "records": [{ "data": 1 }] })).await;
    assert_eq!(state(&s, "w").await["config"]["durability"], "ephemeral");

    put_ok(&s, "src", json!({}), 201).await;
    let r = post_router(&s, "r", json!({ "source": "src", "dest": "src:copy" })).await;
    assert_eq!(r.ok(201)["created"], true);
    assert_eq!(
        state(&s, "src:copy").await["config"]["durability"],
        "ephemeral"
    );
    write(&s, "src", json!({ "records": [{ "data": "x" }] })).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while state(&s, "src:copy").await["head_seq"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let q =
        json!({ "type": "queue", "max_deliveries": 1, "dead_letter": "q:dead", "lease_ms": 100 });
    put_ok(&s, "q", q, 201).await;
    write(
        &s,
        "q",
        json!({ "records": [{ "data": 1 }, { "data": 2 }] }),
    )
    .await;
    let claim = json!({ "node": "w", "max": 2 });
    assert_eq!(
        post(&s, "/v0/topics/q/claim", claim.clone()).await.ok(200)["count"],
        2
    );
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    // The second delivery is past max_deliveries: both jobs go to the dead-letter topic.
    assert_eq!(
        post(&s, "/v0/topics/q/claim", claim).await.ok(200)["count"],
        0
    );
    let dead = state(&s, "q:dead").await;
    assert_eq!(dead["count"], 2, "{dead}");
    assert_eq!(dead["config"]["durability"], "ephemeral", "{dead}");
    let queue = &state(&s, "q").await["queue"];
    assert_has(
        queue,
        json!({ "dead_lettered": 2, "ready": 0, "in_flight": 0 }),
    );
}

async fn post_router(s: &common::Server, name: &str, body: Value) -> Resp {
    raw(
        s,
        Method::PUT,
        &format!("/v0/routers/{name}"),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
    .await
}
