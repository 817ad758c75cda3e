//! Recovery: torn tails are cut off, everything else is reported as damage and left alone.

mod common;

use common::*;
use riffle_wal::{Commit, Dir, MemDir, StopReason, WalError};
use std::sync::Arc;

const CFG: (u64, u64) = (1 << 20, 10);

/// A shard whose only (and last) segment holds `n` records; returns its bytes and the offset
/// of each record.
fn segment_with(n: usize) -> (Vec<u8>, Vec<u64>) {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()), cfg(CFG.0, CFG.1)).unwrap();
    let offsets = (0..n)
        .map(|i| append(&wal, &payload(i), Commit::Sync).unwrap().offset)
        .collect();
    drop(wal);
    (read_file(&mem, &seg(1)), offsets)
}

fn expect_corrupt(r: Result<(Recovery, Vec<Vec<u8>>), WalError>, path: &str, offset: u64) {
    match r {
        Err(WalError::Corrupt {
            path: p, offset: o, ..
        }) => assert_eq!((p.as_str(), o), (path, offset)),
        Err(e) => panic!("expected corruption at {path}:{offset}, got {e}"),
        Ok((rec, _)) => panic!("expected corruption at {path}:{offset}, got {rec:?}"),
    }
}
use riffle_wal::Recovery;

#[test]
fn a_tail_torn_at_every_byte_is_cut_off() {
    let (bytes, offsets) = segment_with(3);
    let last = offsets[2] as usize;
    let all: Vec<_> = (0..3).map(payload).collect();
    for cut in last..bytes.len() {
        let mem = mem_with(&seg(1), &bytes[..cut]);
        let dir: Arc<dyn Dir> = Arc::new(mem.clone());
        let (rec, got) = replayed(dir.clone(), cfg(CFG.0, CFG.1)).unwrap();
        assert_eq!(got, all[..2], "cut at {cut}");
        assert_eq!(rec.records, 2);
        if cut == last {
            assert_eq!(rec.stop, StopReason::CleanEnd);
        } else {
            assert!(
                matches!(&rec.stop, StopReason::TornTail { path, offset, .. }
                    if *path == seg(1) && *offset == last as u64),
                "cut at {cut}: {:?}",
                rec.stop
            );
        }
        // The tail was cut durably: a crash and a second open find a clean log.
        mem.crash();
        let (rec, got) = replayed(dir, cfg(CFG.0, CFG.1)).unwrap();
        assert_eq!(got, all[..2], "cut at {cut}, second open");
        assert_eq!(rec.stop, StopReason::CleanEnd, "cut at {cut}, second open");
    }
}

#[test]
fn damaged_or_zeroed_last_records_are_torn_tails() {
    let (bytes, offsets) = segment_with(3);
    let last = offsets[2];
    let two: Vec<_> = (0..2).map(payload).collect();
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    let mut zeros = bytes[..last as usize].to_vec();
    zeros.extend_from_slice(&[0u8; 4096]); // a page that never made it
    let mut huge_len = bytes.clone();
    huge_len[last as usize + 3] = 0xff;
    for (name, b) in [("flipped", flipped), ("zeros", zeros), ("length", huge_len)] {
        let (rec, got) = replayed(Arc::new(mem_with(&seg(1), &b)), cfg(CFG.0, CFG.1)).unwrap();
        assert_eq!(got, two, "{name}");
        assert!(
            matches!(&rec.stop, StopReason::TornTail { offset, .. } if *offset == last),
            "{name}: {:?}",
            rec.stop
        );
    }
}

/// The header a real shard writes for segment 2 (its second open starts it).
fn header_of_segment_2() -> Vec<u8> {
    let mem = MemDir::new();
    drop(open(Arc::new(mem.clone()), cfg(CFG.0, CFG.1)).unwrap());
    drop(open(Arc::new(mem.clone()), cfg(CFG.0, CFG.1)).unwrap());
    read_file(&mem, &seg(2))
}

