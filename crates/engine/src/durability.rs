//! Durability classes: what an acknowledgement promises about a crash.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Per-log durability class.
///
/// | class | acknowledged after | after a crash |
/// |---|---|---|
/// | `Ephemeral` | the append is in RAM | the log is gone (it never touches disk) |
/// | `Memory` | the WAL write returned; never waits for a sync | survives a process crash; best effort on power loss |
/// | `Disk` | the WAL write returned; the shard syncs within its interval | survives a process crash; power loss loses at most the interval |
/// | `Fsync` | the group fsync that covers the append | nothing acknowledged is lost |
///
/// Classes are ordered from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Durability {
    Ephemeral,
    Memory,
    Disk,
    Fsync,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Ephemeral => "ephemeral",
            Durability::Memory => "memory",
            Durability::Disk => "disk",
            Durability::Fsync => "fsync",
        }
    }

    /// Whether logs of this class are written to the WAL and stream files.
    pub fn is_persistent(self) -> bool {
        self != Durability::Ephemeral
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Durability {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ephemeral" => Ok(Durability::Ephemeral),
            "memory" => Ok(Durability::Memory),
            "disk" => Ok(Durability::Disk),
            "fsync" => Ok(Durability::Fsync),
            _ => Err(()),
        }
    }
}
