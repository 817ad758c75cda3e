//! A deterministic randomized test against a reference model.
//!
//! Thousands of random creates (plain and forks), appends (with random producers, `Stream-Seq`s,
//! content types and closes), reads, deletes and waits run on a handful of names, both on the
//! engine and on a simple model: per log a byte vector, its record boundaries, a closed flag
//! and the producer map. After every step every result and error must match the model, every
//! live log must read exactly as the model says, and every held handle must be woken exactly
//! when its log changed.
//!
//! The same model also runs against an engine on (in-memory) storage, with logs of every
//! durability class and clean restarts in between: a restart must bring back exactly the
//! persistent logs, with their data, producer state, `Stream-Seq`, closure and fork structure.
//! And with `fsync`-class and ephemeral logs only, the restarts may be crashes (power loss):
//! everything acknowledged must still come back exactly.
//!
//! The model itself is in `common/`, shared with the simulation (`simulation.rs`).

mod common;

use bytes::Bytes;
use common::{Ack, Model, Rng, check_err};
use riffle_engine::wal::{Dir, Fault, FaultDir, FaultPlan, MemDir};
use riffle_engine::{
    AppendRequest, CreateSpec, Durability, Engine, EngineConfig, EngineError, ForkSpec, Framing,
    LogHandle, ManualClock, Payload, ProducerClaim, ReadFrom, StorageConfig,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Waker};

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// Content types as a client may write them, and their comparable keys.
const TYPES: [(&str, &str); 4] = [
    ("text/plain", "text/plain"),
    ("Text/Plain; charset=utf-8", "text/plain"),
    ("application/x-riffle", "application/x-riffle"),
    ("APPLICATION/X-RIFFLE;v=1", "application/x-riffle"),
];
const PRODUCERS: [&str; 3] = ["p", "q", "r"];
const MAX_STREAM: u64 = 48;
const MAX_HANDLES: usize = 8;
const CLASSES: [Durability; 4] = [
    Durability::Ephemeral,
    Durability::Memory,
    Durability::Disk,
    Durability::Fsync,
];

/// Poll a future once: whether it is ready without waiting. Outside tokio's cooperative
/// budget, which this never-yielding test would exhaust (and then see `Pending` spuriously).
fn ready_now(fut: impl Future<Output = ()>) -> bool {
    let mut fut = std::pin::pin!(tokio::task::unconstrained(fut));
    let mut cx = Context::from_waker(Waker::noop());
    fut.as_mut().poll(&mut cx).is_ready()
}

fn open_engine(dir: Option<&Arc<dyn Dir>>, default_durability: Durability) -> Engine {
    // Each engine starts a second after the previous one, as after a real restart: the engine
    // seeds its ids from the clock, and only the clock keeps ids of logs that a crash lost from
    // being handed out again.
    static NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1_000_000);
    let start = NOW.fetch_add(1_000, std::sync::atomic::Ordering::SeqCst);
    let clock = Arc::new(ManualClock::new(start));
    let config = EngineConfig {
        max_stream_bytes: MAX_STREAM,
        default_durability,
        ..EngineConfig::default()
    };
    let Some(dir) = dir else {
        return Engine::new(config, clock);
    };
    let mut storage = StorageConfig::new(dir.clone());
    storage.shards = 2;
    storage.sync_interval = std::time::Duration::from_millis(1);
    Engine::recover(config, clock, storage).expect("recovery").0
}

struct Held {
    log: usize,
    handle: LogHandle,
    dirty: bool,
}

/// What the engine under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No storage: every log is ephemeral.
    NoStorage,
    /// Storage, every class, clean restarts.
    Storage,
    /// Storage, `fsync`-class and ephemeral logs only, crashes.
    Crash,
}

/// An in-memory disk that can lose power.
struct Disk {
    mem: MemDir,
    plan: FaultPlan,
    dir: Arc<dyn Dir>,
}

