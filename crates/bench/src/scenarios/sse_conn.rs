//! One SSE response over a connection of its own, read by the task that parses it.
//!
//! At K = 10,000 subscribers the load generator, on one core, must take in as many events as
//! the server sends or it measures its own backlog. Through hyper's client each event cost two
//! task wake-ups (the connection's task decodes, a channel hands the frame to the reader's);
//! here the reader's task reads the socket and undoes the chunked framing itself.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Failure, Target};

/// How the body is delimited.
enum Framing {
    /// `Transfer-Encoding: chunked`, decoded as it comes.
    Chunked(Chunk),
    /// Until the server closes.
    Close,
}

/// Where the chunked decoder is.
enum Chunk {
    /// Reading a size line.
    Size,
    /// This many data bytes of the current chunk to go.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The last chunk was read: the body is over.
    Done,
}

/// An open SSE response: its head was `200`, its body is read with [`SseConn::read`].
pub struct SseConn {
    io: TcpStream,
    /// Bytes read and not yet decoded.
    buf: Vec<u8>,
    framing: Framing,
}

/// `GET path` with `headers` (and the target's authorization) on a new connection; the
/// response's status and, when it is 200, the body to read.
pub async fn open(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<SseConn, Failure> {
    let io = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| Failure::Transport(format!("connect {}: {e}", target.addr)))?;
    let _ = io.set_nodelay(true);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n",
        target.addr
    );
    if let Some(a) = &target.authorization {
        req.push_str(&format!("authorization: {a}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut conn = SseConn {
        io,
        buf: Vec::with_capacity(4096),
        framing: Framing::Close,
    };
    let head = async {
        conn.io
            .write_all(req.as_bytes())
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        conn.read_head().await
    };
    match tokio::time::timeout(timeout, head).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Failure::Timeout),
    }
}

impl SseConn {
    async fn read_head(&mut self) -> Result<(), Failure> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    if status != 200 {
                        let s = http::StatusCode::from_u16(status)
                            .map_err(|e| Failure::Bad(e.to_string()))?;
                        return Err(Failure::Status(s));
                    }
                    let chunked = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && String::from_utf8_lossy(h.value)
                                .to_ascii_lowercase()
                                .contains("chunked")
                    });
                    if chunked {
                        self.framing = Framing::Chunked(Chunk::Size);
                    }
                    self.buf.drain(..len);
                    return Ok(());
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(Failure::Bad(format!("response head: {e}"))),
            }
            if self.fill().await? == 0 {
                return Err(Failure::Transport("closed before the response head".into()));
            }
        }
    }

    /// Read more from the socket into `buf`: the bytes read (0: the server closed).
    async fn fill(&mut self) -> Result<usize, Failure> {
        self.buf.reserve(16 * 1024);
        self.io
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| Failure::Transport(e.to_string()))
    }

    /// Append the next body bytes to `out`: false when the body is over (`out` may still
    /// have received its last bytes).
    pub async fn read(&mut self, out: &mut Vec<u8>) -> Result<bool, Failure> {
        loop {
            let before = out.len();
            let more = match &mut self.framing {
                Framing::Chunked(state) => state.decode(&mut self.buf, out)?,
                Framing::Close => {
                    out.append(&mut self.buf);
                    true
                }
            };
            if !more {
                return Ok(false);
            }
            if out.len() > before {
                return Ok(true);
            }
            if self.fill().await? == 0 {
                return match self.framing {
                    Framing::Close => Ok(false),
                    Framing::Chunked(_) => {
                        Err(Failure::Transport("closed inside a chunked body".into()))
                    }
                };
            }
        }
    }
}

impl Chunk {
    /// Move the body bytes `buf` holds to `out`, leaving an incomplete line in `buf`: false
    /// once the last chunk has been read.
    fn decode(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, Failure> {
        let mut at = 0;
        loop {
            match self {
                Chunk::Done => break,
                Chunk::Size => {
                    let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    let line = std::str::from_utf8(&buf[at..at + nl])
                        .map_err(|_| Failure::Bad("chunk size line".into()))?;
                    let hex = line.trim_end_matches('\r');
                    let hex = hex.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(hex, 16)
                        .map_err(|_| Failure::Bad(format!("chunk size {hex:?}")))?;
                    at += nl + 1;
                    *self = if size == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    let take = (*left).min((buf.len() - at) as u64) as usize;
                    if take == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[at..at + take]);
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Chunk::DataEnd;
                    }
                }
                Chunk::DataEnd => {
                    let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    at += nl + 1;
                    *self = Chunk::Size;
                }
            }
        }
        if matches!(self, Chunk::Done) {
            buf.clear();
            return Ok(false);
        }
        buf.drain(..at);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in pieces of `step` bytes: the body and whether it ended.
    fn decode_in_steps(input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let (mut state, mut buf, mut out) = (Chunk::Size, Vec::new(), Vec::new());
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            if !state.decode(&mut buf, &mut out).expect("well-formed") {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn chunks_decode_whatever_the_reads() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for step in 1..=body.len() {
            assert_eq!(
                decode_in_steps(body, step),
                (b"hello, world".to_vec(), true),
                "{step}"
            );
        }
    }

    #[test]
    fn an_open_body_is_not_over() {
        assert_eq!(
            decode_in_steps(b"3\r\nabc\r\n2\r\nd", 4),
            (b"abcd".to_vec(), false)
        );
    }

    #[test]
    fn a_bad_size_line_is_an_error() {
        let mut buf = b"zz\r\n".to_vec();
        assert!(Chunk::Size.decode(&mut buf, &mut Vec::new()).is_err());
    }
}
