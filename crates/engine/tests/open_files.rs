//! Many more file-backed logs than open stream files: with `max_open_files` a handful, every
//! operation reopens files through the engine's cache. Data, forks, deletes, checkpoints and
//! crashes must behave exactly as with every file held open, and the engine must never hold
//! more stream files open than its capacity (plus the few an operation has in hand).

use riffle_engine::wal::{CountingDir, Dir, MemDir};
use riffle_engine::{
    AppendRequest, CreateSpec, Durability, Engine, EngineConfig, EngineError, ForkSpec, Framing,
    ManualClock, Payload, ReadFrom, StorageConfig,
};
use std::sync::Arc;
use std::time::Duration;

const CAPACITY: usize = 4;
/// Most stream files alive at once: the cache's, plus what concurrent operations hold.
const MOST_OPEN: usize = CAPACITY + 4;

/// An in-memory disk seen through a directory that counts the stream-file handles alive (and
/// the most at once).
struct Disk {
    mem: MemDir,
    dir: CountingDir,
}

impl std::ops::Deref for Disk {
    type Target = CountingDir;
    fn deref(&self) -> &CountingDir {
        &self.dir
    }
}

fn counting() -> Disk {
    let mem = MemDir::new();
    let dir = CountingDir::new(Arc::new(mem.clone()), "streams/");
    Disk { mem, dir }
}

