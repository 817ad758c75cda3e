//! The topics `/v0/ws` WebSocket, black-box with a real client library (tokio-tungstenite):
//! subscribe (topic, topics map, tail, from_seq, node, prefixes), publish and its ack,
//! unsubscribe, ping/pong, topic deletion, errors, one reply per op, the closing handshake
//! either way, and the answer to a plain GET.

mod common;
#[macro_use]
mod topics_common;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use topics_common::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &common::Server) -> Ws {
    let url = format!("{}/v0/ws", s.base.replacen("http://", "ws://", 1));
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next JSON message (pings skipped), within 5 s.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

/// The server's Close frame, within 5 s (text messages and pings before it skipped); then
/// asserts the connection ends without an error.
async fn closing(ws: &mut Ws) -> CloseFrame {
    let frame = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a Close frame within 5 s");
        match m {
            Some(Ok(Message::Close(f))) => break f.expect("a Close frame with a code"),
            Some(Ok(_)) => {}
            other => panic!("the connection ended without a Close frame: {other:?}"),
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the end within 5 s");
    assert!(
        matches!(end, None | Some(Err(Error::ConnectionClosed))),
        "{end:?}"
    );
    frame
}

/// Messages until one with `op` (and `topic`, if given); returns it and those before.
async fn until(ws: &mut Ws, op: &str, topic: Option<&str>) -> (Value, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        let v = next(ws).await;
        if v["op"] == op && topic.is_none_or(|t| v["topic"] == t) {
            return (v, seen);
        }
        seen.push(v);
    }
}

/// Every message up to the answer to a ping sent now (its id `barrier`), and those with `id`.
async fn replies_to(ws: &mut Ws, id: Value, barrier: &str) -> (Vec<Value>, Vec<Value>) {
    send(ws, json!({ "op": "ping", "id": barrier })).await;
    let mut all = Vec::new();
    loop {
        let v = next(ws).await;
        if v["op"] == "pong" && v["id"] == barrier {
            let mine = all.iter().filter(|m: &&Value| m["id"] == id).cloned();
            return (mine.collect(), all);
        }
        all.push(v);
    }
}

/// Records delivered in `record` messages until `n` have come, as (topic, seq, data).
async fn records(ws: &mut Ws, n: usize) -> Vec<(String, u64, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = next(ws).await;
        if v["op"] == "record" {
            for r in v["records"].as_array().expect("records") {
                let t = v["topic"].as_str().unwrap_or_default().to_string();
                out.push((t, r["$seq"].as_u64().unwrap_or(0), r["data"].clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn subscribe_publish_and_receive() {
    let s = start().await;
    let mut ws = connect(&s).await;
    // Tailing a topic that does not exist yet; publishing creates it.
    send(
        &mut ws,
        json!({ "op": "subscribe", "id": 1, "topic": "chat", "tail": true }),
    )
    .await;
    let v = next(&mut ws).await;
    has!(v, { "op": "subscribed", "id": 1, "topic": "chat", "from_seq": 0, "head_seq": 0 });
    let recs = json!([{ "data": { "m": "hi" } }, { "data": { "m": "there" } }]);
    send(
        &mut ws,
        json!({ "op": "publish", "id": "p1", "topic": "chat", "records": recs }),
    )
    .await;
    let (ack, _) = until(&mut ws, "ack", None).await;
    has!(ack, { "id": "p1", "topic": "chat", "first_seq": 1, "last_seq": 2,
                "seqs": [1, 2], "created": true, "deduped": false });
    let got = records(&mut ws, 2).await;
    assert_eq!(got[0], ("chat".into(), 1, json!({ "m": "hi" })));
    assert_eq!(got[1], ("chat".into(), 2, json!({ "m": "there" })));
    // return_seqs: false leaves seqs out; a write over HTTP reaches the subscriber too.
    let one = json!([{ "data": 3 }]);
    send(
        &mut ws,
        json!({ "op": "publish", "topic": "chat", "records": one, "return_seqs": false }),
    )
    .await;
    let (ack, _) = until(&mut ws, "ack", None).await;
    assert!(ack.get("seqs").is_none(), "{ack}");
    write(&s, "chat", json!({ "records": [{ "data": 4 }] })).await;
    let got = records(&mut ws, 2).await;
    assert_eq!((got[0].1, got[1].1), (3, 4));
}

#[tokio::test]
async fn catch_up_from_a_cursor_with_limits_and_node_filter() {
    let s = start().await;
    let recs: Vec<Value> = (0..10)
        .map(|i| json!({ "data": i, "node": if i % 2 == 0 { "a" } else { "b" } }))
        .collect();
    write(&s, "t", json!({ "records": recs })).await;
    let mut ws = connect(&s).await;
    let sub =
        json!({ "op": "subscribe", "topics": { "t": { "from_seq": 2 } }, "limit": 3, "node": "a" });
    send(&mut ws, sub).await;
    let (v, _) = until(&mut ws, "subscribed", None).await;
    assert!(v.get("topic").is_none(), "{v}");
    has!(v["topics"]["t"], { "from_seq": 2, "head_seq": 10, "earliest_seq": 1 });
    // Records after seq 2 not written by node a: 4, 6, 8, 10 (as seqs, data 3, 5, 7, 9).
    let got = records(&mut ws, 4).await;
    let seqs: Vec<u64> = got.iter().map(|g| g.1).collect();
    assert_eq!(seqs, vec![4, 6, 8, 10]);
    let (c, _) = until(&mut ws, "caught_up", Some("t")).await;
    assert_eq!(c["head_seq"], 10);
}

#[tokio::test]
async fn unsubscribe_ping_errors_and_deletion() {
    let s = start().await;
    write(&s, "u", json!({ "records": [{ "data": 1 }] })).await;
    let mut ws = connect(&s).await;
    send(&mut ws, json!({ "op": "ping", "id": 7 })).await;
    has!(next(&mut ws).await, { "op": "pong", "id": 7 });
    send(&mut ws, json!({ "op": "subscribe", "topic": "missing" })).await;
    has!(next(&mut ws).await, { "op": "error", "code": "topic_not_found", "topic": "missing" });
    send(&mut ws, json!({ "op": "nope" })).await;
    has!(next(&mut ws).await, { "op": "error", "code": "invalid_request" });
    ws.send(Message::text("not json")).await.expect("send");
    has!(next(&mut ws).await, { "op": "error", "code": "invalid_request" });
    send(
        &mut ws,
        json!({ "op": "publish", "topic": "u", "records": [] }),
    )
    .await;
    has!(next(&mut ws).await, { "op": "error", "topic": "u" });

    send(
        &mut ws,
        json!({ "op": "subscribe", "topic": "u", "tail": true }),
    )
    .await;
    until(&mut ws, "subscribed", Some("u")).await;
    send(
        &mut ws,
        json!({ "op": "unsubscribe", "id": 2, "topic": "u" }),
    )
    .await;
    let (v, _) = until(&mut ws, "unsubscribed", Some("u")).await;
    assert_eq!(v["id"], 2);
    write(&s, "u", json!({ "records": [{ "data": 2 }] })).await;
    send(&mut ws, json!({ "op": "ping" })).await;
    let (_, before) = until(&mut ws, "pong", None).await;
    assert!(
        before.iter().all(|m| m["op"] != "record"),
        "no records after unsubscribe: {before:?}"
    );

    send(&mut ws, json!({ "op": "subscribe", "topic": "u" })).await;
    records(&mut ws, 2).await;
    delete(&s, "/v0/topics/u").await.ok(200);
    let (v, _) = until(&mut ws, "topic_deleted", Some("u")).await;
    assert_eq!(v["topic"], "u");
}

#[tokio::test]
async fn prefixes_follow_topics_created_later() {
    let s = start().await;
    write(&s, "orders:eu", json!({ "records": [{ "data": "old" }] })).await;
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({ "op": "subscribe", "prefixes": ["orders:"], "tail": true }),
    )
    .await;
    let (v, _) = until(&mut ws, "subscribed", None).await;
    has!(v, { "prefixes": ["orders:"] });
    has!(v["topics"]["orders:eu"], { "from_seq": 1, "head_seq": 1 });
    write(
        &s,
        "orders:us",
        json!({ "records": [{ "data": "new-us" }] }),
    )
    .await;
    write(
        &s,
        "orders:eu",
        json!({ "records": [{ "data": "new-eu" }] }),
    )
    .await;
    write(&s, "other", json!({ "records": [{ "data": "no" }] })).await;
    let mut got = records(&mut ws, 2).await;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got[0], ("orders:eu".into(), 2, json!("new-eu")));
    assert_eq!(got[1], ("orders:us".into(), 1, json!("new-us")));
}

#[tokio::test]
async fn a_plain_get_is_426() {
    let s = start().await;
    let r = get(&s, "/v0/ws").await;
    r.err(426, "upgrade_required");
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code() {
    let s = start().await;
    let mut ws = connect(&s).await;
    send(&mut ws, json!({ "op": "ping", "id": 1 })).await;
    has!(next(&mut ws).await, { "op": "pong", "id": 1 });
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(bye)))
        .await
        .expect("send Close");
    let frame = closing(&mut ws).await;
    assert_eq!(u16::from(frame.code), 1000, "{frame:?}");
}

#[tokio::test]
async fn shutdown_says_so_and_closes_going_away() {
    let mut s = start().await;
    write(&s, "t", json!({ "records": [{ "data": 1 }] })).await;
    let mut ws = connect(&s).await;
    let sub = json!({ "op": "subscribe", "id": 1, "topic": "t", "tail": true });
    send(&mut ws, sub).await;
    until(&mut ws, "caught_up", Some("t")).await;
    s.sigterm();
    let (e, _) = until(&mut ws, "error", None).await;
    assert_eq!(e["code"], "server_shutting_down", "{e}");
    let frame = closing(&mut ws).await;
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|st| st.success()), "{status:?}");
}

#[tokio::test]
async fn every_op_gets_exactly_one_reply() {
    let s = start().await;
    write(&s, "orders:eu", json!({ "records": [{ "data": 1 }] })).await;
    write(&s, "orders:us", json!({ "records": [{ "data": 2 }] })).await;
    let mut ws = connect(&s).await;
    // A prefix under which nothing exists yet.
    let sub = json!({ "op": "subscribe", "id": 1, "prefixes": ["zzz-none:"] });
    send(&mut ws, sub).await;
    let (r, _) = replies_to(&mut ws, json!(1), "b1").await;
    assert_eq!(r.len(), 1, "{r:?}");
    has!(r[0], { "op": "subscribed", "topics": {}, "prefixes": ["zzz-none:"] });
    // A topic named and under a prefix of the same op: one reply, each topic once.
    let sub = json!({ "op": "subscribe", "id": 2, "topics": { "orders:eu": { "from_seq": 0, "tail": false } },
                      "prefixes": ["orders:"], "tail": true });
    send(&mut ws, sub).await;
    let (r, all) = replies_to(&mut ws, json!(2), "b2").await;
    assert_eq!(r.len(), 1, "{all:?}");
    has!(r[0], { "op": "subscribed", "prefixes": ["orders:"] });
    has!(r[0]["topics"], { "orders:eu": { "from_seq": 0, "head_seq": 1, "earliest_seq": 1 },
                           "orders:us": { "from_seq": 1, "head_seq": 1, "earliest_seq": 1 } });
    // Unsubscribing a prefix: answered, and its topics stop.
    let unsub = json!({ "op": "unsubscribe", "id": 3, "prefixes": ["orders:", "pfx:"] });
    send(&mut ws, unsub).await;
    let (r, _) = replies_to(&mut ws, json!(3), "b3").await;
    assert_eq!(r.len(), 1, "{r:?}");
    has!(r[0], { "op": "unsubscribed", "prefixes": { "orders:": true, "pfx:": false },
                 "topics": { "orders:us": true } });
    write(&s, "orders:us", json!({ "records": [{ "data": 3 }] })).await;
    let (_, all) = replies_to(&mut ws, json!(null), "b4").await;
    let us = |m: &&Value| m["op"] == "record" && m["topic"] == "orders:us";
    assert!(!all.iter().any(|m| us(&m)), "{all:?}");
    // Unsubscribing nothing, and malformed messages that still carry an id: an error each.
    send(&mut ws, json!({ "op": "unsubscribe", "id": 4 })).await;
    let (r, _) = replies_to(&mut ws, json!(4), "b5").await;
    assert_eq!(r.len(), 1, "{r:?}");
    has!(r[0], { "op": "error", "code": "invalid_request" });
    send(
        &mut ws,
        json!({ "op": "subscribe", "id": 5, "topics": ["x"] }),
    )
    .await;
    let (r, _) = replies_to(&mut ws, json!(5), "b6").await;
    assert_eq!(r.len(), 1, "{r:?}");
    has!(r[0], { "op": "error", "code": "invalid_request" });
    // A subscribe naming a missing topic subscribes nothing, the others named included.
    let sub = json!({ "op": "subscribe", "id": 6, "topics": { "t1": {}, "missing": {} } });
    write(&s, "t1", json!({ "records": [{ "data": 1 }] })).await;
    send(&mut ws, sub).await;
    let (r, all) = replies_to(&mut ws, json!(6), "b7").await;
    assert_eq!(r.len(), 1, "{all:?}");
    has!(r[0], { "op": "error", "code": "topic_not_found", "topic": "missing" });
    assert!(all.iter().all(|m| m["op"] != "record"), "{all:?}");
    // The single-topic forms answer flat too.
    send(
        &mut ws,
        json!({ "op": "subscribe", "id": 7, "topic": "t1" }),
    )
    .await;
    let (r, _) = replies_to(&mut ws, json!(7), "b8").await;
    assert_eq!(r.len(), 1, "{r:?}");
    has!(r[0], { "op": "subscribed", "topic": "t1", "from_seq": 0, "head_seq": 1,
                 "topics": { "t1": { "from_seq": 0, "head_seq": 1, "earliest_seq": 1 } } });
    send(
        &mut ws,
        json!({ "op": "unsubscribe", "id": 8, "topic": "t1" }),
    )
    .await;
    let (r, _) = replies_to(&mut ws, json!(8), "b9").await;
    assert_eq!(r.len(), 1, "{r:?}");
    has!(r[0], { "op": "unsubscribed", "topic": "t1", "was_subscribed": true,
                 "topics": { "t1": true } });
}

#[tokio::test]
async fn a_topic_unsubscribed_under_a_followed_prefix_stays_away() {
    let s = start().await;
    write(&s, "p:a", json!({ "records": [{ "data": 1 }] })).await;
    let mut ws = connect(&s).await;
    let sub = json!({ "op": "subscribe", "prefixes": ["p:"], "from_seq": 0 });
    send(&mut ws, sub).await;
    records(&mut ws, 1).await;
    send(&mut ws, json!({ "op": "unsubscribe", "topic": "p:a" })).await;
    until(&mut ws, "unsubscribed", None).await;
    // Another topic's creation lists the prefix again: p:a does not come back.
    write(&s, "p:b", json!({ "records": [{ "data": 2 }] })).await;
    write(&s, "p:a", json!({ "records": [{ "data": 3 }] })).await;
    let got = records(&mut ws, 1).await;
    assert_eq!(got, vec![("p:b".into(), 1, json!(2))]);
    let (_, all) = replies_to(&mut ws, json!(null), "b").await;
    assert!(all.iter().all(|m| m["topic"] != "p:a"), "{all:?}");
}

#[tokio::test]
async fn tailing_a_topic_not_there_yet_is_caught_up_at_once() {
    let s = start().await;
    let mut ws = connect(&s).await;
    let sub = json!({ "op": "subscribe", "id": 1, "topic": "later", "tail": true });
    send(&mut ws, sub).await;
    has!(next(&mut ws).await, { "op": "subscribed", "id": 1, "topic": "later", "head_seq": 0 });
    has!(next(&mut ws).await, { "op": "caught_up", "topic": "later", "head_seq": 0 });
    write(&s, "later", json!({ "records": [{ "data": 1 }] })).await;
    let got = records(&mut ws, 1).await;
    assert_eq!(got, vec![("later".into(), 1, json!(1))]);
}
