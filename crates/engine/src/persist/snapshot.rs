//! The checkpoint's contents and their on-disk layouts.
//!
//! A checkpoint body is `TAG`, then the layout version (u32, little endian), then the
//! postcard-encoded [`Snapshot`]. The tag starts with ten `0xff` bytes: read as a postcard
//! length (every untagged layout starts with a `Vec`), that is an invalid varint, so a binary
//! from before tags refuses the checkpoint instead of decoding a prefix of it and dropping what
//! it does not know (topics, routers, queues, subscriptions). A binary meeting a version newer
//! than its own refuses to start and says so; it never guesses.
//!
//! Checkpoints written before the tag are still read (`decode_untagged`).

use crate::records::LogSnapshot;
use crate::subs::SubRec;
use crate::topic::queue::QueueRec;
use crate::topic::router::Feed;
use crate::topic::state::TopicRec;
use serde::{Deserialize, Serialize};

/// Starts every tagged checkpoint body (see the module docs).
const TAG: &[u8; 16] = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xffRFSNAP";
/// The layout this binary writes, and the newest it reads.
/// Untagged layouts were formats 1 to 6; tagged ones start at 7.
pub(crate) const VERSION: u32 = 7;

/// Why a checkpoint body cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error(
        "written by a newer Riffle (checkpoint format {found}; this binary reads up to {VERSION}): \
         run that version or newer on this data directory"
    )]
    Newer { found: u32 },
    #[error("undecodable (checkpoint format {version}): {source}")]
    Undecodable {
        version: u32,
        source: postcard::Error,
    },
    #[error("undecodable (an untagged checkpoint, format 6 or older): {0}")]
    Untagged(postcard::Error),
    #[error("ends inside its header")]
    Truncated,
}

/// Everything a checkpoint holds: the state of every durable log as of the WAL positions
/// `start_segments` (replay starts at those segments; earlier ones are covered).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub start_segments: Vec<u64>,
    pub next_id: u64,
    pub logs: Vec<LogSnapshot>,
    /// The topic state of every topic log, by log id.
    pub topics: Vec<(u64, TopicRec)>,
    /// The router feeding each destination topic, by its log id.
    pub feeds: Vec<(u64, Feed)>,
    /// The lease state of each queue topic, by its log id.
    pub queues: Vec<(u64, QueueRec)>,
    /// Every subscription.
    pub subs: Vec<SubRec>,
    /// Each destination topic's recent source-trimmed ranges `[from, to)` (for its
    /// `source_trim` tombstones), by its log id.
    pub source_trims: Vec<(u64, Vec<(u64, u64)>)>,
    /// When each log with an idle TTL was last read or written (Unix ms), by its log id:
    /// after a graceful stop its idle clock goes on from there, not from the restart.
    pub accessed: Vec<(u64, i64)>,
}

/// A checkpoint written before last accesses were kept (no `accessed`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotV5 {
    start_segments: Vec<u64>,
    next_id: u64,
    logs: Vec<LogSnapshot>,
    topics: Vec<(u64, TopicRec)>,
    feeds: Vec<(u64, Feed)>,
    queues: Vec<(u64, QueueRec)>,
    subs: Vec<SubRec>,
    source_trims: Vec<(u64, Vec<(u64, u64)>)>,
}

/// A checkpoint written before source-trimmed ranges were kept (no `source_trims`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotV4 {
    start_segments: Vec<u64>,
    next_id: u64,
    logs: Vec<LogSnapshot>,
    topics: Vec<(u64, TopicRec)>,
    feeds: Vec<(u64, Feed)>,
    queues: Vec<(u64, QueueRec)>,
    subs: Vec<SubRec>,
}

/// A checkpoint written before subscriptions (no `subs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotV3 {
    start_segments: Vec<u64>,
    next_id: u64,
    logs: Vec<LogSnapshot>,
    topics: Vec<(u64, TopicRec)>,
    feeds: Vec<(u64, Feed)>,
    queues: Vec<(u64, QueueRec)>,
}

/// A checkpoint written before routers and queues (no `feeds`, no `queues`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotV2 {
    start_segments: Vec<u64>,
    next_id: u64,
    logs: Vec<LogSnapshot>,
    topics: Vec<(u64, TopicRec)>,
}

/// A checkpoint written before topics existed (no `topics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotV1 {
    start_segments: Vec<u64>,
    next_id: u64,
    logs: Vec<LogSnapshot>,
}

