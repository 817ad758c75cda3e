//! The topics `/v0/ws` WebSocket, black-box with a real client library (tokio-tungstenite):
//! subscribe (topic, topics map, tail, from_seq, node, prefixes), publish and its ack,
//! unsubscribe, ping/pong, topic deletion, errors, the closing handshake either way, and the
//! answer to a plain GET.

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
    let (v, _) = until(&mut ws, "subscribed", Some("t")).await;
    has!(v, { "from_seq": 2, "head_seq": 10, "earliest_seq": 1 });
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
    until(&mut ws, "subscribed", Some("orders:eu")).await;
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
