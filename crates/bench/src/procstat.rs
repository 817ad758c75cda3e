//! The server's CPU time and memory, read from `/proc/<pid>` (Linux only).
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat` (all threads), in USER_HZ ticks (100 per
//! second on Linux). Memory is sampled from `VmRSS` every 100 ms during the measured window;
//! `VmHWM` (the process's lifetime peak) is reported too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// USER_HZ: the unit of the times in `/proc/<pid>/stat`; 100 on every Linux architecture
/// in use (it is fixed by the kernel ABI, independent of CONFIG_HZ).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// Wall-clock seconds of the window.
    pub wall_s: f64,
    /// CPU seconds (user + system) the server used in the window.
    pub cpu_s: f64,
    /// `cpu_s / wall_s`, in percent of one CPU.
    pub cpu_pct: f64,
    /// `cpu_s` per operation, in microseconds.
    pub cpu_us_per_op: f64,
    /// RSS when the window began, MiB.
    pub rss_start_mib: f64,
    /// Highest RSS sampled during the window, MiB.
    pub rss_peak_mib: f64,
    /// The process's lifetime peak RSS (`VmHWM`) at the end of the window, MiB.
    pub hwm_mib: f64,
}

impl ServerUsage {
    /// Sets the CPU time per operation.
    pub fn per_op(mut self, ops: u64) -> Self {
        self.cpu_us_per_op = if ops > 0 {
            self.cpu_s * 1e6 / ops as f64
        } else {
            0.0
        };
        self
    }
}

/// CPU seconds used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// A `Vm*` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Watches a server process over a measured window.
pub struct Window {
    pid: u32,
    t0: std::time::Instant,
    cpu0: f64,
    rss0: u64,
    peak: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Window {
    /// Starts watching `pid`; `None` when there is no pid or `/proc/<pid>` is unreadable.
    pub fn begin(pid: Option<u32>) -> Option<Self> {
        let pid = pid?;
        let cpu0 = cpu_seconds(pid)?;
        let rss0 = rss_kib(pid).unwrap_or(0);
        let peak = Arc::new(AtomicU64::new(rss0));
        let p = peak.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                match rss_kib(pid) {
                    Some(kib) => {
                        p.fetch_max(kib, Ordering::Relaxed);
                    }
                    None => return,
                }
            }
        });
        Some(Self {
            pid,
            t0: std::time::Instant::now(),
            cpu0,
            rss0,
            peak,
            sampler,
        })
    }

    /// Ends the window; `ops` is the operation count the CPU time is divided by.
    pub fn finish(self, ops: u64) -> ServerUsage {
        self.sampler.abort();
        let cpu = cpu_seconds(self.pid).map(|c| c - self.cpu0).unwrap_or(0.0);
        if let Some(kib) = rss_kib(self.pid) {
            self.peak.fetch_max(kib, Ordering::Relaxed);
        }
        let wall = self.t0.elapsed().as_secs_f64();
        ServerUsage {
            pid: self.pid,
            wall_s: wall,
            cpu_s: cpu,
            cpu_pct: cpu * 100.0 / wall.max(1e-9),
            cpu_us_per_op: if ops > 0 { cpu * 1e6 / ops as f64 } else { 0.0 },
            rss_start_mib: mib(self.rss0),
            rss_peak_mib: mib(self.peak.load(Ordering::Relaxed)),
            hwm_mib: mib(status_kib(self.pid, "VmHWM:").unwrap_or(0)),
        }
        .per_op(ops)
    }
}
