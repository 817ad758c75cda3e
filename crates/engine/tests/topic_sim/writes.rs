//! Writes as request handlers run them: futures polled by hand, held, driven or dropped, and
//! how their outcomes are settled (see `track.rs`).

use super::check::{self, read_all};
use super::generate;
use super::model::MRec;
use super::track::{Out, Pend, Step, Topic};
use super::{Check, Flight, NAMES, Run, WriteFuture, error_kind, expect_err};
use crate::disk::poll_once;
use crate::disk::{LIVENESS, block_on, pause};
use riffle_engine::topic::{TopicWrite, TopicWritten};
use riffle_engine::{Durability, EngineError};
use std::time::Instant;

impl Run {
    pub(super) fn op_write(&mut self) -> Check {
        let slot = self.pick_slot();
        let name = NAMES[slot];
        let n = self.next_n;
        self.next_n += 1;
        let count = 1 + self.rng.below(20);
        let recs = generate::records(&mut self.rng, n, count);
        let Some(t) = self.slots[slot].as_ref() else {
            return self.write_missing(slot, n, recs);
        };
        let keys = t.keys.clone();
        let pending = t.queue.len();
        let dropped = t.queue.iter().any(|p| matches!(p.out, Out::Dropped { .. }));
        let retry = !keys.is_empty() && self.rng.chance(50);
        let key = match self.rng.below(100) {
            0..=19 if retry => Some(keys[self.rng.below(keys.len() as u64) as usize].clone()),
            0..=34 => Some(format!("k{n}")),
            _ => None,
        };
        // Past three pending writes, this one is seen through.
        let mode = match self.rng.below(100) {
            _ if pending >= 3 => "complete",
            0..=59 => "complete",
            60..=84 => "hold",
            _ if dropped => "hold",
            _ => "drop",
        };
        let create = self
            .rng
            .chance(10)
            .then(|| generate::config(&mut self.rng, Durability::Disk));
        self.op = format!(
            "write #{n} to {name} ({mode}): {count} records, key {key:?}{}",
            if create.is_some() { ", create" } else { "" }
        );
        let t = self.slots[slot].as_mut().expect("checked");
        if let Some(k) = &key
            && !t.keys.contains(k)
        {
            t.keys.push(k.clone());
        }
        let w = TopicWrite {
            records: generate::new_records(&recs),
            idempotency_key: key.clone(),
            create,
        };
        let now = self.now();
        let start = self.tick();
        let (engine, owned) = (self.engine().clone(), name.to_string());
        let mut fut: WriteFuture = Box::pin(async move { engine.topic_write(&owned, w).await });
        let first = poll_once(&mut fut);
        let faulty = self.faults;
        let t = self.slots[slot].as_mut().expect("checked");
        t.queue.push_back(Pend {
            n,
            recs,
            key,
            now,
            start,
            out: Out::InFlight,
            faulty,
        });
        if let Some(r) = first {
            self.answered(slot, n, r);
            return Ok(());
        }
        match mode {
            "drop" => {
                drop(fut);
                self.dropped(slot, n);
                Ok(())
            }
            "hold" => {
                self.flights.push(Flight { slot, n, fut });
                Ok(())
            }
            _ => {
                self.flights.push(Flight { slot, n, fut });
                self.drive(|f| f.n == n)
            }
        }
    }

    /// A write to a name without a topic: with `create`, it makes the topic first.
    pub(super) fn write_missing(&mut self, slot: usize, n: u64, recs: Vec<MRec>) -> Check {
        let name = NAMES[slot];
        let class = self.rng.pick(&generate::CLASSES);
        let config = self
            .rng
            .chance(70)
            .then(|| generate::config(&mut self.rng, class));
        self.op = format!(
            "write #{n} to missing {name}: {} records, create {config:?}",
            recs.len()
        );
        let w = TopicWrite {
            records: generate::new_records(&recs),
            idempotency_key: None,
            create: config.clone(),
        };
        let now = self.now();
        let start = self.tick();
        let r = block_on(self.engine().topic_write(name, w));
        let at = self.tick();
        let Some(config) = config else {
            return expect_err(r, EngineError::NotFound);
        };
        let info = self.engine().topic_info(name, false);
        let fsync = config.durability == Durability::Fsync;
        match (&r, info) {
            (Err(EngineError::Storage { .. }), Err(EngineError::NotFound)) if self.faults => {
                self.count("create failed");
                return Ok(());
            }
            (Ok(w), _) if !w.created => return Err(format!("a write made {name}: {w:?}")),
            (_, Ok(info)) => {
                let mut t = Topic::new(name, info.id, config, at, fsync);
                self.marks.committed(t.shard, start, fsync);
                let faulty = self.faults;
                let p = Pend {
                    n,
                    recs,
                    key: None,
                    now,
                    start,
                    out: Out::Answered { r: r.clone(), at },
                    faulty,
                };
                t.queue.push_back(p);
                self.slots[slot] = Some(t);
                self.count("create by write");
            }
            (_, Err(e)) => return Err(format!("create by write: {r:?}, then info: {e:?}")),
        }
        Ok(())
    }

    /// Record the answer of write `n`.
    pub(super) fn answered(&mut self, slot: usize, n: u64, r: Result<TopicWritten, EngineError>) {
        let kind = match &r {
            Ok(w) if w.deduped => "write deduped".to_string(),
            Ok(_) => "write written".to_string(),
            Err(e) => format!("write {}", error_kind(e)),
        };
        self.count(kind);
        let at = self.tick();
        if let Some(t) = self.slots[slot].as_mut()
            && let Some(p) = t.queue.iter_mut().find(|p| p.n == n)
        {
            p.out = Out::Answered { r, at };
        }
    }

