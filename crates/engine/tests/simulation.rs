//! A seeded deterministic simulation of the engine on a disk that fails and loses power, and a
//! matrix of WAL write faults per durability class.
//!
//! The simulation (`sim/`) drives random interleavings on six names: creates of every class
//! (with and without an initial body, byte and JSON framing), forks (and forks of forks),
//! appends with and without producer claims (next seq, retries of a sent tuple, stale epochs,
//! gaps, new epochs), `Stream-Seq`s, closes, deletes, and reads at random offsets. Appends run
//! as futures this test polls by hand: several are in flight at once, and some are dropped
//! after a poll or a few (a cancelled HTTP/2 request). Faults are armed at random moments (EIO,
//! ENOSPC, short and torn WAL writes, failed syncs, failing stream files and checkpoints), and
//! the machine crashes at random moments, either the process (`kill -9`: written data survives)
//! or the power (`MemDir::crash`: only synced data survives), then recovers.
//!
//! The oracle is the shared reference model (`common/`); see `sim/oracle.rs` for how appends
//! of unknown outcome are settled and `sim/recover.rs` for the rules per class after a crash.
//! After every step every name must answer as the model says.
//!
//! `SIM_SEED=<n>` replays one seed, `SIM_SEEDS=<count>` runs seeds 1..=count, `SIM_REPEAT`
//! runs each seed that many times, `SIM_STEPS`
//! sets the steps per seed, `SIM_TRACE=1` prints every step and `SIM_STATS=1` what the runs
//! covered. The engine's WAL commits on
//! its own threads, so how appends group into batches (and so which append an armed fault
//! hits, whether a dropped append got to commit, what a power loss keeps of `disk`-class data)
//! can differ between runs of a seed; the operations and the rules do not. A failure that a
//! replay does not show at once usually shows within a few (`SIM_REPEAT=20`).

mod common;
mod sim;

use riffle_engine::wal::Fault;
use riffle_engine::{
    AppendRequest, AppendStatus, CreateSpec, Durability, Engine, EngineError, Framing, Payload,
    ProducerClaim, ReadFrom,
};
use sim::disk::{Crash, Disk, block_on, crash, open_engine};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

#[test]
fn simulation() {
    let seeds: Vec<u64> = match (env("SIM_SEED"), env("SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (1..=n).collect(),
        (None, None) => (1..=DEFAULT_SEEDS).collect(),
    };
    let steps = env("SIM_STEPS").map_or(STEPS, |s| s as usize);
    let repeat = env("SIM_REPEAT").unwrap_or(1);
    let mut stats = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for seed in seeds
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, repeat as usize))
    {
        // Each seed on a thread of its own: the engine's hash maps seed themselves from the
        // thread's stack and how many maps it made before, and their order decides, for one,
        // which stream file an armed fault hits. A seed then runs the same alone or in a set.
        let (step, failure, run_stats) = std::thread::scope(|s| {
            s.spawn(|| {
                let mut run = sim::Run::new(seed);
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.run(steps)));
                let failure = result.err().map(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                });
                (run.step, failure, std::mem::take(&mut run.stats))
            })
            .join()
            .expect("the simulation thread")
        });
        if let Some(msg) = failure {
            failures.push(format!(
                "seed {seed} step {step}{}: {msg}\n  replay: SIM_SEED={seed}",
                known_bug(&msg)
            ));
        }
        for (k, n) in run_stats {
            *stats.entry(k).or_default() += n;
        }
    }
    if std::env::var_os("SIM_STATS").is_some() {
        eprintln!("{stats:#?}");
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} seeds failed:\n{}",
            failures.len(),
            seeds.len(),
            failures.join("\n")
        );
    }
    if seeds.len() >= DEFAULT_SEEDS as usize {
        // The runs exercised what they are meant to.
        for kind in EXPECTED {
            assert!(
                stats.get(*kind).is_some_and(|&n| n >= 2),
                "{kind} was (almost) never exercised: {stats:#?}"
            );
        }
    }
}

/// About 5 s in debug on an idle core. (With 32 seeds a fork inside a JSON message, a rare
/// draw, came up fewer than twice in about one run of six, failing the coverage check.)
const DEFAULT_SEEDS: u64 = 96;
const STEPS: usize = 800;

