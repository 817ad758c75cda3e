//! Record-indexed logs (topics): the engine side of the `/v0` API.
//!
//! A topic is a [`crate::Engine`] log like any other (same registry, WAL, files, durability
//! classes, crash recovery); what it adds is a record index over the log's bytes:
//!
//! - Every record has a server-assigned `seq`, contiguous from 1: record `seq` is the log's
//!   record number `seq - 1`, so finding it is one index lookup (the `.idx` file for file-backed
//!   logs, the RAM store's start positions otherwise). RAM holds no per-record object.
//! - A record is stored in the form [`record`] describes: a small binary header, then its tag,
//!   node, meta and data as JSON text, exactly as they are served (never re-parsed on a read).
//! - The head is trimmed (cap eviction, TTL, `before_seq` deletes) and records are deleted
//!   sparsely (by seq or tag); both are WAL records that carry their absolute outcome, so replay
//!   reproduces them without re-deciding anything. See [`state`].
//! - An idempotency key travels in the same WAL record as the write it guards.

pub mod queue;
pub(crate) mod record;
pub mod router;
pub(crate) mod state;

use crate::durability::Durability;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Whether a topic is a plain log or a lease-based queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicKind {
    Log,
    Queue,
}

/// What a capped topic does when a write would pass its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Discard {
    /// Evict the oldest records (readers that missed them get a tombstone).
    Old,
    /// Refuse the write.
    Reject,
}

/// A topic's configuration. Every field has the `/v0` default (see [`TopicConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub kind: TopicKind,
    /// Records older than this (by `$ts`) are expired; 0 = never.
    pub ttl_ms: u64,
    /// Most live records; 0 = unbounded.
    pub cap_records: u64,
    /// Most live stored bytes; 0 = unbounded.
    pub cap_bytes: u64,
    pub discard: Discard,
    pub durability: Durability,
    /// Manual priority, clamped to [-1000, 1000]; `None` = automatic.
    pub priority: Option<i32>,
    pub auto_priority: bool,
    pub auto_create: bool,
    pub idempotency_window_ms: u64,
    pub dedupe_node: bool,
    pub lease_ms: u64,
    pub claim_jitter_ms: u64,
    pub max_deliveries: u64,
    pub dead_letter: Option<String>,
    pub leases_durable: bool,
}

impl TopicConfig {
    /// Whether records leave the topic without a client asking for each range: by its caps,
    /// its TTL, (a queue) by acks and dead-lettering, or (`ephemeral`) at a restart. A router's
    /// copies of such a topic's records are logged as they are made: the records may be gone
    /// before a crash's recovery could copy them again.
    pub fn sheds_records(&self) -> bool {
        self.kind == TopicKind::Queue
            || self.ttl_ms > 0
            || self.cap_records > 0
            || self.cap_bytes > 0
            || self.durability == Durability::Ephemeral
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            kind: TopicKind::Log,
            ttl_ms: 0,
            cap_records: 0,
            cap_bytes: 0,
            discard: Discard::Old,
            durability: Durability::Disk,
            priority: None,
            auto_priority: true,
            auto_create: true,
            idempotency_window_ms: 120_000,
            dedupe_node: true,
            lease_ms: 30_000,
            claim_jitter_ms: 0,
            max_deliveries: 0,
            dead_letter: None,
            leases_durable: false,
        }
    }
}

/// One record to write. `data` and `meta` are JSON text, validated by the caller and stored
/// as given.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    pub data: Bytes,
    pub tag: Option<String>,
    pub node: Option<String>,
    /// A JSON object's text.
    pub meta: Option<Bytes>,
}

/// A write of one or more records: all of them or none.
#[derive(Debug, Clone, Default)]
pub struct TopicWrite {
    pub records: Vec<NewRecord>,
    /// A retry with the same key within the topic's window answers the original seqs.
    pub idempotency_key: Option<String>,
    /// Create the topic with this configuration if it does not exist; `None`: it must exist.
    pub create: Option<TopicConfig>,
}

/// Timing of a write's commit, for the `/v0` `performance` block.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitTiming {
    /// Time waiting for the WAL write (durable classes).
    pub wal_ms: Option<f64>,
    /// Time waiting for the group fsync that covers the write (`fsync` class).
    pub fsync_ms: Option<f64>,
}

