//! Topic writes, and what every topic change uses to decide (the topic's view, record
//! positions and timestamps, trims): a change is decided under the append lock (so no other
//! change of the log interleaves), committed as one WAL record, applied from the commit (see
//! [`super::commit`]). Deletes, TTL trims, configuration and recovery: `topic_change.rs`.
//!
//! Deciding may read record boundaries and timestamps from the files (caps by bytes, TTL, the
//! position of the new first live record). That happens outside the state lock: the append
//! lock keeps the topic from changing, and what the files hold never changes.

use super::commit::WalRecord;
use super::*;
use crate::topic::record;
use crate::topic::state::{IdemWindow, TAG_ENTRY_COST, TAG_KEY_COST, TrimRec};
use crate::topic::{CommitTiming, Discard, NewRecord, TopicConfig, TopicWritten};

/// Seqs an `ephemeral` topic reserves at a time: a crash moves its head up to this far past
/// its last write (its records are gone then anyway).
pub(super) const RESERVE_SEQS: u64 = 4096;

/// A write's records, encoded, with what applying them needs.
struct Prepared {
    buf: Vec<u8>,
    rel_ends: Vec<u64>,
    idem: Option<String>,
    now: i64,
    tags: Vec<Option<String>>,
}

/// What a write was decided to be, under the append lock.
#[derive(Clone, Copy)]
struct Decided {
    start: u64,
    first_seq: u64,
    n: u64,
    ts: i64,
    trim: TrimRec,
    log_seq: u64,
    records_charge: u64,
    index_charge: u64,
}

impl Decided {
    fn written(&self, timing: CommitTiming) -> TopicWritten {
        let last_seq = self.first_seq + self.n - 1;
        TopicWritten {
            first_seq: self.first_seq,
            last_seq,
            head_seq: last_seq,
            count: self.n,
            created: false,
            deduped: false,
            timing,
        }
    }
}

/// What a decision needs of the topic, copied under the state lock.
pub(crate) struct View {
    pub config: TopicConfig,
    pub head: u64,
    pub trim: TrimRec,
    pub tail: u64,
    pub live_count: u64,
    pub live_bytes: u64,
    pub log_seq: u64,
    pub last_ts: i64,
}

/// The error a topic operation on a log without topic state answers (a stream by that key).
fn not_a_topic() -> EngineError {
    EngineError::NotFound
}

impl Log {
    /// Give a freshly made log its topic state.
    pub fn init_topic(&self, config: TopicConfig) {
        let mut st = self.state.lock();
        let start = st.w.tail;
        st.topic = Some(Box::new(TopicState::new(config, start)));
    }

    /// Number of changes committed to this log (every topic write, delete, trim and
    /// configuration change counts one): a read's result depends only on it (and the clock).
    pub fn change_count(&self) -> u64 {
        let st = self.state.lock();
        st.w.log_seq + st.topic.as_deref().map_or(0, |t| t.copy_changes)
    }

    /// The topic's `ttl_ms` (0: no TTL, or not a topic).
    pub fn topic_ttl_ms(&self) -> u64 {
        self.state
            .lock()
            .topic
            .as_deref()
            .map_or(0, |t| t.config.ttl_ms)
    }

    pub fn is_topic(&self) -> bool {
        self.config.framing == Framing::TopicRecords
    }

    /// Run `f` on the topic state under the state lock.
    pub(super) fn with_topic<R>(&self, f: impl FnOnce(&mut LogState) -> R) -> Result<R> {
        let mut st = self.state.lock();
        if st.removed || st.creating {
            return Err(EngineError::NotFound);
        }
        if st.topic.is_none() {
            return Err(not_a_topic());
        }
        Ok(f(&mut st))
    }

    /// The topic's durability class now (it can change in place).
    pub(crate) fn topic_class(&self) -> Option<crate::durability::Durability> {
        let st = self.state.lock();
        st.topic.as_deref().map(|t| t.config.durability)
    }

    pub(crate) fn view(&self) -> Result<View> {
        self.with_topic(|st| {
            let tail = st.w.tail;
            let log_seq = st.w.log_seq;
            let t = st.topic.as_deref().expect("checked by with_topic");
            View {
                config: t.config.clone(),
                head: t.head,
                trim: t.trim,
                tail,
                live_count: t.live_count(),
                live_bytes: t.live_bytes(tail),
                log_seq,
                last_ts: t.last_ts,
            }
        })
    }

