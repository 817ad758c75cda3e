//! The registry side of topics: a topic named `t` is the log keyed `/v0/topics/t` (a key the
//! Durable Streams face, whose keys are `/v1/stream/...` paths, never produces), created with
//! a `CreateTopic` WAL record and then written, read, trimmed and deleted through `Log`'s topic
//! operations.

use super::*;
use crate::topic::{
    DeleteSpec, Deleted, Diff, DiffQuery, TopicConfig, TopicInfo, TopicPut, TopicRemoved,
    TopicWrite, TopicWritten,
};

const TOPIC_KEY: &str = "/v0/topics/";

fn key(name: &str) -> String {
    format!("{TOPIC_KEY}{name}")
}

/// The topic name of a registry key, if it is a topic's.
pub(super) fn topic_name(key: &str) -> Option<&str> {
    key.strip_prefix(TOPIC_KEY)
}

/// A topic held for reads and waits (a `/v0` long-poll or watch), answering for the
/// incarnation it was opened on.
pub struct TopicHandle {
    log: Arc<Log>,
    rx: watch::Receiver<u64>,
    engine: Engine,
}

impl Engine {
    pub(super) fn live_topic(&self, name: &str) -> Result<Arc<Log>> {
        let log = self.live(&key(name))?;
        if !log.is_topic() {
            return Err(EngineError::NotFound);
        }
        Ok(log)
    }

    /// Create a topic, or find the existing one. Returns the log and whether it was created.
    async fn topic_create(&self, name: &str, config: &TopicConfig) -> Result<(Arc<Log>, bool)> {
        let key = key(name);
        let persist = self.inner.persist.clone();
        if persist.is_none() && config.durability.is_persistent() {
            return Err(EngineError::DurabilityUnavailable(config.durability));
        }
        loop {
            let existing = self.inner.logs.read().get(&key).cloned();
            if let Some(l) = existing {
                if l.is_creating() {
                    l.settled().await;
                    continue;
                }
                if !l.is_topic() {
                    return Err(EngineError::NotFound);
                }
                return Ok((l, false));
            }
            let max = self.inner.config.max_topics;
            if max > 0 && self.inner.topic_names.lock().len() as u64 >= max {
                return Err(EngineError::LimitReached {
                    limit: "max_topics",
                    max,
                });
            }
            let now = self.now();
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let files = match &persist {
                None => None,
                Some(p) => {
                    Some(LogFiles::open(&p.files, id, 0).map_err(|e| storage_error(e, false))?)
                }
            };
            // The log's own class is what its creation and its configuration changes commit
            // with; its records commit with the topic's (changeable) class.
            let storage = match (&persist, config.durability) {
                (None, _) => Durability::Ephemeral,
                (Some(_), Durability::Fsync) => Durability::Fsync,
                (Some(_), _) => Durability::Disk,
            };
            let log = Log::new(
                LogConfig {
                    id,
                    name: key.clone(),
                    media_key: "application/json".into(),
                    content_type: "application/json".into(),
                    framing: Framing::TopicRecords,
                    expiry: None,
                    requested_expiry: None,
                    durability: storage,
                    base: None,
                },
                files,
                now,
                &self.inner.shared,
            );
            log.init_topic(config.clone());
            let guard = {
                let mut logs = self.inner.logs.write();
                if logs.contains_key(&key) {
                    drop(logs);
                    if let Some(p) = &persist {
                        remove_log_files(&p.files, id);
                    }
                    continue;
                }
                let charge = log.overhead();
                log.reserve_memory(charge)?;
                log.hold_reserved(charge);
                let guard =
                    match &persist {
                        None => None,
                        Some(_) => Some(log.begin_create().ok_or_else(|| {
                            storage_error("a new log's append lock is taken", false)
                        })?),
                    };
                logs.insert(key.clone(), log.clone());
                guard
            };
            let (Some(p), Some(guard)) = (&persist, guard) else {
                self.created(name);
                return Ok((log, true));
            };
            let record = WalEntry::CreateTopic {
                meta: log.config.meta(),
                config: config.clone(),
            }
            .encode(&[]);
            let (tx, rx) = oneshot::channel();
            let settle = self.settle_create(&log, Default::default(), false, guard, tx);
            p.submit(id, record, commit_for(storage), settle);
            match rx.await {
                Ok(r) => r.map_err(wal_error)?,
                Err(_) => return Err(storage_error("the WAL shut down", false)),
            };
            self.created(name);
            return Ok((log, true));
        }
    }

