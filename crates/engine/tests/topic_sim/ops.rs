//! The other operations: deletes, configuration changes, creates and removals, reads,
//! checkpoints, faults, the clock, TTL sweeps, listings, crashes and restarts.

use super::check::{check_diff_via, check_topic};
use super::track::{Kind, Topic};
use super::{Check, NAMES, Run, expect_err, generate, recover};
use crate::disk::{Crash, block_on};
use riffle_engine::topic::TopicKind;
use riffle_engine::{Durability, EngineError};

impl Run {
    pub(super) fn op_delete(&mut self) -> Check {
        let slot = self.pick_slot();
        let name = NAMES[slot];
        self.settle(slot)?;
        let Some(t) = self.slots[slot].as_ref() else {
            self.op = format!("delete in missing {name}");
            let spec = generate::delete_spec(&mut self.rng, 3);
            return expect_err(
                block_on(self.engine().topic_delete_records(name, &spec)),
                EngineError::NotFound,
            );
        };
        let head = t.st.head;
        let spec = generate::delete_spec(&mut self.rng, head);
        self.op = format!("delete in {name}: {spec:?}");
        let plan = t.st.plan_delete(&spec);
        let start = self.tick();
        let r = block_on(self.engine().topic_delete_records(name, &spec));
        let at = self.tick();
        let t = self.slots[slot].as_mut().expect("checked");
        match r {
            Ok(d) => {
                let got = (d.deleted, d.earliest_seq, d.head_seq, d.count, d.bytes);
                if got != plan.answer {
                    return Err(format!(
                        "delete answered (deleted, earliest, head, count, bytes) {got:?}, the \
                         model {:?} (matched {:?})",
                        plan.answer, plan.matched
                    ));
                }
                if !plan.noop {
                    self.marks.committed(t.shard, start, true);
                    let kind = Kind::Delete {
                        matched: plan.matched,
                        trim: plan.trim,
                    };
                    t.push(kind, true, at);
                }
                let kind = if plan.noop { "noop" } else { "done" };
                self.count(format!("delete {kind}"));
                Ok(())
            }
            Err(EngineError::Storage { .. }) if self.faults && !plan.noop => {
                self.count("delete Storage");
                Ok(())
            }
            Err(e) => Err(format!("delete: {e:?}; the model: {plan:?}")),
        }
    }

    pub(super) fn op_config(&mut self) -> Check {
        let slot = self.pick_slot();
        let name = NAMES[slot];
        self.settle(slot)?;
        let Some(t) = self.slots[slot].as_ref() else {
            return self.op_create();
        };
        let mut config = generate::changed(&mut self.rng, &t.st.config);
        let queue = self.rng.chance(5);
        if queue {
            config.kind = TopicKind::Queue;
        }
        self.op = format!("configure {name}: {config:?}");
        let changed = config != t.st.config;
        let start = self.tick();
        let put = config.clone();
        let r = block_on(self.engine().topic_put(name, put));
        let at = self.tick();
        let t = self.slots[slot].as_mut().expect("checked");
        match r {
            _ if queue => expect_err(r, EngineError::TopicIncompatible("type")),
            Ok(put) if !put.created && put.config == config => {
                if changed {
                    self.marks.committed(t.shard, start, true);
                    t.push(Kind::Config(config), true, at);
                    self.count("configure changed");
                }
                Ok(())
            }
            Err(EngineError::Storage { .. }) if self.faults && changed => {
                self.count("configure Storage");
                Ok(())
            }
            r => Err(format!("configure: {r:?}")),
        }
    }

    pub(super) fn op_create(&mut self) -> Check {
        let free: Vec<usize> = (0..NAMES.len())
            .filter(|&s| self.slots[s].is_none())
            .collect();
        if free.is_empty() {
            return self.op_remove();
        }
        let slot = self.rng.pick(&free);
        let name = NAMES[slot];
        let class = self.rng.pick(&generate::CLASSES);
        let config = generate::config(&mut self.rng, class);
        self.op = format!("create {name}: {config:?}");
        let start = self.tick();
        let r = block_on(self.engine().topic_put(name, config.clone()));
        let at = self.tick();
        match r {
            Ok(put) if put.created && put.config == config => {
                let info = self
                    .engine()
                    .topic_info(name, false)
                    .map_err(|e| format!("info after create: {e:?}"))?;
                let fsync = config.durability == Durability::Fsync;
                let t = Topic::new(name, info.id, config, at, fsync);
                self.marks.committed(t.shard, start, fsync);
                self.slots[slot] = Some(t);
                self.count("create done");
                Ok(())
            }
            Err(EngineError::Storage { .. }) if self.faults => {
                self.count("create Storage");
                expect_err(self.engine().topic_info(name, false), EngineError::NotFound)
            }
            r => Err(format!("create: {r:?}")),
        }
    }

