//! `subs`: Durable Streams `__ds` pull-wake subscriptions (PROTOCOL.md sections 6-7). N
//! streams `bench-subs-<run>/s<i>` are linked to one pull-wake subscription (pattern
//! `bench-subs-<run>/*`, wake stream `bench-subs-<run>-wake`); an open-loop appender writes
//! `--rate` appends per second to random streams from `--connections` connections while
//! `--workers` workers claim the subscription's wakes and ack every stream a claim lists at
//! its tail (see `subs_worker`).
//!
//! The wake latency of an append is the time from its send to the answer of the first claim
//! that covers it (the claim lists its stream with a `tail_offset` at or past the append's
//! end). One claim covers many appends: with one wake in flight per subscription, appends
//! arriving while a wake is held wait for the next. After the measured window the appender
//! stops and the workers drain; then every append must have been covered by a claim, the
//! claims' generations must be distinct, the wake stream's events in generation order, and
//! every link of the subscription acked at its stream's tail.
//!
//! Reported: `ops/s` and `cpu µs/op` of the table count appends; the `wake` row is the wake
//! latency; the verification lines (and `params` in `--json`) add wakes (successful claims)
//! per second, appends and streams per wake, the 409s, and the server's CPU per wake. The
//! appender's timer ticks every millisecond, so above ~1000 appends/s appends go out in 1 ms
//! bursts and one wake covers a burst: wakes/s then stays near 1000 whatever the rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use http::Method;
use serde::Serialize;
use tokio::sync::watch;

use super::load::{self, Done, Load, Op};
use super::subs_check::{SubState, check_state, match_wakes};
use super::subs_worker::{self, APPENDS_DONE, DRAINED, Mark, Plan, RUNNING, Worker};
use super::{Clock, Common, byte_payload};
use crate::client::{Conn, Failure, REQUEST_TIMEOUT, Target, create_stream, header};
use crate::procstat::{Window, cpu_seconds};
use crate::stats::{Counters, Lat, Progress, ScenarioResult, Verify, add_errors};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct SubsArgs {
    /// Streams linked to the subscription [default: 10000; 500 with --quick].
    #[arg(long)]
    pub streams: Option<usize>,
    /// Appends per second (open loop) to random streams [default: 2000; 500 with --quick].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Workers claiming and acking, each on its own connections.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Appender connections, each with one append in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// Payload bytes per append.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// `lease_ttl_ms` of the subscription.
    #[arg(long, default_value_t = 30_000)]
    pub lease_ttl_ms: u64,
    /// Idle workers retry the claim every this many ms instead of long-polling the wake
    /// stream (0: long-poll).
    #[arg(long, default_value_t = 0)]
    pub poll_ms: u64,
    /// Streams created at the same time during setup.
    #[arg(long, default_value_t = 32)]
    pub create_parallelism: usize,
    /// Give up draining this many seconds after the appender stopped.
    #[arg(long, default_value_t = 60.0)]
    pub drain_secs: f64,
}

/// One appender connection: appends to random streams, keeping each append's end offset.
struct AppendOp {
    rng: u64,
    pub paths: Arc<Vec<String>>,
    body: Bytes,
    log: Vec<Mark>,
}

/// splitmix64: a small, fast generator, enough to spread appends over streams.
fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Op for AppendOp {
    async fn call(&mut self, conn: &mut Conn, _i: u64, sent: Instant) -> Result<Done, Failure> {
        let si = (next_rand(&mut self.rng) % self.paths.len() as u64) as usize;
        let ctype = [("content-type", "application/octet-stream")];
        let r = conn.call(
            Method::POST,
            &self.paths[si],
            &ctype,
            self.body.clone(),
            &[200, 204],
            REQUEST_TIMEOUT,
        );
        let (h, _) = r.await?;
        let end = header(&h, "stream-next-offset")
            .ok_or_else(|| Failure::Bad("append answered without Stream-Next-Offset".into()))?;
        self.log.push((si as u32, end.to_string(), sent));
        Ok(Done {
            units: 1,
            bytes: self.body.len() as u64,
        })
    }
}

