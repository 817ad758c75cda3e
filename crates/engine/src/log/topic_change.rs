//! Topic changes other than writes: record deletes, TTL trims found without a write,
//! configuration changes, the topic's state, and what recovery and checkpoints do for topics
//! (restoring the state and tag index, giving back trimmed space).

use super::commit::WalRecord;
use super::topic::View;
use super::*;
use crate::topic::record;
use crate::topic::state::{RangeRec, TrimRec};
use crate::topic::{DeleteSpec, Deleted, TopicConfig, TopicInfo};

impl Log {
    /// Delete records: below `before_seq` and/or by tag, bounded by the head now.
    pub async fn topic_delete(
        self: &Arc<Self>,
        spec: &DeleteSpec,
        persist: Option<&Arc<Persist>>,
    ) -> Result<Deleted> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        // `before_seq` alone trims the head; with a tag match it bounds the match instead
        // (delete the matching records below it: "keep the new version").
        let (before, last) = match (spec.before_seq, &spec.tag) {
            (Some(b), None) => (b.min(v.head + 1), v.head),
            (b, _) => (0, b.map_or(v.head, |b| b.saturating_sub(1).min(v.head))),
        };
        let start = before.max(v.trim.earliest);
        let matched: Vec<u64> = match &spec.tag {
            None => Vec::new(),
            Some(m) => self.with_topic(|st| {
                let t = st.topic.as_deref().expect("checked by with_topic");
                t.tags
                    .matching(m, start, last)
                    .into_iter()
                    .filter(|&s| t.deleted.range_end(s).is_none())
                    .collect()
            })?,
        };
        self.delete_matched(serial, &v, start, matched, persist, Commit::Sync)
            .await
    }

    /// Delete the live records `matched` (ascending) and trim the head past `start` and them,
    /// committed with `commit`; the caller holds the append lock (`serial`) and read `v`.
    pub(super) async fn delete_matched(
        self: &Arc<Self>,
        serial: OwnedMutexGuard<()>,
        v: &View,
        start: u64,
        matched: Vec<u64>,
        persist: Option<&Arc<Persist>>,
        commit: Commit,
    ) -> Result<Deleted> {
        // Contiguous runs of matched seqs, with their bytes.
        let mut ranges: Vec<RangeRec> = Vec::new();
        let mut i = 0;
        while i < matched.len() {
            let mut j = i + 1;
            while j < matched.len() && matched[j] == matched[j - 1] + 1 {
                j += 1;
            }
            let (a, b) = (matched[i], matched[j - 1] + 1);
            let bytes = self.seq_pos(b, v)? - self.seq_pos(a, v)?;
            ranges.push((a, b, bytes));
            i = j;
        }
        // The new first live record: past `before`, the current deletes and these.
        let mut e = self.live_from(start);
        loop {
            let next = ranges
                .iter()
                .find(|(a, b, _)| (*a..*b).contains(&e))
                .map(|r| self.live_from(r.1));
            match next {
                Some(n) if n > e => e = n,
                _ => break,
            }
        }
        let trim = TrimRec {
            earliest: e.max(v.trim.earliest),
            earliest_pos: self.seq_pos(e.max(v.trim.earliest), v)?,
            cap_floor: v.trim.cap_floor,
            ttl_floor: v.trim.ttl_floor,
        };
        if ranges.is_empty() && trim.earliest == v.trim.earliest {
            drop(serial);
            return Ok(Deleted {
                deleted: 0,
                earliest_seq: v.trim.earliest,
                head_seq: v.head,
                count: v.live_count,
                bytes: v.live_bytes,
            });
        }
        let log_seq = v.log_seq + 1;
        let mut record = self.topic_record(
            persist,
            WalEntry::TopicDelete {
                log_id: self.config.id,
                log_seq,
                ranges: ranges.clone(),
                trim,
            },
        );
        if let Some(r) = &mut record {
            r.commit = commit;
        }
        let before_count = v.live_count;
        let (out, _) = self
            .commit(serial, record, 0, move |log, st| {
                let tail = st.w.tail;
                st.w.log_seq = log_seq;
                let t = st.topic.as_deref_mut().expect("a topic stays a topic");
                let before = t.ram();
                t.apply_delete(&ranges, trim);
                t.tags.remove(&matched);
                let grown = t.ram() as i64 - before as i64;
                let out = Deleted {
                    deleted: before_count.saturating_sub(t.live_count()),
                    earliest_seq: t.trim.earliest,
                    head_seq: t.head,
                    count: t.live_count(),
                    bytes: t.live_bytes(tail),
                };
                log.settle_index_ram(st, grown, 0);
                log.release_mem(st);
                out
            })
            .await?;
        Ok(out)
    }

    /// A topic change's WAL record (none for an `Ephemeral` topic's records... but trims,
    /// deletes and configuration of every class are logged, so they survive like the config).
    fn topic_record<'a>(
        &self,
        persist: Option<&'a Arc<Persist>>,
        entry: WalEntry,
    ) -> Option<WalRecord<'a>> {
        let p = persist.filter(|_| self.files.is_some())?;
        Some(WalRecord {
            persist: p,
            bytes: entry.encode(&[]),
            commit: Commit::Sync,
        })
    }

    /// Persist a TTL trim found without a write (so count and bytes stop including expired
    /// records). Returns whether anything was trimmed.
    pub async fn topic_expire(
        self: &Arc<Self>,
        clock: &dyn Clock,
        persist: Option<&Arc<Persist>>,
    ) -> Result<bool> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        let cut = self.ttl_cut(&v, v.trim.earliest, clock.now_ms())?;
        if cut <= v.trim.earliest {
            return Ok(false);
        }
        let trim = self.trim_to(&v, cut, v.trim.cap_floor, v.trim.ttl_floor.max(cut))?;
        let log_seq = v.log_seq + 1;
        let mut record = self.topic_record(
            persist,
            WalEntry::TopicTrim {
                log_id: self.config.id,
                log_seq,
                trim,
            },
        );
        if let Some(r) = &mut record {
            // TTL is re-derived from timestamps after a crash anyway: no sync of its own.
            r.commit = Commit::Lazy;
        }
        self.commit(serial, record, 0, move |log, st| {
            st.w.log_seq = log_seq;
            if let Some(t) = st.topic.as_deref_mut() {
                let before = t.ram();
                t.apply_trim(trim);
                let grown = t.ram() as i64 - before as i64;
                log.settle_index_ram(st, grown, 0);
            }
            log.release_mem(st);
        })
        .await?;
        Ok(true)
    }

    /// Change the configuration in place (the type never changes: the engine's caller checks).
    pub async fn topic_configure(
        self: &Arc<Self>,
        config: TopicConfig,
        persist: Option<&Arc<Persist>>,
    ) -> Result<()> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        if v.config == config {
            return Ok(());
        }
        let log_seq = v.log_seq + 1;
        let seal = v.config.durability == crate::Durability::Ephemeral
            && config.durability.is_persistent();
        let entry = match persist {
            Some(p) if seal => self.seal(p, log_seq, &config)?,
            _ => WalEntry::TopicConfig {
                log_id: self.config.id,
                log_seq,
                config: config.clone(),
            },
        };
        let record = self.topic_record(persist, entry);
        self.commit(serial, record, 0, move |_, st| {
            st.w.log_seq = log_seq;
            if let Some(t) = st.topic.as_deref_mut() {
                t.config = config;
            }
        })
        .await?;
        Ok(())
    }

    /// The record that makes an `ephemeral` topic durable with `config`: its records were
    /// never logged, so its files are synced (the pending tail written first) and the record
    /// carries the whole state they hold, to be taken as it is at replay. The caller holds the
    /// append lock, so nothing changes between the sync and the commit. (A blocking sync on
    /// the caller's thread: this is a rare configuration change of one topic.)
    fn seal(&self, persist: &Persist, log_seq: u64, config: &TopicConfig) -> Result<WalEntry> {
        let (snap, _, topic) = self.snapshot(false)?;
        let Some(TopicSnap {
            rec: mut topic,
            feed,
            queue,
            ..
        }) = topic
        else {
            return Err(EngineError::NotFound);
        };
        if let Some(files) = &self.files {
            files.sync().map_err(io_error)?;
            // The files' entries too: they may be new since the last checkpoint.
            persist.dir.sync_dir("streams").map_err(io_error)?;
            self.mark_synced(snap.writer.tail);
        }
        topic.config = config.clone();
        let mut writer = snap.writer;
        writer.log_seq = log_seq;
        Ok(WalEntry::TopicSeal {
            log_id: self.config.id,
            log_seq,
            writer,
            topic: Box::new(topic),
            feed,
            queue,
        })
    }

    /// The topic's state (with TTL applied as of `now`, without persisting it).
    pub fn topic_info(&self, now: i64, touch: bool) -> Result<TopicInfo> {
        let v = self.view()?;
        let cut = self.ttl_cut(&v, v.trim.earliest, now)?;
        let (earliest, count, bytes) = if cut > v.trim.earliest {
            let e = self.live_from(cut);
            let pos = self.seq_pos(e, &v)?;
            let (c, b) = self.live_after(&v, e, pos);
            (e, c, b)
        } else {
            // Past deleted records, as a diff reports it (the head + 1 when none is live).
            (self.live_from(v.trim.earliest), v.live_count, v.live_bytes)
        };
        let (last_write_ts, last_read_ts, queue) = self.with_topic(|st| {
            let t = st.topic.as_deref_mut().expect("checked by with_topic");
            let queue = t.queue.as_deref_mut().map(|q| {
                q.sweep(now);
                q.counts(count)
            });
            let out = (t.last_write_ts, t.last_read_ts, queue);
            if touch {
                t.last_read_ts = Some(now);
            }
            out
        })?;
        Ok(TopicInfo {
            name: self.config.name.clone(),
            config: v.config,
            head_seq: v.head,
            earliest_seq: earliest,
            count,
            bytes,
            last_write_ts,
            last_read_ts,
            id: self.config.id,
            queue,
        })
    }
}

