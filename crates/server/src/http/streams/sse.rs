//! `live=sse`: validates the request and answers with a live response whose events
//! [`super::tail::SseTail`] renders.

use super::ResponseBody;
use super::names;
use super::params::ReadQuery;
use super::tail::{SseTail, TailSetup, is_binary};
use crate::http::{ApiError, App};
use http::Response;
use riffle_engine::{LogHandle, ReadFrom};

pub fn respond(
    app: &App,
    handle: LogHandle,
    q: &ReadQuery,
    slot: crate::http::slots::Slot,
) -> Result<Response<ResponseBody>, ApiError> {
    let info = handle.info();
    let binary = is_binary(&info.content_type);
    let pos = match q.offset.unwrap_or(ReadFrom::Start) {
        ReadFrom::Start => 0,
        ReadFrom::Tail => info.next,
        ReadFrom::At(p) => p,
    };
    // Validate the offset before answering 200.
    handle.read(ReadFrom::At(pos), 0)?;
    let tail = SseTail::new(
        handle,
        TailSetup {
            pos,
            binary,
            client_cursor: q.cursor.clone(),
            keepalive: app.config.long_poll_timeout,
            reconnect: app.config.sse_reconnect_interval,
            expires: crate::http::access::expiry(),
            stop: app.shutdown.clone(),
            slot,
        },
    );
    let mut resp = crate::http::sse::response();
    if binary {
        resp = resp.header(&names::STREAM_SSE_DATA_ENCODING, "base64");
    }
    Ok(resp
        .body(ResponseBody::Tail(Box::new(tail)))
        .expect("static headers"))
}
