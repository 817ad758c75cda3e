//! A seeded simulation of the engine on a disk that fails and loses power (see
//! `simulation.rs` for what it covers and the rules per durability class).

pub mod disk;
mod generate;
pub mod oracle;
mod recover;

use crate::common::{Model, Rng, same_error};
use disk::{AppendFuture, Crash, Disk, append_future, block_on, open_engine, pause, poll_once};
use oracle::{Attempt, Outcome, Track, apply_answered, apply_dropped, prefix_consistent};
use riffle_engine::{CreateSpec, Durability, Engine, EngineError, ReadFrom};
use std::collections::BTreeMap;
use std::time::Instant;

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
/// Small, so that logs fill up and `StreamFull` is exercised too.
pub const MAX_STREAM: u64 = 240;
const CLASSES: [Durability; 4] = [
    Durability::Ephemeral,
    Durability::Memory,
    Durability::Disk,
    Durability::Fsync,
];
const BYTE_TYPES: [&str; 3] = [
    "text/plain",
    "Text/Plain; charset=utf-8",
    "application/x-sim",
];
const JSON: &str = "application/json";
const PRODUCERS: [&str; 2] = ["p", "q"];

/// An append whose future is still held (started, not answered, not dropped).
struct Flight {
    log: usize,
    n: u64,
    fut: AppendFuture,
}

pub struct Run {
    pub step: usize,
    /// What the current step does, for failure messages.
    pub op: String,
    rng: Rng,
    disk: Disk,
    engine: Option<Engine>,
    model: Model,
    /// Parallel to `model.logs`.
    tracks: Vec<Track>,
    flights: Vec<Flight>,
    next_n: u64,
    /// Counts drops and checkpoints: a dropped append is sealed by a checkpoint after it.
    events: u64,
    sealed_before: u64,
    /// Faults were armed since the last heal or crash.
    faults: bool,
    /// Producer tuples of dropped appends, and whether they committed.
    dropped_claims: std::collections::HashMap<(usize, String, u64, u64), &'static str>,
    /// Creates that failed once a torn write had taken the machine down.
    dying_creates: Vec<(&'static str, CreateSpec)>,
    engines: i64,
    /// How often each kind of outcome happened, to check what the runs covered.
    pub stats: BTreeMap<String, usize>,
}

type Check = Result<(), String>;

impl Run {
    pub fn new(seed: u64) -> Self {
        let mut disk = Disk::new();
        // Most seeds never let the timer fire (no wall-clock dependence); every fourth one
        // syncs `disk`-class records within 2 ms, and so also fails those syncs.
        if !seed.is_multiple_of(4) {
            disk.sync_interval = std::time::Duration::from_secs(3600);
        }
        let engine = open_engine(&disk, 1_000_000, MAX_STREAM, Durability::Fsync).expect("open");
        Self {
            step: 0,
            op: String::new(),
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            disk,
            engine: Some(engine),
            model: Model {
                storage: true,
                max_stream: MAX_STREAM,
                default_durability: Durability::Fsync,
                logs: Vec::new(),
                names: Default::default(),
                changed: Vec::new(),
            },
            tracks: Vec::new(),
            flights: Vec::new(),
            next_n: 1,
            events: 0,
            sealed_before: 0,
            faults: false,
            dying_creates: Vec::new(),
            dropped_claims: Default::default(),
            engines: 1,
            stats: BTreeMap::new(),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is up")
    }

    fn count(&mut self, kind: impl Into<String>) {
        *self.stats.entry(kind.into()).or_default() += 1;
    }

    fn count_result<T>(&mut self, op: &str, r: &Result<T, EngineError>, ok: &str) {
        let kind = match r {
            Ok(_) => format!("{op} {ok}"),
            Err(e) => {
                let e = format!("{e:?}");
                format!(
                    "{op} {}",
                    e.split([' ', '(', '{']).next().unwrap_or_default()
                )
            }
        };
        self.count(kind);
    }

    pub fn run(&mut self, steps: usize) {
        let trace = std::env::var_os("SIM_TRACE").is_some();
        for step in 0..steps {
            self.step = step;
            let r = self.one_step();
            if trace {
                eprintln!("step {step}: {}", self.op);
            }
            // A torn write took the machine down: nothing can be read until it crashes.
            let down = self.disk.plan.is_down();
            let r = r.and_then(|()| if down { Ok(()) } else { self.resolve() });
            let r = r.and_then(|()| if down { Ok(()) } else { self.check_all() });
            match r {
                // The WAL thread tore a write while this step was checking: the next step
                // crashes the machine and checks everything after recovery.
                Err(e) if e.contains("the machine is down") && self.disk.plan.is_down() => {}
                Err(e) => panic!("({}): {e}", self.op),
                Ok(()) => {}
            }
        }
        self.step = steps;
        self.op = "final drive".into();
        let r = self.heal().and_then(|()| self.drive_all());
        // A torn write (armed before the heal) may have taken the machine down.
        let r = r.and_then(|()| {
            if self.disk.plan.is_down() {
                self.op_crash()
            } else {
                Ok(())
            }
        });
        let r = r
            .and_then(|()| self.resolve())
            .and_then(|()| self.check_all());
        if let Err(e) = r {
            panic!("at the end ({}): {e}", self.op);
        }
    }

    fn one_step(&mut self) -> Check {
        if self.disk.plan.is_down() {
            // A torn write took the machine down: the only way on is a crash.
            return self.op_crash();
        }
        match self.rng.below(100) {
            0..=43 => self.op_append(),
            44..=53 => self.op_poll(),
            54..=57 => self.drive_all_op(),
            58..=63 => self.op_drop(),
            64..=72 => self.op_create(),
            73..=74 => self.op_delete(),
            75..=82 => self.op_read(),
            83..=86 => self.op_fault(),
            87..=89 => self.heal(),
            90..=92 => self.op_checkpoint(),
            93..=94 => self.op_crash(),
            95 => self.op_restart(),
            _ => self.drive_all_op(),
        }
    }

    /// One to three appends to one log, as a client pipelining them would send.
    fn op_append(&mut self) -> Check {
        if self.model.names.is_empty() && self.rng.chance(80) {
            return self.op_create();
        }
        let name = self.pick_name();
        let mut ops = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            self.append_one(name)?;
            ops.push(std::mem::take(&mut self.op));
        }
        self.op = ops.join("; ");
        Ok(())
    }

