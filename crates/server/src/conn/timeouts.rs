//! How long a connection may wait on its client: for the first byte of a request, for the rest
//! of a request head, for a body that stalls, and for a client that stops reading a response.
//! Without these, silent or trickling clients (slowloris) would hold sockets open forever and
//! the server would run out of file descriptors.
//!
//! Connections parked with a fan-out hub (live SSE, long-polls) are not read here and wait as
//! long as their response does.

use super::transport::Transport;
use riffle_engine::FileRange;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A keep-alive connection waiting for the first byte of its next request (or of its first)
/// is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request head must arrive whole within this long of its first byte (a deadline, not a
/// per-read timeout: a head trickled a byte at a time would otherwise never time out). As
/// hyper's `header_read_timeout`.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body that sends nothing for this long is given up. Per read: a large body may
/// rightly take long as a whole.
const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A response whose writes make no progress for this long (the client stopped reading) ends
/// its connection.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The timeouts in force.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub head: Duration,
    pub body_stall: Duration,
    pub write_stall: Duration,
}

/// The timeouts, read once. Each may be shortened by an environment variable so the black-box
/// tests can watch them fire in a moment; they are not a configuration option.
pub fn timeouts() -> &'static Timeouts {
    static T: LazyLock<Timeouts> = LazyLock::new(|| Timeouts {
        idle: test_override("RIFFLE_TEST_IDLE_TIMEOUT_MS", IDLE_TIMEOUT),
        head: test_override("RIFFLE_TEST_HEAD_TIMEOUT_MS", HEAD_TIMEOUT),
        body_stall: test_override("RIFFLE_TEST_BODY_STALL_TIMEOUT_MS", BODY_STALL_TIMEOUT),
        write_stall: test_override("RIFFLE_TEST_WRITE_STALL_TIMEOUT_MS", WRITE_STALL_TIMEOUT),
    });
    &T
}

fn test_override(var: &str, default: Duration) -> Duration {
    let Ok(text) = std::env::var(var) else {
        return default;
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => {
            tracing::warn!("{var}={ms}: a connection timeout shortened for testing");
            Duration::from_millis(ms)
        }
        _ => {
            tracing::warn!("{var}={text:?} is not a positive number of milliseconds; ignored");
            default
        }
    }
}

/// A transport whose writes fail with `TimedOut` once they have made no progress for the
/// write-stall timeout: a client that stops reading cannot pin its connection (and whatever
/// the response holds) forever. Reads pass through; their timeouts depend on what is read and
/// are the connection loop's.
pub struct StallGuard<IO> {
    io: IO,
    /// Armed while a write is blocked: when the blocking started, plus the timeout.
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<IO> StallGuard<IO> {
    pub fn new(io: IO) -> Self {
        Self {
            io,
            stall: None,
            armed: false,
        }
    }

    pub fn into_inner(self) -> IO {
        self.io
    }

    /// After a write returned `Pending`: start the clock if it is not running, and fail once
    /// it has run out.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let deadline = || Instant::now() + timeouts().write_stall;
        if !self.armed {
            self.armed = true;
            match &mut self.stall {
                Some(sleep) => sleep.as_mut().reset(deadline()),
                // One timer per connection, made on its first blocked write.
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline()))),
            }
        }
        let expired = match &mut self.stall {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if expired {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response for the write-stall timeout",
            ));
        }
        Ok(())
    }

    /// Watch a write-side poll: any completion is progress (or an error that ends the
    /// connection anyway) and stops the clock.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        IO: Unpin,
    {
        match poll(Pin::new(&mut self.io), cx) {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.check_stall(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().watch(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .watch(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().watch(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().watch(cx, |io, cx| io.poll_shutdown(cx))
    }
}

impl<IO: Transport> Transport for StallGuard<IO> {
    // The inner transport bounds its own `sendfile` waits (see `send_file_stalled`).
    fn send_file<'a>(
        &'a mut self,
        range: &'a FileRange,
    ) -> impl Future<Output = io::Result<bool>> + Send + 'a {
        self.io.send_file(range)
    }

    fn can_park(&self) -> bool {
        self.io.can_park()
    }

    fn poll_hung_up(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.io.poll_hung_up(cx)
    }

    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        self.io.into_tcp().map_err(Self::new)
    }
}

/// Wait for `writable` (a socket's write readiness) for at most the write-stall timeout.
pub async fn writable_within(writable: impl Future<Output = io::Result<()>>) -> io::Result<()> {
    match tokio::time::timeout(timeouts().write_stall, writable).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of a file range for the write-stall timeout",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_stall_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let mut io = StallGuard::new(server);
        let started = Instant::now();
        // The client never reads: the first 64 bytes fit, then nothing moves.
        let e = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= timeouts().write_stall);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_dropped() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(64);
        let step = timeouts().write_stall / 2;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut chunk = [0u8; 64];
            while got < 1024 {
                tokio::time::sleep(step).await;
                got += client.read(&mut chunk).await.unwrap();
            }
        });
        let mut io = StallGuard::new(server);
        // Sixteen stalls of half the timeout each: longer than the timeout in all.
        io.write_all(&[0u8; 1024]).await.unwrap();
        reader.await.unwrap();
    }
}
