//! What the simulation knows about one topic incarnation: its resolved state, the changes
//! since the last checkpoint (to match a recovered topic against), and the writes whose
//! outcome is not known yet.
//!
//! Writes to one topic are serialized by its append lock in the order they first ran, so they
//! wait in that order in `queue` and leave it in that order once their outcome is known:
//! - answered: the model must give the same answer (a storage error only while faults are
//!   armed, and then the write shows nothing);
//! - dropped before it answered (a cancelled request): it committed whole or not at all. The
//!   answers of the writes after it are checked against both possibilities; when they do not
//!   tell, a barrier (a delete of nothing, which waits for the append lock) and a read of the
//!   topic decide. At most one dropped write per topic is unresolved at a time.
//! - in flight: it and everything after it wait.

use super::model::{MRec, MState, Trim, WriteEffect, WriteOutcome};
use riffle_engine::topic::{TopicConfig, TopicWritten};
use riffle_engine::{Durability, EngineError};
use std::collections::VecDeque;
use std::sync::Arc;

/// One committed change, as its WAL record carries it.
#[derive(Debug, Clone)]
pub enum Kind {
    Write(WriteEffect),
    Delete { matched: Vec<u64>, trim: Trim },
    Trim(Trim),
    Config(TopicConfig),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    /// An `ephemeral` write: its WAL record (seqs only) is lazy and never waited for.
    pub eph: bool,
    /// Committed with a sync: durable once committed.
    pub sync: bool,
    /// Stamp by which its WAL record was queued (`u64::MAX`: unknown).
    pub sub: u64,
    /// The live state after it.
    pub after: Arc<MState>,
}

