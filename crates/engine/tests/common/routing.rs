//! Helpers of the router tests: an engine on a simulated disk with its routers started,
//! crashes, topic and router definitions, writes and reads.

use super::disk::Disk;
use bytes::Bytes;
use riffle_engine::topic::router::{Guarantee, RouterDef};
use riffle_engine::topic::{DiffQuery, NewRecord, TopicConfig, TopicWrite};
use riffle_engine::{Durability, Engine, EngineConfig, ManualClock, StorageConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLASSES: [Durability; 3] = [Durability::Memory, Durability::Disk, Durability::Fsync];

/// How long forwarding may take to settle.
pub const SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    Process,
    Power,
}

pub const CRASHES: [Crash; 2] = [Crash::Process, Crash::Power];

/// Open (recover) an engine on `d` and start its routers, as the server does.
pub fn open(d: &Disk, clock: &Arc<ManualClock>) -> Engine {
    let mut storage = StorageConfig::new(d.dir());
    storage.shards = 2;
    storage.sync_interval = Duration::from_millis(5);
    let e = Engine::recover(EngineConfig::default(), clock.clone(), storage)
        .expect("recover")
        .0;
    e.start_routers();
    e
}

pub fn crash(d: &Disk, e: Engine, how: Crash) {
    match how {
        Crash::Process => d.process_crash(e),
        Crash::Power => d.power_loss(e),
    }
}

pub fn cfg(durability: Durability) -> TopicConfig {
    TopicConfig {
        durability,
        ..TopicConfig::default()
    }
}

pub fn def(source: &str, dest: &str, guarantee: Guarantee) -> RouterDef {
    RouterDef {
        source: source.into(),
        dest: dest.into(),
        preserve_node: true,
        preserve_tag: true,
        create_dest: false,
        filter: None,
        allow_cycle: false,
        guarantee,
    }
}

pub fn rec(data: &str, tag: Option<&str>, meta: Option<&str>) -> NewRecord {
    NewRecord {
        data: Bytes::from(data.to_string()),
        tag: tag.map(Into::into),
        node: None,
        meta: meta.map(|m| Bytes::from(m.to_string())),
    }
}

/// Write one record per string of `data` (each a JSON text), in one batch.
pub async fn write(e: &Engine, topic: &str, data: &[String]) -> (u64, u64) {
    let w = e.topic_write(topic, put(data)).await.expect("write");
    (w.first_seq, w.last_seq)
}

pub fn put(data: &[String]) -> TopicWrite {
    TopicWrite {
        records: data.iter().map(|d| rec(d, None, None)).collect(),
        idempotency_key: None,
        create: None,
    }
}

/// `n` distinct JSON strings `"prefix-i"`, `i` from `from`.
pub fn datas(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("\"{prefix}-{i}\""))
        .collect()
}

pub fn q(from: u64) -> DiffQuery {
    DiffQuery {
        from_seq: from,
        limit: 1000,
        nodes: Vec::new(),
        max_bytes: 1 << 20,
    }
}

/// `(seq, data, meta)` of every live record after `from` (paging through diffs).
pub fn read_meta(e: &Engine, t: &str, mut from: u64) -> Vec<(u64, String, Option<String>)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    loop {
        let d = e.topic_diff(t, &q(from)).expect("diff");
        out.extend(
            d.records
                .iter()
                .map(|r| (r.seq, text(r.data_json()), r.meta_json().map(text))),
        );
        if d.next_from_seq >= d.head_seq || d.next_from_seq == from {
            return out;
        }
        from = d.next_from_seq;
    }
}

/// `(seq, data)` of every live record after `from`.
pub fn read(e: &Engine, t: &str, from: u64) -> Vec<(u64, String)> {
    read_meta(e, t, from)
        .into_iter()
        .map(|(s, d, _)| (s, d))
        .collect()
}

pub fn head(e: &Engine, t: &str) -> u64 {
    e.topic_info(t, false).expect("topic info").head_seq
}

/// Wait until `router` has forwarded `want` records (never more: that would be a duplicate),
/// then make sure nothing more arrives at `dest` for a moment.
pub async fn settle(e: &Engine, router: &str, dest: &str, want: u64, what: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let got = e
            .router_get(router)
            .expect("the router exists")
            .forwarded_total;
        assert!(got <= want, "{what}: {router} forwarded {got} > {want}");
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {router} forwarded {got} of {want} within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let h = head(e, dest);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            head(e, dest),
            h,
            "{what}: {dest} grew after forwarding settled"
        );
    }
    let got = e.router_get(router).expect("router").forwarded_total;
    assert_eq!(got, want, "{what}: {router} forwarded more after settling");
}

pub async fn wait_for(mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Run the future `make` gives on a thread of its own, with a runtime of its own (so that it
/// races this test's runtime, which runs the forwarding tasks); its output comes back.
pub fn on_thread<T, F>(
    make: impl FnOnce() -> F + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _ = tx.send(rt.block_on(make()));
    });
    rx
}
