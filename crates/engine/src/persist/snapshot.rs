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
/// Untagged layouts were formats 1 to 6; tagged ones start at 7. Format 8 has the layout of
/// 7; it marks stream index files with checksums (`crate::store`), which a binary reading up
/// to 7 would misread, so such a binary refuses the directory instead.
pub(crate) const VERSION: u32 = 8;

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

/// How many `Vec` fields the oldest untagged layout lacks (see `decode_untagged`).
const UNTAGGED_MISSING_MAX: usize = 6;

impl Snapshot {
    /// The checkpoint body: tag, version, postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG.len() + 4);
        out.extend_from_slice(TAG);
        out.extend_from_slice(&VERSION.to_le_bytes());
        // Plain structs, enums, strings and integers: postcard cannot fail on them.
        postcard::to_extend(self, out).expect("checkpoints always serialize")
    }

    /// The format of a checkpoint body (0 for the untagged formats 1 to 6).
    pub fn version(bytes: &[u8]) -> u32 {
        bytes
            .strip_prefix(TAG.as_slice())
            .and_then(|rest| rest.first_chunk::<4>())
            .map_or(0, |v| u32::from_le_bytes(*v))
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
        // Version 7 is the first tagged layout: every tagged version so far (7, 8) is this one.
        let (snap, rest) = postcard::take_from_bytes::<Snapshot>(body).map_err(undecodable)?;
        if !rest.is_empty() {
            return Err(undecodable(postcard::Error::DeserializeBadEncoding));
        }
        Ok(snap)
    }

    /// Decode a checkpoint written before checkpoints were tagged (formats 1 to 6). They
    /// differ only by `Vec` fields appended at the end, one format after another (topics;
    /// feeds and queues; subscriptions; source-trimmed ranges; last accesses). An empty `Vec`
    /// is one zero byte in postcard, so an older body followed by one zero per field it lacks
    /// is this layout's encoding with those fields empty: exactly one number of zeros decodes
    /// to the end (fewer run out of bytes, more leave some over).
    fn decode_untagged(bytes: &[u8]) -> Result<Snapshot, postcard::Error> {
        let mut padded = bytes.to_vec();
        let mut last = postcard::Error::DeserializeUnexpectedEnd;
        for _ in 0..=UNTAGGED_MISSING_MAX {
            match postcard::take_from_bytes::<Snapshot>(&padded) {
                Ok((snap, [])) => return Ok(snap),
                Ok(_) => last = postcard::Error::DeserializeBadEncoding,
                Err(e) => last = e,
            }
            padded.push(0);
        }
        Err(last)
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
        // Format 1: segments, next id, logs (a tuple encodes as the struct did).
        let v1 = postcard::to_stdvec(&(vec![1u64], 5u64, Vec::<LogSnapshot>::new())).unwrap();
        let back = Snapshot::decode(&v1).unwrap();
        assert_eq!((back.start_segments, back.next_id), (vec![1], 5));
    }

    #[test]
    fn each_untagged_format_takes_its_own_fields() {
        let none = Vec::<(u64, u64)>::new();
        // Format 5: everything but last accesses; its source-trimmed ranges are kept.
        let trims = vec![(7u64, vec![(1u64, 2u64)])];
        let v5 = (
            vec![3u64],
            9u64,
            Vec::<LogSnapshot>::new(),
            &none,
            &none,
            &none,
        );
        let v5 = postcard::to_stdvec(&(v5, Vec::<SubRec>::new(), &trims)).unwrap();
        let back = Snapshot::decode(&v5).unwrap();
        assert_eq!((back.start_segments, back.next_id), (vec![3], 9));
        assert_eq!(back.source_trims, trims);
        assert!(back.accessed.is_empty());
        // Format 2: topics, nothing after them.
        let v2 = (vec![4u64], 2u64, Vec::<LogSnapshot>::new(), &none);
        let back = Snapshot::decode(&postcard::to_stdvec(&v2).unwrap()).unwrap();
        assert_eq!((back.start_segments, back.next_id), (vec![4], 2));
        // Bytes that are no layout at all.
        assert!(Snapshot::decode(&[0xff; 3]).is_err());
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
        assert!(postcard::from_bytes::<(Vec<u64>, u64, Vec<LogSnapshot>)>(&bytes).is_err());
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
