//! Queue topics on the engine: what claims, acks, nacks and dead-lettering leave behind across
//! a `kill -9` and a power loss — delivery counts, leases (`leases_durable`), acked jobs and
//! dead-lettered copies — with a manual clock for lease expiry.

mod common;

use bytes::Bytes;
use common::disk::Disk;
use riffle_engine::topic::{DiffQuery, NewRecord, TopicConfig, TopicKind, TopicWrite};
use riffle_engine::{ClaimRequest, Durability, Engine, EngineConfig, ManualClock, StorageConfig};
use std::sync::Arc;
use std::time::Duration;

fn open(d: &Disk, clock: &Arc<ManualClock>) -> Engine {
    let mut storage = StorageConfig::new(d.dir());
    storage.shards = 2;
    storage.sync_interval = Duration::from_millis(5);
    Engine::recover(EngineConfig::default(), clock.clone(), storage)
        .expect("recover")
        .0
}

fn queue(durability: Durability, max_deliveries: u64, leases_durable: bool) -> TopicConfig {
    TopicConfig {
        kind: TopicKind::Queue,
        durability,
        lease_ms: 1_000,
        max_deliveries,
        dead_letter: Some("dlq".into()),
        leases_durable,
        ..TopicConfig::default()
    }
}

async fn jobs(e: &Engine, n: usize) {
    let records = (0..n)
        .map(|i| NewRecord {
            data: Bytes::from(format!("{{\"job\":{i}}}")),
            ..Default::default()
        })
        .collect();
    let w = TopicWrite {
        records,
        ..Default::default()
    };
    e.topic_write("q", w).await.expect("write jobs");
}

/// Claim up to `max`: (seq, deliveries) of each job.
async fn claim(e: &Engine, max: usize) -> Vec<(u64, u32)> {
    let req = ClaimRequest {
        node: "w".into(),
        max,
        lease_ms: None,
        wait_ms: 0,
        conn: None,
    };
    let c = e.queue_claim("q", req).await.expect("claim");
    c.jobs
        .iter()
        .map(|j| (j.record.seq, j.deliveries))
        .collect()
}

fn dlq_sources(e: &Engine) -> Vec<String> {
    let q = DiffQuery {
        from_seq: 0,
        limit: 1000,
        nodes: Vec::new(),
        max_bytes: 1 << 20,
    };
    match e.topic_diff("dlq", &q) {
        Ok(d) => d
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(r.meta_json().unwrap_or_default()).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn delivery_counts_and_dead_lettering_hold_across_crashes() {
    let cases = [
        (Durability::Memory, false),
        (Durability::Disk, false),
        (Durability::Fsync, false),
        (Durability::Fsync, true),
    ];
    for (class, power) in cases {
        let what = format!("{class}, power loss: {power}");
        let d = Disk::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let crash = |e: Engine| {
            if power {
                d.power_loss(e);
            } else {
                d.process_crash(e);
            }
            let e = open(&d, &clock);
            clock.advance_ms(2_000); // past any lease (dropped at the restart anyway)
            e
        };
        let e = open(&d, &clock);
        e.topic_put("q", queue(class, 2, false)).await.unwrap();
        jobs(&e, 1).await;
        // Two deliveries, each followed by a crash before any ack.
        assert_eq!(claim(&e, 1).await, vec![(1, 1)], "{what}");
        let e = crash(e);
        assert_eq!(
            claim(&e, 1).await,
            vec![(1, 2)],
            "{what}: the count survived"
        );
        let e = crash(e);
        // The third delivery would pass max_deliveries: dead-lettered, once.
        assert!(claim(&e, 1).await.is_empty(), "{what}");
        let dead = dlq_sources(&e);
        assert_eq!(dead.len(), 1, "{what}: {dead:?}");
        assert!(dead[0].contains("\"$dead_letter_deliveries\":2"), "{what}");
        assert!(dead[0].contains("\"$dead_letter_src_seq\":1"), "{what}");
        let info = e.topic_info("q", false).unwrap();
        assert_eq!(info.count, 0, "{what}: the job left the queue");
        assert_eq!(info.queue.unwrap().dead_lettered, 1, "{what}");
        let e = crash(e);
        assert_eq!(dlq_sources(&e).len(), 1, "{what}: still exactly once");
        assert!(claim(&e, 1).await.is_empty(), "{what}");
    }
}

#[tokio::test]
async fn leases_survive_a_crash_only_when_durable() {
    for durable in [false, true] {
        let d = Disk::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let e = open(&d, &clock);
        e.topic_put("q", queue(Durability::Disk, 0, durable))
            .await
            .unwrap();
        jobs(&e, 2).await;
        assert_eq!(claim(&e, 1).await, vec![(1, 1)]);
        d.process_crash(e);
        let e = open(&d, &clock);
        let q = e.topic_info("q", false).unwrap().queue.unwrap();
        if durable {
            assert_eq!((q.in_flight, q.ready), (1, 1), "the lease is restored");
            clock.advance_ms(600);
            assert_eq!(claim(&e, 2).await, vec![(2, 1)], "job 1 stays leased");
            clock.advance_ms(500);
            assert_eq!(claim(&e, 2).await, vec![(1, 2)], "until its deadline");
        } else {
            assert_eq!((q.in_flight, q.ready), (0, 2), "the job is ready again");
            assert_eq!(
                claim(&e, 2).await,
                vec![(1, 2), (2, 1)],
                "redelivered first"
            );
        }
    }
}

#[tokio::test]
async fn acks_and_nacks_survive_a_crash() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(&d, &clock);
    e.topic_put("q", queue(Durability::Fsync, 0, true))
        .await
        .unwrap();
    jobs(&e, 3).await;
    assert_eq!(claim(&e, 3).await.len(), 3);
    let acked = e.queue_ack("q", "w", &[1], None).await.unwrap();
    assert_eq!((acked.done, acked.skipped.len()), (1, 0));
    let other = e.queue_ack("q", "someone-else", &[2], None).await.unwrap();
    assert_eq!(other.skipped, vec![2], "only the lease holder acks");
    let nacked = e.queue_nack("q", "w", &[2], None, 10_000).await.unwrap();
    assert_eq!(nacked.done, 1);
    let extended = e.queue_extend("q", "w", &[3], None, 60_000).await.unwrap();
    assert_eq!(extended.deadlines, vec![(3, 1_000_000 + 60_000)]);
    d.power_loss(e);
    let e = open(&d, &clock);
    let info = e.topic_info("q", false).unwrap();
    assert_eq!(info.count, 2, "job 1 is gone for good");
    let q = info.queue.unwrap();
    assert_eq!((q.in_flight, q.ready), (1, 0), "3 leased, 2 delayed");
    clock.advance_ms(10_001);
    assert_eq!(
        claim(&e, 3).await,
        vec![(2, 2)],
        "2 is back after its delay"
    );
    assert_eq!(e.queue_ack("q", "w", &[2], None).await.unwrap().done, 1);
    clock.advance_ms(50_000);
    assert_eq!(
        claim(&e, 3).await,
        vec![(3, 2)],
        "3 after its extended lease"
    );
}
