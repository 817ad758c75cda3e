//! Where a durable log's own records live (`Ephemeral` logs: [`crate::memstore`]): two files
//! per log: `<id>.data` holds the stored bytes exactly as served, `<id>.idx` a 16-byte header
//! and then one 16-byte entry per record: its end position (u64 LE), the CRC32C of its bytes
//! and end (u32 LE) and flags (u32 LE). Reads are byte ranges and record boundaries are a
//! binary search away. RAM use of a file-backed log does not grow with its data. The files
//! are not held open: every operation takes them from the [`FileCache`], so the number of
//! logs is not bounded by the open-files limit.
//!
//! Bytes on disk at start are checked against their checksums before they are first served
//! ([`checked`]); a mismatch is an `InvalidData` error, never the damaged bytes.

mod checked;
mod migrate;

pub(crate) use checked::Checked;

use crate::filecache::{FileCache, FileKey};
use bytes::{Bytes, BytesMut};
use riffle_wal::DirFile;
use std::io;
use std::sync::Arc;

/// The first 8 bytes of an index file (then 8 reserved zero bytes). Index files of the layout
/// before checksums (8-byte entries from offset 0) lack it and are rewritten on open.
const MAGIC: &[u8; 8] = b"RFLIDX\x00\x02";
/// Bytes before the first entry.
const HEADER: u64 = 16;
/// Bytes per entry.
const ENTRY: u64 = 16;
/// Entry flag: the record's bytes were never stored (an `ephemeral` stretch a restart lost);
/// readers skip such records, and there is nothing to check.
const UNWRITTEN: u32 = 1;
/// Entry flag: the record's start was released before checksums existed (written by the
/// rewrite of an old-layout index, for the first record after a released stretch): its
/// checksum covers what the rewrite found, not the record, and is not checked.
const UNCHECKED: u32 = 2;
/// Records longer than this are checked in pieces of this size, not read whole.
const PIECE: u64 = 1 << 20;

/// The length of an index file holding `records` entries.
pub(crate) fn idx_len(records: u64) -> u64 {
    HEADER + records * ENTRY
}

fn header() -> [u8; HEADER as usize] {
    let mut h = [0; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h
}

/// The checksum of a record: CRC32C of its bytes, continued over its end position, so an
/// entry naming the wrong end fails too.
fn record_crc(bytes: &[u8], end: u64) -> u32 {
    riffle_wal::crc32c_append(riffle_wal::crc32c(bytes), &end.to_le_bytes())
}

fn push_entry(out: &mut Vec<u8>, end: u64, crc: u32, flags: u32) {
    out.extend_from_slice(&end.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
}

/// An index entry: end position, checksum, flags.
fn parse_entry(e: &[u8]) -> (u64, u32, u32) {
    let mut end = [0; 8];
    let mut crc = [0; 4];
    let mut flags = [0; 4];
    end.copy_from_slice(&e[..8]);
    crc.copy_from_slice(&e[8..12]);
    flags.copy_from_slice(&e[12..16]);
    (
        u64::from_le_bytes(end),
        u32::from_le_bytes(crc),
        u32::from_le_bytes(flags),
    )
}

/// The files of a durable log.
#[derive(Clone)]
pub(crate) struct LogFiles {
    cache: Arc<FileCache>,
    id: u64,
    /// Position of the first byte of `data` (a fork's inheritance point; 0 otherwise).
    pub base: u64,
    /// Bytes below this position were on disk at start and are checked before they are
    /// served; this process wrote those from here on.
    unchecked_below: u64,
}

impl std::fmt::Debug for LogFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFiles")
            .field("id", &self.id)
            .field("base", &self.base)
            .finish()
    }
}

pub(crate) fn data_path(id: u64) -> String {
    format!("streams/{id:016x}.data")
}

pub(crate) fn idx_path(id: u64) -> String {
    format!("streams/{id:016x}.idx")
}

fn damaged(id: u64, what: String) -> io::Error {
    let e = io::Error::new(
        io::ErrorKind::InvalidData,
        format!("stream file damaged: log {id:016x}: {what}"),
    );
    tracing::error!(error = %e, "a stored record failed its check; it is not served");
    e
}

