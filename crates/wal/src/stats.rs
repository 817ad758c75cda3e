//! Plain statistics the WAL (and the engine above it) keep for an operator: fixed-bucket
//! histograms of relaxed atomics. No metrics library here: the server reads
//! [`Histogram::snapshot`] and exports it in whatever format it serves.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket upper bounds of [`WalStats::sync_latency_us`](crate::WalStats), in microseconds:
/// from a fast NVMe flush to a disk in trouble.
pub const SYNC_LATENCY_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Bucket upper bounds of records per `fdatasync` (the group commit size).
pub const RECORDS_PER_SYNC: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Bucket upper bounds of checkpoint durations, in microseconds (1 ms to 60 s).
pub const CHECKPOINT_US: &[u64] = &[
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A histogram of `u64` observations with fixed upper bounds (`le`), lock-free: observing is
/// a few relaxed atomic adds, so the committer thread never waits for a reader.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, then one for everything above the last (`+Inf`); not cumulative.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// The counts now (each read on its own: a snapshot taken during observations may be off
    /// by the observations in flight, which a scrape tolerates).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds (`le`) of the buckets, ascending.
    pub bounds: &'static [u64],
    /// Observations per bucket (not cumulative); one more than `bounds`: the last is `+Inf`.
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// An empty snapshot with `bounds`.
    pub fn empty(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
        }
    }

    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Add `other`'s observations (same bounds; shards of one kind).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        debug_assert_eq!(self.bounds, other.bounds);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds() {
        let h = Histogram::new(&[1, 10]);
        for v in [0, 1, 2, 10, 11, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 2]);
        assert_eq!(s.sum, 1024);
        assert_eq!(s.count(), 6);
        let mut m = HistogramSnapshot::empty(&[1, 10]);
        m.merge(&s);
        m.merge(&s);
        assert_eq!(m.counts, vec![4, 4, 4]);
    }
}
