//! A topic's bookkeeping over its log: head, the trimmed head (first live record and the two
//! eviction floors), sparse deletes, the idempotency window and the tag index.
//!
//! The same [`TopicState`] is driven live (by `Log`'s topic operations) and by WAL replay. The
//! live side decides every change (which records a cap evicts, which a delete removes, where
//! the first live record starts) and writes the outcome into the WAL record; the `apply_*`
//! functions here only apply outcomes, so replay never re-decides anything and arrives at the
//! same state whatever the clock or the files say.
//!
//! Invariants:
//! - `cap_floor, ttl_floor <= earliest <= head + 1` (the dual watermark: floors move only on
//!   involuntary loss, `earliest` on every removal).
//! - every deleted range lies inside `[earliest, head]`, ranges are disjoint and not adjacent,
//!   and `earliest` is never inside one (it is the first *live* record).
//! - live records = `head + 1 - earliest - deleted.count`; live bytes = `tail - earliest_pos -
//!   deleted.bytes`.

use super::TopicConfig;
use super::queue::QueueState;
use super::router::Feed;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Where the live part of a topic starts: the outcome of a trim, carried in WAL records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct TrimRec {
    /// First live seq (`head + 1` when empty).
    pub earliest: u64,
    /// Log position where record `earliest` starts (the tail when empty).
    pub earliest_pos: u64,
    /// Records below these were evicted by a cap / by TTL.
    pub cap_floor: u64,
    pub ttl_floor: u64,
}

/// A deleted range of seqs `[start, end)` and the stored bytes of its records.
pub(crate) type RangeRec = (u64, u64, u64);

/// An idempotency key's outcome: `(key, first seq, last seq, $ts of the write)`.
pub(crate) type IdemRec = (String, u64, u64, i64);

/// A topic's state as checkpointed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicRec {
    pub config: TopicConfig,
    pub head: u64,
    pub trim: TrimRec,
    pub deleted: Vec<RangeRec>,
    pub idem: Vec<IdemRec>,
    pub last_ts: i64,
    pub last_write_ts: Option<i64>,
    /// Tagged records ever written: zero means no tag index to rebuild at restart.
    pub tagged: u64,
}

/// Sparse deletes: disjoint, non-adjacent seq ranges with their bytes.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeletedSet {
    ranges: BTreeMap<u64, (u64, u64)>,
    pub count: u64,
    pub bytes: u64,
}

impl DeletedSet {
    /// Add `[start, end)` of `bytes` (not overlapping anything already deleted).
    pub fn insert(&mut self, start: u64, end: u64, bytes: u64) {
        if start >= end {
            return;
        }
        self.count += end - start;
        self.bytes += bytes;
        let (mut s, mut e, mut b) = (start, end, bytes);
        if let Some((&ps, &(pe, pb))) = self.ranges.range(..s).next_back()
            && pe == s
        {
            self.ranges.remove(&ps);
            s = ps;
            b += pb;
        }
        if let Some(&(ne, nb)) = self.ranges.get(&e) {
            self.ranges.remove(&e);
            e = ne;
            b += nb;
        }
        self.ranges.insert(s, (e, b));
    }

    /// Whether `seq` is deleted; if so, the end of its range.
    pub fn range_end(&self, seq: u64) -> Option<u64> {
        let (_, &(end, _)) = self.ranges.range(..=seq).next_back()?;
        (seq < end).then_some(end)
    }

    /// The first range starting at or after `seq`.
    pub fn next_start(&self, seq: u64) -> Option<u64> {
        self.ranges.range(seq..).next().map(|(&s, _)| s)
    }

    /// Bytes of the deleted records at or after `seq` (a range that `seq` falls inside counts
    /// in proportion).
    pub fn bytes_from(&self, seq: u64) -> u64 {
        let mut b: u64 = self.ranges.range(seq..).map(|(_, &(_, b))| b).sum();
        if let Some((&s, &(e, rb))) = self.ranges.range(..seq).next_back()
            && seq < e
        {
            b += rb * (e - seq) / (e - s);
        }
        b
    }

