//! The reference model of one topic: its persisted state (what the engine's `TopicState`
//! holds, with the records themselves) and the rules that decide every change, written from
//! the documented semantics:
//!
//! - seqs are contiguous from 1; a write of `n` records takes `head + 1 ..= head + n`;
//! - `earliest` is the first live record (`head + 1` when none); deleted seqs are gone
//!   silently; the eviction floors (cap, TTL) move only on involuntary loss and make readers
//!   below them see a tombstone;
//! - a write first drops expired records (TTL), then, over a cap, evicts the fewest oldest
//!   records that bring the live count and bytes within the caps (new records included), or
//!   is refused whole (`discard: reject`);
//! - an idempotency key within its window answers the original seqs and writes nothing;
//! - reads apply TTL at the read's time without persisting it.
//!
//! Nothing here looks at the engine; `check.rs` compares the two.

use riffle_engine::topic::{DeleteSpec, Discard, GapReason, TagMatch, TopicConfig};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Stored size of a record beyond its parts: `[u32 len][i64 ts][u16][u16][u32]`.
pub const HEADER: u64 = 20;

/// A string as the JSON string literal the engine stores.
pub fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("a str serializes")
}

/// One record as the model knows it.
#[derive(Debug, PartialEq, Eq)]
pub struct MRec {
    /// The attempt (write) that carried it.
    pub w: u64,
    pub data: String,
    pub tag: Option<String>,
    pub node: Option<String>,
    pub meta: Option<String>,
    pub ts: i64,
    /// Written while the topic was `ephemeral` (never in the WAL).
    pub eph: bool,
}

impl MRec {
    pub fn size(&self) -> u64 {
        HEADER
            + self.tag.as_deref().map_or(0, |t| lit(t).len() as u64)
            + self.node.as_deref().map_or(0, |n| lit(n).len() as u64)
            + self.meta.as_deref().map_or(0, |m| m.len() as u64)
            + self.data.len() as u64
    }
}

/// Where the live part starts after a change (the engine's `TrimRec`, without positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    pub earliest: u64,
    pub cap_floor: u64,
    pub ttl_floor: u64,
}

/// What a committed write did.
#[derive(Debug, Clone)]
pub struct WriteEffect {
    pub first: u64,
    pub last: u64,
    pub ts: i64,
    pub key: Option<String>,
    pub recs: Vec<Arc<MRec>>,
    pub trim: Trim,
}

#[derive(Debug, Clone)]
pub enum WriteOutcome {
    Dedup { first: u64, last: u64, head: u64 },
    Full,
    Written(WriteEffect),
}

/// What a delete does, and what it answers.
#[derive(Debug, Clone)]
pub struct DeleteEffect {
    /// Nothing to delete: no WAL record, no change.
    pub noop: bool,
    /// Seqs deleted by the tag match (the head trim is in `trim`).
    pub matched: Vec<u64>,
    pub trim: Trim,
    /// The answer: `(deleted, earliest, head, count, bytes)`.
    pub answer: (u64, u64, u64, u64, u64),
}

/// A topic's state as its WAL records and checkpoints carry it.
#[derive(Debug, Clone)]
pub struct MState {
    pub config: TopicConfig,
    pub head: u64,
    pub earliest: u64,
    pub cap_floor: u64,
    pub ttl_floor: u64,
    /// Live records (expired ones included until a trim removes them).
    pub recs: BTreeMap<u64, Arc<MRec>>,
    /// `$ts` and stored size of every seq in `[earliest, head]`, deleted ones included (TTL
    /// cuts and the byte-cap search look at them).
    pub tss: BTreeMap<u64, (i64, u64)>,
    pub idem: HashMap<String, (u64, u64, i64)>,
    pub last_ts: i64,
}

/// What a reader sees at a moment (TTL applied).
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub earliest: u64,
    pub count: u64,
    pub bytes: u64,
    pub ttl_floor: u64,
}

/// The expected answer of a diff read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpDiff {
    pub seqs: Vec<u64>,
    pub next: u64,
    pub head: u64,
    pub earliest: u64,
    pub tomb: Option<(u64, u64, GapReason)>,
}

