//! A queue topic's lease state: which jobs (live records) are leased to whom until when, how
//! often each was delivered, which wait after a `nack`, and where fresh jobs start. Every
//! change is a WAL record of the queue (claims always, with their delivery counts), so
//! `max_deliveries` holds across restarts; with `leases_durable` the leases in flight at a
//! crash are restored too (otherwise their jobs are ready again at once).
//!
//! Costs: a claim, an ack and an expiry are `O(log n)` in the jobs leased or waiting (ordered
//! sets by deadline and by seq), never a scan of all leases.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// A queue's jobs, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Live jobs neither leased nor waiting after a `nack`.
    pub ready: u64,
    pub in_flight: u64,
    pub dead_lettered: u64,
}

/// A claimed job: the record and its lease.
#[derive(Debug, Clone)]
pub struct Job {
    pub record: super::RecordView,
    pub lease_id: u64,
    pub deadline: i64,
    /// Deliveries of the job, this one included.
    pub deliveries: u32,
}

/// The outcome of an ack, nack or extend.
#[derive(Debug, Clone, Default)]
pub struct LeaseDone {
    /// Jobs acked, released or extended.
    pub done: u64,
    /// Seqs not leased to the node (or with another lease id).
    pub skipped: Vec<u64>,
    /// New deadlines (extend).
    pub deadlines: Vec<(u64, i64)>,
    pub counts: QueueCounts,
}

/// One lease: job `seq` is `node`'s until `deadline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub node: String,
    pub lease_id: u64,
    pub deadline: i64,
    /// The `/work` stream holding it (released when that stream ends); not persisted.
    #[serde(skip)]
    pub conn: Option<u64>,
}

/// A claim as logged: job, its lease and its delivery count after the claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClaimRec {
    pub seq: u64,
    pub lease: Lease,
    pub deliveries: u32,
}

/// A queue change as logged (acks are record deletes: `TopicDelete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum QueueOp {
    /// Jobs leased; fresh jobs now start after `cursor`.
    Claim { claims: Vec<ClaimRec>, cursor: u64 },
    /// Leases given back (a `nack`, or their `/work` stream ended): the jobs are ready again
    /// at `ready_at` (0: at once).
    Release { seqs: Vec<u64>, ready_at: i64 },
    /// Leases extended to `deadline`.
    Extend { seqs: Vec<u64>, deadline: i64 },
    /// Jobs moved to the dead-letter topic (deleted with this record's `TopicDelete`).
    DeadLettered { count: u64 },
}

/// A queue's state as checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueRec {
    pub cursor: u64,
    pub leases: Vec<(u64, Lease)>,
    pub deliveries: Vec<(u64, u32)>,
    pub delayed: Vec<(i64, u64)>,
    /// Jobs ready again (expired or released), ahead of fresh ones.
    pub ready_again: Vec<u64>,
    pub dead_lettered: u64,
}

/// A queue's live lease state.
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub leases: HashMap<u64, Lease>,
    /// Deliveries of jobs delivered at least once and still live.
    pub deliveries: HashMap<u64, u32>,
    /// Leases by deadline.
    expiry: BTreeSet<(i64, u64)>,
    /// Nacked jobs by the time they are ready again, and that time by job.
    delayed: BTreeSet<(i64, u64)>,
    delay_of: HashMap<u64, i64>,
    /// Jobs ready again (expired or released): they go out before fresh ones, lowest first.
    reclaim: BTreeSet<u64>,
    /// Fresh jobs are the live records after this seq.
    pub cursor: u64,
    pub dead_lettered: u64,
}

impl QueueState {
    /// The state a checkpoint (or a seal) recorded; leases that must not outlive a restart
    /// are given back by [`QueueState::drop_leases`] when the topic is restored.
    pub fn from_rec(rec: QueueRec) -> Self {
        let mut q = QueueState {
            cursor: rec.cursor,
            deliveries: rec.deliveries.into_iter().collect(),
            dead_lettered: rec.dead_lettered,
            ..Default::default()
        };
        for (at, seq) in rec.delayed {
            q.delay(seq, at);
        }
        for (seq, lease) in rec.leases {
            q.lease(seq, lease);
        }
        q.reclaim.extend(rec.ready_again);
        q
    }

    pub fn to_rec(&self) -> QueueRec {
        let mut leases: Vec<(u64, Lease)> =
            self.leases.iter().map(|(s, l)| (*s, l.clone())).collect();
        leases.sort_by_key(|(s, _)| *s);
        let mut deliveries: Vec<(u64, u32)> =
            self.deliveries.iter().map(|(s, d)| (*s, *d)).collect();
        deliveries.sort_unstable();
        QueueRec {
            cursor: self.cursor,
            leases,
            deliveries,
            delayed: self.delayed.iter().copied().collect(),
            ready_again: self.reclaim.iter().copied().collect(),
            dead_lettered: self.dead_lettered,
        }
    }

