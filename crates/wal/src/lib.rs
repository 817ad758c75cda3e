//! # riffle-wal
//!
//! Riffle's crash-consistency machinery, usable on its own:
//!
//! - [`Dir`]: a directory seam. [`FsDir`] is real files; [`MemDir`] keeps files in memory and
//!   can [`crash`](MemDir::crash), losing whatever was not synced; [`FaultDir`] wraps either
//!   and injects EIO, ENOSPC, short and torn writes, and failed syncs.
//! - [`Wal`]: a write-ahead log shard of opaque records with real group commit: concurrent
//!   appenders share one write and one `fdatasync`.
//! - [`write_checkpoint`] / [`read_checkpoint`]: checksummed files published atomically.
//! - Recovery ([`Wal::open`]) replays the longest valid prefix, truncates a torn tail and says
//!   where and why it stopped; any other damage is an error naming the file and offset.
//!
//! ```
//! use riffle_wal::{Commit, MemDir, Wal, WalConfig};
//! use std::sync::{Arc, mpsc};
//! use std::time::Duration;
//!
//! let dir = Arc::new(MemDir::new());
//! let cfg = WalConfig { shard: 0, segment_bytes: 1 << 20, sync_interval: Duration::from_millis(10) };
//! let (wal, _) = Wal::open(dir.clone(), cfg.clone(), |_, _| Ok(())).unwrap();
//! let (tx, rx) = mpsc::channel();
//! wal.append(b"hello".to_vec(), Commit::Sync, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
//! assert!(rx.recv().unwrap()); // durable now
//! drop(wal);
//! dir.crash();
//! let mut seen = Vec::new();
//! Wal::open(dir, cfg, |_, rec| { seen.push(rec.to_vec()); Ok(()) }).unwrap();
//! assert_eq!(seen, vec![b"hello".to_vec()]);
//! ```
//!
//! ## Invariants
//!
//! These are what the tests in `tests/` check, through [`MemDir`] crashes and [`FaultDir`]
//! faults:
//!
//! 1. A record whose [`Commit::Sync`] callback reported success survives any crash. A
//!    [`Commit::Write`] record survives the process dying at once, and a power loss once the
//!    sync interval has passed (or the [`Wal`] was flushed or dropped).
//! 2. A record whose callback reported an error is never replayed: its batch is cut off the
//!    segment (`set_len` back, then `fdatasync`) before anything else is written, and while
//!    that cut fails, every later batch fails too. The one gap: if the disk refuses the cut
//!    and the machine then loses power before a retry succeeds, a failed record whose bytes
//!    did reach the disk may come back.
//! 3. Callbacks run exactly once, on the committer thread, in append order; Lsns grow in that
//!    order, and replay visits records in it. Shards are independent.
//! 4. Concurrent appenders share writes and `fdatasync`s: one write and at most one sync per
//!    batch, a batch being everything queued while the previous one was in flight.
//! 5. Recovery stops only at the end, or at a torn tail: a damaged record at the end of the
//!    last segment with no intact record anywhere after it, which is truncated (durably), or a
//!    last segment holding only part of its header, which is removed. Anything else (damage in
//!    an earlier segment, damage followed by intact records, a bad header) is
//!    [`WalError::Corrupt`] naming the file and byte offset, and nothing is modified.
//! 6. A checkpoint file is either the previous one or the new one, never a mix, and damage to
//!    it is reported, never returned as data.
//!
//! The on-disk format is in [`format`](mod@format).

mod checkpoint;
mod counting;
mod crc;
mod dir;
mod error;
pub mod format;
mod recover;
pub mod stats;
mod wal;

pub use checkpoint::{read_checkpoint, write_checkpoint};
pub use counting::CountingDir;
/// The checksum of WAL records, for the engine's own (stream-file index entries) too.
pub use crc32c::{crc32c, crc32c_append};
pub use dir::{Dir, DirFile, Fault, FaultDir, FaultPlan, FsDir, MemDir};
pub use error::WalError;
pub use wal::{
    Callback, Commit, Lsn, Recovery, StopReason, Wal, WalConfig, WalHistograms, WalStats,
};
