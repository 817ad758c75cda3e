//! The registry side of routers: create, change, list and delete them, and run one forwarding
//! task per router. A router's definition and cursor live in its destination topic's state
//! (see `log/topic_copy.rs`); this registry indexes them by name and owns the tasks.
//!
//! Forwarding is woken by the source's change notification (no fixed tick): a task reads the
//! source from its cursor (a diff read: skipped, expired and deleted records are passed), makes
//! the copies and applies them to the destination under its append lock. A `discard: reject`
//! destination at its cap stalls the task until the destination changes; records the source
//! evicted before they were forwarded become a `source_trim` gap on the destination.

use super::*;
use crate::log::{Copies, CopyOutcome};
use crate::topic::router::{Feed, Guarantee, HOP_CAP, RouterDef, RouterInfo, RouterPut, cycle};
use crate::topic::{DiffQuery, GapReason, record};

/// Most source records one forwarding step reads.
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;
/// How long a source's delete waits for its routers to copy what it deletes.
const SETTLE_WAIT: Duration = Duration::from_secs(1);
/// How long a stalled router waits before trying again without a change of its destination.
const STALL_RETRY: Duration = Duration::from_millis(250);

/// A registered router.
pub(super) struct RouterEntry {
    def: RouterDef,
}

/// The forwarding task of one source (all its routers): bumped when its routers change.
pub(super) type SourceTasks = HashMap<String, watch::Sender<u64>>;

/// Where a forwarding step left the router.
enum Step {
    /// More source records are waiting.
    More,
    /// Caught up with the source.
    Idle,
    /// The destination refuses more for now.
    Stalled,
    /// The router no longer exists (or no longer feeds its destination).
    Gone,
}

impl Engine {
    /// Create a router, or change an existing one (a change of source starts its cursor over
    /// at the source's head; otherwise the cursor is kept).
    pub async fn router_put(&self, name: &str, def: RouterDef) -> Result<RouterPut> {
        if def.source == def.dest {
            return Err(EngineError::RouterSelf);
        }
        let _admin = self.inner.router_admin.lock().await;
        let source = self.live_topic(&def.source)?;
        let previous = {
            let routers = self.inner.routers.lock();
            let previous = routers.get(name).map(|r| r.def.clone());
            if previous.as_ref() == Some(&def) {
                drop(routers);
                return Ok(RouterPut {
                    created: false,
                    info: self.router_get(name)?,
                });
            }
            let max = self.inner.config.max_routers;
            if previous.is_none() && max > 0 && routers.len() as u64 >= max {
                return Err(EngineError::LimitReached {
                    limit: "max_routers",
                    max,
                });
            }
            if let Some((other, _)) = routers
                .iter()
                .find(|(n, r)| n.as_str() != name && r.def.dest == def.dest)
            {
                return Err(EngineError::RouterFanIn(other.clone()));
            }
            if !def.allow_cycle {
                let edges = routers
                    .iter()
                    .filter(|(n, _)| n.as_str() != name)
                    .map(|(_, r)| (r.def.source.as_str(), r.def.dest.as_str()));
                if let Some(path) = cycle(edges, &def.source, &def.dest) {
                    return Err(EngineError::RouterCycle(path));
                }
            }
            previous
        };
        let dest = match self.live_topic(&def.dest) {
            Ok(d) => d,
            Err(EngineError::NotFound) if def.create_dest => {
                self.topic_put(&def.dest, self.default_topic_config())
                    .await?;
                self.live_topic(&def.dest)?
            }
            Err(e) => return Err(e),
        };
        let persist = self.inner.persist.as_ref();
        // A router moved to another destination goes on from where it got in the old one
        // (taken from it under its lock: a step in flight lands there or not at all), so no
        // source record is skipped or copied twice; a new router, or one with another source,
        // starts at the source's head.
        let mut carried = None;
        if let Some(old) = &previous
            && old.dest != def.dest
            && let Ok(old_dest) = self.live_topic(&old.dest)
            && old_dest.feed().is_some_and(|f| f.name == name)
            && let Some(f) = old_dest.topic_set_feed(None, false, persist).await?
            && f.name == name
            && f.def.source == def.source
        {
            carried = Some(f.cursor);
        }
        let cursor = match carried {
            Some(c) => c,
            None => source.topic_info(self.now(), false)?.head_seq,
        };
        let feed = Feed {
            name: name.to_string(),
            def: def.clone(),
            cursor,
            forwarded: 0,
        };
        // The same router from the same source keeps its progress, as of under the lock.
        dest.topic_set_feed(Some(feed), true, persist).await?;
        let forwarded = dest
            .feed()
            .filter(|f| f.name == name)
            .map_or(0, |f| f.forwarded);
        self.register_router(name, def.clone());
        self.start_routers();
        Ok(RouterPut {
            created: previous.is_none(),
            info: RouterInfo {
                name: name.to_string(),
                def,
                forwarded_total: forwarded,
            },
        })
    }

