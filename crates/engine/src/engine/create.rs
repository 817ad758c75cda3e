//! Creating a log (and forking one): compare with an existing log, resolve the fork point and
//! create files outside the registry lock, register the new log invisible until its WAL
//! record commits, and make what a fork inherits from weaker ancestors durable first.

use super::*;

impl Engine {
    /// Create a log, or confirm that an identical one exists. A durable log becomes visible
    /// only once its creation is durable (for its class); until then, lookups do not find it
    /// and a concurrent create of the same name waits for the outcome.
    pub async fn create(&self, name: &str, spec: CreateSpec) -> Result<Created> {
        let created = self.create_log(name, spec).await?;
        if created.created {
            // Subscriptions link a new stream before its answer, so no append is missed.
            self.subs_created(name, created.info.id).await;
        }
        Ok(created)
    }

    async fn create_log(&self, name: &str, spec: CreateSpec) -> Result<Created> {
        let (log, record) = loop {
            match self.create_locked(name, &spec)? {
                Prepared::Existing(info) => {
                    return Ok(Created {
                        created: false,
                        info,
                    });
                }
                Prepared::Wait(other) => other.settled().await,
                Prepared::New(log, record) => break (log, record),
            }
        };
        let (Some(p), Some((record, guard))) = (&self.inner.persist, record) else {
            log.finish_create(spec.initial, spec.closed);
            return Ok(Created {
                created: true,
                info: log.info(),
            });
        };
        let (tx, rx) = oneshot::channel();
        let settle = self.settle_create(&log, spec.initial, spec.closed, guard, tx);
        // A fork inherits data its ancestors may hold unsynced in other shards: that must be
        // durable before the fork's creation can be, or a power loss could keep the fork and
        // lose what it inherited.
        let weaker = unsynced_ancestor_shards(p, &log);
        let (persist, id, commit) = (p.clone(), log.config.id, commit_for(log.config.durability));
        after_barriers(
            p.clone(),
            weaker,
            Box::new(move |r| match r {
                Ok(()) => persist.submit(id, record, commit, settle),
                Err(e) => settle(Err(e)),
            }),
        );
        match rx.await {
            Ok(r) => r.map_err(wal_error)?,
            Err(_) => return Err(storage_error("the WAL shut down", false)),
        };
        Ok(Created {
            created: true,
            info: log.info(),
        })
    }

    /// An existing log's answer to a create, if the name is taken by a live log (looked up
    /// under the read lock; expired and soft-deleted names are left to the write lock).
    fn existing(&self, name: &str, spec: &CreateSpec, now: i64) -> Result<Option<Prepared>> {
        let Some(existing) = self.inner.logs.read().get(name).cloned() else {
            return Ok(None);
        };
        if existing.is_creating() {
            return Ok(Some(Prepared::Wait(existing)));
        }
        if existing.lifecycle.lock().soft_deleted {
            return Err(retained_for_forks());
        }
        if existing.is_expired(now) {
            return Ok(None);
        }
        same_config(&existing, spec)?;
        Ok(Some(Prepared::Existing(existing.info())))
    }

    /// Decide a create: compare with an existing log, or build the new one and register it
    /// (with its WAL record still to commit). Reading the fork source and creating files happen
    /// before the registry's write lock, so a slow disk stalls only this request.
    fn create_locked(&self, name: &str, spec: &CreateSpec) -> Result<Prepared> {
        let now = self.now();
        if let Some(answer) = self.existing(name, spec, now)? {
            return Ok(answer);
        }
        let fork = match &spec.fork {
            None => None,
            Some(f) => Some(self.prepare_fork(f, spec, now)?),
        };
        // A fork keeps its source's framing, and its content type and expiry unless given.
        let source = fork.as_ref().map(|b| &b.source.config);
        let (content_type, framing) = match (source, &spec.content_type) {
            (None, ct) => ct
                .clone()
                .unwrap_or_else(|| ("application/octet-stream".to_string(), Framing::Bytes)),
            (Some(src), Some((ct, _))) => (ct.clone(), src.framing),
            (Some(src), None) => (src.content_type.to_string(), src.framing),
        };
        let expiry = spec
            .expiry
            .clone()
            .or_else(|| source.and_then(|src| src.expiry.clone()));
        let durability = match (spec.durability, &fork) {
            (Some(d), _) => d,
            (None, Some(b)) => b.source.config.durability,
            (None, None) => self.inner.config.default_durability,
        };
        if let Some(b) = &fork
            && durability.is_persistent()
            && !b.source.config.durability.is_persistent()
        {
            return Err(EngineError::ForkOfEphemeral);
        }
        let persist = match (durability.is_persistent(), &self.inner.persist) {
            (false, _) => None,
            (true, Some(p)) => Some(p.clone()),
            (true, None) => return Err(EngineError::DurabilityUnavailable(durability)),
        };
        let start = fork.as_ref().map_or(0, |b| b.upto);
        let len = spec.initial.data.len() as u64;
        if start + len > self.inner.config.max_stream_bytes {
            return Err(EngineError::StreamFull {
                size: start + len,
                limit: self.inner.config.max_stream_bytes,
            });
        }
        self.inner.shared.budget.check_retained(len)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let files = match &persist {
            None => None,
            Some(p) => {
                Some(LogFiles::open(&p.files, id, start).map_err(|e| storage_error(e, false))?)
            }
        };
        let log = Log::new(
            LogConfig {
                id,
                name: name.to_string(),
                media_key: media_key(&content_type),
                content_type: content_type.into(),
                framing,
                expiry,
                requested_expiry: spec.expiry.clone(),
                durability,
                base: fork,
            },
            files,
            now,
            &self.inner.shared,
        );
        let registered = self.register(name, spec, &log, now, persist.is_some());
        if !matches!(registered, Ok(Prepared::New(..)))
            && let Some(p) = &persist
        {
            remove_log_files(&p.files, id);
        }
        registered
    }

