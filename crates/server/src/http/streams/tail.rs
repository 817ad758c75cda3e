//! A live SSE response on one stream, as state rather than as a task: where the subscriber
//! is, what it has been sent and when its response ends. The same state is driven two ways:
//! by its connection's own task while it catches up (and always over TLS and HTTP/2), and,
//! once it is caught up on a plain HTTP/1.1 connection, by the stream's fan-out hub
//! ([`crate::fanout`]), which renders each append once for every parked subscriber at the
//! same position and writes it to all of them.
//!
//! Events: a data event per batch (at most [`MAX_EVENT_BYTES`] of a byte stream, whole
//! characters of a text one), each followed by a control event; a control event first
//! (when the read starts at the tail) and as keep-alive after each long-poll interval of
//! quiet; the response ends when the stream closes or goes, the reconnect interval passes,
//! the credential expires (with an `error` event) or the server shuts down.

use super::offset::format_offset;
use super::payload::json_array;
use crate::http::cursor::next_cursor;
use crate::http::slots::Slot;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use riffle_engine::{Clock, Framing, LogHandle, ReadBatch, ReadFrom, SystemClock};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most stored bytes one data event carries (a JSON stream's events end between messages, so
/// a larger message goes whole). A client that stops reading holds at most one event (and
/// TCP's or HTTP/2's buffers) in the server however large the records; a large catch-up is
/// many events.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// What a subscriber is to be sent next.
#[derive(Debug, Clone)]
pub enum Step {
    /// Nothing now.
    Idle,
    /// Events; the response goes on after them.
    Events(Bytes),
    /// The last events (possibly none); the response ends after them.
    Last(Bytes),
}

/// Events rendered for every subscriber at one position with one client cursor.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub step: Step,
    /// The position after them.
    next: u64,
    /// More data is ready past them.
    pub more: bool,
}

/// A rendering shared by the subscribers at `pos` with the client cursor `cursor`.
pub struct Shared {
    pos: u64,
    cursor: Option<Box<str>>,
    pub rendered: Rendered,
}

pub struct SseTail {
    handle: LogHandle,
    pos: u64,
    binary: bool,
    /// The cursor the client echoed, if any (the next cursor must be ahead of it).
    client_cursor: Option<Box<str>>,
    /// No event has been sent yet (the first read at the tail still sends a control event).
    first: bool,
    keepalive: Duration,
    last_sent: Instant,
    ends_at: Instant,
    /// When the request's credential expires.
    expires: Option<Instant>,
    stop: CancellationToken,
    /// The live connection's, given back when the response ends.
    _slot: Slot,
}

// Every parked SSE subscriber holds one (boxed): 160 bytes is an allocator size class, the
// next is 192.
const _: () = assert!(std::mem::size_of::<SseTail>() <= 160);

/// How a live response is set up.
pub struct TailSetup {
    pub pos: u64,
    pub binary: bool,
    pub client_cursor: Option<String>,
    pub keepalive: Duration,
    pub reconnect: Duration,
    pub expires: Option<Instant>,
    pub stop: CancellationToken,
    pub slot: Slot,
}

impl SseTail {
    pub fn new(handle: LogHandle, s: TailSetup) -> Self {
        let now = Instant::now();
        SseTail {
            handle,
            pos: s.pos,
            binary: s.binary,
            client_cursor: s.client_cursor.map(String::into_boxed_str),
            first: true,
            keepalive: s.keepalive,
            last_sent: now,
            ends_at: now + s.reconnect,
            expires: s.expires,
            stop: s.stop,
            _slot: s.slot,
        }
    }

    /// The stream's incarnation (a re-created stream has another).
    pub fn log_id(&self) -> u64 {
        self.handle.id()
    }

    /// A handle on the stream, for a hub to wait on.
    pub fn handle(&self) -> LogHandle {
        self.handle.clone()
    }

    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The data (or the first control event) to send now. Both this and [`Self::on_time`]
    /// must be asked again after each [`Step::Events`], as more may be ready.
    pub fn poll_data(&mut self) -> Step {
        let r = self.render(self.first);
        self.advance(&r, Instant::now());
        r.step
    }

