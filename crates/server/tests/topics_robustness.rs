//! Hostile and edge-case input against every `/v0` endpoint (topics-v0-api.md): no input gets
//! a 5xx or kills the server, every 4xx is the JSON envelope `{"error":{"code","message"}}`
//! with a documented code, and a rejected request changes nothing (every topic's state and
//! records, the topic list and the watch-session count are compared before and after).
//!
//! This file: hostile request bodies, endpoint by endpoint. `topics_hostile_http.rs`: paths,
//! methods, content types, framing, size limits, concurrency and a seeded fuzz.

mod common;
mod topics_hostile;

use futures_util::StreamExt;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::json;
use std::time::Duration;
use topics_hostile::*;

#[tokio::test]
async fn config_fields_of_wrong_types_are_400_and_change_nothing() {
    let mut s = start().await;
    let r = post(&s, "/v0/topics/cfg", r#"{"records":[{}]}"#).await;
    r.ok(201);
    let table = r#"ttl_ms cap_records cap_bytes idempotency_window_ms lease_ms claim_jitter_ms
            max_deliveries | "5" -1 1.5 1e400 18446744073709551616 true [] {} "";
        durable auto_priority auto_create dedupe_node leases_durable | "true" 1 0 [] {} "";
        type discard durability | 1 true [] {} "" "LOG" "log\u0000" "\ud800" "x";
        priority | "1" 1.5 1e400 9223372036854775808 -9223372036854775809 true [] {};
        dead_letter | 1 true [] {} "" "-bad" "a/b" "\ud800" "\xff""#;
    let mut bodies = fields(table, "{", "}");
    let long = format!(r#"{{"dead_letter":"{}"}}"#, "d".repeat(256));
    bodies.extend([long.into_bytes(), nested(10_000)]);
    bodies.extend(toks(
        r#"{"durable":true,"durability":"disk"} {"durable":false,"durability":"fsync"}
        {"no_such_field":1} {"ttl_ms":1,"ttl_ms":2} {"type":"log"}\x20trailing {"ttl_ms":1
        [] "str" 5 true {"ttl_ms":"\xff"}"#,
    ));
    let mut cases = Vec::new();
    for b in &bodies {
        cases.push(case(Method::PUT, "/v0/topics/cfg", b.clone(), INVALID));
        cases.push(case(Method::PUT, "/v0/topics/fresh", b.clone(), INVALID));
        let inline = wrap(r#"{"records":[{}],"config":"#, b, "}");
        cases.push(bad("/v0/topics/fresh", inline));
    }
    let put = |body: &str, want| case(Method::PUT, "/v0/topics/cfg", body, want);
    cases.push(put("null", INVALID));
    cases.push(put(r#"{"dead_letter":"cfg"}"#, INVALID));
    let conflict = (409, "topic_exists_incompatible");
    cases.push(put(r#"{"type":"queue"}"#, conflict));
    refuse_all(&s, cases).await;

    // Extreme but valid values: taken (clamped where documented), and the topic works.
    let max = u64::MAX;
    let body = json!({
        "ttl_ms": max, "cap_records": max, "cap_bytes": max, "idempotency_window_ms": max,
        "priority": i64::MIN, "lease_ms": max, "claim_jitter_ms": max, "max_deliveries": max,
    });
    let body = body.to_string().into_bytes();
    let r = send(&s, &Method::PUT, "/v0/topics/cfg", CT, &body).await;
    let c = r.ok(200)["config"].clone();
    let clamped = [&c["priority"], &c["lease_ms"], &c["claim_jitter_ms"]];
    assert_eq!(clamped, [-1000, 86_400_000, 5000], "{c}");
    let w = r#"{"records":[{},{}],"idempotency_key":"k"}"#;
    let first = post(&s, "/v0/topics/cfg", w).await.ok(200);
    let again = post(&s, "/v0/topics/cfg", w).await.ok(200);
    let got = [&first["seqs"], &again["seqs"], &again["deduped"]];
    assert_eq!(got, [&json!([2, 3]), &json!([2, 3]), &json!(true)]);
    let d = post(&s, "/v0/topics/cfg/diff", "{}").await.ok(200);
    assert_eq!(d["records"].as_array().map(Vec::len), Some(3), "{d}");
    let del = json!({ "before_seq": max }).to_string();
    let d = post(&s, "/v0/topics/cfg/delete", del).await.ok(200);
    assert_eq!([&d["count"], &d["earliest_seq"]], [0, 4], "{d}");
    let w = post(&s, "/v0/topics/cfg", r#"{"records":[{}]}"#).await;
    assert_eq!(w.ok(200)["seqs"], json!([4]));
    alive(&mut s).await;
}

// ---- POST /v0/topics/:t ---------------------------------------------------------------------

#[tokio::test]
async fn write_bodies_refused_whole_or_kept_verbatim() {
    let mut s = start().await;
    seed(&s, "v").await;
    let p = "/v0/topics/v";
    let mut cases = Vec::new();
    let records = r#"5 "x" {} null [] [null] [1] ["x"] [true] [[]] [{"data":1},5]"#;
    for r in toks(records) {
        cases.push(bad(p, wrap(r#"{"records":"#, &r, "}")));
    }
    let table = r#"tag | 1 true ["a"] {} "\ud800" "\xc3"; node | 1 [] {};
        data | } "a "a\x00b" "\xff\xfe" 2; meta | "x" 1 [] true "{}" {"\ud800":1} {"a":"\xff"}"#;
    let mut bad_records = fields(table, r#"{"data":1,"#, "}");
    bad_records.extend([
        format!(r#"{{"tag":"{}"}}"#, "t".repeat(257)).into_bytes(),
        format!(r#"{{"node":"{}"}}"#, "n".repeat(129)).into_bytes(),
        format!(r#"{{"meta":{{{}}}}}"#, keys(65)).into_bytes(),
        format!(r#"{{"meta":{{"x":"{}"}}}}"#, "m".repeat(17 << 10)).into_bytes(),
    ]);
    for r in &bad_records {
        cases.push(bad(p, wrap(r#"{"records":["#, r, "]}")));
        // All or nothing: a bad record after good ones writes none of them.
        let pre = r#"{"records":[{"data":"ok"},{"data":2},"#;
        cases.push(bad(p, wrap(pre, r, "]}")));
    }
    let key257 = "k".repeat(257);
    let top = format!(
        r#"idempotency_key | 1 [] {{}} true "{key257}"; node | 5 ["a"] "{}";
        create | "yes" 1; disable_backpressure | "no"; config | 5 "x""#,
        "n".repeat(129)
    );
    for b in fields(&top, r#"{"records":[{}],"#, "}") {
        cases.push(bad(p, b));
    }
    let wholes = r#"\x20\x0a\x09 null [] "str" 0 { \xef\xbb\xbf{"records":[{"data":1}]}"#;
    let wholes = toks(wholes).into_iter().chain([vec![], nested(10_000)]);
    cases.extend(wholes.map(|b| bad(p, b)));
    let one = r#"{"records":[{"data":1}]}"#;
    cases.push(bad(&format!("{p}?return_seqs=maybe"), one));
    cases.push(with(bad(p, one), &[("idempotency-key", key257.as_bytes())]));
    let many = format!(r#"{{"records":[{}]}}"#, vec!["{}"; 10_001].join(","));
    cases.push(case(Method::POST, p, many, (400, "batch_too_large")));
    let x = "x".repeat(1 << 20);
    let huge = format!(r#"{{"records":[{{}},{{"data":"{x}"}}]}}"#);
    cases.push(case(Method::POST, p, huge, (400, "record_too_large")));
    let absent = r#"{"records":[{"data":1}],"create":false}"#;
    let nope = "/v0/topics/nope";
    cases.push(case(Method::POST, nope, absent, NO_TOPIC));
    refuse_all(&s, cases).await;

    // Odd but valid records: written (in one batch, with a 256-character key), read verbatim.
    let odd = r#"{"data":1e400} {"data":-1} {"data":18446744073709551616} {"data":"nul\u0000"}
        {"data":[[[[[[[[[[1]]]]]]]]]]} {"data":5,"tag":"a\u0000b","meta":null}"#;
    let mut odd: Vec<String> = odd.split_whitespace().map(String::from).collect();
    let (tag, node) = ("t".repeat(256), "n".repeat(128));
    let meta = keys(64);
    odd.push(format!(
        r#"{{"tag":"{tag}","node":"{node}","meta":{{{meta}}}}}"#
    ));
    let (key, recs) = ("k".repeat(256), odd.join(","));
    let body = format!(r#"{{"records":[{recs}],"idempotency_key":"{key}"}}"#);
    let w = post(&s, p, body).await.ok(200);
    assert_eq!(w["seqs"], json!([4, 5, 6, 7, 8, 9, 10]), "{w}");
    let d = post(&s, &format!("{p}/diff"), r#"{"from_seq":3}"#).await;
    for r in &odd[..5] {
        let verbatim = d.text.contains(&r[1..r.len() - 1]);
        assert!(verbatim, "{r} not returned verbatim: {}", d.text);
    }
    // Deeply nested or lone-surrogate data: stored verbatim, or refused cleanly.
    let deep = wrap(r#"{"records":[{"data":"#, &nested(10_000), "}]}");
    let lone = br#"{"records":[{"data":"\ud800"}]}"#;
    for body in [&deep[..], lone] {
        clean(&s, &Method::POST, p, CT, body).await;
    }
    alive(&mut s).await;
}

/// Bodies are JSON objects (§1.3): not an array of the fields in declaration order (which
/// serde's derived `Deserialize` takes), and not bytes that are not UTF-8, even in a member
/// the server ignores (RFC 8259 §8.1).
#[tokio::test]
async fn bodies_must_be_strict_json_objects() {
    let mut s = start().await;
    seed(&s, "a").await;
    let nulls = |n| vec!["null"; n].join(",");
    let watch = format!(r#"[null,{{"a":{{}}}},{}]"#, nulls(7));
    let config = format!("[null,5,{}]", nulls(15));
    let cases = vec![
        bad("/v0/topics/a", r#"{"records":[[1,null,null,null]]}"#),
        bad("/v0/topics/a", r#"[[{"data":1}],null,null,null,null]"#),
        bad("/v0/topics/a", r#"{"records":[{}],"config":[]}"#),
        bad("/v0/topics/a/delete", "[2,null]"),
        bad("/v0/topics/a/diff", "[0,1,null,false,null,0,null]"),
        bad("/v0/watch", r#"{"topics":{"a":[]}}"#),
        bad("/v0/watch", watch),
        case(Method::PUT, "/v0/topics/a", config, INVALID),
        bad(
            "/v0/topics/a",
            b"{\"records\":[{}],\"junk\":\"\xff\"}".to_vec(),
        ),
        bad(
            "/v0/topics/a",
            b"{\"records\":[{\"junk\":\"\xe9t\xe9\"}]}".to_vec(),
        ),
    ];
    refuse_all(&s, cases).await;
    alive(&mut s).await;
}

// ---- diff and record deletes ----------------------------------------------------------------

#[tokio::test]
async fn hostile_diff_bodies() {
    let mut s = start().await;
    seed(&s, "d").await;
    let p = "/v0/topics/d/diff";
    let mut cases = Vec::new();
    let table = r#"from_seq | -1 "1" 1.5 1e400 18446744073709551616 null;
        limit | -1 "5" 1.5 1e400 18446744073709551616; wait_ms | -1 "5" 1e400 1e19 9e19;
        node | 5 [1] {} true [null] ["a",2] "\ud800"; max_batch_bytes | -1 "x" 1.5;
        include_tags | "yes" 1 null; include_meta | "no" 0"#;
    cases.extend(fields(table, "{", "}").into_iter().map(|b| bad(p, b)));
    let wholes = toks(r#"null [] "str" 5 { {"from_seq":"\xff"}"#);
    cases.extend(wholes.into_iter().map(|b| bad(p, b)));
    cases.push(bad(p, nested(10_000)));
    let missing = "/v0/topics/missing/diff";
    cases.push(case(Method::POST, missing, "{}", NO_TOPIC));
    refuse_all(&s, cases).await;

    // Extreme but valid values answer 200 at once (a huge wait_ms returns: records exist).
    let max = u64::MAX;
    for (body, n) in [
        (json!({}), 3),
        (json!({ "limit": 0 }), 1),
        (json!({ "limit": max, "wait_ms": max }), 3),
        (json!({ "max_batch_bytes": 0 }), 1),
        (json!({ "max_batch_bytes": max }), 3),
        (json!({ "node": [] }), 3),
        (json!({ "node": ["", "n".repeat(10_000)] }), 3),
        (json!({ "node": "n1" }), 0),
        (json!({ "from_seq": 1u64 << 53 }), 3),
        (json!({ "from_seq": max, "include_tags": true }), 3),
    ] {
        let d = post(&s, p, body.to_string()).await.ok(200);
        let got = d["records"].as_array().map(Vec::len);
        assert_eq!(got, Some(n), "{body}: {d}");
        let past = body.get("from_seq").is_some();
        assert!(!past || d["tombstone"]["reason"] == "recreated", "{d}");
    }
    // A short long-poll ends caught up; a huge one outlives a client that gives up.
    let d = post(&s, p, r#"{"from_seq":3,"wait_ms":50}"#).await.ok(200);
    assert_eq!(d["caught_up"], true, "{d}");
    let url = s.url(p);
    let r = s
        .client
        .post(url)
        .header("content-type", "application/json");
    let r = r.body(json!({ "from_seq": 3, "wait_ms": max }).to_string());
    let gave_up = r.timeout(Duration::from_millis(300)).send().await;
    let timed_out = gave_up.as_ref().is_err_and(|e| e.is_timeout());
    assert!(timed_out, "{gave_up:?}");
    alive(&mut s).await;
}

#[tokio::test]
async fn hostile_delete_bodies_delete_nothing() {
    let mut s = start().await;
    seed(&s, "x").await;
    let p = "/v0/topics/x/delete";
    let mut cases = Vec::new();
    let matches = toks(
        r#"["tag"] ["tag","Eq"] ["tag","Glob","a*b*"] ["tag","Glob","*a"] ["tag","Glob","a*b"]
        ["tag","Regex","x"] [1,2,3] {} {"tag":"a"} 5 true [] ["TAG","Eq","a"] ["tag","Eq",5]
        ["tag","Eq","a","more"] ["tag","eq","a"] "\ud800" "\xff""#,
    );
    for m in &matches {
        cases.push(bad(p, wrap(r#"{"match":"#, m, "}")));
        // A bad match refuses the whole delete, before_seq included.
        cases.push(bad(p, wrap(r#"{"before_seq":3,"match":"#, m, "}")));
    }
    for b in toks(r#""3" -1 1.5 1e400 18446744073709551616 true []"#) {
        cases.push(bad(p, wrap(r#"{"before_seq":"#, &b, "}")));
    }
    let wholes = r#"{} {"match":null} {"before_seq":null,"match":null} null [] "str" 5 {"#;
    let wholes = toks(wholes).into_iter().chain([vec![], nested(10_000)]);
    cases.extend(wholes.map(|b| bad(p, b)));
    let missing = "/v0/topics/missing/delete";
    let before2 = r#"{"before_seq":2}"#;
    cases.push(case(Method::POST, missing, before2, NO_TOPIC));
    refuse_all(&s, cases).await;

    // Matches of nothing delete nothing; a huge before_seq empties the topic, and writes go on.
    let nothing = r#"{"match":"zzz"} {"match":["tag","Glob","zz*"]} {"before_seq":0}"#;
    for body in toks(nothing) {
        let d = post(&s, p, body).await.ok(200);
        assert_eq!([&d["deleted"], &d["count"]], [0, 3], "{d}");
    }
    let all = json!({ "before_seq": u64::MAX }).to_string();
    let d = post(&s, p, all).await.ok(200);
    assert_eq!([&d["deleted"], &d["earliest_seq"]], [3, 4], "{d}");
    seed(&s, "x").await;
    let st = get(&s, "/v0/topics/x").await.ok(200);
    assert_eq!([&st["head_seq"], &st["count"]], [6, 3], "{st}");
    alive(&mut s).await;
}

/// Read an SSE stream until its `caught-up` event (at most 5 s).
async fn caught_up(r: reqwest::Response) {
    let (mut body, mut seen) = (r.bytes_stream(), String::new());
    while !seen.contains("event: caught-up") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await;
        let chunk = chunk.unwrap_or_else(|_| panic!("no caught-up event: {seen}"));
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
    }
}

// ---- watch ----------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_watch_bodies_and_stream_paths() {
    let mut s = start().await;
    seed(&s, "w").await;
    let p = "/v0/watch";
    let mut cases = Vec::new();
    let mut topics = toks(
        r#"[] "w" 5 null {} {"w":5} {"w":null} {"w":{"from_seq":-1}} {"w":{"from_seq":"1"}}
        {"w":{"from_seq":1e400}} {"w":{"tail":"yes"}} {"-x":{}} {"":{}} {"a/b":{}} {"é":{}}
        {"a\u0000":{}} {"w":{},"w\x20":{}} {"\ud800":{}}"#,
    );
    topics.push(format!(r#"{{"{}":{{}}}}"#, "a".repeat(256)).into_bytes());
    topics.push(format!("{{{}}}", keys(257)).into_bytes());
    for t in &topics {
        cases.push(bad(p, wrap(r#"{"topics":"#, t, "}")));
    }
    let opts = toks(
        r#""heartbeat_ms":-1 "heartbeat_ms":"x" "limit":-1 "node":5 "node":[1] "node":{}
        "consistency":"weird" "consistency":5 "include_data":"no" "max_batch_bytes":1e400
        "include_tags":null"#,
    );
    for o in &opts {
        cases.push(bad(p, wrap(r#"{"topics":{"w":{}},"#, o, "}")));
    }
    let wholes = toks(r#"null [] "str" { {"topics":{"\xff":{}}}"#);
    cases.extend(wholes.into_iter().chain([vec![]]).map(|b| bad(p, b)));
    let w = r#"{"topics":{"w":{}}}"#;
    cases.push(bad(&format!("{p}?lenient=maybe"), w));
    let nope = r#"{"topics":{"nope":{}}}"#;
    cases.push(bad(&format!("{p}?lenient=true"), nope));
    let all = format!(r#"{{"topics":{{{}}}}}"#, keys(256));
    let some = r#"{"topics":{"w":{},"nope":{}}}"#.to_string();
    for b in [nope.to_string(), some, all] {
        cases.push(case(Method::POST, p, b, NO_TOPIC));
    }
    // Stream paths: unknown or weird wids, other methods, and an Accept that is not SSE.
    let sse: &[(&str, &[u8])] = &[("accept", b"text/event-stream")];
    let long_wid = format!("wid_{}", "A".repeat(10_000));
    let wids = "wid_x wid_%00 wid_%zz %2e%2e wid_%2F..%2F %F0%9F%98%80 ... wid_\u{e9}";
    for wid in wids.split_whitespace().chain([long_wid.as_str()]) {
        let c = case(Method::GET, &format!("{p}/{wid}"), "", (404, "not_found"));
        cases.push(with(c, sse));
    }
    let c = case(Method::GET, "/v0/watch/wid_x", "", (406, "not_acceptable"));
    cases.push(with(c, &[("accept", b"text/html")]));
    let not_allowed = (405, "method_not_allowed");
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        cases.push(case(m, "/v0/watch/wid_x", "{}", not_allowed));
    }
    cases.push(case(Method::GET, p, "", not_allowed));
    refuse_all(&s, cases).await;

    // Extreme but valid sessions are made, and their streams serve whatever Last-Event-ID.
    let max = u64::MAX;
    let from_max = json!({ "topics": { "w": { "from_seq": max } }, "heartbeat_ms": 0 });
    let edge = json!({ "topics": { "w": {}, "later": { "tail": true } }, "heartbeat_ms": max,
        "limit": 0, "max_batch_bytes": 0, "node": [] });
    let lenient = json!({ "topics": { "w": {}, "nope": {} } });
    let mut ids = toks(r#"!!! e30 eyJ3IjotMX0 \xff"#);
    ids.push(vec![b'A'; 8000]);
    let lenient_path = "/v0/watch?lenient=true";
    for (body, path) in [(from_max, p), (edge, p), (lenient, lenient_path)] {
        let v = post(&s, path, body.to_string()).await.ok(200);
        let url = s.url(v["stream_url"].as_str().expect("stream_url"));
        for id in &ids {
            let r = s.client.get(&url).header("accept", "text/event-stream");
            let id_value = HeaderValue::from_bytes(id).unwrap();
            let r = r.header("last-event-id", id_value).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url} with Last-Event-ID {:?}", shown(id));
            caught_up(r).await;
        }
    }
    alive(&mut s).await;
}

// ---- paths, methods, content types, degenerate bodies -----------------------------------

// ---- unknown fields ---------------------------------------------------------------------------

/// A field the API does not define is refused with a 400 that names it, on every body:
/// ignored, a misspelt `before_seq` would widen a permanent delete to the whole topic.
#[tokio::test]
async fn unknown_or_misspelt_fields_are_400_and_change_nothing() {
    let mut s = start().await;
    seed(&s, "x").await;
    let q = r#"{"type":"queue"}"#;
    let r = send(
        &s,
        &Method::PUT,
        "/v0/topics/q",
        &[("content-type", b"application/json")],
        q.as_bytes(),
    )
    .await;
    r.ok(201);
    post(&s, "/v0/topics/q", r#"{"records":[{"data":1}]}"#)
        .await
        .ok(200);
    let cases = vec![
        bad("/v0/topics/x/delete", r#"{"match":"a","befor_seq":3}"#),
        bad("/v0/topics/x/delete", r#"{"before_seq":3,"tag":"a"}"#),
        bad("/v0/topics/x/diff", r#"{"from_sq":1}"#),
        bad("/v0/topics/x", r#"{"records":[{"data":1}],"bogus":2}"#),
        bad("/v0/topics/x", r#"{"records":[{"data":1,"tga":"a"}]}"#),
        bad("/v0/topics/x", r#"{"records":[{"data":1,"$seq":9}]}"#),
        bad("/v0/topics/x", r#"{"records":[{"data":1}],"op":"publish"}"#),
        bad(
            "/v0/topics/x",
            r#"{"records":[{"data":1}],"return_seqs":false}"#,
        ),
        bad(
            "/v0/topics/new",
            r#"{"records":[{"data":1}],"creat":false}"#,
        ),
        bad("/v0/watch", r#"{"topics":{"x":{"tail":true}},"limt":5}"#),
        bad("/v0/watch", r#"{"topics":{"x":{"from":1}}}"#),
        bad("/v0/topics/q/claim", r#"{"node":"w","maxx":2}"#),
        bad(
            "/v0/topics/q/ack",
            r#"{"node":"w","seqs":[1],"lease_id":["x"]}"#,
        ),
        bad("/v0/topics/q/nack", r#"{"node":"w","seqs":[1],"delay":5}"#),
        bad(
            "/v0/topics/q/extend",
            r#"{"node":"w","seqs":[1],"lease":5}"#,
        ),
    ];
    refuse_all(&s, cases).await;
    let r = post(&s, "/v0/topics/x/delete", r#"{"match":"a","befor_seq":3}"#).await;
    assert!(
        r.text.contains("befor_seq"),
        "the answer names the field: {}",
        r.text
    );

    // Over the WebSocket too: the op is refused and nothing is written.
    let base = s.base.replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{base}/v0/ws"))
        .await
        .unwrap();
    let frames = [
        json!({ "op": "publish", "id": 1, "topic": "x", "records": [{ "data": 1 }], "nod": "n" }),
        json!({ "op": "publish", "id": 2, "topic": "x", "records": [{ "data": 1, "tags": "a" }] }),
        json!({ "op": "subscribe", "id": 3, "topic": "x", "from": 0 }),
    ];
    use futures_util::SinkExt;
    for f in &frames {
        let m = tokio_tungstenite::tungstenite::Message::text(f.to_string());
        ws.send(m).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(
            (v["op"].as_str(), v["code"].as_str()),
            (Some("error"), Some("invalid_request")),
            "{f}: {v}"
        );
        assert_eq!(v["id"], f["id"], "{v}");
    }
    let st = get(&s, "/v0/topics/x").await.ok(200);
    assert_eq!([&st["head_seq"], &st["count"]], [3, 3], "{st}");
    alive(&mut s).await;
}