    /// Take out what lies in `[from, to)` (ranges cut at the edges keep a proportional share
    /// of their bytes).
    fn remove_within(&mut self, from: u64, to: u64) {
        let overlapping: Vec<(u64, u64, u64)> = self
            .ranges
            .range(..to)
            .filter(|(_, (e, _))| *e > from)
            .map(|(&s, &(e, b))| (s, e, b))
            .collect();
        for (s, e, b) in overlapping {
            self.ranges.remove(&s);
            self.count -= e - s;
            self.bytes -= b;
            if s < from {
                self.insert(s, from, b * (from - s) / (e - s));
            }
            if e > to {
                self.insert(to, e, b * (e - to) / (e - s));
            }
        }
    }

    /// Forget ranges below `seq` (they are no longer live-relevant).
    fn drop_below(&mut self, seq: u64) {
        while let Some((&s, &(e, b))) = self.ranges.first_key_value() {
            if s >= seq {
                break;
            }
            debug_assert!(e <= seq, "earliest is never inside a deleted range");
            self.ranges.remove(&s);
            self.count -= e - s;
            self.bytes -= b;
        }
    }

    fn to_vec(&self) -> Vec<RangeRec> {
        self.ranges.iter().map(|(&s, &(e, b))| (s, e, b)).collect()
    }

    /// Ranges in `[from, to)`: `(start, end)` clipped.
    pub fn count_in(&self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        let mut n = 0;
        if let Some(end) = self.range_end(from) {
            n += end.min(to) - from;
        }
        for (&s, &(e, _)) in self.ranges.range(from.saturating_add(1)..to) {
            n += e.min(to) - s;
        }
        n
    }
}

/// Idempotency keys within the topic's window, oldest first.
#[derive(Debug, Default)]
pub(crate) struct IdemWindow {
    map: HashMap<String, (u64, u64, i64)>,
    order: VecDeque<(i64, String)>,
    /// RAM held, as charged to the memory budget (see [`IdemWindow::cost`]).
    ram: u64,
}

impl IdemWindow {
    pub fn get(&self, key: &str, now: i64, window_ms: u64) -> Option<(u64, u64)> {
        let &(first, last, ts) = self.map.get(key)?;
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        (now.saturating_sub(ts) < window).then_some((first, last))
    }

    /// RAM one key costs: two copies (map and queue) and their entries.
    pub fn cost(key: &str) -> u64 {
        2 * key.len() as u64 + 96
    }

    pub fn insert(&mut self, key: String, first: u64, last: u64, ts: i64) {
        self.ram += Self::cost(&key);
        self.map.insert(key.clone(), (first, last, ts));
        self.order.push_back((ts, key));
    }