struct Run {
    rng: Rng,
    engine: Engine,
    mode: Mode,
    disk: Option<Disk>,
    model: Model,
    held: Vec<Held>,
    max_id: Option<u64>,
    step: usize,
    /// What the current step did, for failure messages.
    op: String,
    /// How often each kind of outcome was expected, to check what the runs covered.
    outcomes: HashMap<String, usize>,
}

impl Run {
    fn new(seed: u64, mode: Mode) -> Self {
        let disk = (mode != Mode::NoStorage).then(|| {
            let mem = MemDir::new();
            let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
            Disk {
                mem,
                plan,
                dir: Arc::new(fault),
            }
        });
        let default_durability = match mode {
            Mode::NoStorage => Durability::Ephemeral,
            Mode::Storage => Durability::Memory,
            Mode::Crash => Durability::Fsync,
        };
        Self {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            engine: open_engine(disk.as_ref().map(|d| &d.dir), default_durability),
            mode,
            disk,
            model: Model {
                storage: mode != Mode::NoStorage,
                max_stream: MAX_STREAM,
                default_durability,
                logs: Vec::new(),
                names: HashMap::new(),
                changed: Vec::new(),
            },
            held: Vec::new(),
            max_id: None,
            step: 0,
            op: String::new(),
            outcomes: HashMap::new(),
        }
    }

    fn count<T: std::fmt::Debug>(&mut self, op: &str, outcome: Result<T, &EngineError>) {
        let kind = match outcome {
            Ok(v) => format!("{op} {v:?}"),
            Err(e) => {
                let e = format!("{e:?}");
                let variant = e.split([' ', '(', '{']).next().unwrap_or_default();
                format!("{op} {variant}")
            }
        };
        *self.outcomes.entry(kind).or_default() += 1;
    }

