//! Request bodies as the handlers receive them, and response bodies: stored chunks handed to
//! the connection as they are (with an exact length), or a stream of frames for SSE.

use super::ApiError;
use super::streams::poll::PollWait;
use super::streams::tail::SseTail;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use riffle_engine::Piece;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A request's body. HTTP/1.1 connections read it whole before the handler runs; HTTP/2
/// streams it (hyper), and the handler reads it under the size limit.
pub enum RequestBody {
    Full(Bytes),
    /// Declared (or found) larger than the server's request-body limit, and not read: the
    /// handler answers 413.
    TooLarge,
    Streamed(hyper::body::Incoming),
}

/// Every response's body. Stored bytes (in memory, or ranges of files) are the common case and
/// need no allocation of their own (an empty body needs none at all); only streams (SSE) are
/// boxed.
pub enum ResponseBody {
    /// Stored bytes, with an exact `Content-Length`: see [`Pieces`].
    Pieces(Pieces),
    Stream(UnsyncBoxBody<Bytes, Infallible>),
    /// A live SSE response on a stream, as state: a plain HTTP/1.1 connection writes it and
    /// parks it with the stream's fan-out hub once it is caught up; any other transport polls
    /// it as a stream of frames (it becomes a `Stream` on the first poll).
    Tail(Box<SseTail>),
    /// The placeholder answer of a long-poll still waiting: the connection parks it or waits
    /// for its answer ([`super::streams::poll`]) and sends that instead. Never polled as a
    /// body (it has none).
    Poll(Box<PollWait>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Every variant is `Unpin`, so the enum is too.
        let this = self.get_mut();
        if matches!(this, ResponseBody::Tail(_))
            && let ResponseBody::Tail(tail) = std::mem::replace(this, empty())
        {
            let frames = tail.into_stream().map(|b| Ok(Frame::data(b)));
            *this = stream(http_body_util::StreamBody::new(frames));
        }
        match this {
            ResponseBody::Pieces(p) => Pin::new(p).poll_frame(cx),
            ResponseBody::Stream(s) => Pin::new(s).poll_frame(cx),
            // Turned into a stream above; a long-poll's placeholder is never sent.
            ResponseBody::Tail(_) | ResponseBody::Poll(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Pieces(p) => p.is_end_stream(),
            ResponseBody::Stream(s) => s.is_end_stream(),
            ResponseBody::Tail(_) => false,
            ResponseBody::Poll(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Pieces(p) => p.size_hint(),
            ResponseBody::Stream(s) => s.size_hint(),
            ResponseBody::Tail(_) => SizeHint::default(),
            ResponseBody::Poll(_) => SizeHint::with_exact(0),
        }
    }
}

/// A body of frames produced over time (SSE).
pub fn stream<B>(body: B) -> ResponseBody
where
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    ResponseBody::Stream(body.boxed_unsync())
}

/// Stored bytes: chunks in memory (never copied) and ranges of files. A plain-TCP HTTP/1.1
/// connection takes the pieces ([`Pieces::into_pieces`]) and sends file ranges with
/// `sendfile`; every other transport (TLS, HTTP/2) polls the body, which reads them.
pub struct Pieces {
    pieces: VecDeque<Piece>,
    remaining: u64,
}

/// Largest frame read from a file range for a transport that cannot send from the file.
const READ_FRAME_BYTES: u64 = 1 << 20;

impl Pieces {
    pub fn into_pieces(self) -> VecDeque<Piece> {
        self.pieces
    }
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(mut p) = self.pieces.pop_front() else {
            return Poll::Ready(None);
        };
        if let Piece::File(f) = &mut p
            && f.len > READ_FRAME_BYTES
        {
            // Read a large range a frame at a time: a response holds one frame in memory.
            let front = f.take_front(READ_FRAME_BYTES);
            self.pieces.push_front(p);
            p = Piece::File(front);
        }
        self.remaining -= p.len();
        let data = match p {
            Piece::Mem(b) => b,
            Piece::File(f) => match f.read() {
                Ok(b) => b,
                Err(e) => {
                    // Ending short of the declared length makes the transport abort the
                    // response (HTTP/2 resets the stream): the client never takes a short
                    // body for a whole one.
                    tracing::warn!(error = %e, "reading a stream file for a response failed");
                    self.pieces.clear();
                    return Poll::Ready(None);
                }
            },
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

pub fn pieces(pieces: impl IntoIterator<Item = Piece>) -> ResponseBody {
    let pieces: VecDeque<Piece> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
    let remaining = pieces.iter().map(Piece::len).sum();
    ResponseBody::Pieces(Pieces { pieces, remaining })
}

pub fn chunks(chunks: impl IntoIterator<Item = Bytes>) -> ResponseBody {
    pieces(chunks.into_iter().map(Piece::Mem))
}

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    chunks([bytes.into()])
}

pub fn empty() -> ResponseBody {
    chunks([])
}

/// Read a request's whole body, answering 413 as soon as it passes `limit` (declared, by
/// `Content-Length`, or streamed). Both faces read bodies with it.
pub async fn read_limited(
    declared: Option<u64>,
    body: RequestBody,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = match body {
        RequestBody::Full(b) if b.len() as u64 > limit => return Err(too_large()),
        RequestBody::Full(b) => return Ok(b),
        RequestBody::TooLarge => return Err(too_large()),
        RequestBody::Streamed(incoming) => incoming,
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // A small body arrives as one frame and is kept as it is; later frames are joined.
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    // Stop once the declared length has arrived: polling again for the end would cost hyper
    // another round trip through its body channel.
    while !body.is_end_stream()
        && let Some(frame) = body.frame().await
    {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we store
        };
        let read = joined.as_ref().map_or(first.len(), BytesMut::len);
        if data.len() > limit.saturating_sub(read) {
            return Err(too_large());
        }
        match &mut joined {
            Some(j) => j.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut j = BytesMut::with_capacity(first.len() + data.len());
                j.extend_from_slice(&first);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}
