//! `topics-ws`: WebSocket fan-out, the `/v0/ws` side of `topics-watch`. For each K, one fresh
//! topic, K WebSocket clients (`GET /v0/ws`, one connection each) that each send
//! `{"op":"subscribe","topic":T,"tail":true}` and wait for `subscribed`, and one writer posting
//! one-record writes over HTTP at a fixed rate. Each record's data carries its index and send
//! time (`{"i":N,"t_ns":T,"p":"…"}`), so every client times every delivery from the write's
//! send time to the parsing of its `record` message, and checks that record `N` arrives with
//! seq `start+1+N`, in order, with no gap or repeat. A client whose connection ends reconnects
//! and subscribes again from the last seq it got. The step itself (connect, write, time,
//! verify) is `fanout`'s, so the results have `topics-watch`'s shape.

use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Common;
use super::fanout::FanoutArgs;
use super::live::{Tail, now_ns};
use super::topics::{self, CLASSES, Rec, Timed};
use crate::client::{BAD_ANSWER, REQUEST_TIMEOUT};
use crate::stats::{Errors, ScenarioResult};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct TopicsWsArgs {
    /// Clients K, the writer's rate, record data bytes (`--size`), seconds per K.
    #[command(flatten)]
    #[serde(flatten)]
    pub fan: FanoutArgs,
    /// Durability class of the topic.
    #[arg(long, default_value = "fsync", value_parser = clap::builder::PossibleValuesParser::new(CLASSES))]
    pub durability: String,
}

/// A server message, the parts the client looks at.
#[derive(Deserialize)]
struct ServerMsg {
    op: String,
    topic: Option<String>,
    from_seq: Option<u64>,
    records: Option<Vec<Rec<Timed>>>,
}

fn count(errors: &mut Errors, key: &str) {
    *errors.entry(key.to_string()).or_default() += 1;
}

/// A small read buffer: a thousand clients share the load generator.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 << 10)
}

/// One client of topic `name` (whose records start after seq `start`) until it has received
/// `stop` records; signals `connected` on its first `subscribed`.
async fn client(s: topics::TailStart) -> Tail {
    let topics::TailStart {
        target,
        name,
        start,
        record_bytes,
        mut dec,
        mut stop,
        connected,
    } = s;
    let url = format!("ws://{}/v0/ws", target.addr);
    let mut errors = Errors::new();
    let mut connected = Some(connected);
    let mut reconnects = 0;
    'outer: while dec.next_seq < *stop.borrow() {
        let open = tokio_tungstenite::connect_async_with_config(&url, Some(ws_config()), true);
        let mut ws = match tokio::time::timeout(REQUEST_TIMEOUT, open).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(_)) | Err(_) => {
                count(&mut errors, "ws-connect");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The first time from the head (the writer has not begun), then after the last seq.
        let sub = if connected.is_some() {
            format!("{{\"op\":\"subscribe\",\"topic\":\"{name}\",\"tail\":true}}")
        } else {
            reconnects += 1;
            let from = start + dec.next_seq;
            format!("{{\"op\":\"subscribe\",\"topic\":\"{name}\",\"from_seq\":{from}}}")
        };
        if ws.send(Message::text(sub)).await.is_err() {
            count(&mut errors, "ws-io");
            continue;
        }
        loop {
            if dec.next_seq >= *stop.borrow() {
                let _ = ws.close(None).await;
                break 'outer;
            }
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = stop.changed() => continue,
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(_)) => {
                    count(&mut errors, "ws-io");
                    break;
                }
                Some(Ok(Message::Binary(_))) => {
                    count(&mut errors, "ws-binary");
                    continue;
                }
                Some(Ok(_)) => continue, // ping, pong (answered by the library)
            };
            let now = now_ns();
            let m: ServerMsg = match serde_json::from_str(text.as_str()) {
                Ok(m) => m,
                Err(_) => {
                    count(&mut errors, BAD_ANSWER);
                    dec.disorder += 1;
                    continue;
                }
            };
            match m.op.as_str() {
                "record" if m.topic.as_deref() == Some(name.as_str()) => {
                    for rec in m.records.iter().flatten() {
                        if rec.seq != start + 1 + rec.data.i {
                            dec.disorder += 1;
                        }
                        dec.observe(rec.data.i, rec.data.t_ns, now, record_bytes);
                    }
                }
                "subscribed" => {
                    if m.topic.as_deref() != Some(name.as_str())
                        || m.from_seq != Some(start + dec.next_seq)
                    {
                        count(&mut errors, "ws-subscribed-elsewhere");
                        dec.disorder += 1;
                    }
                    if let Some(c) = connected.take() {
                        c.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        drop(c.permit); // let the next client connect
                    }
                }
                "caught_up" | "pong" => {}
                other => {
                    // record of another topic, tombstone, topic_deleted, error: none belongs here.
                    count(&mut errors, &format!("ws-{other}"));
                    dec.disorder += 1;
                    if other == "error" || other == "topic_deleted" {
                        break 'outer;
                    }
                }
            }
        }
    }
    Tail {
        dec,
        errors,
        reconnects,
    }
}

pub async fn run(c: &Common, a: &TopicsWsArgs) -> Result<Vec<ScenarioResult>> {
    let args = serde_json::to_value(a)?;
    let mut out =
        topics::run_tail_fanout(c, "topics-ws", args, &a.fan, &a.durability, client).await?;
    for res in &mut out {
        // run_step names the reconnections after SSE.
        if let Some(n) = res
            .params
            .as_object_mut()
            .and_then(|p| p.remove("sse_reconnects"))
        {
            res.params["ws_reconnects"] = n;
        }
    }
    Ok(out)
}