impl LogFiles {
    /// The files of log `id`, created if missing (only here: later opens never create them,
    /// so an operation racing their removal fails instead of recreating them); an index in
    /// the layout before checksums is rewritten first. Everything in them is taken as written
    /// by this process: recovery marks what it found with [`Self::recovered`].
    pub fn open(cache: &Arc<FileCache>, id: u64, base: u64) -> io::Result<Self> {
        cache.open(FileKey::data(id), true)?;
        migrate::ensure_layout(cache, id, base)?;
        Ok(Self {
            cache: cache.clone(),
            id,
            base,
            unchecked_below: base,
        })
    }

    /// The files of log `id`, known to exist in the current layout (recovery found them at
    /// their lengths, `tail` in all): not opened until used.
    pub fn existing(cache: &Arc<FileCache>, id: u64, base: u64, tail: u64) -> Self {
        Self {
            cache: cache.clone(),
            id,
            base,
            unchecked_below: tail,
        }
    }

    /// These files as recovered at start, holding `tail`: what they hold is checked before it
    /// is served.
    pub fn recovered(mut self, tail: u64) -> Self {
        self.unchecked_below = tail;
        self
    }

    fn data(&self) -> io::Result<Arc<dyn DirFile>> {
        self.cache.open(FileKey::data(self.id), false)
    }

    fn idx(&self) -> io::Result<Arc<dyn DirFile>> {
        self.cache.open(FileKey::idx(self.id), false)
    }

    /// Write record number `index` (`data` at position `start`).
    pub fn write_record(&self, index: u64, start: u64, data: &[u8]) -> io::Result<()> {
        self.write_records(index, start, data, &[start + data.len() as u64])
    }

