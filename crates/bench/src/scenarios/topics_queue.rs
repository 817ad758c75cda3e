//! `topics-queue`: queue throughput (the queue test). One fresh queue topic
//! (`PUT /v0/topics/:q {"type":"queue"}`) in one durability class is filled with `--jobs` jobs
//! (`{"j":N,"p":"xxx…"}` of `--size` bytes, 1000 to a write, so that job `N` has seq
//! `start+1+N`), then `--workers` workers, each on its own connection, loop: claim up to
//! `--claim-max` jobs (`POST /v0/topics/:q/claim`), then ack exactly those seqs with their lease
//! ids (`POST /v0/topics/:q/ack`), until a claim returns nothing and `GET` shows no job ready
//! or in flight.
//!
//! Throughput is the jobs acked over the wall time from the first claim to the last ack.
//! Every answer is checked (claim: `count` = the jobs, at most `max`, each delivered for the
//! first time, at the seq its index says, with its data; ack: every seq acked, none skipped);
//! afterwards every job must have been claimed exactly once and acked exactly once, and `GET`
//! must show the queue empty (`count` 0, nothing ready, in flight or dead-lettered).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use super::Common;
use super::topics::{self, CLASSES, JSON, topic_name, topic_path};
use crate::client::{BAD_ANSWER, Conn, Failure, REQUEST_TIMEOUT, Target};
use crate::procstat::{Window, cpu_seconds};
use crate::stats::{Errors, Lat, ScenarioResult, Verify, add_errors};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct TopicsQueueArgs {
    /// Jobs written to the queue before the workers start.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u64,
    /// Bytes of each job's data (JSON `{"j":N,"p":"xxx…"}`, at least 24).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Workers, each on its own connection with one request in flight.
    #[arg(long, default_value_t = 100)]
    pub workers: usize,
    /// `max` of each claim (the server clamps at 1000).
    #[arg(long, default_value_t = 8)]
    pub claim_max: u64,
    /// `lease_ms` of each claim.
    #[arg(long, default_value_t = 30_000)]
    pub lease_ms: u64,
    /// `wait_ms` of each claim (a long-poll while nothing is ready).
    #[arg(long, default_value_t = 0)]
    pub wait_ms: u64,
    /// Durability class of the queue.
    #[arg(long, default_value = "disk", value_parser = clap::builder::PossibleValuesParser::new(CLASSES))]
    pub durability: String,
    /// Give up draining after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout_secs: f64,
}

/// The answer to a claim; strings are borrowed from the body.
#[derive(Deserialize)]
struct Claimed<'a> {
    #[serde(borrow)]
    claimed: Vec<Job<'a>>,
    count: u64,
    ready: u64,
}

#[derive(Deserialize)]
struct Job<'a> {
    #[serde(rename = "$seq")]
    seq: u64,
    lease_id: &'a str,
    deliveries: u64,
    #[serde(borrow)]
    data: JobData<'a>,
}

#[derive(Deserialize)]
struct JobData<'a> {
    j: u64,
    p: &'a str,
}

#[derive(Deserialize)]
struct Acked {
    acked: u64,
    skipped: Vec<u64>,
}

/// `GET /v0/topics/:q`, the parts checked.
#[derive(Debug, Deserialize)]
struct QueueState {
    head_seq: u64,
    count: u64,
    queue: Counts,
}

#[derive(Debug, Deserialize)]
struct Counts {
    ready: u64,
    in_flight: u64,
    dead_lettered: u64,
}

/// One request with a JSON body: the body of a 200 (or 201) answer.
async fn call(conn: &mut Conn, m: Method, path: &str, body: Bytes) -> Result<Bytes, Failure> {
    let r = conn.call(m, path, &[JSON], body, &[200, 201], REQUEST_TIMEOUT);
    r.await.map(|(_, b)| b)
}

async fn queue_state(conn: &mut Conn, name: &str) -> Result<QueueState, Failure> {
    let path = format!("{}?touch=false", topic_path(name));
    let b = call(conn, Method::GET, &path, Bytes::new()).await?;
    serde_json::from_slice(&b).map_err(|e| Failure::Bad(format!("GET {path}: {e}")))
}

