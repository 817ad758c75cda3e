//! `live=sse`: a data event per batch, each followed by a control event; keep-alive control
//! events every long-poll interval; the response ends when the stream closes, the reconnect
//! interval passes, or the server shuts down.

use super::ResponseBody;
use super::names;
use super::offset::format_offset;
use super::params::ReadQuery;
use super::payload::json_array;
use super::read::MAX_READ_BYTES;
use crate::http::cursor::next_cursor;
use crate::http::{ApiError, App};
use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use http::Response;
use http_body::Frame;
use http_body_util::StreamBody;
use riffle_engine::{Clock, Framing, LogHandle, ReadBatch, ReadFrom, SystemClock};
use std::convert::Infallible;

/// Whether SSE data events of this content type travel as base64.
fn is_binary(content_type: &str) -> bool {
    let t = riffle_engine::media_type(content_type);
    let text = t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("text/"));
    !(text || t.eq_ignore_ascii_case("application/json"))
}

pub fn respond(
    app: &App,
    mut handle: LogHandle,
    q: &ReadQuery,
    slot: crate::http::slots::Slot,
) -> Result<Response<ResponseBody>, ApiError> {
    let info = handle.info();
    let binary = is_binary(&info.content_type);
    let mut pos = match q.offset.unwrap_or(ReadFrom::Start) {
        ReadFrom::Start => 0,
        ReadFrom::Tail => info.next,
        ReadFrom::At(p) => p,
    };
    // Validate the offset before answering 200.
    handle.read(ReadFrom::At(pos), 0)?;

    let client_cursor = q.cursor.clone();
    let keepalive = app.config.long_poll_timeout;
    let reconnect = tokio::time::Instant::now() + app.config.sse_reconnect_interval;
    let shutdown = app.shutdown.clone();
    let expires = crate::http::access::expiry();
    let events = async_stream::stream! {
        let _slot = slot; // the live connection's, given back when the stream goes
        // Created once per response, not once per event: with many subscribers, timers and
        // shutdown waiters registered and dropped per delivery cost more than the delivery.
        let reconnect = tokio::time::sleep_until(reconnect);
        tokio::pin!(reconnect);
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        let expired = crate::http::access::expired(expires);
        tokio::pin!(expired);
        // The keep-alive timer is moved only when it fires: events in between just note the
        // time, so a busy stream does not re-arm a timer per event.
        let quiet = tokio::time::sleep(keepalive);
        tokio::pin!(quiet);
        let mut last_sent = tokio::time::Instant::now();
        let mut first = true;
        loop {
            let batch = match handle.read(ReadFrom::At(pos), MAX_READ_BYTES) {
                Ok(b) => b,
                Err(_) => break, // deleted meanwhile: end the response
            };
            let cursor = next_cursor(SystemClock.now_ms(), client_cursor.as_deref());
            if !batch.is_empty() {
                pos = batch.next;
                let closed = batch.closed;
                let mut ev = data_event(&batch, binary);
                control_event(&mut ev, &batch, &cursor);
                yield Ok::<_, Infallible>(Frame::data(ev.freeze()));
                if closed {
                    break;
                }
                first = false;
                last_sent = tokio::time::Instant::now();
                continue;
            }
            if first || batch.closed {
                let mut ev = BytesMut::new();
                control_event(&mut ev, &batch, &cursor);
                yield Ok(Frame::data(ev.freeze()));
                if batch.closed {
                    break;
                }
                first = false;
            }
            tokio::select! {
                _ = handle.changed() => continue,
                () = &mut quiet => {
                    let now = tokio::time::Instant::now();
                    if now < last_sent + keepalive {
                        quiet.as_mut().reset(last_sent + keepalive);
                        continue;
                    }
                    let mut ev = BytesMut::new();
                    control_event(&mut ev, &batch, &cursor);
                    yield Ok(Frame::data(ev.freeze()));
                    last_sent = now;
                    quiet.as_mut().reset(now + keepalive);
                }
                () = &mut reconnect => break,
                () = &mut stopping => break,
                () = &mut expired => {
                    // The client reconnects from the last control event's offset, with a
                    // fresh credential.
                    let mut ev = BytesMut::new();
                    crate::http::sse::credential_expired(&mut ev);
                    yield Ok(Frame::data(ev.freeze()));
                    break;
                }
            }
        }
    };
    let mut resp = crate::http::sse::response();
    if binary {
        resp = resp.header(&names::STREAM_SSE_DATA_ENCODING, "base64");
    }
    Ok(resp
        .body(crate::http::body::stream(StreamBody::new(events)))
        .expect("static headers"))
}

/// `event: data`, the payload split into `data:` lines on CR, LF or CRLF, so a payload can
/// never inject an event of its own.
fn data_event(batch: &ReadBatch, binary: bool) -> BytesMut {
    let payload: Vec<u8> = if batch.info.framing == Framing::JsonMessages {
        json_array(batch.chunks.clone()).concat()
    } else {
        batch.chunks.concat()
    };
    let text = if binary {
        base64::engine::general_purpose::STANDARD
            .encode(&payload)
            .into_bytes()
    } else {
        payload
    };
    let mut ev = BytesMut::with_capacity(text.len() + 32);
    crate::http::sse::event(&mut ev, Some("data"), None, &text);
    ev
}

/// `event: control` with the position after `batch` and the stream's state there. Written
/// directly (it goes to every subscriber on every event): offsets and cursors are digits and
/// `_`, nothing to escape.
fn control_event<C>(ev: &mut BytesMut, batch: &ReadBatch<C>, cursor: &str) {
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
        let info = riffle_engine::LogInfo {
            id: 1,
            content_type: "text/plain".into(),
            framing: Framing::Bytes,
            next: 42,
            closed: false,
            expiry: None,
            durability: riffle_engine::Durability::Memory,
        };
        for (closed, up_to_date) in [(false, false), (false, true), (true, true)] {
            let batch = ReadBatch::<bytes::Bytes> {
                info: info.clone(),
                start: 0,
                next: 42,
                chunks: Vec::new(),
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
    fn binary_types() {
        assert!(!is_binary("text/plain; charset=utf-8"));
        assert!(!is_binary("Application/JSON"));
        assert!(is_binary("application/octet-stream"));
        assert!(is_binary("image/png"));
    }
}
