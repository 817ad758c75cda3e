//! Topics on the engine: seqs, diff reads, deletes, trims, idempotency, and what of each
//! survives a restart, a `kill -9` and a power loss in every durability class.

mod common;

use bytes::Bytes;
use common::disk::Disk;
use common::routing::{q, read};
use riffle_engine::topic::{
    DeleteSpec, Discard, GapReason, NewRecord, TagMatch, TopicConfig, TopicWrite,
};
use riffle_engine::{Durability, Engine, EngineConfig, EngineError, ManualClock, StorageConfig};
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

fn rec(data: &str, tag: Option<&str>) -> NewRecord {
    NewRecord {
        data: Bytes::from(data.to_string()),
        tag: tag.map(Into::into),
        node: None,
        meta: None,
    }
}

fn cfg(durability: Durability) -> TopicConfig {
    TopicConfig {
        durability,
        ..TopicConfig::default()
    }
}

async fn write(e: &Engine, t: &str, recs: Vec<NewRecord>, class: Durability) -> (u64, u64) {
    let w = e
        .topic_write(
            t,
            TopicWrite {
                records: recs,
                idempotency_key: None,
                create: Some(cfg(class)),
            },
        )
        .await
        .expect("write");
    (w.first_seq, w.last_seq)
}

const CLASSES: [Durability; 4] = [
    Durability::Ephemeral,
    Durability::Memory,
    Durability::Disk,
    Durability::Fsync,
];

#[tokio::test]
async fn seqs_are_contiguous_and_records_read_back_verbatim() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let e = open(&d, &clock);
    for class in CLASSES {
        let t = format!("t-{}", class.as_str());
        assert_eq!(
            write(&e, &t, vec![rec("1", None), rec("{\"a\": 2}", None)], class).await,
            (1, 2)
        );
        assert_eq!(
            write(&e, &t, vec![rec("[3]", Some("x"))], class).await,
            (3, 3)
        );
        let got = read(&e, &t, 0);
        assert_eq!(
            got,
            vec![(1, "1".into()), (2, "{\"a\": 2}".into()), (3, "[3]".into())]
        );
        let d = e.topic_diff(&t, &q(1)).unwrap();
        assert_eq!((d.next_from_seq, d.head_seq, d.earliest_seq), (3, 3, 1));
        assert_eq!(d.records[1].tag_json(), Some(&b"\"x\""[..]));
        let info = e.topic_info(&t, false).unwrap();
        assert_eq!((info.count, info.head_seq), (3, 3));
    }
}

#[tokio::test]
async fn restart_keeps_what_each_class_promises() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let e = open(&d, &clock);
    for class in CLASSES {
        let t = format!("t-{}", class.as_str());
        write(
            &e,
            &t,
            (0..5)
                .map(|i| rec(&i.to_string(), Some(&format!("k{i}"))))
                .collect(),
            class,
        )
        .await;
        for spec in [
            DeleteSpec {
                before_seq: Some(2),
                tag: None,
            },
            DeleteSpec {
                before_seq: None,
                tag: Some(TagMatch::Eq("k3".into())),
            },
            // Both: only matching records below the bound (k4 is seq 5: kept).
            DeleteSpec {
                before_seq: Some(5),
                tag: Some(TagMatch::Eq("k4".into())),
            },
        ] {
            e.topic_delete_records(&t, &spec).await.unwrap();
        }
        e.topic_write(
            &t,
            TopicWrite {
                records: vec![rec("\"again\"", None)],
                idempotency_key: Some("key-1".into()),
                create: None,
            },
        )
        .await
        .unwrap();
    }
    d.process_crash(e);
    let e = open(&d, &clock);
    for class in CLASSES {
        let t = format!("t-{}", class.as_str());
        let info = e
            .topic_info(&t, false)
            .expect("the topic's config survives");
        assert_eq!(info.config.durability, class);
        if class == Durability::Ephemeral {
            // Its seqs are reserved in blocks: the crash moved the head past the last write.
            assert!(
                (6..=6 + 4096 + 5).contains(&info.head_seq),
                "seqs are never reused: head {}",
                info.head_seq
            );
            assert_eq!(info.count, 0);
            let diff = e.topic_diff(&t, &q(0)).unwrap();
            assert!(diff.records.is_empty());
            assert!(
                diff.tombstone.is_some(),
                "lost ephemeral records are not silent"
            );
            continue;
        }
        assert_eq!(info.head_seq, 6, "{class:?}: seqs are never reused");
        let seqs: Vec<u64> = read(&e, &t, 0).iter().map(|r| r.0).collect();
        assert_eq!(
            seqs,
            vec![2, 3, 5, 6],
            "{class:?}: before_seq 2 and tag k3 deleted, seq 4 was k3"
        );
        // The retry after the crash is answered from the WAL record of the write.
        let again = e
            .topic_write(
                &t,
                TopicWrite {
                    records: vec![rec("\"again\"", None)],
                    idempotency_key: Some("key-1".into()),
                    create: None,
                },
            )
            .await
            .unwrap();
        assert!(again.deduped, "{class:?}");
        assert_eq!((again.first_seq, again.last_seq), (6, 6));
        // The tag index was rebuilt: a delete by tag still finds older records.
        let del = e
            .topic_delete_records(
                &t,
                &DeleteSpec {
                    before_seq: None,
                    tag: Some(TagMatch::Prefix("k".into())),
                },
            )
            .await
            .unwrap();
        assert_eq!(del.deleted, 3, "{class:?}: k1, k2 and k4 remain");
    }
}

