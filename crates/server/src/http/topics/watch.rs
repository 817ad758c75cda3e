//! Multiplexed watch: `POST /v0/watch` makes a session (its topics, cursors and options) named
//! by an unguessable `wid`; `GET /v0/watch/:wid` streams it as SSE. Delivery is driven by the
//! engine's per-topic notifications: the stream reads every topic after each wake-up, and a
//! handle's notification is marked seen before the read it triggers, so a write between the
//! read and the next wait wakes it again (no missed wake-ups, no polling).
//!
//! The session's cursors are the server's: a reconnect continues where the last stream
//! stopped; `Last-Event-ID` (a composite cursor) can only move them back.

use super::error::{engine, invalid};
use super::render::{self, Include, Perf};
use super::request::{Nodes, check_name, clamp_limit, parse, query_flag};
use crate::http::body::ResponseBody;
use crate::http::{ApiError, App, sse};
use base64::Engine as _;
use bytes::BytesMut;
use futures_util::future::select_all;
use http::request::Parts;
use http::{Response, StatusCode, header};
use http_body::Frame;
use http_body_util::StreamBody;
use parking_lot::Mutex;
use riffle_engine::topic::{DiffQuery, GapReason};
use riffle_engine::{Clock, EngineError, SystemClock, TopicHandle};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const MAX_TOPICS: usize = 256;
const SESSION_TTL: Duration = Duration::from_secs(300);
const DEFAULT_BATCH_BYTES: u64 = 262_144;

/// The live watch sessions, and the renderings they share.
#[derive(Default, Clone)]
pub struct Watches {
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
    rendered: Arc<Mutex<HashMap<RenderKey, Arc<Rendered>>>>,
}

/// What makes two watchers' reads of a topic the same: the incarnation, its change count, the
/// cursor and the read's options (watchers filtering by node render their own).
#[derive(Clone, PartialEq, Eq, Hash)]
struct RenderKey {
    log: u64,
    changes: u64,
    from: u64,
    limit: usize,
    max_bytes: usize,
    include: Include,
}

/// One read of a topic, rendered as event data.
pub(super) struct Rendered {
    pub next_from_seq: u64,
    pub head_seq: u64,
    pub tombstone: Option<serde_json::Value>,
    pub records: Option<Vec<u8>>,
    at: Instant,
}

/// Renderings are shared for this long at most (TTL expiry changes reads without a change).
const RENDER_REUSE: Duration = Duration::from_secs(1);
const RENDER_CACHE: usize = 4096;

/// How a watcher reads its topics.
pub(super) struct ReadOpts {
    pub nodes: Vec<String>,
    pub limit: usize,
    pub max_bytes: usize,
    pub include: Include,
}

