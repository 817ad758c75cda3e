//! What the engine writes to the WAL and to checkpoints. Every change to a durable log is one
//! WAL record: an append carries its data, its producer state, its `Stream-Seq` and its close,
//! so after a crash either all of it is there or none of it is.
//!
//! A record is `[postcard-encoded WalEntry][raw payload bytes]`; the payload (append data or a
//! create's initial data) follows the header unencoded so it is copied once.

use crate::durability::Durability;
use crate::subs::{SubOp, SubRec};
use crate::topic::TopicConfig;
use crate::topic::queue::{QueueOp, QueueRec};
use crate::topic::router::Feed;
use crate::topic::state::{RangeRec, TopicRec, TrimRec};
use crate::types::{Expiry, Framing};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FramingRec {
    Bytes,
    Json,
    /// A topic's records (see [`crate::topic::record`]).
    Records,
}

impl From<Framing> for FramingRec {
    fn from(f: Framing) -> Self {
        match f {
            Framing::Bytes => FramingRec::Bytes,
            Framing::JsonMessages => FramingRec::Json,
            Framing::TopicRecords => FramingRec::Records,
        }
    }
}

impl From<FramingRec> for Framing {
    fn from(f: FramingRec) -> Self {
        match f {
            FramingRec::Bytes => Framing::Bytes,
            FramingRec::Json => Framing::JsonMessages,
            FramingRec::Records => Framing::TopicRecords,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ExpiryRec {
    Ttl(u64),
    At(i64, String),
}

impl From<&Expiry> for ExpiryRec {
    fn from(e: &Expiry) -> Self {
        match e {
            Expiry::Ttl { secs } => ExpiryRec::Ttl(*secs),
            Expiry::At { unix_ms, text } => ExpiryRec::At(*unix_ms, text.clone()),
        }
    }
}

impl From<ExpiryRec> for Expiry {
    fn from(e: ExpiryRec) -> Self {
        match e {
            ExpiryRec::Ttl(secs) => Expiry::Ttl { secs },
            ExpiryRec::At(unix_ms, text) => Expiry::At { unix_ms, text },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ForkRec {
    pub source_id: u64,
    pub anchor: Option<u64>,
    pub sub: u64,
    pub upto: u64,
}

/// A log's configuration, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogMeta {
    pub id: u64,
    pub name: String,
    pub content_type: String,
    pub framing: FramingRec,
    pub expiry: Option<ExpiryRec>,
    pub requested_expiry: Option<ExpiryRec>,
    pub durability: Durability,
    pub fork: Option<ForkRec>,
}

/// A producer's state: `(id, epoch, last accepted seq)`.
pub(crate) type ProducerRec = (String, u64, u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WalEntry {
    /// A new log; its initial data (if any) is the record's payload, and `closed` says whether
    /// it was created closed.
    Create { meta: LogMeta, closed: bool },
    /// Data at `start` (the payload, possibly empty for a close-only record) and every piece
    /// of writer state the append changed.
    Append {
        log_id: u64,
        log_seq: u64,
        start: u64,
        producer: Option<ProducerRec>,
        stream_seq: Option<String>,
        close: bool,
    },
    /// The log was deleted (or expired). Whether it is removed or kept for its forks is
    /// decided from the surviving forks at recovery.
    Delete { log_id: u64 },
    /// A new topic (a log of [`FramingRec::Records`]) with its configuration.
    CreateTopic { meta: LogMeta, config: TopicConfig },
    /// Records written to a topic (the payload: their stored form), seqs `first_seq..`, with
    /// the idempotency key they answer and the trim (cap, TTL) decided with them.
    TopicAppend {
        log_id: u64,
        log_seq: u64,
        start: u64,
        first_seq: u64,
        /// Records written (the payload holds them, except for an `ephemeral` topic's write,
        /// whose records are never logged: then only their seqs are).
        count: u64,
        ts: i64,
        idem: Option<String>,
        trim: TrimRec,
    },
    /// Records deleted from a topic (seq ranges with their bytes) and the resulting trim.
    TopicDelete {
        log_id: u64,
        log_seq: u64,
        ranges: Vec<RangeRec>,
        trim: TrimRec,
    },
    /// A trim of a topic's head on its own (TTL expiry found without a write).
    TopicTrim {
        log_id: u64,
        log_seq: u64,
        trim: TrimRec,
    },
    /// A topic's configuration changed in place.
    TopicConfig {
        log_id: u64,
        log_seq: u64,
        config: TopicConfig,
    },
    /// Seqs up to `upto` of an `ephemeral` topic may be handed out (its records are never
    /// logged, so this is what keeps a restart from handing the same seqs out again): written
    /// before any of them is, once per many writes.
    /// It changes nothing else and has no `log_seq`: it may be written after a later change.
    TopicReserve { log_id: u64, upto: u64, ts: i64 },
    /// The router feeding a topic was set (created or changed) or removed: a change of the
    /// destination topic, whose state the router is part of.
    RouterSet {
        log_id: u64,
        log_seq: u64,
        feed: Option<Feed>,
    },
    /// A router's copies in its destination that were not logged yet (the payload: their
    /// stored form), logged before the destination's next logged change: seqs
    /// `first_seq..first_seq + count` from position `start`, the ranges of them that stand for
    /// source-trimmed records (empty), the trim and `$ts` as of then, and the router's cursor.
    TopicCopies {
        log_id: u64,
        log_seq: u64,
        start: u64,
        first_seq: u64,
        count: u64,
        ts: i64,
        trim: TrimRec,
        lost: Vec<(u64, u64)>,
        cursor: u64,
        forwarded: u64,
    },
    /// An `ephemeral` topic became durable (its configuration changed to a WAL class): its
    /// files were synced first, and this is its whole state as of then, like a checkpoint of
    /// this one log. Replay takes it as it is, so the records written while the topic was
    /// `ephemeral` (never logged) are recovered from the files, and no replay of an older
    /// record meets an unlogged stretch between logged ones.
    TopicSeal {
        log_id: u64,
        log_seq: u64,
        writer: WriterRec,
        topic: Box<TopicRec>,
        feed: Option<Feed>,
        queue: Option<QueueRec>,
    },
    /// A queue's leases changed (claims with their delivery counts, releases, extensions).
    QueueChange {
        log_id: u64,
        log_seq: u64,
        op: QueueOp,
    },
    /// A new subscription, with the links it starts with.
    SubCreate { rec: Box<SubRec> },
    /// Changes of a subscription (its `seq`-th), applied together.
    SubChange {
        sub_id: u64,
        seq: u64,
        ops: Vec<SubOp>,
    },
    /// A subscription was deleted.
    SubDelete { sub_id: u64 },
}

impl WalEntry {
    /// Encode with `payload` appended raw.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        // Plain structs, enums, strings and integers: postcard cannot fail on them.
        let mut out = postcard::to_stdvec(self).expect("WAL entries always serialize");
        out.extend_from_slice(payload);
        out
    }

    /// Decode a record into its entry and raw payload.
    pub fn decode(record: &[u8]) -> Result<(WalEntry, &[u8]), String> {
        postcard::take_from_bytes(record).map_err(|e| format!("undecodable WAL entry: {e}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogSnapshot {
    pub meta: LogMeta,
    pub writer: WriterRec,
    /// Soft-deleted: kept only for its forks.
    pub deleted: bool,
}

/// Writer state of a log, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WriterRec {
    pub tail: u64,
    pub records: u64,
    pub closed: bool,
    pub closed_by: Option<ProducerRec>,
    pub last_stream_seq: Option<String>,
    pub producers: Vec<ProducerRec>,
    pub log_seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_raw_payload() {
        let e = WalEntry::Append {
            log_id: 7,
            log_seq: 3,
            start: 100,
            producer: Some(("p".into(), 1, 2)),
            stream_seq: Some("09".into()),
            close: true,
        };
        let rec = e.encode(b"hello");
        let (back, payload) = WalEntry::decode(&rec).unwrap();
        assert_eq!(back, e);
        assert_eq!(payload, b"hello");
        assert!(WalEntry::decode(&[0xff, 0xff]).is_err());
    }
}
