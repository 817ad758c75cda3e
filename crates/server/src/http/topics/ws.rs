//! `GET /v0/ws`: the topics API over one WebSocket (RFC 6455, tokio-tungstenite), JSON text
//! frames both ways. Client ops: `subscribe` (one `topic` or a `topics` map, with `tail`,
//! `from_seq`, `node`, `limit`, `max_batch_bytes` and the include flags; Riffle also takes
//! `prefixes`, following every topic whose name starts with one, created later too),
//! `unsubscribe`, `publish` (a write's fields plus `topic` and `return_seqs`) and `ping`.
//! Server ops: `subscribed`, `unsubscribed`, `record`, `caught_up`, `tombstone`,
//! `topic_deleted`, `ack`, `error` and `pong`. A request's `id`, if any, is echoed.
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
use serde_json::{Value, json};
use std::collections::BTreeMap;
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
    handle: Option<TopicHandle>,
    cursor: u64,
    opts: Arc<ReadOpts>,
    caught_up: bool,
}

#[derive(Debug, Deserialize)]
struct TopicStart {
    from_seq: Option<u64>,
    tail: Option<bool>,
}

#[derive(Debug, Deserialize)]
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

    fn error(&mut self, id: &Option<Value>, code: &str, message: String, topic: Option<&str>) {
        let mut v = json!({ "op": "error", "code": code, "message": message });
        if let Some(t) = topic {
            v["topic"] = json!(t);
        }
        if let Some(id) = id {
            v["id"] = id.clone();
        }
        self.send(v);
    }

    /// Read every subscribed topic after its cursor; true if some have more right away.
    fn deliver(&mut self) -> bool {
        let watches = &self.app.topics.watches;
        let mut more = false;
        let mut gone = Vec::new();
        let mut msgs = Vec::new();
        for (name, sub) in self.subs.iter_mut() {
            let Some(handle) = &sub.handle else { continue };
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
                if !self.subs.contains_key(&t.name)
                    && let Ok(h) = engine.topic_open(&t.name)
                {
                    // Created after the subscribe: everything it holds is new.
                    self.subs.insert(
                        t.name.clone(),
                        Sub {
                            handle: Some(h),
                            cursor: 0,
                            opts: opts.clone(),
                            caught_up: false,
                        },
                    );
                }
            }
        }
    }

    async fn op(&mut self, frame: &[u8]) {
        let o: Op = match serde_json::from_slice(frame) {
            Ok(o) => o,
            Err(e) => {
                self.error(
                    &None,
                    "invalid_request",
                    format!("invalid message: {e}"),
                    None,
                );
                return;
            }
        };
        match o.op.as_str() {
            "ping" => {
                let mut v = json!({ "op": "pong" });
                if let Some(id) = &o.id {
                    v["id"] = id.clone();
                }
                self.send(v);
            }
            "subscribe" => self.subscribe(o),
            "unsubscribe" => {
                let names: Vec<String> = o
                    .topic
                    .iter()
                    .cloned()
                    .chain(o.topics.iter().flat_map(|m| m.keys().cloned()))
                    .collect();
                if let Some(ps) = &o.prefixes {
                    self.prefixes.retain(|(p, _)| !ps.contains(p));
                }
                for n in names {
                    let was = self.subs.remove(&n).is_some();
                    let mut v = json!({ "op": "unsubscribed", "topic": n, "was_subscribed": was });
                    if let Some(id) = &o.id {
                        v["id"] = id.clone();
                    }
                    self.send(v);
                }
            }
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
        let mut wanted: Vec<(String, Option<u64>, bool)> = Vec::new();
        if let Some(t) = &o.topic {
            wanted.push((t.clone(), o.from_seq, o.tail.unwrap_or(false)));
        }
        for (t, s) in o.topics.iter().flatten() {
            wanted.push((t.clone(), s.from_seq, s.tail.or(o.tail).unwrap_or(false)));
        }
        for p in o.prefixes.iter().flatten() {
            // Topics under the prefix now: from their head (tail) or from `from_seq`.
            let (topics, _) = self.app.engine.topic_list(p, None, 10_000);
            for t in topics {
                wanted.push((t.name, o.from_seq, o.tail.unwrap_or(false)));
            }
            self.prefixes.push((p.clone(), opts.clone()));
        }
        if wanted.is_empty() && o.prefixes.is_none() {
            self.error(
                &o.id,
                "invalid_request",
                "subscribe needs topic, topics or prefixes".into(),
                None,
            );
            return;
        }
        for (name, from, tail) in wanted {
            if let Err(e) = super::request::check_name(&name) {
                self.error(&o.id, "invalid_request", e.message.clone(), Some(&name));
                continue;
            }
            let (handle, info) = match (
                self.app.engine.topic_open(&name),
                self.app.engine.topic_info(&name, false),
            ) {
                (Ok(h), Ok(i)) => (Some(h), Some(i)),
                (Err(EngineError::NotFound), _) | (_, Err(EngineError::NotFound)) if tail => {
                    (None, None)
                }
                _ => {
                    self.error(
                        &o.id,
                        "topic_not_found",
                        format!("topic {name:?} not found"),
                        Some(&name),
                    );
                    continue;
                }
            };
            let head = info.as_ref().map_or(0, |i| i.head_seq);
            let cursor = if tail { head } else { from.unwrap_or(0) };
            let mut v = json!({
                "op": "subscribed",
                "topic": name,
                "from_seq": cursor,
                "head_seq": head,
                "earliest_seq": info.as_ref().map_or(1, |i| i.earliest_seq),
            });
            if let Some(id) = &o.id {
                v["id"] = id.clone();
            }
            self.send(v);
            self.subs.insert(
                name,
                Sub {
                    handle,
                    cursor,
                    opts: opts.clone(),
                    caught_up: false,
                },
            );
        }
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
        match super::handlers::write_records(self.app, &topic, &body, None).await {
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
                if let Some(id) = &o.id {
                    v["id"] = id.clone();
                }
                self.send(v);
            }
            Err(e) => {
                let code = e.code.unwrap_or("invalid_request");
                self.error(&o.id, code, e.message.clone(), Some(&topic));
            }
        }
    }
}
