//! Measurements: HDR latency histograms, error counts, the result of a scenario, and the
//! progress line of long runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procstat::ServerUsage;

/// Latencies in microseconds, 1 µs to 10 min, 3 significant digits.
pub struct Lat(Histogram<u64>);

impl Default for Lat {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"))
    }
}

impl Lat {
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record((d.as_micros() as u64).max(1));
    }

    pub fn merge(&mut self, other: &Lat) {
        let _ = self.0.add(&other.0);
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        LatencySummary {
            count: h.len(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// A named latency distribution of a scenario (`append`, `sse`, `long-poll`, ...).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedLatency {
    pub name: String,
    #[serde(flatten)]
    pub summary: LatencySummary,
}

/// Error counts keyed by HTTP status, `io`, `timeout` or a scenario-specific word.
pub type Errors = BTreeMap<String, u64>;

pub fn add_errors(into: &mut Errors, from: &Errors) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// The outcome of the self-verification of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Verify {
    pub ok: bool,
    /// What was checked, one line each; failures start with `FAIL`.
    pub checks: Vec<String>,
}

impl Verify {
    pub fn new() -> Self {
        Self {
            ok: true,
            checks: Vec::new(),
        }
    }
    pub fn pass(&mut self, what: impl Into<String>) {
        self.checks.push(what.into());
    }
    pub fn fail(&mut self, what: impl Into<String>) {
        self.ok = false;
        self.checks.push(format!("FAIL {}", what.into()));
    }
    pub fn check(&mut self, cond: bool, what: impl Into<String>) {
        if cond {
            self.pass(what)
        } else {
            self.fail(what)
        }
    }
    pub fn absorb(&mut self, other: Verify) {
        self.ok &= other.ok;
        self.checks.extend(other.checks);
    }
}

/// The result of one scenario (or one step of it, like one K of fanout).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: String,
    /// Distinguishes steps of one scenario (`K=100`), else empty.
    pub label: String,
    pub params: serde_json::Value,
    /// The measured window, warm-up excluded.
    pub elapsed_s: f64,
    /// Operations in the window: acknowledged appends, GETs, or deliveries.
    pub ops: u64,
    pub ops_per_s: f64,
    /// Payload bytes in the window (appended, read or delivered).
    pub bytes: u64,
    pub mib_per_s: f64,
    pub latency: Vec<NamedLatency>,
    pub errors: Errors,
    pub server: Option<ServerUsage>,
    pub verify: Verify,
}

impl ScenarioResult {
    pub fn new(scenario: &str, label: &str, params: serde_json::Value) -> Self {
        Self {
            scenario: scenario.into(),
            label: label.into(),
            params,
            elapsed_s: 0.0,
            ops: 0,
            ops_per_s: 0.0,
            bytes: 0,
            mib_per_s: 0.0,
            latency: Vec::new(),
            errors: Errors::new(),
            server: None,
            verify: Verify::new(),
        }
    }

    /// Sets the window's totals and derives the rates.
    pub fn totals(&mut self, elapsed: Duration, ops: u64, bytes: u64) {
        let s = elapsed.as_secs_f64().max(1e-9);
        self.elapsed_s = s;
        self.ops = ops;
        self.bytes = bytes;
        self.ops_per_s = ops as f64 / s;
        self.mib_per_s = bytes as f64 / s / (1024.0 * 1024.0);
    }

    pub fn add_latency(&mut self, name: &str, lat: &Lat) {
        self.latency.push(NamedLatency {
            name: name.into(),
            summary: lat.summary(),
        });
    }

    pub fn latency(&self, name: &str) -> Option<&LatencySummary> {
        self.latency
            .iter()
            .find(|l| l.name == name)
            .map(|l| &l.summary)
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn name(&self) -> String {
        if self.label.is_empty() {
            self.scenario.clone()
        } else {
            format!("{} {}", self.scenario, self.label)
        }
    }
}

/// Counters shared by the workers of a run, for the progress line.
#[derive(Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn op(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints `[name] 5s/10s 12345 ops (2469/s) 0 errors` to stderr every `every` until dropped.
pub struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    pub fn start(name: String, total: Duration, every: Duration, c: Arc<Counters>) -> Self {
        if every.is_zero() || total < every {
            return Self(None);
        }
        let h = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut last = 0;
            let mut tick = tokio::time::interval_at((t0 + every).into(), every);
            loop {
                tick.tick().await;
                let ops = c.ops.load(Ordering::Relaxed);
                let errs = c.errors.load(Ordering::Relaxed);
                eprintln!(
                    "  [{name}] {:>4.0}s/{:.0}s {ops} ops ({:.0}/s) {errs} errors",
                    t0.elapsed().as_secs_f64(),
                    total.as_secs_f64(),
                    (ops - last) as f64 / every.as_secs_f64(),
                );
                last = ops;
            }
        });
        Self(Some(h))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}
