//! The WAL's promises, through the directory seam: group commit shares fsyncs, replay is the
//! longest valid prefix, torn tails are cut, other damage is refused, failed records never
//! come back.

use riffle_wal::{
    Commit, Dir, DirFile, Fault, FaultDir, MemDir, StopReason, Wal, WalConfig, WalError,
};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

fn cfg() -> WalConfig {
    WalConfig {
        shard: 0,
        segment_bytes: 1 << 20,
        sync_interval: Duration::from_millis(20),
    }
}

fn open(dir: Arc<dyn Dir>) -> (Wal, Vec<Vec<u8>>, StopReason) {
    let mut seen = Vec::new();
    let (wal, rec) = Wal::open(dir, cfg(), |_, r| {
        seen.push(r.to_vec());
        Ok(())
    })
    .expect("open");
    (wal, seen, rec.stop)
}

fn append(wal: &Wal, payload: &[u8], commit: Commit) -> Result<(), WalError> {
    let (tx, rx) = mpsc::channel();
    wal.append(
        payload.to_vec(),
        commit,
        Box::new(move |r| {
            let _ = tx.send(r.map(|_| ()));
        }),
    );
    rx.recv().expect("callback ran")
}

/// A directory whose syncs are slow and counted, to show that concurrent appenders share them.
struct SlowSyncDir {
    inner: MemDir,
    syncs: Arc<AtomicU64>,
}

struct SlowSyncFile {
    inner: Arc<dyn DirFile>,
    syncs: Arc<AtomicU64>,
}

impl DirFile for SlowSyncFile {
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
}