    /// What is due at `now` by the clock: the credential's `error` event and the end, the
    /// end at the reconnect interval, or a keep-alive control event.
    pub fn on_time(&mut self, now: Instant) -> Step {
        if self.expires.is_some_and(|at| at <= now) {
            let mut ev = BytesMut::new();
            crate::http::sse::credential_expired(&mut ev);
            return Step::Last(ev.freeze());
        }
        if self.ends_at <= now {
            return Step::Last(Bytes::new());
        }
        if self.last_sent + self.keepalive <= now {
            let r = self.render(true);
            self.advance(&r, now);
            return r.step;
        }
        Step::Idle
    }

    /// When [`Self::on_time`] next has something to say.
    pub fn deadline(&self) -> Instant {
        let at = (self.last_sent + self.keepalive).min(self.ends_at);
        self.expires.map_or(at, |e| at.min(e))
    }

    /// Wait on this subscriber's own task until something may be due: [`Step::Idle`] when the
    /// stream changed (ask [`Self::poll_data`]), or what the clock or a shutdown brings.
    pub async fn wait(&mut self) -> Step {
        let deadline = self.deadline();
        tokio::select! {
            () = self.handle.changed() => Step::Idle,
            () = tokio::time::sleep_until(deadline) => self.on_time(Instant::now()),
            () = self.stop.cancelled() => Step::Last(Bytes::new()),
        }
    }

    /// Render what a subscriber here is to be sent now, once for every subscriber at the
    /// same position with the same client cursor: the index of the rendering in `cache`,
    /// which holds those of one delivery round.
    pub fn render_shared(&self, cache: &mut Vec<Shared>) -> usize {
        let cursor = self.client_cursor.as_deref();
        if let Some(i) = cache
            .iter()
            .position(|s| s.pos == self.pos && s.cursor.as_deref() == cursor)
        {
            return i;
        }
        cache.push(Shared {
            pos: self.pos,
            cursor: self.client_cursor.clone(),
            rendered: self.render(false),
        });
        cache.len() - 1
    }

    /// `r` was sent at `now`.
    pub fn advance(&mut self, r: &Rendered, now: Instant) {
        if !matches!(r.step, Step::Idle) {
            self.pos = r.next;
            self.first = false;
            self.last_sent = now;
        }
    }

    /// The events at the current position: data if there is any, else a control event when
    /// `control` (or when the stream is closed there), else nothing.
    fn render(&self, control: bool) -> Rendered {
        let batch = match self
            .handle
            .read_capped(ReadFrom::At(self.pos), MAX_EVENT_BYTES)
        {
            Ok(b) => b,
            // Deleted meanwhile: the response ends.
            Err(_) => {
                return Rendered {
                    step: Step::Last(Bytes::new()),
                    next: self.pos,
                    more: false,
                };
            }
        };
        let mut payload = payload(&batch);
        let mut next = batch.next;
        if !self.binary && batch.info.framing == Framing::Bytes && !batch.closed {
            // Text events carry whole characters: a character an append left unfinished waits
            // for the rest (its bytes start the next event; the offset stays before them).
            let hold = incomplete_utf8_tail(&payload);
            payload.truncate(payload.len() - hold);
            next -= hold as u64;
        }
        if payload.is_empty() && !control && !batch.closed {
            return Rendered {
                step: Step::Idle,
                next: self.pos,
                more: false,
            };
        }
        let cursor = next_cursor(SystemClock.now_ms(), self.client_cursor.as_deref());
        let mut ev = if payload.is_empty() {
            BytesMut::new()
        } else {
            data_event(payload, self.binary)
        };
        let at = At {
            next,
            closed: batch.closed,
            up_to_date: batch.up_to_date,
        };
        control_event(&mut ev, &at, &cursor);
        let ev = ev.freeze();
        Rendered {
            step: if batch.closed {
                Step::Last(ev)
            } else {
                Step::Events(ev)
            },
            next,
            more: !batch.up_to_date,
        }
    }

