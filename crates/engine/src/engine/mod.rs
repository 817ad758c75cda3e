//! The registry of named logs: create (and fork), append, read, watch, delete and expiry.
//!
//! Lock order: the registry map, then a log's lifecycle, then a log's state; a fork's state
//! lock is never held while its source's is taken.

mod combine;
mod create;
mod queues;
mod routers;
mod stats;
mod subscriptions;
mod topics;

pub use queues::{ClaimRequest, Claimed};
pub use stats::{CLASSES, ClassAppends, StorageStats};
pub use topics::TopicHandle;

use crate::clock::Clock;
use crate::durability::Durability;
use crate::error::{EngineError, Result};
use crate::framing::{has_media_key, json_message_count, json_prefix_len, media_key};
use crate::log::{
    ForkBase, Log, LogConfig, MemoryBudget, RECORD_OVERHEAD, Shared, commit_for, storage_error,
    wal_error,
};
use crate::persist::{
    OpenError, Persist, RecoveredLog, RecoveryReport, StorageConfig, remove_log_files,
};
use crate::records::WalEntry;
use crate::store::LogFiles;
use crate::types::{
    AppendRequest, AppendStatus, Appended, CreateSpec, Created, Expiry, ForkSpec, Framing, LogInfo,
    ReadBatch, ReadFrom,
};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{OwnedMutexGuard, oneshot, watch};

/// Names to logs. Looked up on every request: foldhash (randomly seeded per process) instead of
/// SipHash, which cost more than the rest of the lookup.
type Registry = HashMap<String, Arc<Log>, foldhash::fast::RandomState>;

/// Engine-wide limits.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Largest size of one log, in stored bytes (inherited bytes of a fork included).
    pub max_stream_bytes: u64,
    /// RAM held for clients across all logs (see [`crate::cost`]); creates and appends past
    /// it are refused.
    pub max_memory_bytes: u64,
    /// The class of logs created without one.
    pub default_durability: Durability,
    /// Deepest fork chain a create may make (a fork of a fork of ... a log): every read of a
    /// fork walks its chain, so this bounds the work of one read.
    pub max_fork_depth: u32,
    /// Longest producer id, in bytes.
    pub max_producer_id_bytes: usize,
    /// Longest `Stream-Seq` value, in bytes.
    pub max_stream_seq_bytes: usize,
    /// Producers remembered per log; beyond it the least recently used one is forgotten (a
    /// retry from it is then judged as from a new producer).
    pub max_producers_per_log: usize,
    /// Most topics; 0: no limit. Creating one more is refused.
    pub max_topics: u64,
    /// Most Durable Streams streams (soft-deleted ones kept for their forks included); 0: no
    /// limit. Creating one more is refused.
    pub max_streams: u64,
    /// Most routers; 0: no limit.
    pub max_routers: u64,
    /// Most `__ds` subscriptions; 0: no limit.
    pub max_subscriptions: u64,
    /// Most streams one subscription links; 0: no limit.
    pub max_subscription_links: u64,
    /// Most data bytes retained across all streams and topics; 0: no limit. Appends and
    /// writes past it are refused (router copies are not: they would stall their router).
    pub max_total_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_stream_bytes: 10 * 1024 * 1024,
            max_memory_bytes: 100 * 1024 * 1024,
            default_durability: Durability::Ephemeral,
            max_fork_depth: 100,
            max_producer_id_bytes: 256,
            max_stream_seq_bytes: 256,
            max_producers_per_log: 1024,
            max_topics: 0,
            max_streams: 0,
            max_routers: 0,
            max_subscriptions: 0,
            max_subscription_links: 0,
            max_total_bytes: 0,
        }
    }
}

