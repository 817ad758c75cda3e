//! `append`: N streams, C connections each with one request in flight, closed loop (as fast
//! as answers come) or open loop (`--rate`, latency measured from the scheduled send time so
//! a slow server cannot hide its queueing: no coordinated omission).

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use http::Method;
use serde::Serialize;

use super::{Clock, Common, byte_payload, cleanup, due, json_message, wait_due};
use crate::client::{Conn, REQUEST_TIMEOUT, create_stream, head_tail, header};
use crate::procstat::Window;
use crate::stats::{Counters, Errors, Lat, Progress, ScenarioResult, add_errors};
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
}

struct Worker {
    lat: Lat,
    errors: Errors,
    ops: u64,
    bytes: u64,
    ledgers: Vec<Ledger>,
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
        let start = create_stream(&mut conn, &path, ctype).await?;
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

    let counters = Arc::new(Counters::default());
    let clock = Clock::start(c);
    let paths: Arc<Vec<String>> = Arc::new(ledgers.iter().map(|l| l.path.clone()).collect());
    let mut tasks = Vec::new();
    for w in 0..n_conns {
        let (target, paths, body, counters) = (
            c.target.clone(),
            paths.clone(),
            body.clone(),
            counters.clone(),
        );
        let (rate, producer, run_id) = (a.rate, a.producer, c.run_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut me = Worker {
                lat: Lat::default(),
                errors: Errors::new(),
                ops: 0,
                bytes: 0,
                ledgers: paths
                    .iter()
                    .map(|p| Ledger::new(p.clone(), String::new()))
                    .collect(),
            };
            let mut seqs = vec![0u64; paths.len()];
            let producer_id = format!("{run_id}-p{w}");
            let mut i = 0u64;
            loop {
                let sent = match rate {
                    Some(r) => match due(&clock, r, w, n_conns, i) {
                        Some(t) => wait_due(t).await,
                        None => break,
                    },
                    None => {
                        let now = std::time::Instant::now();
                        if now >= clock.end {
                            break;
                        }
                        now
                    }
                };
                let si = (w + i as usize * n_conns) % paths.len();
                i += 1;
                let seq = seqs[si].to_string();
                let mut headers = vec![("content-type", ctype)];
                if producer {
                    headers.push(("producer-id", producer_id.as_str()));
                    headers.push(("producer-epoch", "0"));
                    headers.push(("producer-seq", seq.as_str()));
                }
                let r = conn
                    .call(
                        Method::POST,
                        &paths[si],
                        &headers,
                        body.clone(),
                        &[200, 204],
                        REQUEST_TIMEOUT,
                    )
                    .await;
                let measured = sent >= clock.measure;
                match r {
                    Ok((h, _)) => {
                        seqs[si] += 1;
                        let l = &mut me.ledgers[si];
                        l.acked
                            .push(header(&h, "stream-next-offset").unwrap_or("").to_string());
                        l.bytes += per_append;
                        l.messages += messages;
                        if measured {
                            me.lat.record(sent.elapsed());
                            me.ops += 1;
                            me.bytes += per_append;
                            counters.op();
                        }
                    }
                    Err(f) => {
                        *me.errors.entry(f.key()).or_default() += 1;
                        counters.error();
                    }
                }
            }
            me
        }));
    }

    tokio::time::sleep_until(clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start("append".into(), c.duration, c.progress, counters);
    let mut lat = Lat::default();
    let mut errors = Errors::new();
    let (mut ops, mut bytes) = (0, 0);
    for t in tasks {
        let w = t.await?;
        lat.merge(&w.lat);
        add_errors(&mut errors, &w.errors);
        ops += w.ops;
        bytes += w.bytes;
        for (l, wl) in ledgers.iter_mut().zip(&w.ledgers) {
            l.merge(wl);
        }
    }
    drop(progress);

    let mut res = ScenarioResult::new("append", "", serde_json::to_value(a)?);
    res.server = window.map(|w| w.finish(ops));
    // Counted appends are those sent within [measure, end): the window is exactly --duration.
    res.totals(c.duration, ops, bytes);
    res.add_latency("append", &lat);
    res.errors = errors;

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
