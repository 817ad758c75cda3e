//! The engine's typed errors. Each says what was wrong with the request or the log; the HTTP
//! faces map them to status codes.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted and is retained only for its forks")]
    Gone,

    // create
    #[error("stream already exists with a different configuration: {0}")]
    ConfigMismatch(&'static str),
    #[error("fork source not found")]
    ForkSourceNotFound,
    #[error("fork source was deleted")]
    ForkSourceGone,
    #[error(
        "a fork of an ephemeral stream is ephemeral too: the data it inherits is not stored, so \
         no other class could keep its promise (omit Stream-Durability, or ask for ephemeral)"
    )]
    ForkOfEphemeral,
    #[error("content type {given} does not match the fork source's {source_type}")]
    ForkContentTypeMismatch { given: String, source_type: String },
    #[error("fork offset {offset} is beyond the source's tail {tail}")]
    ForkOffsetBeyondTail { offset: u64, tail: u64 },
    #[error("fork sub-offset {sub} is past the record at the fork offset ({available} available)")]
    ForkSubOffsetOvershoot { sub: u64, available: u64 },
    #[error("the fork chain would be {depth} forks deep; the limit is {limit}")]
    ForkTooDeep { depth: u32, limit: u32 },

    // append
    #[error("stream is closed")]
    Closed { next: u64 },
    #[error("content type does not match the stream's {expected}")]
    ContentTypeMismatch { expected: String },
    #[error("Stream-Seq {given:?} is not greater than the last one {last:?}")]
    SeqRegression { given: String, last: String },
    #[error("producer epoch is stale; the current epoch is {current}")]
    StaleEpoch { current: u64 },
    #[error("a new producer epoch must start at seq 0")]
    EpochSeqNotZero,
    #[error("producer sequence gap: expected {expected}, received {received}")]
    SeqGap { expected: u64, received: u64 },
    #[error("append would make the stream {size} bytes, above the limit of {limit}")]
    StreamFull { size: u64, limit: u64 },
    #[error("server memory limit of {limit} bytes reached")]
    MemoryFull { limit: u64 },
    #[error("an append needs data unless it closes the stream")]
    EmptyAppend,
    #[error("producer id is {len} bytes long; the limit is {limit}")]
    ProducerIdTooLong { len: usize, limit: usize },
    #[error("Stream-Seq is {len} bytes long; the limit is {limit}")]
    StreamSeqTooLong { len: usize, limit: usize },

    #[error("durability class {0} needs storage, and this server keeps streams in memory only")]
    DurabilityUnavailable(crate::Durability),
    #[error("storage failure: {message}")]
    Storage { no_space: bool, message: String },
    /// Stored bytes that fail their checksum (damaged on disk): refused, not served, and not
    /// something a retry mends.
    #[error("stored data is damaged: {0}")]
    Damaged(String),

    #[error("offset {offset} is inside a JSON message, not between two")]
    OffsetInsideMessage { offset: u64 },

    // topics
    #[error("topic exists with an incompatible configuration: {0} cannot change")]
    TopicIncompatible(&'static str),
    #[error("topic is not empty")]
    TopicNotEmpty,
    #[error("topic is full (discard: reject)")]
    TopicFull,
    #[error("a record is too large to store")]
    RecordTooLarge,
    #[error("not a queue topic")]
    NotAQueue,
    #[error("the server's limit {limit} ({max}) is reached")]
    LimitReached { limit: &'static str, max: u64 },

    // routers
    #[error("router not found")]
    RouterNotFound,
    #[error("the router would close a cycle: {}", .0.join(" -> "))]
    RouterCycle(Vec<String>),
    #[error("the destination is already fed by router {0:?} (one router per destination)")]
    RouterFanIn(String),
    #[error("a router's source and destination must differ")]
    RouterSelf,

    // read
    #[error("offset {offset} is beyond the stream's tail {tail}")]
    OffsetBeyondTail { offset: u64, tail: u64 },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
