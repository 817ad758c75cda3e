//! The pull-wake workers of `subs`, and the matching of appends to the claims that covered
//! them.
//!
//! A worker loops: claim (`POST __ds/subscriptions/:id/claim`); on a wake, ack every stream
//! it lists at its `tail_offset` with `done: true` and, when the answer says `next_wake`,
//! claim again at once. On `409 NO_PENDING_WORK` or `ALREADY_CLAIMED` it waits for a wake
//! event newer than any generation it knows of, tailing the wake stream by long-poll from
//! where it last read (so no event is missed), or with `--poll-ms` it just sleeps. Once the
//! appender has stopped, a `NO_PENDING_WORK` means every append was acked: the run is
//! drained and all workers stop.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::client::{Conn, Failure, REQUEST_TIMEOUT, Target, header, query_escape};
use crate::stats::{Errors, Lat};

/// Phases of a run, broadcast to the workers.
pub const RUNNING: u8 = 0;
/// Every append was answered: a `NO_PENDING_WORK` now means the run is drained.
pub const APPENDS_DONE: u8 = 1;
pub const DRAINED: u8 = 2;

/// Most acks one request may carry (the server's limit on a request's stream list).
const MAX_ACKS: usize = 10_000;

/// What the workers share.
pub struct Plan {
    /// For claims and wake-stream reads (with `--bearer`, if any).
    pub target: Target,
    /// For acks, which carry the wake's token instead.
    pub ack_target: Target,
    pub claim_path: String,
    pub ack_path: String,
    /// Full path of the wake stream, and its tail when it was created.
    pub wake_path: String,
    pub wake_start: String,
    /// Root-relative path of stream `i` is `prefix` followed by `i`.
    pub prefix: String,
    pub streams: usize,
    /// Sleep between claims when idle instead of tailing the wake stream.
    pub poll: Option<Duration>,
    pub phase: watch::Sender<u8>,
}

/// An append or a claim's stream: (stream index, offset, instant). For an append, the offset
/// is its end (`Stream-Next-Offset`) and the instant its send time; for a claim, the stream's
/// `tail_offset` and the instant the claim was answered.
pub type Mark = (u32, String, Instant);