/// The log engine. Cheap to clone; all clones share the same logs.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    logs: RwLock<Registry>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// What every log shares: the memory budget, the flush queue, the expiry sweep's list.
    shared: Shared,
    next_id: AtomicU64,
    persist: Option<Arc<Persist>>,
    /// Bumped on every topic creation.
    topic_created: watch::Sender<u64>,
    /// Names of the live topics, in order (listing pages without walking every log).
    topic_names: parking_lot::Mutex<std::collections::BTreeSet<String>>,
    /// Routers by name, in order.
    routers: parking_lot::Mutex<std::collections::BTreeMap<String, routers::RouterEntry>>,
    /// The forwarding task of each source with routers.
    source_tasks: parking_lot::Mutex<routers::SourceTasks>,
    /// Serializes router changes (their checks see every other router).
    router_admin: tokio::sync::Mutex<()>,
    /// Claims and acks of each queue waiting to be served together.
    claims: Arc<queues::Claims>,
    acks: Arc<queues::Acks>,
    /// Ids of `/work` streams.
    next_conn: AtomicU64,
    /// Committed appends by class, for metrics.
    appends: stats::AppendCounters,
    /// `__ds` subscriptions.
    subs: subscriptions::Subs,
}

/// A live log, held for a read or a wait. It keeps answering for the incarnation it was opened
/// on, even if the name is deleted and re-created meanwhile. A clone waits on its own. While
/// any handle of a log is held (a live reader waits), its idle TTL does not run out.
#[derive(Clone)]
pub struct LogHandle {
    log: Arc<Log>,
    rx: watch::Receiver<u64>,
    engine: Engine,
}

impl Engine {
    /// An engine without storage: every log is `Ephemeral`.
    pub fn new(config: EngineConfig, clock: Arc<dyn Clock>) -> Self {
        let config = EngineConfig {
            default_durability: Durability::Ephemeral,
            ..config
        };
        Self::build(config, clock, None, 0)
    }

    fn build(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        persist: Option<Arc<Persist>>,
        min_id: u64,
    ) -> Self {
        // Seed ids from the clock so that ETags of a re-created log differ across restarts.
        let seed = u64::try_from(clock.now_ms())
            .unwrap_or(0)
            .saturating_mul(1000);
        Self {
            inner: Arc::new(Inner {
                logs: RwLock::new(Registry::default()),
                clock,
                config,
                shared: Shared {
                    budget: Arc::new(MemoryBudget {
                        used: AtomicU64::new(0),
                        limit: config.max_memory_bytes,
                        retained: AtomicU64::new(0),
                        retained_limit: config.max_total_bytes,
                    }),
                    flushes: Arc::default(),
                    expiring: Arc::default(),
                },
                next_id: AtomicU64::new(seed.max(min_id)),
                persist,
                topic_created: watch::channel(0).0,
                topic_names: Default::default(),
                routers: Default::default(),
                source_tasks: Default::default(),
                router_admin: tokio::sync::Mutex::new(()),
                claims: combine::Combiner::new(),
                acks: combine::Combiner::new(),
                next_conn: AtomicU64::new(1),
                appends: Default::default(),
                subs: Default::default(),
            }),
        }
    }