impl Dir for SlowSyncDir {
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn DirFile>> {
        Ok(Arc::new(SlowSyncFile {
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
fn concurrent_appenders_share_fsyncs() {
    let syncs = Arc::new(AtomicU64::new(0));
    let mem = MemDir::new();
    let dir = Arc::new(SlowSyncDir {
        inner: mem.clone(),
        syncs: syncs.clone(),
    });
    let (wal, _, _) = open(dir);
    let wal = Arc::new(wal);
    let before = syncs.load(Ordering::SeqCst);
    let writers = 64;
    let barrier = Arc::new(Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let (wal, barrier) = (wal.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                append(&wal, format!("writer {i}").as_bytes(), Commit::Sync)
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer").expect("durable");
    }
    let used = syncs.load(Ordering::SeqCst) - before;
    assert!(used < 32, "64 synced appends took {used} fsyncs");
    assert_eq!(wal.stats().records, 64);
    drop(wal);
    mem.crash();
    let (_, seen, _) = open(Arc::new(mem));
    assert_eq!(seen.len(), 64, "every acknowledged record survives a crash");
}

#[test]
fn write_records_are_synced_within_the_interval() {
    let (wal, _, _) = open(Arc::new(MemDir::new()));
    let before = wal.stats().syncs;
    append(&wal, b"lazy", Commit::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(wal.stats().syncs > before, "the interval sync happened");
}

#[test]
fn reopen_replays_in_order_across_segments() {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()));
    for i in 0..10u8 {
        append(&wal, &[i; 3], Commit::Sync).unwrap();
        if i == 4 {
            wal.rotate().unwrap();
        }
    }
    drop(wal);
    let (wal, seen, stop) = open(Arc::new(mem.clone()));
    assert_eq!(stop, StopReason::CleanEnd);
    assert_eq!(seen, (0..10u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
    // Segments before a rotation can be dropped once something else covers them.
    let seg = wal.rotate().unwrap();
    wal.remove_segments_before(seg).unwrap();
    drop(wal);
    let (_, seen, _) = open(Arc::new(mem));
    assert!(seen.is_empty());
}

#[test]
fn a_tail_torn_at_any_byte_is_cut_and_the_rest_survives() {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()));
    append(&wal, b"first", Commit::Sync).unwrap();
    append(&wal, b"second record", Commit::Sync).unwrap();
    drop(wal);
    let seg = mem.list("wal/00").unwrap().pop().unwrap();
    let full = mem.open(&seg, false).unwrap().len().unwrap();
    let last_len = 8 + b"second record".len() as u64;
    for cut in (full - last_len)..full {
        let copy = MemDir::new();
        for p in mem.list("wal/00").unwrap() {
            let src = mem.open(&p, false).unwrap();
            let mut buf = vec![0; src.len().unwrap() as usize];
            src.read_at(&mut buf, 0).unwrap();
            let dst = copy.open(&p, true).unwrap();
            dst.write_all_at(&buf, 0).unwrap();
            if p == seg {
                dst.set_len(cut).unwrap();
            }
        }
        let (wal, seen, stop) = open(Arc::new(copy.clone()));
        assert_eq!(seen, vec![b"first".to_vec()], "cut at {cut}");
        let torn = matches!(stop, StopReason::TornTail { .. });
        assert!(torn || cut == full - last_len, "cut at {cut}: {stop:?}");
        drop(wal);
        let (_, seen, stop) = open(Arc::new(copy));
        assert_eq!(seen, vec![b"first".to_vec()]);
        assert_eq!(
            stop,
            StopReason::CleanEnd,
            "a second open finds a clean end"
        );
    }
}

#[test]
fn damage_before_valid_records_is_refused_with_its_place() {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()));
    for i in 0..5u8 {
        append(&wal, &[i; 16], Commit::Sync).unwrap();
    }
    drop(wal);
    let seg = mem.list("wal/00").unwrap().pop().unwrap();
    let f = mem.open(&seg, false).unwrap();
    // Second record's payload: header 32, first record 8 + 16, second header 8.
    let at = 32 + 24 + 8 + 3;
    f.write_all_at(&[0xee], at).unwrap();
    let err = Wal::open(Arc::new(mem.clone()), cfg(), |_, _| Ok(()))
        .err()
        .expect("refused");
    match err {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, seg);
            assert_eq!(offset, 32 + 24);
        }
        other => panic!("{other:?}"),
    }
    // Nothing was modified: the damage is still there for an operator to look at.
    assert_eq!(f.len().unwrap(), 32 + 5 * 24);
}

#[test]
fn failed_writes_and_syncs_are_never_replayed() {
    let mem = MemDir::new();
    let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
    let dir: Arc<dyn Dir> = Arc::new(fault);
    let (wal, _, _) = open(dir.clone());
    append(&wal, b"a", Commit::Sync).unwrap();
    plan.fail_writes("wal/", Fault::Eio, 1);
    assert!(append(&wal, b"b", Commit::Sync).is_err());
    plan.fail_writes("wal/", Fault::Short, 1);
    assert!(append(&wal, b"c", Commit::Sync).is_err());
    plan.fail_syncs("wal/", 1);
    assert!(append(&wal, b"d", Commit::Sync).is_err());
    plan.fail_writes("wal/", Fault::NoSpace, 1);
    let e = append(&wal, b"e", Commit::Sync).unwrap_err();
    assert!(e.is_no_space(), "{e:?}");
    append(&wal, b"f", Commit::Sync).unwrap();
    drop(wal);
    mem.crash();
    let (_, seen, stop) = open(dir);
    assert_eq!(seen, vec![b"a".to_vec(), b"f".to_vec()]);
    assert_eq!(stop, StopReason::CleanEnd);
}

#[test]
fn a_torn_write_then_a_crash_keeps_exactly_the_acknowledged_records() {
    let mem = MemDir::new();
    let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
    let dir: Arc<dyn Dir> = Arc::new(fault);
    let (wal, _, _) = open(dir.clone());
    for i in 0..20u8 {
        append(&wal, &[i; 40], Commit::Sync).unwrap();
    }
    plan.fail_writes("wal/", Fault::Torn, 1);
    assert!(append(&wal, &[99; 40], Commit::Sync).is_err());
    mem.crash();
    drop(wal);
    plan.clear();
    let (_, seen, stop) = open(dir);
    // The half record never reached a sync, so the crash took it: a clean end.
    assert_eq!(seen, (0..20u8).map(|i| vec![i; 40]).collect::<Vec<_>>());
    assert_eq!(stop, StopReason::CleanEnd);
}
