//! `rtt`: append-to-delivery latency. One writer appends timestamped records to one stream at
//! a fixed rate; a long-poll reader and an SSE reader tail it, each on its own connection, and
//! time every record from the moment its append was sent to the moment it was parsed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::watch;

use super::live::{Connected, Decoder, Tail, Writer, long_poll_reader, sse_reader, writer};
use super::{Clock, Common, cleanup};
use crate::client::{Conn, create_stream, head_tail};
use crate::procstat::Window;
use crate::stats::{Counters, Errors, Lat, Progress, ScenarioResult, Verify, add_errors};
use crate::verify::{Ledger, check_offsets, check_readback};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct RttArgs {
    /// Appends per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Bytes per record (at least 32).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// Waits for a reader task; after `stop` has been set, gives it `grace` to finish.
pub async fn join_reader(
    name: &str,
    h: tokio::task::JoinHandle<Tail>,
    grace: Duration,
    want: u64,
    v: &mut Verify,
    errors: &mut Errors,
) -> Option<Tail> {
    let abort = h.abort_handle();
    match tokio::time::timeout(grace, h).await {
        Ok(Ok(t)) => {
            add_errors(errors, &t.errors);
            if t.dec.next_seq != want || t.dec.disorder != 0 {
                v.fail(format!(
                    "{name}: received {} of {want} records, {} out of order",
                    t.dec.delivered, t.dec.disorder
                ));
            }
            Some(t)
        }
        _ => {
            abort.abort();
            v.fail(format!(
                "{name}: did not receive all {want} records within {}s",
                grace.as_secs()
            ));
            None
        }
    }
}

pub async fn run(c: &Common, a: &RttArgs) -> Result<Vec<ScenarioResult>> {
    let path = c.stream("rtt", 0);
    let mut conn = Conn::new(&c.target);
    let start = create_stream(&mut conn, &path, "text/plain").await?;
    let (stop_tx, stop_rx) = watch::channel(u64::MAX);

    // Readers first: the long-poll is parked and the SSE response open before the first append.
    let measure_at = Instant::now() + Duration::from_millis(300) + c.warmup;
    let connected = Arc::new(AtomicUsize::new(0));
    let sse = tokio::spawn(sse_reader(
        c.target.clone(),
        path.clone(),
        start.clone(),
        Decoder::new(a.size, measure_at),
        stop_rx.clone(),
        Some(Connected {
            count: connected.clone(),
            permit: None,
        }),
    ));
    let lp = tokio::spawn(long_poll_reader(
        c.target.clone(),
        path.clone(),
        start.clone(),
        Decoder::new(a.size, measure_at),
        stop_rx,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while connected.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep_until((measure_at - c.warmup).into()).await;

    let clock = Clock::start(c);
    let counters = Arc::new(Counters::default());
    let w = Writer::spawn(writer(
        c.target.clone(),
        Ledger::new(path.clone(), start),
        a.size,
        a.rate,
        clock,
        counters.clone(),
    ));
    tokio::time::sleep_until(clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start("rtt".into(), c.duration, c.progress, counters);
    let w = w.await?;
    drop(progress);
    let usage = window.map(|win| win.finish(w.measured));
    stop_tx.send_replace(w.records);

    let mut res = ScenarioResult::new("rtt", "", serde_json::to_value(a)?);
    res.server = usage;
    res.totals(c.duration, w.measured, w.measured_bytes);
    let mut errors = w.errors.clone();
    let mut v = Verify::new();
    let grace = Duration::from_secs(15);
    let lp = join_reader(
        "long-poll reader",
        lp,
        grace,
        w.records,
        &mut v,
        &mut errors,
    )
    .await;
    let sse = join_reader("SSE reader", sse, grace, w.records, &mut v, &mut errors).await;
    for (name, t) in [("long-poll", &lp), ("sse", &sse)] {
        let mut lat = Lat::default();
        if let Some(t) = t {
            t.dec.record_into(&mut lat);
        }
        res.add_latency(name, &lat);
    }
    res.add_latency("append", &w.lat);
    if v.ok {
        v.pass(format!(
            "long-poll and SSE readers each received all {} records in order",
            w.records
        ));
    }
    if let Some(t) = sse.as_ref().filter(|t| t.reconnects > 0) {
        v.pass(format!("SSE reader reconnected {} times", t.reconnects));
    }
    let end = head_tail(&mut conn, &path).await.unwrap_or_default();
    let ledgers = [w.ledger];
    v.absorb(check_offsets(
        &ledgers,
        &[end],
        a.size.max(32) as u64,
        c.strict_offsets,
    ));
    if c.readback {
        v.absorb(check_readback(&mut conn, &ledgers, false).await);
    }
    res.errors = errors;
    res.verify = v;
    cleanup(c, &[path]).await;
    Ok(vec![res])
}