    /// A name, usually one in use.
    fn pick_name(&mut self) -> &'static str {
        let mut used: Vec<&'static str> = self.model.names.keys().copied().collect();
        if used.is_empty() || self.rng.chance(20) {
            return self.rng.pick(&NAMES);
        }
        used.sort_unstable();
        self.rng.pick(&used)
    }

    fn random_create_spec(&mut self) -> CreateSpec {
        let rng = &mut self.rng;
        let fork = if rng.chance(40) {
            let source = rng.pick(&NAMES);
            let tail = self
                .model
                .names
                .get(source)
                .map_or(8, |&i| self.model.logs[i].tail());
            let offset = if rng.chance(30) {
                None
            } else {
                Some(rng.below(tail + 2))
            };
            let sub = if rng.chance(60) { 0 } else { rng.below(5) };
            Some(ForkSpec {
                source: source.into(),
                offset,
                sub,
            })
        } else {
            None
        };
        let content_type = if fork.is_some() && rng.chance(60) {
            None
        } else {
            Some((rng.pick(&TYPES).0.to_string(), Framing::Bytes))
        };
        let classes: &[Durability] = if self.mode == Mode::Crash {
            &[Durability::Ephemeral, Durability::Fsync]
        } else {
            &CLASSES
        };
        let durability = if rng.chance(60) {
            None
        } else {
            Some(rng.pick(classes))
        };
        let closed = rng.chance(10);
        let initial = if rng.chance(50) {
            Vec::new()
        } else {
            rng.bytes(24)
        };
        CreateSpec {
            content_type,
            expiry: None,
            closed,
            initial: Payload {
                data: Bytes::from(initial),
                messages: 1,
            },
            fork,
            durability,
        }
    }

    fn random_append(&mut self, name: &str) -> AppendRequest {
        let log = self.model.names.get(name).map(|&i| &self.model.logs[i]);
        let rng = &mut self.rng;
        let data = if rng.chance(8) {
            Vec::new()
        } else {
            rng.bytes(7)
        };
        let content_type = match rng.below(10) {
            0..=2 => None,
            3 => Some(rng.pick(&TYPES).0.to_string()),
            _ => log.map(|l| l.content_type.clone()),
        };
        let producer = if rng.chance(60) {
            let id = rng.pick(&PRODUCERS);
            let known = log.and_then(|l| l.producers.get(id).copied());
            let (epoch, seq) = match (known, rng.below(10)) {
                (Some((e, s)), 0..=5) => (e, s + 1),
                (Some((e, s)), 6) => (e, s),
                (Some((e, s)), 7) => (e + 1, if rng.chance(70) { 0 } else { s + 1 }),
                (Some((e, s)), 8) => (e.saturating_sub(1), s + 1),
                (None, 0..=6) => (rng.below(3), 0),
                _ => (rng.below(3), rng.below(4)),
            };
            Some(ProducerClaim {
                id: id.into(),
                epoch,
                seq,
            })
        } else {
            None
        };
        let stream_seq = if rng.chance(30) {
            let len = 1 + rng.below(2);
            Some(
                (0..len)
                    .map(|_| char::from(b'0' + rng.below(10) as u8))
                    .collect(),
            )
        } else {
            None
        };
        AppendRequest {
            content_type,
            payload: Payload {
                data: Bytes::from(data),
                messages: 1,
            },
            stream_seq,
            producer,
            close: rng.chance(4),
        }
    }

    async fn op_create(&mut self) {
        let name = self.rng.pick(&NAMES);
        let spec = self.random_create_spec();
        let want = self.model.create(name, &spec);
        self.op = format!("create {name} {spec:?} -> {want:?}");
        self.count("create", want.as_ref().map(|&(_, created)| created));
        let got = self.engine.create(name, spec.clone()).await;
        let step = self.step;
        match want {
            Err(want) => check_err(step, &format!("create {name} {spec:?}"), got, &want),
            Ok((i, created)) => {
                let got =
                    got.unwrap_or_else(|e| panic!("step {step}: create {name} {spec:?}: {e:?}"));
                assert_eq!(got.created, created, "step {step}: create {name}");
                if created {
                    if let Some(max) = self.max_id {
                        assert!(got.info.id > max, "step {step}: ids must be new");
                    }
                    self.max_id = Some(got.info.id);
                    self.model.logs[i].id = got.info.id;
                }
                let log = &self.model.logs[i];
                assert_eq!(got.info.id, log.id, "step {step}");
                assert_eq!(got.info.next, log.tail(), "step {step}");
                assert_eq!(got.info.closed, log.closed, "step {step}");
                assert_eq!(&*got.info.content_type, log.content_type, "step {step}");
                assert_eq!(got.info.durability, log.durability, "step {step}");
            }
        }
    }

    async fn op_append(&mut self) {
        let name = self.pick_name();
        let req = self.random_append(name);
        let want = self.model.append(name, &req);
        self.op = format!("append {name} {req:?} -> {want:?}");
        self.count("append", want.as_ref().map(|a| (a.status, a.closed)));
        let got = self.engine.append(name, req.clone()).await;
        let step = self.step;
        match want {
            Err(want) => check_err(step, &format!("append {name} {req:?}"), got, &want),
            Ok(want) => {
                let got =
                    got.unwrap_or_else(|e| panic!("step {step}: append {name} {req:?}: {e:?}"));
                let got = Ack {
                    status: got.status,
                    next: got.next,
                    closed: got.closed,
                    producer: got.producer,
                };
                assert_eq!(got, want, "step {step}: append {name} {req:?}");
            }
        }
    }

    async fn op_delete(&mut self) {
        let name = self.rng.pick(&NAMES);
        let want = self.model.delete(name);
        self.op = format!("delete {name} -> {want:?}");
        self.count("delete", want.as_ref());
        let got = self.engine.delete(name).await;
        match want {
            Err(want) => check_err(self.step, &format!("delete {name}"), got, &want),
            Ok(()) => got.unwrap_or_else(|e| panic!("step {}: delete {name}: {e:?}", self.step)),
        }
    }

    fn op_read(&mut self) {
        let name = self.pick_name();
        let opened = self.engine.open(name);
        let i = match self.model.live(name) {
            Err(want) => {
                let opened = opened.map(|_| ());
                return check_err(self.step, &format!("open {name}"), opened, &want);
            }
            Ok(i) => i,
        };
        let handle = opened.unwrap_or_else(|e| panic!("step {}: open {name}: {e:?}", self.step));
        self.check_random_read(i, &handle);
        if self.rng.chance(30) {
            if self.held.len() == MAX_HANDLES {
                let drop_at = self.rng.below(MAX_HANDLES as u64) as usize;
                self.held.swap_remove(drop_at);
            }
            self.held.push(Held {
                log: i,
                handle,
                dirty: false,
            });
        }
    }

    fn op_read_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let h = self.rng.below(self.held.len() as u64) as usize;
        let i = self.held[h].log;
        let log = &self.model.logs[i];
        let want = if log.removed {
            Some(EngineError::NotFound)
        } else if log.soft_deleted {
            Some(EngineError::Gone)
        } else {
            None
        };
        match want {
            Some(want) => {
                let got = self.held[h].handle.read(ReadFrom::Start, 1000);
                check_err(self.step, "read on a held handle", got, &want);
            }
            None => {
                let held = self.held.swap_remove(h);
                self.check_random_read(i, &held.handle);
                self.held.push(held);
            }
        }
    }

    fn check_random_read(&mut self, i: usize, handle: &LogHandle) {
        let log = &self.model.logs[i];
        let step = self.step;
        let from = self.rng.below(log.tail() + 3);
        let max = self.rng.below(12) as usize;
        let read = handle.read(ReadFrom::At(from), max);
        if from > log.tail() {
            let want = EngineError::OffsetBeyondTail {
                offset: from,
                tail: log.tail(),
            };
            return check_err(step, "read beyond the tail", read, &want);
        }
        let batch =
            read.unwrap_or_else(|e| panic!("step {step}: read {} at {from}: {e:?}", log.name));
        let next = log.read_end(from, max);
        assert_eq!(
            (batch.start, batch.next),
            (from, next),
            "step {step}: read {} at {from} max {max}: {log:?}",
            log.name
        );
        assert_eq!(
            batch.chunks.concat(),
            &log.data[from as usize..next as usize],
            "step {step}: read {} at {from} max {max}",
            log.name
        );
        assert_eq!(batch.up_to_date, next == log.tail(), "step {step}");
        assert_eq!(
            batch.closed,
            log.closed && next == log.tail(),
            "step {step}"
        );
        assert_eq!(batch.info.id, log.id, "step {step}");
        assert_eq!(batch.info.next, log.tail(), "step {step}");
    }

    /// Everything the engine shows must match the model.
    fn check_all(&mut self) {
        let step = self.step;
        assert_eq!(
            self.engine.log_count(),
            self.model.names.len(),
            "step {step}"
        );
        for name in NAMES {
            match self.model.live(name) {
                Err(want) => {
                    check_err(step, &format!("info {name}"), self.engine.info(name), &want);
                }
                Ok(i) => {
                    let log = &self.model.logs[i];
                    let info = self
                        .engine
                        .info(name)
                        .unwrap_or_else(|e| panic!("step {step}: info {name}: {e:?}"));
                    assert_eq!(info.id, log.id, "step {step}: {name}");
                    assert_eq!(info.next, log.tail(), "step {step}: {name}");
                    assert_eq!(info.closed, log.closed, "step {step}: {name}");
                    assert_eq!(&*info.content_type, log.content_type, "step {step}: {name}");
                    assert_eq!(info.durability, log.durability, "step {step}: {name}");
                    let batch = self
                        .engine
                        .open(name)
                        .unwrap()
                        .read(ReadFrom::Start, usize::MAX)
                        .unwrap();
                    assert_eq!(
                        batch.chunks.concat(),
                        log.data,
                        "step {step}: {name}: {log:?}"
                    );
                    assert!(batch.up_to_date, "step {step}: {name}");
                }
            }
        }
        // Waiters wake exactly when their log changed.
        for i in std::mem::take(&mut self.model.changed) {
            for h in self.held.iter_mut().filter(|h| h.log == i) {
                h.dirty = true;
            }
        }
        for h in &mut self.held {
            let woke = ready_now(h.handle.changed());

            assert_eq!(
                woke, h.dirty,
                "step {step}: waiter on {:?} after {}",
                self.model.logs[h.log], self.op
            );
            h.dirty = false;
        }
        let held: Vec<usize> = self.held.iter().map(|h| h.log).collect();
        assert_eq!(
            self.engine.memory_used(),
            self.model.memory(&held),
            "step {step}"
        );
    }

    /// Shut down cleanly (or crash) and recover.
    fn op_restart(&mut self) {
        if self.disk.is_none() {
            return;
        }
        self.op = "restart".into();
        self.held.clear();
        // A stand-in while the old engine goes down.
        let old = std::mem::replace(
            &mut self.engine,
            Engine::new(EngineConfig::default(), Arc::new(ManualClock::new(0))),
        );
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        if self.mode == Mode::Crash {
            // Power loss: the disk stops answering, everything unsynced is gone, the process dies.
            disk.plan.fail_writes("", Fault::Eio, usize::MAX);
            disk.plan.fail_syncs("", usize::MAX);
            disk.mem.crash();
            drop(old);
            // The next engine sees the disk through a fresh fault layer: the old engine (which
            // a background thread may hold for a moment longer) keeps the failing one.
            let (fault, plan) = FaultDir::new(Arc::new(disk.mem.clone()));
            disk.plan = plan;
            disk.dir = Arc::new(fault);
        } else {
            old.close().expect("clean shutdown");
            drop(old);
        }
        self.engine = open_engine(Some(&disk.dir), self.model.default_durability);
        self.model.restart();
        *self.outcomes.entry("restart".into()).or_default() += 1;
    }

    async fn run(&mut self, steps: usize) {
        for step in 0..steps {
            self.step = step;
            self.op = "read".into();
            match self.rng.below(100) {
                0..=44 => self.op_append().await,
                45..=59 => self.op_create().await,
                60..=67 => self.op_delete().await,
                68..=84 => self.op_read(),
                85..=98 => self.op_read_held(),
                _ => self.op_restart(),
            }
            if std::env::var_os("MODEL_TRACE").is_some() {
                eprintln!("step {step}: {}", self.op);
            }
            self.check_all();
        }
    }
}