#[tokio::test]
async fn fsync_writes_survive_power_loss_and_checkpoints() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let e = open(&d, &clock);
    for i in 0..50 {
        write(
            &e,
            "ledger",
            vec![rec(&i.to_string(), None)],
            Durability::Fsync,
        )
        .await;
        if i == 20 {
            e.checkpoint().unwrap();
        }
    }
    d.power_loss(e);
    let e = open(&d, &clock);
    let got = read(&e, "ledger", 0);
    assert_eq!(got.len(), 50);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, (s, v))| *s == i as u64 + 1 && *v == i.to_string())
    );
}

#[tokio::test]
async fn caps_evict_with_a_tombstone_and_reject_refuses() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let e = open(&d, &clock);
    let mut c = cfg(Durability::Disk);
    c.cap_records = 3;
    e.topic_put("capped", c.clone()).await.unwrap();
    write(
        &e,
        "capped",
        (0..5).map(|i| rec(&i.to_string(), None)).collect(),
        Durability::Disk,
    )
    .await;
    let diff = e.topic_diff("capped", &q(0)).unwrap();
    let t = diff.tombstone.expect("evicted records make a tombstone");
    assert_eq!((t.gap_from, t.gap_to, t.reason), (1, 2, GapReason::Cap));
    assert_eq!(
        diff.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    // Deleted records are silent: a delete moves earliest but not the eviction floor.
    e.topic_delete_records(
        "capped",
        &DeleteSpec {
            before_seq: Some(4),
            tag: None,
        },
    )
    .await
    .unwrap();
    let diff = e.topic_diff("capped", &q(2)).unwrap();
    assert!(diff.tombstone.is_none());
    assert_eq!(diff.records[0].seq, 4);

    c.discard = Discard::Reject;
    c.cap_records = 2;
    c.cap_bytes = 0;
    e.topic_put("strict", c.clone()).await.unwrap();
    write(
        &e,
        "strict",
        vec![rec("1", None), rec("2", None)],
        Durability::Disk,
    )
    .await;
    let err = e
        .topic_write(
            "strict",
            TopicWrite {
                records: vec![rec("3", None)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::TopicFull);
    assert_eq!(e.topic_info("strict", false).unwrap().head_seq, 2);

    // Byte caps: each record here is stored in the same size; keep two.
    let mut b = cfg(Durability::Memory);
    let one = {
        write(&e, "probe", vec![rec("100", None)], Durability::Memory).await;
        e.topic_info("probe", false).unwrap().bytes
    };
    b.cap_bytes = one * 2;
    e.topic_put("bytes", b).await.unwrap();
    write(
        &e,
        "bytes",
        (100..105).map(|i| rec(&i.to_string(), None)).collect(),
        Durability::Memory,
    )
    .await;
    let info = e.topic_info("bytes", false).unwrap();
    assert_eq!((info.earliest_seq, info.count, info.bytes), (4, 2, one * 2));
    d.process_crash(e);
    let e = open(&d, &clock);
    let info = e.topic_info("bytes", false).unwrap();
    assert_eq!(
        (info.earliest_seq, info.count),
        (4, 2),
        "the eviction was in the write's WAL record"
    );
}

#[tokio::test]
async fn ttl_expires_by_timestamp_with_a_tombstone() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(10_000));
    let e = open(&d, &clock);
    let mut c = cfg(Durability::Fsync);
    c.ttl_ms = 1_000;
    e.topic_put("ttl", c).await.unwrap();
    write(
        &e,
        "ttl",
        vec![rec("1", None), rec("2", None)],
        Durability::Fsync,
    )
    .await;
    clock.advance_ms(600);
    write(&e, "ttl", vec![rec("3", None)], Durability::Fsync).await;
    clock.advance_ms(600);
    let diff = e.topic_diff("ttl", &q(0)).unwrap();
    let t = diff.tombstone.expect("expired records make a tombstone");
    assert_eq!((t.gap_from, t.gap_to, t.reason), (1, 2, GapReason::Ttl));
    assert_eq!(
        diff.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(e.topic_info("ttl", false).unwrap().count, 1);
    e.sweep_topics().await;
    clock.advance_ms(1_000);
    assert!(e.topic_diff("ttl", &q(2)).unwrap().records.is_empty());
    assert_eq!(e.topic_info("ttl", false).unwrap().earliest_seq, 4);
}

#[tokio::test]
async fn topics_without_storage_are_ephemeral_only() {
    let e = Engine::new(EngineConfig::default(), Arc::new(ManualClock::new(1)));
    let err = e.topic_put("t", cfg(Durability::Disk)).await.unwrap_err();
    assert!(matches!(err, EngineError::DurabilityUnavailable(_)));
    e.topic_put("t", cfg(Durability::Ephemeral)).await.unwrap();
    write(
        &e,
        "t",
        (0..300)
            .map(|i| rec(&format!("\"{}\"", "x".repeat(i)), Some("a")))
            .collect(),
        Durability::Ephemeral,
    )
    .await;
    let all = read(&e, "t", 0);
    assert_eq!(all.len(), 300);
    assert_eq!(all[299].1.len(), 301);
    let del = e
        .topic_delete_records(
            "t",
            &DeleteSpec {
                before_seq: None,
                tag: Some(TagMatch::Eq("a".into())),
            },
        )
        .await
        .unwrap();
    assert_eq!((del.deleted, del.count, del.earliest_seq), (300, 0, 301));
}

#[tokio::test]
async fn type_is_immutable_and_durability_changes_in_place() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let e = open(&d, &clock);
    assert!(
        e.topic_put("t", cfg(Durability::Memory))
            .await
            .unwrap()
            .created
    );
    write(&e, "t", vec![rec("1", None)], Durability::Memory).await;
    let mut q2 = cfg(Durability::Memory);
    q2.kind = riffle_engine::topic::TopicKind::Queue;
    assert_eq!(
        e.topic_put("t", q2).await.unwrap_err(),
        EngineError::TopicIncompatible("type")
    );
    // Into `ephemeral` and back: the records written meanwhile (never logged) become as
    // durable as the new class once the change is acknowledged.
    assert!(
        !e.topic_put("t", cfg(Durability::Ephemeral))
            .await
            .unwrap()
            .created
    );
    write(&e, "t", vec![rec("2", None)], Durability::Ephemeral).await;
    assert!(
        !e.topic_put("t", cfg(Durability::Fsync))
            .await
            .unwrap()
            .created
    );
    write(&e, "t", vec![rec("3", None)], Durability::Fsync).await;
    d.power_loss(e);
    let e = open(&d, &clock);
    // Seq 1 was `memory` and seq 2 `ephemeral`: the change to `fsync` synced the topic's files
    // and logged its state (synced); seq 3 was `fsync`.
    let seqs: Vec<u64> = read(&e, "t", 0).iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(
        e.topic_info("t", false).unwrap().config.durability,
        Durability::Fsync
    );
    assert!(e.topic_remove("t", false).await.unwrap().existed);
    assert!(matches!(
        e.topic_info("t", false),
        Err(EngineError::NotFound)
    ));
}

