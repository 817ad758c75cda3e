//! The simulated machine: an in-memory disk that can fail or lose power, engines opened on it,
//! and appends run as futures that this test polls by hand (so it decides exactly when each
//! one first runs, how far it gets, and when it is dropped).

use riffle_engine::wal::{Dir, Fault, FaultDir, FaultPlan, MemDir};
use riffle_engine::{
    AppendRequest, Appended, Durability, Engine, EngineConfig, EngineError, ManualClock, OpenError,
    StorageConfig,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub struct Disk {
    pub mem: MemDir,
    pub plan: FaultPlan,
    pub dir: Arc<dyn Dir>,
    /// The `disk` class's sync interval: the WAL's only timer, so the only wall-clock
    /// dependence of what a power loss keeps.
    pub sync_interval: Duration,
}

impl Disk {
    pub fn new() -> Self {
        let mem = MemDir::new();
        let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
        Self {
            mem,
            plan,
            dir: Arc::new(fault),
            sync_interval: Duration::from_millis(2),
        }
    }

    /// The next process's view of the same files. The previous process's threads may outlive
    /// the drop of its engine for a moment (its checkpointer may hold it); they keep the old
    /// view, which stays down for good, so that nothing of theirs lands after the crash.
    pub fn reboot(&mut self) {
        self.plan.halt();
        let (fault, plan) = FaultDir::new(Arc::new(self.mem.clone()));
        self.plan = plan;
        self.dir = Arc::new(fault);
    }
}

/// How the machine goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// `kill -9`: the process dies, the page cache (everything written) survives.
    Process,
    /// Power loss: everything not synced is gone (`MemDir::crash`).
    Power,
}

/// Open an engine on `disk`. `start_ms` must grow from one engine to the next: ids are seeded
/// from the clock, and only that keeps ids of logs a crash lost from being handed out again.
pub fn open_engine(
    disk: &Disk,
    start_ms: i64,
    max_stream: u64,
    default_durability: Durability,
) -> Result<Engine, OpenError> {
    let config = EngineConfig {
        max_stream_bytes: max_stream,
        default_durability,
        ..EngineConfig::default()
    };
    let mut storage = StorageConfig::new(disk.dir.clone());
    storage.shards = 2;
    storage.sync_interval = disk.sync_interval;
    Engine::recover(config, Arc::new(ManualClock::new(start_ms)), storage).map(|(e, _)| e)
}

/// Take the machine down with `engine` (and every future holding a clone of it, which the
/// caller drops first): the disk stops answering at once, so nothing more reaches it, then
/// the process is gone, then (power loss) unsynced data is lost.
pub fn crash(disk: &mut Disk, engine: Engine, how: Crash) {
    disk.plan.halt();
    drop(engine);
    if how == Crash::Power {
        disk.mem.crash();
    }
    disk.reboot();
}

pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Appended, EngineError>> + Send>>;

/// An append as a request handler would run it, owning what it needs.
pub fn append_future(engine: &Engine, name: &str, req: AppendRequest) -> AppendFuture {
    let (engine, name) = (engine.clone(), name.to_string());
    Box::pin(async move { engine.append(&name, req).await })
}

/// Poll once. Outside any tokio runtime, so no cooperative budget makes it spuriously pending;
/// the engine's wakers go nowhere and callers poll again.
pub fn poll_once<T>(fut: &mut Pin<Box<dyn Future<Output = T> + Send>>) -> Option<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Drive a future to completion. The WAL commits on its own threads; a future that is still
/// pending after `LIVENESS` is stuck (a lost wake-up or a lock never released).
pub fn block_on<T>(fut: impl Future<Output = T> + Send) -> T {
    let mut fut: Pin<Box<dyn Future<Output = T> + Send + '_>> = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let start = Instant::now();
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(start.elapsed() < LIVENESS, "a future never completed");
        pause();
    }
}

/// How long an operation may take before the simulation calls it stuck (a watchdog only: no
/// outcome depends on time).
pub const LIVENESS: Duration = Duration::from_secs(10);

/// Let the WAL threads run.
pub fn pause() {
    std::thread::sleep(Duration::from_micros(20));
}

/// Arm one fault. Torn writes leave the machine down until it crashes.
pub fn arm(plan: &FaultPlan, kind: u64, count: usize) -> String {
    let (what, prefix) = match kind {
        0 => ("eio", "wal/"),
        1 => ("enospc", "wal/"),
        2 => ("short", "wal/"),
        3 => ("sync", "wal/"),
        4 => ("eio", "streams/"),
        5 => ("eio", "checkpoint"),
        6 => ("sync", "streams/"),
        _ => ("torn", "wal/"),
    };
    match what {
        "eio" => plan.fail_writes(prefix, Fault::Eio, count),
        "enospc" => plan.fail_writes(prefix, Fault::NoSpace, count),
        "short" => plan.fail_writes(prefix, Fault::Short, count),
        "sync" => plan.fail_syncs(prefix, count),
        _ => plan.fail_writes(prefix, Fault::Torn, 1),
    }
    format!("{what} x{count} on {prefix}")
}
