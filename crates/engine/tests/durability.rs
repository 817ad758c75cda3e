//! Durability through the filesystem seam: restarts of every class, simulated crashes that
//! drop unsynced data, injected I/O faults, checkpoints, and corruption.

use riffle_engine::wal::Fault;
use riffle_engine::{
    AppendStatus, Durability, Engine, EngineConfig, EngineError, ForkSpec, ManualClock,
    StorageConfig,
};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::disk::Disk;
use common::requests::{read_all, text_append as append, text_spec as spec};

fn disk() -> Disk {
    Disk::new()
}

fn open(d: &Disk, default: Durability) -> Engine {
    let mut storage = StorageConfig::new(d.dir().clone());
    storage.shards = 2;
    storage.sync_interval = Duration::from_millis(5);
    let config = EngineConfig {
        default_durability: default,
        ..EngineConfig::default()
    };
    recover(config, storage, 1_000_000)
}

/// An engine on `storage`, its clock at `now_ms`.
fn recover(config: EngineConfig, storage: StorageConfig, now_ms: i64) -> Engine {
    Engine::recover(config, Arc::new(ManualClock::new(now_ms)), storage)
        .expect("recover")
        .0
}

/// Power loss: the disk stops answering, everything unsynced is gone, the process dies.
fn crash(d: &Disk, engine: Engine) {
    d.power_loss(engine);
}

#[tokio::test]
async fn fsync_appends_survive_a_crash_with_their_producer_state() {
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    engine.create("/s", spec(None)).await.unwrap();
    let mut want = Vec::new();
    for seq in 0..50 {
        let data = format!("record-{seq};");
        engine
            .append("/s", append(&data, Some(("p", seq))))
            .await
            .unwrap();
        want.extend_from_slice(data.as_bytes());
    }
    crash(&d, engine);

    let engine = open(&d, Durability::Fsync);
    assert_eq!(read_all(&engine, "/s"), want);
    // A retry of the last acknowledged append is a duplicate, the next seq is new.
    let dup = engine
        .append("/s", append("record-49;", Some(("p", 49))))
        .await
        .unwrap();
    assert_eq!(dup.status, AppendStatus::Duplicate);
    let next = engine
        .append("/s", append("record-50;", Some(("p", 50))))
        .await
        .unwrap();
    assert_eq!(next.status, AppendStatus::Written);
    assert_eq!(engine.info("/s").unwrap().durability, Durability::Fsync);
}

