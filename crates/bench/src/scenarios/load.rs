//! The request loop of the load scenarios: W workers, each with one keep-alive connection and
//! one request in flight, closed loop (as fast as answers come) or open loop on a fixed
//! schedule, where latency counts from the scheduled send time whenever the generator is late
//! (no coordinated omission). What a request is, and how its answer is checked, is the
//! scenario's [`Op`]; this module only times, counts and merges.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::{Clock, due, wait_due};
use crate::client::{BAD_ANSWER, Conn, Failure, Target};
use crate::stats::{Counters, Errors, Lat, Verify, add_errors};

/// What one successful request did.
pub struct Done {
    /// Units of work it carried: appends, records written or read.
    pub units: u64,
    /// Payload bytes it carried.
    pub bytes: u64,
}

/// One worker's requests. Request `i` (0, 1, 2, ... counting failed ones) is sent at `sent`;
/// an answer that is not what was asked for must be a [`Failure::Bad`], so that a broken
/// server cannot produce a good number.
pub trait Op: Send + 'static {
    fn call(
        &mut self,
        conn: &mut Conn,
        i: u64,
        sent: Instant,
    ) -> impl Future<Output = Result<Done, Failure>> + Send;
}

/// The counts of one worker, or of all of them merged.
#[derive(Default)]
pub struct Tally {
    /// Latency of the successful requests sent in the measured window.
    pub lat: Lat,
    pub errors: Errors,
    /// Successful requests sent in the measured window, their units and bytes.
    pub requests: u64,
    pub units: u64,
    pub bytes: u64,
    /// Successful requests in all, warm-up included.
    pub acked: u64,
    /// The first bad answers, verbatim.
    pub bad: Vec<String>,
}

impl Tally {
    pub fn merge(&mut self, o: &Tally) {
        self.lat.merge(&o.lat);
        add_errors(&mut self.errors, &o.errors);
        self.requests += o.requests;
        self.units += o.units;
        self.bytes += o.bytes;
        self.acked += o.acked;
        for b in &o.bad {
            if self.bad.len() < 5 {
                self.bad.push(b.clone());
            }
        }
    }

    /// A verification line: no request was answered wrongly.
    pub fn check_answers(&self, what: &str) -> Verify {
        let mut v = Verify::new();
        let n = self.errors.get(BAD_ANSWER).copied().unwrap_or(0);
        v.check(
            n == 0,
            format!(
                "{} {what} checked, {n} wrong (status, seqs, count)",
                self.acked + n
            ),
        );
        for b in &self.bad {
            v.fail(b.clone());
        }
        v
    }
}

/// The schedule of a run.
#[derive(Clone)]
pub struct Load {
    pub clock: Clock,
    /// Open loop: total requests per second over all workers; `None`: closed loop.
    pub rate: Option<f64>,
    pub counters: Arc<Counters>,
}

/// Runs `op` as worker `w` of `n` until the clock's end, on its own connection.
pub async fn run_worker<O: Op>(
    target: &Target,
    load: &Load,
    w: usize,
    n: usize,
    mut op: O,
) -> (Tally, O) {
    let mut conn = Conn::new(target);
    let mut t = Tally::default();
    let mut i = 0u64;
    loop {
        let sent = match load.rate {
            Some(r) => match due(&load.clock, r, w, n, i) {
                Some(at) => wait_due(at).await,
                None => break,
            },
            None => {
                let now = Instant::now();
                if now >= load.clock.end {
                    break;
                }
                now
            }
        };
        let r = op.call(&mut conn, i, sent).await;
        i += 1;
        match r {
            Ok(d) => {
                t.acked += 1;
                if sent >= load.clock.measure {
                    t.lat.record(sent.elapsed());
                    t.requests += 1;
                    t.units += d.units;
                    t.bytes += d.bytes;
                    load.counters.op();
                }
            }
            Err(f) => {
                if let Failure::Bad(e) = &f
                    && t.bad.len() < 5
                {
                    t.bad.push(e.clone());
                }
                *t.errors.entry(f.key()).or_default() += 1;
                load.counters.error();
            }
        }
    }
    (t, op)
}

/// Starts one task per op (worker `w` gets `ops[w]`).
pub fn spawn<O: Op>(
    target: &Target,
    load: &Load,
    ops: Vec<O>,
) -> Vec<tokio::task::JoinHandle<(Tally, O)>> {
    let n = ops.len();
    ops.into_iter()
        .enumerate()
        .map(|(w, op)| {
            let (target, load) = (target.clone(), load.clone());
            tokio::spawn(async move { run_worker(&target, &load, w, n, op).await })
        })
        .collect()
}

/// Waits for the workers; their tallies merged, and their ops in worker order.
pub async fn join<O>(handles: Vec<tokio::task::JoinHandle<(Tally, O)>>) -> Result<(Tally, Vec<O>)> {
    let mut all = Tally::default();
    let mut ops = Vec::with_capacity(handles.len());
    for h in handles {
        let (t, op) = h.await?;
        all.merge(&t);
        ops.push(op);
    }
    Ok((all, ops))
}