#[tokio::test]
async fn trimmed_space_is_given_back_after_a_checkpoint() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("riffle-topic-holes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fs = riffle_engine::wal::FsDir::open(&dir).expect("data dir");
    let clock = Arc::new(ManualClock::new(1_000));
    let storage = StorageConfig::new(Arc::new(fs));
    let e = Engine::recover(EngineConfig::default(), clock.clone(), storage.clone())
        .expect("recover")
        .0;
    let mut c = cfg(Durability::Disk);
    c.cap_bytes = 64 << 10;
    e.topic_put("capped", c).await.unwrap();
    let big = format!("\"{}\"", "x".repeat(1000));
    for _ in 0..40 {
        write(
            &e,
            "capped",
            (0..50).map(|_| rec(&big, None)).collect(),
            Durability::Disk,
        )
        .await;
    }
    e.checkpoint().unwrap();
    let info = e.topic_info("capped", false).unwrap();
    assert!(info.bytes <= 64 << 10 && info.count > 0);
    let data = std::fs::read_dir(dir.join("streams"))
        .unwrap()
        .filter_map(|f| f.ok())
        .find(|f| f.path().extension().is_some_and(|x| x == "data"))
        .expect("a data file");
    let meta = data.metadata().unwrap();
    assert!(meta.len() > 2_000_000, "the file keeps its length");
    assert!(
        meta.blocks() * 512 < 1_000_000,
        "trimmed records' blocks are freed: {} bytes allocated",
        meta.blocks() * 512
    );
    // What is live still reads, also after a restart.
    let live = read(&e, "capped", 0);
    assert_eq!(live.len() as u64, info.count);
    drop(e);
    let e = Engine::recover(EngineConfig::default(), clock, storage)
        .expect("recover")
        .0;
    assert_eq!(read(&e, "capped", 0), live);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A topic write, delete or config change whose WAL write fails shows nothing: no seqs, no
/// idempotency key (the retry writes), no delete; later changes work, and recovery agrees.
#[tokio::test]
async fn a_failed_wal_write_changes_nothing_of_a_topic() {
    use riffle_engine::wal::Fault;
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        for fault in [Fault::Eio, Fault::NoSpace, Fault::Short] {
            let what = format!("{class:?} {fault:?}");
            let d = Disk::new();
            let clock = Arc::new(ManualClock::new(1_000));
            let e = open(&d, &clock);
            write(&e, "t", vec![rec("1", Some("a"))], class).await;
            let w = |key: &str| TopicWrite {
                records: vec![rec("2", Some("a")), rec("3", None)],
                idempotency_key: Some(key.into()),
                create: None,
            };
            d.plan().fail_writes("wal", fault, 1);
            let err = e.topic_write("t", w("k")).await.unwrap_err();
            assert!(
                matches!(err, EngineError::Storage { .. }),
                "{what}: {err:?}"
            );
            let info = e.topic_info("t", false).unwrap();
            assert_eq!((info.head_seq, info.count), (1, 1), "{what}");
            let again = e.topic_write("t", w("k")).await.unwrap();
            assert!(
                !again.deduped,
                "{what}: the failed write left no key behind"
            );
            assert_eq!((again.first_seq, again.last_seq), (2, 3), "{what}");
            d.plan().fail_writes("wal", fault, 1);
            let del = DeleteSpec {
                before_seq: None,
                tag: Some(TagMatch::Eq("a".into())),
            };
            assert!(e.topic_delete_records("t", &del).await.is_err(), "{what}");
            assert_eq!(e.topic_info("t", false).unwrap().count, 3, "{what}");
            assert_eq!(
                e.topic_delete_records("t", &del).await.unwrap().deleted,
                2,
                "{what}"
            );
            d.process_crash(e);
            let e = open(&d, &clock);
            assert_eq!(read(&e, "t", 0), vec![(3, "3".to_string())], "{what}");
        }
    }
}

