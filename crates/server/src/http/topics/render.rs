//! `/v0` response bodies. Records are written straight from their stored parts (their JSON
//! text is copied, never parsed); the rest is small and goes through `serde_json`.

use crate::http::body::{self, ResponseBody};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use riffle_engine::topic::Discard;
use riffle_engine::topic::{CommitTiming, RecordView, Tombstone, TopicConfig, TopicKind};
use serde_json::{Value, json};
use std::time::Instant;

/// Which optional parts of a record a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Include {
    pub tags: bool,
    pub meta: bool,
    pub data: bool,
}

/// Append one record's JSON object.
pub fn record(out: &mut Vec<u8>, r: &RecordView, inc: Include) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"$seq\":");
    out.extend_from_slice(n.format(r.seq).as_bytes());
    out.extend_from_slice(b",\"$ts\":");
    out.extend_from_slice(n.format(r.ts).as_bytes());
    if let Some(node) = r.node_json() {
        out.extend_from_slice(b",\"$node\":");
        out.extend_from_slice(node);
    }
    if inc.tags
        && let Some(tag) = r.tag_json()
    {
        out.extend_from_slice(b",\"$tag\":");
        out.extend_from_slice(tag);
    }
    if inc.data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(r.data_json());
    }
    if inc.meta
        && let Some(meta) = r.meta_json()
    {
        out.extend_from_slice(b",\"meta\":");
        out.extend_from_slice(meta);
    }
    out.push(b'}');
}

/// A JSON array of records.
pub fn records(out: &mut Vec<u8>, records: &[RecordView], inc: Include) {
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        record(out, r, inc);
    }
    out.push(b']');
}

pub fn tombstone(t: &Tombstone, earliest: u64, head: u64) -> Value {
    json!({
        "gap_from": t.gap_from,
        "gap_to": t.gap_to,
        "reason": t.reason.as_str(),
        "missed_estimate": t.missed_estimate,
        "earliest_seq": earliest,
        "head_seq": head,
    })
}

/// The full configuration object, as every topic response shows it.
pub fn config(c: &TopicConfig) -> Value {
    json!({
        "type": match c.kind { TopicKind::Log => "log", TopicKind::Queue => "queue" },
        "ttl_ms": c.ttl_ms,
        "cap_records": c.cap_records,
        "cap_bytes": c.cap_bytes,
        "discard": match c.discard { Discard::Old => "old", Discard::Reject => "reject" },
        "durable": c.durability == riffle_engine::Durability::Fsync,
        "durability": c.durability.as_str(),
        "priority": c.priority,
        "auto_priority": c.auto_priority,
        "auto_create": c.auto_create,
        "idempotency_window_ms": c.idempotency_window_ms,
        "dedupe_node": c.dedupe_node,
        "lease_ms": c.lease_ms,
        "claim_jitter_ms": c.claim_jitter_ms,
        "max_deliveries": c.max_deliveries,
        "dead_letter": c.dead_letter,
        "leases_durable": c.leases_durable,
    })
}

/// Priority from recency: 500 × 2^(-idle / 30 s), or the manual priority.
pub fn effective_priority(c: &TopicConfig, last_activity: Option<i64>, now: i64) -> i64 {
    if let Some(p) = c.priority {
        return i64::from(p);
    }
    if !c.auto_priority {
        return 0;
    }
    let idle = last_activity.map_or(f64::INFINITY, |t| (now - t).max(0) as f64);
    (500.0 * (-idle / 30_000.0).exp2()).round() as i64
}

/// The `performance` block: the handler's own time, and what the commit waited for.
pub struct Perf {
    started: Instant,
    pub timing: CommitTiming,
    pub scanned: Option<u64>,
}

impl Perf {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            timing: CommitTiming::default(),
            scanned: None,
        }
    }

    pub fn json(&self) -> Value {
        let ms = |d: f64| (d * 1000.0).round() / 1000.0;
        let mut p = json!({ "server_total_ms": ms(self.started.elapsed().as_secs_f64() * 1000.0) });
        if let Some(w) = self.timing.wal_ms {
            p["wal_append_ms"] = json!(ms(w));
        }
        if let Some(f) = self.timing.fsync_ms {
            p["fsync_ms"] = json!(ms(f));
        }
        if let Some(s) = self.scanned {
            p["records_scanned"] = json!(s);
        }
        p
    }
}

/// A JSON response from a `serde_json` object, with the `performance` block added.
pub fn json_response(status: StatusCode, mut v: Value, perf: &Perf) -> Response<ResponseBody> {
    v["performance"] = perf.json();
    raw_json(status, Bytes::from(v.to_string()))
}

/// A JSON response from bytes already rendered.
pub fn raw_json(status: StatusCode, bytes: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Append `"key":` and a `serde_json` value to a hand-written object.
pub fn field(out: &mut Vec<u8>, key: &str, v: &Value) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    // Values made here (numbers, strings, small objects) always serialize.
    let _ = serde_json::to_writer(&mut *out, v);
}
