//! `topics-routers`: router fan-out (issue 10). For each K, one fresh source topic, K fresh
//! destination topics in the same durability class with one router each from the source
//! (`PUT /v0/routers/:r`), one writer posting one-record writes to the source at a fixed rate,
//! and K readers (one per destination, each on its own connection) long-polling
//! `POST /v0/topics/<dest>/diff` with `wait_ms` from their cursor. A record's data carries
//! its index and send time (`{"i":N,"t_ns":T,"p":"…"}`), so every reader times every copy from
//! the source write's send time to its arrival and checks that its destination gets each
//! record exactly once, in order, record `N` at seq `start+1+N`. Afterwards every destination's
//! `head_seq` and every router's `forwarded_total` must equal the source writes.
//!
//! WAL cost: `riffle_wal_bytes_total` of `GET /metrics` just before the first write and after
//! the readers got the last copy, divided by the source writes. Copies have no WAL record of
//! their own, so the figure should not grow with K; each step shows its ratio to the K=0 step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bytes::Bytes;
use http::Method;
use serde::Serialize;
use tokio::sync::watch;

use super::live::now_ns;
use super::topics::{self, CLASSES, DiffAnswer, JSON, Timed, topic_name, topic_path};
use super::{Clock, Common};
use crate::client::{BAD_ANSWER, Conn, Failure, REQUEST_TIMEOUT, Target};
use crate::procstat::Window;
use crate::stats::{Counters, Errors, Lat, NamedLatency, Progress, ScenarioResult};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct TopicsRoutersArgs {
    /// Router counts K, one measured step each (0: the source alone, the WAL baseline).
    #[arg(long, short = 'k', value_delimiter = ',', default_value = "0,1,10,100")]
    pub routers: Vec<usize>,
    /// One-record writes per second to the source.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Bytes of each record's data (JSON `{"i":N,"t_ns":T,"p":"xxx…"}`, at least 48).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Measured seconds per step (default: --duration).
    #[arg(long)]
    pub step_secs: Option<f64>,
    /// Durability class of the source and destination topics.
    #[arg(long, default_value = "disk", value_parser = clap::builder::PossibleValuesParser::new(CLASSES))]
    pub durability: String,
    /// The readers' long-poll wait (`wait_ms` of each diff).
    #[arg(long, default_value_t = 5000)]
    pub wait_ms: u64,
    /// Records per diff read.
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
}

/// How long readers may take, after the last write, to get every copy.
const GRACE: Duration = Duration::from_secs(20);

/// What one reader saw of its destination.
#[derive(Default)]
struct Copies {
    /// The index expected next (one past the highest received).
    next: u64,
    received: u64,
    /// Indexes skipped when a later one arrived.
    lost: u64,
    /// Indexes at or below one already received (duplicates or late arrivals).
    repeated: u64,
    /// Records whose index `i` was not at seq `start + 1 + i`.
    misplaced: u64,
    tombstones: u64,
    /// `(index, µs from the write's send time to arrival)` of every copy received.
    lat: Vec<(u64, u64)>,
    errors: Errors,
    polls: u64,
}

impl Copies {
    fn take(&mut self, rec: &topics::Rec<Timed>, start: u64, now: u64) {
        let i = rec.data.i;
        if rec.seq != start + 1 + i {
            self.misplaced += 1;
        }
        if i < self.next {
            self.repeated += 1;
        } else {
            self.lost += i - self.next;
            self.next = i + 1;
        }
        self.received += 1;
        self.lat.push((i, now.saturating_sub(rec.data.t_ns) / 1000));
    }

    /// Records lost (skipped, or never received of the `n` written), and what was wrong
    /// unless every record came exactly once, in order, at its seq.
    fn problem(&self, n: u64) -> (u64, Option<String>) {
        let lost = self.lost + n.saturating_sub(self.next);
        let ok = lost == 0 && self.repeated == 0 && self.misplaced == 0;
        let ok = ok && self.tombstones == 0 && self.received == n;
        let why = format!(
            "received {} of {n} copies, {lost} lost, {} repeated, {} at the wrong seq, {} tombstones",
            self.received, self.repeated, self.misplaced, self.tombstones
        );
        (lost, (!ok).then_some(why))
    }
}

