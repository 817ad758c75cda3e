//! The commit path: round trips, ordering, group commit, the sync interval, rotation.

mod common;

use common::*;
use parking_lot::Mutex;
use riffle_wal::{Commit, Dir, DirFile, FsDir, Lsn, MemDir, StopReason, Wal, WalError};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

#[test]
fn round_trip_and_reopen_replays_in_order() {
    let mem = MemDir::new();
    let dir: Arc<dyn Dir> = Arc::new(mem.clone());
    let (wal, rec, seen) = open(dir.clone(), cfg(1 << 20, 10)).unwrap();
    assert_eq!(
        (rec.records, rec.segments, rec.stop),
        (0, 0, StopReason::CleanEnd)
    );
    assert!(seen.is_empty());
    let mut lsns = Vec::new();
    for i in 0..100 {
        let commit = if i % 3 == 0 {
            Commit::Sync
        } else {
            Commit::Write
        };
        lsns.push(append(&wal, &payload(i), commit).unwrap());
    }
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "lsns grow");
    let stats = wal.stats();
    assert_eq!(stats.records, 100);
    assert_eq!(stats.failures, 0);
    drop(wal);
    mem.crash(); // drop() synced everything

    let (wal, rec, seen) = open(dir.clone(), cfg(1 << 20, 10)).unwrap();
    assert_eq!(rec.records, 100);
    assert_eq!(rec.stop, StopReason::CleanEnd);
    let expect: Vec<(Lsn, Vec<u8>)> = lsns.iter().copied().zip((0..100).map(payload)).collect();
    assert_eq!(seen, expect);
    // New records go to a new segment, after the old ones.
    let lsn = append(&wal, b"after", Commit::Sync).unwrap();
    assert!(lsn > lsns[99] && lsn.segment > lsns[99].segment);
    drop(wal);
    let (_, all) = replayed(dir, cfg(1 << 20, 10)).unwrap();
    assert_eq!(all.len(), 101);
    assert_eq!(all[100], b"after");
}

#[test]
fn callbacks_run_once_in_queue_order() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let (wal, _, _) = open(dir, cfg(4096, 5)).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..500usize {
        let order = order.clone();
        let commit = if i % 7 == 0 {
            Commit::Sync
        } else {
            Commit::Write
        };
        wal.append(
            payload(i),
            commit,
            Box::new(move |r| order.lock().push((i, r.unwrap()))),
        );
    }
    wal.flush().unwrap();
    let order = order.lock();
    assert_eq!(order.len(), 500);
    assert!(order.iter().enumerate().all(|(i, (j, _))| i == *j));
    assert!(order.windows(2).all(|w| w[0].1 < w[1].1));
    assert!(wal.stats().segment > 1, "4 KiB segments rotated");
}

#[test]
fn a_replay_error_aborts_open() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let (wal, _, _) = open(dir.clone(), cfg(1 << 20, 10)).unwrap();
    append(&wal, b"one", Commit::Sync).unwrap();
    append(&wal, b"two", Commit::Sync).unwrap();
    drop(wal);
    let r = Wal::open(dir, cfg(1 << 20, 10), |_, p| {
        if p == b"two" {
            Err("cannot apply two".into())
        } else {
            Ok(())
        }
    });
    match r {
        Err(WalError::Replay(m)) => assert_eq!(m, "cannot apply two"),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("open succeeded"),
    }
}

