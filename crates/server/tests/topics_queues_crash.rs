//! Kill -9 harness for topics queues: a producer writes jobs (idempotency keys) to a `disk`
//! queue with `max_deliveries: 3` and a `dead_letter` topic while workers claim them, ack most
//! and drop the rest (never acked, so they are redelivered when their 300 ms lease ends); the
//! server is killed with SIGKILL mid-way, restarted on the same directory, and the workers run
//! until the queue is empty.
//!
//! Then: every job whose write was acknowledged was acked by a worker or is in the dead-letter
//! topic exactly once, with its data, tag and meta and the `$dead_letter_*` meta; no job was
//! seen more than 3 times, no claim said `deliveries` > 3, no two claims of a job said the same
//! `deliveries` (the counts hold across the kill), and no job came back after a confirmed ack.
//! A second test checks that with `leases_durable: true` a lease survives kill -9 until its
//! deadline (and without it, the job is ready at once).
//!
//! `RIFFLE_CRASH_ROUNDS` sets the number of kills (default 2). Built from the topics
//! reference and Riffle's documented decisions only.

mod common;

use common::{Options, Server, TempDir};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BATCHES: usize = 40;
const BATCH: usize = 4;
const WORKERS: usize = 3;
const DLQ: &str = "dlq";

async fn start(data: &Path) -> Server {
    let opts = Options::default()
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", data.to_str().expect("utf-8 path"));
    let srv = Server::start_with(opts).await;
    // Recovery may still run after /healthz answers: wait for readiness.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = srv.client.get(srv.url("/v0/ready")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            return srv;
        }
        assert!(Instant::now() < deadline, "not ready after 20 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn now_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    now.as_millis() as u64
}

