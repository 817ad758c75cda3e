//! Append limits (stream and memory quotas, producer state), appends to missing logs, the
//! classes that need storage, and concurrent producers.

use super::*;

#[tokio::test]
async fn stream_full_limit() {
    let e = engine_with(EngineConfig {
        max_stream_bytes: 10,
        ..EngineConfig::default()
    });
    new_log(&e, "s").await;
    e.append("s", data(b"123456")).await.unwrap();
    let err = e.append("s", data(b"78901")).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::StreamFull {
            size: 11,
            limit: 10
        }
    );
    let a = e.append("s", data(b"7890")).await.unwrap();
    assert_eq!(a.next, 10);
    let err = e.append("s", data(b"x")).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::StreamFull {
            size: 11,
            limit: 10
        }
    );
    // A close-only still works on a full log.
    let a = e.append("s", close_only()).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);

    // Initial data counts.
    let err = e
        .create(
            "big",
            CreateSpec {
                initial: payload(&[0; 11]),
                ..spec()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::StreamFull {
            size: 11,
            limit: 10
        }
    );
    assert_eq!(e.info("big").unwrap_err(), EngineError::NotFound);

    // A fork's inherited bytes count.
    e.create(
        "f",
        CreateSpec {
            fork: Some(ForkSpec {
                source: "s".into(),
                offset: Some(8),
                sub: 0,
            }),
            content_type: None,
            ..spec()
        },
    )
    .await
    .unwrap();
    e.append("f", data(b"ab")).await.unwrap();
    let err = e.append("f", data(b"c")).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::StreamFull {
            size: 11,
            limit: 10
        }
    );
    let err = e
        .create(
            "f2",
            CreateSpec {
                fork: Some(ForkSpec {
                    source: "s".into(),
                    offset: Some(5),
                    sub: 0,
                }),
                content_type: None,
                initial: payload(b"123456"),
                ..spec()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::StreamFull {
            size: 11,
            limit: 10
        }
    );
}

