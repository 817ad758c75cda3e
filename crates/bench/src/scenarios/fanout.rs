//! `fanout`: one stream, one writer at a fixed rate, K SSE subscribers (one connection each).
//! Reports delivery latency over all subscribers and the server's memory, for each K.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::live::{Connected, Decoder, Tail, Writer, sse_reader, writer};
use super::rtt::join_reader;
use super::{Clock, Common, cleanup};
use crate::client::{Conn, Target, create_stream, head_tail};
use crate::procstat::{Window, rss_kib};
use crate::stats::{Counters, Lat, NamedLatency, Progress, ScenarioResult, Verify};
use crate::verify::{Ledger, check_offsets};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct FanoutArgs {
    /// Subscriber counts K, one measured step each.
    #[arg(
        long,
        short = 'k',
        value_delimiter = ',',
        default_value = "1,10,100,1000"
    )]
    pub subscribers: Vec<usize>,
    /// Appends per second by the writer.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Bytes per record (at least 32).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Measured seconds per step (default: --duration).
    #[arg(long)]
    pub step_secs: Option<f64>,
    /// Subscribers connecting at the same time.
    #[arg(long, default_value_t = 64)]
    pub connect_parallelism: usize,
}

/// What a fan-out step needs of the server's face: the stream fan-out here, the topics watch
/// fan-out in `topics_watch`. The step itself (connect K subscribers, write at a fixed rate,
/// time every delivery, check that every subscriber got every record in order) is shared.
pub trait Feed {
    /// Starts one subscriber, which signals `connected` once it is subscribed and stops when
    /// it has received `stop` records.
    fn subscribe(
        &self,
        dec: Decoder,
        stop: watch::Receiver<u64>,
        connected: Connected,
    ) -> JoinHandle<Tail>;
    /// Starts the writer.
    fn write(&self, clock: Clock, counters: Arc<Counters>) -> JoinHandle<Writer>;
    /// Checks the stream or topic against what the writer had acknowledged.
    fn check(&self, w: Writer) -> impl Future<Output = Verify>;
}

struct StreamFeed {
    target: Target,
    path: String,
    start: String,
    size: usize,
    rate: f64,
    strict: bool,
}

impl Feed for StreamFeed {
    fn subscribe(
        &self,
        dec: Decoder,
        stop: watch::Receiver<u64>,
        connected: Connected,
    ) -> JoinHandle<Tail> {
        tokio::spawn(sse_reader(
            self.target.clone(),
            self.path.clone(),
            self.start.clone(),
            dec,
            stop,
            Some(connected),
        ))
    }

    fn write(&self, clock: Clock, counters: Arc<Counters>) -> JoinHandle<Writer> {
        Writer::spawn(writer(
            self.target.clone(),
            Ledger::new(self.path.clone(), self.start.clone()),
            self.size,
            self.rate,
            clock,
            counters,
        ))
    }

    async fn check(&self, w: Writer) -> Verify {
        let mut conn = Conn::new(&self.target);
        let end = head_tail(&mut conn, &self.path).await.unwrap_or_default();
        check_offsets(&[w.ledger], &[end], self.size.max(32) as u64, self.strict)
    }
}

pub async fn run(c: &Common, a: &FanoutArgs) -> Result<Vec<ScenarioResult>> {
    let mut out = Vec::new();
    for (i, &k) in a.subscribers.iter().enumerate() {
        let path = c.stream("fanout", i);
        let mut conn = Conn::new(&c.target);
        let start = create_stream(&mut conn, &path, "text/plain").await?;
        let feed = StreamFeed {
            target: c.target.clone(),
            path: path.clone(),
            start,
            size: a.size,
            rate: a.rate,
            strict: c.strict_offsets,
        };
        let res = run_step(
            &step_common(c, a),
            "fanout",
            a,
            serde_json::to_value(a)?,
            k.max(1),
            a.size.max(32) as u64,
            &feed,
        )
        .await;
        cleanup(c, &[path]).await;
        out.push(res?);
    }
    Ok(out)
}

/// The settings of one step: its own measured seconds when `--step-secs` is given.
pub fn step_common(c: &Common, a: &FanoutArgs) -> Common {
    let mut step = c.clone();
    if let Some(s) = a.step_secs {
        step.duration = Duration::from_secs_f64(s);
    }
    step
}

