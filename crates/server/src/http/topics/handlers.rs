//! The topic endpoints: configuration (`PUT/GET/DELETE /v0/topics/:t`, the listing), writes,
//! diff reads (with long-poll) and record deletes. Each parses and validates, makes one engine
//! call, and renders.

use super::error::{engine, invalid, topic_not_found};
use super::render::{self, Include, Perf};
use super::request::{
    ConfigBody, DeleteBody, DiffBody, MAX_IDEMPOTENCY_KEY, MAX_WAIT_MS, WriteBody, check_chars,
    parse, parse_borrowed, query_flag, query_value,
};
use crate::http::body::ResponseBody;
use crate::http::{ApiError, App};
use bytes::Bytes;
use http::{Response, StatusCode};
use riffle_engine::topic::{DeleteSpec, TopicConfig, TopicInfo, TopicKind, TopicWrite};
use riffle_engine::{Clock, EngineError, SystemClock};
use serde_json::{Value, json};
use std::time::Duration;

type Answer = Result<Response<ResponseBody>, ApiError>;

fn now() -> i64 {
    SystemClock.now_ms()
}

/// A topic's state as `GET /v0/topics/:t` shows it.
fn info_json(i: &TopicInfo) -> Value {
    let now = now();
    let activity = i.last_write_ts.max(i.last_read_ts);
    let mut v = json!({
        "topic": i.name,
        "type": match i.config.kind { TopicKind::Log => "log", TopicKind::Queue => "queue" },
        "head_seq": i.head_seq,
        "earliest_seq": i.earliest_seq,
        "next_seq": i.head_seq + 1,
        "count": i.count,
        "bytes": i.bytes,
        "config": render::config(&i.config),
        "effective_priority": render::effective_priority(&i.config, activity, now),
        "last_write_ts": i.last_write_ts,
        "last_read_ts": i.last_read_ts,
    });
    if let Some(q) = &i.queue {
        v["queue"] = json!({ "ready": q.ready, "in_flight": q.in_flight,
                             "dead_lettered": q.dead_lettered });
    }
    v
}

pub async fn put(app: &App, topic: &str, body: Bytes) -> Answer {
    let perf = Perf::start();
    let cfg: ConfigBody = parse(&body)?;
    let storage = app.engine.has_storage();
    let (base, fresh) = match app.engine.topic_info(topic, false) {
        Ok(i) => (i.config, false),
        Err(EngineError::NotFound) => (TopicConfig::default(), true),
        Err(e) => return Err(engine(topic, e)),
    };
    let config = cfg.apply(topic, base, fresh, storage)?;
    let put = app
        .engine
        .topic_put(topic, config)
        .await
        .map_err(|e| engine(topic, e))?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let v =
        json!({ "topic": topic, "created": put.created, "config": render::config(&put.config) });
    Ok(render::json_response(status, v, &perf))
}

pub fn get(app: &App, topic: &str, query: Option<&str>) -> Answer {
    let perf = Perf::start();
    let touch = query_flag(query, "touch", true)?;
    let info = app
        .engine
        .topic_info(topic, touch)
        .map_err(|e| engine(topic, e))?;
    Ok(render::json_response(
        StatusCode::OK,
        info_json(&info),
        &perf,
    ))
}

pub fn list(app: &App, query: Option<&str>) -> Answer {
    let perf = Perf::start();
    let prefix = query_value(query, "prefix").unwrap_or_default();
    let touch = query_flag(query, "touch", false)?;
    let (page_size, after) = super::request::page(query)?;
    let now = now();
    // Names outside the caller's grants are never shown, nor named by the cursor.
    let cred = crate::http::access::current();
    let (topics, more) = super::request::visible_page(
        page_size,
        after,
        |after, n| app.engine.topic_list(&prefix, after, n),
        |i| cred.as_ref().is_none_or(|c| c.covers(&i.name)),
        |i| &i.name,
    );
    if touch {
        // `touch=true` is a read of every topic listed, as a single-topic GET's (which shows
        // the state from before its touch, as the page does); one deleted meanwhile is skipped.
        for i in &topics {
            let _ = app.engine.topic_info(&i.name, true);
        }
    }
    let items: Vec<Value> = topics
        .iter()
        .map(|i| {
            json!({
                "topic": i.name,
                "head_seq": i.head_seq,
                "earliest_seq": i.earliest_seq,
                "count": i.count,
                "bytes": i.bytes,
                "durable": i.config.durability == riffle_engine::Durability::Fsync,
                "effective_priority": render::effective_priority(
                    &i.config, i.last_write_ts.max(i.last_read_ts), now),
            })
        })
        .collect();
    let mut v = json!({ "topics": items });
    if more && let Some(last) = topics.last() {
        v["next_cursor"] = super::request::next_cursor(&last.name);
    }
    Ok(render::json_response(StatusCode::OK, v, &perf))
}

