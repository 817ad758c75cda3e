//! Injected I/O faults: failed appends are reported and never replayed, the shard heals when
//! the disk does, and a crash keeps every acknowledged `Sync` record.

mod common;

use common::*;
use parking_lot::Mutex;
use riffle_wal::{Commit, Dir, Fault, FaultDir, FaultPlan, MemDir, StopReason, WalError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

fn faulty() -> (MemDir, Arc<dyn Dir>, FaultPlan) {
    let mem = MemDir::new();
    let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
    (mem, Arc::new(fault), plan)
}

/// Appends `n` records named `tag-i`; returns the ones that succeeded.
fn append_some(wal: &riffle_wal::Wal, tag: &str, n: usize, commit: Commit) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{tag}-{i}").into_bytes())
        .filter(|p| append(wal, p, commit).is_ok())
        .collect()
}

#[test]
fn failed_writes_are_reported_and_never_replayed() {
    for fault in [Fault::Eio, Fault::NoSpace, Fault::Short] {
        let (mem, dir, plan) = faulty();
        let (wal, _, _) = open(dir.clone(), cfg(1 << 20, 10)).unwrap();
        let mut ok = append_some(&wal, "before", 3, Commit::Sync);
        plan.fail_writes("wal/", fault, 2);
        let e = append(&wal, b"failed-1", Commit::Sync).unwrap_err();
        assert_eq!(e.is_no_space(), fault == Fault::NoSpace, "{fault:?}: {e}");
        match &e {
            WalError::Io {
                op, raw_os_error, ..
            } => {
                assert_eq!(*op, "write");
                assert_eq!(
                    *raw_os_error,
                    Some(if fault == Fault::NoSpace { 28 } else { 5 })
                );
            }
            other => panic!("{other}"),
        }
        assert!(append(&wal, b"failed-2", Commit::Write).is_err());
        ok.extend(append_some(&wal, "after", 3, Commit::Sync));
        assert_eq!(ok.len(), 6, "{fault:?}: the shard healed by itself");
        assert!(wal.stats().failures >= 2);
        assert_eq!(
            wal.stats().queue_depth,
            0,
            "failed requests left the queue too"
        );
        drop(wal);
        mem.crash();
        let (rec, got) = replayed(dir, cfg(1 << 20, 10)).unwrap();
        assert_eq!(got, ok, "{fault:?}");
        assert_eq!(rec.stop, StopReason::CleanEnd, "{fault:?}");
    }
}

#[test]
fn a_failed_sync_fails_the_batch_and_takes_it_back() {
    let (mem, dir, plan) = faulty();
    let (wal, _, _) = open(dir.clone(), cfg(1 << 20, 10)).unwrap();
    let mut ok = append_some(&wal, "before", 2, Commit::Sync);
    plan.fail_syncs("wal/", 1);
    let e = append(&wal, b"failed", Commit::Sync).unwrap_err();
    assert!(matches!(e, WalError::Io { op: "sync", .. }), "{e}");
    ok.extend(append_some(&wal, "after", 2, Commit::Sync));
    assert_eq!(ok.len(), 4);
    drop(wal);
    // Without a crash too: the failed record was cut off the file, not just left unsynced.
    let (_, got) = replayed(dir.clone(), cfg(1 << 20, 10)).unwrap();
    assert_eq!(got, ok);
    mem.crash();
    assert_eq!(replayed(dir, cfg(1 << 20, 10)).unwrap().1, ok);
}

#[test]
fn a_disk_that_fails_until_cleared_fails_every_batch_then_heals() {
    let (mem, dir, plan) = faulty();
    let (wal, _, _) = open(dir.clone(), cfg(1 << 20, 10)).unwrap();
    let mut ok = append_some(&wal, "before", 2, Commit::Sync);
    plan.fail_syncs("wal/", usize::MAX);
    // The batch fails, and so does taking it back (its sync fails): every later batch fails
    // until the cut succeeds, even one that needs no sync.
    assert!(append(&wal, b"sync-failed", Commit::Sync).is_err());
    assert!(append(&wal, b"write-failed", Commit::Write).is_err());
    assert!(wal.flush().is_err());
    plan.fail_writes("wal/", Fault::NoSpace, usize::MAX);
    let e = append(&wal, b"full", Commit::Sync).unwrap_err();
    let failures = wal.stats().failures;
    assert!(failures >= 4, "{failures}");
    drop(e);
    plan.clear();
    ok.extend(append_some(&wal, "healed", 3, Commit::Sync));
    ok.extend(append_some(&wal, "lazy", 2, Commit::Write));
    assert_eq!(ok.len(), 7);
    wal.flush().unwrap();
    drop(wal);
    mem.crash();
    assert_eq!(replayed(dir, cfg(1 << 20, 10)).unwrap().1, ok);
}

