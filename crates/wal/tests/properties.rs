//! Properties of recovery over generated segments. `PROPTEST_CASES` scales the number of cases
//! (default 64 per property, which keeps `cargo test -p riffle-wal` fast).

mod common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use riffle_wal::{Commit, Dir, MemDir, StopReason, WalError};
use std::sync::Arc;

const SEGMENT_BYTES: u64 = 1 << 20;
const HEADER: usize = 32;
/// The longest record recovery believes for `SEGMENT_BYTES` (`format::max_record`).
const MAX: usize = riffle_wal::format::MIN_MAX_RECORD as usize;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A shard's only segment holding `payloads`, written through the real `Wal`: its bytes and
/// each record's offset.
fn segment(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mem = MemDir::new();
    let (wal, _, _) = open(Arc::new(mem.clone()), cfg(SEGMENT_BYTES, 10)).unwrap();
    let offsets = payloads
        .iter()
        .map(|p| append(&wal, p, Commit::Write).unwrap().offset as usize)
        .collect();
    drop(wal); // syncs
    (read_file(&mem, &seg(1)), offsets)
}

/// What reopening a directory gave: the recovery and the payloads replayed, or the error.
type Outcome = Result<(riffle_wal::Recovery, Vec<Vec<u8>>), WalError>;

/// Reopen `bytes` as the last segment: the outcome and the file afterwards (`None` if gone).
fn reopen(bytes: &[u8]) -> (Outcome, Option<Vec<u8>>) {
    let mem = mem_with(&seg(1), bytes);
    let r = replayed(Arc::new(mem.clone()), cfg(SEGMENT_BYTES, 10));
    let after = mem.exists(&seg(1)).then(|| read_file(&mem, &seg(1)));
    (r, after)
}

fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    [&len[..], &crc.to_le_bytes(), payload].concat()
}

/// The reference reading, done the slow and obvious way: the records from the header on until
/// the first one that is not whole, where that is, and whether any whole record (checked
/// directly, at every later byte offset) follows it.
fn reference(buf: &[u8]) -> (Vec<Vec<u8>>, Option<usize>, bool) {
    let whole = |q: usize| -> Option<usize> {
        let h = buf.get(q..q + 8)?;
        let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(h[4..].try_into().unwrap());
        let payload = buf
            .get(q + 8..q.checked_add(8 + len)?)
            .filter(|_| len <= MAX)?;
        (crc32c::crc32c_append(crc32c::crc32c(&h[..4]), payload) == crc).then_some(q + 8 + len)
    };
    let (mut records, mut pos) = (Vec::new(), HEADER);
    while pos < buf.len() {
        match whole(pos) {
            Some(next) => {
                records.push(buf[pos + 8..next].to_vec());
                pos = next;
            }
            None => {
                let after = (pos + 1..buf.len()).any(|q| whole(q).is_some());
                return (records, Some(pos), after);
            }
        }
    }
    (records, None, false)
}

#[derive(Debug, Clone)]
enum Piece {
    Record(Vec<u8>),
    Bytes(Vec<u8>),
    Zeros(usize),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..1200).prop_map(Piece::Record),
        1 => vec(any::<u8>(), 1..64).prop_map(Piece::Bytes),
        1 => (1usize..600).prop_map(Piece::Zeros),
    ]
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(Index, u8),
    Overwrite(Index, Vec<u8>),
    Zero(Index, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Damage::Flip(i, b)),
        (any::<Index>(), vec(any::<u8>(), 1..64)).prop_map(|(i, b)| Damage::Overwrite(i, b)),
        (any::<Index>(), 1usize..700).prop_map(|(i, n)| Damage::Zero(i, n)),
    ]
}

/// Apply `d` somewhere in `bytes[..limit]`, never at or past `limit`.
fn apply(bytes: &mut [u8], limit: usize, d: &Damage) {
    match d {
        Damage::Flip(i, bit) => bytes[i.index(limit)] ^= 1 << bit,
        Damage::Overwrite(i, with) => {
            let at = i.index(limit);
            let end = (at + with.len()).min(limit);
            bytes[at..end].copy_from_slice(&with[..end - at]);
        }
        Damage::Zero(i, n) => {
            let at = i.index(limit);
            bytes[at..(at + n).min(limit)].fill(0);
        }
    }
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(vec(any::<u8>(), 0..1100), 2..10)
}

