//! `topics-watch`: watch fan-out. For each K, one fresh topic, K watchers (each its own
//! `POST /v0/watch` session tailing the topic and its own connection to the session's SSE
//! `stream_url`), and one writer posting one-record writes at a fixed rate. Each record's
//! data carries its index and its send time (`{"i":N,"t_ns":T,"p":"…"}`), so every watcher
//! times every delivery from the write's send time to its parsing, and checks that record
//! `N` arrives with seq `head+1+N`, in order, with no gap or repeat. The step itself (connect,
//! write, time, verify) is `fanout`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fanout::{self, FanoutArgs, Feed};
use super::live::{Connected, Decoder, Next, Tail, Until, Writer, now_ns, ns_of, sse_subscriber};
use super::load::{Done, Op};
use super::sse::SseEvent;
use super::topics::{self, CLASSES, JSON, Rec, topic_name, topic_path};
use super::{Clock, Common};
use crate::client::{BAD_ANSWER, Conn, Failure, REQUEST_TIMEOUT, Target};
use crate::stats::{Counters, Errors, ScenarioResult, Verify, add_errors};
use crate::verify::Ledger;

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

/// What a watcher checks of a record's data.
#[derive(Deserialize)]
struct Timed {
    i: u64,
    t_ns: u64,
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
async fn watcher(
    target: Target,
    name: String,
    start: u64,
    record_bytes: u64,
    dec: Decoder,
    stop: watch::Receiver<u64>,
    connected: Connected,
) -> Tail {
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

/// Writes one timestamped record per request; record `n` is the `n`-th acknowledged one and
/// must get seq `start + 1 + n`. The ledger's `acked` holds the seqs.
struct TimedWrites {
    path: String,
    start: u64,
    size: usize,
    ledger: Ledger,
}

impl Op for TimedWrites {
    async fn call(&mut self, conn: &mut Conn, _i: u64, sent: Instant) -> Result<Done, Failure> {
        let n = self.ledger.messages;
        let data = topics::data_json(&format!("\"i\":{n},\"t_ns\":{}", ns_of(sent)), self.size);
        let body = topics::records_body([data.as_str()]);
        let ack = topics::write(conn, &self.path, body, 1, false).await?;
        if ack.first_seq != self.start + 1 + n {
            return Err(Failure::Bad(format!(
                "{}: record {n} got seq {}, want {}",
                self.path,
                ack.first_seq,
                self.start + 1 + n
            )));
        }
        let l = &mut self.ledger;
        l.acked.push(ack.first_seq.to_string());
        l.bytes += data.len() as u64;
        l.messages += 1;
        Ok(Done {
            units: 1,
            bytes: data.len() as u64,
        })
    }
}

struct TopicFeed {
    target: Target,
    name: String,
    start: u64,
    size: usize,
    rate: f64,
}

impl Feed for TopicFeed {
    fn subscribe(
        &self,
        dec: Decoder,
        stop: watch::Receiver<u64>,
        connected: Connected,
    ) -> JoinHandle<Tail> {
        tokio::spawn(watcher(
            self.target.clone(),
            self.name.clone(),
            self.start,
            self.size as u64,
            dec,
            stop,
            connected,
        ))
    }

    fn write(&self, clock: Clock, counters: Arc<Counters>) -> JoinHandle<Writer> {
        let op = TimedWrites {
            path: format!("{}?return_seqs=false", topic_path(&self.name)),
            start: self.start,
            size: self.size,
            ledger: Ledger::new(topic_path(&self.name), self.start.to_string()),
        };
        let (target, rate) = (self.target.clone(), self.rate);
        tokio::spawn(Writer::run(target, op, rate, clock, counters, |op| {
            op.ledger
        }))
    }

    async fn check(&self, w: Writer) -> Verify {
        let mut v = Verify::new();
        let mut conn = Conn::new(&self.target);
        let want = self.start + w.records;
        let in_order = w
            .ledger
            .acked
            .iter()
            .zip(self.start + 1..)
            .all(|(a, s)| a == &s.to_string());
        match topics::topic_state(&mut conn, &self.name).await {
            Ok(s) => v.check(
                s.head_seq == want && in_order,
                format!(
                    "{} one-record writes acknowledged with seqs {}..={want} in order; GET head_seq {}",
                    w.records,
                    self.start + 1,
                    s.head_seq
                ),
            ),
            Err(e) => v.fail(e.to_string()),
        }
        v
    }
}

pub async fn run(c: &Common, a: &TopicsWatchArgs) -> Result<Vec<ScenarioResult>> {
    let mut out = Vec::new();
    let f = &a.fan;
    for (i, &k) in f.subscribers.iter().enumerate() {
        let name = topic_name(c, "watch", i);
        let mut conn = Conn::new(&c.target);
        let start = topics::create_topic(&mut conn, &name, &a.durability)
            .await?
            .head_seq;
        let feed = TopicFeed {
            target: c.target.clone(),
            name: name.clone(),
            start,
            size: f.size,
            rate: f.rate,
        };
        let res = fanout::run_step(
            &fanout::step_common(c, f),
            "topics-watch",
            f,
            serde_json::to_value(a)?,
            k.max(1),
            f.size as u64,
            &feed,
        )
        .await;
        topics::delete_topics(c, &[name]).await;
        out.push(res?);
    }
    Ok(out)
}
