//! The queue endpoints: `claim`, `ack`, `nack`, `extend` (`POST /v0/topics/:q/...`) and the
//! `/work` SSE stream, which keeps up to `max` jobs leased to its connection, refills as they
//! are acked and gives its leases back when the client goes.

use super::error::{engine, invalid};
use super::render::{self, Perf};
use super::request::{MAX_NODE_BYTES, MAX_WAIT_MS, check_chars, parse, query_value};
use crate::http::body::ResponseBody;
use crate::http::{ApiError, App, sse};
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use riffle_engine::topic::queue::{Job, LeaseDone};
use riffle_engine::{ClaimRequest, Clock, Engine, SystemClock};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;

type Answer = Result<Response<ResponseBody>, ApiError>;

/// Most seqs one ack, nack or extend may name.
const MAX_SEQS: usize = 1000;
/// Longest delay of a `nack`.
const MAX_DELAY_MS: u64 = 86_400_000;
/// How often a `/work` stream looks again without a change of its queue.
const WORK_RECHECK: Duration = Duration::from_millis(250);

fn lease_id(id: u64) -> String {
    format!("lease_{id:016x}")
}

fn parse_lease_id(s: &str) -> Result<u64, ApiError> {
    s.strip_prefix("lease_")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| invalid(format!("invalid lease id {s:?}")))
}

fn check_node(node: Option<&str>) -> Result<String, ApiError> {
    let node = node
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("node is required"))?;
    check_chars("node", node, MAX_NODE_BYTES)?;
    Ok(node.to_string())
}

/// A claimed job's JSON object.
fn job(out: &mut Vec<u8>, j: &Job) {
    let r = &j.record;
    let mut head = json!({
        "$seq": r.seq,
        "lease_id": lease_id(j.lease_id),
        "deadline": j.deadline,
        "$ts": r.ts,
        "deliveries": j.deliveries,
    })
    .to_string();
    head.pop(); // the closing brace: the stored parts follow
    out.extend_from_slice(head.as_bytes());
    if let Some(tag) = r.tag_json() {
        out.extend_from_slice(b",\"$tag\":");
        out.extend_from_slice(tag);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(r.data_json());
    if let Some(meta) = r.meta_json() {
        out.extend_from_slice(b",\"meta\":");
        out.extend_from_slice(meta);
    }
    out.push(b'}');
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    node: Option<String>,
    max: Option<u64>,
    lease_ms: Option<u64>,
    wait_ms: Option<u64>,
}

pub async fn claim(app: &App, queue: &str, body: Bytes) -> Answer {
    let perf = Perf::start();
    let b: ClaimBody = parse(&body)?;
    let mut req = ClaimRequest {
        node: check_node(b.node.as_deref())?,
        max: b.max.unwrap_or(1).clamp(1, 1000) as usize,
        lease_ms: b.lease_ms,
        wait_ms: b.wait_ms.unwrap_or(0).min(MAX_WAIT_MS),
        conn: None,
    };
    // A wait ends at the credential's expiry, and then with a 401 rather than an empty answer:
    // jobs are not leased to an expired credential.
    let left = crate::http::access::expiry().map(|at| {
        at.saturating_duration_since(tokio::time::Instant::now())
            .as_millis() as u64
    });
    let cut_short = left.is_some_and(|left| left < req.wait_ms);
    if let Some(left) = left {
        req.wait_ms = req.wait_ms.min(left);
    }
    let _slot = if req.wait_ms > 0 {
        Some(app.live_slot(crate::http::metrics::LiveKind::LongPoll)?)
    } else {
        None
    };
    let claimed = app
        .engine
        .queue_claim(queue, req)
        .await
        .map_err(|e| engine(queue, e))?;
    if cut_short && claimed.jobs.is_empty() {
        return Err(crate::http::access::expired_error());
    }
    let mut out = Vec::with_capacity(256 * claimed.jobs.len() + 64);
    out.extend_from_slice(b"{\"claimed\":[");
    for (i, j) in claimed.jobs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        job(&mut out, j);
    }
    out.extend_from_slice(b"],");
    render::field(&mut out, "count", &json!(claimed.jobs.len()));
    out.push(b',');
    render::field(&mut out, "ready", &json!(claimed.counts.ready));
    out.push(b',');
    render::field(&mut out, "performance", &perf.json());
    out.push(b'}');
    Ok(render::raw_json(StatusCode::OK, Bytes::from(out)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    node: Option<String>,
    seqs: Option<Vec<u64>>,
    lease_ids: Option<Vec<String>>,
    delay_ms: Option<u64>,
    lease_ms: Option<u64>,
}

/// The node, seqs and lease ids of an ack, nack or extend.
struct LeaseArgs {
    node: String,
    seqs: Vec<u64>,
    ids: Option<Vec<u64>>,
}

fn lease_args(b: &LeaseBody) -> Result<LeaseArgs, ApiError> {
    let node = check_node(b.node.as_deref())?;
    let seqs = b.seqs.clone().ok_or_else(|| invalid("seqs is required"))?;
    if seqs.len() > MAX_SEQS {
        return Err(invalid(format!("at most {MAX_SEQS} seqs per call")).code("batch_too_large"));
    }
    let ids = match &b.lease_ids {
        None => None,
        Some(ids) if ids.len() != seqs.len() => {
            return Err(invalid("lease_ids must be aligned with seqs"));
        }
        Some(ids) => Some(
            ids.iter()
                .map(|s| parse_lease_id(s))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(LeaseArgs { node, seqs, ids })
}

fn lease_answer(
    done_key: &str,
    d: &LeaseDone,
    perf: &Perf,
    deadlines: bool,
) -> Response<ResponseBody> {
    let mut v = json!({
        done_key: d.done,
        "skipped": d.skipped,
        "ready": d.counts.ready,
        "in_flight": d.counts.in_flight,
    });
    if deadlines {
        let m: serde_json::Map<String, Value> = d
            .deadlines
            .iter()
            .map(|(s, t)| (s.to_string(), json!(t)))
            .collect();
        v["deadlines"] = Value::Object(m);
    }
    render::json_response(StatusCode::OK, v, perf)
}

/// `ack`, `nack` or `extend`.
pub async fn lease_op(app: &App, queue: &str, op: &str, body: Bytes) -> Answer {
    let perf = Perf::start();
    let b: LeaseBody = parse(&body)?;
    let LeaseArgs { node, seqs, ids } = lease_args(&b)?;
    let e = &app.engine;
    let ids = ids.as_deref();
    let err = |e| engine(queue, e);
    match op {
        "ack" => {
            let d = e.queue_ack(queue, &node, &seqs, ids).await.map_err(err)?;
            Ok(lease_answer("acked", &d, &perf, false))
        }
        "nack" => {
            let delay = b.delay_ms.unwrap_or(0);
            if delay > MAX_DELAY_MS {
                return Err(invalid(format!("delay_ms must be at most {MAX_DELAY_MS}")));
            }
            let d = e
                .queue_nack(queue, &node, &seqs, ids, delay)
                .await
                .map_err(err)?;
            Ok(lease_answer("nacked", &d, &perf, false))
        }
        _ => {
            let lease_ms = b.lease_ms.ok_or_else(|| invalid("lease_ms is required"))?;
            let d = e
                .queue_extend(queue, &node, &seqs, ids, lease_ms)
                .await
                .map_err(err)?;
            Ok(lease_answer("extended", &d, &perf, true))
        }
    }
}

/// Gives a `/work` stream's leases back when the stream ends, however it ends.
struct WorkGuard {
    engine: Engine,
    queue: String,
    conn: u64,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let (engine, queue, conn) = (self.engine.clone(), self.queue.clone(), self.conn);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = engine.queue_release_conn(&queue, conn).await;
            });
        }
    }
}

