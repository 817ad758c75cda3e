//! The engine's request and result types. They speak of logs, records and byte positions; the
//! HTTP faces translate them to and from their protocols.

use crate::durability::Durability;
use bytes::Bytes;
use std::sync::Arc;

/// How a log's payload bytes divide into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// An opaque byte stream: a record is one message of its bytes.
    Bytes,
    /// JSON messages, each stored as its JSON text followed by `,`. A range of whole messages
    /// becomes a JSON array by wrapping it in `[` and `]` and dropping the final comma.
    JsonMessages,
    /// A topic's records (see [`crate::topic`]); never served by the Durable Streams face.
    TopicRecords,
}

/// When a log expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// A sliding idle window: the log expires `secs` after its last read or write.
    Ttl { secs: u64 },
    /// An absolute deadline. `text` is the deadline as the client wrote it, kept to echo back.
    At { unix_ms: i64, text: String },
}

/// Stored payload of one append: the bytes in the form they are served, and how many messages
/// they hold (see [`Framing`]).
#[derive(Debug, Clone, Default)]
pub struct Payload {
    pub data: Bytes,
    pub messages: u32,
}

impl Payload {
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Fork parameters of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkSpec {
    /// Name of the source log.
    pub source: String,
    /// Divergence position; `None` means the source's tail at creation.
    pub offset: Option<u64>,
    /// Bytes (byte framing) or messages (JSON framing) of the record that starts at the
    /// divergence position, inherited past it.
    pub sub: u64,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// The content type as given, with its framing. `None` is allowed for forks only: the
    /// fork inherits its source's.
    pub content_type: Option<(String, Framing)>,
    pub expiry: Option<Expiry>,
    /// Create the log already closed, with `initial` as its whole content.
    pub closed: bool,
    pub initial: Payload,
    pub fork: Option<ForkSpec>,
    /// The log's durability class; `None` takes the engine's default (a fork: its source's).
    pub durability: Option<Durability>,
}

/// An idempotent producer's claim on an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerClaim {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// What to append.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    /// The request's content type; compared with the log's when the payload is not empty.
    pub content_type: Option<String>,
    pub payload: Payload,
    /// Writer sequence, compared bytewise; must be strictly increasing per log.
    pub stream_seq: Option<String>,
    pub producer: Option<ProducerClaim>,
    /// Close the log after this append (or without one, when the payload is empty).
    pub close: bool,
}

/// How an append was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendStatus {
    /// New data (or a close) was committed.
    Written,
    /// A producer retry of something already committed; nothing changed.
    Duplicate,
    /// A close-only request on a log that was already closed; nothing changed.
    AlreadyClosed,
}

/// The producer state echoed back on success: the epoch and the highest accepted seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerAck {
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub status: AppendStatus,
    /// The log's tail after the request.
    pub next: u64,
    pub closed: bool,
    pub producer: Option<ProducerAck>,
}

/// The outcome of a create.
#[derive(Debug, Clone)]
pub struct Created {
    /// `false` when an identical log already existed.
    pub created: bool,
    pub info: LogInfo,
}

/// A log's metadata.
#[derive(Debug, Clone)]
pub struct LogInfo {
    /// Distinguishes incarnations of the same name (a re-created log gets a new id).
    pub id: u64,
    pub content_type: Arc<str>,
    pub framing: Framing,
    pub next: u64,
    pub closed: bool,
    pub expiry: Option<Expiry>,
    pub durability: Durability,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Start,
    Tail,
    At(u64),
}

/// A contiguous range of a log, as the stored chunks that hold it (no copies). `C` is how the
/// bytes come: `Bytes` (file ranges read into memory), or [`Piece`]s (file ranges left in the
/// page cache, for a zero-copy send to a socket).
#[derive(Debug, Clone)]
pub struct ReadBatch<C = Bytes> {
    pub info: LogInfo,
    pub start: u64,
    pub next: u64,
    /// Stored bytes of `[start, next)`, in order. For JSON framing every chunk ends at a
    /// message boundary, so the whole ends with the last message's `,`.
    pub chunks: Vec<C>,
    /// `next` is the tail.
    pub up_to_date: bool,
    /// The log is closed and `next` is its final position.
    pub closed: bool,
}

