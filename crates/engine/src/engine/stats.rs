//! Numbers for an operator, as plain counters and histogram snapshots: the engine knows no
//! metrics format, the server exports these.

use super::Engine;
use crate::durability::Durability;
use riffle_wal::stats::HistogramSnapshot;
use riffle_wal::{WalHistograms, WalStats};
use std::sync::atomic::{AtomicU64, Ordering};

/// The classes in the order of [`Engine::append_stats`].
pub const CLASSES: [Durability; 4] = [
    Durability::Ephemeral,
    Durability::Memory,
    Durability::Disk,
    Durability::Fsync,
];

/// Committed appends and their payload bytes, per durability class (indexed like
/// [`CLASSES`]). Relaxed atomics: one add each per committed append.
#[derive(Default)]
pub(super) struct AppendCounters {
    count: [AtomicU64; 4],
    bytes: [AtomicU64; 4],
}

impl AppendCounters {
    pub(super) fn add(&self, class: Durability, bytes: u64) {
        let i = class as usize;
        self.count[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Appends of one durability class since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassAppends {
    pub class: Durability,
    /// Committed appends (a Durable Streams append with data, a `/v0` write of one or more
    /// records); duplicates, dedupes and router copies are not counted.
    pub appends: u64,
    /// Their payload bytes (a `/v0` record's `data` and `meta`).
    pub bytes: u64,
}

/// The storage's numbers since start (the WAL's summed over shards).
#[derive(Debug, Clone)]
pub struct StorageStats {
    /// `segment` is the highest of the shards'.
    pub wal: WalStats,
    pub histograms: WalHistograms,
    /// Checkpoints taken, and those that failed.
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    /// Duration of each successful checkpoint, in microseconds.
    pub checkpoint_us: HistogramSnapshot,
    /// WAL records replayed by the recovery at start-up.
    pub records_replayed: u64,
    /// The cache of open stream files.
    pub files: crate::filecache::FileCacheStats,
}

impl Engine {
    /// Appends and bytes by durability class, in the order of [`CLASSES`].
    pub fn append_stats(&self) -> [ClassAppends; 4] {
        let a = &self.inner.appends;
        CLASSES.map(|class| ClassAppends {
            class,
            appends: a.count[class as usize].load(Ordering::Relaxed),
            bytes: a.bytes[class as usize].load(Ordering::Relaxed),
        })
    }

    /// The storage's statistics; `None` without a data directory.
    pub fn storage_stats(&self) -> Option<StorageStats> {
        self.inner.persist.as_ref().map(|p| p.stats())
    }

    /// Count a committed append of `bytes` to a log of `class`.
    pub(crate) fn count_append(&self, class: Durability, bytes: u64) {
        self.inner.appends.add(class, bytes);
    }
}