impl Entry {
    pub fn write(&self) -> Option<&WriteEffect> {
        match &self.kind {
            Kind::Write(w) => Some(w),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum Out {
    InFlight,
    /// Dropped (or in flight at a crash) at stamp `at`.
    Dropped {
        at: u64,
    },
    Answered {
        r: Result<TopicWritten, EngineError>,
        at: u64,
    },
}

/// A write whose outcome is not folded into the model yet.
#[derive(Debug)]
pub struct Pend {
    pub n: u64,
    pub recs: Vec<MRec>,
    pub key: Option<String>,
    /// The engine's clock when it first ran (its `$ts` and the window it is checked in).
    pub now: i64,
    /// Stamp of its first poll (its WAL record is queued after this).
    pub start: u64,
    pub out: Out,
    /// Faults were armed while it ran: a storage error is a possible answer.
    pub faulty: bool,
}

/// Which records of each shard are known to be written, and durable: everything queued
/// before the stamps (a later WAL record of the shard was written, or synced).
#[derive(Debug, Default, Clone)]
pub struct Marks {
    pub written: [u64; 2],
    pub synced: [u64; 2],
}

impl Marks {
    /// A WAL record queued at or after `start` on `shard` committed (with a sync if `sync`).
    pub fn committed(&mut self, shard: usize, start: u64, sync: bool) {
        self.written[shard] = self.written[shard].max(start);
        if sync {
            self.synced[shard] = self.synced[shard].max(start);
        }
    }
}

pub struct Topic {
    pub name: &'static str,
    pub id: u64,
    pub shard: usize,
    /// Every change whose outcome is known, applied.
    pub st: MState,
    /// The state the current history starts from (last checkpoint, recovery or creation).
    pub base: Arc<MState>,
    /// Created since the last checkpoint: stamp of the create's commit, and whether synced.
    pub created: Option<(u64, bool)>,
    pub hist: Vec<Entry>,
    pub queue: VecDeque<Pend>,
    /// Idempotency keys used so far (retries pick from them).
    pub keys: Vec<String>,
}

/// What resolving a topic's queue came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Quiet,
    /// Something is in flight.
    Waiting,
    /// A dropped write's fate needs a barrier and a look at the topic.
    Observe,
}

/// Check a write's answer against the model at `st`: the effect to apply, if it wrote.
pub fn check_answer(
    st: &MState,
    p: &Pend,
    r: &Result<TopicWritten, EngineError>,
) -> Result<Option<WriteEffect>, String> {
    let plan = st.plan_write(&p.recs, p.key.as_deref(), p.now);
    let bad = || {
        format!(
            "write #{} ({} records, key {:?}): the model says {}, the engine {r:?}",
            p.n,
            p.recs.len(),
            p.key,
            describe(&plan)
        )
    };
    match (&plan, r) {
        (WriteOutcome::Dedup { first, last, head }, Ok(w))
            if w.deduped
                && (w.first_seq, w.last_seq, w.head_seq, w.count)
                    == (*first, *last, *head, last + 1 - first) =>
        {
            Ok(None)
        }
        (WriteOutcome::Full, Err(EngineError::TopicFull)) => Ok(None),
        (WriteOutcome::Written(e), Ok(w))
            if !w.deduped
                && (w.first_seq, w.last_seq, w.head_seq, w.count)
                    == (e.first, e.last, e.last, e.last + 1 - e.first) =>
        {
            Ok(Some(e.clone()))
        }
        // (An `ephemeral` write fails too when the WAL record reserving its seqs does.)
        (WriteOutcome::Written(_), Err(EngineError::Storage { .. })) if p.faulty => Ok(None),
        _ => Err(bad()),
    }
}

pub fn describe(plan: &WriteOutcome) -> String {
    match plan {
        WriteOutcome::Dedup { first, last, head } => {
            format!("deduped {first}..={last} (head {head})")
        }
        WriteOutcome::Full => "TopicFull".into(),
        WriteOutcome::Written(e) => format!("written {}..={} trim {:?}", e.first, e.last, e.trim),
    }
}

impl Topic {
    pub fn new(name: &'static str, id: u64, config: TopicConfig, stamp: u64, sync: bool) -> Self {
        let st = MState::new(config);
        Self {
            name,
            id,
            shard: (id % 2) as usize,
            base: Arc::new(st.clone()),
            st,
            created: Some((stamp, sync)),
            hist: Vec::new(),
            queue: VecDeque::new(),
            keys: Vec::new(),
        }
    }

    pub fn quiet(&self) -> bool {
        self.queue.is_empty()
    }

    /// Record a committed change of the resolved state.
    pub fn push(&mut self, kind: Kind, sync: bool, sub: u64) {
        let eph = matches!(&kind, Kind::Write(w) if w.recs.first().is_some_and(|r| r.eph));
        match &kind {
            Kind::Write(w) => self.st.apply_write(w),
            Kind::Delete { matched, trim } => self.st.apply_delete(matched, *trim),
            Kind::Trim(t) => self.st.apply_trim(*t),
            Kind::Config(c) => self.st.config = c.clone(),
        }
        self.hist.push(Entry {
            kind,
            eph,
            sync: sync && !eph,
            sub,
            after: Arc::new(self.st.clone()),
        });
    }

    /// A checkpoint covered everything so far.
    pub fn checkpointed(&mut self) {
        self.hist.clear();
        self.base = Arc::new(self.st.clone());
        self.created = None;
    }

    /// Fold an answered write into the model.
    fn apply_answered(&mut self, p: &Pend, marks: &mut Marks) -> Result<(), String> {
        let Out::Answered { r, at } = &p.out else {
            unreachable!("only answered writes")
        };
        if let Some(eff) = check_answer(&self.st, p, r)? {
            let class = self.st.config.durability;
            let eph = class == Durability::Ephemeral;
            if !eph {
                marks.committed(self.shard, p.start, class == Durability::Fsync);
            }
            self.push(Kind::Write(eff), class == Durability::Fsync, *at);
        }
        Ok(())
    }

    /// Whether the answers after the front of the queue (up to the next unanswered write)
    /// are consistent with the state `st` (the front applied or not).
    fn consistent(&self, mut st: MState) -> (bool, bool) {
        for p in self.queue.iter().skip(1) {
            let Out::Answered { r, .. } = &p.out else {
                return (true, true);
            };
            match check_answer(&st, p, r) {
                Err(_) => return (false, false),
                Ok(Some(eff)) => st.apply_write(&eff),
                Ok(None) => {}
            }
        }
        (true, false)
    }

    /// The state after the queue's answered writes, with the front dropped write applied or
    /// not (for a barrier's observation to decide).
    pub fn branch(&self, committed: bool) -> Option<MState> {
        let mut st = self.st.clone();
        let front = self.queue.front()?;
        if committed {
            let WriteOutcome::Written(eff) =
                st.plan_write(&front.recs, front.key.as_deref(), front.now)
            else {
                return None;
            };
            st.apply_write(&eff);
        }
        for p in self.queue.iter().skip(1) {
            let Out::Answered { r, .. } = &p.out else {
                return None;
            };
            if let Some(eff) = check_answer(&st, p, r).ok()? {
                st.apply_write(&eff);
            }
        }
        Some(st)
    }

    /// Settle the front dropped write: it committed or not.
    pub fn decide(&mut self, committed: bool) {
        let p = self.queue.pop_front().expect("a dropped write");
        let Out::Dropped { at } = p.out else {
            unreachable!("only dropped writes are decided")
        };
        if !committed {
            return;
        }
        let WriteOutcome::Written(eff) = self.st.plan_write(&p.recs, p.key.as_deref(), p.now)
        else {
            unreachable!("a decided write writes")
        };
        let class = self.st.config.durability;
        self.push(Kind::Write(eff), class == Durability::Fsync, at);
    }

    /// Fold in every write whose outcome is known, in order.
    pub fn resolve(&mut self, marks: &mut Marks) -> Result<Step, String> {
        loop {
            let Some(p) = self.queue.front() else {
                return Ok(Step::Quiet);
            };
            match &p.out {
                Out::InFlight => return Ok(Step::Waiting),
                Out::Answered { .. } => {
                    let p = self.queue.pop_front().expect("front");
                    self.apply_answered(&p, marks)
                        .map_err(|e| format!("{}: {e}", self.name))?;
                }
                Out::Dropped { .. } => {
                    let WriteOutcome::Written(eff) =
                        self.st.plan_write(&p.recs, p.key.as_deref(), p.now)
                    else {
                        // Deduplicated or refused either way: it changed nothing.
                        self.queue.pop_front();
                        continue;
                    };
                    let mut with = self.st.clone();
                    with.apply_write(&eff);
                    let (ok_with, open_with) = self.consistent(with);
                    let (ok_without, open_without) = self.consistent(self.st.clone());
                    match (ok_with, ok_without) {
                        (true, false) => self.decide(true),
                        (false, true) => self.decide(false),
                        (false, false) => {
                            return Err(format!(
                                "{}: the answers after dropped write #{} fit neither its \
                                 commit nor its absence: {:?}",
                                self.name, p.n, self.queue
                            ));
                        }
                        (true, true) if open_with || open_without => return Ok(Step::Waiting),
                        (true, true) => return Ok(Step::Observe),
                    }
                }
            }
        }
    }
}
