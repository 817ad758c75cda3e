//! Every single-bit flip of a real segment: recovery either refuses it as corruption (naming the
//! file and the damaged record, changing nothing) or, only when the damaged record is the last
//! one, cuts exactly that record off. It never replays fewer records and calls that success.

mod common;

use common::*;
use riffle_wal::{Commit, Dir, MemDir, StopReason, WalError};
use std::sync::Arc;

const CFG: (u64, u64) = (1 << 20, 10);
const HEADER: usize = 32;

/// `n` payloads of `len` bytes that look like nothing in particular.
fn payloads(n: usize, len: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9u32;
    (0..n)
        .map(|i| {
            let mut p = format!("{i}:").into_bytes();
            p.resize_with(len, || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            });
            p
        })
        .collect()
}

/// A shard's only segment, written through the real `Wal` (one fsync'd append each): its bytes
/// and each record's offset.
fn segment(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()), cfg(CFG.0, CFG.1)).unwrap();
    let offsets = payloads
        .iter()
        .map(|p| append(&wal, p, Commit::Sync).unwrap().offset as usize)
        .collect();
    drop(wal);
    mem.crash(); // kill -9 or power loss: every record was synced, so nothing is lost
    (read_file(&mem, &seg(1)), offsets)
}

/// Reopen `bytes` as the last segment and check the one acceptable outcome for damage at
/// byte `at`.
fn check(bytes: &[u8], offsets: &[usize], all: &[Vec<u8>], at: usize, what: &str) {
    let mem = mem_with(&seg(1), bytes);
    let dir: Arc<dyn Dir> = Arc::new(mem.clone());
    let r = replayed(dir.clone(), cfg(CFG.0, CFG.1));
    // The damaged record: the last one starting at or before `at` (none for the header).
    let hit = offsets.iter().rposition(|&o| o <= at);
    let last = hit == Some(offsets.len() - 1);
    if last {
        let i = offsets.len() - 1;
        let (rec, got) = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, all[..i], "{what}: every earlier record is replayed");
        assert!(
            matches!(&rec.stop, StopReason::TornTail { path, offset, .. }
                if *path == seg(1) && *offset == offsets[i] as u64),
            "{what}: {:?}",
            rec.stop
        );
        assert_eq!(read_file(&mem, &seg(1)), bytes[..offsets[i]], "{what}");
        return;
    }
    let want = hit.map_or(0, |i| offsets[i]) as u64;
    match r {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!((path.as_str(), offset), (seg(1).as_str(), want), "{what}")
        }
        Err(e) => panic!("{what}: expected corruption at {want}, got {e}"),
        Ok((rec, got)) => panic!(
            "{what}: expected corruption at {want}, got Ok with {} of {} records ({:?})",
            got.len(),
            all.len(),
            rec.stop
        ),
    }
    assert_eq!(
        read_file(&mem, &seg(1)),
        bytes,
        "{what}: the file is unchanged"
    );
    assert_eq!(
        mem.list("wal/00").unwrap(),
        vec![seg(1)],
        "{what}: no file added"
    );
}

fn flipped(bytes: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 1 << bit;
    b
}

/// The reviewer's reproduction: 20 fsync'd appends of 1 KiB, a crash, bit 0 of the length of
/// a record in the middle of the segment flipped (an even length becomes odd). This used to be
/// taken for a torn tail: the records after it were cut off and recovery said Ok.
#[test]
fn a_flipped_length_bit_in_the_middle_is_refused() {
    let all = payloads(20, 1024);
    let (bytes, offsets) = segment(&all);
    for i in [9, 10] {
        check(
            &flipped(&bytes, offsets[i], 0),
            &offsets,
            &all,
            offsets[i],
            &format!("length bit 0 of record {i}"),
        );
    }
}

#[test]
fn every_bit_of_every_record_header_is_damage_or_a_torn_last_record() {
    let all = payloads(20, 1024);
    let (bytes, offsets) = segment(&all);
    for (i, &o) in offsets.iter().enumerate() {
        for at in o..o + 8 {
            for bit in 0..8 {
                let what = format!("record {i} header byte {} bit {bit}", at - o);
                check(&flipped(&bytes, at, bit), &offsets, &all, at, &what);
            }
        }
    }
}

#[test]
fn payload_bits_of_first_middle_and_last_records() {
    let all = payloads(20, 1024);
    let (bytes, offsets) = segment(&all);
    for i in [0, 10, 19] {
        let start = offsets[i] + 8;
        for at in start..start + all[i].len() {
            // Every bit of the first bytes, then one bit per byte, rotating.
            let bits = if at < start + 4 {
                0..8
            } else {
                (at % 8) as u8..(at % 8) as u8 + 1
            };
            for bit in bits {
                let what = format!("record {i} payload byte {} bit {bit}", at - start);
                check(&flipped(&bytes, at, bit), &offsets, &all, at, &what);
            }
        }
    }
}

#[test]
fn every_bit_of_the_segment_header_is_refused() {
    let all = payloads(5, 100);
    let (bytes, offsets) = segment(&all);
    for at in 0..HEADER {
        for bit in 0..8 {
            let what = format!("segment header byte {at} bit {bit}");
            check(&flipped(&bytes, at, bit), &offsets, &all, at, &what);
        }
    }
}

/// Small records of varying sizes (including empty ones), so lengths and checksums take many
/// shapes; every bit of every byte.
#[test]
fn every_bit_of_a_segment_of_small_records() {
    let all: Vec<Vec<u8>> = (0..12).map(|i| payload(i)[..i * 2].to_vec()).collect();
    let (bytes, offsets) = segment(&all);
    for at in HEADER..bytes.len() {
        for bit in 0..8 {
            let what = format!("byte {at} bit {bit}");
            check(&flipped(&bytes, at, bit), &offsets, &all, at, &what);
        }
    }
}

/// Overwriting a middle record with zeros (a lost page) is refused: zeros are never taken for
/// records, and the intact ones after them are evidence.
#[test]
fn a_zeroed_middle_record_is_refused() {
    let all = payloads(20, 1024);
    let (bytes, offsets) = segment(&all);
    let mut b = bytes.clone();
    b[offsets[10]..offsets[12]].fill(0);
    check(&b, &offsets, &all, offsets[10], "zeroed records 10 and 11");
    // Zeros from a damaged record to the end: a torn tail of nothing but zeros.
    let mut b = bytes.clone();
    b[offsets[19]..].fill(0);
    check(&b, &offsets, &all, offsets[19], "zeroed last record");
}
