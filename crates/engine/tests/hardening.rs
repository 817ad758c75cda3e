//! The engine's hardening against hostile clients and failing disks: deep fork chains, fork
//! depth limits, append futures dropped mid-commit (a client resetting its HTTP/2 stream),
//! failed WAL writes in every durable class, creates that are not yet durable, and start-up
//! work that must not grow with the number of untouched logs.

use riffle_engine::wal::Fault;
use riffle_engine::{
    AppendStatus, CreateSpec, Durability, Engine, EngineConfig, EngineError, ForkSpec, ManualClock,
    Payload, ReadFrom, StorageConfig,
};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

mod common;
use common::disk::Disk;
use common::requests::{read_all, text_append as data, text_spec as text};

fn disk() -> Disk {
    Disk::new()
}

fn open_with(d: &Disk, config: EngineConfig) -> Engine {
    let mut storage = StorageConfig::new(d.dir().clone());
    storage.shards = 2;
    storage.sync_interval = Duration::from_millis(5);
    Engine::recover(config, Arc::new(ManualClock::new(1_000_000)), storage)
        .expect("recover")
        .0
}

fn open(d: &Disk) -> Engine {
    open_with(
        d,
        EngineConfig {
            default_durability: Durability::Fsync,
            ..EngineConfig::default()
        },
    )
}

/// A process crash with power loss: everything unsynced is gone.
fn crash(d: &Disk, engine: Engine) {
    d.power_loss(engine);
}

fn process_crash(d: &Disk, engine: Engine) {
    d.process_crash(engine);
}

fn fork_of(source: &str) -> CreateSpec {
    CreateSpec {
        content_type: None,
        fork: Some(ForkSpec {
            source: source.into(),
            offset: None,
            sub: 0,
        }),
        ..text(None)
    }
}

/// Poll a future once and drop it, as a server drops a request whose client went away.
fn poll_once_and_drop<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Build a chain `root <- f1 <- ... <- f<depth>`, each fork adding one byte.
async fn chain(e: &Engine, depth: usize, spec: CreateSpec) -> Vec<u8> {
    e.create("f0", spec).await.unwrap();
    e.append("f0", data(b"a", None)).await.unwrap();
    let mut want = b"a".to_vec();
    for i in 1..=depth {
        let name = format!("f{i}");
        e.create(&name, fork_of(&format!("f{}", i - 1)))
            .await
            .unwrap();
        let byte = b'a' + (i % 26) as u8;
        e.append(&name, data([byte], None)).await.unwrap();
        want.push(byte);
    }
    want
}

/// A read of the deepest fork of a very deep chain walks the chain iteratively: recursion per
/// level overflowed the stack at a few thousand levels, in reads and when the chain was
/// dropped.
#[tokio::test]
async fn a_very_deep_fork_chain_is_read_and_dropped_without_recursion() {
    let depth = 20_000;
    let e = Engine::new(
        EngineConfig {
            max_fork_depth: depth as u32,
            ..EngineConfig::default()
        },
        Arc::new(ManualClock::new(1_000_000)),
    );
    let want = chain(&e, depth, text(None)).await;
    let deepest = format!("f{depth}");
    assert_eq!(read_all(&e, &deepest), want);
    // Reads that start inside the chain, with small budgets, stop at record boundaries.
    let h = e.open(&deepest).unwrap();
    let batch = h.read(ReadFrom::At(12_345), 3).unwrap();
    assert_eq!(batch.chunks.concat(), want[12_345..12_348]);
    // Deleting the whole chain from the leaf collects it level by level, then drop it all.
    for i in (0..=depth).rev() {
        e.delete(&format!("f{i}")).await.unwrap();
    }
    assert_eq!(e.log_count(), 0);
    drop(h);
    drop(e);
}

#[tokio::test]
async fn a_deep_durable_chain_comes_back_after_a_restart() {
    let d = disk();
    let config = EngineConfig {
        default_durability: Durability::Fsync,
        max_fork_depth: 5_000,
        ..EngineConfig::default()
    };
    let e = open_with(&d, config);
    let want = chain(&e, 3_000, text(None)).await;
    drop(e);
    let e = open_with(&d, config);
    assert_eq!(read_all(&e, "f3000"), want);
    crash(&d, e);
    let e = open_with(&d, config);
    assert_eq!(read_all(&e, "f3000"), want);
}

