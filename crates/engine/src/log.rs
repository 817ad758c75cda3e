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

use crate::clock::Clock;
use crate::durability::Durability;
use crate::error::{EngineError, Result};
use crate::framing;
use crate::memstore::MemStore;
use crate::persist::Persist;
use crate::records::{LogMeta, LogSnapshot, WalEntry, WriterRec};
use crate::store::LogFiles;
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
        + 256 // registry slot, Arc counts, watch channel, empty vectors
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
/// (when it passes [`PENDING_FLUSH_BYTES`], every second, and before a checkpoint syncs).
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
}

/// Shared accounting of bytes held in memory, for the server-wide limit.
#[derive(Debug, Default)]
pub(crate) struct MemoryBudget {
    pub used: AtomicU64,
    pub limit: u64,
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
}

impl Drop for Log {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.state.get_mut().own_bytes, Ordering::Relaxed);
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

/// Limits that an append checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppendLimits {
    pub max_stream_bytes: u64,
    pub max_producer_id_bytes: usize,
    pub max_stream_seq_bytes: usize,
    /// Producers remembered per log; the least recently used is forgotten beyond this.
    pub max_producers: usize,
}

pub(crate) fn storage_error(e: impl std::fmt::Display, no_space: bool) -> EngineError {
    EngineError::Storage {
        no_space,
        message: e.to_string(),
    }
}