    pub(super) fn op_remove(&mut self) -> Check {
        let slot = self.pick_slot();
        let name = NAMES[slot];
        let if_empty = self.rng.chance(30);
        self.op = format!("remove {name} (if empty: {if_empty})");
        // A removal that fails is not taken back in memory (only a restart tells): removals
        // run on a healthy disk.
        if self.faults {
            return Ok(());
        }
        self.settle(slot)?;
        let now = self.now();
        // A reader holding the topic open sees it go.
        let handle = self.engine().topic_open(name).ok();
        let start = self.tick();
        let r = block_on(self.engine().topic_remove(name, if_empty)).map(|r| r.existed);
        let Some(t) = self.slots[slot].as_ref() else {
            return match r {
                Ok(false) => Ok(()),
                r => Err(format!("remove of a missing topic: {r:?}")),
            };
        };
        if if_empty && t.st.view(now).count > 0 {
            return expect_err(r, EngineError::TopicNotEmpty);
        }
        match r {
            Ok(true) => {
                let h = handle.ok_or("no handle on a topic that exists")?;
                let q = riffle_engine::topic::DiffQuery {
                    from_seq: 0,
                    limit: 10,
                    nodes: Vec::new(),
                    max_bytes: 1 << 20,
                };
                if !h.is_removed() || h.diff(&q).err() != Some(EngineError::NotFound) {
                    return Err(format!("a handle on the removed {name} does not know"));
                }
                let shard = t.shard;
                self.marks.committed(shard, start, true);
                self.slots[slot] = None;
                self.count("remove done");
                Ok(())
            }
            r => Err(format!("remove: {r:?}")),
        }
    }

    pub(super) fn op_read(&mut self) -> Check {
        let slot = self.pick_slot();
        let name = NAMES[slot];
        self.settle(slot)?;
        let Some(t) = self.slots[slot].as_ref() else {
            self.op = format!("read missing {name}");
            let q = riffle_engine::topic::DiffQuery {
                from_seq: 0,
                limit: 10,
                nodes: Vec::new(),
                max_bytes: 1 << 20,
            };
            return expect_err(self.engine().topic_diff(name, &q), EngineError::NotFound);
        };
        let st = &t.st;
        let marks = [st.earliest, st.cap_floor, st.ttl_floor, st.head];
        let q = generate::query(&mut self.rng, st.head, &marks);
        let handle = self.rng.chance(25);
        self.op = format!("read {name} {q:?}{}", if handle { " (handle)" } else { "" });
        check_diff_via(self.engine(), name, &t.st, &q, self.now(), handle)?;
        self.count("read");
        Ok(())
    }

    pub(super) fn op_checkpoint(&mut self) -> Check {
        self.settle_all()?;
        self.op = "checkpoint".into();
        let start = self.tick();
        match self.engine().checkpoint() {
            Ok(()) => {
                self.marks.written = [start; 2];
                self.marks.synced = [start; 2];
                for t in self.slots.iter_mut().flatten() {
                    t.checkpointed();
                }
                self.count("checkpoint ok");
                Ok(())
            }
            Err(_) if self.faults => {
                self.count("checkpoint failed");
                Ok(())
            }
            Err(e) => Err(format!("checkpoint failed on a healthy disk: {e}")),
        }
    }

    pub(super) fn op_fault(&mut self) -> Check {
        let count = 1 + self.rng.below(2) as usize;
        let plan = &self.disk.plan;
        use riffle_engine::wal::Fault;
        let what = match self.rng.below(5) {
            0 => (plan.fail_writes("wal/", Fault::Eio, count), "eio").1,
            1 => (plan.fail_writes("wal/", Fault::NoSpace, count), "enospc").1,
            2 => (plan.fail_writes("wal/", Fault::Short, count), "short write").1,
            3 => (plan.fail_syncs("wal/", count), "failed sync").1,
            _ => {
                (
                    plan.fail_writes("checkpoint", Fault::Eio, count),
                    "checkpoint eio",
                )
                    .1
            }
        };
        self.op = format!("fault: {what} x{count}");
        self.faults = true;
        for t in self.slots.iter_mut().flatten() {
            for p in &mut t.queue {
                p.faulty = true;
            }
        }
        self.count("fault");
        Ok(())
    }