proptest! {
    #![proptest_config(config())]

    /// (a) Any bytes after a valid header: no panic, and exactly the reference outcome (the
    /// whole records up to the first broken one; refused, unchanged, if any whole record
    /// follows it; otherwise cut there).
    #[test]
    fn arbitrary_bytes_after_a_header(pieces in vec(piece(), 0..8)) {
        let (valid, _) = segment(&[]);
        let mut bytes = valid[..HEADER].to_vec();
        for p in &pieces {
            match p {
                Piece::Record(payload) => bytes.extend(record(payload)),
                Piece::Bytes(b) => bytes.extend_from_slice(b),
                Piece::Zeros(n) => bytes.resize(bytes.len() + n, 0),
            }
        }
        let (want, broken, intact_after) = reference(&bytes);
        let (r, after) = reopen(&bytes);
        match (broken, intact_after) {
            (Some(at), true) => {
                prop_assert!(
                    matches!(&r, Err(WalError::Corrupt { offset, .. }) if *offset == at as u64),
                    "{r:?}"
                );
                prop_assert_eq!(after.as_deref(), Some(&bytes[..]));
            }
            (broken, _) => {
                let (rec, got) = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got, want);
                let end = broken.unwrap_or(bytes.len());
                prop_assert_eq!(after.as_deref(), Some(&bytes[..end]));
                let torn_at = match &rec.stop {
                    StopReason::CleanEnd => None,
                    StopReason::TornTail { offset, .. } => Some(*offset as usize),
                };
                prop_assert_eq!(torn_at, broken);
            }
        }
    }

    /// (b) Damage anywhere before the last record of a real segment is refused at the first
    /// damaged record (or the header), and the file is left as it was: never Ok with an intact
    /// record lost.
    #[test]
    fn damage_before_the_last_record_is_refused(
        all in payloads(),
        damages in vec(damage(), 1..4),
    ) {
        let (valid, offsets) = segment(&all);
        let limit = *offsets.last().unwrap();
        let mut bytes = valid.clone();
        for d in &damages {
            apply(&mut bytes, limit, d);
        }
        let (r, after) = reopen(&bytes);
        let Some(first) = bytes.iter().zip(&valid).position(|(a, b)| a != b) else {
            prop_assert_eq!(r.map_err(|e| TestCaseError::fail(e.to_string()))?.1, all);
            return Ok(());
        };
        let want = offsets.iter().rev().find(|&&o| o <= first).map_or(0, |&o| o as u64);
        match r {
            Err(WalError::Corrupt { path, offset, .. }) => {
                prop_assert_eq!((path, offset), (seg(1), want));
            }
            other => prop_assert!(false, "expected corruption at {want}, got {other:?}"),
        }
        prop_assert_eq!(after, Some(bytes));
    }

    /// (c) A real torn tail: the segment cut at any byte, optionally followed by zeros up to its
    /// old size (the size reached the disk, the data did not), recovers every record that ends
    /// before the cut.
    #[test]
    fn a_segment_cut_anywhere_keeps_every_whole_record(
        all in payloads(),
        cut in any::<Index>(),
        zeros in any::<bool>(),
    ) {
        let (valid, offsets) = segment(&all);
        let cut = cut.index(valid.len() + 1);
        let mut bytes = valid[..cut].to_vec();
        // A file longer than a header whose header is missing is not a crash state (the
        // header is synced before any record is written): that is refused, see recovery.rs.
        if zeros && cut >= HEADER {
            bytes.resize(valid.len(), 0);
        }
        // Where the bytes stop being the segment's (zeros may restore bytes that were zeros).
        let kept = bytes.iter().zip(&valid).take_while(|(a, b)| a == b).count();
        let whole = offsets
            .iter()
            .zip(&all)
            .take_while(|&(&o, p)| o + 8 + p.len() <= kept)
            .count();
        let (r, after) = reopen(&bytes);
        let (rec, got) = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&got[..], &all[..whole]);
        if cut < HEADER {
            // A segment whose header never reached the disk holds nothing: it is removed, and
            // the reopened WAL creates it again under its id (no hole), with a header alone.
            let after = after.unwrap_or_default();
            prop_assert!(after.len() <= HEADER, "{} bytes", after.len());
        } else {
            let end = offsets.get(whole).copied().unwrap_or(valid.len()).min(bytes.len());
            prop_assert_eq!(after.as_deref(), Some(&bytes[..end]));
        }
        if bytes == valid {
            prop_assert_eq!(rec.stop, StopReason::CleanEnd);
        }
    }
}

#[test]
fn the_reference_reading_agrees_on_a_clean_segment() {
    let all: Vec<Vec<u8>> = (0..5).map(payload).collect();
    let (bytes, _) = segment(&all);
    assert_eq!(reference(&bytes), (all, None, false));
    let dir: Arc<dyn Dir> = Arc::new(mem_with(&seg(1), &bytes));
    assert_eq!(replayed(dir, cfg(SEGMENT_BYTES, 10)).unwrap().1.len(), 5);
}