/// A write whose request goes away while it waits for the WAL (an HTTP/2 reset) either
/// commits whole or not at all, and the next write is not validated against stale state:
/// seqs stay contiguous and an idempotent retry is answered from the committed write.
#[tokio::test]
async fn a_dropped_write_commits_whole_or_not_at_all() {
    use std::future::Future;
    use std::task::{Context, Waker};
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let e = open(&d, &clock);
    write(&e, "t", vec![rec("0", None)], Durability::Fsync).await;
    for i in 0..20u64 {
        let w = TopicWrite {
            records: vec![rec(&i.to_string(), None), rec("\"pad\"", None)],
            idempotency_key: Some(format!("k{i}")),
            create: None,
        };
        let mut f = Box::pin(e.topic_write("t", w.clone()));
        // Polled once (queued in the WAL), then dropped.
        let _ = f.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        drop(f);
        let retry = e.topic_write("t", w).await.unwrap();
        assert_eq!(retry.last_seq, retry.first_seq + 1);
        let info = e.topic_info("t", false).unwrap();
        assert_eq!(
            info.head_seq,
            1 + 2 * (i + 1),
            "write {i} stored exactly once"
        );
    }
    d.power_loss(e);
    let e = open(&d, &clock);
    let seqs: Vec<u64> = read(&e, "t", 0).iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>());
}