fn open(d: &Disk) -> Engine {
    let mut storage = StorageConfig::new(Arc::new(d.dir.clone()));
    storage.shards = 2;
    storage.sync_interval = Duration::from_millis(5);
    storage.max_open_files = CAPACITY;
    let config = EngineConfig {
        default_durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    Engine::recover(config, Arc::new(ManualClock::new(1_000_000)), storage)
        .expect("recover")
        .0
}

fn spec(fork: Option<ForkSpec>) -> CreateSpec {
    CreateSpec {
        content_type: Some(("text/plain".into(), Framing::Bytes)),
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork,
        durability: None,
    }
}

fn append(data: String) -> AppendRequest {
    AppendRequest {
        content_type: Some("text/plain".into()),
        payload: Payload {
            data: data.into(),
            messages: 1,
        },
        ..Default::default()
    }
}

fn read_all(engine: &Engine, name: &str) -> Vec<u8> {
    let handle = engine.open(name).expect("open");
    let mut out = Vec::new();
    // Small budgets, so reads walk the record index of files that come and go.
    let mut from = ReadFrom::Start;
    loop {
        let batch = handle.read(from, 7).expect("read");
        for c in &batch.chunks {
            out.extend_from_slice(c);
        }
        if batch.up_to_date {
            return out;
        }
        from = ReadFrom::At(batch.next);
    }
}

fn name(i: usize) -> String {
    format!("/log-{i}")
}

fn record(i: usize, n: usize) -> String {
    format!("{i}:{n}{};", "x".repeat((i * 3 + n) % 11))
}

const LOGS: usize = 60;

#[tokio::test]
async fn many_logs_through_a_few_open_files_survive_checkpoints_deletes_and_a_crash() {
    let d = counting();
    let engine = open(&d);
    let mut want: Vec<Vec<u8>> = vec![Vec::new(); LOGS];
    for i in 0..LOGS {
        engine.create(&name(i), spec(None)).await.expect("create");
    }
    // Appends interleaved over every log, so each one evicts another's files.
    for n in 0..6 {
        for (i, w) in want.iter_mut().enumerate() {
            let r = record(i, n);
            engine
                .append(&name(i), append(r.clone()))
                .await
                .expect("append");
            w.extend_from_slice(r.as_bytes());
        }
        if n == 2 {
            // Pending tails reach the files, which a checkpoint syncs through reopened handles.
            engine.checkpoint().expect("checkpoint");
        }
    }
    for (i, w) in want.iter().enumerate() {
        assert_eq!(read_all(&engine, &name(i)), *w, "log {i}");
    }
    // A fork of an evicted log reads its source's files through the cache too.
    let fork = ForkSpec {
        source: name(0),
        offset: None,
        sub: 0,
    };
    engine
        .create("/fork", spec(Some(fork)))
        .await
        .expect("fork");
    engine
        .append("/fork", append("forked;".into()))
        .await
        .expect("append to fork");
    let mut fork_want = want[0].clone();
    fork_want.extend_from_slice(b"forked;");
    // Deleted logs lose their files; the source of the fork stays until the fork goes.
    for i in (1..LOGS).step_by(3) {
        engine.delete(&name(i)).await.expect("delete");
    }
    engine.delete(&name(0)).await.expect("soft delete");
    for i in (1..LOGS).step_by(3) {
        assert_eq!(engine.open(&name(i)).err(), Some(EngineError::NotFound));
    }
    // Two files per log left (40, the fork's source among them, and the fork): the deleted
    // logs' files are gone.
    assert_eq!(d.mem.list("streams").expect("list").len(), 41 * 2);
    assert_eq!(read_all(&engine, "/fork"), fork_want);
    // The cache filled up (so files really were evicted and reopened) and stayed bounded.
    assert!(d.peak() >= CAPACITY);
    assert!(
        d.peak() <= MOST_OPEN,
        "{} stream files open at once",
        d.peak()
    );

    // Power loss: only what was synced (files at the checkpoint, the WAL) survives.
    d.mem.crash();
    drop(engine);
    assert_eq!(d.live(), 0, "every handle closed");
    let engine = open(&d);
    for (i, w) in want.iter().enumerate().skip(2) {
        if i % 3 == 1 {
            assert_eq!(engine.open(&name(i)).err(), Some(EngineError::NotFound));
        } else {
            assert_eq!(read_all(&engine, &name(i)), *w, "log {i} after the crash");
        }
    }
    assert_eq!(read_all(&engine, "/fork"), fork_want);
    // Two files per live log (40 logs, the fork and its soft-deleted source), nothing else.
    let live = (2..LOGS).filter(|i| i % 3 != 1).count() + 2;
    assert_eq!(d.mem.list("streams").expect("list").len(), live * 2);
    assert!(d.peak() <= MOST_OPEN);

    // The recovered logs take appends and serve them back.
    for (i, w) in want
        .iter_mut()
        .enumerate()
        .skip(2)
        .filter(|(i, _)| i % 3 != 1)
    {
        let r = record(i, 99);
        engine
            .append(&name(i), append(r.clone()))
            .await
            .expect("append");
        w.extend_from_slice(r.as_bytes());
        assert_eq!(read_all(&engine, &name(i)), *w);
    }
    engine.close().expect("clean shutdown");
    drop(engine);
    let engine = open(&d);
    for (i, w) in want.iter().enumerate().skip(2).filter(|(i, _)| i % 3 != 1) {
        assert_eq!(read_all(&engine, &name(i)), *w, "log {i} after a restart");
    }
    assert!(d.peak() <= MOST_OPEN);
}

#[tokio::test]
async fn concurrent_appends_and_reads_over_a_small_cache() {
    let d = counting();
    let engine = open(&d);
    for i in 0..LOGS {
        engine.create(&name(i), spec(None)).await.expect("create");
    }
    // Threads of their own (the test runtime has one), each with its own runtime.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    for n in 0..5 {
                        for i in (t..LOGS).step_by(4) {
                            engine
                                .append(&name(i), append(record(i, n)))
                                .await
                                .expect("append");
                            let _ = read_all(&engine, &name((i + 1) % LOGS));
                        }
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    engine.checkpoint().expect("checkpoint");
    for i in 0..LOGS {
        let want: String = (0..5).map(|n| record(i, n)).collect();
        assert_eq!(read_all(&engine, &name(i)), want.as_bytes(), "log {i}");
    }
    assert!(d.peak() <= MOST_OPEN);
}

#[tokio::test]
async fn a_clean_restart_opens_no_stream_file_until_it_is_used() {
    let d = counting();
    let engine = open(&d);
    for i in 0..20 {
        let name = format!("/s{i}");
        engine.create(&name, spec(None)).await.unwrap();
        engine
            .append(&name, append(format!("data {i};")))
            .await
            .unwrap();
    }
    engine.close().expect("clean shutdown");
    drop(engine);

    // Every log's files have their recorded lengths: recovery checks their sizes and opens
    // none of them.
    let before = d.opens();
    let engine = open(&d);
    assert_eq!(d.opens(), before, "recovery opened stream files");
    for i in 0..20 {
        assert_eq!(
            read_all(&engine, &format!("/s{i}")),
            format!("data {i};").as_bytes()
        );
    }
    assert!(d.opens() > before, "reads open the files they need");
    drop(engine);

    // A data file longer than its log's records (bytes no record covers, as a power loss can
    // leave) is opened and cut back.
    let path = d
        .mem
        .list("streams")
        .unwrap()
        .into_iter()
        .find(|p| p.ends_with(".data"))
        .expect("a data file");
    let f = d.mem.open(&path, false).unwrap();
    let len = f.len().unwrap();
    f.write_all_at(b"junk", len).unwrap();
    let engine = open(&d);
    assert_eq!(d.mem.open(&path, false).unwrap().len().unwrap(), len);
    for i in 0..20 {
        assert_eq!(
            read_all(&engine, &format!("/s{i}")),
            format!("data {i};").as_bytes()
        );
    }
}
