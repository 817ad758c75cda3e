//! `GET /v0/health`, `/v0/ready` and `/v0/metrics` (topic gauges; Prometheus text, or JSON
//! with `Accept: application/json`).

use super::render::{self, Perf};
use crate::http::body::ResponseBody;
use crate::http::{ApiError, App};
use http::request::Parts;
use http::{Response, StatusCode, header};
use riffle_engine::Durability;
use serde_json::json;
use std::fmt::Write as _;

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

pub fn metrics(app: &App, req: &Parts) -> Response<ResponseBody> {
    let (topics, _) = app.engine.topic_list("", None, usize::MAX);
    let by_class = |d: Durability| topics.iter().filter(|t| t.config.durability == d).count();
    let records: u64 = topics.iter().map(|t| t.count).sum();
    let bytes: u64 = topics.iter().map(|t| t.bytes).sum();
    let (wal_bytes, wal_syncs) = app.engine.wal_stats();
    // Per-topic series, at most (`metrics.max_series`): a scrape's size stays bounded.
    // With auth on, only the topics the caller may read have series of their own.
    let max_series = app.config.max_series;
    let cred = crate::http::access::current();
    let shown: Vec<_> = topics
        .iter()
        .filter(|t| cred.as_ref().is_none_or(|c| c.covers(&t.name)))
        .collect();
    let truncated = shown.len() > max_series;
    let queues: Vec<_> = topics.iter().filter_map(|t| t.queue).collect();
    let in_flight: u64 = queues.iter().map(|q| q.in_flight).sum();
    let routers = app.engine.router_count();
    let json_wanted = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let classes = [
        Durability::Ephemeral,
        Durability::Memory,
        Durability::Disk,
        Durability::Fsync,
    ];
    if json_wanted {
        let per: Vec<_> = shown
            .iter()
            .take(max_series)
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
        let classes: serde_json::Map<_, _> = classes
            .iter()
            .map(|&d| (d.as_str().to_string(), json!(by_class(d))))
            .collect();
        let v = json!({
            "topics": topics.len(),
            "topics_by_class": classes,
            "records": records,
            "bytes": bytes,
            "watch_sessions": app.topics.watches.count(),
            "routers": routers,
            "queue_topics": queues.len(),
            "leases_in_flight": in_flight,
            "ready": true,
            "uptime_ms": app.topics.started.elapsed().as_millis() as u64,
            "wal_bytes": wal_bytes,
            "wal_syncs": wal_syncs,
            "per_topic": per,
            "per_topic_truncated": truncated,
        });
        return render::raw_json(StatusCode::OK, v.to_string().into());
    }
    let mut t = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = write!(t, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
    };
    gauge("topics", "Topics.", topics.len() as u64);
    gauge("topics_records", "Live records across all topics.", records);
    gauge(
        "topics_bytes",
        "Live stored bytes across all topics.",
        bytes,
    );
    gauge(
        "topics_watch_sessions",
        "Live watch sessions.",
        app.topics.watches.count() as u64,
    );
    gauge("topics_routers", "Routers.", routers as u64);
    gauge("topics_queue_topics", "Queue topics.", queues.len() as u64);
    gauge(
        "topics_leases_in_flight",
        "Jobs leased and not acked, across all queues.",
        in_flight,
    );
    gauge("topics_ready", "1 once recovery is complete.", 1);
    gauge(
        "topics_uptime_ms",
        "Milliseconds since start.",
        app.topics.started.elapsed().as_millis() as u64,
    );
    gauge(
        "topics_per_topic_truncated",
        "1 when per-topic series were cut at metrics.max_series topics.",
        u64::from(truncated),
    );
    t.push_str(
        "# HELP topics_by_class Topics by durability class.\n# TYPE topics_by_class gauge\n",
    );
    for d in classes {
        let _ = writeln!(
            t,
            "topics_by_class{{class=\"{}\"}} {}",
            d.as_str(),
            by_class(d)
        );
    }
    for (name, help) in [
        ("topic_head_seq", "Last seq written."),
        ("topic_earliest_seq", "First live seq."),
        ("topic_records", "Live records."),
        ("topic_bytes", "Live stored bytes."),
    ] {
        let _ = write!(t, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for i in shown.iter().take(max_series) {
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
        for i in shown.iter().take(max_series) {
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
    // The registry (requests, latency, WAL, ...) first, then the topics gauges: one scrape
    // has everything, and `riffle_wal_*` come from the registry only.
    app.metrics_response(req, &t)
}
