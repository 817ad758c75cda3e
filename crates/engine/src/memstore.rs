//! Where an `Ephemeral` log's records live: RAM, in chunks.
//!
//! An append copies its bytes into the open chunk: one memcpy, with no allocation and no
//! reference count per record (a `Bytes` per record cost both, on every append). A chunk that
//! cannot take the next record is sealed: moved into the shared-memory arena (see
//! `arena.rs`), from where reads send it with `sendfile` or share it as an immutable [`Bytes`]
//! without copying (on the heap where there is no arena); what readers need of the open chunk
//! (at most one chunk) is copied, under the log's lock.
//!
//! Invariants: chunks are contiguous and in order (`sealed`, then `open` from `open_start`); a
//! record lies inside one chunk; `starts` holds every record's first position, ascending, and
//! `tail` is the end of the last record.

use crate::arena::{self, Block, Reserve};
use bytes::Bytes;
use std::sync::Arc;

/// Allocation unit of the chunks (a record this large or larger is a sealed chunk of its own).
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// A sealed chunk: its bytes, and the arena block they are in (none if on the heap).
#[derive(Debug)]
struct Sealed {
    bytes: Bytes,
    block: Option<Arc<Block>>,
}

impl Sealed {
    /// `data` copied into a block of the arena, if it can take it.
    fn in_arena(data: &[u8], reserve: &mut Reserve) -> Option<Self> {
        let (block, bytes) = arena::store(data, reserve)?;
        Some(Self {
            bytes,
            block: Some(block),
        })
    }