    /// Forget keys older than the window (O(1) amortized per key).
    pub fn expire(&mut self, now: i64, window_ms: u64) {
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        while let Some((ts, _)) = self.order.front() {
            if now.saturating_sub(*ts) < window {
                break;
            }
            if let Some((ts, key)) = self.order.pop_front() {
                self.ram = self.ram.saturating_sub(Self::cost(&key));
                if self.map.get(&key).is_some_and(|e| e.2 == ts) {
                    self.map.remove(&key);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn to_vec(&self) -> Vec<IdemRec> {
        self.order
            .iter()
            .filter_map(|(ts, k)| {
                let &(f, l, t) = self.map.get(k)?;
                (t == *ts).then(|| (k.clone(), f, l, t))
            })
            .collect()
    }
}

/// Tag → seqs of live tagged records, for deletes by tag without a scan.
#[derive(Debug, Default)]
pub(crate) struct TagIndex {
    map: BTreeMap<Arc<str>, VecDeque<u64>>,
    /// Every indexed record in seq order, so trimming the head forgets its tags.
    order: VecDeque<(u64, Arc<str>)>,
    /// RAM held, as charged to the memory budget.
    ram: u64,
}

/// RAM of one indexed record (its queue and list entries), and of one distinct tag beyond its
/// bytes (map node, `Arc` header).
pub(crate) const TAG_ENTRY_COST: u64 = 32;
pub(crate) const TAG_KEY_COST: u64 = 64;

impl TagIndex {
    pub fn insert(&mut self, tag: &str, seq: u64) {
        let key: Arc<str> = match self.map.get_key_value(tag) {
            Some((k, _)) => k.clone(),
            None => {
                self.ram += tag.len() as u64 + TAG_KEY_COST;
                tag.into()
            }
        };
        self.ram += TAG_ENTRY_COST;
        self.map.entry(key.clone()).or_default().push_back(seq);
        self.order.push_back((seq, key));
    }

    /// Forget records below `seq`.
    pub fn trim(&mut self, seq: u64) {
        while let Some((s, _)) = self.order.front() {
            if *s >= seq {
                break;
            }
            let Some((s, tag)) = self.order.pop_front() else {
                break;
            };
            self.ram = self.ram.saturating_sub(TAG_ENTRY_COST);
            if let Some(seqs) = self.map.get_mut(&tag) {
                while seqs.front().is_some_and(|&x| x <= s) {
                    seqs.pop_front();
                }
                if seqs.is_empty() {
                    self.map.remove(&tag);
                    self.ram = self.ram.saturating_sub(tag.len() as u64 + TAG_KEY_COST);
                }
            }
        }
    }

    /// Seqs in `[from, to]` whose tag matches, ascending.
    pub fn matching(&self, m: &super::TagMatch, from: u64, to: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut take = |seqs: &VecDeque<u64>| {
            out.extend(seqs.iter().copied().filter(|s| (from..=to).contains(s)));
        };
        match m {
            super::TagMatch::Eq(t) => {
                if let Some(seqs) = self.map.get(t.as_str()) {
                    take(seqs);
                }
            }
            super::TagMatch::Prefix(p) => {
                for (k, seqs) in self.map.range::<str, _>((
                    std::ops::Bound::Included(p.as_str()),
                    std::ops::Bound::Unbounded,
                )) {
                    if !k.starts_with(p.as_str()) {
                        break;
                    }
                    take(seqs);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Forget deleted seqs (sorted) of a tag index entry.
    pub fn remove(&mut self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let lo = seqs[0];
        let hi = seqs[seqs.len() - 1];
        let mut freed = 0;
        self.map.retain(|k, v| {
            if v.front().is_some_and(|&f| f <= hi) && v.back().is_some_and(|&b| b >= lo) {
                v.retain(|s| seqs.binary_search(s).is_err());
            }
            if v.is_empty() {
                freed += k.len() as u64 + TAG_KEY_COST;
            }
            !v.is_empty()
        });
        // The queue entries of deleted records go when the head passes them.
        self.ram = self.ram.saturating_sub(freed);
    }
}

/// A topic's live state.
#[derive(Debug)]
pub(crate) struct TopicState {
    pub config: TopicConfig,
    pub head: u64,
    pub trim: TrimRec,
    pub deleted: DeletedSet,
    pub idem: IdemWindow,
    pub tags: TagIndex,
    pub last_ts: i64,
    pub last_write_ts: Option<i64>,
    pub last_read_ts: Option<i64>,
    pub tagged: u64,
    /// Seqs up to here are reserved in the WAL (an `ephemeral` topic's writes need that; a
    /// checkpoint, which records the exact head, sets it back to the head).
    pub reserved: u64,
    /// The router feeding this topic, if any.
    pub feed: Option<Feed>,
    /// A queue topic's leases and delivery counts.
    pub queue: Option<Box<QueueState>>,
    /// Changes made by a router's copies (which have no `log_seq`), for readers that cache
    /// by the number of changes.
    pub copy_changes: u64,
    /// A router's copies (and cursor moves) not in the WAL yet: from this seq and position.
    /// Logged before any logged change of the topic, or made durable by a checkpoint.
    pub unlogged: Option<(u64, u64)>,
    /// Seq ranges `[from, to)` among the unlogged copies that stand for records the source
    /// evicted before they were forwarded (empty records).
    pub unlogged_lost: Vec<(u64, u64)>,
    /// Recent ranges of such records, for the tombstone that tells readers (kept by
    /// checkpoints and `TopicCopies` records). Bounded.
    pub source_trims: std::collections::BTreeMap<u64, u64>,
}

/// Ranges of source-trimmed records remembered for tombstones.
const SOURCE_TRIMS_KEPT: usize = 64;

impl TopicState {
    /// A new, empty topic whose log starts at position `start`.
    pub fn new(config: TopicConfig, start: u64) -> Self {
        let queue = (config.kind == super::TopicKind::Queue).then(Box::default);
        Self {
            config,
            head: 0,
            trim: TrimRec {
                earliest: 1,
                earliest_pos: start,
                cap_floor: 0,
                ttl_floor: 0,
            },
            deleted: DeletedSet::default(),
            idem: IdemWindow::default(),
            tags: TagIndex::default(),
            last_ts: 0,
            last_write_ts: None,
            last_read_ts: None,
            tagged: 0,
            reserved: 0,
            queue,
            feed: None,
            copy_changes: 0,
            unlogged: None,
            unlogged_lost: Vec::new(),
            source_trims: Default::default(),
        }
    }

    pub fn from_rec(rec: TopicRec) -> Self {
        let mut st = Self::new(rec.config, rec.trim.earliest_pos);
        st.head = rec.head;
        st.trim = rec.trim;
        for (s, e, b) in rec.deleted {
            st.deleted.insert(s, e, b);
        }
        for (k, f, l, t) in rec.idem {
            st.idem.insert(k, f, l, t);
        }
        st.last_ts = rec.last_ts;
        st.last_write_ts = rec.last_write_ts;
        st.tagged = rec.tagged;
        st.reserved = rec.head;
        st
    }

    pub fn to_rec(&self) -> TopicRec {
        TopicRec {
            config: self.config.clone(),
            head: self.head,
            trim: self.trim,
            deleted: self.deleted.to_vec(),
            idem: self.idem.to_vec(),
            last_ts: self.last_ts,
            last_write_ts: self.last_write_ts,
            tagged: self.tagged,
        }
    }

    /// RAM the topic's indexes hold for clients (tags, idempotency keys), charged to the
    /// server's memory budget.
    pub fn ram(&self) -> u64 {
        self.tags.ram + self.idem.ram
    }

    /// The first live seq at or after `seq` (skipping deleted ranges), at most `head + 1`.
    pub fn live_from(&self, seq: u64) -> u64 {
        let mut s = seq.max(self.trim.earliest);
        while let Some(end) = self.deleted.range_end(s) {
            s = end;
        }
        s.min(self.head + 1)
    }

    pub fn live_count(&self) -> u64 {
        (self.head + 1)
            .saturating_sub(self.trim.earliest)
            .saturating_sub(self.deleted.count)
    }

    pub fn live_bytes(&self, tail: u64) -> u64 {
        tail.saturating_sub(self.trim.earliest_pos)
            .saturating_sub(self.deleted.bytes)
    }

    /// Move the head's trim to `t` (never backwards).
    pub fn apply_trim(&mut self, t: TrimRec) {
        if t.earliest > self.trim.earliest {
            if let Some(q) = self.queue.as_deref_mut() {
                q.forget(self.trim.earliest, t.earliest);
            }
            self.trim.earliest = t.earliest;
            self.trim.earliest_pos = t.earliest_pos;
        }
        self.trim.cap_floor = self.trim.cap_floor.max(t.cap_floor);
        self.trim.ttl_floor = self.trim.ttl_floor.max(t.ttl_floor);
        self.deleted.drop_below(self.trim.earliest);
        self.tags.trim(self.trim.earliest);
    }

    /// A committed write of `n` records at `$ts` `ts`.
    pub fn apply_write(&mut self, n: u64, ts: i64, idem: Option<String>, trim: TrimRec) {
        let first = self.head + 1;
        self.head += n;
        self.last_ts = self.last_ts.max(ts);
        self.last_write_ts = Some(ts);
        if let Some(k) = idem {
            self.idem.insert(k, first, self.head, ts);
        }
        self.apply_trim(trim);
    }

    /// Remember `[from, to)` as records a router's source evicted before forwarding them.
    /// How many of the seqs `[from, to)` are in remembered source-trimmed ranges (a range
    /// may begin before `from`: a cursor can stand inside one).
    pub fn source_trimmed(&self, from: u64, to: u64) -> u64 {
        let before = self.source_trims.range(..from).next_back();
        before
            .into_iter()
            .chain(self.source_trims.range(from..to))
            .map(|(&a, &b)| b.min(to).saturating_sub(a.max(from)))
            .sum()
    }

    pub fn note_source_trim(&mut self, from: u64, to: u64) {
        self.source_trims.insert(from, to);
        while self.source_trims.len() > SOURCE_TRIMS_KEPT {
            self.source_trims.pop_first();
        }
    }

    /// Records `[from, to)` were never stored (an `ephemeral` stretch lost in a restart), `bytes`
    /// long, record `to` starting at `pos_after`: they are skipped like deleted records (their
    /// seqs are not handed out again), and the first live record moves past them if they were
    /// at the front.
    pub fn lose(&mut self, from: u64, to: u64, bytes: u64, pos_after: u64) {
        if from >= to {
            return;
        }
        if self.trim.earliest >= from {
            // At the front: an involuntary loss like an eviction, so readers that had not read
            // them get a tombstone. (Behind live records they can only be skipped.)
            if self.trim.earliest <= to {
                self.trim.earliest = to;
                self.trim.earliest_pos = pos_after;
                self.trim.cap_floor = self.trim.cap_floor.max(to);
            }
            self.deleted.drop_below(self.trim.earliest);
            self.tags.trim(self.trim.earliest);
            return;
        }
        self.deleted.remove_within(from, to);
        self.deleted.insert(from, to, bytes);
    }

    /// A committed delete of `ranges` (each inside the live part, not yet deleted).
    pub fn apply_delete(&mut self, ranges: &[RangeRec], trim: TrimRec) {
        for &(s, e, b) in ranges {
            if s >= self.trim.earliest {
                self.deleted.insert(s, e, b);
            }
            if let Some(q) = self.queue.as_deref_mut() {
                q.forget(s, e);
            }
        }
        self.apply_trim(trim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_ranges_merge_and_drop() {
        let mut d = DeletedSet::default();
        d.insert(5, 6, 10);
        d.insert(7, 8, 10);
        d.insert(6, 7, 10);
        assert_eq!(d.to_vec(), vec![(5, 8, 30)]);
        assert_eq!(d.range_end(6), Some(8));
        assert_eq!(d.range_end(8), None);
        assert_eq!(d.count_in(4, 7), 2);
        assert_eq!(d.count_in(9, 9), 0, "an empty span (a fully expired topic)");
        d.insert(10, 12, 4);
        d.drop_below(9);
        assert_eq!((d.count, d.bytes), (2, 4));
    }

    #[test]
    fn live_from_skips_deletes_and_trim() {
        let mut t = TopicState::new(TopicConfig::default(), 0);
        t.apply_write(10, 1, None, t.trim);
        t.apply_delete(&[(1, 3, 20)], t.trim);
        assert_eq!(t.live_from(1), 3);
        assert_eq!(t.live_count(), 8);
        t.apply_delete(&[(10, 11, 5)], t.trim);
        assert_eq!(t.live_from(10), 11);
    }

    #[test]
    fn idempotency_window_expires_in_order() {
        let mut w = IdemWindow::default();
        w.insert("a".into(), 1, 2, 100);
        w.insert("b".into(), 3, 3, 200);
        assert_eq!(w.get("a", 150, 100), Some((1, 2)));
        assert_eq!(w.get("a", 200, 100), None);
        w.expire(250, 100);
        assert_eq!(w.len(), 1);
        assert_eq!(w.to_vec(), vec![("b".into(), 3, 3, 200)]);
    }

    #[test]
    fn tag_index_matches_and_trims() {
        let mut t = TagIndex::default();
        t.insert("user-1:a", 1);
        t.insert("user-1:b", 2);
        t.insert("user-2:a", 3);
        t.insert("user-1:a", 4);
        let p = super::super::TagMatch::Prefix("user-1:".into());
        assert_eq!(t.matching(&p, 1, 10), vec![1, 2, 4]);
        assert_eq!(t.matching(&p, 1, 3), vec![1, 2]);
        t.trim(2);
        let e = super::super::TagMatch::Eq("user-1:a".into());
        assert_eq!(t.matching(&e, 0, 10), vec![4]);
        t.remove(&[4]);
        assert!(t.matching(&e, 0, 10).is_empty());
    }
}
