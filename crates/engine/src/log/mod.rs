//! One log: its immutable configuration, its records and its writer state.
//!
//! A log's positions are byte positions in its stored form. A fork inherits the positions
//! `[0, base.upto)` from its source and stores its own records from `base.upto` on.
//!
//! An append is validated and applied under the log's state lock. For durable logs (every
//! class but `Ephemeral`) the append is applied only when the WAL has written it (`Fsync`: when
//! the group fsync covers it), from the committer's callback; appends to one such log are
//! serialized by `append_lock`, whose guard travels with the WAL record into that callback, so
//! validation always sees every earlier append even if the request that made it was dropped
//! mid-way. A failed WAL write therefore shows nothing of its append, in every class.
//!
//! Fork chains are walked iteratively (never by recursion), and their depth is bounded at
//! creation, so a read costs a bounded amount of work whatever clients created.

mod append;
mod commit;
mod flush;
mod queue;
mod read;
pub(crate) use read::Sink;
mod topic;
mod topic_change;
mod topic_copy;
mod topic_read;

pub(crate) use flush::FlushQueue;
pub(crate) use queue::{AckRequest, ClaimPass, LeaseChange, Taker};
pub(crate) use topic_copy::{Copies, CopyOutcome};

use crate::clock::Clock;
use crate::durability::Durability;
use crate::error::{EngineError, Result};
use crate::framing;
use crate::memstore::MemStore;
use crate::persist::Persist;
use crate::records::{LogMeta, LogSnapshot, WalEntry, WriterRec};
use crate::store::LogFiles;
use crate::topic::state::TopicState;
use crate::types::{
    AppendRequest, AppendStatus, Appended, Expiry, Framing, LogInfo, Payload, ProducerAck,
    ProducerClaim,
};
use bytes::Bytes;
use parking_lot::Mutex;
use riffle_wal::Commit;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{OwnedMutexGuard, oneshot, watch};

/// A topic's state for a checkpoint: its record, the router feeding it, a queue's leases.
pub(crate) struct TopicSnap {
    pub rec: crate::topic::state::TopicRec,
    pub feed: Option<crate::topic::router::Feed>,
    pub queue: Option<crate::topic::queue::QueueRec>,
    /// Its recent source-trimmed ranges.
    pub source_trims: Vec<(u64, u64)>,
}

/// Inherited prefix of a fork.
#[derive(Debug)]
pub(crate) struct ForkBase {
    pub source: Arc<Log>,
    /// Requested anchor and sub-offset, kept for idempotent re-create comparison.
    pub anchor: Option<u64>,
    pub sub: u64,
    /// The fork inherits the source's positions `[0, upto)`.
    pub upto: u64,
    /// Number of forks between this log and the root of its chain (1 for a fork of a root).
    pub depth: u32,
}

/// Immutable configuration of a log.
#[derive(Debug)]
pub(crate) struct LogConfig {
    pub id: u64,
    pub name: String,
    pub content_type: Arc<str>,
    pub media_key: String,
    pub framing: Framing,
    /// Effective expiry (a fork may inherit its source's).
    pub expiry: Option<Expiry>,
    /// Expiry as requested at creation, for idempotent re-create comparison.
    pub requested_expiry: Option<Expiry>,
    pub durability: Durability,
    pub base: Option<ForkBase>,
}

impl LogConfig {
    /// How many forks deep this log is (0 for a log that is not a fork).
    pub fn depth(&self) -> u32 {
        self.base.as_ref().map_or(0, |b| b.depth)
    }