    /// Open an engine on storage: recover every durable log (checkpoint, then WAL replay over
    /// the stream files), take a fresh checkpoint unless the one found is current, and start the
    /// background checkpointer.
    pub fn recover(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        storage: StorageConfig,
    ) -> Result<(Self, RecoveryReport), OpenError> {
        let opened = Persist::open(storage)?;
        let (recovered, report) = (opened.logs, opened.report);
        let max_id = recovered.iter().map(|l| l.meta.id + 1).max().unwrap_or(0);
        let engine = Self::build(
            config,
            clock,
            Some(opened.persist),
            opened.next_id.max(max_id),
        );
        // After a graceful stop, idle clocks go on from the last accesses (the downtime counts
        // as idle); after a crash they start again now (reads since the checkpoint are not in
        // it, and a stream must not expire early).
        let accessed = if opened.clean_stop {
            opened.accessed
        } else {
            Default::default()
        };
        engine.restore(recovered, &accessed);
        engine.restore_subs(opened.subs);
        // A checkpoint that already says it all (a graceful stop, nothing written since) is not
        // taken again: with a million logs that was a second or two of every restart.
        if !opened.current {
            engine.checkpoint()?;
        }
        let weak = Arc::downgrade(&engine.inner);
        let spawned = std::thread::Builder::new()
            .name("riffle-checkpoint".into())
            .spawn(move || checkpointer(weak));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the checkpoint thread; checkpoints run at shutdown only");
        }
        Ok((engine, report))
    }

    fn restore(
        &self,
        recovered: Vec<RecoveredLog>,
        accessed: &std::collections::HashMap<u64, i64>,
    ) {
        let now = self.now();
        let mut by_id: HashMap<u64, Arc<Log>> = HashMap::new();
        let mut logs = self.inner.logs.write();
        // Ids grow with creation time, so a source is restored before its forks.
        for r in recovered {
            let base = match &r.meta.fork {
                None => None,
                Some(f) => match by_id.get(&f.source_id) {
                    Some(source) => Some(ForkBase {
                        source: source.clone(),
                        anchor: f.anchor,
                        sub: f.sub,
                        upto: f.upto,
                        depth: source.config.depth() + 1,
                    }),
                    None => {
                        tracing::error!(log = %r.meta.name, "fork source missing at recovery; skipping the fork");
                        continue;
                    }
                },
            };
            if let Some(b) = &base {
                b.source.lifecycle.lock().fork_refs += 1;
            }
            let config = LogConfig {
                id: r.meta.id,
                media_key: media_key(&r.meta.content_type),
                content_type: r.meta.content_type.as_str().into(),
                framing: r.meta.framing.into(),
                expiry: r.meta.expiry.map(Into::into),
                requested_expiry: r.meta.requested_expiry.map(Into::into),
                durability: r.meta.durability,
                base,
                name: r.meta.name,
            };
            let log = Log::restore(
                config,
                r.files,
                r.writer,
                r.dirty,
                now,
                &self.inner.shared,
                self.inner.config.max_producers_per_log,
            );
            if let Some(t) = r.topic {
                log.restore_topic(t);
                if let Some(name) = topics::topic_name(&log.config.name) {
                    self.inner.topic_names.lock().insert(name.to_string());
                }
            }
            log.lifecycle.lock().soft_deleted = r.deleted;
            if let Some(&ms) = accessed.get(&log.config.id) {
                log.restore_last_access(ms);
            }
            log.recount_retained();
            by_id.insert(log.config.id, log.clone());
            logs.insert(log.config.name.clone(), log);
        }
        drop(logs);
        let topics: Vec<Arc<Log>> = by_id.into_values().filter(|l| l.is_topic()).collect();
        self.restore_routers(&topics);
    }

    /// Take a checkpoint now (no-op without storage): afterwards recovery replays only the WAL
    /// written since, and older WAL segments are deleted.
    pub fn checkpoint(&self) -> Result<(), OpenError> {
        let Some(persist) = &self.inner.persist else {
            return Ok(());
        };
        let next_id = self.inner.next_id.load(Ordering::Relaxed);
        persist.checkpoint(
            || {
                let logs = self
                    .inner
                    .logs
                    .read()
                    .values()
                    // A log still being created is not acknowledged: if its create commits
                    // after the rotation, replay of the newer segment brings it back.
                    .filter(|l| l.files.is_some() && !l.is_creating())
                    .map(|l| (l.clone(), l.lifecycle.lock().soft_deleted))
                    .collect();
                (logs, self.sub_recs())
            },
            next_id,
        )
    }

    /// WAL statistics: `(bytes written, fsyncs)`; zeros without storage.
    pub fn wal_stats(&self) -> (u64, u64) {
        self.inner
            .persist
            .as_ref()
            .map_or((0, 0), |p| (p.wal_bytes(), p.wal_syncs()))
    }

    /// Whether the engine has a data directory (without one, every log is `Ephemeral`).
    pub fn has_storage(&self) -> bool {
        self.inner.persist.is_some()
    }

    /// The configuration of a topic created without one (a write's, a router's dest, a
    /// queue's dead-letter topic): the defaults, in `Disk`, or `Ephemeral` without storage.
    pub fn default_topic_config(&self) -> crate::topic::TopicConfig {
        crate::topic::TopicConfig {
            durability: if self.has_storage() {
                Durability::Disk
            } else {
                Durability::Ephemeral
            },
            ..Default::default()
        }
    }

    pub fn config(&self) -> EngineConfig {
        self.inner.config
    }

    /// Data bytes retained across all logs (counted only with `max_total_bytes` set).
    pub fn retained_bytes(&self) -> u64 {
        self.inner.shared.budget.retained.load(Ordering::Relaxed)
    }

    /// RAM currently counted against `max_memory_bytes` (see [`crate::cost`]).
    pub fn memory_used(&self) -> u64 {
        self.inner.shared.budget.used.load(Ordering::Relaxed)
    }

    /// Number of names in the registry (soft-deleted logs included).
    pub fn log_count(&self) -> usize {
        self.inner.logs.read().len()
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The engine's clock, in Unix ms: the time its deadlines (leases, retries) are in.
    pub fn now_ms(&self) -> i64 {
        self.now()
    }

    /// Look a name up, applying lazy expiry.
    fn live(&self, name: &str) -> Result<Arc<Log>> {
        let log = self
            .inner
            .logs
            .read()
            .get(name)
            .cloned()
            .ok_or(EngineError::NotFound)?;
        if log.lifecycle.lock().soft_deleted {
            return Err(EngineError::Gone);
        }
        if log.is_creating() {
            return Err(EngineError::NotFound);
        }
        if log.expired(self.inner.clock.as_ref()) {
            let mut logs = self.inner.logs.write();
            return Err(self.expire_locked(&mut logs, &log));
        }
        Ok(log)
    }

    /// Metadata of a live log. Does not slide its TTL.
    pub fn info(&self, name: &str) -> Result<LogInfo> {
        Ok(self.live(name)?.info())
    }

    /// Open a live log for reading and waiting, sliding its TTL.
    pub fn open(&self, name: &str) -> Result<LogHandle> {
        let log = self.live(name)?;
        log.touch(self.inner.clock.as_ref());
        let mut rx = log.subscribe();
        rx.borrow_and_update();
        Ok(LogHandle {
            log,
            rx,
            engine: self.clone(),
        })
    }

    /// Append to a live log: one atomic step of data, producer state, `Stream-Seq` and close.
    pub async fn append(&self, name: &str, req: AppendRequest) -> Result<Appended> {
        let log = self.live(name)?;
        let bytes = req.payload.data.len() as u64;
        let out = log
            .append(
                req,
                self.inner.config,
                self.inner.clock.as_ref(),
                self.inner.persist.as_ref(),
            )
            .await?;
        // A close without data is a state change, not an append.
        if out.status == AppendStatus::Written && bytes > 0 {
            self.count_append(log.config.durability, bytes);
            self.subs_appended(name);
        }
        Ok(out)
    }

    /// Delete a log. A log that forks still read from is soft-deleted: its name answers
    /// "gone" until the last fork is deleted, then it is removed.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let log = self.live(name)?;
        let wait = {
            let mut logs = self.inner.logs.write();
            if !logs.get(name).is_some_and(|l| Arc::ptr_eq(l, &log)) {
                return Err(EngineError::NotFound);
            }
            if log.lifecycle.lock().soft_deleted {
                return Err(EngineError::Gone);
            }
            self.retire_locked(&mut logs, &log)
        };
        if let Some(rx) = wait {
            match rx.await {
                Ok(r) => {
                    r.map_err(wal_error)?;
                }
                Err(_) => return Err(storage_error("the WAL shut down", false)),
            }
        }
        Ok(())
    }

    /// Delete or expire `log` (under the registry lock): soft-delete it if forks read from it,
    /// else remove it and collect its unreferenced ancestors. A durable log's removal is a
    /// synced WAL record, and its files go only once that record is durable. Returns the
    /// commit to wait for, if the log is durable.
    fn retire_locked(
        &self,
        logs: &mut Registry,
        log: &Arc<Log>,
    ) -> Option<oneshot::Receiver<Result<riffle_wal::Lsn, riffle_wal::WalError>>> {
        let soft = {
            let mut life = log.lifecycle.lock();
            if life.fork_refs > 0 {
                life.soft_deleted = true;
            }
            life.soft_deleted
        };
        self.subs_removed(&log.config.name, log.config.id);
        let removed = if soft {
            log.wake_readers();
            Vec::new()
        } else {
            remove_locked(logs, log)
        };
        let persist = self
            .inner
            .persist
            .as_ref()
            .filter(|_| log.files.is_some())?;
        let (tx, rx) = oneshot::channel();
        let record = WalEntry::Delete {
            log_id: log.config.id,
        }
        .encode(&[]);
        let dir = persist.files.clone();
        let doomed: Vec<u64> = removed
            .iter()
            .filter(|l| l.files.is_some())
            .map(|l| l.config.id)
            .collect();
        persist.submit(
            log.config.id,
            record,
            riffle_wal::Commit::Sync,
            Box::new(move |r| {
                if r.is_ok() {
                    for id in doomed {
                        remove_log_files(dir.as_ref(), id);
                    }
                }
                let _ = tx.send(r);
            }),
        );
        Some(rx)
    }

    /// Apply expiry to every log now (lazy expiry on access covers correctness; this frees
    /// memory of logs nobody touches again). Visits only the logs created with an expiry.
    pub fn sweep_expired(&self) -> usize {
        let now = self.now();
        let candidates: Vec<Arc<Log>> = {
            let mut expiring = self.inner.shared.expiring.lock();
            expiring.retain(|l| l.strong_count() > 0);
            expiring
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect()
        };
        let expired: Vec<Arc<Log>> = candidates
            .into_iter()
            .filter(|l| !l.is_removed() && !l.lifecycle.lock().soft_deleted && l.is_expired(now))
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let mut logs = self.inner.logs.write();
        for log in &expired {
            self.expire_locked(&mut logs, log);
        }
        expired.len()
    }

    /// Expire `log`. Returns the error its name now answers with.
    fn expire_locked(&self, logs: &mut Registry, log: &Arc<Log>) -> EngineError {
        if !logs
            .get(&log.config.name)
            .is_some_and(|l| Arc::ptr_eq(l, log))
        {
            return EngineError::NotFound;
        }
        if log.lifecycle.lock().soft_deleted {
            return EngineError::Gone;
        }
        // The removal's WAL record commits in the background.
        let _ = self.retire_locked(logs, log);
        if log.lifecycle.lock().soft_deleted {
            EngineError::Gone
        } else {
            EngineError::NotFound
        }
    }

    /// Flush the WAL and take a final checkpoint (graceful shutdown).
    pub fn close(&self) -> Result<(), OpenError> {
        self.checkpoint()?;
        self.mark_stopped()
    }

    /// Say the server stopped gracefully, after [`Engine::close`]'s checkpoint: the next start
    /// trusts the checkpoint's last accesses. Not called when requests may have gone on after
    /// that checkpoint (the next start then restarts idle clocks, as after a crash).
    pub fn mark_stopped(&self) -> Result<(), OpenError> {
        match &self.inner.persist {
            Some(p) => p.mark_stopped(),
            None => Ok(()),
        }
    }
}

