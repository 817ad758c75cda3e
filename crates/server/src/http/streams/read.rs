//! GET (catch-up and long-poll; SSE is in [`super::sse`]) and HEAD.

use super::names;
use super::offset::offset_header;
use super::params::{Live, ReadQuery, read_query};
use super::payload::json_array;
use super::poll::{PollSetup, PollWait};
use super::{ResponseBody, sse, with_content_type};
use crate::http::cursor::next_cursor;
use crate::http::{ApiError, App, body};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode, header};
use riffle_engine::{Clock, Expiry, Framing, LogHandle, Piece, ReadBatch, ReadFrom, SystemClock};

/// Most bytes one response of a live read carries (copied for SSE framing).
pub const MAX_READ_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes one catch-up response carries; the client follows `Stream-Next-Offset`. Larger:
/// a catch-up body is stored chunks and file ranges, never copied into the response, and every
/// response a client need not ask for is a round trip saved.
pub const MAX_CATCH_UP_BYTES: usize = 16 * 1024 * 1024;

const CACHEABLE: &str = "public, max-age=60, stale-while-revalidate=300";

pub async fn get(app: &App, name: &str, req: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    let q = read_query(req.uri.query())?;
    let handle = app.engine.open(name)?;
    match q.live {
        Live::No => catch_up(&handle, &q, &req.headers),
        Live::LongPoll => {
            let slot = app.live_slot(crate::http::metrics::LiveKind::LongPoll)?;
            long_poll(app, handle, &q, &req.headers, slot)
        }
        Live::Sse => sse::respond(
            app,
            handle,
            &q,
            app.live_slot(crate::http::metrics::LiveKind::Sse)?,
        ),
    }
}

fn catch_up(
    handle: &LogHandle,
    q: &ReadQuery,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    let from = q.offset.unwrap_or(ReadFrom::Start);
    // Bytes in files stay there, for the connection to send from the page cache; a JSON
    // stream's are read, to be framed as an array.
    if handle.info().framing == Framing::JsonMessages {
        respond(handle.read(from, MAX_CATCH_UP_BYTES)?, from, headers)
    } else {
        respond(handle.read_pieces(from, MAX_CATCH_UP_BYTES)?, from, headers)
    }
}

fn respond<C: IntoBody>(
    batch: ReadBatch<C>,
    from: ReadFrom,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    if from == ReadFrom::Tail {
        // `offset=now`: the tail, no data, never cached.
        return Ok(data_response(StatusCode::OK, batch, None, "no-store"));
    }
    let etag = etag(&batch);
    if if_none_match(headers, &etag) {
        return Ok(Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .header(&names::STREAM_NEXT_OFFSET, offset_header(batch.next))
            .body(body::empty())
            .expect("static headers"));
    }
    let cache = cache_control(&batch);
    let mut resp = data_response(StatusCode::OK, batch, None, cache);
    resp.headers_mut().insert(header::ETAG, header_value(&etag));
    Ok(resp)
}

/// A long-poll: the answer at once if there is data (or the stream is closed), else a
/// placeholder whose body is the wait ([`super::poll`]).
fn long_poll(
    app: &App,
    handle: LogHandle,
    q: &ReadQuery,
    headers: &HeaderMap,
    slot: crate::http::slots::Slot,
) -> Result<Response<ResponseBody>, ApiError> {
    let pos = match q.offset.unwrap_or(ReadFrom::Start) {
        ReadFrom::At(p) => p,
        ReadFrom::Start => 0,
        ReadFrom::Tail => handle.info().next,
    };
    let values: Vec<&str> = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let if_none_match = (!values.is_empty()).then(|| values.join(","));
    let wait = PollWait::new(
        handle,
        PollSetup {
            pos,
            cursor: next_cursor(SystemClock.now_ms(), q.cursor.as_deref()),
            if_none_match,
            timeout: app.config.long_poll_timeout,
            expires: crate::http::access::expiry(),
            stop: app.shutdown.clone(),
            slot,
        },
    );
    match wait.ready(tokio::time::Instant::now()) {
        Some(answer) => answer,
        None => Ok(super::poll::placeholder(wait)),
    }
}