#[tokio::test]
async fn every_class_keeps_its_promise_across_a_restart() {
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    for class in [
        Durability::Ephemeral,
        Durability::Memory,
        Durability::Disk,
        Durability::Fsync,
    ] {
        let name = format!("/{class}");
        engine.create(&name, spec(Some(class))).await.unwrap();
        engine.append(&name, append("abc", None)).await.unwrap();
        engine.append(&name, append("def", None)).await.unwrap();
    }
    // A clean shutdown: every persistent class keeps everything; ephemeral logs are gone.
    engine.close().unwrap();
    drop(engine);
    let engine = open(&d, Durability::Fsync);
    assert_eq!(
        engine.info("/ephemeral").unwrap_err(),
        EngineError::NotFound
    );
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        assert_eq!(
            read_all(&engine, &format!("/{class}")),
            b"abcdef",
            "{class}"
        );
    }

    // A crash: fsync keeps everything acknowledged; the others keep a prefix, never garbage.
    for class in [Durability::Memory, Durability::Disk, Durability::Fsync] {
        engine
            .append(&format!("/{class}"), append("ghi", None))
            .await
            .unwrap();
    }
    crash(&d, engine);
    let engine = open(&d, Durability::Fsync);
    assert_eq!(read_all(&engine, "/fsync"), b"abcdefghi");
    for class in [Durability::Memory, Durability::Disk] {
        let got = read_all(&engine, &format!("/{class}"));
        assert!(
            b"abcdefghi".starts_with(&got) && got.len() >= 6,
            "{class}: {got:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_write_fails_the_append_and_shows_nothing() {
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    engine.create("/f", spec(None)).await.unwrap();
    engine
        .append("/f", append("ok;", Some(("p", 0))))
        .await
        .unwrap();

    d.plan().fail_writes("wal/", Fault::Eio, 1);
    let err = engine
        .append("/f", append("lost;", Some(("p", 1))))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Storage {
                no_space: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(read_all(&engine, "/f"), b"ok;");
    // The failed seq was not consumed: the retry is new data, not a duplicate.
    let retry = engine
        .append("/f", append("again;", Some(("p", 1))))
        .await
        .unwrap();
    assert_eq!(retry.status, AppendStatus::Written);

    d.plan().fail_writes("wal/", Fault::NoSpace, 1);
    let err = engine
        .append("/f", append("full;", Some(("p", 2))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Storage { no_space: true, .. }),
        "{err:?}"
    );
    d.plan().fail_syncs("wal/", 1);
    assert!(
        engine
            .append("/f", append("nosync;", Some(("p", 2))))
            .await
            .is_err()
    );
    assert_eq!(read_all(&engine, "/f"), b"ok;again;");

    // The disk recovered: writes work, and a restart shows exactly the acknowledged data.
    engine
        .append("/f", append("end;", Some(("p", 2))))
        .await
        .unwrap();
    crash(&d, engine);
    let engine = open(&d, Durability::Fsync);
    assert_eq!(read_all(&engine, "/f"), b"ok;again;end;");
}

#[tokio::test]
async fn a_torn_wal_write_recovers_to_the_acknowledged_prefix() {
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    engine.create("/t", spec(None)).await.unwrap();
    engine.append("/t", append("one;", None)).await.unwrap();
    d.plan().fail_writes("wal/", Fault::Torn, 1);
    assert!(engine.append("/t", append("two;", None)).await.is_err());
    crash(&d, engine);
    let engine = open(&d, Durability::Fsync);
    assert_eq!(read_all(&engine, "/t"), b"one;");
    engine.append("/t", append("three;", None)).await.unwrap();
    assert_eq!(read_all(&engine, "/t"), b"one;three;");
}

#[tokio::test]
async fn checkpoints_cover_the_wal_and_recovery_replays_only_the_rest() {
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    engine.create("/c", spec(None)).await.unwrap();
    for i in 0..20 {
        engine
            .append("/c", append(format!("{i},"), None))
            .await
            .unwrap();
    }
    engine.checkpoint().unwrap();
    for i in 20..30 {
        engine
            .append("/c", append(format!("{i},"), None))
            .await
            .unwrap();
    }
    let want: String = (0..30).map(|i| format!("{i},")).collect();
    crash(&d, engine);
    let engine = open(&d, Durability::Fsync);
    assert_eq!(read_all(&engine, "/c"), want.as_bytes());
    // After a checkpoint only the newest segment of each shard remains.
    engine.checkpoint().unwrap();
    for shard in ["wal/00", "wal/01"] {
        assert!(
            d.dir().list(shard).unwrap().len() <= 1,
            "{shard} was recycled"
        );
    }
}

#[tokio::test]
async fn forks_and_deletes_survive_restarts() {
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    engine.create("/src", spec(None)).await.unwrap();
    engine.append("/src", append("hello", None)).await.unwrap();
    let mut fork = spec(None);
    fork.fork = Some(ForkSpec {
        source: "/src".into(),
        offset: Some(0),
        sub: 3,
    });
    engine.create("/fork", fork).await.unwrap();
    engine.append("/fork", append("p!", None)).await.unwrap();
    engine.delete("/src").await.unwrap();
    crash(&d, engine);

    let engine = open(&d, Durability::Fsync);
    assert_eq!(engine.info("/src").unwrap_err(), EngineError::Gone);
    assert_eq!(read_all(&engine, "/fork"), b"help!");
    engine.delete("/fork").await.unwrap();
    assert_eq!(engine.info("/src").unwrap_err(), EngineError::NotFound);
    crash(&d, engine);

    let engine = open(&d, Durability::Fsync);
    assert_eq!(engine.info("/src").unwrap_err(), EngineError::NotFound);
    assert_eq!(engine.info("/fork").unwrap_err(), EngineError::NotFound);
    // Their files are gone too.
    assert!(d.dir().list("streams").unwrap().is_empty());
}

#[tokio::test]
async fn corruption_that_is_not_a_torn_tail_refuses_to_open() {
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    engine.create("/x", spec(None)).await.unwrap();
    for i in 0..10 {
        engine
            .append("/x", append(format!("{i:04}"), None))
            .await
            .unwrap();
    }
    drop(engine);
    // Flip a byte in the middle of the (only) segment of the log's shard.
    let seg = ["wal/00", "wal/01"]
        .iter()
        .flat_map(|s| d.dir().list(s).unwrap())
        .max_by_key(|p| d.dir().open(p, false).unwrap().len().unwrap())
        .unwrap();
    let f = d.dir().open(&seg, false).unwrap();
    let len = f.len().unwrap();
    let mut b = [0u8; 1];
    f.read_at(&mut b, len / 2).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], len / 2).unwrap();
    f.sync_data().unwrap();

    let mut storage = StorageConfig::new(d.dir().clone());
    storage.shards = 2;
    let err = Engine::recover(
        EngineConfig::default(),
        Arc::new(ManualClock::new(0)),
        storage,
    )
    .err()
    .expect("corruption is refused")
    .to_string();
    assert!(err.contains(&seg), "{err}");
}