    fn append_one(&mut self, name: &'static str) -> Check {
        let live = self.model.live(name);
        let req = self.random_append(live.as_ref().ok().copied());
        let n = self.next_n - 1;
        self.op = format!("append #{n} to {name}: {req:?}");
        let mut fut = append_future(self.engine(), name, req.clone());
        // The first poll validates it (or queues it behind the log's earlier appends): this
        // fixes its place in the log's order.
        let first = poll_once(&mut fut);
        let i = match live {
            Err(want) => {
                let got = first.ok_or("an append to a missing log did not answer at once")?;
                self.count_result("append", &got, "");
                return expect_err(got, &want);
            }
            Ok(i) => i,
        };
        let close_only = req.payload.is_empty();
        let outcome = first.map_or(Outcome::InFlight, |r| self.outcome(r));
        self.tracks[i].queue.push_back(Attempt {
            n,
            req,
            outcome,
            faulty: self.faults,
        });
        if matches!(
            self.tracks[i].queue.back().unwrap().outcome,
            Outcome::InFlight
        ) {
            self.flights.push(Flight { log: i, n, fut });
            if close_only {
                // Close-only appends carry no bytes to tell later whether they committed:
                // they are always seen through.
                self.drive_all()?;
            }
        }
        Ok(())
    }

    /// Record an answer of a flight.
    fn answered(&mut self, log: usize, n: u64, r: Result<riffle_engine::Appended, EngineError>) {
        let status = match &r {
            Ok(a) => format!("{:?}", a.status),
            Err(_) => String::new(),
        };
        self.count_result("append", &r, &status);
        let outcome = self.outcome(r);
        if let Some(a) = self.tracks[log].queue.iter_mut().find(|a| a.n == n) {
            a.outcome = outcome;
        }
    }