    /// A topic became visible: list it and wake readers waiting for it.
    fn created(&self, name: &str) {
        self.inner.topic_names.lock().insert(name.to_string());
        self.inner.topic_created.send_modify(|v| *v += 1);
    }

    /// Number of live topics.
    pub fn topic_count(&self) -> usize {
        self.inner.topic_names.lock().len()
    }

    /// Create a topic with `config`, or update an existing one's configuration in place (its
    /// type never changes: [`EngineError::TopicIncompatible`]).
    pub async fn topic_put(&self, name: &str, config: TopicConfig) -> Result<TopicPut> {
        let (log, created) = self.topic_create(name, &config).await?;
        if created {
            return Ok(TopicPut { created, config });
        }
        let current = log.topic_info(self.now(), false)?.config;
        if current.kind != config.kind {
            return Err(EngineError::TopicIncompatible("type"));
        }
        if config.durability.is_persistent() && self.inner.persist.is_none() {
            return Err(EngineError::DurabilityUnavailable(config.durability));
        }
        if config.sheds_records() {
            self.settle_copies_from(&log, name).await?;
        }
        log.topic_configure(config.clone(), self.inner.persist.as_ref())
            .await?;
        Ok(TopicPut { created, config })
    }

    /// Write records, creating the topic first if `w.create` says so.
    pub async fn topic_write(&self, name: &str, w: TopicWrite) -> Result<TopicWritten> {
        let (log, created) = match &w.create {
            None => (self.live_topic(name)?, false),
            Some(config) => match self.live_topic(name) {
                Ok(l) => (l, false),
                Err(EngineError::NotFound) => {
                    // A write the quota refuses creates nothing: checked before the topic is.
                    let len: usize = w
                        .records
                        .iter()
                        .map(crate::topic::record::encoded_len)
                        .sum();
                    self.inner.shared.budget.check_retained(len as u64)?;
                    self.topic_create(name, config).await?
                }
                Err(e) => return Err(e),
            },
        };
        let mut out = log
            .topic_write(
                &w.records,
                w.idempotency_key,
                self.inner.clock.as_ref(),
                self.inner.persist.as_ref(),
            )
            .await?;
        out.created = created;
        if !out.deduped
            && let Some(class) = log.topic_class()
        {
            let bytes = w
                .records
                .iter()
                .map(|r| (r.data.len() + r.meta.as_ref().map_or(0, |m| m.len())) as u64);
            self.count_append(class, bytes.sum());
        }
        Ok(out)
    }

    /// A topic's state; `touch` records a read.
    pub fn topic_info(&self, name: &str, touch: bool) -> Result<TopicInfo> {
        let mut info = self.live_topic(name)?.topic_info(self.now(), touch)?;
        info.name = name.to_string();
        Ok(info)
    }

    /// Read records after a cursor.
    pub fn topic_diff(&self, name: &str, q: &DiffQuery) -> Result<Diff> {
        self.live_topic(name)?.topic_diff(q, self.now())
    }

    /// A receiver that changes whenever a topic is created (for readers waiting for a topic
    /// that does not exist yet).
    pub fn topic_creations(&self) -> watch::Receiver<u64> {
        let mut rx = self.inner.topic_created.subscribe();
        rx.borrow_and_update();
        rx
    }

    /// Open a topic for reads and waits.
    pub fn topic_open(&self, name: &str) -> Result<TopicHandle> {
        let log = self.live_topic(name)?;
        let mut rx = log.subscribe();
        rx.borrow_and_update();
        Ok(TopicHandle {
            log,
            rx,
            engine: self.clone(),
        })
    }

    /// Delete records (permanent, point-in-time).
    pub async fn topic_delete_records(&self, name: &str, spec: &DeleteSpec) -> Result<Deleted> {
        let log = self.live_topic(name)?;
        self.settle_copies_from(&log, name).await?;
        log.topic_delete(spec, self.inner.persist.as_ref()).await
    }

