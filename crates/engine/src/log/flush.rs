//! Pending tails waiting to be written into their files. A file-backed log's appends gather in
//! RAM (its pending tail) and are written in the background; a log joins this queue when its
//! tail stops being empty, so the background flush visits the logs that have something to
//! write, not every log (a million idle streams cost it nothing).

use super::{Log, LogState};
use crate::error::Result;
use parking_lot::Mutex;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

/// Rounds a small pending tail may wait when the logs to write do not fit the cache of open
/// files (at the background flush's two rounds a second: about 2 s). Writing each at every round
/// would open and close two files per log per round; a checkpoint writes them all anyway.
pub(crate) const DEFER_ROUNDS: u64 = 4;
/// A pending tail this large is written at the next round however crowded the cache is: the
/// write pays for its opens.
pub(crate) const DEFER_BYTES: usize = 4096;

/// The logs whose pending tails are to be written, each at most once until visited.
#[derive(Debug, Default)]
pub(crate) struct FlushQueue {
    logs: Mutex<Vec<Weak<Log>>>,
    /// Background flush rounds so far.
    round: AtomicU64,
}

impl FlushQueue {
    /// Start a round: its number, and the logs queued so far (later ones queue anew).
    pub fn take(&self) -> (u64, Vec<Weak<Log>>) {
        let round = self.round.fetch_add(1, Ordering::Relaxed) + 1;
        (round, std::mem::take(&mut *self.logs.lock()))
    }

    /// Put back logs a round left queued.
    pub fn requeue(&self, logs: Vec<Weak<Log>>) {
        self.logs.lock().extend(logs);
    }
}

impl Log {
    /// Queue this log for the background flush (its pending tail just stopped being empty).
    pub(super) fn queue_flush(&self, st: &mut LogState) {
        if !st.flush_queued {
            st.flush_queued = true;
            st.flush_round = self.flushes.round.load(Ordering::Relaxed);
            self.flushes.logs.lock().push(self.me.clone());
        }
    }

    /// The background flush's visit: write the pending tail into the files. On failure the
    /// log queues again, so the next round retries.
    pub fn flush_queued(&self) -> Result<()> {
        let mut st = self.state.lock();
        self.flush_visit(&mut st)
    }

    /// [`Log::flush_queued`] in round `round` of a crowded cache: a small tail queued less
    /// than [`DEFER_ROUNDS`] ago waits (false: still queued, for the caller to requeue).
    pub fn flush_if_due(&self, round: u64) -> Result<bool> {
        let mut st = self.state.lock();
        if !st.removed
            && st.pending.data.len() < DEFER_BYTES
            && round < st.flush_round + DEFER_ROUNDS
        {
            return Ok(false);
        }
        self.flush_visit(&mut st).map(|()| true)
    }

    fn flush_visit(&self, st: &mut LogState) -> Result<()> {
        st.flush_queued = false;
        if st.removed {
            return Ok(());
        }
        let r = self.flush_locked(st);
        if r.is_err() {
            self.queue_flush(st);
        }
        r
    }
}