/// Which known engine problem a failure looks like (each has a deterministic test below;
/// remove a line with its fix).
fn known_bug(msg: &str) -> &'static str {
    if msg.contains("starts at") && msg.contains("Power") {
        " [looks like memory records left unsynced by a rotation: see \
         a_failed_checkpoint_then_a_power_loss_still_recovers]"
    } else if msg.contains("in a segment that is not the last") {
        " [looks like a torn write after a failed rotation: see \
         a_torn_write_after_a_failed_segment_rotation_still_recovers]"
    } else if msg.contains("(fsync") && msg.contains("is lost") || msg.contains("whole read") {
        " [looks like a fork whose memory/disk source lost what it inherited: see the \
         an_fsync_fork_* tests]"
    } else {
        ""
    }
}
const EXPECTED: &[&str] = &[
    "append Written",
    "append Duplicate",
    "append AlreadyClosed",
    "append ContentTypeMismatch",
    "append EpochSeqNotZero",
    "append Closed",
    "append SeqGap",
    "append StaleEpoch",
    "append SeqRegression",
    "append StreamFull",
    "append Storage",
    "append dropped",
    "dropped append committed",
    "dropped append lost",
    "retry of a dropped committed append Duplicate",
    "retry of a dropped lost append Written",
    "create new",
    "create existing",
    "create ConfigMismatch",
    "create ForkSourceGone",
    "create ForkSubOffsetOvershoot",
    "create OffsetInsideMessage",
    "create Storage",
    "crash lost a log",
    "delete done",
    "checkpoint ok",
    "checkpoint failed",
    "crash Process",
    "crash Power",
    "restart",
    "read",
];

// ---------------------------------------------------------------------------------------------
// The fault matrix: a WAL write that fails shows nothing of the append, in every class that
// writes the WAL, and the log recovers consistent.

fn spec(class: Durability) -> CreateSpec {
    CreateSpec {
        content_type: Some(("text/plain".into(), Framing::Bytes)),
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork: None,
        durability: Some(class),
    }
}

fn append(data: &'static str, seq: u64) -> AppendRequest {
    AppendRequest {
        content_type: Some("text/plain".into()),
        payload: Payload {
            data: data.into(),
            messages: 1,
        },
        producer: Some(ProducerClaim {
            id: "p".into(),
            epoch: 0,
            seq,
        }),
        ..Default::default()
    }
}

fn read_all(engine: &Engine) -> Vec<u8> {
    let batch = engine
        .open("/m")
        .expect("open")
        .read(ReadFrom::Start, usize::MAX)
        .expect("read");
    batch.chunks.concat()
}

fn failed_wal_write(class: Durability, fault: Fault) {
    let mut d = Disk::new();
    let engine = open_engine(&d, 1_000_000, 1 << 20, class).unwrap();
    block_on(engine.create("/m", spec(class))).unwrap();
    block_on(engine.append("/m", append("ok;", 0))).unwrap();

    d.plan.fail_writes("wal/", fault, 1);
    let err = block_on(engine.append("/m", append("lost;", 1)))
        .expect_err("an append whose WAL write failed must fail");
    let no_space = fault == Fault::NoSpace;
    assert!(
        matches!(&err, EngineError::Storage { no_space: n, .. } if *n == no_space),
        "{err:?}"
    );
    assert_eq!(read_all(&engine), b"ok;");
    assert_eq!(engine.info("/m").unwrap().next, 3);

    // The fault cleared: the same seq is new data (the failed one consumed nothing).
    let next = block_on(engine.append("/m", append("again;", 1))).unwrap();
    assert_eq!((next.status, next.next), (AppendStatus::Written, 9));
    let dup = block_on(engine.append("/m", append("again;", 1))).unwrap();
    assert_eq!(dup.status, AppendStatus::Duplicate);
    assert_eq!(read_all(&engine), b"ok;again;");

    // A process crash keeps every acknowledged append (their WAL writes are done), and only
    // them; recovery must not refuse.
    crash(&mut d, engine, Crash::Process);
    let engine = open_engine(&d, 2_000_000, 1 << 20, class).expect("recovery");
    assert_eq!(read_all(&engine), b"ok;again;");
    let dup = block_on(engine.append("/m", append("again;", 1))).unwrap();
    assert_eq!(dup.status, AppendStatus::Duplicate);
    block_on(engine.append("/m", append("end;", 2))).unwrap();

    // A power loss keeps a prefix (all of it for fsync), never the failed append.
    crash(&mut d, engine, Crash::Power);
    let engine = open_engine(&d, 3_000_000, 1 << 20, class).expect("recovery");
    let got = read_all(&engine);
    if class == Durability::Fsync {
        assert_eq!(got, b"ok;again;end;");
    } else {
        assert!(b"ok;again;end;".starts_with(&got), "{got:?}");
        assert!(
            got.len() >= 9,
            "the recovery checkpoint covered ok;again;: {got:?}"
        );
    }
}

#[test]
fn memory_class_eio_on_the_wal_write() {
    failed_wal_write(Durability::Memory, Fault::Eio);
}

#[test]
fn memory_class_enospc_on_the_wal_write() {
    failed_wal_write(Durability::Memory, Fault::NoSpace);
}