/// Runs seeds `seeds` and checks that each kind of outcome in `expected` occurred.
async fn run_seeds(seeds: std::ops::Range<u64>, steps: usize, mode: Mode, expected: &[&str]) {
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let (mut logs, mut forks, mut soft) = (0, 0, 0);
    for seed in seeds {
        let mut run = Run::new(seed, mode);
        run.run(steps).await;
        logs += run.model.logs.len();
        forks += run.model.logs.iter().filter(|l| l.source.is_some()).count();
        soft += run.model.logs.iter().filter(|l| l.soft_deleted).count();
        for (k, n) in run.outcomes {
            *outcomes.entry(k).or_default() += n;
        }
    }
    // The runs exercised what they are meant to.
    assert!(logs > 300, "{logs} logs");
    assert!(forks > 50, "{forks} forks");
    assert!(soft > 10, "{soft} soft deletions");
    for kind in expected {
        assert!(
            outcomes.get(*kind).is_some_and(|&n| n >= 3),
            "{kind} was (almost) never exercised: {outcomes:#?}"
        );
    }
}

const COMMON_OUTCOMES: [&str; 27] = [
    "create true",
    "create false",
    "create ConfigMismatch",
    "create ForkSourceNotFound",
    "create ForkSourceGone",
    "create ForkContentTypeMismatch",
    "create ForkOffsetBeyondTail",
    "create ForkSubOffsetOvershoot",
    "create StreamFull",
    "append (Written, false)",
    "append (Written, true)",
    "append (Duplicate, false)",
    "append (Duplicate, true)",
    "append (AlreadyClosed, true)",
    "append NotFound",
    "append Gone",
    "append EmptyAppend",
    "append Closed",
    "append ContentTypeMismatch",
    "append SeqGap",
    "append StaleEpoch",
    "append EpochSeqNotZero",
    "append SeqRegression",
    "append StreamFull",
    "delete ()",
    "delete NotFound",
    "delete Gone",
];