/// Read a topic after `from` for a watcher (SSE or WebSocket): from the shared renderings when
/// another watcher read the same, else from the engine (and shared).
pub(super) fn read(
    watches: &Watches,
    s: &ReadOpts,
    name: &str,
    handle: &TopicHandle,
    from: u64,
) -> Result<Arc<Rendered>, EngineError> {
    if handle.is_removed() {
        return Err(EngineError::NotFound);
    }
    let key = s.nodes.is_empty().then(|| RenderKey {
        log: handle.id(),
        changes: handle.change_count(),
        from,
        limit: s.limit,
        max_bytes: s.max_bytes,
        include: s.include,
    });
    if let Some(k) = &key
        && let Some(r) = watches.rendered.lock().get(k)
        && r.at.elapsed() < RENDER_REUSE
    {
        return Ok(r.clone());
    }
    let q = DiffQuery {
        from_seq: from,
        limit: s.limit,
        nodes: s.nodes.clone(),
        max_bytes: s.max_bytes,
    };
    let d = handle.diff(&q)?;
    let tombstone = d.tombstone.as_ref().map(|t| {
        let mut v = render::tombstone(t, d.earliest_seq, d.head_seq);
        v["topic"] = json!(name);
        v
    });
    // The cursor the records follow: a cursor past a re-created topic's head is stale (the
    // old incarnation's), and the records after its tombstone start over from `gap_to`.
    let after = match &d.tombstone {
        Some(t) if t.reason == GapReason::Recreated => t.gap_to,
        _ => from,
    };
    let records = (!d.records.is_empty()).then(|| {
        let mut data =
            Vec::with_capacity(128 + d.records.iter().map(|r| r.stored_len()).sum::<usize>());
        data.extend_from_slice(b"{");
        render::field(&mut data, "topic", &json!(name));
        data.extend_from_slice(b",\"records\":");
        render::records(&mut data, &d.records, s.include);
        data.push(b',');
        render::field(&mut data, "from_seq", &json!(after));
        data.push(b',');
        render::field(&mut data, "to_seq", &json!(d.next_from_seq));
        data.push(b',');
        render::field(&mut data, "head_seq", &json!(d.head_seq));
        data.push(b'}');
        data
    });
    let r = Arc::new(Rendered {
        next_from_seq: d.next_from_seq,
        head_seq: d.head_seq,
        tombstone,
        records,
        at: Instant::now(),
    });
    if let Some(k) = key {
        let mut cache = watches.rendered.lock();
        if cache.len() >= RENDER_CACHE {
            cache.retain(|_, r| r.at.elapsed() < RENDER_REUSE);
            if cache.len() >= RENDER_CACHE {
                cache.clear();
            }
        }
        cache.insert(k, r.clone());
    }
    Ok(r)
}

struct Session {
    opts: ReadOpts,
    heartbeat: Duration,
    /// Topic → cursor (the last seq delivered or skipped), in name order.
    cursors: Mutex<BTreeMap<String, u64>>,
    /// Topics created under these join the session.
    prefixes: Vec<String>,
    /// The credential that created it (auth on): only it may open its stream.
    owner: Option<[u8; 32]>,
    /// Streams open on it, and when the last one closed.
    state: Mutex<(usize, Instant)>,
    /// The newest stream opened on the session; changed under the `cursors` lock. An older
    /// stream still running (its client left, and the server has not noticed yet) must not
    /// advance the cursors the newer one reads from: it ends at its next step.
    generation: std::sync::atomic::AtomicU64,
}

impl Session {
    /// Change the cursors with `change` and return the composite cursor after it, unless a
    /// newer stream took the session over (`generation` is not the newest): then nothing
    /// changes, and the stream of `generation` ends.
    fn advance(
        &self,
        generation: u64,
        change: impl FnOnce(&mut BTreeMap<String, u64>),
    ) -> Option<String> {
        let mut c = self.cursors.lock();
        if self.generation.load(Ordering::SeqCst) != generation {
            return None;
        }
        change(&mut c);
        Some(composite(&c))
    }
}

impl Watches {
    /// Forget sessions with no open stream for longer than the session TTL.
    fn sweep(&self) {
        let now = Instant::now();
        self.sessions.lock().retain(|_, s| {
            let (open, since) = *s.state.lock();
            open > 0 || now.duration_since(since) < SESSION_TTL
        });
    }

