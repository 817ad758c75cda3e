//! Forks over their lifetime: soft deletion and cascading collection, expiry inheritance,
//! errors that leave no reference, concurrency, and a durable fork surviving a restart.

use super::*;

#[tokio::test]
async fn soft_delete_keeps_a_referenced_source() {
    let (e, _) = engine();
    e.create("src", bytes_spec()).await.unwrap();
    put(&e, "src", b"abc").await;
    e.create("f", fork_spec("src", None, 0)).await.unwrap();
    let held = e.open("src").unwrap();

    e.delete("src").await.unwrap();
    assert_eq!(e.info("src").unwrap_err(), EngineError::Gone);
    assert_eq!(e.open("src").err().unwrap(), EngineError::Gone);
    assert_eq!(e.delete("src").await.unwrap_err(), EngineError::Gone);
    assert_eq!(
        e.append("src", req(raw(b"x"))).await.unwrap_err(),
        EngineError::Gone
    );
    assert_eq!(
        held.read(ReadFrom::Start, 100).unwrap_err(),
        EngineError::Gone
    );
    let err = e.create("src", bytes_spec()).await.unwrap_err();
    assert!(matches!(err, EngineError::ConfigMismatch(_)), "{err:?}");
    let err = e.create("g", fork_spec("src", None, 0)).await.unwrap_err();
    assert_eq!(err, EngineError::ForkSourceGone);
    assert_eq!(e.log_count(), 2);

    // The fork lives on.
    put(&e, "f", b"d").await;
    assert_eq!(read_all(&e, "f"), b"abcd");
    // Forking the fork still works.
    e.create("g", fork_spec("f", Some(2), 0)).await.unwrap();
    assert_eq!(read_all(&e, "g"), b"ab");
}

#[tokio::test]
async fn last_fork_deleted_collects_the_chain() {
    let (e, _) = engine();
    e.create("a", bytes_spec()).await.unwrap();
    put(&e, "a", b"abc").await;
    e.create("b", fork_spec("a", None, 0)).await.unwrap();
    put(&e, "b", b"d").await;
    e.create("c", fork_spec("b", None, 0)).await.unwrap();
    e.create("c2", fork_spec("a", Some(1), 0)).await.unwrap();
    let ha = e.open("a").unwrap();
    let hb = e.open("b").unwrap();

    e.delete("a").await.unwrap();
    e.delete("b").await.unwrap();
    assert_eq!(e.info("a").unwrap_err(), EngineError::Gone);
    assert_eq!(e.info("b").unwrap_err(), EngineError::Gone);
    assert_eq!(read_all(&e, "c"), b"abcd");
    assert_eq!(e.log_count(), 4);

    // c goes: b is collected, but a is still held by c2.
    e.delete("c").await.unwrap();
    assert_eq!(e.info("c").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.info("b").unwrap_err(), EngineError::NotFound);
    assert_eq!(
        hb.read(ReadFrom::Start, 10).unwrap_err(),
        EngineError::NotFound
    );
    assert_eq!(e.info("a").unwrap_err(), EngineError::Gone);
    assert_eq!(ha.read(ReadFrom::Start, 10).unwrap_err(), EngineError::Gone);
    assert_eq!(e.log_count(), 2);

    e.delete("c2").await.unwrap();
    assert_eq!(e.info("a").unwrap_err(), EngineError::NotFound);
    assert_eq!(
        ha.read(ReadFrom::Start, 10).unwrap_err(),
        EngineError::NotFound
    );
    assert_eq!(e.log_count(), 0);
    // Open handles keep what they were opened on; once they go, so does the memory.
    drop((ha, hb));
    assert_eq!(e.memory_used(), 0);

    // The names are free again, as fresh logs.
    let a = e.create("a", bytes_spec()).await.unwrap();
    assert!(a.created);
    assert_eq!(a.info.next, 0);
    e.create("b", json_spec()).await.unwrap();
}

#[tokio::test]
async fn deleting_a_fork_of_a_live_source_leaves_the_source() {
    let (e, _) = engine();
    e.create("a", bytes_spec()).await.unwrap();
    put(&e, "a", b"abc").await;
    e.create("b", fork_spec("a", None, 0)).await.unwrap();
    e.delete("b").await.unwrap();
    assert_eq!(read_all(&e, "a"), b"abc");
    // No reference is left behind: deleting the source removes it.
    e.delete("a").await.unwrap();
    assert_eq!(e.info("a").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 0);
}