#[test]
fn disk_class_eio_on_the_wal_write() {
    failed_wal_write(Durability::Disk, Fault::Eio);
}

#[test]
fn disk_class_enospc_on_the_wal_write() {
    failed_wal_write(Durability::Disk, Fault::NoSpace);
}

#[test]
fn fsync_class_eio_on_the_wal_write() {
    failed_wal_write(Durability::Fsync, Fault::Eio);
}

#[test]
fn fsync_class_enospc_on_the_wal_write() {
    failed_wal_write(Durability::Fsync, Fault::NoSpace);
}

// ---------------------------------------------------------------------------------------------
// Found by the simulation: an `fsync` fork is acknowledged once its own create record is
// synced, but what it inherits (its source's create and appends, in a `memory` or `disk`
// source, possibly on another WAL shard) may still be unsynced.

fn open_slow_sync(d: &Disk, start_ms: i64) -> Engine {
    let mut storage = riffle_engine::StorageConfig::new(d.dir.clone());
    storage.shards = 2;
    // The disk class's periodic sync never comes during the test.
    storage.sync_interval = std::time::Duration::from_secs(3600);
    let config = riffle_engine::EngineConfig {
        default_durability: Durability::Fsync,
        ..riffle_engine::EngineConfig::default()
    };
    let clock = std::sync::Arc::new(riffle_engine::ManualClock::new(start_ms));
    Engine::recover(config, clock, storage).expect("recovery").0
}

fn fork_of(source: &str, class: Durability) -> CreateSpec {
    CreateSpec {
        content_type: None,
        fork: Some(riffle_engine::ForkSpec {
            source: source.into(),
            offset: None,
            sub: 0,
        }),
        ..spec(class)
    }
}

fn read(engine: &Engine, name: &str) -> Result<Vec<u8>, EngineError> {
    let b = engine.open(name)?.read(ReadFrom::Start, usize::MAX)?;
    Ok(b.chunks.concat())
}

#[test]
fn an_fsync_fork_of_a_fresh_memory_log_survives_a_power_loss() {
    for class in [Durability::Memory, Durability::Disk] {
        let mut d = Disk::new();
        let engine = open_slow_sync(&d, 1_000_000);
        block_on(engine.create("/src", spec(class))).unwrap();
        block_on(engine.append(
            "/src",
            AppendRequest {
                producer: None,
                ..append("abc", 0)
            },
        ))
        .unwrap();
        block_on(engine.create("/fork", fork_of("/src", Durability::Fsync))).unwrap();
        block_on(engine.append("/fork", append("def", 0))).unwrap();
        crash(&mut d, engine, Crash::Power);
        let engine = open_slow_sync(&d, 2_000_000);
        assert_eq!(
            read(&engine, "/fork"),
            Ok(b"abcdef".to_vec()),
            "{class} source: the acknowledged fsync fork and its append"
        );
    }
}

#[test]
fn an_fsync_fork_keeps_what_it_inherited_across_a_power_loss() {
    for class in [Durability::Memory, Durability::Disk] {
        let mut d = Disk::new();
        let engine = open_slow_sync(&d, 1_000_000);
        block_on(engine.create("/src", spec(class))).unwrap();
        // The source's create is durable now; its append below is not.
        engine.checkpoint().unwrap();
        block_on(engine.append(
            "/src",
            AppendRequest {
                producer: None,
                ..append("abc", 0)
            },
        ))
        .unwrap();
        block_on(engine.create("/fork", fork_of("/src", Durability::Fsync))).unwrap();
        block_on(engine.append("/fork", append("def", 0))).unwrap();
        assert_eq!(read(&engine, "/fork"), Ok(b"abcdef".to_vec()));
        crash(&mut d, engine, Crash::Power);
        let engine = open_slow_sync(&d, 2_000_000);
        assert_eq!(
            read(&engine, "/fork"),
            Ok(b"abcdef".to_vec()),
            "{class} source: the acknowledged fsync fork and its append"
        );
    }
}