    fn lease(&mut self, seq: u64, lease: Lease) {
        self.expiry.insert((lease.deadline, seq));
        if let Some(old) = self.leases.insert(seq, lease) {
            self.expiry.remove(&(old.deadline, seq));
        }
        self.reclaim.remove(&seq);
    }

    fn delay(&mut self, seq: u64, at: i64) {
        if let Some(old) = self.delay_of.insert(seq, at) {
            self.delayed.remove(&(old, seq));
        }
        self.delayed.insert((at, seq));
    }

    fn undelay(&mut self, seq: u64) {
        if let Some(at) = self.delay_of.remove(&seq) {
            self.delayed.remove(&(at, seq));
        }
    }

    fn unlease(&mut self, seq: u64) -> Option<Lease> {
        let l = self.leases.remove(&seq)?;
        self.expiry.remove(&(l.deadline, seq));
        Some(l)
    }

    /// Move expired leases and elapsed delays to the reclaim set.
    pub fn sweep(&mut self, now: i64) {
        while let Some(&(deadline, seq)) = self.expiry.first() {
            if deadline > now {
                break;
            }
            self.unlease(seq);
            self.reclaim.insert(seq);
        }
        while let Some(&(at, seq)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.undelay(seq);
            self.reclaim.insert(seq);
        }
    }

    /// The earliest moment a lease expires or a delay ends (for a waiting claim).
    pub fn next_due(&self) -> Option<i64> {
        let a = self.expiry.first().map(|e| e.0);
        let b = self.delayed.first().map(|e| e.0);
        a.into_iter().chain(b).min()
    }

    /// Jobs ready again from `from` on, lowest first (the caller skips deleted ones).
    pub fn reclaimable(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        self.reclaim.range(from..).copied()
    }

    /// The counts, for a queue of `live` jobs.
    pub fn counts(&self, live: u64) -> QueueCounts {
        let in_flight = self.leases.len() as u64;
        QueueCounts {
            ready: live.saturating_sub(in_flight + self.delayed.len() as u64),
            in_flight,
            dead_lettered: self.dead_lettered,
        }
    }

    /// Leases (after a restart of a queue without `leases_durable`): their jobs are ready.
    pub fn drop_leases(&mut self) {
        let seqs: Vec<u64> = self.leases.keys().copied().collect();
        for s in seqs {
            self.unlease(s);
            self.reclaim.insert(s);
        }
    }

    /// The lease of `seq` if it is `node`'s (and `lease_id`'s, when given).
    pub fn held(&self, seq: u64, node: &str, lease_id: Option<u64>) -> Option<&Lease> {
        self.leases
            .get(&seq)
            .filter(|l| l.node == node && lease_id.is_none_or(|id| id == l.lease_id))
    }

    /// Apply a logged change (live and at replay alike).
    pub fn apply(&mut self, op: &QueueOp) {
        match op {
            QueueOp::Claim { claims, cursor } => {
                for c in claims {
                    self.deliveries.insert(c.seq, c.deliveries);
                    self.lease(c.seq, c.lease.clone());
                }
                self.cursor = self.cursor.max(*cursor);
            }
            QueueOp::Release { seqs, ready_at } => {
                for &s in seqs {
                    self.unlease(s);
                    if *ready_at > 0 {
                        self.reclaim.remove(&s);
                        self.delay(s, *ready_at);
                    } else {
                        self.reclaim.insert(s);
                    }
                }
            }
            QueueOp::Extend { seqs, deadline } => {
                for &s in seqs {
                    if let Some(mut l) = self.unlease(s) {
                        l.deadline = *deadline;
                        self.lease(s, l);
                    }
                }
            }
            QueueOp::DeadLettered { count } => self.dead_lettered += count,
        }
    }

    /// Jobs `[from, to)` were deleted (acked, dead-lettered, trimmed): forget them.
    pub fn forget(&mut self, from: u64, to: u64) {
        // Every job with state was delivered once, so `deliveries` knows them all.
        let seqs: Vec<u64> = if (to - from) as usize <= self.deliveries.len() {
            (from..to).collect()
        } else {
            let mut v: Vec<u64> = self.deliveries.keys().copied().collect();
            v.retain(|s| (from..to).contains(s));
            v.extend(self.reclaim.range(from..to).copied());
            v
        };
        for s in seqs {
            self.unlease(s);
            self.undelay(s);
            self.deliveries.remove(&s);
            self.reclaim.remove(&s);
        }
    }

    /// Leases of `/work` stream `conn`.
    pub fn leases_of(&self, conn: u64) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.conn == Some(conn))
            .map(|(s, _)| *s)
            .collect();
        v.sort_unstable();
        v
    }

    pub fn set_conn(&mut self, seq: u64, conn: u64) {
        if let Some(l) = self.leases.get_mut(&seq) {
            l.conn = Some(conn);
        }
    }
}