fn io_error(e: std::io::Error) -> EngineError {
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
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let tail = config.base.as_ref().map_or(0, |b| b.upto);
        Self::with_writer(
            config,
            files,
            Writer {
                tail,
                ..Writer::default()
            },
            now_ms,
            budget,
        )
    }

    fn with_writer(
        config: LogConfig,
        files: Option<LogFiles>,
        w: Writer,
        now_ms: i64,
        budget: Arc<MemoryBudget>,
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
            }),
            lifecycle: Mutex::new(Lifecycle::default()),
            append_lock: Arc::new(tokio::sync::Mutex::new(())),
            notify: watch::channel(0).0,
            budget,
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
        budget: Arc<MemoryBudget>,
        max_producers: usize,
    ) -> Self {
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
        let log = Self::with_writer(config, Some(files), w, now_ms, budget);
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
    }

    pub fn is_creating(&self) -> bool {
        self.state.lock().creating
    }

    /// Wait until no create or append of this log is in flight.
    pub async fn settled(&self) {
        drop(self.append_lock.lock().await);
    }

    /// The log's state for a checkpoint; also returns whether its files need a sync.
    pub fn snapshot(&self, deleted: bool) -> Result<(LogSnapshot, bool)> {
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
        Ok((
            LogSnapshot {
                meta: self.config.meta(),
                writer,
                deleted,
            },
            dirty,
        ))
    }

    /// Write the pending tail to the files (no sync).
    pub fn flush_pending(&self) -> Result<()> {
        let mut st = self.state.lock();
        self.flush_locked(&mut st)
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
        p.start += p.data.len() as u64;
        p.data.clear();
        p.ends.clear();
        if p.data.capacity() > PENDING_FLUSH_BYTES * 2 {
            p.data = Vec::new();
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

    /// Wake every reader waiting on this log. Called after the change is applied, so a reader
    /// that subscribes later reads the change itself: with no subscriber, nothing to do.
    fn wake(&self) {
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

    /// Slide the TTL window (every read and write except metadata lookups).
    pub fn touch(&self, clock: &dyn Clock) {
        self.slide(&mut self.state.lock(), clock);
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

    /// Validate and apply one append atomically: closure, content type, producer, `Stream-Seq`,
    /// limits, then data and every piece of writer state together (one WAL record for durable
    /// logs, applied only once the WAL has it).
    pub async fn append(
        self: &Arc<Self>,
        req: AppendRequest,
        limits: AppendLimits,
        clock: &dyn Clock,
        persist: Option<&Arc<Persist>>,
    ) -> Result<Appended> {
        let durability = self.config.durability;
        if !durability.is_persistent() {
            let mut st = self.state.lock();
            let plan = match self.validate(&mut st, req, limits, clock)? {
                Decision::Answer(a) => return Ok(a),
                Decision::Write(plan) => plan,
            };
            let out = self.apply(&mut st, plan, limits);
            drop(st);
            self.wake();
            return Ok(out);
        }
        let Some(persist) = persist else {
            return Err(storage_error("durable log without storage", false));
        };
        // Owned, so that it can move into the WAL callback: if this future is dropped while
        // the record is queued (a client resets its HTTP/2 stream), the next append still
        // waits until this one is applied or failed, and never validates against stale state.
        let serial = self.append_lock.clone().lock_owned().await;
        let (plan, record) = {
            let mut st = self.state.lock();
            let plan = match self.validate(&mut st, req, limits, clock)? {
                Decision::Answer(a) => return Ok(a),
                Decision::Write(plan) => plan,
            };
            let record = plan.entry(self.config.id).encode(&plan.payload.data);
            (plan, record)
        };
        let (tx, rx) = oneshot::channel();
        let log = self.clone();
        persist.submit(
            self.config.id,
            record,
            commit_for(durability),
            Box::new(move |r| {
                let out = match r {
                    Ok(_) => {
                        let mut st = log.state.lock();
                        let out = log.apply(&mut st, plan, limits);
                        drop(st);
                        log.wake();
                        Ok(out)
                    }
                    Err(e) => {
                        // Nothing of it happened: give back what it reserved.
                        log.budget.used.fetch_sub(plan.charge, Ordering::Relaxed);
                        Err(e)
                    }
                };
                drop(serial);
                let _ = tx.send(out);
            }),
        );
        match rx.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(wal_error(e)),
            Err(_) => Err(storage_error(
                "the WAL shut down before the append committed",
                false,
            )),
        }
    }

    fn validate(
        &self,
        st: &mut LogState,
        req: AppendRequest,
        limits: AppendLimits,
        clock: &dyn Clock,
    ) -> Result<Decision> {
        if st.removed || st.creating {
            return Err(EngineError::NotFound);
        }
        // Client-controlled state is bounded before anything looks at it: every producer id
        // is kept (in RAM, checkpoints and WAL records) and every Stream-Seq too.
        if let Some(p) = &req.producer
            && p.id.len() > limits.max_producer_id_bytes
        {
            return Err(EngineError::ProducerIdTooLong {
                len: p.id.len(),
                limit: limits.max_producer_id_bytes,
            });
        }
        if let Some(seq) = &req.stream_seq
            && seq.len() > limits.max_stream_seq_bytes
        {
            return Err(EngineError::StreamSeqTooLong {
                len: seq.len(),
                limit: limits.max_stream_seq_bytes,
            });
        }
        self.slide(st, clock);
        let w = &st.w;
        let has_data = !req.payload.is_empty();
        if !has_data && !req.close {
            return Err(EngineError::EmptyAppend);
        }

        if w.closed {
            if let (Some(claim), Some(by)) = (&req.producer, &w.closed_by)
                && claim == by
            {
                return Ok(Decision::Answer(Appended {
                    status: AppendStatus::Duplicate,
                    next: w.tail,
                    closed: true,
                    producer: Some(ProducerAck {
                        epoch: claim.epoch,
                        seq: claim.seq,
                    }),
                }));
            }
            if req.close && !has_data {
                let producer = req.producer.as_ref().and_then(|c| {
                    w.producers.get(&c.id).map(|p| ProducerAck {
                        epoch: p.epoch,
                        seq: p.last_seq,
                    })
                });
                return Ok(Decision::Answer(Appended {
                    status: AppendStatus::AlreadyClosed,
                    next: w.tail,
                    closed: true,
                    producer,
                }));
            }
            return Err(EngineError::Closed { next: w.tail });
        }

        if has_data
            && let Some(ct) = &req.content_type
            && !framing::has_media_key(ct, &self.config.media_key)
        {
            return Err(EngineError::ContentTypeMismatch {
                expected: self.config.content_type.to_string(),
            });
        }

        // Producer fencing and deduplication come before Stream-Seq: a retry is answered as a
        // duplicate even though its Stream-Seq would now look like a regression.
        if let Some(claim) = &req.producer {
            match w.producers.get(&claim.id) {
                None => {
                    if claim.seq != 0 {
                        return Err(EngineError::SeqGap {
                            expected: 0,
                            received: claim.seq,
                        });
                    }
                }
                Some(p) if claim.epoch < p.epoch => {
                    return Err(EngineError::StaleEpoch { current: p.epoch });
                }
                Some(p) if claim.epoch > p.epoch => {
                    if claim.seq != 0 {
                        return Err(EngineError::EpochSeqNotZero);
                    }
                }
                Some(p) => {
                    if claim.seq <= p.last_seq {
                        return Ok(Decision::Answer(Appended {
                            status: AppendStatus::Duplicate,
                            next: w.tail,
                            closed: w.closed,
                            producer: Some(ProducerAck {
                                epoch: p.epoch,
                                seq: p.last_seq,
                            }),
                        }));
                    }
                    if claim.seq != p.last_seq + 1 {
                        return Err(EngineError::SeqGap {
                            expected: p.last_seq + 1,
                            received: claim.seq,
                        });
                    }
                }
            }
        }

        if let Some(seq) = &req.stream_seq
            && let Some(last) = &w.last_stream_seq
            && seq.as_bytes() <= last.as_bytes()
        {
            return Err(EngineError::SeqRegression {
                given: seq.clone(),
                last: last.clone(),
            });
        }

        let len = req.payload.data.len() as u64;
        if len > 0 && st.pending.data.len() >= PENDING_MAX_BYTES {
            return Err(storage_error(
                "the stream's files cannot be written; refusing appends until they can",
                false,
            ));
        }
        let mut charge = 0;
        if len > 0 {
            let size = w.tail + len;
            if size > limits.max_stream_bytes {
                return Err(EngineError::StreamFull {
                    size,
                    limit: limits.max_stream_bytes,
                });
            }
            if self.files.is_none() {
                charge += len + RECORD_OVERHEAD;
            }
        }
        if let Some(p) = &req.producer
            && !w.producers.contains_key(&p.id)
        {
            charge += p.id.len() as u64 + PRODUCER_OVERHEAD;
        }
        self.reserve_memory(charge)?;
        Ok(Decision::Write(Plan {
            start: w.tail,
            payload: req.payload,
            producer: req.producer,
            stream_seq: req.stream_seq,
            close: req.close,
            log_seq: w.log_seq + 1,
            charge,
        }))
    }

    /// Apply a validated append: data and all writer state, as one step.
    fn apply(&self, st: &mut LogState, plan: Plan, limits: AppendLimits) -> Appended {
        // Appends of a log are validated one at a time against the state they apply to (the
        // state lock, or the append lock across a WAL wait), so this cannot fail; if it did,
        // applying would store the record at the wrong position.
        assert_eq!(plan.start, st.w.tail, "appends apply in order");
        self.push_locked(st, plan.payload);
        st.own_bytes += plan.charge;
        let mut freed = 0;
        let w = &mut st.w;
        w.log_seq = plan.log_seq;
        if let Some(seq) = plan.stream_seq {
            w.last_stream_seq = Some(seq);
        }
        let ack = plan.producer.as_ref().map(|c| {
            w.producers.insert(
                c.id.clone(),
                ProducerState {
                    epoch: c.epoch,
                    last_seq: c.seq,
                    last_used: plan.log_seq,
                },
            );
            if w.producers.len() > limits.max_producers.max(1) {
                // Forget the least recently used producer (replay and restore keep the same
                // set: they rank producers by the same order).
                let oldest = w
                    .producers
                    .iter()
                    .min_by_key(|(_, p)| p.last_used)
                    .map(|(id, _)| id.clone());
                if let Some(id) = oldest
                    && w.producers.remove(&id).is_some()
                {
                    freed += id.len() as u64 + PRODUCER_OVERHEAD;
                }
            }
            ProducerAck {
                epoch: c.epoch,
                seq: c.seq,
            }
        });
        if plan.close {
            w.closed = true;
            w.closed_by = plan.producer;
        }
        let out = Appended {
            status: AppendStatus::Written,
            next: w.tail,
            closed: w.closed,
            producer: ack,
        };
        if freed > 0 {
            st.own_bytes = st.own_bytes.saturating_sub(freed);
            self.budget.used.fetch_sub(freed, Ordering::Relaxed);
        }
        out
    }

    /// Account `len` more bytes against the server-wide memory limit.
    pub fn reserve_memory(&self, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let limit = self.budget.limit;
        let mut used = self.budget.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(len) > limit {
                return Err(EngineError::MemoryFull { limit });
            }
            match self.budget.used.compare_exchange_weak(
                used,
                used + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => used = actual,
            }
        }
    }

    /// The log of this fork chain that stores position `pos` (this log, or the ancestor whose
    /// own records hold it), and the end of the range this log inherits from it. Iterative:
    /// chains may be as deep as clients made them before the depth limit existed.
    fn owner_of(&self, pos: u64) -> (&Log, u64) {
        let mut log = self;
        let mut limit = u64::MAX;
        while let Some(base) = &log.config.base
            && pos < base.upto
        {
            limit = limit.min(base.upto);
            log = &base.source;
        }
        (log, limit)
    }

    /// Append the stored chunks of `[from, to)` to `out`, stopping once `budget` bytes are
    /// gathered at a record boundary. Returns the position reached.
    pub fn collect(
        &self,
        from: u64,
        to: u64,
        budget: &mut usize,
        out: &mut Vec<Bytes>,
    ) -> Result<u64> {
        let mut pos = from;
        while pos < to {
            let (owner, limit) = self.owner_of(pos);
            let end = to.min(limit);
            let reached = owner.collect_own(pos, end, budget, out)?;
            if reached < end || *budget == 0 {
                return Ok(reached);
            }
            pos = reached;
        }
        Ok(pos)
    }

    /// `collect` over this log's own records only.
    fn collect_own(
        &self,
        pos: u64,
        to: u64,
        budget: &mut usize,
        out: &mut Vec<Bytes>,
    ) -> Result<u64> {
        if let Some(files) = &self.files {
            return self.collect_files(files, pos, to, budget, out);
        }
        Ok(self.state.lock().mem.collect(pos, to, budget, out))
    }

    /// `collect` for a file-backed log: what is in the files never changes, so it is read
    /// without the lock; what is still pending is copied under it.
    fn collect_files(
        &self,
        files: &LogFiles,
        mut pos: u64,
        to: u64,
        budget: &mut usize,
        out: &mut Vec<Bytes>,
    ) -> Result<u64> {
        loop {
            let (file_records, pending_start, tail) = {
                let st = self.state.lock();
                (
                    st.w.records - st.pending.ends.len() as u64,
                    st.pending.start,
                    st.w.tail,
                )
            };
            let to = to.min(tail);
            if pos < pending_start.min(to) {
                let (end, chunk) = files
                    .read(file_records, pos, pending_start.min(to), budget)
                    .map_err(io_error)?;
                if !chunk.is_empty() {
                    out.push(chunk);
                }
                pos = end.max(pos);
                if pos < pending_start.min(to) || *budget == 0 {
                    return Ok(pos);
                }
            }
            if pos >= to {
                return Ok(pos);
            }
            let st = self.state.lock();
            let p = &st.pending;
            if pos < p.start {
                // A flush moved the range into the files meanwhile: read it from there.
                continue;
            }
            // Whole pending records until the budget is reached.
            let first = p.ends.partition_point(|&e| e <= pos);
            let mut end = pos;
            for &e in &p.ends[first..] {
                end = e.min(to);
                if end >= to || (end - pos) as usize >= *budget {
                    break;
                }
            }
            let lo = (pos - p.start) as usize;
            let hi = (end - p.start) as usize;
            out.push(Bytes::copy_from_slice(&p.data[lo..hi]));
            *budget = budget.saturating_sub(hi - lo);
            return Ok(end);
        }
    }

    /// The record of a file-backed log that holds `pos` (pending or in the files).
    fn file_record_containing(&self, files: &LogFiles, pos: u64) -> Result<Option<(u64, Bytes)>> {
        let file_records = {
            let st = self.state.lock();
            let p = &st.pending;
            if pos >= p.start {
                let i = p.ends.partition_point(|&e| e <= pos);
                return Ok(p.ends.get(i).map(|&end| {
                    let start = if i == 0 { p.start } else { p.ends[i - 1] };
                    let lo = (start - p.start) as usize;
                    let hi = (end - p.start) as usize;
                    (start, Bytes::copy_from_slice(&p.data[lo..hi]))
                }));
            }
            st.w.records - p.ends.len() as u64
        };
        files.record_containing(file_records, pos).map_err(io_error)
    }

    /// For JSON framing: whether `pos` falls between two messages (offsets inside a message
    /// would make reads and forks return broken JSON).
    pub fn is_message_boundary(&self, pos: u64) -> Result<bool> {
        if self.config.framing != Framing::JsonMessages {
            return Ok(true);
        }
        let (owner, _) = self.owner_of(pos);
        if owner.config.base.as_ref().is_some_and(|b| b.upto == pos) {
            // Where an inheritance ends is a boundary: forks are made at boundaries.
            return Ok(true);
        }
        Ok(match owner.own_record_containing(pos)? {
            None => true, // at the tail
            Some((start, rec)) => framing::json_is_boundary(&rec, (pos - start) as usize),
        })
    }

    /// The stored bytes from `pos` to the end of the record that holds `pos`, as this log sees
    /// it (a record a fork inherited only in part ends where the inheritance ends). `None` at
    /// the tail.
    pub fn record_rest(&self, pos: u64) -> Result<Option<Bytes>> {
        let (owner, limit) = self.owner_of(pos);
        Ok(owner.own_record_containing(pos)?.map(|(start, rec)| {
            let rest = rec.slice((pos - start) as usize..);
            let keep = limit.saturating_sub(pos).min(rest.len() as u64) as usize;
            rest.slice(..keep)
        }))
    }

    /// This log's own record that holds `pos`: its start and bytes.
    fn own_record_containing(&self, pos: u64) -> Result<Option<(u64, Bytes)>> {
        match &self.files {
            Some(files) => self.file_record_containing(files, pos),
            None => Ok(self.state.lock().mem.record_at(pos)),
        }
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

impl Plan {
    fn entry(&self, log_id: u64) -> WalEntry {
        WalEntry::Append {
            log_id,
            log_seq: self.log_seq,
            start: self.start,
            producer: self
                .producer
                .as_ref()
                .map(|c| (c.id.clone(), c.epoch, c.seq)),
            stream_seq: self.stream_seq.clone(),
            close: self.close,
        }
    }
}