    pub fn meta(&self) -> LogMeta {
        LogMeta {
            id: self.id,
            name: self.name.clone(),
            content_type: self.content_type.to_string(),
            framing: self.framing.into(),
            expiry: self.expiry.as_ref().map(Into::into),
            requested_expiry: self.requested_expiry.as_ref().map(Into::into),
            durability: self.durability,
            fork: self.base.as_ref().map(|b| crate::records::ForkRec {
                source_id: b.source.config.id,
                anchor: b.anchor,
                sub: b.sub,
                upto: b.upto,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ProducerState {
    epoch: u64,
    last_seq: u64,
    /// When it last wrote (the log's record sequence number then): the least recently used
    /// producer is forgotten first once a log holds too many.
    last_used: u64,
}

/// RAM a producer entry costs beyond its id's bytes (map slot, state, string header).
pub const PRODUCER_OVERHEAD: u64 = 64;
/// RAM an `Ephemeral` record costs beyond its bytes (its start position in the index).
pub const RECORD_OVERHEAD: u64 = 8;

/// RAM a log costs whatever it holds: its structures, name and content type (twice each: the
/// registry key and the configuration; the content type and its media key).
pub fn log_overhead(name: &str, content_type: &str) -> u64 {
    (std::mem::size_of::<Log>()
        // Registry slot, Arc counts, watch channel, file-cache entry, allocator rounding:
        // measured, 100,000 `file-durable` streams cost about 1.4 KiB of RSS each.
        + 768
        + 2 * name.len()
        + 2 * content_type.len()) as u64
}

/// Registry-owned lifecycle flags, changed only under the registry's write lock.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    /// Number of live forks whose source is this log.
    pub fork_refs: usize,
    /// Deleted (or expired) while forks still reference it.
    pub soft_deleted: bool,
}

/// Writer state: what validation reads and a committed append changes.
#[derive(Debug, Default)]
struct Writer {
    tail: u64,
    /// Number of own records (file-backed logs; the RAM store counts its own).
    records: u64,
    closed: bool,
    /// The producer tuple whose append closed the log, for idempotent retries.
    closed_by: Option<ProducerClaim>,
    last_stream_seq: Option<String>,
    producers: HashMap<String, ProducerState>,
    /// Number of WAL records written for this log; replay skips those a checkpoint covers.
    log_seq: u64,
}

/// The tail of a file-backed log that is committed (in the WAL) but not yet written to its
/// stream files: appends land here with one memcpy, and reach the files in large writes
/// (when it passes [`PENDING_FLUSH_BYTES`], at the background flush's next round (twice a
/// second; a small tail waits about 2 s when the logs to write do not fit the cache of open
/// files, see `flush.rs`), and before a checkpoint syncs).
#[derive(Debug, Default)]
struct Pending {
    /// Position of the first pending byte (everything before it is in the files).
    start: u64,
    data: Vec<u8>,
    /// End position of each pending record.
    ends: Vec<u64>,
}

/// A log's pending tail is written out once it holds this much.
const PENDING_FLUSH_BYTES: usize = 32 * 1024;
/// If the stream files cannot be written, the pending tail grows; past this, appends are
/// refused (503) rather than letting RAM grow without bound.
const PENDING_MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug)]
struct LogState {
    w: Writer,
    /// An `Ephemeral` log's records.
    mem: MemStore,
    pending: Pending,
    last_access_ms: i64,
    /// Tail as of the last checkpoint's sync of the files.
    synced_tail: u64,
    /// The log was removed from the registry; handles still held must not write.
    removed: bool,
    /// Registered, but its creation is not yet durable: invisible to every lookup.
    creating: bool,
    /// Bytes counted against the server-wide budget for this log (its structures, producers,
    /// and an `Ephemeral` log's records), returned when the log is dropped.
    own_bytes: u64,
    /// This log's share of the engine's retained-bytes count (kept only with a quota).
    retained_counted: u64,
    /// A topic's record index, trims, deletes and idempotency window.
    topic: Option<Box<TopicState>>,
    /// Data position and record number below which disk space was given back (trimmed).
    released: (u64, u64),
    /// In the flush queue (see [`FlushQueue`]), since its round `flush_round`.
    flush_queued: bool,
    flush_round: u64,
}

/// Shared accounting of bytes held in memory, for the server-wide limit; and of the data bytes
/// retained across all logs, for the server-wide quota (`retained_limit`, 0: none, and then
/// not counted: the count costs a lock per change).
#[derive(Debug, Default)]
pub(crate) struct MemoryBudget {
    pub used: AtomicU64,
    pub limit: u64,
    pub retained: AtomicU64,
    pub retained_limit: u64,
}

/// What every log of an engine shares.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub budget: Arc<MemoryBudget>,
    pub flushes: Arc<FlushQueue>,
    /// The logs created with an expiry (TTL or time), for the expiry sweep: it visits these,
    /// not every log. Entries of logs since dropped are pruned by the sweep.
    pub expiring: Arc<Mutex<Vec<std::sync::Weak<Log>>>>,
}

impl MemoryBudget {
    /// Refuse `len` more bytes past the server-wide quota on retained bytes. Concurrent
    /// writers may pass together and overshoot it by their own sizes, never more.
    pub(crate) fn check_retained(&self, len: u64) -> Result<()> {
        let limit = self.retained_limit;
        if limit > 0 && len > 0 && self.retained.load(Ordering::Relaxed) + len > limit {
            return Err(EngineError::LimitReached {
                limit: "max_total_bytes",
                max: limit,
            });
        }
        Ok(())
    }
}

/// A validated append, ready to apply.
#[derive(Debug)]
struct Plan {
    start: u64,
    payload: Payload,
    producer: Option<ProducerClaim>,
    stream_seq: Option<String>,
    close: bool,
    log_seq: u64,
    /// Bytes reserved against the memory budget for what this append adds.
    charge: u64,
}

enum Decision {
    /// Answered without writing (duplicate, already closed).
    Answer(Appended),
    Write(Plan),
}

#[derive(Debug)]
pub(crate) struct Log {
    pub config: LogConfig,
    pub files: Option<LogFiles>,
    state: Mutex<LogState>,
    pub lifecycle: Mutex<Lifecycle>,
    /// Serializes appends of durable logs across their wait for the WAL; the guard is owned
    /// by the WAL callback once the record is queued (and by the create until it commits).
    append_lock: Arc<tokio::sync::Mutex<()>>,
    /// Bumped on every change a reader may wait for (data, close, removal).
    notify: watch::Sender<u64>,
    budget: Arc<MemoryBudget>,
    /// Where the log queues itself when it has a pending tail to write.
    flushes: Arc<FlushQueue>,
    /// This log, for the flush queue (logs live in an `Arc`).
    me: std::sync::Weak<Log>,
}

impl Drop for Log {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        self.budget.used.fetch_sub(st.own_bytes, Ordering::Relaxed);
        self.budget
            .retained
            .fetch_sub(st.retained_counted, Ordering::Relaxed);
        // Release the fork chain iteratively: dropping the last owner of a deep chain would
        // otherwise recurse once per level and could overflow the stack.
        let mut base = self.config.base.take();
        while let Some(b) = base {
            base = match Arc::try_unwrap(b.source) {
                Ok(mut source) => source.config.base.take(),
                Err(_) => None,
            };
        }
    }
}