impl<C> ReadBatch<C> {
    pub fn is_empty(&self) -> bool {
        self.next == self.start
    }
    /// The bytes the batch holds (`next - start`: chunks are exactly that range).
    pub fn byte_len(&self) -> usize {
        usize::try_from(self.next - self.start).unwrap_or(usize::MAX)
    }
}

/// Stored bytes of a log: in memory, or a range of one of its files.
#[derive(Debug, Clone)]
pub enum Piece {
    Mem(Bytes),
    File(FileRange),
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Mem(b) => b.len() as u64,
            Piece::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A range of a log's data file, or of a RAM-held chunk in the memory arena. It holds the
/// file open (the open-files cache may close its own handle meanwhile; a deleted log's file
/// stays readable) or the chunk allocated, and the range never changes: data files are
/// append-only and a stream's are never trimmed; an arena chunk is immutable.
#[derive(Clone)]
pub struct FileRange {
    pub(crate) file: Arc<dyn riffle_wal::DirFile>,
    pub offset: u64,
    pub len: u64,
    /// The same bytes in memory (an arena chunk's mapping): `read` shares them.
    pub(crate) mapped: Option<Bytes>,
}

impl std::fmt::Debug for FileRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileRange({}+{})", self.offset, self.len)
    }
}

impl FileRange {
    /// The file's descriptor, for `sendfile`; `None` if it is not a real file.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.file.fd()
    }

    /// Split off and return the first `n` bytes of the range (all of it if shorter).
    pub fn take_front(&mut self, n: u64) -> FileRange {
        let n = n.min(self.len);
        let front = FileRange {
            file: self.file.clone(),
            offset: self.offset,
            len: n,
            mapped: self.mapped.as_mut().map(|m| m.split_to(n as usize)),
        };
        self.offset += n;
        self.len -= n;
        front
    }

    /// Whether `next` continues this range in the same file: one `sendfile` could send both
    /// (RAM-held chunks written one after another sit side by side in the memory arena).
    pub fn continues_in(&self, next: &FileRange) -> bool {
        use std::os::fd::AsRawFd;
        let fd = |r: &FileRange| r.fd().map(|f| f.as_raw_fd());
        fd(self).is_some() && fd(self) == fd(next) && self.offset + self.len == next.offset
    }

    /// This range widened to `len` bytes, for one `sendfile` over ranges that continue it
    /// ([`FileRange::continues_in`]). It holds only this range's file or chunk: the caller
    /// keeps the ranges it covers alive until the send is done, and does not read it.
    pub fn widened(&self, len: u64) -> FileRange {
        FileRange {
            file: self.file.clone(),
            offset: self.offset,
            len,
            mapped: None,
        }
    }

    /// `bytes`, the part of arena `block` from `lo` on.
    pub(crate) fn of_block(block: &Arc<crate::arena::Block>, lo: u64, bytes: Bytes) -> Self {
        FileRange {
            offset: block.offset() + lo,
            len: bytes.len() as u64,
            file: block.clone(),
            mapped: Some(bytes),
        }
    }

    /// The same bytes in memory, if the range has them there (an arena chunk's mapping).
    pub fn mapped(&self) -> Option<&Bytes> {
        self.mapped.as_ref()
    }

    /// The bytes, read (for transports that cannot send from a file).
    pub fn read(&self) -> std::io::Result<Bytes> {
        if let Some(m) = &self.mapped {
            return Ok(m.clone());
        }
        let len = usize::try_from(self.len).map_err(std::io::Error::other)?;
        let mut buf = bytes::BytesMut::zeroed(len);
        let n = self.file.read_at(&mut buf, self.offset)?;
        if n < len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a stream file is shorter than its records",
            ));
        }
        Ok(buf.freeze())
    }
}
