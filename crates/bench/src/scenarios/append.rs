//! `append`: N streams, C connections each with one request in flight, closed loop (as fast
//! as answers come) or open loop (`--rate`, latency measured from the scheduled send time so
//! a slow server cannot hide its queueing: no coordinated omission).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use http::Method;
use serde::Serialize;

use super::load::{self, Done, Load, Op};
use super::{Clock, Common, byte_payload, cleanup, json_message};
use crate::client::{Conn, Failure, REQUEST_TIMEOUT, create_stream_in, head_tail, header};
use crate::procstat::Window;
use crate::stats::{Counters, Progress, ScenarioResult};
use crate::verify::{Ledger, check_offsets, check_readback};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct AppendArgs {
    /// Streams, created first; connection w writes streams w, w+C, w+2C, ... in turn.
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// Connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// Payload bytes per append (JSON mode: bytes per message).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Send idempotent producer headers (Producer-Id per connection, Epoch 0, Seq 0, 1, ...).
    #[arg(long)]
    pub producer: bool,
    /// JSON streams (application/json): each POST is an array of --batch messages.
    #[arg(long)]
    pub json_streams: bool,
    /// Messages per POST with --json-streams.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Open loop: total target appends per second across all connections.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Create the streams in this durability class (`Stream-Durability`: ephemeral, memory,
    /// disk, fsync); default: the server's.
    #[arg(long)]
    pub durability: Option<String>,
}

/// One connection's appends: it cycles over streams `w`, `w + C`, `w + 2C`, ...
struct AppendOp {
    w: usize,
    n_conns: usize,
    paths: Arc<Vec<String>>,
    ctype: &'static str,
    body: Bytes,
    per_append: u64,
    messages: u64,
    /// Producer-Id (with --producer) and the next Producer-Seq per stream.
    producer: Option<String>,
    /// Per stream this connection wrote (by index), made on first use: with a million streams
    /// a full table per connection would cost the load generator more than the run.
    seqs: HashMap<usize, u64>,
    ledgers: HashMap<usize, Ledger>,
}

impl Op for AppendOp {
    async fn call(&mut self, conn: &mut Conn, i: u64, _sent: Instant) -> Result<Done, Failure> {
        let si = (self.w + i as usize * self.n_conns) % self.paths.len();
        let seq = self.seqs.get(&si).copied().unwrap_or(0).to_string();
        let mut headers = vec![("content-type", self.ctype)];
        if let Some(p) = &self.producer {
            headers.push(("producer-id", p.as_str()));
            headers.push(("producer-epoch", "0"));
            headers.push(("producer-seq", seq.as_str()));
        }
        let (h, _) = conn
            .call(
                Method::POST,
                &self.paths[si],
                &headers,
                self.body.clone(),
                &[200, 204],
                REQUEST_TIMEOUT,
            )
            .await?;
        *self.seqs.entry(si).or_insert(0) += 1;
        let paths = &self.paths;
        let l = self
            .ledgers
            .entry(si)
            .or_insert_with(|| Ledger::new(paths[si].clone(), String::new()));
        l.acked
            .push(header(&h, "stream-next-offset").unwrap_or("").to_string());
        l.bytes += self.per_append;
        l.messages += self.messages;
        Ok(Done {
            units: 1,
            bytes: self.per_append,
        })
    }
}

pub async fn run(c: &Common, a: &AppendArgs) -> Result<Vec<ScenarioResult>> {
    let n_streams = a.streams.max(1);
    let n_conns = a.connections.max(1);
    let ctype = if a.json_streams {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let mut conn = Conn::new(&c.target);
    let mut ledgers = Vec::new();
    for i in 0..n_streams {
        let path = c.stream("append", i);
        let start = create_stream_in(&mut conn, &path, ctype, a.durability.as_deref()).await?;
        ledgers.push(Ledger::new(path, start));
    }
    let (body, per_append, messages) = if a.json_streams {
        let batch = a.batch.max(1);
        let msg = json_message(a.size);
        let body = format!("[{}]", vec![msg.as_str(); batch].join(","));
        (Bytes::from(body), (msg.len() * batch) as u64, batch as u64)
    } else {
        (byte_payload(a.size.max(1)), a.size.max(1) as u64, 1)
    };

    let load = Load {
        clock: Clock::start(c),
        rate: a.rate,
        counters: Arc::new(Counters::default()),
    };
    let paths: Arc<Vec<String>> = Arc::new(ledgers.iter().map(|l| l.path.clone()).collect());
    let ops = (0..n_conns)
        .map(|w| AppendOp {
            w,
            n_conns,
            paths: paths.clone(),
            ctype,
            body: body.clone(),
            per_append,
            messages,
            producer: a.producer.then(|| format!("{}-p{w}", c.run_id)),
            seqs: HashMap::new(),
            ledgers: HashMap::new(),
        })
        .collect();
    let tasks = load::spawn(&c.target, &load, ops);

    tokio::time::sleep_until(load.clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start("append".into(), c.duration, c.progress, load.counters);
    let (tally, workers) = load::join(tasks).await?;
    for op in &workers {
        for (&si, wl) in &op.ledgers {
            ledgers[si].merge(wl);
        }
    }
    drop(progress);
    let (ops, bytes) = (tally.requests, tally.bytes);

    let mut res = ScenarioResult::new("append", "", serde_json::to_value(a)?);
    res.server = window.map(|w| w.finish(ops));
    // Counted appends are those sent within [measure, end): the window is exactly --duration.
    res.totals(c.duration, ops, bytes);
    res.add_latency("append", &tally.lat);
    res.errors = tally.errors;

    let mut ends = Vec::new();
    for l in &ledgers {
        ends.push(head_tail(&mut conn, &l.path).await.unwrap_or_default());
    }
    res.verify = check_offsets(
        &ledgers,
        &ends,
        per_append,
        c.strict_offsets && !a.json_streams,
    );
    if c.readback {
        res.verify
            .absorb(check_readback(&mut conn, &ledgers, a.json_streams).await);
    }
    cleanup(c, &paths).await;
    Ok(vec![res])
}
