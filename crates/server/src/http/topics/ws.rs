//! `GET /v0/ws`: the topics API over one WebSocket (RFC 6455, tokio-tungstenite), JSON text
//! frames both ways. Client ops: `subscribe` (one `topic` or a `topics` map, with `tail`,
//! `from_seq`, `node`, `limit`, `max_batch_bytes` and the include flags; Riffle also takes
//! `prefixes`, following every topic whose name starts with one, created later too),
//! `unsubscribe`, `publish` (a write's fields plus `topic` and `return_seqs`) and `ping`.
//! Server ops: `subscribed`, `unsubscribed`, `record`, `caught_up`, `tombstone`,
//! `topic_deleted`, `ack`, `error` and `pong`. Each client op gets exactly one reply
//! (`subscribed`, `unsubscribed`, `ack`, `pong` or `error`), its `id`, if any, echoed; a
//! subscribe that cannot be served whole subscribes nothing.
//!
//! One task per connection reads the client's frames and the subscribed topics' notifications
//! and writes what is due; reads go through the watchers' shared renderings. Writing waits
//! for the socket (backpressure: the server holds one batch per topic at most); a client that
//! reads nothing for `SLOW_CLIENT` is sent an `error` with its cursors and closed.

use super::render::Include;
use super::watch::{ReadOpts, read};
use crate::http::App;
use bytes::Bytes;
use futures_util::future::select_all;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use riffle_engine::{EngineError, TopicHandle};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// A client that reads nothing for this long is told and closed.
const SLOW_CLIENT: Duration = Duration::from_secs(30);
/// Keep-alive pings.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Largest frame a client may send.
const MAX_FRAME: usize = 16 << 20;
/// How long a closing handshake may take before the connection goes regardless.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One subscribed topic.
struct Sub {
    /// None: tailed before it exists (it joins when it is created).
    handle: Option<TopicHandle>,
    cursor: u64,
    opts: Arc<ReadOpts>,
    caught_up: bool,
    /// The followed prefix it joined through; None: named by a subscribe.
    via: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicStart {
    from_seq: Option<u64>,
    tail: Option<bool>,
}

/// A client's message. Unknown fields are refused; a `publish` also holds a write's fields,
/// which its write parses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Op {
    op: String,
    id: Option<Value>,
    topic: Option<String>,
    topics: Option<BTreeMap<String, TopicStart>>,
    prefixes: Option<Vec<String>>,
    tail: Option<bool>,
    from_seq: Option<u64>,
    node: Option<Value>,
    limit: Option<u64>,
    max_batch_bytes: Option<u64>,
    include_meta: Option<bool>,
    include_tags: Option<bool>,
    include_data: Option<bool>,
    return_seqs: Option<bool>,
    #[serde(default, rename = "records")]
    _records: Option<IgnoredAny>,
    #[serde(default, rename = "idempotency_key")]
    _idempotency_key: Option<IgnoredAny>,
    #[serde(default, rename = "create")]
    _create: Option<IgnoredAny>,
    #[serde(default, rename = "config")]
    _config: Option<IgnoredAny>,
    #[serde(default, rename = "disable_backpressure")]
    _disable_backpressure: Option<IgnoredAny>,
}

/// The 101 answer to a WebSocket upgrade request with `key`.
pub fn accept_response(key: &[u8]) -> String {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Serve a WebSocket session on `io` (the 101 is written), `part` being bytes read past the
/// request head.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(io: S, part: Vec<u8>, app: &App) {
    // Small buffers: the default 128 KiB read buffer, zero-filled, made an idle socket cost
    // that much; clients send small requests.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let ws = WebSocketStream::from_partially_read(io, part, Role::Server, Some(config)).await;
    Session {
        app,
        subs: BTreeMap::new(),
        prefixes: Vec::new(),
        muted: BTreeSet::new(),
        out: Vec::new(),
    }
    .run(ws)
    .await;
}

/// End a session from the server's side: `last` (an `error`), a Close frame with `why`'s
/// code and reason, then the client's Close awaited (RFC 6455 §7.1.2), all within
/// `CLOSE_WAIT`; the connection goes after that.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    stream: &mut SplitStream<WebSocketStream<S>>,
    last: Value,
    why: (CloseCode, &'static str),
) {
    let handshake = async {
        let (code, reason) = why;
        sink.feed(Message::text(last.to_string())).await?;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        sink.send(Message::Close(Some(frame))).await?;
        // What the client sent meanwhile is dropped: the session is over.
        while let Some(m) = stream.next().await {
            if let Message::Close(_) = m? {
                break;
            }
        }
        Ok::<(), tungstenite::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, handshake).await;
}

