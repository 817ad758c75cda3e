//! The registry of named logs: create (and fork), append, read, watch, delete and expiry.
//!
//! Lock order: the registry map, then a log's lifecycle, then a log's state; a fork's state
//! lock is never held while its source's is taken.

use crate::clock::Clock;
use crate::error::{EngineError, Result};
use crate::framing::{json_prefix_len, media_key};
use crate::log::{AppendLimits, ForkBase, Log, LogConfig, MemoryBudget};
use crate::types::{
    AppendRequest, Appended, CreateSpec, Created, Expiry, ForkSpec, Framing, LogInfo, ReadBatch,
    ReadFrom,
};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Engine-wide limits.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Largest size of one log, in stored bytes (inherited bytes of a fork included).
    pub max_stream_bytes: u64,
    /// Total payload bytes held in memory across all logs.
    pub max_memory_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_stream_bytes: 10 * 1024 * 1024,
            max_memory_bytes: 100 * 1024 * 1024,
        }
    }
}

/// The log engine. Cheap to clone; all clones share the same logs.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    logs: RwLock<HashMap<String, Arc<Log>>>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    budget: Arc<MemoryBudget>,
    next_id: AtomicU64,
}

/// A live log, held for a read or a wait. It keeps answering for the incarnation it was opened
/// on, even if the name is deleted and re-created meanwhile.
pub struct LogHandle {
    log: Arc<Log>,
    rx: watch::Receiver<u64>,
    engine: Engine,
}

impl Engine {
    pub fn new(config: EngineConfig, clock: Arc<dyn Clock>) -> Self {
        // Seed ids from the clock so that ETags of a re-created log differ across restarts.
        let seed = u64::try_from(clock.now_ms())
            .unwrap_or(0)
            .saturating_mul(1000);
        Self {
            inner: Arc::new(Inner {
                logs: RwLock::new(HashMap::new()),
                clock,
                config,
                budget: Arc::new(MemoryBudget {
                    used: AtomicU64::new(0),
                    limit: config.max_memory_bytes,
                }),
                next_id: AtomicU64::new(seed),
            }),
        }
    }

    pub fn config(&self) -> EngineConfig {
        self.inner.config
    }

    /// Payload bytes currently held in memory.
    pub fn memory_used(&self) -> u64 {
        self.inner.budget.used.load(Ordering::Relaxed)
    }