#[tokio::test]
async fn engine_matches_the_model() {
    let mut expected = COMMON_OUTCOMES.to_vec();
    expected.push("create DurabilityUnavailable");
    run_seeds(1..9, 4_000, Mode::NoStorage, &expected).await;
}

#[tokio::test]
async fn engine_on_storage_matches_the_model_across_restarts() {
    let mut expected = COMMON_OUTCOMES.to_vec();
    expected.push("restart");
    run_seeds(101..105, 3_000, Mode::Storage, &expected).await;
}

#[tokio::test]
async fn fsync_logs_match_the_model_across_crashes() {
    let mut expected = COMMON_OUTCOMES.to_vec();
    expected.push("restart");
    run_seeds(201..205, 3_000, Mode::Crash, &expected).await;
}

/// The smallest case the crash model found: data that recovery replays from the WAL into a
/// log's files must be durable in those files before the recovery checkpoint lets the WAL
/// segments holding it go.
#[tokio::test]
async fn fsync_data_survives_two_crashes_in_a_row() {
    let mem = MemDir::new();
    // Each engine sees the disk through its own fault layer, which its crash leaves failing
    // (a background thread may hold the old engine for a moment after it is dropped).
    let boot = || {
        let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
        (Arc::new(fault) as Arc<dyn Dir>, plan)
    };
    let crash = |engine: Engine, plan: FaultPlan| {
        plan.fail_writes("", Fault::Eio, usize::MAX);
        plan.fail_syncs("", usize::MAX);
        mem.crash();
        drop(engine);
    };
    let spec = CreateSpec {
        content_type: Some(("text/plain".into(), Framing::Bytes)),
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork: None,
        durability: Some(Durability::Fsync),
    };
    let data = |d: &'static str| AppendRequest {
        payload: Payload {
            data: d.into(),
            messages: 1,
        },
        ..Default::default()
    };
    let read = |e: &Engine| {
        e.open("s")
            .unwrap()
            .read(ReadFrom::Start, usize::MAX)
            .unwrap()
            .chunks
            .concat()
    };

    let (dir, plan) = boot();
    let e = open_engine(Some(&dir), Durability::Fsync);
    e.create("s", spec).await.unwrap();
    e.append("s", data("abc")).await.unwrap();
    crash(e, plan);

    // Recovery replays "abc" into the files and checkpoints.
    let (dir, plan) = boot();
    let e = open_engine(Some(&dir), Durability::Fsync);
    assert_eq!(read(&e), b"abc");
    e.append("s", data("def")).await.unwrap();
    assert_eq!(read(&e), b"abcdef");
    crash(e, plan);

    let (dir, _plan) = boot();
    let e = open_engine(Some(&dir), Durability::Fsync);
    assert_eq!(read(&e), b"abcdef");
}