impl MState {
    pub fn new(config: TopicConfig) -> Self {
        Self {
            config,
            head: 0,
            earliest: 1,
            cap_floor: 0,
            ttl_floor: 0,
            recs: BTreeMap::new(),
            tss: BTreeMap::new(),
            idem: HashMap::new(),
            last_ts: 0,
        }
    }

    /// Live records and their bytes from `seq` on.
    fn live_after(&self, seq: u64) -> (u64, u64) {
        self.recs
            .range(seq..)
            .fold((0, 0), |(c, b), (_, r)| (c + 1, b + r.size()))
    }

    pub fn count(&self) -> u64 {
        self.recs.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.live_after(0).1
    }

    /// The first live seq at or after `seq`, at most `head + 1`.
    pub fn live_from(&self, seq: u64) -> u64 {
        self.recs
            .range(seq..)
            .next()
            .map_or(self.head + 1, |(&s, _)| s)
    }

    fn expired(&self, ts: i64, now: i64) -> bool {
        let ttl = i64::try_from(self.config.ttl_ms).unwrap_or(i64::MAX);
        ttl > 0 && now.saturating_sub(ts) > ttl
    }

    /// The first seq from `earliest` on (deleted ones included) not expired at `now`.
    pub fn ttl_cut(&self, now: i64) -> u64 {
        if self.config.ttl_ms == 0 || self.earliest > self.head {
            return self.earliest;
        }
        self.tss
            .range(self.earliest..=self.head)
            .find(|(_, (ts, _))| !self.expired(*ts, now))
            .map_or(self.head + 1, |(&s, _)| s)
    }

    pub fn view(&self, now: i64) -> View {
        let cut = self.ttl_cut(now);
        let earliest = self.live_from(cut.max(self.earliest));
        let (count, bytes) = self.live_after(earliest);
        let ttl_floor = if cut > self.earliest {
            self.ttl_floor.max(cut)
        } else {
            self.ttl_floor
        };
        View {
            earliest,
            count,
            bytes,
            ttl_floor,
        }
    }

    /// Move the head trim forward (never back); floors only grow.
    pub fn apply_trim(&mut self, t: Trim) {
        if t.earliest > self.earliest {
            self.earliest = t.earliest;
            self.recs = self.recs.split_off(&t.earliest);
            self.tss = self.tss.split_off(&t.earliest);
        }
        self.cap_floor = self.cap_floor.max(t.cap_floor);
        self.ttl_floor = self.ttl_floor.max(t.ttl_floor);
    }

    /// Records `[from, to)` were never stored (an `ephemeral` stretch lost in a restart), the
    /// engine reading `ts` as their `$ts`: with live records before them they are skipped like
    /// deleted records; at the front (nothing live before them) the first live record moves
    /// past them and the cap floor rises to `to` (readers below get a tombstone).
    pub fn lose(&mut self, from: u64, to: u64, ts: i64) {
        if from >= to {
            return;
        }
        if self.earliest >= from {
            if self.earliest <= to {
                self.apply_trim(Trim {
                    earliest: to,
                    cap_floor: to,
                    ttl_floor: 0,
                });
            }
            return;
        }
        for s in from..to {
            self.recs.remove(&s);
            self.tss.insert(s, (ts, 0));
        }
    }

    fn trim(&self) -> Trim {
        Trim {
            earliest: self.earliest,
            cap_floor: self.cap_floor,
            ttl_floor: self.ttl_floor,
        }
    }