/// Background work: flush pending tails into the stream files twice a second, and take a
/// checkpoint when enough WAL has accumulated, so recovery stays short and old segments are
/// recycled.
fn checkpointer(engine: Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Some(inner) = engine.upgrade() else {
            return;
        };
        // Move pending tails into the stream files, so RAM holds recent appends only briefly:
        // those of the logs that queued themselves since the last round.
        // One line per round, not one per stream: a full disk or a lack of file descriptors
        // fails them all.
        let mut failed = 0usize;
        let mut first = None;
        let (round, queued) = inner.shared.flushes.take();
        // Two files per log: when the logs to write do not fit the cache of open files, writing
        // every small tail each round would open and close both files of each log each round
        // (15,000 busy streams under a 10,000-file cache: an open per append). Small tails
        // then wait a few rounds, or for the checkpoint, which writes them all.
        let crowded = inner
            .persist
            .as_ref()
            .is_some_and(|p| queued.len() * 2 > p.files.stats().capacity as usize);
        let mut deferred = Vec::new();
        for weak in queued {
            let Some(log) = weak.upgrade() else {
                continue;
            };
            let visited = if crowded {
                log.flush_if_due(round)
            } else {
                log.flush_queued().map(|()| true)
            };
            match visited {
                Ok(true) => {}
                Ok(false) => deferred.push(weak),
                Err(e) => {
                    failed += 1;
                    first.get_or_insert((log.config.id, e));
                }
            }
        }
        inner.shared.flushes.requeue(deferred);
        if let Some((log, error)) = first {
            tracing::warn!(log, %error, failed, "writing stream files failed; will retry");
        }
        let due = inner.persist.as_ref().is_some_and(|p| p.checkpoint_due());
        if due {
            let engine = Engine { inner };
            if let Err(e) = engine.checkpoint() {
                tracing::error!(error = %e, "checkpoint failed; will retry");
            }
        }
    }
}