    pub(super) fn op_heal(&mut self) -> Check {
        self.op = "heal the disk".into();
        self.disk.plan.clear();
        self.faults = false;
        Ok(())
    }

    pub(super) fn op_clock(&mut self) -> Check {
        let ms = self.rng.pick(&[1, 10, 100, 700, 2_000, 4_000]);
        self.op = format!("clock +{ms} ms");
        self.clock.advance_ms(ms);
        Ok(())
    }

    /// The sweeper persists TTL trims (on a healthy disk: it reports no failures).
    pub(super) fn op_sweep(&mut self) -> Check {
        self.op = "sweep".into();
        if self.faults {
            return Ok(());
        }
        self.settle_all()?;
        let now = self.now();
        let start = self.tick();
        block_on(self.engine().sweep_topics());
        let at = self.tick();
        for t in self.slots.iter_mut().flatten() {
            if let Some(trim) = t.st.plan_sweep(now) {
                self.marks.committed(t.shard, start, false);
                t.push(Kind::Trim(trim), false, at);
                *self.stats.entry("sweep trimmed".into()).or_default() += 1;
            }
        }
        Ok(())
    }

    pub(super) fn op_list(&mut self) -> Check {
        self.op = "list".into();
        let want: Vec<&str> = (0..NAMES.len())
            .filter(|&s| self.slots[s].is_some())
            .map(|s| NAMES[s])
            .collect();
        let (got, more) = self.engine().topic_list("t", None, 100);
        let names: Vec<&str> = got.iter().map(|i| i.name.as_str()).collect();
        if names != want || more || self.engine().topic_count() != want.len() {
            return Err(format!(
                "listed {names:?} (more: {more}), the model has {want:?}"
            ));
        }
        Ok(())
    }

    /// Every name answers as the model says (topics with writes pending are checked once
    /// they settle).
    pub(super) fn check_all(&mut self) -> Check {
        let now = self.now();
        let live = self.slots.iter().flatten().count();
        if self.engine().topic_count() != live {
            return Err(format!(
                "{} topics, the model has {live}",
                self.engine().topic_count()
            ));
        }
        for (slot, name) in NAMES.iter().enumerate() {
            match &self.slots[slot] {
                None => expect_err(self.engine().topic_info(name, false), EngineError::NotFound)
                    .map_err(|e| format!("info {name}: {e}"))?,
                Some(t) if t.quiet() => {
                    let info = self
                        .engine()
                        .topic_info(name, false)
                        .map_err(|e| format!("info {name}: {e:?} (the model: {:?})", t.st))?;
                    check_topic(self.engine(), name, t.id, &t.st, &info, now)?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub(super) fn op_crash(&mut self) -> Check {
        let how = if self.rng.chance(50) {
            Crash::Process
        } else {
            Crash::Power
        };
        self.op = format!("crash ({how:?})");
        self.crash(how)
    }

    pub(super) fn crash(&mut self, how: Crash) -> Check {
        // The machine goes down first; the requests in flight die with the process.
        self.disk.plan.halt();
        for f in std::mem::take(&mut self.flights) {
            drop(f.fut);
            self.dropped(f.slot, f.n);
        }
        crate::disk::crash(&mut self.disk, self.engine.take().expect("up"), how);
        self.faults = false;
        self.clock.advance_ms(1_000);
        self.engine = Some(self.open()?);
        self.count(format!("crash {how:?}"));
        recover::reconcile(self, how)
    }

    /// A clean shutdown and restart: everything comes back as it was (`ephemeral` records
    /// aside).
    pub(super) fn op_restart(&mut self) -> Check {
        self.op = "restart".into();
        if self.faults {
            return Ok(());
        }
        self.settle_all()?;
        let start = self.tick();
        self.engine()
            .close()
            .map_err(|e| format!("clean shutdown: {e}"))?;
        self.marks.synced = [start; 2];
        for t in self.slots.iter_mut().flatten() {
            t.checkpointed();
        }
        drop(self.engine.take());
        self.disk.reboot();
        self.clock.advance_ms(1_000);
        self.engine = Some(self.open()?);
        self.count("restart");
        recover::reconcile(self, Crash::Process)
    }
}