    /// An answer given once a torn write took the machine down would never reach a client
    /// (the power is off; `FaultDir` only stops the disk): such an append's outcome is
    /// unknown. A failed one's bytes may well be whole on the disk, ahead of the torn record,
    /// and come back after the crash; one answered from memory (a duplicate) saw a state
    /// without them.
    fn outcome(&mut self, r: Result<riffle_engine::Appended, EngineError>) -> Outcome {
        match r {
            _ if self.disk.plan.is_down() => {
                self.events += 1;
                Outcome::Dropped {
                    at: self.events - 1,
                }
            }
            r => Outcome::Answered(r),
        }
    }

    /// Poll every held append once.
    fn poll_all(&mut self) -> bool {
        let mut i = 0;
        while i < self.flights.len() {
            match poll_once(&mut self.flights[i].fut) {
                Some(r) => {
                    let f = self.flights.remove(i);
                    self.answered(f.log, f.n, r);
                }
                None => i += 1,
            }
        }
        self.flights.is_empty()
    }

    fn op_poll(&mut self) -> Check {
        self.op = format!("poll {} appends", self.flights.len());
        self.poll_all();
        Ok(())
    }

    fn drive_all_op(&mut self) -> Check {
        self.op = format!("drive {} appends", self.flights.len());
        self.drive_all()
    }

    /// Poll every held append until all have answered.
    fn drive_all(&mut self) -> Check {
        let start = Instant::now();
        while !self.poll_all() {
            if start.elapsed() > disk::LIVENESS {
                let stuck: Vec<u64> = self.flights.iter().map(|f| f.n).collect();
                return Err(format!("appends {stuck:?} never answered"));
            }
            pause();
        }
        Ok(())
    }

    /// Drop a held append after a few more polls: a client that gave up (an HTTP/2 stream
    /// reset). Whether it committed is learnt later.
    fn op_drop(&mut self) -> Check {
        if self.flights.is_empty() {
            self.op = "drop: none held".into();
            return Ok(());
        }
        let k = self.rng.below(self.flights.len() as u64) as usize;
        for _ in 0..self.rng.below(3) {
            if let Some(r) = poll_once(&mut self.flights[k].fut) {
                let f = self.flights.remove(k);
                self.op = format!("drop #{}: it answered first", f.n);
                self.answered(f.log, f.n, r);
                return Ok(());
            }
            pause();
        }
        let f = self.flights.remove(k);
        self.op = format!("drop #{}", f.n);
        drop(f.fut);
        if let Some(a) = self.tracks[f.log].queue.iter_mut().find(|a| a.n == f.n) {
            a.outcome = Outcome::Dropped { at: self.events };
        }
        self.events += 1;
        self.count("append dropped");
        Ok(())
    }

    /// Settle what can be settled: answered appends, and dropped ones that are sealed.
    fn resolve(&mut self) -> Check {
        if self.disk.plan.is_down() {
            return Ok(());
        }
        for i in 0..self.tracks.len() {
            if self.model.logs[i].removed {
                // Gone with its log (an ephemeral log at a crash): nothing left to settle.
                self.tracks[i].queue.clear();
                continue;
            }
            while let Some(head) = self.tracks[i].queue.front() {
                let present = match &head.outcome {
                    Outcome::InFlight => break,
                    Outcome::Answered(_) => None,
                    Outcome::Dropped { at } => {
                        let later_answered =
                            self.tracks[i].queue.iter().skip(1).any(Attempt::seals);
                        if *at >= self.sealed_before && !later_answered {
                            break;
                        }
                        Some(self.stored(i, head.token())?)
                    }
                };
                let a = self.tracks[i].queue.pop_front().unwrap();
                let (model, track) = (&mut self.model, &mut self.tracks[i]);
                let claim = a.req.producer.as_ref();
                let key = claim.map(|c| (i, c.id.clone(), c.epoch, c.seq));
                match (&a.outcome, present) {
                    (Outcome::Answered(got), _) => {
                        apply_answered(model, track, i, &a, got)?;
                        // A retry of a dropped append's tuple (checked by the model: a
                        // duplicate exactly when the dropped one committed).
                        if let (Some(key), Ok(got)) = (&key, got)
                            && let Some(committed) = self.dropped_claims.get(key)
                        {
                            let kind =
                                format!("retry of a dropped {committed} append {:?}", got.status);
                            self.count(kind);
                        }
                    }
                    (_, Some(present)) => {
                        apply_dropped(model, track, i, &a, present)?;
                        let kind = if present { "committed" } else { "lost" };
                        self.count(format!("dropped append {kind}"));
                        if let Some(key) = key {
                            self.dropped_claims.insert(key, kind);
                        }
                    }
                    _ => unreachable!(),
                }
            }
        }
        self.model.changed.clear();
        Ok(())
    }