/// Creates the streams, `par` at a time; returns their tails.
async fn create_all(target: &Target, paths: &Arc<Vec<String>>, par: usize) -> Result<Vec<String>> {
    let par = par.clamp(1, paths.len());
    let tasks: Vec<_> = (0..par)
        .map(|k| {
            let (target, paths) = (target.clone(), paths.clone());
            tokio::spawn(async move {
                let mut conn = Conn::new(&target);
                let mut out = Vec::new();
                for i in (k..paths.len()).step_by(par) {
                    out.push((
                        i,
                        create_stream(&mut conn, &paths[i], "application/octet-stream").await?,
                    ));
                }
                anyhow::Ok(out)
            })
        })
        .collect();
    let mut tails = vec![String::new(); paths.len()];
    for t in tasks {
        for (i, tail) in t.await?? {
            tails[i] = tail;
        }
    }
    Ok(tails)
}

/// Deletes the streams, `par` at a time (best effort).
async fn delete_all(target: &Target, paths: Vec<String>, par: usize) {
    let paths = Arc::new(paths);
    let par = par.clamp(1, paths.len().max(1));
    let tasks: Vec<_> = (0..par)
        .map(|k| {
            let (target, paths) = (target.clone(), paths.clone());
            tokio::spawn(async move {
                let mut conn = Conn::new(&target);
                for p in paths.iter().skip(k).step_by(par) {
                    let ok = [200, 204, 404];
                    let r = conn.call(Method::DELETE, p, &[], Bytes::new(), &ok, REQUEST_TIMEOUT);
                    let _ = r.await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// The names of one run.
pub struct Names {
    /// Root-relative directory of the streams: stream `i` is `<dir>/s<i>`.
    pub dir: String,
    paths: Arc<Vec<String>>,
    pub wake_rel: String,
    pub wake_path: String,
    pub sub_path: String,
}

pub async fn run(c: &Common, a: &SubsArgs, quick: bool) -> Result<Vec<ScenarioResult>> {
    let n = a.streams.unwrap_or(if quick { 500 } else { 10_000 }).max(1);
    let dir = format!("bench-subs-{}", c.run_id);
    let wake_rel = format!("{dir}-wake");
    let names = Names {
        paths: Arc::new(
            (0..n)
                .map(|i| c.target.stream(&format!("{dir}/s{i}")))
                .collect(),
        ),
        wake_path: c.target.stream(&wake_rel),
        sub_path: format!("{}/__ds/subscriptions/{dir}", c.target.base),
        wake_rel,
        dir,
    };
    let mut conn = Conn::new(&c.target);
    let t0 = Instant::now();
    let res = match create_all(&c.target, &names.paths, a.create_parallelism).await {
        Ok(tails) => run_sub(c, a, quick, &names, tails, t0.elapsed()).await,
        Err(e) => Err(e),
    };
    if !c.keep {
        let ok = [200, 204, 404];
        let del = conn.call(
            Method::DELETE,
            &names.sub_path,
            &[],
            Bytes::new(),
            &ok,
            REQUEST_TIMEOUT,
        );
        let _ = del.await;
        let mut all = names.paths.to_vec();
        all.push(names.wake_path.clone());
        delete_all(&c.target, all, a.create_parallelism).await;
    }
    res.map(|r| vec![r])
}

/// Creates the wake stream and the subscription, then runs the load and the workers.
async fn run_sub(
    c: &Common,
    a: &SubsArgs,
    quick: bool,
    names: &Names,
    tails: Vec<String>,
    create_time: Duration,
) -> Result<ScenarioResult> {
    let n = names.paths.len();
    let rate = a.rate.unwrap_or(if quick { 500.0 } else { 2000.0 });
    let mut conn = Conn::new(&c.target);
    let wake_start = create_stream(&mut conn, &names.wake_path, "application/json").await?;
    let spec = serde_json::json!({
        "type": "pull-wake",
        "pattern": format!("{}/*", names.dir),
        "wake_stream": names.wake_rel,
        "lease_ttl_ms": a.lease_ttl_ms,
    });
    let t = Instant::now();
    let (_, b) = conn
        .call(
            Method::PUT,
            &names.sub_path,
            &[("content-type", "application/json")],
            Bytes::from(spec.to_string()),
            &[201],
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| anyhow!("PUT {}: {e}", names.sub_path))?;
    let sub_create = t.elapsed();
    let linked = serde_json::from_slice::<SubState>(&b)?.streams.len();
    if linked != n {
        bail!("the new subscription links {linked} streams, not the {n} created");
    }

    let (phase, _) = watch::channel(RUNNING);
    let plan = Arc::new(Plan {
        target: c.target.clone(),
        ack_target: Target {
            authorization: None,
            ..c.target.clone()
        },
        claim_path: format!("{}/claim", names.sub_path),
        ack_path: format!("{}/ack", names.sub_path),
        wake_path: names.wake_path.clone(),
        wake_start,
        prefix: format!("{}/s", names.dir),
        streams: n,
        poll: (a.poll_ms > 0).then(|| Duration::from_millis(a.poll_ms)),
        phase,
    });
    let workers: Vec<_> = (0..a.workers.max(1))
        .map(|i| tokio::spawn(subs_worker::worker(plan.clone(), i)))
        .collect();
    let load = Load {
        clock: Clock::start(c),
        rate: Some(rate),
        counters: Arc::new(Counters::default()),
    };
    let ops = (0..a.connections.max(1))
        .map(|w| AppendOp {
            rng: 0x5eed ^ (w as u64).wrapping_mul(0x1000_0000_01b3),
            paths: names.paths.clone(),
            body: byte_payload(a.size.max(1)),
            log: Vec::new(),
        })
        .collect();
    let tasks = load::spawn(&c.target, &load, ops);
    tokio::time::sleep_until(load.clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let me = std::process::id();
    let bench_cpu0 = cpu_seconds(me);
    let progress = Progress::start("subs".into(), c.duration, c.progress, load.counters.clone());
    let (tally, ops) = load::join(tasks).await?;
    let usage = window.map(|w| w.finish(tally.requests));
    let window_s = usage.as_ref().map_or(0.0, |u| u.wall_s);
    let bench_cpu = bench_cpu0
        .zip(cpu_seconds(me))
        .map(|(x, y)| (y - x) * 100.0 / (Instant::now() - load.clock.measure).as_secs_f64());
    drop(progress);

    plan.phase.send_replace(APPENDS_DONE);
    let t = Instant::now();
    let mut rx = plan.phase.subscribe();
    let drain = Duration::from_secs_f64(a.drain_secs.max(1.0));
    let drained = tokio::time::timeout(drain, rx.wait_for(|p| *p == DRAINED))
        .await
        .is_ok();
    plan.phase.send_replace(DRAINED);
    let mut ws = Vec::new();
    for h in workers {
        ws.push(h.await?);
    }
    let drain_time = t.elapsed();

    let appends: Vec<Mark> = ops.into_iter().flat_map(|o| o.log).collect();
    let claims: Vec<Mark> = ws.iter().flat_map(|w| w.covered.iter().cloned()).collect();
    let (measure, end) = (load.clock.measure, load.clock.end);
    let cov = match_wakes(n, &appends, &claims, measure, end);

    let label = format!("streams={n} rate={rate} workers={}", a.workers.max(1));
    let mut res = ScenarioResult::new("subs", &label, serde_json::to_value(a)?);
    res.totals(c.duration, tally.requests, tally.bytes);
    res.add_latency("wake", &cov.lat);
    res.add_latency("append", &tally.lat);
    let (mut claim_lat, mut ack_lat) = (Lat::default(), Lat::default());
    for w in &ws {
        claim_lat.merge(&w.claim_lat);
        ack_lat.merge(&w.ack_lat);
        add_errors(&mut res.errors, &w.errors);
    }
    res.add_latency("claim", &claim_lat);
    res.add_latency("ack", &ack_lat);
    add_errors(&mut res.errors, &tally.errors);

    let in_window = |t: &Instant| *t >= measure && *t < end;
    let wakes = ws
        .iter()
        .flat_map(|w| &w.claim_times)
        .filter(|t| in_window(t))
        .count() as u64;
    let all_claims: usize = ws.iter().map(|w| w.claim_times.len()).sum();
    let sum = |f: fn(&Worker) -> u64| ws.iter().map(f).sum::<u64>();
    let dur = c.duration.as_secs_f64();
    let p = &mut res.params;
    p["streams"] = n.into();
    p["rate"] = rate.into();
    p["create_s"] = create_time.as_secs_f64().into();
    p["subscription_create_ms"] = (sub_create.as_secs_f64() * 1e3).into();
    p["appends_per_s"] = (tally.requests as f64 / dur).into();
    p["wakes"] = wakes.into();
    p["wakes_per_s"] = (wakes as f64 / dur).into();
    p["appends_per_wake"] = (appends.len() as f64 / all_claims.max(1) as f64).into();
    p["streams_per_wake"] = (claims.len() as f64 / all_claims.max(1) as f64).into();
    p["claims_total"] = all_claims.into();
    p["next_wake"] = sum(|w| w.next_wakes).into();
    p["no_pending_work"] = sum(|w| w.no_pending).into();
    p["already_claimed"] = sum(|w| w.already_claimed).into();
    p["wake_stream_long_polls"] = sum(|w| w.long_polls).into();
    p["drain_s"] = drain_time.as_secs_f64().into();
    p["bench_cpu_pct"] = bench_cpu.into();
    if let Some(u) = &usage {
        p["server_cpu_pct"] = u.cpu_pct.into();
        p["cpu_us_per_wake"] = (u.cpu_s * 1e6 / wakes.max(1) as f64).into();
        p["cpu_us_per_append"] = u.cpu_us_per_op.into();
        p["cpu_window_s"] = window_s.into();
    }
    res.server = usage;

    let mut v = Verify::new();
    v.pass(summary(&res.params, res.server.is_some()));
    v.check(
        drained,
        format!(
            "drained {:.2} s after the last append (the workers saw no pending work)",
            drain_time.as_secs_f64()
        ),
    );
    v.check(
        cov.uncovered == 0,
        format!(
            "{} appends, each covered by a claim ({} not{})",
            appends.len(),
            cov.uncovered,
            cov.first_uncovered
                .map_or(String::new(), |f| format!(", first {f}"))
        ),
    );
    let mut gens: Vec<u64> = ws
        .iter()
        .flat_map(|w| w.generations.iter().copied())
        .collect();
    gens.sort_unstable();
    let before = gens.len();
    gens.dedup();
    v.check(
        gens.len() == before,
        format!(
            "{before} claims, each of its own generation ({} repeated)",
            before - gens.len()
        ),
    );
    let disorder = sum(|w| w.event_disorder);
    v.check(
        disorder == 0,
        format!("wake events read by the workers in generation order ({disorder} not)"),
    );
    for b in ws.iter().flat_map(|w| &w.bad).chain(&tally.bad).take(5) {
        v.fail(b.clone());
    }
    v.absorb(check_state(&mut conn, names, &tails, &appends, &gens).await);
    res.verify = v;
    Ok(res)
}

/// The table's extra line: rates, claims and server CPU per wake.
fn summary(p: &serde_json::Value, cpu: bool) -> String {
    let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
    let mut s = format!(
        "{:.0} appends/s, {:.0} wakes/s (claims), {:.1} appends and {:.1} streams per wake; {} next_wake, {} NO_PENDING_WORK, {} ALREADY_CLAIMED",
        f("appends_per_s"),
        f("wakes_per_s"),
        f("appends_per_wake"),
        f("streams_per_wake"),
        f("next_wake"),
        f("no_pending_work"),
        f("already_claimed"),
    );
    if cpu {
        s += &format!(
            "; server CPU {:.0}%, {:.1} µs per wake, {:.1} µs per append",
            f("server_cpu_pct"),
            f("cpu_us_per_wake"),
            f("cpu_us_per_append"),
        );
    }
    s + &format!("; bench CPU {:.0}%", f("bench_cpu_pct"))
}
