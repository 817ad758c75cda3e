//! One log: its immutable configuration, its records and its writer state.
//!
//! A log's positions are byte positions in its stored form. A fork inherits the positions
//! `[0, base.upto)` from its source and stores its own records from `base.upto` on.

use crate::clock::Clock;
use crate::error::{EngineError, Result};
use crate::framing;
use crate::types::{
    AppendRequest, AppendStatus, Appended, Expiry, Framing, LogInfo, Payload, ProducerAck,
    ProducerClaim,
};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Inherited prefix of a fork.
#[derive(Debug)]
pub(crate) struct ForkBase {
    pub source: Arc<Log>,
    /// Requested anchor and sub-offset, kept for idempotent re-create comparison.
    pub anchor: Option<u64>,
    pub sub: u64,
    /// The fork inherits the source's positions `[0, upto)`.
    pub upto: u64,
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
    pub base: Option<ForkBase>,
}

#[derive(Debug)]
struct Record {
    start: u64,
    data: Bytes,
}

#[derive(Debug, Clone, Copy)]
struct ProducerState {
    epoch: u64,
    last_seq: u64,
}

/// Registry-owned lifecycle flags, changed only under the registry's write lock.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    /// Number of live forks whose source is this log.
    pub fork_refs: usize,
    /// Deleted (or expired) while forks still reference it.
    pub soft_deleted: bool,
}

#[derive(Debug)]
struct LogState {
    records: Vec<Record>,
    tail: u64,
    closed: bool,
    /// The producer tuple whose append closed the log, for idempotent retries.
    closed_by: Option<ProducerClaim>,
    last_stream_seq: Option<String>,
    producers: HashMap<String, ProducerState>,
    last_access_ms: i64,
    /// The log was removed from the registry; handles still held must not write.
    removed: bool,
}

/// Shared accounting of bytes held in memory, for the server-wide limit.
#[derive(Debug, Default)]
pub(crate) struct MemoryBudget {
    pub used: AtomicU64,
    pub limit: u64,
}

#[derive(Debug)]
pub(crate) struct Log {
    pub config: LogConfig,
    state: Mutex<LogState>,
    pub lifecycle: Mutex<Lifecycle>,
    /// Bumped on every change a reader may wait for (data, close, removal).
    notify: watch::Sender<u64>,
    budget: Arc<MemoryBudget>,
    own_bytes: AtomicU64,
}

impl Drop for Log {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.own_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Limits that an append checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppendLimits {
    pub max_stream_bytes: u64,
}

impl Log {
    pub fn new(config: LogConfig, now_ms: i64, budget: Arc<MemoryBudget>) -> Self {
        let tail = config.base.as_ref().map_or(0, |b| b.upto);
        Self {
            config,
            state: Mutex::new(LogState {
                records: Vec::new(),
                tail,
                closed: false,
                closed_by: None,
                last_stream_seq: None,
                producers: HashMap::new(),
                last_access_ms: now_ms,
                removed: false,
            }),
            lifecycle: Mutex::new(Lifecycle::default()),
            notify: watch::channel(0).0,
            budget,
            own_bytes: AtomicU64::new(0),
        }
    }

    pub fn info(&self) -> LogInfo {
        let st = self.state.lock();
        self.info_locked(&st)
    }

    fn info_locked(&self, st: &LogState) -> LogInfo {
        LogInfo {
            id: self.config.id,
            content_type: self.config.content_type.clone(),
            framing: self.config.framing,
            next: st.tail,
            closed: st.closed,
            expiry: self.config.expiry.clone(),
        }
    }