/// Counts `sync_data` calls and makes each take 5 ms, like a real disk.
struct SlowSync {
    inner: MemDir,
    syncs: Arc<AtomicU64>,
}
struct SlowFile {
    inner: Arc<dyn DirFile>,
    syncs: Arc<AtomicU64>,
}
impl DirFile for SlowFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        self.inner.sync_data()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.punch_hole(offset, len)
    }
}
impl Dir for SlowSync {
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn DirFile>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.open(path, create)?,
            syncs: self.syncs.clone(),
        }))
    }
    fn exists(&self, path: &str) -> bool {
        self.inner.exists(path)
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

#[test]
fn concurrent_appenders_share_one_fsync() {
    let syncs = Arc::new(AtomicU64::new(0));
    let mem = MemDir::new();
    let dir = Arc::new(SlowSync {
        inner: mem.clone(),
        syncs: syncs.clone(),
    });
    let (wal, _, _) = open(dir, cfg(64 << 20, 1000)).unwrap();
    let wal = Arc::new(wal);
    let before = syncs.load(Ordering::SeqCst);
    let start = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let (wal, start) = (wal.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                append(&wal, &payload(t), Commit::Sync)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let used = syncs.load(Ordering::SeqCst) - before;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(used < 32, "64 concurrent Sync appends took {used} fsyncs");
    assert_eq!(wal.stats().syncs, used);
    assert!(wal.stats().writes < 32, "and few writes: {:?}", wal.stats());
    // Every acknowledged record survives a crash.
    drop(wal);
    mem.crash();
    let (_, all) = replayed(Arc::new(mem), cfg(64 << 20, 1000)).unwrap();
    let mut all = all;
    all.sort();
    let mut expect: Vec<_> = (0..64).map(payload).collect();
    expect.sort();
    assert_eq!(all, expect);
}

#[test]
fn write_records_are_synced_within_the_interval() {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()), cfg(1 << 20, 20)).unwrap();
    let base = wal.stats().syncs;
    let t = Instant::now();
    append(&wal, b"lazy", Commit::Write).unwrap();
    assert_eq!(wal.stats().syncs, base, "acknowledged before any sync");
    while wal.stats().syncs == base {
        assert!(t.elapsed() < Duration::from_secs(2), "never synced");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        t.elapsed() >= Duration::from_millis(15),
        "{:?}",
        t.elapsed()
    );
    // Synced without the WAL being closed: a crash now keeps it.
    mem.crash();
    let (_, all) = replayed(Arc::new(mem.clone()), cfg(1 << 20, 20)).unwrap();
    assert_eq!(all, vec![b"lazy".to_vec()]);
    drop(wal);
}

#[test]
fn lazy_records_never_cause_a_sync_of_their_own() {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()), cfg(1 << 20, 5)).unwrap();
    let base = wal.stats().syncs;
    append(&wal, b"best effort", Commit::Lazy).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(wal.stats().syncs, base, "no interval sync for lazy records");
    // A later synced record covers it.
    append(&wal, b"durable", Commit::Sync).unwrap();
    mem.crash();
    let (_, all) = replayed(Arc::new(mem.clone()), cfg(1 << 20, 5)).unwrap();
    assert_eq!(all, vec![b"best effort".to_vec(), b"durable".to_vec()]);
    drop(wal);
}

#[test]
fn unsynced_write_records_are_lost_in_a_crash_but_drop_syncs_them() {
    let mem = MemDir::new();
    let (fault, plan) = riffle_wal::FaultDir::new(Arc::new(mem.clone()));
    let (wal, _, _) = open(Arc::new(fault), cfg(1 << 20, 60_000)).unwrap();
    append(&wal, b"durable", Commit::Sync).unwrap();
    append(&wal, b"lazy", Commit::Write).unwrap();
    plan.halt(); // power loss before the interval ran out
    drop(wal);
    mem.crash();
    plan.clear();
    let (_, all) = replayed(Arc::new(mem.clone()), cfg(1 << 20, 60_000)).unwrap();
    assert_eq!(all, vec![b"durable".to_vec()]);

    let (wal, _, _) = open(Arc::new(mem.clone()), cfg(1 << 20, 60_000)).unwrap();
    append(&wal, b"lazy again", Commit::Write).unwrap();
    drop(wal); // a clean shutdown syncs
    mem.crash();
    let (_, all) = replayed(Arc::new(mem), cfg(1 << 20, 60_000)).unwrap();
    assert_eq!(all, vec![b"durable".to_vec(), b"lazy again".to_vec()]);
}

#[test]
fn rotation_and_removing_old_segments() {
    let mem = MemDir::new();
    let dir: Arc<dyn Dir> = Arc::new(mem.clone());
    let (wal, _, _) = open(dir.clone(), cfg(200, 10)).unwrap();
    let a = append(&wal, &[1; 100], Commit::Sync).unwrap();
    let b = append(&wal, &[2; 100], Commit::Sync).unwrap();
    assert_eq!(a.segment, b.segment);
    // b passed 200 bytes: the next record starts a new segment.
    let c = append(&wal, &[3; 10], Commit::Sync).unwrap();
    assert_eq!(c.segment, b.segment + 1);
    // An explicit rotation puts everything queued before it in earlier segments.
    let (tx, rx) = mpsc::channel();
    wal.append(
        vec![4; 10],
        Commit::Write,
        Box::new(move |r| tx.send(r).unwrap()),
    );
    let id = wal.rotate().unwrap();
    let d = rx.recv().unwrap().unwrap();
    assert!(d.segment < id);
    let e = append(&wal, &[5; 10], Commit::Sync).unwrap();
    assert_eq!(e.segment, id);
    assert_eq!(wal.stats().segment, id);
    assert_eq!(wal.stats().rotations, 2, "one by size, one asked for");
    assert_eq!(dir.list("wal/00").unwrap().len(), 3);

    wal.remove_segments_before(id).unwrap();
    assert_eq!(dir.list("wal/00").unwrap(), vec![seg(id)]);
    // The active segment is never removed, whatever is asked.
    wal.remove_segments_before(id + 10).unwrap();
    assert_eq!(dir.list("wal/00").unwrap(), vec![seg(id)]);
    drop(wal);
    mem.crash(); // the removals were made durable
    let (rec, all) = replayed(dir, cfg(200, 10)).unwrap();
    assert_eq!(all, vec![vec![5; 10]]);
    assert_eq!(rec.segments, 1);
}

