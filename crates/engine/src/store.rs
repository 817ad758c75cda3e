//! Where a durable log's own records live (`Ephemeral` logs: [`crate::memstore`]): two files
//! per log: `<id>.data` holds the stored bytes exactly as served, `<id>.idx` the end position
//! of every record (u64 LE), so reads are byte ranges and record boundaries are a binary
//! search away. RAM use of a file-backed log does not grow with its data. The files are not
//! held open: every operation takes them from the [`FileCache`], so the number of logs is not
//! bounded by the open-files limit.

use crate::filecache::{FileCache, FileKey};
use bytes::{Bytes, BytesMut};
use riffle_wal::DirFile;
use std::io;
use std::sync::Arc;

/// The files of a durable log.
#[derive(Clone)]
pub(crate) struct LogFiles {
    cache: Arc<FileCache>,
    id: u64,
    /// Position of the first byte of `data` (a fork's inheritance point; 0 otherwise).
    pub base: u64,
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

impl LogFiles {
    /// The files of log `id`, created if missing (only here: later opens never create them,
    /// so an operation racing their removal fails instead of recreating them).
    pub fn open(cache: &Arc<FileCache>, id: u64, base: u64) -> io::Result<Self> {
        cache.open(FileKey::data(id), true)?;
        cache.open(FileKey::idx(id), true)?;
        Ok(Self {
            cache: cache.clone(),
            id,
            base,
        })
    }

    /// The files of log `id`, known to exist (recovery found them at their lengths): not
    /// opened until used.
    pub fn existing(cache: &Arc<FileCache>, id: u64, base: u64) -> Self {
        Self {
            cache: cache.clone(),
            id,
            base,
        }
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
    /// end positions.
    pub fn write_records(
        &self,
        first: u64,
        start: u64,
        data: &[u8],
        ends: &[u64],
    ) -> io::Result<()> {
        self.data()?.write_all_at(data, start - self.base)?;
        let idx: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.idx()?.write_all_at(&idx, first * 8)
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

    /// The bytes of `[from, to)`, read.
    pub fn read_bytes(&self, from: u64, to: u64) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed((to - from) as usize);
        read_exact_at(self.data()?.as_ref(), &mut buf, from - self.base)?;
        Ok(buf.freeze())
    }

    /// `[from, to)` as a range of the data file, not read.
    pub fn range(&self, from: u64, to: u64) -> io::Result<crate::types::FileRange> {
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
        let mut buf = BytesMut::zeroed((end - start) as usize);
        read_exact_at(self.data()?.as_ref(), &mut buf, start - self.base)?;
        Ok(Some((start, buf.freeze())))
    }

    /// End positions of records `first..first + n` (one read of the index file).
    pub fn ends(&self, first: u64, n: u64) -> io::Result<Vec<u64>> {
        let mut buf = vec![0u8; (n * 8) as usize];
        read_exact_at(self.idx()?.as_ref(), &mut buf, first * 8)?;
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
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
        let idx_to = to_rec * 8 / BLOCK * BLOCK;
        let idx_from = from_rec * 8;
        if idx_to > idx_from {
            self.idx()?.punch_hole(idx_from, idx_to - idx_from)?;
        }
        Ok((data_to.max(data_from) + self.base, idx_to.max(idx_from) / 8))
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
        self.idx()?.set_len(records * 8)
    }
}

/// End position of record `i`.
fn record_end(idx: &dyn DirFile, i: u64) -> io::Result<u64> {
    let mut b = [0u8; 8];
    read_exact_at(idx, &mut b, i * 8)?;
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
