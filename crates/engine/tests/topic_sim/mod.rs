//! A seeded simulation of topics on a disk that fails and loses power (see
//! `topic_simulation.rs` for what it covers, `track.rs` for how writes of unknown outcome are
//! settled and `recover.rs` for the rules per class after a crash).

pub mod check;
mod generate;
pub mod model;
mod ops;
mod recover;
pub mod track;
mod writes;

use crate::common::Rng;
use crate::disk::Disk;
use riffle_engine::topic::TopicWritten;
use riffle_engine::{Engine, EngineConfig, EngineError, ManualClock, StorageConfig};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use track::{Marks, Topic};

pub const NAMES: [&str; 4] = ["t0", "t1", "t2", "t3"];

type WriteFuture = Pin<Box<dyn Future<Output = Result<TopicWritten, EngineError>> + Send>>;

/// A write whose future is still held.
struct Flight {
    slot: usize,
    n: u64,
    fut: WriteFuture,
}

pub type Check = Result<(), String>;

/// Whether `SIM_STRICT`'s value `strict` makes the known problem `kind` a failure.
pub fn is_strict(strict: Option<&str>, kind: &str) -> bool {
    strict.is_some_and(|s| s == "1" || kind.contains(s))
}

pub fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

pub struct Run {
    pub step: usize,
    /// What the current step does, for traces and failure messages.
    pub op: String,
    rng: Rng,
    disk: Disk,
    clock: Arc<ManualClock>,
    engine: Option<Engine>,
    /// The topic of each name, if the model says it exists.
    slots: Vec<Option<Topic>>,
    flights: Vec<Flight>,
    next_n: u64,
    /// Counts events (first polls, answers, drops, checkpoints): orders WAL submissions.
    stamp: u64,
    marks: Marks,
    /// Faults are armed.
    faults: bool,
    /// Known engine problems that fail the run instead of being counted: all with `""`, those
    /// whose description contains the text otherwise.
    strict: Option<String>,
    pub stats: BTreeMap<String, usize>,
}

impl Run {
    pub fn new(seed: u64, strict: Option<String>) -> Self {
        let mut disk = Disk::new();
        // Most seeds never let the WAL's timer fire (no wall-clock dependence); every fourth
        // one syncs `disk`-class records within 2 ms.
        if !seed.is_multiple_of(4) {
            disk.sync_interval = std::time::Duration::from_secs(3600);
        }
        let mut run = Self {
            step: 0,
            op: String::new(),
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            disk,
            clock: Arc::new(ManualClock::new(1_000_000)),
            engine: None,
            slots: NAMES.iter().map(|_| None).collect(),
            flights: Vec::new(),
            next_n: 1,
            stamp: 0,
            marks: Marks::default(),
            faults: false,
            strict,
            stats: BTreeMap::new(),
        };
        run.engine = Some(run.open().expect("open"));
        run
    }

    fn open(&self) -> Result<Engine, String> {
        let mut storage = StorageConfig::new(self.disk.dir.clone());
        storage.shards = 2;
        storage.sync_interval = self.disk.sync_interval;
        Engine::recover(EngineConfig::default(), self.clock.clone(), storage)
            .map(|(e, _)| e)
            .map_err(|e| format!("recovery refused: {e}"))
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is up")
    }

    fn now(&self) -> i64 {
        use riffle_engine::Clock;
        self.clock.now_ms()
    }

    fn tick(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    pub fn count(&mut self, kind: impl Into<String>) {
        *self.stats.entry(kind.into()).or_default() += 1;
    }

    /// Whether the known problem `kind` fails the run.
    pub fn strict(&self, kind: &str) -> bool {
        is_strict(self.strict.as_deref(), kind)
    }

    /// A known engine problem showed: counted, or (strict) a failure.
    pub fn known(&mut self, kind: &str, what: String) -> Check {
        if self.strict(kind) {
            return Err(format!("[known: {kind}] {what}"));
        }
        self.count(format!("known bug: {kind}"));
        Ok(())
    }

    fn topic(&self, slot: usize) -> Option<&Topic> {
        self.slots[slot].as_ref()
    }

    fn pick_slot(&mut self) -> usize {
        self.rng.below(NAMES.len() as u64) as usize
    }

    pub fn run(&mut self, steps: usize) {
        let trace = std::env::var_os("SIM_TRACE").is_some();
        let watch = std::env::var("SIM_TRACE_TOPIC").ok();
        for step in 0..steps {
            self.step = step;
            let r = self.one_step();
            if trace {
                eprintln!("step {step}: {}", self.op);
            }
            if let Some(t) = watch.as_deref().and_then(|w| {
                let slot = NAMES.iter().position(|n| *n == w)?;
                self.slots[slot].as_ref()
            }) {
                let st = &t.st;
                eprintln!(
                    "  {}: {} head {} earliest {} floors {}/{} live {:?} pending {}",
                    t.name,
                    st.config.durability,
                    st.head,
                    st.earliest,
                    st.cap_floor,
                    st.ttl_floor,
                    st.recs
                        .iter()
                        .map(|(s, r)| (*s, r.size()))
                        .collect::<Vec<_>>(),
                    t.queue.len()
                );
            }
            let r = r.and_then(|()| self.resolve_all());
            let r = r.and_then(|()| self.check_all());
            if let Err(e) = r {
                panic!("({}): {e}", self.op);
            }
        }
        self.step = steps;
        self.op = "final settle".into();
        let r = self
            .op_heal()
            .and_then(|()| self.settle_all())
            .and_then(|()| self.check_all())
            .and_then(|()| self.op_restart());
        if let Err(e) = r {
            panic!("at the end ({}): {e}", self.op);
        }
    }

    fn one_step(&mut self) -> Check {
        match self.rng.below(100) {
            0..=37 => self.op_write(),
            38..=44 => self.op_poll(),
            45..=48 => self.op_drive(),
            49..=52 => self.op_drop(),
            53..=59 => self.op_delete(),
            60..=64 => self.op_config(),
            65..=71 => self.op_read(),
            72..=73 => self.op_remove(),
            74..=76 => self.op_create(),
            77..=79 => self.op_checkpoint(),
            80..=82 => self.op_fault(),
            83..=85 => self.op_heal(),
            86..=89 => self.op_clock(),
            90..=91 => self.op_sweep(),
            92..=94 => self.op_crash(),
            95 => self.op_restart(),
            _ => self.op_list(),
        }
    }
}

pub fn error_kind(e: &EngineError) -> String {
    format!("{e:?}")
        .split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn expect_err<T: std::fmt::Debug>(got: Result<T, EngineError>, want: EngineError) -> Check {
    match got {
        Err(e) if e == want => Ok(()),
        other => Err(format!("expected {want:?}, got {other:?}")),
    }
}
