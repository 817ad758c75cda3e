//! An in-memory disk for the durability tests, seen through a fault-injecting directory that
//! each "boot" replaces: an engine that is still going down after a crash (its checkpointer
//! thread may hold it for a moment after the test drops it) keeps the old view, which stays
//! halted, and can never write to the disk after the crash.

use riffle_engine::Engine;
use riffle_engine::wal::{Dir, FaultDir, FaultPlan, MemDir};
use std::sync::Arc;

pub struct Disk {
    pub mem: MemDir,
    boot: parking_lot::Mutex<(FaultPlan, Arc<dyn Dir>)>,
}

impl Disk {
    pub fn new() -> Self {
        let mem = MemDir::new();
        let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
        Self {
            mem,
            boot: parking_lot::Mutex::new((plan, Arc::new(fault))),
        }
    }

    /// The faults of the current boot.
    pub fn plan(&self) -> FaultPlan {
        self.boot.lock().0.clone()
    }

    /// The directory the next engine opens.
    pub fn dir(&self) -> Arc<dyn Dir> {
        self.boot.lock().1.clone()
    }

    /// Halt the current view and give the next engine a fresh, fault-free one.
    pub fn reboot(&self) {
        let (fault, plan) = FaultDir::new(Arc::new(self.mem.clone()));
        let old = std::mem::replace(&mut *self.boot.lock(), (plan, Arc::new(fault)));
        old.0.halt();
    }

    /// Power loss: the disk stops answering, everything unsynced is gone, the process dies.
    pub fn power_loss(&self, engine: Engine) {
        self.plan().halt();
        self.mem.crash();
        drop(engine);
        self.reboot();
    }

    /// `kill -9`: the process dies; the page cache (everything written) survives.
    pub fn process_crash(&self, engine: Engine) {
        self.plan().halt();
        drop(engine);
        self.reboot();
    }
}