#[test]
fn a_segment_whose_header_was_never_finished_is_removed() {
    let (bytes, _) = segment_with(2);
    let header = header_of_segment_2();
    assert_eq!(header.len(), 32);
    let mut half_zeros = header[..20].to_vec();
    half_zeros.resize(32, 0); // the size reached the disk, the end of the data did not
    let prefixes = [0usize, 5, 31].map(|cut| header[..cut].to_vec());
    for partial in prefixes.into_iter().chain([vec![0u8; 32], half_zeros]) {
        let mem = mem_with(&seg(1), &bytes);
        let f = mem.open(&seg(2), true).unwrap();
        f.write_all_at(&partial, 0).unwrap();
        let dir: Arc<dyn Dir> = Arc::new(mem);
        let (rec, got) = replayed(dir.clone(), cfg(CFG.0, CFG.1)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(
            matches!(&rec.stop, StopReason::TornTail { path, offset: 0, .. } if *path == seg(2)),
            "{:?}",
            rec.stop
        );
        // Removed, and created again whole under its id by the reopened WAL (no hole).
        assert_eq!(read_file_dyn(&dir, &seg(2)), header);
        let (rec, got) = replayed(dir, cfg(CFG.0, CFG.1)).unwrap();
        assert_eq!((got.len(), rec.stop), (2, StopReason::CleanEnd));
    }
}

/// A last segment holding nothing but a header that cannot be a half-written one of its own is
/// kept and refused: removing it would destroy the evidence.
#[test]
fn a_short_last_segment_that_is_not_a_half_written_header_is_refused() {
    let (bytes, _) = segment_with(2);
    let header = header_of_segment_2();
    let mut flipped = header.clone();
    flipped[20] ^= 0x04;
    // A whole, valid header of segment 1 (another segment's file) and a flipped bit.
    for short in [bytes[..32].to_vec(), flipped, b"not a wal segment".to_vec()] {
        let mem = mem_with(&seg(1), &bytes);
        let f = mem.open(&seg(2), true).unwrap();
        f.write_all_at(&short, 0).unwrap();
        f.sync_data().unwrap();
        mem.sync_dir("wal/00").unwrap();
        expect_corrupt(
            replayed(Arc::new(mem.clone()), cfg(CFG.0, CFG.1)),
            &seg(2),
            0,
        );
        assert_eq!(read_file(&mem, &seg(2)), short, "nothing was removed");
        assert_eq!(read_file(&mem, &seg(1)), bytes);
    }
}

#[test]
fn damage_followed_by_intact_records_is_corruption() {
    let (bytes, offsets) = segment_with(5);
    let at = offsets[1];
    // A flipped payload byte, and a flipped length byte (the record's end is then unknown).
    for flip in [at as usize + 10, at as usize, at as usize + 5] {
        let mut b = bytes.clone();
        b[flip] ^= 0x01;
        let mem = mem_with(&seg(1), &b);
        let r = replayed(Arc::new(mem.clone()), cfg(CFG.0, CFG.1));
        expect_corrupt(r, &seg(1), at);
        assert_eq!(read_file(&mem, &seg(1)), b, "nothing was truncated");
        assert_eq!(
            mem.list("wal/00").unwrap(),
            vec![seg(1)],
            "no segment was added"
        );
    }
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_corruption() {
    let mem = MemDir::new();
    let dir: Arc<dyn Dir> = Arc::new(mem.clone());
    let (wal, _, _) = open(dir.clone(), cfg(CFG.0, CFG.1)).unwrap();
    append(&wal, b"one", Commit::Sync).unwrap();
    let last = append(&wal, b"two", Commit::Sync).unwrap();
    wal.rotate().unwrap();
    append(&wal, b"three", Commit::Sync).unwrap();
    drop(wal);
    // Even damage at the very end of segment 1 (which looks like a torn tail) is corruption:
    // segment 2 was started after segment 1 was synced.
    let f = dir.open(&seg(1), false).unwrap();
    let len = f.len().unwrap();
    f.write_all_at(&[0xee], len - 1).unwrap();
    expect_corrupt(
        replayed(dir.clone(), cfg(CFG.0, CFG.1)),
        &seg(1),
        last.offset,
    );
    // So is a short segment.
    f.set_len(len - 1).unwrap();
    expect_corrupt(
        replayed(dir.clone(), cfg(CFG.0, CFG.1)),
        &seg(1),
        last.offset,
    );
    assert_eq!(f.len().unwrap(), len - 1, "nothing was truncated");
}

#[test]
fn a_bad_segment_header_is_corruption() {
    let (bytes, _) = segment_with(2);
    for at in [0usize, 9, 13, 17, 29] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        expect_corrupt(
            replayed(Arc::new(mem_with(&seg(1), &b)), cfg(CFG.0, CFG.1)),
            &seg(1),
            0,
        );
    }
    // A segment of another shard, or under another id, is refused too.
    let mem = mem_with(&seg(7), &bytes);
    expect_corrupt(replayed(Arc::new(mem), cfg(CFG.0, CFG.1)), &seg(7), 0);
    let mut other = cfg(CFG.0, CFG.1);
    other.shard = 1;
    let mem = mem_with("wal/01/0000000000000001.wal", &bytes);
    let r = replayed(Arc::new(mem), other);
    assert!(matches!(r, Err(WalError::Corrupt { offset: 0, .. })));
}

#[test]
fn errors_name_the_file_and_offset() {
    let (bytes, offsets) = segment_with(3);
    let mut b = bytes.clone();
    b[offsets[0] as usize + 9] ^= 1;
    let e = replayed(Arc::new(mem_with(&seg(1), &b)), cfg(CFG.0, CFG.1))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(msg.contains(&seg(1)), "{msg}");
    assert!(msg.contains(&offsets[0].to_string()), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
}

#[test]
fn shards_are_independent() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let mut c0 = cfg(CFG.0, CFG.1);
    let mut c1 = c0.clone();
    c0.shard = 0;
    c1.shard = 1;
    let (w0, _, _) = open(dir.clone(), c0.clone()).unwrap();
    let (w1, _, _) = open(dir.clone(), c1.clone()).unwrap();
    append(&w0, b"zero", Commit::Sync).unwrap();
    append(&w1, b"one", Commit::Sync).unwrap();
    drop((w0, w1));
    assert_eq!(replayed(dir.clone(), c0).unwrap().1, vec![b"zero".to_vec()]);
    assert_eq!(replayed(dir, c1).unwrap().1, vec![b"one".to_vec()]);
}

/// A file that says it is longer than what can be read of it (it shrank under us).
struct Shrinking(Arc<dyn riffle_wal::DirFile>);

impl riffle_wal::DirFile for Shrinking {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.len()? + 100)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.0.punch_hole(offset, len)
    }
}

