//! What an HTTP/1.1 connection is carried on, and whether it can send a file range straight
//! from the page cache (`sendfile`): plain TCP can; TLS (which must encrypt the bytes in user
//! space) and in-memory test transports cannot, and their callers copy instead.

use riffle_engine::FileRange;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

pub trait Transport: AsyncWrite + Unpin {
    /// Send all of `range` to the peer without copying it through user space. `Ok(false)`:
    /// this transport cannot (or the range is not in a real file), and nothing was sent.
    fn send_file<'a>(
        &'a mut self,
        range: &'a FileRange,
    ) -> impl Future<Output = io::Result<bool>> + Send + 'a;

    /// Whether a caught-up live response on this transport may go to a fan-out hub, which
    /// writes to plain TCP sockets only.
    fn can_park(&self) -> bool {
        false
    }

    /// Whether the client hung up, learned without taking its input: `Ready(true)` once it has
    /// (EOF or an error), `Ready(false)` once it sent bytes (a request pipelined behind the
    /// response, read after it). Transports that cannot tell stay pending.
    fn poll_hung_up(&self, _cx: &mut Context<'_>) -> Poll<bool> {
        Poll::Pending
    }

    /// The plain TCP socket this transport is, if it is one.
    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

impl Transport for tokio::net::TcpStream {
    fn can_park(&self) -> bool {
        true
    }

    fn poll_hung_up(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut byte = [0u8; 1];
        let mut peeked = ReadBuf::new(&mut byte);
        self.poll_peek(cx, &mut peeked)
            .map(|r| !matches!(r, Ok(n) if n > 0))
    }

    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        Ok(self)
    }

    async fn send_file(&mut self, range: &FileRange) -> io::Result<bool> {
        let Some(file) = range.fd() else {
            return Ok(false);
        };
        let mut offset = range.offset;
        let end = range.offset + range.len;
        while offset < end {
            let count = usize::try_from(end - offset).unwrap_or(usize::MAX);
            let sent = loop {
                // A client that stops reading must not hold the connection forever.
                super::timeouts::writable_within(self.writable()).await?;
                // `try_io` clears the socket's readiness when the call would block, so the
                // next `writable` waits for room again.
                match self.try_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(&*self, file, Some(&mut offset), count)
                        .map_err(io::Error::from)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => break r?,
                }
            };
            if sent == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a stream file is shorter than its records",
                ));
            }
        }
        Ok(true)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> Transport for tokio_rustls::server::TlsStream<IO> {
    async fn send_file(&mut self, _: &FileRange) -> io::Result<bool> {
        Ok(false)
    }
}

/// The in-memory transport of unit tests.
#[cfg(test)]
impl Transport for Vec<u8> {
    async fn send_file(&mut self, _: &FileRange) -> io::Result<bool> {
        Ok(false)
    }
}