#[tokio::test]
async fn unwritable_stream_files_keep_data_readable_and_bound_ram() {
    let d = disk();
    let mut storage = StorageConfig::new(d.dir().clone());
    storage.shards = 1;
    let config = EngineConfig {
        default_durability: Durability::Fsync,
        max_stream_bytes: 64 << 20,
        ..EngineConfig::default()
    };
    let engine = recover(config, storage, 0);
    engine.create("/p", spec(None)).await.unwrap();
    d.plan().fail_writes("streams/", Fault::Eio, usize::MAX);
    let chunk = "x".repeat(1 << 20);
    let mut accepted = 0;
    let err = loop {
        match engine.append("/p", append(&chunk, None)).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(
            accepted < 64,
            "appends must be refused once the pending tail is large"
        );
    };
    assert!(
        matches!(
            err,
            EngineError::Storage {
                no_space: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(accepted >= 8, "the WAL took {accepted} appends");
    // Everything acknowledged is readable from RAM meanwhile.
    assert_eq!(read_all(&engine, "/p").len(), accepted << 20);

    // The disk recovers: a checkpoint writes the tail out, and appends work again.
    d.plan().clear();
    engine.checkpoint().unwrap();
    engine.append("/p", append("end", None)).await.unwrap();
    crash(&d, engine);
    let engine = open(&d, Durability::Fsync);
    let got = read_all(&engine, "/p");
    assert_eq!(got.len(), (accepted << 20) + 3);
    assert!(got.ends_with(b"xend"));
}

#[tokio::test]
async fn recovery_removes_stream_files_no_log_owns_and_keeps_the_rest() {
    let d = disk();
    let engine = open(&d, Durability::Disk);
    engine.create("/kept", spec(None)).await.unwrap();
    engine.append("/kept", append("kept;", None)).await.unwrap();
    engine.close().expect("clean shutdown");
    drop(engine);
    // Strays: files of a log id below every known one (a deleted log's), of one above them
    // all (no record describes it: kept aside as `.lost`), names that only look like a log's,
    // and junk.
    let dir = d.dir();
    let live: Vec<String> = dir.list("streams").unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    let strays = [
        "streams/0000000000000000.data",
        "streams/0000000000000000.idx",
        "streams/00000000deadbeef.data",
        "streams/00000000deadbeef.idx",
        "streams/junk",
        "streams/000000000000001.data",
        "streams/0000000000000001.data.old",
    ];
    for s in strays {
        dir.open(s, true).unwrap().write_all_at(b"x", 0).unwrap();
    }

    let engine = open(&d, Durability::Disk);
    let mut left: Vec<String> = dir
        .list("streams")
        .unwrap()
        .into_iter()
        .map(|n| n.rsplit('/').next().unwrap().to_string())
        .collect();
    left.sort();
    let mut want: Vec<String> = live
        .iter()
        .map(|n| n.rsplit('/').next().unwrap().to_string())
        .chain([
            "00000000deadbeef.data.lost".into(),
            "00000000deadbeef.idx.lost".into(),
        ])
        .collect();
    want.sort();
    assert_eq!(
        left, want,
        "the live log's files, and the unknown newer log's kept aside"
    );
    assert_eq!(read_all(&engine, "/kept"), b"kept;");
}

/// A checkpoint after writes to many streams syncs their files with one call for the whole
/// directory (`syncfs` on real disks), not two per stream; what it covers survives a power
/// loss, and a failure of that call fails the checkpoint without losing anything.
#[tokio::test]
async fn a_checkpoint_over_many_written_streams_syncs_them_at_once() {
    const STREAMS: usize = 300;
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    for i in 0..STREAMS {
        let name = format!("/many/{i}");
        engine.create(&name, spec(None)).await.unwrap();
        engine
            .append(&name, append(format!("first {i};"), None))
            .await
            .unwrap();
    }
    let before = d.plan().syncs_seen();
    engine.checkpoint().unwrap();
    let syncs = d.plan().syncs_seen() - before;
    assert!(
        syncs < 10,
        "{syncs} syncs for {STREAMS} streams: the checkpoint synced file by file"
    );
    crash(&d, engine);

    // Everything the checkpoint covered is in the stream files (the WAL before it is gone).
    let engine = open(&d, Durability::Fsync);
    for i in 0..STREAMS {
        assert_eq!(
            read_all(&engine, &format!("/many/{i}")),
            format!("first {i};").as_bytes()
        );
    }

    // The bulk sync fails: so does the checkpoint, and the WAL it would have let go stays.
    for i in 0..STREAMS {
        engine
            .append(&format!("/many/{i}"), append(format!("second {i};"), None))
            .await
            .unwrap();
    }
    d.plan().fail_syncs("streams/", 1);
    assert!(engine.checkpoint().is_err());
    crash(&d, engine);
    let engine = open(&d, Durability::Fsync);
    for i in 0..STREAMS {
        assert_eq!(
            read_all(&engine, &format!("/many/{i}")),
            format!("first {i};second {i};").as_bytes()
        );
    }
    engine.checkpoint().unwrap();
}

/// The background flush writes a pending tail into its files without a checkpoint or another
/// append, and a log whose write failed is tried again until it works.
#[tokio::test]
async fn pending_tails_reach_their_files_in_the_background_despite_failed_writes() {
    use riffle_engine::wal::Dir;
    let d = disk();
    let engine = open(&d, Durability::Fsync);
    engine.create("/busy", spec(None)).await.unwrap();
    let id = engine.info("/busy").unwrap().id;
    let path = format!("streams/{id:016x}.data");
    let size = |d: &Disk| d.mem.size(&path).unwrap().unwrap_or(0);
    d.plan().fail_writes("streams/", Fault::Eio, 3);
    engine.append("/busy", append("tail;", None)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while size(&d) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tail never reached {path}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read_all(&engine, "/busy"), b"tail;");
}

/// An engine whose cache holds 4 open files: a few streams written at once crowd it.
fn crowded(d: &Disk) -> Engine {
    let mut storage = StorageConfig::new(d.dir().clone());
    storage.max_open_files = 4;
    let config = EngineConfig {
        default_durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    recover(config, storage, 1_000_000)
}

/// With more logs to write than the cache of open files holds, the background flush lets
/// small tails wait some rounds instead of reopening two files per log each round; they still
/// reach their files without a checkpoint, and read back whole meanwhile.
#[tokio::test]
async fn deferred_tails_of_a_crowded_cache_still_reach_their_files() {
    use riffle_engine::wal::Dir;
    let d = disk();
    let engine = crowded(&d);
    let mut paths = Vec::new();
    for i in 0..10 {
        let name = format!("/crowd-{i}");
        engine.create(&name, spec(None)).await.unwrap();
        engine.append(&name, append("tail;", None)).await.unwrap();
        let id = engine.info(&name).unwrap().id;
        paths.push((name, format!("streams/{id:016x}.data")));
    }
    for (name, _) in &paths {
        assert_eq!(read_all(&engine, name), b"tail;");
    }
    // At two rounds a second a deferred tail waits about 2 s; allow ten times that.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for (name, path) in &paths {
        while d.mem.size(path).unwrap().unwrap_or(0) < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "the tail of {name} never reached {path}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let files = engine.storage_stats().expect("storage").files;
    assert!(files.open <= files.capacity, "{files:?}");
}

/// Tails a crowded cache left waiting are in the WAL: a power loss before any of them reached
/// its file loses none.
#[tokio::test]
async fn deferred_tails_survive_a_power_loss() {
    let d = disk();
    let engine = crowded(&d);
    for i in 0..10 {
        let name = format!("/crowd-{i}");
        engine.create(&name, spec(None)).await.unwrap();
        engine.append(&name, append("tail;", None)).await.unwrap();
    }
    crash(&d, engine);
    let engine = crowded(&d);
    for i in 0..10 {
        assert_eq!(read_all(&engine, &format!("/crowd-{i}")), b"tail;");
    }
}

/// A restart takes a checkpoint only when recovery replayed something: after a graceful stop
/// (nothing written since its final checkpoint) the one found is current and kept as it is.
#[tokio::test]
async fn a_restart_checkpoints_only_what_it_replayed() {
    let d = disk();
    let checkpoint = |d: &Disk| {
        use riffle_engine::wal::Dir;
        let f = d.mem.open("checkpoint", false).expect("a checkpoint");
        let mut buf = vec![0u8; f.len().unwrap() as usize];
        f.read_at(&mut buf, 0).unwrap();
        buf
    };
    let engine = open(&d, Durability::Fsync);
    engine.create("/c", spec(None)).await.unwrap();
    engine.append("/c", append("one;", None)).await.unwrap();
    engine.close().unwrap();
    let closed = checkpoint(&d);
    d.process_crash(engine);

    let engine = open(&d, Durability::Fsync);
    assert_eq!(
        checkpoint(&d),
        closed,
        "nothing replayed: the checkpoint stays"
    );
    engine.append("/c", append("two;", None)).await.unwrap();
    d.process_crash(engine);

    let engine = open(&d, Durability::Fsync);
    assert_ne!(checkpoint(&d), closed, "a replay is checkpointed");
    assert_eq!(read_all(&engine, "/c"), b"one;two;");
}
