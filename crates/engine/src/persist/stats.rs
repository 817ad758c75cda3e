//! The storage's statistics: the WAL's counters summed over shards, and checkpoint counts
//! and durations (plain atomics; the server exports them).

use super::{OpenError, Persist};
use crate::engine::StorageStats;
use riffle_wal::stats::{CHECKPOINT_US, Histogram, HistogramSnapshot};
use riffle_wal::{WalHistograms, WalStats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(super) struct PersistStats {
    checkpoints: AtomicU64,
    checkpoint_failures: AtomicU64,
    checkpoint_us: Histogram,
    records_replayed: u64,
}

impl PersistStats {
    pub(super) fn new(records_replayed: u64) -> Self {
        Self {
            checkpoints: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
            checkpoint_us: Histogram::new(CHECKPOINT_US),
            records_replayed,
        }
    }
}

impl Persist {
    /// WAL bytes written since the process started.
    pub fn wal_bytes(&self) -> u64 {
        self.shards.iter().map(|w| w.stats().bytes).sum()
    }

    pub fn wal_syncs(&self) -> u64 {
        self.shards.iter().map(|w| w.stats().syncs).sum()
    }

    /// Take a checkpoint. `logs` returns every durable log with its soft-deleted flag, and
    /// every subscription, read after the WAL was rotated; `next_id` is the engine's id
    /// counter.
    pub fn checkpoint(
        &self,
        logs: impl FnOnce() -> super::Live,
        next_id: u64,
    ) -> Result<(), OpenError> {
        let started = Instant::now();
        let r = self.checkpoint_untimed(logs, next_id);
        let s = &self.stats;
        match &r {
            Ok(()) => {
                s.checkpoints.fetch_add(1, Ordering::Relaxed);
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                s.checkpoint_us.observe(us);
            }
            Err(_) => {
                s.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    pub fn stats(&self) -> StorageStats {
        let mut wal = WalStats::default();
        let mut histograms = WalHistograms {
            sync_latency_us: HistogramSnapshot::empty(riffle_wal::stats::SYNC_LATENCY_US),
            records_per_sync: HistogramSnapshot::empty(riffle_wal::stats::RECORDS_PER_SYNC),
        };
        for shard in &self.shards {
            let w = shard.stats();
            wal.records += w.records;
            wal.bytes += w.bytes;
            wal.writes += w.writes;
            wal.syncs += w.syncs;
            wal.failures += w.failures;
            wal.segment = wal.segment.max(w.segment);
            wal.rotations += w.rotations;
            wal.queue_depth += w.queue_depth;
            // The shards' peaks, summed: never below the summed depth, though the shards may
            // have peaked at different times.
            wal.queue_depth_peak += w.queue_depth_peak;
            let h = shard.histograms();
            histograms.sync_latency_us.merge(&h.sync_latency_us);
            histograms.records_per_sync.merge(&h.records_per_sync);
        }
        let s = &self.stats;
        StorageStats {
            wal,
            histograms,
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            checkpoint_failures: s.checkpoint_failures.load(Ordering::Relaxed),
            checkpoint_us: s.checkpoint_us.snapshot(),
            records_replayed: s.records_replayed,
            files: self.files.stats(),
        }
    }
}