#[tokio::test]
async fn fork_inherits_ttl_as_its_own_window() {
    let (e, clock) = engine();
    e.create(
        "src",
        CreateSpec {
            expiry: Some(Expiry::Ttl { secs: 10 }),
            ..bytes_spec()
        },
    )
    .await
    .unwrap();
    put(&e, "src", b"abc").await;
    let f = e.create("f", fork_spec("src", None, 0)).await.unwrap();
    assert_eq!(f.info.expiry, Some(Expiry::Ttl { secs: 10 }));
    // An explicit expiry wins.
    let g = e
        .create(
            "g",
            CreateSpec {
                expiry: Some(Expiry::Ttl { secs: 1000 }),
                ..fork_spec("src", None, 0)
            },
        )
        .await
        .unwrap();
    assert_eq!(g.info.expiry, Some(Expiry::Ttl { secs: 1000 }));

    clock.advance_ms(6_000);
    e.open("f").unwrap();
    clock.advance_ms(6_000);
    // The source idled 12 s: expired, but forks hold it.
    assert_eq!(e.info("src").unwrap_err(), EngineError::Gone);
    // The fork was touched 6 s ago.
    assert_eq!(read_all(&e, "f"), b"abc");
    clock.advance_ms(10_000);
    assert_eq!(e.info("f").unwrap_err(), EngineError::NotFound);
    // g still holds the source.
    assert_eq!(e.info("src").unwrap_err(), EngineError::Gone);
    assert_eq!(read_all(&e, "g"), b"abc");
    e.delete("g").await.unwrap();
    assert_eq!(e.info("src").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 0);
}

#[tokio::test]
async fn fork_inherits_expires_at() {
    let (e, clock) = engine();
    let at = Expiry::At {
        unix_ms: 1_005_000,
        text: "soon".into(),
    };
    e.create(
        "src",
        CreateSpec {
            expiry: Some(at.clone()),
            ..bytes_spec()
        },
    )
    .await
    .unwrap();
    put(&e, "src", b"abc").await;
    let f = e.create("f", fork_spec("src", Some(1), 0)).await.unwrap();
    assert_eq!(f.info.expiry, Some(at.clone()));
    // Touching does not move an absolute deadline.
    clock.advance_ms(4_999);
    e.open("f").unwrap();
    e.open("src").unwrap();
    clock.advance_ms(1);
    // The fork expires by itself and releases the source, which is expired too.
    assert_eq!(e.info("f").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.info("src").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 0);
}

#[tokio::test]
async fn expired_source_with_forks_is_gone() {
    let (e, clock) = engine();
    e.create(
        "src",
        CreateSpec {
            expiry: Some(Expiry::Ttl { secs: 10 }),
            ..bytes_spec()
        },
    )
    .await
    .unwrap();
    put(&e, "src", b"abc").await;
    e.create(
        "f",
        CreateSpec {
            expiry: Some(Expiry::At {
                unix_ms: i64::MAX,
                text: "never".into(),
            }),
            ..fork_spec("src", None, 0)
        },
    )
    .await
    .unwrap();
    e.create("lonely", bytes_spec()).await.unwrap();
    clock.advance_ms(10_000);

    assert_eq!(e.open("src").err().unwrap(), EngineError::Gone);
    assert_eq!(e.info("src").unwrap_err(), EngineError::Gone);
    assert_eq!(e.delete("src").await.unwrap_err(), EngineError::Gone);
    let err = e.create("g", fork_spec("src", None, 0)).await.unwrap_err();
    assert_eq!(err, EngineError::ForkSourceGone);
    let err = e.create("src", bytes_spec()).await.unwrap_err();
    assert!(matches!(err, EngineError::ConfigMismatch(_)), "{err:?}");
    assert_eq!(read_all(&e, "f"), b"abc");
    put(&e, "f", b"d").await;
    assert_eq!(read_all(&e, "f"), b"abcd");
    e.delete("f").await.unwrap();
    assert_eq!(e.info("src").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 1);
}