    /// Write records `first..` at once: their bytes (starting at position `start`) and their
    /// end positions. With no bytes, the records are entries only ([`UNWRITTEN`]).
    pub fn write_records(
        &self,
        first: u64,
        start: u64,
        data: &[u8],
        ends: &[u64],
    ) -> io::Result<()> {
        let mut idx = Vec::with_capacity(ends.len() * ENTRY as usize);
        if data.is_empty() {
            for &end in ends {
                push_entry(&mut idx, end, record_crc(&[], end), UNWRITTEN);
            }
        } else {
            let mut from = start;
            for &end in ends {
                let bytes = end
                    .checked_sub(start)
                    .and_then(|hi| data.get((from - start) as usize..hi as usize))
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "record ends outside the bytes written",
                        )
                    })?;
                push_entry(&mut idx, end, record_crc(bytes, end), 0);
                from = end;
            }
            self.data()?.write_all_at(data, start - self.base)?;
        }
        self.idx()?.write_all_at(&idx, entry_at(first))
    }

    /// Index of the first of the `records` records whose end is greater than `pos`.
    fn first_ending_after(&self, idx: &dyn DirFile, records: u64, pos: u64) -> io::Result<u64> {
        let (mut lo, mut hi) = (0, records);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if record_end(idx, mid)? <= pos {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Where a read of `[from, to)` ends: `to`, or the end of the record that reaches
    /// `budget` bytes. `records` and `to` describe what is in the files.
    pub fn read_end(&self, records: u64, from: u64, to: u64, budget: usize) -> io::Result<u64> {
        if from >= to {
            return Ok(from);
        }
        let want = to - from;
        Ok(if want as usize <= budget {
            to
        } else {
            // Stop at the end of the record that reaches the budget.
            let idx = self.idx()?;
            let last = from + budget.max(1) as u64 - 1;
            let i = self.first_ending_after(idx.as_ref(), records, last)?;
            if i < records {
                record_end(idx.as_ref(), i)?.min(to)
            } else {
                to
            }
        })
    }

    /// The bytes of `[from, to)`, read (and checked, if on disk at start).
    pub fn read_bytes(&self, from: u64, to: u64) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed((to - from) as usize);
        read_exact_at(self.data()?.as_ref(), &mut buf, from - self.base)?;
        self.check(from, to, Some(&buf))?;
        Ok(buf.freeze())
    }

    /// `[from, to)` as a range of the data file, not read (but checked first, if on disk at
    /// start and not checked since).
    pub fn range(&self, from: u64, to: u64) -> io::Result<crate::types::FileRange> {
        self.check(from, to, None)?;
        Ok(crate::types::FileRange {
            file: self.data()?,
            offset: from - self.base,
            len: to - from,
            mapped: None,
        })
    }

    /// The record holding `pos`: its start and its bytes.
    pub fn record_containing(&self, records: u64, pos: u64) -> io::Result<Option<(u64, Bytes)>> {
        let idx = self.idx()?;
        let i = self.first_ending_after(idx.as_ref(), records, pos)?;
        if i >= records {
            return Ok(None);
        }
        let start = if i == 0 {
            self.base
        } else {
            record_end(idx.as_ref(), i - 1)?
        };
        let end = record_end(idx.as_ref(), i)?;
        drop(idx);
        Ok(Some((start, self.read_bytes(start, end)?)))
    }

    /// End positions of records `first..first + n` (one read of the index file).
    pub fn ends(&self, first: u64, n: u64) -> io::Result<Vec<u64>> {
        let mut buf = vec![0u8; (n * ENTRY) as usize];
        read_exact_at(self.idx()?.as_ref(), &mut buf, entry_at(first))?;
        Ok(buf
            .chunks_exact(ENTRY as usize)
            .map(|e| parse_entry(e).0)
            .collect())
    }

    /// Check the part of `[from, to)` that was on disk at start and is not checked yet
    /// against the index, using `bytes` (the range's, already read) where they serve.
    fn check(&self, from: u64, to: u64, bytes: Option<&[u8]>) -> io::Result<()> {
        let to = to.min(self.unchecked_below);
        if from >= to {
            return Ok(());
        }
        for (a, b) in self.cache.checked.missing(self.id, from, to) {
            let (lo, hi) = self
                .check_records(a, b, bytes.map(|bytes| (from, bytes)))
                .inspect_err(|e| {
                    if e.kind() == io::ErrorKind::InvalidData {
                        self.cache.checked.failed();
                    }
                })?;
            self.cache.checked.add(self.id, lo, hi);
        }
        Ok(())
    }

    /// Check every record overlapping `[from, to)`; `known` is a range's start and bytes
    /// already read. Returns the span of the records checked.
    fn check_records(
        &self,
        from: u64,
        to: u64,
        known: Option<(u64, &[u8])>,
    ) -> io::Result<(u64, u64)> {
        const CHUNK_ENTRIES: u64 = 4096;
        let idx = self.idx()?;
        let count = idx.len()?.saturating_sub(HEADER) / ENTRY;
        let mut i = self.first_ending_after(idx.as_ref(), count, from)?;
        let first = match i {
            0 => self.base,
            // The entry before a topic's first live record may have been released (zeroed)
            // with the head's blocks by a layout before `release` kept it: the record
            // starts where the read does (reads start at record boundaries).
            _ => match record_end(idx.as_ref(), i - 1)? {
                0 => from.max(self.base),
                end => end,
            },
        };
        let mut start = first;
        let mut data = Vec::new();
        // No entry of a sound index ends past the data file: checked before anything is
        // allocated for a range a damaged entry names.
        let data_end = self.base + self.data()?.len()?;
        while start < to {
            let n = (count - i).min(CHUNK_ENTRIES);
            if n == 0 {
                return Err(damaged(
                    self.id,
                    format!("the index ends at {start}, before position {to}"),
                ));
            }
            let mut raw = vec![0u8; (n * ENTRY) as usize];
            read_exact_at(idx.as_ref(), &mut raw, entry_at(i))?;
            // The entries this chunk checks: up to the one reaching `to`, within the byte cap
            // (at least one).
            let mut entries = Vec::new();
            for e in raw.chunks_exact(ENTRY as usize) {
                let (end, crc, flags) = parse_entry(e);
                let at = entries.last().map_or(start, |&(end, _, _)| end);
                let record = i + entries.len() as u64;
                if end < at {
                    return Err(damaged(
                        self.id,
                        format!("record {record} ends at {end}, before it starts"),
                    ));
                }
                if end > data_end {
                    return Err(damaged(
                        self.id,
                        format!("record {record} ends at {end}, past the data ({data_end})"),
                    ));
                }
                if !entries.is_empty() && end - start > PIECE {
                    break;
                }
                entries.push((end, crc, flags));
                if end >= to {
                    break;
                }
            }
            let chunk_end = entries.last().map_or(start, |&(end, _, _)| end);
            if let [(end, crc, flags)] = entries[..]
                && end - start > PIECE
            {
                // One long record: checked in pieces, never read whole.
                if flags & (UNWRITTEN | UNCHECKED) == 0 && self.crc_of(start, end)? != crc {
                    return Err(damaged(
                        self.id,
                        format!("record {i} (positions {start}..{end}) fails its checksum"),
                    ));
                }
                i += 1;
                start = end;
                continue;
            }
            let bytes = match known {
                Some((at, b)) if at <= start && chunk_end <= at + b.len() as u64 => {
                    &b[(start - at) as usize..(chunk_end - at) as usize]
                }
                _ => {
                    data.resize((chunk_end - start) as usize, 0);
                    // Within the data file: every entry was checked against `data_end`.
                    read_exact_at(self.data()?.as_ref(), &mut data, start - self.base)?;
                    &data[..]
                }
            };
            let mut at = start;
            for (k, &(end, crc, flags)) in entries.iter().enumerate() {
                let record = &bytes[(at - start) as usize..(end - start) as usize];
                if flags & (UNWRITTEN | UNCHECKED) == 0 && record_crc(record, end) != crc {
                    return Err(damaged(
                        self.id,
                        format!(
                            "record {} (positions {at}..{end}) fails its checksum",
                            i + k as u64
                        ),
                    ));
                }
                at = end;
            }
            i += entries.len() as u64;
            start = chunk_end;
        }
        Ok((first, start))
    }

    /// The checksum of the stored bytes `[start, end)` as the record ending at `end`.
    fn crc_of(&self, start: u64, end: u64) -> io::Result<u32> {
        stored_crc(self.data()?.as_ref(), start - self.base, end - start, end)
    }

    /// Give back the disk space of the data in positions `[from, to)` and of the index
    /// entries of records `[from_rec, to_rec)`, in whole 4 KiB blocks. Returns how far each
    /// was released (block-aligned), to start from next time.
    pub fn release(
        &self,
        from: u64,
        to: u64,
        from_rec: u64,
        to_rec: u64,
    ) -> io::Result<(u64, u64)> {
        const BLOCK: u64 = 4096;
        let data_to = (to - self.base.min(to)) / BLOCK * BLOCK;
        let data_from = from - self.base.min(from);
        if data_to > data_from {
            self.data()?.punch_hole(data_from, data_to - data_from)?;
        }
        // Entries are 16 bytes after a 16-byte header: a block boundary is an entry boundary,
        // and the header is never in a released block (`idx_from` >= HEADER). The entry of
        // record `to_rec - 1` is kept: it says where the first live record starts.
        let idx_to = entry_at(to_rec.saturating_sub(1)) / BLOCK * BLOCK;
        let idx_from = entry_at(from_rec);
        if idx_to > idx_from {
            self.idx()?.punch_hole(idx_from, idx_to - idx_from)?;
        }
        Ok((
            data_to.max(data_from) + self.base,
            (idx_to.max(idx_from) - HEADER) / ENTRY,
        ))
    }

    /// Make both files durable. A handle opened after the writes covers them too (see
    /// [`crate::filecache`]).
    pub fn sync(&self) -> io::Result<()> {
        self.data()?.sync_data()?;
        self.idx()?.sync_data()
    }

    /// Drop anything past the recovered state.
    pub fn truncate(&self, tail: u64, records: u64) -> io::Result<()> {
        self.data()?.set_len(tail - self.base)?;
        self.idx()?.set_len(idx_len(records))
    }
}

