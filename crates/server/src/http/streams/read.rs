//! GET (catch-up and long-poll; SSE is in [`super::sse`]) and HEAD.

use super::names;
use super::offset::offset_header;
use super::params::{Live, ReadQuery, read_query};
use super::payload::json_array;
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
            let _slot = app.live_slot(crate::http::metrics::LiveKind::LongPoll)?;
            long_poll(app, handle, &q, &req.headers).await
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

async fn long_poll(
    app: &App,
    mut handle: LogHandle,
    q: &ReadQuery,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    let cursor = next_cursor(SystemClock.now_ms(), q.cursor.as_deref());
    let mut pos = match q.offset.unwrap_or(ReadFrom::Start) {
        ReadFrom::At(p) => ReadFrom::At(p),
        ReadFrom::Start => ReadFrom::At(0),
        ReadFrom::Tail => ReadFrom::At(handle.info().next),
    };
    let deadline = tokio::time::Instant::now() + app.config.long_poll_timeout;
    let expires = crate::http::access::expiry();
    let deadline = expires.map_or(deadline, |e| deadline.min(e));
    loop {
        let batch = handle.read(pos, MAX_READ_BYTES)?;
        if !batch.is_empty() {
            let etag = etag(&batch);
            if if_none_match(headers, &etag) {
                return Ok(Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .header(header::ETAG, etag)
                    .body(body::empty())
                    .expect("static headers"));
            }
            let cache = cache_control(&batch);
            let mut resp = data_response(StatusCode::OK, batch, Some(&cursor), cache);
            resp.headers_mut().insert(header::ETAG, header_value(&etag));
            return Ok(resp);
        }
        if batch.closed {
            return Ok(data_response(
                StatusCode::NO_CONTENT,
                batch,
                None,
                "no-store",
            ));
        }
        pos = ReadFrom::At(batch.next);
        tokio::select! {
            _ = handle.changed() => continue,
            _ = tokio::time::sleep_until(deadline) => {}
            _ = app.shutdown.cancelled() => {}
        }
        if expires.is_some_and(|e| tokio::time::Instant::now() >= e) {
            return Err(crate::http::access::expired_error());
        }
        // Timed out (or shutting down): tell the client where to poll next.
        let batch = handle.read(pos, 0)?;
        if !batch.is_empty() {
            continue;
        }
        let cursor = (!batch.closed).then_some(cursor.as_str());
        return Ok(data_response(
            StatusCode::NO_CONTENT,
            batch,
            cursor,
            "no-store",
        ));
    }
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
        .flat_map(|v| v.split(','))
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