    /// Delete a topic, and the routers from or into it. `if_empty`: only if it holds no live
    /// records ([`EngineError::TopicNotEmpty`]).
    pub async fn topic_remove(&self, name: &str, if_empty: bool) -> Result<TopicRemoved> {
        let log = match self.live_topic(name) {
            Ok(l) => l,
            Err(EngineError::NotFound) => return Ok(TopicRemoved::default()),
            Err(e) => return Err(e),
        };
        if if_empty && log.topic_info(self.now(), false)?.count > 0 {
            return Err(EngineError::TopicNotEmpty);
        }
        let routers_removed = self.remove_routers_of(name).await?;
        let out = match self.delete(&key(name)).await {
            Ok(()) => Ok(TopicRemoved {
                existed: true,
                routers_removed,
            }),
            Err(EngineError::NotFound) => Ok(TopicRemoved {
                existed: false,
                routers_removed,
            }),
            Err(e) => Err(e),
        };
        // Unlisted unless a new topic of the name was registered meanwhile.
        let logs = self.inner.logs.read();
        if !logs.contains_key(&key(name)) {
            self.inner.topic_names.lock().remove(name);
        }
        out
    }

    /// Topics whose names start with `prefix`, in name order, after `after`; at most `limit`
    /// (plus whether more follow).
    pub fn topic_list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<TopicInfo>, bool) {
        // Names from the ordered set, a page (plus one, to know whether more follow) at a time.
        let names: Vec<String> = {
            let set = self.inner.topic_names.lock();
            let start = match after {
                Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_string()),
                _ => std::ops::Bound::Included(prefix.to_string()),
            };
            set.range((start, std::ops::Bound::Unbounded))
                .take_while(|n| n.starts_with(prefix))
                .take(limit.saturating_add(1))
                .cloned()
                .collect()
        };
        let names: Vec<(String, Arc<Log>)> = {
            let logs = self.inner.logs.read();
            names
                .into_iter()
                .filter_map(|n| {
                    let log = logs.get(&key(&n))?.clone();
                    Some((n, log))
                })
                .collect()
        };
        let now = self.now();
        let mut out = Vec::new();
        let mut more = false;
        for (name, log) in names {
            if out.len() == limit {
                more = true;
                break;
            }
            if let Ok(mut info) = log.topic_info(now, false) {
                info.name = name;
                out.push(info);
            }
        }
        (out, more)
    }

    /// Persist TTL trims of topics whose oldest records expired (called by the sweeper).
    pub async fn sweep_topics(&self) {
        // The topics only (by their names), not every log.
        let names: Vec<String> = self.inner.topic_names.lock().iter().cloned().collect();
        let topics: Vec<Arc<Log>> = names
            .iter()
            .filter_map(|n| self.live_topic(n).ok())
            .filter(|l| l.topic_ttl_ms() > 0)
            .collect();
        for log in topics {
            if let Err(e) = log
                .topic_expire(self.inner.clock.as_ref(), self.inner.persist.as_ref())
                .await
                && e != EngineError::NotFound
            {
                tracing::warn!(log = log.config.id, error = %e, "topic TTL trim failed");
            }
        }
    }
}

impl TopicHandle {
    /// Read records after a cursor (from the incarnation this handle opened).
    pub fn diff(&self, q: &DiffQuery) -> Result<Diff> {
        if self.log.is_removed() {
            return Err(EngineError::NotFound);
        }
        self.log.topic_diff(q, self.engine.now())
    }

    /// The topic's head now.
    pub fn head(&self) -> Result<u64> {
        Ok(self.log.view()?.head)
    }

    /// Whether the topic was deleted since it was opened.
    pub fn is_removed(&self) -> bool {
        self.log.is_removed()
    }

    /// Changes committed so far: two reads with the same arguments at the same count return
    /// the same records (TTL aside), so readers can share one rendering.
    pub fn change_count(&self) -> u64 {
        self.log.change_count()
    }

    /// The incarnation's id.
    pub fn id(&self) -> u64 {
        self.log.config.id
    }

    /// Wait until the topic changes (a write, a delete, a trim, its removal).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