/// One step: `k` subscribers of `feed`, records of `record_bytes`; `params` are the scenario's
/// own, to which the step's figures are added.
pub async fn run_step(
    c: &Common,
    scenario: &str,
    a: &FanoutArgs,
    mut params: serde_json::Value,
    k: usize,
    record_bytes: u64,
    feed: &impl Feed,
) -> Result<ScenarioResult> {
    let rss_before = c.server_pid.and_then(rss_kib);
    let (stop_tx, stop_rx) = watch::channel(u64::MAX);
    let connected = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(a.connect_parallelism.max(1)));
    let t_connect = Instant::now();
    // Decoders time records sent after the warm-up, which begins once all are connected;
    // the exact instant is not known yet, so they time everything and the warm-up records
    // are dropped from the histogram by sequence number below.
    let mut subs = Vec::with_capacity(k);
    for _ in 0..k {
        // A subscriber that never connects keeps its permit: do not wait on it forever.
        let permit = tokio::time::timeout(Duration::from_secs(30), gate.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        subs.push(feed.subscribe(
            Decoder::new(a.size, t_connect),
            stop_rx.clone(),
            Connected {
                count: connected.clone(),
                permit,
            },
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < k && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n_connected = connected.load(Ordering::Relaxed);
    let connect_s = t_connect.elapsed().as_secs_f64();
    if c.progress > Duration::ZERO {
        eprintln!("  [{scenario} K={k}] {n_connected} subscribers connected in {connect_s:.2}s");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let clock = Clock::start(c);
    let counters = Arc::new(Counters::default());
    let w = feed.write(clock, counters.clone());
    tokio::time::sleep_until(clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start(
        format!("{scenario} K={k}"),
        c.duration,
        c.progress,
        counters,
    );
    let w = w.await?;
    drop(progress);
    let usage = window.map(|win| win.finish(0));
    stop_tx.send_replace(w.records);
    // Records sent in the warm-up are the first `warm` sequence numbers.
    let warm = w.records - w.measured;

    let mut v = Verify::new();
    let mut errors = w.errors.clone();
    let mut lat = Lat::default();
    let (mut delivered, mut bytes, mut complete, mut reconnects) = (0u64, 0u64, 0usize, 0u64);
    let grace = Duration::from_secs(20);
    let mut quiet = Verify::new();
    for h in subs {
        if let Some(t) =
            join_reader("subscriber", h, grace, w.records, &mut quiet, &mut errors).await
        {
            reconnects += t.reconnects;
            let timed = t.dec.lat_us.len() as u64;
            // Drop the warm-up records (they come first) from the timings.
            let skip = warm.saturating_sub(t.dec.delivered - timed) as usize;
            for &us in t.dec.lat_us.iter().skip(skip) {
                lat.record(Duration::from_micros(us));
            }
            delivered += timed - skip as u64;
            bytes += (timed - skip as u64) * record_bytes;
            if t.dec.next_seq == w.records && t.dec.disorder == 0 {
                complete += 1;
            }
        }
    }
    let usage = usage.map(|u| u.per_op(delivered));
    v.check(
        complete == k,
        format!(
            "{complete} of {k} subscribers received all {} records in order",
            w.records
        ),
    );
    if !quiet.ok {
        v.fail(quiet.checks.first().cloned().unwrap_or_default());
    }
    for b in &w.bad {
        v.fail(format!("writer: {b}"));
    }
    let (append_lat, records) = (w.lat.summary(), w.records);
    v.absorb(feed.check(w).await);

    params["k"] = k.into();
    params["connected"] = n_connected.into();
    params["connect_s"] = connect_s.into();
    params["sse_reconnects"] = reconnects.into();
    params["records_written"] = records.into();
    params["rss_before_subscribers_mib"] = rss_before.map(|kib| kib as f64 / 1024.0).into();
    let mut res = ScenarioResult::new(scenario, &format!("K={k}"), params);
    res.totals(c.duration, delivered, bytes);
    res.add_latency("delivery", &lat);
    res.latency.push(NamedLatency {
        name: "append".into(),
        summary: append_lat,
    });
    res.server = usage;
    res.errors = errors;
    res.verify = v;
    Ok(res)
}
