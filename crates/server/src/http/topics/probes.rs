//! `GET /v0/health`, `/v0/ready` and `/v0/metrics` (topic gauges; Prometheus text, or JSON
//! with `Accept: application/json`).

use super::render::{self, Perf};
use crate::http::body::ResponseBody;
use crate::http::{ApiError, App};
use http::request::Parts;
use http::{Response, StatusCode, header};
use riffle_engine::Durability;
use riffle_engine::topic::TopicInfo;
use serde_json::json;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

pub fn health(app: &App) -> Response<ResponseBody> {
    let perf = Perf::start();
    let v = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": app.topics.started.elapsed().as_millis() as u64,
    });
    render::json_response(StatusCode::OK, v, &perf)
}

pub fn ready(app: &App) -> Result<Response<ResponseBody>, ApiError> {
    let perf = Perf::start();
    if app.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
        .code("shutting_down"));
    }
    let v = json!({ "status": "ready", "wal_replay_complete": true, "topics": app.engine.topic_count() });
    Ok(render::json_response(StatusCode::OK, v, &perf))
}

/// The topics, summed and per topic, as `/v0/metrics` shows them.
struct Summary {
    topics: Vec<TopicInfo>,
    /// Those with series of their own: at most `metrics.max_series`, and with auth on only
    /// the topics the caller may read.
    shown: Vec<usize>,
    truncated: bool,
    records: u64,
    bytes: u64,
    queues: usize,
    in_flight: u64,
    routers: usize,
}

const CLASSES: [Durability; 4] = [
    Durability::Ephemeral,
    Durability::Memory,
    Durability::Disk,
    Durability::Fsync,
];

impl Summary {
    fn of(app: &App) -> Self {
        let (topics, _) = app.engine.topic_list("", None, usize::MAX);
        let cred = crate::http::access::current();
        let mut shown: Vec<usize> = (0..topics.len())
            .filter(|&i| cred.as_ref().is_none_or(|c| c.covers(&topics[i].name)))
            .collect();
        // Per-topic series, at most (`metrics.max_series`): a scrape's size stays bounded.
        let truncated = shown.len() > app.config.max_series;
        shown.truncate(app.config.max_series);
        let queues = topics.iter().filter_map(|t| t.queue);
        Self {
            shown,
            truncated,
            records: topics.iter().map(|t| t.count).sum(),
            bytes: topics.iter().map(|t| t.bytes).sum(),
            queues: queues.clone().count(),
            in_flight: queues.map(|q| q.in_flight).sum(),
            routers: app.engine.router_count(),
            topics,
        }
    }

    fn by_class(&self, d: Durability) -> usize {
        let of_class = |t: &&TopicInfo| t.config.durability == d;
        self.topics.iter().filter(of_class).count()
    }

    fn shown(&self) -> impl Iterator<Item = &TopicInfo> {
        self.shown.iter().map(|&i| &self.topics[i])
    }
}