/// A capped topic kept in RAM (no data directory) gives back the memory of what it evicts:
/// a pub/sub topic written forever stays within its cap.
#[tokio::test]
async fn a_capped_ram_topic_stays_bounded() {
    let e = Engine::new(EngineConfig::default(), Arc::new(ManualClock::new(1)));
    let mut c = cfg(Durability::Ephemeral);
    c.cap_records = 100;
    e.topic_put("feed", c).await.unwrap();
    let big = format!("\"{}\"", "x".repeat(500));
    let mut peak_after_warmup = 0;
    for round in 0..400 {
        write(
            &e,
            "feed",
            (0..10).map(|_| rec(&big, None)).collect(),
            Durability::Ephemeral,
        )
        .await;
        if round == 50 {
            peak_after_warmup = e.memory_used();
        }
    }
    let info = e.topic_info("feed", false).unwrap();
    assert_eq!((info.count, info.head_seq), (100, 4000));
    assert!(
        e.memory_used() <= peak_after_warmup + 64 * 1024,
        "memory grew from {peak_after_warmup} to {}",
        e.memory_used()
    );
    assert_eq!(read(&e, "feed", 0).len(), 100);
}

/// Tags and idempotency keys are memory a client makes the server hold: it is counted against
/// the budget, refused past it, and given back when trims and the window let it go.
#[tokio::test]
async fn tag_and_key_memory_is_budgeted_and_given_back() {
    let clock = Arc::new(ManualClock::new(1_000));
    let config = EngineConfig {
        max_memory_bytes: 4 << 20,
        ..EngineConfig::default()
    };
    let d = Disk::new();
    let mut storage = StorageConfig::new(d.dir());
    storage.shards = 1;
    let e = Engine::recover(config, clock.clone(), storage)
        .expect("recover")
        .0;
    let mut c = cfg(Durability::Disk);
    c.cap_records = 1000;
    c.idempotency_window_ms = 1_000;
    e.topic_put("t", c).await.unwrap();
    let base = e.memory_used();
    let tag = "t".repeat(200);
    let mut refused = false;
    for i in 0..20_000u64 {
        let w = TopicWrite {
            records: vec![rec("1", Some(&format!("{tag}{i}")))],
            idempotency_key: Some(format!("{}{i}", "k".repeat(200))),
            create: None,
        };
        match e.topic_write("t", w).await {
            Ok(_) => {}
            Err(EngineError::MemoryFull { .. }) => {
                refused = true;
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(refused, "unbounded keys within the window hit the budget");
    assert!(e.memory_used() <= 4 << 20);
    // Past the window the keys go, and the cap lets old tags go: writes work again.
    clock.advance_ms(2_000);
    for i in 0..2_000u64 {
        let w = TopicWrite {
            records: vec![rec("1", Some(&format!("x{i}")))],
            idempotency_key: Some(format!("later-{i}")),
            create: None,
        };
        e.topic_write("t", w).await.expect("room again");
    }
    assert!(
        e.memory_used() < base + (1 << 20),
        "used {} base {base}",
        e.memory_used()
    );
}

/// Checkpoints taken while writes commit: a topic's state and its log's writer state are
/// snapshotted together, so recovery replays exactly the writes after the checkpoint. (On real
/// files: a checkpoint's fsyncs are what made the two snapshots drift apart.)
#[tokio::test]
async fn checkpoints_during_writes_recover_exactly() {
    let dir = std::env::temp_dir().join(format!("riffle-topic-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = Arc::new(ManualClock::new(1_000));
    let storage = || {
        let fs = riffle_engine::wal::FsDir::open(&dir).expect("data dir");
        StorageConfig::new(Arc::new(fs))
    };
    let e = Engine::recover(EngineConfig::default(), clock.clone(), storage())
        .expect("recover")
        .0;
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        e.topic_put(&format!("t-{}", class.as_str()), cfg(class))
            .await
            .unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpointer = {
        let (e, stop) = (e.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                e.checkpoint().expect("checkpoint");
                n += 1;
            }
            n
        })
    };
    let mut writers = Vec::new();
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        let e = e.clone();
        writers.push(tokio::spawn(async move {
            let t = format!("t-{}", class.as_str());
            for i in 0..300u64 {
                let recs = (0..5)
                    .map(|k| rec(&(i * 5 + k).to_string(), Some("x")))
                    .collect();
                write(&e, &t, recs, class).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(checkpointer.await.unwrap() > 0);
    drop(e); // no shutdown checkpoint: recovery replays the WAL over the last one
    let e = Engine::recover(EngineConfig::default(), clock, storage())
        .expect("recover")
        .0;
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        let got = read(&e, &format!("t-{}", class.as_str()), 0);
        assert_eq!(got.len(), 1500, "{class:?}");
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, (s, v))| *s == i as u64 + 1 && *v == i.to_string())
        );
    }
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}