/// The budget counts what the engine holds for clients: every log's own structures, every
/// record's bytes and index entry, every producer.
#[tokio::test]
async fn memory_full_limit_and_release() {
    // Measure what a log, a record and a producer cost, on an engine with room to spare.
    let probe = engine();
    new_log(&probe, "a").await;
    let per_log = probe.memory_used();
    assert!(per_log > 0, "a log's own structures count");
    probe.append("a", data(&[1; 15])).await.unwrap();
    let rec15 = probe.memory_used() - per_log;
    assert!(rec15 > 15, "a record's index entry counts too");
    let rec5 = rec15 - 10;
    probe
        .append("a", produced(&[1; 5], "p", 0, 0))
        .await
        .unwrap();
    let producer = probe.memory_used() - per_log - rec15 - rec5;
    assert!(producer > 1, "a producer's state counts");
    probe.delete("a").await.unwrap();
    assert_eq!(probe.memory_used(), 0);

    // Room for two logs, a 15-byte record and a 5-byte record, nothing more.
    let limit = 2 * per_log + rec15 + rec5;
    let e = engine_with(EngineConfig {
        max_memory_bytes: limit,
        ..EngineConfig::default()
    });
    new_log(&e, "a").await;
    new_log(&e, "b").await;
    e.append("a", data(&[1; 15])).await.unwrap();
    assert_eq!(e.memory_used(), 2 * per_log + rec15);
    let err = e
        .append("b", produced(&[2; 6], "p", 0, 0))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::MemoryFull { limit });
    assert_eq!(e.memory_used(), 2 * per_log + rec15);
    assert_eq!(e.info("b").unwrap().next, 0);
    let err = e
        .create(
            "c",
            CreateSpec {
                initial: payload(&[3; 6]),
                ..spec()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::MemoryFull { limit });
    assert_eq!(e.info("c").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.memory_used(), 2 * per_log + rec15);
    e.append("b", data(&[2; 5])).await.unwrap();
    assert_eq!(e.memory_used(), limit);

    e.delete("a").await.unwrap();
    assert_eq!(e.memory_used(), per_log + rec5);
    // The rejected producer seq 0 was not consumed.
    let a = e.append("b", produced(&[2; 6], "p", 0, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(e.memory_used(), per_log + rec5 + (rec5 + 1) + producer);
    e.delete("b").await.unwrap();
    assert_eq!(e.memory_used(), 0);
}

/// A client cannot grow a stream's producer table without bound: ids are limited in length
/// and the least recently used producer is forgotten beyond the per-log limit, its memory
/// given back.
#[tokio::test]
async fn producer_state_is_bounded() {
    let e = engine_with(EngineConfig {
        max_producers_per_log: 3,
        max_producer_id_bytes: 8,
        max_stream_seq_bytes: 4,
        ..EngineConfig::default()
    });
    new_log(&e, "s").await;
    let err = e
        .append("s", produced(b"x", "123456789", 0, 0))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::ProducerIdTooLong { len: 9, limit: 8 });
    let err = e.append("s", seq(b"x", "12345")).await.unwrap_err();
    assert_eq!(err, EngineError::StreamSeqTooLong { len: 5, limit: 4 });
    assert_eq!(
        e.info("s").unwrap().next,
        0,
        "refused appends store nothing"
    );

    for p in ["a", "b", "c"] {
        e.append("s", produced(b"x", p, 0, 0)).await.unwrap();
    }
    let three = e.memory_used();
    // "a" is used again, so "b" is now the least recently used and goes when "d" arrives.
    e.append("s", produced(b"x", "a", 0, 1)).await.unwrap();
    e.append("s", produced(b"x", "d", 0, 0)).await.unwrap();
    assert_eq!(
        e.memory_used(),
        three + 2 * (1 + 8),
        "one producer in, one out"
    );
    let dup = e.append("s", produced(b"x", "a", 0, 1)).await.unwrap();
    assert_eq!(dup.status, AppendStatus::Duplicate, "a is remembered");
    let dup = e.append("s", produced(b"x", "c", 0, 0)).await.unwrap();
    assert_eq!(dup.status, AppendStatus::Duplicate, "c is remembered");
    // b was forgotten: its next seq is judged as from a new producer (a gap, not a write).
    let err = e.append("s", produced(b"x", "b", 0, 1)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::SeqGap {
            expected: 0,
            received: 1
        }
    );
}

#[tokio::test]
async fn memory_of_a_soft_deleted_source_is_released_when_collected() {
    let e = engine();
    e.create(
        "src",
        CreateSpec {
            initial: payload(&[1; 10]),
            ..spec()
        },
    )
    .await
    .unwrap();
    e.create(
        "fork",
        CreateSpec {
            fork: Some(ForkSpec {
                source: "src".into(),
                offset: None,
                sub: 0,
            }),
            content_type: None,
            ..spec()
        },
    )
    .await
    .unwrap();
    e.append("fork", data(&[2; 5])).await.unwrap();
    let both = e.memory_used();
    assert!(both > 15, "both logs and their records count");
    e.delete("src").await.unwrap();
    // Retained for the fork.
    assert_eq!(e.memory_used(), both);
    e.delete("fork").await.unwrap();
    assert_eq!(e.memory_used(), 0);
    assert_eq!(e.log_count(), 0);
}

#[tokio::test]
async fn appends_to_missing_logs() {
    let e = engine();
    assert_eq!(
        e.append("nope", data(b"x")).await.unwrap_err(),
        EngineError::NotFound
    );
    new_log(&e, "s").await;
    e.delete("s").await.unwrap();
    assert_eq!(
        e.append("s", data(b"x")).await.unwrap_err(),
        EngineError::NotFound
    );
}

#[tokio::test]
async fn durable_classes_need_storage() {
    let e = engine_with(EngineConfig {
        default_durability: Durability::Disk,
        ..EngineConfig::default()
    });
    // Without storage every log is ephemeral by default...
    let created = e.create("s", spec()).await.unwrap();
    assert_eq!(created.info.durability, Durability::Ephemeral);
    assert_eq!(e.config().default_durability, Durability::Ephemeral);
    // ...and a durable class cannot be had.
    for d in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        let err = e
            .create(
                "d",
                CreateSpec {
                    durability: Some(d),
                    ..spec()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err, EngineError::DurabilityUnavailable(d));
    }
    assert_eq!(e.info("d").unwrap_err(), EngineError::NotFound);
    // Asking for the class a log has is an idempotent re-create.
    let again = e
        .create(
            "s",
            CreateSpec {
                durability: Some(Durability::Ephemeral),
                ..spec()
            },
        )
        .await
        .unwrap();
    assert!(!again.created);
}

/// Producers appending from several threads at once: every append lands whole and once, each
/// producer's appends in its order, and a concurrent reader only ever sees the log grow.
#[test]
fn concurrent_producers_append_atomically() {
    const THREADS: usize = 4;
    const APPENDS: u64 = 300;
    let e = engine();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    };
    rt().block_on(new_log(&e, "s"));
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let h = e.open("s").unwrap();
            let mut seen: Vec<u8> = Vec::new();
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let batch = h.read(ReadFrom::Start, usize::MAX).unwrap();
                let now = batch.chunks.concat();
                assert!(now.starts_with(&seen), "bytes at a position changed");
                assert_eq!(now.len() as u64, batch.next);
                seen = now;
                reads += 1;
            }
            reads
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let e = &e;
                scope.spawn(move || {
                    rt().block_on(async {
                        let id = format!("t{t}");
                        for seq in 0..APPENDS {
                            let d = format!("<{t}:{seq}>");
                            let a = e.append("s", produced(d.as_bytes(), &id, 0, seq)).await;
                            assert_eq!(a.unwrap().status, AppendStatus::Written);
                            if seq % 7 == 0 {
                                let a = e.append("s", produced(b"dup", &id, 0, seq)).await;
                                let a = a.unwrap();
                                assert_eq!(a.status, AppendStatus::Duplicate);
                                assert_eq!(a.producer, ack(0, seq));
                            }
                        }
                    })
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
    });

    let all = String::from_utf8(read_all(&e, "s")).unwrap();
    let mut next = [0u64; THREADS];
    let mut count = 0;
    for rec in all.split_terminator('>') {
        let (t, seq) = rec.strip_prefix('<').unwrap().split_once(':').unwrap();
        let t: usize = t.parse().unwrap();
        assert_eq!(
            seq.parse::<u64>().unwrap(),
            next[t],
            "producer {t} out of order"
        );
        next[t] += 1;
        count += 1;
    }
    assert_eq!(count, THREADS as u64 * APPENDS);
    assert_eq!(next, [APPENDS; THREADS]);
}
