//! Which stretches of recovered stream files have been checked against their index's
//! checksums since start.
//!
//! Bytes a process wrote itself came from memory it had checked (a request, or a WAL record
//! with a good CRC), so only what was on disk at start needs checking, and only once: a read
//! checks what it serves the first time and the range is remembered here, so the next read
//! of it goes out by `sendfile` untouched. Kept per data directory, only for logs read below
//! their recovered tail; bounded (forgotten wholesale past [`MAX_LOGS`], which only costs
//! checking again).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Logs remembered at most.
const MAX_LOGS: usize = 65_536;

/// Checked position ranges by log id: sorted, disjoint, not touching.
#[derive(Default)]
pub(crate) struct Checked {
    logs: Mutex<HashMap<u64, Vec<(u64, u64)>>>,
    /// Checks that found damage, since start (for metrics).
    failures: AtomicU64,
}

impl Checked {
    /// The parts of `[from, to)` of log `id` not checked yet, in order.
    pub fn missing(&self, id: u64, from: u64, to: u64) -> Vec<(u64, u64)> {
        let logs = self.logs.lock();
        let Some(ranges) = logs.get(&id) else {
            return vec![(from, to)];
        };
        let mut out = Vec::new();
        let mut pos = from;
        for &(a, b) in ranges {
            if b <= pos {
                continue;
            }
            if a >= to {
                break;
            }
            if a > pos {
                out.push((pos, a));
            }
            pos = pos.max(b);
            if pos >= to {
                break;
            }
        }
        if pos < to {
            out.push((pos, to));
        }
        out
    }

    /// Remember `[from, to)` of log `id` as checked.
    pub fn add(&self, id: u64, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let mut logs = self.logs.lock();
        if logs.len() >= MAX_LOGS && !logs.contains_key(&id) {
            logs.clear();
        }
        let ranges = logs.entry(id).or_default();
        // Merge every range that overlaps or touches the new one into it.
        let first = ranges.partition_point(|&(_, b)| b < from);
        let mut last = first;
        let (mut lo, mut hi) = (from, to);
        while last < ranges.len() && ranges[last].0 <= to {
            lo = lo.min(ranges[last].0);
            hi = hi.max(ranges[last].1);
            last += 1;
        }
        ranges.splice(first..last, [(lo, hi)]);
    }

    /// Count a check that found damage.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Checks that found damage, since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Forget log `id` (its files are gone).
    pub fn forget(&self, id: u64) {
        self.logs.lock().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_gaps_are_reported() {
        let c = Checked::default();
        assert_eq!(c.missing(1, 0, 100), vec![(0, 100)]);
        c.add(1, 10, 20);
        c.add(1, 30, 40);
        assert_eq!(c.missing(1, 0, 100), vec![(0, 10), (20, 30), (40, 100)]);
        assert_eq!(c.missing(1, 12, 18), vec![]);
        assert_eq!(c.missing(1, 15, 35), vec![(20, 30)]);
        c.add(1, 20, 30); // touching both: one range
        assert_eq!(c.missing(1, 0, 100), vec![(0, 10), (40, 100)]);
        c.add(1, 5, 60);
        assert_eq!(c.missing(1, 0, 100), vec![(0, 5), (60, 100)]);
        assert_eq!(c.logs.lock()[&1], vec![(5, 60)]);
        // Other logs are apart; a forgotten log is unchecked again.
        assert_eq!(c.missing(2, 5, 60), vec![(5, 60)]);
        c.forget(1);
        assert_eq!(c.missing(1, 5, 60), vec![(5, 60)]);
    }

    #[test]
    fn the_registry_is_bounded() {
        let c = Checked::default();
        for id in 0..MAX_LOGS as u64 + 10 {
            c.add(id, 0, 1);
        }
        assert!(c.logs.lock().len() <= MAX_LOGS);
    }
}