/// The outcome of a write.
#[derive(Debug, Clone)]
pub struct TopicWritten {
    pub first_seq: u64,
    pub last_seq: u64,
    pub head_seq: u64,
    /// Records of this write.
    pub count: u64,
    /// The write created the topic.
    pub created: bool,
    /// A retry of an earlier write with the same idempotency key: nothing was written.
    pub deduped: bool,
    pub timing: CommitTiming,
}

/// Why records a reader wanted are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GapReason {
    Cap,
    Ttl,
    Mixed,
    Recreated,
    /// Records a router's source evicted before they were forwarded.
    SourceTrim,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Cap => "cap",
            GapReason::Ttl => "ttl",
            GapReason::Mixed => "mixed",
            GapReason::Recreated => "recreated",
            GapReason::SourceTrim => "source_trim",
        }
    }
}

/// "You missed records `gap_from..=gap_to`", for a reader whose cursor fell below the topic's
/// eviction floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub gap_from: u64,
    pub gap_to: u64,
    pub reason: GapReason,
    /// Records lost to eviction in the gap (deleted ones are not counted).
    pub missed_estimate: u64,
}

/// A diff read.
#[derive(Debug, Clone)]
pub struct DiffQuery {
    /// Exclusive cursor: records after it.
    pub from_seq: u64,
    pub limit: usize,
    /// Skip records whose node is one of these (when the topic's `dedupe_node` is on).
    pub nodes: Vec<String>,
    /// Stop adding records once their stored size passes this (at least one record).
    pub max_bytes: usize,
}

/// One record as stored; the accessors give its parts as JSON text, ready to render.
#[derive(Debug, Clone)]
pub struct RecordView {
    pub seq: u64,
    pub ts: i64,
    pub(crate) raw: Bytes,
    pub(crate) layout: record::Layout,
}

impl RecordView {
    /// The tag as a JSON string literal (with quotes), if any.
    pub fn tag_json(&self) -> Option<&[u8]> {
        self.layout.tag(&self.raw)
    }
    /// The origin node as a JSON string literal, if any.
    pub fn node_json(&self) -> Option<&[u8]> {
        self.layout.node(&self.raw)
    }
    /// The meta object's JSON text, if any.
    pub fn meta_json(&self) -> Option<&[u8]> {
        self.layout.meta(&self.raw)
    }
    /// The data's JSON text.
    pub fn data_json(&self) -> &[u8] {
        self.layout.data(&self.raw)
    }
    /// Stored size of the record.
    pub fn stored_len(&self) -> usize {
        self.raw.len()
    }
}

/// The answer to a diff read.
#[derive(Debug, Clone)]
pub struct Diff {
    pub records: Vec<RecordView>,
    /// The cursor to continue from: the last seq examined (skipped ones included).
    pub next_from_seq: u64,
    pub head_seq: u64,
    pub earliest_seq: u64,
    pub tombstone: Option<Tombstone>,
    /// Records examined (returned or skipped).
    pub scanned: u64,
}

/// Which records a delete removes (at least one of the two): every record below
/// `before_seq`; or the records whose tag matches (below `before_seq` if both are given). Only
/// records that exist at the call are removed.
#[derive(Debug, Clone, Default)]
pub struct DeleteSpec {
    pub before_seq: Option<u64>,
    pub tag: Option<TagMatch>,
}

/// A tag criterion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagMatch {
    Eq(String),
    /// Tags starting with this prefix.
    Prefix(String),
}

/// The outcome of a delete.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub deleted: u64,
    pub earliest_seq: u64,
    pub head_seq: u64,
    pub count: u64,
    pub bytes: u64,
}

/// A topic's state.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    pub head_seq: u64,
    pub earliest_seq: u64,
    /// Live records and their stored bytes.
    pub count: u64,
    pub bytes: u64,
    pub last_write_ts: Option<i64>,
    pub last_read_ts: Option<i64>,
    /// Distinguishes incarnations of the same name.
    pub id: u64,
    /// A queue topic's jobs.
    pub queue: Option<queue::QueueCounts>,
}

/// The outcome of deleting a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRemoved {
    /// Whether the topic existed.
    pub existed: bool,
    /// The routers from or into it, deleted with it.
    pub routers_removed: Vec<String>,
}

/// The outcome of a `PUT` of a topic.
#[derive(Debug, Clone)]
pub struct TopicPut {
    pub created: bool,
    pub config: TopicConfig,
}