impl Log {
    /// Give back the disk space of records a checkpoint's trim `t` removed: that checkpoint is
    /// durable, so no recovery can bring them back (a later trim may not be durable yet, so
    /// only the checkpoint's counts).
    pub fn release_trimmed(&self, t: &TrimRec) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let (done, file_end, file_records) = {
            let st = self.state.lock();
            let file_records = st.w.records - st.pending.ends.len() as u64;
            (st.released, st.pending.start, file_records)
        };
        let to = t.earliest_pos.min(file_end);
        let to_rec = (t.earliest - 1).min(file_records);
        if to <= done.0 && to_rec <= done.1 {
            return Ok(());
        }
        let reached = files
            .release(done.0, to.max(done.0), done.1, to_rec.max(done.1))
            .map_err(io_error)?;
        self.state.lock().released = reached;
        Ok(())
    }

    /// Give a recovered log its topic state, and rebuild the tag index from the live records.
    /// A topic that is `ephemeral` now keeps none of its records across a restart (as the class
    /// promises, whatever a checkpoint wrote of them; readers that had not read them get a
    /// tombstone). Replay already accounted for `ephemeral` stretches of other topics.
    pub fn restore_topic(&self, mut t: TopicState) {
        let tail = self.state.lock().w.tail;
        t.reserved = t.head;
        if !t.config.leases_durable
            && let Some(q) = t.queue.as_deref_mut()
        {
            q.drop_leases();
        }
        if t.config.durability == crate::Durability::Ephemeral && t.trim.earliest <= t.head {
            let gone = t.head + 1;
            t.apply_trim(TrimRec {
                earliest: gone,
                earliest_pos: tail,
                cap_floor: gone,
                ttl_floor: 0,
            });
        }
        let (mut seq, mut pos) = (t.trim.earliest, t.trim.earliest_pos);
        let scan = t.tagged > 0 && seq <= t.head;
        let idem = t.ram();
        {
            // Recovery must not fail on the budget: count what the topic holds, unchecked.
            let mut st = self.state.lock();
            st.topic = Some(Box::new(t));
            st.own_bytes += idem;
            self.budget.used.fetch_add(idem, Ordering::Relaxed);
        }
        if !scan {
            return;
        }
        // Rebuild the tag index, a few MiB at a time (memory stays bounded).
        while pos < tail {
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut budget = 4 << 20;
            let reached = match self.collect_own(pos, tail, &mut budget, &mut chunks) {
                Ok(r) if r > pos => r,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(log = self.config.id, error = %e, "cannot read a topic to rebuild its tag index; deletes by tag will miss its older records");
                    return;
                }
            };
            let mut found = Vec::new();
            for chunk in chunks {
                let mut at = 0;
                while let Some((_, _, total)) = record::parse(&chunk[at..]) {
                    if let Some(tag) = record::tag_of(&chunk[at..at + total]) {
                        found.push((seq, tag));
                    }
                    at += total;
                    seq += 1;
                }
            }
            let mut st = self.state.lock();
            if let Some(t) = st.topic.as_deref_mut() {
                let before = t.ram();
                for (s, tag) in found {
                    if t.deleted.range_end(s).is_none() {
                        t.tags.insert(&tag, s);
                    }
                }
                let grown = t.ram() - before;
                st.own_bytes += grown;
                self.budget.used.fetch_add(grown, Ordering::Relaxed);
            }
            pos = reached;
        }
    }
}