    /// End positions of records `first..first + n` (record numbers, 0-based).
    pub(super) fn record_ends(&self, first: u64, n: u64) -> Result<Vec<u64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (in_files, pending) = {
            let st = self.state.lock();
            let Some(_) = &self.files else {
                let out: Option<Vec<u64>> = (first..first + n)
                    .map(|i| st.mem.end_of(i as usize))
                    .collect();
                return out.ok_or_else(|| storage_error("record index out of range", false));
            };
            let file_records = st.w.records - st.pending.ends.len() as u64;
            let lo = first.max(file_records);
            let pending: Vec<u64> = if first + n > file_records {
                let a = (lo - file_records) as usize;
                let b = ((first + n - file_records) as usize).min(st.pending.ends.len());
                st.pending.ends[a..b].to_vec()
            } else {
                Vec::new()
            };
            (file_records.min(first + n).saturating_sub(first), pending)
        };
        let mut out = match (&self.files, in_files) {
            (Some(files), k) if k > 0 => files.ends(first, k).map_err(io_error)?,
            _ => Vec::new(),
        };
        out.extend(pending);
        if out.len() as u64 != n {
            return Err(storage_error("record index out of range", false));
        }
        Ok(out)
    }

    /// Start position of live record `seq` (`head + 1`: the tail). The first live record's is
    /// kept: the record before it may never have been stored (an `ephemeral` stretch lost in a
    /// restart leaves holes in the index).
    pub(super) fn seq_pos(&self, seq: u64, v: &View) -> Result<u64> {
        if seq > v.head {
            return Ok(v.tail);
        }
        if seq <= v.trim.earliest {
            return Ok(v.trim.earliest_pos);
        }
        Ok(self.record_ends(seq - 2, 1)?[0])
    }

    /// `$ts` of live record `seq`.
    pub(super) fn seq_ts(&self, seq: u64, v: &View) -> Result<i64> {
        let pos = self.seq_pos(seq, v)?;
        let mut out: Vec<Bytes> = Vec::new();
        let mut budget = record::HEADER;
        self.collect_own(pos, pos + record::HEADER as u64, &mut budget, &mut out)?;
        let head_bytes: Vec<u8> = out.concat();
        if head_bytes.len() < 12 {
            return Err(storage_error("short topic record header", false));
        }
        Ok(i64::from_le_bytes(
            head_bytes[4..12].try_into().unwrap_or([0; 8]),
        ))
    }

    /// The first seq in `[from, head]` not expired at `now` (`head + 1` if all are). Timestamps
    /// never decrease within a topic, so this is a binary search.
    pub(super) fn ttl_cut(&self, v: &View, from: u64, now: i64) -> Result<u64> {
        let ttl = i64::try_from(v.config.ttl_ms).unwrap_or(i64::MAX);
        if ttl == 0 || from > v.head {
            return Ok(from);
        }
        let expired = |seq| -> Result<bool> { Ok(now.saturating_sub(self.seq_ts(seq, v)?) > ttl) };
        // Usually nothing has expired: one probe of the first record says so.
        if !expired(from)? {
            return Ok(from);
        }
        first_not(from + 1, v.head + 1, expired)
    }

    /// First live seq at or after `seq`, per the current deletes.
    pub(super) fn live_from(&self, seq: u64) -> u64 {
        let st = self.state.lock();
        st.topic.as_deref().map_or(seq, |t| t.live_from(seq))
    }

    /// Trim to first live record `e` (normalized past deletes) with the floors given.
    pub(super) fn trim_to(
        &self,
        v: &View,
        e: u64,
        cap_floor: u64,
        ttl_floor: u64,
    ) -> Result<TrimRec> {
        let e = self.live_from(e.max(v.trim.earliest)).max(e);
        Ok(TrimRec {
            earliest: e,
            earliest_pos: self.seq_pos(e, v)?,
            cap_floor,
            ttl_floor,
        })
    }

    /// Write records: all or none, contiguous seqs, one WAL record (with the idempotency key
    /// and whatever the write evicts).
    pub async fn topic_write(
        self: &Arc<Self>,
        records: &[NewRecord],
        idem: Option<String>,
        clock: &dyn Clock,
        persist: Option<&Arc<Persist>>,
    ) -> Result<TopicWritten> {
        let n = records.len() as u64;
        if n == 0 {
            return Err(EngineError::EmptyAppend);
        }
        let now = clock.now_ms();
        let mut buf = Vec::new();
        for r in records {
            record::encode(r, now, &mut buf).map_err(|_| EngineError::RecordTooLarge)?;
        }
        let rel_ends = record::ends(&buf).ok_or(EngineError::RecordTooLarge)?;
        let mut w = Prepared {
            buf,
            rel_ends,
            idem,
            now,
            tags: records.iter().map(|r| r.tag.clone()).collect(),
        };
        // The append lock is held throughout, also while seqs are reserved: writes to a topic
        // apply in the order they took it.
        let mut serial = self.lock_logged(persist).await?;
        loop {
            let v = self.view()?;
            let head = v.head;
            match self.write_locked(serial, v, w, persist).await? {
                Ok(written) => return Ok(written),
                // An `ephemeral` write past the seqs reserved (none yet, or a checkpoint took
                // them back): reserve more, then decide again.
                Err((back, guard)) => {
                    (w, serial) = (back, guard);
                    if let Some(p) = persist {
                        self.reserve_seqs(p, head + n + RESERVE_SEQS, now).await?;
                    }
                }
            }
        }
    }

    /// Log that seqs up to `upto` of an `ephemeral` topic may be handed out, and wait until
    /// that is written (so a `kill -9` never hands out again seqs a reader may have seen).
    /// The record changes nothing but `reserved` (it has no `log_seq`), so it may still be
    /// in flight when the caller is dropped and the next change of the topic starts.
    pub(super) async fn reserve_seqs(
        self: &Arc<Self>,
        persist: &Arc<Persist>,
        upto: u64,
        ts: i64,
    ) -> Result<()> {
        let bytes = WalEntry::TopicReserve {
            log_id: self.config.id,
            upto,
            ts,
        }
        .encode(&[]);
        let (tx, rx) = oneshot::channel();
        let log = self.clone();
        persist.submit(
            self.config.id,
            bytes,
            Commit::Write,
            Box::new(move |r| {
                if r.is_ok()
                    && let Some(t) = log.state.lock().topic.as_deref_mut()
                {
                    t.reserved = t.reserved.max(upto);
                }
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(wal_error(e)),
            Err(_) => Err(storage_error("the WAL shut down", false)),
        }
    }

    /// The write, under the append lock, as of view `v`. `Err` gives the write and the lock
    /// back when an `ephemeral` topic's seqs are no longer reserved at the moment it applies.
    async fn write_locked(
        self: &Arc<Self>,
        serial: OwnedMutexGuard<()>,
        v: View,
        mut w: Prepared,
        persist: Option<&Arc<Persist>>,
    ) -> Result<std::result::Result<TopicWritten, (Prepared, OwnedMutexGuard<()>)>> {
        let n = w.rel_ends.len() as u64;
        if let Some(key) = &w.idem {
            let hit = self.with_topic(|st| {
                let t = st.topic.as_deref().expect("checked by with_topic");
                t.idem.get(key, w.now, t.config.idempotency_window_ms)
            })?;
            if let Some((first, last)) = hit {
                return Ok(Ok(TopicWritten {
                    first_seq: first,
                    last_seq: last,
                    head_seq: v.head,
                    count: last + 1 - first,
                    created: false,
                    deduped: true,
                    timing: CommitTiming::default(),
                }));
            }
        }
        let ts = w.now.max(v.last_ts);
        if ts != w.now {
            record::set_ts(&mut w.buf, ts);
        }
        let trim = self.plan_write_trim(&v, &w.rel_ends, ts)?;
        self.check_retained(w.buf.len() as u64)?;
        let records_charge = if self.files.is_none() {
            w.buf.len() as u64 + n * RECORD_OVERHEAD
        } else {
            0
        };
        // What the tag index and idempotency window will hold for this write (an estimate:
        // a tag already indexed costs less); settled against the real growth when applied.
        let index_charge: u64 = w
            .tags
            .iter()
            .flatten()
            .map(|t| t.len() as u64 + TAG_KEY_COST + TAG_ENTRY_COST)
            .sum::<u64>()
            + w.idem.as_deref().map_or(0, IdemWindow::cost);
        let d = Decided {
            start: v.tail,
            first_seq: v.head + 1,
            n,
            ts,
            trim,
            log_seq: v.log_seq + 1,
            records_charge,
            index_charge,
        };
        let charge = records_charge + index_charge;
        self.reserve_memory(charge)?;
        let class = v.config.durability;
        let record = match persist {
            Some(p) if class.is_persistent() => {
                let bytes = WalEntry::TopicAppend {
                    log_id: self.config.id,
                    log_seq: d.log_seq,
                    start: d.start,
                    first_seq: d.first_seq,
                    count: n,
                    ts,
                    idem: w.idem.clone(),
                    trim,
                }
                .encode(&w.buf);
                let commit = commit_for(class);
                Some(WalRecord {
                    persist: p,
                    bytes,
                    commit,
                })
            }
            // An `ephemeral` topic's records never enter the WAL: its seqs are reserved.
            Some(_) if self.files.is_some() => {
                let mut st = self.state.lock();
                let reserved = st.topic.as_deref().map_or(0, |t| t.reserved);
                if reserved < d.first_seq + n - 1 {
                    drop(st);
                    self.budget.used.fetch_sub(charge, Ordering::Relaxed);
                    return Ok(Err((w, serial)));
                }
                self.apply_topic_write(&mut st, w, d);
                drop(st);
                self.wake();
                drop(serial);
                return Ok(Ok(d.written(CommitTiming::default())));
            }
            _ => None,
        };
        let ((), timing) = self
            .commit(serial, record, charge, move |log, st| {
                log.apply_topic_write(st, w, d)
            })
            .await?;
        Ok(Ok(d.written(timing)))
    }

    /// Apply a decided write.
    fn apply_topic_write(&self, st: &mut LogState, w: Prepared, d: Decided) {
        assert_eq!(d.start, st.w.tail, "topic writes apply in order");
        let t = st.topic.as_deref_mut().expect("a topic stays a topic");
        let before = t.ram();
        // Keys past the window go as new ones come: memory is bounded by the window.
        t.idem.expire(d.ts, t.config.idempotency_window_ms);
        for (i, tag) in w.tags.iter().enumerate() {
            if let Some(tag) = tag {
                t.tags.insert(tag, d.first_seq + i as u64);
                t.tagged += 1;
            }
        }
        t.apply_write(d.n, d.ts, w.idem, d.trim);
        let grown = t.ram() as i64 - before as i64;
        self.push_records(st, &w.buf, &w.rel_ends);
        st.own_bytes += d.records_charge;
        st.w.log_seq = d.log_seq;
        self.settle_index_ram(st, grown, d.index_charge);
        self.release_mem(st);
    }

    /// Decide what a write of records ending at `rel_ends` (relative to the tail) evicts: TTL
    /// first, then the caps. A `discard: reject` topic refuses instead.
    pub(super) fn plan_write_trim(&self, v: &View, rel_ends: &[u64], now: i64) -> Result<TrimRec> {
        let n = rel_ends.len() as u64;
        let added = rel_ends.last().copied().unwrap_or(0);
        let new_head = v.head + n;
        let new_tail = v.tail + added;
        let mut trim = v.trim;
        // TTL: expired records go first (they also make room under the caps).
        let cut = self.ttl_cut(v, v.trim.earliest, now)?;
        let (mut count, mut bytes) = (v.live_count + n, v.live_bytes + added);
        if cut > v.trim.earliest {
            trim = self.trim_to(v, cut, trim.cap_floor, trim.ttl_floor.max(cut))?;
            let (c, b) = self.live_after(v, trim.earliest, trim.earliest_pos);
            count = c + n;
            bytes = b + added;
        }
        let (cap_r, cap_b) = (v.config.cap_records, v.config.cap_bytes);
        let over_records = cap_r > 0 && count > cap_r;
        let over_bytes = cap_b > 0 && bytes > cap_b;
        if !over_records && !over_bytes {
            return Ok(trim);
        }
        if v.config.discard == Discard::Reject {
            return Err(EngineError::TopicFull);
        }
        // Position of seq `s` with the new records in place.
        let pos = |s: u64| -> Result<u64> {
            if s <= v.head {
                self.seq_pos(s, v)
            } else if s == v.head + 1 {
                Ok(v.tail)
            } else if s > new_head {
                Ok(new_tail)
            } else {
                Ok(v.tail + rel_ends[(s - v.head - 2) as usize])
            }
        };
        let mut e = trim.earliest;
        if over_records {
            e = self.skip_live(e, count - cap_r, new_head);
        }
        if cap_b > 0 {
            // Live bytes from `s` on: everything from its position, minus deleted ranges there.
            // A seq inside a deleted range has the live bytes of the range's end: evaluated
            // there, every deleted range counts whole, so the sum is exact.
            let live_from = |s: u64| -> Result<u64> {
                let s = if s <= v.head { self.live_from(s) } else { s };
                let deleted = self.deleted_bytes_from(s);
                Ok((new_tail - pos(s)?).saturating_sub(deleted))
            };
            e = first_not(e, new_head + 1, |s| Ok(live_from(s)? > cap_b))?;
        }
        let e = if e <= v.head { self.live_from(e) } else { e };
        Ok(TrimRec {
            earliest: e,
            earliest_pos: pos(e)?,
            cap_floor: trim.cap_floor.max(e),
            ttl_floor: trim.ttl_floor,
        })
    }

    /// The seq after skipping `k` live records from `from` (deleted ones do not count).
    pub(super) fn skip_live(&self, from: u64, mut k: u64, new_head: u64) -> u64 {
        let st = self.state.lock();
        let Some(t) = st.topic.as_deref() else {
            return from + k;
        };
        let mut s = t.live_from(from);
        loop {
            let run_end = t
                .deleted
                .next_start(s)
                .unwrap_or(u64::MAX)
                .min(new_head + 1);
            if run_end - s >= k {
                return s + k;
            }
            k -= run_end - s;
            s = t.live_from(run_end);
            if s > new_head {
                return s;
            }
        }
    }

    pub(super) fn deleted_bytes_from(&self, s: u64) -> u64 {
        let st = self.state.lock();
        st.topic.as_deref().map_or(0, |t| t.deleted.bytes_from(s))
    }

    /// Live records and bytes if the topic started at `earliest` (at `pos`).
    pub(super) fn live_after(&self, v: &View, earliest: u64, pos: u64) -> (u64, u64) {
        let st = self.state.lock();
        let Some(t) = st.topic.as_deref() else {
            return (0, 0);
        };
        let deleted = t.deleted.count_in(earliest, v.head + 1);
        let count = (v.head + 1)
            .saturating_sub(earliest)
            .saturating_sub(deleted);
        let bytes = (v.tail - pos).saturating_sub(t.deleted.bytes_from(earliest));
        (count, bytes)
    }

    /// Account the topic's index RAM after a change that grew it by `grown` (negative: shrank),
    /// `reserved` of which was reserved beforehand.
    pub(super) fn settle_index_ram(&self, st: &mut LogState, grown: i64, reserved: u64) {
        st.own_bytes = st.own_bytes.saturating_add_signed(grown);
        let extra = grown - reserved as i64;
        if extra >= 0 {
            self.budget.used.fetch_add(extra as u64, Ordering::Relaxed);
        } else {
            self.budget
                .used
                .fetch_sub(extra.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// A RAM-backed topic gives back the memory of records its head trim removed.
    pub(super) fn release_mem(&self, st: &mut LogState) {
        if self.files.is_some() {
            return;
        }
        let Some(pos) = st.topic.as_deref().map(|t| t.trim.earliest_pos) else {
            return;
        };
        let freed = st.mem.drop_front(pos);
        if freed > 0 {
            st.own_bytes = st.own_bytes.saturating_sub(freed);
            self.budget.used.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Store records (their stored form and ends relative to the tail) as the log's next
    /// records, one index entry each.
    pub(super) fn push_records(&self, st: &mut LogState, buf: &[u8], rel_ends: &[u64]) {
        let tail = st.w.tail;
        if self.files.is_some() {
            self.queue_flush(st);
            st.pending.data.extend_from_slice(buf);
            st.pending.ends.extend(rel_ends.iter().map(|e| tail + e));
            st.w.records += rel_ends.len() as u64;
            if st.pending.data.len() >= PENDING_FLUSH_BYTES
                && let Err(e) = self.flush_locked(st)
            {
                tracing::warn!(log = self.config.id, error = %e, "writing a topic file failed");
            }
        } else {
            let mut at = 0usize;
            for &end in rel_ends {
                st.mem.push(&buf[at..end as usize]);
                at = end as usize;
            }
            st.w.records += rel_ends.len() as u64;
        }
        st.w.tail = tail + buf.len() as u64;
    }
}

/// The first seq in `[lo, hi)` for which `holds` is false (`hi` if it holds for all), where
/// `holds` is true on a prefix of the range: a binary search whose probes may read the files.
fn first_not(lo: u64, hi: u64, mut holds: impl FnMut(u64) -> Result<bool>) -> Result<u64> {
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if holds(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