    fn on_heap(bytes: Bytes) -> Self {
        Self { bytes, block: None }
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[derive(Debug, Default)]
pub(crate) struct MemStore {
    /// Sealed chunks, in order, with the position of their first byte.
    sealed: Vec<(u64, Sealed)>,
    open: Vec<u8>,
    open_start: u64,
    /// First position of every record (after the `dropped` first ones).
    starts: Vec<u64>,
    tail: u64,
    /// Records dropped from the front (a topic's trimmed head).
    dropped: usize,
    /// Where the next sealed chunk goes in the arena: after the last one.
    reserve: Reserve,
}

impl MemStore {
    /// An empty store whose first record will start at `start` (a fork's inheritance point).
    pub fn new(start: u64) -> Self {
        Self {
            open_start: start,
            tail: start,
            ..Self::default()
        }
    }

    /// Append one record.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let start = self.tail;
        self.starts.push(start);
        self.tail += data.len() as u64;
        if data.len() >= CHUNK_BYTES {
            // A chunk-sized record is sealed at once, so reads share it instead of copying it.
            self.seal();
            let chunk = Sealed::in_arena(data, &mut self.reserve)
                .unwrap_or_else(|| Sealed::on_heap(Bytes::copy_from_slice(data)));
            self.sealed.push((start, chunk));
            self.open_start = self.tail;
            return;
        }
        if self.open.capacity() - self.open.len() < data.len() {
            self.seal();
            self.open_start = start;
            self.open = Vec::with_capacity(CHUNK_BYTES);
        }
        self.open.extend_from_slice(data);
    }

    /// Seal the open chunk, if it holds anything.
    fn seal(&mut self) {
        if !self.open.is_empty() {
            let full = std::mem::take(&mut self.open);
            // (On the heap, a Vec with spare capacity becomes a Bytes without copying.)
            let chunk = Sealed::in_arena(&full, &mut self.reserve)
                .unwrap_or_else(|| Sealed::on_heap(full.into()));
            self.sealed.push((self.open_start, chunk));
        }
    }

    /// Append to `out` the bytes from `pos` towards `to`, ending at a record boundary (or `to`):
    /// whole records until `budget` is spent (the record that crosses it included). Returns
    /// the position reached and lowers `budget` by the bytes added.
    pub fn collect(
        &self,
        pos: u64,
        to: u64,
        budget: &mut usize,
        out: &mut impl crate::log::Sink,
    ) -> u64 {
        let to = to.min(self.tail);
        if pos >= to || *budget == 0 {
            return pos;
        }
        let want = pos.saturating_add(*budget as u64);
        let k = self.starts.partition_point(|&s| s < want);
        let end = self.starts.get(k).copied().unwrap_or(self.tail).min(to);
        let mut at = pos;
        while at < end {
            if at >= self.open_start {
                let lo = (at - self.open_start) as usize;
                let hi = (end - self.open_start) as usize;
                out.bytes(Bytes::copy_from_slice(&self.open[lo..hi]));
                break;
            }
            let i = self.sealed_index(at);
            let (start, chunk) = &self.sealed[i];
            let stop = end.min(start + chunk.len());
            let (lo, hi) = (at - start, stop - start);
            let bytes = chunk.bytes.slice(lo as usize..hi as usize);
            match &chunk.block {
                Some(block) => out.shared(block, lo, bytes),
                None => out.bytes(bytes),
            }
            at = stop;
        }
        *budget = budget.saturating_sub((end - pos) as usize);
        end
    }

    /// The record that holds `pos`: its first position and its bytes. `None` at or past the
    /// tail, or before the first record.
    pub fn record_at(&self, pos: u64) -> Option<(u64, Bytes)> {
        if pos >= self.tail {
            return None;
        }
        let k = self.starts.partition_point(|&s| s <= pos);
        let start = *self.starts.get(k.checked_sub(1)?)?;
        let end = self.starts.get(k).copied().unwrap_or(self.tail);
        let bytes = if start >= self.open_start {
            let lo = (start - self.open_start) as usize;
            Bytes::copy_from_slice(&self.open[lo..lo + (end - start) as usize])
        } else {
            let (cs, chunk) = &self.sealed[self.sealed_index(start)];
            chunk
                .bytes
                .slice((start - cs) as usize..(end - cs) as usize)
        };
        Some((start, bytes))
    }

    /// End position of record number `i`, if it exists (and was not dropped).
    pub fn end_of(&self, i: usize) -> Option<u64> {
        let k = i.checked_sub(self.dropped)?;
        if k >= self.starts.len() {
            return None;
        }
        Some(self.starts.get(k + 1).copied().unwrap_or(self.tail))
    }

    /// Free what lies wholly before `pos` (a topic's first live record): sealed chunks that end
    /// at or before it, and the index entries of their records. Nothing before `pos` may be read
    /// afterwards. Returns the bytes freed, as they were charged (record bytes plus index
    /// entries).
    pub fn drop_front(&mut self, pos: u64) -> u64 {
        let whole = self.sealed.partition_point(|(s, c)| s + c.len() <= pos);
        if whole == 0 {
            return 0;
        }
        let freed: u64 = self.sealed.drain(..whole).map(|(_, c)| c.len()).sum();
        let keep_from = self.sealed.first().map_or(self.open_start, |(s, _)| *s);
        let records = self.starts.partition_point(|&s| s < keep_from);
        self.starts.drain(..records);
        self.dropped += records;
        freed + 8 * records as u64
    }

    /// Index of the sealed chunk holding `pos` (which is before `open_start`).
    fn sealed_index(&self, pos: u64) -> usize {
        debug_assert!(pos < self.open_start);
        self.sealed.partition_point(|(s, c)| s + c.len() <= pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    /// A store of `n` records of varying sizes starting at `base`, and the same bytes flat.
    fn filled(base: u64, n: usize) -> (MemStore, Vec<u8>, Vec<u64>) {
        let mut m = MemStore::new(base);
        let (mut flat, mut starts) = (Vec::new(), Vec::new());
        for i in 0..n {
            // Sizes from 1 byte to past a chunk, so records seal chunks at varied points.
            let len = 1 + (i * 7919) % (CHUNK_BYTES + 300);
            let rec: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            starts.push(base + flat.len() as u64);
            m.push(&rec);
            flat.extend_from_slice(&rec);
        }
        (m, flat, starts)
    }

    #[test]
    fn collect_returns_exact_bytes_and_ends_on_record_boundaries() {
        let base = 1000;
        let (m, flat, starts) = filled(base, 40);
        let tail = base + flat.len() as u64;
        for &pos in &[
            base,
            base + 1,
            starts[3],
            starts[3] + 5,
            starts[39],
            tail - 1,
        ] {
            for budget in [1usize, 100, CHUNK_BYTES, usize::MAX] {
                let mut out: Vec<Bytes> = Vec::new();
                let mut b = budget;
                let end = m.collect(pos, u64::MAX, &mut b, &mut out);
                let got = join(&out);
                assert_eq!(got, flat[(pos - base) as usize..(end - base) as usize]);
                assert!(
                    end == tail || starts.contains(&end),
                    "end {end} not a boundary"
                );
                assert!(end > pos);
                // The record crossing the budget is included, nothing after it.
                let crossing = starts
                    .iter()
                    .position(|&s| s >= pos.saturating_add(budget as u64));
                if let Some(i) = crossing {
                    assert_eq!(end, starts[i]);
                }
            }
        }
    }

    #[test]
    fn collect_stops_at_to_and_at_the_tail() {
        let (m, flat, _) = filled(0, 10);
        let mut out: Vec<Bytes> = Vec::new();
        let mut b = usize::MAX;
        assert_eq!(m.collect(3, 10, &mut b, &mut out), 10);
        assert_eq!(join(&out), flat[3..10]);
        let tail = flat.len() as u64;
        let mut out: Vec<Bytes> = Vec::new();
        assert_eq!(m.collect(tail, u64::MAX, &mut b, &mut out), tail);
        assert!(out.is_empty());
    }

    #[test]
    fn record_at_finds_the_holding_record() {
        let base = 7;
        let (m, flat, starts) = filled(base, 25);
        let tail = base + flat.len() as u64;
        for (i, &s) in starts.iter().enumerate() {
            let e = starts.get(i + 1).copied().unwrap_or(tail);
            for pos in [s, (s + e) / 2, e - 1] {
                let (start, bytes) = m.record_at(pos).unwrap();
                assert_eq!(start, s);
                assert_eq!(bytes[..], flat[(s - base) as usize..(e - base) as usize]);
            }
        }
        assert!(m.record_at(tail).is_none());
        assert!(m.record_at(base - 1).is_none());
        assert!(MemStore::new(0).record_at(0).is_none());
    }

    #[test]
    fn reads_share_sealed_chunks_and_big_records_are_sealed_at_once() {
        let mut m = MemStore::new(0);
        m.push(&[7u8; CHUNK_BYTES + 1]);
        let (a, b) = (m.record_at(5).unwrap().1, m.record_at(9).unwrap().1);
        assert_eq!(a.len(), CHUNK_BYTES + 1);
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "a big record is shared, not copied per read"
        );
        m.push(b"small");
        let (start, rec) = m.record_at(CHUNK_BYTES as u64 + 2).unwrap();
        assert_eq!((start, &rec[..]), (CHUNK_BYTES as u64 + 1, &b"small"[..]));
    }

    #[test]
    fn dropping_the_front_frees_whole_chunks_and_keeps_the_rest_readable() {
        let (mut m, flat, starts) = filled(0, 60);
        let cut = starts[40];
        let freed = m.drop_front(cut);
        assert!(freed > 0);
        assert!(m.end_of(0).is_none() || m.dropped == 0);
        // Records from the cut on read as before, by index and by position.
        assert_eq!(m.end_of(59), Some(flat.len() as u64));
        assert_eq!(m.end_of(40), Some(starts[41]));
        let mut out: Vec<Bytes> = Vec::new();
        let mut b = usize::MAX;
        m.collect(cut, u64::MAX, &mut b, &mut out);
        assert_eq!(join(&out), flat[cut as usize..]);
        assert_eq!(m.drop_front(cut), 0, "nothing more to free");
    }

    #[test]
    fn sealed_chunks_go_out_as_ranges_of_the_arena_with_their_bytes() {
        use crate::types::Piece;
        let base = 3;
        let (m, flat, _) = filled(base, 50);
        let mut out: Vec<Piece> = Vec::new();
        let mut b = usize::MAX;
        let end = m.collect(base, u64::MAX, &mut b, &mut out);
        assert_eq!(end, base + flat.len() as u64);
        let mut got = Vec::new();
        for p in &out {
            match p {
                Piece::Mem(b) => got.extend_from_slice(b),
                Piece::File(f) => {
                    assert!(f.fd().is_some(), "sendable from the arena's file");
                    got.extend_from_slice(&f.read().unwrap());
                }
            }
        }
        assert_eq!(got, flat);
        // Where a memfd exists, sealed chunks are ranges of it, readable through the file too.
        for p in &out {
            if let Piece::File(f) = p {
                let mut buf = vec![0u8; f.len as usize];
                let n = f.file.read_at(&mut buf, f.offset).unwrap();
                assert_eq!(Bytes::from(buf[..n].to_vec()), f.read().unwrap());
            }
        }
    }

    #[test]
    fn empty_records_are_not_stored() {
        let mut m = MemStore::new(0);
        m.push(b"");
        assert!(m.record_at(0).is_none());
        m.push(b"ab");
        assert_eq!(m.record_at(1).unwrap(), (0, Bytes::from_static(b"ab")));
    }
}