/// `METHOD base+path` with an optional JSON body: the status and JSON answer, or `Err` when
/// the server did not answer (it died).
async fn call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut r = client.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        r = r
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = r.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// `call` on a live server, asserting 200.
async fn ok(srv: &Server, method: Method, path: &str, body: Option<Value>) -> Value {
    let r = call(&srv.client, &srv.base, method, path, body).await;
    let (status, v) = r.expect("the server answers");
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// `PUT /v0/topics/:q` with `cfg`, asserting 201.
async fn create(srv: &Server, q: &str, cfg: Value) {
    let path = format!("/v0/topics/{q}");
    let r = call(&srv.client, &srv.base, Method::PUT, &path, Some(cfg)).await;
    let (status, v) = r.expect("PUT");
    assert_eq!(status, 201, "{v}");
}

/// What the producer and the workers of one queue know.
#[derive(Default)]
struct Log {
    /// Job id → its seq, for each job whose write was acknowledged.
    written: HashMap<u64, u64>,
    /// Job id → the `deliveries` of each claim of it a worker got.
    seen: HashMap<u64, Vec<u64>>,
    /// Job id → the `deliveries` of the claim a confirmed ack acknowledged.
    acked: HashMap<u64, u64>,
    /// Jobs whose ack got no answer (the server died): acked or not.
    maybe_acked: HashSet<u64>,
}

type Shared = Arc<Mutex<Log>>;

/// Job `id`'s record.
fn job(round: usize, id: u64) -> Value {
    let data = json!({ "id": id, "round": round });
    json!({ "data": data, "tag": format!("job-{id}"), "meta": { "p": "producer" } })
}

fn job_id(round: usize, batch: usize, k: usize) -> u64 {
    (round * 100_000 + batch * BATCH + k) as u64
}

/// Poison jobs are never acked: they end in the dead-letter topic.
fn poison(id: u64) -> bool {
    id % 10 == 3
}

/// Whether a worker acks job `id` on its `deliveries`-th delivery: poison jobs never, others
/// about 70% of the time.
fn acks(id: u64, deliveries: u64) -> bool {
    let h = (id ^ (deliveries << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    !poison(id) && h % 10 >= 3
}

/// Write batches from `next` on (each under its own idempotency key, so the batch in flight at
/// a kill is written once when retried) until all are written, `stop` or the server dies.
async fn producer(
    base: String,
    q: String,
    round: usize,
    next: Arc<AtomicUsize>,
    log: Shared,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::new();
    while next.load(Ordering::Relaxed) < BATCHES && !stop.load(Ordering::Relaxed) {
        let b = next.load(Ordering::Relaxed);
        let ids: Vec<u64> = (0..BATCH).map(|k| job_id(round, b, k)).collect();
        let records: Vec<Value> = ids.iter().map(|&id| job(round, id)).collect();
        let body = json!({ "records": records, "idempotency_key": format!("{q}-{b}") });
        let path = format!("/v0/topics/{q}");
        let Ok((status, v)) = call(&client, &base, Method::POST, &path, Some(body)).await else {
            return; // killed
        };
        assert_eq!(status, 200, "write: {v}");
        let seqs = v["seqs"].as_array().expect("seqs");
        {
            let mut log = log.lock().unwrap();
            for (id, seq) in ids.iter().zip(seqs) {
                log.written.insert(*id, seq.as_u64().expect("seq"));
            }
        }
        next.store(b + 1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Claim up to 8 jobs at a time and ack the ones [`acks`] says, until `stop` or the server
/// dies.
async fn worker(base: String, q: String, name: String, log: Shared, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    let claim = json!({ "node": name, "max": 8, "wait_ms": 200 });
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/v0/topics/{q}/claim");
        let r = call(&client, &base, Method::POST, &path, Some(claim.clone())).await;
        let Ok((status, v)) = r else { return };
        assert_eq!(status, 200, "claim: {v}");
        let (mut seqs, mut lease_ids, mut ids) = (Vec::new(), Vec::new(), HashMap::new());
        for j in v["claimed"].as_array().expect("claimed[]") {
            let id = j["data"]["id"].as_u64().expect("a job id");
            let d = j["deliveries"].as_u64().expect("deliveries");
            assert!(
                (1..=3).contains(&d),
                "job {id} delivered with deliveries {d}: {j}"
            );
            log.lock().unwrap().seen.entry(id).or_default().push(d);
            if acks(id, d) {
                let seq = j["$seq"].as_u64().expect("$seq");
                seqs.push(seq);
                lease_ids.push(j["lease_id"].clone());
                ids.insert(seq, (id, d));
            }
        }
        if seqs.is_empty() {
            continue;
        }
        let body = json!({ "node": name, "seqs": seqs, "lease_ids": lease_ids });
        let path = format!("/v0/topics/{q}/ack");
        let Ok((status, v)) = call(&client, &base, Method::POST, &path, Some(body)).await else {
            let mut log = log.lock().unwrap();
            log.maybe_acked.extend(ids.values().map(|(id, _)| *id));
            return;
        };
        assert_eq!(status, 200, "ack: {v}");
        let skipped: HashSet<u64> = v["skipped"]
            .as_array()
            .expect("skipped[]")
            .iter()
            .map(|s| s.as_u64().expect("a skipped seq"))
            .collect();
        let mut log = log.lock().unwrap();
        for (seq, (id, d)) in ids {
            // Skipped: the lease ran out before the ack; the job comes again.
            if !skipped.contains(&seq) {
                log.acked.insert(id, d);
            }
        }
    }
}

/// Every record of `topic`.
async fn read_all(srv: &Server, topic: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let body = json!({ "from_seq": from, "limit": 1000, "include_tags": true });
        let path = format!("/v0/topics/{topic}/diff");
        let v = ok(srv, Method::POST, &path, Some(body)).await;
        assert!(
            v["tombstone"].is_null(),
            "{topic}: nothing was evicted: {v}"
        );
        out.extend(v["records"].as_array().expect("records").iter().cloned());
        from = v["next_from_seq"].as_u64().expect("next_from_seq");
        if v["caught_up"] == true {
            return out;
        }
    }
}

/// Start a producer (from batch `next`) and the workers on queue `q`.
fn spawn_all(
    srv: &Server,
    q: &str,
    round: usize,
    next: &Arc<AtomicUsize>,
    log: &Shared,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (base, q) = (srv.base.clone(), q.to_string());
    let p = producer(
        base.clone(),
        q.clone(),
        round,
        next.clone(),
        log.clone(),
        stop.clone(),
    );
    let mut tasks = vec![tokio::spawn(p)];
    for w in 0..WORKERS {
        let name = format!("w{w}");
        let task = worker(base.clone(), q.clone(), name, log.clone(), stop.clone());
        tasks.push(tokio::spawn(task));
    }
    tasks
}

/// Check what one round's queue `q` ended with against its log.
fn check_round(q: &str, round: usize, log: &Log, dead: &[Value]) {
    let mut in_dlq: HashMap<u64, usize> = HashMap::new();
    for r in dead.iter().filter(|r| r["meta"]["$dead_letter_from"] == q) {
        let id = r["data"]["id"].as_u64().expect("a dead job's id");
        *in_dlq.entry(id).or_default() += 1;
        let seq = log.written.get(&id).copied();
        let seq = seq.unwrap_or_else(|| panic!("{q}: dead job {id} was never written"));
        let meta = json!({ "p": "producer", "$dead_letter_from": q,
                           "$dead_letter_deliveries": 3, "$dead_letter_src_seq": seq });
        assert_eq!(r["meta"], meta, "{q}: dead job {id}: {r}");
        assert_eq!(r["data"], json!({ "id": id, "round": round }), "{r}");
        assert_eq!(r["$tag"], format!("job-{id}"), "{r}");
    }
    let want = BATCHES * BATCH;
    assert_eq!(log.written.len(), want, "{q}: every write was acknowledged");
    for &id in log.written.keys() {
        let dead = in_dlq.get(&id).copied().unwrap_or(0);
        assert!(dead <= 1, "{q}: job {id} is in {DLQ} {dead} times");
        let acked = log.acked.contains_key(&id);
        if dead == 1 {
            assert!(!acked, "{q}: job {id} was acked and dead-lettered");
        } else {
            let resolved = acked || log.maybe_acked.contains(&id);
            assert!(
                resolved,
                "{q}: job {id} is lost (seen {:?})",
                log.seen.get(&id)
            );
            assert!(!poison(id), "{q}: poison job {id} never reached {DLQ}");
        }
    }
    for (id, seen) in &log.seen {
        let mut d = seen.clone();
        d.sort();
        d.dedup();
        assert_eq!(
            d.len(),
            seen.len(),
            "{q}: job {id}: a delivery count came twice"
        );
        assert!(seen.len() <= 3, "{q}: job {id} delivered {seen:?}");
        if let Some(a) = log.acked.get(id) {
            let last = d.last().copied();
            assert_eq!(
                last,
                Some(*a),
                "{q}: job {id} came back after its ack: {seen:?}"
            );
        }
    }
    let redelivered = log.seen.values().filter(|s| s.len() > 1).count();
    assert!(redelivered > 0, "{q}: dropped jobs were redelivered");
    assert!(!in_dlq.is_empty(), "{q}: some jobs were dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_keeps_delivery_counts_and_dead_letters() {
    let rounds: usize = std::env::var("RIFFLE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let tmp = TempDir::new("topics-queues-crash");
    let data = tmp.path().join("data");
    let mut srv = start(&data).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut logs: Vec<(String, Shared)> = Vec::new();
    for round in 0..rounds {
        let q = format!("jobs-{round}");
        let cfg = json!({ "type": "queue", "durability": "disk", "max_deliveries": 3,
                          "dead_letter": DLQ, "lease_ms": 300 });
        create(&srv, &q, cfg).await;
        let log = Shared::default();
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = spawn_all(&srv, &q, round, &next, &log, &stop);
        common::kill_mid_write(srv, &mut seed, &stop, tasks).await;
        let at_kill = next.load(Ordering::Relaxed);
        let before: HashMap<u64, usize> = {
            let log = log.lock().unwrap();
            log.seen.iter().map(|(id, d)| (*id, d.len())).collect()
        };

        srv = start(&data).await;
        let v = ok(&srv, Method::GET, &format!("/v0/topics/{q}"), None).await;
        assert_eq!(v["config"]["max_deliveries"], 3, "{v}");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = spawn_all(&srv, &q, round, &next, &log, &stop);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = ok(&srv, Method::GET, &format!("/v0/topics/{q}"), None).await;
            let idle = v["queue"]["ready"] == 0 && v["queue"]["in_flight"] == 0;
            if next.load(Ordering::Relaxed) == BATCHES && v["count"] == 0 && idle {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: not drained: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("a producer or worker task");
        }
        {
            let log = log.lock().unwrap();
            let again = |(id, n): (&u64, &usize)| log.seen[id].len() > *n;
            let spanning = before.iter().filter(|&e| again(e)).count();
            let (acked, maybe) = (log.acked.len(), log.maybe_acked.len());
            eprintln!(
                "{q}: killed after {at_kill} of {BATCHES} batches; {acked} acked, {maybe} \
                 maybe acked, {spanning} delivered before and after the kill"
            );
            assert!(
                spanning > 0,
                "{q}: some jobs were delivered on both sides of the kill"
            );
        }
        logs.push((q, log));
        // This round's jobs, and those of the rounds before (their dead letters survive the
        // later kills too).
        let dead = read_all(&srv, DLQ).await;
        for (r, (q, log)) in logs.iter().enumerate() {
            check_round(q, r, &log.lock().unwrap(), &dead);
        }
        let from_these: usize = logs.len();
        let known = |d: &&Value| {
            logs.iter()
                .any(|(q, _)| d["meta"]["$dead_letter_from"] == *q)
        };
        assert!(
            dead.iter().all(|d| known(&d)),
            "{DLQ} holds only ours ({from_these} queues)"
        );
    }
    drop(srv);
}

/// With `leases_durable: true` a job leased before kill -9 stays leased to its worker (same
/// lease id) until its deadline and only then goes to another; without it, leased jobs are
/// ready at once after the restart. Delivery counts hold in both.
#[tokio::test]
async fn a_durable_lease_survives_kill_dash_nine_until_its_deadline() {
    let tmp = TempDir::new("topics-queues-lease");
    let data = tmp.path().join("data");
    let srv = start(&data).await;
    for (q, durable) in [("held", true), ("loose", false)] {
        let cfg = json!({ "type": "queue", "durability": "disk", "lease_ms": 3000,
                          "leases_durable": durable });
        create(&srv, q, cfg).await;
        let records: Vec<Value> = (1..=3).map(|i| json!({ "data": { "i": i } })).collect();
        let path = format!("/v0/topics/{q}");
        let write = Some(json!({ "records": records }));
        ok(&srv, Method::POST, &path, write).await;
    }
    let claim = |q: &str, node: &str, extra: Value| {
        let mut body = json!({ "node": node, "max": 5 });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let path = format!("/v0/topics/{q}/claim");
        (path, body)
    };
    let (path, body) = claim("held", "w1", json!({ "max": 2 }));
    let held = ok(&srv, Method::POST, &path, Some(body)).await;
    let held = held["claimed"].as_array().unwrap().clone();
    assert_eq!(held.len(), 2);
    let deadline = held[0]["deadline"].as_u64().unwrap();
    let (path, body) = claim("loose", "w1", json!({ "max": 2 }));
    ok(&srv, Method::POST, &path, Some(body)).await;
    drop(srv); // SIGKILL
    // Down for a second: a lease renewed at the restart would end a second late.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let srv = start(&data).await;
    let left = deadline.saturating_sub(now_ms());
    assert!(left > 500, "the restart took too long ({left} ms left)");
    let queue = async |q: &str| ok(&srv, Method::GET, &format!("/v0/topics/{q}"), None).await;
    let want = json!({ "ready": 1, "in_flight": 2, "dead_lettered": 0 });
    assert_eq!(queue("held").await["queue"], want);
    assert_eq!(queue("loose").await["queue"]["in_flight"], 0);
    let pairs = |v: &Value| -> Vec<(u64, u64)> {
        let jobs = v["claimed"].as_array().unwrap();
        let n = |j: &Value, k: &str| j[k].as_u64().unwrap();
        let pair = |j: &Value| (n(j, "$seq"), n(j, "deliveries"));
        let mut p: Vec<(u64, u64)> = jobs.iter().map(pair).collect();
        p.sort();
        p
    };
    // Without leases_durable: ready at once, counted.
    let (path, body) = claim("loose", "w2", json!({}));
    let v = ok(&srv, Method::POST, &path, Some(body)).await;
    assert_eq!(pairs(&v), [(1, 2), (2, 2), (3, 1)], "{v}");
    // With it: only the unleased job, and the lease still works for its worker.
    let (path, body) = claim("held", "w2", json!({}));
    let v = ok(&srv, Method::POST, &path, Some(body)).await;
    assert_eq!(pairs(&v), [(3, 1)], "{v}");
    let ack = json!({ "node": "w1", "seqs": [2], "lease_ids": [held[1]["lease_id"]] });
    let v = ok(&srv, Method::POST, "/v0/topics/held/ack", Some(ack)).await;
    let acked = (&v["acked"], &v["skipped"]);
    assert_eq!(acked, (&json!(1), &json!([])), "{v}");
    while now_ms() + 150 < deadline {
        let (path, body) = claim("held", "w2", json!({}));
        let v = ok(&srv, Method::POST, &path, Some(body)).await;
        assert_eq!(pairs(&v), [], "handed out before {deadline}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (path, body) = claim("held", "w2", json!({ "wait_ms": 5000 }));
    let v = ok(&srv, Method::POST, &path, Some(body)).await;
    let at = now_ms();
    assert_eq!(pairs(&v), [(1, 2)], "{v}");
    assert!(at + 20 >= deadline, "before the deadline {deadline}: {at}");
    let late = at.saturating_sub(deadline);
    assert!(
        late < 600,
        "{late} ms after the deadline: renewed by the restart?"
    );
    let stale = json!({ "node": "w1", "seqs": [1], "lease_ids": [held[0]["lease_id"]] });
    let v = ok(&srv, Method::POST, "/v0/topics/held/ack", Some(stale)).await;
    assert_eq!(v["skipped"], json!([1]), "the old lease is fenced: {v}");
    drop(srv);
}