    /// Whether log `i`'s own bytes hold `token`.
    fn stored(&self, i: usize, token: &[u8]) -> Result<bool, String> {
        let log = &self.model.logs[i];
        let data = self.read_all(log.name)?;
        let own = data.get(log.upto as usize..).unwrap_or_default();
        Ok(own.windows(token.len()).any(|w| w == token))
    }

    fn read_all(&self, name: &str) -> Result<Vec<u8>, String> {
        let h = self
            .engine()
            .open(name)
            .map_err(|e| format!("open {name}: {e:?}"))?;
        let b = h
            .read(ReadFrom::Start, usize::MAX)
            .map_err(|e| format!("read {name}: {e:?}"))?;
        if !b.up_to_date {
            return Err(format!("a whole read of {name} stopped at {}", b.next));
        }
        Ok(b.chunks.concat())
    }

    /// Every name answers as the model says: exactly for logs with nothing pending, and for
    /// the others, their resolved state followed by some of their pending appends, in order.
    fn check_all(&mut self) -> Check {
        let engine = self.engine();
        if engine.log_count() != self.model.names.len() {
            return Err(format!(
                "{} logs, the model has {:?}",
                engine.log_count(),
                self.model.names
            ));
        }
        for name in NAMES {
            let i = match self.model.live(name) {
                Err(want) => {
                    expect_err(engine.info(name), &want)
                        .map_err(|e| format!("info {name}: {e}"))?;
                    continue;
                }
                Ok(i) => i,
            };
            let log = &self.model.logs[i];
            let info = engine
                .info(name)
                .map_err(|e| format!("info {name}: {e:?}"))?;
            let data = self.read_all(name)?;
            let track = &self.tracks[i];
            let same = info.id == log.id
                && info.durability == log.durability
                && *info.content_type == log.content_type
                && info.framing == log.framing;
            if !same {
                return Err(format!("{name}: {info:?}, the model has {log:?}"));
            }
            if track.quiet() {
                if data != log.data || info.next != log.tail() || info.closed != log.closed {
                    return Err(format!(
                        "{name}: next {} closed {} data {:?}; the model: {log:?} {:?}",
                        info.next,
                        info.closed,
                        String::from_utf8_lossy(&data),
                        String::from_utf8_lossy(&log.data)
                    ));
                }
            } else {
                let queue: Vec<&Attempt> = track.queue.iter().collect();
                prefix_consistent(&data, &log.data, &queue).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        Ok(())
    }

    /// A read at a random offset of a log with nothing pending.
    fn op_read(&mut self) -> Check {
        let name = self.pick_name();
        self.op = format!("read {name}");
        let Ok(i) = self.model.live(name) else {
            return Ok(());
        };
        if !self.tracks[i].quiet() {
            return Ok(());
        }
        let log = &self.model.logs[i];
        let from = if self.rng.chance(50) {
            let b = &log.bounds;
            if b.is_empty() {
                0
            } else {
                b[self.rng.below(b.len() as u64) as usize]
            }
        } else {
            self.rng.below(log.tail() + 3)
        };
        let max = self.rng.below(40) as usize;
        self.op = format!("read {name} at {from} max {max}");
        let got = self
            .engine()
            .open(name)
            .map_err(|e| format!("open: {e:?}"))?
            .read(ReadFrom::At(from), max);
        let log = &self.model.logs[i];
        if from > log.tail() {
            return expect_err(
                got,
                &EngineError::OffsetBeyondTail {
                    offset: from,
                    tail: log.tail(),
                },
            );
        }
        if !log.is_boundary(from) {
            return expect_err(got, &EngineError::OffsetInsideMessage { offset: from });
        }
        let b = match got {
            Err(EngineError::Storage { .. }) if self.disk.plan.is_down() => return Ok(()),
            got => got.map_err(|e| format!("{e:?}"))?,
        };
        let next = log.read_end(from, max);
        let want = &log.data[from as usize..next as usize];
        if (b.start, b.next) != (from, next) || b.chunks.concat() != want {
            return Err(format!(
                "read [{}, {}) {:?}, the model has [{from}, {next}) {:?}",
                b.start,
                b.next,
                b.chunks.concat(),
                want
            ));
        }
        self.count("read");
        Ok(())
    }

    /// Whether `name`'s log (if any) has nothing pending, after seeing its appends through.
    fn settle(&mut self, name: &str) -> Result<bool, String> {
        let Some(&i) = self.model.names.get(name) else {
            return Ok(true);
        };
        if self.flights.iter().any(|f| f.log == i) {
            self.drive_all()?;
        }
        self.resolve()?;
        Ok(self.tracks[i].quiet())
    }

    fn op_create(&mut self) -> Check {
        // Mostly a free name (a taken one answers "exists" or a mismatch).
        let free: Vec<&'static str> = NAMES
            .into_iter()
            .filter(|n| !self.model.names.contains_key(n))
            .collect();
        if free.is_empty() && self.rng.chance(50) {
            return self.op_delete();
        }
        let name = if free.is_empty() || self.rng.chance(30) {
            self.rng.pick(&NAMES)
        } else {
            self.rng.pick(&free)
        };
        let spec = self.random_spec();
        self.op = format!("create {name} {spec:?}");
        // The model must know the exact state of the log and of the fork's source.
        if !self.settle(name)? {
            return Ok(());
        }
        if let Some(f) = &spec.fork
            && !self.settle(&f.source.clone())?
        {
            return Ok(());
        }
        let want = self.model.create(name, &spec);
        let got = block_on(self.engine().create(name, spec.clone()));
        let created = match &got {
            Ok(c) if c.created => "new",
            _ => "existing",
        };
        self.count_result("create", &got, created);
        match (want, got) {
            (Err(want), got) => expect_err(got, &want),
            (Ok((i, true)), Err(EngineError::Storage { .. })) if self.faults => {
                if self.disk.plan.is_down() {
                    // As for appends: unknown, its record may come back after the crash.
                    self.dying_creates.push((name, spec));
                }
                // Taken back: nothing of it remains.
                self.model.names.remove(name);
                if let Some(s) = self.model.logs[i].source {
                    self.model.logs[s].fork_refs -= 1;
                }
                self.model.logs.pop();
                Ok(())
            }
            (Ok((i, created)), Ok(got)) => {
                if created {
                    self.model.logs[i].id = got.info.id;
                    self.tracks.push(Track::new(&self.model.logs[i]));
                }
                let log = &self.model.logs[i];
                if got.created != created
                    || got.info.next != log.tail()
                    || got.info.closed != log.closed
                {
                    return Err(format!("created {got:?}; the model: {created} {log:?}"));
                }
                Ok(())
            }
            (Ok(want), Err(got)) => {
                Err(format!("the model creates ({want:?}), the engine: {got:?}"))
            }
        }
    }

    fn op_delete(&mut self) -> Check {
        let name = self.pick_name();
        self.op = format!("delete {name}");
        // A delete that fails on a faulty disk is not taken back in memory (only a restart
        // would tell): deletes run on a healthy disk only.
        if self.faults || !self.settle(name)? {
            return Ok(());
        }
        let want = self.model.delete(name);
        let got = block_on(self.engine().delete(name));
        self.count_result("delete", &got, "done");
        match (want, got) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(w), got) => expect_err(got, &w),
            (Ok(()), Err(e)) => Err(format!("delete failed: {e:?}")),
        }
    }