/// What one worker did.
#[derive(Default)]
pub struct Worker {
    pub claim_lat: Lat,
    pub ack_lat: Lat,
    /// Answer time of each successful claim, and its generation.
    pub claim_times: Vec<Instant>,
    pub generations: Vec<u64>,
    /// Every stream of every claim.
    pub covered: Vec<Mark>,
    pub no_pending: u64,
    pub already_claimed: u64,
    /// Acks answered `next_wake: true`.
    pub next_wakes: u64,
    /// Wake events read, and those whose generation was not above the previous one's.
    pub events: u64,
    pub event_disorder: u64,
    pub long_polls: u64,
    pub errors: Errors,
    pub bad: Vec<String>,
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

#[derive(Deserialize)]
struct Claimed {
    wake_id: String,
    generation: u64,
    token: String,
    streams: Vec<WakeLink>,
}

#[derive(Deserialize)]
struct WakeLink {
    path: String,
    acked_offset: String,
    tail_offset: String,
    has_pending: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInfo,
}

#[derive(Deserialize)]
struct ErrorInfo {
    code: String,
    #[serde(default)]
    generation: Option<u64>,
}

#[derive(Deserialize)]
struct Acked {
    ok: bool,
    next_wake: bool,
}

#[derive(Deserialize)]
struct WakeEvent {
    #[serde(rename = "type")]
    kind: String,
    generation: u64,
}

enum Claim {
    Got(Claimed),
    NoPending,
    /// Held by another worker, in this generation.
    Held(u64),
}

/// One request: its status and whole body.
async fn request(
    conn: &mut Conn,
    m: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), Failure> {
    let resp = conn.send(m, path, headers, body, timeout).await?;
    let status = resp.status();
    match tokio::time::timeout(timeout, resp.into_body().collect()).await {
        Ok(Ok(b)) => Ok((status, b.to_bytes())),
        Ok(Err(e)) => {
            conn.reset();
            Err(Failure::Transport(e.to_string()))
        }
        Err(_) => {
            conn.reset();
            Err(Failure::Timeout)
        }
    }
}

/// A 409's error code, as the error key `409-CODE`.
fn conflict(status: StatusCode, body: &[u8]) -> Result<ErrorInfo, Failure> {
    if status != StatusCode::CONFLICT {
        return Err(Failure::Status(status));
    }
    serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .map_err(|e| Failure::Bad(format!("409 without an error code: {e}")))
}

async fn claim(conn: &mut Conn, p: &Plan, body: Bytes) -> Result<Claim, Failure> {
    let json = [("content-type", "application/json")];
    let r = request(
        conn,
        Method::POST,
        &p.claim_path,
        &json,
        body,
        REQUEST_TIMEOUT,
    );
    let (status, b) = r.await?;
    if status == StatusCode::OK {
        return serde_json::from_slice(&b)
            .map(Claim::Got)
            .map_err(|e| Failure::Bad(format!("claim: {e}")));
    }
    let e = conflict(status, &b)?;
    match e.code.as_str() {
        "NO_PENDING_WORK" => Ok(Claim::NoPending),
        "ALREADY_CLAIMED" => Ok(Claim::Held(e.generation.unwrap_or(0))),
        code => Err(Failure::Bad(format!("claim: 409 {code}"))),
    }
}

/// Acks every stream of `c` at its tail (in requests of at most [`MAX_ACKS`], `done` on the
/// last); returns `next_wake`.
async fn ack(conn: &mut Conn, p: &Plan, c: &Claimed) -> Result<bool, Failure> {
    let auth = format!("Bearer {}", c.token);
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let chunks: Vec<&[WakeLink]> = c.streams.chunks(MAX_ACKS).collect();
    let mut next = false;
    for (i, chunk) in chunks.iter().enumerate() {
        let acks: Vec<_> = chunk
            .iter()
            .map(|l| json!({ "stream": l.path, "offset": l.tail_offset }))
            .collect();
        let body = json!({
            "wake_id": c.wake_id,
            "generation": c.generation,
            "acks": acks,
            "done": i + 1 == chunks.len(),
        });
        let r = request(
            conn,
            Method::POST,
            &p.ack_path,
            &headers,
            Bytes::from(body.to_string()),
            REQUEST_TIMEOUT,
        );
        let (status, b) = r.await?;
        if status != StatusCode::OK {
            let e = conflict(status, &b)?;
            return Err(Failure::Bad(format!("ack: 409 {}", e.code)));
        }
        let a: Acked = serde_json::from_slice(&b).map_err(|e| Failure::Bad(format!("ack: {e}")))?;
        if !a.ok {
            return Err(Failure::Bad("ack: ok is false".into()));
        }
        next = a.next_wake;
    }
    Ok(next)
}

/// The wake stream as one worker tails it.
struct Tail {
    conn: Conn,
    offset: String,
    cursor: Option<String>,
    last_gen: u64,
}

impl Worker {
    /// Checks a claim's streams and records what they cover.
    fn record(&mut self, p: &Plan, c: &Claimed, at: Instant) {
        if c.streams.is_empty() {
            self.fail(Failure::Bad(format!(
                "claim of generation {} lists no stream",
                c.generation
            )));
        }
        for l in &c.streams {
            let idx = l
                .path
                .strip_prefix(&p.prefix)
                .and_then(|i| i.parse::<u32>().ok())
                .filter(|&i| (i as usize) < p.streams);
            match idx {
                Some(i) if l.has_pending && l.tail_offset > l.acked_offset => {
                    self.covered.push((i, l.tail_offset.clone(), at));
                }
                _ => self.fail(Failure::Bad(format!(
                    "claim lists {} (acked {}, tail {}, has_pending {})",
                    l.path, l.acked_offset, l.tail_offset, l.has_pending
                ))),
            }
        }
    }