#[tokio::test]
async fn fork_depth_is_limited() {
    let e = Engine::new(
        EngineConfig {
            max_fork_depth: 3,
            ..EngineConfig::default()
        },
        Arc::new(ManualClock::new(1_000_000)),
    );
    chain(&e, 3, text(None)).await;
    let err = e.create("f4", fork_of("f3")).await.unwrap_err();
    assert_eq!(err, EngineError::ForkTooDeep { depth: 4, limit: 3 });
    assert_eq!(e.info("f4").unwrap_err(), EngineError::NotFound);
    // A fork of a shallower log is fine.
    e.create("g", fork_of("f2")).await.unwrap();
}

/// A request dropped while its append waits for the WAL (an HTTP/2 client resetting its
/// stream) must not let the next append validate against the state from before it: the retry
/// of the same producer tuple is a duplicate if the first one committed, and the log holds
/// its data once. A future dropped while waiting for the append lock has no effect at all. Before the fix the retry was stored a second time, and recovery then
/// refused the directory.
#[tokio::test]
async fn a_dropped_append_future_never_lets_a_retry_store_twice() {
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        let d = disk();
        let e = open(&d);
        e.create("s", text(Some(class))).await.unwrap();
        let mut want = Vec::new();
        for seq in 0..50u64 {
            let first = format!("A{seq};");
            let retry = format!("B{seq};");
            let early = poll_once_and_drop(e.append("s", data(first.as_bytes(), Some(("p", seq)))));
            // Usually still waiting for the WAL when dropped; a fast committer may have applied
            // it within that one poll.
            if let Some(answer) = early {
                assert_eq!(answer.unwrap().status, AppendStatus::Written);
            }
            // Another retry, dropped while it (most likely) waits for the append lock, the
            // other await point: whether it ran or not, it stores nothing.
            let queued = poll_once_and_drop(e.append("s", data(b"never", Some(("p", seq)))));
            if let Some(answer) = queued {
                assert_eq!(answer.unwrap().status, AppendStatus::Duplicate);
            }
            let answer = e
                .append("s", data(retry.as_bytes(), Some(("p", seq))))
                .await
                .unwrap();
            // The dropped append was queued before the retry was validated, so it committed
            // first and the retry is its duplicate.
            assert_eq!(
                answer.status,
                AppendStatus::Duplicate,
                "{class:?} seq {seq}"
            );
            want.extend_from_slice(first.as_bytes());
        }
        assert_eq!(read_all(&e, "s"), want, "{class:?}");
        process_crash(&d, e);
        let e = open(&d);
        assert_eq!(read_all(&e, "s"), want, "{class:?} after a restart");
        let next = e.append("s", data(b"!", Some(("p", 50)))).await.unwrap();
        assert_eq!(next.status, AppendStatus::Written);
    }
}

