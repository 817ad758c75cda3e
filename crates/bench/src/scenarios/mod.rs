//! The scenarios and what they share: the Durable Streams ones (`append`, `read`, `rtt`,
//! `fanout`, `subs`) and the topics `/v0` ones (`topics-write`, `topics-diff`, `topics-watch`).

pub mod append;
pub mod fanout;
pub mod live;
pub mod load;
pub mod read;
pub mod rtt;
pub mod sse;
pub mod sse_conn;
pub mod subs;
pub mod subs_check;
pub mod subs_worker;
pub mod topics;
pub mod topics_diff;
pub mod topics_queue;
pub mod topics_routers;
pub mod topics_watch;
pub mod topics_write;
pub mod topics_ws;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;

use crate::client::{Conn, REQUEST_TIMEOUT, Target};

/// Settings every scenario takes.
#[derive(Clone, Debug)]
pub struct Common {
    pub target: Target,
    pub server_pid: Option<u32>,
    /// The measured window.
    pub duration: Duration,
    /// Load before the measured window (not recorded; lets JITs and caches warm up).
    pub warmup: Duration,
    /// Interval of the progress line on stderr (zero: none).
    pub progress: Duration,
    /// Prefix of this run's stream names, unique per run.
    pub run_id: String,
    /// Require offsets to advance by exactly the payload bytes.
    pub strict_offsets: bool,
    /// Read the written streams back after the run to verify them.
    pub readback: bool,
    /// Leave the streams in place after the run (otherwise they are deleted).
    pub keep: bool,
}

impl Common {
    pub fn stream(&self, scenario: &str, i: usize) -> String {
        self.target
            .stream(&format!("{}-{scenario}-{i}", self.run_id))
    }
}

/// The phases of a timed run: `[t0, measure)` is warm-up, `[measure, end)` is measured.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub t0: Instant,
    pub measure: Instant,
    pub end: Instant,
}

impl Clock {
    pub fn start(c: &Common) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            measure: t0 + c.warmup,
            end: t0 + c.warmup + c.duration,
        }
    }
}

/// Fixed-rate schedule (open loop): the `i`-th request of worker `w` of `n` is due at
/// `t0 + (i + w/n) * n/rate`. Returns `None` past `end`.
pub fn due(clock: &Clock, rate: f64, w: usize, n: usize, i: u64) -> Option<Instant> {
    let per_worker = rate / n as f64;
    let t = clock.t0 + Duration::from_secs_f64((i as f64 + w as f64 / n as f64) / per_worker);
    (t < clock.end).then_some(t)
}

/// Tokio's timers fire up to ~1 ms late; lateness below this is the generator's, not the
/// server's.
const TIMER_SLOP: Duration = Duration::from_millis(2);

/// Waits until `due` and returns the instant latency is measured from: the actual send time
/// when the generator is on schedule (within the timer's granularity), else the scheduled time,
/// so that time spent queued behind a slow answer counts against the server.
pub async fn wait_due(due: Instant) -> Instant {
    tokio::time::sleep_until(due.into()).await;
    let now = Instant::now();
    if now.duration_since(due) < TIMER_SLOP {
        now
    } else {
        due
    }
}

/// Deletes streams (best effort) unless `--keep`.
pub async fn cleanup(c: &Common, paths: &[String]) {
    if c.keep {
        return;
    }
    let mut conn = Conn::new(&c.target);
    for p in paths {
        let _ = conn
            .call(
                Method::DELETE,
                p,
                &[],
                Bytes::new(),
                &[200, 204, 404],
                REQUEST_TIMEOUT,
            )
            .await;
    }
}

/// A byte payload of `size` bytes (printable, so text streams accept it too).
pub fn byte_payload(size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// One JSON message of exactly `size` bytes (at least 8): `{"p":"xxx…"}`.
pub fn json_message(size: usize) -> String {
    format!("{{\"p\":\"{}\"}}", "x".repeat(size.max(8) - 8))
}

/// Parses sizes like `4096`, `64KiB`, `16MiB`, `1GiB` (also `k`, `m`, `g`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("bad size unit in {s}")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert!(parse_size("3x").is_err());
    }

    #[test]
    fn json_message_has_the_size() {
        assert_eq!(json_message(100).len(), 100);
        assert!(serde_json::from_str::<serde_json::Value>(&json_message(20)).is_ok());
    }
}
