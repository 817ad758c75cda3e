//! Metrics read from the engine at scrape time: its plain counters and histogram snapshots
//! (the engine and the WAL know nothing of Prometheus), adapted here.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use riffle_engine::Engine;
use riffle_engine::wal::stats::HistogramSnapshot;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The engine's numbers, once there is an engine (recovery creates it), and recovery's
/// progress before that.
pub struct StorageCollector {
    pub engine: OnceLock<Engine>,
    pub progress: Arc<AtomicU64>,
}

impl std::fmt::Debug for StorageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageCollector").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// `name` is the family name; the text encoders add `_total`.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// A snapshot as a Prometheus histogram, each bound and the sum divided by `per_unit` (1e6 for
/// µs to seconds; 1 for counts). Division, not multiplication by 1e-6: it gives
/// the nearest double of each decimal bound (`5e-05`, not `4.9999999999999996e-05`).
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
    per_unit: f64,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let mut buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .zip(&h.counts)
        .map(|(&b, &c)| (b as f64 / per_unit, c))
        .collect();
    buckets.push((f64::INFINITY, h.counts.last().copied().unwrap_or(0)));
    m.encode_histogram::<NoLabelSet>(h.sum as f64 / per_unit, h.count(), &buckets, None)
}

impl Collector for StorageCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(engine) = self.engine.get() else {
            gauge(
                &mut e,
                "riffle_ready",
                "1 once storage recovery is complete.",
                0,
            )?;
            return gauge(
                &mut e,
                "riffle_recovery_wal_records_replayed",
                "WAL records replayed so far by the recovery at start-up.",
                self.progress.load(Ordering::Relaxed),
            );
        };
        gauge(
            &mut e,
            "riffle_ready",
            "1 once storage recovery is complete.",
            1,
        )?;
        gauge(
            &mut e,
            "riffle_streams",
            "Streams and topics in the registry (soft-deleted ones included).",
            engine.log_count() as u64,
        )?;
        gauge(
            &mut e,
            "riffle_subscriptions",
            "Durable Streams __ds subscriptions.",
            engine.sub_count() as u64,
        )?;
        gauge(
            &mut e,
            "riffle_memory_bytes",
            "RAM held for streams (counted against limits.max_memory_bytes): per-stream state, producers, ephemeral records.",
            engine.memory_used(),
        )?;
        gauge(
            &mut e,
            "riffle_memory_limit_bytes",
            "limits.max_memory_bytes as in effect.",
            engine.config().max_memory_bytes,
        )?;
        let appends = engine.append_stats();
        for (name, help, bytes) in [
            (
                "riffle_appends",
                "Committed appends (Durable Streams appends with data, /v0 writes) by durability class.",
                false,
            ),
            (
                "riffle_appended_bytes",
                "Payload bytes of committed appends by durability class.",
                true,
            ),
        ] {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for a in &appends {
                let label = ClassLabel {
                    class: a.class.as_str(),
                };
                let v = if bytes { a.bytes } else { a.appends };
                ConstCounter::new(v).encode(m.encode_family(&label)?)?;
            }
        }
        let Some(s) = engine.storage_stats() else {
            return Ok(()); // storage.mode = memory: no WAL
        };
        gauge(
            &mut e,
            "riffle_recovery_wal_records_replayed",
            "WAL records replayed by the recovery at start-up.",
            s.records_replayed,
        )?;
        let w = &s.wal;
        counter(
            &mut e,
            "riffle_wal_bytes",
            "Bytes written to the WAL since start.",
            w.bytes,
        )?;
        counter(
            &mut e,
            "riffle_wal_records",
            "Records written to the WAL since start.",
            w.records,
        )?;
        counter(
            &mut e,
            "riffle_wal_writes",
            "WAL write calls (one per group commit batch) since start.",
            w.writes,
        )?;
        counter(
            &mut e,
            "riffle_wal_syncs",
            "fdatasync calls on the WAL since start.",
            w.syncs,
        )?;
        counter(
            &mut e,
            "riffle_wal_failures",
            "Failed WAL writes, syncs and truncations since start.",
            w.failures,
        )?;
        counter(
            &mut e,
            "riffle_wal_rotations",
            "WAL segments started since start (by size, and by each checkpoint).",
            w.rotations,
        )?;
        gauge(
            &mut e,
            "riffle_wal_queue_depth",
            "Requests queued for the WAL committers and not yet completed.",
            w.queue_depth,
        )?;
        gauge(
            &mut e,
            "riffle_wal_queue_depth_peak",
            "Highest WAL queue depth since start (each shard's peak, summed).",
            w.queue_depth_peak,
        )?;
        histogram(
            &mut e,
            "riffle_wal_fsync_duration_seconds",
            "Duration of each successful WAL fdatasync.",
            &s.histograms.sync_latency_us,
            1e6,
        )?;
        histogram(
            &mut e,
            "riffle_wal_records_per_fsync",
            "WAL records made durable by each fdatasync (group commit size).",
            &s.histograms.records_per_sync,
            1.0,
        )?;
        counter(
            &mut e,
            "riffle_checkpoints",
            "Checkpoints taken since start.",
            s.checkpoints,
        )?;
        let f = &s.files;
        gauge(
            &mut e,
            "riffle_open_files",
            "Stream files the cache of open files holds now.",
            f.open,
        )?;
        gauge(
            &mut e,
            "riffle_open_files_capacity",
            "Most stream files the cache holds open (storage.max_open_files as in effect).",
            f.capacity,
        )?;
        counter(
            &mut e,
            "riffle_file_opens",
            "Stream files opened by the cache on a miss since start; a rate near the append rate means the streams in use do not fit storage.max_open_files.",
            f.opens,
        )?;
        counter(
            &mut e,
            "riffle_file_evictions",
            "Stream files the cache closed to make room (or because the process ran out of descriptors) since start.",
            f.evictions,
        )?;
        counter(
            &mut e,
            "riffle_damaged_reads",
            "Reads refused since start because stored bytes failed their checksum (500 stored data is damaged; the log names the stream file and record).",
            f.damaged_reads,
        )?;
        counter(
            &mut e,
            "riffle_checkpoint_failures",
            "Checkpoints that failed since start (the WAL is kept and replayed instead).",
            s.checkpoint_failures,
        )?;
        histogram(
            &mut e,
            "riffle_checkpoint_duration_seconds",
            "Duration of each successful checkpoint.",
            &s.checkpoint_us,
            1e6,
        )
    }
}
