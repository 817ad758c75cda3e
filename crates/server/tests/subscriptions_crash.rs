//! Kill -9 harness for the Durable Streams `__ds` subscriptions: 50 text streams `ev/0..49`,
//! a pull-wake subscription `pw` and a webhook subscription `wh` (both on `ev/*`, 1 s
//! leases, the webhook aimed at a receiver in this test). Each round, appenders write to
//! random streams, pull-wake workers claim and ack (fully or partly, done or not, sometimes
//! releasing or abandoning the claim) and the receiver acks its deliveries by callback (the
//! same ways), by answering `{"done":true}`, or fails them with a 503; then the server is
//! killed with SIGKILL and restarted on the same directory.
//!
//! An oracle keeps every append acknowledged, every ack answered 200, every offset ever sent
//! in an ack, and the generations seen. After each restart:
//! 1. no cursor moved back: each link is at least at the highest ack answered 200;
//! 2. no cursor moved forward without an ack: each link is at most the highest offset sent
//!    in an ack for it (or a tail a webhook answered `done` for), 0 if none was;
//! 3. every stream with data past its cursor is woken again: `pw` appends a new wake event
//!    to its wake stream and its claims (once the lease held at the kill, if any, expires)
//!    cover everything until nothing is pending; `wh` delivers every pending stream (acked by
//!    callback until nothing is pending);
//! 4. generations never go back: every claim after the restart has a generation above any
//!    claimed before, and every delivery at least the highest delivered before (equal only as
//!    a re-delivery of that very wake) and above any ended by a `done` callback;
//! 5. every acknowledged append is still there.
//!
//! `RIFFLE_SUBS_CRASH_SEED` replays a seed (printed at the start and in every failure);
//! `RIFFLE_CRASH_ROUNDS` sets the number of kills (default 4).

mod common;

use common::{Options, Server, TempDir, header, offset, position};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STREAMS: u64 = 50;
const APPENDERS: u64 = 3;
const WORKERS: u64 = 2;
const SUBS: &str = "/v1/stream/__ds/subscriptions";
/// How long draining a subscription after a restart may take (leases, retries, a slow CI).
const DRAIN: Duration = Duration::from_secs(20);

/// xorshift64: the test's only source of choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

type Positions = HashMap<String, u64>;

/// What the test knows about one subscription's cursors and wakes.
#[derive(Default, Clone)]
struct Cursors {
    /// Stream → the highest offset an ack answered 200 for.
    acked: Positions,
    /// Stream → the highest offset ever sent in an ack (answered or not), or auto-acked by a
    /// webhook answering `done`.
    sent: Positions,
    /// The highest generation claimed (`pw`) or delivered (`wh`), and its wake id.
    generation: u64,
    wake: String,
    /// The highest generation an ack with `done` ended (answered 200).
    ended: u64,
    /// Claims answered 200 / deliveries received.
    wakes: u64,
}

impl Cursors {
    fn saw(&mut self, generation: u64, wake: &str) {
        self.wakes += 1;
        if generation > self.generation {
            (self.generation, self.wake) = (generation, wake.to_string());
        }
    }
}

#[derive(Default)]
struct Oracle {
    pw: Cursors,
    wh: Cursors,
    /// Stream → the highest `Stream-Next-Offset` an append was acknowledged with.
    tails: Positions,
    appends: u64,
    /// Answers no correct server gives, found by the tasks.
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Oracle>>;

fn raise(m: &mut Positions, k: &str, v: u64) {
    let e = m.entry(k.to_string()).or_default();
    *e = (*e).max(v);
}

/// Note an answer no correct server gives.
fn fault(oracle: &Shared, msg: String) {
    oracle.lock().unwrap().errors.push(msg);
}

fn client() -> reqwest::Client {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10));
    c.build().expect("an HTTP client")
}