    /// Number of names in the registry (soft-deleted logs included).
    pub fn log_count(&self) -> usize {
        self.inner.logs.read().len()
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
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
        if log.is_expired(self.now()) {
            let mut logs = self.inner.logs.write();
            return Err(expire_locked(&mut logs, &log));
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
        log.touch(self.now());
        let mut rx = log.subscribe();
        rx.borrow_and_update();
        Ok(LogHandle {
            log,
            rx,
            engine: self.clone(),
        })
    }

    /// Create a log, or confirm that an identical one exists.
    pub async fn create(&self, name: &str, spec: CreateSpec) -> Result<Created> {
        let now = self.now();
        let mut logs = self.inner.logs.write();
        if let Some(existing) = logs.get(name).cloned() {
            let expired = !existing.lifecycle.lock().soft_deleted && existing.is_expired(now);
            if expired {
                expire_locked(&mut logs, &existing);
            }
            if existing.lifecycle.lock().soft_deleted {
                return Err(EngineError::ConfigMismatch(
                    "the stream was deleted and is retained for its forks",
                ));
            }
            if !expired {
                same_config(&existing, &spec)?;
                return Ok(Created {
                    created: false,
                    info: existing.info(),
                });
            }
        }

        let (content_type, framing, base, expiry) = match &spec.fork {
            None => {
                let (ct, framing) = spec
                    .content_type
                    .clone()
                    .unwrap_or_else(|| ("application/octet-stream".to_string(), Framing::Bytes));
                (ct, framing, None, spec.expiry.clone())
            }
            Some(fork) => {
                let source = fork_source(&mut logs, fork, now)?;
                let (ct, framing) = match &spec.content_type {
                    Some((ct, _)) if media_key(ct) != source.config.media_key => {
                        return Err(EngineError::ForkContentTypeMismatch {
                            given: ct.clone(),
                            source_type: source.config.content_type.to_string(),
                        });
                    }
                    Some((ct, _)) => (ct.clone(), source.config.framing),
                    None => (
                        source.config.content_type.to_string(),
                        source.config.framing,
                    ),
                };
                let upto = fork_point(&source, fork)?;
                let expiry = spec.expiry.clone().or_else(|| source.config.expiry.clone());
                let base = ForkBase {
                    source,
                    anchor: fork.offset,
                    sub: fork.sub,
                    upto,
                };
                (ct, framing, Some(base), expiry)
            }
        };

        let start = base.as_ref().map_or(0, |b| b.upto);
        let len = spec.initial.data.len() as u64;
        if start + len > self.inner.config.max_stream_bytes {
            return Err(EngineError::StreamFull {
                size: start + len,
                limit: self.inner.config.max_stream_bytes,
            });
        }
        let log = Arc::new(Log::new(
            LogConfig {
                id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
                name: name.to_string(),
                media_key: media_key(&content_type),
                content_type: content_type.into(),
                framing,
                expiry,
                requested_expiry: spec.expiry.clone(),
                base,
            },
            now,
            self.inner.budget.clone(),
        ));
        log.reserve_memory(len)?;
        log.init(spec.initial, spec.closed);
        if let Some(base) = &log.config.base {
            base.source.lifecycle.lock().fork_refs += 1;
        }
        logs.insert(name.to_string(), log.clone());
        Ok(Created {
            created: true,
            info: log.info(),
        })
    }

    /// Append to a live log: one atomic step of data, producer state, `Stream-Seq` and close.
    pub async fn append(&self, name: &str, req: AppendRequest) -> Result<Appended> {
        let log = self.live(name)?;
        log.append(
            req,
            AppendLimits {
                max_stream_bytes: self.inner.config.max_stream_bytes,
            },
            self.inner.clock.as_ref(),
        )
    }

    /// Delete a log. A log that forks still read from is soft-deleted: its name answers
    /// "gone" until the last fork is deleted, then it is removed.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let log = self.live(name)?;
        let mut logs = self.inner.logs.write();
        if !logs.get(name).is_some_and(|l| Arc::ptr_eq(l, &log)) {
            return Err(EngineError::NotFound);
        }
        let mut life = log.lifecycle.lock();
        if life.soft_deleted {
            return Err(EngineError::Gone);
        }
        if life.fork_refs > 0 {
            life.soft_deleted = true;
            drop(life);
            log.wake_readers();
        } else {
            drop(life);
            remove_locked(&mut logs, &log);
        }
        Ok(())
    }

    /// Apply expiry to every log now (lazy expiry on access covers correctness; this frees
    /// memory of logs nobody touches again).
    pub fn sweep_expired(&self) -> usize {
        let now = self.now();
        let expired: Vec<Arc<Log>> = self
            .inner
            .logs
            .read()
            .values()
            .filter(|l| !l.lifecycle.lock().soft_deleted && l.is_expired(now))
            .cloned()
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let mut logs = self.inner.logs.write();
        for log in &expired {
            expire_locked(&mut logs, log);
        }
        expired.len()
    }
}

impl LogHandle {
    /// Metadata as of now.
    pub fn info(&self) -> LogInfo {
        self.log.info()
    }

    /// Read from `from` towards the tail, gathering about `max_bytes` (whole records; at least
    /// one record if any is available).
    pub fn read(&self, from: ReadFrom, max_bytes: usize) -> Result<ReadBatch> {
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
            ReadFrom::At(offset) => offset,
        };
        let mut chunks = Vec::new();
        let mut budget = max_bytes.max(1);
        let next = self.log.collect(start, info.next, &mut budget, &mut chunks);
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
        self.log.touch(self.engine.now());
    }
}