/// Found by the simulation: a checkpoint whose new WAL segment could not be synced leaves that
/// segment's file behind (header only), and the committer goes on writing the previous one. A
/// crash in the middle of a write there then leaves a torn record in a segment that is not the
/// last, which recovery refuses as damage.
#[test]
fn a_torn_write_after_a_failed_segment_rotation_still_recovers() {
    let mut d = Disk::new();
    let mut storage = riffle_engine::StorageConfig::new(d.dir.clone());
    storage.shards = 1;
    let open = |storage: riffle_engine::StorageConfig| {
        let config = riffle_engine::EngineConfig::default();
        let clock = std::sync::Arc::new(riffle_engine::ManualClock::new(1_000_000));
        Engine::recover(config, clock, storage).map(|(e, _)| e)
    };
    let engine = open(storage.clone()).unwrap();
    block_on(engine.create("/m", spec(Durability::Fsync))).unwrap();
    block_on(engine.append("/m", append("ok;", 0))).unwrap();
    // The new segment's header cannot be synced: the checkpoint fails, the WAL stays on the
    // current segment.
    d.plan.fail_syncs("wal/", 1);
    assert!(engine.checkpoint().is_err());
    // The process dies in the middle of the next write.
    d.plan.fail_writes("wal/", Fault::Torn, 1);
    assert!(block_on(engine.append("/m", append("torn;", 1))).is_err());
    crash(&mut d, engine, Crash::Process);
    storage.dir = d.dir.clone();
    let engine = open(storage).expect("recovery after a crash");
    assert_eq!(read_all(&engine), b"ok;");
}

/// Found by the simulation: a checkpoint rotates the WAL to a new segment without syncing
/// `memory`-class records of the old one (no record there asked for a sync). If the
/// checkpoint then fails, recovery still starts from the previous checkpoint's segment: a
/// power loss drops those records while later ones in the new segment, synced by an `fsync`
/// append, survive, and replay finds a gap in the log.
#[test]
fn a_failed_checkpoint_then_a_power_loss_still_recovers() {
    let mut d = Disk::new();
    let mut storage = riffle_engine::StorageConfig::new(d.dir.clone());
    storage.shards = 1;
    storage.sync_interval = std::time::Duration::from_secs(3600);
    let open = |storage: riffle_engine::StorageConfig| {
        let config = riffle_engine::EngineConfig::default();
        let clock = std::sync::Arc::new(riffle_engine::ManualClock::new(1_000_000));
        Engine::recover(config, clock, storage).map(|(e, _)| e)
    };
    let engine = open(storage.clone()).unwrap();
    block_on(engine.create("/m", spec(Durability::Memory))).unwrap();
    block_on(engine.create("/f", spec(Durability::Fsync))).unwrap();
    engine.checkpoint().unwrap();
    block_on(engine.append("/m", append("one;", 0))).unwrap();
    d.plan.fail_writes("checkpoint", Fault::Eio, 1);
    assert!(engine.checkpoint().is_err());
    block_on(engine.append("/m", append("two;", 1))).unwrap();
    // Syncs the segment that holds "two;" (one shard).
    let f = AppendRequest {
        content_type: Some("text/plain".into()),
        payload: Payload {
            data: "x".into(),
            messages: 1,
        },
        ..Default::default()
    };
    block_on(engine.append("/f", f)).unwrap();
    crash(&mut d, engine, Crash::Power);
    storage.dir = d.dir.clone();
    let engine = open(storage).expect("recovery after a power loss");
    let got = read_all(&engine);
    assert!(b"one;two;".starts_with(&got), "{got:?}");
}

/// The same without any I/O error: a segment that fills up is rotated the same way, so a power
/// loss after a later `fsync` append can leave a `memory` log with a gap.
#[test]
fn a_full_segment_then_a_power_loss_still_recovers() {
    let mut d = Disk::new();
    let mut storage = riffle_engine::StorageConfig::new(d.dir.clone());
    storage.shards = 1;
    storage.sync_interval = std::time::Duration::from_secs(3600);
    storage.segment_bytes = 4096;
    let open = |storage: riffle_engine::StorageConfig| {
        let config = riffle_engine::EngineConfig::default();
        let clock = std::sync::Arc::new(riffle_engine::ManualClock::new(1_000_000));
        Engine::recover(config, clock, storage).map(|(e, _)| e)
    };
    let engine = open(storage.clone()).unwrap();
    block_on(engine.create("/m", spec(Durability::Memory))).unwrap();
    block_on(engine.create("/f", spec(Durability::Fsync))).unwrap();
    engine.checkpoint().unwrap();
    // Past one segment's worth of memory-class appends.
    let data = "m".repeat(100);
    let mut want = Vec::new();
    for _ in 0..60 {
        let req = AppendRequest {
            content_type: Some("text/plain".into()),
            payload: Payload {
                data: data.clone().into(),
                messages: 1,
            },
            ..Default::default()
        };
        block_on(engine.append("/m", req)).unwrap();
        want.extend_from_slice(data.as_bytes());
    }
    let f = AppendRequest {
        content_type: Some("text/plain".into()),
        payload: Payload {
            data: "x".into(),
            messages: 1,
        },
        ..Default::default()
    };
    block_on(engine.append("/f", f)).unwrap();
    crash(&mut d, engine, Crash::Power);
    storage.dir = d.dir.clone();
    let engine = open(storage).expect("recovery after a power loss");
    let got = read_all(&engine);
    assert!(want.starts_with(&got), "{} bytes", got.len());
}