/// Creates queue `name` in `class` and returns its head seq.
async fn create_queue(conn: &mut Conn, name: &str, class: &str) -> Result<u64> {
    let path = topic_path(name);
    let body = format!("{{\"type\":\"queue\",\"durability\":\"{class}\"}}");
    let b = call(conn, Method::PUT, &path, Bytes::from(body))
        .await
        .map_err(|e| anyhow!("PUT {path}: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&b)?;
    let cfg = &v["config"];
    if cfg["type"] != "queue" || cfg["durability"] != class {
        bail!("PUT {path}: asked for a {class} queue, got config {cfg}");
    }
    let s = queue_state(conn, name).await.map_err(|e| anyhow!("{e}"))?;
    Ok(s.head_seq)
}

/// Writes the jobs; returns (seconds, server CPU µs per job).
async fn fill(c: &Common, a: &TopicsQueueArgs, name: &str, start: u64) -> Result<(f64, f64)> {
    let mut conn = Conn::new(&c.target);
    let path = format!("{}?return_seqs=false", topic_path(name));
    let t0 = Instant::now();
    let window = Window::begin(c.server_pid);
    let mut j = 0;
    while j < a.jobs {
        let n = 1000.min(a.jobs - j);
        let data: Vec<String> = (j..j + n)
            .map(|i| topics::data_json(&format!("\"j\":{i}"), a.size))
            .collect();
        let body = topics::records_body(data.iter().map(String::as_str));
        let ack = topics::write(&mut conn, &path, body, n, false)
            .await
            .map_err(|e| anyhow!("filling {name}: {e}"))?;
        if ack.first_seq != start + 1 + j {
            bail!("filling {name}: job {j} got seq {}", ack.first_seq);
        }
        j += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = window.map_or(0.0, |w| w.finish(a.jobs).cpu_us_per_op);
    let s = queue_state(&mut conn, name)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if s.count != a.jobs || s.queue.ready != a.jobs || s.queue.in_flight != 0 {
        bail!("after filling {} jobs, GET {name} shows {s:?}", a.jobs);
    }
    Ok((secs, cpu))
}

/// What one worker did.
#[derive(Default)]
struct Worker {
    claim_lat: Lat,
    ack_lat: Lat,
    claims: u64,
    empty_claims: u64,
    acks: u64,
    /// Seqs claimed, and seqs the acks reported done.
    claimed: Vec<u64>,
    acked: Vec<u64>,
    /// Claimed jobs delivered before (`deliveries` > 1), or not at their seq or with other data.
    redelivered: u64,
    misplaced: u64,
    first_claim: Option<Instant>,
    last_ack: Option<Instant>,
    errors: Errors,
    bad: Vec<String>,
}

impl Worker {
    fn fail(&mut self, f: Failure) {
        if let Failure::Bad(e) = &f
            && self.bad.len() < 3
        {
            self.bad.push(e.clone());
        }
        *self.errors.entry(f.key()).or_default() += 1;
    }
}

/// What the workers share.
struct Plan {
    target: Target,
    name: String,
    start: u64,
    /// Bytes of each job's data.
    size: usize,
    max: u64,
    /// The claim's body up to its node.
    claim_body: String,
    deadline: Instant,
    acked: Arc<AtomicU64>,
}

async fn worker(p: Arc<Plan>, node: String) -> Worker {
    let mut w = Worker::default();
    let mut conn = Conn::new(&p.target);
    let claim_path = format!("{}/claim", topic_path(&p.name));
    let ack_path = format!("{}/ack", topic_path(&p.name));
    let claim_body = Bytes::from(format!("{}\"{node}\"}}", p.claim_body));
    loop {
        if Instant::now() >= p.deadline {
            w.bad
                .push(format!("{node}: gave up draining at the timeout"));
            break;
        }
        let sent = Instant::now();
        w.first_claim.get_or_insert(sent);
        let body = match call(&mut conn, Method::POST, &claim_path, claim_body.clone()).await {
            Ok(b) => b,
            Err(f) => {
                w.fail(f);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let took = sent.elapsed();
        w.claims += 1;
        let c: Claimed = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                w.fail(Failure::Bad(format!("claim: {e}")));
                continue;
            }
        };
        let n = c.claimed.len() as u64;
        if c.count != n || n > p.max {
            let why = format!("claim: count {} for {n} jobs (max {})", c.count, p.max);
            w.fail(Failure::Bad(why));
        }
        if n == 0 {
            w.empty_claims += 1;
            if c.ready == 0 {
                match queue_state(&mut conn, &p.name).await {
                    Ok(s) if s.queue.ready == 0 && s.queue.in_flight == 0 => break,
                    Ok(_) => {}
                    Err(f) => w.fail(f),
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        w.claim_lat.record(took);
        let (mut seqs, mut ids) = (String::new(), String::new());
        for (i, job) in c.claimed.iter().enumerate() {
            w.claimed.push(job.seq);
            if job.deliveries != 1 {
                w.redelivered += 1;
            }
            // `data_json` pads `{"j":N,"p":""}` (13 bytes and N's digits) to the size.
            let digits = job.data.j.checked_ilog10().unwrap_or(0) as usize + 1;
            let pad = p.size.saturating_sub(13 + digits);
            if job.seq != p.start + 1 + job.data.j || job.data.p.len() != pad {
                w.misplaced += 1;
            }
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(seqs, "{sep}{}", job.seq);
            let _ = write!(ids, "{sep}\"{}\"", job.lease_id);
        }
        let ack = format!("{{\"node\":\"{node}\",\"seqs\":[{seqs}],\"lease_ids\":[{ids}]}}");
        let sent = Instant::now();
        let body = match call(&mut conn, Method::POST, &ack_path, Bytes::from(ack)).await {
            Ok(b) => b,
            Err(f) => {
                w.fail(f);
                continue;
            }
        };
        let now = Instant::now();
        w.ack_lat.record(now - sent);
        w.acks += 1;
        match serde_json::from_slice::<Acked>(&body) {
            Ok(a) => {
                let done = c.claimed.iter().map(|j| j.seq);
                w.acked.extend(done.filter(|s| !a.skipped.contains(s)));
                if a.acked != n || !a.skipped.is_empty() {
                    let why = format!(
                        "ack of {n} jobs: acked {}, skipped {:?}",
                        a.acked, a.skipped
                    );
                    w.fail(Failure::Bad(why));
                }
                w.last_ack = Some(now);
                p.acked.fetch_add(a.acked, Ordering::Relaxed);
            }
            Err(e) => w.fail(Failure::Bad(format!("ack: {e}"))),
        }
    }
    w
}

/// How often each seq of the run (`start+1..=start+jobs`) occurs in `seqs`: the seqs never
/// seen, those seen more than once, and the seqs outside the run.
fn once(seqs: impl Iterator<Item = u64>, start: u64, jobs: u64) -> (usize, usize, u64) {
    let mut n = vec![0u8; jobs as usize];
    let mut outside = 0;
    for s in seqs {
        match s.checked_sub(start + 1).filter(|&i| i < jobs) {
            Some(i) => n[i as usize] = n[i as usize].saturating_add(1),
            None => outside += 1,
        }
    }
    let never = n.iter().filter(|&&x| x == 0).count();
    (never, n.iter().filter(|&&x| x > 1).count(), outside)
}

pub async fn run(c: &Common, a: &TopicsQueueArgs) -> Result<Vec<ScenarioResult>> {
    let name = topic_name(c, "queue", 0);
    let mut conn = Conn::new(&c.target);
    let start = create_queue(&mut conn, &name, &a.durability).await?;
    let res = run_queue(c, a, &name, start).await;
    topics::delete_topics(c, std::slice::from_ref(&name)).await;
    res.map(|r| vec![r])
}

async fn run_queue(
    c: &Common,
    a: &TopicsQueueArgs,
    name: &str,
    start: u64,
) -> Result<ScenarioResult> {
    let (fill_s, fill_cpu) = fill(c, a, name, start).await?;
    let max = a.claim_max.clamp(1, 1000);
    let acked = Arc::new(AtomicU64::new(0));
    let plan = Arc::new(Plan {
        target: c.target.clone(),
        name: name.to_string(),
        start,
        size: a.size,
        max,
        claim_body: format!(
            "{{\"max\":{max},\"lease_ms\":{},\"wait_ms\":{},\"node\":",
            a.lease_ms, a.wait_ms
        ),
        deadline: Instant::now() + Duration::from_secs_f64(a.timeout_secs.max(1.0)),
        acked: acked.clone(),
    });
    let me = std::process::id();
    let bench_cpu0 = cpu_seconds(me);
    let window = Window::begin(c.server_pid);
    let progress = (!c.progress.is_zero()).then(|| {
        let (every, acked, jobs) = (c.progress, acked.clone(), a.jobs);
        tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let n = acked.load(Ordering::Relaxed);
                let s = t0.elapsed().as_secs_f64();
                eprintln!("  [topics-queue] {s:.0}s {n} of {jobs} jobs acked");
            }
        })
    });
    let handles: Vec<_> = (0..a.workers.max(1))
        .map(|i| tokio::spawn(worker(plan.clone(), format!("w{i}"))))
        .collect();
    let mut ws = Vec::with_capacity(handles.len());
    for h in handles {
        ws.push(h.await?);
    }
    if let Some(p) = progress {
        p.abort();
    }
    let n_acked = acked.load(Ordering::Relaxed);
    let usage = window.map(|w| w.finish(n_acked));
    let first = ws.iter().filter_map(|w| w.first_claim).min();
    let last = ws.iter().filter_map(|w| w.last_ack).max();
    let wall = match (first, last) {
        (Some(f), Some(l)) if l > f => l - f,
        _ => Duration::ZERO,
    };
    let bench_cpu = bench_cpu0
        .zip(cpu_seconds(me))
        .map(|(a, b)| (b - a) * 100.0 / wall.as_secs_f64().max(1e-9));

    let mut res = ScenarioResult::new(
        "topics-queue",
        &format!("{} workers={} max={max}", a.durability, a.workers),
        serde_json::to_value(a)?,
    );
    let (mut claim_lat, mut ack_lat) = (Lat::default(), Lat::default());
    let (mut claims, mut empty, mut acks) = (0, 0, 0);
    for w in &ws {
        claim_lat.merge(&w.claim_lat);
        ack_lat.merge(&w.ack_lat);
        add_errors(&mut res.errors, &w.errors);
        (claims, empty, acks) = (claims + w.claims, empty + w.empty_claims, acks + w.acks);
    }
    res.totals(wall, n_acked, n_acked * a.size as u64);
    res.add_latency("claim", &claim_lat);
    res.add_latency("ack", &ack_lat);
    res.server = usage;
    let p = &mut res.params;
    p["jobs_per_s"] = res.ops_per_s.into();
    p["wall_s"] = wall.as_secs_f64().into();
    p["claims"] = claims.into();
    p["empty_claims"] = empty.into();
    p["acks"] = acks.into();
    p["jobs_per_claim"] = (n_acked as f64 / (claims - empty).max(1) as f64).into();
    p["fill_s"] = fill_s.into();
    p["fill_jobs_per_s"] = (a.jobs as f64 / fill_s.max(1e-9)).into();
    p["fill_cpu_us_per_job"] = fill_cpu.into();
    p["bench_cpu_pct"] = bench_cpu.into();
    if let Some(u) = &res.server {
        p["cpu_us_per_job"] = u.cpu_us_per_op.into();
    }
    let mut conn = Conn::new(&c.target);
    res.verify = verify(&mut conn, a, name, start, &ws).await;
    let wrong = res.errors.get(BAD_ANSWER).copied().unwrap_or(0);
    res.verify.check(
        wrong == 0,
        format!("{claims} claims ({empty} empty) and {acks} acks checked, {wrong} wrong"),
    );
    for b in ws.iter().flat_map(|w| &w.bad).take(5) {
        res.verify.fail(b.clone());
    }
    Ok(res)
}

/// Every job claimed once with `deliveries` 1, acked once, and the queue empty afterwards.
async fn verify(
    conn: &mut Conn,
    a: &TopicsQueueArgs,
    name: &str,
    start: u64,
    ws: &[Worker],
) -> Verify {
    let mut v = Verify::new();
    let jobs = a.jobs;
    let redelivered: u64 = ws.iter().map(|w| w.redelivered).sum();
    let misplaced: u64 = ws.iter().map(|w| w.misplaced).sum();
    let claimed = ws.iter().flat_map(|w| w.claimed.iter().copied());
    let (never, twice, outside) = once(claimed, start, jobs);
    v.check(
        never == 0 && twice == 0 && outside == 0 && redelivered == 0,
        format!(
            "{jobs} jobs claimed: each exactly once ({never} never, {twice} more than once, {outside} unknown seqs), deliveries 1 for every claimed job ({redelivered} redelivered)"
        ),
    );
    v.check(
        misplaced == 0,
        format!("every claimed job at its seq with its data ({misplaced} not)"),
    );
    let acked = ws.iter().flat_map(|w| w.acked.iter().copied());
    let (never, twice, outside) = once(acked, start, jobs);
    v.check(
        never == 0 && twice == 0 && outside == 0,
        format!(
            "{jobs} jobs acked: each exactly once ({never} lost, {twice} more than once, {outside} unknown seqs)"
        ),
    );
    match queue_state(conn, name).await {
        Ok(s) => {
            let q = &s.queue;
            let empty = q.ready == 0 && q.in_flight == 0 && q.dead_lettered == 0;
            v.check(
                empty && s.count == 0 && s.head_seq == start + jobs,
                format!(
                    "GET afterwards: count {}, head_seq {} (want {}), ready {}, in_flight {}, dead_lettered {}",
                    s.count, s.head_seq, start + jobs, q.ready, q.in_flight, q.dead_lettered
                ),
            )
        }
        Err(e) => v.fail(format!("GET {name}: {e}")),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_each_seq() {
        assert_eq!(once([11, 12, 12, 20].into_iter(), 10, 4), (2, 1, 1));
        assert_eq!(once([12, 11].into_iter(), 10, 2), (0, 0, 0));
    }

    #[test]
    fn claims_parse_and_padding_matches() {
        let d = topics::data_json("\"j\":4321", 256);
        let body = format!(
            "{{\"claimed\":[{{\"$seq\":4322,\"lease_id\":\"lease_00000000000000ff\",\"deadline\":1,\"$ts\":2,\"deliveries\":1,\"data\":{d}}}],\"count\":1,\"ready\":0}}"
        );
        let c: Claimed = serde_json::from_str(&body).expect("parses");
        let j = &c.claimed[0];
        assert_eq!(
            (j.seq, j.data.j, j.lease_id),
            (4322, 4321, "lease_00000000000000ff")
        );
        assert_eq!(j.data.p.len(), 256 - 13 - 4);
    }
}
