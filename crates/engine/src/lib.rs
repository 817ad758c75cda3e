//! # riffle-engine
//!
//! Named, append-only logs of records, for both of Riffle's HTTP faces. The engine knows
//! nothing of HTTP: a face translates its protocol into these calls and renders the results.
//!
//! ```
//! use riffle_engine::{AppendRequest, CreateSpec, Engine, EngineConfig, Framing, Payload,
//!     ReadFrom, SystemClock};
//! use std::sync::Arc;
//!
//! # tokio_test_block(async {
//! let engine = Engine::new(EngineConfig::default(), Arc::new(SystemClock));
//! let spec = CreateSpec {
//!     content_type: Some(("text/plain".into(), Framing::Bytes)),
//!     expiry: None,
//!     closed: false,
//!     initial: Payload::default(),
//!     fork: None,
//!     durability: None,
//! };
//! engine.create("greetings", spec).await.unwrap();
//! let data = Payload { data: "hello".into(), messages: 1 };
//! let req = AppendRequest { content_type: Some("text/plain".into()), payload: data,
//!     ..Default::default() };
//! assert_eq!(engine.append("greetings", req).await.unwrap().next, 5);
//! let batch = engine.open("greetings").unwrap().read(ReadFrom::Start, 1 << 20).unwrap();
//! assert_eq!(batch.chunks.concat(), b"hello");
//! # });
//! # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! ## Model
//!
//! - A log has an immutable configuration (content type, [`Framing`], expiry, fork base) and
//!   a sequence of records. A position is a byte offset into the log's stored form; the tail
//!   is the position after the last byte.
//! - A record is stored in the form it is served: opaque bytes, or for
//!   [`Framing::JsonMessages`] each message's JSON text followed by `,`.
//! - A fork shares its source's positions: it inherits `[0, upto)` of the source and stores its
//!   own records from `upto` on.
//!
//! ## Invariants (checked by the tests)
//!
//! 1. Positions only grow: a log's tail never decreases, and bytes at a position never change.
//! 2. An append is atomic: its data, its producer state, its `Stream-Seq` and its close are
//!    applied together or not at all; a rejected append changes nothing.
//! 3. Closure is monotonic: a closed log accepts no more data.
//! 4. A producer's `(epoch, seq)` is accepted at most once per log: a retry is answered as a
//!    duplicate without writing.
//! 5. A log that forks reference is never removed: deleting or expiring it soft-deletes it
//!    (its name answers [`EngineError::Gone`]) until its last fork goes, then it is collected,
//!    cascading up the fork chain.
//! 6. Readers waiting on a log are woken by every append, close and delete of that log only.
//! 7. Expiry is applied lazily on every lookup (and by [`Engine::sweep_expired`]); an expired
//!    log is indistinguishable from a missing one, except a referenced one, which is gone.

mod arena;
mod clock;
mod durability;
mod engine;
mod error;
mod filecache;
mod framing;
mod log;
mod memstore;
mod persist;
mod records;
mod store;
pub mod subs;
pub mod topic;
mod types;

pub use arena::{ArenaBacking, configure_arena};
pub use durability::Durability;
pub use persist::{OpenError, RecoveryReport, StorageConfig};
/// The crash-consistency layer underneath (directory seam, WAL, checkpoints).
pub use riffle_wal as wal;

pub use clock::{Clock, ManualClock, SystemClock};

/// What `max_memory_bytes` charges: every log's [`cost::log_overhead`], every remembered
/// producer's id plus [`cost::PRODUCER_OVERHEAD`], and every `Ephemeral` record's bytes plus
/// [`cost::RECORD_OVERHEAD`].
pub mod cost {
    pub use crate::log::{PRODUCER_OVERHEAD, RECORD_OVERHEAD, log_overhead};
}
pub use engine::{
    CLASSES, ClaimRequest, Claimed, ClassAppends, Engine, EngineConfig, LogHandle, StorageStats,
    TopicHandle,
};
pub use error::{EngineError, Result};
pub use filecache::FileCacheStats;
pub use framing::{has_media_key, media_key, media_type};
pub use types::{
    AppendRequest, AppendStatus, Appended, CreateSpec, Created, Expiry, FileRange, ForkSpec,
    Framing, LogInfo, Payload, Piece, ProducerAck, ProducerClaim, ReadBatch, ReadFrom,
};
