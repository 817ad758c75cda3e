//! The hooks that keep links current: a stream appended to (news for its subscriptions), a
//! stream created (linked by patterns, or a new incarnation of a linked name), a stream removed
//! (unlinked), and the reconciliation after a crash of what the hooks had not logged.

use super::*;

impl Engine {
    /// The append hook: subscriptions linking `key` have news.
    pub(in crate::engine) fn subs_appended(&self, key: &str) {
        let subs = self.subs();
        if subs.links.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(linked) = subs.by_stream.read().get(key).cloned() else {
            return;
        };
        let Some(path) = key.strip_prefix(STREAM_ROOT) else {
            return;
        };
        // Hot path (every append to a linked stream): allocate only for a new hint or name.
        let mut dirty = subs.dirty.lock();
        for s in linked {
            let mut st = s.state.lock();
            if !st.pending.contains(path) {
                st.pending.insert(path.to_string());
            }
            drop(st);
            if !dirty.contains(&s.name) {
                dirty.insert(s.name.clone());
            }
        }
        drop(dirty);
        subs.notify.notify_one();
    }

    /// The create hook: stream `key` was created as log `id`. Links to an older incarnation
    /// restart at 0, and every subscription whose pattern matches links it at 0, before its
    /// first append can be missed.
    pub(in crate::engine) async fn subs_created(&self, key: &str, id: u64) {
        let Some(path) = key.strip_prefix(STREAM_ROOT) else {
            return;
        };
        let mut candidates: Vec<Arc<Sub>> = {
            let by_name = self.subs().by_name.read();
            if by_name.is_empty() {
                return;
            }
            by_name
                .values()
                .filter(|s| s.pattern.as_deref().is_some_and(|p| glob::matches(p, path)))
                .cloned()
                .collect()
        };
        if let Some(linked) = self.subs().by_stream.read().get(key) {
            for s in linked {
                if !candidates.iter().any(|c| Arc::ptr_eq(c, s)) {
                    candidates.push(s.clone());
                }
            }
        }
        for sub in candidates {
            let Ok(guard) = self.sub_lock(&sub).await else {
                continue;
            };
            let ops = link_ops(&sub, &sub.state.lock(), path, Some(id));
            if let Err(e) = self.sub_commit(&sub, guard, ops).await {
                tracing::warn!(subscription = %sub.name, error = %e, "could not link a new stream; linked again at restart");
            }
            self.mark_dirty(&sub.name);
        }
    }

    /// The removal hook (a delete or an expiry of log `id` named `key`): links to it go (an
    /// explicit one waits at 0 for a stream of that name). Runs in the background.
    pub(in crate::engine) fn subs_removed(&self, key: &str, id: u64) {
        if self.subs().links.load(Ordering::Relaxed) == 0 || !key.starts_with(STREAM_ROOT) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // reconciled at the next start
        };
        let (engine, key) = (self.clone(), key.to_string());
        rt.spawn(async move { engine.unlink_removed(&key, id).await });
    }

    async fn unlink_removed(&self, key: &str, id: u64) {
        let Some(path) = key.strip_prefix(STREAM_ROOT) else {
            return;
        };
        let linked = self.subs().by_stream.read().get(key).cloned();
        for sub in linked.unwrap_or_default() {
            let Ok(guard) = self.sub_lock(&sub).await else {
                continue;
            };
            let ops = {
                let st = sub.state.lock();
                // Only the removed incarnation's link: the name may hold a new one already.
                let gone = st.rec.links.get(path).is_some_and(|l| l.log == Some(id));
                if gone {
                    link_ops(&sub, &st, path, None)
                } else {
                    Vec::new()
                }
            };
            if let Err(e) = self.sub_commit(&sub, guard, ops).await {
                tracing::warn!(subscription = %sub.name, error = %e, "could not unlink a removed stream");
            }
        }
    }

    /// Restore recovered subscriptions (at recovery, before anything is served).
    pub(in crate::engine) fn restore_subs(&self, recs: Vec<SubRec>) {
        for rec in recs {
            self.sub_insert(&Sub::new(rec));
        }
    }

    /// Bring recovered links in line with the streams that exist: what the hooks did not
    /// log before a crash (a stream created, re-created or removed) is logged now. Call once
    /// after recovery; requests may be served meanwhile (the hooks decide with the same
    /// `link_ops`, so whichever comes first, the other finds nothing left to do).
    pub async fn subs_reconcile(&self) {
        let subs: Vec<Arc<Sub>> = self.subs().by_name.read().values().cloned().collect();
        let streams: Vec<(String, u64)> = self
            .inner
            .logs
            .read()
            .iter()
            .filter(|(_, l)| !l.is_topic() && !l.lifecycle.lock().soft_deleted)
            .filter_map(|(k, l)| Some((k.strip_prefix(STREAM_ROOT)?.to_string(), l.config.id)))
            .collect();
        let ids: HashMap<&str, u64> = streams.iter().map(|(p, i)| (p.as_str(), *i)).collect();
        for sub in subs {
            let Ok(guard) = self.sub_lock(&sub).await else {
                continue;
            };
            let ops: Vec<SubOp> = {
                let st = sub.state.lock();
                let linked = st
                    .rec
                    .links
                    .keys()
                    .map(|p| (p, ids.get(p.as_str()).copied()));
                let matching = sub.pattern.as_deref().into_iter().flat_map(|pat| {
                    streams
                        .iter()
                        .filter(|(p, _)| !st.rec.links.contains_key(p) && glob::matches(pat, p))
                        .map(|(p, id)| (p, Some(*id)))
                });
                linked
                    .chain(matching)
                    .flat_map(|(path, now)| link_ops(&sub, &st, path, now))
                    .collect()
            };
            if let Err(e) = self.sub_commit(&sub, guard, ops).await {
                tracing::warn!(subscription = %sub.name, error = %e, "could not reconcile a subscription's links");
            }
            self.mark_dirty(&sub.name);
        }
    }
}

/// The changes that bring `sub`'s link of `path` in line with what the name holds now: a
/// stream incarnation (`Some(log id)`) or nothing. A link to another incarnation restarts at
/// 0 on the new one; a matching pattern links the stream at 0; a link whose stream went is
/// unlinked (an explicit one waits at 0 for a stream of that name). The create and removal
/// hooks and the reconciliation after a crash all decide with this.
fn link_ops(sub: &Sub, st: &SubState, path: &str, now: Option<u64>) -> Vec<SubOp> {
    let link = st.rec.links.get(path);
    let Some(id) = now else {
        return match link {
            Some(l) if l.log.is_some() => vec![SubOp::StreamGone {
                path: path.to_string(),
            }],
            _ => Vec::new(),
        };
    };
    let mut ops = Vec::new();
    if link.is_some_and(|l| l.log != Some(id)) {
        ops.push(SubOp::StreamNew {
            path: path.to_string(),
            log: id,
        });
    }
    let matches = sub
        .pattern
        .as_deref()
        .is_some_and(|p| glob::matches(p, path));
    if matches && !link.is_some_and(|l| l.glob) {
        ops.push(SubOp::Link {
            path: path.to_string(),
            explicit: false,
            acked: 0,
            log: Some(id),
        });
    }
    ops
}