pub(crate) fn storage_error(e: impl std::fmt::Display, no_space: bool) -> EngineError {
    EngineError::Storage {
        no_space,
        message: e.to_string(),
    }
}

fn io_error(e: std::io::Error) -> EngineError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        return EngineError::Damaged(e.to_string());
    }
    let no_space = e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28);
    storage_error(e, no_space)
}

pub(crate) fn wal_error(e: riffle_wal::WalError) -> EngineError {
    let no_space = e.is_no_space();
    storage_error(e, no_space)
}

impl Log {
    pub fn new(
        config: LogConfig,
        files: Option<LogFiles>,
        now_ms: i64,
        shared: &Shared,
    ) -> Arc<Self> {
        let tail = config.base.as_ref().map_or(0, |b| b.upto);
        let log = Arc::new_cyclic(|me| {
            Self::with_writer(
                config,
                files,
                Writer {
                    tail,
                    ..Writer::default()
                },
                now_ms,
                shared,
                me.clone(),
            )
        });
        log.note_expiry(shared);
        log
    }

    /// Put a log with an expiry on the sweep's list.
    fn note_expiry(self: &Arc<Self>, shared: &Shared) {
        if self.config.expiry.is_some() {
            shared.expiring.lock().push(Arc::downgrade(self));
        }
    }