impl Snapshot {
    /// The checkpoint body: tag, version, postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG.len() + 4);
        out.extend_from_slice(TAG);
        out.extend_from_slice(&VERSION.to_le_bytes());
        // Plain structs, enums, strings and integers: postcard cannot fail on them.
        postcard::to_extend(self, out).expect("checkpoints always serialize")
    }

    /// Decode a checkpoint body of this version or an older one.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let Some(rest) = bytes.strip_prefix(TAG.as_slice()) else {
            return Snapshot::decode_untagged(bytes).map_err(SnapshotError::Untagged);
        };
        let Some((version, body)) = rest.split_first_chunk::<4>() else {
            return Err(SnapshotError::Truncated);
        };
        let version = u32::from_le_bytes(*version);
        if version > VERSION {
            return Err(SnapshotError::Newer { found: version });
        }
        let undecodable = |source| SnapshotError::Undecodable { version, source };
        // Version 7 is the first tagged layout: every tagged version so far is this one.
        let (snap, rest) = postcard::take_from_bytes::<Snapshot>(body).map_err(undecodable)?;
        if !rest.is_empty() {
            return Err(undecodable(postcard::Error::DeserializeBadEncoding));
        }
        Ok(snap)
    }

    /// Decode a checkpoint written before checkpoints were tagged: the layout of the last
    /// untagged version (with `accessed`) or of the ones before last accesses, source-trimmed
    /// ranges, subscriptions, routers and topics.
    fn decode_untagged(bytes: &[u8]) -> Result<Snapshot, postcard::Error> {
        // A postcard decode of an older layout may succeed on a newer one's bytes, but not
        // consume them all: only a decode that uses every byte is taken.
        if let Ok((s, rest)) = postcard::take_from_bytes::<Snapshot>(bytes)
            && rest.is_empty()
        {
            return Ok(s);
        }
        if let Ok((v5, rest)) = postcard::take_from_bytes::<SnapshotV5>(bytes)
            && rest.is_empty()
        {
            return Ok(Snapshot {
                start_segments: v5.start_segments,
                next_id: v5.next_id,
                logs: v5.logs,
                topics: v5.topics,
                feeds: v5.feeds,
                queues: v5.queues,
                subs: v5.subs,
                source_trims: v5.source_trims,
                accessed: Vec::new(),
            });
        }
        if let Ok((v4, rest)) = postcard::take_from_bytes::<SnapshotV4>(bytes)
            && rest.is_empty()
        {
            return Ok(Snapshot {
                start_segments: v4.start_segments,
                next_id: v4.next_id,
                logs: v4.logs,
                topics: v4.topics,
                feeds: v4.feeds,
                queues: v4.queues,
                subs: v4.subs,
                source_trims: Vec::new(),
                accessed: Vec::new(),
            });
        }
        if let Ok((v3, rest)) = postcard::take_from_bytes::<SnapshotV3>(bytes)
            && rest.is_empty()
        {
            return Ok(Snapshot {
                start_segments: v3.start_segments,
                next_id: v3.next_id,
                logs: v3.logs,
                topics: v3.topics,
                feeds: v3.feeds,
                queues: v3.queues,
                subs: Vec::new(),
                source_trims: Vec::new(),
                accessed: Vec::new(),
            });
        }
        if let Ok((v2, rest)) = postcard::take_from_bytes::<SnapshotV2>(bytes)
            && rest.is_empty()
        {
            return Ok(Snapshot {
                start_segments: v2.start_segments,
                next_id: v2.next_id,
                logs: v2.logs,
                topics: v2.topics,
                feeds: Vec::new(),
                queues: Vec::new(),
                subs: Vec::new(),
                source_trims: Vec::new(),
                accessed: Vec::new(),
            });
        }
        let v1 = postcard::from_bytes::<SnapshotV1>(bytes)?;
        Ok(Snapshot {
            start_segments: v1.start_segments,
            next_id: v1.next_id,
            logs: v1.logs,
            topics: Vec::new(),
            feeds: Vec::new(),
            queues: Vec::new(),
            subs: Vec::new(),
            source_trims: Vec::new(),
            accessed: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::Durability;
    use crate::records::{FramingRec, LogMeta, WriterRec};

    fn sample() -> Snapshot {
        Snapshot {
            start_segments: vec![3, 4],
            next_id: 9,
            logs: Vec::new(),
            accessed: vec![(2, 1_700_000_000_000)],
            ..Snapshot::default()
        }
    }

    #[test]
    fn tagged_round_trip() {
        let snap = sample();
        let bytes = snap.encode();
        assert!(bytes.starts_with(TAG));
        let back = Snapshot::decode(&bytes).unwrap();
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.start_segments, vec![3, 4]);
        assert_eq!(back.accessed, vec![(2, 1_700_000_000_000)]);
    }

    #[test]
    fn untagged_checkpoints_are_still_read() {
        let snap = sample();
        let untagged = postcard::to_stdvec(&snap).unwrap();
        let back = Snapshot::decode(&untagged).unwrap();
        assert_eq!(back.accessed, snap.accessed);
        let v1 = postcard::to_stdvec(&SnapshotV1 {
            start_segments: vec![1],
            next_id: 5,
            logs: Vec::new(),
        })
        .unwrap();
        let back = Snapshot::decode(&v1).unwrap();
        assert_eq!((back.start_segments, back.next_id), (vec![1], 5));
    }

    /// What a binary from before tags does with a tagged checkpoint: every layout it knows
    /// fails, so it refuses to start rather than load a part of the state.
    #[test]
    fn untagged_readers_refuse_tagged_checkpoints() {
        let mut snap = sample();
        snap.logs = (0..50)
            .map(|id| LogSnapshot {
                meta: LogMeta {
                    id,
                    name: format!("s{id}"),
                    content_type: "text/plain".into(),
                    framing: FramingRec::Bytes,
                    expiry: None,
                    requested_expiry: None,
                    durability: Durability::Disk,
                    fork: None,
                },
                writer: WriterRec::default(),
                deleted: false,
            })
            .collect();
        let bytes = snap.encode();
        assert!(Snapshot::decode_untagged(&bytes).is_err());
        assert!(postcard::from_bytes::<SnapshotV1>(&bytes).is_err());
    }

    #[test]
    fn newer_formats_are_refused_by_name() {
        let mut bytes = sample().encode();
        bytes[TAG.len()..TAG.len() + 4].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let e = Snapshot::decode(&bytes).unwrap_err();
        assert!(matches!(e, SnapshotError::Newer { found } if found == VERSION + 1));
        assert!(e.to_string().contains("newer Riffle"), "{e}");
        assert!(matches!(
            Snapshot::decode(&bytes[..TAG.len() + 2]),
            Err(SnapshotError::Truncated)
        ));
        let mut trailing = sample().encode();
        trailing.push(0);
        assert!(matches!(
            Snapshot::decode(&trailing),
            Err(SnapshotError::Undecodable {
                version: VERSION,
                ..
            })
        ));
    }
}