#[tokio::test]
async fn forking_an_expired_source_without_forks() {
    let (e, clock) = engine();
    e.create(
        "src",
        CreateSpec {
            expiry: Some(Expiry::Ttl { secs: 1 }),
            ..bytes_spec()
        },
    )
    .await
    .unwrap();
    clock.advance_ms(1_000);
    let err = e.create("f", fork_spec("src", None, 0)).await.unwrap_err();
    assert_eq!(err, EngineError::ForkSourceNotFound);
    assert_eq!(e.log_count(), 0);
}

#[tokio::test]
async fn fork_errors_leave_no_reference() {
    let (e, _) = engine();
    let err = e
        .create("f", fork_spec("missing", None, 0))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::ForkSourceNotFound);
    assert_eq!(e.info("f").unwrap_err(), EngineError::NotFound);

    for attempt in 0..4 {
        e.create("src", bytes_spec()).await.unwrap();
        put(&e, "src", b"abc").await;
        let (spec, expected) = match attempt {
            0 => (
                CreateSpec {
                    content_type: Some((JSON_CT.into(), Framing::JsonMessages)),
                    ..fork_spec("src", None, 0)
                },
                EngineError::ForkContentTypeMismatch {
                    given: JSON_CT.into(),
                    source_type: BYTES_CT.into(),
                },
            ),
            1 => (
                fork_spec("src", Some(4), 0),
                EngineError::ForkOffsetBeyondTail { offset: 4, tail: 3 },
            ),
            2 => (
                fork_spec("src", Some(1), 3),
                EngineError::ForkSubOffsetOvershoot {
                    sub: 3,
                    available: 2,
                },
            ),
            _ => (
                CreateSpec {
                    initial: raw(&[0; 11 << 20]),
                    ..fork_spec("src", None, 0)
                },
                EngineError::StreamFull {
                    size: 3 + (11 << 20),
                    limit: 10 << 20,
                },
            ),
        };
        let err = e.create("f", spec).await.unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(e.info("f").unwrap_err(), EngineError::NotFound);
        // The source holds no reference from the failed fork: a delete removes it fully.
        e.delete("src").await.unwrap();
        assert_eq!(
            e.info("src").unwrap_err(),
            EngineError::NotFound,
            "after {expected:?}"
        );
        assert_eq!(e.log_count(), 0);
    }
}

#[tokio::test]
async fn fork_content_type_may_differ_in_case_and_parameters() {
    let (e, _) = engine();
    e.create("src", bytes_spec()).await.unwrap();
    put(&e, "src", b"abc").await;
    let f = e
        .create(
            "f",
            CreateSpec {
                content_type: Some(("Text/Plain; charset=utf-8".into(), Framing::Bytes)),
                ..fork_spec("src", None, 0)
            },
        )
        .await
        .unwrap();
    assert_eq!(&*f.info.content_type, "Text/Plain; charset=utf-8");
    assert_eq!(f.info.framing, Framing::Bytes);
}

#[tokio::test]
async fn fork_create_is_idempotent() {
    let (e, _) = engine();
    e.create("src", bytes_spec()).await.unwrap();
    put(&e, "src", b"abcdef").await;
    let first = e.create("f", fork_spec("src", Some(0), 2)).await.unwrap();
    assert!(first.created);
    let again = e.create("f", fork_spec("src", Some(0), 2)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.info.id, first.info.id);
    for other in [
        fork_spec("src", Some(0), 3),
        fork_spec("src", Some(1), 2),
        fork_spec("src", None, 0),
        bytes_spec(),
    ] {
        let err = e.create("f", other).await.unwrap_err();
        assert!(matches!(err, EngineError::ConfigMismatch(_)), "{err:?}");
    }
    assert_eq!(read_all(&e, "f"), b"ab");
}