/// A WAL write that fails shows nothing of its append, whatever the class: the append
/// answers a storage error (no_space for ENOSPC), readers never see it, the writer state is
/// as before (the producer seq is not consumed), later appends work when the disk does, and
/// a crash afterwards recovers. Before the fix `memory` and `disk` acknowledged first.
#[tokio::test]
async fn a_failed_wal_write_shows_nothing_in_every_durable_class() {
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        for fault in [Fault::Eio, Fault::NoSpace, Fault::Short] {
            let d = disk();
            let e = open(&d);
            e.create("s", text(Some(class))).await.unwrap();
            e.append("s", data(b"one;", Some(("p", 0)))).await.unwrap();
            d.plan().fail_writes("wal", fault, 1);
            let err = e
                .append("s", data(b"two;", Some(("p", 1))))
                .await
                .unwrap_err();
            match err {
                EngineError::Storage { no_space, .. } => {
                    assert_eq!(no_space, fault == Fault::NoSpace, "{class:?} {fault:?}")
                }
                other => panic!("{class:?} {fault:?}: expected a storage error, got {other:?}"),
            }
            assert_eq!(read_all(&e, "s"), b"one;", "{class:?} {fault:?}");
            assert_eq!(e.info("s").unwrap().next, 4);
            // The same seq is still the next one: nothing of the failed append was applied.
            let again = e.append("s", data(b"two;", Some(("p", 1)))).await.unwrap();
            assert_eq!(again.status, AppendStatus::Written, "{class:?} {fault:?}");
            e.append("s", data(b"three;", Some(("p", 2))))
                .await
                .unwrap();
            assert_eq!(read_all(&e, "s"), b"one;two;three;");
            // A process crash (no power loss: the page cache survives) keeps all of it.
            process_crash(&d, e);
            let e = open(&d);
            assert_eq!(read_all(&e, "s"), b"one;two;three;", "{class:?} {fault:?}");
            // And a power loss keeps at least what was synced, never a hole or a duplicate.
            crash(&d, e);
            let e = open(&d);
            let got = read_all(&e, "s");
            assert!(
                b"one;two;three;".starts_with(&got),
                "{class:?} {fault:?}: {}",
                String::from_utf8_lossy(&got)
            );
            if class == Durability::Fsync {
                assert_eq!(got, b"one;two;three;");
            }
        }
    }
}

/// A durable create is invisible until its WAL record commits: a reader never sees a stream
/// (or its initial data) that a crash could take back. A create whose commit fails leaves
/// nothing behind, and the name can be created again.
#[tokio::test]
async fn a_durable_create_is_invisible_until_it_commits() {
    let d = disk();
    let e = open(&d);
    d.plan().fail_syncs("wal", 1);
    let spec = CreateSpec {
        initial: Payload {
            data: "initial".into(),
            messages: 1,
        },
        ..text(Some(Durability::Fsync))
    };
    let mut create = Box::pin(e.create("s", spec.clone()));
    let first = create
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(first.is_pending());
    assert_eq!(e.info("s").unwrap_err(), EngineError::NotFound);
    assert!(e.open("s").is_err());
    assert!(matches!(
        e.append("s", data(b"x", None)).await,
        Err(EngineError::NotFound)
    ));
    let err = create.as_mut().await.unwrap_err();
    assert!(matches!(err, EngineError::Storage { .. }), "{err:?}");
    assert_eq!(e.info("s").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 0);

    assert!(e.create("s", spec.clone()).await.unwrap().created);
    assert_eq!(read_all(&e, "s"), b"initial");
    drop(create);
    crash(&d, e);
    let e = open(&d);
    assert_eq!(read_all(&e, "s"), b"initial");
}

/// Concurrent creates of one name wait for the first one's outcome instead of both writing.
#[tokio::test]
async fn concurrent_creates_of_one_name_make_one_log() {
    let d = disk();
    let e = open(&d);
    let (a, b) = tokio::join!(
        e.create("s", text(Some(Durability::Fsync))),
        e.create("s", text(Some(Durability::Fsync)))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.created ^ b.created, "exactly one create made the log");
    assert_eq!(a.info.id, b.info.id);
}

/// Start-up syncs only the stream files that replay wrote to, not every durable log's.
#[tokio::test]
async fn a_restart_syncs_only_what_replay_wrote() {
    let d = disk();
    let e = open(&d);
    for i in 0..60 {
        let name = format!("s{i}");
        e.create(&name, text(None)).await.unwrap();
        e.append(&name, data(b"x", None)).await.unwrap();
    }
    e.close().unwrap(); // a clean shutdown checkpoints: nothing is left to replay
    drop(e);
    let before = d.plan().syncs_seen();
    let e = open(&d);
    let clean_start = d.plan().syncs_seen() - before;
    assert!(
        clean_start < 20,
        "a clean start made {clean_start} syncs for 60 logs with nothing to replay"
    );
    // After a crash, only the log appended since the last checkpoint needs a sync.
    e.append("s7", data(b"y", None)).await.unwrap();
    crash(&d, e);
    let before = d.plan().syncs_seen();
    let e = open(&d);
    let after_crash = d.plan().syncs_seen() - before;
    assert!(
        after_crash < 20,
        "{after_crash} syncs after replaying one log"
    );
    assert_eq!(read_all(&e, "s7"), b"xy");
}