    /// Decide a write of `recs` (their `ts` is set here) with `key` at `now`.
    pub fn plan_write(&self, recs: &[MRec], key: Option<&str>, now: i64) -> WriteOutcome {
        if let Some(k) = key
            && let Some(&(first, last, ts)) = self.idem.get(k)
        {
            let window = i64::try_from(self.config.idempotency_window_ms).unwrap_or(i64::MAX);
            if now.saturating_sub(ts) < window {
                return WriteOutcome::Dedup {
                    first,
                    last,
                    head: self.head,
                };
            }
        }
        let ts = now.max(self.last_ts);
        let n = recs.len() as u64;
        let first = self.head + 1;
        let mut trim = self.trim();
        let cut = self.ttl_cut(ts);
        if cut > self.earliest {
            trim.earliest = self.live_from(cut).max(cut);
            trim.ttl_floor = trim.ttl_floor.max(cut);
        }
        // Old live records from the trim on, then the new ones: (seq, size).
        let mut all: Vec<(u64, u64)> = self
            .recs
            .range(trim.earliest..)
            .map(|(&s, r)| (s, r.size()))
            .collect();
        all.extend(
            recs.iter()
                .enumerate()
                .map(|(i, r)| (first + i as u64, r.size())),
        );
        let count = all.len() as u64;
        let bytes: u64 = all.iter().map(|x| x.1).sum();
        let (cap_r, cap_b) = (self.config.cap_records, self.config.cap_bytes);
        let over_r = cap_r > 0 && count > cap_r;
        let over_b = cap_b > 0 && bytes > cap_b;
        if over_r || over_b {
            if self.config.discard == Discard::Reject {
                return WriteOutcome::Full;
            }
            // The fewest oldest records whose eviction brings both within the caps.
            let mut i = if over_r { (count - cap_r) as usize } else { 0 };
            let mut rest: u64 = all[i..].iter().map(|x| x.1).sum();
            while cap_b > 0 && rest > cap_b {
                rest -= all[i].1;
                i += 1;
            }
            // The first record kept (`first + n`: none of them).
            let e = all.get(i).map_or(first + n, |x| x.0);
            trim.earliest = e;
            trim.cap_floor = trim.cap_floor.max(e);
        }
        let recs = recs
            .iter()
            .map(|r| {
                Arc::new(MRec {
                    w: r.w,
                    data: r.data.clone(),
                    tag: r.tag.clone(),
                    node: r.node.clone(),
                    meta: r.meta.clone(),
                    ts,
                    eph: self.config.durability == riffle_engine::Durability::Ephemeral,
                })
            })
            .collect();
        WriteOutcome::Written(WriteEffect {
            first,
            last: first + n - 1,
            ts,
            key: key.map(str::to_string),
            recs,
            trim,
        })
    }

    /// Apply a committed write (live, or replayed from its WAL record).
    pub fn apply_write(&mut self, w: &WriteEffect) {
        assert_eq!(w.first, self.head + 1, "writes apply in seq order");
        for (i, r) in w.recs.iter().enumerate() {
            let seq = w.first + i as u64;
            self.recs.insert(seq, r.clone());
            self.tss.insert(seq, (w.ts, r.size()));
        }
        self.head = w.last;
        self.last_ts = self.last_ts.max(w.ts);
        if let Some(k) = &w.key {
            self.idem.insert(k.clone(), (w.first, w.last, w.ts));
        }
        self.apply_trim(w.trim);
    }

    /// Decide a delete.
    pub fn plan_delete(&self, spec: &DeleteSpec) -> DeleteEffect {
        let head = self.head;
        let (before, last) = match (spec.before_seq, &spec.tag) {
            (Some(b), None) => (b.min(head + 1), head),
            (b, _) => (0, b.map_or(head, |b| b.saturating_sub(1).min(head))),
        };
        let start = before.max(self.earliest);
        let matched: Vec<u64> = match &spec.tag {
            None => Vec::new(),
            Some(m) => self
                .recs
                .range(start..=last.max(start))
                .filter(|&(&s, r)| {
                    s <= last
                        && r.tag.as_deref().is_some_and(|t| match m {
                            TagMatch::Eq(x) => t == x,
                            TagMatch::Prefix(p) => t.starts_with(p.as_str()),
                        })
                })
                .map(|(&s, _)| s)
                .collect(),
        };
        let e = self
            .recs
            .range(start..)
            .find(|(s, _)| matched.binary_search(s).is_err())
            .map_or(head + 1, |(&s, _)| s);
        let trim = Trim {
            earliest: e.max(self.earliest),
            ..self.trim()
        };
        if matched.is_empty() && trim.earliest == self.earliest {
            return DeleteEffect {
                noop: true,
                matched,
                trim,
                answer: (0, self.earliest, head, self.count(), self.bytes()),
            };
        }
        let mut after = self.clone();
        after.apply_delete(&matched, trim);
        DeleteEffect {
            noop: false,
            answer: (
                self.count() - after.count(),
                after.earliest,
                head,
                after.count(),
                after.bytes(),
            ),
            matched,
            trim,
        }
    }