    /// The registry part of a create, under its write lock: the name is still free (or
    /// expired), the fork source is still the live log the fork point was computed on, the
    /// memory is there; then the log goes in (invisible until its create commits).
    fn register(
        &self,
        name: &str,
        spec: &CreateSpec,
        log: &Arc<Log>,
        now: i64,
        durable: bool,
    ) -> Result<Prepared> {
        // Read before the registry's lock (the topic names are never locked inside it).
        let topics = self.topic_count();
        let mut logs = self.inner.logs.write();
        if let Some(existing) = logs.get(name).cloned() {
            if existing.is_creating() {
                return Ok(Prepared::Wait(existing));
            }
            let expired = !existing.lifecycle.lock().soft_deleted && existing.is_expired(now);
            if expired {
                self.expire_locked(&mut logs, &existing);
            }
            if existing.lifecycle.lock().soft_deleted {
                return Err(retained_for_forks());
            }
            if !expired {
                same_config(&existing, spec)?;
                return Ok(Prepared::Existing(existing.info()));
            }
        }
        let max = self.inner.config.max_streams;
        if max > 0 && logs.len().saturating_sub(topics) as u64 >= max {
            return Err(EngineError::LimitReached {
                limit: "max_streams",
                max,
            });
        }
        if let Some(base) = &log.config.base {
            let current = logs.get(&base.source.config.name);
            if !current.is_some_and(|l| Arc::ptr_eq(l, &base.source)) {
                return Err(EngineError::ForkSourceNotFound);
            }
            if base.source.lifecycle.lock().soft_deleted {
                return Err(EngineError::ForkSourceGone);
            }
        }
        let initial = spec.initial.data.len() as u64;
        let records = if durable || initial == 0 {
            0
        } else {
            initial + RECORD_OVERHEAD
        };
        let charge = log.overhead() + records;
        log.reserve_memory(charge)?;
        log.hold_reserved(charge);
        let record = match durable {
            false => None,
            true => {
                let entry = WalEntry::Create {
                    meta: log.config.meta(),
                    closed: spec.closed,
                }
                .encode(&spec.initial.data);
                let guard = log
                    .begin_create()
                    .ok_or_else(|| storage_error("a new log's append lock is taken", false))?;
                Some((entry, guard))
            }
        };
        if let Some(base) = &log.config.base {
            base.source.lifecycle.lock().fork_refs += 1;
        }
        logs.insert(name.to_string(), log.clone());
        Ok(Prepared::New(log.clone(), record))
    }

    /// Resolve a fork's source and its fork point. The source's records below its tail never
    /// change, so the fork point is read without the registry lock; `register` checks that
    /// the source is still the same live log.
    fn prepare_fork(&self, fork: &ForkSpec, spec: &CreateSpec, now: i64) -> Result<ForkBase> {
        let source = self
            .inner
            .logs
            .read()
            .get(&fork.source)
            .cloned()
            .ok_or(EngineError::ForkSourceNotFound)?;
        if source.is_creating() || source.is_removed() {
            return Err(EngineError::ForkSourceNotFound);
        }
        if source.lifecycle.lock().soft_deleted {
            return Err(EngineError::ForkSourceGone);
        }
        if source.is_expired(now) {
            let mut logs = self.inner.logs.write();
            return Err(match self.expire_locked(&mut logs, &source) {
                EngineError::Gone => EngineError::ForkSourceGone,
                _ => EngineError::ForkSourceNotFound,
            });
        }
        if let Some((ct, _)) = &spec.content_type
            && !has_media_key(ct, &source.config.media_key)
        {
            return Err(EngineError::ForkContentTypeMismatch {
                given: ct.clone(),
                source_type: source.config.content_type.to_string(),
            });
        }
        let depth = source.config.depth() + 1;
        let limit = self.inner.config.max_fork_depth;
        if depth > limit {
            return Err(EngineError::ForkTooDeep { depth, limit });
        }
        let upto = fork_point(&source, fork)?;
        Ok(ForkBase {
            source,
            anchor: fork.offset,
            sub: fork.sub,
            upto,
            depth,
        })
    }
}

