//! Checkpoints are published atomically and verified on read.

mod common;

use common::read_file;
use riffle_wal::{
    Dir, Fault, FaultDir, FsDir, MemDir, WalError, read_checkpoint, write_checkpoint,
};
use std::sync::Arc;

const PATH: &str = "meta/checkpoint";

fn expect_corrupt(dir: &dyn Dir, path: &str) {
    match read_checkpoint(dir, path) {
        Err(WalError::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected corruption of {path}, got {other:?}"),
    }
}

#[test]
fn absent_then_round_trips_and_replaces() {
    let d = MemDir::new();
    assert_eq!(read_checkpoint(&d, PATH).unwrap(), None);
    write_checkpoint(&d, PATH, b"first").unwrap();
    assert_eq!(read_checkpoint(&d, PATH).unwrap().unwrap(), b"first");
    write_checkpoint(&d, PATH, b"").unwrap();
    assert_eq!(read_checkpoint(&d, PATH).unwrap().unwrap(), b"");
    write_checkpoint(&d, PATH, &[9u8; 100_000]).unwrap();
    d.crash(); // published durably
    assert_eq!(
        read_checkpoint(&d, PATH).unwrap().unwrap(),
        vec![9u8; 100_000]
    );
    assert!(!d.exists(&format!("{PATH}.tmp")));
}

#[test]
fn a_crash_at_any_step_leaves_the_old_or_the_new_checkpoint() {
    type Arm = fn(&riffle_wal::FaultPlan);
    let steps: [(&str, Arm); 4] = [
        ("torn write of the temporary file", |p| {
            p.fail_writes("meta/", Fault::Torn, 1)
        }),
        ("failed write", |p| p.fail_writes("meta/", Fault::Eio, 1)),
        ("failed sync of the temporary file", |p| {
            p.fail_syncs("meta/", 1)
        }),
        ("rename not made durable", |p| p.fail_sync_dirs("meta", 1)),
    ];
    for (step, arm) in steps {
        let mem = MemDir::new();
        let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
        write_checkpoint(&fault, PATH, b"old").unwrap();
        arm(&plan);
        let e = write_checkpoint(&fault, PATH, b"new").unwrap_err();
        assert!(matches!(e, WalError::Io { .. }), "{step}: {e}");
        mem.crash();
        plan.clear();
        assert_eq!(
            read_checkpoint(&fault, PATH).unwrap().unwrap(),
            b"old",
            "{step}"
        );
        // A leftover temporary file does not get in the way of the next checkpoint.
        write_checkpoint(&fault, PATH, b"newer").unwrap();
        mem.crash();
        assert_eq!(
            read_checkpoint(&mem, PATH).unwrap().unwrap(),
            b"newer",
            "{step}"
        );
    }
}

#[test]
fn damage_is_detected_and_names_the_file() {
    let d = MemDir::new();
    write_checkpoint(&d, PATH, b"some state").unwrap();
    let good = read_file(&d, PATH);
    let f = d.open(PATH, false).unwrap();
    // A flipped byte anywhere: magic, length, checksum, body.
    for at in [0usize, 9, 13, 20] {
        let mut b = good.clone();
        b[at] ^= 0x04;
        f.write_all_at(&b, 0).unwrap();
        expect_corrupt(&d, PATH);
    }
    // Truncated, extended, empty.
    f.write_all_at(&good, 0).unwrap();
    f.set_len(good.len() as u64 - 1).unwrap();
    expect_corrupt(&d, PATH);
    f.write_all_at(&good, 0).unwrap();
    f.write_all_at(b"junk", good.len() as u64).unwrap();
    expect_corrupt(&d, PATH);
    f.set_len(0).unwrap();
    expect_corrupt(&d, PATH);
    let msg = read_checkpoint(&d, PATH).unwrap_err().to_string();
    assert!(msg.contains(PATH), "{msg}");
}

#[test]
fn works_on_real_files() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = std::env::temp_dir().join(format!("riffle-ckpt-{}-{nanos}", std::process::id()));
    let d = FsDir::open(&root).unwrap();
    assert_eq!(read_checkpoint(&d, PATH).unwrap(), None);
    write_checkpoint(&d, PATH, b"one").unwrap();
    write_checkpoint(&d, PATH, b"two").unwrap();
    assert_eq!(read_checkpoint(&d, PATH).unwrap().unwrap(), b"two");
    assert_eq!(d.list("meta").unwrap(), vec![PATH.to_string()]);
    let _ = std::fs::remove_dir_all(&root);
}
