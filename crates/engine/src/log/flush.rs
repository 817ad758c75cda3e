//! Pending tails waiting to be written into their files. A file-backed log's appends gather in
//! RAM (its pending tail) and are written in the background; a log joins this queue when its
//! tail stops being empty, so the background flush visits the logs that have something to
//! write, not every log (a million idle streams cost it nothing).

use super::{Log, LogState};
use crate::error::Result;
use parking_lot::Mutex;
use std::sync::Weak;

/// The logs whose pending tails are to be written, each at most once until visited.
#[derive(Debug, Default)]
pub(crate) struct FlushQueue(Mutex<Vec<Weak<Log>>>);

impl FlushQueue {
    /// The logs queued so far; later ones queue anew.
    pub fn take(&self) -> Vec<Weak<Log>> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl Log {
    /// Queue this log for the background flush (its pending tail just stopped being empty).
    pub(super) fn queue_flush(&self, st: &mut LogState) {
        if !st.flush_queued {
            st.flush_queued = true;
            self.flushes.0.lock().push(self.me.clone());
        }
    }

    /// The background flush's visit: write the pending tail into the files. On failure the
    /// log queues again, so the next round retries.
    pub fn flush_queued(&self) -> Result<()> {
        let mut st = self.state.lock();
        st.flush_queued = false;
        if st.removed {
            return Ok(());
        }
        let r = self.flush_locked(&mut st);
        if r.is_err() {
            self.queue_flush(&mut st);
        }
        r
    }
}