    fn with_writer(
        config: LogConfig,
        files: Option<LogFiles>,
        w: Writer,
        now_ms: i64,
        shared: &Shared,
        me: std::sync::Weak<Log>,
    ) -> Self {
        Self {
            config,
            files,
            state: Mutex::new(LogState {
                synced_tail: w.tail,
                pending: Pending {
                    start: w.tail,
                    ..Pending::default()
                },
                mem: MemStore::new(w.tail),
                w,
                last_access_ms: now_ms,
                removed: false,
                creating: false,
                own_bytes: 0,
                retained_counted: 0,
                topic: None,
                released: (0, 0),
                flush_queued: false,
                flush_round: 0,
            }),
            lifecycle: Mutex::new(Lifecycle::default()),
            append_lock: Arc::new(tokio::sync::Mutex::new(())),
            notify: watch::channel(0).0,
            budget: shared.budget.clone(),
            flushes: shared.flushes.clone(),
            me,
        }
    }

    /// Rebuild a recovered log. `dirty`: replay wrote into its files, which a checkpoint must
    /// sync before it lets the WAL that holds the same data go.
    pub fn restore(
        config: LogConfig,
        files: LogFiles,
        mut rec: WriterRec,
        dirty: bool,
        now_ms: i64,
        shared: &Shared,
        max_producers: usize,
    ) -> Arc<Self> {
        // Producers come least recently used first: keep the newest when the limit shrank
        // (what the live log would have kept), and rank them in that order.
        let excess = rec.producers.len().saturating_sub(max_producers);
        rec.producers.drain(..excess);
        let w = Writer {
            tail: rec.tail,
            records: rec.records,
            closed: rec.closed,
            closed_by: rec
                .closed_by
                .map(|(id, epoch, seq)| ProducerClaim { id, epoch, seq }),
            last_stream_seq: rec.last_stream_seq,
            producers: rec
                .producers
                .into_iter()
                .enumerate()
                .map(|(rank, (id, epoch, last_seq))| {
                    let last_used = rank as u64;
                    (
                        id,
                        ProducerState {
                            epoch,
                            last_seq,
                            last_used,
                        },
                    )
                })
                .collect(),
            log_seq: rec.log_seq,
        };
        let log = Arc::new_cyclic(|me| {
            Self::with_writer(config, Some(files), w, now_ms, shared, me.clone())
        });
        log.note_expiry(shared);
        {
            let mut st = log.state.lock();
            if dirty {
                st.synced_tail = u64::MAX;
            }
            // Recovery must not fail on the budget: count what the log holds, unchecked.
            let held = log.overhead() + producer_bytes(&st.w.producers);
            log.budget.used.fetch_add(held, Ordering::Relaxed);
            st.own_bytes = held;
        }
        log
    }

    /// RAM the log costs whatever it holds (see [`log_overhead`]).
    pub fn overhead(&self) -> u64 {
        log_overhead(&self.config.name, &self.config.content_type)
    }

    /// Count `bytes`, already reserved with [`Log::reserve_memory`], as held by this log.
    pub fn hold_reserved(&self, bytes: u64) {
        self.state.lock().own_bytes += bytes;
    }

    /// Mark the log as being created: lookups do not see it, and appends wait, until
    /// [`Log::finish_create`] runs. Returns the guard the create holds until then.
    pub fn begin_create(&self) -> Option<OwnedMutexGuard<()>> {
        self.state.lock().creating = true;
        self.append_lock.clone().try_lock_owned().ok()
    }

    /// The create committed: store its initial content and make the log visible.
    pub fn finish_create(&self, payload: Payload, close: bool) {
        let mut st = self.state.lock();
        self.push_locked(&mut st, payload);
        st.w.closed = close;
        st.creating = false;
        drop(st);
        self.recount_retained();
    }

    pub fn is_creating(&self) -> bool {
        self.state.lock().creating
    }

    /// Wait until no create or append of this log is in flight.
    pub async fn settled(&self) {
        drop(self.append_lock.lock().await);
    }