    pub fn tail(&self) -> u64 {
        self.state.lock().tail
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn wake(&self) {
        self.notify.send_modify(|v| *v = v.wrapping_add(1));
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

    /// Slide the TTL window (every read and write except metadata lookups).
    pub fn touch(&self, now_ms: i64) {
        let mut st = self.state.lock();
        st.last_access_ms = st.last_access_ms.max(now_ms);
    }

    /// Wake waiting readers so they re-check the log's state (after a soft delete).
    pub fn wake_readers(&self) {
        self.wake();
    }

    pub fn mark_removed(&self) {
        self.state.lock().removed = true;
        self.wake();
    }

    pub fn is_removed(&self) -> bool {
        self.state.lock().removed
    }

    /// Store `payload` (and close) as the log's first content, at creation.
    pub fn init(&self, payload: Payload, close: bool) {
        let mut st = self.state.lock();
        self.push_locked(&mut st, payload);
        st.closed = close;
    }

    fn push_locked(&self, st: &mut LogState, payload: Payload) {
        if payload.data.is_empty() {
            return;
        }
        let len = payload.data.len() as u64;
        st.records.push(Record {
            start: st.tail,
            data: payload.data,
        });
        st.tail += len;
        self.own_bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Validate and apply one append atomically: closure, content type, producer, `Stream-Seq`,
    /// limits, then data and every piece of writer state together.
    pub fn append(
        &self,
        req: AppendRequest,
        limits: AppendLimits,
        clock: &dyn Clock,
    ) -> Result<Appended> {
        let mut st = self.state.lock();
        if st.removed {
            return Err(EngineError::NotFound);
        }
        st.last_access_ms = st.last_access_ms.max(clock.now_ms());
        let has_data = !req.payload.is_empty();
        if !has_data && !req.close {
            return Err(EngineError::EmptyAppend);
        }

        if st.closed {
            if let (Some(claim), Some(by)) = (&req.producer, &st.closed_by)
                && claim == by
            {
                return Ok(Appended {
                    status: AppendStatus::Duplicate,
                    next: st.tail,
                    closed: true,
                    producer: Some(ProducerAck {
                        epoch: claim.epoch,
                        seq: claim.seq,
                    }),
                });
            }
            if req.close && !has_data {
                let producer = req.producer.as_ref().and_then(|c| {
                    st.producers.get(&c.id).map(|p| ProducerAck {
                        epoch: p.epoch,
                        seq: p.last_seq,
                    })
                });
                return Ok(Appended {
                    status: AppendStatus::AlreadyClosed,
                    next: st.tail,
                    closed: true,
                    producer,
                });
            }
            return Err(EngineError::Closed { next: st.tail });
        }

        if has_data
            && let Some(ct) = &req.content_type
            && framing::media_key(ct) != self.config.media_key
        {
            return Err(EngineError::ContentTypeMismatch {
                expected: self.config.content_type.to_string(),
            });
        }

        // Producer fencing and deduplication come before Stream-Seq: a retry is answered as a
        // duplicate even though its Stream-Seq would now look like a regression.
        let mut producer_update = None;
        if let Some(claim) = &req.producer {
            match st.producers.get(&claim.id) {
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
                        return Ok(Appended {
                            status: AppendStatus::Duplicate,
                            next: st.tail,
                            closed: st.closed,
                            producer: Some(ProducerAck {
                                epoch: p.epoch,
                                seq: p.last_seq,
                            }),
                        });
                    }
                    if claim.seq != p.last_seq + 1 {
                        return Err(EngineError::SeqGap {
                            expected: p.last_seq + 1,
                            received: claim.seq,
                        });
                    }
                }
            }
            producer_update = Some(ProducerState {
                epoch: claim.epoch,
                last_seq: claim.seq,
            });
        }

        if let Some(seq) = &req.stream_seq
            && let Some(last) = &st.last_stream_seq
            && seq.as_bytes() <= last.as_bytes()
        {
            return Err(EngineError::SeqRegression {
                given: seq.clone(),
                last: last.clone(),
            });
        }

        let len = req.payload.data.len() as u64;
        if len > 0 {
            let size = st.tail + len;
            if size > limits.max_stream_bytes {
                return Err(EngineError::StreamFull {
                    size,
                    limit: limits.max_stream_bytes,
                });
            }
            self.reserve_memory(len)?;
        }

        // Everything validated: apply data and writer state as one step.
        self.push_locked(&mut st, req.payload);
        if let Some(seq) = req.stream_seq {
            st.last_stream_seq = Some(seq);
        }
        if let (Some(claim), Some(update)) = (&req.producer, producer_update) {
            st.producers.insert(claim.id.clone(), update);
        }
        if req.close {
            st.closed = true;
            st.closed_by = req.producer.clone();
        }
        let out = Appended {
            status: AppendStatus::Written,
            next: st.tail,
            closed: st.closed,
            producer: producer_update.map(|p| ProducerAck {
                epoch: p.epoch,
                seq: p.last_seq,
            }),
        };
        drop(st);
        self.wake();
        Ok(out)
    }

    /// Account `len` more bytes against the server-wide memory limit.
    pub fn reserve_memory(&self, len: u64) -> Result<()> {
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

    /// Append the stored chunks of `[from, to)` to `out`, stopping once `budget` bytes are
    /// gathered at a record boundary. Returns the position reached.
    pub fn collect(&self, from: u64, to: u64, budget: &mut usize, out: &mut Vec<Bytes>) -> u64 {
        let mut pos = from;
        if let Some(base) = &self.config.base
            && pos < base.upto
        {
            pos = base.source.collect(pos, to.min(base.upto), budget, out);
            if pos < base.upto.min(to) || *budget == 0 {
                return pos;
            }
        }
        let st = self.state.lock();
        let to = to.min(st.tail);
        let first = st
            .records
            .partition_point(|r| r.start + r.data.len() as u64 <= pos);
        for rec in &st.records[first..] {
            if pos >= to || *budget == 0 {
                break;
            }
            let lo = (pos - rec.start) as usize;
            let hi = ((to - rec.start) as usize).min(rec.data.len());
            let piece = rec.data.slice(lo..hi);
            *budget = budget.saturating_sub(piece.len());
            pos = rec.start + hi as u64;
            out.push(piece);
        }
        pos
    }

    /// The stored bytes from `pos` to the end of the record that holds `pos`, as this log sees
    /// it (a record a fork inherited only in part ends where the inheritance ends). `None` at
    /// the tail.
    pub fn record_rest(&self, pos: u64) -> Option<Bytes> {
        if let Some(base) = &self.config.base
            && pos < base.upto
        {
            let rest = base.source.record_rest(pos)?;
            let keep = ((base.upto - pos) as usize).min(rest.len());
            return Some(rest.slice(..keep));
        }
        let st = self.state.lock();
        let i = st
            .records
            .partition_point(|r| r.start + r.data.len() as u64 <= pos);
        st.records
            .get(i)
            .filter(|r| r.start <= pos)
            .map(|r| r.data.slice((pos - r.start) as usize..))
    }
}
