//! The one way a change of a log commits: queued in the WAL with its class's [`Commit`] and
//! applied from the WAL callback once written (synced for `Fsync`), or applied at once when it
//! has no WAL record. The caller holds the log's append lock; its guard moves into the callback,
//! so the next change waits until this one is applied or failed even if the caller's future is
//! dropped meanwhile.

use super::*;
use crate::topic::CommitTiming;
use std::time::Instant;

/// A WAL record to commit a change with.
pub(crate) struct WalRecord<'a> {
    pub persist: &'a Arc<Persist>,
    pub bytes: Vec<u8>,
    pub commit: Commit,
}

impl Log {
    /// Commit a change: `apply` runs under the state lock once the record is committed (or at
    /// once without a record). On failure `charge` is returned to the memory budget.
    pub(super) async fn commit<T: Send + 'static>(
        self: &Arc<Self>,
        serial: OwnedMutexGuard<()>,
        record: Option<WalRecord<'_>>,
        charge: u64,
        apply: impl FnOnce(&Log, &mut LogState) -> T + Send + 'static,
    ) -> Result<(T, CommitTiming)> {
        let Some(rec) = record else {
            let mut st = self.state.lock();
            let out = apply(self, &mut st);
            drop(st);
            self.wake();
            drop(serial);
            return Ok((out, CommitTiming::default()));
        };
        let (tx, rx) = oneshot::channel();
        let log = self.clone();
        let started = Instant::now();
        let commit = rec.commit;
        rec.persist.submit(
            self.config.id,
            rec.bytes,
            commit,
            Box::new(move |r| {
                let out = match r {
                    Ok(_) => {
                        let mut st = log.state.lock();
                        let out = apply(&log, &mut st);
                        drop(st);
                        log.wake();
                        Ok(out)
                    }
                    Err(e) => {
                        // Nothing of it happened: give back what it reserved.
                        log.budget.used.fetch_sub(charge, Ordering::Relaxed);
                        Err(e)
                    }
                };
                drop(serial);
                let _ = tx.send((out, started.elapsed()));
            }),
        );
        match rx.await {
            Ok((Ok(out), took)) => {
                let ms = took.as_secs_f64() * 1000.0;
                let timing = CommitTiming {
                    wal_ms: Some(ms),
                    fsync_ms: (commit == Commit::Sync).then_some(ms),
                };
                Ok((out, timing))
            }
            Ok((Err(e), _)) => Err(wal_error(e)),
            Err(_) => Err(storage_error(
                "the WAL shut down before the change committed",
                false,
            )),
        }
    }
}