    /// The response as a stream of event frames, driven by the task that polls it (for
    /// transports that write a body frame by frame: TLS, HTTP/2).
    pub fn into_stream(mut self: Box<Self>) -> impl futures_util::Stream<Item = Bytes> + Send {
        async_stream::stream! {
            loop {
                let step = match self.poll_data() {
                    Step::Idle => self.wait().await,
                    step => step,
                };
                match step {
                    Step::Idle => {}
                    Step::Events(b) => yield b,
                    Step::Last(b) => {
                        if !b.is_empty() {
                            yield b;
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Whether SSE data events of this content type travel as base64.
pub fn is_binary(content_type: &str) -> bool {
    let t = riffle_engine::media_type(content_type);
    let text = t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("text/"));
    !(text || t.eq_ignore_ascii_case("application/json"))
}

/// The bytes a data event carries: the stored bytes, or for JSON a JSON array.
fn payload(batch: &ReadBatch) -> Vec<u8> {
    if batch.chunks.is_empty() {
        Vec::new()
    } else if batch.info.framing == Framing::JsonMessages {
        json_array(batch.chunks.clone()).concat()
    } else {
        batch.chunks.concat()
    }
}

/// How many bytes at the end of `text` begin a UTF-8 character that is not complete yet (0 to
/// 3). Bytes that could never become a character are not held (nothing would complete them).
fn incomplete_utf8_tail(text: &[u8]) -> usize {
    let n = text.len();
    for back in 1..=3.min(n) {
        let b = text[n - back];
        if b & 0xc0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        let len = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return 0,
        };
        return if back < len { back } else { 0 };
    }
    0
}

/// `event: data`, the payload split into `data:` lines on CR, LF or CRLF, so a payload can
/// never inject an event of its own.
fn data_event(payload: Vec<u8>, binary: bool) -> BytesMut {
    let text = if binary {
        base64::engine::general_purpose::STANDARD
            .encode(&payload)
            .into_bytes()
    } else {
        payload
    };
    let mut ev = BytesMut::with_capacity(text.len() + 128);
    crate::http::sse::event(&mut ev, Some("data"), None, &text);
    ev
}

/// Where a control event says the subscriber is.
struct At {
    next: u64,
    closed: bool,
    up_to_date: bool,
}

/// `event: control` with the position after the events and the stream's state there.
/// Written directly (it goes to every subscriber on every event): offsets and cursors are
/// digits and `_`, nothing to escape.
fn control_event(ev: &mut BytesMut, batch: &At, cursor: &str) {
    debug_assert!(cursor.bytes().all(|b| b.is_ascii_digit()));
    ev.put_slice(b"event: control\ndata:{\"streamNextOffset\":\"");
    ev.put_slice(format_offset(batch.next).as_bytes());
    if batch.closed {
        ev.put_slice(b"\",\"streamClosed\":true,\"upToDate\":true}\n\n");
        return;
    }
    ev.put_slice(b"\",\"streamCursor\":\"");
    ev.put_slice(cursor.as_bytes());
    if batch.up_to_date {
        ev.put_slice(b"\",\"upToDate\":true}\n\n");
    } else {
        ev.put_slice(b"\"}\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_events_are_json() {
        for (closed, up_to_date) in [(false, false), (false, true), (true, true)] {
            let batch = At {
                next: 42,
                up_to_date,
                closed,
            };
            let mut ev = BytesMut::new();
            control_event(&mut ev, &batch, "1234");
            let text = std::str::from_utf8(&ev).unwrap();
            let data = text.strip_prefix("event: control\ndata:").unwrap();
            assert!(data.ends_with("\n\n"));
            let v: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
            assert_eq!(v["streamNextOffset"], format_offset(42));
            assert_eq!(v.get("streamClosed").is_some(), closed);
            assert_eq!(v.get("streamCursor").is_some(), !closed);
            assert_eq!(v.get("upToDate").is_some(), up_to_date);
        }
    }

    #[test]
    fn unfinished_characters_are_held_back() {
        let party = "🎉".as_bytes(); // 4 bytes
        for cut in 0..4 {
            let mut t = b"ok ".to_vec();
            t.extend_from_slice(&party[..cut]);
            assert_eq!(incomplete_utf8_tail(&t), cut, "{cut}");
        }
        assert_eq!(incomplete_utf8_tail("ok 🎉".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&"€".as_bytes()[..2]), 2);
        // Never a character: a stray continuation byte, an invalid lead.
        assert_eq!(incomplete_utf8_tail(b"a\x80"), 0);
        assert_eq!(incomplete_utf8_tail(b"a\xff"), 0);
        assert_eq!(incomplete_utf8_tail(b"\x80\x80\x80"), 0);
        assert_eq!(incomplete_utf8_tail(b""), 0);
    }

    #[test]
    fn binary_types() {
        assert!(!is_binary("text/plain; charset=utf-8"));
        assert!(!is_binary("Application/JSON"));
        assert!(is_binary("application/octet-stream"));
        assert!(is_binary("image/png"));
    }
}