    /// The log's state for a checkpoint (with a topic's state, taken under the same lock, so
    /// both describe the same moment); also returns whether its files need a sync.
    pub fn snapshot(&self, deleted: bool) -> Result<(LogSnapshot, bool, Option<TopicSnap>)> {
        let mut st = self.state.lock();
        // The snapshot's tail must be in the files before they are synced.
        self.flush_locked(&mut st)?;
        let w = &st.w;
        let writer = WriterRec {
            tail: w.tail,
            records: w.records,
            closed: w.closed,
            closed_by: w.closed_by.as_ref().map(|c| (c.id.clone(), c.epoch, c.seq)),
            last_stream_seq: w.last_stream_seq.clone(),
            producers: {
                // Least recently used first, the order replay and restore rely on.
                let mut ps: Vec<_> = w.producers.iter().collect();
                ps.sort_unstable_by_key(|(_, p)| p.last_used);
                ps.into_iter()
                    .map(|(id, p)| (id.clone(), p.epoch, p.last_seq))
                    .collect()
            },
            log_seq: w.log_seq,
        };
        let dirty = st.synced_tail != w.tail;
        // The snapshot records the exact head: seqs reserved past it must be reserved again,
        // in the WAL after this checkpoint. A router's copies are in it (the files are synced
        // before it is published), so they need no logging any more.
        let topic = st.topic.as_deref_mut().map(|t| {
            t.reserved = t.head;
            t.unlogged = None;
            t.unlogged_lost.clear();
            TopicSnap {
                rec: t.to_rec(),
                feed: t.feed.clone(),
                queue: t.queue.as_deref().map(|q| q.to_rec()),
                source_trims: t.source_trims.iter().map(|(&a, &b)| (a, b)).collect(),
            }
        });
        Ok((
            LogSnapshot {
                meta: self.config.meta(),
                writer,
                deleted,
            },
            dirty,
            topic,
        ))
    }