    pub fn count(&self) -> usize {
        self.sessions.lock().len()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicStart {
    #[serde(default)]
    from_seq: u64,
    #[serde(default)]
    tail: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchBody {
    node: Option<Nodes>,
    #[serde(default)]
    topics: BTreeMap<String, super::request::Object<TopicStart>>,
    limit: Option<u64>,
    max_batch_bytes: Option<u64>,
    heartbeat_ms: Option<u64>,
    include_meta: Option<bool>,
    #[serde(default)]
    include_tags: bool,
    include_data: Option<bool>,
    consistency: Option<String>,
    /// Riffle's addition: follow every topic whose name starts with one of these (those that
    /// exist from their head, those created later from their start).
    #[serde(default)]
    prefixes: Vec<String>,
}

fn new_wid() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness for a session id: {e}"),
        )
        .code("internal")
    })?;
    Ok(format!(
        "wid_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// `POST /v0/watch`.
pub fn create(
    app: &App,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let perf = Perf::start();
    let lenient = query_flag(query, "lenient", false)?;
    let b: WatchBody = parse(body)?;
    if (b.topics.is_empty() && b.prefixes.is_empty()) || b.topics.len() > MAX_TOPICS {
        return Err(invalid(format!(
            "topics must name 1 to {MAX_TOPICS} topics (or prefixes be given)"
        )));
    }
    if b.prefixes.len() > MAX_TOPICS || b.prefixes.iter().any(|p| p.is_empty() || p.len() > 255) {
        return Err(invalid(
            "prefixes must be 1 to 256 non-empty names' beginnings",
        ));
    }
    if let Some(c) = &b.consistency
        && c != "eventual"
        && c != "strong"
    {
        return Err(invalid("consistency must be \"eventual\" or \"strong\""));
    }
    let cred = crate::http::access::current();
    let read = crate::http::auth::Scopes::READ;
    crate::http::access::check_names(cred.as_ref(), b.topics.keys().map(String::as_str), read)?;
    for p in &b.prefixes {
        crate::http::access::check_prefix(cred.as_ref(), p, read)?;
    }
    let mut cursors = BTreeMap::new();
    let mut shown = serde_json::Map::new();
    for (name, super::request::Object(start)) in &b.topics {
        check_name(name)?;
        let info = match app.engine.topic_info(name, false) {
            Ok(i) => i,
            Err(EngineError::NotFound) if lenient => continue,
            // Tailing a topic that does not exist yet: delivered from its creation on.
            Err(EngineError::NotFound) if start.tail => {
                cursors.insert(name.clone(), 0);
                shown.insert(
                    name.clone(),
                    json!({ "from_seq": 0, "head_seq": 0, "earliest_seq": 1 }),
                );
                continue;
            }
            Err(e) => return Err(engine(name, e)),
        };
        let from = if start.tail {
            info.head_seq
        } else {
            start.from_seq
        };
        cursors.insert(name.clone(), from);
        shown.insert(
            name.clone(),
            json!({ "from_seq": from, "head_seq": info.head_seq, "earliest_seq": info.earliest_seq }),
        );
    }
    for p in &b.prefixes {
        let (topics, _) = app.engine.topic_list(p, None, MAX_TOPICS * 16);
        for i in topics {
            if !cursors.contains_key(&i.name) {
                cursors.insert(i.name.clone(), i.head_seq);
                shown.insert(
                    i.name.clone(),
                    json!({ "from_seq": i.head_seq, "head_seq": i.head_seq, "earliest_seq": i.earliest_seq }),
                );
            }
        }
    }
    if cursors.is_empty() && b.prefixes.is_empty() {
        return Err(invalid("none of the topics exist"));
    }
    let watches = &app.topics.watches;
    watches.sweep();
    let max_sessions = app.config.limits.max_watch_sessions;
    if max_sessions > 0 && watches.count() as u64 >= max_sessions {
        return Err(
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many watch sessions")
                .code("throttled")
                .reason("max_watch_sessions")
                .detail(json!({ "limit": "max_watch_sessions", "max": max_sessions })),
        );
    }
    let session = Session {
        opts: ReadOpts {
            nodes: b.node.map(Nodes::into_vec).unwrap_or_default(),
            limit: clamp_limit(b.limit, 256),
            max_bytes: b
                .max_batch_bytes
                .unwrap_or(DEFAULT_BATCH_BYTES)
                .clamp(1, 8 << 20) as usize,
            include: Include {
                tags: b.include_tags,
                meta: b.include_meta.unwrap_or(true),
                data: b.include_data.unwrap_or(true),
            },
        },
        heartbeat: Duration::from_millis(b.heartbeat_ms.unwrap_or(15_000).clamp(1000, 60_000)),
        cursors: Mutex::new(cursors),
        prefixes: b.prefixes,
        owner: cred.map(|c| c.id),
        state: Mutex::new((0, Instant::now())),
        generation: Default::default(),
    };
    let wid = new_wid()?;
    watches
        .sessions
        .lock()
        .insert(wid.clone(), Arc::new(session));
    let v = json!({
        "wid": wid,
        "stream_url": format!("/v0/watch/{wid}"),
        "session_ttl_ms": SESSION_TTL.as_millis() as u64,
        "topics": shown,
    });
    Ok(render::json_response(StatusCode::OK, v, &perf))
}

/// Whether an `Accept` header admits an event stream (absent, `*/*`, `text/*` do).
pub fn accepts_sse(req: &Parts) -> bool {
    let Some(accept) = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    accept.split(',').any(|t| {
        let t = t.split(';').next().unwrap_or("").trim();
        t.eq_ignore_ascii_case("text/event-stream")
            || t == "*/*"
            || t.eq_ignore_ascii_case("text/*")
    })
}

/// The composite cursor of a session: base64url of `{topic: seq, ...}`.
fn composite(cursors: &BTreeMap<String, u64>) -> String {
    let text = serde_json::to_string(cursors).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_composite(id: &str) -> Option<BTreeMap<String, u64>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id.trim().trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Releases a session's open-stream count when a stream ends (or its client goes away).
struct Open(Arc<Session>);

impl Drop for Open {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.0 = st.0.saturating_sub(1);
        st.1 = Instant::now();
    }
}

/// `GET /v0/watch/:wid`.
pub fn stream(app: &App, wid: &str, req: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    if !accepts_sse(req) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "a watch stream is text/event-stream",
        )
        .code("not_acceptable"));
    }
    app.topics.watches.sweep();
    let session = app
        .topics
        .watches
        .sessions
        .lock()
        .get(wid)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown or expired watch session")
                .code("not_found")
        })?;
    if let Some(owner) = session.owner
        && crate::http::access::current().map(|c| c.id) != Some(owner)
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a watch stream is opened with the credential that created the session",
        )
        .code("unauthorized")
        .with_header("www-authenticate", "Bearer"));
    }
    let last = req
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(decode_composite);
    let generation = {
        let mut cursors = session.cursors.lock();
        for (topic, seq) in last.into_iter().flatten() {
            if let Some(c) = cursors.get_mut(&topic)
                && seq < *c
            {
                *c = seq;
            }
        }
        session.generation.fetch_add(1, Ordering::SeqCst) + 1
    };
    session.state.lock().0 += 1;
    let open = Open(session.clone());
    let engine = app.engine.clone();
    let shutdown = app.shutdown.clone();
    let watches = app.topics.watches.clone();
    let slot = app.live_slot(crate::http::metrics::LiveKind::Watch)?;
    let expires = crate::http::access::expiry();
    let events = async_stream::stream! {
        let _slot = slot;
        let _open = open;
        let s = &session;
        let mut out = BytesMut::new();
        out.extend_from_slice(b"retry: 2000\n\n");
        // Handles first: a write after a handle is open wakes it, whatever the reads saw.
        let mut creations = engine.topic_creations();
        let mut pending: Vec<String> = s.cursors.lock().keys().cloned().collect();
        // Whether topics may have been created under a followed prefix since the last look.
        let mut rescan = false;
        // Per topic: its name, handle, whether it is caught up, whether it was read yet.
        let mut handles: Vec<(String, TopicHandle, bool, bool)> = Vec::new();
        yield Ok::<_, Infallible>(Frame::data(out.split().freeze()));
        let heartbeat = tokio::time::sleep(s.heartbeat);
        tokio::pin!(heartbeat);
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        let expired = crate::http::access::expired(expires);
        tokio::pin!(expired);
        'stream: loop {
            // Topics not there yet (tailed before their creation) join once they exist.
            // Topics created under a followed prefix join, from their start.
            if std::mem::take(&mut rescan) {
                for p in &s.prefixes {
                    let (topics, _) = engine.topic_list(p, None, MAX_TOPICS * 16);
                    let mut c = s.cursors.lock();
                    for i in topics {
                        if !c.contains_key(&i.name) {
                            c.insert(i.name.clone(), 0);
                            pending.push(i.name);
                        }
                    }
                }
            }
            pending.retain(|name| match engine.topic_open(name) {
                Ok(h) => {
                    handles.push((name.clone(), h, false, false));
                    false
                }
                Err(_) => true,
            });
            let mut more = false;
            let mut i = 0;
            while i < handles.len() {
                let (name, handle, caught_up, read_once) = &mut handles[i];
                let first_read = !std::mem::replace(read_once, true);
                let from = s.cursors.lock().get(name.as_str()).copied().unwrap_or(0);
                let d = match read(&watches, &s.opts, name, handle, from) {
                    Ok(d) => d,
                    Err(_) => {
                        // A data frame like the others: its `id:` is the session's cursor map,
                        // now without the topic (what a reconnect resumes from).
                        let Some(id) = s.advance(generation, |c| {
                            c.remove(name.as_str());
                        }) else {
                            break 'stream;
                        };
                        let data = json!({ "topic": name }).to_string();
                        sse::event(&mut out, Some("topic-deleted"), Some(&id), data.as_bytes());
                        handles.remove(i);
                        continue;
                    }
                };
                let Some(id) = s.advance(generation, |c| {
                    c.insert(name.clone(), d.next_from_seq);
                }) else {
                    break 'stream;
                };
                if let Some(t) = &d.tombstone {
                    let mut v = t.clone();
                    if first_read && v["reason"] != "recreated" {
                        // The documented reason for an eviction gap found by a stream's first
                        // read: the cursor the session started from was already gone.
                        v["reason"] = json!("from_seq_too_old");
                    }
                    sse::event(&mut out, Some("tombstone"), Some(&id), v.to_string().as_bytes());
                }
                if let Some(data) = &d.records {
                    sse::event(&mut out, Some("record"), Some(&id), data);
                }
                if d.next_from_seq >= d.head_seq {
                    if !*caught_up {
                        *caught_up = true;
                        let data = json!({ "topic": name, "head_seq": d.head_seq }).to_string();
                        sse::event(&mut out, Some("caught-up"), Some(&id), data.as_bytes());
                    }
                } else {
                    *caught_up = false;
                    more = true;
                }
                i += 1;
                if out.len() >= 256 << 10 {
                    yield Ok(Frame::data(out.split().freeze()));
                }
            }
            if !out.is_empty() {
                heartbeat.as_mut().reset(tokio::time::Instant::now() + s.heartbeat);
                yield Ok(Frame::data(out.split().freeze()));
            }
            if more {
                continue;
            }
            if handles.is_empty() && pending.is_empty() && s.prefixes.is_empty() {
                break;
            }
            let woken = async {
                if handles.is_empty() {
                    std::future::pending::<()>().await;
                }
                select_all(handles.iter_mut().map(|(_, h, _, _)| Box::pin(h.changed()))).await;
            };
            let created = async {
                if pending.is_empty() && s.prefixes.is_empty() {
                    std::future::pending::<()>().await;
                }
                let _ = creations.changed().await;
            };
            tokio::select! {
                () = woken => {}
                () = created => rescan = true,
                () = &mut heartbeat => {
                    sse::comment(&mut out, &format!("hb {}", SystemClock.now_ms()));
                    yield Ok(Frame::data(out.split().freeze()));
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + s.heartbeat);
                }
                () = &mut stopping => {
                    sse::shutting_down(&mut out);
                    yield Ok(Frame::data(out.split().freeze()));
                    break;
                }
                () = &mut expired => {
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