struct Session<'a> {
    app: &'a App,
    subs: BTreeMap<String, Sub>,
    /// Prefixes followed, with the options of their subscribe.
    prefixes: Vec<(String, Arc<ReadOpts>)>,
    /// Topics under a followed prefix that were unsubscribed by name: they do not join again
    /// when another topic is created.
    muted: BTreeSet<String>,
    /// Messages due, written at the end of each step.
    out: Vec<String>,
}

impl Session<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, ws: WebSocketStream<S>) {
        let (mut sink, mut stream) = ws.split();
        let mut creations = self.app.engine.topic_creations();
        let stopping = self.app.shutdown.cancelled();
        tokio::pin!(stopping);
        let expired = crate::http::access::expired(crate::http::access::expiry());
        tokio::pin!(expired);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let more = self.deliver();
            if !self.out.is_empty() {
                let msgs: Vec<Message> = self.out.drain(..).map(Message::text).collect();
                let mut batch = futures_util::stream::iter(msgs.into_iter().map(Ok));
                let sent = tokio::time::timeout(SLOW_CLIENT, sink.send_all(&mut batch)).await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let cursors: BTreeMap<&String, u64> =
                            self.subs.iter().map(|(n, s)| (n, s.cursor)).collect();
                        let e = json!({ "op": "error", "code": "slow_consumer",
                            "message": "the client read nothing for 30 s; resume from cursors",
                            "cursors": cursors });
                        let why = (CloseCode::Policy, "slow consumer");
                        return close(&mut sink, &mut stream, e, why).await;
                    }
                }
            }
            if more {
                continue;
            }
            let woken = async {
                let handles: Vec<_> = self
                    .subs
                    .values_mut()
                    .filter_map(|s| s.handle.as_mut())
                    .map(|h| Box::pin(h.changed()))
                    .collect();
                if handles.is_empty() {
                    std::future::pending::<()>().await;
                }
                select_all(handles).await;
            };
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.op(t.as_str().as_bytes()).await,
                    Some(Ok(Message::Binary(b))) => self.op(&b).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        // Answered (RFC 6455 §5.5.1): tungstenite has queued the Close frame
                        // echoing the client's code; closing the sink sends it.
                        let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
                        return;
                    }
                    Some(Err(_)) | None => return,
                },
                () = woken => {}
                _ = creations.changed() => self.join_created(),
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        return;
                    }
                }
                () = &mut stopping => {
                    let e = json!({ "op": "error", "code": "server_shutting_down",
                        "message": "the server is shutting down" });
                    let why = (CloseCode::Away, "server shutting down");
                    return close(&mut sink, &mut stream, e, why).await;
                }
                () = &mut expired => {
                    let e = json!({ "op": "error", "code": "credential_expired",
                        "message": crate::http::access::EXPIRED_MESSAGE });
                    let why = (CloseCode::Policy, "credential expired");
                    return close(&mut sink, &mut stream, e, why).await;
                }
            }
        }
    }

    fn send(&mut self, v: Value) {
        self.out.push(v.to_string());
    }

    /// The reply to a client op, its `id` echoed.
    fn reply(&mut self, id: &Option<Value>, mut v: Value) {
        if let Some(id) = id {
            v["id"] = id.clone();
        }
        self.send(v);
    }

    fn error(&mut self, id: &Option<Value>, code: &str, message: String, topic: Option<&str>) {
        let mut v = json!({ "op": "error", "code": code, "message": message });
        if let Some(t) = topic {
            v["topic"] = json!(t);
        }
        self.reply(id, v);
    }

    /// Read every subscribed topic after its cursor; true if some have more right away.
    fn deliver(&mut self) -> bool {
        let watches = &self.app.topics.watches;
        let mut more = false;
        let mut gone = Vec::new();
        let mut msgs = Vec::new();
        for (name, sub) in self.subs.iter_mut() {
            let Some(handle) = &sub.handle else {
                // Tailed before it exists: caught up with its (empty) head, as a topic would be.
                if !std::mem::replace(&mut sub.caught_up, true) {
                    let v = json!({ "op": "caught_up", "topic": name, "head_seq": 0 });
                    msgs.push(v.to_string());
                }
                continue;
            };
            let d = match read(watches, &sub.opts, name, handle, sub.cursor) {
                Ok(d) => d,
                Err(_) => {
                    gone.push(name.clone());
                    continue;
                }
            };
            sub.cursor = d.next_from_seq;
            if let Some(t) = &d.tombstone {
                let mut v = t.clone();
                v["op"] = json!("tombstone");
                msgs.push(v.to_string());
            }
            if let Some(data) = &d.records {
                // The shared rendering is `{"topic":...}`: the op goes in front.
                let mut m = String::with_capacity(data.len() + 16);
                m.push_str("{\"op\":\"record\",");
                m.push_str(std::str::from_utf8(&data[1..]).unwrap_or("}"));
                msgs.push(m);
            }
            if d.next_from_seq >= d.head_seq {
                if !sub.caught_up {
                    sub.caught_up = true;
                    let v = json!({ "op": "caught_up", "topic": name, "head_seq": d.head_seq });
                    msgs.push(v.to_string());
                }
            } else {
                sub.caught_up = false;
                more = true;
            }
        }
        self.out.extend(msgs);
        for name in gone {
            self.subs.remove(&name);
            self.send(json!({ "op": "topic_deleted", "topic": name }));
        }
        more
    }

    /// Topics created since: those subscribed before they existed, or under a prefix, join.
    fn join_created(&mut self) {
        let engine = &self.app.engine;
        for sub in self.subs.iter_mut() {
            if sub.1.handle.is_none() {
                sub.1.handle = engine.topic_open(sub.0).ok();
            }
        }
        for (prefix, opts) in self.prefixes.clone() {
            let (topics, _) = engine.topic_list(&prefix, None, 10_000);
            for t in topics {
                if self.subs.contains_key(&t.name) || self.muted.contains(&t.name) {
                    continue;
                }
                // Created after the subscribe: everything it holds is new.
                if let Some((sub, _)) = self.start(&t.name, Some(0), false, &opts, Some(&prefix)) {
                    self.subs.insert(t.name, sub);
                }
            }
        }
    }

    /// A subscription of `name` from `from` (or its head, with `tail`), and what `subscribed`
    /// shows of it. None: the topic does not exist (and is not tailed).
    fn start(
        &self,
        name: &str,
        from: Option<u64>,
        tail: bool,
        opts: &Arc<ReadOpts>,
        via: Option<&str>,
    ) -> Option<(Sub, Value)> {
        let engine = &self.app.engine;
        let (handle, info) = match (engine.topic_open(name), engine.topic_info(name, false)) {
            (Ok(h), Ok(i)) => (Some(h), Some(i)),
            (Err(EngineError::NotFound), _) | (_, Err(EngineError::NotFound)) if tail => {
                (None, None)
            }
            _ => return None,
        };
        let head = info.as_ref().map_or(0, |i| i.head_seq);
        let cursor = if tail { head } else { from.unwrap_or(0) };
        let shown = json!({
            "from_seq": cursor,
            "head_seq": head,
            "earliest_seq": info.as_ref().map_or(1, |i| i.earliest_seq),
        });
        let sub = Sub {
            handle,
            cursor,
            opts: opts.clone(),
            caught_up: false,
            via: via.map(String::from),
        };
        Some((sub, shown))
    }

    async fn op(&mut self, frame: &[u8]) {
        let o: Op = match serde_json::from_slice(frame) {
            Ok(o) => o,
            Err(e) => {
                // A message that is JSON still gets its `id` back.
                let id = serde_json::from_slice::<Value>(frame)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                let msg = format!("invalid message: {e}");
                self.error(&id, "invalid_request", msg, None);
                return;
            }
        };
        match o.op.as_str() {
            "ping" => self.reply(&o.id, json!({ "op": "pong" })),
            "subscribe" => self.subscribe(o),
            "unsubscribe" => self.unsubscribe(o),
            "publish" => self.publish(o, frame).await,
            other => {
                let msg = format!("unknown op {other:?}: subscribe, unsubscribe, publish or ping");
                self.error(&o.id, "invalid_request", msg, None);
            }
        }
    }

    fn subscribe(&mut self, o: Op) {
        let cred = crate::http::access::current();
        let names = o.topic.iter().chain(o.topics.iter().flat_map(|m| m.keys()));
        let read = crate::http::auth::Scopes::READ;
        let denied =
            crate::http::access::check_names(cred.as_ref(), names.map(String::as_str), read)
                .and_then(|()| {
                    o.prefixes
                        .iter()
                        .flatten()
                        .try_for_each(|p| crate::http::access::check_prefix(cred.as_ref(), p, read))
                })
                .err();
        if let Some(e) = denied {
            self.error(&o.id, "forbidden", e.message.clone(), o.topic.as_deref());
            return;
        }
        let nodes = match &o.node {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(_) => {
                self.error(
                    &o.id,
                    "invalid_request",
                    "node must be a string or a list".into(),
                    None,
                );
                return;
            }
        };
        let opts = Arc::new(ReadOpts {
            nodes,
            limit: o.limit.unwrap_or(256).clamp(1, 1000) as usize,
            max_bytes: o.max_batch_bytes.unwrap_or(262_144).clamp(1, 8 << 20) as usize,
            include: Include {
                tags: o.include_tags.unwrap_or(false),
                meta: o.include_meta.unwrap_or(true),
                data: o.include_data.unwrap_or(true),
            },
        });
        let prefixes = o.prefixes.clone().unwrap_or_default();
        let named_none = o.topic.is_none() && o.topics.as_ref().is_none_or(BTreeMap::is_empty);
        if named_none && prefixes.is_empty() {
            let msg = "subscribe needs topic, topics or prefixes".into();
            return self.error(&o.id, "invalid_request", msg, None);
        }
        if prefixes.iter().any(String::is_empty) {
            let msg = "prefixes must be non-empty names' beginnings".into();
            return self.error(&o.id, "invalid_request", msg, None);
        }
        // Named topics first (`topics` over `topic`): every one valid and existing (or tailed),
        // or nothing is subscribed.
        let mut named: BTreeMap<&String, (Option<u64>, bool)> = BTreeMap::new();
        if let Some(t) = &o.topic {
            named.insert(t, (o.from_seq, o.tail.unwrap_or(false)));
        }
        for (t, s) in o.topics.iter().flatten() {
            named.insert(t, (s.from_seq, s.tail.or(o.tail).unwrap_or(false)));
        }
        let mut joined: BTreeMap<String, (Sub, Value)> = BTreeMap::new();
        for (name, (from, tail)) in named {
            if let Err(e) = super::request::check_name(name) {
                return self.error(&o.id, "invalid_request", e.message, Some(name));
            }
            let Some(started) = self.start(name, from, tail, &opts, None) else {
                let msg = format!("topic {name:?} not found");
                return self.error(&o.id, "topic_not_found", msg, Some(name));
            };
            joined.insert(name.clone(), started);
        }
        // Topics under a prefix now, from their head (tail) or `from_seq`; those subscribed
        // already go on as they are.
        for p in &prefixes {
            let (topics, _) = self.app.engine.topic_list(p, None, 10_000);
            for t in topics {
                if self.subs.contains_key(&t.name) || joined.contains_key(&t.name) {
                    continue;
                }
                let tail = o.tail.unwrap_or(false);
                if let Some(started) = self.start(&t.name, o.from_seq, tail, &opts, Some(p)) {
                    joined.insert(t.name, started);
                }
            }
        }
        for p in &prefixes {
            // Following a prefix again: all of it, with this subscribe's options.
            self.muted.retain(|m| !m.starts_with(p.as_str()));
            self.prefixes.retain(|(q, _)| q != p);
            self.prefixes.push((p.clone(), opts.clone()));
        }
        let mut shown = serde_json::Map::new();
        for (name, (sub, v)) in joined {
            self.muted.remove(&name);
            shown.insert(name.clone(), v);
            self.subs.insert(name, sub);
        }
        // The single-topic form also answers flat: `topic` and its three seqs.
        let mut v = match &o.topic {
            Some(t) => {
                let mut v = shown.get(t).cloned().unwrap_or_else(|| json!({}));
                v["topic"] = json!(t);
                v
            }
            None => json!({}),
        };
        v["op"] = json!("subscribed");
        v["topics"] = Value::Object(shown);
        if o.prefixes.is_some() {
            v["prefixes"] = json!(prefixes);
        }
        self.reply(&o.id, v);
    }

    /// Stop delivering the named topics and following the prefixes (with the topics that
    /// joined through them, unless another followed prefix covers them).
    fn unsubscribe(&mut self, o: Op) {
        let names: BTreeSet<&String> = o
            .topic
            .iter()
            .chain(o.topics.iter().flat_map(|m| m.keys()))
            .collect();
        let prefixes = o.prefixes.as_deref().unwrap_or_default();
        if names.is_empty() && prefixes.is_empty() {
            let msg = "unsubscribe needs topic, topics or prefixes".into();
            return self.error(&o.id, "invalid_request", msg, None);
        }
        let mut topics = serde_json::Map::new();
        for &name in &names {
            let was = self.subs.remove(name).is_some();
            if was && self.covered(name).is_some() {
                self.muted.insert(name.clone());
            }
            topics.insert(name.clone(), json!(was));
        }
        let mut followed = serde_json::Map::new();
        for p in prefixes {
            let was = self.prefixes.iter().any(|(q, _)| q == p);
            self.prefixes.retain(|(q, _)| q != p);
            followed.insert(p.clone(), json!(was));
        }
        let orphans: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.via.as_ref().is_some_and(|v| prefixes.contains(v)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in orphans {
            match self.covered(&name) {
                Some(p) => {
                    if let Some(sub) = self.subs.get_mut(&name) {
                        sub.via = Some(p);
                    }
                }
                None => {
                    self.subs.remove(&name);
                    topics.insert(name, json!(true));
                }
            }
        }
        // Only topics a followed prefix would bring back need remembering.
        let prefixes = &self.prefixes;
        self.muted
            .retain(|m| prefixes.iter().any(|(q, _)| m.starts_with(q.as_str())));
        let mut v = json!({ "op": "unsubscribed" });
        if let Some(t) = &o.topic {
            // The single-topic form also answers flat: `topic` and `was_subscribed`.
            v["topic"] = json!(t);
            v["was_subscribed"] = topics.get(t).cloned().unwrap_or(json!(false));
        }
        v["topics"] = Value::Object(topics);
        if o.prefixes.is_some() {
            v["prefixes"] = Value::Object(followed);
        }
        self.reply(&o.id, v);
    }

    /// A followed prefix `name` is under, if any.
    fn covered(&self, name: &str) -> Option<String> {
        self.prefixes
            .iter()
            .find(|(p, _)| name.starts_with(p.as_str()))
            .map(|(p, _)| p.clone())
    }

    async fn publish(&mut self, o: Op, frame: &[u8]) {
        let Some(topic) = o.topic.clone() else {
            self.error(
                &o.id,
                "invalid_request",
                "publish needs a topic".into(),
                None,
            );
            return;
        };
        if let Err(e) = super::request::check_name(&topic) {
            self.error(&o.id, "invalid_request", e.message.clone(), Some(&topic));
            return;
        }
        let cred = crate::http::access::current();
        let allowed = crate::http::access::check_names(
            cred.as_ref(),
            [topic.as_str()],
            crate::http::auth::Scopes::WRITE,
        );
        if let Err(e) = allowed {
            self.error(&o.id, "forbidden", e.message.clone(), Some(&topic));
            return;
        }
        let body = Bytes::copy_from_slice(frame);
        match super::handlers::write_records(self.app, &topic, &body, None, true).await {
            Ok(w) => {
                let mut v = json!({
                    "op": "ack",
                    "topic": topic,
                    "first_seq": w.first_seq,
                    "last_seq": w.last_seq,
                    "head_seq": w.head_seq,
                    "count": w.count,
                    "created": w.created,
                    "deduped": w.deduped,
                });
                if o.return_seqs.unwrap_or(true) {
                    v["seqs"] = json!((w.first_seq..=w.last_seq).collect::<Vec<u64>>());
                }
                self.reply(&o.id, v);
            }
            Err(e) => {
                let code = e.code.unwrap_or("invalid_request");
                self.error(&o.id, code, e.message.clone(), Some(&topic));
            }
        }
    }
}