pub async fn delete_topic(app: &App, topic: &str, query: Option<&str>) -> Answer {
    let perf = Perf::start();
    let if_empty = query_flag(query, "if_empty", false)?;
    let removed = app
        .engine
        .topic_remove(topic, if_empty)
        .await
        .map_err(|e| engine(topic, e))?;
    let v = json!({ "topic": topic, "deleted": removed.existed,
                    "routers_removed": removed.routers_removed });
    Ok(render::json_response(StatusCode::OK, v, &perf))
}

/// Parse a write's body and write its records (for `POST /v0/topics/:t` and the WebSocket's
/// `publish`).
pub(super) async fn write_records(
    app: &App,
    topic: &str,
    body: &Bytes,
    header_key: Option<String>,
    websocket: bool,
) -> Result<riffle_engine::topic::TopicWritten, ApiError> {
    let mut w: WriteBody = parse_borrowed(body)?;
    if !websocket {
        w.http_only()?;
    }
    let records = w.records(body)?;
    let idempotency_key = w.idempotency_key.take().or(header_key);
    // The body's key or, failing that, the header's: checked once, whichever it is.
    if let Some(k) = &idempotency_key {
        check_chars("idempotency_key", k, MAX_IDEMPOTENCY_KEY)?;
    }
    if w.config.is_some() {
        // An inline configuration is topic configuration: `admin`.
        let cred = crate::http::access::current();
        crate::http::access::check_names(cred.as_ref(), [topic], crate::http::auth::Scopes::ADMIN)?;
    }
    let create = match (w.create, &w.config) {
        (Some(false), _) => None,
        (_, None) => Some(app.engine.default_topic_config()),
        (_, Some(super::request::Object(c))) => {
            let cfg = c.apply(
                topic,
                TopicConfig::default(),
                true,
                app.engine.has_storage(),
            )?;
            cfg.auto_create.then_some(cfg)
        }
    };
    let out = app
        .engine
        .topic_write(
            topic,
            TopicWrite {
                records,
                idempotency_key,
                create,
            },
        )
        .await
        .map_err(|e| engine(topic, e))?;
    Ok(out)
}

pub async fn write(
    app: &App,
    topic: &str,
    query: Option<&str>,
    header_key: Option<String>,
    body: Bytes,
) -> Answer {
    let mut perf = Perf::start();
    let return_seqs = query_flag(query, "return_seqs", true)?;
    let out = write_records(app, topic, &body, header_key, false).await?;
    perf.timing = out.timing;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // Written by hand: this is the hot path, and the names are plain (no escaping needed).
    let mut n = itoa::Buffer::new();
    let mut b = Vec::with_capacity(
        192 + if return_seqs {
            8 * out.count as usize
        } else {
            0
        },
    );
    b.extend_from_slice(b"{\"topic\":\"");
    b.extend_from_slice(topic.as_bytes());
    b.push(b'"');
    for (k, v) in [("first_seq", out.first_seq), ("last_seq", out.last_seq)] {
        b.extend_from_slice(b",\"");
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(b"\":");
        b.extend_from_slice(n.format(v).as_bytes());
    }
    if return_seqs {
        b.extend_from_slice(b",\"seqs\":[");
        for (i, s) in (out.first_seq..=out.last_seq).enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(n.format(s).as_bytes());
        }
        b.push(b']');
    }
    b.extend_from_slice(b",\"head_seq\":");
    b.extend_from_slice(n.format(out.head_seq).as_bytes());
    b.extend_from_slice(b",\"count\":");
    b.extend_from_slice(n.format(out.count).as_bytes());
    b.extend_from_slice(if out.created {
        b",\"created\":true"
    } else {
        b",\"created\":false"
    });
    b.extend_from_slice(if out.deduped {
        b",\"deduped\":true,"
    } else {
        b",\"deduped\":false,"
    });
    render::field(&mut b, "performance", &perf.json());
    b.push(b'}');
    Ok(render::raw_json(status, Bytes::from(b)))
}