struct ShrinkingDir(MemDir);

impl Dir for ShrinkingDir {
    fn open(&self, path: &str, create: bool) -> std::io::Result<Arc<dyn riffle_wal::DirFile>> {
        Ok(Arc::new(Shrinking(self.0.open(path, create)?)))
    }
    fn exists(&self, path: &str) -> bool {
        self.0.exists(path)
    }
    fn remove(&self, path: &str) -> std::io::Result<()> {
        self.0.remove(path)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn sync_dir(&self, dir: &str) -> std::io::Result<()> {
        self.0.sync_dir(dir)
    }
}

/// A segment that reads shorter than its size is an I/O error: what could not be read may hold
/// records, so it is not taken for a torn tail.
#[test]
fn a_segment_that_reads_short_is_an_error_not_a_torn_tail() {
    let (bytes, _) = segment_with(3);
    let mem = mem_with(&seg(1), &bytes);
    let r = replayed(Arc::new(ShrinkingDir(mem.clone())), cfg(CFG.0, CFG.1));
    assert!(
        matches!(&r, Err(WalError::Io { op: "read", path, .. }) if *path == seg(1)),
        "{r:?}"
    );
    assert_eq!(read_file(&mem, &seg(1)), bytes);
}

/// Records a process crash left unsynced (still in the page cache) are replayed, then made
/// durable before the reopened WAL writes on: a later power loss must not keep the new
/// segment's records and lose the replayed ones (a hole the next recovery would refuse).
#[test]
fn replayed_unsynced_records_are_synced_before_the_wal_writes_on() {
    use riffle_wal::FaultDir;
    let mem = MemDir::new();
    let boot = || {
        let (fault, plan) = FaultDir::new(Arc::new(mem.clone()));
        (Arc::new(fault) as Arc<dyn Dir>, plan)
    };
    let (dir, plan) = boot();
    let (wal, _, _) = open(dir, cfg(CFG.0, CFG.1)).unwrap();
    append(&wal, &payload(0), Commit::Lazy).unwrap();
    plan.halt(); // kill -9: nothing more reaches the disk; what was written stays cached
    drop(wal);

    let (dir, _plan) = boot();
    let (wal, _, got) = open(dir, cfg(CFG.0, CFG.1)).unwrap();
    assert_eq!(got.len(), 1, "the unsynced record is replayed");
    append(&wal, &payload(1), Commit::Sync).unwrap();
    drop(wal);
    mem.crash(); // then a power loss

    let (dir, _plan) = boot();
    let (rec, got) = replayed(dir, cfg(CFG.0, CFG.1)).unwrap();
    assert_eq!(got, vec![payload(0), payload(1)], "{rec:?}");
}

/// A segment lost from the middle of a shard, or the one replay must start in, is refused
/// with its name: replaying around it would drop its records without a word. The oldest
/// segments may go (a checkpoint removes them), so without `first` the shard may start later.
#[test]
fn a_missing_segment_is_refused() {
    let mem = MemDir::new();
    let dir: Arc<dyn Dir> = Arc::new(mem.clone());
    let (wal, _, _) = open(dir.clone(), cfg(CFG.0, CFG.1)).unwrap();
    for (i, r) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
        append(&wal, r, Commit::Sync).unwrap();
        if i < 2 {
            wal.rotate().unwrap();
        }
    }
    drop(wal);
    let open_from = |first: Option<u64>| {
        riffle_wal::Wal::open_from(dir.clone(), cfg(CFG.0, CFG.1), first, |_, _| Ok(())).map(
            |(wal, rec)| {
                drop(wal);
                rec
            },
        )
    };
    assert_eq!(open_from(Some(1)).unwrap().records, 3);