/// The checksum of the `len` bytes of `data` at `offset` as the record ending at `end`, read
/// in pieces (a record may be larger than what is sensible to hold at once).
fn stored_crc(data: &dyn DirFile, offset: u64, len: u64, end: u64) -> io::Result<u32> {
    let mut buf = vec![0u8; len.min(PIECE) as usize];
    let (mut crc, mut done) = (0, 0);
    while done < len {
        let n = (len - done).min(PIECE) as usize;
        read_exact_at(data, &mut buf[..n], offset + done)?;
        crc = riffle_wal::crc32c_append(crc, &buf[..n]);
        done += n as u64;
    }
    Ok(riffle_wal::crc32c_append(crc, &end.to_le_bytes()))
}

/// Where entry `i` starts in the index file.
fn entry_at(i: u64) -> u64 {
    HEADER + i * ENTRY
}

/// End position of record `i`.
fn record_end(idx: &dyn DirFile, i: u64) -> io::Result<u64> {
    let mut b = [0u8; 8];
    read_exact_at(idx, &mut b, entry_at(i))?;
    Ok(u64::from_le_bytes(b))
}

fn read_exact_at(f: &dyn DirFile, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = f.read_at(buf, off)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream file is shorter than its recorded length",
            ));
        }
        buf = &mut buf[n..];
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