/// The answer of a long-poll that found data, or the stream closed, at its position.
pub(super) fn long_poll_answer(
    batch: ReadBatch,
    cursor: &str,
    if_none_match: Option<&str>,
) -> Response<ResponseBody> {
    if batch.is_empty() {
        // Closed, nothing more: 204 with the final offset.
        return data_response(StatusCode::NO_CONTENT, batch, None, "no-store");
    }
    let etag = etag(&batch);
    if if_none_match.is_some_and(|v| matches_etag(v, &etag)) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .body(body::empty())
            .expect("static headers");
    }
    let cache = cache_control(&batch);
    let mut resp = data_response(StatusCode::OK, batch, Some(cursor), cache);
    resp.headers_mut().insert(header::ETAG, header_value(&etag));
    resp
}

/// The answer of a long-poll that timed out (or was ended by shutdown) with nothing new.
pub(super) fn timeout_answer(batch: ReadBatch, cursor: &str) -> Response<ResponseBody> {
    let cursor = (!batch.closed).then_some(cursor);
    data_response(StatusCode::NO_CONTENT, batch, cursor, "no-store")
}

/// How a read's chunks become a response body.
trait IntoBody: Sized {
    fn body(chunks: Vec<Self>, framing: Framing) -> ResponseBody;
}

impl IntoBody for Bytes {
    fn body(chunks: Vec<Self>, framing: Framing) -> ResponseBody {
        if framing == Framing::JsonMessages {
            body::chunks(json_array(chunks))
        } else {
            body::chunks(chunks)
        }
    }
}

impl IntoBody for Piece {
    fn body(chunks: Vec<Self>, framing: Framing) -> ResponseBody {
        debug_assert!(
            framing != Framing::JsonMessages,
            "JSON streams are read as bytes"
        );
        body::pieces(chunks)
    }
}

/// A read answer: the batch as the body (a JSON array for JSON streams; none for 204) and the
/// offset headers.
fn data_response<C: IntoBody>(
    status: StatusCode,
    batch: ReadBatch<C>,
    cursor: Option<&str>,
    cache: &'static str,
) -> Response<ResponseBody> {
    let mut resp = with_content_type(status, &batch.info.content_type)
        .header(&names::STREAM_NEXT_OFFSET, offset_header(batch.next))
        .header(header::CACHE_CONTROL, cache);
    if batch.up_to_date {
        resp = resp.header(&names::STREAM_UP_TO_DATE, "true");
    }
    if batch.closed {
        resp = resp.header(&names::STREAM_CLOSED, "true");
    }
    if let Some(c) = cursor {
        resp = resp.header(&names::STREAM_CURSOR, c);
    }
    let body = if status == StatusCode::NO_CONTENT {
        body::empty()
    } else {
        C::body(batch.chunks, batch.info.framing)
    };
    resp.body(body).unwrap_or_else(|_| {
        // Only a stored content type that is not a valid header value could fail here.
        Response::new(body::empty())
    })
}

/// Catch-up responses that reach the tail change as data arrives: revalidate them.
fn cache_control<C>(batch: &ReadBatch<C>) -> &'static str {
    if batch.up_to_date {
        "no-cache"
    } else {
        CACHEABLE
    }
}

/// Identifies the stream incarnation, the range and whether the stream was closed at its end.
fn etag<C>(batch: &ReadBatch<C>) -> String {
    format!(
        "\"{:x}:{}:{}{}\"",
        batch.info.id,
        batch.start,
        batch.next,
        if batch.closed { ":c" } else { "" }
    )
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| matches_etag(v, etag))
}

/// Whether an `If-None-Match` value (a comma-separated list) matches `etag`.
fn matches_etag(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == etag || t.strip_prefix("W/") == Some(etag) || t == "*")
}

fn header_value(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

pub fn head(app: &App, name: &str) -> Result<Response<ResponseBody>, ApiError> {
    let info = app.engine.info(name)?;
    let mut resp = with_content_type(StatusCode::OK, &info.content_type)
        .header(&names::STREAM_NEXT_OFFSET, offset_header(info.next))
        .header(&names::STREAM_DURABILITY, info.durability.as_str())
        .header(header::CACHE_CONTROL, "no-store");
    if info.closed {
        resp = resp.header(&names::STREAM_CLOSED, "true");
    }
    match &info.expiry {
        Some(Expiry::Ttl { secs }) => resp = resp.header(&names::STREAM_TTL, *secs),
        Some(Expiry::At { text, .. }) => {
            resp = resp.header(&names::STREAM_EXPIRES_AT, text.as_str())
        }
        None => {}
    }
    resp.body(body::empty())
        .map_err(|e| ApiError::bad_request(format!("invalid stored header: {e}")))
}