#[test]
fn oversized_records_are_refused_in_order() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let (wal, _, _) = open(dir.clone(), cfg(1024, 10)).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let over = riffle_wal::format::MIN_MAX_RECORD as usize + 1;
    for (i, len) in [10usize, over, 10].into_iter().enumerate() {
        let order = order.clone();
        wal.append(
            vec![7; len],
            Commit::Sync,
            Box::new(move |r| order.lock().push((i, r))),
        );
    }
    wal.flush().unwrap();
    let order = order.lock();
    assert_eq!(order.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(order[0].1.is_ok() && order[2].1.is_ok());
    let e = order[1].1.as_ref().unwrap_err();
    assert!(
        matches!(
            e,
            WalError::Io {
                kind: io::ErrorKind::InvalidInput,
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.is_no_space());
    assert_eq!(
        wal.stats().queue_depth,
        0,
        "a refused record left the queue too"
    );
    drop(wal);
    assert_eq!(replayed(dir, cfg(1024, 10)).unwrap().1.len(), 2);
}

#[test]
fn queue_depth_counts_requests_until_their_callbacks() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let (wal, _, _) = open(dir, cfg(1 << 20, 10)).unwrap();
    let s = wal.stats();
    assert_eq!((s.queue_depth, s.queue_depth_peak), (0, 0));
    // A callback that holds the committer until released: what is queued meanwhile waits.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    wal.append(
        b"held".to_vec(),
        Commit::Write,
        Box::new(move |_| {
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        }),
    );
    entered.recv().unwrap();
    assert_eq!(
        wal.stats().queue_depth,
        0,
        "a record leaves before its callback"
    );
    let (tx, rx) = mpsc::channel();
    for i in 0..3 {
        let tx = tx.clone();
        wal.append(
            payload(i),
            Commit::Write,
            Box::new(move |r| tx.send(r).unwrap()),
        );
    }
    let s = wal.stats();
    assert_eq!((s.queue_depth, s.queue_depth_peak), (3, 3));
    release.send(()).unwrap();
    for _ in 0..3 {
        rx.recv().unwrap().unwrap();
    }
    wal.flush().unwrap();
    let s = wal.stats();
    assert_eq!(s.queue_depth, 0, "nothing in flight once flushed");
    assert!(s.queue_depth_peak >= 3, "the peak stays: {s:?}");
}

#[test]
fn a_panicking_callback_does_not_stop_the_committer() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let (wal, _, _) = open(dir, cfg(1 << 20, 10)).unwrap();
    wal.append(b"a".to_vec(), Commit::Sync, Box::new(|_| panic!("boom")));
    assert!(append(&wal, b"b", Commit::Sync).is_ok());
}

#[test]
fn real_files_round_trip() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = std::env::temp_dir().join(format!("riffle-wal-{}-{nanos}", std::process::id()));
    let dir: Arc<dyn Dir> = Arc::new(FsDir::open(root.join("data")).unwrap());
    let (wal, _, _) = open(dir.clone(), cfg(1 << 20, 10)).unwrap();
    for i in 0..50 {
        append(&wal, &payload(i), Commit::Sync).unwrap();
    }
    drop(wal);
    // Tear the last record of the last segment.
    let last = dir.list("wal/00").unwrap().pop().unwrap();
    let f = dir.open(&last, false).unwrap();
    f.set_len(f.len().unwrap() - 3).unwrap();
    let (rec, all) = replayed(dir.clone(), cfg(1 << 20, 10)).unwrap();
    assert_eq!(all, (0..49).map(payload).collect::<Vec<_>>());
    assert!(matches!(rec.stop, StopReason::TornTail { path, .. } if path == last));
    let (rec, all) = replayed(dir.clone(), cfg(1 << 20, 10)).unwrap();
    assert_eq!(all.len(), 49);
    assert_eq!(rec.stop, StopReason::CleanEnd);
    let _ = std::fs::remove_dir_all(&root);
}