/// A handle held is a reader still there: its log's idle clock (`Stream-TTL`) starts again
/// when the last one goes (see [`Log::is_expired`]).
impl Drop for LogHandle {
    fn drop(&mut self) {
        self.log.touch(self.engine.inner.clock.as_ref());
    }
}

impl LogHandle {
    /// Metadata as of now.
    pub fn info(&self) -> LogInfo {
        self.log.info()
    }

    /// The incarnation's id ([`LogInfo::id`]), without taking the log's lock.
    pub fn id(&self) -> u64 {
        self.log.config.id
    }

    /// Read from `from` towards the tail, gathering about `max_bytes` (whole records; at least
    /// one record if any is available).
    pub fn read(&self, from: ReadFrom, max_bytes: usize) -> Result<ReadBatch> {
        self.read_as(from, max_bytes, false)
    }

    /// [`LogHandle::read`], except that a byte stream's read ends at `max_bytes` exactly,
    /// inside a record if need be (a JSON stream's still ends between messages): for readers
    /// that must bound what they hold at once whatever the size of a record, like a live SSE
    /// event that a slow client may keep waiting.
    pub fn read_capped(&self, from: ReadFrom, max_bytes: usize) -> Result<ReadBatch> {
        self.read_as(from, max_bytes, true)
    }