    // Segment 2 gone: a hole between 1 and 3.
    let two = dir.open(&seg(2), false).unwrap();
    let mut saved = vec![0u8; two.len().unwrap() as usize];
    two.read_at(&mut saved, 0).unwrap();
    drop(two);
    dir.remove(&seg(2)).unwrap();
    for first in [None, Some(1)] {
        match open_from(first) {
            Err(WalError::Missing { path, reason }) => {
                assert_eq!(path, seg(2));
                assert!(reason.contains("segments 1 and 3"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    mem_put(&dir, &seg(2), &saved);

    // Segment 1 gone: fine when nothing says replay starts there (a checkpoint removed it),
    // refused when something does.
    dir.remove(&seg(1)).unwrap();
    assert_eq!(open_from(None).unwrap().records, 2);
    assert_eq!(open_from(Some(2)).unwrap().records, 2);
    match open_from(Some(1)) {
        Err(WalError::Missing { path, .. }) => assert_eq!(path, seg(1)),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn mem_put(dir: &Arc<dyn Dir>, path: &str, bytes: &[u8]) {
    let f = dir.open(path, true).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.sync_data().unwrap();
}

fn read_file_dyn(dir: &Arc<dyn Dir>, path: &str) -> Vec<u8> {
    let f = dir.open(path, false).unwrap();
    let mut buf = vec![0u8; f.len().unwrap() as usize];
    f.read_at(&mut buf, 0).unwrap();
    buf
}