/// `GET /v0/metrics`: the topics gauges after the registry (Prometheus text), or a JSON
/// snapshot with `Accept: application/json`. During recovery there are no topics to count
/// yet: readiness, replay progress, uptime and live connections only.
pub fn metrics(app: &App, req: &Parts) -> Response<ResponseBody> {
    let perf = Perf::start();
    let recovering = app.recovering.as_ref().map(|p| p.load(Ordering::Relaxed));
    let storage = app.engine.storage_stats();
    let replayed = recovering.or(storage.as_ref().map(|s| s.records_replayed));
    let uptime = app.topics.started.elapsed().as_millis() as u64;
    let summary = recovering.is_none().then(|| Summary::of(app));
    let json_wanted = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if json_wanted {
        let live = app.metrics.live_counts();
        // The reference's SSE connections: the `/v0` event streams (watch and `/work`).
        let sse: i64 = live
            .iter()
            .filter(|(k, _)| matches!(*k, "watch" | "work"))
            .map(|(_, n)| n)
            .sum();
        let mut v = json!({
            "ready": recovering.is_none(),
            "replay_progress": { "wal_records_replayed": replayed.unwrap_or(0) },
            "uptime_ms": uptime,
            "watch_sessions": app.topics.watches.count(),
            "sse_connections": sse,
            "live_connections": live.iter().map(|&(k, n)| (k.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        });
        if let Some(s) = &summary {
            topics_json(&mut v, s);
        }
        if let Some(st) = &storage {
            let w = &st.wal;
            v["wal"] = json!({ "frames": w.records, "batches": w.writes, "fsyncs": w.syncs,
                "bytes_written": w.bytes, "failures": w.failures, "checkpoints": st.checkpoints,
                "rotations": w.rotations, "queue_depth": w.queue_depth,
                "queue_depth_peak": w.queue_depth_peak });
            // Riffle's first names of two of them, kept for existing readers.
            v["wal_bytes"] = json!(w.bytes);
            v["wal_syncs"] = json!(w.syncs);
        }
        return render::json_response(StatusCode::OK, v, &perf);
    }
    let mut t = String::new();
    gauge(
        &mut t,
        "topics_ready",
        "1 once recovery is complete.",
        u64::from(recovering.is_none()),
    );
    gauge(
        &mut t,
        "topics_uptime_ms",
        "Milliseconds since start.",
        uptime,
    );
    gauge(
        &mut t,
        "topics_watch_sessions",
        "Live watch sessions.",
        app.topics.watches.count() as u64,
    );
    if let Some(s) = &summary {
        topics_text(&mut t, s);
    }
    // The registry (requests, latency, WAL, ...) first, then the topics gauges: one scrape
    // has everything, and `riffle_wal_*` come from the registry only.
    app.metrics_response(req, &t)
}

fn gauge(t: &mut String, name: &str, help: &str, v: u64) {
    let _ = write!(t, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
}

fn topics_json(v: &mut serde_json::Value, s: &Summary) {
    let per: Vec<_> = s
        .shown()
        .map(|t| {
            let mut v = json!({ "topic": t.name, "head_seq": t.head_seq,
                "earliest_seq": t.earliest_seq, "records": t.count, "bytes": t.bytes });
            if let Some(q) = t.queue {
                v["queue_ready"] = json!(q.ready);
                v["queue_in_flight"] = json!(q.in_flight);
            }
            v
        })
        .collect();
    let classes: serde_json::Map<_, _> = CLASSES
        .iter()
        .map(|&d| (d.as_str().to_string(), json!(s.by_class(d))))
        .collect();
    v["topics"] = json!(s.topics.len());
    v["topics_by_class"] = json!(classes);
    v["records"] = json!(s.records);
    v["bytes"] = json!(s.bytes);
    v["routers"] = json!(s.routers);
    v["queue_topics"] = json!(s.queues);
    v["leases_in_flight"] = json!(s.in_flight);
    v["per_topic"] = json!(per);
    v["per_topic_truncated"] = json!(s.truncated);
}

fn topics_text(t: &mut String, s: &Summary) {
    gauge(t, "topics", "Topics.", s.topics.len() as u64);
    gauge(
        t,
        "topics_records",
        "Live records across all topics.",
        s.records,
    );
    gauge(
        t,
        "topics_bytes",
        "Live stored bytes across all topics.",
        s.bytes,
    );
    gauge(t, "topics_routers", "Routers.", s.routers as u64);
    gauge(t, "topics_queue_topics", "Queue topics.", s.queues as u64);
    gauge(
        t,
        "topics_leases_in_flight",
        "Jobs leased and not acked, across all queues.",
        s.in_flight,
    );
    gauge(
        t,
        "topics_per_topic_truncated",
        "1 when per-topic series were cut at metrics.max_series topics.",
        u64::from(s.truncated),
    );
    t.push_str(
        "# HELP topics_by_class Topics by durability class.\n# TYPE topics_by_class gauge\n",
    );
    for d in CLASSES {
        let _ = writeln!(
            t,
            "topics_by_class{{class=\"{}\"}} {}",
            d.as_str(),
            s.by_class(d)
        );
    }
    for (name, help) in [
        ("topic_head_seq", "Last seq written."),
        ("topic_earliest_seq", "First live seq."),
        ("topic_records", "Live records."),
        ("topic_bytes", "Live stored bytes."),
    ] {
        let _ = write!(t, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for i in s.shown() {
            let v = match name {
                "topic_head_seq" => i.head_seq,
                "topic_earliest_seq" => i.earliest_seq,
                "topic_records" => i.count,
                _ => i.bytes,
            };
            // Topic names are [A-Za-z0-9._:-]: nothing to escape in a label.
            let _ = writeln!(t, "{name}{{topic=\"{}\"}} {v}", i.name);
        }
    }
    for (name, help) in [
        ("topic_queue_ready", "Jobs ready to claim (queue topics)."),
        ("topic_queue_in_flight", "Jobs leased (queue topics)."),
    ] {
        let _ = write!(t, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for i in s.shown() {
            if let Some(q) = i.queue {
                let v = if name == "topic_queue_ready" {
                    q.ready
                } else {
                    q.in_flight
                };
                let _ = writeln!(t, "{name}{{topic=\"{}\"}} {v}", i.name);
            }
        }
    }
}