/// Resolve a fork's source under the registry lock.
fn fork_source(
    logs: &mut HashMap<String, Arc<Log>>,
    fork: &ForkSpec,
    now: i64,
) -> Result<Arc<Log>> {
    let source = logs
        .get(&fork.source)
        .cloned()
        .ok_or(EngineError::ForkSourceNotFound)?;
    if source.lifecycle.lock().soft_deleted {
        return Err(EngineError::ForkSourceGone);
    }
    if source.is_expired(now) {
        return Err(match expire_locked(logs, &source) {
            EngineError::Gone => EngineError::ForkSourceGone,
            _ => EngineError::ForkSourceNotFound,
        });
    }
    Ok(source)
}

/// The position up to which a fork inherits its source.
fn fork_point(source: &Log, fork: &ForkSpec) -> Result<u64> {
    let tail = source.tail();
    let anchor = fork.offset.unwrap_or(tail);
    if anchor > tail {
        return Err(EngineError::ForkOffsetBeyondTail {
            offset: anchor,
            tail,
        });
    }
    if fork.sub == 0 {
        return Ok(anchor);
    }
    let rest = source.record_rest(anchor).unwrap_or_default();
    let overshoot = |available| EngineError::ForkSubOffsetOvershoot {
        sub: fork.sub,
        available,
    };
    let len = match source.config.framing {
        Framing::Bytes if fork.sub <= rest.len() as u64 => fork.sub,
        Framing::Bytes => return Err(overshoot(rest.len() as u64)),
        Framing::JsonMessages => json_prefix_len(&rest, fork.sub)
            .ok_or_else(|| overshoot(json_prefix_len_count(&rest)))?
            as u64,
    };
    Ok(anchor + len)
}

/// Number of messages in a stored JSON record.
fn json_prefix_len_count(rec: &[u8]) -> u64 {
    let mut n = 0;
    while json_prefix_len(rec, n + 1).is_some() {
        n += 1;
    }
    n
}

/// Compare an existing log with a create request.
fn same_config(existing: &Log, spec: &CreateSpec) -> Result<()> {
    let cfg = &existing.config;
    if let Some((ct, _)) = &spec.content_type
        && media_key(ct) != cfg.media_key
    {
        return Err(EngineError::ConfigMismatch("content type differs"));
    }
    if !same_expiry(&spec.expiry, &cfg.requested_expiry) {
        return Err(EngineError::ConfigMismatch("TTL or expiry differs"));
    }
    if spec.closed != existing.is_closed() {
        return Err(EngineError::ConfigMismatch("closed state differs"));
    }
    let fork_matches = match (&spec.fork, &cfg.base) {
        (None, None) => true,
        (Some(f), Some(b)) => {
            b.source.config.name == f.source && b.anchor == f.offset && b.sub == f.sub
        }
        _ => false,
    };
    if !fork_matches {
        return Err(EngineError::ConfigMismatch("fork source or offset differs"));
    }
    Ok(())
}

fn same_expiry(a: &Option<Expiry>, b: &Option<Expiry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Expiry::Ttl { secs: x }), Some(Expiry::Ttl { secs: y })) => x == y,
        (Some(Expiry::At { unix_ms: x, .. }), Some(Expiry::At { unix_ms: y, .. })) => x == y,
        _ => false,
    }
}

/// Expire `log`: soft-delete it if forks still read from it, else remove it. Returns the error
/// its name now answers with.
fn expire_locked(logs: &mut HashMap<String, Arc<Log>>, log: &Arc<Log>) -> EngineError {
    if !logs
        .get(&log.config.name)
        .is_some_and(|l| Arc::ptr_eq(l, log))
    {
        return EngineError::NotFound;
    }
    let mut life = log.lifecycle.lock();
    if life.soft_deleted {
        return EngineError::Gone;
    }
    if life.fork_refs > 0 {
        life.soft_deleted = true;
        drop(life);
        log.wake_readers();
        return EngineError::Gone;
    }
    drop(life);
    remove_locked(logs, log);
    EngineError::NotFound
}

/// Remove `log` from the registry and release its hold on its source, collecting soft-deleted
/// ancestors that no fork references any more.
fn remove_locked(logs: &mut HashMap<String, Arc<Log>>, log: &Arc<Log>) {
    if logs
        .get(&log.config.name)
        .is_some_and(|l| Arc::ptr_eq(l, log))
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
            remove_locked(logs, source);
        }
    }
}