/// A fork in one WAL shard of a source of the same class in another (found by the simulation,
/// seed 374): a sync of the fork's shard made the fork's creation durable while the source's
/// records it inherited, in the other shard, were not yet synced; after a power loss the fork
/// was lost with its missing source, or could not be read to its tail. A durable fork now
/// waits until what it inherits from other shards is synced.
#[tokio::test]
async fn a_fork_never_outlives_what_it_inherited_from_another_shard() {
    for class in [Durability::Memory, Durability::Disk] {
        let d = disk();
        let mut storage = StorageConfig::new(d.dir());
        storage.shards = 2;
        // Nothing is synced by the interval during the test: only what the engine asks for.
        storage.sync_interval = Duration::from_secs(3600);
        let config = EngineConfig {
            default_durability: class,
            ..EngineConfig::default()
        };
        let clock = Arc::new(ManualClock::new(1_000_000));
        let e = Engine::recover(config, clock.clone(), storage.clone())
            .expect("recover")
            .0;
        // An fsync-class log first: its appends sync its shard, which the fork will share.
        let syncer = e
            .create("syncer", text(Some(Durability::Fsync)))
            .await
            .unwrap()
            .info
            .id;
        let src = e.create("src", text(None)).await.unwrap().info.id;
        e.append("src", data(b"abc", None)).await.unwrap();
        let fork = e.create("fork", fork_of("src")).await.unwrap().info.id;
        assert_eq!(
            (src % 2 != fork % 2, syncer % 2 == fork % 2),
            (true, true),
            "ids alternate between the two shards"
        );
        e.append("syncer", data(b"x", None)).await.unwrap();
        crash(&d, e);
        clock.advance_ms(1_000);
        let mut storage = StorageConfig::new(d.dir());
        storage.shards = 2;
        let e = Engine::recover(config, clock, storage).expect("recover").0;
        // The fork is durable (its shard was synced), so everything it inherited must be too.
        assert_eq!(read_all(&e, "fork"), b"abc", "{class:?}");
        assert_eq!(read_all(&e, "src"), b"abc", "{class:?}");
    }
}

/// A WAL segment lost past the one replay starts in cannot be told from a shorter log, but
/// the stream files of the logs it created are not deleted as orphans: they are renamed
/// `*.lost` for an operator (after a crash they are unacknowledged creates).
#[tokio::test]
async fn files_of_logs_no_record_describes_are_kept_aside() {
    let d = disk();
    let open_small = |d: &Disk| {
        let mut storage = StorageConfig::new(d.dir().clone());
        storage.shards = 1;
        storage.segment_bytes = 4096;
        let config = EngineConfig {
            default_durability: Durability::Fsync,
            ..EngineConfig::default()
        };
        Engine::recover(config, Arc::new(ManualClock::new(1_000_000)), storage)
            .expect("recover")
            .0
    };
    let e = open_small(&d);
    e.create("a", text(None)).await.unwrap();
    e.checkpoint().unwrap();
    let segments = |d: &Disk| d.dir().list("wal/00").unwrap();
    let start = segments(&d).len();
    // Enough appends to roll into later segments; then a log created in the newest.
    while segments(&d).len() < start + 2 {
        e.append("a", data(vec![b'x'; 1000], None)).await.unwrap();
    }
    e.create("c", text(None)).await.unwrap();
    e.append("c", data("c-data", None)).await.unwrap();
    drop(e);
    let newest = segments(&d).pop().unwrap();
    d.dir().remove(&newest).unwrap();

    let e = open_small(&d);
    assert_eq!(e.info("c").unwrap_err(), EngineError::NotFound);
    let names = d.dir().list("streams").unwrap();
    let lost: Vec<&String> = names.iter().filter(|n| n.ends_with(".lost")).collect();
    assert_eq!(lost.len(), 2, "c's two files, kept aside: {names:?}");
    drop(e);
    // And left alone by the next recovery.
    let _e = open_small(&d);
    let again = d.dir().list("streams").unwrap();
    assert_eq!(again.iter().filter(|n| n.ends_with(".lost")).count(), 2);
}
