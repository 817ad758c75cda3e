//! Subscriptions on the engine: the registry, the hooks that keep links current as streams
//! are created, appended to and removed, and every change a request or the delivery side
//! makes. The state and its WAL records are `crate::subs`; here is what spans streams and
//! time.
//!
//! A change is decided under the subscription's serial lock, logged as one WAL record
//! (the class is the engine's default, at least `memory`, whenever there is storage) and
//! applied from the WAL callback, so the state in RAM is always what a replay would rebuild.
//! Appends never write for subscriptions: the append hook only marks the linked
//! subscriptions as having news and wakes the delivery side, which makes a wake (one record)
//! only when the subscription is idle.

use super::*;
use crate::subs::glob;
use crate::subs::{
    Delivery, Link, LinkInfo, STREAM_ROOT, SubAction, SubError, SubInfo, SubKind, SubOp, SubPoke,
    SubRec, SubSpec, Wake, WakeInfo,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicUsize;

mod hooks;
mod wakes;

type SubResult<T> = std::result::Result<T, SubError>;

/// Largest creation record (its links' paths, about): well inside one WAL record.
const MAX_CREATE_BYTES: usize = 48 << 20;

/// Every subscription, indexed for the hooks.
#[derive(Default)]
pub(super) struct Subs {
    by_name: RwLock<BTreeMap<String, Arc<Sub>>>,
    /// Stream key to the subscriptions linking it.
    by_stream: RwLock<HashMap<String, Vec<Arc<Sub>>>>,
    /// Links in `by_stream`: the append hook's fast path when there are none.
    links: AtomicUsize,
    /// Subscriptions with news for the delivery side.
    dirty: parking_lot::Mutex<BTreeSet<String>>,
    notify: tokio::sync::Notify,
    /// Serializes creates and deletes (a create's check and insert are one step).
    admin: tokio::sync::Mutex<()>,
}

pub(super) struct Sub {
    id: u64,
    name: String,
    pattern: Option<String>,
    serial: Arc<tokio::sync::Mutex<()>>,
    state: parking_lot::Mutex<SubState>,
}

struct SubState {
    rec: SubRec,
    /// Links that may have data past their cursor (appended to since last looked at).
    pending: BTreeSet<String>,
    /// The current pull-wake wake's event was appended (RAM only: after a restart it is
    /// appended again, which a worker takes as one more hint to claim).
    event_written: bool,
    /// A webhook delivery of the current wake is under way.
    delivering: bool,
    deleted: bool,
}

impl Sub {
    fn new(rec: SubRec) -> Arc<Sub> {
        let pending = rec.links.keys().cloned().collect();
        Arc::new(Sub {
            id: rec.id,
            name: rec.name.clone(),
            pattern: rec.spec.pattern.clone(),
            serial: Arc::new(tokio::sync::Mutex::new(())),
            state: parking_lot::Mutex::new(SubState {
                rec,
                pending,
                event_written: false,
                delivering: false,
                deleted: false,
            }),
        })
    }
}

fn key_of(path: &str) -> String {
    format!("{STREAM_ROOT}{path}")
}

/// Unix ms `ms` from `now`.
fn after(now: i64, ms: u64) -> i64 {
    now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl Engine {
    fn subs(&self) -> &Subs {
        &self.inner.subs
    }

    /// A stream's incarnation and tail, if it exists (no expiry side effects).
    fn stream_tail(&self, path: &str) -> Option<(u64, u64)> {
        let log = self.inner.logs.read().get(&key_of(path)).cloned()?;
        if log.lifecycle.lock().soft_deleted || log.is_creating() || log.is_topic() {
            return None;
        }
        Some((log.config.id, log.tail()))
    }

    fn link_info(&self, path: &str, link: &Link) -> LinkInfo {
        let tail = match self.stream_tail(path) {
            Some((id, tail)) if link.log.is_none_or(|l| l == id) => tail,
            // A new incarnation the hook has not linked yet counts from its start.
            Some((_, tail)) => tail.max(link.acked),
            None => link.acked,
        };
        LinkInfo {
            path: path.to_string(),
            explicit: link.explicit,
            acked: link.acked,
            tail,
        }
    }

    /// The links with data past their cursor, found from the `pending` hints (a hint found
    /// caught up is dropped).
    fn pending_links(&self, st: &mut SubState) -> Vec<LinkInfo> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        for path in &st.pending {
            match st.rec.links.get(path) {
                Some(link) => {
                    let info = self.link_info(path, link);
                    if info.has_pending() {
                        out.push(info);
                    } else {
                        done.push(path.clone());
                    }
                }
                None => done.push(path.clone()),
            }
        }
        for p in done {
            st.pending.remove(&p);
        }
        out
    }

    /// Log `entry` for subscription `id` and run `done` once it is committed (at once
    /// without storage).
    fn sub_log(&self, id: u64, entry: WalEntry, done: Box<dyn FnOnce(SubResult<()>) + Send>) {
        let Some(p) = &self.inner.persist else {
            return done(Ok(()));
        };
        let class = self.inner.config.default_durability.max(Durability::Memory);
        p.submit(
            id,
            entry.encode(&[]),
            commit_for(class),
            Box::new(move |r| done(r.map(|_| ()).map_err(|e| wal_error(e).into()))),
        );
    }

    /// Commit `ops` of `sub` (its serial lock is `guard`): applied when the record is.
    async fn sub_commit(
        &self,
        sub: &Arc<Sub>,
        guard: tokio::sync::OwnedMutexGuard<()>,
        ops: Vec<SubOp>,
    ) -> SubResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let seq = sub.state.lock().rec.seq + 1;
        let entry = WalEntry::SubChange {
            sub_id: sub.id,
            seq,
            ops: ops.clone(),
        };
        let (tx, rx) = oneshot::channel();
        let (engine, s) = (self.clone(), sub.clone());
        self.sub_log(
            sub.id,
            entry,
            Box::new(move |r| {
                if r.is_ok() {
                    engine.sub_apply(&s, &ops, seq);
                }
                drop(guard);
                let _ = tx.send(r);
            }),
        );
        rx.await
            .unwrap_or_else(|_| Err(storage_error("the WAL shut down", false).into()))
    }

    /// Apply committed `ops`, keeping the stream index and the pending hints current.
    fn sub_apply(&self, sub: &Arc<Sub>, ops: &[SubOp], seq: u64) {
        let mut st = sub.state.lock();
        for op in ops {
            st.rec.apply(op);
            match op {
                SubOp::Link { path, .. } | SubOp::StreamNew { path, .. } => {
                    st.pending.insert(path.clone());
                    self.index(sub, path, true);
                }
                SubOp::Unlink { path } | SubOp::StreamGone { path } => {
                    let linked = st.rec.links.contains_key(path);
                    self.index(sub, path, linked);
                }
                SubOp::Wake(_) | SubOp::End => {
                    st.event_written = false;
                    st.delivering = false;
                }
                _ => {}
            }
        }
        st.rec.seq = seq;
    }

    /// Add or remove `sub` from the index entry of `path`.
    fn index(&self, sub: &Arc<Sub>, path: &str, linked: bool) {
        let subs = self.subs();
        let mut idx = subs.by_stream.write();
        let key = key_of(path);
        let list = idx.entry(key.clone()).or_default();
        let at = list.iter().position(|s| Arc::ptr_eq(s, sub));
        match (linked, at) {
            (true, None) => {
                list.push(sub.clone());
                subs.links.fetch_add(1, Ordering::Relaxed);
            }
            (false, Some(i)) => {
                list.swap_remove(i);
                subs.links.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if list.is_empty() {
            idx.remove(&key);
        }
    }

    fn mark_dirty(&self, name: &str) {
        self.subs().dirty.lock().insert(name.to_string());
        self.subs().notify.notify_one();
    }

    fn sub_named(&self, name: &str) -> SubResult<Arc<Sub>> {
        self.subs()
            .by_name
            .read()
            .get(name)
            .cloned()
            .ok_or(SubError::NotFound)
    }

    /// Take `sub`'s serial lock; a deleted subscription answers not found.
    async fn sub_lock(&self, sub: &Arc<Sub>) -> SubResult<tokio::sync::OwnedMutexGuard<()>> {
        let guard = sub.serial.clone().lock_owned().await;
        if sub.state.lock().deleted {
            return Err(SubError::NotFound);
        }
        Ok(guard)
    }

    /// Create subscription `name`, or confirm it when `spec` is its configuration.
    /// Explicit streams and (with a pattern) every existing matching stream are linked at
    /// their tails. Returns whether it was created.
    pub async fn sub_put(
        &self,
        name: &str,
        spec: SubSpec,
        origin: &str,
    ) -> SubResult<(bool, SubInfo)> {
        let spec = spec.normalized();
        let _admin = self.subs().admin.lock().await;
        if let Ok(sub) = self.sub_named(name) {
            if sub.state.lock().rec.spec != spec {
                return Err(SubError::Exists);
            }
            return Ok((false, self.sub_info(&sub)));
        }
        let max = self.inner.config.max_subscriptions;
        if max > 0 && self.subs().by_name.read().len() as u64 >= max {
            return Err(SubError::Limit {
                limit: "max_subscriptions",
                max,
            });
        }
        let mut links = BTreeMap::new();
        for path in &spec.streams {
            let (log, acked) = self
                .stream_tail(path)
                .map_or((None, 0), |(i, t)| (Some(i), t));
            let link = Link {
                explicit: true,
                glob: false,
                acked,
                log,
            };
            links.insert(path.clone(), link);
        }
        if let Some(pattern) = &spec.pattern {
            let streams: Vec<(String, u64, u64)> = self
                .inner
                .logs
                .read()
                .iter()
                .filter_map(|(key, log)| {
                    let path = key.strip_prefix(STREAM_ROOT)?;
                    let live =
                        !log.is_topic() && !log.is_creating() && !log.lifecycle.lock().soft_deleted;
                    (live && glob::matches(pattern, path))
                        .then(|| (path.to_string(), log.config.id, log.tail()))
                })
                .collect();
            for (path, id, tail) in streams {
                let link = links.entry(path).or_insert(Link {
                    explicit: false,
                    glob: false,
                    acked: tail,
                    log: Some(id),
                });
                link.glob = true;
            }
        }
        self.check_links(links.len())?;
        // The creation is one WAL record: it must fit one (a WAL record is at most 64 MiB).
        let bytes: usize = links.keys().map(|p| p.len() + 24).sum();
        if bytes > MAX_CREATE_BYTES {
            return Err(SubError::Limit {
                limit: "subscription_create_bytes",
                max: MAX_CREATE_BYTES as u64,
            });
        }
        let rec = SubRec {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            spec,
            created_ms: self.now(),
            origin: origin.to_string(),
            seq: 0,
            links,
            generation: 0,
            wake: None,
            attempts: 0,
            next_attempt: None,
        };
        let sub = Sub::new(rec.clone());
        let (tx, rx) = oneshot::channel();
        let (engine, s) = (self.clone(), sub.clone());
        self.sub_log(
            rec.id,
            WalEntry::SubCreate { rec: Box::new(rec) },
            Box::new(move |r| {
                if r.is_ok() {
                    engine.sub_insert(&s);
                }
                let _ = tx.send(r);
            }),
        );
        rx.await
            .unwrap_or_else(|_| Err(storage_error("the WAL shut down", false).into()))?;
        Ok((true, self.sub_info(&sub)))
    }

    fn check_links(&self, n: usize) -> SubResult<()> {
        let max = self.inner.config.max_subscription_links;
        if max > 0 && n as u64 > max {
            return Err(SubError::Limit {
                limit: "max_subscription_links",
                max,
            });
        }
        Ok(())
    }

    /// Make `sub` visible: by name, in the stream index, for the delivery side.
    fn sub_insert(&self, sub: &Arc<Sub>) {
        let paths: Vec<String> = sub.state.lock().rec.links.keys().cloned().collect();
        for p in &paths {
            self.index(sub, p, true);
        }
        self.subs()
            .by_name
            .write()
            .insert(sub.name.clone(), sub.clone());
        self.mark_dirty(&sub.name);
    }

    /// A subscription as `GET` shows it.
    pub fn sub_get(&self, name: &str) -> SubResult<SubInfo> {
        Ok(self.sub_info(&self.sub_named(name)?))
    }

    fn sub_info(&self, sub: &Arc<Sub>) -> SubInfo {
        let st = sub.state.lock();
        SubInfo {
            name: sub.name.clone(),
            spec: st.rec.spec.clone(),
            created_ms: st.rec.created_ms,
            origin: st.rec.origin.clone(),
            failed: st.rec.attempts > 0,
            links: st
                .rec
                .links
                .iter()
                .map(|(p, l)| self.link_info(p, l))
                .collect(),
        }
    }

    /// Delete subscription `name` (nothing to do when there is none). Requests of its wakes
    /// in flight fail from now on.
    pub async fn sub_delete(&self, name: &str) -> SubResult<()> {
        let _admin = self.subs().admin.lock().await;
        let Ok(sub) = self.sub_named(name) else {
            return Ok(());
        };
        let serial = self.sub_lock(&sub).await?;
        let (tx, rx) = oneshot::channel();
        let engine = self.clone();
        self.sub_log(
            sub.id,
            WalEntry::SubDelete { sub_id: sub.id },
            // Applied from the commit (like every change), so a dropped request cannot leave
            // a subscription deleted on disk and alive in RAM.
            Box::new(move |r| {
                if r.is_ok() {
                    engine.sub_remove(&sub);
                }
                drop(serial);
                let _ = tx.send(r);
            }),
        );
        rx.await
            .unwrap_or_else(|_| Err(storage_error("the WAL shut down", false).into()))
    }

    /// Forget a deleted subscription: requests of its wakes in flight fail from now on.
    fn sub_remove(&self, sub: &Arc<Sub>) {
        let paths: Vec<String> = {
            let mut st = sub.state.lock();
            st.deleted = true;
            st.rec.links.keys().cloned().collect()
        };
        for p in &paths {
            self.index(sub, p, false);
        }
        self.subs().by_name.write().remove(&sub.name);
    }

    /// Link `paths` explicitly (already linked ones keep their cursor; new ones start at the
    /// stream's tail).
    pub async fn sub_add_streams(&self, name: &str, paths: &[String]) -> SubResult<()> {
        let sub = self.sub_named(name)?;
        let guard = self.sub_lock(&sub).await?;
        let (ops, links) = {
            let st = sub.state.lock();
            let ops: Vec<SubOp> = paths
                .iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|p| !st.rec.links.get(*p).is_some_and(|l| l.explicit))
                .map(|p| {
                    let (log, acked) = self.stream_tail(p).map_or((None, 0), |(i, t)| (Some(i), t));
                    SubOp::Link {
                        path: p.clone(),
                        explicit: true,
                        acked,
                        log,
                    }
                })
                .collect();
            (ops, st.rec.links.len())
        };
        self.check_links(links + ops.len())?;
        self.sub_commit(&sub, guard, ops).await
    }

    /// Remove the explicit link of `path` (a glob link stays; an absent link is fine).
    pub async fn sub_remove_stream(&self, name: &str, path: &str) -> SubResult<()> {
        let sub = self.sub_named(name)?;
        let guard = self.sub_lock(&sub).await?;
        let explicit = sub
            .state
            .lock()
            .rec
            .links
            .get(path)
            .is_some_and(|l| l.explicit);
        let ops = if explicit {
            vec![SubOp::Unlink {
                path: path.to_string(),
            }]
        } else {
            Vec::new()
        };
        self.sub_commit(&sub, guard, ops).await
    }

    /// How many subscriptions there are.
    pub fn sub_count(&self) -> usize {
        self.subs().by_name.read().len()
    }

    /// Names of every subscription.
    pub fn sub_names(&self) -> Vec<String> {
        self.subs().by_name.read().keys().cloned().collect()
    }

    /// Wait until some subscriptions have news, and take their names.
    pub async fn sub_news(&self) -> Vec<String> {
        loop {
            let notified = self.subs().notify.notified();
            let names: Vec<String> = std::mem::take(&mut *self.subs().dirty.lock())
                .into_iter()
                .collect();
            if !names.is_empty() {
                return names;
            }
            notified.await;
        }
    }

    /// Every subscription's state, for a checkpoint.
    pub(in crate::engine) fn sub_recs(&self) -> Vec<SubRec> {
        self.subs()
            .by_name
            .read()
            .values()
            .map(|s| s.state.lock().rec.clone())
            .collect()
    }
}
