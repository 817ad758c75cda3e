//! `topics-write`: `POST /v0/topics/:t` of one record or a batch. N topics in one durability
//! class are created first, then C connections write for the duration, connection `w` cycling
//! over topics `w`, `w + C`, … (the `append` scenario's pattern, so one-record writes compare
//! with appends of the same bytes). Closed loop, or open loop with `--rate`.
//!
//! Every answer is checked (status, `count`, contiguous `first_seq..=last_seq`, the `seqs`
//! list); afterwards the acknowledged seqs must tile each topic with no gap or repeat and
//! match its `head_seq` and `count`, and (unless `--no-readback`) every record is read back
//! by diff and compared with what was sent.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::load::{self, Done, Load, Op};
use super::topics::{self, CLASSES, topic_name, topic_path};
use super::{Clock, Common};
use crate::client::{Conn, Failure};
use crate::procstat::Window;
use crate::stats::{Counters, Progress, ScenarioResult};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct TopicsWriteArgs {
    /// Topics, created first; connection w writes topics w, w+C, w+2C, ... in turn.
    #[arg(long, default_value_t = 64)]
    pub topics: usize,
    /// Connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,
    /// Records per write.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Bytes of each record's data (JSON text `{"p":"xxx…"}`, at least 8).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Durability class of the topics.
    #[arg(long, default_value = "fsync", value_parser = clap::builder::PossibleValuesParser::new(CLASSES))]
    pub durability: String,
    /// Open loop: total writes (requests) per second across all connections.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Ask for no `seqs` list in the answers (`?return_seqs=false`).
    #[arg(long)]
    pub no_return_seqs: bool,
}

/// What the read-back checks of a record's data.
#[derive(Deserialize)]
struct Padding {
    p: String,
}

struct WriteOp {
    w: usize,
    n_conns: usize,
    /// Each topic's write path (with the query).
    paths: Arc<Vec<String>>,
    body: Bytes,
    batch: u64,
    data_bytes: u64,
    want_seqs: bool,
    /// Per topic, the `(first_seq, last_seq)` of every acknowledged write.
    ranges: Vec<Vec<(u64, u64)>>,
}

impl Op for WriteOp {
    async fn call(&mut self, conn: &mut Conn, i: u64, _sent: Instant) -> Result<Done, Failure> {
        let t = (self.w + i as usize * self.n_conns) % self.paths.len();
        let ack = topics::write(
            conn,
            &self.paths[t],
            self.body.clone(),
            self.batch,
            self.want_seqs,
        )
        .await?;
        self.ranges[t].push((ack.first_seq, ack.last_seq));
        Ok(Done {
            units: self.batch,
            bytes: self.data_bytes,
        })
    }
}

pub async fn run(c: &Common, a: &TopicsWriteArgs) -> Result<Vec<ScenarioResult>> {
    let n_topics = a.topics.max(1);
    let n_conns = a.connections.max(1);
    let batch = a.batch.max(1);
    let mut conn = Conn::new(&c.target);
    let names: Vec<String> = (0..n_topics).map(|i| topic_name(c, "write", i)).collect();
    let mut starts = Vec::new();
    for n in &names {
        starts.push(
            topics::create_topic(&mut conn, n, &a.durability)
                .await?
                .head_seq,
        );
    }
    let data = topics::data_json("", a.size);
    let body = topics::records_body(std::iter::repeat_n(data.as_str(), batch));
    let query = if a.no_return_seqs {
        "?return_seqs=false"
    } else {
        ""
    };
    let paths: Arc<Vec<String>> = Arc::new(names.iter().map(|n| topic_path(n) + query).collect());

    let load = Load {
        clock: Clock::start(c),
        rate: a.rate,
        counters: Arc::new(Counters::default()),
    };
    let ops = (0..n_conns)
        .map(|w| WriteOp {
            w,
            n_conns,
            paths: paths.clone(),
            body: body.clone(),
            batch: batch as u64,
            data_bytes: (data.len() * batch) as u64,
            want_seqs: !a.no_return_seqs,
            ranges: vec![Vec::new(); n_topics],
        })
        .collect();
    let tasks = load::spawn(&c.target, &load, ops);
    tokio::time::sleep_until(load.clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start("topics-write".into(), c.duration, c.progress, load.counters);
    let (tally, workers) = load::join(tasks).await?;
    drop(progress);
    let usage = window.map(|w| w.finish(tally.units));

    let mut params = serde_json::to_value(a)?;
    params["record_data_bytes"] = data.len().into();
    params["body_bytes"] = body.len().into();
    params["requests"] = tally.requests.into();
    params["requests_per_s"] = (tally.requests as f64 / c.duration.as_secs_f64()).into();
    if let Some(u) = &usage {
        params["cpu_us_per_request"] = (u.cpu_s * 1e6 / tally.requests.max(1) as f64).into();
    }
    let label = format!("{} batch={batch}", a.durability);
    let mut res = ScenarioResult::new("topics-write", &label, params);
    res.server = usage;
    // Ops are records; the window is exactly --duration (writes sent within it).
    res.totals(c.duration, tally.units, tally.bytes);
    res.add_latency("write", &tally.lat);
    res.verify = tally.check_answers("writes");
    res.errors = tally.errors;

    let mut ranges = vec![Vec::new(); n_topics];
    for op in workers {
        for (all, mine) in ranges.iter_mut().zip(op.ranges) {
            all.extend(mine);
        }
    }
    let want: Padding = serde_json::from_str(&data)?;
    let check = |_: u64, d: &Padding| {
        if d.p == want.p {
            Ok(())
        } else {
            Err(format!(
                "data has {} padding bytes, sent {}",
                d.p.len(),
                want.p.len()
            ))
        }
    };
    res.verify
        .absorb(topics::check_topics(c, &names, &starts, &mut ranges, c.readback, check).await);
    topics::delete_topics(c, &names).await;
    Ok(vec![res])
}
