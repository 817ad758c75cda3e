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
//! 1. A record whose `Commit::Sync` callback reported success survives any crash.
//! 2. A record whose callback reported an error is never replayed (the failed batch is cut
//!    off the segment before anything else is written).
//! 3. Records replay in the order they were appended; a shard's records never interleave
//!    with another's.
//! 4. Recovery stops only at the end or at a torn tail of the last segment; everything else
//!    is reported as damage and nothing is modified.
//! 5. A checkpoint file is either the previous one or the new one, never a mix.

mod checkpoint;
mod dir;
mod error;
mod wal;

pub use checkpoint::{read_checkpoint, write_checkpoint};
pub use dir::{Dir, DirFile, Fault, FaultDir, FaultPlan, FsDir, MemDir};
pub use error::WalError;
pub use wal::{Commit, Lsn, Recovery, StopReason, Wal, WalConfig, WalStats};