    /// [`LogHandle::read`], with the ranges that are in files left there: a transport that
    /// can sends them from the page cache (`sendfile`), others read them.
    pub fn read_pieces(
        &self,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadBatch<crate::types::Piece>> {
        self.read_as(from, max_bytes, false)
    }

    fn read_as<C>(&self, from: ReadFrom, max_bytes: usize, capped: bool) -> Result<ReadBatch<C>>
    where
        Vec<C>: crate::log::Sink,
    {
        if self.log.is_removed() {
            return Err(EngineError::NotFound);
        }
        if self.log.lifecycle.lock().soft_deleted {
            return Err(EngineError::Gone);
        }
        let info = self.log.info();
        let start = match from {
            ReadFrom::Start => 0,
            ReadFrom::Tail => info.next,
            ReadFrom::At(offset) if offset > info.next => {
                return Err(EngineError::OffsetBeyondTail {
                    offset,
                    tail: info.next,
                });
            }
            ReadFrom::At(offset) => {
                if !self.log.is_message_boundary(offset)? {
                    return Err(EngineError::OffsetInsideMessage { offset });
                }
                offset
            }
        };
        let mut chunks = Vec::new();
        let mut budget = max_bytes.max(1);
        let to = if capped && info.framing != Framing::JsonMessages {
            info.next.min(start.saturating_add(budget as u64))
        } else {
            info.next
        };
        let next = self.log.collect(start, to, &mut budget, &mut chunks)?;
        let up_to_date = next == info.next;
        Ok(ReadBatch {
            closed: info.closed && up_to_date,
            info,
            start,
            next,
            chunks,
            up_to_date,
        })
    }

    /// Wait until the log changes (an append, a close, a delete) after the last wait or open.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The log was dropped: nothing will change again.
            std::future::pending::<()>().await;
        }
    }

    /// Slide the TTL window.
    pub fn touch(&self) {
        self.log.touch(self.engine.inner.clock.as_ref());
    }
}

/// Remove `log` from the registry and release its hold on its source, collecting soft-deleted
/// ancestors that no fork references any more. Returns every log removed.
fn remove_locked(logs: &mut Registry, log: &Arc<Log>) -> Vec<Arc<Log>> {
    let mut removed = Vec::new();
    let mut next = Some(log.clone());
    while let Some(log) = next.take() {
        if logs
            .get(&log.config.name)
            .is_some_and(|l| Arc::ptr_eq(l, &log))
        {
            logs.remove(&log.config.name);
        }
        log.mark_removed();
        if let Some(base) = &log.config.base {
            let source = &base.source;
            let collect = {
                let mut life = source.lifecycle.lock();
                life.fork_refs = life.fork_refs.saturating_sub(1);
                life.fork_refs == 0 && life.soft_deleted
            };
            if collect {
                next = Some(source.clone());
            }
        }
        removed.push(log);
    }
    removed
}