pub async fn diff(app: &App, topic: &str, body: Bytes) -> Answer {
    let mut perf = Perf::start();
    let mut b: DiffBody = parse(&body)?;
    let q = b.query();
    let inc = Include {
        tags: b.include_tags,
        meta: b.include_meta.unwrap_or(true),
        data: true,
    };
    let wait = Duration::from_millis(b.wait_ms.min(MAX_WAIT_MS));
    let _slot = if wait.is_zero() {
        None
    } else {
        Some(app.live_slot(crate::http::metrics::LiveKind::LongPoll)?)
    };
    let mut handle = app.engine.topic_open(topic).map_err(|e| engine(topic, e))?;
    let deadline = tokio::time::Instant::now() + wait;
    // A wait ends at the credential's expiry, with a 401: what arrives later is not its to read.
    let expiry = crate::http::access::expiry();
    let d = loop {
        let d = handle.diff(&q).map_err(|e| engine(topic, e))?;
        let nothing =
            d.records.is_empty() && d.tombstone.is_none() && d.next_from_seq == q.from_seq;
        if !nothing || wait.is_zero() || app.shutdown.is_cancelled() {
            break d;
        }
        tokio::select! {
            () = handle.changed() => {}
            () = tokio::time::sleep_until(deadline) => break handle.diff(&q).map_err(|e| engine(topic, e))?,
            () = app.shutdown.cancelled() => break d,
            () = crate::http::access::expired(expiry) => {
                return Err(crate::http::access::expired_error());
            }
        }
        if handle.is_removed() {
            return Err(topic_not_found(topic));
        }
    };
    perf.scanned = Some(d.scanned);
    let mut out = Vec::with_capacity(256 + d.records.iter().map(|r| r.stored_len()).sum::<usize>());
    out.extend_from_slice(b"{");
    render::field(&mut out, "topic", &json!(topic));
    out.extend_from_slice(b",\"records\":");
    render::records(&mut out, &d.records, inc);
    out.push(b',');
    render::field(&mut out, "next_from_seq", &json!(d.next_from_seq));
    out.push(b',');
    render::field(&mut out, "head_seq", &json!(d.head_seq));
    out.push(b',');
    render::field(&mut out, "earliest_seq", &json!(d.earliest_seq));
    out.push(b',');
    render::field(&mut out, "caught_up", &json!(d.next_from_seq == d.head_seq));
    out.push(b',');
    let tomb = d.tombstone.as_ref().map_or(Value::Null, |t| {
        render::tombstone(t, d.earliest_seq, d.head_seq)
    });
    render::field(&mut out, "tombstone", &tomb);
    out.push(b',');
    render::field(&mut out, "lag", &json!(d.head_seq - d.next_from_seq));
    out.push(b',');
    render::field(&mut out, "performance", &perf.json());
    out.push(b'}');
    Ok(render::raw_json(StatusCode::OK, Bytes::from(out)))
}

pub async fn delete_records(app: &App, topic: &str, body: Bytes) -> Answer {
    let perf = Perf::start();
    let b: DeleteBody = parse(&body)?;
    let tag = b.tag_match()?;
    if b.before_seq.is_none() && tag.is_none() {
        return Err(invalid("a delete needs before_seq, match, or both"));
    }
    let d = app
        .engine
        .topic_delete_records(
            topic,
            &DeleteSpec {
                before_seq: b.before_seq,
                tag,
            },
        )
        .await
        .map_err(|e| engine(topic, e))?;
    let v = json!({
        "topic": topic,
        "deleted": d.deleted,
        "earliest_seq": d.earliest_seq,
        "head_seq": d.head_seq,
        "count": d.count,
        "bytes": d.bytes,
    });
    Ok(render::json_response(StatusCode::OK, v, &perf))
}