    pub(super) fn dropped(&mut self, slot: usize, n: u64) {
        let at = self.tick();
        if let Some(t) = self.slots[slot].as_mut()
            && let Some(p) = t.queue.iter_mut().find(|p| p.n == n)
        {
            p.out = Out::Dropped { at };
        }
        self.count("write dropped");
    }

    /// Poll every held write once.
    pub(super) fn poll_all(&mut self) {
        let mut i = 0;
        while i < self.flights.len() {
            match poll_once(&mut self.flights[i].fut) {
                Some(r) => {
                    let f = self.flights.remove(i);
                    self.answered(f.slot, f.n, r);
                }
                None => i += 1,
            }
        }
    }

    /// Poll every held write until none that `which` selects is left.
    pub(super) fn drive(&mut self, which: impl Fn(&Flight) -> bool) -> Check {
        let start = Instant::now();
        loop {
            self.poll_all();
            if !self.flights.iter().any(&which) {
                return Ok(());
            }
            if start.elapsed() > LIVENESS {
                let stuck: Vec<u64> = self.flights.iter().map(|f| f.n).collect();
                return Err(format!("writes {stuck:?} never answered"));
            }
            pause();
        }
    }

    pub(super) fn op_poll(&mut self) -> Check {
        self.op = format!("poll {} writes", self.flights.len());
        self.poll_all();
        Ok(())
    }

    pub(super) fn op_drive(&mut self) -> Check {
        self.op = format!("drive {} writes", self.flights.len());
        self.drive(|_| true)
    }

    /// Drop a held write after a few more polls: a client that gave up.
    pub(super) fn op_drop(&mut self) -> Check {
        // Not where another dropped write is still unresolved.
        let ok: Vec<usize> = (0..self.flights.len())
            .filter(|&i| {
                let t = self
                    .topic(self.flights[i].slot)
                    .expect("a held write's topic");
                !t.queue.iter().any(|p| matches!(p.out, Out::Dropped { .. }))
            })
            .collect();
        if ok.is_empty() {
            self.op = "drop: none".into();
            return Ok(());
        }
        let k = ok[self.rng.below(ok.len() as u64) as usize];
        for _ in 0..self.rng.below(3) {
            if let Some(r) = poll_once(&mut self.flights[k].fut) {
                let f = self.flights.remove(k);
                self.op = format!("drop #{}: it answered first", f.n);
                self.answered(f.slot, f.n, r);
                return Ok(());
            }
            pause();
        }
        let f = self.flights.remove(k);
        self.op = format!("drop #{}", f.n);
        drop(f.fut);
        self.dropped(f.slot, f.n);
        Ok(())
    }

    // -- settling -------------------------------------------------------------------------

    /// Fold in what is known; decide dropped writes by a barrier where nothing is in flight.
    pub(super) fn resolve_all(&mut self) -> Check {
        for slot in 0..NAMES.len() {
            self.resolve(slot)?;
        }
        Ok(())
    }

    pub(super) fn resolve(&mut self, slot: usize) -> Check {
        loop {
            let Some(t) = self.slots[slot].as_mut() else {
                return Ok(());
            };
            let step = t.resolve(&mut self.marks)?;
            match step {
                Step::Observe => self.observe(slot)?,
                _ => return Ok(()),
            }
        }
    }

    /// Wait for the topic's append lock (its writes committed or failed), then read it to
    /// tell whether the dropped write at the front of its queue committed.
    pub(super) fn observe(&mut self, slot: usize) -> Check {
        let name = NAMES[slot];
        // The barrier: a delete of nothing waits for the append lock.
        let persisted = check::persisted(self.engine(), name)?;
        let all = read_all(self.engine(), name)?;
        let now = self.now();
        let t = self.topic(slot).expect("observed topic");
        let fits = |committed: bool| {
            t.branch(committed).is_some_and(|st| {
                st.head == all.head_seq
                    && check::model_persisted(&st) == persisted
                    && check::compare_diff(&all, &st.diff(0, 1 << 20, &[], 1 << 30, now), &st)
                        .is_ok()
            })
        };
        let (with, without) = (fits(true), fits(false));
        let n = t.queue.front().map_or(0, |p| p.n);
        if with == without {
            return Err(format!(
                "{name}: dropped write #{n} (head now {}, {} records): committed fits: {with}, \
                 lost fits: {without}",
                all.head_seq,
                all.records.len()
            ));
        }
        self.count(if with {
            "dropped write committed"
        } else {
            "dropped write lost"
        });
        self.slots[slot].as_mut().expect("observed").decide(with);
        Ok(())
    }

    /// See every held write of `slot` through and fold them in.
    pub(super) fn settle(&mut self, slot: usize) -> Check {
        self.drive(|f| f.slot == slot)?;
        self.resolve(slot)?;
        match self.topic(slot) {
            Some(t) if !t.quiet() => Err(format!("{} is not quiet: {:?}", NAMES[slot], t.queue)),
            _ => Ok(()),
        }
    }

    pub(super) fn settle_all(&mut self) -> Check {
        (0..NAMES.len()).try_for_each(|s| self.settle(s))
    }
}