#[test]
fn no_space_is_recognised() {
    let (_mem, dir, plan) = faulty();
    let (wal, _, _) = open(dir, cfg(1 << 20, 10)).unwrap();
    plan.fail_writes("", Fault::NoSpace, 1);
    assert!(append(&wal, b"x", Commit::Write).unwrap_err().is_no_space());
    let storage_full = WalError::Io {
        op: "write",
        path: "p".into(),
        kind: std::io::ErrorKind::StorageFull,
        raw_os_error: None,
        message: "full".into(),
    };
    assert!(storage_full.is_no_space());
    assert!(!WalError::Closed.is_no_space());
}

#[test]
fn a_periodic_sync_failure_is_retried_without_spinning() {
    let (mem, dir, plan) = faulty();
    let (wal, _, _) = open(dir.clone(), cfg(1 << 20, 5)).unwrap();
    plan.fail_syncs("wal/", usize::MAX);
    append(&wal, b"lazy", Commit::Write).unwrap();
    let t = std::time::Instant::now();
    while plan.syncs_seen() == 0 {
        assert!(t.elapsed() < Duration::from_secs(2), "never tried");
        std::thread::sleep(Duration::from_millis(1));
    }
    let first = plan.syncs_seen();
    std::thread::sleep(Duration::from_millis(100));
    let tries = plan.syncs_seen() - first;
    assert!(tries <= 25, "{tries} sync attempts in 100 ms");
    plan.clear();
    let t = std::time::Instant::now();
    while wal.stats().syncs == 0 {
        assert!(t.elapsed() < Duration::from_secs(2), "never retried");
        std::thread::sleep(Duration::from_millis(2));
    }
    mem.crash();
    assert_eq!(
        replayed(dir, cfg(1 << 20, 5)).unwrap().1,
        vec![b"lazy".to_vec()]
    );
    drop(wal);
}

/// Writers append `Sync` records from several threads; at some point a write is torn and the
/// machine dies. After the crash, the log holds exactly the acknowledged records, each thread's
/// in the order it appended them.
#[test]
fn a_torn_write_and_crash_keep_exactly_the_acknowledged_records() {
    for round in 0..12u64 {
        let (mem, dir, plan) = faulty();
        let (wal, _, _) = open(dir.clone(), cfg(2048, 10)).unwrap();
        let wal = Arc::new(wal);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tear_after = 3 + round * 3;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (wal, acked, plan) = (wal.clone(), acked.clone(), plan.clone());
                std::thread::spawn(move || {
                    for i in 0..40 {
                        if t == 0 && i == tear_after as usize {
                            plan.fail_writes("wal/", Fault::Torn, 1);
                        }
                        let p = format!("t{t}-{i:03}").into_bytes();
                        match append(&wal, &p, Commit::Sync) {
                            Ok(_) => acked.lock().push(p),
                            Err(_) => assert!(plan.is_down()),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(plan.is_down(), "round {round}: the torn write happened");
        drop(Arc::into_inner(wal).unwrap());
        mem.crash();
        plan.clear();
        let (_, got) = replayed(dir, cfg(2048, 10)).unwrap();
        let acked = acked.lock().clone();
        let got_set: HashSet<_> = got.iter().cloned().collect();
        assert_eq!(got_set.len(), got.len(), "round {round}: no duplicates");
        assert!(
            acked.iter().all(|p| got_set.contains(p)),
            "round {round}: lost acks"
        );
        // Only Sync records were appended, and a crash keeps only synced data: nothing more.
        assert_eq!(got.len(), acked.len(), "round {round}");
        for t in 0..4 {
            let mine: Vec<_> = got
                .iter()
                .filter(|p| p.starts_with(format!("t{t}-").as_bytes()))
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "round {round}: order");
        }
    }
}

/// Same with `Write` records mixed in: every acknowledged `Sync` record survives, nothing that
/// failed or was never appended appears, and the log is a prefix of what was written.
#[test]
fn a_crash_keeps_every_synced_record_and_invents_nothing() {
    for round in 0..8u64 {
        let (mem, dir, plan) = faulty();
        let (wal, _, _) = open(dir.clone(), cfg(4096, 1)).unwrap();
        let mut synced = Vec::new();
        let mut written = Vec::new();
        for i in 0..60u64 {
            if i == 10 + round * 5 {
                plan.fail_writes("wal/", Fault::Torn, 1);
            }
            let p = format!("r{i:03}").into_bytes();
            let commit = if i % 3 == 0 {
                Commit::Sync
            } else {
                Commit::Write
            };
            if append(&wal, &p, commit).is_ok() {
                if commit == Commit::Sync {
                    synced.push(p.clone());
                }
                written.push(p);
            }
        }
        drop(wal);
        mem.crash();
        plan.clear();
        let (_, got) = replayed(dir, cfg(4096, 1)).unwrap();
        assert!(synced.iter().all(|p| got.contains(p)), "round {round}");
        assert_eq!(
            got,
            written[..got.len()],
            "round {round}: a prefix of the writes"
        );
    }
}