    /// Register `name` (replacing its earlier definition) and tell the sources' tasks.
    fn register_router(&self, name: &str, def: RouterDef) {
        let source = def.source.clone();
        let old = self
            .inner
            .routers
            .lock()
            .insert(name.to_string(), RouterEntry { def });
        if let Some(old) = old {
            self.routers_changed(&old.def.source);
        }
        self.routers_changed(&source);
    }

    /// Wake the forwarding task of `source`, if it runs, to read its routers again.
    fn routers_changed(&self, source: &str) {
        if let Some(tx) = self.inner.source_tasks.lock().get(source) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Number of routers.
    pub fn router_count(&self) -> usize {
        self.inner.routers.lock().len()
    }

    /// A router's definition and how many records it forwarded.
    pub fn router_get(&self, name: &str) -> Result<RouterInfo> {
        let def = self
            .inner
            .routers
            .lock()
            .get(name)
            .map(|r| r.def.clone())
            .ok_or(EngineError::RouterNotFound)?;
        let forwarded_total = self
            .live_topic(&def.dest)
            .ok()
            .and_then(|d| d.feed())
            .filter(|f| f.name == name)
            .map_or(0, |f| f.forwarded);
        Ok(RouterInfo {
            name: name.to_string(),
            def,
            forwarded_total,
        })
    }

    /// Routers whose names start with `prefix` (and with the given source and destination),
    /// in name order, after `after`; at most `limit` (plus whether more follow).
    pub fn router_list(
        &self,
        prefix: &str,
        source: Option<&str>,
        dest: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<RouterInfo>, bool) {
        let names: Vec<String> = self
            .inner
            .routers
            .lock()
            .iter()
            .filter(|(n, r)| {
                n.starts_with(prefix)
                    && after.is_none_or(|a| n.as_str() > a)
                    && source.is_none_or(|s| r.def.source == s)
                    && dest.is_none_or(|d| r.def.dest == d)
            })
            .take(limit.saturating_add(1))
            .map(|(n, _)| n.clone())
            .collect();
        let more = names.len() > limit;
        let out = names
            .iter()
            .take(limit)
            .filter_map(|n| self.router_get(n).ok())
            .collect();
        (out, more)
    }

    /// Delete a router. Returns whether it existed.
    pub async fn router_delete(&self, name: &str) -> Result<bool> {
        let _admin = self.inner.router_admin.lock().await;
        self.router_remove_locked(name).await
    }

    async fn router_remove_locked(&self, name: &str) -> Result<bool> {
        let Some(def) = self.inner.routers.lock().get(name).map(|r| r.def.clone()) else {
            return Ok(false);
        };
        if let Ok(dest) = self.live_topic(&def.dest)
            && dest.feed().is_some_and(|f| f.name == name)
        {
            dest.topic_set_feed(None, false, self.inner.persist.as_ref())
                .await?;
        }
        if let Some(old) = self.inner.routers.lock().remove(name) {
            self.routers_changed(&old.def.source);
        }
        Ok(true)
    }

    /// Delete every router from or into `topic` (before the topic goes); their names.
    pub(super) async fn remove_routers_of(&self, topic: &str) -> Result<Vec<String>> {
        let _admin = self.inner.router_admin.lock().await;
        let names: Vec<String> = self
            .inner
            .routers
            .lock()
            .iter()
            .filter(|(_, r)| r.def.source == topic || r.def.dest == topic)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            self.router_remove_locked(n).await?;
        }
        Ok(names)
    }

    /// Register the routers recovered with their destination topics.
    pub(super) fn restore_routers(&self, logs: &[Arc<Log>]) {
        for log in logs {
            if let Some(f) = log.feed() {
                self.register_router(&f.name, f.def);
            }
        }
    }