/// One log id per WAL shard (other than `log`'s own) that holds records of `log`'s fork
/// ancestors not yet known to be durable: those of every class but `Fsync` (which is synced
/// before it is applied). Records in `log`'s own shard come before its create record in the
/// same log file, so whatever makes the create durable makes them durable too.
fn unsynced_ancestor_shards(persist: &Persist, log: &Log) -> Vec<u64> {
    let own = persist.shard_of(log.config.id);
    let mut shards: Vec<(u64, u64)> = Vec::new();
    let mut base = log.config.base.as_ref();
    while let Some(b) = base {
        let source = &b.source;
        let shard = persist.shard_of(source.config.id);
        if source.config.durability != Durability::Fsync
            && shard != own
            && !shards.iter().any(|&(s, _)| s == shard)
        {
            shards.push((shard, source.config.id));
        }
        base = source.config.base.as_ref();
    }
    shards.into_iter().map(|(_, id)| id).collect()
}

/// The answer to a create of a name whose log was deleted but is kept for its forks.
impl Engine {
    /// The WAL callback of a durable create: make the log visible with its initial content,
    /// or, if the record failed, take it back (registry and files). Runs whether or not the
    /// request that started the create is still waiting; `tx` gets the outcome.
    pub(super) fn settle_create(
        &self,
        log: &Arc<Log>,
        initial: crate::types::Payload,
        closed: bool,
        guard: OwnedMutexGuard<()>,
        tx: oneshot::Sender<Result<riffle_wal::Lsn, riffle_wal::WalError>>,
    ) -> riffle_wal::Callback {
        let weak = Arc::downgrade(&self.inner);
        let files = self.inner.persist.as_ref().map(|p| p.files.clone());
        let done = log.clone();
        Box::new(move |r| {
            match &r {
                Ok(_) => done.finish_create(initial, closed),
                Err(_) => {
                    // Nothing of it is durable: take it back.
                    match weak.upgrade() {
                        Some(inner) => {
                            let mut logs = inner.logs.write();
                            remove_locked(&mut logs, &done);
                        }
                        None => done.mark_removed(),
                    }
                    if let Some(files) = &files {
                        remove_log_files(files, done.config.id);
                    }
                }
            }
            drop(guard);
            let _ = tx.send(r);
        })
    }
}

fn retained_for_forks() -> EngineError {
    EngineError::ConfigMismatch("the stream was deleted and is retained for its forks")
}

/// Run a WAL barrier on each shard of `ids` in turn, then `then` (with the first error, if
/// any). Chained through the committers' callbacks, so it completes even if the request that
/// started it is dropped.
fn after_barriers(
    persist: Arc<Persist>,
    mut ids: Vec<u64>,
    then: Box<dyn FnOnce(Result<(), riffle_wal::WalError>) + Send>,
) {
    let Some(id) = ids.pop() else {
        return then(Ok(()));
    };
    let next = persist.clone();
    persist.barrier(
        id,
        Box::new(move |r| match r {
            Ok(_) => after_barriers(next, ids, then),
            Err(e) => then(Err(e)),
        }),
    );
}

/// What the synchronous part of a create decided.
enum Prepared {
    Existing(LogInfo),
    /// The name is being created by another request: wait for its outcome and decide again.
    Wait(Arc<Log>),
    /// A new log, registered, and (if it is durable) its WAL record and the guard that keeps
    /// its appends waiting until the create committed.
    New(Arc<Log>, Option<(Vec<u8>, OwnedMutexGuard<()>)>),
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
    if !source.is_message_boundary(anchor)? {
        return Err(EngineError::OffsetInsideMessage { offset: anchor });
    }
    if fork.sub == 0 {
        return Ok(anchor);
    }
    let rest = source.record_rest(anchor)?.unwrap_or_default();
    let overshoot = |available| EngineError::ForkSubOffsetOvershoot {
        sub: fork.sub,
        available,
    };
    let len = match source.config.framing {
        Framing::Bytes if fork.sub <= rest.len() as u64 => fork.sub,
        Framing::Bytes => return Err(overshoot(rest.len() as u64)),
        Framing::JsonMessages => json_prefix_len(&rest, fork.sub)
            .ok_or_else(|| overshoot(json_message_count(&rest)))?
            as u64,
        // Topics are not reachable by stream names, so never a fork source.
        Framing::TopicRecords => return Err(EngineError::ForkSourceNotFound),
    };
    Ok(anchor + len)
}

/// Compare an existing log with a create request.
fn same_config(existing: &Log, spec: &CreateSpec) -> Result<()> {
    let cfg = &existing.config;
    if let Some((ct, _)) = &spec.content_type
        && !has_media_key(ct, &cfg.media_key)
    {
        return Err(EngineError::ConfigMismatch("content type differs"));
    }
    if !same_expiry(&spec.expiry, &cfg.requested_expiry) {
        return Err(EngineError::ConfigMismatch("TTL or expiry differs"));
    }
    if spec
        .durability
        .is_some_and(|d| d != existing.config.durability)
    {
        return Err(EngineError::ConfigMismatch("durability class differs"));
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