    /// Apply a committed delete of `matched` seqs and the trim `trim`.
    pub fn apply_delete(&mut self, matched: &[u64], trim: Trim) {
        for s in matched {
            self.recs.remove(s);
        }
        self.apply_trim(trim);
    }

    /// The TTL trim the sweeper persists at `now`, if any.
    pub fn plan_sweep(&self, now: i64) -> Option<Trim> {
        if self.config.ttl_ms == 0 {
            return None;
        }
        let cut = self.ttl_cut(now);
        (cut > self.earliest).then(|| Trim {
            earliest: self.live_from(cut).max(cut),
            cap_floor: self.cap_floor,
            ttl_floor: self.ttl_floor.max(cut),
        })
    }

    /// The diff read `(from, limit, nodes, max_bytes)` at `now`, as the engine defines it:
    /// whole records within the byte budget (at least one), skipping deleted, expired and
    /// own-node records, the cursor moving past what it examined.
    pub fn diff(
        &self,
        from: u64,
        limit: usize,
        nodes: &[String],
        max_bytes: usize,
        now: i64,
    ) -> ExpDiff {
        let head = self.head;
        let v = self.view(now);
        let mut from = from;
        let mut tomb = None;
        if from > head {
            tomb = Some((from + 1, v.earliest - 1, GapReason::Recreated));
            from = 0;
        }
        let floor = self.cap_floor.max(v.ttl_floor);
        if tomb.is_none() && from + 1 < floor {
            let first = from + 1;
            let reason = match (first < self.cap_floor, first < v.ttl_floor) {
                (true, true) => GapReason::Mixed,
                (true, false) => GapReason::Cap,
                _ => GapReason::Ttl,
            };
            tomb = Some((first, v.earliest - 1, reason));
        }
        let nodes: &[String] = if self.config.dedupe_node { nodes } else { &[] };
        let limit = limit.max(1);
        let mut next = from.max(v.earliest - 1);
        let mut seqs = Vec::new();
        let mut bytes = 0usize;
        while seqs.len() < limit && next < head {
            let s = self.live_from(next + 1);
            if s > head {
                next = head;
                break;
            }
            // The run of consecutive live records from `s`, as many as are still wanted.
            let want = limit - seqs.len();
            let run: Vec<(u64, &Arc<MRec>)> = self
                .recs
                .range(s..)
                .enumerate()
                .take_while(|(i, (q, _))| **q == s + *i as u64)
                .take(want)
                .map(|(_, (q, r))| (*q, r))
                .collect();
            let room = max_bytes.saturating_sub(bytes) as u64;
            let mut sum = 0;
            let mut k = run
                .iter()
                .take_while(|(_, r)| {
                    sum += r.size();
                    sum <= room
                })
                .count();
            if k == 0 && seqs.is_empty() {
                k = 1;
            }
            if k == 0 {
                break;
            }
            for (seq, r) in &run[..k] {
                let own = r.node.as_ref().is_some_and(|n| nodes.contains(n));
                if !own && !self.expired(r.ts, now) {
                    bytes += r.size() as usize;
                    seqs.push(*seq);
                }
                next = *seq;
            }
            if k < run.len() || bytes >= max_bytes {
                break;
            }
        }
        if seqs.len() < limit && next < head && self.live_from(next + 1) > head {
            next = head;
        }
        ExpDiff {
            seqs,
            next,
            head,
            earliest: v.earliest,
            tomb,
        }
    }

    /// Internal consistency of the model itself.
    pub fn invariants(&self) -> Result<(), String> {
        let first = self.recs.keys().next().copied().unwrap_or(self.head + 1);
        let ok = first == self.earliest
            && self.recs.keys().all(|&s| s <= self.head)
            && self.tss.keys().copied().eq(self.earliest..=self.head)
            && self
                .tss
                .iter()
                .all(|(s, v)| self.recs.get(s).is_none_or(|r| (r.ts, r.size()) == *v))
            && self.cap_floor <= self.earliest
            && self.ttl_floor <= self.earliest;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "model invariants broken: head {} earliest {} first {first} floors {}/{} tss {:?}",
                self.head,
                self.earliest,
                self.cap_floor,
                self.ttl_floor,
                self.tss.keys().collect::<Vec<_>>()
            ))
        }
    }
}