/// `GET /v0/topics/:q/work?node&max&lease_ms`.
pub fn work(app: &App, queue: &str, query: Option<&str>, req: &Parts) -> Answer {
    if !super::watch::accepts_sse(req) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "a work stream is text/event-stream",
        )
        .code("not_acceptable"));
    }
    let node = check_node(query_value(query, "node").as_deref())?;
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        query_value(query, key)
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(format!("{key} must be an integer")))
            })
            .transpose()
    };
    let max = number("max")?.unwrap_or(1).clamp(1, 1000) as usize;
    let lease_ms = number("lease_ms")?;
    // The queue must exist and be a queue before the stream starts.
    let info = app
        .engine
        .topic_info(queue, false)
        .map_err(|e| engine(queue, e))?;
    if info.queue.is_none() {
        return Err(engine(queue, riffle_engine::EngineError::NotAQueue));
    }
    let engine = app.engine.clone();
    let conn = engine.queue_conn_id();
    let guard = WorkGuard {
        engine: engine.clone(),
        queue: queue.to_string(),
        conn,
    };
    let shutdown = app.shutdown.clone();
    let queue = queue.to_string();
    let slot = app.live_slot(crate::http::metrics::LiveKind::Work)?;
    let expires = crate::http::access::expiry();
    let events = async_stream::stream! {
        let _guard = guard;
        let _slot = slot;
        let mut out = BytesMut::new();
        out.extend_from_slice(b"retry: 2000\n\n");
        yield Ok::<_, Infallible>(Frame::data(out.split().freeze()));
        let Ok(mut handle) = engine.topic_open(&queue) else { return };
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        let expired = crate::http::access::expired(expires);
        tokio::pin!(expired);
        let mut idle = 0u64;
        while let Ok(held) = engine.queue_conn_jobs(&queue, conn) {
            let held = held.len();
            if held < max {
                let req = ClaimRequest {
                    node: node.clone(),
                    max: max - held,
                    lease_ms,
                    wait_ms: 0,
                    conn: Some(conn),
                };
                match engine.queue_claim(&queue, req).await {
                    Ok(c) => {
                        for j in &c.jobs {
                            let mut data = Vec::new();
                            job(&mut data, j);
                            let id = j.record.seq.to_string();
                            sse::event(&mut out, Some("job"), Some(&id), &data);
                        }
                    }
                    Err(e) => {
                        let data = json!({ "code": "claim_failed", "message": e.to_string() });
                        sse::event(&mut out, Some("error"), None, data.to_string().as_bytes());
                    }
                }
                if !out.is_empty() {
                    yield Ok(Frame::data(out.split().freeze()));
                }
            }
            tokio::select! {
                () = handle.changed() => {}
                () = tokio::time::sleep(WORK_RECHECK) => {
                    // A heartbeat now and then (the watch's `: hb <ms>`): it keeps proxies
                    // from timing the stream out, and where the connection cannot notice a
                    // hang-up while idle (TLS), the write does.
                    idle += 1;
                    if idle.is_multiple_of(4) {
                        sse::comment(&mut out, &format!("hb {}", SystemClock.now_ms()));
                        yield Ok(Frame::data(out.split().freeze()));
                    }
                }
                () = &mut stopping => {
                    sse::shutting_down(&mut out);
                    yield Ok(Frame::data(out.split().freeze()));
                    break;
                }
                () = &mut expired => {
                    // Its leases are given back as the connection's guard goes.
                    sse::credential_expired(&mut out);
                    yield Ok(Frame::data(out.split().freeze()));
                    break;
                }
            }
        }
    };
    Ok(sse::response()
        .body(crate::http::body::stream(StreamBody::new(events)))
        .expect("static headers"))
}