    /// Start the forwarding task of every source with routers and no task (a server calls
    /// this once its runtime runs, after recovery; creating a router starts its source's).
    /// One task per source: an append wakes one task, whatever the fan-out. Without a tokio
    /// runtime nothing is started.
    pub fn start_routers(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime: routers do not forward");
            return;
        };
        // Lock order: routers, then the tasks (a task that finds no router left removes
        // itself under the same two locks, so no router is ever left without its task).
        let routers = self.inner.routers.lock();
        let mut tasks = self.inner.source_tasks.lock();
        for r in routers.values() {
            if tasks.contains_key(&r.def.source) {
                continue;
            }
            let (tx, rx) = watch::channel(0);
            tasks.insert(r.def.source.clone(), tx);
            handle.spawn(forward(
                Arc::downgrade(&self.inner),
                r.def.source.clone(),
                rx,
            ));
        }
    }

    /// Before `source` removes records up to its head (a delete, or a configuration that
    /// trims): let each of its routers copy up to that head (waiting at most
    /// [`SETTLE_WAIT`] for one that lags or is stalled), then log the copies its destination
    /// has not logged yet. Copies of records the source no longer has could not be made again
    /// after a crash.
    pub(super) async fn settle_copies_from(&self, source: &Arc<Log>, name: &str) -> Result<()> {
        let dests: Vec<(String, String)> = self
            .inner
            .routers
            .lock()
            .iter()
            .filter(|(_, r)| r.def.source == name)
            .map(|(n, r)| (n.clone(), r.def.dest.clone()))
            .collect();
        if dests.is_empty() {
            return Ok(());
        }
        let head = source.view()?.head;
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        for (router, dest) in dests {
            let Ok(dest) = self.live_topic(&dest) else {
                continue;
            };
            let mut changed = dest.subscribe();
            while dest
                .feed()
                .is_some_and(|f| f.name == router && f.cursor < head)
            {
                if tokio::time::timeout_at(deadline, changed.changed())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            drop(dest.lock_logged(self.inner.persist.as_ref()).await?);
        }
        Ok(())
    }

    /// One forwarding step of router `name` from `source` into `dest`; `reads` shares the
    /// source's reads among the routers of one pass at the same cursor.
    async fn forward_once(
        &self,
        name: &str,
        def: &RouterDef,
        source: &Arc<Log>,
        dest: &Arc<Log>,
        reads: &mut HashMap<u64, crate::topic::Diff>,
    ) -> Result<Step> {
        let held = dest.lock_append().await;
        let step = self
            .forward_copies(name, def, source, dest, reads, &held)
            .await;
        // Copies are derived from the source's records; a source that sheds records could not
        // give them again after a crash, so their copies are logged now (in the dest's class).
        if source.view().is_ok_and(|v| v.config.sheds_records()) {
            dest.log_copies(held, self.inner.persist.as_ref()).await?;
        }
        step
    }

    /// [`Engine::forward_once`]'s copying, under the destination's append lock (`held`).
    async fn forward_copies(
        &self,
        name: &str,
        def: &RouterDef,
        source: &Arc<Log>,
        dest: &Arc<Log>,
        reads: &mut HashMap<u64, crate::topic::Diff>,
        held: &OwnedMutexGuard<()>,
    ) -> Result<Step> {
        let Some(feed) = dest.feed().filter(|f| f.name == name) else {
            return Ok(Step::Gone);
        };
        let now = self.now();
        let q = DiffQuery {
            from_seq: feed.cursor,
            limit: BATCH_RECORDS,
            nodes: Vec::new(),
            max_bytes: BATCH_BYTES,
        };
        let diff = match reads.get(&feed.cursor) {
            Some(d) => d.clone(),
            None => {
                let d = source.topic_diff(&q, now)?;
                reads.insert(feed.cursor, d.clone());
                d
            }
        };
        if diff
            .tombstone
            .as_ref()
            .is_some_and(|t| t.reason == GapReason::Recreated)
        {
            // The cursor is past the source's head. A router's source is never created again
            // under it (deleting a topic deletes its routers): the source is behind, its own
            // router copies lost with a crash and being derived again (in a cycle, from this
            // very destination). Reading from its start, as a client's cursor would, copied
            // everything again; wait for it to grow back instead.
            return Ok(Step::Idle);
        }
        let persist = self.inner.persist.as_ref();
        // Records evicted before they were forwarded: their gap first.
        if let Some(t) = &diff.tombstone
            && t.reason != GapReason::Recreated
            && t.missed_estimate > 0
        {
            let mut lost = Copies::new(t.gap_to);
            lost.lost = t.missed_estimate;
            let outcome = dest.topic_copy(held, name, &mut lost, now, persist).await?;
            if outcome == CopyOutcome::NotFed {
                return Ok(Step::Gone);
            }
        }
        let mut c = Copies::new(diff.next_from_seq);
        let mut seqs = Vec::new();
        for r in &diff.records {
            if r.layout.hops >= HOP_CAP {
                continue;
            }
            let tag: Option<String> = r.tag_json().and_then(|t| serde_json::from_slice(t).ok());
            if !def.passes(tag.as_deref()) {
                continue;
            }
            record::copy(&r.raw, &r.layout, r.seq, copy_rule(name, def), &mut c.buf);
            c.rel_ends.push(c.buf.len() as u64);
            c.tags.push(tag.filter(|_| def.preserve_tag));
            seqs.push(r.seq);
        }
        let caught_up = diff.next_from_seq >= diff.head_seq;
        if c.rel_ends.is_empty() && c.cursor == feed.cursor {
            return Ok(if caught_up { Step::Idle } else { Step::More });
        }
        match dest.topic_copy(held, name, &mut c, now, persist).await? {
            CopyOutcome::Applied(_) => Ok(if caught_up { Step::Idle } else { Step::More }),
            CopyOutcome::NotFed => Ok(Step::Gone),
            CopyOutcome::Full => {
                // Whatever fits, one record at a time; the rest waits for room.
                let Some(&first) = seqs.first() else {
                    return Ok(Step::Stalled);
                };
                c.keep_first(first);
                match dest.topic_copy(held, name, &mut c, now, persist).await? {
                    CopyOutcome::Applied(_) => Ok(Step::More),
                    CopyOutcome::NotFed => Ok(Step::Gone),
                    CopyOutcome::Full => {
                        // Records skipped before the first copy are passed meanwhile.
                        if first > feed.cursor + 1 {
                            let mut skip = Copies::new(first - 1);
                            dest.topic_copy(held, name, &mut skip, now, persist).await?;
                        }
                        Ok(Step::Stalled)
                    }
                }
            }
        }
    }
}