    fn flush_locked(&self, st: &mut LogState) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        if st.pending.ends.is_empty() {
            return Ok(());
        }
        let first_record = st.w.records - st.pending.ends.len() as u64;
        files
            .write_records(
                first_record,
                st.pending.start,
                &st.pending.data,
                &st.pending.ends,
            )
            .map_err(io_error)?;
        let p = &mut st.pending;
        let flushed = p.data.len();
        p.start += flushed as u64;
        p.data.clear();
        p.ends.clear();
        // A tail written before it filled (the background flush or a checkpoint: a quiet
        // log) gives its buffers back; with many streams, each keeping what its busiest
        // second needed would add up. A busy log keeps them, up to twice the flush size.
        if flushed < PENDING_FLUSH_BYTES || p.data.capacity() > PENDING_FLUSH_BYTES * 2 {
            p.data = Vec::new();
            p.ends = Vec::new();
        }
        Ok(())
    }

    /// Record that the files are synced up to `tail` (the tail of the snapshot just taken).
    pub fn mark_synced(&self, tail: u64) {
        self.state.lock().synced_tail = tail;
    }

    pub fn info(&self) -> LogInfo {
        let st = self.state.lock();
        LogInfo {
            id: self.config.id,
            content_type: self.config.content_type.clone(),
            framing: self.config.framing,
            next: st.w.tail,
            closed: st.w.closed,
            expiry: self.config.expiry.clone(),
            durability: self.config.durability,
        }
    }

    pub fn tail(&self) -> u64 {
        self.state.lock().w.tail
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().w.closed
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Data bytes this log holds of its own (a fork's inherited bytes are its source's; a
    /// topic's are its live records).
    fn retained_now(&self, st: &LogState) -> u64 {
        if st.removed {
            return 0;
        }
        match st.topic.as_deref() {
            Some(t) => t.live_bytes(st.w.tail),
            None => {
                let start = self.config.base.as_ref().map_or(0, |b| b.upto);
                st.w.tail.saturating_sub(start)
            }
        }
    }

    /// Bring this log's share of the retained-bytes count up to date (with a quota only).
    pub(crate) fn recount_retained(&self) {
        if self.budget.retained_limit == 0 {
            return;
        }
        let mut st = self.state.lock();
        let now = self.retained_now(&st);
        let before = std::mem::replace(&mut st.retained_counted, now);
        if now >= before {
            self.budget
                .retained
                .fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.budget
                .retained
                .fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// See [`MemoryBudget::check_retained`].
    pub(crate) fn check_retained(&self, len: u64) -> Result<()> {
        self.budget.check_retained(len)
    }

    /// Wake every reader waiting on this log. Called after the change is applied, so a reader
    /// that subscribes later reads the change itself: with no subscriber, nothing to do.
    fn wake(&self) {
        // Every change of the data wakes: the place to settle the retained count.
        self.recount_retained();
        if self.notify.receiver_count() > 0 {
            self.notify.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Wake waiting readers so they re-check the log's state (after a soft delete).
    pub fn wake_readers(&self) {
        self.wake();
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        match &self.config.expiry {
            None => false,
            Some(Expiry::At { unix_ms, .. }) => now_ms >= *unix_ms,
            Some(Expiry::Ttl { secs }) => {
                // A stream with live readers (each waits on a handle, which subscribes) does
                // not expire (PROTOCOL.md §5.1, `Stream-TTL`): its idle clock starts when the last goes.
                if self.notify.receiver_count() > 0 {
                    return false;
                }
                let last = self.state.lock().last_access_ms;
                let window = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                now_ms >= last.saturating_add(window)
            }
        }
    }

    /// Whether the log has expired now. Logs without an expiry do not read the clock.
    pub fn expired(&self, clock: &dyn Clock) -> bool {
        self.config.expiry.is_some() && self.is_expired(clock.now_ms())
    }

    /// When a log with an idle TTL was last read or written (for checkpoints).
    pub(crate) fn ttl_last_access(&self) -> Option<i64> {
        matches!(self.config.expiry, Some(Expiry::Ttl { .. }))
            .then(|| self.state.lock().last_access_ms)
    }

    /// Start the idle clock of a restored log at `ms` (its last access before a graceful
    /// stop) rather than at the restart.
    pub(crate) fn restore_last_access(&self, ms: i64) {
        self.state.lock().last_access_ms = ms;
    }

    /// Slide the TTL window (every read and write except metadata lookups).
    pub fn touch(&self, clock: &dyn Clock) {
        // Only logs with an idle TTL slide: the others take no lock here.
        if matches!(self.config.expiry, Some(Expiry::Ttl { .. })) {
            self.slide(&mut self.state.lock(), clock);
        }
    }

    /// Slide the TTL window, under the state lock. Only logs with a `Stream-TTL` slide, so only
    /// they read the clock on every access.
    fn slide(&self, st: &mut LogState, clock: &dyn Clock) {
        if matches!(self.config.expiry, Some(Expiry::Ttl { .. })) {
            st.last_access_ms = st.last_access_ms.max(clock.now_ms());
        }
    }

    pub fn mark_removed(&self) {
        self.state.lock().removed = true;
        self.wake();
    }

    pub fn is_removed(&self) -> bool {
        self.state.lock().removed
    }

    fn push_locked(&self, st: &mut LogState, payload: Payload) {
        if payload.data.is_empty() {
            return;
        }
        // `st.w.tail` is where this record starts.
        let len = payload.data.len() as u64;
        if self.files.is_some() {
            self.queue_flush(st);
            st.pending.data.extend_from_slice(&payload.data);
            st.pending.ends.push(st.w.tail + len);
            st.w.records += 1;
            if st.pending.data.len() >= PENDING_FLUSH_BYTES
                && let Err(e) = self.flush_locked(st)
            {
                // Still committed (WAL) and readable (pending): the next flush retries.
                tracing::warn!(log = self.config.id, error = %e, "writing a stream file failed");
            }
        } else {
            // Copied (a request body is often a slice of a larger receive buffer, which a
            // small record must not pin).
            st.mem.push(&payload.data);
        }
        st.w.tail += len;
    }
}

/// RAM the producer entries cost (see [`PRODUCER_OVERHEAD`]).
fn producer_bytes(producers: &HashMap<String, ProducerState>) -> u64 {
    producers
        .keys()
        .map(|id| id.len() as u64 + PRODUCER_OVERHEAD)
        .sum()
}

/// How long an acknowledgement of each class waits.
pub(crate) fn commit_for(d: Durability) -> Commit {
    match d {
        Durability::Fsync => Commit::Sync,
        Durability::Disk => Commit::Write,
        Durability::Memory | Durability::Ephemeral => Commit::Lazy,
    }
}
