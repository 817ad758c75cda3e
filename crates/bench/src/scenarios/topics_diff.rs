//! `topics-diff`: deep diff reads. One topic is filled with M records (`data` is
//! `{"i":SEQ,"p":"xxx…"}` of `--size` bytes, written 1000 to a request on one connection so
//! that record `i` has seq `i`), then C connections read `limit` records from random cursors
//! over the whole topic for the duration. Every answer must hold exactly `limit` records with
//! seqs `from+1..=from+limit` in order, each with `data.i` equal to its seq.
//!
//! `--topic NAME` reads (and fills, if it holds fewer than M records) a named topic and keeps
//! it; with `--fill-only` the scenario stops after the fill, so a restart can come between
//! filling and reading (what bench/topics.sh does to measure the server's RSS after recovery).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::load::{self, Done, Load, Op};
use super::topics::{self, CLASSES, topic_name, topic_path};
use super::{Clock, Common};
use crate::client::{Conn, Failure};
use crate::procstat::Window;
use crate::stats::{Counters, Lat, Progress, ScenarioResult};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct TopicsDiffArgs {
    /// Records in the topic (filled first).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Bytes of each record's data (at least 24).
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Durability class of the topic, when this run creates it.
    #[arg(long, default_value = "fsync", value_parser = clap::builder::PossibleValuesParser::new(CLASSES))]
    pub durability: String,
    /// Records per diff read (the server clamps at 1000).
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
    /// Reading connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 4)]
    pub connections: usize,
    /// Records per write while filling.
    #[arg(long, default_value_t = 1000)]
    pub fill_batch: usize,
    /// Use (and fill, if needed) this topic and keep it; default: a new topic, deleted after.
    #[arg(long)]
    pub topic: Option<String>,
    /// Fill the topic, then stop.
    #[arg(long)]
    pub fill_only: bool,
}

/// What the reads check of a record's data.
#[derive(Deserialize)]
struct Indexed {
    i: u64,
}

/// Fills `name` (holding `head` records) up to `a.records`; returns the fill's result row.
async fn fill(c: &Common, a: &TopicsDiffArgs, name: &str, mut head: u64) -> Result<ScenarioResult> {
    let mut conn = Conn::new(&c.target);
    let path = format!("{}?return_seqs=false", topic_path(name));
    let batch = a.fill_batch.clamp(1, 10_000) as u64;
    let t0 = Instant::now();
    let window = Window::begin(c.server_pid);
    let mut lat = Lat::default();
    let mut bytes = 0u64;
    let start = head;
    let mut last_note = t0;
    while head < a.records {
        let n = batch.min(a.records - head);
        let data: Vec<String> = (head + 1..=head + n)
            .map(|s| topics::data_json(&format!("\"i\":{s}"), a.size))
            .collect();
        bytes += data.iter().map(|d| d.len() as u64).sum::<u64>();
        let body = topics::records_body(data.iter().map(String::as_str));
        let sent = Instant::now();
        let ack = topics::write(&mut conn, &path, body, n, false)
            .await
            .map_err(|e| anyhow!("filling {name}: {e}"))?;
        lat.record(sent.elapsed());
        if ack.first_seq != head + 1 {
            bail!(
                "filling {name}: the write after seq {head} got seqs {}..={} (is something else writing to it?)",
                ack.first_seq,
                ack.last_seq
            );
        }
        head = ack.last_seq;
        if c.progress > Duration::ZERO && last_note.elapsed() >= c.progress {
            last_note = Instant::now();
            eprintln!("  [topics-diff] filled {head} of {} records", a.records);
        }
    }
    let elapsed = t0.elapsed();
    let mut res = ScenarioResult::new("topics-diff", "fill", serde_json::to_value(a)?);
    res.server = window.map(|w| w.finish(head - start));
    res.totals(elapsed, head - start, bytes);
    res.add_latency("fill-write", &lat);
    let state = topics::topic_state(&mut conn, name).await?;
    res.verify.check(
        state.head_seq == a.records && state.count == a.records,
        format!(
            "filled {} records in {:.1}s: GET shows head_seq {} count {} (want {})",
            head - start,
            elapsed.as_secs_f64(),
            state.head_seq,
            state.count,
            a.records
        ),
    );
    Ok(res)
}

/// splitmix64: a small, good-enough generator for cursors.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

struct DiffOp {
    name: Arc<str>,
    /// Cursors are drawn from `0..=top` so that every read finds `limit` records.
    top: u64,
    limit: u64,
    rng: Rng,
}

impl Op for DiffOp {
    async fn call(&mut self, conn: &mut Conn, _i: u64, _sent: Instant) -> Result<Done, Failure> {
        let from = self.rng.next() % (self.top + 1);
        let (d, len) =
            topics::diff::<Indexed>(conn, &self.name, from, self.limit, Some(self.limit)).await?;
        if let Some(r) = d.records.iter().find(|r| r.data.i != r.seq) {
            return Err(Failure::Bad(format!(
                "diff {} from {from}: record {} holds data.i {}",
                self.name, r.seq, r.data.i
            )));
        }
        Ok(Done {
            units: d.records.len() as u64,
            bytes: len as u64,
        })
    }
}

pub async fn run(c: &Common, a: &TopicsDiffArgs) -> Result<Vec<ScenarioResult>> {
    let mut out = Vec::new();
    let name = a.topic.clone().unwrap_or_else(|| topic_name(c, "diff", 0));
    let mut conn = Conn::new(&c.target);
    let state = match topics::find_topic(&mut conn, &name).await? {
        Some(s) => s,
        None => topics::create_topic(&mut conn, &name, &a.durability).await?,
    };
    if state.earliest_seq > 1 {
        bail!(
            "topic {name} starts at seq {}: its records must start at 1",
            state.earliest_seq
        );
    }
    if state.head_seq < a.records {
        out.push(fill(c, a, &name, state.head_seq).await?);
    }
    if a.fill_only {
        return Ok(out);
    }
    let head = topics::topic_state(&mut conn, &name).await?.head_seq;
    let limit = a.limit.clamp(1, 1000);
    if head < limit {
        bail!("topic {name} holds {head} records, fewer than --limit {limit}");
    }

    let load = Load {
        clock: Clock::start(c),
        rate: None,
        counters: Arc::new(Counters::default()),
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let name_arc: Arc<str> = Arc::from(name.as_str());
    let ops = (0..a.connections.max(1))
        .map(|w| DiffOp {
            name: name_arc.clone(),
            top: head - limit,
            limit,
            rng: Rng(seed ^ (w as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
        })
        .collect();
    let tasks = load::spawn(&c.target, &load, ops);
    tokio::time::sleep_until(load.clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start("topics-diff".into(), c.duration, c.progress, load.counters);
    let (tally, _) = load::join(tasks).await?;
    drop(progress);
    let usage = window.map(|w| w.finish(tally.units));

    let mut params = serde_json::to_value(a)?;
    params["topic"] = name.clone().into();
    params["head_seq"] = head.into();
    params["requests"] = tally.requests.into();
    params["requests_per_s"] = (tally.requests as f64 / c.duration.as_secs_f64()).into();
    let label = format!("limit={limit} of {head}");
    let mut res = ScenarioResult::new("topics-diff", &label, params);
    res.server = usage;
    // Ops are records read; bytes are whole response bodies.
    res.totals(c.duration, tally.units, tally.bytes);
    res.add_latency("diff", &tally.lat);
    res.verify = tally.check_answers("diff reads");
    res.errors = tally.errors;
    out.push(res);
    if a.topic.is_none() {
        topics::delete_topics(c, &[name]).await;
    }
    Ok(out)
}