    /// Waits for a wake event of a generation above `known` (or `--poll-ms`), or a change of
    /// phase.
    async fn wait(&mut self, p: &Plan, t: &mut Tail, phase: &mut watch::Receiver<u8>, known: u64) {
        if let Some(d) = p.poll {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = phase.changed() => {}
            }
            return;
        }
        loop {
            let mut url = format!(
                "{}?offset={}&live=long-poll",
                p.wake_path,
                query_escape(&t.offset)
            );
            if let Some(c) = &t.cursor {
                url.push_str(&format!("&cursor={}", query_escape(c)));
            }
            let r = tokio::select! {
                r = long_poll(t, &url) => r,
                _ = phase.changed() => {
                    t.conn.reset();
                    return;
                }
            };
            self.long_polls += 1;
            match r {
                Ok((StatusCode::OK, body)) => {
                    if self.read_events(t, &body) > known {
                        return;
                    }
                }
                Ok((StatusCode::NO_CONTENT, _)) => {}
                Ok((s, _)) => {
                    self.fail(Failure::Status(s));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(f) => {
                    self.fail(f);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Parses a long-poll answer's events; returns the highest generation seen so far.
    fn read_events(&mut self, t: &mut Tail, body: &[u8]) -> u64 {
        if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Vec<WakeEvent>>(body) {
                Ok(events) => {
                    for e in events {
                        self.events += 1;
                        if e.kind != "wake" || e.generation <= t.last_gen {
                            self.event_disorder += 1;
                        }
                        t.last_gen = t.last_gen.max(e.generation);
                    }
                }
                Err(e) => self.fail(Failure::Bad(format!("wake stream: {e}"))),
            }
        }
        t.last_gen
    }
}

/// Sends a long-poll for the wake stream and keeps its offset and cursor. Split from
/// [`Worker::wait`] so that the headers are read before the body.
async fn long_poll(t: &mut Tail, url: &str) -> Result<(StatusCode, Bytes), Failure> {
    let resp = t
        .conn
        .send(
            Method::GET,
            url,
            &[],
            Bytes::new(),
            Duration::from_secs(120),
        )
        .await?;
    let status = resp.status();
    if let Some(n) = header(resp.headers(), "stream-next-offset") {
        t.offset = n.to_string();
    }
    t.cursor = header(resp.headers(), "stream-cursor").map(str::to_string);
    match tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect()).await {
        Ok(Ok(b)) => Ok((status, b.to_bytes())),
        Ok(Err(e)) => {
            t.conn.reset();
            Err(Failure::Transport(e.to_string()))
        }
        Err(_) => {
            t.conn.reset();
            Err(Failure::Timeout)
        }
    }
}

/// Worker `id`: claims and acks until the run is drained.
pub async fn worker(p: std::sync::Arc<Plan>, id: usize) -> Worker {
    let mut w = Worker::default();
    let claim_body = Bytes::from(format!("{{\"worker\":\"w{id}\"}}"));
    let mut conn = Conn::new(&p.target);
    let mut ack_conn = Conn::new(&p.ack_target);
    let mut tail = Tail {
        conn: Conn::new(&p.target),
        offset: p.wake_start.clone(),
        cursor: None,
        last_gen: 0,
    };
    let mut phase = p.phase.subscribe();
    // The highest generation this worker knows to be claimed: older wake events are stale.
    let mut known = 0u64;
    loop {
        let ph = *phase.borrow_and_update();
        if ph == DRAINED {
            break;
        }
        let sent = Instant::now();
        let r = claim(&mut conn, &p, claim_body.clone()).await;
        let at = Instant::now();
        match r {
            Ok(Claim::Got(c)) => {
                w.claim_lat.record(at - sent);
                w.claim_times.push(at);
                w.generations.push(c.generation);
                known = known.max(c.generation);
                w.record(&p, &c, at);
                let sent = Instant::now();
                match ack(&mut ack_conn, &p, &c).await {
                    Ok(next) => {
                        w.ack_lat.record(sent.elapsed());
                        if next {
                            w.next_wakes += 1;
                        }
                        if next || ph >= APPENDS_DONE {
                            continue;
                        }
                    }
                    Err(f) => {
                        w.fail(f);
                        continue;
                    }
                }
            }
            Ok(Claim::NoPending) => {
                w.no_pending += 1;
                if ph >= APPENDS_DONE {
                    p.phase.send_replace(DRAINED);
                    break;
                }
            }
            Ok(Claim::Held(g)) => {
                w.already_claimed += 1;
                known = known.max(g);
            }
            Err(f) => {
                w.fail(f);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        w.wait(&p, &mut tail, &mut phase, known).await;
    }
    w
}