/// Dropping the engine right after a durable delete must shut down cleanly. The delete's WAL
/// completion holds the storage (`Arc<Persist>`) until after it has answered the delete; if
/// the engine is dropped in between, the WAL's committer thread drops the last reference and
/// so its own `Wal`, whose `Drop` joins that very thread: a panic ("failed to join thread:
/// Resource deadlock avoided") on `riffle-wal-NN`, and whatever it still had queued is dropped.
#[tokio::test]
async fn dropping_the_engine_after_a_durable_delete_does_not_panic_a_wal_thread() {
    let wal_panics = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let previous = std::panic::take_hook();
    let counter = wal_panics.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("riffle-wal"))
        {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        previous(info);
    }));
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let spec = CreateSpec {
        content_type: Some(("text/plain".into(), Framing::Bytes)),
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork: None,
        durability: None,
    };
    for round in 0..200 {
        let e = open_engine(Some(&dir), Durability::Memory);
        let name = format!("s{round}");
        e.create(&name, spec.clone()).await.unwrap();
        e.delete(&name).await.unwrap();
        drop(e);
    }
    // Let the WAL threads finish whatever they are doing.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let _ = std::panic::take_hook();
    assert_eq!(
        wal_panics.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a WAL thread panicked at shutdown"
    );
}
