//! The directory seam: what `MemDir::crash` keeps, and that `FsDir` behaves the same.

mod common;

use common::read_file;
use riffle_wal::{Dir, Fault, FaultDir, FsDir, MemDir};
use std::io::ErrorKind;
use std::sync::Arc;

fn temp_root(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("riffle-{tag}-{}-{nanos}", std::process::id()))
}

/// The contract every `Dir` keeps, checked on both implementations.
fn contract(d: &dyn Dir) {
    assert!(d.list("").unwrap().is_empty());
    assert!(d.list("nowhere").unwrap().is_empty());
    assert_eq!(
        d.open("a/b/missing", false).err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    let f = d.open("a/b/file", true).unwrap();
    assert_eq!(f.len().unwrap(), 0);
    f.write_all_at(b"hello", 0).unwrap();
    f.write_all_at(b"world", 10).unwrap();
    assert_eq!(f.len().unwrap(), 15);
    let mut buf = [0xffu8; 20];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 15, "short only at the end");
    assert_eq!(&buf[..15], b"hello\0\0\0\0\0world");
    assert_eq!(f.read_at(&mut buf, 100).unwrap(), 0);
    f.set_len(5).unwrap();
    f.sync_data().unwrap();
    assert_eq!(read_file(d, "a/b/file"), b"hello");
    d.open("a/b/other", true).unwrap();
    d.open("a/top", true).unwrap();
    assert_eq!(d.list("a/b").unwrap(), vec!["a/b/file", "a/b/other"]);
    assert_eq!(
        d.list("a").unwrap(),
        vec!["a/top"],
        "files only, not directories"
    );
    d.rename("a/b/file", "a/b/other").unwrap();
    assert!(!d.exists("a/b/file"));
    assert_eq!(read_file(d, "a/b/other"), b"hello");
    d.remove("a/b/other").unwrap();
    assert_eq!(
        d.remove("a/b/other").err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    d.sync_dir("a/b").unwrap();
    d.sync_dir("").unwrap();
    assert!(d.list("a/b").unwrap().is_empty());
}

#[test]
fn mem_dir_keeps_the_contract() {
    contract(&MemDir::new());
}

#[test]
fn fs_dir_keeps_the_contract() {
    let root = temp_root("dir");
    contract(&FsDir::open(&root).unwrap());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_crash_keeps_only_synced_data_and_directory_entries() {
    let d = MemDir::new();
    let f = d.open("x/kept", true).unwrap();
    f.write_all_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    let t = d.open("x/truncated", true).unwrap();
    t.write_all_at(b"long data", 0).unwrap();
    t.sync_data().unwrap();
    d.sync_dir("x").unwrap();
    f.write_all_at(b" and not", 6).unwrap();
    // Created and synced, but its directory entry was not.
    let g = d.open("x/new", true).unwrap();
    g.write_all_at(b"lost", 0).unwrap();
    g.sync_data().unwrap();
    // Renamed and removed without a directory sync: undone.
    let h = d.open("y/renamed", true).unwrap();
    h.write_all_at(b"h", 0).unwrap();
    h.sync_data().unwrap();
    let r = d.open("y/removed", true).unwrap();
    r.sync_data().unwrap();
    d.sync_dir("y").unwrap();
    d.rename("y/renamed", "y/target").unwrap();
    d.remove("y/removed").unwrap();
    t.set_len(2).unwrap(); // a truncation not followed by a sync is undone too

    d.crash();
    assert_eq!(read_file(&d, "x/kept"), b"synced");
    assert!(!d.exists("x/new"));
    assert_eq!(d.list("y").unwrap(), vec!["y/removed", "y/renamed"]);
    assert_eq!(read_file(&d, "y/renamed"), b"h");
    assert_eq!(read_file(&d, "x/truncated"), b"long data");
    // A crash is idempotent, and clones share the state.
    let c = d.clone();
    c.crash();
    assert_eq!(read_file(&c, "x/kept"), b"synced");
}

#[test]
fn a_sync_of_every_file_keeps_what_was_written_through_any_handle() {
    let d = MemDir::new();
    for name in ["s/one", "s/two"] {
        let f = d.open(name, true).unwrap();
        f.write_all_at(name.as_bytes(), 0).unwrap();
    }
    d.sync_dir("s").unwrap();
    assert!(d.sync_all_data().unwrap());
    d.crash();
    assert_eq!(read_file(&d, "s/one"), b"s/one");
    assert_eq!(read_file(&d, "s/two"), b"s/two");

    // Real files: `syncfs` where the kernel reports its errors (Linux 5.8 on), else "not here".
    let root = temp_root("syncfs");
    let fs = FsDir::open(&root).unwrap();
    fs.open("s/one", true)
        .unwrap()
        .write_all_at(b"data", 0)
        .unwrap();
    let supported = fs.sync_all_data().unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .split(['.', '-'])
        .map(|p| p.trim().parse::<u32>().ok());
    if let (Some(Some(major)), Some(Some(minor))) = (v.next(), v.next()) {
        assert_eq!(supported, (major, minor) >= (5, 8));
    }
    let _ = std::fs::remove_dir_all(&root);

    // An armed sync fault on any file fails the sync of all of them, once.
    let (faulty, plan) = FaultDir::new(Arc::new(MemDir::new()));
    plan.fail_syncs("s/two", 1);
    assert!(faulty.sync_all_data().is_err());
    assert!(faulty.sync_all_data().unwrap());
}

#[test]
fn a_synced_rename_survives() {
    let d = MemDir::new();
    let f = d.open("ckpt.tmp", true).unwrap();
    f.write_all_at(b"v2", 0).unwrap();
    f.sync_data().unwrap();
    d.rename("ckpt.tmp", "ckpt").unwrap();
    d.sync_dir("").unwrap();
    d.crash();
    assert_eq!(d.list("").unwrap(), vec!["ckpt"]);
    assert_eq!(read_file(&d, "ckpt"), b"v2");
}

#[test]
fn faults_fire_by_prefix_and_count_and_torn_writes_kill_the_dir() {
    let mem = MemDir::new();
    let (d, plan) = FaultDir::new(Arc::new(mem.clone()));
    let f = d.open("wal/a", true).unwrap();
    d.sync_dir("wal").unwrap();
    plan.fail_writes("wal/", Fault::Eio, 2);
    assert_eq!(f.write_all_at(b"x", 0).unwrap_err().raw_os_error(), Some(5));
    assert_eq!(f.write_all_at(b"x", 0).unwrap_err().raw_os_error(), Some(5));
    f.write_all_at(b"ok", 0).unwrap();
    assert_eq!(plan.writes_seen(), 3);

    plan.fail_writes("wal/", Fault::Short, 1);
    assert!(f.write_all_at(b"abcdef", 0).is_err());
    assert_eq!(read_file(&mem, "wal/a"), b"abc", "half of it landed");
    assert!(!plan.is_down(), "a short write is not a crash");

    plan.fail_syncs("wal/", usize::MAX);
    assert!(f.sync_data().is_err());
    assert!(f.sync_data().is_err());
    plan.clear();
    f.sync_data().unwrap();
    assert_eq!(plan.syncs_seen(), 3);

    plan.fail_writes("", Fault::Torn, 1);
    assert!(f.write_all_at(b"123456", 0).is_err());
    assert!(plan.is_down());
    assert!(f.len().is_err() && f.sync_data().is_err());
    assert!(d.open("wal/b", true).is_err() && d.list("wal").is_err());
    mem.crash(); // the torn half was never synced
    plan.clear();
    assert_eq!(read_file(&d, "wal/a"), b"abc");
}

#[test]
fn fs_dir_creates_nested_directories_durably() {
    let root = temp_root("nested");
    let d = FsDir::open(root.join("deep/er")).unwrap();
    let f = d.open("one/two/three/file", true).unwrap();
    f.write_all_at(b"x", 0).unwrap();
    assert!(root.join("deep/er/one/two/three/file").is_file());
    let _ = std::fs::remove_dir_all(&root);
}