/// How router `name` copies records.
fn copy_rule<'a>(name: &'a str, def: &RouterDef) -> record::CopyRule<'a> {
    record::CopyRule {
        keep_tag: def.preserve_tag,
        keep_node: def.preserve_node,
        stamp: (def.guarantee == Guarantee::ExactlyOnce).then_some(name),
    }
}

/// A source's forwarding task: each pass forwards for every router of the source, then waits
/// for the source (or, for a stalled router, its destination) to change, or for its routers to
/// change. Holds the engine only while it works; ends when the source has no router left.
async fn forward(
    engine: std::sync::Weak<Inner>,
    source: String,
    mut changed: watch::Receiver<u64>,
) {
    loop {
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let engine_now = Engine { inner };
        changed.borrow_and_update();
        let routers: Vec<(String, RouterDef)> = {
            let routers = engine_now.inner.routers.lock();
            let mine: Vec<(String, RouterDef)> = routers
                .iter()
                .filter(|(_, r)| r.def.source == source)
                .map(|(n, r)| (n.clone(), r.def.clone()))
                .collect();
            if mine.is_empty() {
                engine_now.inner.source_tasks.lock().remove(&source);
                return;
            }
            mine
        };
        let Ok(src) = engine_now.live_topic(&source) else {
            drop(engine_now);
            // The routers go with their topics; until then, wait.
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(STALL_RETRY) => {}
            }
            continue;
        };
        let mut source_rx = src.subscribe();
        source_rx.borrow_and_update();
        let (mut more, mut stalled) = (false, Vec::new());
        let mut reads = HashMap::new();
        for (name, def) in &routers {
            let Ok(dest) = engine_now.live_topic(&def.dest) else {
                continue;
            };
            let mut dest_rx = dest.subscribe();
            dest_rx.borrow_and_update();
            match engine_now
                .forward_once(name, def, &src, &dest, &mut reads)
                .await
            {
                Ok(Step::More) => more = true,
                Ok(Step::Stalled) => stalled.push(dest_rx),
                Ok(Step::Idle | Step::Gone) => {}
                Err(e) => {
                    tracing::warn!(router = %name, error = %e, "forwarding failed; retrying");
                    stalled.push(dest_rx);
                }
            }
        }
        drop((engine_now, src));
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        let any_stalled = !stalled.is_empty();
        let dest_changed = async {
            if stalled.is_empty() {
                std::future::pending::<()>().await;
            }
            let waits = stalled.iter_mut().map(|rx| Box::pin(rx.changed()));
            let _ = futures_util::future::select_all(waits).await;
        };
        let retry = async {
            if !any_stalled {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(STALL_RETRY).await;
        };
        tokio::select! {
            _ = changed.changed() => {}
            _ = source_rx.changed() => {}
            () = dest_changed => {}
            () = retry => {}
        }
    }
}