    fn op_fault(&mut self) -> Check {
        let kinds = if self.rng.chance(15) { 8 } else { 7 };
        let kind = self.rng.below(kinds);
        let count = 1 + self.rng.below(2) as usize;
        self.op = format!("fault: {}", disk::arm(&self.disk.plan, kind, count));
        self.faults = true;
        for t in &mut self.tracks {
            for a in &mut t.queue {
                if matches!(a.outcome, Outcome::InFlight) {
                    a.faulty = true;
                }
            }
        }
        self.count("fault");
        Ok(())
    }

    fn heal(&mut self) -> Check {
        if !self.disk.plan.is_down() {
            self.op = "heal the disk".into();
            self.disk.plan.clear();
            self.faults = false;
        }
        Ok(())
    }

    fn op_checkpoint(&mut self) -> Check {
        self.op = "checkpoint".into();
        match self.engine().checkpoint() {
            Ok(()) => {
                // Every WAL record queued before it has been written and applied.
                self.sealed_before = self.events;
                self.events += 1;
                for (i, t) in self.tracks.iter_mut().enumerate() {
                    if !self.model.logs[i].removed {
                        t.ckpt = Some(t.hist.len() - 1);
                    }
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

    /// A clean shutdown and restart: everything persistent comes back exactly.
    fn op_restart(&mut self) -> Check {
        self.op = "restart".into();
        if self.faults {
            return Ok(());
        }
        self.drive_all()?;
        self.engine()
            .close()
            .map_err(|e| format!("clean shutdown: {e}"))?;
        self.sealed_before = self.events;
        self.events += 1;
        self.resolve()?;
        if let Some(t) = self.tracks.iter().find(|t| !t.quiet()) {
            return Err(format!("unresolved after a clean shutdown: {:?}", t.queue));
        }
        self.check_all()?;
        drop(self.engine.take());
        self.disk.reboot();
        self.reopen()?;
        self.model.restart();
        for (i, t) in self.tracks.iter_mut().enumerate() {
            t.ckpt = Some(t.hist.len() - 1);
            let _ = i;
        }
        self.count("restart");
        Ok(())
    }

    fn reopen(&mut self) -> Check {
        self.engines += 1;
        let start = 1_000_000 + self.engines * 1_000;
        let e = open_engine(&self.disk, start, MAX_STREAM, Durability::Fsync).map_err(|e| {
            let logs: Vec<String> = (self.model.logs.iter())
                .map(|l| format!("{:x}: {} {}", l.id, l.name, l.durability))
                .collect();
            let dir = &self.disk.dir;
            let files: Vec<String> = ["wal/00", "wal/01"]
                .iter()
                .flat_map(|d| dir.list(d).unwrap_or_default())
                .map(|p| {
                    format!(
                        "{p}: {}",
                        dir.open(&p, false).and_then(|f| f.len()).unwrap_or(0)
                    )
                })
                .collect();
            format!("recovery refused: {e} (logs: {logs:?}; files: {files:?})")
        })?;
        self.engine = Some(e);
        Ok(())
    }

    fn op_crash(&mut self) -> Check {
        let how = if self.rng.chance(50) {
            Crash::Process
        } else {
            Crash::Power
        };
        self.op = format!("crash ({how:?})");
        // The machine goes down first, so that nothing more reaches the disk; the process's
        // requests die with it.
        self.disk.plan.halt();
        for f in std::mem::take(&mut self.flights) {
            if let Some(a) = self.tracks[f.log].queue.iter_mut().find(|a| a.n == f.n) {
                a.outcome = Outcome::Dropped { at: self.events };
            }
        }
        disk::crash(&mut self.disk, self.engine.take().unwrap(), how);
        self.events += 1;
        self.faults = false;
        self.reopen()?;
        self.model.restart();
        self.count(format!("crash {how:?}"));
        recover::reconcile(self, how)
    }
}

fn expect_err<T: std::fmt::Debug>(got: Result<T, EngineError>, want: &EngineError) -> Check {
    match got {
        Err(e) if same_error(&e, want) => Ok(()),
        other => Err(format!("expected {want:?}, got {other:?}")),
    }
}
