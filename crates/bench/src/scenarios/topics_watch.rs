//! `topics-watch`: watch fan-out. For each K, one fresh topic, K watchers (each its own
//! `POST /v0/watch` session tailing the topic and its own connection to the session's SSE
//! `stream_url`), and one writer posting one-record writes at a fixed rate. Each record's
//! data carries its index and its send time (`{"i":N,"t_ns":T,"p":"…"}`), so every watcher
//! times every delivery from the write's send time to its parsing, and checks that record
//! `N` arrives with seq `head+1+N`, in order, with no gap or repeat. The step itself (connect,
//! write, time, verify) is `fanout`'s.

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use super::Common;
use super::fanout::FanoutArgs;
use super::live::{Decoder, Next, Tail, Until, now_ns, sse_subscriber};
use super::sse::SseEvent;
use super::topics::{self, CLASSES, JSON, Rec, Timed};
use crate::client::{BAD_ANSWER, Conn, Failure, REQUEST_TIMEOUT};
use crate::stats::{Errors, ScenarioResult, add_errors};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct TopicsWatchArgs {
    /// Watchers K, the writer's rate, record data bytes (`--size`), seconds per K.
    #[command(flatten)]
    #[serde(flatten)]
    pub fan: FanoutArgs,
    /// Durability class of the topic.
    #[arg(long, default_value = "fsync", value_parser = clap::builder::PossibleValuesParser::new(CLASSES))]
    pub durability: String,
}

#[derive(Deserialize)]
struct RecordEvent {
    topic: String,
    records: Vec<Rec<Timed>>,
}

#[derive(Deserialize)]
struct Session {
    stream_url: String,
}

fn count(errors: &mut Errors, key: &str) {
    *errors.entry(key.to_string()).or_default() += 1;
}

/// `POST /v0/watch` tailing `name`: the session's stream URL.
async fn open_session(conn: &mut Conn, name: &str) -> Result<String, Failure> {
    let body = format!("{{\"topics\":{{\"{name}\":{{\"tail\":true}}}}}}");
    let (_, b) = conn
        .call(
            Method::POST,
            "/v0/watch",
            &[JSON],
            Bytes::from(body),
            &[200],
            REQUEST_TIMEOUT,
        )
        .await?;
    let s: Session =
        serde_json::from_slice(&b).map_err(|e| Failure::Bad(format!("POST /v0/watch: {e}")))?;
    Ok(s.stream_url)
}

/// One watcher: a session on `name` (whose records start after seq `start`), its stream read
/// until `stop` records have arrived; reconnects to the same session when the stream ends
/// (the server keeps the session's cursor).
async fn watcher(s: topics::TailStart) -> Tail {
    let topics::TailStart {
        target,
        name,
        start,
        record_bytes,
        dec,
        stop,
        connected,
    } = s;
    let mut conn = Conn::new(&target);
    let mut errors = Errors::new();
    let url = loop {
        if dec.next_seq >= *stop.borrow() {
            return Tail {
                dec,
                errors,
                reconnects: 0,
            };
        }
        match open_session(&mut conn, &name).await {
            Ok(u) => break u,
            Err(f) => {
                count(&mut errors, &f.key());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let on_event = |_: &mut (), ev: SseEvent, dec: &mut Decoder, errors: &mut Errors| {
        match ev.event.as_str() {
            "record" => match serde_json::from_slice::<RecordEvent>(&ev.data) {
                Ok(r) if r.topic == name => {
                    let now = now_ns();
                    for rec in &r.records {
                        if rec.seq != start + 1 + rec.data.i {
                            dec.disorder += 1;
                        }
                        dec.observe(rec.data.i, rec.data.t_ns, now, record_bytes);
                    }
                }
                _ => {
                    count(errors, BAD_ANSWER);
                    dec.disorder += 1;
                }
            },
            "caught-up" | "" => {}
            other => {
                // tombstone, topic-deleted, error: none belongs in this run.
                count(errors, &format!("watch-{other}"));
                dec.disorder += 1;
                if other != "tombstone" {
                    return Next::Stop;
                }
            }
        }
        Next::Go
    };
    let mut t = sse_subscriber(
        target,
        (),
        |_| url.clone(),
        &[("accept", "text/event-stream")],
        on_event,
        Until {
            dec,
            stop,
            connected: Some(connected),
        },
    )
    .await;
    add_errors(&mut t.errors, &errors);
    t
}

pub async fn run(c: &Common, a: &TopicsWatchArgs) -> Result<Vec<ScenarioResult>> {
    let args = serde_json::to_value(a)?;
    topics::run_tail_fanout(c, "topics-watch", args, &a.fan, &a.durability, watcher).await
}