#[tokio::test]
async fn fork_of_a_closed_source_is_open() {
    let (e, _) = engine();
    e.create(
        "src",
        CreateSpec {
            closed: true,
            initial: raw(b"abc"),
            ..bytes_spec()
        },
    )
    .await
    .unwrap();
    let f = e.create("f", fork_spec("src", None, 0)).await.unwrap();
    assert!(!f.info.closed);
    put(&e, "f", b"d").await;
    assert_eq!(read_all(&e, "f"), b"abcd");
    let g = e
        .create(
            "g",
            CreateSpec {
                closed: true,
                initial: raw(b"Z"),
                ..fork_spec("src", Some(1), 0)
            },
        )
        .await
        .unwrap();
    assert!(g.info.closed);
    assert_eq!(read_all(&e, "g"), b"aZ");
}

/// Forks created, written and deleted from several threads while the source is deleted: no
/// reference is lost or leaked, so everything is collected at the end.
#[test]
fn concurrent_forks_and_deletes_keep_references_exact() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 200;
    let (e, _) = engine();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    };
    rt().block_on(async {
        e.create("src", bytes_spec()).await.unwrap();
        put(&e, "src", b"base").await;
    });
    let forked = std::sync::atomic::AtomicUsize::new(0);
    let forked = &forked;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let e = &e;
            scope.spawn(move || {
                rt().block_on(async {
                    for round in 0..ROUNDS {
                        let name = format!("f{t}");
                        match e.create(&name, fork_spec("src", Some(4), 0)).await {
                            Ok(_) => {
                                forked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            // The source was deleted (soft) and no fork can be made of it.
                            Err(EngineError::ForkSourceGone | EngineError::ForkSourceNotFound) => {
                                return;
                            }
                            Err(err) => panic!("{err:?}"),
                        }
                        put(e, &name, format!("{t}.{round}").as_bytes()).await;
                        let batch = e
                            .open(&name)
                            .unwrap()
                            .read(ReadFrom::Start, usize::MAX)
                            .unwrap();
                        let want = format!("base{t}.{round}");
                        assert_eq!(batch.chunks.concat(), want.as_bytes());
                        e.delete(&name).await.unwrap();
                    }
                });
            });
        }
        scope.spawn(|| {
            // Delete the source while forks come and go.
            while forked.load(std::sync::atomic::Ordering::SeqCst) < THREADS * ROUNDS / 4 {
                std::thread::yield_now();
            }
            rt().block_on(e.delete("src")).unwrap();
        });
    });
    assert_eq!(e.info("src").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 0);
    assert_eq!(e.memory_used(), 0);
}

/// A fork of a durable class keeps its promise across a clean restart even when its source is
/// ephemeral: either the engine refuses to make it, or the fork comes back whole.
#[tokio::test]
async fn durable_fork_of_an_ephemeral_source_survives_a_restart() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let open = || {
        let config = EngineConfig {
            default_durability: Durability::Memory,
            ..EngineConfig::default()
        };
        let clock = Arc::new(ManualClock::new(1_000_000));
        Engine::recover(config, clock, StorageConfig::new(dir.clone()))
            .unwrap()
            .0
    };
    let e = open();
    e.create(
        "src",
        CreateSpec {
            durability: Some(Durability::Ephemeral),
            ..bytes_spec()
        },
    )
    .await
    .unwrap();
    put(&e, "src", b"abc").await;
    let created = e
        .create(
            "f",
            CreateSpec {
                durability: Some(Durability::Fsync),
                ..fork_spec("src", None, 0)
            },
        )
        .await;
    let created = match created {
        Ok(created) => created,
        Err(err) => {
            // Refused: a promise not made is a promise kept. Nothing of the fork remains.
            assert!(matches!(err, EngineError::ForkOfEphemeral), "{err:?}");
            assert_eq!(e.info("f").unwrap_err(), EngineError::NotFound);
            e.delete("src").await.unwrap();
            assert_eq!(e.info("src").unwrap_err(), EngineError::NotFound);
            assert_eq!(e.log_count(), 0);
            return;
        }
    };
    assert_eq!(created.info.durability, Durability::Fsync);
    put(&e, "f", b"def").await;
    assert_eq!(read_all(&e, "f"), b"abcdef");
    e.close().unwrap();
    drop(e);

    let e = open();
    assert_eq!(e.info("src").unwrap_err(), EngineError::NotFound);
    let info = e
        .info("f")
        .expect("the acknowledged fsync-class fork is lost");
    assert_eq!(info.durability, Durability::Fsync);
    assert_eq!(read_all(&e, "f"), b"abcdef");
}