/// `POST url` with a JSON body (and a bearer token): the status and JSON answer, or `Err`
/// when the server did not answer (it died).
async fn post(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> Result<(u16, Value), String> {
    let mut r = c.post(url).header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let r = r.body(body.to_string()).send().await;
    let r = r.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A wake's streams: `(path, acked, tail)`.
fn wake_streams(v: &Value) -> Vec<(String, u64, u64)> {
    let pos = |l: &Value, k: &str| position(l[k].as_str().expect("an offset"));
    let path = |l: &Value| l["path"].as_str().expect("a path").to_string();
    let list = v["streams"].as_array().expect("streams[]").iter();
    list.map(|l| (path(l), pos(l, "acked_offset"), pos(l, "tail_offset")))
        .collect()
}

fn full(streams: &[(String, u64, u64)]) -> Vec<(String, u64)> {
    streams.iter().map(|(p, _, t)| (p.clone(), *t)).collect()
}

/// Some of the streams, each acked somewhere between its cursor and its tail.
fn partial(rng: &mut Rng, streams: &[(String, u64, u64)]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (p, acked, tail) in streams.iter().filter(|(_, a, t)| a <= t) {
        if rng.below(2) == 0 {
            out.push((p.clone(), acked + rng.below(tail - acked + 1)));
        }
    }
    out
}

/// A wake being processed: where to ack it and with what.
struct Wake {
    url: String,
    token: String,
    wake_id: String,
    generation: u64,
    wh: bool,
    client: reqwest::Client,
    oracle: Shared,
}

impl Wake {
    /// The wake a claim's answer (`pw`) or a delivery (`wh`) describes, acked at `url`.
    fn of(v: &Value, url: String, wh: bool, client: &reqwest::Client, oracle: &Shared) -> Self {
        let token = &v[if wh { "callback_token" } else { "token" }];
        Wake {
            url,
            token: token.as_str().expect("a wake token").to_string(),
            wake_id: v["wake_id"].as_str().expect("a wake_id").to_string(),
            generation: v["generation"].as_u64().expect("a generation"),
            wh,
            client: client.clone(),
            oracle: oracle.clone(),
        }
    }

    /// Send an ack (`pw`'s ack or `wh`'s callback), keeping the oracle. `None` when the
    /// server did not answer, else the status (200, or 409 `FENCED` once the lease ran out).
    async fn ack(&self, acks: &[(String, u64)], done: bool) -> Option<u16> {
        let (wh, generation) = (self.wh, self.generation);
        let list: Vec<Value> = acks
            .iter()
            .map(|(s, p)| json!({ "stream": s, "offset": offset(*p) }))
            .collect();
        {
            let mut o = self.oracle.lock().unwrap();
            let sub = if wh { &mut o.wh } else { &mut o.pw };
            acks.iter().for_each(|(s, p)| raise(&mut sub.sent, s, *p));
        }
        let body = json!({ "wake_id": self.wake_id, "generation": generation, "acks": list,
                           "done": done });
        let r = post(&self.client, &self.url, Some(&self.token), body).await;
        let (status, v) = r.ok()?;
        let mut o = self.oracle.lock().unwrap();
        let sub = if wh { &mut o.wh } else { &mut o.pw };
        match status {
            200 => {
                acks.iter().for_each(|(s, p)| raise(&mut sub.acked, s, *p));
                sub.ended = sub.ended.max(if done { generation } else { 0 });
            }
            409 if code(&v) == "FENCED" => {}
            _ => o.errors.push(format!(
                "ack {acks:?} done {done} of gen {generation}: {status} {v}"
            )),
        }
        Some(status)
    }

    /// Process the wake as a worker would: ack every tail with `done` (most often); or part
    /// of them first, without `done`; or (`pw` only) part and then release; or part with
    /// `done`, leaving the rest pending; or nothing, for the lease to run out. `None` if the
    /// server died.
    async fn process(&self, v: &Value, rng: &mut Rng) -> Option<()> {
        let streams = wake_streams(v);
        let (all, some) = (full(&streams), partial(rng, &streams));
        match rng.below(100) {
            0..55 => self.ack(&all, true).await?,
            55..75 => {
                self.ack(&some, false).await?;
                self.ack(&all, true).await?
            }
            75..87 if !self.wh => {
                self.ack(&some, false).await?;
                let body = json!({ "wake_id": self.wake_id, "generation": self.generation });
                let url = self.url.replace("/ack", "/release");
                let r = post(&self.client, &url, Some(&self.token), body).await;
                let (status, v) = r.ok()?;
                if status != 204 && !(status == 409 && code(&v) == "FENCED") {
                    fault(&self.oracle, format!("release: {status} {v}"));
                }
                status
            }
            75..97 => self.ack(&some, true).await?,
            _ => 0,
        };
        Some(())
    }
}

/// Append random text to random streams until `stop` or the server dies.
async fn appender(base: String, seed: u64, oracle: Shared, stop: Arc<AtomicBool>) {
    let (client, mut rng) = (client(), Rng::new(seed));
    while !stop.load(SeqCst) {
        let s = format!("ev/{}", rng.below(STREAMS));
        let r = client.post(format!("{base}/v1/stream/{s}"));
        let r = r.header("content-type", "text/plain");
        let Ok(r) = r.body("x".repeat(1 + rng.below(200) as usize)).send().await else {
            return;
        };
        match (r.status().as_u16(), header(&r, "stream-next-offset")) {
            (204, Some(next)) => {
                let mut o = oracle.lock().unwrap();
                raise(&mut o.tails, &s, position(&next));
                o.appends += 1;
            }
            (status, _) => fault(&oracle, format!("append to {s}: {status}")),
        }
        tokio::time::sleep(Duration::from_millis(1 + rng.below(4))).await;
    }
}

/// A pull-wake worker: claim and [`Wake::process`] until `stop` or the server dies.
async fn worker(base: String, name: String, seed: u64, oracle: Shared, stop: Arc<AtomicBool>) {
    let (client, mut rng) = (client(), Rng::new(seed));
    while !stop.load(SeqCst) {
        let url = format!("{base}{SUBS}/pw/claim");
        let Ok((status, v)) = post(&client, &url, None, json!({ "worker": name })).await else {
            return;
        };
        if status == 409 && matches!(code(&v), "ALREADY_CLAIMED" | "NO_PENDING_WORK") {
            tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
            continue;
        }
        if status != 200 {
            return fault(&oracle, format!("claim: {status} {v}"));
        }
        let w = Wake::of(&v, format!("{base}{SUBS}/pw/ack"), false, &client, &oracle);
        oracle.lock().unwrap().pw.saw(w.generation, &w.wake_id);
        if w.process(&v, &mut rng).await.is_none() {
            return;
        }
    }
}

/// Receiver modes: [`Wake::process`] deliveries (or answer `done`, or fail them); answer `{}` and
/// never call back (while the invariants are checked); call back every tail with `done`.
const LOAD: u8 = 0;
const HOLD: u8 = 1;
const DRAIN_ALL: u8 = 2;

/// A webhook delivery received.
struct Delivery {
    /// Which server incarnation sent it.
    epoch: u64,
    generation: u64,
    wake_id: String,
    /// `(path, tail)`.
    streams: Vec<(String, u64)>,
}

/// The webhook receiver: a minimal HTTP/1.1 server, one request per connection.
#[derive(Default)]
struct Receiver {
    mode: AtomicU8,
    /// Bumped at each restart.
    epoch: AtomicU64,
    /// A clone is held by every connection and callback under way.
    busy: Arc<()>,
    /// The last delivery was answered 503.
    failed: AtomicBool,
    /// The live server's base URL (callback URLs name the port the subscription was made on).
    base: Mutex<String>,
    seed: u64,
    count: AtomicU64,
    oracle: Shared,
    deliveries: Mutex<Vec<Delivery>>,
}

async fn serve(listener: TcpListener, rx: Arc<Receiver>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let handler = rx.clone();
        rx.spawn(async move { handler.handle(sock).await });
    }
}

/// The body of one HTTP/1.1 request (by its `Content-Length`).
async fn read_request(sock: &mut TcpStream) -> Option<Vec<u8>> {
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 8192]);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head.lines().find_map(|l| l.strip_prefix("content-length:"));
            let len: usize = len.and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(buf[end + 4..end + 4 + len].to_vec());
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk));
        match read.await.ok()?.ok()? {
            0 => return None,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Receiver {
    /// Spawn `task`, counted in `busy` until it ends; a panic is noted as a fault.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let (oracle, busy) = (self.oracle.clone(), self.busy.clone());
        tokio::spawn(async move {
            if let Err(e) = tokio::spawn(task).await {
                fault(&oracle, format!("a receiver task failed: {e}"));
            }
            drop(busy);
        });
    }

    async fn handle(&self, mut sock: TcpStream) {
        let Some(body) = read_request(&mut sock).await else {
            return;
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (Some(generation), Some(wake_id)) = (v["generation"].as_u64(), v["wake_id"].as_str())
        else {
            return fault(&self.oracle, format!("a delivery without a wake: {v}"));
        };
        let streams = wake_streams(&v);
        let n = self.count.fetch_add(1, SeqCst);
        let mut rng = Rng::new(self.seed ^ n.wrapping_mul(0x0100_0000_01b3));
        let mode = self.mode.load(SeqCst);
        // Under load: fail some deliveries (never twice in a row, so the retry backoff stays
        // short), answer `done` to some, and call back on the others.
        let pick = if mode == LOAD { rng.below(100) } else { 99 };
        let fail = pick < 3 && !self.failed.swap(true, SeqCst);
        if !fail {
            self.failed.store(false, SeqCst);
        }
        let done = !fail && (3..25).contains(&pick);
        {
            let mut o = self.oracle.lock().unwrap();
            o.wh.saw(generation, wake_id);
            if done {
                streams
                    .iter()
                    .for_each(|(s, _, t)| raise(&mut o.wh.sent, s, *t));
            }
            self.deliveries.lock().unwrap().push(Delivery {
                epoch: self.epoch.load(SeqCst),
                generation,
                wake_id: wake_id.to_string(),
                streams: full(&streams),
            });
        }
        let (status, reply) = match (fail, done) {
            (true, _) => ("503 Service Unavailable", "{}"),
            (false, true) => ("200 OK", r#"{"done":true}"#),
            (false, false) => ("200 OK", "{}"),
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{reply}",
            reply.len()
        );
        let written = sock.write_all(resp.as_bytes()).await.is_ok();
        if !written || fail || done || mode == HOLD {
            return;
        }
        let _ = sock.shutdown().await;
        let url = v["callback_url"].as_str().expect("a callback_url");
        let path = &url[url.find("/v1/").expect("a callback path")..];
        let url = format!("{}{path}", self.base.lock().unwrap());
        let w = Wake::of(&v, url, true, &client(), &self.oracle);
        self.spawn(async move {
            if mode == LOAD {
                tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
                w.process(&v, &mut rng).await;
            } else {
                w.ack(&full(&streams), true).await;
            }
        });
    }
}

async fn start(data: &std::path::Path) -> Server {
    let opts = Options::default().storage("file-durable", data);
    Server::start_with(opts.env("DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_WEBHOOKS", "true")).await
}

/// A subscription's links: stream → acked position.
async fn links(srv: &Server, id: &str) -> Positions {
    let r = srv.client.get(srv.url(&format!("{SUBS}/{id}"))).send();
    let r = r.await.expect("GET a subscription");
    let status = r.status().as_u16();
    let v: Value = serde_json::from_str(&r.text().await.expect("a body")).expect("JSON");
    assert_eq!(status, 200, "GET {id}: {v}");
    let acked = |l: &Value| position(l["acked_offset"].as_str().expect("acked_offset"));
    let path = |l: &Value| l["path"].as_str().expect("a path").to_string();
    let list = v["streams"].as_array().expect("streams[]");
    list.iter().map(|l| (path(l), acked(l))).collect()
}

/// The streams, the wake stream and both subscriptions, every link at 0.
async fn setup(srv: &Server, hook: &str) {
    for i in 0..STREAMS {
        let url = srv.url(&format!("/v1/stream/ev/{i}"));
        srv.create(&url, "text/plain").await;
    }
    let url = srv.url("/v1/stream/wake/pw");
    srv.create(&url, "application/json").await;
    let pw = json!({ "type": "pull-wake", "pattern": "ev/*", "wake_stream": "wake/pw",
                     "lease_ttl_ms": 1000 });
    let wh = json!({ "type": "webhook", "pattern": "ev/*", "webhook": { "url": hook },
                     "lease_ttl_ms": 1000 });
    for (id, body) in [("pw", pw), ("wh", wh)] {
        let url = srv.url(&format!("{SUBS}/{id}"));
        let r = srv
            .client
            .put(url)
            .header("content-type", "application/json");
        let r = r.body(body.to_string()).send().await.expect("PUT");
        assert_eq!(r.status(), 201, "PUT {id}");
        let got = links(srv, id).await;
        let at_zero = got.len() == STREAMS as usize && got.values().all(|&a| a == 0);
        assert!(at_zero, "{id} links every stream at 0: {got:?}");
    }
}

/// Wait for the receiver's connections and callbacks to end; assert the tasks found no
/// answer a correct server does not give.
async fn settle(ctx: &str, rx: &Receiver) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(&rx.busy) > 1 {
        assert!(Instant::now() < deadline, "{ctx}: callbacks never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let errors = &rx.oracle.lock().unwrap().errors;
    assert!(errors.is_empty(), "{ctx}: unexpected answers: {errors:#?}");
}

/// Run appenders and workers for a random moment, then `kill -9` the server and wait for
/// everything in flight to end. Returns when the kill happened.
async fn load_and_kill(srv: Server, ctx: &str, seed: u64, rng: &mut Rng, rx: &Receiver) -> Instant {
    rx.mode.store(LOAD, SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let (base, oracle) = (&srv.base, &rx.oracle);
    let mut tasks = Vec::new();
    for a in 0..APPENDERS {
        let t = appender(base.clone(), seed ^ a, oracle.clone(), stop.clone());
        tasks.push(tokio::spawn(t));
    }
    for k in 0..WORKERS {
        let (seed, name) = (seed ^ (100 + k), format!("w{k}"));
        let t = worker(base.clone(), name, seed, oracle.clone(), stop.clone());
        tasks.push(tokio::spawn(t));
    }
    tokio::time::sleep(Duration::from_millis(400 + rng.below(1200))).await;
    let pid = srv.pid().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    assert!(kill.expect("run kill").success(), "kill -9 {pid}");
    let killed = Instant::now();
    drop(srv);
    stop.store(true, SeqCst);
    rx.mode.store(HOLD, SeqCst);
    for t in tasks {
        t.await.expect("an appender or worker task");
    }
    settle(ctx, rx).await;
    killed
}

/// One restart's checks: `tails` are the streams' tails after it.
struct Check<'a> {
    ctx: &'a str,
    srv: &'a Server,
    tails: Positions,
    rx: &'a Receiver,
}

impl Check<'_> {
    /// The streams `got` has behind their tails.
    fn behind(&self, got: &Positions) -> Vec<(String, u64)> {
        let mut out: Vec<_> = got.iter().filter(|(s, a)| **a < self.tails[*s]).collect();
        out.sort();
        out.into_iter().map(|(s, a)| (s.clone(), *a)).collect()
    }

    /// Invariants 1 and 2 for subscription `id`, against what the test knew at the kill.
    fn cursors(&self, id: &str, got: &Positions, c: &Cursors) {
        let ctx = self.ctx;
        assert_eq!(
            got.len(),
            STREAMS as usize,
            "{ctx}: {id} links every stream"
        );
        for (s, &at) in got {
            let acked = c.acked.get(s).copied().unwrap_or(0);
            let sent = c.sent.get(s).copied().unwrap_or(0);
            assert!(
                at >= acked,
                "{ctx}: {id}'s cursor of {s} moved back to {at}: an ack of {acked} was answered 200"
            );
            assert!(
                at <= sent,
                "{ctx}: {id}'s cursor of {s} moved forward to {at} without an ack (highest sent {sent})"
            );
            let tail = self.tails[s];
            assert!(
                at <= tail,
                "{ctx}: {id}'s cursor of {s} ({at}) is past its tail {tail}"
            );
        }
    }

    /// Invariant 3 for `pw` as its workers see it: with data pending, a wake event (of a
    /// generation above `before`, the highest claimed before the kill) is appended to the
    /// wake stream after the restart (which began at `since`, Unix ms). `from` is where the
    /// wake stream is read from, and moves on.
    async fn wake_event(&self, from: &mut String, since: u128, before: u64) {
        let url = self.srv.url("/v1/stream/wake/pw");
        let (deadline, mut seen) = (Instant::now() + DRAIN, Vec::new());
        loop {
            let r = self.srv.read(&url, from).await;
            assert_eq!(r.status(), 200, "{}: read wake/pw", self.ctx);
            *from = header(&r, "stream-next-offset").expect("Stream-Next-Offset");
            let events: Vec<Value> = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            let new = |e: &&Value| e["ts"].as_u64().is_some_and(|t| u128::from(t) >= since);
            seen.extend(events.iter().filter(new).map(|e| e["generation"].as_u64()));
            if seen.iter().any(|&g| g > Some(before)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: pw has data pending but no wake event above generation {before} came in \
                 {DRAIN:?} (the generations of those that came: {seen:?})",
                self.ctx
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Invariants 3 and 4 for `pw`: claim and ack everything until nothing is pending (a
    /// lease held at the kill must run out: 1 s, plus slack). Returns the claims made and
    /// how many times the claim was still held.
    async fn drain_pw(&self, killed: Instant, before: u64) -> (u64, u64) {
        let (ctx, oracle) = (self.ctx, &self.rx.oracle);
        let (client, url) = (client(), |a: &str| self.srv.url(&format!("{SUBS}/pw/{a}")));
        let deadline = Instant::now() + DRAIN;
        let (mut last, mut claims, mut waits) = (before, 0, 0);
        loop {
            assert!(
                Instant::now() < deadline,
                "{ctx}: pw not drained in {DRAIN:?}"
            );
            let r = post(&client, &url("claim"), None, json!({ "worker": "drainer" })).await;
            let (status, v) = r.expect("the server answers a claim");
            match (status, code(&v)) {
                (200, _) => {
                    let w = Wake::of(&v, url("ack"), false, &client, oracle);
                    let (generation, wake_id) = (w.generation, &w.wake_id);
                    assert!(
                        generation > last,
                        "{ctx}: pw claim {wake_id} after the restart has generation \
                         {generation}, not above {last} (highest claimed before the kill: {before})"
                    );
                    (last, claims) = (generation, claims + 1);
                    oracle.lock().unwrap().pw.saw(generation, wake_id);
                    let all = full(&wake_streams(&v));
                    let status = w.ack(&all, true).await;
                    assert!(status.is_some(), "{ctx}: the server answers an ack");
                }
                (409, "ALREADY_CLAIMED") => {
                    let held = killed.elapsed();
                    assert!(
                        claims > 0 || held < Duration::from_secs(11),
                        "{ctx}: a 1 s lease is still held {held:?} after the kill: {v}"
                    );
                    waits += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (409, "NO_PENDING_WORK") => {
                    let behind = self.behind(&links(self.srv, "pw").await);
                    assert!(
                        behind.is_empty(),
                        "{ctx}: pw answers NO_PENDING_WORK, but these (stream, cursor) have \
                         data past their cursor and were never woken: {behind:?}"
                    );
                    return (claims, waits);
                }
                _ => panic!("{ctx}: pw claim answered {status} {v}"),
            }
        }
    }

    /// Invariants 3 and 4 for `wh`: let the receiver call back every delivery until no
    /// stream is behind; every stream `pending` at the restart must have been delivered.
    /// Returns the deliveries since the restart, and how many were of the last wake before.
    async fn drain_wh(&self, before: &Cursors, pending: &[(String, u64)]) -> (usize, usize) {
        let (ctx, rx) = (self.ctx, self.rx);
        rx.mode.store(DRAIN_ALL, SeqCst);
        let deadline = Instant::now() + DRAIN;
        loop {
            let behind = self.behind(&links(self.srv, "wh").await);
            if behind.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: wh not drained in {DRAIN:?}: (stream, cursor) behind: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rx.mode.store(HOLD, SeqCst);
        let (epoch, all) = (rx.epoch.load(SeqCst), rx.deliveries.lock().unwrap());
        let since: Vec<&Delivery> = all.iter().filter(|d| d.epoch == epoch).collect();
        for d in &since {
            let (g, w) = (d.generation, &d.wake_id);
            let again = g == before.generation && *w == before.wake;
            assert!(
                (g > before.generation || again) && g > before.ended,
                "{ctx}: wh delivery {w} after the restart has generation {g}; before the kill \
                 {} was the last delivered and generation {} ended by a done callback",
                before.wake,
                before.ended
            );
        }
        for (s, _) in pending {
            let tail = self.tails[s];
            let covers = |d: &Delivery| d.streams.iter().any(|(p, t)| p == s && *t >= tail);
            assert!(
                since.iter().any(|d| covers(d)),
                "{ctx}: wh never delivered {s} up to its tail {tail} after the restart"
            );
        }
        let again = since.iter().filter(|d| d.generation == before.generation);
        (since.len(), again.count())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_keeps_subscription_cursors_and_wakes() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("RIFFLE_SUBS_CRASH_SEED").unwrap_or(0x5eed_d5c0_ffee);
    eprintln!("subscriptions_crash: seed {seed} (RIFFLE_SUBS_CRASH_SEED={seed} replays it)");
    let tmp = TempDir::new("subs-crash");
    let data = tmp.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("an address"));
    let rx = Arc::new(Receiver {
        seed,
        ..Receiver::default()
    });
    tokio::spawn(serve(listener, rx.clone()));
    let oracle = rx.oracle.clone();
    let mut srv = start(&data).await;
    *rx.base.lock().unwrap() = srv.base.clone();
    setup(&srv, &hook).await;

    let mut rng = Rng::new(seed);
    let mut pending = (0, 0);
    let mut wakes_from = "-1".to_string();
    for round in 0..env("RIFFLE_CRASH_ROUNDS").unwrap_or(4) {
        let ctx = &format!("seed {seed}, round {round}");
        let killed = load_and_kill(srv, ctx, seed ^ (round << 32), &mut rng, &rx).await;
        let (pw_before, wh_before, appended) = {
            let o = oracle.lock().unwrap();
            (o.pw.clone(), o.wh.clone(), o.tails.clone())
        };
        rx.epoch.fetch_add(1, SeqCst);

        let since = std::time::UNIX_EPOCH
            .elapsed()
            .expect("a clock")
            .as_millis();
        srv = start(&data).await;
        *rx.base.lock().unwrap() = srv.base.clone();
        let mut tails = Positions::new();
        for i in 0..STREAMS {
            let r = srv.head(&srv.url(&format!("/v1/stream/ev/{i}"))).await;
            let next = header(&r, "stream-next-offset").expect("Stream-Next-Offset");
            tails.insert(format!("ev/{i}"), position(&next));
        }
        for (s, &want) in &appended {
            let tail = tails[s];
            assert!(
                tail >= want,
                "{ctx}: {s} ends at {tail} after the restart; an append was acknowledged up to {want}"
            );
        }
        let check = Check {
            ctx,
            srv: &srv,
            tails,
            rx: &rx,
        };
        let (got_pw, got_wh) = (links(&srv, "pw").await, links(&srv, "wh").await);
        check.cursors("pw", &got_pw, &pw_before);
        check.cursors("wh", &got_wh, &wh_before);
        let (behind_pw, behind_wh) = (check.behind(&got_pw), check.behind(&got_wh));
        pending = (pending.0 + behind_pw.len(), pending.1 + behind_wh.len());

        if !behind_pw.is_empty() {
            check
                .wake_event(&mut wakes_from, since, pw_before.generation)
                .await;
        }
        let (claims, waits) = check.drain_pw(killed, pw_before.generation).await;
        let (deliveries, again) = check.drain_wh(&wh_before, &behind_wh).await;
        settle(ctx, &rx).await;
        let (pw, wh) = (
            (pw_before.wakes, behind_pw.len()),
            (wh_before.wakes, behind_wh.len()),
        );
        eprintln!(
            "{ctx}: (wakes so far, streams behind after the kill): pw {pw:?}, wh {wh:?}; \
             drained with {claims} claims ({waits} waits for a lease), {deliveries} \
             deliveries ({again} of the last wake again)"
        );
    }
    let woke = {
        let o = oracle.lock().unwrap();
        (o.pw.wakes, o.wh.wakes)
    };
    assert!(woke.0 > 0 && woke.1 > 0, "seed {seed}: both woke: {woke:?}");
    assert!(
        pending.0 > 0 && pending.1 > 0,
        "seed {seed}: some streams were behind at a restart (pw, wh): {pending:?}"
    );
    drop(srv);
}