/// Long-polls `dest` (holding `start` records before the step) by diff until it has received
/// `stop` records (the writer's count, once known) or `GRACE` after that is known. Counts
/// itself in `connected` after its first answer.
async fn reader(
    target: Target,
    dest: String,
    start: u64,
    (wait_ms, limit): (u64, u64),
    mut stop: watch::Receiver<u64>,
    connected: Arc<AtomicUsize>,
) -> Copies {
    let mut conn = Conn::new(&target);
    let path = format!("{}/diff", topic_path(&dest));
    let mut c = Copies::default();
    let (mut from, mut first, mut deadline) = (start, true, None);
    loop {
        let want = *stop.borrow();
        if want != u64::MAX {
            let d = *deadline.get_or_insert_with(|| Instant::now() + GRACE);
            if c.next >= want || Instant::now() >= d {
                break;
            }
        }
        let wait = if first { 0 } else { wait_ms };
        let body = format!(
            "{{\"from_seq\":{from},\"limit\":{limit},\"wait_ms\":{wait},\"include_meta\":false}}"
        );
        let answer = tokio::select! {
            r = call(&mut conn, Method::POST, &path, body, &[200]) => r,
            _ = stop.changed() => {
                conn.reset();
                continue;
            }
        };
        let now = now_ns();
        let d = match answer.map(|b| serde_json::from_slice::<DiffAnswer<Timed>>(&b)) {
            Ok(Ok(d)) if d.next_from_seq >= from => d,
            other => {
                let key = other.err().map_or(BAD_ANSWER.into(), |f| f.key());
                *c.errors.entry(key).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        c.polls += 1;
        if first {
            first = false;
            connected.fetch_add(1, Ordering::Relaxed);
        }
        if d.tombstone.is_some() {
            c.tombstones += 1;
        }
        for rec in &d.records {
            c.take(rec, start, now);
        }
        from = d.next_from_seq;
    }
    c
}

/// One request with a JSON body (none when empty): the body of an answer with a status in `ok`.
async fn call(
    conn: &mut Conn,
    method: Method,
    path: &str,
    body: String,
    ok: &[u16],
) -> Result<Bytes, Failure> {
    let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[JSON] };
    let answer = conn.call(
        method,
        path,
        headers,
        Bytes::from(body),
        ok,
        REQUEST_TIMEOUT,
    );
    answer.await.map(|(_, b)| b)
}

/// `riffle_wal_bytes_total` of the server's Prometheus endpoint; `None` when it has none.
async fn wal_bytes(conn: &mut Conn) -> Option<u64> {
    let b = call(conn, Method::GET, "/metrics", String::new(), &[200])
        .await
        .ok()?;
    std::str::from_utf8(&b)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("riffle_wal_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
}

async fn put_router(conn: &mut Conn, name: &str, source: &str, dest: &str) -> Result<()> {
    let body = format!("{{\"source\":\"{source}\",\"dest\":\"{dest}\",\"create_dest\":false}}");
    let path = format!("/v0/routers/{name}");
    let answer = call(conn, Method::PUT, &path, body, &[200, 201]).await;
    answer.map(drop).map_err(|e| anyhow!("PUT {path}: {e}"))
}

/// The topics and routers of one step.
struct Names {
    source: String,
    dests: Vec<String>,
    routers: Vec<String>,
}

impl Names {
    fn new(c: &Common, step: usize, k: usize) -> Self {
        let base = topic_name(c, "routers", step);
        Self {
            source: format!("{base}-src"),
            dests: (0..k).map(|j| format!("{base}-d{j}")).collect(),
            routers: (0..k).map(|j| format!("{base}-r{j}")).collect(),
        }
    }
}

pub async fn run(c: &Common, a: &TopicsRoutersArgs) -> Result<Vec<ScenarioResult>> {
    now_ns(); // the clock's epoch, before any send time is taken
    let mut step = c.clone();
    if let Some(s) = a.step_secs {
        step.duration = Duration::from_secs_f64(s);
    }
    let mut out = Vec::new();
    for (i, &k) in a.routers.iter().enumerate() {
        let names = Names::new(c, i, k);
        let res = run_step(&step, a, k, &names).await;
        // Deleting the source deletes its routers.
        let mut all = vec![names.source.clone()];
        all.extend(names.dests.iter().cloned());
        topics::delete_topics(c, &all).await;
        out.push(res?);
    }
    let per_write = |r: &ScenarioResult| r.params["wal_bytes_per_write"].as_f64();
    let base = out.iter().find(|r| r.params["k"] == 0).and_then(per_write);
    for r in &mut out {
        if let (Some(b), Some(x)) = (base, per_write(r))
            && b > 0.0
        {
            r.params["wal_ratio_to_k0"] = (x / b).into();
            r.verify.pass(format!(
                "WAL bytes per source write {x:.1}: {:.3}x the K=0 step's {b:.1}",
                x / b
            ));
        }
    }
    Ok(out)
}

async fn run_step(
    c: &Common,
    a: &TopicsRoutersArgs,
    k: usize,
    names: &Names,
) -> Result<ScenarioResult> {
    let mut conn = Conn::new(&c.target);
    let src = &names.source;
    let start = topics::create_topic(&mut conn, src, &a.durability)
        .await?
        .head_seq;
    let mut starts = Vec::with_capacity(k);
    for (d, r) in names.dests.iter().zip(&names.routers) {
        starts.push(
            topics::create_topic(&mut conn, d, &a.durability)
                .await?
                .head_seq,
        );
        put_router(&mut conn, r, src, d).await?;
    }

    let (stop_tx, stop_rx) = watch::channel(u64::MAX);
    let connected = Arc::new(AtomicUsize::new(0));
    let t_connect = Instant::now();
    let readers: Vec<_> = names
        .dests
        .iter()
        .zip(&starts)
        .map(|(d, &s)| {
            tokio::spawn(reader(
                c.target.clone(),
                d.clone(),
                s,
                (a.wait_ms, a.limit),
                stop_rx.clone(),
                connected.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while connected.load(Ordering::Relaxed) < k && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n_connected = connected.load(Ordering::Relaxed);
    let connect_s = t_connect.elapsed().as_secs_f64();
    if c.progress > Duration::ZERO {
        eprintln!("  [topics-routers K={k}] {n_connected} readers polling in {connect_s:.2}s");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let wal0 = wal_bytes(&mut conn).await;
    let clock = Clock::start(c);
    let counters = Arc::new(Counters::default());
    let op = topics::TimedWrites::new(src, start, a.size);
    let writer = op.spawn(c.target.clone(), a.rate, clock, counters.clone());
    tokio::time::sleep_until(clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start(
        format!("topics-routers K={k}"),
        c.duration,
        c.progress,
        counters,
    );
    let w = writer.await?;
    drop(progress);
    let usage = window.map(|win| win.finish(0));
    stop_tx.send_replace(w.records);

    let mut errors = w.errors.clone();
    let mut copies = Vec::with_capacity(k);
    // Readers give up GRACE after the last write, once their poll in flight ends.
    let join_by = Instant::now() + GRACE + Duration::from_millis(a.wait_ms) + GRACE / 2;
    for h in readers {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(join_by.into(), h).await {
            Ok(Ok(cp)) => {
                crate::stats::add_errors(&mut errors, &cp.errors);
                copies.push(Some(cp));
            }
            _ => {
                abort.abort();
                copies.push(None);
            }
        }
    }
    let wal1 = wal_bytes(&mut conn).await;

    // Records sent in the warm-up are the first `warm` indexes.
    let warm = w.records - w.measured;
    let mut lat = Lat::default();
    let mut delivered = 0u64;
    let mut polls = 0u64;
    for cp in copies.iter().flatten() {
        polls += cp.polls;
        for &(i, us) in &cp.lat {
            if i >= warm && i < w.records {
                lat.record(Duration::from_micros(us));
                delivered += 1;
            }
        }
    }

    // The source: the same check as every timed writer's.
    let mut v = topics::check_timed_writes(&c.target, src, start, &w).await;
    let n = w.records;
    for b in &w.bad {
        v.fail(format!("writer: {b}"));
    }
    if k > 0 {
        let (mut complete, mut lost, mut bad) = (0, 0, Vec::new());
        let rows = names.dests.iter().zip(&names.routers).zip(&starts);
        for (((d, r), &s), cp) in rows.zip(&copies) {
            let (l, why) = cp
                .as_ref()
                .map_or((n, Some("reader did not finish".into())), |cp| {
                    cp.problem(n)
                });
            lost += l;
            let head = topics::topic_state(&mut conn, d)
                .await
                .ok()
                .map(|t| t.head_seq);
            let route = format!("/v0/routers/{r}");
            let fwd = (call(&mut conn, Method::GET, &route, String::new(), &[200])
                .await
                .ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["forwarded_total"].as_u64());
            match why {
                _ if head != Some(s + n) || fwd != Some(n) => bad.push(format!(
                    "{d}: GET head_seq {head:?}, want {}; {r} forwarded_total {fwd:?}",
                    s + n
                )),
                Some(why) => bad.push(format!("{d}: {why}")),
                None => complete += 1,
            }
        }
        v.check(
            complete == k,
            format!(
                "{complete} of {k} dests got all {n} records exactly once in order, record i at seq start+1+i, GET head_seq = start+{n}, router forwarded_total = {n} ({lost} lost)"
            ),
        );
        for b in bad.iter().take(5) {
            v.fail(b.clone());
        }
    }
    let wal = wal0.zip(wal1).map(|(a, b)| b.saturating_sub(a));
    let wal_per_write = wal.map(|b| b as f64 / n.max(1) as f64);
    match wal {
        Some(b) => v.pass(format!(
            "WAL: {b} bytes over {n} source writes (riffle_wal_bytes_total of GET /metrics)"
        )),
        None => v.pass("WAL: the server has no riffle_wal_bytes_total at GET /metrics"),
    }

    let mut params = serde_json::to_value(a)?;
    params["k"] = k.into();
    params["readers_polling"] = n_connected.into();
    params["connect_s"] = connect_s.into();
    params["records_written"] = n.into();
    params["writes_per_s"] = (w.measured as f64 / c.duration.as_secs_f64()).into();
    params["diff_polls"] = polls.into();
    params["wal_bytes"] = wal.into();
    params["wal_bytes_per_write"] = wal_per_write.into();
    if let Some(u) = &usage {
        params["cpu_us_per_write"] = (u.cpu_s * 1e6 / w.measured.max(1) as f64).into();
    }
    let mut res = ScenarioResult::new("topics-routers", &format!("K={k}"), params);
    res.totals(c.duration, delivered, delivered * a.size as u64);
    res.add_latency("delivery", &lat);
    res.latency.push(NamedLatency {
        name: "write".into(),
        summary: w.lat.summary(),
    });
    res.server = usage.map(|u| u.per_op(delivered));
    res.errors = errors;
    res.verify = v;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(c: &mut Copies, start: u64, seq_and_index: &[(u64, u64)]) {
        for &(seq, i) in seq_and_index {
            let rec = topics::Rec {
                seq,
                data: Timed { i, t_ns: 0 },
            };
            c.take(&rec, start, 1000);
        }
    }

    #[test]
    fn copies_are_judged() {
        let mut c = Copies::default();
        got(&mut c, 5, &[(6, 0), (7, 1), (8, 2)]);
        assert_eq!(c.problem(3), (0, None));
        assert_eq!(c.problem(4).0, 1, "one never arrived");
        let mut c = Copies::default();
        got(&mut c, 0, &[(1, 0), (2, 2), (3, 1)]);
        assert!(c.problem(3).1.is_some(), "a gap, a late one, wrong seqs");
        assert_eq!((c.lost, c.repeated, c.misplaced), (1, 1, 2));
        let mut c = Copies::default();
        got(&mut c, 0, &[(1, 0), (2, 0)]);
        assert_eq!((c.repeated, c.misplaced, c.received), (1, 1, 2));
    }
}
